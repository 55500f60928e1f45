"""Images described by tables: per-image label tables, box tables (one row per box, per reader), RLE mask tables
and official split lists — NIH ChestX-ray14, VinDr-CXR (PhysioNet and Kaggle schemas), RSNA Pneumonia,
SIIM-ACR Pneumothorax.

Options (``spec.format.options``), paths relative to the dataset folder. Every ``file`` may be one name or a
list of ALTERNATIVE names, of which the first that exists is read (NIH ``Data_Entry_2017_v2020.csv`` or the
older ``Data_Entry_2017.csv``). Each table option also takes a list of tables (train and test tables of one
dataset); a table's ``split`` gives the images it names that official split. Column names are matched after
stripping spaces (SIIM's header is ``ImageId, EncodedPixels``: the column is ``' EncodedPixels'``).

- ``images: "images/*.png"`` — glob or list of globs (``**`` allowed).
- ``match: name|stem`` — tables name images by file NAME (NIH ``00000001_000.png``, the default) or by file STEM
  (VinDr ``image_id`` for ``train/<image_id>.dicom``, RSNA ``patientId``, SIIM ``ImageId`` = the SOP UID that
  names ``dicom-images-train/<study>/<series>/<ImageId>.dcm``). An image is found by its name/stem wherever the
  globs find it. The case id is the stem.
- ``image_table: {file, image_column, labels_column, separator: "|", label_columns, normal_labels,
  several_rows, min_votes, study_column, report_column, split}`` — read with the ``csv`` module (UTF-8, BOM
  tolerated, a trailing comma in the header tolerated). The row's columns are the ``fields`` the spec's
  ``patient_id.field`` names. Image-level labels come from ``labels_column`` (split by ``separator``) and/or
  ``label_columns`` (0/1 columns named by the label: VinDr ``image_labels_*.csv``; ``auto`` = every column but
  the image, study, report and ``ignore_columns`` ones, such as ``rad_id``, which may be absent); each must be a
  spec label (or alias: VinDr's train table says ``Other diseases``, its test table ``Other disease``) or one of
  the ``normal_labels`` (``No Finding``), which are no region and pass through to ``Frame.image_labels`` as
  written. One row per image, unless ``several_rows`` (one row per reader): then a
  0/1 label is on the image when at least ``min_votes`` rows mark it. Exact duplicate rows are ignored (RSNA's
  class table repeats each row once per box); differing rows for one image are ``duplicate_row``.
- ``boxes_table: {file, columns, box_format: xywh|xyxy, skip_header, label, normal_labels, image_labels,
  split}`` — one row per box. ``columns`` is either a LIST naming the role of each position (NIH: its header
  has 9 fields for 6-field rows; ``null`` skips a position) or a MAPPING role → header name (VinDr, RSNA).
  Roles: ``image``, ``label``, ``annotator`` (optional; kept in ``Box.annotator``: VinDr ``rad_id``) and
  ``x, y, w, h`` (xywh) or ``x0, y0, x1, y1`` (xyxy). Without a label column every box gets ``label`` (RSNA:
  ``Lung Opacity``). A row whose coordinates are ALL empty names its image without a box: a ``normal_labels``
  row (VinDr ``No finding``), a row of a table without a label column (RSNA ``Target`` 0), or — with
  ``image_labels`` — a finding stated without a box (image-level only); otherwise, and for partly empty
  coordinates, ``bad_row``. ``image_labels: true`` also puts each image's box labels and unboxed findings (or,
  when it has none, its normal labels) into ``Frame.image_labels``. The annotator column may be absent (a
  consensus table): its boxes then have no annotator. Box labels go through the spec's aliases (NIH ``Infiltrate``
  → ``Infiltration``). Boxes stay in the image's ORIGINAL pixel coordinates, as xyxy floats.
- ``rle_table: {file, image_column, rle_column, label, empty: ["-1"], starts: relative|absolute, first_pixel,
  order: F|C, image_labels, split}`` — run-length masks, several rows per image UNIONED (SIIM: one row per
  disconnected region). ``starts: relative`` (SIIM train-rle.csv): each start counts from the end of the
  previous run; ``absolute``: from pixel ``first_pixel`` (1 for Kaggle's standard RLE). ``order: F``: pixels
  are numbered column by column (SIIM's decode-then-transpose), ``C``: row by row. The flat length is the
  image's own height × width; a run outside it is ``bad_rle``. ``empty`` marks a row without mask.
- ``coco: {file, split, image_labels}`` — a COCO detection/segmentation JSON (one or a list, format reference
  §10): ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``image_id``,
  ``category_id``, ``bbox`` [x, y, w, h] 0-indexed, optional ``segmentation``, ``iscrowd``) and
  ``categories`` (``id``, ``name``: the label, through the spec's aliases). ``file_name`` may hold a subfolder
  (TBX11K ``tb/tb0005.png``): use ``match: path`` with ``image_root`` (the folder the names are relative to).
  An annotation with a ``segmentation`` becomes a mask — polygons ``[[x1, y1, x2, y2, …], …]`` (the parts of
  one object are merged), uncompressed RLE ``{size, counts: [..]}`` or compressed RLE ``{size, counts:
  "…"}``, decoded with pycocotools (column-major counts); ``iscrowd`` RLE masks are kept as masks (their
  connected components become instances). Without a segmentation the ``bbox`` is a box. A polygon part of
  fewer than 3 points is rejected at region level (``invalid_box`` at its first point); a box of zero width or
  height likewise; an RLE whose ``size`` differs from the image is ``mask_shape_mismatch``. An image whose
  size differs from its ``width``/``height`` is ``shape_mismatch``; a category id not in ``categories`` is
  ``bad_row``; a malformed segmentation is ``bad_rle``; a JSON that is no COCO file, or an annotation of an
  image id the file does not list, is ``unreadable_table``. Images the file lists without annotations are
  negatives (no region; kept with ``slicing.keep_empty``). ``image_labels: true`` puts each image's category
  names into ``Frame.image_labels``.
- ``match: path`` / ``image_root: ""`` — tables name images by their path relative to ``image_root`` (COCO
  ``file_name`` with a subfolder); the case id is that path without its suffix.
- ``split_lists: {train: train_val_list.txt, test: test_list.txt}`` — one image name per line.
- A normal label reaches ``Frame.image_labels`` only when the image has no finding label from any table or
  reader (VinDr: one reader's ``No finding`` beside another's nodule gives the nodule only).
- ``grey: true`` — force one channel (NIH ships a few RGBA PNGs among greyscale ones).
- ``dicom_voi: true`` — DICOM images: apply the file's VOI LUT/window (see ``sources.dicom``); MONOCHROME1 is
  always inverted by the DICOM loader.
- ``dicom_fields: [PatientID, StudyInstanceUID]`` — DICOM keywords read from each image's header at discovery
  (no pixel data); they join the fields the spec's ``patient_id.field`` names (SIIM: ``PatientID``). They are
  never written anywhere: only the patient id rule sees them.
- ``study_field`` — the field (table column or DICOM keyword) that holds the study id.

Which images are items: every image on disk (the images a table names, and the others). A table row that
names an image NOT on disk (a partial download: ChestX-ray14 with one of its 12 archives unpacked) makes no
item, so units hold the images present: the absent rows are counted per table file, and each table with some
is ONE plan-stage reject row, ``missing_files``: ``Data_Entry_2017.csv: 111,120 of 112,120 rows name an image
that is not on disk (first: 00000001_000.png, …)`` (whatever else such a row says is moot), with a line for the
build summary, ``Data_Entry_2017.csv: 1,000 of 112,120 rows have their image``. ``discover`` yields the items
and RETURNS these as its generator's value, a list of ``frame.DiscoveryNote`` (``corpus.plan`` reads it;
``list(discover(…))`` just drops it). An image on disk that the dataset's index table does not name —
the image table when there is one, else the RLE and box tables — is ``no_table_row``: a table that lists
negatives explicitly (SIIM ``-1``, RSNA ``Target`` 0, VinDr ``No finding``) does not make an unlisted image a
negative.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Generator, Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from medpclip.frame import Box, DiscoveryNote, Frame, ReadError, SourceFile, SourceItem
from medpclip.sources import dicom
from medpclip.sources._common import (
    existing,
    file_of,
    glob_files,
    make_item,
    parse_options,
    raise_item_error,
    raw_path,
    read_image,
    read_utf8,
    resolve_label,
    sorted_items,
    strip_dot,
)
from medpclip.sources._shapes import InstanceLayers, rejected_outline
from medpclip.sources.tables.options import (
    BOX_ROLES,
    BoxTable,
    CocoTable,
    ImageTable,
    RleTable,
    TableOptions,
)
from medpclip.specs import DatasetSpec

# --- discover ----------------------------------------------------------------------------------------------


class _Found:
    """What the tables say about the images, keyed by the tables' image names."""

    def __init__(self) -> None:
        self.errors: dict[str, tuple[str, str]] = {}
        self.rows: dict[str, dict[str, str]] = {}
        self.meta: dict[str, dict[str, object]] = defaultdict(dict)
        self.splits: dict[str, str] = {}
        self.indexed: set[str] = set()  # named by the index table(s)
        self.named: set[str] = set()  # named by any table
        self.rows_of: dict[str, dict[str, int]] = {}  # table file → image → rows naming it, in table order

    def error(self, name: str, reason: str, detail: str) -> None:
        self.errors.setdefault(name, (reason, detail))

    def row(self, source: str, name: str) -> None:
        """One row (entry) of table ``source`` names image ``name``: counted for the absent-image summary."""
        counts = self.rows_of.setdefault(source, {})
        counts[name] = counts.get(name, 0) + 1

    def listed(self, name: str, index: bool, split: str | None, source: str) -> None:
        """``name`` has a row in table ``source`` (an index table if ``index``), whose rows are in ``split``."""
        self.named.add(name)
        if index:
            self.indexed.add(name)
        self.split(name, split, source)

    def split(self, name: str, split: str | None, source: str) -> None:
        if split is None:
            return
        if self.splits.setdefault(name, split) != split:
            self.error(
                name, "bad_split", f"{name} is in both the {self.splits[name]} and {split} sets ({source})"
            )

    def add_labels(self, name: str, labels: list[str]) -> None:
        current = list(self.meta[name].get("image_labels", ()))
        self.meta[name]["image_labels"] = tuple(current + [t for t in labels if t not in current])


