"""Prefect flow ``build-corpus``: the same build as ``medpclip build``, step by step, visible in the Prefect UI.

Thin by design: every task calls one medpclip function and returns a small summary. Ray does the heavy work
(a local Ray, or the cluster at ``ray_address`` / ``RAY_ADDRESS``); Prefect adds retries, logs, a progress
artifact updated as units finish, and a table artifact with the totals.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE

from medpclip.corpus.build import (
    BuildError,
    Plan,
    finish_build,
    prepare_build,
    run_units,
    settle_splits,
)
from medpclip.corpus.inspect import check_corpus
from medpclip.corpus.shards import DEFAULT_SHARD_BYTES
from medpclip.qa.report import write_report
from medpclip.raysession import ray_session
from medpclip.specs import DatasetSpec, resolve_specs
from medpclip.storage import is_url
from medpclip.warehouse import query


@task(name="write-demo-data", cache_policy=NONE)
def write_demo_data_task(raw_root: str) -> list[str]:
    from medpclip.demo import write_demo_data

    return sorted(write_demo_data(Path(raw_root)))


@task(name="validate-specs", cache_policy=NONE)
def validate_specs(specs: str) -> list[DatasetSpec]:
    """Refuse bad specs before any work starts (one-line reasons, as the CLI prints them)."""
    return resolve_specs(specs)


@task(name="plan", cache_policy=NONE)
def plan_task(
    specs: list[DatasetSpec],
    raw_root: str,
    out: str,
    max_side: int,
    force: bool,
    id_salt: str | None = None,
    shard_max_bytes: int = DEFAULT_SHARD_BYTES,
) -> Plan:
    plan = prepare_build(
        specs,
        raw_root,  # each a folder or an object-storage URL (prepare_build resolves either)
        out,
        max_side=max_side,
        force=force,
        id_salt=id_salt,
        shard_max_bytes=shard_max_bytes,
    )
    logger = get_run_logger()
    for spec in specs:
        n = sum(1 for u in plan.units if u.dataset == spec.name)
        logger.info("%s: %d units, %d plan rejects", spec.name, n, len(plan.rejects.get(spec.name, [])))
    return plan


class UnitProgress:
    """The build's progress artifact, moved by every finished unit of every dataset (their tasks run at
    once, in threads of this flow run)."""

    def __init__(self, artifact_id: Any, total: int) -> None:
        self.artifact_id, self.total = artifact_id, max(total, 1)
        self.done: set[tuple[str, int]] = set()  # a set: a retried task reports its kept units again
        self._lock = threading.Lock()

    def unit_done(self, dataset: str, unit: int) -> None:
        with self._lock:
            self.done.add((dataset, unit))
            update_progress_artifact(self.artifact_id, progress=100.0 * len(self.done) / self.total)


# Units are idempotent (a finished unit is kept, an unfinished one is redone from scratch), so a retry after a
# lost Ray connection or a node failure only redoes what did not finish.
@task(name="run-dataset", retries=2, retry_delay_seconds=10, cache_policy=NONE)
def run_dataset(plan: Plan, dataset: str, progress: UnitProgress) -> dict[str, int]:
    logger = get_run_logger()
    units = [u for u in plan.units if u.dataset == dataset]
    summary = {"units": 0, "kept": 0, "samples": 0, "regions": 0, "rejects": 0}
    for stats in run_units(units):
        summary["units"] += 1
        summary["kept"] += bool(stats.get("skipped"))
        for k in ("samples", "regions", "rejects"):
            summary[k] += stats[f"n_{k}"]
        logger.info(
            "%s unit %05d: %d samples, %d regions, %d rejects%s",
            dataset,
            stats["unit"],
            stats["n_samples"],
            stats["n_regions"],
            stats["n_rejects"],
            " (kept)" if stats.get("skipped") else "",
        )
        progress.unit_done(dataset, stats["unit"])
    return summary


@task(name="settle-splits", cache_policy=NONE)
def settle_task(plan: Plan) -> Plan:
    """Exact duplicates never span two splits: re-run the units whose patients the overrides move."""
    settled, again = settle_splits(plan)
    moved = sum(len(p) for p in settled.overrides.values())
    get_run_logger().info(
        "split overrides: %d patients moved to an earlier split, %d units re-run", moved, len(again)
    )
    return settled


@task(name="finish", cache_policy=NONE)
def finish_task(plan: Plan) -> dict[str, Any]:
    return finish_build(plan)


@task(name="warehouse-check", cache_policy=NONE)
def warehouse_check(out: str) -> dict[str, int]:
    """The corpus as DuckDB sees it: counts that must reconcile with the shards, and patient leakage."""
    corpus = out
    counts = {
        name: query(corpus, f"SELECT count(*) FROM {name}")[1][0][0]
        for name in ("samples", "regions", "rejects")
    }
    counts["shard_samples"] = query(corpus, "SELECT coalesce(sum(n_samples), 0) FROM shards")[1][0][0]
    counts["patients_in_two_splits"] = query(
        corpus,
        "SELECT count(*) FROM (SELECT dataset, patient_id FROM samples GROUP BY ALL HAVING count(DISTINCT split) > 1)",
    )[1][0][0]
    if counts["samples"] != counts["shard_samples"] or counts["patients_in_two_splits"]:
        raise BuildError(f"warehouse does not reconcile: {counts}")
    return counts


@task(name="qa-summary", cache_policy=NONE)
def qa_summary(out: str, build: dict[str, Any]) -> dict[str, int]:
    html_report = write_report(out, build)
    report = check_corpus(out)
    rows = [
        {
            "dataset": d["name"],
            "licence": d["licence"],
            "access": d["access"],
            "samples": d["samples"],
            **{f"{s}": d["samples_by_split"].get(s, 0) for s in ("train", "val", "test")},
            "regions": d["regions"],
            "rejects": d["rejects"],
        }
        for d in build["datasets"]
    ]
    create_table_artifact(rows, key="build-corpus-totals", description=f"Corpus totals: {out}")
    lines = [
        f"# Corpus `{out}`",
        "",
        f"- samples: **{build['totals']['samples']}**",
        f"- regions: **{build['totals']['regions']}**",
        f"- rejects: {build['totals']['rejects']}",
        f"- shards: {build['totals']['shards']} ({build['totals']['shard_bytes'] / 2**20:.1f} MiB)",
        f"- validate: {len(report.problems)} problems",
        f"- report: [{html_report}]({html_report.as_uri()})",
    ]
    lines += [f"  - {p}" for p in report.problems[:20]]
    create_markdown_artifact(
        "\n".join(lines), key="build-corpus-summary", description="medpclip build summary"
    )
    if report.problems:
        raise BuildError(f"corpus check found {len(report.problems)} problems, e.g. {report.problems[0]}")
    return {"shards": report.shards, "samples": report.samples, "regions": report.regions}


@flow(name="build-corpus", log_prints=True)
def build_corpus_flow(
    specs: str,
    raw_root: str,
    out: str,
    ray_address: str | None = None,
    max_side: int = 1024,
    force: bool = False,
    write_demo_data: bool = False,
    num_cpus: int | None = None,
    id_salt: str | None = None,
    shard_max_bytes: int = DEFAULT_SHARD_BYTES,
) -> dict[str, Any]:
    """Build (or resume) a corpus: validate specs → plan → one Ray run per dataset (all at once) → settle
    duplicate splits → finish → warehouse → QA.

    ``specs`` is comma-separated names from ``dataset_specs/`` or YAML paths. ``raw_root`` and ``out`` are
    folders or object-storage URLs (``s3://bucket/prefix``); relative folders are taken from the working
    directory of the process that runs the flow (``medpclip serve`` or a worker).
    ``write_demo_data`` first writes the demo raw datasets into ``raw_root`` (the ``demo`` deployment).
    ``num_cpus`` sizes a local Ray (ignored with ``ray_address``); ``id_salt``, ``shard_max_bytes`` as
    ``medpclip build --id-salt/--shard-max-bytes``.
    """
    raw_root = raw_root if is_url(raw_root) else str(Path(raw_root).resolve())  # s3://… stays a URL
    out = out if is_url(out) else str(Path(out).resolve())
    if write_demo_data:
        if is_url(raw_root):
            raise BuildError(f"write_demo_data writes into a local folder, not {raw_root}: give a folder")
        write_demo_data_task(raw_root)
    spec_list = validate_specs(specs)
    plan = plan_task(spec_list, raw_root, out, max_side, force, id_salt, shard_max_bytes)
    progress_id = create_progress_artifact(0.0, key="build-corpus-progress", description=f"units done: {out}")
    progress = UnitProgress(progress_id, len(plan.units))
    with ray_session(ray_address, num_cpus):
        # Every dataset's task at once, on the one Ray session: Ray queues all their units, so the cluster
        # never idles behind a dataset's last few units (one after another, many small datasets would).
        futures = {spec.name: run_dataset.submit(plan, spec.name, progress) for spec in spec_list}
        per_dataset = {name: future.result() for name, future in futures.items()}
        plan = settle_task(plan)
    build = finish_task(plan)
    counts = warehouse_check(out)
    checked = qa_summary(out, build)
    return {
        "out": out,
        "totals": build["totals"],
        "datasets": per_dataset,
        "warehouse": counts,
        "checked": checked,
    }
