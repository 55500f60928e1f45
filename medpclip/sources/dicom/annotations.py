"""Annotations on a stack: SEG frames, RTSTRUCT contours (polygon fill), mask files (CHAOS PNGs)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medpclip.frame import ReadError, SourceItem
from medpclip.sources._common import existing, files_of, load_mask, resolve_label
from medpclip.sources._shapes import fill_polygon
from medpclip.sources.dicom.files import as_float, decode_pixels, read_dataset
from medpclip.sources.dicom.functional_groups import functional_group
from medpclip.sources.dicom.geometry import Geometry, as_vector
from medpclip.sources.dicom.options import DicomOptions, SeriesMasks
from medpclip.specs import DatasetSpec


@dataclass
class Channels:
    """Named binary masks over a (k, rows, cols) stack, bit-packed 8 per byte; ``annotators`` says who drew
    each channel where the source says (LIDC: one channel per reader), else None."""

    shape: tuple[int, int, int]
    labels: list[str] = field(default_factory=list)
    planes: list[np.ndarray] = field(default_factory=list)
    annotators: list[str | None] = field(default_factory=list)

    def add(self, label: str, annotator: str | None = None) -> int:
        self.labels.append(label)
        self.annotators.append(annotator)
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


MaskChannels = Channels  # public name for sibling readers (sources.contours)


class Labeller:
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
    src_frames: tuple[int, ...]  # 0-based frames of ``sop`` the mask applies to, each; () when none is named
    position: np.ndarray | None
    mask: np.ndarray


def _seg_frames(ds: Dataset, rel: str, max_pixels: int) -> list[_SegFrame]:
    arr = decode_pixels(ds, rel, max_pixels)
    if arr.ndim == 2:
        arr = arr[None]
    # NumberOfFrames decides how many frames there are; pydicom's liver_1frame.dcm keeps three per-frame items
    # for its single stored frame, so the per-frame items are read for the stored frames only.
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        top = as_float(ds.get("MaximumFractionalValue"), 255.0)
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
        ident = functional_group(ds, f, "SegmentIdentificationSequence")
        segment = int(ident.ReferencedSegmentNumber) if ident is not None else 1
        sop, src_frames = None, ()
        deriv = functional_group(ds, f, "DerivationImageSequence")
        if deriv is not None and deriv.get("SourceImageSequence"):
            src = deriv.SourceImageSequence[0]
            sop = str(src.get("ReferencedSOPInstanceUID", "")) or None
            frames = src.get("ReferencedFrameNumber")
            # Several values: the SEG frame was derived from several source frames and applies to each one.
            values = frames if isinstance(frames, MultiValue | list | tuple) else [frames]
            numbers = [int(v) - 1 for v in values if v is not None and str(v).strip()]
            src_frames = tuple(dict.fromkeys(numbers))
        pp = functional_group(ds, f, "PlanePositionSequence")
        position = as_vector(pp.get("ImagePositionPatient"), 3) if pp is not None else None
        out.append(_SegFrame(segment, sop, src_frames, position, masks[f]))
    return out


def _contour_points(contour: Dataset) -> np.ndarray | None:
    data = contour.get("ContourData")
    if data is None or len(data) < 9 or len(data) % 3:
        return None
    return np.asarray([float(v) for v in data], dtype=np.float64).reshape(-1, 3)


def add_rtstruct(
    ds: Dataset, rel: str, geo: Geometry, sop_to_k: dict[tuple[str, int | None], int], ch: Channels, label_of
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
            ch.set(c, k, fill_polygon(r, cc, geo.shape), xor=True)


def add_seg(
    ds: Dataset,
    rel: str,
    geo: Geometry | None,
    sop_to_k: dict[tuple[str, int | None], int],
    shape: tuple[int, int],
    ch: Channels,
    label_of,
    segment_mode: str,
    max_pixels: int,
    all_frames: dict[str, range] | None = None,
) -> None:
    """SEG frames → channels, each on the stack index its (SOP, frame) reference or its position gives.
    ``all_frames``: the stack indices of each multi-frame image whose frames are no volume, by SOP UID."""
    names = _segment_names(ds, segment_mode)
    channel: dict[int, int | None] = {}
    whole: set[int] = set()  # segments with a frame on every frame of an image
    for fr in _seg_frames(ds, rel, max_pixels):
        if fr.segment not in channel:
            raw = names.get(fr.segment, f"segment {fr.segment}")
            label = label_of(raw)
            channel[fr.segment] = None if label is None else ch.add(label)
        c = channel[fr.segment]
        if c is None:
            continue
        if fr.mask.shape != shape:
            raise ReadError("shape_mismatch", f"{rel}: SEG frame {fr.mask.shape} != image {shape}")
        ks = _seg_frame_slices(fr, sop_to_k)
        if not ks and fr.sop and len(fr.src_frames) > 1:
            # Placing it by position would put it on one of its frames and lose the others without a reject.
            raise ReadError(
                "unmatched_annotation",
                f"{rel}: a SEG frame references frames {', '.join(str(n + 1) for n in fr.src_frames)} of one "
                "image, not all of which are images of the case",
            )
        if not ks and fr.position is not None and geo is not None:
            k = geo.slice_at(fr.position)
            ks = [k] if k is not None else []
        if not ks and not fr.src_frames and all_frames and fr.sop in all_frames:
            # PS3.3 Table 10-3: ReferencedFrameNumber is absent from a reference to a multi-frame image when
            # it applies to all frames. Two such frames of one segment would each claim every frame.
            if fr.segment in whole:
                raise ReadError(
                    "unmatched_annotation",
                    f"{rel}: several frames of segment {fr.segment} reference all frames of one multi-frame "
                    "image; each needs its ReferencedFrameNumber",
                )
            whole.add(fr.segment)
            ks = list(all_frames[fr.sop])
        if not ks:
            raise ReadError("unmatched_annotation", f"{rel}: a SEG frame matches no image of the case")
        if fr.mask.any():
            for k in ks:
                ch.set(c, k, fr.mask)


def _seg_frame_slices(fr: _SegFrame, sop_to_k: dict[tuple[str, int | None], int]) -> list[int]:
    """The stack indices a SEG frame's reference names: one per referenced frame, or the image's own (a
    single-frame image, also when a frame number is given for it); [] when any of them is not in the case."""
    if not fr.sop:
        return []
    ks = []
    for n in fr.src_frames or (None,):
        k = sop_to_k.get((fr.sop, n))
        if k is None:
            k = sop_to_k.get((fr.sop, None))
        if k is None:
            return []
        ks.append(k)
    return list(dict.fromkeys(ks))


def annotation_datasets(raw_root: Path, item: SourceItem) -> list[tuple[str, str, Dataset]]:
    out = []
    for role in ("seg", "rtstruct"):
        for rel in files_of(item, role):
            out.append((role, rel, read_dataset(existing(raw_root, rel), rel)))
    return out


def add_mask_files(
    spec: DatasetSpec, entry: SeriesMasks, raw_root: Path, item: SourceItem, channels: Channels
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
