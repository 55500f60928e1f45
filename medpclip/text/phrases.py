"""Report phrases: how radiologists say a finding, beyond the KB's names, mapped to the KB concept it means.

The entity ruler matches KB names and aliases as fixed strings. Reports also say findings by description
('low lung volumes', 'the heart is mildly enlarged'), by derived forms ('emphysematous changes',
'calcified hilar nodes', 'atherosclerotic aorta') and with the side fused into the word ('dextroscoliosis',
'levocurvature'). ``text/data/report_phrases.yaml`` lists those, each under the concept it means, in a small
pattern language compiled to spaCy ``Matcher`` token patterns:

- ``word`` — the token, case-insensitive, or its plural (``opacity`` also matches ``opacities``);
- ``a|b|c`` — one of the alternatives; an alternative may be several tokens (``x-ray`` is three);
- ``a|b?`` — optional;
- ``*N`` — up to N words of any kind between (never punctuation, never a negation or hedge word, which
  would then sit inside the mention where neither negex pass sees it).

Matching is by whole tokens, so a phrase never fires inside an unrelated word ('vascular' does not match in
'bronchovascular'). A match that crosses a sentence boundary is dropped; overlapping matches and KB names
resolve to the longest span (``spacy.util.filter_spans``). An entry may give ``side``
(``left``/``right``/``bilateral``): the side the words themselves state (dextro- is right).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from medpclip.text.kb import ConceptKB, plural

PHRASES_FILE = "report_phrases.yaml"
SIDE_EXTENSION = "medpclip_side"
SIDES = ("left", "right", "bilateral")
# Words a gap may never swallow: a cue inside a mention is invisible to the negation and hedge passes.
GAP_STOP_WORDS = (
    "no",
    "not",
    "without",
    "negative",
    "free",
    "clear",
    "normal",
    "resolved",
    "possible",
    "possibly",
    "may",
    "might",
    "could",
    "questionable",
    "cannot",
    "versus",
    "vs",
    "or",
    "and/or",
    "and",  # two findings of one organ, each its own mention: "the aorta is tortuous and calcified"
    "probable",
    "probably",
    "likely",
    "suspicious",
    "concerning",
)


class PhraseError(ValueError):
    """A phrase file entry that cannot be compiled (one line, naming the entry)."""


@dataclass(frozen=True)
class PhraseEntry:
    concept_id: str
    pattern: str
    side: str | None = None


def load_phrases(kb: ConceptKB, text: str | None = None) -> list[PhraseEntry]:
    """The phrase file's entries, checked against the KB (every concept must exist, sides must be sides)."""
    if text is None:
        text = resources.files("medpclip.text").joinpath("data", PHRASES_FILE).read_text(encoding="utf-8")
    doc = yaml.safe_load(text) or {}
    out: list[PhraseEntry] = []
    for i, entry in enumerate(doc.get("phrases", [])):
        cid = entry.get("concept")
        if cid not in kb.by_id:
            raise PhraseError(f"{PHRASES_FILE}: entry {i}: concept {cid!r} is not in the KB")
        side = entry.get("side")
        if side is not None and side not in SIDES:
            raise PhraseError(f"{PHRASES_FILE}: entry {i} ({cid}): side must be one of {', '.join(SIDES)}")
        patterns = entry.get("patterns") or []
        if not patterns:
            raise PhraseError(f"{PHRASES_FILE}: entry {i} ({cid}): no patterns")
        out.extend(PhraseEntry(cid, p, side) for p in patterns)
    return out


def compile_pattern(nlp, pattern: str) -> list[list[dict[str, Any]]]:
    """The Matcher token patterns of one phrase pattern (one per combination of multi-token alternatives)."""
    return _compile(nlp, pattern)[0]


