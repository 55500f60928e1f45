"""The ``volumes`` family's format options (``spec.format.options``; documented in ``volumes/reader.py``).

Imported by ``medpclip.specs`` (through ``sources/registry.py``), so options are checked when a spec loads;
this module imports no reader and not ``medpclip.specs``.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from medpclip.sources.base import (
    Glob,
    Globs,
    Options,
    ReaderOptions,
    compile_regex,
    layout_union,
    regex_with,
)
from medpclip.vocab import Modality, Split

PLACEHOLDER_RE = re.compile(r"\{([a-z]+)\}")
# Image suffixes the reader knows (NIfTI/Analyze/MGH by nibabel, MetaImage/NRRD by SimpleITK), and the data
# files of detached MetaImage/NRRD headers (``.mhd`` → ``.raw``/``.zraw``), which are never an image or label.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".img", ".hdr", ".mha", ".mhd", ".nrrd", ".nhdr")
DATA_SUFFIXES = (".raw", ".zraw")
_FILE_PATTERNS = ("images", "image", "labels", "masks")


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


class InstanceTable(Options):
    """Per-instance classes of an instance-coded label map (RibFrac): one row per (case, instance id)."""

    path: Globs  # one table, or several (globs) whose rows are joined: RibFrac's train-1, train-2, val CSVs
    delimiter: str = ","
    id_column: str
    instance_column: str
    class_column: str
    # the class column's code → spec label (RibFrac: 1 → displaced, …, -1 → unidentified); instance 0 is
    # background whatever its row says
    classes: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> InstanceTable:
        if len({self.id_column, self.instance_column, self.class_column}) != 3:
            raise ValueError("instance_table: id_column, instance_column and class_column must differ")
        if any(not code.strip() or not label.strip() for code, label in self.classes.items()):
            raise ValueError("instance_table.classes maps a code to a spec label: neither may be empty")
        return self


CaseRegex = regex_with("case")
StudyRegex = regex_with("study")


class VolumeLayout(ReaderOptions):
    """Options every volumes layout takes. Subclasses name the placeholders each file pattern may use
    (``PLACEHOLDERS``); a pattern using another one is refused when the spec loads."""

    PLACEHOLDERS: ClassVar[dict[str, set[str]]] = {"info": {"case", "dir"}}

    case_regex: CaseRegex | None = None
    sequence: str | None = None
    channel: int | str | None = None
    study_regex: StudyRegex | None = None
    split_by_path: dict[str, Split] = Field(default_factory=dict)
    table: TableOptions | None = None
    info: str | None = None
    modality_by_id: ModalityById | None = None
    # case id → why it is never read (a misaligned label the publisher withdrew): one plan note each
    exclude: dict[str, str] = Field(default_factory=dict)
    # added to CT voxels before windowing: publishers that store HU + 1000 so that air is 0 (KiPA22: -1000)
    hu_offset: float = 0.0

    @model_validator(mode="after")
    def _check_patterns(self) -> VolumeLayout:
        if isinstance(self.channel, int) and self.channel < 0:
            raise ValueError("channel must be >= 0")
        for case, why in self.exclude.items():
            if not case.strip() or not why.strip():
                raise ValueError(f"exclude: case '{case}' needs an id and a reason (why it is never read)")
        for name, ok in self.PLACEHOLDERS.items():
            raw = getattr(self, name) or ""
            used = set(PLACEHOLDER_RE.findall(" ".join(raw) if isinstance(raw, list) else raw))
            if used - ok:
                bad = ", ".join("{" + u + "}" for u in sorted(used - ok))
                raise ValueError(f"'{name}' cannot use {bad} here (allowed: {sorted(ok) or 'none'})")
            if "sequence" in used and not self.sequence:
                raise ValueError(f"'{name}' uses {{sequence}}: set option 'sequence' (e.g. flair)")
            value = raw if isinstance(raw, str) else ""
            if name in _FILE_PATTERNS and value.lower().endswith(DATA_SUFFIXES):
                raise ValueError(
                    f"'{name}' names {value.rsplit('.', 1)[-1]} data files: name their .mhd/.nhdr header "
                    f"instead (a data file has no geometry)"
                )
        return self


class MsdVolumes(VolumeLayout):
    """``layout: msd``: cases from the lists of the index (``dataset.json``), labels named by it."""

    layout: Literal["msd"]
    index: str = "dataset.json"
    lists: dict[str, Split | None] = Field(default_factory=lambda: {"training": None}, min_length=1)


class _FileVolumes(VolumeLayout):
    """A layout whose annotations are found by pattern: one label volume (``labels``) or one mask per spec
    label (``masks``, with ``{label}``)."""

    labels: str | None = None
    masks: str | None = None
    # a mask file a case lacks (a partial download, an older release): build the case with the masks it has
    # and write a reject row per absent file (skip), refuse the case (reject), or take it as an absent
    # structure without a row (empty: publishers that write no file for what a case lacks)
    missing_masks: Literal["skip", "reject", "empty"] = "skip"
    # what case_regex (or, without one, the case id itself) is taken from: the folder or file name, or its
    # path relative to the dataset folder (autoPET: PETCT_<patient>/<study date>, the patient in the parent)
    case_regex_on: Literal["name", "path"] = "name"
    # fields (table columns, info keys) holding 0-based frame indices of a 4D image and label: one case per
    # field, reading that frame only (M&Ms: ED, ES)
    time_frames: tuple[str, ...] = ()
    # folder name → the name that replaces it in the {dir} of labels/masks: an annotation tree beside the
    # image tree (BIDS rawdata/ → derivatives/: VerSe)
    annotation_dir_parts: dict[str, str] = Field(default_factory=dict)
    # spec label → the label-map values that make up the structure, for label maps whose values code the
    # overlap of structures (SegRap2023: value 6 is both the left temporal lobe and the left hippocampus):
    # each label becomes its own mask, so overlapping structures both survive
    label_sets: dict[str, tuple[int, ...]] = Field(default_factory=dict)
    # a label map whose values are instance ids, their classes in a per-instance table (RibFrac): each
    # instance becomes its own mask under its class's spec label, so touching instances stay apart
    instance_table: InstanceTable | None = None

    @model_validator(mode="after")
    def _check_annotations(self) -> _FileVolumes:
        layout = getattr(self, "layout", "?")
        for old, new in self.annotation_dir_parts.items():
            if not all(part and part not in (".", "..") and "/" not in part for part in (old, new)):
                raise ValueError(
                    f"annotation_dir_parts: '{old}' → '{new}' must map one folder name to another (no '/')"
                )
        if self.time_frames:
            if self.table is None and self.info is None:
                raise ValueError(
                    "time_frames names fields of a per-case table or info file: set 'table' or 'info'"
                )
            if self.channel is not None:
                raise ValueError("time_frames and channel both pick the 4th axis: set only one")
            if len(set(self.time_frames)) != len(self.time_frames):
                raise ValueError("time_frames names a field twice")
        if (self.labels is None) == (self.masks is None):
            raise ValueError(f"layout '{layout}' needs exactly one of 'labels' and 'masks'")
        if self.label_sets:
            if self.labels is None:
                raise ValueError("label_sets name values of a label map: they need 'labels', not 'masks'")
            for label, values in self.label_sets.items():
                if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
                    raise ValueError(f"label_sets['{label}'] needs distinct label-map values >= 1")
        if self.instance_table is not None:
            if self.labels is None:
                raise ValueError(
                    "instance_table classes the ids of a label map: it needs 'labels', not 'masks'"
                )
            if self.label_sets:
                raise ValueError("instance_table and label_sets both say what label-map values mean: set one")
            if self.time_frames:
                raise ValueError("instance_table and time_frames cannot be combined (instances are per case)")
        if self.masks is not None and "{label}" not in self.masks:
            raise ValueError("'masks' needs the placeholder {label}")
        if isinstance(self.channel, str):
            raise ValueError("a channel name needs layout 'msd' (names come from the index); give an index")
        return self


class PairVolumes(_FileVolumes):
    """``layout: pairs`` (the default): one case per image file (``images``, a glob), its annotation beside."""

    PLACEHOLDERS: ClassVar[dict[str, set[str]]] = {
        "images": {"sequence"},
        "labels": {"case", "dir", "sequence", "stem"},
        "masks": {"case", "dir", "sequence", "label", "stem"},
        "info": {"case", "dir", "stem"},
    }

    layout: Literal["pairs"] = "pairs"
    images: Glob
    # image folder → the folder its annotations are in, as {dir} of labels/masks (WORD: imagesTr →
    # labelsTr, imagesVal → labelsVal); a folder not listed is its own
    annotation_dirs: dict[str, str] = Field(default_factory=dict)


class CaseVolumes(_FileVolumes):
    """``layout: cases``: one case per folder (``cases``, a glob of folders), its image by pattern."""

    PLACEHOLDERS: ClassVar[dict[str, set[str]]] = {
        "cases": set(),
        "image": {"case", "dir", "sequence"},
        "labels": {"case", "dir", "sequence"},
        "masks": {"case", "dir", "sequence", "label"},
        "info": {"case", "dir"},
    }

    layout: Literal["cases"]
    cases: Globs
    image: str


# One model per layout, chosen by ``layout`` (``pairs`` when it is left out), so a field of another layout
# is refused by name (``format.options.images``) instead of being sorted out by one long validator.
VolumeOptions = layout_union({"msd": MsdVolumes, "pairs": PairVolumes, "cases": CaseVolumes}, default="pairs")
