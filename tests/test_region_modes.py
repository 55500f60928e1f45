"""Region modes (issue 19): MedP-CLIP's feature-level prompts and the baselines crop, mask-input and alpha,
in the same model class, trainer and evaluator.

Library tests need no corpus: the prompt's pixel map, the crop window and crop, the blanked input, and the
zero initialisation that makes ``alpha`` (like ``medpclip``) start exactly as the backbone. Then every mode
trains a few steps with Ray Train on the demo corpus and is evaluated (its mode in every metrics row); a
checkpoint of one mode refuses to load or resume as another.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from medpclip.evaluate import evaluate
from medpclip.model import ModelConfig, ModelError, RegionPrompts, build_model
from medpclip.model.medpclip import CROP_MARGIN, REGION_MODES
from medpclip.model.prompt_encoder import KIND_INDEX, crop_images, crop_windows, region_maps
from medpclip.train.loop import TrainConfig, TrainError, load_checkpoint, train
from medpclip.warehouse import query

S = 64


def _prompts() -> RegionPrompts:
    """Flat prompts of 3 regions on a 64 px image: a mask (rows 8–23, cols 16–23), a box
    (x 0.5–0.75, y 0.25–0.5), one positive and one negative point."""
    n, p = 3, 4
    kinds = torch.tensor([KIND_INDEX["mask"], KIND_INDEX["box"], KIND_INDEX["point"]])
    masks = torch.zeros(n, S, S, dtype=torch.uint8)
    masks[0, 8:24, 16:24] = 1
    boxes = torch.zeros(n, 4)
    boxes[1] = torch.tensor([0.5, 0.25, 0.75, 0.5])
    points = torch.zeros(n, p, 2)
    labels = torch.full((n, p), -1, dtype=torch.long)
    points[2, :2] = torch.tensor([[0.5, 0.5], [0.1, 0.1]])
    labels[2, :2] = torch.tensor([1, 0])
    return RegionPrompts(kinds, masks, boxes, points, labels)


def _model(mode: str):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, _ = build_model(ModelConfig(name="tiny", region_mode=mode))
    return model.eval()


def test_region_maps_say_the_same_region_to_every_method():
    maps = region_maps(_prompts(), (S, S))
    assert maps.shape == (3, S, S)
    # the mask is itself; the box is the 16 × 16 pixels whose centres lie inside it
    assert torch.equal(maps[0], _prompts().masks[0].float())
    assert maps[1].sum() == 256 and maps[1, 16:32, 32:48].eq(1).all()
    # the positive point is a square of side 2 · 1/16 of the image around (32, 32); the negative one is not
    assert maps[2, 28:36, 28:36].eq(1).all() and maps[2].sum() == 64 and maps[2, 6, 6] == 0


def test_crop_windows_are_square_with_margin_and_crops_read_the_right_pixels():
    windows = crop_windows(region_maps(_prompts(), (S, S)), CROP_MARGIN)
    # mask: rows 8–23, cols 16–23 → centre (20/64, 16/64), side 16/64 · 1.2
    assert windows[0].tolist() == pytest.approx([20 / 64, 16 / 64, 0.3, 0.3])
    assert windows[1].tolist() == pytest.approx([0.625, 0.375, 0.3, 0.3])
    # a point stands for an 8 px square (1/8 of the image side), grown by the margin like any box
    assert windows[2].tolist() == pytest.approx([0.5, 0.5, 0.15, 0.15])
    tiny = torch.zeros(1, S, S)
    tiny[0, 10, 20] = 1  # one pixel: the smallest window, 1/16 of the image
    assert crop_windows(tiny, CROP_MARGIN)[0].tolist() == pytest.approx(
        [20.5 / 64, 10.5 / 64, 1 / 16, 1 / 16]
    )
    empty = crop_windows(torch.zeros(1, S, S), CROP_MARGIN)
    assert empty.tolist() == [[0.5, 0.5, 1.0, 1.0]]  # nothing to crop: the whole image
    # a crop of the top-left quadrant of an image that is 1 there and 0 elsewhere reads ones inside; only
    # the outermost row and column blend with the border
    image = torch.zeros(1, 1, S, S)
    image[..., :32, :32] = 1
    crop = crop_images(image, torch.tensor([[0.25, 0.25, 0.5, 0.5]]))
    assert crop.shape == (1, 1, S, S) and crop[0, 0, 1:63, 1:63].eq(1).all()
    assert 0 < crop[0, 0, 0, 10] < 1 and 0 < crop[0, 0, 10, 63] < 1


def test_mask_input_blanks_outside_the_region_and_crop_zooms_into_it():
    images = torch.randn(1, 3, S, S, generator=torch.Generator().manual_seed(0))
    prompts = _prompts()
    index = torch.zeros(3, dtype=torch.long)
    blanked, alpha = _model("mask-input").region_inputs(images, prompts, index)
    assert alpha is None and blanked.shape == (3, 3, S, S)
    assert torch.equal(blanked[0, :, 8:24, 16:24], images[0, :, 8:24, 16:24])
    outside = torch.ones(S, S, dtype=torch.bool)
    outside[8:24, 16:24] = False
    assert blanked[0][:, outside].eq(0).all()  # zero (the mean) everywhere else
    cropped, _ = _model("crop").region_inputs(images, prompts, index)
    assert torch.allclose(cropped, crop_images(images.expand(3, -1, -1, -1), crop_windows(
        region_maps(prompts, (S, S)), CROP_MARGIN)))  # fmt: skip
    _, alpha = _model("alpha").region_inputs(images, prompts, index)
    assert torch.equal(alpha, region_maps(prompts, (S, S)))


def test_alpha_starts_exactly_as_the_backbone_and_its_prompt_is_wired_in():
    model = _model("alpha")
    images = torch.randn(2, 3, S, S)
    prompts = _prompts()
    index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        backbone = model.clip.encode_image(images)
        assert torch.equal(model.encode_image(images, normalize=False), backbone)
        # every region's embedding is its image's backbone embedding until the alpha convolution moves
        regions = model.encode_regions(images, prompts, index, normalize=False)
        assert torch.equal(regions, backbone[index])
        torch.nn.init.normal_(model.alpha_embed.weight, std=0.1)
        moved = model.encode_regions(images, prompts, index, normalize=False)
        assert not torch.allclose(moved, backbone[index], atol=1e-3)
        assert not torch.allclose(moved[1], moved[2], atol=1e-3)  # same image, two prompts: two answers


@pytest.mark.parametrize("mode", REGION_MODES)
def test_every_mode_embeds_regions_in_one_space(mode):
    model, tokenizer = _model(mode), build_model(ModelConfig(name="tiny"))[1]
    images = torch.randint(0, 256, (2, 3, S, S), dtype=torch.uint8)
    flat = _prompts()
    prompts = RegionPrompts(
        **{k: torch.stack([getattr(flat, k), getattr(flat, k)]) for k in flat.__dataclass_fields__}
    )  # 2 images × the 3 prompts
    with torch.no_grad():
        out = model(model.preprocess(images), prompts, tokenizer(["liver", "spleen"]))
    assert out["region_features"].shape == (6, 64) and out["image_features"].shape == (2, 64)
    assert torch.allclose(out["region_features"].norm(dim=-1), torch.ones(6), atol=1e-5)
    # the image path of every mode is open_clip's encode_image at initialisation
    with torch.no_grad():
        x = model.preprocess(images)
        assert torch.equal(model.encode_image(x, normalize=False), model.clip.encode_image(x))


def test_an_unknown_mode_is_one_line_that_names_the_choices(tmp_path):
    with pytest.raises(ModelError, match="unknown region mode 'roi'.*medpclip, crop, mask-input, alpha"):
        build_model(ModelConfig(name="tiny", region_mode="roi"))
    with pytest.raises(TrainError, match="^--region-mode: Input should be 'medpclip', 'crop'"):
        TrainConfig.of(corpus="c", out=str(tmp_path), region_mode="roi")


# --- the context-decided demo task ------------------------------------------------------------------------


def test_demo_context_pairs_look_alike_and_only_context_names_them(tmp_path):
    """The task's design, checked on what the writer draws and on what the volumes reader recovers."""
    import numpy as np

    from medpclip.demo import CONTEXT_CASES, context_case_arrays, context_case_plan

    plans = [context_case_plan(n) for n in range(CONTEXT_CASES)]
    mirrored = sum(p.mirrored for p in plans)
    assert 120 <= mirrored <= 180  # about half the cases have the liver on the patient's left
    lesion_hu, organ_hu, host_side = {5: [], 6: []}, {1: [], 2: []}, {5: [], 6: []}
    for n in range(0, CONTEXT_CASES, 10):
        hu, labels = (a[:, :, 0] for a in context_case_arrays(n))
        for label in (5, 6):
            if (labels == label).any():
                lesion_hu[label].append(hu[labels == label].mean())
                host_side[label].append(np.argwhere(labels == label)[:, 0].mean() > 64)
        for label in (1, 2):
            organ_hu[label].append(hu[labels == label].mean())
        right, left = (np.argwhere(labels == v)[:, 0].mean() for v in (3, 4))
        assert right > 64 > left  # canonical i runs to the patient's right
        assert abs((labels == 3).sum() - (labels == 4).sum()) < 80  # the kidneys: one size distribution
    # a lesion's own pixels and its host's intensity say nothing about the host
    assert abs(np.mean(lesion_hu[5]) - np.mean(lesion_hu[6])) < 2
    assert abs(np.mean(organ_hu[1]) - np.mean(organ_hu[2])) < 2
    # nor does the side of the body it is on: both lesion kinds occur on both sides, at the same spots
    assert {True, False} <= set(host_side[5]) and {True, False} <= set(host_side[6])
    centres = {5: [], 6: []}
    for p in plans:
        for label, (i, j), _ in p.lesions:
            centres[label].append((abs(i - 64), j))
    spread = {k: np.array(v) for k, v in centres.items()}
    assert np.abs(spread[5].mean(axis=0) - spread[6].mean(axis=0)).max() < 1.5
    assert np.abs(spread[5].std(axis=0) - spread[6].std(axis=0)).max() < 1.5


