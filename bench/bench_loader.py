"""Training loader throughput: our loader (with region prompt sampling) against open_clip's stock one.

Both read the same tar shards, the train split of the demo corpus (``demo_ct,demo_polyp,demo_cxr`` built
with ``--max-side 512``; built once with the project's CLI and cached in ``bench/data/loader``), with the
same number of DataLoader workers, batch size, image size and tokenizer (open_clip's for ViT-B-16, the one
training uses by default). Per sample:

- ``ours``: ``medpclip.train.data.train_loader`` exactly as ``medpclip train`` builds it (default
  ``DataConfig``, 224 px): per-dataset resampled shard streams mixed by sample count, 256-sample shuffle
  buffer, PNG + JSON record decode, random resized crop of the letterboxed square (scale 0.6–1, bilinear)
  and intensity jitter, ≤ 4 regions with a prompt kind each (RLE mask decode and warp for mask and point
  prompts, box jitter, point subsets checked against the warped mask), collation into uint8 images and
  prompt tensors, captions and region texts tokenised (normalisation happens later, on the device);
- ``stock``: ``open_clip_train.data.get_wds_dataset`` with ``--dataset-resampled`` (the shard list joined
  with ``::``, as on its command line) and ``open_clip.image_transform(224, is_train=True)``: resampled
  shards, 5,000-sample shuffle buffer, ``decode("pilrgb")`` (PNG, JSON and TXT members), random resized
  crop (scale 0.9–1, bicubic), to float tensor and normalise, the ``txt`` caption tokenised. Unchanged
  but for webdataset's end-of-shard marker, which this open_clip_train version cannot read (``_eof_fix``).

The demo images are small (CT 128², radiographs 256², endoscopy ~180 px), so decoding is cheap and the
per-image work that does not shrink with the source (the 224² warps, region masks, tokenising) weighs more
than on a corpus of 512–1024 px images; ``corpus=ct`` runs the same comparison on a corpus of 512² CT slices
built from 8 generated volumes (``bench/volumes.py``), written to ``bench/results/loader-ct.json``.

Each round builds a fresh loader of each kind (ours first on even rounds, stock first on odd ones, so
drift in the machine's load hits both alike), times its start-up (until the first batch) separately, lets
every worker deliver one batch, then times the next ``samples_per_round`` samples, in wall-clock time and
in CPU time of the workers and this process; the workers are shut down before the other loader starts.
Reports medians over rounds of samples/s, of samples per CPU-second, and of the per-round ratios
ours/stock of both (goal ≥ 1.0). On a shared machine the wall-clock ratio moves with other jobs' load;
the CPU-time one hardly does.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import open_clip_train.data as oc_data
import torch
import webdataset

from bench.common import save_result
from bench.volumes import write_ct_dataset
from medpclip.train.data import DataConfig, shard_lists, train_loader

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "loader"
SPECS = "demo_ct,demo_polyp,demo_cxr"
MODEL, SIZE = "ViT-B-16", 224
# CPU time of the workers is read from /proc (Linux); elsewhere only wall-clock rates are reported
TICKS = os.sysconf("SC_CLK_TCK") if Path("/proc/self/stat").is_file() else 0


def ensure_corpus(kind: str = "demo") -> tuple[Path, str]:
    """The benchmark's corpus and a description: ``demo`` (the demo datasets, small images) or ``ct`` (8
    generated 512×512×100 CT volumes of ``bench/volumes.py``: 512² grey images, ~4 regions each)."""
    corpus = DATA / ("corpus" if kind == "demo" else f"corpus-{kind}")
    cli = [sys.executable, "-m", "medpclip.cli"]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    if kind == "demo":
        specs, raw, what = SPECS, DATA / "raw", SPECS
        if not (corpus / "sizes.json").is_file():  # sizes.json: written last by a finished build
            subprocess.run([*cli, "demo-data", str(raw)], check=True, env=env)
    elif kind == "ct":
        raw = DATA / "raw-ct"
        specs, what = str(write_ct_dataset(raw, 8)), "8 generated 512x512x100 CT volumes (bench/volumes.py)"
    else:
        raise SystemExit(f"corpus kind '{kind}': use demo or ct")
    if not (corpus / "sizes.json").is_file():
        build = ["build", "--spec", specs, "--raw-root", str(raw), "--out", str(corpus)]
        subprocess.run([*cli, *build, "--max-side", "512", "--num-cpus", "2"], check=True, env=env)
    return corpus, what


def _ours(corpus: Path, tokenizer, batch_size: int, workers: int, seed: int):
    loader = train_loader(
        corpus, DataConfig(image_size=SIZE), tokenizer, batch_size, seed, num_workers=workers
    )
    return loader, lambda b: b["images"].shape[0]


@contextlib.contextmanager
def _eof_fix():
    """open_clip_train 3.3.0's ``tarfile_to_samples_nothrow`` chokes on the end-of-shard ``{}`` that webdataset
    ≥ 0.2.96 yields (KeyError 'fname', webdataset/webdataset#384); upstream's fix passes ``eof_value=None``,
    which changes nothing else. Workers are forked inside this, so they inherit it."""
    original = oc_data.tar_file_expander
    oc_data.tar_file_expander = functools.partial(original, eof_value=None)
    try:
        yield
    finally:
        oc_data.tar_file_expander = original


def _stock(urls: list[str], preprocess, tokenizer, batch_size: int, workers: int, seed: int, n: int):
    args = argparse.Namespace(
        train_data="::".join(urls),
        train_num_samples=n,  # with_epoch: enough batches per worker for the round, then the stream ends
        train_data_upsampling_factors=None,
        dataset_resampled=True,  # like ours: endless resampled shards, no shard-count vs worker constraint
        batch_size=batch_size,
        workers=workers,
        world_size=1,
        seed=seed,
    )
    info = oc_data.get_wds_dataset(args, preprocess, is_train=True, epoch=seed, tokenizer=tokenizer)
    return info.dataloader, lambda b: len(b[0])


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the loader's worker processes and of this one."""
    total = time.process_time()
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15 of stat)
    return total


