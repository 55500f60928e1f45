"""The six single-channel MSD tasks without a spec of their own before issue 15 (Task02 Heart, Task04
Hippocampus, Task06 Lung, Task07 Pancreas, Task08 Hepatic Vessel, Task10 Colon), each read by its shipped spec
from a tiny copy in the real MSD layout: TaskNN_Name/dataset.json with the shipped keys and label strings,
imagesTr/, labelsTr/, imagesTs/ (unlabelled test cases), and macOS ``._`` AppleDouble files beside the
volumes, as the tars have them.

Each phantom is a few boxes on the canonical RAS+ grid (16 × 12 × 4; i → patient's right, j → anterior,
k → superior), every in-plane section at least 16 px so that it survives the spec's area rule. The first
case is stored RAS, the second LPS (the reader reorients); Task10's labels are stored as float32, as a
header scan of that task reports. The truth per axial slice (label names and regions, counted by the
project's own ``regions.extract_regions``) is written out by hand in ``TASKS``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from layouts import APPLEDOUBLE
from layouts import save_nifti as save

from medpclip.frame import SourceFile
from medpclip.regions import extract_regions, min_area
from medpclip.specs import resolve_spec
from medpclip.text.kb import concept_for_label

SHAPE = (16, 12, 4)

# spec → the task as shipped: folder, dataset.json name/modality/labels, numTraining the spec's stats
# give, the fixture's case ids (training in the index's own unsorted order; test), the phantom
# {value: [box (i, j, k)]}, the truth {k: {label: regions}} and the concept each label resolves to.
TASKS = {
    "msd_heart": dict(
        root="Task02_Heart", name="LeftAtrium", modality={"0": "MRI"},
        labels={"0": "background", "1": "left atrium"}, num_training=20,
        training=["la_007", "la_003"], test=["la_001"],
        phantom={1: [(slice(4, 10), slice(3, 8), slice(1, 3)), (slice(12, 16), slice(3, 7), slice(2, 3))]},
        truth={1: {"left atrium": 1}, 2: {"left atrium": 2}},  # a vein stub beside the atrium on k = 2
        concepts={"left atrium": "Left atrium"},
    ),
    "msd_hippocampus": dict(
        root="Task04_Hippocampus", name="Hippocampus", modality={"0": "MRI"},
        labels={"0": "background", "1": "Anterior", "2": "Posterior"}, num_training=260,
        training=["hippocampus_367", "hippocampus_304"], test=["hippocampus_267"],
        phantom={1: [(slice(2, 7), slice(2, 7), slice(0, 3))], 2: [(slice(9, 14), slice(4, 9), slice(1, 4))]},
        truth={0: {"Anterior": 1}, 1: {"Anterior": 1, "Posterior": 1}, 2: {"Anterior": 1, "Posterior": 1},
               3: {"Posterior": 1}},
        concepts={"Anterior": "Anterior hippocampus", "Posterior": "Posterior hippocampus"},
    ),
    "msd_lung": dict(
        root="Task06_Lung", name="Lung", modality={"0": "CT"},
        labels={"0": "background", "1": "cancer"}, num_training=63,
        training=["lung_053", "lung_001"], test=["lung_002"],
        phantom={1: [(slice(5, 10), slice(4, 8), slice(2, 3))]},
        truth={2: {"cancer": 1}},
        concepts={"cancer": "Lung cancer"},
    ),
    "msd_pancreas": dict(
        root="Task07_Pancreas", name="Pancreas", modality={"0": "CT"},
        labels={"0": "background", "1": "pancreas", "2": "cancer"}, num_training=281,
        training=["pancreas_290", "pancreas_004"], test=["pancreas_044"],
        # the mass replaces the gland's tail on k = 2 (painted after it)
        phantom={1: [(slice(1, 14), slice(4, 8), slice(1, 4))], 2: [(slice(10, 14), slice(4, 8), slice(2, 3))]},
        truth={1: {"pancreas": 1}, 2: {"pancreas": 1, "cancer": 1}, 3: {"pancreas": 1}},
        concepts={"pancreas": "Pancreas", "cancer": "Pancreatic tumour"},
    ),
    "msd_hepatic_vessel": dict(
        root="Task08_HepaticVessel", name="HepaticVessel", modality={"0": "CT"},
        labels={"0": "background", "1": "Vessel", "2": "Tumour"}, num_training=303,
        training=["hepaticvessel_016", "hepaticvessel_001"], test=["hepaticvessel_003"],
        phantom={
            1: [(slice(1, 5), slice(1, 5), slice(0, 3)), (slice(7, 11), slice(1, 5), slice(1, 3)),
                (slice(1, 5), slice(7, 11), slice(1, 3))],
            2: [(slice(10, 15), slice(7, 11), slice(2, 4))],
        },
        truth={0: {"Vessel": 1}, 1: {"Vessel": 3}, 2: {"Vessel": 3, "Tumour": 1}, 3: {"Tumour": 1}},
        concepts={"Vessel": "Hepatic vessel", "Tumour": "Liver tumour"},
    ),
    "msd_colon": dict(
        root="Task10_Colon", name="Colon", modality={"0": "CT"},
        labels={"0": "background", "1": "colon cancer primaries"}, num_training=126,
        training=["colon_169", "colon_001"], test=["colon_002"],
        phantom={1: [(slice(6, 11), slice(3, 8), slice(1, 3))]},
        truth={1: {"colon cancer primaries": 1}, 2: {"colon cancer primaries": 1}},
        concepts={"colon cancer primaries": "Colon cancer"},
    ),
}  # fmt: skip


def phantom(task: dict, dtype=np.uint8) -> np.ndarray:
    lab = np.zeros(SHAPE, dtype)
    for value, boxes in sorted(task["phantom"].items()):
        for box in boxes:
            lab[box] = value
    return lab


def write_task(raw: Path, task: dict) -> None:
    d = raw / task["root"]
    ct = task["modality"]["0"] == "CT"
    rng = np.random.default_rng(0)
    label_dtype = np.float32 if task["root"] == "Task10_Colon" else np.uint8
    for n, case in enumerate(task["training"] + task["test"]):
        lab = phantom(task)
        noise = rng.integers(0, 10, SHAPE)
        image = ((-50 if ct else 200) + 40 * lab.astype(np.int16) + noise).astype(np.int16)
        axcodes = "LPS" if n % 2 else "RAS"
        folder = "imagesTs" if case in task["test"] else "imagesTr"
        save(d / folder / f"{case}.nii.gz", image, axcodes)
        (d / folder / f"._{case}.nii.gz").write_bytes(APPLEDOUBLE)
        if folder == "imagesTr":
            save(d / "labelsTr" / f"{case}.nii.gz", lab.astype(label_dtype), axcodes)
            (d / "labelsTr" / f"._{case}.nii.gz").write_bytes(APPLEDOUBLE)
    index = {
        "name": task["name"],
        "description": f"{task['name']} segmentation",
        "reference": "see medicaldecathlon.com",
        "licence": "CC-BY-SA 4.0",
        "relase": "1.0 04/05/2018",
        "tensorImageSize": "3D",
        "modality": task["modality"],
        "labels": task["labels"],
        "numTraining": len(task["training"]),
        "numTest": len(task["test"]),
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in task["training"]
        ],
        "test": [f"./imagesTs/{c}.nii.gz" for c in task["test"]],
    }
    (d / "dataset.json").write_text(json.dumps(index, indent=4), encoding="utf-8")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("msdraw")
    for task in TASKS.values():
        write_task(root, task)
    return root


@pytest.mark.parametrize("name", list(TASKS))
def test_spec_matches_the_shipped_index(name):
    spec, task = resolve_spec(name), TASKS[name]
    assert spec.root == task["root"] and spec.format.options.layout == "msd"
    assert spec.licence == "CC-BY-SA-4.0" and "Antonelli" in spec.citation and "Simpson" in spec.citation
    assert {e.value: e.label for e in spec.labels} == {
        int(v): s for v, s in task["labels"].items() if v != "0"
    }
    assert spec.modality == ("CT" if task["modality"]["0"] == "CT" else "MR")
    assert (spec.intensity.kind == "ct_window") == (spec.modality == "CT")
    assert spec.split.rule == "hash" and spec.patient_id.regex is None and spec.patient_id.field is None
    assert spec.stats.cases == task["num_training"]
    assert spec.stats.structures == len(task["labels"]) - 1
    assert {e.label: concept_for_label(e).canonical_name for e in spec.labels} == task["concepts"]


@pytest.mark.parametrize("name", list(TASKS))
def test_cases_labels_and_regions_per_slice(raw, name):
    spec, task = resolve_spec(name), TASKS[name]
    items = items_of(spec, raw)
    assert list(items) == sorted(task["training"])  # not the test case, not the ._ files
    case = task["training"][0]
    assert items[case].files == (
        SourceFile("image", f"{task['root']}/imagesTr/{case}.nii.gz"),
        SourceFile("label", f"{task['root']}/labelsTr/{case}.nii.gz"),
    )
    minimum = min_area(12, 16, spec.regions.min_fraction, spec.regions.min_pixels)
    for item in items.values():
        assert item.patient_id == item.case_id and item.official_split is None
        frames = frames_of(spec, raw, item)
        assert [f.slice_index for f in frames] == list(range(SHAPE[2]))
        assert {(f.intensity, f.modality or spec.modality, f.shape) for f in frames} == {
            ("hu" if spec.modality == "CT" else "raw", spec.modality, (12, 16))
        }
        for f in frames:
            assert f.label_values == {e.value: e.label for e in spec.labels}
            present = {f.label_values[v] for v in np.unique(f.label_map).tolist() if v}
            regions, drops = extract_regions(
                f.shape,
                label_map=f.label_map,
                label_values=f.label_values,
                min_area_px=minimum,
                rng_for=lambda _: np.random.default_rng(0),
            )
            truth = task["truth"].get(f.slice_index, {})
            assert present == set(truth), (item.case_id, f.slice_index)
            assert Counter(r.label for r in regions) == truth, (item.case_id, f.slice_index)
            assert drops == []
        k = max(task["truth"])  # the radiological display: patient's right on the image's left
        expected = phantom(task)[:, :, k].T[::-1, ::-1]
        assert np.array_equal(frames[k].label_map, expected)
