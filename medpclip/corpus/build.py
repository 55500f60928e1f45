"""Build a corpus: plan, run the units as Ray tasks, finish with indexes and totals (DESIGN §5).

``build_corpus`` is the one public entry point of the library: ``medpclip build``, ``python -m
medpclip.jobs.build`` (for ``ray job submit``) and the ``build-corpus`` Prefect flow all run it, the flow
through its three steps (``prepare_build``, ``run_units``, ``finish_build``) so that it can report each.

- **plan** (``corpus.plan``, driver, cheap): specs → items → units with fingerprints.
- **run**: one Ray task per unit (``corpus.unit.run_unit_json``), a bounded number in flight, results taken
  as they finish (``ray.wait``); finished units return at once.
- **settle** (``settle_splits``): exact duplicates (``pixel_sha256``) found in the samples manifests must not
  span two splits; the patients to move are written to ``manifests/split_overrides.json``, an input of the
  fingerprints of their units, and only those units run again (``corpus.split``).
- **finish**: ``sizes.json``, wids indexes, ``build.json``, all derived from the unit markers on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medpclip import __version__
from medpclip.corpus import schema
from medpclip.corpus.plan import (
    BuildError,
    BuildParams,
    Plan,
    WorkUnit,
    code_version,
    plan_build,
)
from medpclip.corpus.shards import DEFAULT_SHARD_BYTES, ShardInfo, write_indexes
from medpclip.corpus.split import (
    Overrides,
    derive_overrides,
    load_overrides,
    overrides_document,
    overrides_path,
)
from medpclip.corpus.unit import marker_path, remove_stale_units, run_unit_json, write_parquet
from medpclip.faults import fault_point
from medpclip.fileio import atomic_write_json, load_json
from medpclip.qa.report import write_report
from medpclip.raysession import ray_session
from medpclip.specs import DatasetSpec
from medpclip.storage import (
    NothingThere,
    StorageError,
    check_location,
    corpus_path,
    filesystem,
    is_url,
    location_str,
)

_IN_FLIGHT_PER_CPU = 2  # enough that a CPU never waits on the driver for its next unit

__all__ = [
    "BUILD_EXEMPT",
    "BUILD_OPTIONS",
    "BuildError",
    "BuildParams",
    "BuildResult",
    "Plan",
    "build_corpus",
    "finish_build",
    "prepare_build",
    "run_units",
    "settle_splits",
]


def run_units(
    units: list[WorkUnit], on_unit: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Run units as Ray tasks (one CPU each) on the Ray this process is connected to; yields each unit's
    stats as it completes, in completion order. Finished units (marker = fingerprint) return at once.

    Plain tasks, not Ray Data: a unit is coarse (a volume, thousands of images) and returns a small dict, so
    a dataset pipeline adds nothing but cost — two extra actors (~375 MiB), seconds of start-up, one task
    alone until the first finishes, and results reaching the driver late (docs/BENCHMARKS.md, scaling).
    At most ``_IN_FLIGHT_PER_CPU`` × the cluster's CPUs are submitted at once, so a plan of 10⁵ units does
    not put 10⁵ specs in the object store; a finished one makes room for the next.
    """
    if not units:
        return
    import ray

    # A worker killed mid-unit is retried by Ray (system failures: max_retries); the retry removes the
    # unit's files and rewrites them from scratch. An exception in our code is not retried: it is a bug or a
    # bad input that escaped the reader, and the build must stop and say so.
    # SPREAD (as Ray Data's map tasks do): units are coarse and read and write a lot, so they go to the
    # least-loaded nodes first; the default policy packs a node before spilling to the next, which can leave
    # a cluster's other nodes idle while their disks and networks sit unused.
    task = ray.remote(num_cpus=1, max_retries=3, scheduling_strategy="SPREAD")(run_unit_json)
    window = max(2, _IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
    queue = iter(units)
    pending = [task.remote(u.to_json()) for u in itertools.islice(queue, window)]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        pending.extend(task.remote(u.to_json()) for u in itertools.islice(queue, 1))
        try:
            stats = json.loads(ray.get(done[0]))
        except StorageError as e:  # a worker could not download its raw files: one line, not a traceback
            raise BuildError(str(getattr(e, "cause", None) or e)) from None
        if on_unit is not None:
            on_unit(stats)
        yield stats


# --- prepare, finish, build -------------------------------------------------------------------------------


def _clean_temporaries(out: Path) -> int:
    """Temporary files left by a killed build; one build writes to one corpus at a time. (Object storage
    has none: objects are written under their final names, units staged on the nodes' own disks.)"""
    if not isinstance(out, Path):
        return 0
    n = 0
    for p in out.rglob(".*.tmp-*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def _out_location(out: str | Path):
    """``--out`` as a path object: a local folder (resolved) or an object-storage prefix whose bucket must
    exist (a build never creates buckets: a typo would otherwise make one)."""
    path = corpus_path(out)
    if isinstance(path, Path):
        return path.resolve()
    bucket = path.path.split("/", 1)[0]
    try:
        found = path.fs.exists(bucket)
    except Exception as e:  # noqa: BLE001 — endpoint/credential failures: one line, as the readers give
        try:
            check_location(path)
        except StorageError as err:
            raise BuildError(str(err)) from None
        raise BuildError(f"{location_str(path)}: {type(e).__name__}: {e}") from None
    if not found:
        # s3fs's exists() also says False when the endpoint is unreachable or the credentials are refused
        try:
            check_location(corpus_path(f"{path.protocol}://{bucket}"))
        except NothingThere:
            pass
        except StorageError as err:
            raise BuildError(str(err)) from None
        raise BuildError(
            f"{location_str(path)}: no bucket '{bucket}': create it first (a build never creates buckets)"
        )
    return path


def _raw_skeleton(location: str, specs: list[DatasetSpec]) -> tuple[Path, str]:
    """(the local skeleton to discover on, the raw URL the units read): the URL checked first, so an
    unreachable endpoint, refused credentials or a missing bucket or prefix is one line."""
    from medpclip.corpus import raw_staging

    path = corpus_path(location)
    try:
        check_location(path)
        skeleton = raw_staging.materialise(location_str(path), [s.root for s in specs])
    except StorageError as e:
        raise BuildError(f"raw root {e}") from None
    return skeleton.root, location_str(path).rstrip("/")


def prepare_build(
    specs: list[DatasetSpec],
    raw_root: Path | str,
    out: Path,
    *,
    max_side: int = 1024,
    force: bool = False,
    id_salt: str | None = None,
    shard_max_bytes: int = DEFAULT_SHARD_BYTES,
) -> Plan:
    """Check arguments, plan, and make ``out`` ready: temporaries of a killed build removed, markers removed
    when ``force``. Raises :class:`BuildError` (one line) when nothing can run. A raw root in object storage
    is planned on its local discovery skeleton; its units download their own files (``raw_staging``)."""
    out = _out_location(out)
    unit_raw_root = None
    if is_url(raw_root):
        raw_root, unit_raw_root = _raw_skeleton(str(raw_root), specs)
    else:
        raw_root = corpus_path(raw_root).resolve()
        if not raw_root.is_dir():
            raise BuildError(f"raw root '{raw_root}' is not a directory")
    if max_side < 16:
        raise BuildError(f"--max-side must be at least 16, got {max_side}")
    params = BuildParams(
        max_side=max_side,
        id_salt=id_salt or os.environ.get("MEDPCLIP_ID_SALT") or BuildParams.id_salt,
        shard_max_bytes=shard_max_bytes,
    )
    plan = plan_build(specs, raw_root, out, params, load_overrides(out), unit_raw_root)
    if not plan.units:
        reasons = "; ".join(
            f"{d}: {r['reason']} ({r['detail']})" for d, rows in plan.rejects.items() for r in rows[:1]
        )
        names = ", ".join(s.name for s in specs)
        raise BuildError(f"nothing to build: no readable items in {names} — {reasons or 'no items found'}")
    if isinstance(out, Path):
        out.mkdir(parents=True, exist_ok=True)
    _clean_temporaries(out)
    if force:
        for u in plan.units:
            marker_path(out, u.dataset, u.unit).unlink(missing_ok=True)
    return plan


def _duplicate_rows(plan: Plan) -> list[tuple[str, str, str, str]]:
    """(dataset, patient hash, split_by_rule, pixel_sha256) of the plan's samples whose pixels have a twin
    that could ever sit in another split (another patient, or another rule split), read with DuckDB."""
    import duckdb

    files = [
        p
        for u in plan.units
        if (p := plan.out / "manifests" / "samples" / u.dataset / f"{u.unit:05d}.parquet").is_file()
    ]
    if not files:
        return []
    listing = ", ".join("'" + location_str(f).replace("'", "''") + "'" for f in files)
    con = duckdb.connect()
    fs = filesystem(plan.out)
    if fs is not None:
        con.register_filesystem(fs)
    try:
        return con.execute(
            f"""
            WITH s AS (SELECT dataset, patient_id, split_by_rule, pixel_sha256 FROM read_parquet([{listing}]))
            SELECT dataset, patient_id, split_by_rule, pixel_sha256 FROM s
            WHERE pixel_sha256 IN (
                SELECT pixel_sha256 FROM s GROUP BY pixel_sha256
                HAVING count(DISTINCT dataset || '/' || patient_id) > 1 OR count(DISTINCT split_by_rule) > 1)
            ORDER BY ALL"""
        ).fetchall()
    finally:
        con.close()


def settle_splits(
    plan: Plan, on_unit: Callable[[dict[str, Any]], None] | None = None
) -> tuple[Plan, list[dict[str, Any]]]:
    """Derive the duplicate overrides from the plan's samples manifests, write them, and re-run the units
    whose patients they move (on the Ray this process is connected to; a local one otherwise). Returns the
    plan with the overrides applied (its fingerprints are those of the markers now on disk) and the stats of
    the units that ran again. Idempotent: a second call derives the same overrides and runs nothing."""
    own = {s.name for s in plan.specs}
    overrides: Overrides = {d: p for d, p in plan.overrides.items() if d not in own}
    overrides.update(derive_overrides(_duplicate_rows(plan)))
    settled = dataclasses.replace(plan.with_overrides(overrides), settled=True)
    path = overrides_path(plan.out)
    document = overrides_document(overrides)
    try:
        current = load_json(path)
    except (OSError, ValueError):
        current = None
    if current != document:  # written before the units re-run: a crash now still re-runs them next time
        atomic_write_json(path, document)
    changed = [
        new for new, old in zip(settled.units, plan.units, strict=True) if new.fingerprint != old.fingerprint
    ]
    stats: list[dict[str, Any]] = []
    if changed:
        with ray_session():
            stats = list(run_units(changed, on_unit))
    return settled, stats


def finish_build(plan: Plan) -> dict[str, Any]:
    """Plan rejects, shard indexes and build.json, all derived from what is on disk (so a resumed build
    gets the same bytes as an uninterrupted one). Settles the duplicate overrides first if the caller has
    not (``settle_splits``)."""
    if not plan.settled:
        plan, _ = settle_splits(plan)
    out, params = plan.out, plan.params
    remove_stale_units(out, plan)
    for dataset, rows in plan.rejects.items():
        write_parquet(out / "manifests" / "rejects" / dataset / "plan.parquet", "rejects", rows)
    markers = {(u.dataset, u.unit): load_json(marker_path(out, u.dataset, u.unit)) for u in plan.units}
    shards = [ShardInfo(**s) for m in markers.values() for s in m["shards"]]
    write_indexes(out, shards)
    fault_point("finish.indexes")
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
                "patients_moved_by_dedup": len(plan.overrides.get(spec.name, {})),
                "spec_sha256": hashlib.sha256(spec.model_dump_json().encode()).hexdigest(),
                # only where planning had something to say: a table only part of whose images are on disk
                **({"notes": plan.notes[spec.name]} if plan.notes.get(spec.name) else {}),
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
    nodes: list[str]
    seconds: float
    units_rerun: int = 0  # units run again with duplicate split overrides (``settle_splits``)


#: The keyword parameters of :func:`build_corpus` that ``medpclip build``, the ``build-corpus`` flow and
#: the ``pipeline`` flow expose (defaults: :func:`build_corpus`'s own; tests/test_params.py checks all three).
BUILD_OPTIONS = ("ray_address", "max_side", "num_cpus", "force", "id_salt", "shard_max_bytes")
#: Keyword parameters of :func:`build_corpus` deliberately not exposed, with the reason.
BUILD_EXEMPT = {
    "on_plan": "a progress callback (the CLI's progress bar), not a value a user passes",
    "on_unit": "a progress callback (the CLI's progress bar), not a value a user passes",
}


def build_corpus(
    specs: list[DatasetSpec],
    raw_root: Path | str,
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
    """Build (or resume) a corpus from ``specs`` over ``raw_root`` into ``out`` (each a folder or an
    object-storage URL).

    Raises :class:`BuildError` when nothing can run. Bad items never raise: they are in ``rejects``.

    Two fixed costs of every build are spent waiting on other processes, so the driver works meanwhile:
    Ray starts (2.5 s on one machine: GCS, raylet, agents) while a thread plans, and Ray stops (1.3 s of
    waiting for its processes to exit) while a thread finishes and writes the report. The timings show
    "plan" and "finish"/"report" as measured in their threads; "ray start"/"ray stop" are the waits left.
    """
    timings: dict[str, float] = {}

    def timed(step: str, fn: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            timings[step] = time.perf_counter() - started

    def plan_it() -> Plan:
        return prepare_build(
            specs,
            raw_root,
            out,
            max_side=max_side,
            force=force,
            id_salt=id_salt,
            shard_max_bytes=shard_max_bytes,
        )

    def finish_it(plan: Plan) -> dict[str, Any]:
        fault_point("finish")
        build = timed("finish", finish_build, plan)
        timed("report", write_report, plan.out, build, dict(timings))
        return build

    ran = skipped = 0
    nodes: set[str] = set()
    started = time.perf_counter()
    with ThreadPoolExecutor(1, thread_name_prefix="medpclip-driver") as driver:
        planning = driver.submit(timed, "plan", plan_it)
        with ray_session(ray_address, num_cpus):
            timings["ray start"] = time.perf_counter() - started
            plan = planning.result()  # a BuildError (bad arguments) leaves here, and Ray stops
            if on_plan is not None:
                on_plan(plan)
            clock = time.perf_counter()
            for stats in run_units(plan.units, on_unit):
                skipped += bool(stats.get("skipped"))
                ran += not stats.get("skipped")
                if not stats.get("skipped"):
                    nodes.add(stats["node"])
            timings["units"] = time.perf_counter() - clock
            # duplicates across splits: re-run the units they touch
            plan, again = timed("dedup", settle_splits, plan)
            nodes.update(s["node"] for s in again if not s.get("skipped"))
            finishing = driver.submit(finish_it, plan)
            stopping = time.perf_counter()
        timings["ray stop"] = time.perf_counter() - stopping
        build = finishing.result()
    return BuildResult(
        plan.out, build, ran, skipped, sorted(nodes), time.perf_counter() - started, len(again)
    )
