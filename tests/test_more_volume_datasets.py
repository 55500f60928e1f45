"""More NIfTI datasets as published (issue 15): the BraTS 2023 pediatric (PED), sub-Saharan Africa (SSA),
meningioma (MEN) and metastases (MET) challenges, MM-WHS 2017 (CT and MR), crossMoDA 2022 (labelled ceT1 source
domain), FeTA 2.1 and COVID-19-20, each read by its shipped spec
from a tiny copy that this file writes in the publisher's layout (folder names and depth, file names, label
codes, files a download holds that are not cases: validation folders, test volumes, UCSF-BMSR beside
BraTS-MET, macOS ``._`` files, READMEs).

Every phantom is a few boxes on the canonical RAS+ grid (16 × 12 × 4; i → patient's right, j → anterior,
k → superior), each in-plane section at least 16 px so it survives the spec's area rule; a reader is right
when its axial frame k equals ``canonical[:, :, k].T[::-1, ::-1]``. The truth per axial slice (label names and
regions, counted by the project's own ``regions.extract_regions``) is written out by hand. No mocks, no Ray.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from corpus_utils import axial_frames_of, items_of, planes_for, regions_of
from layouts import junk
from layouts import save_nifti as save

from medpclip.census import census
from medpclip.corpus.split import assign_split
from medpclip.frame import ReadError, SourceFile
from medpclip.specs import resolve_spec
from medpclip.text.kb import concept_for_label, load_kb

SHAPE = (16, 12, 4)
SEQS = {"t1c": 900, "t1n": 600, "t2f": 1200, "t2w": 1500}  # BraTS 2023 sequence codes → image base value


def display(volume: np.ndarray, k: int) -> np.ndarray:
    return volume[:, :, k].T[::-1, ::-1]


def mr_image(labels: np.ndarray, base: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (base + (labels > 0) * 40 + rng.integers(0, 30, labels.shape)).astype(np.int16)


def ct_image(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (-80 + (labels > 0) * 300 + rng.integers(-5, 6, labels.shape)).astype(np.int16)


# --- BraTS 2023: one phantom, three values (1 core, 2 the outer FLAIR region, 3 the enhancing rim) --------


def brats_labels() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:14, 1:11, 0:4] = 2  # edema / SNFH on every k (one region: a ring around the rest on k 1-2)
    lab[4:12, 3:9, 1:3] = 3  # enhancing rim (8 × 6, a 32 px ring around the core)
    lab[6:10, 4:8, 1:3] = 1  # core (4 × 4 = 16 px)
    return lab


# label names per value of each BraTS 2023 task (the glioma ones and the meningioma/metastasis ones differ)
BRATS_NAMES = {
    "brats2023_ped": {1: "NC", 2: "ED", 3: "ET"},
    "brats2023_ssa": {1: "NCR", 2: "ED", 3: "ET"},
    "brats2023_men": {1: "NETC", 2: "SNFH", 3: "ET"},
    "brats2023_met": {1: "NETC", 2: "SNFH", 3: "ET"},
}


def brats_truth(name: str) -> dict[int, dict[str, int]]:
    n = BRATS_NAMES[name]
    return {0: {n[2]: 1}, 1: {n[1]: 1, n[2]: 1, n[3]: 1}, 2: {n[1]: 1, n[2]: 1, n[3]: 1}, 3: {n[2]: 1}}


def write_brats_case(folder: Path, case: str, seed: int, lab: np.ndarray, ext: str = ".nii.gz") -> None:
    for seq, base in SEQS.items():
        save(folder / case / f"{case}-{seq}{ext}", mr_image(lab, base, seed))
    save(folder / case / f"{case}-seg{ext}", lab)


def write_brats_validation(folder: Path, case: str) -> None:
    """A validation case: the four sequences, no seg file."""
    for seq, base in SEQS.items():
        save(folder / case / f"{case}-{seq}.nii.gz", mr_image(brats_labels(), base, 99))


def write_brats2023_ped(raw: Path) -> None:
    """The zip unpacked into a folder of its own name (doubled), two labelled cases, one in the 2024 label
    scheme (values up to 4: 1 ET, 2 NET, 3 CC, 4 ED), the validation zip beside it, junk."""
    name = "ASNR-MICCAI-BraTS2023-PED-Challenge-TrainingData"
    d = raw / name / name
    write_brats_case(d, "BraTS-PED-00002-000", 2, brats_labels())
    write_brats_case(d, "BraTS-PED-00003-000", 3, brats_labels())
    lab2024 = brats_labels()
    lab2024[lab2024 == 2] = 4  # ED is 4 in the BraTS-PEDs 2024 release
    write_brats_case(d, "BraTS-PED-00125-000", 125, lab2024)
    write_brats_validation(raw / "ASNR-MICCAI-BraTS2023-PED-Challenge-ValidationData", "BraTS-PED-00030-000")
    junk(d / "BraTS-PED-00002-000" / "._BraTS-PED-00002-000-t2f.nii.gz")
    junk(raw / name / "__MACOSX" / name / "BraTS-PED-00003-000" / "._BraTS-PED-00003-000-seg.nii.gz")


def write_brats2023_ssa(raw: Path) -> None:
    """The _V2 zip's folder, cases not numbered from 1, a README, the validation folder beside it."""
    d = raw / "ASNR-MICCAI-BraTS2023-SSA-Challenge-TrainingData_V2"
    write_brats_case(d, "BraTS-SSA-00002-000", 2, brats_labels())
    write_brats_case(d, "BraTS-SSA-00007-000", 7, brats_labels())
    (d / "README.txt").write_text("BraTS-Africa training data\n")
    write_brats_validation(raw / "ASNR-MICCAI-BraTS2023-SSA-Challenge-ValidationData", "BraTS-SSA-00126-000")


