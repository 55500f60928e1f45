"""Prefect flow ``medpclip-pipeline``: build-corpus → pretrain → evaluate, each a subflow of its own.

The three flows are the ones in this folder, imported by file path under private module names, so this works
however the file is loaded (a Prefect entrypoint, ``medpclip serve``, a plain import) and whether or not the
flows folder is on ``sys.path``. Each stage resumes: finished corpus units
are kept and training continues from its latest checkpoint, so re-running a failed pipeline redoes only
what did not finish.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from prefect import flow


def _sibling(name: str, attribute: str):
    """A flow from a file next to this one (not Prefect's loader: it holds a lock while this file runs)."""
    module_name = f"_medpclip_flows_{name}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            module_name, Path(__file__).resolve().with_name(f"{name}.py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return getattr(module, attribute)


build_corpus_flow = _sibling("build_corpus", "build_corpus_flow")
pretrain_flow = _sibling("pretrain", "pretrain_flow")
evaluate_flow = _sibling("evaluate", "evaluate_flow")


@flow(name="medpclip-pipeline", log_prints=True)
def pipeline_flow(
    specs: str,
    raw_root: str,
    corpus: str,
    train_out: str,
    model: str = "ViT-B-16",
    steps: int = 1000,
    batch_size: int = 64,
    workers: int = 1,
    gpu: bool = False,
    lr: float = 5e-4,
    checkpoint_every: int = 500,
    accum_steps: int = 1,
    loader_workers: int = 2,
    pretrained: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
    split: str = "test",
    datasets: list[str] | None = None,
    max_side: int = 1024,
    ray_address: str | None = None,
    write_demo_data: bool = False,
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
    train_datasets: list[str] | None = None,
    force: bool = False,
    resume: bool = True,
    num_cpus: int | None = None,
    id_salt: str | None = None,
    shard_max_bytes: int = 256 * 2**20,
    eval_batch_size: int = 32,
    device: str | None = None,
    eval_seed: int = 0,
) -> dict[str, Any]:
    """Build (or resume) the corpus, pre-train on its train split, evaluate the result on ``split`` (of
    ``datasets``, default all). Training parameters are the ``pretrain`` flow's (``medpclip train``'s), but
    ``train_datasets`` (``datasets`` is the evaluation's); build parameters the ``build-corpus`` flow's
    (``num_cpus`` sizes the local Ray of the build and of training); ``eval_batch_size``, ``device``, ``eval_seed`` are the
    ``evaluate`` flow's ``batch_size``, ``device``, ``seed``."""
    built = build_corpus_flow(
        specs=specs,
        raw_root=raw_root,
        out=corpus,
        ray_address=ray_address,
        max_side=max_side,
        write_demo_data=write_demo_data,
        force=force,
        num_cpus=num_cpus,
        id_salt=id_salt,
        shard_max_bytes=shard_max_bytes,
    )
    trained = pretrain_flow(
        corpus=built["out"],
        out=train_out,
        model=model,
        steps=steps,
        batch_size=batch_size,
        workers=workers,
        gpu=gpu,
        lr=lr,
        checkpoint_every=checkpoint_every,
        accum_steps=accum_steps,
        loader_workers=loader_workers,
        pretrained=pretrained,
        image_size=image_size,
        seed=seed,
        ray_address=ray_address,
        resume=resume,
        num_cpus=num_cpus,
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
        datasets=train_datasets,
    )
    evaluated = evaluate_flow(
        corpus=built["out"],
        checkpoint=trained["checkpoint"],
        split=split,
        datasets=datasets,
        batch_size=eval_batch_size,
        device=device,
        seed=eval_seed,
    )
    return {
        "corpus": built["out"],
        "totals": built["totals"],
        "training": trained,
        "metrics": evaluated["path"],
        "region_cls": [r for r in evaluated["rows"] if r["task"] == "region_cls"],
    }
