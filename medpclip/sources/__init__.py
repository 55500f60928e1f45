"""Readers, one module per format family (DESIGN §2, §3).

Each module exposes ``discover(spec, root) -> Iterator[SourceItem]`` (``root`` is the dataset's folder under
the raw root; items sorted by case id, junk files skipped, paths relative to the raw root) and
``read(spec, raw_root, item) -> Iterator[Frame]`` (raises ``ReadError`` for input it cannot read). Readers
know formats and nothing else: no windowing, resizing or region extraction.
"""

from __future__ import annotations

from types import ModuleType

from medpclip.sources import contours, dicom, raster, reports, tables, volumes

READERS: dict[str, ModuleType] = {
    "volumes": volumes,
    "raster": raster,
    "tables": tables,
    "dicom": dicom,
    "contours": contours,
    "reports": reports,
}


def get_reader(family: str) -> ModuleType:
    """The reader module of a format family (``spec.format.family``)."""
    try:
        return READERS[family]
    except KeyError:
        raise ValueError(f"unknown format family '{family}' (known: {', '.join(sorted(READERS))})") from None
