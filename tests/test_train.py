"""Training data pipeline on the demo corpus, and the tiny model really learning with Ray Train.

The learning test trains `--model tiny` through `medpclip train` (2 Ray Train workers over gloo, on the
session's Ray), kills it with SIGKILL right after its first checkpoint, resumes it in-process to the end,
then evaluates on the held-out patients of demo_ct (val + test splits): region classification must be far
above chance and far above the same model given prompts shuffled between regions.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medpclip.cli import app
from medpclip.corpus.encoding import image_member
from medpclip.corpus.shards import iter_samples
from medpclip.evaluate import COLUMNS, evaluate
from medpclip.model import build_model
from medpclip.model.medpclip import ModelConfig
from medpclip.regions import encode_rle, tight_box
from medpclip.train.data import (
    DataConfig,
    DataStats,
    SampleMaker,
    TokenCache,
    TrainStream,
    View,
    collate,
    full_view,
    random_view,
    shard_lists,
    train_loader,
)
from medpclip.train.loop import RUN_NAME, TrainConfig, latest_checkpoint, train, verified_step
from medpclip.warehouse import query

pytestmark = pytest.mark.slow  # builds the demo corpus; the learning test starts Ray Train
BIN = Path(sys.executable).parent
STEPS, KILL_AT = 200, 100
S = 64


@pytest.fixture(scope="module")
def corpus(demo_corpus, tmp_path_factory) -> Path:
    """A private copy of the demo corpus: evaluation writes metrics/ into the corpus it measured."""
    out = tmp_path_factory.mktemp("train") / "corpus"
    shutil.copytree(demo_corpus.out, out)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return build_model(ModelConfig(name="tiny"))[1]


def _records(corpus: Path, dataset: str, splits=("train", "val", "test")):
    for urls, _ in [v for k, v in shard_lists(corpus, list(splits), [dataset]).items() if k == dataset]:
        for url in urls:
            for key, members in iter_samples(Path(url)):
                yield key, image_member(members)[1], json.loads(members["json"])


def _make(cfg: DataConfig, corpus: Path, dataset: str, seed: int = 0, keep_masks: bool = False, **kw):
    maker = SampleMaker(cfg, train=True, keep_masks=keep_masks)
    rng = np.random.default_rng(seed)
    stats = DataStats()
    return [maker(k, png, rec, rng, stats) for k, png, rec in _records(corpus, dataset, **kw)], stats


# --- data pipeline ---------------------------------------------------------------------------------------


def test_prompt_kinds_follow_the_configured_ratios(corpus):
    ratios = {"mask": 0.5, "box": 0.3, "point": 0.2}
    cfg = DataConfig(image_size=S, max_regions=8, kind_ratios=ratios, crop_scale=(1.0, 1.0))
    examples, stats = _make(cfg, corpus, "demo_ct")
    kinds = Counter(p.kind for e in examples for p in e.prompts)
    n = sum(kinds.values())
    assert n == 800 and stats.counts["regions_used"] == 800  # every CT region (all masks) got a prompt
    for kind, share in ratios.items():
        assert kinds[kind] / n == pytest.approx(share, abs=0.06), kinds
    # box-only regions (ChestX-ray14 boxes) are never prompted by a mask: box vs point renormalised to 3:2
    draws = Counter()
    for seed in range(8):
        examples, _ = _make(cfg, corpus, "demo_cxr", seed=seed)
        draws.update(p.kind for e in examples for p in e.prompts)
    assert set(draws) == {"box", "point"} and draws["box"] / sum(draws.values()) == pytest.approx(
        0.6, abs=0.12
    )
    # a kind a region cannot take is counted, not silently dropped
    examples, stats = _make(DataConfig(image_size=S, kind_ratios={"mask": 1.0}), corpus, "demo_cxr")
    assert stats.counts["regions_kind_unavailable"] == 10 and not any(e.prompts for e in examples)


def test_box_jitter_and_points_follow_the_corpus_rules(corpus):
    full = {"image_size": S, "max_regions": 8, "crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)}
    # no crop: 128 px CT slices → 64 px, so the output box is half the record's tight box, then jittered
    exact, _ = _make(DataConfig(**full, kind_ratios={"box": 1}, box_jitter=0.0), corpus, "demo_ct")
    jittered, _ = _make(DataConfig(**full, kind_ratios={"box": 1}, box_jitter=0.1), corpus, "demo_ct")
    moved = []
    for e0, e1 in zip(exact, jittered, strict=True):
        for p0, p1 in zip(e0.prompts, e1.prompts, strict=True):
            record_box = np.array(e0.record["regions"][p0.rid]["bbox"]) / 2
            assert np.allclose(p0.box, record_box)
            side = np.array([*(record_box[2:] - record_box[:2])] * 2)
            shift = np.abs(np.array(p1.box) - record_box)
            assert (shift <= 0.1 * side + 1e-6).all()
            moved.append(shift.max())
    assert np.mean(np.array(moved) > 0.05) > 0.9  # the jitter does move boxes
    # points under crops: positives inside the (augmented) region, negatives outside, ≥ 1 positive each
    cfg = DataConfig(image_size=S, max_regions=8, kind_ratios={"point": 1}, crop_scale=(0.5, 1.0))
    examples, stats = _make(cfg, corpus, "demo_ct", keep_masks=True)
    n_neg = 0
    for e in examples:
        for p in e.prompts:
            rows, cols = p.points[:, 1].astype(int), p.points[:, 0].astype(int)
            inside = p.region_mask[rows, cols]
            assert (p.point_labels == 1).any()
            assert inside[p.point_labels == 1].all() and not inside[p.point_labels == 0].any()
            n_neg += int((p.point_labels == 0).sum())
    assert n_neg > 100 and sum(len(e.prompts) for e in examples) + stats.counts["dropped_cropped_out"] == 800


def test_augmentation_keeps_prompts_on_their_pixels(corpus):
    """Same seed with and without a horizontal flip: the image, the masks and the boxes flip together; and
    under crop + flip a mask prompt is its region's mask, a box prompt its tight box, points stay on/off it."""
    base = {"image_size": S, "max_regions": 8, "box_jitter": 0.0, "crop_scale": (0.5, 1.0)}
    plain, _ = _make(DataConfig(**base, hflip=0.0), corpus, "demo_ct", seed=3, keep_masks=True)
    flipped, _ = _make(DataConfig(**base, hflip=1.0), corpus, "demo_ct", seed=3, keep_masks=True)
    checked = Counter()
    for a, b in zip(plain, flipped, strict=True):
        assert np.array_equal(b.image, a.image[:, ::-1])
        for pa, pb in zip(a.prompts, b.prompts, strict=True):
            assert pa.kind == pb.kind and pa.rid == pb.rid
            assert np.array_equal(pb.region_mask, pa.region_mask[:, ::-1])
            if pa.kind == "mask":
                assert np.array_equal(pb.mask, pa.mask[:, ::-1]) and np.array_equal(pb.mask, pb.region_mask)
            elif pa.kind == "box":
                x0, y0, x1, y1 = pa.box
                assert np.allclose(pb.box, (S - x1, y0, S - x0, y1))
                if 0 < min(pb.box) and max(pb.box) < S:  # not cut by the crop: the visible mask's tight box
                    tight = np.array(tight_box(pb.region_mask), dtype=float)
                    assert np.abs(np.array(pb.box) - tight).max() <= 1.5  # same pixels, up to NN resampling
                    checked["tight"] += 1
            else:  # points: on the region (positives) or off it (negatives) in the flipped image too
                # (a point re-drawn because the crop lost the record's ones need not mirror exactly)
                inside = pb.region_mask[pb.points[:, 1].astype(int), pb.points[:, 0].astype(int)]
                assert np.array_equal(inside, pb.point_labels == 1)
            checked[pa.kind] += 1
    assert min(checked.values()) > 50, checked


