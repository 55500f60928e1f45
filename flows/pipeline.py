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
) -> dict[str, Any]:
    """Build (or resume) the corpus, pre-train on its train split, evaluate the result on ``split`` (of
    ``datasets``, default all). Training parameters are the ``pretrain`` flow's (``medpclip train``'s)."""
    built = build_corpus_flow(
        specs=specs,
        raw_root=raw_root,
        out=corpus,
        ray_address=ray_address,
        max_side=max_side,
        write_demo_data=write_demo_data,
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
    )
    evaluated = evaluate_flow(
        corpus=built["out"], checkpoint=trained["checkpoint"], split=split, datasets=datasets
    )
    return {
        "corpus": built["out"],
        "totals": built["totals"],
        "training": trained,
        "metrics": evaluated["path"],
        "region_cls": [r for r in evaluated["rows"] if r["task"] == "region_cls"],
    }
