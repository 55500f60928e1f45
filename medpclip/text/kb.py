"""The concept knowledge base: load it, look labels up in it, and build scispacy's linker index over it.

``data/concepts.jsonl`` holds one concept per line in scispacy's ``KnowledgeBase`` format (``concept_id,
canonical_name, aliases, types, definition``) plus our fields:

- ``cui``: the UMLS CUI, or null where one is not known for certain (never an invented one);
- ``local_id``: ``MEDP:NNNN`` when ``cui`` is null; ``concept_id`` is the CUI when there is one, else this id;
- ``type_names``: the names of the TUIs in ``types``; ``category``: anatomy | finding | lesion | injury | device;
- ``parent``: the ``concept_id`` of a broader concept (left kidney → kidney), or null;
- ``spellings``: the datasets' own label strings and codes (``arota``, ``kidney_left``, ``ET``). They resolve
  spec labels and feed the linker, but are never written into region text or matched verbatim in reports,
  where they are typos or clash with common words (``ET`` tube, ``T1``-weighted).

Local ids are never renumbered or reused (corpora refer to them); new concepts take the next free number.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay out of spec loading
    from scispacy.candidate_generation import LinkerPaths
    from scispacy.linking_utils import KnowledgeBase

    from medpclip.specs import DatasetSpec, LabelEntry

KB_PATH = Path(__file__).resolve().parent / "data" / "concepts.jsonl"
CUI_RE = re.compile(r"^C\d{7}$")
LOCAL_ID_RE = re.compile(r"^MEDP:\d{4}$")
CATEGORIES = ("anatomy", "finding", "lesion", "injury", "device")
# The UMLS semantic types the KB uses (TUI → name, as in the UMLS Semantic Network).
TUI_NAMES = {
    "T020": "Acquired Abnormality",
    "T023": "Body Part, Organ, or Organ Component",
    "T024": "Tissue",
    "T026": "Cell Component",
    "T029": "Body Location or Region",
    "T030": "Body Space or Junction",
    "T033": "Finding",
    "T037": "Injury or Poisoning",
    "T046": "Pathologic Function",
    "T047": "Disease or Syndrome",
    "T074": "Medical Device",
    "T190": "Anatomical Abnormality",
    "T191": "Neoplastic Process",
}
INDEX_VERSION = 1  # bump when the index layout or vectorizer settings change


class ConceptError(ValueError):
    """The KB is malformed, or a label has no concept; the message is one line."""


@dataclass(frozen=True)
class Concept:
    concept_id: str
    canonical_name: str
    aliases: tuple[str, ...]
    types: tuple[str, ...]
    definition: str
    cui: str | None
    local_id: str | None
    type_names: tuple[str, ...]
    category: str
    parent: str | None
    spellings: tuple[str, ...] = ()

    @property
    def laterality(self) -> str | None:
        """``left``/``right`` for a sided structure (from its name), else None."""
        first = self.canonical_name.split(" ", 1)[0].lower()
        return first if first in ("left", "right") else None

    def surface_forms(self) -> tuple[str, ...]:
        """Every string that names the concept: canonical name, aliases, spellings."""
        return (self.canonical_name, *self.aliases, *self.spellings)

    def record(self) -> dict[str, Any]:
        """The concept as a JSON-ready dict (the KB line)."""
        return {
            "concept_id": self.concept_id,
            "canonical_name": self.canonical_name,
            "aliases": list(self.aliases),
            "types": list(self.types),
            "definition": self.definition,
            "cui": self.cui,
            "local_id": self.local_id,
            "type_names": list(self.type_names),
            "category": self.category,
            "parent": self.parent,
            "spellings": list(self.spellings),
        }


# --- normalisation ---------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lookup key of a name: lower case, ``_`` as space, single spaces (``Pleural_Thickening`` →
    ``pleural thickening``)."""
    return " ".join(text.lower().replace("_", " ").split())


_LATIN_PLURALS = {
    "vertebra": "vertebrae",
    "bulla": "bullae",
    "metastasis": "metastases",
    "naevus": "naevi",
    "nevus": "nevi",
    "bronchus": "bronchi",
    "diverticulum": "diverticula",
    "calculus": "calculi",
    "thrombus": "thrombi",
    "embolus": "emboli",
    "atrium": "atria",
    "septum": "septa",
}


