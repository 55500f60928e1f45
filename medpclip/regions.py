"""Frame annotations → region records: instances, COCO RLE, tight box, prompt points (DESIGN §4).

Input is the annotation of ONE 2D frame, already at its final size. Output is a list of :class:`Region`
(everything numeric derived from pixels) and a list of :class:`Drop` (what was left out and why).

Rules kept here:

- an instance is a connected component (8-connectivity) of one label's mask; instances of a label are
  numbered 0.. in source order (label map, then each named mask, then boxes, then points) and, within one
  mask, by (top row, left column) of the component's box, ties by raster order of its first pixel;
- the instance number counts dropped components and annotations too, so a changed filter never renumbers
  (or re-seeds) the regions that survive it;
- ``bbox`` is the tight box with exclusive max, ``area_px`` the pixel count, ``mask_rle`` COCO compressed RLE;
- points: the first positive is the most interior pixel (Euclidean distance transform, image border counted as
  boundary, ties to the first pixel in row-major order); further positives come from the central half (distance
  ≥ median distance over the mask); negatives lie outside the mask in its box grown by 25 % per side;
- mask-derived instances under ``min_area_px`` are dropped (``below_min_area``); what an annotator drew
  (boxes; masks of outlines, ``outlined``) only under ``min_drawn_px`` (``degenerate_annotation``); a point
  has no area to judge.

Pure numpy/scipy/pycocotools. Work per instance runs on its cropped box, never the whole image, because this
runs on millions of slices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

from medpclip.frame import Box, Point

RegionKind = Literal["mask", "box", "point"]

_EIGHT = np.ones((3, 3), dtype=bool)
# find_objects allocates one slot per value up to the maximum; beyond this, sparse values go through np.unique.
_FIND_OBJECTS_MAX_VALUE = 1 << 16
_NEG_MARGIN = 0.25


@dataclass(frozen=True)
class Region:
    label: str
    kind: RegionKind
    instance: int
    area_px: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1; exclusive max
    points: tuple[tuple[int, int], ...]  # (x, y)
    point_labels: tuple[int, ...]  # 1 positive, 0 negative
    mask_rle: dict | None  # {"size": [h, w], "counts": str}; None for box/point regions
    annotator: str | None = None


@dataclass(frozen=True)
class Drop:
    label: str
    reason: str  # stable code: below_min_area, unknown_label_value, invalid_box, box_outside_image, …
    detail: str
    stage: str = "region"  # "frame" for what concerns the whole frame (a truncated report)


# --- primitives ---------------------------------------------------------------------------------------------


def min_area(height: int, width: int, min_fraction: float, min_pixels: int) -> int:
    return max(math.ceil(min_fraction * height * width), int(min_pixels))


def encode_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    counts = rle["counts"]
    coco = {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
    return mask_utils.decode(coco).astype(bool)


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) with exclusive max; (0, 0, 0, 0) for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def connected_instances(mask: np.ndarray) -> list[np.ndarray]:
    """Full-size boolean masks of the 8-connected components, ordered by (top row, left column) of their box."""
    mask = np.asarray(mask).astype(bool, copy=False)
    out = []
    for sl, comp in _components(mask):
        full = np.zeros(mask.shape, dtype=bool)
        full[sl] = comp
        out.append(full)
    return out


def sample_points(
    mask: np.ndarray, rng: np.random.Generator, n_pos: int = 3, n_neg: int = 2
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """Prompt points for a mask: positives first, then negatives; fewer when the pixels run out."""
    mask = np.asarray(mask).astype(bool, copy=False)
    x0, y0, x1, y1 = tight_box(mask)
    if x1 == x0:
        return (), ()
    sl = (slice(y0, y1), slice(x0, x1))
    return _points_for_crop(mask[sl], sl, mask.shape, rng, n_pos, n_neg)


# --- extraction ---------------------------------------------------------------------------------------------


def extract_regions(
    shape: tuple[int, int],
    *,
    label_map: np.ndarray | None = None,
    label_values: dict[int, str] | None = None,
    masks: Sequence[tuple[str, np.ndarray]] = (),
    mask_annotators: Sequence[str | None] = (),
    boxes: Iterable[Box] = (),
    points: Iterable[Point] = (),
    min_area_px: int,
    rng_for: Callable[[str], np.random.Generator],
    n_pos: int = 3,
    n_neg: int = 2,
    min_drawn_px: int = 1,
    outlined: bool = False,
) -> tuple[list[Region], list[Drop]]:
    """Regions of one frame of ``shape`` (h, w), sorted by (label in order of first appearance, instance).

    ``mask_annotators`` is empty or one per mask (Frame.mask_annotators): every instance of a mask gets its
    mask's annotator. ``rng_for(f"{label}/{instance}")`` seeds each mask region's points. Bad annotations
    become drops, never exceptions: unknown_label_value, non_integer_label_map, mask_shape_mismatch,
    below_min_area, degenerate_annotation, invalid_box, box_outside_image, point_outside_image.

    Sizes (``specs.RegionFilterSpec``): mask-derived instances under ``min_area_px`` are ``below_min_area``;
    boxes, and mask instances when the masks are drawn outlines (``outlined``), are annotations kept down to
    ``min_drawn_px`` (``degenerate_annotation`` below it).
    """
    h, w = int(shape[0]), int(shape[1])
    acc = _Accumulator()

    if label_map is not None:
        for label, crop_sl, crop_mask in _label_map_masks(label_map, label_values or {}, (h, w), acc):
            minimum = _MinSize(min_area_px)  # a label map is never an outline
            _add_mask_instances(acc, label, crop_mask, crop_sl, (h, w), minimum, rng_for, n_pos, n_neg)

    # strict: annotators that do not pair one to one with the masks are a reader's bug, never guessed at
    annotators = mask_annotators or (None,) * len(masks)
    for (label, mask), annotator in zip(masks, annotators, strict=True):
        mask = np.asarray(mask)
        if mask.shape[:2] != (h, w) or mask.ndim != 2:
            acc.drop(label, "mask_shape_mismatch", f"mask {_shape_str(mask.shape)} != image {h}x{w}")
            continue
        mask = mask.astype(bool, copy=False)
        x0, y0, x1, y1 = tight_box(mask)
        sl = (slice(y0, y1), slice(x0, x1))
        minimum = _MinSize(min_drawn_px, drawn=True) if outlined else _MinSize(min_area_px)
        _add_mask_instances(acc, label, mask[sl], sl, (h, w), minimum, rng_for, n_pos, n_neg, annotator)

    for box in boxes:
        _add_box(acc, box, (h, w), _MinSize(min_drawn_px, drawn=True))

    for point in points:
        _add_point(acc, point, (h, w))

    regions = sorted(acc.regions, key=lambda r: (acc.order[r.label], r.instance))
    return regions, acc.drops


class _Accumulator:
    """Per-frame bookkeeping: label order of first appearance, per-label instance counters, outputs."""

    def __init__(self) -> None:
        self._canvas: np.ndarray | None = None
        self.order: dict[str, int] = {}
        self.next_instance: dict[str, int] = {}
        self.regions: list[Region] = []
        self.drops: list[Drop] = []

    def take_instances(self, label: str, n: int) -> int:
        self.order.setdefault(label, len(self.order))
        first = self.next_instance.get(label, 0)
        self.next_instance[label] = first + n
        return first

    def drop(self, label: str, reason: str, detail: str) -> None:
        self.drops.append(Drop(label, reason, detail))

    def encode_rle_at(self, shape: tuple[int, int], sl: tuple[slice, slice], crop: np.ndarray) -> dict:
        """COCO RLE of a full-frame mask that is ``crop`` at ``sl`` and empty elsewhere. One zeroed
        Fortran-ordered frame is kept per call of extract_regions and cleaned after each use: a fresh
        full-size array per instance cost more (page faults) than encoding it."""
        if self._canvas is None or self._canvas.shape != shape:
            self._canvas = np.zeros(shape, dtype=np.uint8, order="F")
        self._canvas[sl] = crop
        try:
            return encode_rle(self._canvas)
        finally:
            self._canvas[sl] = 0


def _label_map_masks(label_map, label_values, shape, acc):
    """Yield (label, crop slices, boolean crop) per named label in the map, ascending by value."""
    lm = _as_int_map(label_map)
    if lm is None:  # interpolated on resampling, most likely: no value can be trusted to name a structure
        acc.drop(
            "label_map", "non_integer_label_map", f"label map of {np.asarray(label_map).dtype} has fractions"
        )
        return
    if lm.shape != shape:
        acc.drop(
            "label_map",
            "mask_shape_mismatch",
            f"label map {_shape_str(lm.shape)} != image {shape[0]}x{shape[1]}",
        )
        return
    label_values = {int(v): str(name) for v, name in label_values.items()}
    boxes = _value_boxes(lm)
    if lm.dtype.kind == "i" and lm.size and lm.min() < 0:
        for v in np.unique(lm[lm < 0]).tolist():
            acc.drop(str(v), "unknown_label_value", f"value {v}: {int((lm == v).sum())} px")

    by_label: dict[str, list[int]] = {}
    for v in sorted(boxes):
        name = label_values.get(v)
        if name is None:
            n = int((lm[boxes[v]] == v).sum())
            acc.drop(str(v), "unknown_label_value", f"value {v}: {n} px")
            continue
        by_label.setdefault(name, []).append(v)

    for name, values in by_label.items():  # dict order = smallest value first
        if len(values) == 1:
            sl = boxes[values[0]]
            yield name, sl, lm[sl] == values[0]
        else:  # several values share one name: one mask, the union
            sl = _union_slices([boxes[v] for v in values])
            yield name, sl, np.isin(lm[sl], values)


def _as_int_map(label_map: np.ndarray) -> np.ndarray | None:
    lm = np.asarray(label_map)
    if lm.dtype == bool:
        return lm.view(np.uint8)
    if np.issubdtype(lm.dtype, np.integer):
        return lm
    rounded = np.rint(lm)
    if not np.array_equal(rounded, lm):
        return None
    return rounded.astype(np.int64)


def _value_boxes(lm: np.ndarray) -> dict[int, tuple[slice, slice]]:
    """Bounding slices of every value > 0 present in the map, in one pass where the values allow it."""
    vmax = int(lm.max()) if lm.size else 0
    if vmax <= 0:
        return {}
    if vmax <= _FIND_OBJECTS_MAX_VALUE:
        positive = lm if lm.dtype.kind == "u" or lm.min() >= 0 else np.maximum(lm, 0)
        # find_objects visits pixels one by one; two vectorised reductions first cut it to the labelled box
        # (organs fill a fraction of a CT slice: this halves the cost of the call on one).
        x0, y0, x1, y1 = tight_box(positive)
        found = ndimage.find_objects(positive[y0:y1, x0:x1])
        return {
            v + 1: (slice(sl[0].start + y0, sl[0].stop + y0), slice(sl[1].start + x0, sl[1].stop + x0))
            for v, sl in enumerate(found)
            if sl is not None
        }
    out = {}
    for v in np.unique(lm[lm > 0]).tolist():
        x0, y0, x1, y1 = tight_box(lm == v)
        out[int(v)] = (slice(y0, y1), slice(x0, x1))
    return out


def _union_slices(sls: list[tuple[slice, slice]]) -> tuple[slice, slice]:
    return (
        slice(min(s[0].start for s in sls), max(s[0].stop for s in sls)),
        slice(min(s[1].start for s in sls), max(s[1].stop for s in sls)),
    )


def _components(mask: np.ndarray) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """8-connected components of a boolean mask as (slices into ``mask``, boolean crop), in instance order."""
    lab, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return []
    found = ndimage.find_objects(lab)
    # ndimage.label numbers in raster order of the first pixel, so a stable sort on (top, left) breaks ties by it.
    order = sorted(range(n), key=lambda i: (found[i][0].start, found[i][1].start))
    return [(found[i], lab[found[i]] == i + 1) for i in order]


@dataclass(frozen=True)
class _MinSize:
    """The smallest region kept: ``drawn`` for what an annotator drew (boxes, outlines), whose rule and
    reason differ from those of mask-derived instances (``specs.RegionFilterSpec``)."""

    px: int
    drawn: bool = False

    def rejects(self, acc: _Accumulator, label: str, area: int) -> bool:
        """Drop a region of ``area`` px under the minimum (recorded in ``acc``); True when it was dropped."""
        if area >= self.px:
            return False
        if self.drawn:
            acc.drop(
                label, "degenerate_annotation", f"drawn region of {area} px < {self.px} px (min_drawn_pixels)"
            )
        else:
            acc.drop(label, "below_min_area", f"{area} px < {self.px} px")
        return True


def _add_mask_instances(
    acc, label, crop_mask, crop_sl, shape, minimum: _MinSize, rng_for, n_pos, n_neg, annotator=None
):
    comps = _components(crop_mask)
    first = acc.take_instances(label, len(comps))
    oy, ox = crop_sl[0].start, crop_sl[1].start
    for k, (sl, comp) in enumerate(comps):
        instance = first + k
        area = int(np.count_nonzero(comp))
        if minimum.rejects(acc, label, area):
            continue
        y0, y1 = oy + sl[0].start, oy + sl[0].stop
        x0, x1 = ox + sl[1].start, ox + sl[1].stop
        full_sl = (slice(y0, y1), slice(x0, x1))
        pts, pls = _points_for_crop(comp, full_sl, shape, rng_for(f"{label}/{instance}"), n_pos, n_neg)
        acc.regions.append(
            Region(
                label=label,
                kind="mask",
                instance=instance,
                area_px=area,
                bbox=(x0, y0, x1, y1),
                points=pts,
                point_labels=pls,
                mask_rle=acc.encode_rle_at(shape, full_sl, comp),
                annotator=annotator,
            )
        )


def _add_box(acc, box: Box, shape, minimum: _MinSize):
    h, w = shape
    instance = acc.take_instances(box.label, 1)
    bx0, by0, bx1, by1 = (float(v) for v in box.xyxy)
    if not (bx1 > bx0 and by1 > by0):  # also catches NaN
        acc.drop(box.label, "invalid_box", f"xyxy {_fmt_xyxy(box.xyxy)}")
        return
    x0 = math.floor(min(max(bx0, 0.0), w))
    y0 = math.floor(min(max(by0, 0.0), h))
    x1 = math.ceil(min(max(bx1, 0.0), w))
    y1 = math.ceil(min(max(by1, 0.0), h))
    area = (x1 - x0) * (y1 - y0)
    if area == 0:
        acc.drop(box.label, "box_outside_image", f"xyxy {_fmt_xyxy(box.xyxy)} outside {w}x{h}")
        return
    if minimum.rejects(acc, box.label, area):
        return
    acc.regions.append(
        Region(
            label=box.label,
            kind="box",
            instance=instance,
            area_px=area,
            bbox=(x0, y0, x1, y1),
            points=(((x0 + x1) // 2, (y0 + y1) // 2),),
            point_labels=(1,),
            mask_rle=None,
            annotator=box.annotator,
        )
    )


def _add_point(acc, point: Point, shape):
    h, w = shape
    instance = acc.take_instances(point.label, 1)
    px, py = (float(v) for v in point.xy)
    if not (0.0 <= px < w and 0.0 <= py < h):  # also catches NaN
        acc.drop(point.label, "point_outside_image", f"xy ({px:g}, {py:g}) outside {w}x{h}")
        return
    x, y = math.floor(px), math.floor(py)
    acc.regions.append(
        Region(
            label=point.label,
            kind="point",
            instance=instance,
            area_px=1,
            bbox=(x, y, x + 1, y + 1),
            points=((x, y),),
            point_labels=(1,),
            mask_rle=None,
            annotator=point.annotator,
        )
    )


# --- points -------------------------------------------------------------------------------------------------


def _points_for_crop(comp, sl, shape, rng, n_pos, n_neg):
    """Points for a mask whose pixels all lie in ``comp`` = mask[sl] (sl is the tight box), in image (x, y)."""
    h, w = shape
    y0, x0 = sl[0].start, sl[1].start
    ch, cw = comp.shape

    # One background pixel around the tight box is enough to make the crop's distances equal the full image's
    # with its border counted as boundary: any outside pixel is at least as far as the ring between.
    padded = np.zeros((ch + 2, cw + 2), dtype=bool)
    padded[1:-1, 1:-1] = comp
    dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    best = int(np.argmax(dist))  # first maximum in row-major order
    pos = [best]
    if n_pos > 1:
        central = np.flatnonzero(dist >= _median(dist[comp]))
        central = central[central != best]
        k = min(n_pos - 1, central.size)
        if k:
            pos.extend(rng.choice(central, size=k, replace=False).tolist())
    pos_xy = [(x0 + i % cw, y0 + i // cw) for i in pos[: max(n_pos, 0)]]

    neg_xy: list[tuple[int, int]] = []
    if n_neg > 0:
        my, mx = math.ceil(_NEG_MARGIN * ch), math.ceil(_NEG_MARGIN * cw)
        ny0, ny1 = max(y0 - my, 0), min(y0 + ch + my, h)
        nx0, nx1 = max(x0 - mx, 0), min(x0 + cw + mx, w)
        outside = np.ones((ny1 - ny0, nx1 - nx0), dtype=bool)
        outside[y0 - ny0 : y0 - ny0 + ch, x0 - nx0 : x0 - nx0 + cw] = ~comp
        # No fallback to "anywhere outside" is needed: the margin is at least one pixel on each side not at the
        # image border, so this box lacks outside pixels only when the mask is the whole image.
        cand = np.flatnonzero(outside)
        ow = nx1 - nx0
        k = min(n_neg, cand.size)
        if k:
            neg_xy = [(nx0 + i % ow, ny0 + i // ow) for i in rng.choice(cand, size=k, replace=False).tolist()]

    points = tuple((int(x), int(y)) for x, y in pos_xy + neg_xy)
    return points, (1,) * len(pos_xy) + (0,) * len(neg_xy)


def _median(values: np.ndarray) -> float:
    """np.median of a 1-D array without its generic-axis overhead (called once per instance)."""
    k = values.size // 2
    if values.size % 2:
        return float(np.partition(values, k)[k])
    part = np.partition(values, (k - 1, k))
    return float((part[k - 1] + part[k]) / 2)


def _shape_str(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _fmt_xyxy(xyxy) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in xyxy) + "]"
