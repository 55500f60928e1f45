"""Region texts and image captions from a label, its KB concept (medical priors) and the image's context.

A region gets several texts, most specific first: its display name, its definition, a few texts drawn from
templates × priors (synonyms, laterality, parent structure, category, modality, plane), and the report
sentences that state its concept as present (assertion ``positive``). The draw is seeded by the sample key and label,
so the same region of the same sample always gets the same texts, on any machine.

Report text is linked by :mod:`medpclip.text.nlp` (concepts with assertion and laterality); a report is
linked once per frame and shared by all its regions, after :func:`bounded_report` has cut one that is over
the size limit (a ``report_truncated`` frame reject says so).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from medpclip.text.kb import Concept, load_kb, normalize, plural

MODALITY_WORDS = {
    "CT": "CT",
    "MR": "MRI",
    "PET": "PET",
    "US": "ultrasound",
    "XR": "X-ray",
    "endoscopy": "endoscopy",
    "dermoscopy": "dermoscopy",
    "fundus": "fundus photograph",
    "pathology": "histopathology",
    "OCT": "OCT",
    "other": "medical",
}
PLANE_WORDS = {"ax": "axial", "co": "coronal", "sa": "sagittal", "im": ""}
CATEGORY_WORDS = {
    "anatomy": "anatomical structure",
    "finding": "finding",
    "lesion": "lesion",
    "injury": "injury",
    "device": "device",
}
N_SAMPLED = 3  # template texts per region on top of name, definition and report sentences
MAX_REPORT_SENTENCES = 2


def _image_phrase(modality: str, plane: str) -> str:
    plane_word = PLANE_WORDS.get(plane, "")
    mod = MODALITY_WORDS.get(modality, modality)
    return f"{plane_word} {mod}".strip()


def _article(word: str) -> str:
    """'an' before a vowel sound, letter names included: an axial, an MRI, an X-ray; a CT, a PET."""
    if word[:1].lower() in "aeiou":
        return "an"
    spelled = word[:1].isupper() and (len(word) == 1 or word[1].isupper() or word[1] == "-")
    return "an" if spelled and word[0] in "AEFHILMNORSX" else "a"


def _lower_first(text: str) -> str:
    """'Left kidney' → 'left kidney', but 'L1 vertebra' and 'COVID-19' keep their capitals."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


# Aliases that end in an adjective ('hepatic', 'left renal') help find mentions in reports but cannot
# stand as the noun of a region text ('the hepatic in an axial CT image').
_ADJECTIVE_RE = re.compile(r"(ic|ac|al|ous|ar)$", re.IGNORECASE)


def _is_abbreviation(alias: str) -> bool:
    return alias.isupper() and len(alias) <= 6


