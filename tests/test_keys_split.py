"""Key rules and patient-level splits."""

from __future__ import annotations

from collections import Counter

import pytest

from medpclip.corpus.schema import KEY_RE, case_slug, hash_id, sample_key
from medpclip.corpus.split import assign_split
from medpclip.specs import SplitSpec


def test_clean_ids_stay_readable():
    assert case_slug("00000001_000") == "00000001_000"
    assert sample_key("demo_ct", "democt_3", "ax", 7) == "demo_ct_democt_3_ax0007"


@pytest.mark.parametrize(
    "raw", ["benign (1)", "Benign (1)", "a.b.c", "ümlaut case", "x" * 80, "..", "1.2.840.10008.5.1"]
)
def test_odd_ids_get_safe_unique_slugs(raw):
    slug = case_slug(raw)
    assert KEY_RE.match(slug) and len(slug) <= 49
    assert slug != raw  # changed → carries a hash suffix
    assert len(slug.rsplit("-", 1)[-1]) == 8


def test_slugs_that_would_collide_do_not():
    ids = ["benign (1)", "benign(1)", "Benign (1)", "benign-1", "benign_1", "BENIGN 1"]
    assert len({case_slug(i) for i in ids}) == len(ids)


def test_keys_never_contain_dots():
    key = sample_key("demo_cxr", "1.2.276.0.7230010.3.1.4.8323329", "im", 0)
    assert "." not in key and KEY_RE.match(key)


def test_hash_id_is_salted_and_stable():
    a = hash_id("s1", "ds", "patient-1")
    assert a == hash_id("s1", "ds", "patient-1") and len(a) == 16
    assert a != hash_id("s2", "ds", "patient-1") and a != hash_id("s1", "other", "patient-1")


def test_hash_split_follows_ratios_and_is_per_patient():
    rule = SplitSpec(ratios={"train": 0.7, "val": 0.1, "test": 0.2})
    splits = {p: assign_split(rule, "ds", f"p{p}") for p in range(5000)}
    counts = Counter(splits.values())
    assert abs(counts["train"] / 5000 - 0.7) < 0.03 and abs(counts["test"] / 5000 - 0.2) < 0.03
    # A patient's split does not depend on who else is in the dataset.
    assert all(assign_split(rule, "ds", f"p{p}") == s for p, s in list(splits.items())[:100])


def test_official_split_kept_and_val_carved_from_train():
    rule = SplitSpec(rule="official", ratios={"train": 0.8, "val": 0.2, "test": 0.0})
    assert {assign_split(rule, "ds", f"p{i}", "test") for i in range(50)} == {"test"}
    carved = Counter(assign_split(rule, "ds", f"p{i}", "train") for i in range(2000))
    assert set(carved) == {"train", "val"} and abs(carved["val"] / 2000 - 0.2) < 0.04
    # Without an official split the hash rule applies.
    assert assign_split(rule, "ds", "p1", None) in {"train", "val"}
