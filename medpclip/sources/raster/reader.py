"""2D image + mask files (JPEG/PNG/BMP/GIF/TIFF): one image per case, masks found from the image's path.

Options (``spec.format.options``), all paths relative to the dataset folder, POSIX style:

Images
- ``images: "images/*.jpg"`` — glob or list of globs (``**`` allowed). Junk files (``._*``, ``.DS_Store``,
  ``Thumbs.db``, ``__MACOSX``) are skipped, and so is any file that is some image's mask (masks may share the
  image folder, e.g. BUSI). The case id is the image file name without its extension (see ``case_id``).
- ``exclude: ["*_mask*.png"]`` — fnmatch patterns (on the relative path or the file name) of files that are
  never images, even when no image claims them (an orphan mask must not become an image).
- ``name_regex: "^(?P<set>training|test)/images/(?P<id>\\d+)_"`` — optional; searched in each image's
  relative path. Its named groups become fields for mask patterns (``{id}``) and for ``patient_id.field``.
  An image whose path does not match is rejected (``unexpected_name``).
- ``case_id: "{set}-{stem}"`` — optional template of the case id over the fields ``{stem}``, ``{dir}`` and the
  ``name_regex`` groups (it must name ``{stem}`` or a group; no wildcards). For datasets whose folders number
  their files alike (TN3K: ``trainval-image/0000.jpg`` and ``test-image/0000.jpg``): without it both would
  be case ``0000`` and the build would keep one and reject the other (``duplicate_key``). The case id is
  also the default patient id, what ``table`` rows and ``split_lists`` lines are matched to, and what names
  the sample keys; mask patterns, ``boxes_json`` keys and ``numbered_groups`` still use the file's stem.
- ``grey: true`` — force one channel (greyscale datasets that ship some RGB files).

Masks
- ``masks: ["masks/{stem}.jpg"]`` — patterns with fields ``{stem}`` (image name without extension),
  ``{dir}`` (the image's folder) and the ``name_regex`` groups; each pattern names ``{stem}`` or a group.
  A pattern may hold wildcards (``"{dir}/{stem}_mask_*.png"``: every match is one mask file). An entry may
  also be a mapping ``{pattern, label, when, required, empty}``: ``label`` gives its masks their own label;
  ``when`` (fnmatch on the image's relative path) applies the pattern to some images only; ``required: true``
  rejects an image without a match as ``missing_file`` naming the expected path; ``empty: true`` marks masks
  that must be all background (BUSI ``normal``): the file is read and checked, and a foreground pixel
  rejects the image (``bad_label_value``).
- ``mask_mode: threshold`` (default) — grey value ``> threshold`` (default 127) is the structure; the label
  is the entry's ``label``, else option ``label``, else the spec's only label. Lossy (JPEG), RGB (3-channel
  TIFF), palette (GIF) and 16-bit masks are read as one grey channel first. A mask holding only 0 and one
  value at or below the threshold (a 0/1-coded mask) is refused (``bad_label_value``), not read as empty.
- ``fill_holes: true`` (``threshold`` only) — the mask is a drawn outline (HC18's head ellipse, a 1-2 px
  line): the area it encloses (``scipy.ndimage.binary_fill_holes``) is the structure. An outline that is not
  closed (cut by the image border) encloses nothing and stays a thin ring.
- ``mask_mode: instances`` — an instance-coded mask (0 background, each other value one object: GlaS's
  ``_anno.bmp``): every id is its own instance, so touching objects stay two regions; labels as for
  ``threshold``.
- ``mask_mode: values`` — ``values: {mask pixel value: spec label value}``; the mask becomes a label map. A
  pixel value not in ``values`` is ``bad_label_value``.
- ``mask_mode: ranges`` — ``ranges: {label: [lo, hi]}``: each label's mask is the pixels whose grey value
  lies in [lo, hi] (inclusive). Ranges may overlap, for nested structures coded in one file: REFUGE's disc
  (grey 128) includes the cup (0), so ``disc: [0, 150]`` and ``cup: [0, 100]`` (the cut-offs of the REFUGE
  reference loader, robust to stray intermediate values).
- ``merge_masks: true`` — masks of one label are OR-ed into one annotation (instances then come from
  connected components), e.g. BUSI's ``_mask`` and ``_mask_1`` files. Default: every file stays its own
  annotation.
- ``boxes_json: kavsir_bboxes.json`` — optional Kvasir-schema boxes (``{stem: {height, width, bbox: [{label,
  xmin, ymin, xmax, ymax}]}}``), used for images that have no mask file. The boxes travel in the item's
  meta (the json is not one of the item's files: hashing it once per image would cost more than reading).
- ``require_annotation: true`` (default) — an image with neither mask nor box is ``missing_file``; set it to
  false for datasets whose unannotated images are meaningful.

Image-level labels, splits, groups
- ``image_labels: [{regex, path: image|mask, map}]`` — each rule's ``regex`` (with a group ``label``) is
  searched in the relative path of the image (``path: image``, default) or of each mask file (``path: mask``);
  the group's text, through ``map`` when given (keys are the dataset's strings), is an image-level label:
  a spec label or one of ``normal_labels`` (e.g. ``normal``: a negative finding, no spec label, passed
  through as written). A matched string missing from ``map`` rejects the image (``bad_label_value``).
  Examples: BUSI class folder, Montgomery/Shenzhen ``_0``/``_1`` suffix, REFUGE ``Glaucoma`` folder.
- ``splits: {"ISIC2018_Task1-2_Training_Input/*": train, …}`` — official split by fnmatch on the image's
  relative path (first matching entry wins; images matching none have no official split).
- ``split_lists: {train: train.txt, test: test.txt}`` — official split from list files (paths relative to
  the dataset folder), one case id per line (surrounding blanks and blank lines ignored; UTF-8 with or
  without BOM), e.g. Kvasir-Instrument's ``train.txt``/``test.txt``. A missing list file fails discovery
  (``missing_file``); an id listed but not on disk is a rejected case (``missing_file``) and an id in two
  lists is rejected (``bad_row``); an image in no list falls through to the table's split column, then to
  ``splits``, else has no official split. A spec should give one source of official splits.
- ``table: {path, delimiter, id_column, split_column, label_column}`` — per-image rows from a delimited file
  (as the volumes family's ``table``; UTF-8 with or without BOM; cells stripped; the first row of an id
  wins). ``id_column`` is matched to the case id. The row's columns become fields for
  ``patient_id.field`` (e.g. HAM10000's ``lesion_id``, so that the images of one lesion share a split; the
  path's own fields win a name clash); ``split_column`` (optional) gives the official split (words
  train/training/tr, val/valid/validation, test/testing/ts; another non-empty value is ``bad_row``);
  ``label_column`` (optional; mask modes ``threshold``/``instances``) names the label of the image's
  masks, matched to the spec's ``label``/``aliases`` case-insensitively (HAM10000's ``dx``: ``mel`` …),
  before option ``label`` and after a mask entry's own ``label``. With ``label_column`` every image needs a
  row with a known, non-empty value (else ``bad_row`` / ``bad_label_value``). A missing table or column fails
  discovery (``missing_file`` / ``unreadable_table``); a row naming an image not on disk is a rejected case
  (``missing_file``), never silently skipped. The row travels in the item (its label, patient, split), not
  as one of its files (hashing the table once per image would cost more than reading).
- ``numbered_groups: {size: 50}`` or ``{ranges: [[1, 25], [26, 50], …]}`` — for numbered frames cut from
  videos (CVC-ClinicDB): the field ``group`` (``"0001-0050"``) groups consecutive frame numbers, so that
  ``patient_id: {field: group}`` keeps near-duplicate neighbours in one split. A stem that is not a number
  or falls in no range has no group (``bad_patient_id``).

Image and mask must have the same size (``shape_mismatch`` otherwise). Images come as ``uint8`` (8-bit) or
``raw`` (16-bit) arrays; nothing is resized or thresholded beyond what the mask mode says.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from scipy import ndimage

from medpclip.frame import Box, Frame, ReadError, SourceFile, SourceItem
from medpclip.sources._common import (
    SPLIT_WORDS,
    existing,
    file_of,
    files_of,
    glob_files,
    is_junk,
    load_mask,
    make_item,
    parse_options,
    raise_item_error,
    raw_path,
    read_image,
    read_utf8,
    resolve_label,
    rows_by_id,
    sorted_items,
)
from medpclip.sources._shapes import InstanceLayers
from medpclip.sources.raster.options import (
    MaskPattern,
    RasterOptions,
    pattern_literal,
)
from medpclip.specs import DatasetSpec

# --- discover ----------------------------------------------------------------------------------------------


@dataclass
class _Case:
    """What discovery found for one image: template fields, mask files (pattern index, path), first error."""

    fields: dict[str, str]
    masks: list[tuple[int, Path]] = field(default_factory=list)
    error: tuple[str, str] | None = None


def discover(spec: DatasetSpec, root: Path) -> Iterator[SourceItem]:
    opts = parse_options(spec, RasterOptions)
    _check_labels(spec, opts)
    boxes = _load_boxes_json(root, opts.boxes_json) if opts.boxes_json else {}
    rows = (
        rows_by_id(root, t.path, t.delimiter, t.id_column, t.columns(), "per-image fields")
        if (t := opts.table) is not None
        else {}
    )
    listed = _read_split_lists(root, opts.split_lists)
    candidates = [
        p for p in glob_files(root, opts.images) if not _excluded(p.relative_to(root), opts.exclude)
    ]
    finder = _MaskFinder(root)
    cases = {p: _find_case(spec, opts, finder, root, p) for p in candidates}
    used_as_mask = {m for case in cases.values() for _, m in case.masks}
    patterns = opts.mask_patterns()
    items = []
    for path in candidates:
        if path in used_as_mask:
            continue
        case = cases[path]
        case_id = _case_id(opts, case, path)
        rel = path.relative_to(root).as_posix()
        files = [SourceFile("image", raw_path(spec, rel))]
        files += [SourceFile("mask", raw_path(spec, m.relative_to(root).as_posix())) for _, m in case.masks]
        meta: dict[str, object] = {}
        error = case.error
        row = rows.get(case_id)
        fields = {**row, **case.fields} if row is not None else case.fields  # the path's fields win
        row_label, row_error = _row_label(spec, opts, case_id, row)
        error = error or row_error
        if case.masks and opts.mask_mode in ("threshold", "instances") and error is None:
            # each mask file's label, in order
            meta["mask_labels"] = tuple(
                _threshold_label(spec, opts, patterns[i], row_label) for i, _ in case.masks
            )
        if not case.masks and path.stem in boxes:
            try:
                meta.update(_kvasir_entry(boxes[path.stem]))
            except (KeyError, TypeError, ValueError) as e:
                error = error or (
                    "bad_row",
                    f"{opts.boxes_json} entry '{path.stem}': {type(e).__name__}: {e}",
                )
        try:
            labels = _image_labels(spec, opts, rel, [m.relative_to(root).as_posix() for _, m in case.masks])
        except ReadError as e:
            labels, error = [], error or (e.reason, e.detail)
        if labels:
            meta["image_labels"] = tuple(labels)
        split, split_error = _official_split(opts, case_id, rel, row, listed)
        items.append(
            make_item(
                spec,
                case_id,
                files,
                fields=fields,
                official_split=split,
                meta=meta,
                error=error or split_error,
            )
        )
    found = {item.case_id for item in items}
    items += _orphans(spec, opts, found, rows, listed)
    yield from sorted_items(items)


def _case_id(opts: RasterOptions, case: _Case, path: Path) -> str:
    """Option ``case_id`` filled with the image's fields, else the file name without its extension (also when
    ``name_regex`` did not match: the image is rejected anyway, under its file name)."""
    if opts.case_id is None or case.error is not None and case.error[0] == "unexpected_name":
        return path.stem
    return opts.case_id.format(**case.fields)


def _row_label(
    spec: DatasetSpec, opts: RasterOptions, case_id: str, row: dict[str, str] | None
) -> tuple[str | None, tuple[str, str] | None]:
    """The label a table row gives the image's masks (``table.label_column``), or the error that rejects it."""
    table = opts.table
    if table is None or table.label_column is None:
        return None, None
    if row is None:
        return None, ("bad_row", f"{table.path} has no row for image '{case_id}' (its {table.label_column})")
    raw = row.get(table.label_column, "")
    if not raw:
        return None, ("bad_row", f"{table.path}: empty {table.label_column} for image '{case_id}'")
    try:
        return resolve_label(spec, raw).label, None
    except ReadError as e:
        return None, (e.reason, f"{table.path}: {table.label_column} of '{case_id}': {e.detail}")