def test_collation_shapes_and_seeded_stream(corpus, tokenizer):
    cfg = DataConfig(image_size=S, max_regions=4, shuffle_buffer=32)
    batch = next(iter(train_loader(corpus, cfg, tokenizer, batch_size=8, seed=0, num_workers=0)))
    p = batch["prompts"]
    assert batch["images"].shape == (8, 3, S, S) and batch["images"].dtype == torch.uint8
    assert p["kinds"].shape == (8, 4) and p["masks"].shape == (8, 4, S, S)
    assert p["boxes"].shape == (8, 4, 4) and p["points"].shape == (8, 4, 8, 2)
    assert p["point_labels"].shape == (8, 4, 8)
    valid = p["kinds"] >= 0
    n = int(valid.sum())
    assert n > 0 and batch["region_tokens"].shape == (n, 32) and batch["region_labels"].shape == (n,)
    assert batch["caption_tokens"].shape == (8, 32) and batch["caption_labels"].shape == (8,)
    # padding and unused prompt parts are empty; coordinates are normalised
    assert p["masks"][p["kinds"] != 0].sum() == 0 and p["boxes"][p["kinds"] != 1].abs().sum() == 0
    assert (p["point_labels"][p["kinds"] != 2] == -1).all()
    assert (
        0 <= p["boxes"].min() and p["boxes"].max() <= 1 and 0 <= p["points"].min() and p["points"].max() <= 1
    )
    assert batch["stats"]["samples"] == 8
    # cached token ids are the tokenizer's, repeats and all
    texts = ["left kidney", "liver", "left kidney", "An axial CT image.", "liver"]
    cache = TokenCache(tokenizer, max_size=2)
    assert torch.equal(cache(texts), tokenizer(texts)) and torch.equal(
        cache(texts[::-1]), tokenizer(texts[::-1])
    )
    assert len(cache._rows) == 2
    # valid slots come first in each row (the order of region_tokens)
    assert all(valid[i, : int(valid[i].sum())].all() for i in range(8))
    # the seed decides the stream: same seed, same batch; another seed, another batch
    again = next(iter(train_loader(corpus, cfg, tokenizer, batch_size=8, seed=0, num_workers=0)))
    other = next(iter(train_loader(corpus, cfg, tokenizer, batch_size=8, seed=1, num_workers=0)))
    assert again["keys"] == batch["keys"] and torch.equal(again["images"], batch["images"])
    assert torch.equal(again["region_tokens"], batch["region_tokens"])
    assert other["keys"] != batch["keys"]


