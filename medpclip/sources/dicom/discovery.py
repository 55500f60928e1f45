"""Discovery: DICOM headers → series, enhanced files and single images as items, annotations attached."""

from __future__ import annotations

import itertools
import multiprocessing
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from pydicom.dataset import Dataset

from medpclip.frame import ReadError, SourceFile, SourceItem
from medpclip.sources._common import glob_files, make_item, parse_options, raw_path, sorted_items
from medpclip.sources.dicom.files import DICOM_SUFFIXES, is_dicom_path, read_dataset
from medpclip.sources.dicom.geometry import SliceGeo, slice_geo
from medpclip.sources.dicom.options import DicomOptions
from medpclip.specs import DatasetSpec

_NON_IMAGE_MODALITIES = frozenset({"SR", "RTPLAN", "RTDOSE", "RTRECORD", "PR", "KO", "REG", "DOC", "ECG"})

_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"

_RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

# Discovery parses every file's header (pydicom, pure Python: ~0.5 ms for a small CT slice header, more for
# real ones), so an archive of a million files is minutes to hours on one core: ``discovery_workers``
# processes share them (threads would hold the GIL), in tasks of this many files.
_FILES_PER_TASK = 500


@dataclass
class _Header:
    rel: PurePosixPath
    sop_class: str
    sop_uid: str
    modality: str
    series_uid: str
    study_uid: str
    patient_id: str
    frame_of_ref: str
    n_frames: int
    shape: tuple[int, int]
    kind: str  # image | seg | rtstruct | other
    localizer: bool
    burned_in: bool  # BurnedInAnnotation YES: identifying text in the pixels
    geo: SliceGeo | None
    enhanced_geo: bool
    ref_series: tuple[str, ...] = ()
    ref_sops: tuple[str, ...] = ()


def _is_image_sop(ds: Dataset) -> bool:
    uid = ds.get("SOPClassUID")
    name = getattr(uid, "name", "") if uid is not None else ""
    return "Image Storage" in name or "PixelData" in ds


def _header(ds: Dataset, rel: PurePosixPath) -> _Header:
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if sop_class == _SEG_SOP_CLASS or modality == "SEG":
        kind = "seg"
    elif sop_class == _RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        kind = "rtstruct"
    elif modality in _NON_IMAGE_MODALITIES or not _is_image_sop(ds):
        kind = "other"
    else:
        kind = "image"
    ref_series: list[str] = []
    ref_sops: list[str] = []
    if kind == "seg":
        for item in ds.get("ReferencedSeriesSequence") or []:
            if "SeriesInstanceUID" in item:
                ref_series.append(str(item.SeriesInstanceUID))
            for inst in item.get("ReferencedInstanceSequence") or []:
                ref_sops.append(str(inst.get("ReferencedSOPInstanceUID", "")))
    elif kind == "rtstruct":
        for fr in ds.get("ReferencedFrameOfReferenceSequence") or []:
            for study in fr.get("RTReferencedStudySequence") or []:
                for series in study.get("RTReferencedSeriesSequence") or []:
                    if "SeriesInstanceUID" in series:
                        ref_series.append(str(series.SeriesInstanceUID))
                    for img in series.get("ContourImageSequence") or []:
                        ref_sops.append(str(img.get("ReferencedSOPInstanceUID", "")))
    n_frames = int(ds.get("NumberOfFrames") or 1)
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return _Header(
        rel=rel,
        sop_class=sop_class,
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        modality=modality,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "") or ""),
        frame_of_ref=str(ds.get("FrameOfReferenceUID", "")),
        n_frames=n_frames,
        shape=(int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)),
        kind=kind,
        localizer="LOCALIZER" in image_type,
        burned_in=str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES",
        geo=slice_geo(ds) if n_frames == 1 else None,
        enhanced_geo=n_frames > 1 and slice_geo(ds, 0) is not None,
        ref_series=tuple(s for s in ref_series if s),
        ref_sops=tuple(s for s in ref_sops if s),
    )


def _scan_headers(
    spec: DatasetSpec, root: Path, rels: list[str], workers: int
) -> list[_Header | tuple[str, str] | None]:
    """Each file's header, its read error, or None (not DICOM), in the order of ``rels`` whatever the number
    of processes, so discovery's result never depends on it."""
    if workers <= 1 or len(rels) <= _FILES_PER_TASK:
        return _read_headers(spec, root, rels)
    chunks = [rels[i : i + _FILES_PER_TASK] for i in range(0, len(rels), _FILES_PER_TASK)]
    # spawn: discovery may run in a process that already has threads (a Ray driver, a Prefect task)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
        parts = pool.map(_read_headers, itertools.repeat(spec), itertools.repeat(root), chunks)
        return list(itertools.chain.from_iterable(parts))


