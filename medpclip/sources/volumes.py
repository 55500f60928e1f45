"""NIfTI label-volume family: a 3D (or 4D) image and an integer label volume of the same grid per case.

Options (``spec.format.options``):

- ``layout: msd`` — a Medical Segmentation Decathlon task: cases come from the ``training`` list of
  ``dataset.json`` (option ``index``), never from a directory listing, which also keeps macOS ``._*`` files
  out. The unlabelled ``test`` list is not read: without labels a case has no region.
- ``layout: pairs`` — ``images: "<glob>"`` (relative to the dataset folder) and ``labels: "<pattern>"`` with
  ``{stem}`` (the image file name without ``.nii.gz``/``.nii``) or ``{case}`` (the case id). ``case_regex``
  (optional, group ``case``) turns a stem into the case id, e.g. ``^(?P<case>.+)_0000$`` for nnU-Net names.
- ``channel: N`` — for 4D images, the channel to read (nibabel puts channels last). Required when the
  image has more than one channel.

Reading: nibabel, labels through ``img.dataobj`` (float-stored labels are rounded), both volumes reoriented
to RAS+ with the image's affine and cut into display slices along every plane of ``spec.slicing``. The
label map stays raw: value 0 is background; every other value must be a ``value`` of a spec label.
CT images are handed over in HU (``intensity="hu"``), everything else as ``raw``.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

import nibabel as nib
import numpy as np
from pydantic import model_validator

from medpclip.frame import Frame, ReadError, SourceFile, SourceItem
from medpclip.imaging import iter_slices, reorient_canonical
from medpclip.sources._common import (
    Options,
    existing,
    file_of,
    glob_files,
    is_junk,
    make_item,
    parse_options,
    raise_item_error,
    raw_path,
    sorted_items,
    strip_dot,
)
from medpclip.specs import DatasetSpec

_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".img", ".hdr")


class VolumeOptions(Options):
    layout: Literal["msd", "pairs"] = "pairs"
    index: str = "dataset.json"
    images: str | None = None
    labels: str | None = None
    case_regex: str | None = None
    channel: int | None = None

    @model_validator(mode="after")
    def _check(self) -> VolumeOptions:
        if self.layout == "pairs" and (self.images is None or self.labels is None):
            raise ValueError("layout 'pairs' needs 'images' (a glob) and 'labels' (a pattern with {stem})")
        if self.case_regex is not None and "case" not in re.compile(self.case_regex).groupindex:
            raise ValueError("case_regex needs a named group (?P<case>...)")
        return self


def file_stem(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return PurePosixPath(name).stem


# --- discover ----------------------------------------------------------------------------------------------


def discover(spec: DatasetSpec, root: Path) -> Iterator[SourceItem]:
    opts = parse_options(spec, VolumeOptions)
    pairs = _msd_pairs(root, opts) if opts.layout == "msd" else _glob_pairs(root, opts)
    items = [
        make_item(
            spec, case, (SourceFile("image", raw_path(spec, img)), SourceFile("label", raw_path(spec, lab)))
        )
        for case, img, lab in pairs
    ]
    yield from sorted_items(items)


def _msd_pairs(root: Path, opts: VolumeOptions) -> list[tuple[str, PurePosixPath, PurePosixPath]]:
    index = root / opts.index
    try:
        meta = json.loads(index.read_text(encoding="utf-8-sig"))
        entries = [(strip_dot(e["image"]), strip_dot(e["label"])) for e in meta["training"]]
    except FileNotFoundError:
        raise ReadError("missing_file", f"{opts.index} (an MSD task is driven by it)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReadError("unreadable_table", f"{opts.index}: {type(e).__name__}: {e}") from None
    return [(file_stem(img.name), img, lab) for img, lab in entries if not is_junk(img)]


def _glob_pairs(root: Path, opts: VolumeOptions) -> list[tuple[str, PurePosixPath, PurePosixPath]]:
    assert opts.images is not None and opts.labels is not None  # checked by VolumeOptions
    label_files = {
        p.resolve() for p in glob_files(root, opts.labels.replace("{stem}", "*").replace("{case}", "*"))
    }
    out = []
    for path in glob_files(root, opts.images):
        if path.resolve() in label_files:  # images and labels in one folder: a label is not a case
            continue
        stem = file_stem(path.name)
        case = stem
        if opts.case_regex is not None:
            m = re.search(opts.case_regex, stem)
            if m is None:
                continue  # not an image of this layout (e.g. a second channel file `_0001`)
            case = m.group("case")
        label = PurePosixPath(opts.labels.format(stem=stem, case=case))
        out.append((case, PurePosixPath(path.relative_to(root).as_posix()), label))
    return out


# --- read --------------------------------------------------------------------------------------------------


def read(spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    raise_item_error(item)
    opts = parse_options(spec, VolumeOptions)
    image_rel, label_rel = file_of(item, "image"), file_of(item, "label")
    image_img = _load(raw_root, image_rel)
    label_img = _load(raw_root, label_rel)

    image = _image_array(image_img, image_rel, opts.channel)
    labels = _label_array(label_img, label_rel, spec)
    if image.shape != labels.shape:
        raise ReadError("shape_mismatch", f"image {image.shape} != label {labels.shape} ({image_rel})")
    image_axes, label_axes = nib.aff2axcodes(image_img.affine), nib.aff2axcodes(label_img.affine)
    if image_axes != label_axes:  # one of the two affines is wrong; we cannot tell which
        raise ReadError(
            "geometry_mismatch", f"image axes {''.join(image_axes)} != label axes {''.join(label_axes)}"
        )

    # Both grids are the same (checked above), so the image's affine orients both; zooms come from it too.
    image, zooms = reorient_canonical(image, image_img.affine)
    labels, _ = reorient_canonical(labels, image_img.affine)
    label_values = {v: e.label for v, e in spec.label_by_value().items() if v != 0}
    intensity = "hu" if spec.modality == "CT" else "raw"
    for plane in spec.slicing.planes:
        image_slices = iter_slices(image, zooms, plane, spec.slicing.step)
        label_slices = iter_slices(labels, zooms, plane, spec.slicing.step)
        for (index, img2d, spacing), (_, lab2d, _) in zip(image_slices, label_slices, strict=True):
            yield Frame(
                item=item,
                image=img2d,
                intensity=intensity,
                plane=plane,
                slice_index=index,
                spacing_mm=spacing,
                label_map=lab2d,
                label_values=label_values,
            )


def _load(raw_root: Path, rel: str) -> nib.spatialimages.SpatialImage:
    path = existing(raw_root, rel)
    try:
        return nib.load(path)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error) as e:
        raise ReadError("unreadable_image", f"{rel}: {type(e).__name__}: {e}") from None


def _voxels(img: nib.spatialimages.SpatialImage, rel: str, channel: int | None = None) -> np.ndarray:
    """The voxel array (scaled as stored), read once; a 4D channel is sliced before decoding the rest."""
    try:
        proxy = img.dataobj if channel is None else img.dataobj[..., channel]
        data = np.asanyarray(proxy)
    except (OSError, EOFError, ValueError, zlib.error) as e:  # truncated or corrupt data after the header
        raise ReadError("unreadable_image", f"{rel}: {type(e).__name__}: {e}") from None
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    return data


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton axes beyond the third (some writers store (x, y, z, 1))."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _image_array(img: nib.spatialimages.SpatialImage, rel: str, channel: int | None) -> np.ndarray:
    shape = _spatial(img.shape)
    if len(shape) == 4:
        if channel is None:
            raise ReadError(
                "bad_dimensions", f"{rel}: 4D image with {shape[3]} channels needs option 'channel'"
            )
        if not 0 <= channel < shape[3]:
            raise ReadError("bad_dimensions", f"{rel}: channel {channel} of {shape[3]} does not exist")
        return _voxels(img, rel, channel).reshape(shape[:3])
    if len(shape) not in (2, 3):
        raise ReadError("bad_dimensions", f"{rel}: image shape {tuple(img.shape)} is not 2D/3D/4D")
    data = _voxels(img, rel).reshape(shape)
    return data[..., None] if data.ndim == 2 else data


def _label_array(img: nib.spatialimages.SpatialImage, rel: str, spec: DatasetSpec) -> np.ndarray:
    """Label volume → smallest unsigned integer array; values must be 0 or a spec label value."""
    shape = _spatial(img.shape)
    if len(shape) not in (2, 3):
        raise ReadError("bad_dimensions", f"{rel}: label shape {tuple(img.shape)} is not 2D/3D")
    data = _voxels(img, rel).reshape(shape)
    if data.ndim == 2:
        data = data[..., None]
    if data.dtype.kind == "f":  # float-stored labels (an MSD quirk): nearest integer
        if not np.isfinite(data).all():
            raise ReadError("bad_label_value", f"{rel}: non-finite label values")
        data = np.rint(data)
    elif data.dtype.kind == "b":
        data = data.view(np.uint8)
    present = _present_values(data)
    allowed = {0, *spec.label_by_value()}
    unknown = sorted(set(present) - allowed)
    if unknown:
        raise ReadError(
            "bad_label_value", f"{rel}: values {unknown[:10]} are not label values of spec '{spec.name}'"
        )
    top = max(present, default=0)
    return data.astype(np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32, copy=False)


def _present_values(data: np.ndarray) -> list[int]:
    """Distinct values of an integer-valued array; a bincount where the range allows (far cheaper than
    sorting a few hundred million voxels)."""
    lo, hi = float(data.min()), float(data.max())
    if lo >= 0 and hi < 65536:
        counts = np.bincount(data.astype(np.uint16, copy=False).ravel(), minlength=1)
        return np.flatnonzero(counts).tolist()
    return [int(v) for v in np.unique(data)]