def write_brats2023_men(raw: Path) -> None:
    """BraTS-MEN-Train/ (what the zip unpacks to), a patient with three studies, one seg-less case folder (a
    partial download), junk."""
    d = raw / "BraTS-MEN-Train"
    for case in ("BraTS-MEN-00004-000", "BraTS-MEN-00074-000", "BraTS-MEN-00074-001", "BraTS-MEN-00074-002"):
        write_brats_case(d, case, int(case.split("-")[2]), brats_labels())
    write_brats_validation(d, "BraTS-MEN-00008-000")  # no seg: rejected, never silently skipped
    junk(d / "BraTS-MEN-00004-000" / "._BraTS-MEN-00004-000-seg.nii.gz")


def write_brats2023_met(raw: Path) -> None:
    """Both training zips unpacked side by side in BraTS2023-MET/ (the additional one gunzipped to .nii), and
    the UCSF-BMSR set in its own layout, which this spec does not read."""
    d = raw / "BraTS2023-MET"
    write_brats_case(
        d / "ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData", "BraTS-MET-00001-000", 1, brats_labels()
    )
    write_brats_case(
        d / "ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData_Additional", "BraTS-MET-00250-000", 250,
        brats_labels(), ext=".nii",
    )  # fmt: skip
    ucsf = d / "UCSF_BrainMetastases_v1.3" / "UCSF_BrainMetastases_TRAIN" / "100101A"
    for seq in ("T1pre", "T1post", "FLAIR", "BRaTS-seg"):
        save(
            ucsf / f"100101A_{seq}.nii.gz",
            brats_labels() if seq == "BRaTS-seg" else mr_image(brats_labels(), 500, 7),
        )
    junk(d / "ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData" / "._BraTS-MET-00001-000")


