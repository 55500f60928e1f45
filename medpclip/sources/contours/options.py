"""The ``contours`` family's format options (``spec.format.options``; documented in ``contours/reader.py``).

Imported by ``medpclip.specs`` (through ``sources/registry.py``), so options are checked when a spec loads;
this module imports no reader and not ``medpclip.specs``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medpclip.sources.base import Globs, ReaderOptions, layout_union


class ContourLayout(ReaderOptions):
    """The base of the contours layouts (they share no option but ``max_pixels``)."""


class LidcContours(ContourLayout):
    """``layout: lidc``: LIDC-IDRI's CT series with the readers' nodule XML (``LidcReadMessage``)."""

    layout: Literal["lidc"]
    files: Globs = "**/*"
    modalities: list[str] = Field(default_factory=lambda: ["CT"])
    regions: Literal["mask", "box"] = "mask"
    include_contour: bool = False
    small_nodules: Literal["point", "skip"] = "point"
    non_nodules: bool = False
    repeated_slices: Literal["keep_lowest_instance", "reject"] = "keep_lowest_instance"


class ImagescopeContours(ContourLayout):
    """``layout: imagescope``: images with Aperio ImageScope annotation XML beside them (MoNuSeg)."""

    layout: Literal["imagescope"]
    images: Globs = "**/*.tif"
    annotations: list[str] = Field(default_factory=lambda: ["{dir}/{stem}.xml"])
    label: str | None = None
    splits: dict[str, str] = Field(default_factory=dict)


ContourOptions = layout_union({"lidc": LidcContours, "imagescope": ImagescopeContours})