def text_seed(key: str, label: str) -> int:
    """Seed of a region's text draw: stable across processes (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(f"{key}\x00{label}".encode()).digest()[:8], "little")


@lru_cache(maxsize=4096)
def _prior_texts(
    name: str, concept_id: str, modality: str, plane: str, body_part: str
) -> tuple[str, tuple[str, ...]]:
    """(definition text, template texts) of a concept in one imaging context; cached per context."""
    kb = load_kb()
    c = kb.get(concept_id)
    display = _lower_first(name)
    terms = list(dict.fromkeys([display, _lower_first(c.canonical_name)]))
    # one region is one structure: no plural aliases ('kidneys'), no abbreviations as the head term
    plurals = {normalize(plural(f)) for f in (c.canonical_name, *c.aliases)}
    terms += [
        a
        for a in c.aliases
        if not _is_abbreviation(a)
        and normalize(a) not in plurals
        and not _ADJECTIVE_RE.search(a)
        and a.lower() not in {t.lower() for t in terms}
    ][:3]
    abbreviations = [a for a in c.aliases if _is_abbreviation(a)]
    mod = MODALITY_WORDS.get(modality, modality)
    image = _image_phrase(modality, plane)
    plane_word = PLANE_WORDS.get(plane, "")
    category = CATEGORY_WORDS.get(c.category, c.category)
    parent = kb.parent_of(concept_id)

    texts: list[str] = []
    for t in terms:
        texts += [
            f"a segmentation area of the {t}",  # the template of IMed-361M, kept for continuity
            f"the {t} in {_article(image)} {image} image of the {body_part}",
            f"{t} on {mod}",
            f"{_article(category)} {category}: the {t}",
        ]
        if plane_word:
            texts.append(f"{_article(plane_word)} {plane_word} {mod} slice showing the {t}")
        if parent is not None:
            # 'parent' is broader in either sense (aorta → artery, duodenum → small intestine): the
            # templates avoid saying which
            pname = _lower_first(parent.canonical_name)
            if parent.category != "anatomy":
                texts.append(f"{t}, a kind of {pname}")
            elif c.category != "anatomy":
                texts.append(f"{t} of the {pname}")
            elif set(parent.types) & {"T029", "T030"}:  # a body region or space
                texts.append(f"the {t} in the {pname}")
            elif pname.lower() not in t.lower():  # not 'left kidney (kidney)'
                texts.append(f"{t} ({pname})")
        if c.laterality:
            base = _lower_first(parent.canonical_name) if parent is not None else t
            texts.append(f"the {base} on the patient's {c.laterality} side")
    for abbr in abbreviations:
        texts.append(f"{display} ({abbr})")
    definition = c.definition
    first = definition.split(" ", 1)[0]
    if first in ("The", "A", "An", "One"):  # 'The large organ…' reads on after a colon in lower case
        definition = definition[0].lower() + definition[1:]
    return f"{name}: {definition}", tuple(dict.fromkeys(texts))


def region_texts(
    name: str,
    category: str,
    *,
    modality: str,
    plane: str,
    body_part: str,
    concept: Concept | None = None,
    key: str = "",
    label: str = "",
    report_sentences: Sequence[str] = (),
    n_sampled: int = N_SAMPLED,
) -> list[str]:
    """Texts for one region, most specific first; duplicates removed, order kept.

    Without a concept (a spec built in code, outside the KB) the texts come from the name and category
    alone. With one: name, definition, ``n_sampled`` template × prior texts drawn with a seed from
    ``key`` and ``label``, then up to two positive report sentences about the concept.
    """
    lower = _lower_first(name)
    image = _image_phrase(modality, plane)
    if concept is None:
        texts = [
            name,
            f"a segmentation area of the {lower}",
            f"the {lower} in {_article(image)} {image} image of the {body_part}",
        ]
        if category.lower() != lower.lower():
            texts.append(f"{lower}, {_article(category)} {category.lower()}")
        return list(dict.fromkeys(texts))
    definition_text, pool = _prior_texts(name, concept.concept_id, modality, plane, body_part)
    rng = random.Random(text_seed(key, label or name))
    drawn = rng.sample(pool, min(n_sampled, len(pool)))
    texts = [name, definition_text, *drawn, *list(report_sentences)[:MAX_REPORT_SENTENCES]]
    return list(dict.fromkeys(texts))


def caption(
    *, modality: str, plane: str, body_part: str, region_names: Sequence[str], image_labels: Sequence[str]
) -> str:
    """One global caption naming modality, body part and what the image shows (regions, then findings)."""
    image = _image_phrase(modality, plane)
    names = list(dict.fromkeys(n.lower() for n in region_names))
    kb = load_kb()
    shown_concepts = [c.concept_id for c in map(kb.lookup, names) if c is not None]

    def already_shown(label: str) -> bool:
        """An image label naming a region's concept, or its parent or child ('Nodule' beside a region
        'Pulmonary nodule'), would say the same thing twice."""
        c = kb.lookup(label)
        return c is not None and any(kb.related(c.concept_id, s) for s in shown_concepts)

    findings = [
        f.lower() for f in dict.fromkeys(image_labels) if f.lower() not in names and not already_shown(f)
    ]
    text = f"{_article(image).capitalize()} {image} image of the {body_part}"
    shown = names + findings
    if shown:
        text += " showing " + (", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0])
    return text + "."


# --- reports ---------------------------------------------------------------------------------------------


MAX_REPORT_CHARS = 32_768  # ~10x the longest real chest report; spaCy refuses texts over 1,000,000


def bounded_report(text: str | None, limit: int = MAX_REPORT_CHARS) -> tuple[str | None, str | None]:
    """(the report as the corpus keeps it, why it was cut or None). A report over ``limit`` characters is
    cut at the last sentence end (else space) before the limit: a pasted log or a whole record in a report
    field would otherwise cost the build minutes of linking, or spaCy's length error."""
    if text is None or len(text) <= limit:
        return text, None
    head = text[:limit]
    cut = max(head.rfind(". "), head.rfind("\n"))
    if cut < limit // 2:
        cut = head.rfind(" ")
    kept = head[: cut + 1].rstrip() if cut > 0 else head
    return kept, f"report is {len(text):,} characters, over the {limit:,} limit: kept the first {len(kept):,}"


def link_report(text: str):
    """The report's sentences and concept mentions (assertion, laterality), from the process's pipeline."""
    from medpclip.text.nlp import link

    return link(text)


def report_concepts(linked) -> list[dict[str, Any]]:
    """``report.concepts`` of the sample record: one entry per mention, in text order.

    The linker's similarity score is left out: it depends on the approximate index, and records must be
    the same bytes wherever they are built.
    """
    out = []
    for m in linked.mentions:
        d = m.to_dict()
        d.pop("score", None)
        out.append(d)
    return out


def region_report_evidence(linked, concept: Concept | None) -> tuple[list[str], bool]:
    """(positive sentences about the concept, negated) for one region.

    A sentence counts when a mention in it is the region's concept, its parent or one of its children
    ('the kidneys are small' is about the left kidney) and its assertion is ``positive``: a hedged mention
    ('may represent atelectasis') is neither evidence nor denial. ``negated`` is True when the report
    mentions the concept only in negated form (the annotation and the report disagree; kept as a flag for
    filtering, the region stays).
    """
    if linked is None or concept is None:
        return [], False
    kb = load_kb()
    positive: list[int] = []
    negatives = 0
    for m in linked.mentions:
        if m.concept_id not in kb.by_id or not kb.related(m.concept_id, concept.concept_id):
            continue
        if m.assertion == "negated":
            negatives += 1
        elif m.assertion == "positive" and m.sentence not in positive:
            positive.append(m.sentence)
    return [linked.sentences[i] for i in positive], bool(negatives and not positive)
