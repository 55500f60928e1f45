"""What several benchmarks share: the synthetic CT spec their generated frames belong to."""

from __future__ import annotations

from medpclip.specs import DatasetSpec, parse_spec


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