BRATS = {
    "brats2023_ped": dict(
        root="ASNR-MICCAI-BraTS2023-PED-Challenge-TrainingData",
        read={"BraTS-PED-00002-000": "ASNR-MICCAI-BraTS2023-PED-Challenge-TrainingData",
              "BraTS-PED-00003-000": "ASNR-MICCAI-BraTS2023-PED-Challenge-TrainingData"},
        rejected={"BraTS-PED-00125-000": "bad_label_value"},
        ids={"BraTS-PED-00002-000": ("00002", "000"), "BraTS-PED-00003-000": ("00003", "000"),
             "BraTS-PED-00125-000": ("00125", "000")},
    ),
    "brats2023_ssa": dict(
        root="ASNR-MICCAI-BraTS2023-SSA-Challenge-TrainingData_V2",
        read={"BraTS-SSA-00002-000": "", "BraTS-SSA-00007-000": ""},
        rejected={},
        ids={"BraTS-SSA-00002-000": ("00002", "000"), "BraTS-SSA-00007-000": ("00007", "000")},
    ),
    "brats2023_men": dict(
        root="BraTS-MEN-Train",
        read={c: "" for c in ("BraTS-MEN-00004-000", "BraTS-MEN-00074-000", "BraTS-MEN-00074-001",
                              "BraTS-MEN-00074-002")},
        rejected={"BraTS-MEN-00008-000": "missing_file"},
        ids={"BraTS-MEN-00004-000": ("00004", "000"), "BraTS-MEN-00074-000": ("00074", "000"),
             "BraTS-MEN-00074-001": ("00074", "001"), "BraTS-MEN-00074-002": ("00074", "002"),
             "BraTS-MEN-00008-000": ("00008", "000")},
    ),
    "brats2023_met": dict(
        root="BraTS2023-MET",
        read={"BraTS-MET-00001-000": "ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData",
              "BraTS-MET-00250-000": "ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData_Additional"},
        rejected={},
        ids={"BraTS-MET-00001-000": ("00001", "000"), "BraTS-MET-00250-000": ("00250", "000")},
    ),
}  # fmt: skip
BRATS_SPECS = list(BRATS)


# --- MM-WHS 2017: the seven publisher codes on a 4 × 4 px grid of cells ---------------------------------------

MMWHS_CODES = {205: "Myo", 420: "LA", 500: "LV", 550: "RA", 600: "RV", 820: "AA", 850: "PA"}


def mmwhs_labels() -> np.ndarray:
    lab = np.zeros(SHAPE, np.int16)
    lab[0:4, 0:4, 0:2] = 500  # LV
    lab[4:8, 0:4, 0:2] = 205  # myocardium (touching the LV: another value, another region)
    lab[8:12, 0:4, 0:2] = 600  # RV
    lab[12:16, 0:4, 0:2] = 550  # RA
    lab[0:4, 8:12, 1:4] = 420  # LA
    lab[4:8, 8:12, 1:4] = 820  # ascending aorta
    lab[8:12, 8:12, 1:4] = 850  # pulmonary artery
    return lab


MMWHS_TRUTH = {
    0: {"Myo": 1, "LV": 1, "RV": 1, "RA": 1},
    1: {name: 1 for name in MMWHS_CODES.values()},
    2: {"LA": 1, "AA": 1, "PA": 1},
    3: {"LA": 1, "AA": 1, "PA": 1},
}


def write_mmwhs(raw: Path) -> None:
    """ "MM-WHS 2017 Dataset/" with {ct,mr}_train/ (image + label pairs) and {ct,mr}_test/ (images only). The
    MR volumes are stored as sagittal stacks (PIR), not axial (peers reorient them before use); the CT ones
    axial. mr_train_1010's label holds the publisher's stray value 421 beside 420."""
    d = raw / "MM-WHS 2017 Dataset"
    lab = mmwhs_labels()
    for n in (1001, 1002):
        save(d / "ct_train" / f"ct_train_{n}_image.nii.gz", ct_image(lab, n), zooms=(0.5, 0.5, 0.625))
        save(d / "ct_train" / f"ct_train_{n}_label.nii.gz", lab, zooms=(0.5, 0.5, 0.625))
        save(d / "mr_train" / f"mr_train_{n}_image.nii.gz", mr_image(lab, 200, n), "PIR")
        save(d / "mr_train" / f"mr_train_{n}_label.nii.gz", lab, "PIR")
    stray = lab.copy()
    stray[0:2, 8:10, 1] = 421
    save(d / "mr_train" / "mr_train_1010_image.nii.gz", mr_image(lab, 200, 1010), "PIR")
    save(d / "mr_train" / "mr_train_1010_label.nii.gz", stray, "PIR")
    save(d / "ct_test" / "ct_test_2001_image.nii.gz", ct_image(lab, 2001))
    save(d / "mr_test" / "mr_test_2001_image.nii.gz", mr_image(lab, 200, 2001), "PIR")
    junk(d / "ct_train" / "._ct_train_1001_image.nii.gz")
    (d / "readme.txt").write_text("MM-WHS 2017 training and test data\n")