def discover(spec: DatasetSpec, root: Path) -> Generator[SourceItem, None, list[DiscoveryNote]]:
    opts = parse_options(spec, TableOptions)
    key_of = (lambda p: p.stem) if opts.match == "stem" else (lambda p: p.name)
    if opts.match == "path":
        image_root = root / opts.image_root

        def key_of(p: Path) -> str:
            return (
                p.relative_to(image_root) if p.is_relative_to(image_root) else p.relative_to(root)
            ).as_posix()

    on_disk: dict[str, Path] = {}
    for p in glob_files(root, opts.images):
        on_disk.setdefault(key_of(p), p)

    found = _Found()
    image_tables, rle_tables, box_tables = (
        opts.tables("image_table"),
        opts.tables("rle_table"),
        opts.tables("boxes_table"),
    )
    for table in image_tables:
        _image_rows(spec, root, table, found, index=True)
    for table in rle_tables:
        _rle_rows(root, table, found, index=not image_tables)
    for table in box_tables:
        _box_rows(root, table, found, index=not image_tables and not rle_tables)
    coco_tables = opts.tables("coco")
    for table in coco_tables:
        _coco_rows(
            root, table, found, opts.match, index=not image_tables and not rle_tables and not box_tables
        )
    _split_lists(root, opts.split_lists, found)

    study_column = next((t.study_column for t in image_tables if t.study_column), None)
    items = []
    for name in on_disk:  # a name a table lists and the folder lacks is in the table's summary instead
        path = on_disk[name].relative_to(root).as_posix()
        row = dict(found.rows.get(name) or {})
        error = found.errors.get(name)
        index_tables = image_tables or rle_tables or box_tables or coco_tables
        if name not in found.indexed and index_tables:
            index = ", ".join(_names(index_tables[0].file))
            error = error or ("no_table_row", f"{name} has no row in {index}")
        if opts.dicom_fields and error is None:
            try:
                row.update(dicom.read_header_fields(on_disk[name], raw_path(spec, path), opts.dicom_fields))
            except ReadError as e:
                error = (e.reason, e.detail)
        study = (
            row.get(opts.study_field)
            if opts.study_field
            else (row.get(study_column) if study_column else None)
        )
        items.append(
            make_item(
                spec,
                _case_id(name, opts.match),
                [SourceFile("image", raw_path(spec, path))],
                fields=row,
                study_id=study or None,
                official_split=found.splits.get(name),
                meta=found.meta.get(name, {}),
                error=error,
            )
        )
    yield from sorted_items(items)
    return _absent_rows(spec, found, on_disk)