def _compile(nlp, pattern: str) -> tuple[list[list[dict[str, Any]]], frozenset[str]]:
    """(Matcher patterns, anchor words): a match needs one of the anchor words in the doc (the words of
    the required word with the fewest forms), which lets a doc skip every phrase it cannot contain."""
    slots: list[list[list[dict[str, Any]]]] = []  # each slot: its variants, each a token-dict list
    required: list[set[str]] = []
    for word in pattern.split():
        if word.startswith("*"):
            try:
                n = int(word[1:])
            except ValueError:
                raise PhraseError(f"{pattern!r}: gap {word!r} must be *N with N a number") from None
            gap = {"IS_PUNCT": False, "LOWER": {"NOT_IN": list(GAP_STOP_WORDS)}, "OP": f"{{0,{n}}}"}
            slots.append([[gap]])
            continue
        optional = word.endswith("?")
        alternatives = [a for a in word.rstrip("?").split("|") if a]
        if not alternatives:
            raise PhraseError(f"{pattern!r}: empty word")
        single: list[str] = []
        variants: list[list[dict[str, Any]]] = []
        for alt in alternatives:
            toks = [t.lower_ for t in nlp.make_doc(alt)]
            if len(toks) == 1:
                single.extend(dict.fromkeys([toks[0], plural(toks[0])]))
            else:
                variants.append([{"LOWER": t} for t in toks])
        if single:
            variants.insert(0, [{"LOWER": {"IN": sorted(set(single))}}])
        if not optional:
            required.append(set(single) | {v[0]["LOWER"] for v in variants if isinstance(v[0]["LOWER"], str)})
        if optional:
            if any(len(v) > 1 for v in variants):
                raise PhraseError(f"{pattern!r}: an optional word cannot have multi-token alternatives")
            variants = [[{**variants[0][0], "OP": "?"}]]
        slots.append(variants)
    if not required:
        raise PhraseError(f"{pattern!r}: every word is optional")
    anchors = frozenset(min(required, key=len))
    return [[tok for part in combo for tok in part] for combo in itertools.product(*slots)], anchors


@lru_cache(maxsize=2)
def _registered() -> bool:
    from spacy.tokens import Span

    if not Span.has_extension(SIDE_EXTENSION):
        Span.set_extension(SIDE_EXTENSION, default=None)
    return True


class ReportPhrases:
    """spaCy component: adds the phrase file's matches to ``doc.ents`` (longest span wins).

    One Matcher per concept, run only on docs holding one of its anchor words: a Matcher's cost grows with
    patterns × tokens, and most report sentences can hold only a few of the phrases.
    """

    def __init__(self, nlp, kb: ConceptKB, entries: list[PhraseEntry]) -> None:
        from spacy.matcher import Matcher

        _registered()
        self.meta: dict[str, tuple[str, str, str | None]] = {}  # match key → (label, concept, side)
        groups: dict[tuple[str, str | None], tuple[Any, set[str]]] = {}
        for i, e in enumerate(entries):
            key = f"medpclip_phrase_{i}"
            self.meta[key] = (kb.get(e.concept_id).category.upper(), e.concept_id, e.side)
            patterns, anchors = _compile(nlp, e.pattern)
            matcher, group_anchors = groups.setdefault(
                (e.concept_id, e.side), (Matcher(nlp.vocab, validate=True), set())
            )
            matcher.add(key, patterns, greedy="LONGEST")
            group_anchors |= anchors
        self.groups = [(m, frozenset(a)) for m, a in groups.values()]

    def __call__(self, doc):
        from spacy.tokens import Span
        from spacy.util import filter_spans

        words = {t.lower_ for t in doc}
        matches = [
            m for matcher, anchors in self.groups if not words.isdisjoint(anchors) for m in matcher(doc)
        ]
        found = []
        for match_id, start, end in sorted(matches, key=lambda m: (m[1], m[2], doc.vocab.strings[m[0]])):
            if doc[start].sent.start != doc[end - 1].sent.start:
                continue
            label, concept_id, side = self.meta[doc.vocab.strings[match_id]]
            span = Span(doc, start, end, label=label, span_id=concept_id)
            if side:
                span._.set(SIDE_EXTENSION, side)
            found.append(span)
        if found:
            doc.ents = filter_spans([*found, *doc.ents])  # ties: the phrase (listed first) wins
        return doc


__all__ = ["PhraseEntry", "PhraseError", "ReportPhrases", "compile_pattern", "load_phrases"]
