"""Intensity and geometry: small array-in/array-out functions shared by readers and the build.

Intensity: CT windows on Hounsfield units, percentile normalisation for MR/PET/US and other scanner values,
16-bit → 8-bit, MONOCHROME1 inversion. Geometry: canonical (RAS+) orientation of volumes, 3D → 2D slices in
radiological display convention, resize keeping aspect with square pixels.
"""

from __future__ import annotations

from collections.abc import Iterator

import nibabel as nib
import numpy as np
from PIL import Image

# (level, width) in HU. Common radiology presets; "soft_tissue" is the generic body window.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "mediastinum": (50.0, 350.0),
}

# --- intensity ---------------------------------------------------------------------------------------------


def _scale_to_uint8(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    y = (x.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.rint(np.clip(y, 0.0, 255.0)).astype(np.uint8)


def window_ct(hu: np.ndarray, window: str | tuple[float, float]) -> np.ndarray:
    """HU → uint8 through a window: level−width/2 ↦ 0, level+width/2 ↦ 255, linear and clipped between."""
    level, width = CT_WINDOWS[window] if isinstance(window, str) else window
    return _scale_to_uint8(hu, level - width / 2.0, level + width / 2.0)


def normalize_percentile(x: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Scanner values without a physical scale (MR, PET, US, 16-bit X-ray) → uint8 by clipping to the
    [low, high] percentiles of the image itself. Non-finite values are ignored for the percentiles and
    mapped to 0. A constant image maps to all zeros."""
    x = np.asarray(x)
    finite = np.isfinite(x) if np.issubdtype(x.dtype, np.floating) else None
    values = x[finite] if finite is not None else x
    if values.size == 0:
        return np.zeros(x.shape, dtype=np.uint8)
    lo, hi = np.percentile(values, [low, high])
    out = _scale_to_uint8(np.where(finite, x, lo) if finite is not None else x, float(lo), float(hi))
    return out


def rescale_bits(x: np.ndarray, bits_stored: int) -> np.ndarray:
    """Unsigned integer pixels with ``bits_stored`` significant bits → uint8 over the full range."""
    return _scale_to_uint8(x, 0.0, float((1 << bits_stored) - 1))


def invert(img: np.ndarray) -> np.ndarray:
    """MONOCHROME1 (white = low values) → MONOCHROME2, on uint8."""
    return (255 - img.astype(np.uint8)).astype(np.uint8)


def as_uint8_image(img: np.ndarray) -> np.ndarray:
    """A display-ready image → uint8 (H, W) or (H, W, 3): drops alpha, collapses grey-as-RGB to one channel."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3:
        if a.shape[2] == 4:
            a = a[:, :, :3]
        if a.shape[2] == 1:
            a = a[:, :, 0]
        elif (
            a.shape[2] == 3
            and np.array_equal(a[:, :, 0], a[:, :, 1])
            and np.array_equal(a[:, :, 0], a[:, :, 2])
        ):
            a = a[:, :, 0]
    return np.ascontiguousarray(a)


# --- geometry ----------------------------------------------------------------------------------------------


def reorient_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """Reorder/flip the first three axes of ``data`` so that they point to R, A, S (nibabel's canonical
    RAS+), whatever order the file stored them in. Extra axes (4D channels) are kept. Returns the array and
    the voxel sizes along the new axes, in mm."""
    ornt = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(("R", "A", "S"))
    transform = nib.orientations.ornt_transform(ornt, target)
    out = nib.orientations.apply_orientation(data, transform)
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    new_zooms = tuple(float(zooms[int(src)]) for src in np.argsort(transform[:, 0]))
    return out, new_zooms


_PLANE_AXIS = {"sa": 0, "co": 1, "ax": 2}


def display_slice(s: np.ndarray) -> np.ndarray:
    """A 2D slice of a RAS+ volume, (first axis, second axis) → radiological display: the patient's right on
    the image left, anterior (axial) or superior (coronal, sagittal) at the top."""
    return np.ascontiguousarray(s.T[::-1, ::-1])


def iter_slices(
    volume: np.ndarray, zooms: tuple[float, ...], plane: str, step: int = 1
) -> Iterator[tuple[int, np.ndarray, tuple[float, float]]]:
    """Yield ``(index, slice2d, (row_mm, col_mm))`` of a canonical (RAS+) volume along ``plane``
    (``ax``, ``co``, ``sa``). Index counts along the RAS axis (inferior→superior for axial)."""
    axis = _PLANE_AXIS[plane]
    in_plane = [a for a in (0, 1, 2) if a != axis]
    # After display_slice's transpose, rows run along the second in-plane axis, columns along the first.
    spacing = (float(zooms[in_plane[1]]), float(zooms[in_plane[0]]))
    for i in range(0, volume.shape[axis], step):
        # Basic indexing is a view; np.take would first copy the whole (reoriented, non-contiguous) volume,
        # once per slice: 50 ms per 512×512×100 slice, the largest cost of a CT build before this.
        yield i, display_slice(volume[(slice(None),) * axis + (i,)]), spacing


def target_shape(
    height: int, width: int, spacing_mm: tuple[float, float] | None, max_side: int
) -> tuple[int, int]:
    """Output (H, W): square pixels (the finer spacing wins), then the long side capped at ``max_side``.
    Never upsamples beyond the square-pixel size."""
    h, w = float(height), float(width)
    if spacing_mm is not None:
        sr, sc = spacing_mm
        if sr > 0 and sc > 0 and abs(sr - sc) > 1e-3 * max(sr, sc):
            fine = min(sr, sc)
            h, w = h * sr / fine, w * sc / fine
    scale = min(1.0, max_side / max(h, w))
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def resize_image(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 image → ``shape`` (H, W). Area-like filtering (Pillow's reducing box + bilinear) downsampling."""
    if img.shape[:2] == tuple(shape):
        return img
    resample = Image.Resampling.BILINEAR if shape[0] > img.shape[0] else Image.Resampling.BOX
    out = Image.fromarray(img).resize((shape[1], shape[0]), resample=resample)
    return np.asarray(out)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Label map or binary mask → ``shape`` by nearest neighbour (values never mix)."""
    if labels.shape[:2] == tuple(shape):
        return labels
    rows = (np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]
    cols = (np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]
    r = np.minimum(rows.astype(np.int64), labels.shape[0] - 1)
    c = np.minimum(cols.astype(np.int64), labels.shape[1] - 1)
    return labels[r[:, None], c[None, :]]


# --- fingerprints ------------------------------------------------------------------------------------------


def dhash64(img: np.ndarray) -> int:
    """Perceptual difference hash (64 bits) of a uint8 image, as a signed int64 (Arrow/DuckDB BIGINT).

    Grey 9×8 thumbnail, one bit per horizontally adjacent pair (left brighter than right). Robust to
    re-encoding, resizing and small intensity changes, so equal hashes flag near-duplicate images.
    """
    grey = img if img.ndim == 2 else np.asarray(Image.fromarray(img).convert("L"))
    small = np.asarray(Image.fromarray(grey).resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (small[:, :-1] > small[:, 1:]).ravel()
    value = int(np.packbits(bits).view(">u8")[0])
    return value - (1 << 64) if value >= 1 << 63 else value