def _official_split(
    opts: RasterOptions,
    case_id: str,
    rel: str,
    row: dict[str, str] | None,
    listed: dict[str, list[tuple[str, str]]],
) -> tuple[str | None, tuple[str, str] | None]:
    """The official split: from ``split_lists``, else the table's ``split_column``, else ``splits``."""
    if case_id in listed:
        splits = sorted({split for split, _ in listed[case_id]})
        if len(splits) > 1:
            names = ", ".join(sorted({name for _, name in listed[case_id]}))
            return None, ("bad_row", f"image '{case_id}' is listed in several split lists ({names})")
        return splits[0], None
    table = opts.table
    if row is not None and table is not None and table.split_column is not None:
        value = row.get(table.split_column, "")
        split = SPLIT_WORDS.get(value.lower())
        if split is not None:
            return split, None
        if value:
            detail = (
                f"{table.path}: {table.split_column} '{value}' of image '{case_id}' is not train/val/test"
            )
            return None, ("bad_row", detail)
    return next((s for pattern, s in opts.splits.items() if fnmatch.fnmatchcase(rel, pattern)), None), None


def _orphans(
    spec: DatasetSpec,
    opts: RasterOptions,
    found: set[str],
    rows: dict[str, dict[str, str]],
    listed: dict[str, list[tuple[str, str]]],
) -> list[SourceItem]:
    """A case id a table or split list names that no image on disk has: a rejected case, never skipped."""
    out = []
    for case_id in sorted(set(rows) - found):
        assert opts.table is not None
        name = opts.table.path
        error = ("missing_file", f"image '{case_id}' is listed in {name} but not on disk")
        out.append(make_item(spec, case_id, [SourceFile("table", raw_path(spec, name))], error=error))
    for case_id in sorted(set(listed) - found - set(rows)):
        name = listed[case_id][0][1]
        error = ("missing_file", f"image '{case_id}' is listed in {name} but not on disk")
        out.append(make_item(spec, case_id, [SourceFile("split_list", raw_path(spec, name))], error=error))
    return out


