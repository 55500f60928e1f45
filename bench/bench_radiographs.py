"""The whole ``medpclip build`` process on 1024² radiographs against a decode + encode floor (issue 18, goal 1).

Data: ``bench/radiographs.py``: ``images`` (default 1,000) 1024² 8-bit PNG chest radiographs cut from the
real radiographs in pydicom-data, in NIH ChestX-ray14's layout, built with the shipped ``chestxray14`` spec
(every image a sample, boxes on one in ten, image-level findings). Every round:

- **medpclip**: ``medpclip build --spec chestxray14 --num-cpus 2`` as a fresh process, start to exit; the
  units phase is read from the build report.
- **floors**, one process, one core, over ``floor_images`` of the images: decode the PNG (Pillow) and encode
  it again as the sample's PNG, ``floor_tools`` with Pillow at level 6 (the encoder before issue 18) and
  ``floor_codecs`` with the build's ``encoding.encode_png``.

Reported: medians over rounds, and medians of the per-round ratios of medpclip's images per second per core,
end to end and in the units phase, over each floor's (goal ≥ 0.7 end to end).

    PYTHONPATH=. .venv/bin/python -m bench.bench_radiographs [rounds] [images] [floor_images]
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.bench_peer import CPUS, run_medpclip
from bench.common import pillow_png, save_result
from bench.radiographs import write_cxr8
from medpclip.corpus.encoding import codec_versions, encode_png
from medpclip.corpus.sample import SampleParams

DATA = Path(__file__).parent / "data" / "radiographs"
PNG_LEVEL = SampleParams().png_compress_level


def floor(raw: Path, n: int, codecs: str) -> dict:
    encode = pillow_png if codecs == "tools" else (lambda a: encode_png(a, PNG_LEVEL))
    files = sorted((raw / "CXR8" / "images" / "images").glob("*.png"))[:n]
    started = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            encode(np.asarray(im.convert("L")))
    seconds = time.perf_counter() - started
    return {"images": len(files), "seconds": seconds, "rate_per_core": len(files) / seconds}


def main(rounds: int = 3, images: int = 1000, floor_images: int = 100) -> dict:
    raw = write_cxr8(DATA / "raw", images)
    spec = "chestxray14"
    runs: dict[str, list[dict]] = {"medpclip": [], "floor_tools": [], "floor_codecs": []}
    for r in range(rounds):
        runs["medpclip"].append(run_medpclip(spec, raw, DATA / "out"))
        print(f"round {r + 1} medpclip: {runs['medpclip'][-1]['wall_s']:.2f} s", flush=True)
        for codecs in ("tools", "codecs"):
            runs[f"floor_{codecs}"].append(floor(raw, floor_images, codecs))
    ours = runs["medpclip"]
    samples = ours[0]["samples"]
    result: dict = {
        "params": {"rounds": rounds, "images": images, "floor_images": floor_images, "cpus": CPUS},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "codecs": codec_versions()},
        "medpclip": {
            "wall_s": round(statistics.median(o["wall_s"] for o in ours), 3),
            "units_s": round(statistics.median(o["units_s"] for o in ours), 3),
            "steps_s": {
                k: round(statistics.median(o["steps_s"][k] for o in ours), 3) for k in ours[0]["steps_s"]
            },
            "samples": samples,
            "regions": ours[0]["regions"],
            "bytes": ours[0]["bytes"],
        },
    }
    for name in ("floor_tools", "floor_codecs"):
        rates = [f["rate_per_core"] for f in runs[name]]
        result[name] = {
            "images_per_s_per_core": round(statistics.median(rates), 2),
            "end_to_end_ratio": round(
                statistics.median(samples / o["wall_s"] / CPUS / f for o, f in zip(ours, rates, strict=True)),
                3,
            ),
            "units_ratio": round(
                statistics.median(
                    samples / o["units_s"] / CPUS / f for o, f in zip(ours, rates, strict=True)
                ),
                3,
            ),
        }
    m = result["medpclip"]
    print(f"\n{images} radiographs, {CPUS} CPUs; codecs: {result['machine']['codecs']}")
    print(f"medpclip: {m['wall_s']:.2f} s end to end, units {m['units_s']:.2f} s, steps {m['steps_s']}")
    print(f"          {m['samples']} samples, {m['regions']} regions, {m['bytes'] / 1e6:.1f} MB")
    for name in ("floor_tools", "floor_codecs"):
        f = result[name]
        print(
            f"{name}: {f['images_per_s_per_core']:.1f} images/s/core; medpclip end to end "
            f"{f['end_to_end_ratio']:.2f} of it, units {f['units_ratio']:.2f}"
        )
    save_result("radiographs", result)
    return result


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
