"""The concept KB: integrity, spec coverage, label look-up, and the scispacy linker index built from it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from corpus_utils import MINIMAL_SPEC
from typer.testing import CliRunner

from medpclip.cli import app
from medpclip.specs import LabelEntry, SpecError, available_specs, load_spec_file, resolve_spec
from medpclip.text.kb import (
    CUI_RE,
    KB_PATH,
    LOCAL_ID_RE,
    TUI_NAMES,
    ConceptError,
    check_concepts,
    concept_for_label,
    linker_paths,
    load_kb,
    parse_kb,
)


@pytest.fixture(scope="module")
def kb():
    return load_kb()


def test_kb_is_large_sound_and_honest_about_cuis(kb):
    assert len(kb) >= 300
    assert check_concepts(kb.concepts) == []
    with_cui = [c for c in kb if c.cui]
    local = [c for c in kb if c.cui is None]
    assert all(CUI_RE.match(c.cui) and c.concept_id == c.cui and c.local_id is None for c in with_cui)
    assert all(LOCAL_ID_RE.match(c.local_id) and c.concept_id == c.local_id for c in local)
    assert len({c.concept_id for c in kb}) == len(kb)
    assert len({c.cui for c in with_cui}) == len(with_cui), "one concept per CUI"
    for c in kb:
        assert set(c.types) <= set(TUI_NAMES) and c.type_names == tuple(TUI_NAMES[t] for t in c.types)
        assert c.definition.endswith(".") and ". " not in c.definition
    cats = Counter(c.category for c in kb)
    assert cats["anatomy"] >= 150 and cats["finding"] + cats["lesion"] + cats["injury"] >= 120
    print(f"\nKB: {len(kb)} concepts, {len(with_cui)} with a CUI, {len(local)} local ids; {dict(cats)}")


def test_kb_file_is_scispacy_compatible(kb):
    """Every line carries scispacy's five KnowledgeBase fields; scispacy indexes all names and spellings."""
    for line in KB_PATH.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        assert {"concept_id", "canonical_name", "aliases", "types", "definition"} <= set(rec)
    skb = kb.scispacy_kb()
    assert len(skb.cui_to_entity) == len(kb)
    assert skb.alias_to_cuis["arota"] == {"C0003483"}


def test_malformed_kb_is_refused_with_one_line():
    good = KB_PATH.read_text(encoding="utf-8").splitlines()[0]
    rec = json.loads(good)
    bad = [
        {**rec, "cui": "C123", "concept_id": "C123"},
        {**rec, "concept_id": "MEDP:0001"},
        {**rec, "types": ["T999"]},
        {**rec, "definition": "Two sentences. Not one."},
        {**rec, "parent": "C9999999"},
    ]
    for r in bad:
        with pytest.raises(ConceptError) as e:
            parse_kb(json.dumps(r), "bad.jsonl")
        assert "\n" not in str(e.value) and str(e.value).startswith("bad.jsonl")
    dup = json.dumps({**rec, "concept_id": "MEDP:0999", "cui": None, "local_id": "MEDP:0999"})
    with pytest.raises(ConceptError, match="already names"):
        parse_kb(good + "\n" + dup)


def test_every_label_of_every_shipped_spec_has_a_concept(kb):
    names = available_specs()
    assert names
    for name in names:
        spec = resolve_spec(name)  # spec loading checks the concepts itself
        for entry in spec.labels:
            c = concept_for_label(entry, kb)
            assert entry.cui is None or entry.cui == c.cui, (name, entry.label)


@pytest.mark.parametrize(
    "text, name",
    [
        ("arota", "Aorta"),
        ("postcava", "Inferior vena cava"),
        ("kidney_left", "Left kidney"),
        ("vertebrae_L3", "L3 vertebra"),
        ("rib_left_7", "Left seventh rib"),
        ("Pleural_Thickening", "Pleural thickening"),
        ("costal_cartilages", "Costal cartilage"),
        ("prostate/uterus", "Prostate or uterus"),
        ("Infiltrate", "Pulmonary infiltrate"),
        ("Nodule/Mass", "Nodule or mass"),
        ("ET", "Enhancing tumour"),
        ("gall bladder", "Gallbladder"),
        ("ground glass opacity", "Ground-glass opacity"),
    ],
)
def test_dataset_spellings_resolve(kb, text, name):
    assert kb.lookup(text).canonical_name == name