def test_bad_data_is_counted_never_fatal(corpus, tokenizer):
    key, png, record = next(_records(corpus, "demo_ct", splits=("train",)))
    broken = json.loads(json.dumps(record))
    broken["regions"][0]["mask_rle"]["counts"] = "not an rle"
    stats = DataStats()
    example = SampleMaker(DataConfig(image_size=S, kind_ratios={"mask": 1}))(
        key, png, broken, np.random.default_rng(0), stats
    )
    assert stats.counts["dropped_bad_rle"] == 1 and len(example.prompts) == len(record["regions"]) - 1
    stream = TrainStream(shard_lists(corpus, "train"), DataConfig(image_size=S), tokenizer, 4, seed=0)
    assert (
        stream._make(
            {"__key__": key, "png": b"not a png", "json": json.dumps(record)}, np.random.default_rng(0)
        )
        is None
    )
    assert stream._make({"__key__": key, "png": png, "json": b"{"}, np.random.default_rng(0)) is None
    assert sum(v for k, v in stream.stats.counts.items() if k.startswith("bad_sample_")) == 2


def _bilinear(src: np.ndarray, view) -> np.ndarray:
    """Independent float reference of the View's map: edge-clamped bilinear at each output pixel centre's
    source point ``x0 + (i + 0.5)·w/S``, 0 where that point is off the source, then the flips."""
    s, (h, w) = view.size, src.shape[:2]
    cx = view.x0 + (np.arange(s) + 0.5) * view.w / s
    cy = view.y0 + (np.arange(s) + 0.5) * view.h / s

    def axis(c, n):
        i0 = np.floor(c - 0.5).astype(int)
        f = c - 0.5 - i0
        return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), f, (c >= 0) & (c < n)

    x0, x1, fx, on_x = axis(cx, w)
    y0, y1, fy, on_y = axis(cy, h)
    a = src.astype(float).reshape(h, w, -1)
    rows = a[y0] * (1 - fy)[:, None, None] + a[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    out *= (on_y[:, None] & on_x[None, :])[..., None]
    out = out[:, ::-1] if view.hflip else out
    return (out[::-1] if view.vflip else out).reshape(view.size, view.size, *src.shape[2:])


def test_warp_puts_image_mask_box_and_points_on_the_same_pixels():
    """The image warp (resize over the view's window, transform for the letterbox rims) and the mask warp
    must sample the source at the same points, the ones ``View.map_xy`` inverts. A region that is a
    vertical stripe in the red channel and a horizontal one in the green channel: after any view, a pixel is
    on the warped mask exactly where both channels are ≥ 128 (bilinear crosses half-way at the stripe's
    edge; antialiasing when shrinking keeps that crossing), and the region's box and points land on it."""
    h, w = 30, 40  # not square: letterboxed, so views reach off the source and rims are resampled
    region = np.zeros((h, w), bool)
    region[9:17, 12:20] = True
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, 12:20, 0] = 255
    rgb[9:17, :, 1] = 255
    rgb[..., 2] = np.random.default_rng(0).integers(0, 256, (h, w))  # texture for the value check
    points = [[15, 12], [16, 13], [2, 3], [30, 25]]  # two inside the region, two outside
    record = {
        "caption": "c",
        "regions": [
            {"rid": 0, "label": "r", "texts": ["r"], "mask_rle": encode_rle(region), "bbox": [12, 9, 20, 17],
             "points": points, "point_labels": [1, 1, 0, 0]}
        ],
    }  # fmt: skip
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    grey_png = io.BytesIO()
    Image.fromarray(rgb[..., 0]).save(grey_png, "PNG")
    rng = np.random.default_rng(1)
    views = []
    for size in (64, 224, 24):  # 24: the view shrinks the source, so resize antialiases
        cfg = DataConfig(image_size=size, crop_scale=(0.2, 1.0), hflip=0.5, vflip=0.5)
        views += [full_view(w, h, size), *(random_view(w, h, cfg, rng) for _ in range(40))]
    views += [View(-7.3, -4.1, 21.7, 13.9, 64, True), View(35.5, 26.2, 9.0, 7.0, 64)]  # off an edge, a corner
    checked = Counter()
    for view in views:
        image = view.warp(Image.open(png))
        mask = view.warp_mask(region)
        assert image.shape == (view.size, view.size, 3) and mask.shape == (view.size, view.size)
        assert np.array_equal(mask, (image[..., 0] >= 128) & (image[..., 1] >= 128)), view
        grey = view.warp(Image.open(grey_png))
        assert grey.shape == (view.size, view.size) and np.array_equal(grey, image[..., 0])
        if view.w <= view.size and view.h <= view.size:  # enlarged: bilinear within 1 grey level
            assert np.abs(image - _bilinear(rgb, view)).max() <= 1 + 1e-9, view
            checked["values"] += 1
    # the sampler puts the region's prompts on the same pixels: its view is the first draw from its rng
    for seed in range(60):
        size = (64, 224, 24)[seed % 3]
        for kind in ("mask", "box", "point"):
            cfg = DataConfig(
                image_size=size, kind_ratios={kind: 1}, box_jitter=0.0, intensity=0.0, crop_scale=(0.2, 1.0),
                hflip=0.5, vflip=0.5,
            )  # fmt: skip
            view = random_view(w, h, cfg, np.random.default_rng(seed))
            ex = SampleMaker(cfg)("k", png.getvalue(), record, np.random.default_rng(seed), DataStats())
            image, mask = view.warp(Image.open(png)), view.warp_mask(region)
            assert np.array_equal(ex.image, image)
            if not ex.prompts:  # dropped as cropped out: nothing of the region is in view
                assert not mask.any() or kind == "box"
                continue
            p = ex.prompts[0]
            if kind == "mask":
                assert np.array_equal(p.mask, mask)
            elif kind == "box":  # the warped mask's tight box, to within nearest-neighbour rounding
                assert np.abs(np.array(p.box) - tight_box(mask)).max() <= 1.0, (view, p.box)
            else:
                col, row = p.points[:, 0].astype(int), p.points[:, 1].astype(int)
                assert np.array_equal(mask[row, col], p.point_labels == 1)
                bright = (image[row, col, 0] >= 128) & (image[row, col, 1] >= 128)
                assert np.array_equal(bright, p.point_labels == 1)
            checked[kind] += 1
    assert checked["values"] > 20 and min(checked[k] for k in ("mask", "box", "point")) > 40, checked
    # collation: a grey image fills all three channels, an RGB one goes channels-first
    evaluation, rng = SampleMaker(DataConfig(image_size=64), train=False), np.random.default_rng(0)
    grey_ex = evaluation("g", grey_png.getvalue(), record, rng, DataStats())
    rgb_ex = evaluation("c", png.getvalue(), record, rng, DataStats())
    assert grey_ex.image.shape == (64, 64) and rgb_ex.image.shape == (64, 64, 3)
    batch = collate([grey_ex, rgb_ex], lambda t: torch.zeros(len(t), 4, dtype=torch.long), 4, 8, 64)
    images = batch["images"]
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 64, 64)
    assert (images[0].numpy() == grey_ex.image).all()  # broadcast over the three channels
    assert np.array_equal(images[1].numpy(), rgb_ex.image.transpose(2, 0, 1))