# Absent images the summary row names before its "…": enough to recognise which part of a download is missing.
_FIRST_ABSENT = 5


def _absent_rows(spec: DatasetSpec, found: _Found, on_disk: dict[str, Path]) -> list[DiscoveryNote]:
    """Per table file with rows naming images not on disk: one plan-stage reject and one summary line."""
    notes = []
    for table, counts in found.rows_of.items():
        total = sum(counts.values())
        absent_names = [name for name in counts if name not in on_disk]
        if not absent_names:
            continue
        absent = sum(counts[name] for name in absent_names)
        first = ", ".join(absent_names[:_FIRST_ABSENT])
        listing = f"first: {first}, …" if len(absent_names) > _FIRST_ABSENT else first
        rows = "entries of its images list" if table.lower().endswith(".json") else "rows"  # COCO: no rows
        notes.append(
            DiscoveryNote(
                reason="missing_files",
                detail=f"{table}: {absent:,} of {total:,} {rows} name an image that is not on disk ({listing})",
                path=raw_path(spec, table),
                summary=f"{table}: {total - absent:,} of {total:,} {rows} have their image",
            )
        )
    return notes


def _case_id(name: str, match: str) -> str:
    if match == "stem":
        return name
    if match == "path":
        p = PurePosixPath(name)
        return (p.parent / p.stem).as_posix() if p.parent != PurePosixPath(".") else p.stem
    return PurePosixPath(name).stem


