"""Run one work unit (inside a Ray task): read its cases, harmonise every frame, write shards and manifests,
and write the unit's marker LAST.

Every file goes under a temporary name and is renamed when complete; a rerun of a unit first removes what an
earlier, interrupted run of it left (marker first), so a unit's files are always all from one run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medpclip.corpus import raw_staging, schema
from medpclip.corpus.plan import Plan, WorkUnit
from medpclip.corpus.sample import SampleParams, make_sample
from medpclip.corpus.schema import reject_row
from medpclip.corpus.shards import ShardInfo, ShardWriter
from medpclip.corpus.split import assign_split, split_by_rule
from medpclip.faults import fault_point
from medpclip.fileio import atomic_write_json, load_json, sha256_file
from medpclip.frame import Frame, ReadError, SourceItem
from medpclip.sources import get_reader
from medpclip.sources._common import inside_dataset
from medpclip.sources.base import Reader
from medpclip.specs import DatasetSpec
from medpclip.storage import corpus_path, is_url

log = logging.getLogger("medpclip.build")


def marker_path(out: Path, dataset: str, unit: int) -> Path:
    return out / "manifests" / "units" / dataset / f"{unit:05d}.json"


def _unit_outputs(out: Path, dataset: str, unit: str) -> Iterator[Path]:
    """Every file a unit writes (``unit`` may be a glob). The marker comes first: removing it first means a
    crash halfway through the removal leaves the unit 'not done', never 'done with files missing'."""
    yield from (out / "manifests" / "units" / dataset).glob(f"{unit}.json")
    yield from (out / "shards" / dataset).glob(f"*/*-{unit}-[0-9][0-9].tar")
    for kind in schema.MANIFESTS:
        yield from (out / "manifests" / kind / dataset).glob(f"{unit}.parquet")


def _unit_temporaries(out: Path, dataset: str, unit: str) -> Iterator[Path]:
    """Temporary files an interrupted run of the unit left (a worker killed mid-write, retried by Ray in
    another process: its temporaries carry the dead process's pid)."""
    yield from (out / "manifests" / "units" / dataset).glob(f".{unit}.json.tmp-*")
    yield from (out / "shards" / dataset).glob(f"*/.*-{unit}-[0-9][0-9].tar.tmp-*")
    for kind in schema.MANIFESTS:
        yield from (out / "manifests" / kind / dataset).glob(f".{unit}.parquet.tmp-*")


def remove_unit_outputs(out: Path, dataset: str, unit: int) -> None:
    for p in [*_unit_outputs(out, dataset, f"{unit:05d}"), *_unit_temporaries(out, dataset, f"{unit:05d}")]:
        p.unlink(missing_ok=True)


def remove_stale_units(out: Path, plan: Plan) -> int:
    """Files of units a dataset no longer has (it shrank, or its unit size changed)."""
    wanted = {(u.dataset, f"{u.unit:05d}") for u in plan.units}
    n = 0
    for spec in plan.specs:
        for p in list(_unit_outputs(out, spec.name, "[0-9][0-9][0-9][0-9][0-9]")):
            unit = p.stem.split("-")[1] if p.suffix == ".tar" else p.stem
            if (spec.name, unit) not in wanted:
                p.unlink(missing_ok=True)
                n += 1
    return n


def write_parquet(path: Path, kind: str, rows: list[dict[str, Any]]) -> None:
    if not isinstance(path, Path):  # object storage: the same bytes, one PUT (see fileio)
        buf = pa.BufferOutputStream()
        pq.write_table(schema.table(kind, rows), buf, compression="zstd", write_statistics=True)
        path.write_bytes(buf.getvalue().to_pybytes())
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    # No statistics timestamps or writer-version drift within a pinned pyarrow: same rows → same bytes.
    pq.write_table(schema.table(kind, rows), tmp, compression="zstd", write_statistics=True)
    fault_point("manifest.write")
    os.replace(tmp, path)


def run_unit(unit: WorkUnit) -> dict[str, Any]:
    """Process one unit end to end; returns its marker (the unit's stats). Never raises for bad data: an
    item that cannot be read, or a frame that cannot be harmonised, becomes a reject row.

    With ``out`` in object storage the unit is built in a temporary folder on this node's own disk, exactly
    as on POSIX, then its files are uploaded under their final names and its marker last: the marker is what
    every reader trusts (``validate`` reports files no marker lists), so a node killed mid-upload leaves a
    unit that the next run redoes, never one that looks done. Nodes share nothing but the bucket.

    With ``raw_root`` in object storage the unit's ``item.files`` are downloaded into a temporary folder on
    this node, which is the raw root the readers see, and removed after (``raw_staging.staged``)."""
    out = corpus_path(unit.out)
    if not isinstance(out, Path):
        return _run_unit_staged(unit, out)
    marker = marker_path(out, unit.dataset, unit.unit)
    done = _finished_marker(marker, unit.fingerprint)
    if done is not None:
        return {**done, "skipped": True}
    if is_url(unit.raw_root):  # the unit's own raw files, on this node's disk for as long as it runs
        with raw_staging.staged(unit.raw_root, unit.items) as local_raw:
            return run_unit(dataclasses.replace(unit, raw_root=str(local_raw)))

    started = time.perf_counter()
    remove_unit_outputs(out, unit.dataset, unit.unit)
    spec = DatasetSpec.model_validate_json(unit.spec_json)
    acc = _UnitRows(spec.name, unit.unit)
    reader, params = get_reader(spec.format.family), unit.params.sample_params()
    forced = dict(unit.forced_splits)  # duplicate overrides of this unit's patients (corpus.split)
    for item in unit.items:
        _run_item(unit, spec, item, acc, reader, params, forced)
    stats = _write_unit(unit, spec, acc)
    fault_point("unit.marker")
    atomic_write_json(marker, stats)  # last: the unit is done
    fault_point("unit.done")
    return {**stats, "skipped": False, "seconds": time.perf_counter() - started, "node": _node_id()}


def _run_unit_staged(unit: WorkUnit, out) -> dict[str, Any]:
    marker = marker_path(out, unit.dataset, unit.unit)
    done = _finished_marker(marker, unit.fingerprint)
    if done is not None:
        return {**done, "skipped": True}
    with tempfile.TemporaryDirectory(prefix="medpclip-unit-") as stage:
        stats = run_unit(dataclasses.replace(unit, out=stage))
        local = Path(stage)
        local_marker = marker_path(local, unit.dataset, unit.unit)
        remove_unit_outputs(out, unit.dataset, unit.unit)  # the marker first: the unit reads 'not done'
        files = sorted(p for p in local.rglob("*") if p.is_file() and p != local_marker)
        fs = out.fs
        for p in files:
            fs.put_file(str(p), (out / p.relative_to(local).as_posix()).path)
            fault_point("unit.upload")
        fs.put_file(str(local_marker), marker.path)  # last: the unit is done
    return stats


def _finished_marker(marker: Path, fingerprint: str) -> dict[str, Any] | None:
    """The unit's marker when it says the unit is done with these inputs; None means (re)do the unit."""
    if not marker.is_file():
        return None
    try:
        existing = load_json(marker)
    except (OSError, ValueError):
        return None  # an unreadable marker means an unfinished unit
    return existing if existing.get("fingerprint") == fingerprint else None


@dataclasses.dataclass
class _UnitRows:
    """What a unit writes, gathered item by item: shard writers per split and the four manifests' rows."""

    dataset: str
    unit: int
    writers: dict[str, ShardWriter] = dataclasses.field(default_factory=dict)
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    regions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rejects: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    drop_counts: Counter[str] = dataclasses.field(default_factory=Counter)
    n_empty: int = 0
    n_rejected_items: int = 0

    def reject_item(self, item: SourceItem, case_hash: str, files: list, reason: str, detail: str, path: str):
        """The whole case is refused: one read-stage row, its source files marked rejected."""
        self.rejects.append(reject_row(self.dataset, self.unit, "read", reason, detail, path))
        self.n_rejected_items += 1
        self.sources.extend(_source_rows(self.dataset, self.unit, case_hash, item, files, "rejected", 0))


def _checked_files(raw_root: Path, item: SourceItem) -> tuple[list[dict[str, Any]], ReadError | None, str]:
    """The item's files with their sha256 and size, up to the first one at fault: then the error
    (``outside_root``: a '..' or a symlink out of the folder; ``missing_file``; ``empty_file``) and its path."""
    files = []
    for f in item.files:
        try:
            p = inside_dataset(raw_root, f.path)
            size = p.stat().st_size
            if size == 0 and p.is_file():
                raise ReadError("empty_file", f"{f.path}: the file is empty (0 bytes)")
            files.append({"role": f.role, "path": f.path, "sha256": sha256_file(p), "bytes": size})
        except OSError as e:
            return files, ReadError("missing_file", f"{f.path}: {e.strerror or type(e).__name__}"), f.path
        except ReadError as e:
            return files, e, f.path
    return files, None, ""


def _run_item(
    unit: WorkUnit,
    spec: DatasetSpec,
    item: SourceItem,
    acc: _UnitRows,
    reader: Reader,
    params: SampleParams,
    forced: dict[str, str],
) -> None:
    """One case: its files checked, its frames harmonised, then all its samples written, or one reject."""
    raw_root = Path(unit.raw_root)
    case_hash = schema.hash_id(unit.params.id_salt, spec.name, item.case_id)
    files, error, at = _checked_files(raw_root, item)
    if error is not None:
        acc.reject_item(item, case_hash, files, error.reason, error.detail, at)
        return
    record_files = [
        {"role": f["role"], "path": schema.scrub_uids(f["path"]), "sha256": f["sha256"]} for f in files
    ]
    try:
        rule_split = split_by_rule(spec.split, spec.name, item.patient_id, item.official_split)
        patient_hash = schema.hash_id(unit.params.id_salt, spec.name, item.patient_id)
        split = assign_split(
            spec.split,
            spec.name,
            item.patient_id,
            item.official_split,
            forced.get(patient_hash),
        )
        case_samples, case_regions, case_drops, empty, n_frames = _harmonise_case(
            reader,
            spec,
            raw_root,
            item,
            split,
            record_files,
            params,
            unit.unit,
        )
    except ReadError as e:
        acc.reject_item(item, case_hash, files, e.reason, e.detail, item.files[0].path)
        return
    except Exception as e:  # noqa: BLE001 — a bug or a format we do not know must not stop the build
        log.exception("unexpected error on %s", schema.scrub_uids(item.files[0].path))
        detail = f"{type(e).__name__}: {e}"
        acc.reject_item(item, case_hash, files, "unexpected_error", detail, item.files[0].path)
        return
    acc.n_empty += empty
    for drop_row in case_drops:
        if drop_row["stage"] == "region":
            acc.drop_counts[drop_row["reason"]] += 1
    acc.rejects.extend(case_drops)
    if not case_samples:  # read fine, yet nothing to publish: said, never silently absent
        reason, detail = _nothing_kept(item, n_frames, case_drops)
        acc.reject_item(item, case_hash, files, reason, detail, item.files[0].path)
        return
    # Only now, with the whole case harmonised, do its samples reach the shards: a case is all or nothing.
    for s in case_samples:
        split_name = s.record["split"]
        writer = acc.writers.get(split_name)
        if writer is None:
            writer = acc.writers[split_name] = ShardWriter(
                Path(unit.out),
                f"shards/{spec.name}/{split_name}",
                split_name,
                unit.unit,
                unit.params.shard_max_bytes,
            )
        shard = writer.write(s.key, s.members())
        acc.samples.append(_sample_row(s, shard, unit.unit, case_hash, rule_split))
    acc.regions.extend(case_regions)
    acc.sources.extend(_source_rows(spec.name, unit.unit, case_hash, item, files, "ok", len(case_samples)))


def _write_unit(unit: WorkUnit, spec: DatasetSpec, acc: _UnitRows) -> dict[str, Any]:
    """Close the shards and write the four manifests; returns the marker's stats (not yet written)."""
    out, raw_root = Path(unit.out), Path(unit.raw_root)
    # Library messages (nibabel, Pillow) name files by absolute path: the corpus must not depend on where the
    # raw root is mounted (a copied raw root gives identical bytes), nor show it.
    for row in acc.rejects:
        row["detail"] = row["detail"].replace(f"{raw_root}/", "").replace(str(raw_root), "<raw root>")
    shards: list[ShardInfo] = []
    for split_name in sorted(acc.writers):
        shards.extend(acc.writers[split_name].close())
    for kind, rows in (
        ("samples", acc.samples),
        ("regions", acc.regions),
        ("sources", acc.sources),
        ("rejects", acc.rejects),
    ):
        write_parquet(out / "manifests" / kind / spec.name / f"{unit.unit:05d}.parquet", kind, rows)
    return {
        "dataset": spec.name,
        "unit": unit.unit,
        "fingerprint": unit.fingerprint,
        "n_items": len(unit.items),
        "n_items_rejected": acc.n_rejected_items,
        "n_samples": len(acc.samples),
        "n_regions": len(acc.regions),
        "n_rejects": len(acc.rejects),
        "n_empty_frames_skipped": acc.n_empty,
        "samples_by_split": dict(sorted(Counter(s["split"] for s in acc.samples).items())),
        "regions_by_kind": dict(sorted(Counter(r["kind"] for r in acc.regions).items())),
        "region_drops": dict(sorted(acc.drop_counts.items())),
        "shards": [dataclasses.asdict(s) for s in shards],
    }


def _node_id() -> str:
    """The Ray node this unit ran on (reported, never written: the corpus must not depend on placement)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _nothing_kept(item, n_frames: int, drops: list[dict[str, Any]]) -> tuple[str, str]:
    """Why a case that was read without error gave no sample (``no_frames`` or ``no_regions``)."""
    if n_frames == 0:
        return "no_frames", f"case '{item.case_id}': the reader found no image in it"
    dropped = Counter(d["reason"] for d in drops if d["stage"] == "region")
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items()))
    return "no_regions", (
        f"case '{item.case_id}': {n_frames} frames, none with a region"
        + (f" (regions dropped: {why})" if why else "")
        + " and slicing.keep_empty is off"
    )


def _non_finite(frame: Frame) -> str | None:
    """Why a frame's pixels cannot make a truthful image: non-finite values, which 8 bits would show as some
    arbitrary grey (NaN has no display value; inf would stretch the percentile scale)."""
    img = frame.image
    if img.dtype.kind in "fc":
        finite = np.isfinite(img)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            return f"{bad:,} of {img.size:,} pixels are NaN or infinite"
    return None


def _harmonise_case(reader, spec, raw_root, item, split, record_files, sample_params, unit_no):
    """All frames of one case → samples sorted by key, their region rows and drop rows, the number of frames
    skipped as empty and the number read. A case is all or nothing: a frame with non-finite pixels rejects
    it, and so does pixel data that holds one value everywhere (``constant_image``: a blank export, no
    image; regions drawn on it would be wrong). A single constant slice inside a volume (padding) is kept."""
    built = []
    drops: list[dict[str, Any]] = []
    empty = n_frames = 0
    values: set[float] = set()  # the value of each constant frame
    n_constant = 0
    for frame in reader.read(spec, raw_root, item):
        n_frames += 1
        problem = _non_finite(frame)
        if problem is not None:
            where = f"{frame.plane}{frame.slice_index:04d}"
            raise ReadError("non_finite_voxels", f"{item.files[0].path} frame {where}: {problem}")
        if frame.image.size and frame.image.min() == frame.image.max():
            n_constant += 1
            values.add(frame.image.flat[0].item())
        key = schema.sample_key(spec.name, item.case_id, frame.plane, frame.slice_index)
        sample, frame_drops = make_sample(
            frame, spec, sample_params, key=key, split=split, source_files=record_files
        )
        drops.extend(
            reject_row(spec.name, unit_no, d.stage, d.reason, d.detail, item.files[0].path, key, d.label)
            for d in frame_drops
        )
        if sample is None:
            empty += 1
            continue
        built.append(sample)
    if n_frames and n_constant == n_frames and len(values) == 1:
        raise ReadError(
            "constant_image",
            f"{item.files[0].path}: every pixel of all {n_frames} frame(s) is {values.pop()!r}: no image",
        )
    built.sort(key=lambda s: s.key)
    for a, b in zip(built, built[1:], strict=False):
        if a.key == b.key:
            raise ReadError("duplicate_key", f"two frames of case '{item.case_id}' map to key {a.key}")
    region_rows = [_region_row(s.record, r) for s in built for r in s.record["regions"]]
    return built, region_rows, drops, empty, n_frames


def _sample_row(s, shard: str, unit_no: int, case_hash: str, rule_split: str) -> dict[str, Any]:
    r = s.record
    spacing = r["spacing_mm"] or [None, None]
    first = r["source"]["files"][0]
    return {
        "key": r["key"],
        "dataset": r["dataset"],
        "split": r["split"],
        "modality": r["modality"],
        "body_part": r["body_part"],
        "plane": r["plane"],
        "slice_index": r["slice_index"],
        "width": r["width"],
        "height": r["height"],
        "channels": r["channels"],
        "spacing_row_mm": spacing[0],
        "spacing_col_mm": spacing[1],
        "intensity": r["intensity"],
        "patient_id": r["patient_id"],
        "study_id": r["study_id"],
        "case_id_hash": case_hash,
        "source_path": first["path"],
        "source_sha256": first["sha256"],
        "caption": r["caption"],
        "image_labels": r["image_labels"],
        "report_text": (r["report"] or {}).get("text"),
        "n_regions": len(r["regions"]),
        "pixel_sha256": s.pixel_sha256,
        "phash": s.phash,
        "split_by_rule": rule_split,
        "image_format": s.image_ext,
        "image_bytes": len(s.image),
        "shard": shard,
        "unit": unit_no,
    }


def _region_row(record: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    x0, y0, x1, y1 = r["bbox"]
    return {
        "key": record["key"],
        "rid": r["rid"],
        "dataset": record["dataset"],
        "split": record["split"],
        "modality": record["modality"],
        "body_part": record["body_part"],
        "plane": record["plane"],
        "label": r["label"],
        "name": r["name"],
        "category": r["category"],
        "concept_id": r["concept_id"],
        "cui": r["cui"],
        "semantic_types": r["semantic_types"],
        "kind": r["kind"],
        "instance": r["instance"],
        "area_px": r["area_px"],
        "area_fraction": r["area_px"] / (record["width"] * record["height"]),
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "n_points": len(r["points"]),
        "has_mask": "mask_rle" in r,
        "annotator": r["annotator"],
        "patient_id": record["patient_id"],
    }


def _source_rows(dataset, unit_no, case_hash, item, files, status, n_samples) -> list[dict[str, Any]]:
    known = {f["path"]: f for f in files}
    return [
        {
            "dataset": dataset,
            "unit": unit_no,
            "case_id_hash": case_hash,
            "role": f.role,
            "path": schema.scrub_uids(f.path),
            "bytes": known.get(f.path, {}).get("bytes"),
            "sha256": known.get(f.path, {}).get("sha256"),
            "status": status,
            "n_samples": n_samples,
        }
        for f in item.files
    ]


def run_unit_json(unit_json: str) -> str:
    """Ray task adapter: a unit as JSON → its stats as JSON (plain strings cross the object store cheaply
    and need nothing of this package to be deserialised by the driver)."""
    return json.dumps(run_unit(WorkUnit.from_json(unit_json)), sort_keys=True)
