"""The one intermediate between readers and everything after them (DESIGN §3).

A reader turns one :class:`SourceItem` (a case: a volume, an image, a study) into :class:`Frame` objects.
A Frame is one 2D image plus every annotation the dataset has for it, in whichever form the dataset gave it,
plus provenance. Nothing downstream of the readers knows about file formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Intensity = Literal["hu", "raw", "uint8"]
Plane = Literal["ax", "co", "sa", "im"]  # axial, coronal, sagittal, native 2D image


@dataclass(frozen=True)
class SourceFile:
    """A file a sample was made from, relative to the raw root."""

    role: str  # "image", "label", "mask", "table", …
    path: str  # POSIX path relative to the raw root


@dataclass(frozen=True)
class SourceItem:
    """One case as discovered on disk: the unit a reader reads at once.

    ``case_id`` is the dataset's own id for the case (file stem, image index…); it names the sample keys.
    ``meta`` carries reader-specific, JSON-serialisable facts found at discovery (table rows, official split).
    """

    dataset: str
    case_id: str
    files: tuple[SourceFile, ...]
    patient_id: str
    study_id: str | None = None
    official_split: str | None = None
    meta: tuple[tuple[str, object], ...] = ()

    def meta_dict(self) -> dict[str, object]:
        return dict(self.meta)

    @staticmethod
    def from_dict(d: dict) -> SourceItem:
        """The inverse of ``dataclasses.asdict`` after a JSON round trip (how items reach Ray workers):
        files and meta pairs come back as tuples; meta values stay as JSON made them (lists, not tuples)."""
        return SourceItem(
            dataset=d["dataset"],
            case_id=d["case_id"],
            files=tuple(SourceFile(**f) for f in d["files"]),
            patient_id=d["patient_id"],
            study_id=d["study_id"],
            official_split=d["official_split"],
            meta=tuple((k, v) for k, v in d["meta"]),
        )


@dataclass(frozen=True)
class Box:
    """A box annotation in pixel coordinates of its frame, xyxy with exclusive max (floats allowed)."""

    label: str
    xyxy: tuple[float, float, float, float]
    annotator: str | None = None


@dataclass(frozen=True)
class Point:
    label: str
    xy: tuple[float, float]
    annotator: str | None = None


@dataclass
class Frame:
    """One 2D image with everything known about it.

    ``image`` is (H, W) or (H, W, 3); ``intensity`` says what its values mean: ``hu`` (CT Hounsfield units),
    ``raw`` (scanner values, any dtype, normalised later) or ``uint8`` (display-ready, e.g. a JPEG).
    ``label_map`` is an integer (H, W) map whose values ``label_values`` names; ``masks`` are named binary
    (H, W) masks (several may share a label: they stay separate annotations). ``mask_annotators`` says who
    drew each mask where the dataset says (LIDC's readers): empty, or one entry (or None) per mask, in order.
    It is a list beside ``masks`` rather than a third element of each pair so that every reader and consumer
    that unpacks ``(label, mask)`` stays as it is. Boxes and points carry their annotator themselves and are
    in this frame's pixel coordinates. ``outlined`` says the masks are polygons an annotator drew on this very
    image (LIDC's and ImageScope's outlines, COCO polygons), not label maps, mask files or cuts through a 3D
    mask: like boxes and points they are kept down to ``regions.min_drawn_pixels``, not held to the area rule
    that removes slicing slivers and mask noise. ``modality`` is set where a dataset mixes modalities (AMOS: CT and MR
    cases under one spec); ``None`` means the spec's modality. ``source_jpeg`` holds an RGB JPEG source's
    bytes when ``image`` is exactly their decoded pixels (the raster reader sets it): a colour photograph
    that needs no resize is then stored as those bytes, less their metadata (``corpus/encoding.py``).
    """

    item: SourceItem
    image: np.ndarray
    intensity: Intensity
    plane: Plane = "im"
    slice_index: int = 0
    spacing_mm: tuple[float, float] | None = None  # (row, col) spacing
    label_map: np.ndarray | None = None
    label_values: dict[int, str] = field(default_factory=dict)
    masks: list[tuple[str, np.ndarray]] = field(default_factory=list)
    mask_annotators: list[str | None] = field(default_factory=list)  # empty, or one per mask
    outlined: bool = False  # the masks are outlines drawn on this image (see the class docstring)
    boxes: list[Box] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    image_labels: list[str] = field(default_factory=list)
    report: str | None = None
    modality: str | None = None  # per-frame modality; None = spec.modality
    source_jpeg: bytes | None = None  # an RGB JPEG source's bytes, decoded unchanged into ``image``

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def has_annotations(self) -> bool:
        return bool(
            (self.label_map is not None and np.any(self.label_map))
            or any(np.any(m) for _, m in self.masks)
            or self.boxes
            or self.points
        )


class ReadError(Exception):
    """A source item could not be read. ``reason`` is a short stable code that lands in ``rejects``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DiscoveryNote:
    """What a reader's ``discover`` says about the dataset as a whole rather than about one case, e.g. a table
    whose rows name images that are not on disk. ``discover`` RETURNS these as its generator's value;
    ``corpus.plan`` makes each one plan-stage reject row (``reason``, ``detail``, ``path``) and, where given,
    one line of the build summary (``summary``). ``list(discover(…))`` drops them, so readers without notes need nothing."""

    reason: str
    detail: str
    path: str
    summary: str | None = None  # None: the reject row says it all (one absent mask file of a case)
