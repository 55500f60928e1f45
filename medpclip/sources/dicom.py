"""DICOM: single images, CT/MR/PET series assembled into volumes, enhanced multi-frame, DICOM SEG and RTSTRUCT.

Options (``spec.format.options``), paths relative to the dataset folder:

- ``files: "**/*"`` — glob or list of globs. Candidates are files named ``*.dcm``/``*.dicom``/``*.dic``/``*.ima``
  and files without a suffix (or with an all-digit one, as UID-named files have) that start with the DICM
  preamble. A ``.dcm`` file without the preamble is still read (raw datasets such as pydicom's ``rtstruct.dcm``);
  one that is no DICOM at all is rejected ``not_dicom``. Non-image objects (SR, RTPLAN, RTDOSE, PR, DICOMDIR…)
  are skipped; so are localizer/scout images (``ImageType`` contains ``LOCALIZER``) unless
  ``keep_localizers: true``.
- ``volume_modalities: [CT, MR, PT]`` — single-frame files of these modalities that share a
  ``SeriesInstanceUID``, an orientation and a size become ONE volume; everything else is read file by file.
- ``voi: true`` — 2D images other than CT: apply the file's VOI LUT or first window (VOI LUT Function honoured)
  and hand over ``uint8``; ``false``: hand over the raw values (modality LUT applied) for the spec's percentile
  rule.
- ``segment_label: label|property`` — the name of a DICOM SEG segment: its ``SegmentLabel`` (default) or the
  ``CodeMeaning`` of its Segmented Property Type.
- ``ignore_labels: []`` — fnmatch patterns (case-insensitive) of SEG segment / RTSTRUCT ROI names to leave out
  on purpose (planning structures such as ``z_*``, ``PTV*``). Any other name that is not a spec label or alias
  rejects the case (``bad_label_value``), as a label value outside the spec does in the other readers.
- ``split_series_by_folder: false`` — ``true``: files of one ``SeriesInstanceUID`` in different folders are
  different volumes (CHAOS splits one T1 dual-echo series into ``InPhase/`` and ``OutPhase/`` folders whose
  slices share their positions; as one series they would be refused as ``inconsistent_series``).
- ``masks: []`` — 2D mask files, ONE PER SLICE, for series whose folder matches (CHAOS ``Ground/*.png``).
  Each entry: ``series`` (regex searched in the series folder, relative to the dataset folder), ``folder``
  (the mask folder relative to the dataset folder; ``{name}`` fields are the regex's named groups and
  ``{folder}`` the series folder; ``..`` allowed), ``files: "*.png"``, ``encoding: threshold`` (grey value
  ``> threshold`` is ``label``, default the spec's only label) or ``ranges`` (``ranges: {label: [lo, hi]}``,
  inclusive grey-level ranges; any other non-zero value rejects the case, ``bad_label_value``), ``order:
  reversed`` (the mask files in NATURAL name order run opposite to the slice stack: the first file is the
  last slice along the slice normal, nnU-Net's ``[::-1]`` for CHAOS) or ``same``, ``required: true`` (a
  matched series without mask files is ``missing_file``). The first matching entry applies. A count of mask
  files other than the number of slices, or a mask of another size than the slices, is ``shape_mismatch``.
  Masks are in the slices' stored pixel grid and are reoriented with the volume.

Items and case ids: a volume's case id is its series' folder relative to the dataset folder (plus the series
UID when several series share a folder); a single image's is its path without suffix. The patient id comes from
the spec's rule, usually ``patient_id: {field: PatientID}``: the fields offered are ``PatientID``,
``StudyInstanceUID``, ``SeriesInstanceUID`` and ``folder`` (the first folder of the path). The raw PatientID is
only ever put into ``SourceItem.patient_id`` (hashed by the build), never into a case id or the item's meta.

Geometry and intensity:

- Slices are ordered by ``ImagePositionPatient`` projected on the slice normal (row × column direction cosines),
  never by ``InstanceNumber`` or file name. The volume gets an affine from the DICOM geometry (LPS → RAS) and is
  sliced like the NIfTI volumes: :func:`medpclip.imaging.reorient_canonical` then
  :func:`~medpclip.imaging.iter_slices` for the spec's planes. A series with one slice, or whose slice gaps
  differ by more than 10 % (missing slices), gives its acquisition plane only — resliced planes would be
  distorted. A tilted gantry (slice step not along the normal) is kept as a sheared affine: acquisition-plane
  slices are exact, resliced planes are not resampled.
- CT: Hounsfield units through ``RescaleSlope/Intercept`` per slice (per frame in enhanced files, where the
  values live in the functional group sequences), ``intensity: hu``. MR/PET/other volumes: ``raw``.
- 2D images (CR/DX/MG/SC…): see ``voi`` above; 8-bit images without rescale are ``uint8`` as stored.
  MONOCHROME1 is turned into display-correct data HERE: the uint8 result is inverted, and raw values are
  mirrored within their stored range (``lo + hi − x``), so higher values are brighter in every output and the
  Frame contract needs no "invert" flag.
- Multi-frame images that are not volumes (cine, US, XA, or enhanced frames without distinct positions) give one
  ``im`` frame per frame, ``slice_index`` = frame number (0-based).

Annotations (files in the same dataset folder):

- DICOM SEG: each frame is matched to its source slice by the referenced SOP Instance UID (and frame number),
  else by its ``ImagePositionPatient``; segments become named masks (BINARY as is, FRACTIONAL ≥ 50 %). A SEG
  frame the source lacks → ``unmatched_annotation``; of another size → ``shape_mismatch``.
- RTSTRUCT: CLOSED_PLANAR contours are rasterized on the slice they lie on (the referenced SOP UID, else the
  slice within half a slice gap of the contour's plane): pixel centres inside or on the polygon; several
  contours of one ROI on one slice combine by XOR (inner contours are holes). POINT and OPEN contours
  (isocentres, markers) are no region and are skipped.
- An annotation whose referenced series is not under the dataset folder → ``missing_file``.

Read errors (reason codes): ``not_dicom``, ``no_pixel_data``, ``unsupported_transfer_syntax``,
``unreadable_image`` (truncated or corrupt pixel data), ``inconsistent_series``, ``unmatched_annotation``,
``shape_mismatch``, ``bad_label_value``, ``bad_dimensions``, ``too_large`` (Rows × Columns × frames × samples,
or a series' slices × Rows × Columns, over ``max_pixels``: refused from the header, before any pixel is
decoded), ``burned_in_annotation`` (``BurnedInAnnotation`` YES: identifying text may be in the pixels).

Identifiers: DICOM UIDs never reach an output as they are. A case id that holds one (a series in the dataset
folder itself is named by its SeriesInstanceUID; SIIM names files by SOP UID) gets a pseudonym token in keys,
paths and reject details (``medpclip.corpus.schema.scrub_uids``); PatientID and StudyInstanceUID only feed
the salted patient and study hashes.

Memory: one series at a time; annotation masks are bit-packed (8 masks per byte per voxel).

For sibling readers (``sources.contours``: LIDC-IDRI XML contours on a CT series): :func:`load_series` assembles
an item's series in stack order and :func:`volume_frames` slices it with annotations given on the stack
(:class:`MaskChannels`, :class:`StackPoint`, :class:`StackBox`), through the same reorientation as SEG and
RTSTRUCT masks.
"""

