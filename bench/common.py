"""What several benchmarks share: where results go, and the synthetic CT spec of generated frames."""

from __future__ import annotations

import json
from pathlib import Path

from medpclip.specs import DatasetSpec, parse_spec

RESULTS = Path(__file__).parent / "results"


def save_result(name: str, result: dict) -> Path:
    """``bench/results/{name}.json``: sorted keys and a final newline, so reruns diff cleanly."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


def ct_spec(labels: list[str]) -> DatasetSpec:
    """A CT volume spec named ``bench_ct`` whose label values 1.. are ``labels`` (abdomen window)."""
    return parse_spec(
        {
            "name": "bench_ct", "root": "x", "title": "bench", "citation": "-", "licence": "-", "access": "open",
            "homepage": "-", "modality": "CT", "body_part": "abdomen", "format": {"family": "volumes"},
            "labels": [
                {"value": v, "label": name, "name": name.capitalize(), "category": name.split()[-1]}
                for v, name in enumerate(labels, 1)
            ],
            "intensity": {"kind": "ct_window", "window": "abdomen"},
        }
    )  # fmt: skip
