"""Series volumes: the stack of an item's slices and its Frames for the spec's planes with annotations."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medpclip import imaging
from medpclip.frame import Box, Frame, Intensity, Point, ReadError, SourceItem
from medpclip.sources._common import DEFAULT_MAX_PIXELS, check_pixels, existing, files_of
from medpclip.sources.dicom.annotations import Channels
from medpclip.sources.dicom.files import as_float, decode_pixels, frame_modality, read_dataset
from medpclip.sources.dicom.geometry import Geometry, SliceGeo, geometry_of, slice_geo
from medpclip.sources.dicom.intensity import modality_lut, rescale_of
from medpclip.specs import DatasetSpec

_PLANES_OF_AXIS = {0: "sa", 1: "co", 2: "ax"}


@dataclass
class SeriesVolume:
    """An item's single-frame series in stack order (ascending along the slice normal): modality values (HU
    for CT) as (k, rows, cols), its geometry, and the stack index of each SOP Instance UID."""

    stack: np.ndarray
    geo: Geometry
    sop_to_k: dict[tuple[str, int | None], int]
    intensity: Intensity
    modality: str | None


def load_series(
    raw_root: Path, item: SourceItem, *, drop_repeated: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> SeriesVolume:
    """The item's ``image`` files assembled into one volume (the ``series`` kind of :func:`discover`).

    ``drop_repeated``: of several slices at one position keep the one with the lowest ``InstanceNumber`` (then
    file name) instead of refusing the series — pylidc's rule for the LIDC-IDRI scans that repeat a slice.
    The dropped slices' SOP Instance UIDs are not in ``sop_to_k``."""
    rels = files_of(item, "image")
    headers = [read_dataset(existing(raw_root, rel), rel, header_only=True) for rel in rels]
    geos = []
    for rel, ds in zip(rels, headers, strict=True):
        g = slice_geo(ds)
        if g is None:
            raise ReadError("inconsistent_series", f"{rel}: no ImagePositionPatient/Orientation/PixelSpacing")
        geos.append(g)
    if drop_repeated and len(geos) > 1:
        keep = _first_at_each_position(headers, geos, rels)
        rels, headers, geos = [rels[i] for i in keep], [headers[i] for i in keep], [geos[i] for i in keep]
    geo, order = geometry_of(geos, item.case_id)
    check_pixels((geo.depth, *geo.shape), item.case_id, max_pixels, "series")  # before the stack exists
    ct = str(headers[0].get("Modality", "")).upper() == "CT"
    rescale = [rescale_of(headers[i]) for i in order]
    stack = SliceStack(geo.depth, geo.shape, rescale)
    sop_to_k: dict[tuple[str, int | None], int] = {}
    for k, i in enumerate(order):
        ds = read_dataset(existing(raw_root, rels[i]), rels[i])
        stored = decode_pixels(ds, rels[i], max_pixels)
        if stored.shape != geo.shape:
            raise ReadError("inconsistent_series", f"{rels[i]}: pixel data {stored.shape} != {geo.shape}")
        stack.put(k, stored, ds)
        sop_to_k[(str(ds.get("SOPInstanceUID", "")), None)] = k
    intensity: Intensity = "hu" if ct else "raw"
    return SeriesVolume(stack.data, geo, sop_to_k, intensity, frame_modality(headers[0]))


