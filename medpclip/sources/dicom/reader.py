"""The family's ``read``: series, enhanced multi-frame and single-image items → Frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medpclip.frame import Frame, Intensity, ReadError, SourceItem
from medpclip.sources._common import existing, files_of, parse_options, raise_item_error
from medpclip.sources.dicom.annotations import (
    Channels,
    Labeller,
    add_mask_files,
    add_rtstruct,
    add_seg,
    annotation_datasets,
)
from medpclip.sources.dicom.files import decode_pixels, frame_modality, read_dataset
from medpclip.sources.dicom.functional_groups import frame_view
from medpclip.sources.dicom.geometry import Geometry, geometry_of, pixel_spacing, slice_geo
from medpclip.sources.dicom.intensity import frame_images, rescale_of
from medpclip.sources.dicom.options import DicomOptions
from medpclip.sources.dicom.series import SeriesVolume, SliceStack, load_series, volume_frames
from medpclip.specs import DatasetSpec


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


def _read_series(spec: DatasetSpec, opts: DicomOptions, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    vol = load_series(raw_root, item, max_pixels=opts.max_pixels)
    yield from _volume_frames(
        spec, opts, raw_root, item, vol.stack, vol.geo, vol.sop_to_k, vol.intensity, vol.modality
    )


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
    channels = Channels(stack.shape)
    label_of = Labeller(spec, opts)
    for role, rel, ds in annotation_datasets(raw_root, item):
        if role == "seg":
            add_seg(
                ds, rel, geo, sop_to_k, geo.shape, channels, label_of, opts.segment_label, opts.max_pixels
            )
        else:
            add_rtstruct(ds, rel, geo, sop_to_k, channels, label_of)
    entry = item.meta_dict().get("masks")
    if entry is not None:
        add_mask_files(spec, opts.masks[int(entry)], raw_root, item, channels)
    vol = SeriesVolume(stack, geo, sop_to_k, intensity, modality)
    yield from volume_frames(spec, item, vol, channels)


def _read_enhanced(
    spec: DatasetSpec, opts: DicomOptions, raw_root: Path, item: SourceItem
) -> Iterator[Frame]:
    (rel,) = files_of(item, "image")
    ds = read_dataset(existing(raw_root, rel), rel)
    stored = decode_pixels(ds, rel, opts.max_pixels)
    n = int(ds.get("NumberOfFrames") or 1)
    frames = stored if n > 1 else stored[None]
    geos = [slice_geo(ds, f) for f in range(frames.shape[0])]
    ct = str(ds.get("Modality", "")).upper() == "CT"
    try:
        if any(g is None for g in geos):
            raise ReadError("inconsistent_series", f"{rel}: frames without plane position/orientation")
        geo, order = geometry_of(geos, rel)
    except ReadError as e:
        # Not one volume (several stacks, phases or echoes): every frame as a native 2D image, in file order.
        yield from _frames_as_images(spec, opts, raw_root, item, rel, ds, stored, e.detail)
        return
    views = [frame_view(ds, f) for f in order]
    rescale = [rescale_of(v) for v in views]
    stack = SliceStack(geo.depth, geo.shape, rescale)
    sop = str(ds.get("SOPInstanceUID", ""))
    sop_to_k: dict[tuple[str, int | None], int] = {}
    for k, f in enumerate(order):
        stack.put(k, frames[f], views[k])
        sop_to_k[(sop, f)] = k
    yield from _volume_frames(
        spec, opts, raw_root, item, stack.data, geo, sop_to_k, "hu" if ct else "raw", frame_modality(ds)
    )


def _read_image(spec: DatasetSpec, opts: DicomOptions, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    (rel,) = files_of(item, "image")
    ds = read_dataset(existing(raw_root, rel), rel)
    stored = decode_pixels(ds, rel, opts.max_pixels)
    yield from _frames_as_images(spec, opts, raw_root, item, rel, ds, stored, f"{rel} is read as 2D images")


def _frames_as_images(
    spec: DatasetSpec,
    opts: DicomOptions,
    raw_root: Path,
    item: SourceItem,
    rel: str,
    ds: Dataset,
    stored: np.ndarray,
    no_volume: str,
) -> Iterator[Frame]:
    """Every frame of one file as a native 2D image, in file order, with the masks of its SEGs: placed by the
    (SOP, frame) they reference, as there is no volume to place them by position (``no_volume`` says why)."""
    n = int(ds.get("NumberOfFrames") or 1)
    frames = stored if n > 1 else stored[None]
    shape = tuple(frames.shape[1:3])
    sop = str(ds.get("SOPInstanceUID", ""))
    sop_to_k = {(sop, f if n > 1 else None): f for f in range(frames.shape[0])}
    if n == 1:
        sop_to_k[(sop, 0)] = 0
    all_frames = {sop: range(frames.shape[0])} if n > 1 else None
    channels = Channels((frames.shape[0], *shape))
    label_of = Labeller(spec, opts)
    for role, arel, ads in annotation_datasets(raw_root, item):
        if role == "seg":
            add_seg(
                ads, arel, None, sop_to_k, shape, channels, label_of, opts.segment_label, opts.max_pixels,
                all_frames,
            )  # fmt: skip
        else:  # contours are placed by slice geometry (discovery refuses them on single images up front)
            raise ReadError("unmatched_annotation", f"{arel}: RTSTRUCT contours need a volume; {no_volume}")
    for f, (img, intensity) in enumerate(frame_images(ds, stored, opts.voi)):
        if f % spec.slicing.step:
            continue
        masks = []
        for c, label in enumerate(channels.labels):
            m = (channels.planes[c // 8][f] >> (c % 8)) & 1
            if m.any():
                masks.append((label, m.astype(bool)))
        yield Frame(
            item=item, image=img, intensity=intensity, plane="im", slice_index=f, spacing_mm=pixel_spacing(ds, f),
            masks=masks, modality=frame_modality(ds),
        )  # fmt: skip
