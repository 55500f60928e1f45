"""The ``raster`` family's format options (``spec.format.options``; documented in ``raster/reader.py``).

Imported by ``medpclip.specs`` (through ``sources/registry.py``), so options are checked when a spec loads;
this module imports no reader and not ``medpclip.specs``.
"""

from __future__ import annotations

import glob
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medpclip.sources.base import Globs, Options, ReaderOptions, compile_regex

FORMATTER = string.Formatter()
BUILTIN_FIELDS = ("stem", "dir")


def pattern_fields(pattern: str) -> set[str]:
    return {name for _, name, _, _ in FORMATTER.parse(pattern) if name is not None}


def pattern_literal(pattern: str) -> str:
    """The pattern without its ``{fields}``: what decides whether it holds wildcards."""
    return "".join(text for text, *_ in FORMATTER.parse(pattern))


class MaskPattern(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pattern: str
    label: str | None = None
    when: str | None = None
    required: bool = False
    empty: bool = False


class ImageLabelRule(Options):
    regex: str
    path: Literal["image", "mask"] = "image"  # not `on`: YAML 1.1 reads it as true
    map: dict[str, str] | None = None

    @field_validator("map", mode="before")
    @classmethod
    def _str_keys(cls, v: object) -> object:
        return {str(k): v2 for k, v2 in v.items()} if isinstance(v, dict) else v  # YAML reads `0:` as int

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        compile_regex(v, ("label",))
        return v


class NumberedGroups(Options):
    size: int | None = Field(default=None, ge=1)
    ranges: list[tuple[int, int]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one(self) -> NumberedGroups:
        if (self.size is None) == (not self.ranges):
            raise ValueError("give exactly one of 'size' and 'ranges'")
        if any(lo > hi for lo, hi in self.ranges):
            raise ValueError("each range is [first, last] with first <= last")
        return self

    def group_of(self, number: int) -> str | None:
        if self.size is not None:
            if number < 1:
                return None
            first = (number - 1) // self.size * self.size + 1
            return f"{first:04d}-{first + self.size - 1:04d}"
        for lo, hi in self.ranges:
            if lo <= number <= hi:
                return f"{lo:04d}-{hi:04d}"
        return None


class RasterTable(Options):
    """``table``: a delimited file of per-image rows, as the volumes family's ``table`` (same names), plus
    ``label_column`` (the row's value names the label of the image's masks)."""

    path: str = Field(min_length=1)
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    id_column: str = Field(min_length=1)
    split_column: str | None = None
    label_column: str | None = None

    def columns(self) -> list[str]:
        return [c for c in (self.id_column, self.split_column, self.label_column) if c is not None]


class RasterOptions(ReaderOptions):
    images: Globs
    exclude: list[str] = Field(default_factory=list)
    name_regex: str | None = None
    case_id: str | None = None
    masks: list[str | MaskPattern] = Field(default_factory=list)
    mask_mode: Literal["threshold", "instances", "values", "ranges"] = "threshold"
    threshold: float = 127
    # threshold masks drawn as closed outlines (HC18's head ellipse): the enclosed area is the structure
    fill_holes: bool = False
    label: str | None = None
    values: dict[int, int] = Field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    merge_masks: bool = False
    boxes_json: str | None = None
    grey: bool = False
    dicom_voi: bool = True
    require_annotation: bool = True
    image_labels: list[ImageLabelRule] = Field(default_factory=list)
    normal_labels: list[str] = Field(default_factory=list)
    splits: dict[str, Literal["train", "val", "test"]] = Field(default_factory=dict)
    numbered_groups: NumberedGroups | None = None
    table: RasterTable | None = None
    split_lists: dict[Literal["train", "val", "test"], str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> RasterOptions:
        if self.fill_holes and self.mask_mode != "threshold":
            raise ValueError("fill_holes fills outlines of a threshold mask: it needs mask_mode 'threshold'")
        if self.mask_mode == "values" and not self.values:
            raise ValueError("mask_mode 'values' needs 'values' (mask pixel value → spec label value)")
        if self.mask_mode == "ranges" and not self.ranges:
            raise ValueError("mask_mode 'ranges' needs 'ranges' (label → [lo, hi] grey values)")
        if any(lo > hi for lo, hi in self.ranges.values()):
            raise ValueError("each of 'ranges' is [lo, hi] with lo <= hi")
        groups = set(self.name_groups())
        if groups & {*BUILTIN_FIELDS, "group"}:
            raise ValueError("name_regex groups may not be called stem, dir or group")
        for m in self.mask_patterns():
            used = pattern_fields(m.pattern)
            unknown = used - set(BUILTIN_FIELDS) - groups
            if unknown:
                raise ValueError(f"mask pattern '{m.pattern}' uses unknown fields {sorted(unknown)}")
            if not used & ({"stem"} | groups):
                raise ValueError(f"mask pattern '{m.pattern}' needs {{stem}} or a name_regex group")
            if self.mask_mode not in ("threshold", "instances") and (m.label or m.empty):
                raise ValueError(
                    f"mask pattern '{m.pattern}': label/empty apply to mask_mode threshold or instances only"
                )
        if self.case_id is not None:
            used = pattern_fields(self.case_id)
            unknown = used - set(BUILTIN_FIELDS) - groups
            if unknown:
                raise ValueError(f"case_id '{self.case_id}' uses unknown fields {sorted(unknown)}")
            if not used & ({"stem"} | groups):
                raise ValueError(f"case_id '{self.case_id}' needs {{stem}} or a name_regex group")
            if glob.has_magic(pattern_literal(self.case_id)):
                raise ValueError(f"case_id '{self.case_id}' is a template, not a glob: no * ? [ ]")
        if self.table is not None:
            if self.table.label_column is not None and self.mask_mode not in ("threshold", "instances"):
                raise ValueError("table.label_column applies to mask_mode threshold or instances only")
            if len(set(self.table.columns())) != len(self.table.columns()):
                raise ValueError("table: id_column, split_column and label_column must be different columns")
        if len(set(self.split_lists.values())) != len(self.split_lists):
            raise ValueError("split_lists: each split needs its own list file")
        return self

    def name_groups(self) -> list[str]:
        if self.name_regex is None:
            return []
        return list(compile_regex(self.name_regex).groupindex)

    def mask_patterns(self) -> list[MaskPattern]:
        return [MaskPattern(pattern=m) if isinstance(m, str) else m for m in self.masks]