def _names(file: str | list[str]) -> list[str]:
    return [file] if isinstance(file, str) else list(file)


def _pick(root: Path, file: str | list[str]) -> str:
    """The first of the alternative names that exists (missing_file naming them all when none does)."""
    names = _names(file)
    for name in names:
        if (root / name).is_file():
            return name
    raise ReadError("missing_file", " or ".join(names))


def _read_csv(root: Path, name: str) -> list[list[str]]:
    text = read_utf8(root / name, name)  # BOM or not; other encodings: bad_encoding, with the line
    try:
        return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text, newline=""))]
    except csv.Error as e:
        raise ReadError("unreadable_table", f"{name}: {type(e).__name__}: {e}") from None


def _header_table(
    root: Path, file: str | list[str], columns: list[str | None]
) -> tuple[str, list[str], list[list[str]]]:
    """(file name, header, data rows) of a table with a header; refuses a column the header lacks."""
    name = _pick(root, file)
    lines = _read_csv(root, name)
    if not lines:
        raise ReadError("unreadable_table", f"{name}: empty")
    header = lines[0]
    for col in columns:
        if col is not None and col.strip() not in header:
            raise ReadError(
                "bad_option", f"{name} has no column '{col}' (header: {', '.join(h for h in header if h)})"
            )
    return name, header, [cells for cells in lines[1:] if any(cells)]


