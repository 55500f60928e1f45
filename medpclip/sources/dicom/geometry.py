"""Geometry: slice positions and orientation, pixel spacing, slices ordered into a (regular) volume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from medpclip.frame import ReadError
from medpclip.sources.dicom.files import as_float
from medpclip.sources.dicom.functional_groups import functional_group

_IRREGULAR_GAP = 0.10  # relative deviation of a slice gap from the median that makes a series irregular


def as_vector(v, n: int) -> np.ndarray | None:
    if v is None or len(v) != n:
        return None
    try:
        out = np.array([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if np.all(np.isfinite(out)) else None


@dataclass
class SliceGeo:
    position: np.ndarray  # ImagePositionPatient (LPS mm), centre of the first pixel
    orientation: np.ndarray  # 6 direction cosines: row direction (along a row), column direction
    spacing: tuple[float, float]  # (between rows, between columns) mm
    shape: tuple[int, int]
    thickness: float | None = None


@dataclass
class Geometry:
    """Slices in stack order (ascending along the normal)."""

    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    spacing: tuple[float, float]
    shape: tuple[int, int]
    positions: np.ndarray  # (k, 3)
    proj: np.ndarray  # (k,) positions on the normal
    step: np.ndarray  # slice vector (mm)
    regular: bool

    @property
    def depth(self) -> int:
        return int(self.positions.shape[0])

    def gap(self) -> float:
        """Slice distance along the normal (a tilted gantry's step also moves in-plane)."""
        return abs(float(self.step @ self.normal))

    def affine_ras(self) -> np.ndarray:
        """Voxel (column, row, slice) → RAS mm."""
        dr, dc = self.spacing
        a = np.eye(4)
        a[:3, 0] = self.row_dir * dc
        a[:3, 1] = self.col_dir * dr
        a[:3, 2] = self.step
        a[:3, 3] = self.positions[0]
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a

    def slice_at(self, point: np.ndarray) -> int | None:
        """Stack index of the slice whose plane holds ``point`` (within half a gap), or None."""
        p = float(point @ self.normal)
        k = int(np.argmin(np.abs(self.proj - p)))
        return k if abs(self.proj[k] - p) <= max(0.5 * self.gap(), 1e-3) else None

    def to_pixels(self, k: int, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patient points (n, 3) → (rows, cols) in slice ``k``'s pixel grid (pixel centres at integers)."""
        rel = pts - self.positions[k]
        return rel @ self.col_dir / self.spacing[0], rel @ self.row_dir / self.spacing[1]


def geometry_of(slices: list[SliceGeo], rel: str) -> tuple[Geometry, list[int]]:
    """Order slices along their normal; refuse stacks that are no volume. Returns the geometry and the order."""
    first = slices[0]
    for s in slices[1:]:
        if s.shape != first.shape or np.abs(s.orientation - first.orientation).max() > 1e-3:
            raise ReadError("inconsistent_series", f"{rel}: slices differ in size or orientation")
        if abs(s.spacing[0] - first.spacing[0]) > 1e-3 or abs(s.spacing[1] - first.spacing[1]) > 1e-3:
            raise ReadError("inconsistent_series", f"{rel}: slices differ in pixel spacing")
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_dir, col_dir)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise ReadError("inconsistent_series", f"{rel}: degenerate ImageOrientationPatient")
    normal = normal / norm
    proj = np.array([s.position @ normal for s in slices])
    order = [int(i) for i in np.argsort(proj, kind="stable")]
    positions = np.stack([slices[i].position for i in order])
    proj = proj[order]
    if len(order) > 1:
        gaps = np.diff(proj)
        if gaps.min() < 1e-3:
            raise ReadError(
                "inconsistent_series",
                f"{rel}: {int((gaps < 1e-3).sum())} slice position(s) repeat (several phases, echoes or "
                "acquisitions in one series)",
            )
        median = float(np.median(gaps))
        regular = bool(np.abs(gaps - median).max() <= _IRREGULAR_GAP * median)
        step = (positions[-1] - positions[0]) / (len(order) - 1)
        if not regular:
            step = normal * median
    else:
        regular = True
        step = normal * (first.thickness if first.thickness and first.thickness > 0 else 1.0)
    geo = Geometry(row_dir, col_dir, normal, first.spacing, first.shape, positions, proj, step, regular)
    return geo, order


def slice_geo(ds: Dataset, frame: int | None = None) -> SliceGeo | None:
    if frame is None:
        pos, ori = (
            as_vector(ds.get("ImagePositionPatient"), 3),
            as_vector(ds.get("ImageOrientationPatient"), 6),
        )
        sp, thick = ds.get("PixelSpacing"), ds.get("SliceThickness")
    else:
        pp, po, pm = (
            functional_group(ds, frame, "PlanePositionSequence"),
            functional_group(ds, frame, "PlaneOrientationSequence"),
            functional_group(ds, frame, "PixelMeasuresSequence"),
        )
        pos = as_vector(pp.get("ImagePositionPatient"), 3) if pp is not None else None
        ori = as_vector(po.get("ImageOrientationPatient"), 6) if po is not None else None
        sp = pm.get("PixelSpacing") if pm is not None else None
        thick = pm.get("SliceThickness") if pm is not None else None
    spacing = as_vector(sp, 2)
    if pos is None or ori is None or spacing is None or spacing.min() <= 0:
        return None
    shape = (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
    return SliceGeo(pos, ori, (float(spacing[0]), float(spacing[1])), shape, as_float(thick, 0.0) or None)


# Where a frame's pixel spacing is: PixelSpacing (in the patient) before the detector's ImagerPixelSpacing, each
# in the frame's functional groups (enhanced files keep it only there: Pixel Measures, or for XA/XRF Frame
# Pixel Data Properties) or at the top level (classic files).
_SPACING_AT = (
    ("PixelMeasuresSequence", "PixelSpacing"), (None, "PixelSpacing"),
    ("FramePixelDataPropertiesSequence", "ImagerPixelSpacing"), (None, "ImagerPixelSpacing"),
)  # fmt: skip


def pixel_spacing(ds: Dataset, frame: int = 0) -> tuple[float, float] | None:
    """(between rows, between columns) mm of one frame, or None when the file gives none."""
    for macro, key in _SPACING_AT:
        src = ds if macro is None else functional_group(ds, frame, macro)
        v = src.get(key) if src is not None else None
        if v is not None and len(v) == 2:
            r, c = as_float(v[0], 0.0), as_float(v[1], 0.0)
            if r > 0 and c > 0:
                return r, c
    return None
