"""Patient-level splits: every image of a patient lands in the same split, in every build.

A salted hash of (dataset, patient id) is mapped to [0, 1) and cut by the spec's ratios, so the split of a
patient never depends on which other patients are present (adding cases does not move anyone). Datasets
with an official split keep it; their validation set is carved out of the official train set by the same
hash, scaled to the train+val share.

Exact duplicates (same ``pixel_sha256``, within or across datasets) must never sit on both sides of a split:
a model would be evaluated on images it was trained on. After the units ran, :func:`derive_overrides` reads
the samples manifests and forces every patient with a duplicate in an earlier split into that split (order
train < val < test; so a test twin of a train image moves to train with the rest of its patient, who never
ends up in two splits). The result, ``manifests/split_overrides.json``, is an input of the fingerprints of
the units it touches; they re-run with it. Overrides are derived from ``split_by_rule`` (the rule's choice,
kept in the manifest), never from the overridden split, so a rebuild derives the same file: a fixpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from medpclip.specs import SPLITS, SplitSpec

OVERRIDES_FILE = "manifests/split_overrides.json"
OVERRIDES_VERSION = 1
_RANK = {s: i for i, s in enumerate(SPLITS)}  # train < val < test


def unit_interval(salt: str, dataset: str, patient_id: str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{dataset}\x00{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _cut(u: float, ratios: dict[str, float], names: tuple[str, ...]) -> str:
    total = sum(ratios.get(n, 0.0) for n in names)
    acc = 0.0
    for n in names:
        acc += ratios.get(n, 0.0) / total
        if u < acc:
            return n
    return [n for n in names if ratios.get(n, 0.0) > 0][-1]


def split_by_rule(rule: SplitSpec, dataset: str, patient_id: str, official: str | None = None) -> str:
    """The split the spec's rule gives a patient (before any duplicate override)."""
    u = unit_interval(rule.salt, dataset, patient_id)
    if rule.rule == "official" and official is not None:
        if official not in ("train", "val", "test"):
            raise ValueError(f"official split '{official}' is not one of {SPLITS}")
        if official == "train" and rule.ratios.get("val", 0.0) > 0:
            return _cut(u, rule.ratios, ("train", "val"))
        return official
    return _cut(u, rule.ratios, SPLITS)


def assign_split(
    rule: SplitSpec, dataset: str, patient_id: str, official: str | None = None, forced: str | None = None
) -> str:
    """The patient's split: the rule's, or the earlier ``forced`` one (a duplicate override for the patient;
    an override only ever moves a sample towards train, never away from it)."""
    split = split_by_rule(rule, dataset, patient_id, official)
    if forced is not None and _RANK[forced] < _RANK[split]:
        return forced
    return split


# --- duplicate overrides ------------------------------------------------------------------------------------

Overrides = dict[str, dict[str, str]]  # dataset → hashed patient id → forced split


def derive_overrides(rows: Iterable[tuple[str, str, str, str]]) -> Overrides:
    """``(dataset, patient_id hash, split_by_rule, pixel_sha256)`` of every sample that has an exact twin →
    the least set of patient overrides after which no duplicate group spans two splits.

    Each round moves the members of a group that sit in a later split than the group's earliest into that
    split, with their whole patient; the patient's other images may join other groups, so rounds repeat until
    nothing moves. Moves only go towards train, so this ends, and the result (the least fixpoint) does not
    depend on the order of rows or groups."""
    groups: dict[str, list[tuple[tuple[str, str], str]]] = defaultdict(list)
    for dataset, patient, split, sha in rows:
        groups[sha].append(((dataset, patient), split))
    forced: dict[tuple[str, str], str] = {}

    def effective(patient: tuple[str, str], split: str) -> str:
        f = forced.get(patient)
        return f if f is not None and _RANK[f] < _RANK[split] else split

    changed = True
    while changed:
        changed = False
        for members in groups.values():
            if len(members) < 2:
                continue
            earliest = min((effective(p, s) for p, s in members), key=_RANK.__getitem__)
            for p, s in members:
                if _RANK[effective(p, s)] > _RANK[earliest]:
                    forced[p] = earliest
                    changed = True
    out: Overrides = {}
    for (dataset, patient), split in sorted(forced.items()):
        out.setdefault(dataset, {})[patient] = split
    return out


def overrides_path(out: Path) -> Path:
    return (Path(out) if isinstance(out, str) else out) / OVERRIDES_FILE


def load_overrides(out: Path) -> Overrides:
    """The overrides file of a corpus (empty when there is none yet). A damaged file counts as empty: the
    build derives it again."""
    path = overrides_path(out)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != OVERRIDES_VERSION:
        return {}
    datasets = data.get("datasets")
    if not isinstance(datasets, dict):
        return {}
    return {
        str(d): {str(p): str(s) for p, s in patients.items() if s in _RANK}
        for d, patients in datasets.items()
        if isinstance(patients, dict)
    }


def overrides_document(overrides: Overrides) -> dict:
    """The JSON written to ``manifests/split_overrides.json`` (stable: sorted keys, no timestamps)."""
    return {
        "version": OVERRIDES_VERSION,
        "rule": "exact duplicates (pixel_sha256) never span two splits: a patient with a twin in an earlier "
        "split (train < val < test) is moved there whole",
        "datasets": {d: dict(sorted(p.items())) for d, p in sorted(overrides.items()) if p},
    }
