"""Images described by tables: a per-image table (image-level labels, patient, study), a box table and
official split lists — NIH ChestX-ray14 style.

Options (``spec.format.options``), paths relative to the dataset folder:

- ``images: "images/*.png"`` — glob or list of globs (``**`` allowed). Tables name images by FILE NAME; an
  image is found by its name wherever the globs find it (NIH ships 12 archives that may unpack to several
  folders).
- ``image_table: {file, image_column, labels_column, separator: "|", normal_labels: [...], study_column,
  report_column}`` — one row per image, read with the ``csv`` module (UTF-8, BOM tolerated, a trailing
  comma in the header tolerated). The row's columns are the ``fields`` the spec's ``patient_id.field``
  names. ``labels_column`` holds image-level labels split by ``separator``; each must be a spec label (or
  alias), except the ``normal_labels`` (e.g. ``No Finding``), which mark an image as normal, are no region
  and pass through to ``Frame.image_labels`` unchanged.
- ``boxes_table: {file, columns: [image, label, x, y, w, h], box_format: xywh|xyxy, skip_header: true}`` —
  columns are taken BY POSITION (NIH's header has 9 fields for 6-field rows); ``columns`` names the role of
  each position (``null`` skips one). Roles: ``image``, ``label`` and ``x, y, w, h`` (xywh) or
  ``x0, y0, x1, y1`` (xyxy). Box labels go through the spec's aliases (NIH ``Infiltrate`` → ``Infiltration``).
- ``split_lists: {train: train_val_list.txt, test: test_list.txt}`` — one image name per line; the official
  split of each image (split names among train/val/test).
- ``grey: true`` — force one channel (NIH ships a few RGBA PNGs among greyscale ones).

Every image a table names is an item, found on disk or not: a missing image is rejected at read
(``missing_file``), an image on disk without a row of the image table as ``no_table_row``, a malformed
box row as ``bad_row``. Boxes are handed over as xyxy floats in the image's own pixels.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medpclip.frame import Box, Frame, ReadError, SourceFile, SourceItem
from medpclip.sources._common import (
    Options,
    existing,
    file_of,
    glob_files,
    literal_dir,
    load_image,
    make_item,
    parse_options,
    raise_item_error,
    raw_path,
    resolve_label,
    sorted_items,
)
from medpclip.specs import SPLITS, DatasetSpec

_BOX_ROLES = {"xywh": ("x", "y", "w", "h"), "xyxy": ("x0", "y0", "x1", "y1")}


class ImageTable(Options):
    file: str
    image_column: str
    labels_column: str | None = None
    separator: str = "|"
    normal_labels: list[str] = Field(default_factory=list)
    study_column: str | None = None
    report_column: str | None = None


class BoxTable(Options):
    file: str
    columns: list[str | None]
    box_format: Literal["xywh", "xyxy"] = "xywh"
    skip_header: bool = True

    @model_validator(mode="after")
    def _roles(self) -> BoxTable:
        need = {"image", "label", *_BOX_ROLES[self.box_format]}
        named = [c for c in self.columns if c]
        if set(named) != need or len(named) != len(need):
            raise ValueError(f"columns must name each of {sorted(need)} once (null to skip a position)")
        return self

    def position(self, role: str) -> int:
        return self.columns.index(role)


class TableOptions(Options):
    images: str | list[str]
    image_table: ImageTable | None = None
    boxes_table: BoxTable | None = None
    split_lists: dict[str, str] = Field(default_factory=dict)
    grey: bool = False

    @field_validator("split_lists")
    @classmethod
    def _splits(cls, v: dict[str, str]) -> dict[str, str]:
        if set(v) - set(SPLITS):
            raise ValueError(f"split names must be among {SPLITS}")
        return v

    def first_glob(self) -> str:
        return self.images if isinstance(self.images, str) else self.images[0]


# --- discover ----------------------------------------------------------------------------------------------


def discover(spec: DatasetSpec, root: Path) -> Iterator[SourceItem]:
    opts = parse_options(spec, TableOptions)
    on_disk: dict[str, Path] = {}
    for p in glob_files(root, opts.images):
        on_disk.setdefault(p.name, p)
    errors: dict[str, tuple[str, str]] = {}
    rows = _image_rows(root, opts.image_table, errors) if opts.image_table else {}
    boxes = _box_rows(root, opts.boxes_table, errors) if opts.boxes_table else {}
    splits = _split_lists(root, opts.split_lists, errors)

    names = set(rows) | set(boxes) | set(on_disk)
    fallback_dir = literal_dir(opts.first_glob())
    items = []
    for name in names:
        path = (
            on_disk[name].relative_to(root).as_posix()
            if name in on_disk
            else (fallback_dir / name).as_posix()
        )
        row = rows.get(name)
        error = errors.get(name)
        if opts.image_table is not None and row is None:
            error = error or ("no_table_row", f"{name} has no row in {opts.image_table.file}")
        meta = _row_meta(opts.image_table, row) if row is not None else {}
        if name in boxes:
            meta["boxes"] = tuple(boxes[name])
        items.append(
            make_item(
                spec,
                PurePosixPath(name).stem,
                [SourceFile("image", raw_path(spec, path))],
                fields=row,
                study_id=(row or {}).get(opts.image_table.study_column) if opts.image_table else None,
                official_split=splits.get(name),
                meta=meta,
                error=error,
            )
        )
    yield from sorted_items(items)


def _read_csv(root: Path, name: str) -> list[list[str]]:
    try:
        with open(root / name, encoding="utf-8-sig", newline="") as f:
            return [[cell.strip() for cell in row] for row in csv.reader(f)]
    except FileNotFoundError:
        raise ReadError("missing_file", name) from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReadError("unreadable_table", f"{name}: {type(e).__name__}: {e}") from None


def _image_rows(
    root: Path, table: ImageTable, errors: dict[str, tuple[str, str]]
) -> dict[str, dict[str, str]]:
    """Image name → {column: value}. Empty header names (a trailing comma) are no column."""
    lines = _read_csv(root, table.file)
    if not lines:
        raise ReadError("unreadable_table", f"{table.file}: empty")
    header = lines[0]
    for col in (table.image_column, table.labels_column, table.study_column, table.report_column):
        if col is not None and col not in header:
            raise ReadError(
                "bad_option",
                f"{table.file} has no column '{col}' (header: {', '.join(h for h in header if h)})",
            )
    rows: dict[str, dict[str, str]] = {}
    for cells in lines[1:]:
        if not any(cells):
            continue
        row = {h: v for h, v in zip(header, cells, strict=False) if h}
        name = row.get(table.image_column, "")
        if not name:
            continue
        if name in rows:
            errors.setdefault(name, ("duplicate_row", f"{name} has several rows in {table.file}"))
            continue
        rows[name] = row
    return rows


def _row_meta(table: ImageTable | None, row: dict[str, str]) -> dict[str, object]:
    """What `read` needs from a row: the raw label tokens and the report (not the other columns)."""
    meta: dict[str, object] = {}
    if table is None:
        return meta
    if table.labels_column:
        tokens = [t.strip() for t in row.get(table.labels_column, "").split(table.separator)]
        meta["image_labels"] = tuple(t for t in tokens if t)
    if table.report_column and row.get(table.report_column):
        meta["report"] = row[table.report_column]
    return meta


def _box_rows(root: Path, table: BoxTable, errors: dict[str, tuple[str, str]]) -> dict[str, list[tuple]]:
    """Image name → [(raw label, x0, y0, x1, y1)]; a malformed row marks its image with an error."""
    lines = _read_csv(root, table.file)[1 if table.skip_header else 0 :]
    roles = _BOX_ROLES[table.box_format]
    out: dict[str, list[tuple]] = {}
    for n, cells in enumerate(lines, start=2 if table.skip_header else 1):
        if not any(cells):
            continue
        name = cells[table.position("image")] if len(cells) > table.position("image") else ""
        if not name:
            continue
        boxes = out.setdefault(name, [])
        try:
            label = cells[table.position("label")]
            a, b, c, d = (float(cells[table.position(r)]) for r in roles)
        except (IndexError, ValueError) as e:
            errors.setdefault(name, ("bad_row", f"{table.file} line {n}: {type(e).__name__}: {e}"))
            continue
        x0, y0, x1, y1 = (a, b, a + c, b + d) if table.box_format == "xywh" else (a, b, c, d)
        if not (x1 > x0 and y1 > y0):
            errors.setdefault(name, ("bad_row", f"{table.file} line {n}: empty box {cells}"))
            continue
        boxes.append((label, x0, y0, x1, y1))
    return out


def _split_lists(root: Path, lists: dict[str, str], errors: dict[str, tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for split, name in sorted(lists.items()):
        try:
            lines = (root / name).read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise ReadError("missing_file", name) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ReadError("unreadable_table", f"{name}: {type(e).__name__}: {e}") from None
        for image in (s.strip() for s in lines):
            if not image:
                continue
            if out.setdefault(image, split) != split:
                errors.setdefault(
                    image, ("bad_split", f"{image} is in both the {out[image]} and {split} lists")
                )
    return out


# --- read --------------------------------------------------------------------------------------------------


def read(spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    raise_item_error(item)
    opts = parse_options(spec, TableOptions)
    rel = file_of(item, "image")
    image, intensity = load_image(existing(raw_root, rel), rel, grey=opts.grey)
    meta = item.meta_dict()
    boxes = [
        Box(resolve_label(spec, label).label, (x0, y0, x1, y1))
        for label, x0, y0, x1, y1 in meta.get("boxes", ())
    ]
    yield Frame(
        item=item,
        image=image,
        intensity=intensity,
        boxes=boxes,
        image_labels=_image_labels(spec, meta.get("image_labels", ()), opts.image_table),
        report=meta.get("report"),
    )


def _image_labels(spec: DatasetSpec, tokens, table: ImageTable | None) -> list[str]:
    """Raw tokens → spec labels; 'normal' markers (e.g. No Finding) pass through as the dataset wrote them."""
    normal_lower = {n.lower() for n in (table.normal_labels if table else ())}
    return [t if t.lower() in normal_lower else resolve_label(spec, t).label for t in tokens]
