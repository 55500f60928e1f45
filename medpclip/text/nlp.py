"""The text pipeline: find KB concepts in report text, with negation and laterality, as the corpus sees them.

Default pipeline (everything offline, no trained model):

    blank English → sentencizer → entity_ruler (KB names and aliases, case-insensitive, plus plurals;
    abbreviations case-sensitive) → report phrases (descriptions, derived forms and side-fused words from
    ``text/data/report_phrases.yaml``, see :mod:`medpclip.text.phrases`) → scispacy abbreviation_detector →
    abbreviation concepts (a short form defined in the text inherits its long form's concept) → negspacy
    negex (radiology negation terms) → negspacy negex again with hedge terms (``uncertainty``) →
    scispacy EntityLinker over the KB

Each mention gets an ``assertion`` (CheXpert/NegBio's three categories): ``uncertain`` when a hedge cue
scopes over it ('cannot exclude early edema', 'may represent atelectasis', 'possible small effusion'),
else ``negated`` when a negation cue does, else ``positive``. A negation cue ends a hedge's scope and a
hedge cue ends a negation's ('no pneumothorax, possible small effusion'). ``negated`` stays on the mention
for compatibility and is ``assertion == "negated"``.

The ruler finds exact KB names (and knows their concept); the linker resolves every mention against the
KB: a mention that is exactly a KB name directly, anything else through the KB's char-3-gram TF-IDF +
HNSW index, which is what links mentions the ruler did not produce (a trained model's entities, long forms
of abbreviations).

With the full UMLS (licensed) and a scispacy model installed, ``MEDPCLIP_LINKER=umls`` and
``MEDPCLIP_SPACY_MODEL=en_core_sci_sm`` (or the same arguments of :func:`build_pipeline`) switch to the
model's NER and scispacy's ``umls`` linker; concepts then come back as UMLS CUIs with UMLS names and types.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from medpclip.text.kb import Concept, ConceptKB, linker_paths, load_kb, normalize, plural
from medpclip.text.phrases import SIDE_EXTENSION

LINKER_ENV = "MEDPCLIP_LINKER"
MODEL_ENV = "MEDPCLIP_SPACY_MODEL"
LINKER_NAME = "medpclip"
NEGATABLE = ("FINDING", "LESION", "INJURY", "DEVICE")  # anatomy is present, never 'negated'

# Radiology additions to negspacy's en_clinical termset.
NEG_TERMS: dict[str, list[str]] = {
    "preceding_negations": [
        "no evidence of",
        "no radiographic evidence of",
        "no ct evidence of",
        "without evidence of",
        "negative for",
        "free of",
        "clear of",
        "resolution of",
        "interval resolution of",
        "resolved",
        "removal of",
        "interval removal of",
        "absence of",
        "no sign of",
        "no signs of",
        "not seen",
        "no findings of",
        "no features of",
        "rather than",
    ],
    "following_negations": [
        "has resolved",
        "have resolved",
        "resolved",
        "is not seen",
        "are not seen",
        "not seen",
        "is not identified",
        "are not identified",
        "not identified",
        "not visualized",
        "not visualised",
        "is absent",
        "are absent",
        "no longer seen",
        "no longer present",
        "no longer visualized",
        "not present",
        "is not present",
        "are not present",
        "has been removed",
        "have been removed",
        "been excluded",
        "is excluded",
        "ruled out",
        "is unlikely",
        "not evident",
        "within normal limits",
        "within limits of normal",
        "within the limits of normal",
        "within normal range",
    ],
    "pseudo_negations": [
        "not resolved",
        "has not resolved",
        "have not resolved",
        "not yet resolved",
        "incompletely resolved",
        "partially resolved",
        "cannot exclude",
        "cannot be excluded",
        "can not be excluded",
        "cannot be ruled out",
        "not excluded",
        "no change in",
        "no increase in",
        "no decrease in",
        "no improvement",
        "not improved",
        "without change",
        "no interval change in",
    ],
    "termination": ["there is", "there are", "there has been", "with interval", "consistent with", ";"],
}

# Hedge cues, run through negspacy's NegEx as a second pass (extension ``uncertain``): written for this
# project after the categories of the CheXpert labeler's and NegBio's uncertainty rules (not copied from them).
HEDGE_TERMS: dict[str, list[str]] = {
    "preceding_negations": [
        "possible",
        "possibly",
        "probable",
        "probably",
        "likely",
        "may",
        "might",
        "could",
        "can not exclude",
        "cannot exclude",
        "cannot rule out",
        "can not rule out",
        "can't exclude",
        "not excluding",
        "questionable",
        "question of",
        "suspicious for",
        "suspected",
        "suspect",
        "concerning for",
        "worrisome for",
        "suggestive of",
        "suggests",
        "suggesting",
        "differential includes",
        "differential diagnosis",
        "equivocal",
        "indeterminate",
        "versus",
        "vs",
        "vs.",
        "presumed",
        "presumably",
        "perhaps",
        "uncertain",
        "difficult to exclude",
        "not entirely excluded",
        "question",
        "to identify",
        "to exclude",
        "to rule out",
        "rule out",
        "r/o",
        "evaluate for",
        "evaluation for",
        "assess for",
    ],
    "following_negations": [
        "is possible",
        "are possible",
        "not excluded",
        "is not excluded",
        "are not excluded",
        "cannot be excluded",
        "can not be excluded",
        "cannot be ruled out",
        "can not be ruled out",
        "not ruled out",
        "difficult to exclude",
        "is suspected",
        "are suspected",
        "is likely",
        "are likely",
        "is questioned",
        "may not be",
        "versus",
        "vs",
        "vs.",
        "?",
    ],
    "pseudo_negations": ["no change", "not likely", "without change", "no interval change"],
    "termination": [
        "but",
        "however",
        "although",
        "though",
        "yet",
        "except",
        "aside from",
        "apart from",
        "which is",
        "no",
        "without",
        "negative for",
        "there is",
        "there are",
        ";",
    ],
}
# A hedge cue ends a negation's scope: 'no pneumothorax, possible small effusion'.
_HEDGES_ENDING_NEGATION = [
    "possible",
    "possibly",
    "probable",
    "probably",
    "likely",
    "may",
    "might",
    "could",
    "questionable",
    "suspicious for",
    "concerning for",
    "suggestive of",
]
ASSERTIONS = ("positive", "negated", "uncertain")
_SIDE_WORDS = {
    "left": "left",
    "right": "right",
    "bilateral": "bilateral",
    "bibasilar": "bilateral",
    "bibasal": "bilateral",
    "both": "bilateral",
    "l": "left",
    "r": "right",
}
_ABBREV_RE = re.compile(r"^[A-Z0-9][A-Z0-9/+-]*$")


@dataclass(frozen=True)
class Mention:
    """One concept found in a text. ``start``/``end`` are character offsets into the text."""

    text: str
    start: int
    end: int
    sentence: int
    concept_id: str
    cui: str | None
    name: str
    semantic_types: tuple[str, ...]
    category: str
    negated: bool  # assertion == "negated"; kept for records written before ``assertion``
    laterality: str | None
    score: float
    long_form: str | None = None
    assertion: str = "positive"  # positive | negated | uncertain

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["semantic_types"] = list(self.semantic_types)
        return d


@dataclass(frozen=True)
class LinkedText:
    text: str
    sentences: tuple[str, ...]
    mentions: tuple[Mention, ...]

    def sentence_mentions(self, i: int) -> list[Mention]:
        return [m for m in self.mentions if m.sentence == i]


# --- pipeline construction -------------------------------------------------------------------------------


def _is_abbreviation(s: str) -> bool:
    return bool(_ABBREV_RE.match(s)) and any(ch.isalpha() for ch in s) and len(s) <= 6


def ruler_patterns(nlp, kb: ConceptKB) -> list[dict[str, Any]]:
    """Entity-ruler patterns from the KB's names and aliases (not its dataset spellings).

    Phrases match on LOWER and also in the plural of their last word; abbreviations (``PTX``, ``IVC``,
    ``L3``) match case-sensitively token by token, so 'ivc' in prose or 'la' in a Spanish name do not.
    """
    patterns: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for c in kb:
        label = c.category.upper()
        for s in (c.canonical_name, *c.aliases):
            if _is_abbreviation(s):
                key = ("orth", s)
                if key not in seen:
                    seen.add(key)
                    pattern = [{"ORTH": t.text} for t in nlp.make_doc(s)]
                    patterns.append({"label": label, "pattern": pattern, "id": c.concept_id})
                continue
            for form in (s.lower(), plural(s.lower())):
                key = ("lower", form)
                owner = kb.lookup(form)
                # a plural that is itself another concept's name belongs to that concept
                if key in seen or (owner is not None and owner.concept_id != c.concept_id):
                    continue
                seen.add(key)
                patterns.append({"label": label, "pattern": form, "id": c.concept_id})
    return patterns


def _negex_termset() -> dict[str, list[str]]:
    """negspacy's en_clinical terms plus ours, sorted so every build matches in the same order.

    Built from a copy: ``termset.add_patterns`` would edit negspacy's module-level lists in place. The
    hedge cues end a negation's scope (a hedge cue is never itself a negation).
    """
    from negspacy.termsets import termset

    base = termset("en_clinical").get_patterns()
    out = {k: set(base[k]) | set(NEG_TERMS.get(k, [])) for k in base}
    out["termination"] |= set(_HEDGES_ENDING_NEGATION)
    hedges = set(HEDGE_TERMS["preceding_negations"]) | set(HEDGE_TERMS["following_negations"])
    # en_clinical lists a few hedges as negations ('rule out', 'r/o', 'evaluate for', 'versus'): those are
    # the uncertainty pass's ('pneumonia ruled out' stays a negation)
    out["preceding_negations"] -= hedges
    out["following_negations"] -= hedges
    return {k: sorted(v) for k, v in out.items()}


def _hedge_termset() -> dict[str, list[str]]:
    return {k: sorted(set(v)) for k, v in HEDGE_TERMS.items()}


def _register_medpclip_linker(kb: ConceptKB) -> None:
    """Make scispacy's ``scispacy_linker`` factory know ``linker_name='medpclip'`` (our KB + index)."""
    from scispacy.candidate_generation import DEFAULT_KNOWLEDGE_BASES, DEFAULT_PATHS
    from scispacy.linking_utils import KnowledgeBase

    entities = kb.entities()

    class MedpclipKnowledgeBase(KnowledgeBase):
        def __init__(self) -> None:
            super().__init__(entities)

    DEFAULT_PATHS[LINKER_NAME] = linker_paths(kb)
    DEFAULT_KNOWLEDGE_BASES[LINKER_NAME] = MedpclipKnowledgeBase


