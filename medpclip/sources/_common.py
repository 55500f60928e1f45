"""What every reader family needs: option parsing, junk filtering, raw-root-relative paths, per-item errors
carried from discovery to read, and 2D image decoding with Pillow."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, ValidationError

from medpclip.frame import Intensity, ReadError, SourceFile, SourceItem
from medpclip.specs import DatasetSpec, LabelEntry

# OS and archive debris that sits next to real data (format reference §0.1)
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
JUNK_DIRS = frozenset({"__MACOSX"})


class Options(BaseModel):
    """Base of each family's options: unknown keys are refused, so a typo in a spec fails loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=Options)


def parse_options(spec: DatasetSpec, model: type[OptionsT]) -> OptionsT:
    try:
        return model.model_validate(spec.format.options)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(options)"
        raise ReadError("bad_option", f"spec '{spec.name}' format.options.{loc}: {first['msg']}") from None


def is_junk(path: PurePosixPath | Path) -> bool:
    """AppleDouble ``._x`` forks, hidden files, ``Thumbs.db``, anything under ``__MACOSX``."""
    return path.name.startswith(".") or path.name in JUNK_NAMES or any(p in JUNK_DIRS for p in path.parts)


def glob_files(root: Path, patterns: str | Iterable[str]) -> list[Path]:
    """Files under ``root`` matching any pattern (``**`` allowed), junk removed, sorted, no duplicates."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found = {p for pattern in patterns for p in root.glob(pattern) if p.is_file()}
    return sorted(p for p in found if not is_junk(p.relative_to(root)))


def literal_dir(pattern: str) -> PurePosixPath:
    """The leading folders of a glob pattern that contain no wildcard (``images/*.png`` → ``images``)."""
    parts: list[str] = []
    for part in PurePosixPath(pattern).parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return PurePosixPath(*parts)


def raw_path(spec: DatasetSpec, rel: PurePosixPath | str) -> str:
    """A path inside the dataset folder → POSIX path relative to the raw root (what SourceFile holds)."""
    return (PurePosixPath(spec.root) / PurePosixPath(rel)).as_posix()


def strip_dot(path: str) -> PurePosixPath:
    """``./imagesTr/x.nii.gz`` → ``imagesTr/x.nii.gz`` (index files write paths with a leading ``./``)."""
    return PurePosixPath(*[p for p in PurePosixPath(path).parts if p != "."])


# --- errors found at discovery, raised at read -------------------------------------------------------------
# Discovery must not fail a whole dataset over one bad case (DESIGN §7), yet the problem must reach `rejects`.
# The item is yielded with an "error" entry in its meta; the reader's `read` raises it as a ReadError.

ERROR_KEY = "error"


def make_item(
    spec: DatasetSpec,
    case_id: str,
    files: Iterable[SourceFile],
    *,
    fields: dict[str, object] | None = None,
    study_id: str | None = None,
    official_split: str | None = None,
    meta: dict[str, object] | None = None,
    error: tuple[str, str] | None = None,
) -> SourceItem:
    """A SourceItem with the spec's patient id; a case whose patient id cannot be found carries an error."""
    try:
        patient = spec.patient_of(case_id, fields)
    except ValueError as e:
        patient = case_id
        error = error or ("bad_patient_id", str(e))
    entries = dict(meta or {})
    if error is not None:
        entries[ERROR_KEY] = tuple(error)
    return SourceItem(
        dataset=spec.name,
        case_id=case_id,
        files=tuple(files),
        patient_id=patient,
        study_id=study_id,
        official_split=official_split,
        meta=tuple(sorted(entries.items())),
    )


def raise_item_error(item: SourceItem) -> None:
    error = item.meta_dict().get(ERROR_KEY)
    if error:
        reason, detail = error
        raise ReadError(str(reason), str(detail))


def file_of(item: SourceItem, role: str) -> str:
    for f in item.files:
        if f.role == role:
            return f.path
    raise ReadError("missing_file", f"case '{item.case_id}' has no '{role}' file")


def files_of(item: SourceItem, role: str) -> list[str]:
    return [f.path for f in item.files if f.role == role]


def existing(raw_root: Path, rel: str) -> Path:
    path = raw_root / rel
    if not path.is_file():
        raise ReadError("missing_file", rel)
    return path


# --- labels ------------------------------------------------------------------------------------------------


def resolve_label(spec: DatasetSpec, raw: str) -> LabelEntry:
    """The dataset's own label string (or an alias) → its spec entry, case-insensitively."""
    entry = spec.label_by_name().get(str(raw).strip().lower())
    if entry is None:
        known = ", ".join(e.label for e in spec.labels)
        raise ReadError("bad_label_value", f"label '{raw}' is not in spec '{spec.name}' (known: {known})")
    return entry


# --- 2D images ---------------------------------------------------------------------------------------------

_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits: scanner values


def _open(path: Path, rel: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # decode now: truncated files fail here, not later in someone else's code
        return img
    except FileNotFoundError:
        raise ReadError("missing_file", rel) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ReadError("unreadable_image", f"{rel}: {type(e).__name__}: {e}") from None


def load_image(
    path: Path, rel: str, grey: bool = False, *, dicom_voi: bool = True
) -> tuple[np.ndarray, Intensity]:
    """An image file → (H, W) or (H, W, 3) array and its intensity meaning.

    8-bit images come back as ``uint8``; palette, alpha, CMYK, YCbCr and 1-bit images are converted to RGB
    (or L with ``grey``). 16/32-bit greyscale comes back unchanged as ``raw`` scanner values. ``grey`` forces
    one channel: a greyscale dataset's occasional RGB/RGBA file has equal channels, so L loses nothing.

    DICOM files (``.dcm``/``.dicom``/…, or no suffix and the DICM preamble) go through
    :func:`medpclip.sources.dicom.load_dicom_image`: CT → ``hu``; other grey images display-correct
    (MONOCHROME1 inverted) as ``uint8`` through the file's VOI LUT/window (``dicom_voi``) or when stored in
    8 bits, else ``raw``.
    """
    from medpclip.sources import dicom  # imported here: dicom builds on this module

    if dicom.is_dicom_path(path):
        return dicom.load_dicom_image(path, rel, voi=dicom_voi, grey=grey)
    with _open(path, rel) as img:
        if img.mode in _WIDE_MODES:
            return np.asarray(img), "raw"
        if grey:
            target = "L"
        else:
            target = img.mode if img.mode in ("L", "RGB") else ("L" if img.mode in ("1", "LA") else "RGB")
        out = img if img.mode == target else img.convert(target)
        return np.asarray(out), "uint8"


def load_mask(path: Path, rel: str) -> np.ndarray:
    """A mask file → 2D array of its grey values (RGB masks → luminance; 16-bit masks keep their values)."""
    with _open(path, rel) as img:
        if img.mode in _WIDE_MODES:
            return np.asarray(img)
        return np.asarray(img if img.mode == "L" else img.convert("L"))


def sorted_items(items: Iterable[SourceItem]) -> Iterator[SourceItem]:
    yield from sorted(items, key=lambda i: i.case_id)