def _read_headers(spec: DatasetSpec, root: Path, rels: list[str]) -> list[_Header | tuple[str, str] | None]:
    """Header-only reads of ``rels`` (one task of the pool, or all of them). Errors travel as (reason,
    detail): a ReadError does not survive pickling (its constructor takes two arguments)."""
    out: list[_Header | tuple[str, str] | None] = []
    for rel in rels:
        path = root / rel
        if not is_dicom_path(path):
            out.append(None)
            continue
        try:
            ds = read_dataset(path, raw_path(spec, PurePosixPath(rel)), header_only=True)
        except ReadError as e:
            out.append((e.reason, e.detail))
            continue
        out.append(_header(ds, PurePosixPath(rel)))
    return out


def _case_stem(rel: PurePosixPath) -> str:
    return (rel.parent / rel.stem).as_posix() if rel.suffix.lower() in DICOM_SUFFIXES else rel.as_posix()


def discover(spec: DatasetSpec, root: Path) -> Iterator[SourceItem]:
    opts = parse_options(spec, DicomOptions)
    headers, items = _headers_under(spec, root, opts)
    units = _units(opts, [h for h in headers if h.kind == "image"])
    annotations = [h for h in headers if h.kind in ("seg", "rtstruct")]
    attached, rejected = _attach_annotations(spec, units, annotations)
    items += rejected
    for n, (kind, case_id, group) in enumerate(units):
        items.append(_unit_item(spec, root, opts, kind, case_id, group, attached.get(n, [])))
    yield from sorted_items(items)


# a unit of work: a volume (series / enhanced file) or a single image file, as (kind, case_id, headers)
_Unit = tuple[str, str, list[_Header]]


def _headers_under(
    spec: DatasetSpec, root: Path, opts: DicomOptions
) -> tuple[list[_Header], list[SourceItem]]:
    """The headers of the DICOM files under ``files``, and an item carrying its error per unreadable file."""
    headers: list[_Header] = []
    items: list[SourceItem] = []
    rels = [path.relative_to(root).as_posix() for path in glob_files(root, opts.files)]
    for rel, got in zip(rels, _scan_headers(spec, root, rels, opts.discovery_workers), strict=True):
        if got is None:  # not a DICOM file
            continue
        if isinstance(got, tuple):  # (reason, detail): an unreadable file is an item that carries its error
            path = raw_path(spec, PurePosixPath(rel))
            items.append(
                make_item(spec, _case_stem(PurePosixPath(rel)), [SourceFile("image", path)], error=got)
            )
            continue
        if got.kind == "other" or (got.localizer and not opts.keep_localizers):
            continue
        headers.append(got)
    return headers, items


def _units(opts: DicomOptions, images: list[_Header]) -> list[_Unit]:
    """Image headers grouped into units: a series of a volume modality with slice geometry is one volume
    (case id = its folder when the folder holds only it), an enhanced multi-frame file is one, and any other
    file is an image of its own."""
    volume_modalities = {m.upper() for m in opts.volume_modalities}
    by_series: dict[str, list[_Header]] = defaultdict(list)
    for h in images:
        group_key = h.series_uid or f"file:{h.rel}"
        if opts.split_series_by_folder and h.series_uid:
            group_key = f"{h.series_uid}|{h.rel.parent.as_posix()}"
        by_series[group_key].append(h)
    folder_series: dict[PurePosixPath, set[str]] = defaultdict(set)
    for uid, group in by_series.items():
        for h in group:
            folder_series[h.rel.parent].add(uid)

    units: list[_Unit] = []
    for _group_key, group in sorted(by_series.items()):
        group.sort(key=lambda h: h.rel.as_posix())
        first = group[0]
        if _is_volume(group, volume_modalities):
            folders = {h.rel.parent for h in group}
            folder = folders.pop() if len(folders) == 1 else None
            if folder is not None and len(folder_series[folder]) == 1 and folder != PurePosixPath("."):
                case_id = folder.as_posix()
            elif folder is not None and folder != PurePosixPath("."):
                case_id = f"{folder.as_posix()}/{first.series_uid}"
            else:
                case_id = first.series_uid
            units.append(("series", case_id, group))
        elif (
            len(group) == 1
            and first.n_frames > 1
            and first.enhanced_geo
            and first.modality in volume_modalities
        ):
            units.append(("enhanced", _case_stem(first.rel), group))
        else:
            units.extend(("image", _case_stem(h.rel), [h]) for h in group)
    return units