class CandidateCache:
    """Wraps scispacy's CandidateGenerator: exact KB names first, then a per-mention cache.

    A mention that is exactly one of the KB's names (or its plural) is that concept with similarity 1:
    querying the char-3-gram index for it would only confirm it, at a TF-IDF transform plus an HNSW query
    per mention (~1.5 ms on one core). Everything else goes to the index once per distinct string;
    report vocabulary repeats ('pleural effusion' thousands of times) and the result depends on the
    string only.
    """

    def __init__(self, generator, exact_kb: ConceptKB | None = None, max_size: int = 100_000) -> None:
        self.generator = generator
        self.kb = generator.kb
        self.exact_kb = exact_kb
        self.max_size = max_size
        self._cache: dict[tuple[str, int], Any] = {}

    def __call__(self, mention_texts: list[str], k: int):
        from scispacy.candidate_generation import MentionCandidate

        todo = sorted({m for m in mention_texts if (m, k) not in self._cache})
        if len(self._cache) + len(todo) > self.max_size:
            self._cache.clear()
        query = []
        for m in todo:
            exact = self.exact_kb.lookup(m) if self.exact_kb is not None else None
            if exact is not None:
                self._cache[(m, k)] = [MentionCandidate(exact.concept_id, [m], [1.0])]
            else:
                query.append(m)
        if query:
            for m, cands in zip(query, self.generator(query, k), strict=True):
                self._cache[(m, k)] = cands
        return [self._cache[(m, k)] for m in mention_texts]