MMWHS = {
    "mmwhs_ct": dict(
        read={f"{n}": (f"ct_train/ct_train_{n}_image.nii.gz", f"ct_train/ct_train_{n}_label.nii.gz")
              for n in (1001, 1002)},
        rejected={}, stored="RAS", intensity="hu", spacing=(0.5, 0.5),
    ),
    "mmwhs_mr": dict(
        read={f"{n}": (f"mr_train/mr_train_{n}_image.nii.gz", f"mr_train/mr_train_{n}_label.nii.gz")
              for n in (1001, 1002)},
        rejected={"1010": "bad_label_value"}, stored="PIR", intensity="raw", spacing=(1.0, 1.0),
    ),
}  # fmt: skip
MMWHS_SPECS = list(MMWHS)


# --- crossMoDA 2022 (ceT1 source domain) and FeTA 2.1: label maps of small 4 × 4 px cells ------------------


def cells(parts: dict[int, list[tuple[int, int, tuple[int, int]]]], dtype=np.uint8) -> np.ndarray:
    """value → [(column, row, (k0, k1))]: 4 × 4 px cells on the 16 × 12 grid (columns 0-3, rows 0-2)."""
    lab = np.zeros(SHAPE, dtype)
    for value, where in parts.items():
        for col, row, (k0, k1) in where:
            lab[4 * col : 4 * col + 4, 4 * row : 4 * row + 4, k0:k1] = value
    return lab


# the tumour (1) on k 1-2 beside the left cochlea, both cochleae (2, one value) on k 2-3
CROSSMODA = cells({1: [(1, 1, (1, 3))], 2: [(0, 0, (2, 4)), (3, 0, (2, 4))]})
CROSSMODA_TRUTH = {1: {"VS": 1}, 2: {"VS": 1, "cochlea": 2}, 3: {"cochlea": 2}}

# the seven FeTA tissues, each a cell; deep grey matter (6) and brainstem (7) on the lower slices only
FETA = cells({1: [(0, 0, (0, 4)), (3, 2, (0, 4))], 2: [(1, 0, (0, 4))], 3: [(2, 0, (0, 4))], 4: [(3, 0, (0, 3))],
              5: [(0, 1, (0, 2))], 6: [(1, 1, (1, 3))], 7: [(2, 1, (0, 2))]})  # fmt: skip
FETA_NAMES = {1: "eCSF", 2: "GM", 3: "WM", 4: "Ventricles", 5: "Cerebellum", 6: "SGM", 7: "Brainstem"}
FETA_TRUTH = {
    0: {"eCSF": 2, "GM": 1, "WM": 1, "Ventricles": 1, "Cerebellum": 1, "Brainstem": 1},
    1: {"eCSF": 2, "GM": 1, "WM": 1, "Ventricles": 1, "Cerebellum": 1, "SGM": 1, "Brainstem": 1},
    2: {"eCSF": 2, "GM": 1, "WM": 1, "Ventricles": 1, "SGM": 1},
    3: {"eCSF": 2, "GM": 1, "WM": 1},
}


def write_crossmoda(raw: Path) -> None:
    """crossmoda2022_training/ as the Zenodo zip unpacks: training_source/ with a London (2021) and a Tilburg
    (2022) ceT1 + _Label pair (labels written as float32 and both stored LPS here, to exercise rounding and
    reorientation: neither is verified against the release), training_target/ with unlabelled hrT2 scans, the Koos table, macOS junk."""
    d = raw / "crossmoda2022_training"
    for n, case in enumerate(("crossmoda2021_ldn_1", "crossmoda2022_etz_0")):
        save(
            d / "training_source" / f"{case}_ceT1.nii.gz",
            mr_image(CROSSMODA, 300, n),
            "LPS",
            zooms=(0.5, 0.5, 1.5),
        )
        save(
            d / "training_source" / f"{case}_Label.nii.gz",
            CROSSMODA.astype(np.float32),
            "LPS",
            zooms=(0.5, 0.5, 1.5),
        )
    for case in ("crossmoda2021_ldn_106", "crossmoda2022_etz_105"):
        save(d / "training_target" / f"{case}_hrT2.nii.gz", mr_image(CROSSMODA, 100, 7))
    (d / "infos_source_training.csv").write_text(
        "crossmoda_name,koos\ncrossmoda2021_ldn_1,2\ncrossmoda2022_etz_0,3\n"
    )
    junk(d / "training_source" / "._crossmoda2021_ldn_1_ceT1.nii.gz")


