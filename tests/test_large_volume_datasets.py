"""Large public volume datasets as published (issue 15, step 3): TotalSegmentator MRI, read by its shipped spec
from a tiny copy in the publisher's layout (sXXXX/mri.nii.gz, sXXXX/segmentations/<structure>.nii.gz), and its
labels checked against the TotalSegmentator package's own class map. No mocks, no Ray (tests/corpus_utils.py).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from corpus_utils import discovery_notes, frames_of, items_of, totalsegmentator_class_map
from layouts import save_nifti
from scipy import ndimage

from medpclip.specs import resolve_spec

SHAPE = (16, 12, 4)


_save = functools.partial(save_nifti, zooms=(1.5, 1.5, 3.0))


def test_totalsegmentator_mri_labels_are_the_packages_class_map():
    wheel, total_mr = totalsegmentator_class_map("total_mr")
    spec = resolve_spec("totalsegmentator_mri")
    assert {e.value: e.label for e in spec.labels} == total_mr, wheel
    assert len(total_mr) == 50
    assert spec.stats is not None and spec.stats.structures == len(spec.labels)


# s0001: liver (k 0-2) and both lungs (k 2-3); s0002: the vertebrae mask as two stacked slabs (one component on
# each slice). Every other mask file is written all-zero, as the publisher ships a structure out of view.
S0001 = {"liver": (slice(8, 14), slice(2, 8), slice(0, 3)), "lung_left": (slice(9, 15), slice(3, 10), slice(2, 4)),
         "lung_right": (slice(1, 7), slice(3, 10), slice(2, 4))}  # fmt: skip
S0002 = {"vertebrae": [(slice(6, 10), slice(0, 3), slice(0, 2)), (slice(6, 10), slice(0, 3), slice(2, 4))]}


def _write_case(root: Path, case: str, boxes: dict, labels: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    _save(root / case / "mri.nii.gz", rng.integers(0, 500, SHAPE).astype(np.int16))
    for label in labels:
        mask = np.zeros(SHAPE, np.uint8)
        for b in boxes.get(label, []) if isinstance(boxes.get(label), list) else [boxes.get(label)]:
            if b is not None:
                mask[b] = 1
        _save(root / case / "segmentations" / f"{label}.nii.gz", mask)


def test_totalsegmentator_mri_reads_cases_masks_and_regions(tmp_path):
    spec = resolve_spec("totalsegmentator_mri")
    labels = [e.label for e in spec.labels]
    root = tmp_path / spec.root
    _write_case(root, "s0001", S0001, labels, 1)
    # s0002 lacks brain.nii.gz (a partial download): built with the masks it has, one plan-stage reject
    _write_case(root, "s0002", S0002, [x for x in labels if x != "brain"], 2)  # brain.nii.gz absent
    (root / "notes.txt").write_text("not a case")
    items = items_of(spec, tmp_path)
    assert sorted(items) == ["s0001", "s0002"]
    notes = discovery_notes(spec, tmp_path)
    assert [n.path.rsplit("/", 1)[-1] for n in notes] == ["brain.nii.gz"]

    def per_slice(case):
        out = {}
        for f in frames_of(spec, tmp_path, items[case]):
            present = [(name, m) for name, m in f.masks if m.any()]
            out[f.slice_index] = (
                {name for name, _ in present},
                sum(ndimage.label(m)[1] for _, m in present),
            )
        return out

    assert per_slice("s0001") == {
        0: ({"liver"}, 1),
        1: ({"liver"}, 1),
        2: ({"liver", "lung_left", "lung_right"}, 3),
        3: ({"lung_left", "lung_right"}, 2),
    }
    assert per_slice("s0002") == {k: ({"vertebrae"}, 1) for k in range(4)}


# AbdomenAtlas 1.0 Mini: BDMAP_00000001 with liver (k 0-2) and both kidneys (k 0-1); BDMAP_00000002 with the
# aorta and the postcava on every k. combined_labels.nii.gz (not read) beside each ct.nii.gz.
ATLAS_1 = {"liver": (slice(8, 14), slice(6, 12), slice(0, 3)), "kidney_left": (slice(10, 14), slice(0, 4), slice(0, 2)),
           "kidney_right": (slice(2, 6), slice(0, 4), slice(0, 2))}  # fmt: skip
ATLAS_2 = {
    "aorta": (slice(6, 8), slice(3, 5), slice(0, 4)),
    "postcava": (slice(9, 11), slice(3, 5), slice(0, 4)),
}


def test_abdomenatlas_mini_reads_cases_masks_and_regions(tmp_path):
    spec = resolve_spec("abdomenatlas_mini")
    labels = [e.label for e in spec.labels]
    assert labels == ["aorta", "gall_bladder", "kidney_left", "kidney_right", "liver", "pancreas", "postcava",
                      "spleen", "stomach"]  # fmt: skip
    root = tmp_path / spec.root
    for case, boxes, seed in (("BDMAP_00000001", ATLAS_1, 1), ("BDMAP_00000002", ATLAS_2, 2)):
        rng = np.random.default_rng(seed)
        _save(root / case / "ct.nii.gz", rng.integers(-100, 200, SHAPE).astype(np.int16))
        _save(root / case / "combined_labels.nii.gz", np.zeros(SHAPE, np.uint8))
        for label in labels:
            mask = np.zeros(SHAPE, np.uint8)
            if label in boxes:
                mask[boxes[label]] = 1
            _save(root / case / "segmentations" / f"{label}.nii.gz", mask)
    items = items_of(spec, tmp_path)
    assert sorted(items) == ["BDMAP_00000001", "BDMAP_00000002"]
    assert discovery_notes(spec, tmp_path) == []

    def per_slice(case):
        out = {}
        for f in frames_of(spec, tmp_path, items[case]):
            present = [(name, m) for name, m in f.masks if m.any()]
            out[f.slice_index] = ({n for n, _ in present}, sum(ndimage.label(m)[1] for _, m in present))
        return out

    assert per_slice("BDMAP_00000001") == {
        0: ({"liver", "kidney_left", "kidney_right"}, 3),
        1: ({"liver", "kidney_left", "kidney_right"}, 3),
        2: ({"liver"}, 1),
        3: (set(), 0),
    }
    assert per_slice("BDMAP_00000002") == {k: ({"aorta", "postcava"}, 2) for k in range(4)}