def _abbreviation_concepts(doc):
    """A short form the text defines ('pneumothorax (PTX)') takes its long form's concept wherever it
    occurs, even when the KB does not list that abbreviation."""
    from spacy.tokens import Span
    from spacy.util import filter_spans

    abbreviations = doc._.abbreviations if doc.has_extension("abbreviations") else []
    if not abbreviations:
        return doc
    by_span = {(e.start, e.end): e for e in doc.ents}
    added = []
    for short in abbreviations:
        long_form = short._.long_form
        if long_form is None or (short.start, short.end) in by_span:
            continue
        source = next((e for e in doc.ents if e.start >= long_form.start and e.end <= long_form.end), None)
        if source is not None and source.ent_id_:
            added.append(Span(doc, short.start, short.end, label=source.label_, span_id=source.ent_id_))
    if added:
        doc.ents = filter_spans([*doc.ents, *added])
    return doc


def build_pipeline(linker: str | None = None, model: str | None = None, kb: ConceptKB | None = None):
    """A spaCy pipeline for :func:`link`.

    ``linker``: ``medpclip`` (default; our KB) or ``umls`` (scispacy's UMLS linker; needs its files, which
    scispacy downloads on first use, or a populated ``SCISPACY_CACHE``). ``model``: a spaCy model to
    load instead of blank English (e.g. ``en_core_sci_sm``, whose NER then proposes the mentions).
    Defaults come from ``$MEDPCLIP_LINKER`` and ``$MEDPCLIP_SPACY_MODEL``.
    """
    import negspacy.negation  # noqa: F401  (registers negex)
    import scispacy.abbreviation  # noqa: F401  (registers abbreviation_detector)
    import scispacy.linking  # noqa: F401  (registers scispacy_linker)
    import spacy
    from spacy.language import Language

    linker = linker or os.environ.get(LINKER_ENV) or LINKER_NAME
    model = model if model is not None else os.environ.get(MODEL_ENV) or None
    if linker not in (LINKER_NAME, "umls"):
        raise ValueError(f"unknown linker '{linker}' (use '{LINKER_NAME}' or 'umls')")
    kb = kb or load_kb()
    _register_factories()

    if model:
        try:
            nlp = spacy.load(model)
        except OSError as e:
            raise ValueError(f"spaCy model '{model}' is not installed ({e.__class__.__name__})") from None
    else:
        nlp = spacy.blank("en")
    if not nlp.has_pipe("parser") and not nlp.has_pipe("senter") and not nlp.has_pipe("sentencizer"):
        nlp.add_pipe("sentencizer")
    if not nlp.has_pipe("ner"):
        ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "validate": False})
        ruler.add_patterns(ruler_patterns(nlp, kb))
        _KBS[kb.sha256] = kb
        nlp.add_pipe("medpclip_report_phrases", config={"kb_sha256": kb.sha256})
    nlp.add_pipe("abbreviation_detector")
    if not Language.has_factory("medpclip_abbreviation_concepts"):
        Language.component("medpclip_abbreviation_concepts", func=_abbreviation_concepts)
    nlp.add_pipe("medpclip_abbreviation_concepts")
    # With a trained NER every entity is 'ENTITY': negate them all.
    ent_types = None if nlp.has_pipe("ner") else list(NEGATABLE)
    nlp.add_pipe("negex", config={"neg_termset": _negex_termset(), "ent_types": ent_types})
    nlp.add_pipe(
        "negex",
        name="uncertainty",
        config={"neg_termset": _hedge_termset(), "ent_types": ent_types, "extension_name": "uncertain"},
    )
    if linker == LINKER_NAME:
        _register_medpclip_linker(kb)
    nlp.add_pipe(
        "scispacy_linker",
        config={
            "linker_name": linker,
            "resolve_abbreviations": True,
            "k": 10,
            "threshold": 0.75,
            # our KB defines every concept; UMLS keeps scispacy's default of preferring defined ones
            "filter_for_definitions": linker != LINKER_NAME,
            "max_entities_per_mention": 3,
        },
    )
    entity_linker = nlp.get_pipe("scispacy_linker")
    entity_linker.candidate_generator = CandidateCache(
        entity_linker.candidate_generator, kb if linker == LINKER_NAME else None
    )
    nlp.meta["medpclip"] = {"linker": linker, "model": model or "blank:en", "kb_sha256": kb.sha256}
    return nlp


