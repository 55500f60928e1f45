"""Polygons and instance masks for the readers that get outlines rather than masks (contours: LIDC-IDRI,
MoNuSeg; tables: COCO).

- :func:`polygon_crop` fills a polygon on the crop of the image that holds it: a pixel belongs to the
  polygon when its CENTRE lies inside or on the outline, pixel ``(r, c)`` having its centre at ``(x=c, y=r)``
  (the rule of ``skimage.draw.polygon(rows=Y, cols=X)`` that MoNuSeg loaders use; :func:`fill_polygon`, also
  DICOM RTSTRUCT's rasterization). ``boundary=False`` leaves out the pixels the outline runs through
  (LIDC readers drew their outlines just outside the nodule).
- :class:`InstanceLayers` packs many instance masks into a few full-size masks so that no two instances of
  one layer touch (8-connectivity): the region extraction, which numbers the connected components of each
  mask as instances, then sees each instance once, without one full-size array per nucleus (a MoNuSeg tile
  has ~700 nuclei: 700 MB as separate 1000 × 1000 masks, a few MB as layers). Overlapping instances land in
  different layers and stay whole.
- :func:`rejected_outline` turns an outline with fewer than 3 points (no area) into a zero-size box: the
  region extraction rejects it as ``invalid_box`` with the label and position, so the bad annotation reaches
  ``rejects`` at region level and the rest of the image is unaffected. (A Frame has no field for reader-side
  region rejects; this is the channel it has.)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from medpclip.frame import Box

_EIGHT = np.ones((3, 3), dtype=bool)


def fill_polygon(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie inside or on the polygon (even-odd rule), pixel centres at integer (r, c)."""
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    if rows.size < 3:
        return out
    y0, x0 = rows, cols
    y1, x1 = np.roll(rows, -1), np.roll(cols, -1)
    r_lo = max(0, math.ceil(float(rows.min()) - 1e-9))
    r_hi = min(h - 1, math.floor(float(rows.max()) + 1e-9))
    eps = 1e-6
    for r in range(r_lo, r_hi + 1):
        for lower_closed in (True, False):  # half-open both ways: the union keeps the boundary rows
            if lower_closed:
                hit = ((y0 <= r) & (r < y1)) | ((y1 <= r) & (r < y0))
            else:
                hit = ((y0 < r) & (r <= y1)) | ((y1 < r) & (r <= y0))
            if not hit.any():
                continue
            t = (r - y0[hit]) / (y1[hit] - y0[hit])
            xs = np.sort(x0[hit] + t * (x1[hit] - x0[hit]))
            for a, b in zip(xs[0::2], xs[1::2], strict=False):
                c0, c1 = max(0, math.ceil(a - eps)), min(w - 1, math.floor(b + eps))
                if c0 <= c1:
                    out[r, c0 : c1 + 1] = True
    return out


def polygon_crop(
    xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int], *, boundary: bool = True
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """(crop slices, boolean crop) of a polygon with vertices (x = column, y = row) on an image of ``shape``;
    None when it covers no pixel of the image (fewer than 3 vertices, or outside)."""
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if xs.size < 3 or not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        return None
    h, w = shape
    r0, r1 = max(0, math.ceil(ys.min() - 1e-9)), min(h - 1, math.floor(ys.max() + 1e-9))
    c0, c1 = max(0, math.ceil(xs.min() - 1e-9)), min(w - 1, math.floor(xs.max() + 1e-9))
    if r0 > r1 or c0 > c1:
        return None
    crop = fill_polygon(ys - r0, xs - c0, (r1 - r0 + 1, c1 - c0 + 1))
    if not boundary:
        for r, c in _outline_pixels(xs, ys):
            if r0 <= r <= r1 and c0 <= c <= c1:
                crop[r - r0, c - c0] = False
    if not crop.any():
        return None
    return (slice(r0, r1 + 1), slice(c0, c1 + 1)), crop


def _outline_pixels(xs: np.ndarray, ys: np.ndarray) -> set[tuple[int, int]]:
    """Pixel centres (row, col) the closed outline runs through: every lattice point on an edge between two
    integer vertices (LIDC edge maps are pixel chains; other outlines have no integer vertices to speak of)."""
    out: set[tuple[int, int]] = set()
    n = xs.size
    for i in range(n):
        xa, ya, xb, yb = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        if not all(float(v).is_integer() for v in (xa, ya, xb, yb)):
            continue
        xa, ya, xb, yb = int(xa), int(ya), int(xb), int(yb)
        steps = math.gcd(abs(xb - xa), abs(yb - ya)) or 1
        dx, dy = (xb - xa) // steps, (yb - ya) // steps
        out.update((ya + t * dy, xa + t * dx) for t in range(steps + 1))
    return out


class InstanceLayers:
    """Full-size boolean layers holding instances that never touch within a layer (first layer that fits)."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.layers: list[np.ndarray] = []

    def add(self, sl: tuple[slice, slice], crop: np.ndarray) -> None:
        h, w = self.shape
        g0, g1 = max(0, sl[0].start - 1), min(h, sl[0].stop + 1)
        h0, h1 = max(0, sl[1].start - 1), min(w, sl[1].stop + 1)
        grown = np.zeros((g1 - g0, h1 - h0), dtype=bool)
        grown[sl[0].start - g0 : sl[0].stop - g0, sl[1].start - h0 : sl[1].stop - h0] = crop
        grown = ndimage.binary_dilation(grown, structure=_EIGHT)
        for layer in self.layers:
            if not (layer[g0:g1, h0:h1] & grown).any():
                layer[sl] |= crop
                return
        layer = np.zeros(self.shape, dtype=bool)
        layer[sl] = crop
        self.layers.append(layer)


def rejected_outline(label: str, x: float, y: float, annotator: str | None = None) -> Box:
    """A zero-size box at an outline's first point: rejected downstream as ``invalid_box`` (see module doc)."""
    return Box(label, (float(x), float(y), float(x), float(y)), annotator)