def write_feta(raw: Path) -> None:
    """feta_2.1/ in its BIDS-like layout: a mialSRTK subject (001) and a Simple IRTK one (041), a subject
    whose dseg is missing, participants.tsv and dataset_description.json, macOS junk."""
    d = raw / "feta_2.1"
    for sub, rec in (("sub-001", "mial"), ("sub-041", "irtk"), ("sub-042", "irtk")):
        save(
            d / sub / "anat" / f"{sub}_rec-{rec}_T2w.nii.gz",
            mr_image(FETA, 400, int(sub[4:])),
            zooms=(0.5, 0.5, 0.5),
        )
        if sub != "sub-042":
            save(d / sub / "anat" / f"{sub}_rec-{rec}_dseg.nii.gz", FETA, zooms=(0.5, 0.5, 0.5))
    (d / "participants.tsv").write_text(
        "participant_id\tPathology\tGestational age\nsub-001\tPathological\t27.9\nsub-041\tNeurotypical\t24.6\n"
    )
    (d / "dataset_description.json").write_text('{"Name": "FeTA", "BIDSVersion": "1.4.0"}')
    junk(d / "sub-001" / "anat" / "._sub-001_rec-mial_T2w.nii.gz")


# COVID-19-20: lesions in both lungs (one value), the right one on k 1-2, the left one on k 1-3
COVID = cells({1: [(0, 1, (1, 3)), (3, 1, (1, 4))]})
COVID_TRUTH = {1: {"lesion": 2}, 2: {"lesion": 2}, 3: {"lesion": 1}}


def write_covid19_20(raw: Path) -> None:
    """COVID-19-20_v2/ (the corrected release): Train/ pairs, Validation/ images without labels, a leftover
    of the first release's corrected files, macOS junk."""
    d = raw / "COVID-19-20_v2"
    for n in (3, 11):
        case = f"volume-covid19-A-{n:04d}"
        save(d / "Train" / f"{case}_ct.nii.gz", ct_image(COVID, n), zooms=(0.75, 0.75, 5.0))
        save(d / "Train" / f"{case}_seg.nii.gz", COVID, zooms=(0.75, 0.75, 5.0))
    save(d / "Train" / "volume-covid19-A-0003_seg_corrected.nii.gz", COVID)  # first-release leftover
    save(d / "Train" / "volume-covid19-A-0003_ct_corrDouble.nii.gz", ct_image(COVID, 3))
    save(d / "Validation" / "volume-covid19-A-0698_ct.nii.gz", ct_image(COVID, 698))
    junk(d / "Train" / "._volume-covid19-A-0003_ct.nii.gz")


OTHERS = {
    "crossmoda": dict(
        truth=CROSSMODA, names={1: "VS", 2: "cochlea"}, regions=CROSSMODA_TRUTH, base=300, spacing=(0.5, 0.5),
        read={c: (f"training_source/{c}_ceT1.nii.gz", f"training_source/{c}_Label.nii.gz")
              for c in ("crossmoda2021_ldn_1", "crossmoda2022_etz_0")},
        rejected={}, ids={"crossmoda2021_ldn_1": ("crossmoda2021_ldn_1", None), "crossmoda2022_etz_0": ("crossmoda2022_etz_0", None)},
        seeds={"crossmoda2021_ldn_1": 0, "crossmoda2022_etz_0": 1},
    ),
    "covid19_20": dict(
        truth=COVID, names={1: "lesion"}, regions=COVID_TRUTH, base=None, spacing=(0.75, 0.75),
        read={c: (f"Train/{c}_ct.nii.gz", f"Train/{c}_seg.nii.gz") for c in ("volume-covid19-A-0003", "volume-covid19-A-0011")},
        rejected={}, ids={"volume-covid19-A-0003": ("volume-covid19-A-0003", None), "volume-covid19-A-0011": ("volume-covid19-A-0011", None)},
        seeds={"volume-covid19-A-0003": 3, "volume-covid19-A-0011": 11},
    ),
    "feta": dict(
        truth=FETA, names=FETA_NAMES, regions=FETA_TRUTH, base=400, spacing=(0.5, 0.5),
        read={"sub-001_rec-mial": ("sub-001/anat/sub-001_rec-mial_T2w.nii.gz", "sub-001/anat/sub-001_rec-mial_dseg.nii.gz"),
              "sub-041_rec-irtk": ("sub-041/anat/sub-041_rec-irtk_T2w.nii.gz", "sub-041/anat/sub-041_rec-irtk_dseg.nii.gz")},
        rejected={"sub-042_rec-irtk": "missing_file"},
        ids={"sub-001_rec-mial": ("sub-001", "sub-001"), "sub-041_rec-irtk": ("sub-041", "sub-041"),
             "sub-042_rec-irtk": ("sub-042", "sub-042")},
        seeds={"sub-001_rec-mial": 1, "sub-041_rec-irtk": 41},
    ),
}  # fmt: skip
OTHER_SPECS = list(OTHERS)
SPECS = BRATS_SPECS + MMWHS_SPECS + OTHER_SPECS


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("morevolraw")
    for write in (
        write_brats2023_ped,
        write_brats2023_ssa,
        write_brats2023_men,
        write_brats2023_met,
        write_mmwhs,
        write_crossmoda,
        write_feta,
        write_covid19_20,
    ):
        write(root)
    return root


