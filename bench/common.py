"""What several benchmarks share: where results go, and the synthetic CT spec of generated frames."""

from __future__ import annotations

import json
from pathlib import Path

from medpclip.specs import DatasetSpec, parse_spec

RESULTS = Path(__file__).parent / "results"
PILLOW_PNG_LEVEL = 6  # the build's PNG encoder before issue 18: Pillow at zlib's default level


def pillow_png(img) -> bytes:
    """An image as PNG the way the build wrote it before issue 18 (the "tools" floor of the benches)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=PILLOW_PNG_LEVEL)
    return buf.getvalue()


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