_KBS: dict[str, ConceptKB] = {}  # KB by sha256, for the phrase component's factory


def _make_report_phrases(nlp, name: str, kb_sha256: str):
    from medpclip.text.phrases import ReportPhrases, load_phrases

    kb = _KBS.get(kb_sha256) or load_kb()
    return ReportPhrases(nlp, kb, load_phrases(kb))


def _register_factories() -> None:
    from spacy.language import Language

    if not Language.has_factory("medpclip_report_phrases"):
        Language.factory(
            "medpclip_report_phrases", default_config={"kb_sha256": ""}, func=_make_report_phrases
        )


@lru_cache(maxsize=4)
def get_pipeline(linker: str | None = None, model: str | None = None):
    """The pipeline for this process, built once (index built or loaded from the cache)."""
    return build_pipeline(linker, model)


# --- extraction ------------------------------------------------------------------------------------------


_SIDE_PREPOSITIONS = {"in", "on", "at", "of", "to", "along", "within", "under", "involving", "over"}
# words that may stand between a finding and the phrase placing it: 'nodule is seen in the left…'
_SIDE_SKIP = {
    "is",
    "are",
    "was",
    "were",
    "seen",
    "noted",
    "present",
    "identified",
    "located",
    "again",
    "also",
    "now",
    "(",
    ")",
    "demonstrated",
    "visible",
}


