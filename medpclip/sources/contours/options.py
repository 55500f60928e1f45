"""The ``contours`` family's format options (``spec.format.options``; documented in ``contours/reader.py``).

Imported by ``medpclip.specs`` (through ``sources/registry.py``), so options are checked when a spec loads;
this module imports no reader and not ``medpclip.specs``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medpclip.sources.base import ReaderOptions


class ContourOptions(ReaderOptions):
    layout: Literal["lidc", "imagescope"]
    # lidc
    files: str | list[str] = "**/*"
    modalities: list[str] = Field(default_factory=lambda: ["CT"])
    regions: Literal["mask", "box"] = "mask"
    include_contour: bool = False
    small_nodules: Literal["point", "skip"] = "point"
    non_nodules: bool = False
    repeated_slices: Literal["keep_lowest_instance", "reject"] = "keep_lowest_instance"
    # imagescope
    images: str | list[str] = "**/*.tif"
    annotations: list[str] = Field(default_factory=lambda: ["{dir}/{stem}.xml"])
    label: str | None = None
    splits: dict[str, str] = Field(default_factory=dict)