def _image_rows(spec: DatasetSpec, root: Path, table: ImageTable, found: _Found, index: bool) -> None:
    """Rows → fields, image-level labels, report and official split of each image."""
    explicit = [] if table.label_columns == "auto" else table.label_columns
    cols = [table.image_column, table.labels_column, table.study_column, table.report_column, *explicit]
    name, header, lines = _header_table(root, table.file, cols)
    label_columns = explicit
    if table.label_columns == "auto":
        skip = {c.strip() for c in (*cols, *table.ignore_columns) if c}
        label_columns = [h for h in header if h and h not in skip]
        known = set(spec.label_by_name()) | {n.lower() for n in table.normal_labels}
        for h in label_columns:
            if h.lower() not in known:
                raise ReadError(
                    "bad_option",
                    f"{name}: column '{h}' is neither a spec label (or alias) nor in ignore_columns",
                )
    by_image: dict[str, list[dict[str, str]]] = defaultdict(list)
    for cells in lines:
        row = {h: v for h, v in zip(header, cells, strict=False) if h}
        image = row.get(table.image_column.strip(), "")
        if not image:
            continue
        found.row(name, image)
        seen = by_image[image]
        if row in seen:
            continue  # an exact repeat (RSNA's class table repeats a row per box)
        if seen and not table.several_rows:
            found.error(image, "duplicate_row", f"{image} has several differing rows in {name}")
            continue
        seen.append(row)
    for image, rows in by_image.items():
        found.listed(image, index, table.split, name)
        found.rows.setdefault(image, rows[0])
        labels: list[str] = []
        if table.labels_column:
            for row in rows:
                labels += [t.strip() for t in row.get(table.labels_column.strip(), "").split(table.separator)]
        for col in label_columns:
            votes = sum(1 for row in rows if _is_one(row.get(col.strip(), "")))
            if votes >= table.min_votes:
                labels.append(col.strip())
        labels = [t for t in labels if t]
        if table.labels_column or label_columns:
            found.add_labels(image, labels)
            found.meta[image]["normal_labels"] = tuple(
                dict.fromkeys([*found.meta[image].get("normal_labels", ()), *table.normal_labels])
            )
        if table.report_column and rows[0].get(table.report_column.strip()):
            found.meta[image]["report"] = rows[0][table.report_column.strip()]


def _is_one(v: str) -> bool:
    try:
        return float(v) >= 0.5
    except ValueError:
        return False


