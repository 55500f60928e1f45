"""Prefect flow ``pretrain``: the same training as ``medpclip train``, visible in the Prefect UI.

Thin by design: one task calls ``medpclip.train.loop.train`` (Ray Train does the work, on a local Ray or the
cluster at ``ray_address`` / ``RAY_ADDRESS``) and returns a small summary; a table artifact shows the final
metrics. Training resumes from the latest checkpoint in ``out`` by default, so a retried task or a re-run
flow continues where the last one stopped instead of starting over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.runtime import task_run

from medpclip.storage import resolved

SUMMARY_METRICS = ("loss", "image_loss", "region_loss", "samples_per_s", "data_wait_frac", "gpu_mem_peak_gb")


@task(name="train", retries=1, retry_delay_seconds=10, cache_policy=NONE)
def train_task(
    config: dict[str, Any], resume: bool, ray_address: str | None, num_cpus: int | None = None
) -> dict[str, Any]:
    """One Ray Train run; a retry always resumes (the failed attempt may have left checkpoints)."""
    from medpclip.train.loop import TrainConfig, train  # torch, open_clip: loaded when a run needs them

    resume = resume or (task_run.run_count or 1) > 1
    result = train(TrainConfig.of(**config), resume=resume, ray_address=ray_address, num_cpus=num_cpus)
    get_run_logger().info(
        "run %s: step %d, checkpoint %s (%.0fs)",
        result.run_id,
        result.step,
        result.checkpoint,
        result.seconds,
    )
    return {
        "out": str(result.out),
        "run_id": result.run_id,
        "step": result.step,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "metrics": {k: result.metrics.get(k) for k in SUMMARY_METRICS},
    }


@flow(name="pretrain", log_prints=True)
def pretrain_flow(
    corpus: str,
    out: str,
    model: str = "ViT-B-16",
    steps: int = 1000,
    batch_size: int = 64,
    workers: int = 1,
    gpu: bool = False,
    resume: bool = True,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    lr: float = 5e-4,
    accum_steps: int = 1,
    checkpoint_every: int = 500,
    loader_workers: int = 2,
    pretrained: str | None = None,
    seed: int = 0,
    image_size: int | None = None,
    prompt_layer: int | None = None,
    region_mode: str = "medpclip",
    cpus_per_worker: int = 1,
    weight_decay: float = 0.1,
    warmup: int | None = None,
    region_weight: float = 1.0,
    grad_checkpointing: bool = False,
    keep_checkpoints: int = 2,
    log_every: int = 10,
    max_failures: int = 0,
    datasets: list[str] | None = None,
) -> dict[str, Any]:
    """Pre-train MedP-CLIP on ``corpus`` into ``out`` (``--model tiny`` for CPU demos). Relative paths are
    taken from the working directory of the process that runs the flow."""
    from medpclip.train.loop import TrainConfig

    config = TrainConfig.of(
        corpus=resolved(corpus),  # s3://… stays a URL
        out=str(Path(out).resolve()),
        model=model,
        pretrained=pretrained,
        image_size=image_size,
        steps=steps,
        batch_size=batch_size,
        accum_steps=accum_steps,
        workers=workers,
        gpu=gpu,
        loader_workers=loader_workers,
        lr=lr,
        seed=seed,
        checkpoint_every=checkpoint_every,
        prompt_layer=prompt_layer,
        region_mode=region_mode,
        cpus_per_worker=cpus_per_worker,
        weight_decay=weight_decay,
        warmup=warmup,
        region_weight=region_weight,
        grad_checkpointing=grad_checkpointing,
        keep_checkpoints=keep_checkpoints,
        log_every=log_every,
        max_failures=max_failures,
        datasets=datasets,
    )
    summary = train_task(config.model_dump(), resume, ray_address, num_cpus)
    create_table_artifact(
        [{"run_id": summary["run_id"], "step": summary["step"], **summary["metrics"]}],
        key="pretrain-summary",
        description=f"MedP-CLIP pre-training: {summary['checkpoint']}",
    )
    return summary
