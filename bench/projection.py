"""Projection to the full corpus (6.4 M images, 97.3 M regions) on a 16-node × 32-core Ray cluster, from the
numbers the other benchmarks measured on this machine (no new measurement; run them first).

Inputs (``bench/results/``): ``build.json`` (one core, full unit path on 512² CT slices: samples/s, and the
bytes it wrote per sample), ``harmonize.json`` (per-frame cost on dense frames with ~19 regions: the
region-heavy bound), ``scaling.json`` (1 → 2 workers efficiency, Ray start-up, finish), ``warehouse-1.json``
(manifest bytes per region at full scale).

Per-core rate of the real mix: the CT bench has 4.1 regions per sample; the real corpus averages
97.3 / 6.4 = 15.2. Region work is priced per region from the harmonize bench (its regions stage over its
regions per frame) and added for the extra regions. Cluster efficiency is the measured 2-worker efficiency
(units phase speed-up / 2), kept for every core — an assumption: a cluster also needs its storage to keep up,
and the input bandwidth that takes is printed so it can be checked against the storage at hand.

    PYTHONPATH=. .venv/bin/python -m bench.projection
"""

from __future__ import annotations

import json

from bench.common import RESULTS, save_result

IMAGES, REGIONS = 6.4e6, 97.3e6
NODES, CORES_PER_NODE = 16, 32


def main() -> dict:
    build = json.loads((RESULTS / "build.json").read_text())
    harmonize = json.loads((RESULTS / "harmonize.json").read_text())
    scaling = json.loads((RESULTS / "scaling.json").read_text())
    warehouse = json.loads((RESULTS / "warehouse-1.json").read_text())

    samples = build["samples_per_round"]
    ours = build["produced"]["medpclip"]
    ct_rate = build["samples_per_s_per_core"]["medpclip"]
    ct_regions = ours["regions"] / samples
    ms_per_region = harmonize["median_ms_per_frame"]["regions"] / harmonize["regions_per_frame"]
    regions_per_image = REGIONS / IMAGES
    mix_ms = 1e3 / ct_rate + (regions_per_image - ct_regions) * ms_per_region
    mix_rate = 1e3 / mix_ms
    efficiency = scaling["scaling"]["speedup_units_median"] / 2
    cores = NODES * CORES_PER_NODE
    core_hours = IMAGES / mix_rate / 3600
    fixed_s = (
        scaling["scaling"]["K=2"]["median_step_s"]["ray start"]
        + scaling["scaling"]["K=2"]["median_step_s"]["ray stop"]
    )
    units_wall_s = IMAGES / (cores * mix_rate * efficiency)

    raw_bytes_per_sample = build["raw_bytes"] / samples
    shard_bytes_per_sample = ours["shard_bytes"] / samples
    # a record's bytes over its regions: an upper bound per region (the sample's own fields are in it)
    record_bytes_per_region = ours["shard_member_bytes"]["json"] / ours["regions"]
    extra_regions = REGIONS - IMAGES * ct_regions
    shards_tb = (IMAGES * shard_bytes_per_sample + extra_regions * record_bytes_per_region) / 1e12
    manifests_gb = (
        REGIONS * warehouse["bytes_per_region"] / 1e9 + IMAGES * warehouse["bytes_per_sample_row"] / 1e9
    )
    input_gb_s = cores * mix_rate * efficiency * raw_bytes_per_sample / 1e9
    result = {
        "bench": "projection",
        "cluster": f"{NODES} nodes x {CORES_PER_NODE} cores = {cores} cores",
        "measured_ct_samples_per_s_per_core": ct_rate,
        "ct_regions_per_sample": round(ct_regions, 2),
        "ms_per_extra_region": round(ms_per_region, 3),
        "real_mix_regions_per_image": round(regions_per_image, 1),
        "projected_samples_per_s_per_core": round(mix_rate, 1),
        "two_worker_efficiency": round(efficiency, 3),
        "core_hours": round(core_hours, 1),
        "units_wall_min": round(units_wall_s / 60, 1),
        "ray_start_stop_s": round(fixed_s, 1),
        "input_gb_per_s_needed": round(input_gb_s, 2),
        "raw_kb_per_sample": round(raw_bytes_per_sample / 1e3, 1),
        "shard_kb_per_sample_ct_bench": round(shard_bytes_per_sample / 1e3, 1),
        "record_bytes_per_region": round(record_bytes_per_region),
        "shards_tb": round(shards_tb, 2),
        "manifests_gb": round(manifests_gb, 1),
    }
    for k, v in result.items():
        print(f"{k:38s} {v}")
    save_result("projection", result)
    return result


if __name__ == "__main__":
    main()
