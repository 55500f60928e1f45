"""Patient-level splits: every image of a patient lands in the same split, in every build.

A salted hash of (dataset, patient id) is mapped to [0, 1) and cut by the spec's ratios, so the split of a
patient never depends on which other patients are present (adding cases does not move anyone). Datasets
with an official split keep it; their validation set is carved out of the official train set by the same
hash, scaled to the train+val share.
"""

from __future__ import annotations

import hashlib

from medpclip.specs import SPLITS, SplitSpec


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


def assign_split(rule: SplitSpec, dataset: str, patient_id: str, official: str | None = None) -> str:
    u = unit_interval(rule.salt, dataset, patient_id)
    if rule.rule == "official" and official is not None:
        if official not in ("train", "val", "test"):
            raise ValueError(f"official split '{official}' is not one of {SPLITS}")
        if official == "train" and rule.ratios.get("val", 0.0) > 0:
            return _cut(u, rule.ratios, ("train", "val"))
        return official
    return _cut(u, rule.ratios, SPLITS)