def regions_by_label(spec, frame) -> Counter:
    return Counter(r.label for r in regions_of(spec, frame))


def rejected(spec, raw: Path, item) -> ReadError:
    with pytest.raises(ReadError) as e:
        axial_frames_of(spec, raw, item)
    return e.value


# --- specs -------------------------------------------------------------------------------------------------


def test_the_new_specs_are_complete_and_name_each_tasks_labels():
    kb = load_kb()
    for name in SPECS:
        spec = resolve_spec(name)
        assert spec.format.family == "volumes" and spec.split.rule == "hash"
        assert spec.access == ("open" if name == "crossmoda" else "registration")
        assert spec.slicing.planes == planes_for(spec) and not spec.slicing.keep_empty
        assert spec.citation and spec.licence and spec.homepage.startswith("https://") and spec.unit_items > 0
        assert spec.stats is not None and spec.stats.structures == len(spec.labels) and spec.stats.source
        assert all(e.value and e.name[0].isupper() and e.category for e in spec.labels)
        assert all(concept_for_label(e, kb) is not None for e in spec.labels)
    for name, names in BRATS_NAMES.items():
        spec = resolve_spec(name)
        assert {e.value: e.label for e in spec.labels} == names
        assert spec.modality == "MR" and spec.format.options.sequence == "t2f"
    # the meningioma/metastasis compartments resolve to the same concepts as the glioma ones
    concepts = {
        n: {e.label: concept_for_label(e, kb).canonical_name for e in resolve_spec(n).labels}
        for n in BRATS_SPECS
    }
    assert concepts["brats2023_men"] == concepts["brats2023_met"] == {
        "NETC": "Necrotic tumour core", "SNFH": "Peritumoral oedema", "ET": "Enhancing tumour"
    }  # fmt: skip
    assert concepts["brats2023_ped"]["NC"] == concepts["brats2023_ssa"]["NCR"] == "Necrotic tumour core"
    assert {resolve_spec(n).stats.cases for n in BRATS_SPECS} == {99, 60, 1000, 238}
    for name in MMWHS_SPECS:
        spec = resolve_spec(name)
        assert {e.value: e.label for e in spec.labels} == MMWHS_CODES and spec.stats.cases == 20
        by_label = {e.label: concept_for_label(e, kb).canonical_name for e in spec.labels}
        assert by_label == {
            "Myo": "Left ventricular myocardium", "LA": "Left atrium", "LV": "Left ventricular cavity",
            "RA": "Right atrium", "RV": "Right ventricular cavity", "AA": "Ascending aorta",
            "PA": "Pulmonary artery",
        }  # fmt: skip
    assert resolve_spec("mmwhs_ct").intensity.kind == "ct_window"
    assert resolve_spec("mmwhs_mr").intensity.kind == "percentile"
    # no shipped spec holds these cases: nothing is counted twice
    assert all(not resolve_spec(n).overlaps for n in SPECS)
    c = census([resolve_spec(n) for n in SPECS])
    assert c.distinct_samples == c.samples > 0


# --- discovery and reading, every spec ---------------------------------------------------------------------


