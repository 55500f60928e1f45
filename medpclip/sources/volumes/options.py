"""The ``volumes`` family's format options (``spec.format.options``; documented in ``volumes/reader.py``).

Imported by ``medpclip.specs`` (through ``sources/registry.py``), so options are checked when a spec loads;
this module imports no reader and not ``medpclip.specs``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from medpclip.sources.base import Options, ReaderOptions, compile_regex
from medpclip.vocab import Modality, Split

PLACEHOLDER_RE = re.compile(r"\{([a-z]+)\}")


class ModalityRange(Options):
    first: int
    last: int
    modality: Modality


class ModalityById(Options):
    regex: str
    ranges: tuple[ModalityRange, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ModalityById:
        if "id" not in compile_regex(self.regex).groupindex:
            raise ValueError("modality_by_id.regex needs a named group (?P<id>...)")
        spans = sorted((r.first, r.last) for r in self.ranges)
        if any(first > last for first, last in spans):
            raise ValueError("modality_by_id.ranges: first must not exceed last")
        if any(b[0] <= a[1] for a, b in zip(spans, spans[1:], strict=False)):
            raise ValueError("modality_by_id.ranges overlap")
        return self

    def modality_of(self, case_id: str) -> str | None:
        m = re.search(self.regex, case_id)
        if m is None:
            return None
        number = int(m.group("id"))
        return next((r.modality for r in self.ranges if r.first <= number <= r.last), None)


class TableOptions(Options):
    path: str
    delimiter: str = ","
    id_column: str
    split_column: str | None = None


class VolumeOptions(ReaderOptions):
    layout: Literal["msd", "pairs", "cases"] = "pairs"
    index: str = "dataset.json"
    lists: dict[str, Split | None] = Field(default_factory=lambda: {"training": None})
    images: str | None = None
    cases: str | None = None
    image: str | None = None
    labels: str | None = None
    masks: str | None = None
    missing_masks: Literal["reject", "empty"] = "reject"
    case_regex: str | None = None
    sequence: str | None = None
    channel: int | str | None = None
    study_regex: str | None = None
    split_by_path: dict[str, Split] = Field(default_factory=dict)
    table: TableOptions | None = None
    info: str | None = None
    modality_by_id: ModalityById | None = None

    @model_validator(mode="after")
    def _check(self) -> VolumeOptions:
        if self.layout == "msd":
            given = [k for k in ("images", "cases", "image", "labels", "masks") if getattr(self, k)]
            if given:
                raise ValueError(f"layout 'msd' takes its cases from '{self.index}'; drop {', '.join(given)}")
            if not self.lists:
                raise ValueError("layout 'msd' needs at least one list in 'lists'")
        else:
            if self.layout == "pairs" and self.images is None:
                raise ValueError("layout 'pairs' needs 'images' (a glob)")
            if self.layout == "cases" and (self.cases is None or self.image is None):
                raise ValueError("layout 'cases' needs 'cases' (a glob of folders) and 'image' (a pattern)")
            if (self.labels is None) == (self.masks is None):
                raise ValueError(f"layout '{self.layout}' needs exactly one of 'labels' and 'masks'")
            if self.masks is not None and "{label}" not in self.masks:
                raise ValueError("'masks' needs the placeholder {label}")
        if isinstance(self.channel, str) and self.layout != "msd":
            raise ValueError("a channel name needs layout 'msd' (names come from the index); give an index")
        if isinstance(self.channel, int) and self.channel < 0:
            raise ValueError("channel must be >= 0")
        allowed = {
            "images": {"sequence"},
            "cases": set(),
            "image": {"case", "dir", "sequence"},
            "labels": {"case", "dir", "sequence"} | ({"stem"} if self.layout == "pairs" else set()),
            "masks": {"case", "dir", "sequence", "label"} | ({"stem"} if self.layout == "pairs" else set()),
            "info": {"case", "dir"} | ({"stem"} if self.layout == "pairs" else set()),
        }
        for name, ok in allowed.items():
            pattern = getattr(self, name)
            used = set(PLACEHOLDER_RE.findall(pattern or ""))
            if used - ok:
                bad = ", ".join("{" + u + "}" for u in sorted(used - ok))
                raise ValueError(f"'{name}' cannot use {bad} here (allowed: {sorted(ok) or 'none'})")
            if "sequence" in used and not self.sequence:
                raise ValueError(f"'{name}' uses {{sequence}}: set option 'sequence' (e.g. flair)")
        for name, group in (("case_regex", "case"), ("study_regex", "study")):
            pattern = getattr(self, name)
            if pattern is not None and group not in compile_regex(pattern).groupindex:
                raise ValueError(f"{name} needs a named group (?P<{group}>...)")
        return self