def _round(make, seed: int, n_batches: int, workers: int) -> tuple[float, float, float | None]:
    """(seconds to the first batch, samples/s and samples per CPU-second over ``n_batches`` after every
    worker's first batch)."""
    loader, size_of = make(seed)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    startup = time.perf_counter() - t0
    for _ in range(workers - 1):  # batches come round-robin: the rest of the workers' first (start-up) ones
        next(it)
    pids = [p.pid for p in multiprocessing.active_children()] if TICKS else []
    n = 0
    t, cpu = time.perf_counter(), _cpu_seconds(pids) if TICKS else 0.0
    for _ in range(n_batches):
        n += size_of(next(it))
    rate = n / (time.perf_counter() - t)
    per_cpu = n / (_cpu_seconds(pids) - cpu) if TICKS else None
    del it, loader
    gc.collect()
    for child in multiprocessing.active_children():  # no worker left to compete with the next loader
        child.join(timeout=30)
    return startup, rate, per_cpu


def main(
    rounds: int = 5,
    samples_per_round: int = 3072,
    workers: int = 2,
    batch_size: int = 32,
    corpus: str = "demo",
) -> dict:
    kind = corpus
    corpus, what = ensure_corpus(kind)
    shards = shard_lists(corpus, "train")
    urls = [u for d in sorted(shards) for u in shards[d][0]]
    tokenizer = open_clip.get_tokenizer(MODEL)  # what medpclip.model.build_model returns for ViT-B-16
    preprocess = open_clip.image_transform(SIZE, is_train=True)  # create_model_and_transforms' train one
    n_batches = -(-samples_per_round // batch_size)
    # the stock stream ends after with_epoch batches per worker: room for start-up batches and a spare one
    stock_n = (n_batches + 2 * workers) * batch_size
    makers = {
        "ours": lambda seed: _ours(corpus, tokenizer, batch_size, workers, seed),
        "stock": lambda seed: _stock(urls, preprocess, tokenizer, batch_size, workers, seed, stock_n),
    }
    startup: dict[str, list[float]] = {k: [] for k in makers}
    rate: dict[str, list[float]] = {k: [] for k in makers}
    per_cpu: dict[str, list[float | None]] = {k: [] for k in makers}
    load_before = os.getloadavg()
    with _eof_fix():
        for r in range(rounds):
            order = list(makers) if r % 2 == 0 else list(makers)[::-1]
            for name in order:
                s, v, c = _round(makers[name], r, n_batches, workers)
                startup[name].append(s)
                rate[name].append(v)
                per_cpu[name].append(c)
    ratios = [o / s for o, s in zip(rate["ours"], rate["stock"], strict=True)]
    cpu_ratios = [o / s for o, s in zip(per_cpu["ours"], per_cpu["stock"], strict=True) if o and s]
    result = {
        "bench": "loader",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "webdataset": webdataset.__version__,
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "corpus": f"{what}, train split ({sum(n for _, n in shards.values())} samples, {len(urls)} shards)",
        "model": MODEL,
        "image_size": SIZE,
        "workers": workers,
        "batch_size": batch_size,
        "rounds": rounds,
        "samples_per_round": n_batches * batch_size,
        "samples_per_s_median": {k: round(statistics.median(v), 1) for k, v in rate.items()},
        "samples_per_s_rounds": {k: [round(x, 1) for x in v] for k, v in rate.items()},
        "startup_s_median": {k: round(statistics.median(v), 2) for k, v in startup.items()},
        "ours_vs_stock_ratios": [round(x, 3) for x in ratios],
        "ours_vs_stock_median": round(statistics.median(ratios), 3),
        # the same ratio per CPU-second: blind to other jobs taking the cores in bursts; with as many
        # workers as cores the loaders are CPU-bound, so on a quiet machine the two ratios agree
        "samples_per_cpu_s_median": {
            k: round(statistics.median(v), 1) if cpu_ratios else None for k, v in per_cpu.items()
        },
        "ours_vs_stock_cpu_ratios": [round(x, 3) for x in cpu_ratios],
        "ours_vs_stock_cpu_median": round(statistics.median(cpu_ratios), 3) if cpu_ratios else None,
    }
    print(f"{'loader':8s} {'samples/s':>10s} {'per CPU-s':>10s} {'start-up s':>11s}   samples/s per round")
    for k in makers:
        rounds_str = " ".join(f"{x:6.0f}" for x in result["samples_per_s_rounds"][k])
        cpu = result["samples_per_cpu_s_median"][k]
        print(
            f"{k:8s} {result['samples_per_s_median'][k]:10.1f} {cpu or float('nan'):10.1f} "
            f"{result['startup_s_median'][k]:11.2f}   {rounds_str}"
        )
    print(
        f"ours / stock, median of per-round ratios: {result['ours_vs_stock_median']} samples/s, "
        f"{result['ours_vs_stock_cpu_median']} per CPU-second (goal >= 1.0)"
    )
    save_result("loader" if kind == "demo" else f"loader-{kind}", result)
    return result


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:5]), *sys.argv[5:6])
