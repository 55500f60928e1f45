"""The one list of format families (DESIGN §2, §3): name → options model, cases per unit, reader module.

``medpclip.specs`` builds ``DatasetSpec.format`` (a union tagged by ``family``) from ``FAMILIES``, so this
module imports only the families' ``options`` modules; readers are imported when first asked for. A new
family is one package under ``medpclip/sources/`` (``options.py``, ``reader.py``) and one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medpclip.sources.contours.options import ContourOptions
from medpclip.sources.dicom.options import DicomOptions
from medpclip.sources.raster.options import RasterOptions
from medpclip.sources.reports.options import ReportOptions
from medpclip.sources.tables.options import TableOptions
from medpclip.sources.volumes.options import VolumeOptions

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from medpclip.frame import Frame, SourceItem
    from medpclip.sources.base import Reader
    from medpclip.specs import DatasetSpec


@dataclass(frozen=True)
class Family:
    """A format family as the registry knows it: ``reader`` names the module with ``read``, ``discovery`` the
    one with ``discover`` (the same module but in ``dicom``, whose discovery is a module of its own)."""

    family: str
    options: Any  # a ReaderOptions model or a layout union of them (sources/base.layout_union)
    unit_items: int  # a few volumes or series (hundreds of slices each) or a few hundred 2D images
    reader: str
    discovery: str

    def discover(self, spec: DatasetSpec, root: Path) -> Iterator[SourceItem]:
        return importlib.import_module(self.discovery).discover(spec, root)

    def read(self, spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
        return importlib.import_module(self.reader).read(spec, raw_root, item)


def _family(name: str, options: Any, unit_items: int, discovery: str = "reader") -> Family:
    return Family(
        name, options, unit_items, f"medpclip.sources.{name}.reader", f"medpclip.sources.{name}.{discovery}"
    )


FAMILIES: dict[str, Family] = {
    f.family: f
    for f in (
        _family("volumes", VolumeOptions, 4),
        _family("raster", RasterOptions, 250),
        _family("tables", TableOptions, 250),
        _family("dicom", DicomOptions, 4, discovery="discovery"),
        _family("contours", ContourOptions, 4),
        _family("reports", ReportOptions, 250),
    )
}


def get_reader(family: str) -> Reader:
    """The reader of a format family (``spec.format.family``)."""
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown format family '{family}' (known: {', '.join(sorted(FAMILIES))})") from None