def _side_after(ent) -> str | None:
    """Side given after a mention: 'shift to the left', 'nodule is seen in both lungs', 'stones bilaterally'."""
    doc, end = ent.doc, min(ent.sent.end, ent.end + 8)
    i = ent.end
    while i < end and (doc[i].lower_ in _SIDE_SKIP or doc[i].is_upper):
        i += 1
    if i < end and doc[i].lower_ == "bilaterally":
        return "bilateral"
    if i < end and doc[i].lower_ in _SIDE_PREPOSITIONS:
        i += 1
        if i < end and doc[i].lower_ == "the":
            i += 1
        if i < end:
            return _SIDE_WORDS.get(doc[i].lower_) if len(doc[i]) > 1 else None
    return None


def _laterality(ent, concept: Concept | None) -> str | None:
    """Side of a mention: the concept's own (left kidney), else the one its words state (dextroscoliosis,
    'blunting of the left costophrenic angle'), else one stated right after it, else the nearest side word in the four tokens before it ('small left
    pleural effusion')."""
    if concept is not None and concept.laterality:
        return concept.laterality
    fused = ent._.get(SIDE_EXTENSION) if ent.has_extension(SIDE_EXTENSION) else None
    if fused:
        return fused
    inside = [_SIDE_WORDS[t.lower_] for t in ent if t.lower_ in _SIDE_WORDS and len(t) > 1]
    if inside:  # a description that holds its side: 'calcified left suprahilar lymph node'
        return inside[0]
    after = _side_after(ent)
    if after:
        return after
    sent = ent.sent
    for tok in reversed(ent.doc[max(sent.start, ent.start - 4) : ent.start]):
        if tok.is_punct and tok.text not in "-/":  # 'left kidney; no hydronephrosis' — a new clause
            break
        side = _SIDE_WORDS.get(tok.lower_)
        if side and (len(tok) > 1 or tok.is_upper):
            return side
    return None


def _concept_info(
    ent, kb: ConceptKB, umls_kb
) -> tuple[str, str | None, str, tuple[str, ...], str, float] | None:
    """(concept_id, cui, name, types, category, score) of an entity, or None when it links to nothing."""
    candidates = ent._.kb_ents
    if umls_kb is not None:  # UMLS mode: the linker decides
        if not candidates:
            return None
        cui, score = candidates[0]
        e = umls_kb.cui_to_entity[cui]
        return cui, cui, e.canonical_name, tuple(e.types), "entity", float(score)
    if ent.ent_id_ and ent.ent_id_ in kb.by_id:  # an exact KB name: the ruler knows the concept
        c = kb.get(ent.ent_id_)
        score = next((s for cid, s in candidates if cid == c.concept_id), 1.0)
        return c.concept_id, c.cui, c.canonical_name, c.types, c.category, float(score)
    if not candidates:
        return None
    c = kb.get(candidates[0][0])
    return c.concept_id, c.cui, c.canonical_name, c.types, c.category, float(candidates[0][1])