@pytest.mark.parametrize("name", BRATS_SPECS)
def test_brats2023_tasks_find_their_cases_patients_and_studies(raw, name):
    spec, case = resolve_spec(name), BRATS[name]
    assert spec.root == case["root"]
    items = items_of(spec, raw)
    assert sorted(items) == sorted({**case["read"], **case["rejected"]})  # no validation, UCSF or ._ file
    assert {c: (i.patient_id, i.study_id) for c, i in items.items()} == case["ids"]
    for cid, folder in case["read"].items():
        prefix = f"{spec.root}/{folder}/" if folder else f"{spec.root}/"
        ext = ".nii" if cid == "BraTS-MET-00250-000" else ".nii.gz"  # the gunzipped additional MET zip
        assert items[cid].files == (
            SourceFile("image", f"{prefix}{cid}/{cid}-t2f{ext}"),
            SourceFile("label", f"{prefix}{cid}/{cid}-seg{ext}"),
        )
        assert items[cid].official_split is None
    for cid, reason in case["rejected"].items():
        assert rejected(spec, raw, items[cid]).reason == reason
    splits = {assign_split(spec.split, spec.name, i.patient_id) for c, i in items.items() if "00074" in c}
    assert len(splits) <= 1  # every study of a patient in one split (MEN 00074 has three)


@pytest.mark.parametrize("name", BRATS_SPECS)
def test_brats2023_frames_carry_each_tasks_label_names_and_regions(raw, name):
    spec = resolve_spec(name)
    items = items_of(spec, raw)
    lab, truth = brats_labels(), brats_truth(name)
    for cid in BRATS[name]["read"]:
        frames = axial_frames_of(spec, raw, items[cid])
        assert [f.slice_index for f in frames] == list(range(SHAPE[2]))
        assert {(f.intensity, f.shape, f.spacing_mm) for f in frames} == {("raw", (12, 16), (1.0, 1.0))}
        assert frames[0].label_values == BRATS_NAMES[name]
        assert all(np.array_equal(f.label_map, display(lab, f.slice_index)) for f in frames), cid
        assert {f.slice_index: dict(regions_by_label(spec, f)) for f in frames} == truth, cid
        seed = int(cid.split("-")[2])
        expected = mr_image(lab, SEQS["t2f"], seed)  # the FLAIR file, not another sequence
        assert all(np.array_equal(f.image, display(expected, f.slice_index)) for f in frames), cid


def test_brats2023_ped_refuses_the_2024_label_scheme(raw):
    """BraTS-PEDs 2024 relabelled (1 ET, 2 NET, 3 CC, 4 ED): value 4 is not a 2023 label, so such a case is
    refused by name rather than read with the 2023 names."""
    spec = resolve_spec("brats2023_ped")
    e = rejected(spec, raw, items_of(spec, raw)["BraTS-PED-00125-000"])
    assert e.reason == "bad_label_value" and "[4]" in e.detail


def test_brats2023_sequence_option_picks_another_file(raw):
    spec = resolve_spec("brats2023_men")
    data = spec.model_dump(mode="json")
    data["format"]["options"]["sequence"] = "t1c"
    t1c = type(spec).model_validate(data)
    item = items_of(t1c, raw)["BraTS-MEN-00074-001"]
    assert item.files[0].path == "BraTS-MEN-Train/BraTS-MEN-00074-001/BraTS-MEN-00074-001-t1c.nii.gz"
    frames = axial_frames_of(t1c, raw, item)
    expected = mr_image(brats_labels(), SEQS["t1c"], 74)
    assert all(np.array_equal(f.image, display(expected, f.slice_index)) for f in frames)


@pytest.mark.parametrize("name", MMWHS_SPECS)
def test_mmwhs_reads_the_training_pairs_with_the_publisher_codes(raw, name):
    spec, case = resolve_spec(name), MMWHS[name]
    items = items_of(spec, raw)
    assert sorted(items) == sorted({**case["read"], **case["rejected"]})  # no test volume, no ._ file
    lab = mmwhs_labels()
    for cid, (image, label) in case["read"].items():
        item = items[cid]
        assert item.files == (
            SourceFile("image", f"{spec.root}/{image}"),
            SourceFile("label", f"{spec.root}/{label}"),
        )
        assert item.patient_id == cid and item.official_split is None
        assert "".join(nib.aff2axcodes(nib.load(raw / item.files[0].path).affine)) == case["stored"]
        frames = axial_frames_of(spec, raw, item)
        assert [f.slice_index for f in frames] == list(range(SHAPE[2]))
        assert {(f.intensity, f.shape, f.spacing_mm) for f in frames} == {
            (case["intensity"], (12, 16), case["spacing"])
        }
        assert frames[0].label_values == MMWHS_CODES
        assert all(np.array_equal(f.label_map, display(lab, f.slice_index)) for f in frames), cid
        assert {f.slice_index: dict(regions_by_label(spec, f)) for f in frames} == MMWHS_TRUTH, cid
        seed = int(cid)
        expected = ct_image(lab, seed) if spec.modality == "CT" else mr_image(lab, 200, seed)
        assert all(np.array_equal(f.image, display(expected, f.slice_index)) for f in frames), cid
    for cid, reason in case["rejected"].items():
        e = rejected(spec, raw, items[cid])
        assert e.reason == reason and "421" in e.detail


