"""Region modes side by side on a task where context decides (issue 19): ``python -m bench.bench_regions``.

Trains the ``tiny`` model once per region mode (``medpclip``, ``crop``, ``mask-input``, ``alpha``) and seed on
the ``demo_context`` corpus (medpclip/demo.py (d): left vs right kidney, a lesion named by its host organ,
liver vs spleen) with the same data, steps, losses and seed, then evaluates each on the held-out patients
(val + test) with the standard zero-shot evaluator: region top-1 per class with mask, box and point prompts,
the shuffled-prompt control, and the image-level metrics (does prompting hurt the global embedding?).

The groups: **laterality** = right/left kidney and **host organ** = liver/splenic lesion, the context-decided
pairs (the region's own pixels are drawn from one distribution in each pair; a model that tells the pair from
the rest but not apart scores 0.5), and **appearance** = liver and spleen (their own shape tells them apart).
A group's score is the mean of its classes' top-1 over all six classes.

Every run uses ``train_local`` (the same loop as Ray Train's workers, in one process: no Ray start-up per
run); runs go ``--jobs`` at a time, one CPU thread each. Results: bench/results/regions.json and the table
printed at the end (copied into docs/BENCHMARKS.md; ``--table`` prints it again from the saved results).
About 35 minutes on the 2-core machine with the defaults (4 modes × 3 seeds × 400 steps), 4–7 minutes a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from bench.common import save_result

DATA = Path(__file__).parent / "data" / "regions"
MODES = ("medpclip", "crop", "mask-input", "alpha")
LATERALITY = ("right kidney", "left kidney")  # context: only the side of the body names them
HOST = ("liver lesion", "splenic lesion")  # context: only the organ around the lesion names it
CONTEXT = (*LATERALITY, *HOST)
APPEARANCE = ("liver", "spleen")  # their own shape and size
GROUPS = {"laterality": LATERALITY, "host": HOST, "context": CONTEXT, "appearance": APPEARANCE}
PROMPTS = {"mask": "top1", "box": "top1_box", "point": "top1_point"}


def corpus() -> Path:
    """The demo_context corpus, built once (cached under bench/data/regions)."""
    from medpclip.corpus.build import build_corpus
    from medpclip.demo import write_demo_data
    from medpclip.specs import resolve_specs

    raw, out = DATA / "raw", DATA / "corpus"
    if not (out / "sizes.json").is_file():
        write_demo_data(raw, ["demo_context"])
        build_corpus(resolve_specs(["demo_context"]), raw, out, num_cpus=2)
    return out


def run_one(mode: str, seed: int, steps: int, batch_size: int, lr: float, corpus_dir: str) -> dict:
    """Train one mode with one seed and evaluate it; returns the figures of the table."""
    import torch

    torch.set_num_threads(1)
    from medpclip.evaluate import evaluate
    from medpclip.train.loop import TrainConfig, train_local

    out = DATA / "runs" / f"{mode}-s{seed}-{steps}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg = TrainConfig(
        corpus=corpus_dir,
        out=str(out),
        model="tiny",
        region_mode=mode,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        loader_workers=1,
        checkpoint_every=steps,
        log_every=max(1, steps // 4),
        data={"max_regions": 6},  # every region of an image in every step (5–6 per image)
    )
    t0 = time.perf_counter()
    result = train_local(cfg)
    train_s = time.perf_counter() - t0
    ev = evaluate(Path(corpus_dir), out, "val,test", datasets=["demo_context"], seed=seed, write=False)
    by = {(r.metric): r for r in ev.rows if r.dataset == "demo_context"}

    def group(prefix: str, classes: tuple[str, ...]) -> float:
        return statistics.fmean(by[f"{prefix}:{c}"].value for c in classes)

    row = {
        "mode": mode,
        "seed": seed,
        "train_s": train_s,
        "samples_per_s": result.metrics.get("samples_per_s"),
        "final_loss": result.metrics.get("loss"),
        "region_top1": by["top1"].value,
        "shuffled_top1": by["top1_shuffled_prompts"].value,
        "n_regions": by["top1"].n,
        "per_class": {
            m: {c: by[f"{m}:{c}"].value for c in (*CONTEXT, *APPEARANCE)} for m in PROMPTS.values()
        },
    }
    for kind, prefix in PROMPTS.items():
        for name, classes in GROUPS.items():
            row[f"{name}_{kind}"] = group(prefix, classes)
    for task, metric in (("image_cls", "auc"), ("retrieval_i2t", "r@1"), ("retrieval_r2t", "r@1")):
        hit = [r for r in ev.rows if (r.task, r.metric) == (task, metric)]
        row[f"{task}_{metric}"] = hit[0].value if hit else None
    return row


def summarise(rows: list[dict]) -> list[dict]:
    """Per mode: median and min–max over seeds of every figure of the table."""
    for r in rows:  # group scores from the per-class figures (also for results saved before a group existed)
        for kind, prefix in PROMPTS.items():
            for name, classes in GROUPS.items():
                r[f"{name}_{kind}"] = statistics.fmean(r["per_class"][prefix][c] for c in classes)
    keys = [
        *(f"{g}_{k}" for k in PROMPTS for g in GROUPS),
        "region_top1",
        "shuffled_top1",
        "image_cls_auc",
        "retrieval_i2t_r@1",
        "retrieval_r2t_r@1",
        "samples_per_s",
    ]
    out = []
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        entry = {"mode": mode, "seeds": sorted(r["seed"] for r in mine)}
        for k in keys:
            values = [r[k] for r in mine if r.get(k) is not None]
            if values:
                entry[k] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        out.append(entry)
    return out


def table(summary: list[dict]) -> str:
    cols = [
        ("laterality (mask)", "laterality_mask"),
        ("laterality (box)", "laterality_box"),
        ("laterality (point)", "laterality_point"),
        ("host organ (mask)", "host_mask"),
        ("host organ (box)", "host_box"),
        ("appearance (mask)", "appearance_mask"),
        ("appearance (box)", "appearance_box"),
        ("appearance (point)", "appearance_point"),
        ("all six, mask", "region_top1"),
        ("shuffled prompts", "shuffled_top1"),
        ("image AUC", "image_cls_auc"),
        ("image→caption R@1", "retrieval_i2t_r@1"),
    ]
    lines = [
        "| mode | " + " | ".join(c for c, _ in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for e in summary:
        cells = []
        for _, k in cols:
            v = e.get(k)
            cells.append("–" if v is None else f"{v['median']:.2f} ({v['min']:.2f}–{v['max']:.2f})")
        lines.append(f"| {e['mode']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(
    steps: int = 400,
    seeds: tuple[int, ...] = (0, 1, 2),
    modes: tuple[str, ...] = MODES,
    jobs: int = 2,
    batch_size: int = 16,
    lr: float = 1e-3,
) -> dict:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    corpus_dir = str(corpus())
    t0 = time.perf_counter()
    runs = [(m, s) for s in seeds for m in modes]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_one, m, s, steps, batch_size, lr, corpus_dir) for m, s in runs]
        rows = [f.result() for f in futures]
    summary = summarise(rows)
    result = {
        "steps": steps,
        "seeds": list(seeds),
        "batch_size": batch_size,
        "lr": lr,
        "model": "tiny",
        "corpus": "demo_context (val+test = held-out patients)",
        "wall_s": time.perf_counter() - t0,
        "runs": rows,
        "summary": summary,
    }
    save_result("regions", result)
    print(json.dumps(summary, indent=1))
    print(table(summary))
    return result


def print_saved() -> None:
    """The table of the last saved run (bench/results/regions.json), without training anything."""
    from bench.common import RESULTS

    result = json.loads((RESULTS / "regions.json").read_text())
    print(table(summarise(result["runs"])))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="store_true", help="print the saved results' table and stop")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    if a.table:
        print_saved()
        raise SystemExit(0)
    main(
        a.steps,
        tuple(int(s) for s in a.seeds.split(",")),
        tuple(a.modes.split(",")),
        a.jobs,
        a.batch_size,
        a.lr,
    )
