"""2D image + mask files (JPEG/PNG/BMP/GIF/TIFF): one image per case, masks found by the image's stem.

Options (``spec.format.options``), paths relative to the dataset folder:

- ``images: "images/*.jpg"`` — glob or list of globs (``**`` allowed). Junk files are skipped, and so is any
  file that is some image's mask (masks may share the image folder, e.g. BUSI).
- ``exclude: ["*_mask*.png"]`` — optional fnmatch patterns (on the relative path) of files that are not images.
- ``masks: ["masks/{stem}.jpg"]`` — one or more patterns; ``{stem}`` is the image file name without its
  extension, ``{dir}`` the image's folder (relative to the dataset folder). A pattern may hold wildcards (``"{stem}_mask*.png"``: every match is one annotation). An entry
  may also be ``{pattern: ..., label: ...}`` to give that pattern's masks their own label.
- ``mask_mode: threshold`` (default) — grey value ``> threshold`` (default 127) is the structure; the label
  is the entry's ``label``, else option ``label``, else the spec's only label. Every mask file stays its
  own annotation (``Frame.masks``). Lossy (JPEG) and RGB masks are fine: they are read as grey.
- ``mask_mode: values`` — ``values: {mask pixel value: spec label value}`` (e.g. REFUGE ``{0: 2, 128: 1,
  255: 0}``); the mask becomes a label map. A pixel value not in ``values`` is ``bad_label_value``.
- ``boxes_json: kavsir_bboxes.json`` — optional Kvasir-schema boxes (``{stem: {height, width, bbox: [{label,
  xmin, ymin, xmax, ymax}]}}``), used for images that have no mask file. The boxes travel in the item's
  meta (the json is not one of the item's files: hashing it once per image would cost more than reading).
- ``grey: true`` — force one channel (greyscale datasets that ship some RGB files).
- ``require_annotation: true`` (default) — an image with neither mask nor box is ``missing_file``; set it to
  false for datasets whose unannotated images are meaningful.

Image and mask must have the same size (``shape_mismatch`` otherwise). Images come as ``uint8`` (8-bit) or
``raw`` (16-bit) arrays; nothing is resized or thresholded beyond what the mask mode says.
"""

from __future__ import annotations

import fnmatch
import glob
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medpclip.frame import Box, Frame, ReadError, SourceFile, SourceItem
from medpclip.sources._common import (
    Options,
    existing,
    file_of,
    files_of,
    glob_files,
    load_image,
    load_mask,
    make_item,
    parse_options,
    raise_item_error,
    raw_path,
    resolve_label,
    sorted_items,
)
from medpclip.specs import DatasetSpec


