"""What every reader family needs: option parsing, junk filtering, raw-root-relative paths, per-item errors
carried from discovery to read, and 2D image decoding with Pillow."""

from __future__ import annotations

import csv
import glob
import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from medpclip.frame import ReadError, SourceFile, SourceItem
from medpclip.sources.base import DEFAULT_MAX_PIXELS, LoadedImage, Options, check_pixels
from medpclip.specs import DatasetSpec, LabelEntry

# OS and archive debris that sits next to real data (format reference §0.1)
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
JUNK_DIRS = frozenset({"__MACOSX"})


OptionsT = TypeVar("OptionsT", bound=Options)


def parse_options(spec: DatasetSpec, model: type[OptionsT]) -> OptionsT:
    """The spec's options, checked to be a ``model`` (for a family with one model per layout, their common
    base). A loaded spec's ``format.options`` already is one (specs validate options when they load); this
    refuses a spec handed to the wrong family."""
    options = spec.format.options
    if isinstance(options, model):
        return options
    raise ReadError(
        "bad_option",
        f"spec '{spec.name}' has format.family '{spec.format.family}', whose options are not {model.__name__}",
    )


def is_junk(path: PurePosixPath | Path) -> bool:
    """AppleDouble ``._x`` forks, hidden files, ``Thumbs.db``, anything under ``__MACOSX``."""
    return path.name.startswith(".") or path.name in JUNK_NAMES or any(p in JUNK_DIRS for p in path.parts)


def glob_files(root: Path, patterns: str | Iterable[str]) -> list[Path]:
    """Files under ``root`` matching any pattern (``**`` allowed), junk removed, sorted, no duplicates.

    Symlinked FOLDERS inside ``root`` are never entered (``**`` does not follow them; a ``*/`` pattern would):
    a link loop cannot make discovery run forever, and a link out of the dataset folder cannot pull other
    files in. Symlinked files are listed; the build refuses those whose target lies outside the dataset folder
    (``outside_root``, see :func:`inside_dataset`)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found = {p for pattern in patterns for p in root.glob(pattern) if p.is_file()}
    linked: dict[Path, bool] = {}

    def through_link(p: Path) -> bool:
        for parent in p.relative_to(root).parents:
            if parent == Path("."):
                break
            d = root / parent
            if d not in linked:
                linked[d] = d.is_symlink()
            if linked[d]:
                return True
        return False

    return sorted(p for p in found if not is_junk(p.relative_to(root)) and not through_link(p))


def symlink_problems(root: Path, root_rel: str) -> list[tuple[str, str, str]]:
    """``(reason, path relative to the raw root, detail)`` for each symlink under the dataset folder ``root``
    that discovery will not follow: loops (``symlink_loop``, also a folder link to one of its own ancestors)
    and folder links whose target lies outside the dataset folder (``outside_root``; a FILE link out of the
    folder is refused by the build when its case is read). Walks without following links, so it ends on any
    tree."""
    base = root.resolve()
    out: list[tuple[str, str, str]] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            p = Path(folder) / name
            if not p.is_symlink():
                continue
            rel = (PurePosixPath(root_rel) / p.relative_to(root).as_posix()).as_posix()
            if is_junk(PurePosixPath(rel)):
                continue
            try:
                target = Path(os.path.realpath(p, strict=True))
            except FileNotFoundError:
                continue  # dangling: a file named by an index is rejected as missing_file when read
            except (OSError, RuntimeError):
                out.append(("symlink_loop", rel, f"{rel}: symbolic link loop; not followed"))
                continue
            if not target.is_relative_to(base):
                if target.is_dir():  # a file link is refused where it is read (its case's reject row)
                    out.append(("outside_root", rel, f"{rel}: folder link out of '{root_rel}'; not followed"))
            elif target.is_dir() and p.parent.resolve().is_relative_to(target):
                out.append(("symlink_loop", rel, f"{rel}: links to its own ancestor folder; not followed"))
    return out


def inside_dataset(raw_root: Path, rel: str) -> Path:
    """The file ``rel`` (``<dataset folder>/…``, relative to the raw root) as a path, refused with
    ``outside_root`` when it resolves outside its dataset folder: a ``..`` in an index file, a table or a COCO
    ``file_name``, or a symlink out of the folder. The dataset folder itself may be a symlink."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or parts[0] == "..":
        raise ReadError("outside_root", f"{rel}: not a path inside a dataset folder")
    path = raw_root / rel
    try:
        target = path.resolve()
        base = (raw_root / parts[0]).resolve()
    except (OSError, RuntimeError):
        raise ReadError("symlink_loop", f"{rel}: symbolic link loop") from None
    if not target.is_relative_to(base):
        raise ReadError("outside_root", f"{rel}: resolves outside the dataset folder '{parts[0]}'")
    return path


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
    path = inside_dataset(raw_root, rel)
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


