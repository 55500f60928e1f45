"""Volumes-family features that published layouts need (issue 15), each read by the spec that needed it from a
tiny copy this file writes in the publisher's layout:

- ``case_regex_on: path`` — autoPET (FDG-PET-CT-Lesions NIfTI): one case per study folder
  ``PETCT_<patient>/<study date>/``, the patient in the parent folder, so a patient's studies share a split;
- ``exclude`` — ATM'22: ``ATM_164`` (label misaligned, withdrawn) is one plan note with its reason, never read;
- ``annotation_dir_parts`` — VerSe: masks in ``derivatives/`` beside the CTs in ``rawdata/``;
- ``time_frames`` — M&Ms: 4D cine ``<code>_sa.nii.gz`` and ``<code>_sa_gt.nii.gz`` labelled at the ED and ES
  frames the table gives (0-based): one case per frame, reading that frame only.

Every phantom is a few boxes on the canonical RAS+ grid (16 × 12 × 4), each in-plane section at least 16 px,
so it survives the area rule; a reader is right when its axial frame k equals ``volume[:, :, k].T[::-1, ::-1]``.
Regions are counted by the project's own ``regions.extract_regions``. No mocks, no Ray.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from corpus_utils import discovery_notes, frames_of, items_of
from layouts import junk
from layouts import save_nifti as save

from medpclip.corpus.split import assign_split
from medpclip.frame import ReadError, SourceFile
from medpclip.regions import extract_regions, min_area
from medpclip.specs import SpecError, parse_spec, resolve_spec

SHAPE = (16, 12, 4)


def display(volume: np.ndarray, k: int) -> np.ndarray:
    return volume[:, :, k].T[::-1, ::-1]


def with_options(name: str, **options) -> object:
    data = resolve_spec(name).model_dump(mode="json")
    data["format"]["options"].update(options)
    return parse_spec(data)


def regions_by_label(spec, frame) -> Counter:
    minimum = min_area(frame.shape[0], frame.shape[1], spec.regions.min_fraction, spec.regions.min_pixels)
    regions, drops = extract_regions(
        frame.shape,
        label_map=frame.label_map,
        label_values=frame.label_values,
        min_area_px=minimum,
        rng_for=lambda _: np.random.default_rng(0),
    )
    assert drops == []
    return Counter(r.label for r in regions)


def rejected(spec, raw: Path, item) -> ReadError:
    with pytest.raises(ReadError) as e:
        frames_of(spec, raw, item)
    return e.value


# --- autoPET: studies inside patient folders --------------------------------------------------------------

STUDY_A = "03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445"  # as published: double space, dashes
STUDY_B1 = "05-02-2002-NA-PET-CT Ganzkoerper  primaer mit KM-42966"
STUDY_B2 = "11-14-2002-NA-PET-CT Ganzkoerper nativ-01234"


def autopet_seg() -> np.ndarray:
    seg = np.zeros(SHAPE, np.uint8)
    seg[1:5, 1:5, 1:3] = 1  # two lesions on k 1, one on k 2
    seg[9:14, 6:11, 1:2] = 1
    return seg


def write_autopet_study(folder: Path, seg: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    suv = (0.5 + seg * 6.0 + rng.random(SHAPE)).astype(np.float32)  # SUV: float, lesions avid
    save(folder / "SUV.nii.gz", suv, zooms=(2.0, 2.0, 3.0))
    save(folder / "PET.nii.gz", (suv * 5000).astype(np.float32), zooms=(2.0, 2.0, 3.0))
    ctres = (-100 + seg * 150 + rng.integers(-5, 6, SHAPE)).astype(np.int16)
    save(folder / "CTres.nii.gz", ctres, zooms=(2.0, 2.0, 3.0))
    save(
        folder / "CT.nii.gz", np.zeros((32, 24, 8), np.int16), zooms=(1.0, 1.0, 1.5)
    )  # native grid: not read
    save(folder / "SEG.nii.gz", seg, zooms=(2.0, 2.0, 3.0))


@pytest.fixture
def autopet_raw(tmp_path: Path) -> Path:
    root = tmp_path / "FDG-PET-CT-Lesions"
    write_autopet_study(root / "PETCT_0011f3deaf" / STUDY_A, autopet_seg(), 1)
    write_autopet_study(root / "PETCT_0b57b247b6" / STUDY_B1, autopet_seg(), 2)
    write_autopet_study(
        root / "PETCT_0b57b247b6" / STUDY_B2, np.zeros(SHAPE, np.uint8), 3
    )  # negative control
    junk(root / "PETCT_0011f3deaf" / STUDY_A / "._SUV.nii.gz")
    junk(root / "PETCT_0011f3deaf" / f"._{STUDY_A}")  # AppleDouble of the study folder: a file, not a case
    (root / "PETCT_0b57b247b6" / f"._{STUDY_B1}").mkdir()  # an AppleDouble-named folder: junk, not a case
    (root / "PETCT_0b57b247b6" / f"._{STUDY_B1}" / "SUV.nii.gz").write_bytes(b"")
    (root / "README.txt").write_text("FDG-PET-CT-Lesions NIfTI\n")
    return tmp_path


def test_autopet_cases_are_studies_and_patients_are_their_parent_folders(autopet_raw):
    spec = resolve_spec("autopet")
    items = items_of(spec, autopet_raw)
    ids = {f"PETCT_0011f3deaf/{STUDY_A}", f"PETCT_0b57b247b6/{STUDY_B1}", f"PETCT_0b57b247b6/{STUDY_B2}"}
    assert set(items) == ids
    for cid, item in items.items():
        assert item.patient_id == cid.split("/")[0]
        assert item.files == (
            SourceFile("image", f"FDG-PET-CT-Lesions/{cid}/SUV.nii.gz"),
            SourceFile("label", f"FDG-PET-CT-Lesions/{cid}/SEG.nii.gz"),
        )
        assert item.official_split is None
    # the two studies of PETCT_0b57b247b6 are one patient, so one split, whatever the hash gives
    two = [i for c, i in items.items() if c.startswith("PETCT_0b57b247b6/")]
    assert len(two) == 2 and len({i.patient_id for i in two}) == 1
    assert len({assign_split(spec.split, spec.name, i.patient_id) for i in two}) == 1
    assert discovery_notes(spec, autopet_raw) == []


def test_autopet_reads_suv_with_its_lesions(autopet_raw):
    spec = resolve_spec("autopet")
    items = items_of(spec, autopet_raw)
    frames = frames_of(spec, autopet_raw, items[f"PETCT_0011f3deaf/{STUDY_A}"])
    assert [f.slice_index for f in frames] == [0, 1, 2, 3]
    assert {(f.modality, f.intensity, f.image.dtype.kind) for f in frames} == {("PET", "raw", "f")}
    seg = autopet_seg()
    truth = {0: {}, 1: {"lesion": 2}, 2: {"lesion": 1}, 3: {}}
    for f in frames:
        assert np.array_equal(f.label_map, display(seg, f.slice_index))
        assert dict(regions_by_label(spec, f)) == truth[f.slice_index]
        assert f.spacing_mm == (2.0, 2.0)
    negative = frames_of(spec, autopet_raw, items[f"PETCT_0b57b247b6/{STUDY_B2}"])
    assert len(negative) == 4 and not any(f.has_annotations for f in negative)  # a no_regions case at build


# --- ATM'22: an excluded case ------------------------------------------------------------------------------


def airway() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[6:10, 4:8, 2:4] = 1  # trachea
    lab[2:6, 3:7, 0:2] = 1  # the two main bronchi below the carina
    lab[10:14, 3:7, 0:2] = 1
    return lab


def write_atm_case(batch: Path, case: str, lab: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ct = (-850 + rng.integers(-20, 20, lab.shape) + (lab == 0) * 0).astype(np.int16)
    ct[lab > 0] = -1000  # air in the airway lumen
    save(batch / "imagesTr" / f"{case}_0000.nii.gz", ct)
    save(batch / "labelsTr" / f"{case}_0000.nii.gz", lab)  # same file name as the image, _0000 included


@pytest.fixture
def atm_raw(tmp_path: Path) -> Path:
    root = tmp_path / "ATM22"
    write_atm_case(root / "TrainBatch1", "ATM_001", airway(), 1)
    write_atm_case(root / "TrainBatch1", "ATM_164", airway(), 2)
    # ATM_164's label is misaligned: here, a label on another grid, which would be a shape_mismatch if read
    save(root / "TrainBatch1" / "labelsTr" / "ATM_164_0000.nii.gz", np.zeros((12, 16, 4), np.uint8))
    write_atm_case(root / "TrainBatch2", "ATM_205", airway(), 3)
    junk(root / "TrainBatch1" / "imagesTr" / "._ATM_001_0000.nii.gz")
    junk(root / "TrainBatch2" / "labelsTr" / "._ATM_205_0000.nii.gz")
    (root / "TrainBatch1" / "README.md").write_text("ATM'22 training batch 1\n")
    return tmp_path


def test_excluded_case_is_one_plan_note_never_read(atm_raw):
    spec = resolve_spec("atm22")
    items = items_of(spec, atm_raw)
    assert sorted(items) == ["ATM_001", "ATM_205"]
    assert items["ATM_205"].files == (
        SourceFile("image", "ATM22/TrainBatch2/imagesTr/ATM_205_0000.nii.gz"),
        SourceFile("label", "ATM22/TrainBatch2/labelsTr/ATM_205_0000.nii.gz"),
    )
    notes = discovery_notes(spec, atm_raw)
    assert [(n.reason, n.path) for n in notes] == [
        ("excluded_case", "ATM22/TrainBatch1/imagesTr/ATM_164_0000.nii.gz")
    ]
    assert "ATM_164" in notes[0].detail and "misaligned" in notes[0].detail
    assert "format.options.exclude" in notes[0].detail
    # an excluded id no case on disk has is a note too (a typo would otherwise read the case it meant)
    typo = with_options("atm22", exclude={"ATM_146": "misaligned label"})
    assert sorted(items_of(typo, atm_raw)) == ["ATM_001", "ATM_164", "ATM_205"]
    (note,) = discovery_notes(typo, atm_raw)
    assert note.reason == "excluded_case" and "'ATM_146'" in note.detail and "not on disk" in note.detail


def test_atm22_reads_the_airway(atm_raw):
    spec = resolve_spec("atm22")
    items = items_of(spec, atm_raw)
    frames = frames_of(spec, atm_raw, items["ATM_001"])
    truth = {0: {"airway": 2}, 1: {"airway": 2}, 2: {"airway": 1}, 3: {"airway": 1}}
    assert {f.slice_index: dict(regions_by_label(spec, f)) for f in frames} == truth
    assert {(f.modality, f.intensity) for f in frames} == {("CT", "hu")}
    assert np.array_equal(frames[0].label_map, display(airway(), 0))


def test_case_regex_on_path_for_pairs(atm_raw):
    # the same ids from the image's path (folder/stem) instead of its stem
    spec = with_options(
        "atm22", case_regex_on="path", case_regex=r"^TrainBatch\d/imagesTr/(?P<case>ATM_\d{3})_0000$"
    )
    assert sorted(items_of(spec, atm_raw)) == ["ATM_001", "ATM_205"]


# --- M&Ms: ED/ES frames of 4D cine volumes -----------------------------------------------------------------

TABLE = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
T = 5  # time frames per cine (the real ones have 25-30)


def heart() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:13, 2:10, 0:3] = 2  # LV myocardium (ring around the cavity)
    lab[6:10, 4:8, 0:3] = 1  # LV blood pool
    lab[13:16, 2:10, 0:2] = 3  # RV beside it
    return lab


def write_mnms_case(folder: Path, code: str, ed: int | None, es: int | None, labelled: bool = True) -> None:
    rng = np.random.default_rng(len(code) + (ed or 0))
    lab = heart()
    image = np.stack([200 + 100 * t + (lab > 0) * 50 + rng.integers(0, 9, SHAPE) for t in range(T)], -1)
    save(folder / code / f"{code}_sa.nii.gz", image.astype(np.int16), zooms=(1.25, 1.25, 10.0))
    if labelled:
        gt = np.zeros((*SHAPE, T), np.uint8)
        gt[..., ed] = lab
        gt[..., es] = np.where(
            lab == 1, 0, lab
        )  # at ES the contracted blood pool is too small to contour here
        save(folder / code / f"{code}_sa_gt.nii.gz", gt, zooms=(1.25, 1.25, 10.0))


ROWS = [  # External code, VendorName, Vendor, Centre, ED, ES, Pathology
    ("A0S9V9", "Siemens", "A", "1", 0, 3, "NOR"),
    ("A1K2P5", "Philips", "B", "2", 2, 4, "HCM"),
    ("C0S7KY", "GE", "C", "4", 0, 2, "DCM"),
    ("E3F5U2", "Canon", "D", "5", 1, 3, "NOR"),
]


@pytest.fixture
def mnms_raw(tmp_path: Path) -> Path:
    root = tmp_path / "OpenDataset"
    write_mnms_case(root / "Training" / "Labeled", "A0S9V9", 0, 3)
    write_mnms_case(root / "Validation", "A1K2P5", 2, 4)
    write_mnms_case(root / "Training" / "Unlabeled", "C0S7KY", 0, 2, labelled=False)
    write_mnms_case(root / "Testing", "E3F5U2", 1, 3)
    lines = ["External code,VendorName,Vendor,Centre,ED,ES,Pathology"]
    lines += [",".join(str(v) for v in row) for row in ROWS]
    (root / TABLE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    junk(root / "Training" / "Labeled" / "A0S9V9" / "._A0S9V9_sa.nii.gz")
    junk(root / "Training" / "Labeled" / "._A0S9V9")
    (root / "Testing" / "README.txt").write_text("M&Ms testing set\n")
    return tmp_path


def test_mnms_cases_are_the_ed_and_es_frames(mnms_raw):
    spec = resolve_spec("mnms")
    items = items_of(spec, mnms_raw)
    codes = [r[0] for r in ROWS]
    assert sorted(items) == sorted(f"{c}_{p}" for c in codes for p in ("ED", "ES"))
    split = {"A0S9V9": "train", "A1K2P5": "val", "C0S7KY": "train", "E3F5U2": "test"}
    frame = {(r[0], "ED"): r[4] for r in ROWS} | {(r[0], "ES"): r[5] for r in ROWS}
    for cid, item in items.items():
        code, phase = cid.split("_")
        assert (item.patient_id, item.study_id, item.official_split) == (code, code, split[code])
        assert item.meta_dict()["frame"] == frame[(code, phase)]
    assert items["A1K2P5_ES"].files[0] == SourceFile(
        "image", "OpenDataset/Validation/A1K2P5/A1K2P5_sa.nii.gz"
    )
    # Training/Unlabeled has no _sa_gt file: each frame is a reject, never silently dropped
    for phase in ("ED", "ES"):
        assert rejected(spec, mnms_raw, items[f"C0S7KY_{phase}"]).reason == "missing_file"


def test_mnms_reads_only_the_listed_frame(mnms_raw):
    spec = resolve_spec("mnms")
    items = items_of(spec, mnms_raw)
    truth_ed = {
        0: {"LV": 1, "MYO": 1, "RV": 1},
        1: {"LV": 1, "MYO": 1, "RV": 1},
        2: {"LV": 1, "MYO": 1},
        3: {},
    }
    truth_es = {0: {"MYO": 1, "RV": 1}, 1: {"MYO": 1, "RV": 1}, 2: {"MYO": 1}, 3: {}}
    for cid, t, truth in (("A1K2P5_ED", 2, truth_ed), ("A1K2P5_ES", 4, truth_es)):
        frames = frames_of(spec, mnms_raw, items[cid])
        assert [f.slice_index for f in frames] == [0, 1, 2, 3]
        assert {f.slice_index: dict(regions_by_label(spec, f)) for f in frames} == truth
        for f in frames:  # the image of that time frame (its base value is 200 + 100 t), not another
            assert 200 + 100 * t <= f.image.min() and f.image.max() < 200 + 100 * t + 60
        assert frames[0].spacing_mm == (1.25, 1.25)


def test_mnms_bad_frame_values_are_rejected(mnms_raw):
    spec = resolve_spec("mnms")
    table = mnms_raw / "OpenDataset" / TABLE
    table.write_text(
        table.read_text().replace("E3F5U2,Canon,D,5,1,3", "E3F5U2,Canon,D,5,,9"), encoding="utf-8"
    )
    items = items_of(spec, mnms_raw)
    error = rejected(spec, mnms_raw, items["E3F5U2_ED"])
    assert error.reason == "bad_row" and "'ED'" in error.detail
    error = rejected(spec, mnms_raw, items["E3F5U2_ES"])  # frame 9 of 5
    assert error.reason == "bad_dimensions" and "time frame 9 of 5" in error.detail


# --- VerSe: a sibling derivatives tree ---------------------------------------------------------------------


def spine() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[4:12, 3:9, 0:2] = 20  # L1 on k 0-1
    lab[4:12, 3:9, 2:4] = 19  # T12 on k 2-3
    lab[12:16, 3:9, 2:4] = 28  # a T13 beside it (a phantom: value 28 must be read as T13)
    return lab


def write_verse_series(release: Path, subject: str, series: str, lab: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ct = (0 + (lab > 0) * 500 + rng.integers(-10, 10, lab.shape)).astype(np.int16)
    save(release / "rawdata" / subject / f"{series}_ct.nii.gz", ct, axcodes="LPS")
    save(release / "derivatives" / subject / f"{series}_seg-vert_msk.nii.gz", lab, axcodes="LPS")
    (release / "derivatives" / subject / f"{series}_seg-subreg_ctd.json").write_text('[{"direction": []}]')
    (release / "derivatives" / subject / f"{series}_seg-vert_snp.png").write_bytes(b"\x89PNG\r\n")


@pytest.fixture
def verse_raw(tmp_path: Path) -> Path:
    root = tmp_path / "VerSe"
    write_verse_series(root / "dataset-01training", "sub-gl003", "sub-gl003_dir-ax", spine(), 1)
    write_verse_series(root / "dataset-01training", "sub-verse506", "sub-verse506_dir-iso", spine(), 2)
    write_verse_series(root / "dataset-01training", "sub-verse506", "sub-verse506_dir-sag", spine(), 3)
    write_verse_series(root / "dataset-02validation", "sub-verse600", "sub-verse600_dir-ax", spine(), 4)
    write_verse_series(root / "dataset-03test", "sub-gl090", "sub-gl090_dir-ax", spine(), 5)
    # VerSe'19 beside it (no dir- entity): another release, not read
    write_verse_series(root / "dataset-verse19training", "sub-verse004", "sub-verse004", spine(), 6)
    junk(root / "dataset-01training" / "rawdata" / "sub-gl003" / "._sub-gl003_dir-ax_ct.nii.gz")
    # a mask whose CT is missing (a partial download): a rejected case, never silently dropped
    save(
        root / "dataset-03test" / "derivatives" / "sub-gl091" / "sub-gl091_dir-ax_seg-vert_msk.nii.gz",
        spine(),
    )
    return tmp_path


def test_verse_masks_come_from_the_sibling_derivatives_tree(verse_raw):
    spec = resolve_spec("verse")
    items = items_of(spec, verse_raw)
    split = {"sub-gl003_dir-ax": "train", "sub-verse506_dir-iso": "train", "sub-verse506_dir-sag": "train",
             "sub-verse600_dir-ax": "val", "sub-gl090_dir-ax": "test"}  # fmt: skip
    assert sorted(items) == sorted([*split, "sub-gl091_dir-ax"])
    for cid, official in split.items():
        item, subject = items[cid], cid.split("_")[0]
        release = {"train": "dataset-01training", "val": "dataset-02validation", "test": "dataset-03test"}
        folder = f"VerSe/{release[official]}"
        assert item.files == (
            SourceFile("image", f"{folder}/rawdata/{subject}/{cid}_ct.nii.gz"),
            SourceFile("label", f"{folder}/derivatives/{subject}/{cid}_seg-vert_msk.nii.gz"),
        )
        assert (item.patient_id, item.official_split) == (subject, official)
    # two series of one subject: one patient, one split
    assert items["sub-verse506_dir-iso"].patient_id == items["sub-verse506_dir-sag"].patient_id
    assert rejected(spec, verse_raw, items["sub-gl091_dir-ax"]).reason == "missing_file"
    frames = frames_of(spec, verse_raw, items["sub-gl003_dir-ax"])  # stored LPS: read along the true axes
    truth = {0: {"L1": 1}, 1: {"L1": 1}, 2: {"T12": 1, "T13": 1}, 3: {"T12": 1, "T13": 1}}
    assert {f.slice_index: dict(regions_by_label(spec, f)) for f in frames} == truth
    assert np.array_equal(frames[2].label_map, display(spine(), 2))


# --- options are checked when the spec loads ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("atm22", {"exclude": {"ATM_001": " "}}, r"exclude: case 'ATM_001' needs an id and a reason"),
        ("atm22", {"exclude": ["ATM_164"]}, r"field 'format.options.exclude'"),
        ("mnms", {"table": None}, r"time_frames names fields of a per-case table or info file"),
        ("mnms", {"channel": 0}, r"time_frames and channel both pick the 4th axis"),
        ("mnms", {"time_frames": ["ED", "ED"]}, r"time_frames names a field twice"),
        ("autopet", {"case_regex_on": "parent"}, r"field 'format.options.case_regex_on'"),
        ("autopet", {"case_regex_of": "path"}, r"format.options.case_regex_of"),
        ("msd_heart", {"time_frames": ["ED"]}, r"format.options.time_frames"),
        ("verse", {"annotation_dir_parts": {"rawdata": "a/b"}}, r"must map one folder name to another"),
    ],
)
def test_options_are_checked_when_the_spec_loads(name, options, message):
    with pytest.raises(SpecError, match=message) as e:
        with_options(name, **options)
    assert "\n" not in str(e.value)
