"""Intensity: modality LUT / rescale, VOI LUT and windows, MONOCHROME1, colour; stored frames → images."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medpclip import imaging
from medpclip.frame import Intensity
from medpclip.sources.dicom.files import as_float
from medpclip.sources.dicom.functional_groups import frame_view


def rescale_of(ds: Dataset) -> tuple[float, float]:
    return as_float(ds.get("RescaleSlope"), 1.0), as_float(ds.get("RescaleIntercept"), 0.0)


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def modality_lut(stored: np.ndarray, ds: Dataset) -> tuple[np.ndarray, tuple[float, float]]:
    """Stored values → modality values, and the range the stored range maps to."""
    lo, hi = _stored_range(ds)
    if "ModalityLUTSequence" in ds and ds.ModalityLUTSequence:
        from pydicom.pixels import apply_modality_lut

        out = apply_modality_lut(stored, ds)
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return out, (0.0, float((1 << bits) - 1))
    slope, intercept = rescale_of(ds)
    if slope == 1.0 and intercept == 0.0:
        return stored, (float(lo), float(hi))
    a, b = lo * slope + intercept, hi * slope + intercept
    if slope == 1.0 and float(intercept).is_integer():  # CT's usual case: integers stay integers
        out = stored.astype(np.int32) + int(intercept)
        fits = out.size == 0 or (int(out.min()) >= -32768 and int(out.max()) <= 32767)
        return (out.astype(np.int16) if fits else out), (a, b)
    out = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return out, (min(a, b), max(a, b))


def _window_to_uint8(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray | None:
    """DICOM PS3.3 C.11.2.1.2 windowing straight to 0–255 (LINEAR, LINEAR_EXACT, SIGMOID)."""
    x = x.astype(np.float64)
    if function == "SIGMOID":
        if width <= 0:
            return None
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        if width <= 0:
            return None
        y = (x - center) / width + 0.5
    else:  # LINEAR, the default
        if width < 1:
            return None
        if width == 1:
            y = (x > center - 0.5).astype(np.float64)
        else:
            y = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.rint(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


def _first(v) -> float | None:
    """The first value of a possibly multi-valued DS element (Window Center/Width), or None."""
    if v is None:
        return None
    if isinstance(v, MultiValue | list | tuple):
        v = v[0] if len(v) else None
    value = as_float(v, math.nan)
    return value if math.isfinite(value) else None


def _voi_to_uint8(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """The file's own display transform (VOI LUT Sequence first, else the first window) as uint8, or None."""
    if "VOILUTSequence" in ds and ds.VOILUTSequence:
        from pydicom.pixels import apply_voi

        lut = ds.VOILUTSequence[0]
        data = np.asarray(lut.LUTData, dtype=np.float64)
        if data.size:
            ints = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
            out = apply_voi(ints, ds, index=0)
            lo, hi = float(data.min()), float(data.max())  # the LUT's own output range
            return _window_to_uint8(out, (lo + hi) / 2, hi - lo, "LINEAR_EXACT") if hi > lo else None
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").upper()
    return _window_to_uint8(values, center, width, function)


def _grey_2d(stored: np.ndarray, ds: Dataset, voi: bool) -> tuple[np.ndarray, Intensity]:
    """One grey frame's stored values → (array, intensity) by the rules in the package docstring."""
    monochrome1 = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    if str(ds.get("Modality", "")).upper() == "CT":
        hu, _ = modality_lut(stored, ds)
        return np.asarray(hu), "hu"
    values, (lo, hi) = modality_lut(stored, ds)
    if voi:
        u8 = _voi_to_uint8(values, ds)
        if u8 is not None:
            return (imaging.invert(u8) if monochrome1 else u8), "uint8"
    lo_s, hi_s = _stored_range(ds)
    if values is stored and lo_s == 0 and hi_s <= 255:
        u8 = stored.astype(np.uint8)
        return (imaging.invert(u8) if monochrome1 else u8), "uint8"
    if monochrome1:
        if values.dtype.kind in "iu":
            values = (np.int64(lo) + np.int64(hi) - values.astype(np.int64)).astype(
                np.uint16 if lo >= 0 and hi <= 65535 else np.int32
            )
        else:
            values = np.float32(lo + hi) - values
    return values, "raw"


def _colour(stored: np.ndarray, ds: Dataset) -> tuple[np.ndarray, Intensity]:
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    arr = stored
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(stored, ds)
        # pydicom (3.0.x) reads plain (non-segmented) 16-bit LUT Data with the host's byte order, but OW bytes
        # are in the file's: a big-endian file's LUT comes back byte-swapped (OBXXXX1A_expb's 0x0100..0xFF00
        # entries as 0x0001..0x00FF, so `>> 8` gave black). Swap back to the values the file holds (segmented LUTs
        # pydicom already reads in the file's order). tests/test_dicom_real_files.py catches a pydicom that fixes it.
        little = ds.original_encoding[1]
        if (
            arr.dtype == np.uint16
            and "RedPaletteColorLookupTableData" in ds
            and little is not None
            and little != (sys.byteorder == "little")
        ):
            arr = arr.byteswap()
    if arr.dtype == np.uint8:
        return arr, "uint8"
    if arr.dtype.kind == "u" and photometric == "PALETTE COLOR":
        # The descriptor's third value is the bits per entry (PS3.3 C.7.6.3.1.5): 16 → keep the high byte; 8
        # stored in 16-bit words (a known encoder quirk the standard notes) → the values already are 0-255.
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return np.minimum(arr >> max(bits - 8, 0), 255).astype(np.uint8), "uint8"
    return arr, "raw"


def frame_images(ds: Dataset, stored: np.ndarray, voi: bool) -> Iterator[tuple[np.ndarray, Intensity]]:
    """Every frame of a non-volume image as (array, intensity); per-frame rescale where the file has one."""
    samples = int(ds.get("SamplesPerPixel") or 1)
    n_frames = int(ds.get("NumberOfFrames") or 1)
    frames = stored if n_frames > 1 else stored[None]
    for f in range(frames.shape[0]):
        if samples > 1 or str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
            yield _colour(frames[f], ds)
        else:
            yield _grey_2d(frames[f], frame_view(ds, f), voi)
