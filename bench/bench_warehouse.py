"""The warehouse at full scale: DuckDB over manifests the size and skew of the real corpus.

Generates (once, cached under ``bench/data/warehouse``) the samples and regions manifests of a corpus of
6.4 M samples and 97.3 M regions over 120 datasets, 14 modalities and ~200 labels, in the corpus layout
(``manifests/{samples,regions}/{dataset}/{unit}.parquet``, rows sorted by key within a unit, the builder's
Arrow schemas), with Zipf-like skew: a few datasets hold most samples, a few labels most regions. Then times
five typical queries through ``medpclip.warehouse.connect`` (the views users query), median of 3 runs after
one warm-up, and reports bytes per region on disk.

``python -m bench.bench_warehouse [scale]`` — scale 1.0 is the full corpus; 0.01 for a quick look.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import duckdb

from bench.common import save_result
from medpclip.corpus.schema import REGIONS, SAMPLES
from medpclip.warehouse import connect

FULL_SAMPLES, FULL_REGIONS = 6_400_000, 97_300_000
N_DATASETS, N_MODALITIES, N_LABELS, UNIT_SAMPLES = 120, 14, 200, 20_000
ROOT = Path(__file__).parent / "data" / "warehouse"

QUERIES = {
    "label x modality x split counts": "SELECT label, modality, split, count(*) AS n FROM regions GROUP BY ALL",
    "one dataset's label histogram": "SELECT label, count(*) FROM regions WHERE dataset = 'ds_007' GROUP BY label",
    "regions of one CUI, area > 1 %": "SELECT key, rid, area_px FROM regions WHERE cui = 'C0000017' AND area_fraction > 0.01",
    "a sample's regions by key": "SELECT * FROM regions WHERE key = 'ds_002_case-0000012_ax0042'",
    "patient leakage check": "SELECT dataset, patient_id FROM samples GROUP BY ALL HAVING count(DISTINCT split) > 1",
}


def _duck_type(t) -> str:
    import pyarrow as pa

    if pa.types.is_list(t):
        return "VARCHAR[]"
    return {
        "string": "VARCHAR",
        "int8": "TINYINT",
        "int16": "SMALLINT",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "float": "FLOAT",
        "bool": "BOOLEAN",
    }[str(t)]


def generate(root: Path, scale: float) -> None:
    """Per dataset, per unit: samples then their regions, generated inside DuckDB (no Python row loops)."""
    n_samples = int(FULL_SAMPLES * scale)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    # Dataset sizes ~ 1/rank (Zipf), summing to n_samples.
    weights = [1 / (r + 1) for r in range(N_DATASETS)]
    sizes = [max(1, int(n_samples * w / sum(weights))) for w in weights]
    for d, size in enumerate(sizes):
        ds = f"ds_{d:03d}"
        modality = f"MOD{d % N_MODALITIES:02d}"
        for unit_start in range(0, size, UNIT_SAMPLES):
            unit = unit_start // UNIT_SAMPLES
            n = min(UNIT_SAMPLES, size - unit_start)
            for kind in ("samples", "regions"):
                (root / "manifests" / kind / ds).mkdir(parents=True, exist_ok=True)
            sample_sql = f"""
              SELECT printf('{ds}_case-%07d_ax%04d', (i // 100)::INT, (i % 100)::INT) AS key, '{ds}' AS dataset,
                CASE WHEN hash(i // 100, {d}) % 10 < 8 THEN 'train' WHEN hash(i // 100, {d}) % 10 < 9 THEN 'val'
                     ELSE 'test' END AS split,
                '{modality}' AS modality, 'abdomen' AS body_part, 'ax' AS plane, (i % 100)::INT AS slice_index,
                512 AS width, 512 AS height, 1::TINYINT AS channels, 0.7::FLOAT AS spacing_row_mm,
                0.7::FLOAT AS spacing_col_mm, 'ct:abdomen' AS intensity,
                substr(md5('{ds}' || (i // 100)::VARCHAR), 1, 16) AS patient_id, NULL::VARCHAR AS study_id,
                substr(md5('c' || (i // 100)::VARCHAR), 1, 16) AS case_id_hash,
                '{ds}/img/' || (i // 100)::VARCHAR || '.nii.gz' AS source_path, md5(i::VARCHAR) AS source_sha256,
                'An axial CT image of the abdomen.' AS caption, []::VARCHAR[] AS image_labels,
                NULL::VARCHAR AS report_text, (15 + (hash(i, 1) % 5 = 0)::INT) AS n_regions,  -- 15.2 on average
                md5('p' || i::VARCHAR) || md5('q' || i::VARCHAR) AS pixel_sha256, (hash(i) % 9223372036854775807)::BIGINT AS phash,
                'png' AS image_format, 150000::BIGINT AS image_bytes, 'shards/{ds}/train/train-{unit:05d}-00.tar' AS shard, {unit} AS unit
              FROM range({unit_start}, {unit_start + n}) t(i) ORDER BY key"""
            cols = ", ".join(f"{f.name}::{_duck_type(f.type)} AS {f.name}" for f in SAMPLES)
            con.execute(
                f"COPY (SELECT {cols} FROM ({sample_sql})) TO "
                f"'{root}/manifests/samples/{ds}/{unit:05d}.parquet' (FORMAT parquet, COMPRESSION zstd)"
            )
            # Regions: ~15 per sample; label ~ Zipf over 200 labels via a skewed hash.
            region_sql = f"""
              WITH s AS (SELECT * FROM read_parquet('{root}/manifests/samples/{ds}/{unit:05d}.parquet'))
              SELECT s.key, r.rid::INT AS rid, s.dataset, s.split, s.modality, s.body_part, s.plane,
                'label_' || lpad((floor(pow(hash(s.key, r.rid) % 1000000 / 1e6, 3) * {N_LABELS}))::INT::VARCHAR, 3, '0') AS label,
                'Label' AS name, 'organ' AS category,
                'C' || lpad((floor(pow(hash(s.key, r.rid) % 1000000 / 1e6, 3) * {N_LABELS}))::INT::VARCHAR, 7, '0') AS cui,
                'C' || lpad((floor(pow(hash(s.key, r.rid) % 1000000 / 1e6, 3) * {N_LABELS}))::INT::VARCHAR, 7, '0') AS concept_id,
                ['T023'] AS semantic_types, 'mask' AS kind, 0 AS instance,
                (100 + hash(s.key, r.rid, 7) % 20000)::BIGINT AS area_px,
                ((100 + hash(s.key, r.rid, 7) % 20000) / 262144.0)::FLOAT AS area_fraction,
                10 AS x0, 10 AS y0, 90 AS x1, 90 AS y1, 5::SMALLINT AS n_points, true AS has_mask,
                NULL::VARCHAR AS annotator, s.patient_id
              FROM s, range(s.n_regions) r(rid) ORDER BY s.key, rid"""
            cols = ", ".join(f"{f.name}::{_duck_type(f.type)} AS {f.name}" for f in REGIONS)
            con.execute(
                f"COPY (SELECT {cols} FROM ({region_sql})) TO "
                f"'{root}/manifests/regions/{ds}/{unit:05d}.parquet' (FORMAT parquet, COMPRESSION zstd)"
            )
    for kind in ("sources", "rejects"):
        (root / "manifests" / kind / "ds_000").mkdir(parents=True, exist_ok=True)
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{root}/manifests/samples/ds_000/00000.parquet') LIMIT 0) "
            f"TO '{root}/manifests/{kind}/ds_000/00000.parquet' (FORMAT parquet)"
        )
    (root / "manifests" / "units" / "ds_000").mkdir(parents=True, exist_ok=True)
    (root / "manifests" / "units" / "ds_000" / "00000.json").write_text(
        json.dumps(
            {
                "dataset": "ds_000",
                "unit": 0,
                "shards": [
                    {
                        "path": "shards/ds_000/train/train-00000-00.tar",
                        "n_samples": 1,
                        "bytes": 1,
                        "sha256": "0",
                    }
                ],
            }
        )
    )
    (root / "build.json").write_text(json.dumps({"generated_for": "bench_warehouse", "scale": scale}))


def main(scale: float = 1.0) -> dict:
    root = ROOT / f"scale-{scale:g}"
    if not (root / "build.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        generate(root, scale)
        print(f"generated {root} in {time.perf_counter() - t:.0f}s")
    con = connect(root)
    n_samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    n_regions = con.execute("SELECT count(*) FROM regions").fetchone()[0]
    region_bytes = sum(p.stat().st_size for p in (root / "manifests" / "regions").rglob("*.parquet"))
    sample_bytes = sum(p.stat().st_size for p in (root / "manifests" / "samples").rglob("*.parquet"))
    results = {}
    for name, sql in QUERIES.items():
        con.execute(sql).fetchall()  # warm-up: file metadata and OS cache, as in interactive use
        times = []
        for _ in range(3):
            t = time.perf_counter()
            rows = con.execute(sql).fetchall()
            times.append(time.perf_counter() - t)
        results[name] = {"median_s": round(statistics.median(times), 3), "rows": len(rows)}
    con.close()
    out = {
        "bench": "warehouse",
        "scale": scale,
        "samples": n_samples,
        "regions": n_regions,
        "bytes_per_region": round(region_bytes / max(n_regions, 1), 2),
        "bytes_per_sample_row": round(sample_bytes / max(n_samples, 1), 2),
        "cpus": os.cpu_count(),
        "duckdb": duckdb.__version__,
        "queries": results,
    }
    print(f"{n_samples:,} samples, {n_regions:,} regions; {out['bytes_per_region']} bytes/region on disk")
    print(f"{'query':36s} {'median s':>9s} {'rows':>8s}")
    for name, r in results.items():
        print(f"{name:36s} {r['median_s']:9.3f} {r['rows']:8d}")
    save_result(f"warehouse-{scale:g}", out)
    return out


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