def test_label_lookup_order_and_explicit_concept(kb):
    # the display name is more specific than MSD's label 'cancer'
    assert (
        concept_for_label(LabelEntry(label="cancer", name="Liver tumour", category="tumour")).cui
        == "C0023903"
    )
    # an explicit concept id wins; a CUI in the spec must agree with the concept's
    e = LabelEntry(label="tumour", name="Tumour", category="tumour", concept="C0024121")
    assert concept_for_label(e).canonical_name == "Lung neoplasm"
    with pytest.raises(ConceptError, match="is named like"):
        concept_for_label(LabelEntry(label="liver", name="Liver", category="liver", cui="C0037993"))
    with pytest.raises(ConceptError, match="gives cui"):  # a CUI the KB does not hold for this name
        concept_for_label(LabelEntry(label="liver", name="Liver", category="liver", cui="C0000001"))
    with pytest.raises(ConceptError, match="not in the KB"):
        concept_for_label(LabelEntry(label="x", name="X", category="x", concept="MEDP:9999"))
    assert kb.related("C0227614", "C0022646") and not kb.related("C0227614", "C0023884")


def _write(tmp_path: Path, labels) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(
        yaml.safe_dump({**{k: v for k, v in MINIMAL_SPEC.items() if k != "labels"}, "labels": labels}),
        encoding="utf-8",
    )
    return p


def test_spec_label_without_concept_fails_validation_in_one_line(tmp_path):
    path = _write(
        tmp_path,
        [
            {"value": 1, "label": "liver", "name": "Liver", "category": "liver"},
            {"value": 2, "label": "zorgblat", "name": "Zorgblat", "category": "zorg"},
        ],
    )
    with pytest.raises(SpecError) as e:
        load_spec_file(path)
    msg = str(e.value)
    assert "\n" not in msg and "labels.1" in msg and "zorgblat" in msg and "no concept" in msg
    result = CliRunner().invoke(app, ["specs", "validate", str(path)])
    assert result.exit_code == 1 and "zorgblat" in result.output
    # naming the concept explicitly makes the same label valid
    path = _write(
        tmp_path, [{"value": 2, "label": "zorgblat", "name": "Z", "category": "z", "concept": "C0023884"}]
    )
    assert load_spec_file(path).labels[0].concept == "C0023884"


def test_linker_index_is_built_once_and_links_known_strings(tmp_path, kb):
    from scispacy.candidate_generation import CandidateGenerator

    paths = linker_paths(kb, tmp_path)
    files = [Path(p) for p in paths]
    assert all(f.is_file() for f in files) and files[0].parent.name.startswith(kb.sha256[:16])
    stamps = [f.stat().st_mtime_ns for f in files]
    assert linker_paths(kb, tmp_path) == paths
    assert [f.stat().st_mtime_ns for f in files] == stamps, "a second call must reuse the cached index"
    aliases, vectorizer, index = paths.load()
    generator = CandidateGenerator(index, vectorizer, aliases, kb.scispacy_kb())
    queries = {
        "pneumothorx": "C0032326",  # misspelt
        "atelectsis": "C0004144",
        "pleural efusion": "C0032227",
        "left kidnye": "C0227614",
        "arota": "C0003483",
        "Cardiomegaly": "C0018800",
        "glioblastoma multiforme": "C0017636",
    }
    results = generator(list(queries), 10)
    for (query, expected), cands in zip(queries.items(), results, strict=True):
        best = max(cands, key=lambda c: max(c.similarities))
        assert best.concept_id == expected, (query, best)
