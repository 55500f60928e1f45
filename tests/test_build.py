"""End to end on the demo data with a real Ray and a real DuckDB: build, read back, query, resume, rebuild."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import webdataset as wds
from corpus_utils import DEMO_SPECS, tree_hashes
from typer.testing import CliRunner

from medpclip.cli import app
from medpclip.corpus.build import build_corpus
from medpclip.corpus.inspect import check_corpus, load_sample
from medpclip.corpus.unit import marker_path
from medpclip.regions import decode_rle
from medpclip.specs import resolve_specs
from medpclip.warehouse import query

pytestmark = pytest.mark.slow
runner = CliRunner()


def _one(corpus: Path, sql: str):
    return query(corpus, sql)[1][0][0]


def test_demo_build_is_valid(demo_corpus):
    out = demo_corpus.out
    report = check_corpus(out)
    assert report.problems == []
    totals = demo_corpus.build["totals"]
    assert report.samples == totals["samples"] > 0 and report.regions == totals["regions"] > 0
    assert {d["name"] for d in demo_corpus.build["datasets"]} == set(DEMO_SPECS)


def test_duckdb_counts_equal_shard_counts(demo_corpus):
    out = demo_corpus.out
    shard_total = sum(n for _, n in query(out, "SELECT path, n_samples FROM shards")[1])
    assert _one(out, "SELECT count(*) FROM samples") == shard_total
    wds_count = 0
    for (path,) in query(out, "SELECT path FROM shards ORDER BY path")[1]:
        wds_count += sum(1 for _ in wds.WebDataset(str(out / path), shardshuffle=False))
    assert wds_count == shard_total
    assert _one(out, "SELECT sum(n_regions) FROM samples") == _one(out, "SELECT count(*) FROM regions")
    sizes = json.loads((out / "sizes.json").read_text())
    assert sum(sizes.values()) == shard_total


def test_photographs_are_jpeg_and_stock_loaders_read_both_kinds(demo_corpus):
    """The demo polyps (colour endoscopy JPEGs, not resized) are stored as their source bytes without
    metadata; CT and radiographs stay PNG; webdataset's stock decoder (what open_clip uses, ``jpg;png``) reads
    every sample."""
    out = demo_corpus.out
    kinds = dict(
        query(out, "SELECT modality, string_agg(DISTINCT image_format) FROM samples GROUP BY ALL")[1]
    )
    assert kinds == {"CT": "png", "XR": "png", "endoscopy": "jpg"}
    ratio = _one(
        out,
        "SELECT max(s.image_bytes / r.bytes) FROM samples s JOIN sources r "
        "ON s.source_path = r.path AND r.role = 'image' WHERE s.image_format = 'jpg'",
    )
    assert ratio <= 1.0  # the source's bytes less its metadata: never more
    n = 0
    for (path,) in query(out, "SELECT path FROM shards ORDER BY path")[1]:
        for image, text in (
            wds.WebDataset(str(out / path), shardshuffle=False).decode("pil").to_tuple("jpg;png", "txt")
        ):
            assert image.size[0] > 0 and text
            n += 1
    assert n == _one(out, "SELECT count(*) FROM samples")


def test_no_patient_in_two_splits(demo_corpus):
    rows = query(
        demo_corpus.out,
        "SELECT dataset, patient_id FROM samples GROUP BY ALL HAVING count(DISTINCT split) > 1",
    )[1]
    assert rows == []


def test_ct_regions(demo_corpus):
    out = demo_corpus.out
    # The kidney label has two components (left, right) on the slices that show both.
    both = _one(
        out,
        "SELECT count(*) FROM (SELECT key FROM regions WHERE label='kidney' GROUP BY key HAVING max(instance)=1)",
    )
    assert both > 0
    # The tiny lesion is below the minimum area: dropped and counted, never a region.
    assert _one(out, "SELECT count(*) FROM regions WHERE label = 'liver tumour'") == 0
    assert (
        _one(out, "SELECT count(*) FROM rejects WHERE reason='below_min_area' AND label='liver tumour'") >= 1
    )
    # Every CT sample is a mask region sample with a CT window recorded.
    assert (
        _one(out, "SELECT count(*) FROM samples WHERE dataset='demo_ct' AND intensity NOT LIKE 'ct:%'") == 0
    )
    assert _one(out, "SELECT count(*) FROM regions WHERE dataset='demo_ct' AND kind <> 'mask'") == 0


def test_liver_is_on_the_image_left_after_reorientation(demo_corpus):
    out = demo_corpus.out
    key = _one(out, "SELECT key FROM regions WHERE label='liver' ORDER BY area_px DESC, key LIMIT 1")
    image, record = load_sample(out, key)
    liver = next(r for r in record["regions"] if r["label"] == "liver")
    mask = decode_rle(liver["mask_rle"])
    assert mask.shape == image.shape[:2] == (record["height"], record["width"])
    xs = mask.nonzero()[1]
    assert xs.mean() < record["width"] / 2  # patient's right is on the image left (radiological view)


def test_box_and_junk_handling(demo_corpus, demo_raw):
    out = demo_corpus.out
    assert _one(out, "SELECT count(*) FROM regions WHERE dataset='demo_cxr' AND kind='box'") > 0
    assert _one(out, "SELECT count(*) FROM regions WHERE dataset='demo_cxr' AND has_mask") == 0
    # The box list says "Infiltrate"; the record uses the spec's label.
    assert _one(out, "SELECT count(*) FROM regions WHERE label = 'Infiltrate'") == 0
    # The macOS ._ junk file is neither a source nor a reject.
    assert _one(out, "SELECT count(*) FROM sources WHERE path LIKE '%/._%'") == 0
    # Official test list respected: no test-list image outside the test split.
    test_list = {line.strip() for line in (demo_raw / "ChestX-ray14/test_list.txt").read_text().split()}
    rows = query(out, "SELECT source_path, split FROM samples WHERE dataset='demo_cxr'")[1]
    assert rows and all((Path(p).name in test_list) == (s == "test") for p, s in rows)


def test_rebuild_same_bytes_and_resume_skips(demo_corpus, demo_raw, tmp_path):
    first = tree_hashes(demo_corpus.out)
    out = tmp_path / "again"
    specs = resolve_specs(DEMO_SPECS)
    r2 = build_corpus(specs, demo_raw, out, max_side=256)
    assert r2.units_skipped == 0
    assert tree_hashes(out) == first  # two clean builds: identical bytes, every file
    # Resume: all units finished → all kept, nothing rewritten.
    r3 = build_corpus(specs, demo_raw, out, max_side=256)
    assert r3.units_run == 0 and r3.units_skipped == r2.units_run
    assert tree_hashes(out) == first
    # A lost unit (its marker gone, as after a crash) is rebuilt alone, to the same bytes.
    marker = marker_path(out, "demo_polyp", 0)
    marker.unlink()
    r4 = build_corpus(specs, demo_raw, out, max_side=256)
    assert r4.units_run == 1
    assert tree_hashes(out) == first


def test_copied_raw_root_resumes(demo_corpus, demo_raw, tmp_path):
    moved = tmp_path / "raw-moved"
    shutil.copytree(demo_raw, moved)
    out = tmp_path / "c"
    shutil.copytree(demo_corpus.out, out)
    r = build_corpus(resolve_specs(DEMO_SPECS), moved, out, max_side=256)
    assert r.units_run == 0


def test_cli_query_show_validate(demo_corpus, tmp_path):
    out = demo_corpus.out
    res = runner.invoke(
        app,
        [
            "query",
            "--corpus",
            str(out),
            "--format",
            "json",
            "SELECT dataset, count(*) AS n FROM samples GROUP BY dataset ORDER BY dataset",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["dataset"] for r in rows] == sorted(DEMO_SPECS) and all(r["n"] > 0 for r in rows)
    res = runner.invoke(
        app, ["query", "--corpus", str(out), "--format", "csv", "SELECT count(*) AS n FROM regions"]
    )
    assert res.exit_code == 0 and res.stdout.splitlines()[0] == "n"
    res = runner.invoke(app, ["query", "--corpus", str(out), "SELECT * FROM nope"])
    assert res.exit_code == 2 and "nope" in res.output
    key = _one(out, "SELECT key FROM samples WHERE n_regions > 1 ORDER BY key LIMIT 1")
    png = tmp_path / "show.png"
    res = runner.invoke(app, ["show", "--corpus", str(out), key, "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, ["show", "--corpus", str(out), "no_such_key", "--out", str(png)])
    assert res.exit_code == 2 and "no sample 'no_such_key'" in res.output
    res = runner.invoke(app, ["validate", "--corpus", str(out)])
    assert res.exit_code == 0, res.output


def test_validate_catches_a_tampered_shard(demo_corpus, tmp_path):
    out = tmp_path / "tampered"
    shutil.copytree(demo_corpus.out, out)
    path = _one(out, "SELECT path FROM shards ORDER BY path LIMIT 1")
    data = bytearray((out / path).read_bytes())
    data[600] ^= 0xFF
    (out / path).write_bytes(bytes(data))
    res = runner.invoke(app, ["validate", "--corpus", str(out)])
    assert res.exit_code == 1 and "sha256" in res.output


def test_build_with_nothing_to_do_fails_with_one_line(tmp_path):
    import ray

    ray_before = ray.is_initialized()  # another test of this session may hold a Ray in this process
    res = runner.invoke(
        app, ["build", "--spec", "demo_ct", "--raw-root", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 1 and "missing_root" in res.output
    # the driver plans while Ray starts (corpus.build): a plan that fails stops the Ray it started
    assert ray.is_initialized() == ray_before
    res = runner.invoke(
        app, ["build", "--spec", "nope", "--raw-root", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "unknown spec 'nope'" in res.output