class MaskPattern(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pattern: str
    label: str | None = None


class RasterOptions(Options):
    images: str | list[str]
    exclude: list[str] = Field(default_factory=list)
    masks: list[str | MaskPattern] = Field(default_factory=list)
    mask_mode: Literal["threshold", "values"] = "threshold"
    threshold: float = 127
    label: str | None = None
    values: dict[int, int] = Field(default_factory=dict)
    boxes_json: str | None = None
    grey: bool = False
    require_annotation: bool = True

    @model_validator(mode="after")
    def _check(self) -> RasterOptions:
        if self.mask_mode == "values" and not self.values:
            raise ValueError("mask_mode 'values' needs 'values' (mask pixel value → spec label value)")
        for m in self.mask_patterns():
            if "{stem}" not in m.pattern:
                raise ValueError(f"mask pattern '{m.pattern}' needs {{stem}}")
        return self

    def mask_patterns(self) -> list[MaskPattern]:
        return [MaskPattern(pattern=m) if isinstance(m, str) else m for m in self.masks]


# --- discover ----------------------------------------------------------------------------------------------


def discover(spec: DatasetSpec, root: Path) -> Iterator[SourceItem]:
    opts = parse_options(spec, RasterOptions)
    _check_labels(spec, opts)
    boxes = _load_boxes_json(root, opts.boxes_json) if opts.boxes_json else {}
    candidates = [
        p for p in glob_files(root, opts.images) if not _excluded(p.relative_to(root), opts.exclude)
    ]
    masks_of = {p: _find_masks(root, opts, p) for p in candidates}
    used_as_mask = {m for found in masks_of.values() for _, m in found}
    patterns = opts.mask_patterns()
    items = []
    for path in candidates:
        if path in used_as_mask:
            continue
        files = [SourceFile("image", raw_path(spec, path.relative_to(root).as_posix()))]
        files += [
            SourceFile("mask", raw_path(spec, m.relative_to(root).as_posix())) for _, m in masks_of[path]
        ]
        meta: dict[str, object] = {}
        if masks_of[path] and opts.mask_mode == "threshold":  # the label of each mask file, in file order
            meta["mask_labels"] = tuple(_threshold_label(spec, opts, patterns[i]) for i, _ in masks_of[path])
        error = None
        if not masks_of[path] and path.stem in boxes:
            try:
                meta = _kvasir_entry(boxes[path.stem])
            except (KeyError, TypeError, ValueError) as e:
                error = ("bad_row", f"{opts.boxes_json} entry '{path.stem}': {type(e).__name__}: {e}")
        items.append(make_item(spec, path.stem, files, meta=meta, error=error))
    yield from sorted_items(items)


def _check_labels(spec: DatasetSpec, opts: RasterOptions) -> None:
    """Spec-level mistakes fail discovery once instead of every item at read."""
    try:
        if opts.mask_mode == "threshold":
            for m in opts.mask_patterns():
                _threshold_label(spec, opts, m)
        else:
            by_value = spec.label_by_value()
            bad = sorted(v for v in opts.values.values() if v != 0 and v not in by_value)
            if bad:
                raise ReadError(
                    "bad_option", f"values map to {bad}, which are not label values of spec '{spec.name}'"
                )
    except ReadError as e:
        raise ReadError("bad_option", e.detail) from None


def _threshold_label(spec: DatasetSpec, opts: RasterOptions, m: MaskPattern) -> str:
    raw = m.label or opts.label
    if raw is None:
        if len(spec.labels) != 1:
            raise ReadError("bad_option", f"mask pattern '{m.pattern}' needs a label (the spec has several)")
        return spec.labels[0].label
    return resolve_label(spec, raw).label


def _excluded(rel: Path, patterns: list[str]) -> bool:
    posix = rel.as_posix()
    return any(fnmatch.fnmatch(posix, p) or fnmatch.fnmatch(rel.name, p) for p in patterns)


def _find_masks(root: Path, opts: RasterOptions, image: Path) -> list[tuple[int, Path]]:
    """(pattern index, file) of every mask of one image, in pattern order then name order."""
    stem, folder = image.stem, image.parent.relative_to(root).as_posix()
    found = []
    for i, m in enumerate(opts.mask_patterns()):
        if glob.has_magic(m.pattern.replace("{stem}", "").replace("{dir}", "")):
            pattern = m.pattern.format(stem=glob.escape(stem), dir=glob.escape(folder))
            paths = sorted(p for p in root.glob(str(PurePosixPath(pattern))) if p.is_file())
        else:
            p = root / PurePosixPath(m.pattern.format(stem=stem, dir=folder))
            paths = [p] if p.is_file() else []
        found += [(i, p) for p in paths]
    return found


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
    image_rel = file_of(item, "image")
    image, intensity = load_image(existing(raw_root, image_rel), image_rel, grey=opts.grey)
    frame = Frame(item=item, image=image, intensity=intensity)
    mask_files = files_of(item, "mask")
    if mask_files:
        _add_masks(frame, spec, opts, raw_root, item, mask_files)
    elif "boxes" in item.meta_dict():
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
    for n, rel in enumerate(mask_files):
        mask = load_mask(existing(raw_root, rel), rel)
        if mask.shape != frame.shape:
            raise ReadError("shape_mismatch", f"mask {mask.shape[:2]} != image {frame.shape} ({rel})")
        if opts.mask_mode == "threshold":
            frame.masks.append((labels[n], mask > opts.threshold))
        else:
            _merge_label_map(frame, spec, opts, mask, rel)


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