# --- learning with Ray Train, killed and resumed -------------------------------------------------------------


def _cfg(corpus: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        corpus=str(corpus),
        out=str(out),
        model="tiny",
        steps=STEPS,
        batch_size=8,
        workers=2,
        loader_workers=1,
        lr=1e-3,
        checkpoint_every=KILL_AT,
        seed=0,
    )


@pytest.fixture(scope="module")
def trained(corpus, ray_session, tmp_path_factory):
    """`medpclip train` SIGKILLed right after its first checkpoint, then resumed to the end."""
    import time

    out = tmp_path_factory.mktemp("run") / "train"
    t0 = time.monotonic()
    cmd = [
        str(BIN / "medpclip"), "train", "--corpus", str(corpus), "--out", str(out), "--model", "tiny",
        "--steps", str(STEPS), "--batch-size", "8", "--workers", "2", "--loader-workers", "1",
        "--lr", "1e-3", "--checkpoint-every", str(KILL_AT),
        "--ray-address", ray_session.get_runtime_context().gcs_address,
    ]  # fmt: skip
    env = {**os.environ, "MEDPCLIP_FAULT": "train.checkpoint:1", "MEDPCLIP_FAULT_TARGET": "driver"}
    log = out.parent / "killed.log"
    with open(log, "wb") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=400)
    killed = {
        "returncode": proc.returncode,
        "checkpoints": sorted(d.name for d in (out / RUN_NAME).glob("checkpoint-*")),
        "run": json.loads((out / "run.json").read_text()),
        "latest": latest_checkpoint(out),
        "log": log.read_text(errors="replace")[-3000:],
    }
    refused = CliRunner().invoke(
        app, ["train", "--corpus", str(corpus), "--out", str(out), "--model", "tiny", "--steps", str(STEPS)]
    )
    t1 = time.monotonic()
    result = train(_cfg(corpus, out), resume=True)
    t2 = time.monotonic()
    ev = evaluate(corpus, out, "val,test", datasets=["demo_ct"])
    t3 = time.monotonic()
    timing = {"killed_run_s": t1 - t0, "resumed_run_s": t2 - t1, "eval_s": t3 - t2}
    print(f"\nlearning test timings: {timing}")
    return {"out": out, "killed": killed, "refused": refused, "result": result, "eval": ev, "timing": timing}