def test_mmwhs_ct_and_mr_share_one_folder_but_not_each_others_files(raw):
    """Both specs read one folder tree; neither claims the other's labels as image-less (rejected) cases."""
    ct, mr = (items_of(resolve_spec(n), raw) for n in MMWHS_SPECS)
    assert sorted(ct) == ["1001", "1002"] and sorted(mr) == ["1001", "1002", "1010"]
    assert all(f.path.split("/")[1] == "ct_train" for i in ct.values() for f in i.files)
    assert all(f.path.split("/")[1] == "mr_train" for i in mr.values() for f in i.files)
    assert (raw / "MM-WHS 2017 Dataset" / "ct_test" / "ct_test_2001_image.nii.gz").is_file()


@pytest.mark.parametrize("name", OTHER_SPECS)
def test_crossmoda_feta_covid_read_the_labelled_volumes_only(raw, name):
    spec, case = resolve_spec(name), OTHERS[name]
    items = items_of(spec, raw)
    assert sorted(items) == sorted({**case["read"], **case["rejected"]})  # no hrT2, no table, no ._ file
    assert {c: (i.patient_id, i.study_id) for c, i in items.items()} == case["ids"]
    assert {e.value: e.label for e in spec.labels} == case["names"]
    for cid, (image, label) in case["read"].items():
        item = items[cid]
        assert item.files == (
            SourceFile("image", f"{spec.root}/{image}"),
            SourceFile("label", f"{spec.root}/{label}"),
        )
        assert item.official_split is None
        frames = axial_frames_of(spec, raw, item)
        assert [f.slice_index for f in frames] == list(range(SHAPE[2]))
        intensity = "hu" if spec.modality == "CT" else "raw"
        assert {(f.intensity, f.shape, f.spacing_mm) for f in frames} == {
            (intensity, (12, 16), case["spacing"])
        }
        assert all(f.label_map.dtype == np.uint8 for f in frames)  # float-stored labels are rounded
        assert all(np.array_equal(f.label_map, display(case["truth"], f.slice_index)) for f in frames), cid
        annotated = [f for f in frames if f.has_annotations]
        assert {f.slice_index: dict(regions_by_label(spec, f)) for f in annotated} == case["regions"], cid
        seed = case["seeds"][cid]
        expected = (
            ct_image(case["truth"], seed)
            if spec.modality == "CT"
            else mr_image(case["truth"], case["base"], seed)
        )
        assert all(np.array_equal(f.image, display(expected, f.slice_index)) for f in frames), cid
    for cid, reason in case["rejected"].items():
        assert rejected(spec, raw, items[cid]).reason == reason


def test_new_concepts_resolve_by_the_datasets_own_strings():
    kb = load_kb()
    names = {
        e.label: concept_for_label(e, kb).canonical_name
        for n in ("crossmoda", "feta")
        for e in resolve_spec(n).labels
    }
    assert names == {
        "VS": "Vestibular schwannoma", "cochlea": "Cochlea", "eCSF": "External cerebrospinal fluid space",
        "GM": "Cerebral grey matter", "WM": "Cerebral white matter", "Ventricles": "Cerebral ventricle",
        "Cerebellum": "Cerebellum", "SGM": "Deep grey matter", "Brainstem": "Brainstem",
    }  # fmt: skip
    assert kb.parent_of("MEDP:0750").canonical_name == "Aorta"
    assert kb.parent_of("MEDP:0754").canonical_name == "Cerebral grey matter"