def _box_rows(root: Path, table: BoxTable, found: _Found, index: bool) -> None:
    """Rows → [(raw label, x0, y0, x1, y1, annotator)] per image; a malformed row marks its image."""
    roles = BOX_ROLES[table.box_format]
    if isinstance(table.columns, dict):
        required = [col for role, col in table.columns.items() if role != "annotator"]
        name, header, lines = _header_table(root, table.file, required)
        # the reader column is optional: a consensus table (VinDr test) may not have one
        position = {
            role: header.index(col.strip()) for role, col in table.columns.items() if col.strip() in header
        }
        first_line = 2
    else:
        name = _pick(root, table.file)
        lines = [c for c in _read_csv(root, name)[1 if table.skip_header else 0 :] if any(c)]
        position = {role: i for i, role in enumerate(table.columns) if role}
        first_line = 2 if table.skip_header else 1
    normal = {n.lower() for n in table.normal_labels}
    boxes: dict[str, list[tuple]] = defaultdict(list)
    normals: dict[str, list[str]] = defaultdict(list)
    unboxed: dict[str, list[str]] = defaultdict(list)
    for n, cells in enumerate(lines, start=first_line):
        row = {role: cells[i] if i < len(cells) else "" for role, i in position.items()}
        get = row.__getitem__
        image = get("image")
        if not image:
            continue
        found.row(name, image)
        found.listed(image, index, table.split, name)
        label = get("label") if "label" in position else table.label
        annotator = (get("annotator") or None) if "annotator" in position else None
        values = [get(r) for r in roles]
        boxes.setdefault(image, [])
        if not any(values):
            if label.lower() in normal:
                normals[image].append(label)
            elif "label" in position and table.image_labels:
                unboxed[image].append(label)  # a finding stated without a box: image-level only
            elif "label" in position:
                found.error(image, "bad_row", f"{name} line {n}: '{label}' without coordinates")
            continue
        if label.lower() in normal:
            found.error(image, "bad_row", f"{name} line {n}: '{label}' with coordinates {values}")
            continue
        try:
            a, b, c, d = (float(v) for v in values)
        except ValueError as e:
            found.error(image, "bad_row", f"{name} line {n}: {type(e).__name__}: {e}")
            continue
        x0, y0, x1, y1 = (a, b, a + c, b + d) if table.box_format == "xywh" else (a, b, c, d)
        if not (x1 > x0 and y1 > y0):
            found.error(image, "bad_row", f"{name} line {n}: empty box {values}")
            continue
        boxes[image].append((label, x0, y0, x1, y1, annotator))
    for image, image_boxes in boxes.items():
        meta = found.meta[image]
        meta["boxes"] = tuple(meta.get("boxes", ())) + tuple(image_boxes)
        if table.image_labels:
            labels = [b[0] for b in image_boxes] + unboxed.get(image, [])
            found.add_labels(image, list(dict.fromkeys(labels or normals.get(image, []))))
        if normals.get(image):
            meta["normal_labels"] = tuple(
                dict.fromkeys([*meta.get("normal_labels", ()), *table.normal_labels])
            )


def _rle_rows(root: Path, table: RleTable, found: _Found, index: bool) -> None:
    """Rows → the non-empty RLE strings of each image (unioned at read)."""
    name, header, lines = _header_table(root, table.file, [table.image_column, table.rle_column])
    i_image, i_rle = header.index(table.image_column.strip()), header.index(table.rle_column.strip())
    empty = {e.strip() for e in table.empty}
    rles: dict[str, list[str]] = defaultdict(list)
    for cells in lines:
        image = cells[i_image] if i_image < len(cells) else ""
        if not image:
            continue
        found.row(name, image)
        found.listed(image, index, table.split, name)
        value = cells[i_rle] if i_rle < len(cells) else ""
        rles.setdefault(image, [])
        if value not in empty:
            rles[image].append(value)
    for image, runs in rles.items():
        meta = found.meta[image]
        if runs:
            meta["rle"] = tuple(meta.get("rle", ())) + tuple(runs)
            meta["rle_label"] = table.label
            meta["rle_format"] = (table.starts, table.first_pixel, table.order)
            if table.image_labels:
                found.add_labels(image, [table.label])


def _coco_key(file_name: str, match: str) -> str:
    p = strip_dot(file_name)
    return p.stem if match == "stem" else (p.as_posix() if match == "path" else p.name)


