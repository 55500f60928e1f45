"""The ``reports`` family's format options (``spec.format.options``; documented in ``reports/reader.py``).

Imported by ``medpclip.specs`` (through ``sources/registry.py``), so options are checked when a spec loads;
this module imports no reader and not ``medpclip.specs``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medpclip.sources.base import Globs, ReaderOptions, layout_union


class ReportLayout(ReaderOptions):
    """Options of every reports layout: the image files and which report sections become text."""

    images: Globs
    sections: list[str] = Field(default_factory=lambda: ["FINDINGS", "IMPRESSION"])
    grey: bool = True
    dicom_voi: bool = True  # DICOM images (MIMIC-CXR ships them): apply the file's VOI LUT/window


class OpeniReports(ReportLayout):
    """``layout: openi``: Open-i / IU X-ray report XMLs naming their images (``parentImage``)."""

    layout: Literal["openi"]
    reports: Globs = "ecgen-radiology/*.xml"
    mesh_labels: bool = False
    normal_labels: list[str] = Field(default_factory=lambda: ["normal"])


class MimicReports(ReportLayout):
    """``layout: mimic``: MIMIC-CXR's ``files/pXX/pID/sID/`` tree, one ``sID.txt`` report per study."""

    layout: Literal["mimic"]
    split_table: str | list[str] = Field(
        default_factory=lambda: ["mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv"]
    )
    require_report: bool = True
    fallback: Literal["last_paragraph", "none"] = "last_paragraph"


ReportOptions = layout_union({"openi": OpeniReports, "mimic": MimicReports})
