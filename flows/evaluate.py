"""Prefect flow ``evaluate``: the same zero-shot evaluation as ``medpclip eval``, with a metrics table artifact.

The metrics land in ``CORPUS/metrics/*.parquet`` (the ``metrics`` view of ``medpclip query``); the flow
returns the rows (small: a few dozen per dataset).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from medpclip.storage import resolved


@task(name="evaluate-checkpoint", cache_policy=NONE)
def evaluate_task(
    corpus: str,
    checkpoint: str,
    split: str,
    datasets: list[str] | None,
    batch_size: int = 32,
    device: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    from medpclip.evaluate import evaluate  # torch, open_clip: loaded when a run needs them

    result = evaluate(
        corpus,  # a folder or an object-storage URL
        Path(checkpoint),
        split,
        datasets=datasets,
        batch_size=batch_size,
        device=device,
        seed=seed,
    )
    problems = {k: v for k, v in result.data_counts.items() if k.startswith(("bad_", "dropped_"))}
    if problems:
        get_run_logger().warning("data problems (counted, skipped): %s", problems)
    return {
        "run_id": result.run_id,
        "step": result.step,
        "checkpoint": result.checkpoint,
        "path": str(result.path),
        "rows": [asdict(r) for r in result.rows],
    }


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    corpus: str,
    checkpoint: str,
    split: str = "test",
    datasets: list[str] | None = None,
    batch_size: int = 32,
    device: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate a checkpoint (or a training ``out`` directory: its latest checkpoint) on ``split``; the
    parameters are ``medpclip eval``'s."""
    summary = evaluate_task(
        resolved(corpus),  # s3://… stays a URL
        str(Path(checkpoint).resolve()),
        split,
        datasets,
        batch_size,
        device,
        seed,
    )
    rows = [{k: r[k] for k in ("task", "dataset", "metric", "value", "chance", "n")} for r in summary["rows"]]
    create_table_artifact(
        rows, key="evaluate-metrics", description=f"{summary['run_id']} step {summary['step']} on {split}"
    )
    return summary