def _open(path: Path, rel: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    try:
        img = Image.open(path)  # reads the header only
        check_pixels((img.height, img.width, len(img.getbands())), rel, max_pixels)  # only frame 0 is read
        img.load()  # decode now: truncated files fail here, not later in someone else's code
        return img
    except FileNotFoundError:
        raise ReadError("missing_file", rel) from None
    except Image.DecompressionBombError as e:  # Pillow's own guard (2 × 89.5 M px)
        raise ReadError("too_large", f"{rel}: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ReadError("unreadable_image", f"{rel}: {type(e).__name__}: {e}") from None


def read_image(
    path: Path, rel: str, *, grey: bool = False, dicom_voi: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """An image file → (H, W) or (H, W, 3) array, its intensity meaning and its pixel spacing: the one image
    loader of the 2D readers (raster, tables, reports, contours), so a DICOM file gets the same treatment
    (spacing, VOI, MONOCHROME1, colour) whichever family's spec names it.

    8-bit images come back as ``uint8``; palette, alpha, CMYK, YCbCr and 1-bit images are converted to RGB
    (or L with ``grey``). 16/32-bit greyscale comes back unchanged as ``raw`` scanner values. ``grey`` forces
    one channel: a greyscale dataset's occasional RGB/RGBA file has equal channels, so L loses nothing.
    These formats state no spacing in mm (a PNG's pHYs is a print resolution), so ``spacing_mm`` is None.

    DICOM files (``.dcm``/``.dicom``/…, or no suffix and the DICM preamble) go through
    :func:`medpclip.sources.dicom.image.read_dicom_image`: CT → ``hu``; other grey images display-correct
    (MONOCHROME1 inverted) as ``uint8`` through the file's VOI LUT/window (``dicom_voi``) or when stored in
    8 bits, else ``raw``; ``spacing_mm`` from PixelSpacing (or ImagerPixelSpacing), so an image with
    non-square pixels is resized to its true aspect.
    """
    # imported here: pydicom is a heavy import that a PNG-only dataset never needs
    from medpclip.sources.dicom.files import is_dicom_path
    from medpclip.sources.dicom.image import read_dicom_image

    if is_dicom_path(path):
        return read_dicom_image(path, rel, voi=dicom_voi, grey=grey, max_pixels=max_pixels)
    with _open(path, rel, max_pixels) as img:
        if img.mode in _WIDE_MODES:
            return LoadedImage(np.asarray(img), "raw")
        if grey:
            target = "L"
        else:
            target = img.mode if img.mode in ("L", "RGB") else ("L" if img.mode in ("1", "LA") else "RGB")
        out = img if img.mode == target else img.convert(target)
        # an RGB JPEG decoded as it is: its bytes can be the stored image (corpus/encoding.py)
        source = path.read_bytes() if img.format == "JPEG" and img.mode == target == "RGB" else None
        return LoadedImage(np.asarray(out), "uint8", source_jpeg=source)


def load_mask(path: Path, rel: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A mask file → 2D array of its grey values (RGB masks → luminance; 16-bit masks keep their values)."""
    with _open(path, rel, max_pixels) as img:
        if img.mode in _WIDE_MODES:
            return np.asarray(img)
        return np.asarray(img if img.mode == "L" else img.convert("L"))


# --- text tables ---------------------------------------------------------------------------------------------


# The words a table's split column may hold, and the split each means (volumes and raster tables).
SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "tr": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
    "ts": "test",
}


def table_rows(
    root: Path, rel: str, delimiter: str, needed: Iterable[str | None]
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a delimited table with a header, cells and column names stripped, after checking
    that every ``needed`` column is there (``unreadable_table`` naming the columns it has)."""
    reader = csv.DictReader(io.StringIO(read_utf8(root / rel, rel)), delimiter=delimiter)
    columns = [(c or "").strip() for c in reader.fieldnames or []]
    for column in needed:
        if column is not None and column not in columns:
            raise ReadError(
                "unreadable_table",
                f"{rel}: no column '{column}' (columns: {', '.join(columns)}; delimiter {delimiter!r})",
            )
    for line, raw in enumerate(reader, start=2):
        yield line, {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}


def rows_by_id(
    root: Path, rel: str, delimiter: str, id_column: str, needed: Iterable[str | None], purpose: str
) -> dict[str, dict[str, str]]:
    """A per-case table's rows by its id column (the first row of an id wins; rows without an id skipped).
    ``purpose`` says in a missing table's error what the spec takes from it."""
    if not (root / rel).is_file():
        raise ReadError("missing_file", f"{rel} (the table this spec takes {purpose} from)")
    rows: dict[str, dict[str, str]] = {}
    for _, row in table_rows(root, rel, delimiter, [id_column, *needed]):
        case = row.get(id_column, "")
        if case:
            rows.setdefault(case, row)
    return rows


def read_utf8(path: Path, rel: str, reason: str = "unreadable_table") -> str:
    """A text file (CSV, list, index) as UTF-8, BOM or not. Anything else is refused as ``bad_encoding`` with
    the line and byte: a table's encoding is global, so decoding it another way, or skipping the bad rows,
    would silently change labels and ids; the fix is to convert the file (or the spec), not to guess."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReadError("missing_file", rel) from None
    except OSError as e:
        raise ReadError(reason, f"{rel}: {type(e).__name__}: {e}") from None
    data = data.removeprefix(b"\xef\xbb\xbf")  # a BOM (Excel's UTF-8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ReadError(
            "bad_encoding",
            f"{rel}: not UTF-8: byte 0x{data[e.start]:02x} at line {line} (offset {e.start}); "
            "save the file as UTF-8",
        ) from None


def sorted_items(items: Iterable[SourceItem]) -> Iterator[SourceItem]:
    yield from sorted(items, key=lambda i: i.case_id)


# --- XML ---------------------------------------------------------------------------------------------------


def parse_xml(path: Path, rel: str) -> ET.Element:
    """The root element with namespaces stripped from every tag (LIDC declares ``xmlns="http://www.nih.gov"``,
    OpenI none): readers match plain tag names whatever the publisher declared."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ReadError("missing_file", rel) from None
    except (ET.ParseError, OSError, UnicodeDecodeError) as e:
        raise ReadError("unreadable_annotation", f"{rel}: {type(e).__name__}: {e}") from None
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root
