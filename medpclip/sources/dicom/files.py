"""DICOM files and datasets: the DICOM file test, reading a dataset, decoding its pixels, header values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medpclip.frame import ReadError
from medpclip.sources.base import DEFAULT_MAX_PIXELS, check_pixels

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})


def has_dicm_preamble(path: Path) -> bool:
    """True when bytes 128–131 are ``DICM`` (a DICOM Part 10 file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_path(path: Path) -> bool:
    """A file the readers treat as DICOM: a DICOM suffix, or no/all-digit suffix and the DICM preamble."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    return (suffix == "" or suffix[1:].isdigit()) and has_dicm_preamble(path)


def read_dataset(path: Path, rel: str, *, header_only: bool = False) -> Dataset:
    """A DICOM file → pydicom Dataset. Part 10 files and raw datasets without preamble (accepted only when they
    carry a SOP Class UID). Errors: ``missing_file``, ``not_dicom``, ``unreadable_image``."""
    kwargs = {"stop_before_pixels": True} if header_only else {}
    try:
        return pydicom.dcmread(path, **kwargs)
    except FileNotFoundError:
        raise ReadError("missing_file", rel) from None
    except InvalidDicomError:
        pass
    except Exception as e:  # noqa: BLE001 — pydicom raises many kinds on damaged headers
        raise ReadError("unreadable_image", f"{rel}: {type(e).__name__}: {e}") from None
    try:
        ds = pydicom.dcmread(path, force=True, **kwargs)
        if "SOPClassUID" in ds:
            return ds
    except Exception:  # noqa: BLE001 — forced parsing of a non-DICOM file fails in arbitrary ways
        pass
    raise ReadError("not_dicom", f"{rel}: not a DICOM file")


def _transfer_syntax(ds: Dataset):
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def decode_pixels(ds: Dataset, rel: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Stored pixel values (frames first for multi-frame files). Errors: ``no_pixel_data``,
    ``unsupported_transfer_syntax`` (no installed decoder), ``unreadable_image`` (truncated or corrupt),
    ``too_large`` (Rows × Columns × frames × samples over ``max_pixels``, checked before decoding)."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ReadError("no_pixel_data", f"{rel}: the file has no pixel data")
    try:
        dims = [int(ds.get(k) or 1) for k in ("NumberOfFrames", "Rows", "Columns", "SamplesPerPixel")]
    except (TypeError, ValueError) as e:
        raise ReadError("unreadable_image", f"{rel}: bad image size in the header: {e}") from None
    check_pixels(dims, rel, max_pixels)
    uid = _transfer_syntax(ds)
    if uid is not None and uid.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise ReadError("unsupported_transfer_syntax", f"{rel}: {uid.name} ({uid})") from None
        if not decoder.is_available:
            raise ReadError(
                "unsupported_transfer_syntax", f"{rel}: {uid.name} ({uid}): no decoder plugin installed"
            )
    try:
        return ds.pixel_array
    except NotImplementedError as e:
        raise ReadError("unsupported_transfer_syntax", f"{rel}: {e}") from None
    except Exception as e:  # noqa: BLE001 — truncated data, broken codestreams, bad group 0028 values
        msg = " ".join(str(e).split())
        raise ReadError("unreadable_image", f"{rel}: {type(e).__name__}: {msg}") from None


def read_header_fields(path: Path, rel: str, keywords: list[str]) -> dict[str, str]:
    """Top-level header values by DICOM keyword (missing → ""), reading no pixel data."""
    ds = read_dataset(path, rel, header_only=True)
    return {k: str(ds.get(k, "") or "") for k in keywords}


def as_float(v, default: float) -> float:
    try:
        return float(v) if v is not None and v != "" else default
    except (TypeError, ValueError):
        return default


# DICOM Modality → the spec's modality vocabulary (Frame.modality; other DICOM modalities leave the spec's)
_MODALITY = {
    "CT": "CT", "MR": "MR", "PT": "PET", "US": "US", "OCT": "OCT", "OPT": "OCT",
    "CR": "XR", "DX": "XR", "MG": "XR", "RF": "XR", "XA": "XR", "RG": "XR", "IO": "XR", "PX": "XR",
    "ES": "endoscopy", "XC": "other", "OP": "fundus", "SM": "pathology",
}  # fmt: skip


def frame_modality(ds: Dataset) -> str | None:
    return _MODALITY.get(str(ds.get("Modality", "")).upper())