def test_demo_context_crops_show_only_the_region_and_one_plain_rim():
    """What a box crop (with its margin) shows of a context-decided region is the region and a rim of one
    tissue, the same for both classes of the pair: kidneys sit in plain soft tissue (40 HU), lesions in organ
    (55 HU). A crop that reached the body wall or another organ would leak the answer."""
    import numpy as np

    from medpclip.demo import CONTEXT_CASES, context_case_drawing, context_case_plan

    rim_hu = {3: 40.0, 4: 40.0, 5: 55.0, 6: 55.0}
    checked = 0
    for n in range(CONTEXT_CASES):
        hu, labels, _ = context_case_drawing(n)
        present = [v for v in rim_hu if (labels == v).any()]
        maps = torch.from_numpy(np.stack([labels == v for v in present])).float()
        for v, (cx, cy, side, _) in zip(present, crop_windows(maps, CROP_MARGIN).tolist(), strict=True):
            size = labels.shape[0]
            lo = [int(np.floor((c - side / 2) * size)) for c in (cy, cx)]
            hi = [int(np.ceil((c + side / 2) * size)) for c in (cy, cx)]
            window = (slice(max(lo[0], 0), hi[0]), slice(max(lo[1], 0), hi[1]))
            rim = hu[window][labels[window] != v]
            assert rim.size and np.all(rim == rim_hu[v]), (n, v, np.unique(rim))
            checked += 1
    assert checked == sum(2 + len(context_case_plan(n).lesions) for n in range(CONTEXT_CASES))


