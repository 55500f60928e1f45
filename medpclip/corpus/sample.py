"""Frame → sample: the format-agnostic harmonisation of one 2D image (pure; no Ray, no files).

intensity → 8 bits, square pixels and long side ≤ max_side, annotations resized with the image, regions
(instances → RLE → box → points), names, CUIs and texts, caption, and the record of DESIGN §4.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from medpclip import imaging, regions
from medpclip.corpus.encoding import encode_image
from medpclip.corpus.schema import SCHEMA_VERSION, hash_id
from medpclip.fileio import stable_json
from medpclip.frame import Box, Frame, Point, ReadError
from medpclip.specs import DatasetSpec
from medpclip.text import prompts
from medpclip.text.kb import label_concepts


@dataclass(frozen=True)
class SampleParams:
    """Build parameters that change sample bytes (they are part of every unit's fingerprint)."""

    max_side: int = 1024
    id_salt: str = "medpclip-ids-v1"
    n_pos: int = 3
    n_neg: int = 2
    png_compress_level: int = 2  # zlib-ng: +1 % bytes against level 6, 23-28 % less deflate time


@dataclass
class Sample:
    key: str
    image: bytes
    record: dict[str, Any]
    pixel_sha256: str
    phash: int
    image_ext: str = "png"  # "png" or "jpg" (corpus/encoding.py decides)

    def members(self) -> dict[str, bytes]:
        """Tar members by extension: the image, the record and one caption (stock webdataset/open_clip)."""
        return {
            "json": stable_json(self.record),
            self.image_ext: self.image,
            "txt": self.record["caption"].encode("utf-8"),
        }


def to_uint8(frame: Frame, spec: DatasetSpec) -> tuple[np.ndarray, str]:
    """The frame's pixels as uint8 by the spec's intensity rule; returns the image and its description."""
    rule = spec.intensity
    if frame.intensity == "hu":
        if rule.kind != "ct_window":  # a spec/data mismatch (a folder mixing CT and 8-bit images), not a bug
            path = next((f.path for f in frame.item.files if f.role == "image"), frame.item.files[0].path)
            raise ReadError(
                "intensity_mismatch",
                f"{path}: the image is CT in Hounsfield units but spec '{spec.name}' has intensity.kind "
                f"{rule.kind}; set intensity.kind: ct_window (and intensity.window) or split the folder "
                "into two specs",
            )
        return imaging.window_ct(frame.image, rule.window), f"ct:{rule.window}"
    if frame.intensity == "uint8" and frame.image.dtype == np.uint8:
        return imaging.as_uint8_image(frame.image), "uint8"
    return imaging.normalize_percentile(
        frame.image, rule.low, rule.high
    ), f"percentile:{rule.low:g}-{rule.high:g}"


def _frame_regions(
    frame: Frame,
    spec: DatasetSpec,
    params: SampleParams,
    key: str,
    label_map: np.ndarray | None,
    masks: list[tuple[str, np.ndarray]],
    shape: tuple[int, int],
    scale: tuple[float, float],
) -> tuple[list[regions.Region], list[regions.Drop]]:
    """The regions of the resized frame (``label_map`` and ``masks`` already resized to ``shape``; boxes and
    points scaled by ``scale`` = (sy, sx)) under the spec's size rules."""
    (out_h, out_w), (sy, sx) = shape, scale
    return regions.extract_regions(
        shape,
        label_map=label_map,
        label_values=frame.label_values,
        masks=masks,
        mask_annotators=frame.mask_annotators,  # the resize keeps the masks' order: still one per mask
        boxes=_scaled_boxes(frame.boxes, sy, sx),
        points=_scaled_points(frame.points, sy, sx),
        min_area_px=regions.min_area(out_h, out_w, spec.regions.min_fraction, spec.regions.min_pixels),
        rng_for=_rng_factory(key),
        n_pos=params.n_pos,
        n_neg=params.n_neg,
        min_drawn_px=spec.regions.min_drawn_pixels,
        outlined=frame.outlined,
    )


def _region_records(
    found: list[regions.Region],
    drops: list[regions.Drop],
    spec: DatasetSpec,
    frame: Frame,
    modality: str,
    key: str,
    linked_report: Any,
) -> list[dict[str, Any]]:
    """The sample record's ``regions``: each region named by its spec label and KB concept, with its texts
    (label, priors, the report's sentences about it); a label the spec lacks is dropped into ``drops``."""
    by_name = spec.label_by_name()
    concepts = label_concepts(spec.labels)  # the KB concept of each label (CUI, types, priors)
    records: list[dict[str, Any]] = []
    for r in found:
        entry = by_name.get(r.label.lower())
        if entry is None:
            drops.append(
                regions.Drop(r.label, "unknown_label", f"label '{r.label}' is not in spec '{spec.name}'")
            )
            continue
        concept = concepts.get(r.label.lower())
        report_sentences, negated = prompts.region_report_evidence(linked_report, concept)
        rec: dict[str, Any] = {
            "rid": len(records),
            "label": entry.label,
            "name": entry.name,
            "category": entry.category,
            "concept_id": concept.concept_id if concept is not None else None,
            "cui": concept.cui if concept is not None else entry.cui,
            "semantic_types": list(concept.types) if concept is not None else [],
            "kind": r.kind,
            "instance": r.instance,
            "area_px": int(r.area_px),
            "bbox": [int(v) for v in r.bbox],
            "points": [[int(x), int(y)] for x, y in r.points],
            "point_labels": [int(v) for v in r.point_labels],
            "texts": prompts.region_texts(
                entry.name,
                entry.category,
                modality=modality,
                plane=frame.plane,
                body_part=spec.body_part,
                concept=concept,
                key=key,
                label=entry.label,
                report_sentences=report_sentences,
            ),
            "negated": negated,
            "annotator": r.annotator,
        }
        if r.mask_rle is not None:
            rec["mask_rle"] = r.mask_rle
        records.append(rec)
    return records


def _rng_factory(key: str):
    def rng_for(region_id: str) -> np.random.Generator:
        seed = int.from_bytes(hashlib.sha256(f"{key}/{region_id}".encode()).digest()[:8], "little")
        return np.random.default_rng(seed)

    return rng_for


def _scaled_boxes(boxes: list[Box], sy: float, sx: float) -> list[Box]:
    return [
        Box(b.label, (b.xyxy[0] * sx, b.xyxy[1] * sy, b.xyxy[2] * sx, b.xyxy[3] * sy), b.annotator)
        for b in boxes
    ]


def _scaled_points(points: list[Point], sy: float, sx: float) -> list[Point]:
    return [Point(p.label, (p.xy[0] * sx, p.xy[1] * sy), p.annotator) for p in points]


def make_sample(
    frame: Frame,
    spec: DatasetSpec,
    params: SampleParams,
    *,
    key: str,
    split: str,
    source_files: list[dict[str, str]],
) -> tuple[Sample | None, list[regions.Drop]]:
    """Harmonise one frame. The sample is None when no region is left and the spec keeps no empty images;
    the regions dropped on the way (too small, unknown label, box outside…) are returned either way."""
    h, w = frame.shape
    out_h, out_w = imaging.target_shape(h, w, frame.spacing_mm, params.max_side)
    sy, sx = out_h / h, out_w / w

    img8, intensity = to_uint8(frame, spec)
    modality = frame.modality or spec.modality  # a mixed-modality dataset sets it per frame
    img8 = imaging.resize_image(img8, (out_h, out_w))
    label_map = (
        imaging.resize_labels(frame.label_map, (out_h, out_w)) if frame.label_map is not None else None
    )
    masks = [
        (label, imaging.resize_labels(np.asarray(m, dtype=bool), (out_h, out_w))) for label, m in frame.masks
    ]

    found, drops = _frame_regions(frame, spec, params, key, label_map, masks, (out_h, out_w), (sy, sx))
    report_text, truncated = prompts.bounded_report(frame.report)
    if truncated:
        drops.append(regions.Drop("report", "report_truncated", truncated, stage="frame"))
    linked_report = prompts.link_report(report_text) if report_text else None
    region_records = _region_records(found, drops, spec, frame, modality, key, linked_report)

    if not region_records and not spec.slicing.keep_empty:
        return None, drops

    image_labels = sorted(dict.fromkeys(frame.image_labels))
    item = frame.item
    spacing = None
    if frame.spacing_mm is not None:
        spacing = [round(frame.spacing_mm[0] / sy, 6), round(frame.spacing_mm[1] / sx, 6)]
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "dataset": spec.name,
        "split": split,
        "modality": modality,
        "body_part": spec.body_part,
        "plane": frame.plane,
        "slice_index": int(frame.slice_index),
        "width": out_w,
        "height": out_h,
        "channels": 3 if img8.ndim == 3 else 1,
        "spacing_mm": spacing,
        "intensity": intensity,
        "patient_id": hash_id(params.id_salt, spec.name, item.patient_id),
        "study_id": hash_id(params.id_salt, spec.name, item.study_id) if item.study_id else None,
        "source": {
            "files": source_files,
            "frame": {
                "plane": frame.plane,
                "index": int(frame.slice_index),
                "orig_height": h,
                "orig_width": w,
            },
        },
        "caption": prompts.caption(
            modality=modality,
            plane=frame.plane,
            body_part=spec.body_part,
            region_names=[r["name"] for r in region_records],
            image_labels=image_labels,
        ),
        "image_labels": image_labels,
        "report": (
            {"text": report_text, "concepts": prompts.report_concepts(linked_report)} if report_text else None
        ),
        "regions": region_records,
    }
    pixel_sha = hashlib.sha256(np.ascontiguousarray(img8).tobytes() + str(img8.shape).encode()).hexdigest()
    # the source JPEG's own bytes only when the stored pixels are exactly its decoded pixels
    untouched = (out_h, out_w) == (h, w) and intensity == "uint8" and img8.shape == frame.image.shape
    ext, data = encode_image(
        img8,
        modality,
        png_compress_level=params.png_compress_level,
        source_jpeg=frame.source_jpeg if untouched else None,
    )
    sample = Sample(
        key=key,
        image=data,
        image_ext=ext,
        record=record,
        pixel_sha256=pixel_sha,
        phash=imaging.dhash64(img8),
    )
    return sample, drops
