"""Per-frame harmonisation against the codec floor, side by side in one run.

Generated 512×512 CT slices (HU) with a 10-label map (1–3 components per label). Three stages, interleaved
round-robin so machine noise hits them alike:
- ``floor``: window + PNG encode only (what any slicer must do);
- ``regions``: ``regions.extract_regions`` alone (instances → RLE → box → points);
- ``sample``: ``corpus.sample.make_sample``, the whole per-frame path (window, resize, regions, texts, record,
  PNG, JSON).
Reports medians over rounds and the ratio floor/sample (fraction of the floor's rate that we keep).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import numpy as np

from bench.common import ct_spec, save_result
from medpclip import imaging, regions
from medpclip.corpus.encoding import encode_png
from medpclip.corpus.sample import SampleParams, make_sample
from medpclip.fileio import stable_json
from medpclip.frame import Frame, SourceFile, SourceItem

SIZE, N_LABELS = 512, 10
SPEC = ct_spec([f"organ_{v}" for v in range(1, N_LABELS + 1)])


def make_frames(n: int, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    item = SourceItem("bench_ct", "case_1", (SourceFile("image", "x/img.nii.gz"),), "1")
    frames = []
    for i in range(n):
        hu = rng.normal(40, 20, (SIZE, SIZE)).astype(np.float32)
        lm = np.zeros((SIZE, SIZE), np.uint8)
        for v in range(1, N_LABELS + 1):
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(40, SIZE - 40, 2)
                ry, rx = rng.integers(6, 70, 2)
                inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
                lm[inside] = v
                hu[inside] += 15 * v
        frames.append(
            Frame(
                item=item,
                image=hu,
                intensity="hu",
                plane="ax",
                slice_index=i,
                spacing_mm=(0.8, 0.8),
                label_map=lm,
                label_values={v: f"organ_{v}" for v in range(1, N_LABELS + 1)},
            )
        )
    return frames


def floor(frame: Frame) -> None:
    encode_png(imaging.window_ct(frame.image, "abdomen"), 6)


def regions_only(frame: Frame) -> list[regions.Region]:
    return regions.extract_regions(
        frame.shape,
        label_map=frame.label_map,
        label_values=frame.label_values,
        min_area_px=regions.min_area(SIZE, SIZE, 0.0005, 16),
        rng_for=lambda k: np.random.default_rng(0),
    )[0]


def sample(frame: Frame) -> None:
    s, _ = make_sample(
        frame,
        SPEC,
        SampleParams(),
        key=f"bench_ct_case_1_ax{frame.slice_index:04d}",
        split="train",
        source_files=[{"role": "image", "path": "x/img.nii.gz", "sha256": "0" * 64}],
    )
    stable_json(s.record)


def main(rounds: int = 5, frames_per_round: int = 20) -> dict:
    frames = make_frames(frames_per_round)
    stages = {"floor": floor, "regions": regions_only, "sample": sample}
    per_frame: dict[str, list[float]] = {k: [] for k in stages}
    for _ in range(rounds):
        for name, fn in stages.items():
            t = time.perf_counter()
            for f in frames:
                fn(f)
            per_frame[name].append((time.perf_counter() - t) / len(frames))
    med = {k: statistics.median(v) for k, v in per_frame.items()}
    ratios = [f / s for f, s in zip(per_frame["floor"], per_frame["sample"], strict=True)]
    result = {
        "bench": "harmonize",
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "frame": f"{SIZE}x{SIZE} CT, {N_LABELS} labels",
        "rounds": rounds,
        "frames_per_round": frames_per_round,
        "regions_per_frame": round(sum(len(regions_only(f)) for f in frames) / len(frames), 2),
        "median_ms_per_frame": {k: round(v * 1e3, 2) for k, v in med.items()},
        "frames_per_s_per_core": {k: round(1 / v, 1) for k, v in med.items()},
        "sample_vs_floor_rate_median": round(statistics.median(ratios), 3),
    }
    print(f"{'stage':10s} {'ms/frame':>10s} {'frames/s/core':>14s}")
    for k in stages:
        print(f"{k:10s} {result['median_ms_per_frame'][k]:10.2f} {result['frames_per_s_per_core'][k]:14.1f}")
    print(f"sample rate / floor rate (median of per-round ratios): {result['sample_vs_floor_rate_median']}")
    save_result("harmonize", result)
    return result


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
