"""The ``dicom`` family's format options (``spec.format.options``; see the package docstring)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from medpclip.sources.base import Globs, Options, ReaderOptions, compile_regex


class SeriesMasks(Options):
    """One mask file per slice for series whose folder matches ``series`` (see the package docstring)."""

    series: str
    folder: str
    files: str = "*.png"
    encoding: Literal["threshold", "ranges"] = "threshold"
    label: str | None = None
    threshold: int = 127
    ranges: dict[str, tuple[int, int]] = Field(default_factory=dict)
    order: Literal["reversed", "same"] = "reversed"
    required: bool = True

    @field_validator("series")
    @classmethod
    def _regex(cls, v: str) -> str:
        compile_regex(v)
        return v

    @model_validator(mode="after")
    def _encoding(self) -> SeriesMasks:
        if self.encoding == "ranges" and not self.ranges:
            raise ValueError("encoding 'ranges' needs 'ranges: {label: [lo, hi]}'")
        if any(lo > hi for lo, hi in self.ranges.values()):
            raise ValueError("each range needs lo <= hi")
        return self


class DicomOptions(ReaderOptions):
    files: Globs = "**/*"
    volume_modalities: list[str] = Field(default_factory=lambda: ["CT", "MR", "PT"])
    voi: bool = True
    segment_label: Literal["label", "property"] = "label"
    ignore_labels: list[str] = Field(default_factory=list)
    keep_localizers: bool = False
    split_series_by_folder: bool = False
    masks: list[SeriesMasks] = Field(default_factory=list)
    # processes reading headers at discovery (1: in the planning process itself). More pays off from a few
    # thousand files; a script that calls the build itself then needs the `if __name__ == "__main__":` guard
    # (the processes are spawned); the CLI, the Ray job entry point and the flows have it.
    discovery_workers: int = Field(default=1, ge=1)
