"""The model library on its own (no corpus, no Ray): prompt encoder, zero-init integration, losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medpclip.model import ModelConfig, ModelError, RegionPrompts, build_model, label_aware_contrastive
from medpclip.model.losses import IGNORE, gather_padded, medpclip_loss
from medpclip.model.prompt_encoder import KIND_INDEX, PromptEncoder, box_coverage, point_hits

S, GRID, P = 64, (8, 8), 8


def _prompts(b: int = 2, r: int = 3) -> RegionPrompts:
    """Image 0: a mask (rows/cols 8–23 = patches 1–2), a box, points; image 1: one box, rest padding."""
    kinds = torch.full((b, r), -1, dtype=torch.long)
    masks = torch.zeros(b, r, S, S, dtype=torch.uint8)
    boxes = torch.zeros(b, r, 4)
    points = torch.zeros(b, r, P, 2)
    labels = torch.full((b, r, P), -1, dtype=torch.long)
    kinds[0, 0] = KIND_INDEX["mask"]
    masks[0, 0, 8:24, 8:24] = 1
    kinds[0, 1] = KIND_INDEX["box"]
    boxes[0, 1] = torch.tensor([0.5, 0.5, 0.75, 0.625])  # patches cols 4–5, row 4
    kinds[0, 2] = KIND_INDEX["point"]
    points[0, 2, :2] = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    labels[0, 2, :2] = torch.tensor([1, 0])
    kinds[1, 0] = KIND_INDEX["box"]
    boxes[1, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    return RegionPrompts(kinds, masks, boxes, points, labels)


@pytest.fixture(scope="module")
def tiny():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, tokenizer = build_model(ModelConfig(name="tiny"))
    return model.eval(), tokenizer


def test_box_coverage_and_point_hits_are_exact():
    cov = box_coverage(torch.tensor([[0.0625, 0.0, 0.25, 0.125]]), GRID)[0]  # half of col 0, cols 1; row 0
    assert cov[0, 0] == pytest.approx(0.5) and cov[0, 1] == pytest.approx(1.0) and cov[0, 2] == 0
    assert cov[1:].sum() == 0 and cov.sum() == pytest.approx(1.5)
    hits = point_hits(torch.tensor([[[0.99, 0.01], [0.5, 0.5]]]), torch.tensor([[1, 0]]), GRID)[0]
    assert hits[0, 0, 7] == 1 and hits[0].sum() == 1  # positive in the top-right patch
    assert hits[1, 4, 4] == 1 and hits[1].sum() == 1  # negative in the centre patch


def test_prompt_encoder_shapes_and_footprints():
    enc = PromptEncoder(width=32, grid=GRID, hidden=16, max_points=P)
    prompts = _prompts()
    flat = prompts.select(prompts.valid)
    assert flat.kinds.tolist() == [0, 1, 2, 1]
    dense, footprint = enc.maps(flat)
    assert dense.shape == (4, 4, 8, 8) and footprint.shape == (4, 8, 8)
    # mask: 16×16 px = patches (1..2, 1..2), fully covered
    assert dense[0, 0, 1:3, 1:3].eq(1).all() and dense[0, 0].sum() == 4 and dense[0, 1:].sum() == 0
    # box: x 32–48 px, y 32–40 px → patches row 4, cols 4–5
    assert dense[1, 1, 4, 4:6].eq(1).all() and dense[1, 1].sum() == 2 and dense[1, 0].sum() == 0
    # points: positive in patch (0, 7), negative in patch (7, 0); the footprint spreads the positive only
    assert dense[2, 2, 0, 7] == 1 and dense[2, 3, 7, 0] == 1
    assert footprint[2, 0, 7] == 1 and footprint[2, 7, 0] == 0 and footprint[2, 1, 6] > 0
    assert footprint.amax(dim=(1, 2)).eq(1).all()  # normalised per region
    emb = enc.dense_embedding(dense)
    assert emb.shape == (4, 64, 32) and emb.abs().sum() == 0  # zero-initialised
    tokens, absent = enc.sparse_tokens(flat)
    assert tokens.shape == (4, 3 + P, 32) and absent.shape == (4, 3 + P)
    assert absent[:, 0].logical_not().all()  # the kind token is always there
    assert absent[0, 1:].all()  # a mask prompt has no corners and no points
    assert not absent[1, 1:3].any() and absent[1, 3:].all()  # a box: its two corners
    assert not absent[2, 3:5].any() and absent[2, 5:].all() and absent[2, 1:3].all()  # two points


def test_zero_initialised_prompts_leave_the_backbone_unchanged(tiny):
    model, _ = tiny
    images = torch.randn(2, 3, S, S)
    prompts = _prompts()
    with torch.no_grad():
        # the image path is exactly open_clip's encode_image
        assert torch.equal(model.encode_image(images, normalize=False), model.clip.encode_image(images))
        # every region's prompted pass equals the unprompted backbone on its image, token for token
        visual = model.clip.visual
        plain = visual.transformer(visual._embeds(images))
        index = prompts.valid.nonzero()
        tokens, _ = model.region_tokens(model.trunk(images), prompts.select(prompts.valid), index[:, 0])
        assert torch.allclose(tokens, plain[index[:, 0]], atol=1e-6)
        # and the prompt is wired in: once the zero layer moves, prompted tokens differ from the backbone's
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            moved = build_model(ModelConfig(name="tiny"))[0].eval()
        moved.load_state_dict(model.state_dict())
        torch.nn.init.normal_(moved.prompt_encoder.dense[-1].weight, std=0.1)
        tokens2, _ = moved.region_tokens(moved.trunk(images), prompts.select(prompts.valid), index[:, 0])
        assert not torch.allclose(tokens2, plain[index[:, 0]], atol=1e-3)
        assert torch.equal(moved.encode_image(images), model.encode_image(images))  # class path untouched


def test_forward_outputs_one_space(tiny):
    model, tokenizer = tiny
    images = torch.randint(0, 256, (2, 3, S, S), dtype=torch.uint8)
    prompts = _prompts()
    texts = tokenizer(["an axial CT image", "a chest X-ray", "liver", "aorta", "a nodule", "lung"])
    with torch.no_grad():
        out = model(model.preprocess(images), prompts, texts)
    assert out["image_features"].shape == (2, 64)
    assert out["region_features"].shape == (4, 64)
    assert out["text_features"].shape == (6, 64)
    assert out["region_index"].tolist() == [[0, 0], [0, 1], [0, 2], [1, 0]]
    for k in ("image_features", "region_features", "text_features"):
        assert torch.allclose(out[k].norm(dim=-1), torch.ones(out[k].shape[0]), atol=1e-5)
    # the region embedding depends on the prompt: the same image with two different prompts differs
    assert not torch.allclose(out["region_features"][0], out["region_features"][1])
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-4)


def test_backbone_by_name_and_local_weights_only(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        build_model(ModelConfig(name="no-such-model"))
    with pytest.raises(ModelError, match="local checkpoint file"):
        build_model(ModelConfig(name="tiny", pretrained="openai"))  # a hub tag is refused, nothing fetched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        source, _ = build_model(ModelConfig(name="tiny"))
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": source.clip.state_dict()}, path)
    loaded, _ = build_model(ModelConfig(name="tiny", pretrained=str(path)))
    for (name, a), b in zip(source.clip.state_dict().items(), loaded.clip.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_label_aware_loss_on_known_inputs():
    a = torch.eye(3)
    b = torch.eye(3)
    scale = torch.tensor(2.0)
    # all labels distinct: exactly CLIP's symmetric cross-entropy with the diagonal as targets
    distinct = label_aware_contrastive(a, b, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), scale)
    logits = scale * a @ b.t()
    clip = 0.5 * (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.t(), torch.arange(3)))
    assert distinct.item() == pytest.approx(clip.item(), abs=1e-6)
    expected = -math.log(math.e**2 / (math.e**2 + 2))
    assert distinct.item() == pytest.approx(expected, abs=1e-6)
    # rows 0 and 1 share a concept: each of the two has two positives (targets 1/2, 1/2), row 2 one
    shared = label_aware_contrastive(a, b, torch.tensor([7, 7, 9]), torch.tensor([7, 7, 9]), scale)
    z = math.e**2 + 2
    row01 = -0.5 * (math.log(math.e**2 / z) + math.log(1 / z))
    assert shared.item() == pytest.approx((2 * row01 + expected) / 3, abs=1e-6)

    # two liver regions embedded alike, each with its own liver text: plain CLIP targets pull them apart
    # (each towards its own text), label-aware targets do not (same gradient on both)
    def pull_apart(labels: list[int]) -> float:
        x = torch.tensor([[0.9487, 0.3162], [0.9487, 0.3162], [-1.0, 0.0]], requires_grad=True)
        t = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]])
        lab = torch.tensor(labels)
        label_aware_contrastive(x, t, lab, lab, scale * 5).backward()
        return (x.grad[0] - x.grad[1]).norm().item()

    assert pull_apart([0, 0, 2]) < 1e-6 and pull_apart([0, 1, 2]) > 1.0
    # IGNORE rows take no part; an empty batch gives 0 with a graph
    ignored = label_aware_contrastive(a, b, torch.tensor([0, 1, IGNORE]), torch.tensor([0, 1, IGNORE]), scale)
    two = label_aware_contrastive(a[:2], b[:2], torch.tensor([0, 1]), torch.tensor([0, 1]), scale)
    assert ignored.item() == pytest.approx(two.item())
    empty = label_aware_contrastive(a[:0], b[:0], torch.tensor([]).long(), torch.tensor([]).long(), scale)
    assert empty.item() == 0


def test_medpclip_loss_splits_captions_and_region_texts():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(2, 8, generator=g), dim=-1)
    reg = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    out = {
        "image_features": img,
        "region_features": reg,
        "text_features": txt,
        "logit_scale": torch.tensor(10.0),
        "region_logit_scale": torch.tensor(5.0),
    }
    caps, regs = torch.tensor([1, 1]), torch.tensor([4, 5, 4])  # both images share their caption
    losses = medpclip_loss(out, caps, regs, n_captions=2, region_weight=0.5)
    image = label_aware_contrastive(img, txt[:2], caps, caps, torch.tensor(10.0))
    region = label_aware_contrastive(reg, txt[2:], regs, regs, torch.tensor(5.0))
    assert losses["image_loss"].item() == pytest.approx(image.item())
    assert losses["region_loss"].item() == pytest.approx(region.item())
    assert losses["loss"].item() == pytest.approx(image.item() + 0.5 * region.item())
    assert gather_padded(img, caps)[0] is img  # no torch.distributed: nothing to gather
