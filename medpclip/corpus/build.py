"""Build a corpus: plan work units, run them on Ray Data, finish with indexes and totals (DESIGN §5).

``build_corpus`` is the one public entry point: ``medpclip build`` and the ``build-corpus`` flow call it.

- **plan** (driver, cheap): specs → discovered items → deterministic units → a fingerprint per unit
  (spec, items, code version, parameters).
- **run**: ``ray.data.from_items(units).map(run_unit_row)``; a unit streams frames into shard writers, holds
  one case in memory, writes every file under a temporary name, and writes its marker
  ``manifests/units/{dataset}/{unit:05d}.json`` LAST. A unit whose marker carries its fingerprint is skipped.
- **finish**: ``sizes.json``, wids indexes, ``build.json`` with totals read back from the markers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from medpclip import __version__
from medpclip.corpus import schema
from medpclip.corpus.sample import SampleParams, make_sample
from medpclip.corpus.shards import (
    DEFAULT_SHARD_BYTES,
    ShardInfo,
    ShardWriter,
    atomic_write_json,
    load_json,
    write_indexes,
)
from medpclip.corpus.split import assign_split
from medpclip.frame import ReadError, SourceFile, SourceItem
from medpclip.sources import get_reader
from medpclip.specs import DatasetSpec

log = logging.getLogger("medpclip.build")

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Modules whose code decides the bytes of a sample; a change to any of them changes every fingerprint.
_OUTPUT_CODE = ("frame.py", "imaging.py", "regions.py", "specs.py", "sources", "text", "corpus")
_UNIT_ITEMS_DEFAULT = {"volumes": 4, "raster": 2000, "tables": 2000}


class BuildError(RuntimeError):
    """Nothing could run (bad arguments, no readable dataset): the CLI prints it as one line."""


@dataclass(frozen=True)
class BuildParams:
    max_side: int = 1024
    id_salt: str = "medpclip-ids-v1"
    shard_max_bytes: int = DEFAULT_SHARD_BYTES

    def sample_params(self) -> SampleParams:
        return SampleParams(max_side=self.max_side, id_salt=self.id_salt)


@dataclass(frozen=True)
class WorkUnit:
    dataset: str
    unit: int
    spec_json: str
    items: tuple[SourceItem, ...]
    raw_root: str
    out: str
    params: BuildParams
    fingerprint: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> WorkUnit:
        d = json.loads(text)
        items = tuple(
            SourceItem(
                dataset=i["dataset"],
                case_id=i["case_id"],
                files=tuple(SourceFile(**f) for f in i["files"]),
                patient_id=i["patient_id"],
                study_id=i["study_id"],
                official_split=i["official_split"],
                meta=tuple((k, v) for k, v in i["meta"]),
            )
            for i in d["items"]
        )
        return WorkUnit(
            dataset=d["dataset"],
            unit=d["unit"],
            spec_json=d["spec_json"],
            items=items,
            raw_root=d["raw_root"],
            out=d["out"],
            params=BuildParams(**d["params"]),
            fingerprint=d["fingerprint"],
        )


@dataclass
class Plan:
    units: list[WorkUnit]
    rejects: dict[str, list[dict[str, Any]]]  # dataset → plan-stage reject rows
    specs: list[DatasetSpec]


# --- plan ------------------------------------------------------------------------------------------------


def code_version() -> str:
    """Hash of the code that decides output bytes (so a code change rebuilds, a docs change does not)."""
    h = hashlib.sha256(__version__.encode())
    for name in _OUTPUT_CODE:
        p = PACKAGE_DIR / name
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(PACKAGE_DIR)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _item_fingerprint(item: SourceItem, raw_root: Path) -> list[Any]:
    """Identity of an item's inputs without reading them: relative paths and sizes (not mtimes, so a raw
    root copied elsewhere resumes instead of rebuilding). Content hashes are computed while reading."""
    sizes = []
    for f in item.files:
        try:
            sizes.append((f.path, (raw_root / f.path).stat().st_size))
        except OSError:
            sizes.append((f.path, None))
    return [item.case_id, sizes, list(item.meta), item.patient_id, item.official_split]


def plan_build(specs: list[DatasetSpec], raw_root: Path, out: Path, params: BuildParams) -> Plan:
    code = code_version()
    units: list[WorkUnit] = []
    rejects: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        rows = rejects.setdefault(spec.name, [])
        root = raw_root / spec.root
        if not root.is_dir():
            rows.append(
                _reject(
                    spec.name,
                    -1,
                    "plan",
                    "missing_root",
                    f"no folder '{spec.root}' under the raw root",
                    spec.root,
                )
            )
            continue
        reader = get_reader(spec.format.family)
        try:
            items = list(reader.discover(spec, root))
        except ReadError as e:
            rows.append(_reject(spec.name, -1, "plan", e.reason, e.detail, spec.root))
            continue
        # Cases run in key order, so the keys a unit writes ascend (DESIGN §4: members sorted by key).
        items.sort(key=lambda i: schema.key_prefix(spec.name, i.case_id))
        unique: list[SourceItem] = []
        seen: dict[str, str] = {}
        for item in items:
            prefix = schema.key_prefix(spec.name, item.case_id)
            if prefix in seen:
                rows.append(
                    _reject(
                        spec.name,
                        -1,
                        "plan",
                        "duplicate_key",
                        f"case '{item.case_id}' maps to the same key as '{seen[prefix]}'",
                        item.files[0].path,
                    )
                )
                continue
            seen[prefix] = item.case_id
            unique.append(item)
        per_unit = spec.unit_items or _UNIT_ITEMS_DEFAULT[spec.format.family]
        spec_json = spec.model_dump_json()
        for n, start in enumerate(range(0, len(unique), per_unit)):
            chunk = tuple(unique[start : start + per_unit])
            fp = hashlib.sha256(
                json.dumps(
                    [
                        spec_json,
                        code,
                        dataclasses.asdict(params),
                        [_item_fingerprint(i, raw_root) for i in chunk],
                    ],
                    sort_keys=True,
                    default=str,
                ).encode()
            ).hexdigest()
            units.append(WorkUnit(spec.name, n, spec_json, chunk, str(raw_root), str(out), params, fp))
    return Plan(units=units, rejects=rejects, specs=specs)


def _reject(
    dataset: str,
    unit: int,
    stage: str,
    reason: str,
    detail: str,
    path: str | None = None,
    key: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "unit": unit,
        "stage": stage,
        "reason": reason,
        "detail": detail,
        "path": path,
        "key": key,
        "label": label,
    }


# --- run one unit (inside a Ray task) ---------------------------------------------------------------------


def marker_path(out: Path, dataset: str, unit: int) -> Path:
    return out / "manifests" / "units" / dataset / f"{unit:05d}.json"


def _unit_outputs(out: Path, dataset: str, unit: str) -> Iterator[Path]:
    """Every file a unit writes (``unit`` may be a glob). The marker comes first: removing it first means a
    crash halfway through the removal leaves the unit 'not done', never 'done with files missing'."""
    yield from (out / "manifests" / "units" / dataset).glob(f"{unit}.json")
    yield from (out / "shards" / dataset).glob(f"*/*-{unit}-[0-9][0-9].tar")
    for kind in schema.MANIFESTS:
        yield from (out / "manifests" / kind / dataset).glob(f"{unit}.parquet")


def remove_unit_outputs(out: Path, dataset: str, unit: int) -> None:
    for p in list(_unit_outputs(out, dataset, f"{unit:05d}")):
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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_parquet(path: Path, kind: str, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    # No statistics timestamps or writer-version drift within a pinned pyarrow: same rows → same bytes.
    pq.write_table(schema.table(kind, rows), tmp, compression="zstd", write_statistics=True)
    os.replace(tmp, path)


def run_unit(unit: WorkUnit) -> dict[str, Any]:
    """Process one unit end to end; returns its marker (the unit's stats). Never raises for bad data: an
    item that cannot be read, or a frame that cannot be harmonised, becomes a reject row."""
    out = Path(unit.out)
    marker = marker_path(out, unit.dataset, unit.unit)
    if marker.is_file():
        try:
            existing = load_json(marker)
            if existing.get("fingerprint") == unit.fingerprint:
                return {**existing, "skipped": True}
        except (OSError, ValueError):
            pass  # an unreadable marker means an unfinished unit: redo it

    started = time.perf_counter()
    remove_unit_outputs(out, unit.dataset, unit.unit)
    spec = DatasetSpec.model_validate_json(unit.spec_json)
    reader = get_reader(spec.format.family)
    raw_root = Path(unit.raw_root)
    sample_params = unit.params.sample_params()
    writers: dict[str, ShardWriter] = {}
    samples: list[dict[str, Any]] = []
    region_rows: list[dict[str, Any]] = []
    source_rows: list[dict[str, Any]] = []
    reject_rows: list[dict[str, Any]] = []
    drop_counts: Counter[str] = Counter()
    n_empty = n_rejected_items = 0

    for item in unit.items:
        case_hash = schema.hash_id(unit.params.id_salt, spec.name, item.case_id)
        files = []
        try:
            for f in item.files:
                p = raw_root / f.path
                files.append(
                    {"role": f.role, "path": f.path, "sha256": _sha256_file(p), "bytes": p.stat().st_size}
                )
        except OSError as e:
            reject_rows.append(
                _reject(
                    spec.name,
                    unit.unit,
                    "read",
                    "missing_file",
                    f"{type(e).__name__}: {e.strerror or e}",
                    f.path,
                )
            )
            n_rejected_items += 1
            source_rows.extend(_source_rows(spec.name, unit.unit, case_hash, item, files, "rejected", 0))
            continue
        record_files = [{"role": f["role"], "path": f["path"], "sha256": f["sha256"]} for f in files]
        try:
            split = assign_split(spec.split, spec.name, item.patient_id, item.official_split)
            case_samples, case_regions, case_drops, empty = _harmonise_case(
                reader, spec, raw_root, item, split, record_files, sample_params, unit.unit
            )
        except ReadError as e:
            reject_rows.append(_reject(spec.name, unit.unit, "read", e.reason, e.detail, item.files[0].path))
            n_rejected_items += 1
            source_rows.extend(_source_rows(spec.name, unit.unit, case_hash, item, files, "rejected", 0))
            continue
        except Exception as e:  # noqa: BLE001 — a bug or a format we do not know must not stop the build
            log.exception("unexpected error on %s", item.files[0].path)
            reject_rows.append(
                _reject(
                    spec.name,
                    unit.unit,
                    "read",
                    "unexpected_error",
                    f"{type(e).__name__}: {e}",
                    item.files[0].path,
                )
            )
            n_rejected_items += 1
            source_rows.extend(_source_rows(spec.name, unit.unit, case_hash, item, files, "rejected", 0))
            continue
        n_empty += empty
        for drop_row in case_drops:
            drop_counts[drop_row["reason"]] += 1
        reject_rows.extend(case_drops)
        # Only now, with the whole case harmonised, do its samples reach the shards: a case is all or nothing.
        for s in case_samples:
            split_writer = writers.get(s.record["split"])
            if split_writer is None:
                split_writer = writers[s.record["split"]] = ShardWriter(
                    out,
                    f"shards/{spec.name}/{s.record['split']}",
                    s.record["split"],
                    unit.unit,
                    unit.params.shard_max_bytes,
                )
            shard = split_writer.write(s.key, s.members())
            samples.append(_sample_row(s, shard, unit.unit, case_hash))
        region_rows.extend(case_regions)
        source_rows.extend(
            _source_rows(spec.name, unit.unit, case_hash, item, files, "ok", len(case_samples))
        )

    shards: list[ShardInfo] = []
    for split_name in sorted(writers):
        shards.extend(writers[split_name].close())
    for kind, rows in (
        ("samples", samples),
        ("regions", region_rows),
        ("sources", source_rows),
        ("rejects", reject_rows),
    ):
        _write_parquet(out / "manifests" / kind / spec.name / f"{unit.unit:05d}.parquet", kind, rows)

    stats = {
        "dataset": spec.name,
        "unit": unit.unit,
        "fingerprint": unit.fingerprint,
        "n_items": len(unit.items),
        "n_items_rejected": n_rejected_items,
        "n_samples": len(samples),
        "n_regions": len(region_rows),
        "n_rejects": len(reject_rows),
        "n_empty_frames_skipped": n_empty,
        "samples_by_split": dict(sorted(Counter(s["split"] for s in samples).items())),
        "regions_by_kind": dict(sorted(Counter(r["kind"] for r in region_rows).items())),
        "region_drops": dict(sorted(drop_counts.items())),
        "shards": [dataclasses.asdict(s) for s in shards],
    }
    atomic_write_json(marker, stats)  # last: the unit is done
    return {**stats, "skipped": False, "seconds": time.perf_counter() - started}


def _harmonise_case(reader, spec, raw_root, item, split, record_files, sample_params, unit_no):
    """All frames of one case → samples sorted by key, their region rows and drop rows."""
    built = []
    drops: list[dict[str, Any]] = []
    empty = 0
    for frame in reader.read(spec, raw_root, item):
        key = schema.sample_key(spec.name, item.case_id, frame.plane, frame.slice_index)
        sample, frame_drops = make_sample(
            frame, spec, sample_params, key=key, split=split, source_files=record_files
        )
        drops.extend(
            _reject(spec.name, unit_no, "region", d.reason, d.detail, item.files[0].path, key, d.label)
            for d in frame_drops
        )
        if sample is None:
            empty += 1
            continue
        built.append(sample)
    built.sort(key=lambda s: s.key)
    for a, b in zip(built, built[1:], strict=False):
        if a.key == b.key:
            raise ReadError("duplicate_key", f"two frames of case '{item.case_id}' map to key {a.key}")
    region_rows = [_region_row(s.record, r) for s in built for r in s.record["regions"]]
    return built, region_rows, drops, empty


def _sample_row(s, shard: str, unit_no: int, case_hash: str) -> dict[str, Any]:
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
        "png_bytes": len(s.png),
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
            "path": f.path,
            "bytes": known.get(f.path, {}).get("bytes"),
            "sha256": known.get(f.path, {}).get("sha256"),
            "status": status,
            "n_samples": n_samples,
        }
        for f in item.files
    ]


def run_unit_row(row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data adapter: a row holding a unit as JSON → a row holding its stats as JSON."""
    return {"stats": json.dumps(run_unit(WorkUnit.from_json(row["unit"])), sort_keys=True)}


# --- orchestrate ------------------------------------------------------------------------------------------


def _init_ray(ray_address: str | None, num_cpus: int | None):
    import ray

    if ray.is_initialized():
        return ray, False
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": True,
        "logging_level": logging.WARNING,
    }
    if address is None:
        kwargs.update(num_cpus=num_cpus or os.cpu_count(), object_store_memory=256 * 1024 * 1024)
        # Workers import the package from the driver's environment; keep Ray from packaging the tree.
    ray.init(address=address, **kwargs)
    return ray, True