def _coco_rows(root: Path, table: CocoTable, found: _Found, match: str, index: bool) -> None:
    """A COCO JSON → per image: its size and annotations ``(category name, bbox, segmentation JSON)``."""
    name = _pick(root, table.file)
    try:
        data = json.loads((root / name).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReadError("unreadable_table", f"{name}: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ReadError("unreadable_table", f"{name}: not a COCO file (no 'images' list)")
    try:
        categories = {c["id"]: str(c["name"]) for c in data.get("categories") or []}
        images: dict[object, str] = {}
        for img in data["images"]:
            key = _coco_key(str(img["file_name"]), match)
            images[img["id"]] = key
            found.row(name, key)
            found.listed(key, index, table.split, name)
            meta = found.meta[key]
            meta.setdefault("coco", ())
            if img.get("width") and img.get("height"):
                meta["coco_size"] = (int(img["height"]), int(img["width"]))
        for ann in data.get("annotations") or []:
            key = images.get(ann["image_id"])
            if key is None:
                raise ReadError(
                    "unreadable_table", f"{name}: annotation {ann.get('id')} names image id {ann['image_id']}, "
                    "which 'images' does not list",
                )  # fmt: skip
            label = categories.get(ann.get("category_id"))
            if label is None:
                found.error(
                    key, "bad_row", f"{name}: annotation {ann.get('id')} has category_id "
                    f"{ann.get('category_id')}, which 'categories' does not list",
                )  # fmt: skip
                continue
            bbox = ann.get("bbox")
            seg = ann.get("segmentation")
            entry = (
                label,
                tuple(float(v) for v in bbox) if bbox else None,
                json.dumps(seg, separators=(",", ":")) if seg else None,
            )
            found.meta[key]["coco"] = tuple(found.meta[key].get("coco", ())) + (entry,)
            if table.image_labels:
                found.add_labels(key, [label])
    except (KeyError, TypeError, ValueError) as e:
        raise ReadError("unreadable_table", f"{name}: not a COCO file: {type(e).__name__}: {e}") from None


def _split_lists(root: Path, lists: dict[str, str], found: _Found) -> None:
    for split, name in sorted(lists.items()):
        lines = read_utf8(root / name, name).splitlines()
        for image in (s.strip() for s in lines):
            if image:
                found.split(image, split, name)


# --- RLE ---------------------------------------------------------------------------------------------------


def decode_rle(
    text: str,
    shape: tuple[int, int],
    *,
    starts: Literal["relative", "absolute"] = "relative",
    first_pixel: int = 0,
    order: Literal["F", "C"] = "F",
) -> np.ndarray:
    """A run-length string ``"start length start length …"`` → bool mask of ``shape`` (H, W).

    ``relative`` starts count from the end of the previous run (SIIM-ACR train-rle.csv, the organizers'
    ``rle2mask``); ``absolute`` ones from pixel ``first_pixel``. ``order="F"``: flat index = column × H + row.
    Raises ValueError on a malformed string or a run outside the image."""
    h, w = shape
    try:
        numbers = [int(v) for v in text.split()]
    except ValueError:
        raise ValueError(f"not a list of integers: {text[:40]!r}") from None
    if len(numbers) % 2:
        raise ValueError(f"odd number of values ({len(numbers)})")
    flat = np.zeros(h * w, dtype=bool)
    position = 0
    for start, length in zip(numbers[0::2], numbers[1::2], strict=True):
        if length < 0 or start < 0:
            raise ValueError(f"negative run ({start} {length})")
        begin = position + start if starts == "relative" else start - first_pixel
        end = begin + length
        if begin < 0 or end > h * w:
            raise ValueError(f"run {start} {length} ends at pixel {end}, beyond the {h}x{w} image")
        flat[begin:end] = True
        position = end
    return flat.reshape((h, w), order=order)


# --- read --------------------------------------------------------------------------------------------------


def read(spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    raise_item_error(item)
    opts = parse_options(spec, TableOptions)
    rel = file_of(item, "image")
    path = existing(raw_root, rel)
    img = read_image(path, rel, grey=opts.grey, dicom_voi=opts.dicom_voi, max_pixels=opts.max_pixels)
    image = img.array
    meta = item.meta_dict()
    boxes = [
        Box(resolve_label(spec, b[0]).label, (b[1], b[2], b[3], b[4]), b[5] if len(b) > 5 else None)
        for b in meta.get("boxes", ())
    ]
    masks = []
    if meta.get("rle"):
        starts, first_pixel, order = meta["rle_format"]
        mask = np.zeros(image.shape[:2], dtype=bool)
        for n, text in enumerate(meta["rle"]):
            try:
                mask |= decode_rle(text, image.shape[:2], starts=starts, first_pixel=first_pixel, order=order)
            except ValueError as e:
                raise ReadError("bad_rle", f"{rel}: run-length row {n + 1}: {e}") from None
        masks.append((resolve_label(spec, meta["rle_label"]).label, mask))
    if "coco" in meta:
        _coco_annotations(spec, rel, image.shape[:2], meta, masks, boxes)
    yield Frame(
        item=item,
        image=image,
        intensity=img.intensity,
        spacing_mm=img.spacing_mm,
        boxes=boxes,
        masks=masks,
        # COCO polygons and crowd RLEs are drawn on this image; an RLE table's mask (SIIM) keeps the area rule
        outlined="coco" in meta and not meta.get("rle"),
        image_labels=_image_labels(spec, meta.get("image_labels", ()), meta.get("normal_labels", ())),
        report=meta.get("report"),
    )


def _coco_annotations(spec: DatasetSpec, rel: str, shape, meta, masks: list, boxes: list[Box]) -> None:
    """COCO annotations of one image → masks (packed per label, see ``_shapes``) and boxes."""
    from pycocotools import mask as mask_utils

    h, w = int(shape[0]), int(shape[1])
    size = meta.get("coco_size")
    if size is not None and tuple(size) != (h, w):
        raise ReadError("shape_mismatch", f"{rel}: image {h}x{w}, the COCO file says {size[0]}x{size[1]}")
    layers: dict[str, InstanceLayers] = {}
    for raw, bbox, seg_json in meta["coco"]:
        label = resolve_label(spec, raw).label
        if seg_json is None:
            if bbox is not None:
                x, y, bw, bh = bbox
                boxes.append(Box(label, (x, y, x + bw, y + bh)))
            continue
        seg = json.loads(seg_json)
        try:
            if isinstance(seg, list):
                parts = [[float(v) for v in part] for part in seg]
                good = [p for p in parts if len(p) >= 6 and len(p) % 2 == 0]
                for p in parts:
                    if p not in good:
                        boxes.append(rejected_outline(label, *(p[:2] if len(p) >= 2 else [np.nan, np.nan])))
                if not good:
                    continue
                rle = mask_utils.merge(mask_utils.frPyObjects(good, h, w))
            elif isinstance(seg, dict) and isinstance(seg.get("counts"), str):
                rle = {"size": [int(v) for v in seg["size"]], "counts": seg["counts"].encode("ascii")}
            elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                rh, rw = (int(v) for v in seg["size"])
                rle = mask_utils.frPyObjects(seg, rh, rw)
            else:
                raise ValueError(f"unknown segmentation {seg_json[:40]}")
            mask = mask_utils.decode(rle).astype(bool)
        except (TypeError, ValueError, KeyError, UnicodeEncodeError) as e:
            raise ReadError("bad_rle", f"{rel}: segmentation of a '{raw}': {type(e).__name__}: {e}") from None
        if mask.shape != (h, w):
            masks.append((label, mask))  # dropped downstream as mask_shape_mismatch, with the sizes
            continue
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            continue
        sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        layers.setdefault(label, InstanceLayers((h, w))).add(sl, mask[sl])
    for label, packed in layers.items():
        masks.extend((label, layer) for layer in packed.layers)


def _image_labels(spec: DatasetSpec, tokens, normal_labels) -> list[str]:
    """Raw tokens → spec labels; 'normal' markers (e.g. No Finding) pass through as the dataset wrote them,
    and only when the image has no finding (one VinDr reader's 'No finding' beside another's nodule)."""
    normal_lower = {n.lower() for n in normal_labels}
    findings = list(
        dict.fromkeys(resolve_label(spec, t).label for t in tokens if t.lower() not in normal_lower)
    )
    return findings or list(dict.fromkeys(t for t in tokens if t.lower() in normal_lower))