def _read_split_lists(root: Path, lists: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """``split_lists``: case id → [(split, list file)] (one id per line; blank lines skipped)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for split, name in lists.items():
        if not (root / name).is_file():
            raise ReadError("missing_file", f"{name} (the list of the official {split} split)")
        for line in read_utf8(root / name, name).splitlines():
            case_id = line.strip()
            if case_id:
                out.setdefault(case_id, []).append((split, name))
    return out


def _check_labels(spec: DatasetSpec, opts: RasterOptions) -> None:
    """Spec-level mistakes fail discovery once instead of every item at read."""
    try:
        if opts.mask_mode in ("threshold", "instances"):
            from_table = opts.table is not None and opts.table.label_column is not None
            for m in opts.mask_patterns():
                if not (from_table and m.label is None):  # else each image's row names it
                    _threshold_label(spec, opts, m)
        elif opts.mask_mode == "ranges":
            for label in opts.ranges:
                resolve_label(spec, label)
        else:
            by_value = spec.label_by_value()
            bad = sorted(v for v in opts.values.values() if v != 0 and v not in by_value)
            if bad:
                raise ReadError(
                    "bad_option", f"values map to {bad}, which are not label values of spec '{spec.name}'"
                )
        for rule in opts.image_labels:
            for target in (rule.map or {}).values():
                _image_label(spec, opts, target)
    except ReadError as e:
        raise ReadError("bad_option", e.detail) from None


def _threshold_label(
    spec: DatasetSpec, opts: RasterOptions, m: MaskPattern, row_label: str | None = None
) -> str | None:
    """A mask file's label: the pattern's own, else the image's table row's, else option ``label``, else the
    spec's only label."""
    if m.empty:
        return None  # no label: the mask must be empty
    raw = m.label or row_label or opts.label
    if raw is None:
        if len(spec.labels) != 1:
            raise ReadError("bad_option", f"mask pattern '{m.pattern}' needs a label (the spec has several)")
        return spec.labels[0].label
    return resolve_label(spec, raw).label


def _image_label(spec: DatasetSpec, opts: RasterOptions, raw: str) -> str:
    """A spec label (canonical spelling), or a normal marker passed through as the spec writes it."""
    for normal in opts.normal_labels:
        if raw.strip().lower() == normal.lower():
            return normal
    return resolve_label(spec, raw).label


def _image_labels(spec: DatasetSpec, opts: RasterOptions, image_rel: str, mask_rels: list[str]) -> list[str]:
    out: list[str] = []
    for rule in opts.image_labels:
        for target in [image_rel] if rule.path == "image" else mask_rels:
            m = re.search(rule.regex, target)
            if m is None or m.group("label") is None:
                continue
            raw = m.group("label")
            if rule.map is not None:
                if raw not in rule.map:
                    raise ReadError(
                        "bad_label_value",
                        f"{target}: '{raw}' is not in image_labels map ({', '.join(sorted(rule.map))})",
                    )
                raw = rule.map[raw]
            out.append(_image_label(spec, opts, raw))
    return list(dict.fromkeys(out))


def _excluded(rel: Path, patterns: list[str]) -> bool:
    posix = rel.as_posix()
    return any(fnmatch.fnmatch(posix, p) or fnmatch.fnmatch(rel.name, p) for p in patterns)


def _find_case(spec: DatasetSpec, opts: RasterOptions, finder: _MaskFinder, root: Path, image: Path) -> _Case:
    rel = image.relative_to(root).as_posix()
    case = _Case(fields={"stem": image.stem, "dir": posixpath.dirname(rel) or "."})
    if opts.name_regex is not None:
        m = re.search(opts.name_regex, rel)
        if m is None:
            case.error = ("unexpected_name", f"{rel} does not match format.options.name_regex")
            return case
        case.fields.update(m.groupdict(default=""))
    if opts.numbered_groups is not None and image.stem.isdigit():
        group = opts.numbered_groups.group_of(int(image.stem))
        if group is not None:
            case.fields["group"] = group
    for i, m in enumerate(opts.mask_patterns()):
        if m.when is not None and not fnmatch.fnmatchcase(rel, m.when):
            continue
        found = finder.find(m.pattern, case.fields)
        if not found and m.required and case.error is None:
            expected = m.pattern.format(**case.fields)
            case.error = ("missing_file", f"{raw_path(spec, expected)} (the mask of {raw_path(spec, rel)})")
        case.masks += [(i, p) for p in found]
    return case


class _MaskFinder:
    """Mask files of one pattern for one image. Wildcards in a file name are matched against a cached listing
    of the folder (BUSI: every image looks for ``{stem}_mask_*.png`` in a folder of ~1,300 files)."""

    def __init__(self, root: Path):
        self.root = root
        self._listings: dict[str, list[str]] = {}

    def find(self, pattern: str, fields: dict[str, str]) -> list[Path]:
        if not glob.has_magic(pattern_literal(pattern)):
            path = self.root / PurePosixPath(pattern.format(**fields))
            return [path] if path.is_file() else []
        rel = pattern.format(**{k: glob.escape(v) for k, v in fields.items()})
        head, tail = posixpath.split(rel)
        if not glob.has_magic(head):
            return [self.root / head / n for n in self._names(head) if fnmatch.fnmatchcase(n, tail)]
        found = (p for p in self.root.glob(rel) if p.is_file())
        return sorted(p for p in found if not is_junk(p.relative_to(self.root)))

    def _names(self, folder: str) -> list[str]:
        if folder not in self._listings:
            try:
                with os.scandir(self.root / folder) as it:
                    names = [e.name for e in it if e.is_file() and not is_junk(PurePosixPath(e.name))]
            except OSError:
                names = []
            self._listings[folder] = sorted(names)
        return self._listings[folder]


def _load_boxes_json(root: Path, name: str) -> dict[str, object]:
    try:
        data = json.loads((root / name).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ReadError("missing_file", name) from None
    except (OSError, ValueError) as e:
        raise ReadError("unreadable_table", f"{name}: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise ReadError("unreadable_table", f"{name}: expected an object keyed by image id")
    return data


def _kvasir_entry(entry: object) -> dict[str, object]:
    """One Kvasir bbox entry → meta: the size it was drawn on and its boxes as (label, x0, y0, x1, y1)."""
    if not isinstance(entry, dict):
        raise TypeError(f"expected an object, got {type(entry).__name__}")
    boxes = tuple(
        (str(b["label"]), float(b["xmin"]), float(b["ymin"]), float(b["xmax"]), float(b["ymax"]))
        for b in entry["bbox"]
    )
    return {"box_size": (int(entry["height"]), int(entry["width"])), "boxes": boxes}


# --- read --------------------------------------------------------------------------------------------------


def read(spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    raise_item_error(item)
    opts = parse_options(spec, RasterOptions)
    meta = item.meta_dict()
    image_rel = file_of(item, "image")
    img = read_image(
        existing(raw_root, image_rel),
        image_rel,
        grey=opts.grey,
        dicom_voi=opts.dicom_voi,
        max_pixels=opts.max_pixels,
    )
    frame = Frame(
        item=item,
        image=img.array,
        intensity=img.intensity,
        spacing_mm=img.spacing_mm,
        image_labels=list(meta.get("image_labels", ())),
        source_jpeg=img.source_jpeg,
    )
    mask_files = files_of(item, "mask")
    if mask_files:
        _add_masks(frame, spec, opts, raw_root, item, mask_files)
    elif "boxes" in meta:
        frame.boxes = _boxes(spec, item, frame.shape)
    elif opts.require_annotation:
        raise ReadError("missing_file", f"no mask or box for {image_rel}")
    yield frame


def _add_masks(
    frame: Frame,
    spec: DatasetSpec,
    opts: RasterOptions,
    raw_root: Path,
    item: SourceItem,
    mask_files: list[str],
) -> None:
    labels = item.meta_dict().get("mask_labels", ())
    masks: list[tuple[str, np.ndarray]] = []
    for n, rel in enumerate(mask_files):
        mask = load_mask(existing(raw_root, rel), rel)
        if mask.shape != frame.shape:
            raise ReadError("shape_mismatch", f"mask {mask.shape[:2]} != image {frame.shape} ({rel})")
        if opts.mask_mode == "threshold":
            binary = mask > opts.threshold
            if not binary.any():
                _check_not_low_coded(mask, opts.threshold, rel)
            elif opts.fill_holes:  # an outline (HC18's ellipse) encloses the structure
                binary = ndimage.binary_fill_holes(binary)
            if labels[n] is None:
                if binary.any():
                    raise ReadError(
                        "bad_label_value",
                        f"{rel}: {int(binary.sum())} foreground pixels in a mask that must be empty",
                    )
                continue
            masks.append((labels[n], binary))
        elif opts.mask_mode == "instances":
            if labels[n] is None:
                if mask.any():
                    raise ReadError("bad_label_value", f"{rel}: instance ids in a mask that must be empty")
                continue
            masks.extend((labels[n], layer) for layer in _instance_layers(mask, rel))
        elif opts.mask_mode == "ranges":
            for label, (lo, hi) in opts.ranges.items():
                masks.append((resolve_label(spec, label).label, (mask >= lo) & (mask <= hi)))
        else:
            _merge_label_map(frame, spec, opts, mask, rel)
    frame.masks = _union_by_label(masks) if opts.merge_masks else masks


def _instance_layers(mask: np.ndarray, rel: str) -> list[np.ndarray]:
    """An instance-coded mask (0 background, 1…N one object each: GlaS) as full-size layers in which no two
    instances touch, so that touching objects stay separate regions (each a connected component of its
    layer) instead of merging as they would in one binary mask."""
    if mask.dtype.kind not in "ui":
        raise ReadError("bad_label_value", f"{rel}: an instance mask must hold integer ids, not {mask.dtype}")
    layers = InstanceLayers((int(mask.shape[0]), int(mask.shape[1])))
    for value, sl in enumerate(ndimage.find_objects(mask), start=1):
        if sl is not None:
            layers.add(sl, mask[sl] == value)
    return layers.layers


def _check_not_low_coded(mask: np.ndarray, threshold: float, rel: str) -> None:
    """A mask holding exactly 0 and one value at or below the threshold is a 0/1 (0/k) coded mask, not an
    empty one: refuse it rather than silently read it as empty. Lossy noise has many values, never two."""
    values = np.unique(mask)
    if values.size == 2 and values[0] == 0:
        v = values[1].item()
        raise ReadError(
            "bad_label_value",
            f"{rel}: mask values are 0 and {v}, all at or below threshold {threshold:g}: a 0/{v}-coded mask? "
            f"(set format.options.threshold below {v})",
        )


def _union_by_label(masks: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    merged: dict[str, np.ndarray] = {}
    for label, mask in masks:
        merged[label] = mask if label not in merged else merged[label] | mask
    return list(merged.items())


def _merge_label_map(
    frame: Frame, spec: DatasetSpec, opts: RasterOptions, mask: np.ndarray, rel: str
) -> None:
    present = np.unique(mask).tolist()
    unknown = [v for v in present if v not in opts.values]
    if unknown:
        raise ReadError("bad_label_value", f"{rel}: mask values {unknown[:10]} are not in option 'values'")
    lut = np.zeros(int(max(present)) + 1, dtype=np.uint16)
    for pixel, value in opts.values.items():
        if pixel < lut.size:
            lut[pixel] = value
    mapped = lut[mask]
    frame.label_map = mapped if frame.label_map is None else np.where(mapped > 0, mapped, frame.label_map)
    by_value = spec.label_by_value()
    frame.label_values = {v: by_value[v].label for v in sorted(set(opts.values.values())) if v != 0}


def _boxes(spec: DatasetSpec, item: SourceItem, shape: tuple[int, int]) -> list[Box]:
    meta = item.meta_dict()
    size = tuple(meta.get("box_size") or shape)
    if size != shape:
        raise ReadError(
            "shape_mismatch", f"boxes drawn on {size[0]}x{size[1]}, image is {shape[0]}x{shape[1]}"
        )
    return [
        Box(resolve_label(spec, label).label, (x0, y0, x1, y1)) for label, x0, y0, x1, y1 in meta["boxes"]
    ]