from __future__ import annotations

import fnmatch
import math
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pydicom
from pydantic import Field, field_validator, model_validator
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from medpclip import imaging
from medpclip.frame import Box, Frame, Intensity, Point, ReadError, SourceFile, SourceItem
from medpclip.sources._common import (
    DEFAULT_MAX_PIXELS,
    Options,
    ReaderOptions,
    check_pixels,
    existing,
    files_of,
    glob_files,
    load_mask,
    make_item,
    parse_options,
    raise_item_error,
    raw_path,
    resolve_label,
    sorted_items,
)
from medpclip.specs import DatasetSpec

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})
_NON_IMAGE_MODALITIES = frozenset({"SR", "RTPLAN", "RTDOSE", "RTRECORD", "PR", "KO", "REG", "DOC", "ECG"})
_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_PLANES_OF_AXIS = {0: "sa", 1: "co", 2: "ax"}
_IRREGULAR_GAP = 0.10  # relative deviation of a slice gap from the median that makes a series irregular


# DICOM Modality → the spec's modality vocabulary (Frame.modality; other DICOM modalities leave the spec's)
_MODALITY = {
    "CT": "CT", "MR": "MR", "PT": "PET", "US": "US", "OCT": "OCT", "OPT": "OCT",
    "CR": "XR", "DX": "XR", "MG": "XR", "RF": "XR", "XA": "XR", "RG": "XR", "IO": "XR", "PX": "XR",
    "ES": "endoscopy", "XC": "other", "OP": "fundus", "SM": "pathology",
}  # fmt: skip


def frame_modality(ds: Dataset) -> str | None:
    return _MODALITY.get(str(ds.get("Modality", "")).upper())


class SeriesMasks(Options):
    """One mask file per slice for series whose folder matches ``series`` (see the module docstring)."""

    series: str
    folder: str
    files: str = "*.png"
    encoding: Literal["threshold", "ranges"] = "threshold"
    label: str | None = None
    threshold: int = 127
    ranges: dict[str, tuple[int, int]] = Field(default_factory=dict)
    order: Literal["reversed", "same"] = "reversed"
    required: bool = True

    @field_validator("series")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regex: {e}") from None
        return v

    @model_validator(mode="after")
    def _encoding(self) -> SeriesMasks:
        if self.encoding == "ranges" and not self.ranges:
            raise ValueError("encoding 'ranges' needs 'ranges: {label: [lo, hi]}'")
        if any(lo > hi for lo, hi in self.ranges.values()):
            raise ValueError("each range needs lo <= hi")
        return self


class DicomOptions(ReaderOptions):
    files: str | list[str] = "**/*"
    volume_modalities: list[str] = Field(default_factory=lambda: ["CT", "MR", "PT"])
    voi: bool = True
    segment_label: Literal["label", "property"] = "label"
    ignore_labels: list[str] = Field(default_factory=list)
    keep_localizers: bool = False
    split_series_by_folder: bool = False
    masks: list[SeriesMasks] = Field(default_factory=list)


# --- files and datasets ------------------------------------------------------------------------------------


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


# --- intensity ---------------------------------------------------------------------------------------------


def _float(v, default: float) -> float:
    try:
        return float(v) if v is not None and v != "" else default
    except (TypeError, ValueError):
        return default


def _rescale_of(ds: Dataset) -> tuple[float, float]:
    return _float(ds.get("RescaleSlope"), 1.0), _float(ds.get("RescaleIntercept"), 0.0)


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _modality_lut(stored: np.ndarray, ds: Dataset) -> tuple[np.ndarray, tuple[float, float]]:
    """Stored values → modality values, and the range the stored range maps to."""
    lo, hi = _stored_range(ds)
    if "ModalityLUTSequence" in ds and ds.ModalityLUTSequence:
        from pydicom.pixels import apply_modality_lut

        out = apply_modality_lut(stored, ds)
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return out, (0.0, float((1 << bits) - 1))
    slope, intercept = _rescale_of(ds)
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
    value = _float(v, math.nan)
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