def _attach_annotations(
    spec: DatasetSpec, units: list[_Unit], annotations: list[_Header]
) -> tuple[dict[int, list[_Header]], list[SourceItem]]:
    """SEG and RTSTRUCT files attached to the units they reference (by SOP instance, else series, else an
    RTSTRUCT's one frame of reference); one that references nothing here is an item carrying its error."""
    unit_of_sop: dict[str, int] = {}
    unit_of_series: dict[str, int] = {}
    for n, (_, _, group) in enumerate(units):
        for h in group:
            unit_of_sop[h.sop_uid] = n
            unit_of_series.setdefault(h.series_uid, n)
    attached: dict[int, list[_Header]] = defaultdict(list)
    rejected: list[SourceItem] = []
    for a in sorted(annotations, key=lambda h: h.rel.as_posix()):
        targets = {unit_of_sop[s] for s in a.ref_sops if s in unit_of_sop}
        if not targets:
            targets = {unit_of_series[s] for s in a.ref_series if s in unit_of_series}
        if not targets and a.kind == "rtstruct" and a.frame_of_ref:
            same_for = {
                n for n, (k, _, g) in enumerate(units) if k != "image" and g[0].frame_of_ref == a.frame_of_ref
            }
            targets = same_for if len(same_for) == 1 else set()
        error = None
        if not targets:
            refs = ", ".join(a.ref_series or a.ref_sops or (a.frame_of_ref,)) or "nothing"
            error = ("missing_file", f"{a.rel}: the {a.kind.upper()} references {refs}, not under the folder")
        elif a.kind == "rtstruct" and any(units[t][0] == "image" for t in targets):
            error = ("unmatched_annotation", f"{a.rel}: RTSTRUCT contours need a volume with geometry")
        if error is not None:
            rejected.append(
                make_item(
                    spec,
                    _case_stem(a.rel),
                    [SourceFile(a.kind, raw_path(spec, a.rel))],
                    fields=_fields(a),
                    study_id=a.study_uid or None,
                    meta={"kind": "annotation"},
                    error=error,
                )
            )
            continue
        for t in sorted(targets):
            attached[t].append(a)
    return attached, rejected


def _unit_item(
    spec: DatasetSpec,
    root: Path,
    opts: DicomOptions,
    kind: str,
    case_id: str,
    group: list[_Header],
    annotations: list[_Header],
) -> SourceItem:
    """The item of one unit: its image files, its annotation files (attached, or per-slice mask files)."""
    files = [SourceFile("image", raw_path(spec, h.rel)) for h in group]
    files += [SourceFile(a.kind, raw_path(spec, a.rel)) for a in annotations]
    meta: dict[str, object] = {"kind": kind}
    error = None
    burned = [h for h in group if h.burned_in]
    if burned:  # PS3.15 Annex E: pixels with burned-in text may identify the patient; never published
        error = (
            "burned_in_annotation",
            f"{raw_path(spec, burned[0].rel)}: BurnedInAnnotation is YES ({len(burned)} of {len(group)} "
            "files): text in the pixels may identify the patient",
        )
    elif kind == "series" and opts.masks:
        found = _series_mask_files(spec, root, opts, group)
        if found is not None:
            entry, mask_files, error = found
            files += [SourceFile("mask", raw_path(spec, m)) for m in mask_files]
            meta["masks"] = entry
    return make_item(
        spec,
        case_id,
        files,
        fields=_fields(group[0]),
        study_id=group[0].study_uid or None,
        meta=meta,
        error=error,
    )


def natural_key(name: str) -> tuple:
    """``img2.png`` before ``img10.png``: digit runs compare as numbers (CHAOS mask order, torch-em's natsort)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


def _series_mask_files(
    spec: DatasetSpec, root: Path, opts: DicomOptions, group: list[_Header]
) -> tuple[int, list[PurePosixPath], tuple[str, str] | None] | None:
    """(entry index, mask files in natural order, error) for a series that a ``masks`` entry matches."""
    folder = group[0].rel.parent.as_posix()
    for index, entry in enumerate(opts.masks):
        m = re.search(entry.series, folder)
        if m is None:
            continue
        fields = {k: v or "" for k, v in m.groupdict().items()}
        try:
            mask_dir = posixpath.normpath(entry.folder.format(folder=folder, **fields))
        except (KeyError, IndexError, ValueError) as e:
            return index, [], ("bad_option", f"masks[{index}].folder '{entry.folder}': no field {e}")
        if mask_dir.startswith(".."):
            return index, [], ("bad_option", f"masks[{index}].folder leaves the dataset folder: {mask_dir}")
        base = root / mask_dir
        found = glob_files(base, entry.files) if base.is_dir() else []
        rels = sorted(
            (PurePosixPath(mask_dir) / p.relative_to(base).as_posix() for p in found),
            key=lambda r: natural_key(r.as_posix()),
        )
        error = None
        if not rels and entry.required:
            error = ("missing_file", f"no mask files {raw_path(spec, mask_dir)}/{entry.files} for {folder}")
        return index, rels, error
    return None


def _fields(h: _Header) -> dict[str, object]:
    return {
        "PatientID": h.patient_id,
        "StudyInstanceUID": h.study_uid,
        "SeriesInstanceUID": h.series_uid,
        "folder": h.rel.parts[0] if len(h.rel.parts) > 1 else "",
    }


def _is_volume(group: list[_Header], volume_modalities: set[str]) -> bool:
    first = group[0]
    if first.modality not in volume_modalities or not first.series_uid:
        return False
    if any(h.n_frames != 1 or h.geo is None for h in group):
        return False
    return all(
        h.shape == first.shape and np.abs(h.geo.orientation - first.geo.orientation).max() <= 1e-3
        for h in group
    )
