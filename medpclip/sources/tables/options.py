"""The ``tables`` family's format options (``spec.format.options``; documented in ``tables/reader.py``).

Imported by ``medpclip.specs`` (through ``sources/registry.py``), so options are checked when a spec loads;
this module imports no reader and not ``medpclip.specs``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from medpclip.sources.base import Globs, Options, ReaderOptions
from medpclip.vocab import SPLITS

BOX_ROLES = {"xywh": ("x", "y", "w", "h"), "xyxy": ("x0", "y0", "x1", "y1")}


def split_name(v: str | None) -> str | None:
    if v is not None and v not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    return v


class ImageTable(Options):
    file: str | list[str]
    image_column: str
    labels_column: str | None = None
    separator: str = "|"
    label_columns: list[str] | Literal["auto"] = Field(default_factory=list)
    ignore_columns: list[str] = Field(default_factory=list)
    normal_labels: list[str] = Field(default_factory=list)
    several_rows: bool = False
    min_votes: int = Field(default=1, ge=1)
    study_column: str | None = None
    report_column: str | None = None
    split: str | None = None

    _split = field_validator("split")(split_name)


class BoxTable(Options):
    file: str | list[str]
    columns: list[str | None] | dict[str, str]
    box_format: Literal["xywh", "xyxy"] = "xywh"
    skip_header: bool = True
    label: str | None = None
    normal_labels: list[str] = Field(default_factory=list)
    image_labels: bool = False
    split: str | None = None

    _split = field_validator("split")(split_name)

    @model_validator(mode="after")
    def _roles(self) -> BoxTable:
        coords = set(BOX_ROLES[self.box_format])
        need = {"image", *coords}
        named = list(self.columns) if isinstance(self.columns, dict) else [c for c in self.columns if c]
        allowed = need | {"label", "annotator"}
        if len(named) != len(set(named)) or not need <= set(named) or set(named) - allowed:
            raise ValueError(
                f"columns must name each of {sorted(need)} once, optionally 'label' and 'annotator' "
                "(null to skip a position)"
            )
        if ("label" in named) == (self.label is not None):
            raise ValueError("give either a 'label' column or a constant 'label', not both or neither")
        return self


class RleTable(Options):
    file: str | list[str]
    image_column: str = "ImageId"
    rle_column: str = "EncodedPixels"
    label: str
    empty: list[str] = Field(default_factory=lambda: ["-1"])
    starts: Literal["relative", "absolute"] = "relative"
    first_pixel: int = Field(default=0, ge=0)
    order: Literal["F", "C"] = "F"
    image_labels: bool = True
    split: str | None = None

    _split = field_validator("split")(split_name)


class CocoTable(Options):
    file: str | list[str]
    split: str | None = None
    image_labels: bool = False

    _split = field_validator("split")(split_name)


class TableOptions(ReaderOptions):
    images: Globs
    match: Literal["name", "stem", "path"] = "name"
    image_root: str = ""
    image_table: ImageTable | list[ImageTable] | None = None
    boxes_table: BoxTable | list[BoxTable] | None = None
    rle_table: RleTable | list[RleTable] | None = None
    coco: CocoTable | list[CocoTable] | None = None
    split_lists: dict[str, str] = Field(default_factory=dict)
    grey: bool = False
    dicom_voi: bool = True
    dicom_fields: list[str] = Field(default_factory=list)
    study_field: str | None = None

    @field_validator("split_lists")
    @classmethod
    def _splits(cls, v: dict[str, str]) -> dict[str, str]:
        if set(v) - set(SPLITS):
            raise ValueError(f"split names must be among {SPLITS}")
        return v

    def first_glob(self) -> str:
        return self.images if isinstance(self.images, str) else self.images[0]

    def tables(self, kind: str) -> list:
        value = getattr(self, kind)
        return [] if value is None else (value if isinstance(value, list) else [value])
