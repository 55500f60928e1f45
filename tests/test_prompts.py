"""Region texts from templates × KB priors, deterministic per key; report sentences attached to the regions
they describe; CUIs, semantic types and report concepts in the sample record."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest

from medpclip.corpus.sample import SampleParams, make_sample
from medpclip.corpus.schema import load_sample_json_schema
from medpclip.frame import Box, Frame, SourceFile, SourceItem
from medpclip.specs import resolve_spec
from medpclip.text import nlp as textnlp
from medpclip.text import prompts
from medpclip.text.kb import load_kb

CONTEXT = {"modality": "CT", "plane": "ax", "body_part": "abdomen"}


@pytest.fixture(scope="module", autouse=True)
def text_cache(tmp_path_factory):
    """Reports are linked by the process pipeline; its index goes to this session's shared cache folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDPCLIP_CACHE", str(tmp_path_factory.getbasetemp() / "medpclip-cache"))
    mp.delenv(textnlp.LINKER_ENV, raising=False)
    mp.delenv(textnlp.MODEL_ENV, raising=False)
    yield
    mp.undo()


def _texts(concept_name: str, key: str, name: str | None = None, **kw) -> list[str]:
    c = load_kb().lookup(concept_name)
    return prompts.region_texts(
        name or c.canonical_name, "x", concept=c, key=key, label=name or "l", **CONTEXT, **kw
    )


def test_region_texts_are_deterministic_per_key_and_vary_across_keys():
    a = _texts("Left kidney", "btcv_img0001_ax0050")
    assert a == _texts("Left kidney", "btcv_img0001_ax0050")
    assert a[0] == "Left kidney"
    assert a[1].startswith("Left kidney: the kidney on the patient's left side")
    assert len(a) == 2 + prompts.N_SAMPLED and len(set(a)) == len(a)
    draws = {tuple(_texts("Left kidney", f"btcv_img0001_ax{i:04d}")[2:]) for i in range(20)}
    assert len(draws) > 5, "different slices should get different template texts"


def test_region_texts_use_the_priors_but_never_dataset_spellings():
    pool = set()
    for i in range(200):
        pool.update(_texts("Aorta", f"amos_{i:04d}", name="Aorta"))
    joined = " | ".join(pool)
    assert "arota" not in joined.lower()
    assert any("axial CT" in t for t in pool)  # plane and modality
    assert "aorta (artery)" in pool  # parent structure
    assert any(t.startswith("an anatomical structure") for t in pool)  # category
    lateral = set()
    for i in range(200):
        lateral.update(_texts("Right adrenal gland", f"k{i}"))
    assert any("on the patient's right side" in t for t in lateral)  # laterality
    assert any("suprarenal gland" in t for t in lateral) or any("right adrenal" in t for t in lateral)


def test_region_texts_without_a_concept_fall_back_to_the_label():
    texts = prompts.region_texts("Organ 3", "organ", **CONTEXT)
    assert texts == [
        "Organ 3",
        "a segmentation area of the organ 3",
        "the organ 3 in an axial CT image of the abdomen",
        "organ 3, an organ",
    ]


def test_caption_names_modality_body_part_and_regions():
    cap = prompts.caption(
        modality="XR", plane="im", body_part="chest", region_names=["Pneumothorax"], image_labels=["Effusion"]
    )
    assert cap == "An X-ray image of the chest showing pneumothorax and effusion."


def _cxr_frame(report: str | None) -> Frame:
    item = SourceItem("demo_cxr", "00000001_000", (SourceFile("image", "images/00000001_000.png"),), "1")
    return Frame(
        item=item,
        image=np.full((128, 128), 90, np.uint8),
        intensity="uint8",
        boxes=[
            Box("Pneumothorax", (10, 10, 50, 60)),
            Box("Effusion", (60, 70, 120, 120)),
            Box("Nodule", (70, 10, 90, 30)),
        ],
        report=report,
    )


def test_sample_regions_carry_kb_concepts_and_positive_report_sentences():
    spec = resolve_spec("demo_cxr")
    report = (
        "FINDINGS: Large right pneumothorax. No pleural effusion. "
        "A 6 mm nodule in the left upper lobe. IMPRESSION: Right pneumothorax."
    )
    files = [{"role": "image", "path": "images/00000001_000.png", "sha256": "0" * 64}]
    sample, drops = make_sample(
        _cxr_frame(report),
        spec,
        SampleParams(max_side=128),
        key="demo_cxr_00000001_000_im0000",
        split="train",
        source_files=files,
    )
    assert not drops
    rec = sample.record
    jsonschema.validate(rec, load_sample_json_schema())
    by_label = {r["label"]: r for r in rec["regions"]}

    ptx = by_label["Pneumothorax"]
    assert ptx["cui"] == "C0032326" and ptx["semantic_types"] == ["T047"] and ptx["negated"] is False
    assert (
        "FINDINGS: Large right pneumothorax." in ptx["texts"]
        and "IMPRESSION: Right pneumothorax." in ptx["texts"]
    )

    eff = by_label["Effusion"]  # annotated, but the report negates it: flagged, no report text
    assert eff["cui"] == "C0032227" and eff["negated"] is True
    assert not any("effusion." in t.lower() and "No" in t for t in eff["texts"])

    nod = by_label["Nodule"]  # 'nodule' in the report is the parent concept of the label's 'lung nodule'
    assert nod["cui"] == "C0034079" and "A 6 mm nodule in the left upper lobe." in nod["texts"]

    concepts = rec["report"]["concepts"]
    assert [(c["name"], c["negated"]) for c in concepts] == [
        ("Pneumothorax", False),
        ("Pleural effusion", True),
        ("Nodule", False),
        ("Left upper lobe", False),
        ("Pneumothorax", False),
    ]
    assert all("score" not in c for c in concepts)  # records must not depend on the approximate index
    again, _ = make_sample(
        _cxr_frame(report),
        spec,
        SampleParams(max_side=128),
        key="demo_cxr_00000001_000_im0000",
        split="train",
        source_files=files,
    )
    assert again.members() == sample.members()


def test_sample_without_report_has_texts_from_priors_only():
    spec = resolve_spec("demo_cxr")
    files = [{"role": "image", "path": "images/00000001_000.png", "sha256": "0" * 64}]
    sample, _ = make_sample(
        _cxr_frame(None), spec, SampleParams(max_side=128), key="k", split="train", source_files=files
    )
    assert sample.record["report"] is None
    for r in sample.record["regions"]:
        assert r["texts"][0] == r["name"] and r["semantic_types"] and not r["negated"]
        assert r["texts"][1].startswith(r["name"] + ": ")
