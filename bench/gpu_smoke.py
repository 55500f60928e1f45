"""GPU smoke benchmark (driven by ``bench/gpu_smoke.sh``): MedP-CLIP ViT-B/16 at 224 px with region prompts
on one GPU for a few hundred steps on the demo corpus.

Prints and writes (JSON) the steady-state figures of the last ``--window`` steps: samples/s, step time,
the share of step time spent waiting for the data loader, the GPU memory peak, regions per image. The
step time includes a CUDA synchronisation, so a GPU left idle by the loader shows up as waiting.

``--mode ray`` trains through ``medpclip.train.loop.train`` (Ray Train, one GPU worker), the production
path; ``--mode local`` runs the same loop in this process without Ray (``train_local``), for machines
where Ray is not installed. ``auto`` takes Ray when it can be imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", default="/tmp/medpclip-gpu-smoke")
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--window", type=int, default=100, help="steady-state steps measured at the end")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--loader-workers", type=int, default=12)
    ap.add_argument("--max-regions", type=int, default=4)
    ap.add_argument("--mode", choices=("auto", "ray", "local"), default="auto")
    ap.add_argument("--cpu", action="store_true", help="no GPU (to check the script itself)")
    ap.add_argument("--json", default="bench/results/gpu_smoke.json")
    args = ap.parse_args(argv)

    import torch

    from medpclip.train.loop import TrainConfig, train, train_local

    mode = args.mode
    if mode == "auto":
        try:
            import ray  # noqa: F401

            mode = "ray"
        except ImportError:
            mode = "local"
    gpu = not args.cpu
    if gpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible (use --cpu to check the script on a CPU)")
    shutil.rmtree(args.out, ignore_errors=True)
    cfg = TrainConfig(
        corpus=args.corpus,
        out=args.out,
        model=args.model,
        image_size=args.image_size,
        steps=args.steps,
        batch_size=args.batch_size,
        workers=1,
        gpu=gpu,
        cpus_per_worker=max(1, (os.cpu_count() or 2) - args.loader_workers),
        loader_workers=args.loader_workers,
        lr=5e-4,
        warmup=min(50, args.steps // 5),
        checkpoint_every=args.steps,  # one checkpoint, at the end
        log_every=args.window,
        data={"max_regions": args.max_regions},
    )
    t0 = time.monotonic()
    if mode == "ray":
        result = train(cfg, num_cpus=os.cpu_count())
    else:
        result = train_local(cfg)
    wall = time.monotonic() - t0
    m = result.metrics  # the last report: the mean over the last `window` steps
    figures = {
        "mode": mode,
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": result.step,
        "window_steps": args.window,
        "loader_workers": args.loader_workers,
        "samples_per_s": round(m["samples_per_s"], 1),
        "step_ms": round(1000 * m["step_s"], 1),
        "data_wait_pct": round(100 * m["data_wait_frac"], 2),
        "gpu_mem_peak_gib": round(m["gpu_mem_peak_gb"], 2),
        "regions_per_image": round(m["regions_per_image"], 2),
        "loss_last_window": round(m["loss"], 3),
        "wall_s": round(wall, 1),
        "device": torch.cuda.get_device_name(0) if gpu else platform.processor() or "cpu",
        "torch": torch.__version__,
        "data_bad_samples": m["data_bad_samples"],
        "data_dropped_regions": m["data_dropped_regions"],
    }
    history = m.get("history") or []
    width = max(len(k) for k in figures)
    print(f"\nMedP-CLIP GPU smoke (steady state = last {args.window} steps)")
    for k, v in figures.items():
        print(f"  {k:<{width}}  {v}")
    for h in history:
        print(
            f"  step {h['step']:>5}: {h['samples_per_s']:8.1f} samples/s, data wait "
            f"{100 * h['data_wait_frac']:5.2f}%, loss {h['loss']:.3f}"
        )
    verdict = "PASS" if figures["data_wait_pct"] < 5 else "FAIL"
    print(f"goal: data wait < 5% of step time → {verdict} ({figures['data_wait_pct']}%)")
    figures["goal_data_wait_below_5pct"] = verdict == "PASS"
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"results: {path}")
    return figures


if __name__ == "__main__":
    main()