def _first_at_each_position(headers: list[Dataset], geos: list[SliceGeo], rels: list[str]) -> list[int]:
    """Indices of the slices to keep: per position along the normal (to 1 µm), the lowest InstanceNumber."""
    first = geos[0].orientation
    normal = np.cross(first[:3], first[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        return list(range(len(geos)))
    normal = normal / norm
    best: dict[float, int] = {}
    for i, (ds, g) in enumerate(zip(headers, geos, strict=True)):
        at = round(float(g.position @ normal), 3)
        rank = (as_float(ds.get("InstanceNumber"), math.inf), rels[i])
        j = best.get(at)
        if j is None or rank < (as_float(headers[j].get("InstanceNumber"), math.inf), rels[j]):
            best[at] = i
    return sorted(best.values())


class SliceStack:
    """The (k, rows, cols) volume being filled: int16 while every slice's modality values are integers that
    fit (CT with slope 1), widened to int32 when one does not; float32 when any rescale is fractional."""

    def __init__(self, depth: int, shape: tuple[int, int], rescale: list[tuple[float, float]]):
        integer = all(slope == 1.0 and float(inter).is_integer() for slope, inter in rescale)
        self.data = np.empty((depth, *shape), dtype=np.int16 if integer else np.float32)

    def put(self, k: int, stored: np.ndarray, ds: Dataset) -> None:
        """Stored values → modality values (HU for CT); MONOCHROME1 (not expected in volumes) mirrored."""
        values, (lo, hi) = modality_lut(stored, ds)
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            values = (lo + hi) - values.astype(np.float64)
        if self.data.dtype.kind == "i":
            values = np.asarray(values, dtype=np.int64)
            if (
                self.data.dtype == np.int16
                and values.size
                and (values.min() < -32768 or values.max() > 32767)
            ):
                self.data = self.data.astype(np.int32)
        self.data[k] = values


@dataclass(frozen=True)
class StackPoint:
    """A point on slice ``k`` of a series stack. ``row``/``col`` are continuous pixel coordinates of the stored
    slice (pixel ``i`` covers ``[i, i + 1)``, so its centre is ``i + 0.5``), as :class:`~medpclip.frame.Point`."""

    label: str
    k: int
    row: float
    col: float
    annotator: str | None = None


@dataclass(frozen=True)
class StackBox:
    """A box on slice ``k`` of a series stack: rows ``[r0, r1)``, columns ``[c0, c1)`` of the stored slice."""

    label: str
    k: int
    r0: float
    c0: float
    r1: float
    c1: float
    annotator: str | None = None


class _FrameMapper:
    """Continuous stack coordinates (col, row, k) → (slice index, display row, display col) of a plane, by the
    same reorientation and display flip that :func:`volume_frames` applies to the pixels."""

    def __init__(self, affine: np.ndarray, shape_crk: tuple[int, int, int]):
        import nibabel as nib

        ornt = nib.orientations.io_orientation(affine)
        self.transform = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(("R", "A", "S")))
        self.shape = shape_crk
        self.out_shape = [0, 0, 0]
        for i, n in enumerate(shape_crk):
            self.out_shape[int(self.transform[i, 0])] = n

    def __call__(self, plane: str, col: float, row: float, k: float) -> tuple[int, float, float]:
        v = [0.0, 0.0, 0.0]
        for i, u in enumerate((col, row, k)):
            j = int(self.transform[i, 0])
            v[j] = self.shape[i] - u if self.transform[i, 1] < 0 else u
        axis = {"sa": 0, "co": 1, "ax": 2}[plane]
        p0, p1 = (a for a in (0, 1, 2) if a != axis)
        m = self.out_shape
        return math.floor(v[axis]), m[p1] - v[p1], m[p0] - v[p0]


def volume_frames(
    spec: DatasetSpec,
    item: SourceItem,
    vol: SeriesVolume,
    channels: Channels,
    *,
    points: tuple[StackPoint, ...] | list[StackPoint] = (),
    boxes: tuple[StackBox, ...] | list[StackBox] = (),
    outlined: bool = False,
) -> Iterator[Frame]:
    """Frames of a series volume for the spec's planes, with the masks in ``channels`` and the points and boxes
    given on the stack. Points go to every plane (a point is a 3D position); boxes only to the acquisition
    plane they were drawn on. ``outlined``: the masks are outlines drawn slice by slice (LIDC), so frames of
    the acquisition plane are ``Frame.outlined``; frames of other planes cut through them like any 3D mask."""
    stack, geo = vol.stack, vol.geo
    affine = geo.affine_ras()
    data, zooms = imaging.reorient_canonical(stack.transpose(2, 1, 0), affine)
    planes_src = [imaging.reorient_canonical(p.transpose(2, 1, 0), affine)[0] for p in channels.planes]
    stack_axis = _stack_axis_after_reorientation(affine)
    if geo.depth == 1 or not geo.regular:
        planes = (_PLANES_OF_AXIS[stack_axis],)
    else:
        planes = spec.slicing.planes
    mapper = _FrameMapper(affine, (geo.shape[1], geo.shape[0], geo.depth)) if points or boxes else None
    # Frame.mask_annotators stays empty where no channel has one (every source but LIDC's readers)
    annotated = any(a is not None for a in channels.annotators)
    for plane in planes:
        frame_points: dict[int, list[Point]] = defaultdict(list)
        frame_boxes: dict[int, list[Box]] = defaultdict(list)
        if mapper is not None:
            for p in points:
                index, r, c = mapper(plane, p.col, p.row, p.k + 0.5)
                frame_points[index].append(Point(p.label, (c, r), p.annotator))
            if plane == _PLANES_OF_AXIS[stack_axis]:
                for b in boxes:
                    index, ra, ca = mapper(plane, b.c0, b.r0, b.k + 0.5)
                    _, rb, cb = mapper(plane, b.c1, b.r1, b.k + 0.5)
                    xyxy = (min(ca, cb), min(ra, rb), max(ca, cb), max(ra, rb))
                    frame_boxes[index].append(Box(b.label, xyxy, b.annotator))
        iters = [imaging.iter_slices(p, zooms, plane, spec.slicing.step) for p in planes_src]
        for index, img, spacing in imaging.iter_slices(data, zooms, plane, spec.slicing.step):
            bits = [next(it)[1] for it in iters]
            masks, annotators = [], []
            for c, label in enumerate(channels.labels):
                m = (bits[c // 8] >> (c % 8)) & 1
                if m.any():
                    masks.append((label, m.astype(bool)))
                    annotators.append(channels.annotators[c])
            yield Frame(
                item=item, image=img, intensity=vol.intensity, plane=plane, slice_index=index,
                spacing_mm=spacing, masks=masks, mask_annotators=annotators if annotated else [],
                outlined=outlined and plane == _PLANES_OF_AXIS[stack_axis], modality=vol.modality,
                points=frame_points.get(index, []), boxes=frame_boxes.get(index, []),
            )  # fmt: skip


def _stack_axis_after_reorientation(affine: np.ndarray) -> int:
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(("R", "A", "S")))
    return int(transform[2, 0])