@dataclass
class DicomImage:
    """One decoded 2D DICOM image, display-correct (MONOCHROME1 already turned around)."""

    array: np.ndarray
    intensity: Intensity
    spacing_mm: tuple[float, float] | None


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(key)
        if v is not None and len(v) == 2:
            r, c = _float(v[0], 0.0), _float(v[1], 0.0)
            if r > 0 and c > 0:
                return r, c
    return None


def _grey_2d(stored: np.ndarray, ds: Dataset, voi: bool) -> tuple[np.ndarray, Intensity]:
    """One grey frame's stored values → (array, intensity) by the rules in the module docstring."""
    monochrome1 = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    if str(ds.get("Modality", "")).upper() == "CT":
        hu, _ = _modality_lut(stored, ds)
        return np.asarray(hu), "hu"
    values, (lo, hi) = _modality_lut(stored, ds)
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
    if arr.dtype == np.uint8:
        return arr, "uint8"
    if arr.dtype.kind == "u" and photometric == "PALETTE COLOR":
        return (arr >> 8).astype(np.uint8), "uint8"
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
            yield _grey_2d(frames[f], _frame_view(ds, f), voi)


def read_dicom_image(
    path: Path, rel: str, *, voi: bool = True, grey: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DicomImage:
    """One single-frame DICOM file → display-correct 2D image with its intensity meaning and pixel spacing.

    CT → ``hu``; other grey images → ``uint8`` through the file's VOI LUT/window (``voi``) or when stored in 8
    bits, else ``raw`` values (modality LUT applied); MONOCHROME1 inverted in either case. Colour → RGB
    ``uint8`` (``grey`` → luminance). A multi-frame file is ``bad_dimensions`` here (no single 2D image)."""
    if not path.is_file():
        raise ReadError("missing_file", rel)
    ds = read_dataset(path, rel)
    stored = decode_pixels(ds, rel, max_pixels)
    if int(ds.get("NumberOfFrames") or 1) > 1:
        raise ReadError("bad_dimensions", f"{rel}: {int(ds.NumberOfFrames)} frames, expected one 2D image")
    ((array, intensity),) = list(frame_images(ds, stored, voi))
    if array.ndim == 3 and grey:
        from PIL import Image

        if array.dtype == np.uint8:
            array = np.asarray(Image.fromarray(array).convert("L"))
        else:
            array = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return DicomImage(np.ascontiguousarray(array), intensity, _spacing(ds))


def load_dicom_image(
    path: Path, rel: str, *, voi: bool = True, grey: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, Intensity]:
    """``read_dicom_image`` without the spacing: the DICOM branch of ``_common.load_image``."""
    img = read_dicom_image(path, rel, voi=voi, grey=grey, max_pixels=max_pixels)
    return img.array, img.intensity


def read_header_fields(path: Path, rel: str, keywords: list[str]) -> dict[str, str]:
    """Top-level header values by DICOM keyword (missing → ""), reading no pixel data."""
    ds = read_dataset(path, rel, header_only=True)
    return {k: str(ds.get(k, "") or "") for k in keywords}


# --- functional groups (enhanced multi-frame) --------------------------------------------------------------


def _group(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of a functional group macro for one frame: per-frame first, then shared."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and frame < len(per) and sequence in per[frame] and per[frame][sequence].value:
        return per[frame][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0] and shared[0][sequence].value:
        return shared[0][sequence][0]
    return None


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """A dataset for one frame's intensity: the per-frame Pixel Value Transformation and Frame VOI LUT (which
    ``apply_modality_lut`` on the whole dataset ignores) copied over the top-level values."""
    pvt = _group(ds, frame, "PixelValueTransformationSequence")
    voi = _group(ds, frame, "FrameVOILUTSequence")
    if pvt is None and voi is None:
        return ds
    view = Dataset()
    for key in (
        "Modality", "PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation",
        "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction",
    ):  # fmt: skip
        if key in ds:
            setattr(view, key, ds[key].value)
    for src in (pvt, voi):
        if src is None:
            continue
        for key in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction"):
            if key in src:
                setattr(view, key, src[key].value)
    return view


# --- geometry ----------------------------------------------------------------------------------------------


def _vec(v, n: int) -> np.ndarray | None:
    if v is None or len(v) != n:
        return None
    try:
        out = np.array([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if np.all(np.isfinite(out)) else None


@dataclass
class _SliceGeo:
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


def _geometry(slices: list[_SliceGeo], rel: str) -> tuple[Geometry, list[int]]:
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


def _slice_geo(ds: Dataset, frame: int | None = None) -> _SliceGeo | None:
    if frame is None:
        pos, ori = _vec(ds.get("ImagePositionPatient"), 3), _vec(ds.get("ImageOrientationPatient"), 6)
        sp, thick = ds.get("PixelSpacing"), ds.get("SliceThickness")
    else:
        pp, po, pm = (
            _group(ds, frame, "PlanePositionSequence"),
            _group(ds, frame, "PlaneOrientationSequence"),
            _group(ds, frame, "PixelMeasuresSequence"),
        )
        pos = _vec(pp.get("ImagePositionPatient"), 3) if pp is not None else None
        ori = _vec(po.get("ImageOrientationPatient"), 6) if po is not None else None
        sp = pm.get("PixelSpacing") if pm is not None else None
        thick = pm.get("SliceThickness") if pm is not None else None
    spacing = _vec(sp, 2)
    if pos is None or ori is None or spacing is None or spacing.min() <= 0:
        return None
    shape = (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
    return _SliceGeo(pos, ori, (float(spacing[0]), float(spacing[1])), shape, _float(thick, 0.0) or None)


# --- discovery ---------------------------------------------------------------------------------------------


@dataclass
class _Header:
    rel: PurePosixPath
    sop_class: str
    sop_uid: str
    modality: str
    series_uid: str
    study_uid: str
    patient_id: str
    frame_of_ref: str
    n_frames: int
    shape: tuple[int, int]
    kind: str  # image | seg | rtstruct | other
    localizer: bool
    burned_in: bool  # BurnedInAnnotation YES: identifying text in the pixels
    geo: _SliceGeo | None
    enhanced_geo: bool
    ref_series: tuple[str, ...] = ()
    ref_sops: tuple[str, ...] = ()


def _is_image_sop(ds: Dataset) -> bool:
    uid = ds.get("SOPClassUID")
    name = getattr(uid, "name", "") if uid is not None else ""
    return "Image Storage" in name or "PixelData" in ds


def _header(ds: Dataset, rel: PurePosixPath) -> _Header:
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if sop_class == _SEG_SOP_CLASS or modality == "SEG":
        kind = "seg"
    elif sop_class == _RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        kind = "rtstruct"
    elif modality in _NON_IMAGE_MODALITIES or not _is_image_sop(ds):
        kind = "other"
    else:
        kind = "image"
    ref_series: list[str] = []
    ref_sops: list[str] = []
    if kind == "seg":
        for item in ds.get("ReferencedSeriesSequence") or []:
            if "SeriesInstanceUID" in item:
                ref_series.append(str(item.SeriesInstanceUID))
            for inst in item.get("ReferencedInstanceSequence") or []:
                ref_sops.append(str(inst.get("ReferencedSOPInstanceUID", "")))
    elif kind == "rtstruct":
        for fr in ds.get("ReferencedFrameOfReferenceSequence") or []:
            for study in fr.get("RTReferencedStudySequence") or []:
                for series in study.get("RTReferencedSeriesSequence") or []:
                    if "SeriesInstanceUID" in series:
                        ref_series.append(str(series.SeriesInstanceUID))
                    for img in series.get("ContourImageSequence") or []:
                        ref_sops.append(str(img.get("ReferencedSOPInstanceUID", "")))
    n_frames = int(ds.get("NumberOfFrames") or 1)
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return _Header(
        rel=rel,
        sop_class=sop_class,
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        modality=modality,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "") or ""),
        frame_of_ref=str(ds.get("FrameOfReferenceUID", "")),
        n_frames=n_frames,
        shape=(int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)),
        kind=kind,
        localizer="LOCALIZER" in image_type,
        burned_in=str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES",
        geo=_slice_geo(ds) if n_frames == 1 else None,
        enhanced_geo=n_frames > 1 and _slice_geo(ds, 0) is not None,
        ref_series=tuple(s for s in ref_series if s),
        ref_sops=tuple(s for s in ref_sops if s),
    )


def _case_stem(rel: PurePosixPath) -> str:
    return (rel.parent / rel.stem).as_posix() if rel.suffix.lower() in DICOM_SUFFIXES else rel.as_posix()


def discover(spec: DatasetSpec, root: Path) -> Iterator[SourceItem]:
    opts = parse_options(spec, DicomOptions)
    volume_modalities = {m.upper() for m in opts.volume_modalities}
    headers: list[_Header] = []
    items: list[SourceItem] = []
    for path in glob_files(root, opts.files):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if not is_dicom_path(path):
            continue
        try:
            ds = read_dataset(path, raw_path(spec, rel), header_only=True)
        except ReadError as e:
            items.append(
                make_item(
                    spec,
                    _case_stem(rel),
                    [SourceFile("image", raw_path(spec, rel))],
                    error=(e.reason, e.detail),
                )
            )
            continue
        h = _header(ds, rel)
        if h.kind == "other" or (h.localizer and not opts.keep_localizers):
            continue
        headers.append(h)

    images = [h for h in headers if h.kind == "image"]
    annotations = [h for h in headers if h.kind in ("seg", "rtstruct")]
    by_series: dict[str, list[_Header]] = defaultdict(list)
    for h in images:
        group_key = h.series_uid or f"file:{h.rel}"
        if opts.split_series_by_folder and h.series_uid:
            group_key = f"{h.series_uid}|{h.rel.parent.as_posix()}"
        by_series[group_key].append(h)
    folder_series: dict[PurePosixPath, set[str]] = defaultdict(set)
    for uid, group in by_series.items():
        for h in group:
            folder_series[h.rel.parent].add(uid)

    # units: a volume (series / enhanced file) or a single image file
    units: list[tuple[str, str, list[_Header]]] = []  # (kind, case_id, headers)
    for _group_key, group in sorted(by_series.items()):
        group.sort(key=lambda h: h.rel.as_posix())
        first = group[0]
        if _is_volume(group, volume_modalities):
            folders = {h.rel.parent for h in group}
            folder = folders.pop() if len(folders) == 1 else None
            if folder is not None and len(folder_series[folder]) == 1 and folder != PurePosixPath("."):
                case_id = folder.as_posix()
            elif folder is not None and folder != PurePosixPath("."):
                case_id = f"{folder.as_posix()}/{first.series_uid}"
            else:
                case_id = first.series_uid
            units.append(("series", case_id, group))
        elif (
            len(group) == 1
            and first.n_frames > 1
            and first.enhanced_geo
            and first.modality in volume_modalities
        ):
            units.append(("enhanced", _case_stem(first.rel), group))
        else:
            units.extend(("image", _case_stem(h.rel), [h]) for h in group)

    unit_of_sop: dict[str, int] = {}
    unit_of_series: dict[str, int] = {}
    for n, (_, _, group) in enumerate(units):
        for h in group:
            unit_of_sop[h.sop_uid] = n
            unit_of_series.setdefault(h.series_uid, n)
    attached: dict[int, list[_Header]] = defaultdict(list)
    for a in sorted(annotations, key=lambda h: h.rel.as_posix()):
        targets = {unit_of_sop[s] for s in a.ref_sops if s in unit_of_sop}
        if not targets:
            targets = {unit_of_series[s] for s in a.ref_series if s in unit_of_series}
        if not targets and a.kind == "rtstruct" and a.frame_of_ref:
            same_for = {
                n for n, (k, _, g) in enumerate(units) if k != "image" and g[0].frame_of_ref == a.frame_of_ref
            }
            targets = same_for if len(same_for) == 1 else set()
        error = None
        if not targets:
            refs = ", ".join(a.ref_series or a.ref_sops or (a.frame_of_ref,)) or "nothing"
            error = ("missing_file", f"{a.rel}: the {a.kind.upper()} references {refs}, not under the folder")
        elif a.kind == "rtstruct" and any(units[t][0] == "image" for t in targets):
            error = ("unmatched_annotation", f"{a.rel}: RTSTRUCT contours need a volume with geometry")
        if error is not None:
            items.append(
                make_item(
                    spec,
                    _case_stem(a.rel),
                    [SourceFile(a.kind, raw_path(spec, a.rel))],
                    fields=_fields(a),
                    study_id=a.study_uid or None,
                    meta={"kind": "annotation"},
                    error=error,
                )
            )
            continue
        for t in sorted(targets):
            attached[t].append(a)

    for n, (kind, case_id, group) in enumerate(units):
        files = [SourceFile("image", raw_path(spec, h.rel)) for h in group]
        files += [SourceFile(a.kind, raw_path(spec, a.rel)) for a in attached.get(n, [])]
        meta: dict[str, object] = {"kind": kind}
        error = None
        burned = [h for h in group if h.burned_in]
        if burned:  # PS3.15 Annex E: pixels with burned-in text may identify the patient; never published
            error = (
                "burned_in_annotation",
                f"{raw_path(spec, burned[0].rel)}: BurnedInAnnotation is YES ({len(burned)} of {len(group)} "
                "files): text in the pixels may identify the patient",
            )
        elif kind == "series" and opts.masks:
            found = _series_mask_files(spec, root, opts, group)
            if found is not None:
                entry, mask_files, error = found
                files += [SourceFile("mask", raw_path(spec, m)) for m in mask_files]
                meta["masks"] = entry
        items.append(
            make_item(
                spec,
                case_id,
                files,
                fields=_fields(group[0]),
                study_id=group[0].study_uid or None,
                meta=meta,
                error=error,
            )
        )
    yield from sorted_items(items)


def natural_key(name: str) -> tuple:
    """``img2.png`` before ``img10.png``: digit runs compare as numbers (CHAOS mask order, torch-em's natsort)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


def _series_mask_files(
    spec: DatasetSpec, root: Path, opts: DicomOptions, group: list[_Header]
) -> tuple[int, list[PurePosixPath], tuple[str, str] | None] | None:
    """(entry index, mask files in natural order, error) for a series that a ``masks`` entry matches."""
    folder = group[0].rel.parent.as_posix()
    for index, entry in enumerate(opts.masks):
        m = re.search(entry.series, folder)
        if m is None:
            continue
        fields = {k: v or "" for k, v in m.groupdict().items()}
        try:
            mask_dir = posixpath.normpath(entry.folder.format(folder=folder, **fields))
        except (KeyError, IndexError, ValueError) as e:
            return index, [], ("bad_option", f"masks[{index}].folder '{entry.folder}': no field {e}")
        if mask_dir.startswith(".."):
            return index, [], ("bad_option", f"masks[{index}].folder leaves the dataset folder: {mask_dir}")
        base = root / mask_dir
        found = glob_files(base, entry.files) if base.is_dir() else []
        rels = sorted(
            (PurePosixPath(mask_dir) / p.relative_to(base).as_posix() for p in found),
            key=lambda r: natural_key(r.as_posix()),
        )
        error = None
        if not rels and entry.required:
            error = ("missing_file", f"no mask files {raw_path(spec, mask_dir)}/{entry.files} for {folder}")
        return index, rels, error
    return None


def _fields(h: _Header) -> dict[str, object]:
    return {
        "PatientID": h.patient_id,
        "StudyInstanceUID": h.study_uid,
        "SeriesInstanceUID": h.series_uid,
        "folder": h.rel.parts[0] if len(h.rel.parts) > 1 else "",
    }


def _is_volume(group: list[_Header], volume_modalities: set[str]) -> bool:
    first = group[0]
    if first.modality not in volume_modalities or not first.series_uid:
        return False
    if any(h.n_frames != 1 or h.geo is None for h in group):
        return False
    return all(
        h.shape == first.shape and np.abs(h.geo.orientation - first.geo.orientation).max() <= 1e-3
        for h in group
    )


# --- annotations -------------------------------------------------------------------------------------------


@dataclass
class _Channels:
    """Named binary masks over a (k, rows, cols) stack, bit-packed 8 per byte."""

    shape: tuple[int, int, int]
    labels: list[str] = field(default_factory=list)
    planes: list[np.ndarray] = field(default_factory=list)

    def add(self, label: str) -> int:
        self.labels.append(label)
        c = len(self.labels) - 1
        if c // 8 >= len(self.planes):
            self.planes.append(np.zeros(self.shape, dtype=np.uint8))
        return c

    def set(self, c: int, k: int, mask: np.ndarray, xor: bool = False) -> None:
        plane, bit = self.planes[c // 8], np.uint8(1 << (c % 8))
        if xor:
            plane[k] ^= mask.astype(np.uint8) * bit
        else:
            plane[k] |= mask.astype(np.uint8) * bit


MaskChannels = _Channels  # public name for sibling readers (sources.contours)


class _Labeller:
    def __init__(self, spec: DatasetSpec, opts: DicomOptions):
        self.spec = spec
        self.ignore = [p.lower() for p in opts.ignore_labels]

    def __call__(self, raw: str) -> str | None:
        """Spec label of a SEG/ROI name; None when the spec ignores it; ReadError when it is unknown."""
        if any(fnmatch.fnmatchcase(raw.strip().lower(), p) for p in self.ignore):
            return None
        return resolve_label(self.spec, raw).label


def _segment_names(ds: Dataset, mode: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for seg in ds.get("SegmentSequence") or []:
        number = int(seg.SegmentNumber)
        name = str(seg.get("SegmentLabel", "") or "")
        if mode == "property" or not name:
            codes = seg.get("SegmentedPropertyTypeCodeSequence") or []
            name = str(codes[0].get("CodeMeaning", "")) if codes else name
        names[number] = name or f"segment {number}"
    return names


@dataclass
class _SegFrame:
    segment: int
    sop: str | None
    src_frame: int | None
    position: np.ndarray | None
    mask: np.ndarray


def _seg_frames(ds: Dataset, rel: str) -> list[_SegFrame]:
    arr = decode_pixels(ds, rel)
    if arr.ndim == 2:
        arr = arr[None]
    # NumberOfFrames decides how many frames there are; pydicom's liver_1frame.dcm keeps three per-frame items
    # for its single stored frame, so the per-frame items are read for the stored frames only.
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        top = _float(ds.get("MaximumFractionalValue"), 255.0)
        masks = arr >= top / 2.0
    else:
        masks = arr != 0
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per) < masks.shape[0] and masks.shape[0] > 1:
        raise ReadError(
            "unmatched_annotation", f"{rel}: {masks.shape[0]} frames but {len(per)} per-frame items"
        )
    out = []
    for f in range(masks.shape[0]):
        ident = _group(ds, f, "SegmentIdentificationSequence")
        segment = int(ident.ReferencedSegmentNumber) if ident is not None else 1
        sop = src_frame = None
        deriv = _group(ds, f, "DerivationImageSequence")
        if deriv is not None and deriv.get("SourceImageSequence"):
            src = deriv.SourceImageSequence[0]
            sop = str(src.get("ReferencedSOPInstanceUID", "")) or None
            frames = src.get("ReferencedFrameNumber")
            if isinstance(frames, MultiValue | list | tuple):
                frames = frames[0] if len(frames) else None
            if frames is not None and str(frames).strip():
                src_frame = int(frames) - 1
        pp = _group(ds, f, "PlanePositionSequence")
        position = _vec(pp.get("ImagePositionPatient"), 3) if pp is not None else None
        out.append(_SegFrame(segment, sop, src_frame, position, masks[f]))
    return out


def _fill_polygon(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
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


fill_polygon = _fill_polygon  # public name for sibling readers (sources.contours)


def _contour_points(contour: Dataset) -> np.ndarray | None:
    data = contour.get("ContourData")
    if data is None or len(data) < 9 or len(data) % 3:
        return None
    return np.asarray([float(v) for v in data], dtype=np.float64).reshape(-1, 3)


def _add_rtstruct(
    ds: Dataset, rel: str, geo: Geometry, sop_to_k: dict[tuple[str, int | None], int], ch: _Channels, label_of
) -> None:
    names = {
        int(r.ROINumber): str(r.get("ROIName", "") or f"ROI {r.ROINumber}")
        for r in ds.get("StructureSetROISequence") or []
    }
    for roi in ds.get("ROIContourSequence") or []:
        number = int(roi.get("ReferencedROINumber", 0))
        contours = [
            c
            for c in roi.get("ContourSequence") or []
            if str(c.get("ContourGeometricType", "")).upper() == "CLOSED_PLANAR"
        ]
        if not contours:
            continue
        raw = names.get(number, f"ROI {number}")
        label = label_of(raw)
        if label is None:
            continue
        c = ch.add(label)
        for contour in contours:
            pts = _contour_points(contour)
            if pts is None:
                continue
            k = None
            for img in contour.get("ContourImageSequence") or []:
                k = sop_to_k.get((str(img.get("ReferencedSOPInstanceUID", "")), None))
                if k is not None:
                    break
            if k is None:
                k = geo.slice_at(pts.mean(axis=0))
            if k is None:
                raise ReadError(
                    "unmatched_annotation",
                    f"{rel}: a contour of ROI '{raw}' lies on no slice of the series "
                    f"(plane at {float(pts.mean(axis=0) @ geo.normal):.2f} mm along the normal)",
                )
            r, cc = geo.to_pixels(k, pts)
            ch.set(c, k, _fill_polygon(r, cc, geo.shape), xor=True)


def _add_seg(
    ds: Dataset,
    rel: str,
    geo: Geometry | None,
    sop_to_k: dict[tuple[str, int | None], int],
    shape: tuple[int, int],
    ch: _Channels,
    label_of,
    segment_mode: str,
) -> None:
    names = _segment_names(ds, segment_mode)
    channel: dict[int, int | None] = {}
    for fr in _seg_frames(ds, rel):
        if fr.segment not in channel:
            raw = names.get(fr.segment, f"segment {fr.segment}")
            label = label_of(raw)
            channel[fr.segment] = None if label is None else ch.add(label)
        c = channel[fr.segment]
        if c is None:
            continue
        if fr.mask.shape != shape:
            raise ReadError("shape_mismatch", f"{rel}: SEG frame {fr.mask.shape} != image {shape}")
        k = sop_to_k.get((fr.sop, fr.src_frame)) if fr.sop else None
        if k is None and fr.sop:
            k = sop_to_k.get((fr.sop, None))
        if k is None and fr.position is not None and geo is not None:
            k = geo.slice_at(fr.position)
        if k is None:
            raise ReadError("unmatched_annotation", f"{rel}: a SEG frame matches no image of the case")
        if fr.mask.any():
            ch.set(c, k, fr.mask)


# --- read --------------------------------------------------------------------------------------------------


def read(spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    raise_item_error(item)
    opts = parse_options(spec, DicomOptions)
    kind = item.meta_dict().get("kind")
    if kind == "series":
        yield from _read_series(spec, opts, raw_root, item)
    elif kind == "enhanced":
        yield from _read_enhanced(spec, opts, raw_root, item)
    elif kind == "image":
        yield from _read_image(spec, opts, raw_root, item)
    else:
        raise ReadError("bad_item", f"case '{item.case_id}' has unknown kind {kind!r}")


def _annotation_datasets(raw_root: Path, item: SourceItem) -> list[tuple[str, str, Dataset]]:
    out = []
    for role in ("seg", "rtstruct"):
        for rel in files_of(item, role):
            out.append((role, rel, read_dataset(existing(raw_root, rel), rel)))
    return out


def _read_series(spec: DatasetSpec, opts: DicomOptions, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    vol = load_series(raw_root, item, max_pixels=opts.max_pixels)
    yield from _volume_frames(
        spec, opts, raw_root, item, vol.stack, vol.geo, vol.sop_to_k, vol.intensity, vol.modality
    )


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
        g = _slice_geo(ds)
        if g is None:
            raise ReadError("inconsistent_series", f"{rel}: no ImagePositionPatient/Orientation/PixelSpacing")
        geos.append(g)
    if drop_repeated and len(geos) > 1:
        keep = _first_at_each_position(headers, geos, rels)
        rels, headers, geos = [rels[i] for i in keep], [headers[i] for i in keep], [geos[i] for i in keep]
    geo, order = _geometry(geos, item.case_id)
    check_pixels((geo.depth, *geo.shape), item.case_id, max_pixels, "series")  # before the stack exists
    ct = str(headers[0].get("Modality", "")).upper() == "CT"
    rescale = [_rescale_of(headers[i]) for i in order]
    stack = _Stack(geo.depth, geo.shape, rescale)
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


def _first_at_each_position(headers: list[Dataset], geos: list[_SliceGeo], rels: list[str]) -> list[int]:
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
        rank = (_float(ds.get("InstanceNumber"), math.inf), rels[i])
        j = best.get(at)
        if j is None or rank < (_float(headers[j].get("InstanceNumber"), math.inf), rels[j]):
            best[at] = i
    return sorted(best.values())


class _Stack:
    """The (k, rows, cols) volume being filled: int16 while every slice's modality values are integers that
    fit (CT with slope 1), widened to int32 when one does not; float32 when any rescale is fractional."""

    def __init__(self, depth: int, shape: tuple[int, int], rescale: list[tuple[float, float]]):
        integer = all(slope == 1.0 and float(inter).is_integer() for slope, inter in rescale)
        self.data = np.empty((depth, *shape), dtype=np.int16 if integer else np.float32)

    def put(self, k: int, stored: np.ndarray, ds: Dataset) -> None:
        """Stored values → modality values (HU for CT); MONOCHROME1 (not expected in volumes) mirrored."""
        values, (lo, hi) = _modality_lut(stored, ds)
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


def _volume_frames(
    spec: DatasetSpec,
    opts: DicomOptions,
    raw_root: Path,
    item: SourceItem,
    stack: np.ndarray,
    geo: Geometry,
    sop_to_k: dict[tuple[str, int | None], int],
    intensity: Intensity,
    modality: str | None,
) -> Iterator[Frame]:
    channels = _Channels(stack.shape)
    label_of = _Labeller(spec, opts)
    for role, rel, ds in _annotation_datasets(raw_root, item):
        if role == "seg":
            _add_seg(ds, rel, geo, sop_to_k, geo.shape, channels, label_of, opts.segment_label)
        else:
            _add_rtstruct(ds, rel, geo, sop_to_k, channels, label_of)
    entry = item.meta_dict().get("masks")
    if entry is not None:
        _add_mask_files(spec, opts.masks[int(entry)], raw_root, item, channels)
    vol = SeriesVolume(stack, geo, sop_to_k, intensity, modality)
    yield from volume_frames(spec, item, vol, channels)


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
    channels: _Channels,
    *,
    points: tuple[StackPoint, ...] | list[StackPoint] = (),
    boxes: tuple[StackBox, ...] | list[StackBox] = (),
) -> Iterator[Frame]:
    """Frames of a series volume for the spec's planes, with the masks in ``channels`` and the points and boxes
    given on the stack. Points go to every plane (a point is a 3D position); boxes only to the acquisition
    plane they were drawn on."""
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
            masks = []
            for c, label in enumerate(channels.labels):
                m = (bits[c // 8] >> (c % 8)) & 1
                if m.any():
                    masks.append((label, m.astype(bool)))
            yield Frame(
                item=item, image=img, intensity=vol.intensity, plane=plane, slice_index=index,
                spacing_mm=spacing, masks=masks, modality=vol.modality,
                points=frame_points.get(index, []), boxes=frame_boxes.get(index, []),
            )  # fmt: skip


def _add_mask_files(
    spec: DatasetSpec, entry: SeriesMasks, raw_root: Path, item: SourceItem, channels: _Channels
) -> None:
    """One mask file per slice (``masks`` option) → channels, in the entry's file order."""
    depth, rows, cols = channels.shape
    rels = files_of(item, "mask")
    if len(rels) != depth:
        raise ReadError("shape_mismatch", f"{item.case_id}: {len(rels)} mask files for {depth} slices")
    if entry.encoding == "threshold":
        if entry.label is None and len(spec.labels) != 1:
            raise ReadError("bad_option", f"spec '{spec.name}': masks need a 'label' (the spec has several)")
        labels = {resolve_label(spec, entry.label or spec.labels[0].label).label: None}
    else:
        labels = {resolve_label(spec, raw).label: (lo, hi) for raw, (lo, hi) in entry.ranges.items()}
    chan = {label: channels.add(label) for label in labels}
    for i, rel in enumerate(rels):
        k = depth - 1 - i if entry.order == "reversed" else i
        grey = load_mask(existing(raw_root, rel), rel)
        if grey.shape != (rows, cols):
            raise ReadError("shape_mismatch", f"{rel}: mask {grey.shape} != slice {(rows, cols)}")
        if entry.encoding == "threshold":
            top = int(grey.max()) if grey.size else 0
            if 0 < top <= entry.threshold:  # a 0/1-coded mask read as 0/255 would come out empty
                raise ReadError(
                    "bad_label_value", f"{rel}: largest value {top} <= threshold {entry.threshold}"
                )
            channels.set(chan[next(iter(labels))], k, grey > entry.threshold)
            continue
        known = grey == 0
        for label, (lo, hi) in labels.items():
            m = (grey >= lo) & (grey <= hi)
            known |= m
            if m.any():
                channels.set(chan[label], k, m)
        if not known.all():
            values = ", ".join(str(v) for v in np.unique(grey[~known])[:8].tolist())
            raise ReadError("bad_label_value", f"{rel}: grey values {values} are in no range of the spec")


def _stack_axis_after_reorientation(affine: np.ndarray) -> int:
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(("R", "A", "S")))
    return int(transform[2, 0])


def _read_enhanced(
    spec: DatasetSpec, opts: DicomOptions, raw_root: Path, item: SourceItem
) -> Iterator[Frame]:
    (rel,) = files_of(item, "image")
    ds = read_dataset(existing(raw_root, rel), rel)
    stored = decode_pixels(ds, rel, opts.max_pixels)
    n = int(ds.get("NumberOfFrames") or 1)
    frames = stored if n > 1 else stored[None]
    geos = [_slice_geo(ds, f) for f in range(frames.shape[0])]
    ct = str(ds.get("Modality", "")).upper() == "CT"
    try:
        if any(g is None for g in geos):
            raise ReadError("inconsistent_series", f"{rel}: frames without plane position/orientation")
        geo, order = _geometry(geos, rel)
    except ReadError:
        # Not one volume (several stacks, phases or echoes): every frame as a native 2D image, in file order.
        yield from _frames_as_images(spec, opts, raw_root, item, ds, frames, opts.voi)
        return
    views = [_frame_view(ds, f) for f in order]
    rescale = [_rescale_of(v) for v in views]
    stack = _Stack(geo.depth, geo.shape, rescale)
    sop = str(ds.get("SOPInstanceUID", ""))
    sop_to_k: dict[tuple[str, int | None], int] = {}
    for k, f in enumerate(order):
        stack.put(k, frames[f], views[k])
        sop_to_k[(sop, f)] = k
    yield from _volume_frames(
        spec, opts, raw_root, item, stack.data, geo, sop_to_k, "hu" if ct else "raw", frame_modality(ds)
    )


def _frames_as_images(spec, opts, raw_root, item, ds, frames, voi) -> Iterator[Frame]:
    stored = frames if frames.shape[0] > 1 else frames[0]
    spacing = _spacing(ds)
    step = spec.slicing.step
    for f, (img, intensity) in enumerate(frame_images(ds, stored, voi)):
        if f % step:
            continue
        yield Frame(
            item=item, image=img, intensity=intensity, plane="im", slice_index=f, spacing_mm=spacing,
            modality=frame_modality(ds),
        )  # fmt: skip


def _read_image(spec: DatasetSpec, opts: DicomOptions, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    (rel,) = files_of(item, "image")
    ds = read_dataset(existing(raw_root, rel), rel)
    stored = decode_pixels(ds, rel, opts.max_pixels)
    n = int(ds.get("NumberOfFrames") or 1)
    frames = stored if n > 1 else stored[None]
    shape = tuple(frames.shape[1:3])
    sop = str(ds.get("SOPInstanceUID", ""))
    sop_to_k = {(sop, f if n > 1 else None): f for f in range(frames.shape[0])}
    if n == 1:
        sop_to_k[(sop, 0)] = 0
    channels = _Channels((frames.shape[0], *shape))
    label_of = _Labeller(spec, opts)
    for role, arel, ads in _annotation_datasets(raw_root, item):
        if role == "seg":
            _add_seg(ads, arel, None, sop_to_k, shape, channels, label_of, opts.segment_label)
    spacing = _spacing(ds)
    for f, (img, intensity) in enumerate(frame_images(ds, stored, opts.voi)):
        if f % spec.slicing.step:
            continue
        masks = []
        for c, label in enumerate(channels.labels):
            m = (channels.planes[c // 8][f] >> (c % 8)) & 1
            if m.any():
                masks.append((label, m.astype(bool)))
        yield Frame(
            item=item, image=img, intensity=intensity, plane="im", slice_index=f, spacing_mm=spacing,
            masks=masks, modality=frame_modality(ds),
        )  # fmt: skip