def run_units(
    units: list[WorkUnit],
    ray_address: str | None = None,
    num_cpus: int | None = None,
    on_unit: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Run units as Ray Data tasks (one block per unit); yields each unit's stats as it completes."""
    if not units:
        return
    ray, started = _init_ray(ray_address, num_cpus)
    try:
        import ray.data

        # Our own per-unit progress replaces Ray Data's bars and chatter on the console; Ray Data still logs
        # everything to its session log (ray-data.log).
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ds = ray.data.from_items([{"unit": u.to_json()} for u in units], override_num_blocks=len(units))
        # A worker killed mid-unit is retried by Ray (tasks retry system failures by default); the retry
        # removes the unit's files and rewrites them from scratch.
        ds = ds.map(run_unit_row, num_cpus=1)
        for row in ds.iter_rows():
            stats = json.loads(row["stats"])
            if on_unit is not None:
                on_unit(stats)
            yield stats
    finally:
        if started:
            ray.shutdown()


def _clean_temporaries(out: Path) -> int:
    """Temporary files left by a killed build; one build writes to one corpus at a time."""
    n = 0
    for p in out.rglob(".*.tmp-*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def finish_build(out: Path, plan: Plan, params: BuildParams) -> dict[str, Any]:
    """Plan rejects, shard indexes and build.json, all derived from what is on disk (so a resumed build
    gets the same bytes as an uninterrupted one)."""
    remove_stale_units(out, plan)
    for dataset, rows in plan.rejects.items():
        _write_parquet(out / "manifests" / "rejects" / dataset / "plan.parquet", "rejects", rows)
    markers = {(u.dataset, u.unit): load_json(marker_path(out, u.dataset, u.unit)) for u in plan.units}
    shards = [ShardInfo(**s) for m in markers.values() for s in m["shards"]]
    write_indexes(out, shards)
    datasets = []
    for spec in plan.specs:
        ms = [m for (d, _), m in sorted(markers.items()) if d == spec.name]
        split_counts: Counter[str] = Counter()
        for m in ms:
            split_counts.update(m["samples_by_split"])
        datasets.append(
            {
                "name": spec.name,
                "title": spec.title,
                "root": spec.root,
                "licence": spec.licence,
                "access": spec.access,
                "citation": spec.citation,
                "homepage": spec.homepage,
                "modality": spec.modality,
                "units": len(ms),
                "items": sum(m["n_items"] for m in ms),
                "samples": sum(m["n_samples"] for m in ms),
                "regions": sum(m["n_regions"] for m in ms),
                "rejects": sum(m["n_rejects"] for m in ms) + len(plan.rejects.get(spec.name, [])),
                "samples_by_split": dict(sorted(split_counts.items())),
                "spec_sha256": hashlib.sha256(spec.model_dump_json().encode()).hexdigest(),
            }
        )
    build = {
        "medpclip_version": __version__,
        "code_version": code_version(),
        "schema_version": schema.SCHEMA_VERSION,
        "params": {k: v for k, v in dataclasses.asdict(params).items() if k != "id_salt"},
        "id_salt_sha256": hashlib.sha256(params.id_salt.encode()).hexdigest()[:16],
        "datasets": datasets,
        "totals": {
            "samples": sum(d["samples"] for d in datasets),
            "regions": sum(d["regions"] for d in datasets),
            "rejects": sum(d["rejects"] for d in datasets),
            "shards": len(shards),
            "shard_bytes": sum(s.bytes for s in shards),
        },
    }
    atomic_write_json(out / "build.json", build)
    return build


@dataclass
class BuildResult:
    out: Path
    build: dict[str, Any]
    units_run: int
    units_skipped: int
    seconds: float


def build_corpus(
    specs: list[DatasetSpec],
    raw_root: Path,
    out: Path,
    *,
    ray_address: str | None = None,
    max_side: int = 1024,
    num_cpus: int | None = None,
    force: bool = False,
    id_salt: str | None = None,
    shard_max_bytes: int = DEFAULT_SHARD_BYTES,
    on_plan: Callable[[Plan], None] | None = None,
    on_unit: Callable[[dict[str, Any]], None] | None = None,
) -> BuildResult:
    """Build (or resume) a corpus from ``specs`` over ``raw_root`` into ``out``.

    Raises :class:`BuildError` when nothing can run. Bad items never raise: they are in ``rejects``.
    """
    started = time.perf_counter()
    raw_root, out = Path(raw_root).resolve(), Path(out).resolve()
    if not raw_root.is_dir():
        raise BuildError(f"raw root '{raw_root}' is not a directory")
    if max_side < 16:
        raise BuildError(f"--max-side must be at least 16, got {max_side}")
    params = BuildParams(
        max_side=max_side,
        id_salt=id_salt or os.environ.get("MEDPCLIP_ID_SALT") or BuildParams.id_salt,
        shard_max_bytes=shard_max_bytes,
    )
    plan = plan_build(specs, raw_root, out, params)
    if not plan.units:
        reasons = "; ".join(
            f"{d}: {r['reason']} ({r['detail']})" for d, rows in plan.rejects.items() for r in rows[:1]
        )
        raise BuildError(
            f"nothing to build: no readable items in {', '.join(s.name for s in specs)} — {reasons or 'no items found'}"
        )
    out.mkdir(parents=True, exist_ok=True)
    _clean_temporaries(out)
    if force:
        for u in plan.units:
            marker_path(out, u.dataset, u.unit).unlink(missing_ok=True)
    if on_plan is not None:
        on_plan(plan)
    ran = skipped = 0
    for stats in run_units(plan.units, ray_address, num_cpus, on_unit):
        skipped += bool(stats.get("skipped"))
        ran += not stats.get("skipped")
    build = finish_build(out, plan, params)
    return BuildResult(
        out=out, build=build, units_run=ran, units_skipped=skipped, seconds=time.perf_counter() - started
    )
