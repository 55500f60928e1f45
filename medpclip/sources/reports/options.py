"""The ``reports`` family's format options (``spec.format.options``; documented in ``reports/reader.py``).

Imported by ``medpclip.specs`` (through ``sources/registry.py``), so options are checked when a spec loads;
this module imports no reader and not ``medpclip.specs``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medpclip.sources.base import ReaderOptions


class ReportOptions(ReaderOptions):
    layout: Literal["openi", "mimic"]
    images: str | list[str]
    sections: list[str] = Field(default_factory=lambda: ["FINDINGS", "IMPRESSION"])
    grey: bool = True
    # openi
    reports: str | list[str] = "ecgen-radiology/*.xml"
    mesh_labels: bool = False
    normal_labels: list[str] = Field(default_factory=lambda: ["normal"])
    # mimic
    split_table: str | list[str] = Field(
        default_factory=lambda: ["mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv"]
    )
    require_report: bool = True
    fallback: Literal["last_paragraph", "none"] = "last_paragraph"