def mentions_of(doc, kb: ConceptKB | None = None) -> list[Mention]:
    """The linked concepts of a processed doc, in text order."""
    kb = kb or load_kb()
    umls_kb = _UMLS_KB.get(id(doc.vocab))
    sent_index = {s.start: i for i, s in enumerate(doc.sents)}
    out = []
    for ent in doc.ents:
        info = _concept_info(ent, kb, umls_kb)
        if info is None:
            continue
        concept_id, cui, name, types, category, score = info
        concept = kb.by_id.get(concept_id)
        long_form = ent._.long_form.text if ent._.long_form is not None else None
        assertion = _assertion(ent)
        out.append(
            Mention(
                text=ent.text,
                start=ent.start_char,
                end=ent.end_char,
                sentence=sent_index[ent.sent.start],
                concept_id=concept_id,
                cui=cui,
                name=name,
                semantic_types=tuple(types),
                category=category,
                negated=assertion == "negated",
                laterality=_laterality(ent, concept),
                score=round(score, 4),
                long_form=long_form,
                assertion=assertion,
            )
        )
    return out


def _assertion(ent) -> str:
    """CheXpert's order: a hedge over a mention makes it uncertain even where a negation also reaches it
    ('no definite pneumonia, cannot exclude …')."""
    if ent.has_extension("uncertain") and ent._.uncertain:
        return "uncertain"
    return "negated" if ent._.negex else "positive"


_UMLS_KB: dict[int, Any] = {}  # vocab id → scispacy KB, for pipelines built with the UMLS linker


def _register_umls_kb(nlp) -> None:
    if nlp.meta.get("medpclip", {}).get("linker") == "umls":
        _UMLS_KB[id(nlp.vocab)] = nlp.get_pipe("scispacy_linker").kb


def _linked(doc, kb: ConceptKB) -> LinkedText:
    return LinkedText(
        text=doc.text,
        sentences=tuple(s.text.strip() for s in doc.sents),
        mentions=tuple(mentions_of(doc, kb)),
    )


@contextmanager
def _quiet_warnings():
    """scispacy's abbreviation detector runs an empty Matcher on every text that defines no abbreviation,
    and spaCy warns (W036) each time."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        yield


def link(text: str, nlp=None) -> LinkedText:
    """The concepts in one text (a report, a sentence)."""
    nlp = nlp or get_pipeline()
    _register_umls_kb(nlp)
    text = normalize_whitespace(text)
    if len(text) > nlp.max_length:
        raise ValueError(
            f"text is {len(text):,} characters, over the pipeline's {nlp.max_length:,}: link it in parts"
        )
    with _quiet_warnings():
        return _linked(nlp(text), load_kb())


def link_many(texts: list[str], nlp=None, batch_size: int = 256) -> list[LinkedText]:
    """:func:`link` over many texts with ``nlp.pipe`` (one process; the build parallelises above this)."""
    nlp = nlp or get_pipeline()
    _register_umls_kb(nlp)
    kb = load_kb()
    with _quiet_warnings():
        docs = list(nlp.pipe((normalize_whitespace(t) for t in texts), batch_size=batch_size))
    return [_linked(d, kb) for d in docs]


def normalize_whitespace(text: str) -> str:
    """Reports wrap lines mid-sentence; one space between words keeps sentences and offsets simple."""
    return " ".join(text.split())


__all__ = [
    "ASSERTIONS",
    "LINKER_ENV",
    "MODEL_ENV",
    "LinkedText",
    "Mention",
    "build_pipeline",
    "get_pipeline",
    "link",
    "link_many",
    "mentions_of",
    "normalize",
    "ruler_patterns",
]