def test_demo_data_cli_writes_the_context_task_on_request(tmp_path):
    import numpy as np
    from typer.testing import CliRunner

    from medpclip.cli import app
    from medpclip.sources.registry import get_reader
    from medpclip.specs import resolve_specs

    res = CliRunner().invoke(app, ["demo-data", str(tmp_path / "raw"), "--dataset", "demo_context"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Task91_DemoContextCT"]
    spec = resolve_specs(["demo_context"])[0]
    reader = get_reader(spec.format.family)
    items = list(reader.discover(spec, tmp_path / "raw" / spec.root))
    assert len(items) == 300 and items[0].case_id == "ctx_000"
    frame = next(iter(reader.read(spec, tmp_path / "raw", items[0])))
    values = set(np.unique(frame.label_map).tolist())
    assert values == {0, 1, 2, 3, 4, 5}  # case 0: liver, spleen, two kidneys, a liver lesion
    # displayed the radiological way: the patient's right kidney on the image's left
    cols = {v: np.argwhere(frame.label_map == v)[:, 1].mean() for v in (3, 4)}
    assert cols[3] < frame.label_map.shape[1] / 2 < cols[4]
    bad = CliRunner().invoke(app, ["demo-data", str(tmp_path / "raw2"), "--dataset", "demo_mri"])
    assert bad.exit_code == 2 and "unknown demo dataset 'demo_mri'" in bad.output


# --- every mode through Ray Train and the evaluator --------------------------------------------------------


@pytest.fixture(scope="module")
def runs(demo_corpus, ray_session, tmp_path_factory):
    """Each mode trained 4 steps with Ray Train (1 worker), then evaluated on demo_ct's held-out patients
    into a private copy of the demo corpus."""
    corpus = tmp_path_factory.mktemp("modes") / "corpus"
    shutil.copytree(demo_corpus.out, corpus)
    address = ray_session.get_runtime_context().gcs_address
    out: dict[str, dict] = {}
    for mode in REGION_MODES:
        cfg = TrainConfig(
            corpus=str(corpus), out=str(corpus.parent / f"train-{mode}"), model="tiny", region_mode=mode,
            steps=4, batch_size=4, workers=1, loader_workers=0, checkpoint_every=4, log_every=2, seed=0,
            datasets=["demo_ct"],
        )  # fmt: skip
        result = train(cfg, ray_address=address)
        ev = evaluate(corpus, Path(cfg.out), "val,test", datasets=["demo_ct"], prompt_kinds=("native",))
        out[mode] = {"cfg": cfg, "result": result, "eval": ev}
    return corpus, out


@pytest.mark.slow
def test_every_mode_trains_with_ray_train_and_is_recorded(runs):
    corpus, out = runs
    for mode, run in out.items():
        assert run["result"].step == 4 and run["result"].checkpoint is not None
        _, _, meta = load_checkpoint(run["result"].out)
        assert meta["model"]["region_mode"] == mode and meta["config"]["region_mode"] == mode
        rows = run["eval"].rows
        assert rows and {r.region_mode for r in rows} == {mode}
        top1 = run["eval"].value("region_cls", "top1", "demo_ct")
        per_class = [r for r in rows if r.metric.startswith("top1:")]
        assert sum(r.n for r in per_class) == top1.n == 400  # per-class rows cover every region once
        weighted = sum(r.value * r.n for r in per_class) / top1.n
        assert weighted == pytest.approx(top1.value)
    _, rows = query(
        corpus, "SELECT region_mode, count(DISTINCT run_id) FROM metrics GROUP BY ALL ORDER BY ALL"
    )
    assert rows == [(m, 1) for m in sorted(REGION_MODES)]


@pytest.mark.slow
def test_a_checkpoint_of_one_mode_refuses_another(runs):
    _, out = runs
    crop = out["crop"]["result"].out
    model, _, _ = load_checkpoint(crop, region_mode="crop")
    assert model.region_mode == "crop" and not hasattr(model, "prompt_encoder")
    with pytest.raises(TrainError, match=r"trained with --region-mode crop; it cannot be loaded as medpclip"):
        load_checkpoint(crop, region_mode="medpclip")
    cfg = out["crop"]["cfg"].model_copy(update={"region_mode": "alpha", "steps": 6})
    with pytest.raises(
        TrainError, match=r"cannot resume: .* has region_mode 'crop', this command asks for 'alpha'"
    ):
        train(cfg, resume=True)
    # the raw weights of one mode do not fit another's modules either
    alpha = _model("alpha")
    with pytest.raises(RuntimeError, match="alpha_embed"):
        alpha.load_state_dict(model.state_dict())