def plural(phrase: str) -> str:
    """English plural of a phrase's last word (``pleural effusion`` → ``pleural effusions``)."""
    head, _, last = phrase.rpartition(" ")
    low = last.lower()
    if low in _LATIN_PLURALS:
        word = _LATIN_PLURALS[low]
    elif re.search(r"[^aeiou]y$", low):
        word = last[:-1] + "ies"
    elif re.search(r"(s|x|z|ch|sh)$", low):
        word = last + "es"
    elif re.search(r"sis$", low):
        word = last[:-2] + "es"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


# --- the KB ----------------------------------------------------------------------------------------------


@dataclass
class ConceptKB:
    """The concepts, by id and by every normalised name (names, aliases, spellings and their plurals)."""

    concepts: tuple[Concept, ...]
    sha256: str
    by_id: dict[str, Concept] = field(init=False, repr=False)
    by_cui: dict[str, Concept] = field(init=False, repr=False)
    _index: dict[str, str] = field(init=False, repr=False)
    _children: dict[str, list[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {c.concept_id: c for c in self.concepts}
        self.by_cui = {c.cui: c for c in self.concepts if c.cui}
        self._index = {}
        for c in self.concepts:
            for s in c.surface_forms():
                self._index[normalize(s)] = c.concept_id
        # Plurals only where they name nothing else ("costal cartilages", "intervertebral discs").
        for c in self.concepts:
            for s in c.surface_forms():
                self._index.setdefault(normalize(plural(s)), c.concept_id)
        self._children = {}
        for c in self.concepts:
            if c.parent:
                self._children.setdefault(c.parent, []).append(c.concept_id)

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts)

    def get(self, concept_id: str) -> Concept:
        return self.by_id[concept_id]

    def lookup(self, text: str) -> Concept | None:
        """The concept a name, alias or dataset spelling denotes (case and ``_`` insensitive), or None."""
        key = normalize(text)
        cid = self._index.get(key) or self._index.get(key.replace("-", " "))
        return self.by_id[cid] if cid else None

    def parent_of(self, concept_id: str) -> Concept | None:
        parent = self.by_id[concept_id].parent
        return self.by_id[parent] if parent else None

    def children(self, concept_id: str) -> list[Concept]:
        return [self.by_id[c] for c in self._children.get(concept_id, [])]

    def ancestors(self, concept_id: str) -> list[Concept]:
        out, seen = [], {concept_id}
        cur = self.by_id[concept_id].parent
        while cur and cur not in seen:
            seen.add(cur)
            out.append(self.by_id[cur])
            cur = self.by_id[cur].parent
        return out

    def related(self, a: str, b: str) -> bool:
        """Same concept, or one is the other's parent (a sentence about 'the kidneys' is about the left
        kidney too; one step only, so a generic 'lesion' does not attach to every finding)."""
        return a == b or self.by_id[a].parent == b or self.by_id[b].parent == a

    def entities(self) -> list[Any]:
        """The concepts as scispacy ``Entity`` tuples; spellings join the aliases so the linker finds them."""
        from scispacy.linking_utils import Entity

        return [
            Entity(
                concept_id=c.concept_id,
                canonical_name=c.canonical_name,
                aliases=[*c.aliases, *c.spellings],
                types=list(c.types),
                definition=c.definition,
            )
            for c in self.concepts
        ]

    def scispacy_kb(self) -> KnowledgeBase:
        from scispacy.linking_utils import KnowledgeBase

        return KnowledgeBase(self.entities())


def _concept_from_record(rec: dict[str, Any], where: str) -> Concept:
    expected = {
        "concept_id",
        "canonical_name",
        "aliases",
        "types",
        "definition",
        "cui",
        "local_id",
        "type_names",
        "category",
        "parent",
    }
    missing = expected - set(rec)
    if missing:
        raise ConceptError(f"{where}: missing fields {sorted(missing)}")
    unknown = set(rec) - expected - {"spellings"}
    if unknown:
        raise ConceptError(f"{where}: unknown fields {sorted(unknown)}")
    return Concept(
        concept_id=rec["concept_id"],
        canonical_name=rec["canonical_name"],
        aliases=tuple(rec["aliases"]),
        types=tuple(rec["types"]),
        definition=rec["definition"],
        cui=rec["cui"],
        local_id=rec["local_id"],
        type_names=tuple(rec["type_names"]),
        category=rec["category"],
        parent=rec["parent"],
        spellings=tuple(rec.get("spellings", ())),
    )


def check_concepts(concepts: Iterable[Concept]) -> list[str]:
    """Integrity problems of a concept list (empty when it is sound); used on load and by the tests."""
    problems: list[str] = []
    concepts = list(concepts)
    ids = [c.concept_id for c in concepts]
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        problems.append(f"duplicate concept ids: {dup[:5]}")
    known = set(ids)
    owner: dict[str, str] = {}
    for c in concepts:
        tag = f"{c.concept_id} ({c.canonical_name})"
        if c.cui is not None:
            if not CUI_RE.match(c.cui):
                problems.append(f"{tag}: cui '{c.cui}' is not C + 7 digits")
            if c.concept_id != c.cui or c.local_id is not None:
                problems.append(f"{tag}: a concept with a CUI uses it as concept_id and has no local_id")
        elif c.local_id is None or not LOCAL_ID_RE.match(c.local_id) or c.concept_id != c.local_id:
            problems.append(f"{tag}: without a CUI, concept_id must equal a local_id MEDP:NNNN")
        if not c.types or any(t not in TUI_NAMES for t in c.types):
            problems.append(f"{tag}: types {list(c.types)} must be known TUIs")
        elif tuple(TUI_NAMES[t] for t in c.types) != c.type_names:
            problems.append(f"{tag}: type_names do not match types")
        if c.category not in CATEGORIES:
            problems.append(f"{tag}: category '{c.category}' not in {CATEGORIES}")
        if c.parent is not None and c.parent not in known:
            problems.append(f"{tag}: parent '{c.parent}' is not in the KB")
        d = c.definition.strip()
        if not d or not d.endswith(".") or ". " in d:
            problems.append(f"{tag}: the definition must be one sentence")
        for s in c.surface_forms():
            key = normalize(s)
            if key in owner and owner[key] != c.concept_id:
                problems.append(f"{tag}: name '{s}' already names {owner[key]}")
            owner[key] = c.concept_id
    by_id = {c.concept_id: c for c in concepts}
    for c in concepts:  # parent chains end
        seen, cur = set(), c.parent
        while cur and cur in by_id:
            if cur in seen or cur == c.concept_id:
                problems.append(f"{c.concept_id}: parent chain has a cycle")
                break
            seen.add(cur)
            cur = by_id[cur].parent
    return problems


def parse_kb(text: str, source: str = "<kb>") -> ConceptKB:
    concepts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConceptError(f"{source}:{n}: not JSON: {e}") from None
        concepts.append(_concept_from_record(rec, f"{source}:{n}"))
    problems = check_concepts(concepts)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConceptError(f"{source}: {problems[0]}{more}")
    return ConceptKB(tuple(concepts), hashlib.sha256(text.encode("utf-8")).hexdigest())


@lru_cache(maxsize=4)
def load_kb(path: Path = KB_PATH) -> ConceptKB:
    """The KB at ``path`` (the shipped one by default), parsed and checked once per process."""
    return parse_kb(Path(path).read_text(encoding="utf-8"), str(path))


# --- spec labels → concepts ------------------------------------------------------------------------------


def concept_for_label(entry: LabelEntry, kb: ConceptKB | None = None) -> Concept:
    """The KB concept of a spec label.

    Order: the entry's explicit ``concept`` id; its ``cui``; then its display name, label and aliases as
    names in the KB (the display name first: 'Liver tumour' says more than MSD's label 'cancer'). A ``cui``
    in the spec must be the concept's, and agree with the name (a mismatch is a typo on one side). Raises
    ConceptError.
    """
    kb = kb or load_kb()
    if entry.concept is not None:
        found = kb.by_id.get(entry.concept)
        if found is None:
            raise ConceptError(
                f"label '{entry.label}' names concept '{entry.concept}', which is not in the KB"
            )
    else:
        by_cui = kb.by_cui.get(entry.cui) if entry.cui else None
        by_name = next(
            (c for c in (kb.lookup(t) for t in (entry.name, entry.label, *entry.aliases)) if c is not None),
            None,
        )
        # a CUI one step broader or narrower than the name is a choice (ACDC's LV myocardium → myocardium);
        # anything else means the CUI or the name is wrong
        if by_cui and by_name and not kb.related(by_cui.concept_id, by_name.concept_id):
            raise ConceptError(
                f"label '{entry.label}' is named like {by_name.concept_id} '{by_name.canonical_name}' but its "
                f"cui {entry.cui} is '{by_cui.canonical_name}'; fix the spec or name the concept"
            )
        found = by_cui or by_name
        if found is None:
            raise ConceptError(
                f"label '{entry.label}' (name '{entry.name}') has no concept in the KB "
                f"(medpclip/text/data/concepts.jsonl): add one, or name an existing one with 'concept: ID'"
            )
    if entry.cui is not None and entry.cui != found.cui:
        raise ConceptError(
            f"label '{entry.label}' gives cui {entry.cui} but its KB concept {found.concept_id} "
            f"'{found.canonical_name}' has cui {found.cui}; fix the spec or the KB"
        )
    return found


@lru_cache(maxsize=256)
def label_concepts(labels: tuple[LabelEntry, ...]) -> dict[str, Concept]:
    """Lower-cased label and alias strings of a spec → concept (cached: called once per frame)."""
    kb = load_kb()
    out: dict[str, Concept] = {}
    for entry in labels:
        try:
            concept = concept_for_label(entry, kb)
        except ConceptError:
            continue  # the spec check reports it; a frame keeps the region without a concept
        for s in (entry.label, *entry.aliases):
            out[s.lower()] = concept
    return out


def spec_concept_problems(spec: DatasetSpec) -> list[tuple[int, str]]:
    """(label index, one-line problem) for each label of a spec without a sound concept."""
    kb = load_kb()
    problems = []
    for i, entry in enumerate(spec.labels):
        try:
            concept_for_label(entry, kb)
        except ConceptError as e:
            problems.append((i, str(e)))
    return problems


# --- scispacy linker index -------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where built artefacts live: ``$MEDPCLIP_CACHE``, else ``$XDG_CACHE_HOME/medpclip`` or ``~/.cache``."""
    env = os.environ.get("MEDPCLIP_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medpclip"


def index_dir(kb: ConceptKB, root: Path | None = None) -> Path:
    return (root or cache_root()) / "linker" / f"{kb.sha256[:16]}-v{INDEX_VERSION}"


def build_linker_index(kb: ConceptKB, out_dir: Path) -> LinkerPaths:
    """Write the four files scispacy's ``CandidateGenerator`` loads (``LinkerPaths`` layout).

    scispacy's own ``create_tfidf_ann_index`` refuses scipy ≥ 1.11 (it stores float16 vectors) and
    hard-codes ``min_df=10``, which drops most character 3-grams of a KB this small. Same recipe otherwise:
    char-3-gram TF-IDF over every alias, all-zero rows dropped (nmslib crashes on them), an HNSW index in
    ``cosinesimil_sparse`` space; vectors are kept as float32.
    """
    import joblib
    import nmslib
    import numpy as np
    import scipy.sparse
    from scispacy.candidate_generation import LinkerPaths
    from sklearn.feature_extraction.text import TfidfVectorizer

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = LinkerPaths.from_directory(out_dir)
    aliases = sorted(kb.scispacy_kb().alias_to_cuis)  # sorted: the same KB gives the same files
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), min_df=1, dtype=np.float32)
    vectors = vectorizer.fit_transform(aliases)
    keep = np.asarray(vectors.sum(axis=1)).reshape(-1) != 0
    aliases = [a for a, k in zip(aliases, keep, strict=True) if k]
    vectors = vectors[keep].astype(np.float32)
    joblib.dump(vectorizer, paths.tfidf_vectorizer)
    Path(paths.concept_aliases_list).write_text(json.dumps(aliases), encoding="utf-8")
    scipy.sparse.save_npz(paths.tfidf_vectors, vectors)
    index = nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)
    index.addDataPointBatch(vectors)
    index.createIndex({"M": 32, "efConstruction": 400, "post": 0, "indexThreadQty": 1}, print_progress=False)
    index.saveIndex(paths.ann_index)
    return paths


def linker_paths(kb: ConceptKB | None = None, root: Path | None = None) -> LinkerPaths:
    """The linker files for ``kb``, built on first use into the cache (keyed by the KB's sha256).

    Built in a temporary folder and renamed into place, so parallel workers never see half an index; a
    worker that loses the race keeps the winner's files.
    """
    from scispacy.candidate_generation import LinkerPaths

    kb = kb or load_kb()
    final = index_dir(kb, root)
    if final.is_dir() and LinkerPaths.from_directory(final).is_locally_cached():
        return LinkerPaths.from_directory(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build_linker_index(kb, tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process renamed its copy first (a non-empty target cannot be replaced)
            if not LinkerPaths.from_directory(final).is_locally_cached():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return LinkerPaths.from_directory(final)
