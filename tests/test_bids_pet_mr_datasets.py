"""BIDS-style MR datasets of issue 15 (step 3), each read by its shipped spec from a tiny copy in the
publisher's layout: ISLES 2022 (case folders with the masks apart in derivatives/) and ATLAS v2.0 (site /
subject / session folders, MNI-space T1w and lesion mask side by side).

Fixtures keep the real folder depth, file names, BIDS sidecars and top-level files; the phantom volumes are
tiny (12 × 10 × 5) with lesions of known extent, so the truth is case ids, patient ids, the label names on
each axial frame and the connected components a frame holds. No Ray.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from corpus_utils import axial_frames_of, items_of
from layouts import save_nifti
from scipy import ndimage

from medpclip.frame import Frame, ReadError
from medpclip.specs import parse_spec, resolve_spec

SHAPE = (12, 10, 5)
Box = tuple[slice, slice, slice]


save = functools.partial(save_nifti, zooms=(2.0, 2.0, 4.0))


def sidecar(path: Path, **fields: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields), encoding="utf-8")


def brain(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(100, 900, SHAPE).astype(np.float32)


def mask(boxes: list[Box], dtype=np.uint8) -> np.ndarray:
    out = np.zeros(SHAPE, dtype)
    for box in boxes:
        out[box] = 1
    return out


# --- ISLES 2022 ---------------------------------------------------------------------------------------------
# case 0001: two separate lesions on k = 1, one of them reaching k = 2; case 0002: one lesion on k = 3, 4
ISLES_LESIONS: dict[str, list[Box]] = {
    "sub-strokecase0001": [(slice(1, 4), slice(1, 4), slice(1, 3)), (slice(7, 11), slice(5, 9), slice(1, 2))],
    "sub-strokecase0002": [(slice(3, 9), slice(2, 8), slice(3, 5))],
}
ISLES_TRUTH = {"sub-strokecase0001": {1: 2, 2: 1}, "sub-strokecase0002": {3: 1, 4: 1}}


def write_isles22(raw: Path) -> None:
    root = raw / "ISLES-2022"
    sidecar(root / "dataset_description.json", Name="ISLES 2022", BIDSVersion="1.6.0")
    (root / "participants.tsv").write_text("participant_id\nsub-strokecase0001\n", encoding="utf-8")
    for n, case in enumerate([*ISLES_LESIONS, "sub-strokecase0003"]):
        ses = root / case / "ses-0001"
        save(ses / "dwi" / f"{case}_ses-0001_dwi.nii.gz", brain(n))
        save(ses / "dwi" / f"{case}_ses-0001_adc.nii.gz", brain(n) + 2000)
        sidecar(ses / "dwi" / f"{case}_ses-0001_dwi.json", Modality="MR", MagneticFieldStrength=3)
        sidecar(ses / "dwi" / f"{case}_ses-0001_adc.json", Modality="MR")
        # FLAIR is in its own native space (another grid): never read
        save(
            ses / "anat" / f"{case}_ses-0001_FLAIR.nii.gz", np.zeros((20, 20, 9), np.float32), zooms=(1, 1, 2)
        )
        sidecar(ses / "anat" / f"{case}_ses-0001_FLAIR.json", Modality="MR")
        if case in ISLES_LESIONS:  # case 0003 ships without a mask (a partial download)
            der = root / "derivatives" / case / "ses-0001"
            save(der / f"{case}_ses-0001_msk.nii.gz", mask(ISLES_LESIONS[case]), zooms=(2.0, 2.0, 4.0))


# --- ATLAS v2.0 ---------------------------------------------------------------------------------------------
ATLAS_T1 = "ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"
ATLAS_MASK = "ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"
ATLAS_LESIONS: dict[tuple[str, str], list[Box]] = {  # (site, subject) → lesion boxes
    ("R001", "sub-r001s001"): [(slice(2, 6), slice(2, 6), slice(0, 3))],
    ("R001", "sub-r001s002"): [
        (slice(1, 3), slice(1, 3), slice(2, 3)),
        (slice(8, 11), slice(6, 9), slice(2, 4)),
    ],
    ("R034", "sub-r034s017"): [],  # a mask with no lesion voxel: no frame keeps a region
}
ATLAS_TRUTH = {"sub-r001s001": {0: 1, 1: 1, 2: 1}, "sub-r001s002": {2: 2, 3: 1}, "sub-r034s017": {}}


def write_atlas_v2(raw: Path) -> None:
    root = raw / "ATLAS_2"
    root.mkdir(parents=True)
    (root / "20220425_ATLAS_2.0_MetaData.xlsx").write_bytes(b"PK\x03\x04")
    (root / "20211112_ATLAS_2.0_SupplementaryInfo.csv").write_text("Subject ID,Site\n", encoding="utf-8")
    save(root / "MNI152NLin2009aSym.nii.gz", brain(99), zooms=(1.0, 1.0, 1.0))
    for n, ((site, sub), boxes) in enumerate(ATLAS_LESIONS.items()):
        anat = root / "Training" / site / sub / "ses-1" / "anat"
        save(anat / f"{sub}_{ATLAS_T1}", brain(n), zooms=(1.0, 1.0, 1.0))
        save(anat / f"{sub}_{ATLAS_MASK}", mask(boxes, np.float32), zooms=(1.0, 1.0, 1.0))  # float-stored 0/1
        sidecar(anat / f"{sub}_ses-1_space-MNI152NLin2009aSym_T1w.json", Modality="MR")
    # the test release: T1w only, masks withheld: not a case of this spec
    test_anat = root / "Testing" / "R002" / "sub-r002s001" / "ses-1" / "anat"
    save(test_anat / f"sub-r002s001_{ATLAS_T1}", brain(50), zooms=(1.0, 1.0, 1.0))


WRITERS = {"isles22": write_isles22, "atlas_v2": write_atlas_v2}
TRUTH = {
    "isles22": ({c: c for c in ISLES_TRUTH}, ISLES_TRUTH, "lesion"),
    "atlas_v2": ({c: c for c in ATLAS_TRUTH}, ATLAS_TRUTH, "lesion"),
}


def regions_by_frame(frames: list[Frame]) -> dict[int, int]:
    """Connected components per axial frame that holds any label (mask-derived regions before size rules)."""
    out = {}
    for f in frames:
        assert f.plane == "ax" and f.label_map is not None
        n = sum(ndimage.label(f.label_map == v)[1] for v in f.label_values if (f.label_map == v).any())
        if n:
            out[f.slice_index] = n
    return out


@pytest.mark.parametrize("name", list(WRITERS))
def test_spec_reads_its_publisher_layout(tmp_path, name):
    WRITERS[name](tmp_path)
    spec = resolve_spec(name)
    patients, regions, label = TRUTH[name]
    items = items_of(spec, tmp_path)
    readable = {c: i for c, i in items.items() if c in patients}
    assert {c: i.patient_id for c, i in readable.items()} == patients
    assert all(i.official_split is None and i.study_id is None for i in readable.values())
    for case, item in readable.items():
        frames = axial_frames_of(spec, tmp_path, item)
        assert len(frames) == SHAPE[2] and {f.image.shape for f in frames} == {(SHAPE[1], SHAPE[0])}
        assert all(f.intensity == "raw" and f.modality == "MR" for f in frames)
        assert regions_by_frame(frames) == regions[case], case
        for f in frames:  # every labelled frame names the one lesion label, the rest none
            present = {f.label_values[v] for v in np.unique(f.label_map) if v}
            assert present == ({label} if f.slice_index in regions[case] else set())


def test_isles22_files_sequence_and_missing_mask(tmp_path):
    write_isles22(tmp_path)
    spec = resolve_spec("isles22")
    items = items_of(spec, tmp_path)
    assert sorted(items) == [
        "sub-strokecase0001",
        "sub-strokecase0002",
        "sub-strokecase0003",
    ]  # not derivatives
    files = {f.role: f.path for f in items["sub-strokecase0001"].files}
    assert files == {
        "image": "ISLES-2022/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz",
        "label": "ISLES-2022/derivatives/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_msk.nii.gz",
    }
    with pytest.raises(ReadError) as e:  # no mask in derivatives/: the case is refused, not read unlabelled
        axial_frames_of(spec, tmp_path, items["sub-strokecase0003"])
    assert e.value.reason == "missing_file"
    # sequence adc reads the ADC map on the same grid as the mask
    data = spec.model_dump(mode="json")
    data["format"]["options"]["sequence"] = "adc"
    adc = parse_spec(data)
    item = items_of(adc, tmp_path)["sub-strokecase0002"]
    assert {f.role: f.path for f in item.files}["image"].endswith("sub-strokecase0002_ses-0001_adc.nii.gz")
    frames = axial_frames_of(adc, tmp_path, item)
    assert min(float(f.image.min()) for f in frames) >= 2000 and regions_by_frame(frames) == {3: 1, 4: 1}


def test_atlas_v2_reads_training_only(tmp_path):
    write_atlas_v2(tmp_path)
    items = items_of(resolve_spec("atlas_v2"), tmp_path)
    assert sorted(items) == ["sub-r001s001", "sub-r001s002", "sub-r034s017"]  # Testing/ has no masks
    files = {f.role: f.path for f in items["sub-r034s017"].files}
    assert files["label"] == f"ATLAS_2/Training/R034/sub-r034s017/ses-1/anat/sub-r034s017_{ATLAS_MASK}"