def test_training_resumes_after_sigkill(trained):
    killed, result = trained["killed"], trained["result"]
    assert killed["returncode"] == -signal.SIGKILL, killed["log"]
    assert killed["checkpoints"] == [f"checkpoint-{KILL_AT:07d}"] and killed["run"]["status"] == "running"
    first = killed["latest"]
    assert first is not None and verified_step(first) == KILL_AT
    meta = json.loads((first / "meta.json").read_text())
    # a second run without --resume refuses to overwrite the run
    assert trained["refused"].exit_code == 2 and "--resume" in trained["refused"].output
    # the resumed run starts from the killed run's checkpoint: same step, same weights, same run id
    assert result.metrics["resumed_from_step"] == KILL_AT
    assert result.metrics["resumed_checksum"] == meta["model_checksum"]
    assert result.run_id == meta["run_id"] == killed["run"]["run_id"]
    assert result.step == STEPS and result.checkpoint.name == f"checkpoint-{STEPS:07d}"
    run = json.loads((trained["out"] / "run.json").read_text())
    assert run["status"] == "finished" and run["step"] == STEPS
    assert result.metrics["data_bad_samples"] == 0 and result.metrics["world_size"] == 2


def test_tiny_model_learns_region_classification_from_prompts(trained):
    ev = trained["eval"]
    acc = ev.value("region_cls", "top1", "demo_ct")
    shuffled = ev.value("region_cls", "top1_shuffled_prompts", "demo_ct")
    print(
        f"\nregion_cls on demo_ct val+test ({acc.n} regions of held-out patients): top1 {acc.value:.3f}, "
        f"chance {acc.chance:.3f}, shuffled prompts {shuffled.value:.3f}; "
        f"box prompts {ev.value('region_cls', 'top1_box', 'demo_ct').value:.3f}, "
        f"point prompts {ev.value('region_cls', 'top1_point', 'demo_ct').value:.3f}; "
        f"train {trained['result'].metrics['samples_per_s']:.1f} samples/s"
    )
    assert acc.n == 400 and acc.chance == pytest.approx(0.2)
    assert acc.value >= 0.6  # chance is 0.2
    assert acc.value - shuffled.value >= 0.3  # the prompt, not the image, decides the answer
    assert shuffled.value <= 0.45
    assert ev.value("region_cls", "top1_box", "demo_ct").value >= 0.5
    assert ev.value("region_cls", "top1_point", "demo_ct").value >= 0.5


