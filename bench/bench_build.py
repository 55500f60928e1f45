"""Build throughput on generated CT volumes: the full unit path against the codec floor and a naive slicer.

Data: ``bench/volumes.py`` cases (512×512×100 int16 HU, 13 BTCV organ labels, gzip NIfTI in the MSD layout),
one case per work unit. Three ways over the same cases, in one process (one core), interleaved round by
round so that machine noise hits them alike:

- ``floor``: what any slicer must do and nothing more: read the image and label volumes (nibabel, gzip
  through zlib-ng as the build reads it), put them in display orientation, window each axial slice to uint8
  and PNG-encode it (the build's encoder and level).
- ``medpclip``: the build's own unit function (``corpus.unit.run_unit``, what each Ray task runs) on every
  unit: read, window, resize, regions (instances, COCO RLE, box, points), concept + texts, record, PNG, JSON,
  dHash and pixel hash, tar shards, four Parquet manifests, the marker; then the build's finish step
  (indexes, build.json) once per round, timed apart.
- ``naive``: a script in the style public 2D-from-3D corpora are made with: per slice one PNG image plus one
  binary PNG per connected region instance, one JSON index — same windowing, same PNG level, files in folders.

The floor and the naive slicer keep the same slices the build keeps (slices with at least one label).
Reports samples/s per core (median of rounds) and the medians of the per-round ratios medpclip/floor
(goal ≥ 0.7) and medpclip/naive (goal > 1), with what each produced (files, bytes, regions).

    PYTHONPATH=. .venv/bin/python -m bench.bench_build [rounds] [cases]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench.common import save_result
from bench.volumes import FOLDER, write_ct_dataset
from medpclip import imaging
from medpclip.corpus.build import finish_build, prepare_build
from medpclip.corpus.encoding import encode_png
from medpclip.corpus.sample import SampleParams
from medpclip.corpus.unit import run_unit
from medpclip.sources.volumes.nifti_files import load_nifti
from medpclip.specs import load_spec_file

DATA = Path(__file__).parent / "data" / "build"
MAX_SIDE = 512
PNG_LEVEL = SampleParams().png_compress_level
EIGHT = np.ones((3, 3), bool)


def _cases(raw_root: Path) -> list[tuple[Path, Path]]:
    meta = json.loads((raw_root / FOLDER / "dataset.json").read_text())
    return [(raw_root / FOLDER / e["image"], raw_root / FOLDER / e["label"]) for e in meta["training"]]


def _canonical(path: Path) -> np.ndarray:
    img = load_nifti(path)
    data, _ = imaging.reorient_canonical(np.asanyarray(img.dataobj), img.affine)
    return data


def floor(raw_root: Path, out: Path) -> dict:
    n = nbytes = 0
    for image_path, label_path in _cases(raw_root):
        hu, labels = _canonical(image_path), _canonical(label_path)
        for z in range(hu.shape[2]):
            lab = labels[:, :, z]
            if not lab.any():
                continue
            png = encode_png(imaging.window_ct(imaging.display_slice(hu[:, :, z]), "abdomen"), PNG_LEVEL)
            n, nbytes = n + 1, nbytes + len(png)
    return {"samples": n, "bytes": nbytes, "files": 0, "regions": 0}


def naive(raw_root: Path, out: Path) -> dict:
    """Per slice: image PNG + one binary PNG per instance, and a JSON index (the common public-corpus shape)."""
    names = {
        int(k): v for k, v in json.loads((raw_root / FOLDER / "dataset.json").read_text())["labels"].items()
    }
    index, n_regions, nbytes = [], 0, 0
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for image_path, label_path in _cases(raw_root):
        case = image_path.name.removesuffix(".nii.gz")
        hu, labels = _canonical(image_path), _canonical(label_path)
        for z in range(hu.shape[2]):
            lab = imaging.display_slice(labels[:, :, z])
            if not lab.any():
                continue
            stem = f"{case}_{z:04d}"
            png = encode_png(imaging.window_ct(imaging.display_slice(hu[:, :, z]), "abdomen"), PNG_LEVEL)
            (out / "images" / f"{stem}.png").write_bytes(png)
            nbytes += len(png)
            entry = {"image": f"images/{stem}.png", "masks": []}
            for v in np.unique(lab[lab > 0]).tolist():
                comps, k = ndimage.label(lab == v, structure=EIGHT)
                for i in range(1, k + 1):
                    comp = comps == i
                    ys, xs = np.nonzero(comp)
                    mask_png = encode_png(comp.astype(np.uint8) * 255, PNG_LEVEL)
                    rel = f"masks/{stem}_{v}_{i}.png"
                    (out / rel).write_bytes(mask_png)
                    nbytes += len(mask_png)
                    entry["masks"].append(
                        {
                            "file": rel,
                            "label": names[v],
                            "bbox": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
                        }
                    )
                    n_regions += 1
            index.append(entry)
    text = json.dumps(index)
    (out / "index.json").write_text(text)
    n_files = 1 + len(index) + n_regions
    return {"samples": len(index), "bytes": nbytes + len(text), "files": n_files, "regions": n_regions}


def medpclip_build(raw_root: Path, out: Path) -> dict:
    spec = load_spec_file(raw_root / "bench_ct.yaml")
    plan = prepare_build([spec], raw_root, out, max_side=MAX_SIDE, force=True)
    stats = [run_unit(u) for u in plan.units]
    t = time.perf_counter()
    finish_build(plan)
    finish_s = time.perf_counter() - t
    files = [p for p in out.rglob("*") if p.is_file() and "report" not in p.parts]
    members = Counter()
    for tar in out.glob("shards/*/*/*.tar"):
        with tarfile.open(tar) as t:
            for m in t:
                members[m.name.rsplit(".", 1)[-1]] += m.size
    return {
        "samples": sum(s["n_samples"] for s in stats),
        "regions": sum(s["n_regions"] for s in stats),
        "bytes": sum(p.stat().st_size for p in files),
        "files": len(files),
        "shard_bytes": sum(p.stat().st_size for p in out.glob("shards/*/*/*.tar")),
        "shard_member_bytes": dict(sorted(members.items())),
        "manifest_bytes": sum(p.stat().st_size for p in out.glob("manifests/**/*.parquet")),
        "finish_s": finish_s,
    }


STAGES = {"floor": floor, "medpclip": medpclip_build, "naive": naive}


def main(rounds: int = 3, n_cases: int = 4) -> dict:
    raw_root = write_ct_dataset(DATA / f"raw-{n_cases}", n_cases).parent
    work = DATA / "out"
    seconds: dict[str, list[float]] = {k: [] for k in STAGES}
    produced: dict[str, dict] = {}
    for _ in range(rounds):
        for name, fn in STAGES.items():
            out = work / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            t = time.perf_counter()
            produced[name] = fn(raw_root, out)
            seconds[name].append(time.perf_counter() - t)
    samples = produced["floor"]["samples"]
    assert all(p["samples"] == samples for p in produced.values()), produced  # same slices everywhere
    rate = {k: [samples / s for s in v] for k, v in seconds.items()}
    result = {
        "bench": "build",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "data": f"{n_cases} generated CT volumes 512x512x100, 13 labels (bench/volumes.py)",
        "rounds": rounds,
        "samples_per_round": samples,
        "raw_bytes": sum(p.stat().st_size for p in (raw_root / FOLDER).rglob("*.nii.gz")),
        "seconds": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
        "samples_per_s_per_core": {k: round(statistics.median(v), 1) for k, v in rate.items()},
        "medpclip_vs_floor": round(
            statistics.median(m / f for m, f in zip(rate["medpclip"], rate["floor"], strict=True)), 3
        ),
        "medpclip_vs_naive": round(
            statistics.median(m / n for m, n in zip(rate["medpclip"], rate["naive"], strict=True)), 3
        ),
        "produced": produced,
    }
    print(f"{samples} samples per round, {rounds} rounds, one core")
    print(f"{'stage':10s} {'samples/s':>10s} {'files':>7s} {'MB':>8s} {'regions':>8s}")
    for k in STAGES:
        p = produced[k]
        print(
            f"{k:10s} {result['samples_per_s_per_core'][k]:10.1f} {p['files']:7d} {p['bytes'] / 1e6:8.1f} "
            f"{p['regions']:8d}"
        )
    print(
        f"medpclip / floor: {result['medpclip_vs_floor']}   medpclip / naive: {result['medpclip_vs_naive']}"
    )
    save_result("build", result)
    return result


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
