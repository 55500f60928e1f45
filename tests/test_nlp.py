"""The report pipeline on real spaCy/scispacy/negspacy components: concepts, negation, laterality, speed-
independent quality on the project's radiology sentence set, and `medpclip link`."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medpclip.cli import app
from medpclip.text import nlp as textnlp

SENTENCES = Path(__file__).parent / "data" / "radiology_sentences.jsonl"


def _found(pipeline, text):
    return [(m.name, m.negated, m.laterality) for m in textnlp.link(text, pipeline).mentions]


def test_pipeline_is_the_documented_one(pipeline):
    assert pipeline.pipe_names == [
        "sentencizer",
        "entity_ruler",
        "medpclip_report_phrases",
        "abbreviation_detector",
        "medpclip_abbreviation_concepts",
        "negex",
        "uncertainty",
        "scispacy_linker",
    ]
    linker = pipeline.get_pipe("scispacy_linker")
    assert type(linker).__module__ == "scispacy.linking"
    assert len(linker.kb.cui_to_entity) >= 300


def test_known_strings(pipeline):
    assert _found(pipeline, "No pneumothorax or pleural effusion.") == [
        ("Pneumothorax", True, None),
        ("Pleural effusion", True, None),
    ]
    assert _found(pipeline, "Small left pleural effusion.") == [("Pleural effusion", False, "left")]
    assert _found(pipeline, "Bilateral pleural effusions have resolved.") == [
        ("Pleural effusion", True, "bilateral")
    ]
    # anatomy is never negated: the negation belongs to the finding
    assert _found(pipeline, "No focal lesion in the liver.") == [
        ("Lesion", True, None),
        ("Liver", False, None),
    ]
    # 'T1' as an MRI weighting is not the T1 vertebra; 'L1' is a vertebra
    assert _found(pipeline, "T1-weighted images show an enhancing tumour.") == [
        ("Enhancing tumour", False, None)
    ]
    assert [n for n, _, _ in _found(pipeline, "Compression fracture of L1.")] == [
        "Vertebral compression fracture",
        "L1 vertebra",
    ]


def test_abbreviation_defined_in_the_text_inherits_the_concept(pipeline):
    linked = textnlp.link("Pleural thickening (PTH) at the apex. The PTH is unchanged.", pipeline)
    assert [(m.text, m.name) for m in linked.mentions] == [
        ("Pleural thickening", "Pleural thickening"),
        ("PTH", "Pleural thickening"),
        ("PTH", "Pleural thickening"),
    ]
    assert linked.mentions[-1].long_form == "Pleural thickening" and linked.mentions[-1].sentence == 1


def test_negation_scope_ends_at_but_and_new_sentences(pipeline):
    assert _found(pipeline, "No effusion, but there is atelectasis.") == [
        ("Pleural effusion", True, None),
        ("Atelectasis", False, None),
    ]
    assert _found(pipeline, "Pneumonia cannot be excluded.") == [("Pneumonia", False, None)]
    assert _found(pipeline, "The effusion has not resolved.") == [("Pleural effusion", False, None)]


def _score(pipeline, rows):
    """Concept P/R per sentence (sets of concept ids), negation and laterality accuracy on the matches."""
    tp = fp = fn = 0
    neg_ok = neg_n = side_ok = side_n = 0
    errors = []
    docs = textnlp.link_many([r["text"] for r in rows], pipeline)
    for row, linked in zip(rows, docs, strict=True):
        gold_neg, gold_side = defaultdict(list), defaultdict(list)
        for e in row["expected"]:
            gold_neg[e["concept"]].append(e["negated"])
            gold_side[e["concept"]].append(e["laterality"])
        pred_neg, pred_side = defaultdict(list), defaultdict(list)
        for m in linked.mentions:
            pred_neg[m.concept_id].append(m.negated)
            pred_side[m.concept_id].append(m.laterality)
        gold, pred = set(gold_neg), set(pred_neg)
        tp += len(gold & pred)
        fp += len(pred - gold)
        fn += len(gold - pred)
        if gold != pred:
            errors.append(
                f"concepts  {row['text']!r}: missed {sorted(gold - pred)}, extra {sorted(pred - gold)}"
            )
        for cid in gold & pred:
            neg_n += 1
            if all(gold_neg[cid]) == all(pred_neg[cid]):
                neg_ok += 1
            else:
                errors.append(f"negation  {row['text']!r}: {cid}")
            side_n += 1
            g = next((s for s in gold_side[cid] if s), None)
            p = next((s for s in pred_side[cid] if s), None)
            if g == p:
                side_ok += 1
            else:
                errors.append(f"side      {row['text']!r}: {cid} expected {g} got {p}")
    return {
        "sentences": len(rows),
        "gold_concepts": tp + fn,
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "negation_accuracy": neg_ok / neg_n,
        "laterality_accuracy": side_ok / side_n,
        "errors": errors,
    }


def test_radiology_sentence_set_quality(pipeline):
    rows = [json.loads(line) for line in SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 60
    s = _score(pipeline, rows)
    print(
        f"\nradiology sentences: {s['sentences']} sentences, {s['gold_concepts']} gold concepts — "
        f"precision {s['precision']:.3f}, recall {s['recall']:.3f}, "
        f"negation accuracy {s['negation_accuracy']:.3f}, laterality accuracy {s['laterality_accuracy']:.3f}"
    )
    for e in s["errors"]:
        print("  ", e)
    assert s["precision"] >= 0.9 and s["recall"] >= 0.9 and s["negation_accuracy"] >= 0.9
    assert s["laterality_accuracy"] >= 0.85


def test_link_many_matches_link_and_is_deterministic(pipeline):
    texts = ["No pneumothorax.", "Left lower lobe consolidation. Small right effusion."]
    many = textnlp.link_many(texts, pipeline)
    assert [m.mentions for m in many] == [textnlp.link(t, pipeline).mentions for t in texts]
    assert many[1].sentences == ("Left lower lobe consolidation.", "Small right effusion.")


def test_umls_mode_needs_what_it_names():
    with pytest.raises(ValueError, match="unknown linker"):
        textnlp.build_pipeline(linker="snomed")
    with pytest.raises(ValueError, match="not installed"):
        textnlp.build_pipeline(linker="umls", model="en_core_sci_not_installed")


def test_cli_link_json_and_table(pipeline):
    runner = CliRunner()
    result = runner.invoke(app, ["link", "--format", "json", "No pneumothorax. Small left pleural effusion."])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["sentences"] == ["No pneumothorax.", "Small left pleural effusion."]
    found = [
        (c["cui"], c["name"], c["semantic_types"], c["negated"], c["laterality"]) for c in out["concepts"]
    ]
    assert found == [
        ("C0032326", "Pneumothorax", ["T047"], True, None),
        ("C0032227", "Pleural effusion", ["T047"], False, "left"),
    ]
    assert out["concepts"][1]["start"] == 28 and out["concepts"][1]["end"] == 44
    table = runner.invoke(app, ["link", "arota and postcava"])
    assert table.exit_code == 0 and "C0042458" in table.stdout
    bad = runner.invoke(app, ["link", "--format", "xml", "x"])
    assert bad.exit_code == 2