def test_eval_cli_writes_the_metrics_view(trained, corpus):
    res = CliRunner().invoke(
        app, ["eval", "--corpus", str(corpus), "--checkpoint", str(trained["out"]), "--split", "test"]
    )
    assert res.exit_code == 0, res.output
    columns, rows = query(
        corpus,
        "SELECT task, dataset, split, metric, value, n, chance FROM metrics WHERE split = 'test' ORDER BY ALL",
    )
    assert columns == ["task", "dataset", "split", "metric", "value", "n", "chance"]
    tasks = {r[0] for r in rows}
    assert tasks == {
        "image_cls", "region_cls", "retrieval_i2t", "retrieval_t2i", "retrieval_r2t", "retrieval_t2r"
    }  # fmt: skip
    assert {r[1] for r in rows} == {"demo_ct", "demo_cxr", "demo_polyp"}
    assert all(0 <= r[4] <= 1 and 0 <= r[6] <= 1 and r[5] > 0 for r in rows)
    all_columns, _ = query(corpus, "SELECT * FROM metrics LIMIT 1")
    assert tuple(all_columns) == COLUMNS
    _, n_runs = query(corpus, "SELECT count(DISTINCT split), count(DISTINCT run_id) FROM metrics")
    assert n_runs == [(2, 1)]  # val+test from the learning test, test from the CLI; one run
    bad = CliRunner().invoke(app, ["eval", "--corpus", str(corpus), "--checkpoint", str(corpus)])
    assert bad.exit_code == 2 and "no checkpoint" in bad.output
