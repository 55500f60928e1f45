"""More 3D datasets in the volumes family (issue 15, third session): CTPelvic1K (CLINIC and CLINIC-metal),
HECKTOR 2022, INSTANCE 2022, Parse2022, MyoPS 2020, CMRxMotion, LAScarQS 2022 Tasks 1 and 2, the COVID-19
CT Lung and Infection set, KiPA22 (stored HU + 1000: ``hu_offset``), SegRap2023 Tasks 1 and 2 (Task 1's
overlap-coded label map read as one mask per structure: ``label_sets``), ToothFairy2 (MetaImage CBCT with
FDI-numbered teeth) and MRSpineSeg, each read by its shipped spec from a tiny copy this file writes in
the publisher's layout (folder names and depth, file names, label codes, 4D singleton images, float labels,
files a download holds that are not cases: PET volumes, other sequences, other sub-datasets' masks, macOS
``._`` files, CSVs).

Every phantom is a few 4 × 4 px cells on a canonical RAS+ grid (16 × 12 × 4 for axial specs; i → the
patient's right, j → anterior, k → superior), each cell 16 px so it survives the spec's area rule. A reader is
right when its frame along the sliced axis equals ``take(canonical, index, axis).T[::-1, ::-1]``; the truth
per slice (label names, region counts, and the boxes of a cell, whose position on the display follows from
that rule) is written out by hand below. No mocks, no Ray.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from corpus_utils import frames_of, items_of, regions_of, rejected
from layouts import junk
from layouts import save_nifti as save

from medpclip.census import census
from medpclip.corpus.split import assign_split
from medpclip.frame import ReadError, SourceFile
from medpclip.specs import SpecError, parse_spec, resolve_spec
from medpclip.text.kb import concept_for_label, load_kb

SHAPE = (16, 12, 4)


def cells(
    parts: dict[int, list[tuple[int, int, tuple[int, int]]]], shape=SHAPE, dtype=np.uint8
) -> np.ndarray:
    """value → [(column, row, (k0, k1))]: 4 × 4 px cells in the first two axes over slices k0..k1-1."""
    lab = np.zeros(shape, dtype)
    for value, where in parts.items():
        for col, row, (k0, k1) in where:
            lab[4 * col : 4 * col + 4, 4 * row : 4 * row + 4, k0:k1] = value
    return lab


def display(volume: np.ndarray, index: int, axis: int = 2) -> np.ndarray:
    return np.take(volume, index, axis=axis).T[::-1, ::-1]


def ct_image(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (-80 + (labels > 0) * 300 + rng.integers(-5, 6, labels.shape)).astype(np.int16)


def mr_image(labels: np.ndarray, base: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (base + (labels > 0) * 40 + rng.integers(0, 30, labels.shape)).astype(np.int16)


def cell_box(col: int, row: int, width: int = 1) -> tuple[int, int, int, int]:
    """xyxy (exclusive max) on the axial display of a cell block at (col..col+width-1, row) of SHAPE: the
    display flips both axes (column x = 15 - i, row y = 11 - j)."""
    return (16 - 4 * (col + width), 8 - 4 * row, 16 - 4 * col, 12 - 4 * row)


# --- the phantoms: label volume, names by value, regions per axial slice --------------------------------------

# CTPelvic1K: sacrum (1) in the middle, the two hip bones (2, 3) beside it, a lumbar vertebra (4) on top
PELVIS = cells({1: [(1, 1, (0, 3))], 2: [(0, 1, (0, 3))], 3: [(3, 1, (0, 3))], 4: [(1, 2, (2, 4))]})
PELVIS_TRUTH = {
    0: {"sacrum": 1, "right_hip": 1, "left_hip": 1},
    1: {"sacrum": 1, "right_hip": 1, "left_hip": 1},
    2: {"sacrum": 1, "right_hip": 1, "left_hip": 1, "lumbar_vertebra": 1},
    3: {"lumbar_vertebra": 1},
}
# HECKTOR: a primary tumour (1) and two separate nodes (2, one value)
HN = cells({1: [(1, 1, (1, 3))], 2: [(0, 0, (2, 4)), (3, 0, (2, 3))]})
HN_TRUTH = {1: {"GTVp": 1}, 2: {"GTVp": 1, "GTVn": 2}, 3: {"GTVn": 1}}
# INSTANCE: one haematoma, a second bleed on one slice
ICH = cells({1: [(2, 1, (0, 3)), (0, 2, (1, 2))]})
ICH_TRUTH = {0: {"ICH": 1}, 1: {"ICH": 2}, 2: {"ICH": 1}}
# Parse2022: the trunk, then the left and right arteries as two components of the one value
PA = cells({1: [(1, 1, (0, 2)), (0, 2, (2, 4)), (3, 2, (2, 4))]})
PA_TRUTH = {0: {"pulmonary artery": 1}, 1: {"pulmonary artery": 1}, 2: {"pulmonary artery": 2},
            3: {"pulmonary artery": 2}}  # fmt: skip
# MyoPS: the publisher's codes 200/500/600/1220/2221 (uint16 on disk)
MYOPS = cells(
    {500: [(1, 1, (0, 4))], 200: [(2, 1, (0, 4))], 600: [(0, 1, (0, 4))], 1220: [(2, 0, (1, 3))],
     2221: [(3, 1, (1, 2))]},
    dtype=np.uint16,
)  # fmt: skip
MYOPS_NAMES = {200: "LV normal myocardium", 500: "LV blood pool", 600: "RV blood pool",
               1220: "LV myocardial edema", 2221: "LV myocardial scars"}  # fmt: skip
MYOPS_TRUTH = {
    0: {"LV blood pool": 1, "LV normal myocardium": 1, "RV blood pool": 1},
    1: {"LV blood pool": 1, "LV normal myocardium": 1, "RV blood pool": 1, "LV myocardial edema": 1,
        "LV myocardial scars": 1},
    2: {"LV blood pool": 1, "LV normal myocardium": 1, "RV blood pool": 1, "LV myocardial edema": 1},
    3: {"LV blood pool": 1, "LV normal myocardium": 1, "RV blood pool": 1},
}  # fmt: skip
# CMRxMotion: LV pool (1), myocardium (2) beside it, RV (3); the apex slice has the LV only
CMR = cells({1: [(1, 1, (0, 4))], 2: [(2, 1, (0, 3))], 3: [(0, 1, (0, 3))]})
CMR_TRUTH = {k: {"LV": 1, "MYO": 1, "RV": 1} for k in range(3)} | {3: {"LV": 1}}
# COVID-19 CT Seg: both lungs (1 left, 2 right) and infection (3) patches in each on the middle slices
LUNGS = cells({1: [(3, 1, (0, 4))], 2: [(0, 1, (0, 4))], 3: [(3, 0, (1, 3)), (0, 0, (2, 3))]})
LUNGS_TRUTH = {
    0: {"left lung": 1, "right lung": 1},
    1: {"left lung": 1, "right lung": 1, "infection": 1},
    2: {"left lung": 1, "right lung": 1, "infection": 2},
    3: {"left lung": 1, "right lung": 1},
}

# KiPA22: kidney (2, two cells), the tumour (4) beside it, the renal artery (3) and vein (1) at the hilum
KIDNEY = cells(
    {2: [(1, 1, (0, 4)), (2, 1, (0, 4))], 4: [(3, 1, (1, 3))], 3: [(1, 0, (1, 2))], 1: [(2, 0, (1, 3))]}
)
KIDNEY_TRUTH = {
    0: {"kidney": 1},
    1: {"kidney": 1, "kidney tumor": 1, "renal artery": 1, "renal vein": 1},
    2: {"kidney": 1, "kidney tumor": 1, "renal vein": 1},
    3: {"kidney": 1},
}

# SegRap2023 Task 1: values 4 (left temporal lobe only), 6 (temporal lobe ∩ hippocampus), 8 (hippocampus
# only), 2 (brainstem) side by side, 54 (trachea) apart; Brain is the union of 1-9
SEGRAP = cells(
    {4: [(0, 0, (0, 4))], 6: [(1, 0, (0, 4))], 8: [(2, 0, (0, 4))], 2: [(3, 0, (0, 4))], 54: [(1, 2, (0, 2))]}
)
SEGRAP_TRUTH = {k: {"Brain": 1, "BrainStem": 1, "TemporalLobe_L": 1, "Hippocampus_L": 1} for k in range(4)}
SEGRAP_TRUTH[0]["Trachea"] = SEGRAP_TRUTH[1]["Trachea"] = 1
SEGRAP_BOXES = {"Brain": cell_box(0, 0, width=4), "TemporalLobe_L": cell_box(0, 0, width=2),
                "Hippocampus_L": cell_box(1, 0, width=2), "BrainStem": cell_box(3, 0)}  # fmt: skip
# SegRap2023 Task 2: the primary (1) and a node (2)
GTV = cells({1: [(1, 1, (0, 3))], 2: [(3, 2, (1, 3))]})
GTV_TRUTH = {0: {"GTVp": 1}, 1: {"GTVp": 1, "GTVnd": 1}, 2: {"GTVp": 1, "GTVnd": 1}}

# ToothFairy2: the two upper central incisors (11, 21) side by side, the lower jaw (1) below them, the left
# inferior alveolar canal (3) inside the jaw's cell row on one slice
TEETH = cells({11: [(1, 2, (1, 4))], 21: [(2, 2, (1, 4))], 1: [(0, 0, (0, 3)), (1, 0, (0, 3)), (2, 0, (0, 3))],
               3: [(3, 0, (1, 2))]})  # fmt: skip
TEETH_TRUTH = {
    0: {"Lower Jawbone": 1},
    1: {"Lower Jawbone": 1, "Left Inferior Alveolar Canal": 1, "Upper Right Central Incisor": 1,
        "Upper Left Central Incisor": 1},
    2: {"Lower Jawbone": 1, "Upper Right Central Incisor": 1, "Upper Left Central Incisor": 1},
    3: {"Upper Right Central Incisor": 1, "Upper Left Central Incisor": 1},
}  # fmt: skip

# MRSpineSeg: a sagittal stack (4 sagittal slices i of 12 × 16 px in j, k); a vertebra and the discs around
# it are cells in (j, k). Stored sagittally (PIR), as the publisher's stacks are sagittal acquisitions.
SPINE_SHAPE = (4, 12, 16)


def spine_labels() -> np.ndarray:
    lab = np.zeros(SPINE_SHAPE, np.uint8)
    lab[0:3, 4:8, 0:4] = 1  # sacrum (S), slices i 0-2
    lab[0:3, 4:8, 4:8] = 11  # L5/S disc above it
    lab[0:3, 4:8, 8:12] = 2  # L5
    lab[1:4, 4:8, 12:16] = 12  # L4/L5 disc, slices i 1-3
    return lab


SPINE_TRUTH = {0: {"S": 1, "L5/S": 1, "L5": 1}, 1: {"S": 1, "L5/S": 1, "L5": 1, "L4/L5": 1},
               2: {"S": 1, "L5/S": 1, "L5": 1, "L4/L5": 1}, 3: {"L4/L5": 1}}  # fmt: skip

# LAScarQS: the atrium (a 2 × 1 block of cells) and a scar cell on its wall (overlapping the atrium)
ATRIUM = cells({420: [(1, 1, (0, 4)), (2, 1, (0, 4))]}, dtype=np.int16)
SCAR = cells({1: [(2, 1, (1, 3))]})  # on the atrium's right cell: the two masks overlap there
LA_TRUTH = {0: {"atriumSegImgMO": 1}, 1: {"atriumSegImgMO": 1, "scarSegImgM": 1},
            2: {"atriumSegImgMO": 1, "scarSegImgM": 1}, 3: {"atriumSegImgMO": 1}}  # fmt: skip


# --- the publishers' layouts ---------------------------------------------------------------------------------


def write_ctpelvic1k(raw: Path) -> None:
    """Datasets 6 and 7 with their masks (dataset 7's without the "dataset7_" prefix), a dataset-7 image
    without a mask, a dataset-1 mapping-back mask (its image lives in BTCV: not a case), junk."""
    d = raw / "CTPelvic1K"
    save(d / "CTPelvic1K_dataset6_data" / "dataset6_CLINIC_0001_data.nii.gz", ct_image(PELVIS, 1), "LPS")
    save(d / "CTPelvic1K_dataset6_Anonymized_mask" / "dataset6_CLINIC_0001_mask_4label.nii.gz", PELVIS, "LPS")
    save(d / "CTPelvic1K_dataset7_data" / "dataset7_CLINIC_metal_0001_data.nii.gz", ct_image(PELVIS, 71))
    save(d / "CTPelvic1K_dataset7_mask" / "CLINIC_metal_0001_mask_4label.nii.gz", PELVIS)
    save(d / "CTPelvic1K_dataset7_data" / "dataset7_CLINIC_metal_0002_data.nii.gz", ct_image(PELVIS, 72))
    save(d / "CTPelvic1K_dataset1_mask_mappingback" / "dataset1_img0001_mask_4label.nii.gz", PELVIS)
    junk(d / "CTPelvic1K_dataset6_data" / "._dataset6_CLINIC_0001_data.nii.gz")


def write_hecktor2022(raw: Path) -> None:
    """imagesTr with the CT and the (coarser-grid) PET of each patient, labelsTr, the clinical CSVs."""
    d = raw / "hecktor2022_training"
    for n, case in enumerate(("CHUM-001", "MDA-192")):
        save(d / "imagesTr" / f"{case}__CT.nii.gz", ct_image(HN, n))
        save(d / "imagesTr" / f"{case}__PT.nii.gz", np.ones((8, 6, 2), np.float32), zooms=(2.0, 2.0, 5.0))
        save(d / "labelsTr" / f"{case}.nii.gz", HN)
    (d / "hecktor2022_clinical_info_training.csv").write_text("PatientID,Task 1\nCHUM-001,1\nMDA-192,1\n")
    (d / "hecktor2022_endpoint_training.csv").write_text("PatientID,Relapse,RFS\nCHUM-001,0,1200\n")
    junk(d / "imagesTr" / "._CHUM-001__CT.nii.gz")


def write_instance22(raw: Path) -> None:
    """INSTANCE2022/train_2/ with data/ and label/, an image whose label is missing."""
    d = raw / "INSTANCE2022" / "train_2"
    for n in (1, 2):
        save(d / "data" / f"{n:03d}.nii.gz", ct_image(ICH, n), zooms=(0.45, 0.45, 5.0))
        save(d / "label" / f"{n:03d}.nii.gz", ICH, zooms=(0.45, 0.45, 5.0))
    save(d / "data" / "003.nii.gz", ct_image(ICH, 3), zooms=(0.45, 0.45, 5.0))


def write_parse2022(raw: Path) -> None:
    """train/train/PA…/image + label (as SAT-DS's copy nests them), a validation case without a label."""
    d = raw / "PARSE2022" / "train" / "train"
    for n in (5, 16):
        case = f"PA{n:06d}"
        save(d / case / "image" / f"{case}.nii.gz", ct_image(PA, n), zooms=(0.7, 0.7, 1.0))
        save(d / case / "label" / f"{case}.nii.gz", PA, zooms=(0.7, 0.7, 1.0))
    save(raw / "PARSE2022" / "validation" / "PA000300" / "image" / "PA000300.nii.gz", ct_image(PA, 300))


def write_myops2020(raw: Path) -> None:
    """train25/ with the C0, DE and T2 sequences, train25_myops_gd/ with the label, a test image folder."""
    d = raw / "MyoPS2020"
    for n in (101, 102):
        for seq, base in (("C0", 100), ("DE", 300), ("T2", 600)):
            save(d / "train25" / f"myops_training_{n}_{seq}.nii.gz", mr_image(MYOPS, base, n))
        save(d / "train25_myops_gd" / f"myops_training_{n}_gd.nii.gz", MYOPS)
    save(d / "test20" / "myops_test_201_DE.nii.gz", mr_image(MYOPS, 300, 201))


def write_cmrxmotion(raw: Path) -> None:
    """segmentation/data/P00x-y/ with ED and ES volumes stored (x, y, z, 1) and float labels; one volume
    of a motion-corrupted scan has no label."""
    d = raw / "CMRxMotion" / "segmentation" / "data"
    for scan, phases in (("P001-1", ("ED", "ES")), ("P001-2", ("ED",)), ("P002-1", ("ED", "ES"))):
        for phase in ("ED", "ES"):
            seed = int(scan[1:4]) * 10 + int(scan[-1]) + (phase == "ES")
            save(
                d / scan / f"{scan}-{phase}.nii.gz",
                mr_image(CMR, 200, seed)[..., None],
                zooms=(1.5, 1.5, 8.0),
            )
            if phase in phases:
                save(d / scan / f"{scan}-{phase}-label.nii.gz", CMR.astype(np.float32), zooms=(1.5, 1.5, 8.0))


def write_lascarqs22(raw: Path) -> None:
    """task1 (atrium and scar masks) and task2 (atrium only) case folders; a Task 1 case without its scar
    mask."""
    d = raw / "LAScarQS2022_released_training_data"
    for n in (1, 2):
        case = d / "task1" / "train_data" / f"train_{n}"
        save(case / "enhanced.nii.gz", mr_image(ATRIUM, 150, n), zooms=(0.625, 0.625, 2.5))
        save(case / "atriumSegImgMO.nii.gz", ATRIUM, zooms=(0.625, 0.625, 2.5))
        if n == 1:
            save(case / "scarSegImgM.nii.gz", SCAR, zooms=(0.625, 0.625, 2.5))
    case = d / "task2" / "train_data" / "train_1"
    save(case / "enhanced.nii.gz", mr_image(ATRIUM, 150, 21), zooms=(0.625, 0.625, 2.5))
    save(case / "atriumSegImgMO.nii.gz", ATRIUM, zooms=(0.625, 0.625, 2.5))


def write_covid19_ct_seg(raw: Path) -> None:
    """The 20-case folder with a coronacases and a radiopaedia scan, the combined mask folder inside it,
    the Lung_Mask folder too."""
    d = raw / "COVID-19-CT-Seg_20cases"
    for n in (1, 2):
        save(d / f"coronacases_{n:03d}.nii.gz", ct_image(LUNGS, n), "LPS", zooms=(0.7, 0.7, 1.0))
        save(
            d / "Lung_and_Infection_Mask" / f"coronacases_{n:03d}.nii.gz", LUNGS, "LPS", zooms=(0.7, 0.7, 1.0)
        )
        save(
            d / "Lung_Mask" / f"coronacases_{n:03d}.nii.gz",
            np.minimum(LUNGS, 2),
            "LPS",
            zooms=(0.7, 0.7, 1.0),
        )
    save(d / "radiopaedia_4_85506_1.nii.gz", (LUNGS * 60).astype(np.uint8))
    save(d / "Lung_and_Infection_Mask" / "radiopaedia_4_85506_1.nii.gz", LUNGS)


def write_kipa22(raw: Path) -> None:
    """train/image and train/label with the same numeric names; the CTs stored as HU + 1000 (uint16)."""
    d = raw / "KiPA22" / "train"
    for n in (0, 7):
        save(
            d / "image" / f"{n}.nii.gz", (ct_image(KIDNEY, n) + 1000).astype(np.uint16), zooms=(0.6, 0.6, 0.6)
        )
        save(d / "label" / f"{n}.nii.gz", KIDNEY, zooms=(0.6, 0.6, 0.6))


def write_segrap2023(raw: Path) -> None:
    """The 120-case folder (non-contrast and contrast CT per case) and the fused labels of both tasks; a case
    whose Task001 map holds a value no structure's set names."""
    d = raw / "SegRap2023"
    for n in (0, 12, 13):
        case = f"segrap_{n:04d}"
        save(d / "SegRap2023_Training_Set_120cases" / case / "image.nii.gz", ct_image(SEGRAP, n))
        save(
            d / "SegRap2023_Training_Set_120cases" / case / "image_contrast.nii.gz", ct_image(SEGRAP, 100 + n)
        )
        oars = SEGRAP.copy()
        if n == 13:
            oars[0:2, 8:10, 3] = 60  # not one of the publisher's 54 values
        labels = d / "SegRap2023_Training_Set_120cases_OneHot_Labels"
        save(labels / "Task001" / f"{case}.nii.gz", oars)
        save(labels / "Task002" / f"{case}.nii.gz", GTV)


def save_mha(path: Path, canonical: np.ndarray, axcodes: str = "LPS", zooms=(0.3, 0.3, 0.3)) -> None:
    """``canonical`` (RAS+) stored as a MetaImage in ``axcodes`` order: ITK's array is (z, y, x) and its
    physical space LPS (the RAS affine with the first two rows negated)."""
    img = nib.Nifti1Image(canonical, np.diag([*zooms, 1.0]))
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(tuple("RAS")), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    img = img.as_reoriented(ornt)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(img.dataobj).transpose(2, 1, 0)))
    out.SetSpacing(spacing.tolist())
    out.SetOrigin(lps[:3, 3].tolist())
    out.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(path))


def write_toothfairy2(raw: Path) -> None:
    """The nnU-Net raw folder: imagesTr with the _0000 channel suffix, labelsTr, dataset.json; a scan whose
    label holds an NA placeholder value (19); an unlabelled imagesTs scan."""
    d = raw / "Dataset112_ToothFairy2"
    for case in ("ToothFairy2F_001", "ToothFairy2P_001", "ToothFairy2F_002"):
        save_mha(d / "imagesTr" / f"{case}_0000.mha", ct_image(TEETH, int(case[-1]) + (case[11] == "P") * 10))
        lab = TEETH.copy()
        if case == "ToothFairy2F_002":
            lab[12:16, 8:12, 0] = 19
        save_mha(d / "labelsTr" / f"{case}.mha", lab)
    save_mha(d / "imagesTs" / "ToothFairy2F_100_0000.mha", ct_image(TEETH, 100))
    (d / "dataset.json").write_text(
        '{"channel_names": {"0": "CBCT"}, "labels": {"background": 0}, "file_ending": ".mha"}'
    )


def write_mrspineseg(raw: Path) -> None:
    d = raw / "MRSpineSeg_Challenge_SMU" / "train"
    for n in (1, 12):
        save(d / "MR" / f"Case{n}.nii.gz", mr_image(spine_labels(), 400, n), "PIR", zooms=(4.4, 0.6, 0.6))
        save(d / "Mask" / f"mask_case{n}.nii.gz", spine_labels(), "PIR", zooms=(4.4, 0.6, 0.6))
    junk(d / "MR" / "._Case1.nii.gz")


WRITERS = (write_ctpelvic1k, write_hecktor2022, write_instance22, write_parse2022, write_myops2020,
           write_cmrxmotion, write_lascarqs22, write_covid19_ct_seg, write_kipa22, write_segrap2023, write_toothfairy2, write_mrspineseg)  # fmt: skip


# --- what each spec must find: cases (image, annotation files), rejects, patients, truth --------------------

LABEL_MAP = {
    "ctpelvic1k": dict(
        read={"dataset6_CLINIC_0001": ("CTPelvic1K_dataset6_data/dataset6_CLINIC_0001_data.nii.gz",
                                       "CTPelvic1K_dataset6_Anonymized_mask/dataset6_CLINIC_0001_mask_4label.nii.gz"),
              "CLINIC_metal_0001": ("CTPelvic1K_dataset7_data/dataset7_CLINIC_metal_0001_data.nii.gz",
                                    "CTPelvic1K_dataset7_mask/CLINIC_metal_0001_mask_4label.nii.gz")},
        rejected={"CLINIC_metal_0002": "missing_file"}, truth=PELVIS, regions=PELVIS_TRUTH,
        names={1: "sacrum", 2: "right_hip", 3: "left_hip", 4: "lumbar_vertebra"},
        image=lambda c: ct_image(PELVIS, 1 if c.startswith("dataset6") else 71),
        box=(0, "left_hip", cell_box(3, 1)),
    ),
    "hecktor2022": dict(
        read={c: (f"imagesTr/{c}__CT.nii.gz", f"labelsTr/{c}.nii.gz") for c in ("CHUM-001", "MDA-192")},
        rejected={}, truth=HN, regions=HN_TRUTH, names={1: "GTVp", 2: "GTVn"},
        image=lambda c: ct_image(HN, 0 if c == "CHUM-001" else 1),
        box=(2, "GTVp", cell_box(1, 1)),
    ),
    "instance22": dict(
        read={f"{n:03d}": (f"train_2/data/{n:03d}.nii.gz", f"train_2/label/{n:03d}.nii.gz") for n in (1, 2)},
        rejected={"003": "missing_file"}, truth=ICH, regions=ICH_TRUTH, names={1: "ICH"},
        image=lambda c: ct_image(ICH, int(c)), box=(0, "ICH", cell_box(2, 1)),
    ),
    "parse2022": dict(
        read={c: (f"train/train/{c}/image/{c}.nii.gz", f"train/train/{c}/label/{c}.nii.gz")
              for c in ("PA000005", "PA000016")},
        rejected={"PA000300": "missing_file"}, truth=PA, regions=PA_TRUTH, names={1: "pulmonary artery"},
        image=lambda c: ct_image(PA, int(c[2:])), box=(0, "pulmonary artery", cell_box(1, 1)),
    ),
    "myops2020": dict(
        read={c: (f"train25/myops_training_{c}_DE.nii.gz", f"train25_myops_gd/myops_training_{c}_gd.nii.gz")
              for c in ("101", "102")},
        rejected={}, truth=MYOPS, regions=MYOPS_TRUTH, names=MYOPS_NAMES,
        image=lambda c: mr_image(MYOPS, 300, int(c)),  # the DE sequence, not C0 or T2
        box=(1, "LV myocardial scars", cell_box(3, 1)),
    ),
    "cmrxmotion": dict(
        read={f"{s}-{p}": (f"segmentation/data/{s}/{s}-{p}.nii.gz", f"segmentation/data/{s}/{s}-{p}-label.nii.gz")
              for s, p in (("P001-1", "ED"), ("P001-1", "ES"), ("P001-2", "ED"), ("P002-1", "ED"), ("P002-1", "ES"))},
        rejected={"P001-2-ES": "missing_file"}, truth=CMR, regions=CMR_TRUTH, names={1: "LV", 2: "MYO", 3: "RV"},
        image=lambda c: mr_image(CMR, 200, int(c[1:4]) * 10 + int(c[5]) + c.endswith("ES")),
        box=(3, "LV", cell_box(1, 1)),
    ),
    "covid19_ct_seg": dict(
        read={f"{n:03d}": (f"coronacases_{n:03d}.nii.gz", f"Lung_and_Infection_Mask/coronacases_{n:03d}.nii.gz")
              for n in (1, 2)},
        rejected={}, truth=LUNGS, regions=LUNGS_TRUTH, names={1: "left lung", 2: "right lung", 3: "infection"},
        image=lambda c: ct_image(LUNGS, int(c)), box=(1, "infection", cell_box(3, 0)),
    ),
    "kipa22": dict(
        read={str(n): (f"train/image/{n}.nii.gz", f"train/label/{n}.nii.gz") for n in (0, 7)},
        rejected={}, truth=KIDNEY, regions=KIDNEY_TRUTH,
        names={1: "renal vein", 2: "kidney", 3: "renal artery", 4: "kidney tumor"},
        image=lambda c: ct_image(KIDNEY, int(c)),  # in HU again: hu_offset -1000 undoes the stored + 1000
        box=(1, "kidney", cell_box(1, 1, width=2)),
    ),
    "segrap2023_task2": dict(
        read={f"segrap_{n:04d}": (f"SegRap2023_Training_Set_120cases/segrap_{n:04d}/image_contrast.nii.gz",
                                  f"SegRap2023_Training_Set_120cases_OneHot_Labels/Task002/segrap_{n:04d}.nii.gz")
              for n in (0, 12, 13)},
        rejected={}, truth=GTV, regions=GTV_TRUTH, names={1: "GTVp", 2: "GTVnd"},
        image=lambda c: ct_image(SEGRAP, 100 + int(c[-4:])),  # the contrast CT, not image.nii.gz
        box=(1, "GTVnd", cell_box(3, 2)),
    ),
    "toothfairy2": dict(
        read={c: (f"imagesTr/{c}_0000.mha", f"labelsTr/{c}.mha") for c in ("ToothFairy2F_001", "ToothFairy2P_001")},
        rejected={"ToothFairy2F_002": "bad_label_value"}, truth=TEETH, regions=TEETH_TRUTH,
        names={1: "Lower Jawbone", 3: "Left Inferior Alveolar Canal", 11: "Upper Right Central Incisor",
               21: "Upper Left Central Incisor", 48: "Lower Right Third Molar (Wisdom Tooth)"},
        image=lambda c: ct_image(TEETH, int(c[-1]) + (c[11] == "P") * 10),
        box=(2, "Upper Left Central Incisor", cell_box(2, 2)),
    ),
    "mrspineseg": dict(
        read={c: (f"train/MR/Case{c}.nii.gz", f"train/Mask/mask_case{c}.nii.gz") for c in ("1", "12")},
        rejected={}, truth=spine_labels(), regions=SPINE_TRUTH, axis=0,
        names={1: "S", 2: "L5", 11: "L5/S", 12: "L4/L5"},
        image=lambda c: mr_image(spine_labels(), 400, int(c)),
        # the sagittal display of take(volume, i, 0) (j, k) flips both: x = 11 - j, y = 15 - k (superior at
        # the top), so the sacrum cell j 4-7, k 0-3 is the box x 4-8, y 12-16
        box=(0, "S", (4, 12, 8, 16)),
    ),
}  # fmt: skip
LABEL_MAP_SPECS = list(LABEL_MAP)
IDS = {  # case → (patient, study)
    "cmrxmotion": {"P001-1-ED": ("P001", "P001-1"), "P001-1-ES": ("P001", "P001-1"), "P001-2-ED": ("P001", "P001-2"),
                   "P001-2-ES": ("P001", "P001-2"), "P002-1-ED": ("P002", "P002-1"), "P002-1-ES": ("P002", "P002-1")},
}  # fmt: skip
MASK_SPECS = ["lascarqs22_task1", "lascarqs22_task2"]
SPECS = LABEL_MAP_SPECS + MASK_SPECS + ["segrap2023_task1"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("thirdvolraw")
    for write in WRITERS:
        write(root)
    return root


# --- specs ---------------------------------------------------------------------------------------------------

EXPECTED_CONCEPTS = {
    "ctpelvic1k": {"sacrum": "Sacrum", "right_hip": "Right hip bone", "left_hip": "Left hip bone",
                   "lumbar_vertebra": "Lumbar spine"},
    "hecktor2022": {"GTVp": "Primary head and neck tumour", "GTVn": "Metastatic lymph node"},
    "instance22": {"ICH": "Intracranial haemorrhage"},
    "parse2022": {"pulmonary artery": "Pulmonary artery"},
    "myops2020": {"LV normal myocardium": "Left ventricular myocardium", "LV blood pool": "Left ventricular cavity",
                  "RV blood pool": "Right ventricular cavity", "LV myocardial edema": "Myocardial oedema",
                  "LV myocardial scars": "Myocardial scar"},
    "cmrxmotion": {"LV": "Left ventricular cavity", "MYO": "Left ventricular myocardium", "RV": "Right ventricular cavity"},
    "covid19_ct_seg": {"left lung": "Left lung", "right lung": "Right lung", "infection": "COVID-19 lung infiltrate"},
    "lascarqs22_task1": {"atriumSegImgMO": "Left atrium", "scarSegImgM": "Left atrial scar"},
    "lascarqs22_task2": {"atriumSegImgMO": "Left atrium"},
    "segrap2023_task2": {"GTVp": "Primary head and neck tumour", "GTVnd": "Metastatic lymph node"},
    "toothfairy2": None,
    "kipa22": {"renal vein": "Renal vein", "kidney": "Kidney", "renal artery": "Renal artery",
               "kidney tumor": "Kidney tumour"},
}  # fmt: skip


def test_the_new_specs_are_complete_and_name_every_label():
    kb = load_kb()
    for name in SPECS:
        spec = resolve_spec(name)
        assert spec.format.family == "volumes" and spec.split.rule == "hash", name
        assert spec.citation and spec.licence and spec.homepage.startswith("https://") and spec.unit_items > 0
        assert spec.stats is not None and spec.stats.structures == len(spec.labels) and spec.stats.source
        assert all(e.name[0].isupper() and e.category for e in spec.labels)
        concepts = {e.label: concept_for_label(e, kb) for e in spec.labels}
        if EXPECTED_CONCEPTS.get(name):
            assert {k: c.canonical_name for k, c in concepts.items()} == EXPECTED_CONCEPTS[name], name
    assert {n: resolve_spec(n).access for n in SPECS if resolve_spec(n).access == "open"} == {
        "ctpelvic1k": "open", "covid19_ct_seg": "open"
    }  # fmt: skip
    # MRSpineSeg's 19 values: sacrum, L5-T9, then the nine discs from L5/S1 up, each its own concept
    spine = resolve_spec("mrspineseg")
    assert [e.value for e in spine.labels] == list(range(1, 20))
    discs = [concept_for_label(e, kb) for e in spine.labels[10:]]
    assert [c.concept_id for c in discs] == [f"MEDP:{n}" for n in range(1000, 1009)]
    assert {kb.parent_of(c.concept_id).canonical_name for c in discs} == {"Intervertebral disc"}
    assert concept_for_label(spine.labels[9], kb).canonical_name == "T9 vertebra"
    assert kb.lookup("GTVn").concept_id == "MEDP:1010" and kb.parent_of("MEDP:1011").canonical_name == "Scar"
    # the publishers' counts these specs are projected from, and no shared cases with a shipped spec
    assert {n: resolve_spec(n).stats.cases for n in SPECS} == {
        "ctpelvic1k": 117, "hecktor2022": 524, "instance22": 100, "parse2022": 100, "myops2020": 25,
        "cmrxmotion": 138, "covid19_ct_seg": 10, "mrspineseg": 91, "lascarqs22_task1": 60,
        "lascarqs22_task2": 130, "kipa22": 70, "segrap2023_task1": 120, "segrap2023_task2": 120,
        "toothfairy2": 480,
    }  # fmt: skip
    assert all(not resolve_spec(n).overlaps for n in SPECS)
    # samples = cases × slices_per_case × annotated_fraction, regions = samples × regions_per_sample
    # (ctpelvic1k: 117 × 300 × 0.7 = 24,570 and × 3 = 73,710; mrspineseg: 91 × 12 × 0.8 = 873.6 → 874)
    expected = {
        "ctpelvic1k": (24_570, 73_710), "hecktor2022": (15_720, 28_296), "instance22": (1_050, 1_365),
        "parse2022": (13_500, 67_500), "myops2020": (112, 504), "cmrxmotion": (1_214, 3_278),
        "lascarqs22_task1": (2_640, 10_560), "lascarqs22_task2": (5_720, 6_864), "covid19_ct_seg": (1_875, 5_625),
        "mrspineseg": (874, 10_488), "kipa22": (11_200, 44_800), "segrap2023_task1": (13_260, 132_600),
        "segrap2023_task2": (4_680, 9_360), "toothfairy2": (102_000, 816_000),
    }  # fmt: skip
    c = census([resolve_spec(n) for n in SPECS])
    assert {p.dataset: (p.samples, p.regions) for p in c.projections} == expected
    assert c.distinct_samples == c.samples == 198_415 and c.regions == 1_210_950


# --- label-map specs: discovery and frames -------------------------------------------------------------------


@pytest.mark.parametrize("name", LABEL_MAP_SPECS)
def test_label_map_specs_find_their_cases_and_recover_the_truth(raw, name):
    spec, case = resolve_spec(name), LABEL_MAP[name]
    items = items_of(spec, raw)
    assert sorted(items) == sorted({**case["read"], **case["rejected"]})  # no PET, other sequence, ._ file
    ids = IDS.get(name, {c: (c, None) for c in items})
    assert {c: (i.patient_id, i.study_id) for c, i in items.items()} == ids
    assert {e.value: e.label for e in spec.labels if e.value in case["names"]} == case["names"]
    axis = case.get("axis", 2)
    truth = case["truth"]
    for cid, (image, label) in case["read"].items():
        item = items[cid]
        assert item.files == (
            SourceFile("image", f"{spec.root}/{image}"),
            SourceFile("label", f"{spec.root}/{label}"),
        )
        assert item.official_split is None
        frames = frames_of(spec, raw, item)
        assert [f.slice_index for f in frames] == list(range(truth.shape[axis]))
        assert {f.intensity for f in frames} == {"hu" if spec.modality == "CT" else "raw"}
        assert all(np.array_equal(f.label_map, display(truth, f.slice_index, axis)) for f in frames), cid
        expected = case["image"](cid)
        assert all(np.array_equal(f.image, display(expected, f.slice_index, axis)) for f in frames), cid
        got = {f.slice_index: regions_of(spec, f) for f in frames if f.has_annotations}
        assert {k: dict(Counter(r.label for r in rs)) for k, rs in got.items()} == case["regions"], cid
        k, label, box = case["box"]
        assert [r.bbox for r in got[k] if r.label == label][:1] == [box], cid
    for cid, reason in case["rejected"].items():
        assert rejected(spec, raw, items[cid]).reason == reason


def test_hecktor_reads_the_ct_never_the_pet(raw):
    spec = resolve_spec("hecktor2022")
    items = items_of(spec, raw)
    assert all("__PT" not in f.path for i in items.values() for f in i.files)
    frames = frames_of(spec, raw, items["CHUM-001"])
    assert {f.shape for f in frames} == {(12, 16)}  # the CT's grid, not the PET's 8 × 6


def test_cmrxmotion_keeps_a_volunteers_scans_in_one_split(raw):
    spec = resolve_spec("cmrxmotion")
    items = items_of(spec, raw)
    by_patient: dict[str, set[str]] = {}
    for i in items.values():
        by_patient.setdefault(i.patient_id, set()).add(assign_split(spec.split, spec.name, i.patient_id))
    assert sorted(by_patient) == ["P001", "P002"] and all(len(s) == 1 for s in by_patient.values())
    e = rejected(spec, raw, items["P001-2-ES"])
    assert "P001-2-ES-label.nii.gz" in e.detail


def test_covid19_ct_seg_reads_the_coronacases_scans_only(raw):
    """The Radiopaedia scans (8-bit, not HU) and their masks are neither cases nor rejects; the Lung_Mask
    copy of the labels is never read."""
    spec = resolve_spec("covid19_ct_seg")
    items = items_of(spec, raw)
    assert sorted(items) == ["001", "002"]
    assert not any("radiopaedia" in f.path or "Lung_Mask/" in f.path for i in items.values() for f in i.files)


# --- per-structure mask specs (LAScarQS) ---------------------------------------------------------------------


@pytest.mark.parametrize("name", MASK_SPECS)
def test_lascarqs_reads_each_mask_whatever_its_stored_value(raw, name):
    spec = resolve_spec(name)
    items = items_of(spec, raw)
    task = name[-5:]
    expected = ["train_1", "train_2"] if task == "task1" else ["train_1"]
    assert sorted(items) == expected
    item = items["train_1"]
    folder = f"{spec.root}/{task}/train_data/train_1"
    masks = [f"{folder}/atriumSegImgMO.nii.gz"] + (
        [f"{folder}/scarSegImgM.nii.gz"] if task == "task1" else []
    )
    assert item.files == (SourceFile("image", f"{folder}/enhanced.nii.gz"),
                          *(SourceFile("mask", m) for m in masks))  # fmt: skip
    frames = frames_of(spec, raw, item)
    assert [f.slice_index for f in frames] == [0, 1, 2, 3]
    truth = LA_TRUTH if task == "task1" else {k: {"atriumSegImgMO": 1} for k in range(4)}
    got = {f.slice_index: regions_of(spec, f) for f in frames}
    assert {k: dict(Counter(r.label for r in rs)) for k, rs in got.items()} == truth
    # the atrium (stored as 420) spans two cells; the scar (stored as 1) overlaps one of them
    assert [r.bbox for r in got[1] if r.label == "atriumSegImgMO"] == [cell_box(1, 1, width=2)]
    if task == "task1":
        assert [r.bbox for r in got[1] if r.label == "scarSegImgM"] == [cell_box(2, 1)]
        masks_at_1 = dict(frames[1].masks)
        assert np.array_equal(masks_at_1["atriumSegImgMO"], display(ATRIUM, 1) != 0)
        assert (masks_at_1["scarSegImgM"] & masks_at_1["atriumSegImgMO"]).sum() == 16  # both kept
        e = rejected(spec, raw, items["train_2"])  # its scar mask is missing: missing_masks: reject
        assert e.reason == "missing_file" and "scarSegImgM" in e.detail


def test_hu_offset_turns_kipas_stored_values_back_into_hounsfield_units(raw):
    spec = resolve_spec("kipa22")
    item = items_of(spec, raw)["0"]
    shifted = frames_of(spec, raw, item)
    data = spec.model_dump(mode="json")
    data["format"]["options"]["hu_offset"] = 0.0
    stored = frames_of(type(spec).model_validate(data), raw, item)
    assert [f.intensity for f in shifted] == ["hu"] * 4
    pairs = zip(shifted, stored, strict=True)
    assert all(np.array_equal(a.image, b.image.astype(np.float64) - 1000) for a, b in pairs)
    truth = ct_image(KIDNEY, 0)  # stored + 1000 as uint16: the background reads 915-925 unshifted
    assert (
        min(float(f.image.min()) for f in shifted)
        == float(truth.min())
        < 0
        < min(f.image.min() for f in stored)
    )


def test_hu_offset_on_a_spec_without_ct_is_refused(raw):
    spec = resolve_spec("myops2020")
    data = spec.model_dump(mode="json")
    data["format"]["options"]["hu_offset"] = -1000
    with pytest.raises(ReadError) as e:
        items_of(type(spec).model_validate(data), raw)
    assert e.value.reason == "bad_option" and "hu_offset" in e.value.detail


# --- SegRap2023 Task 1: an overlap-coded label map read through label_sets ---------------------------------


def test_segrap_task1_reads_each_structure_from_its_set_of_values(raw):
    spec = resolve_spec("segrap2023_task1")
    assert len(spec.labels) == 45 and spec.format.options.label_sets["Brain"] == tuple(range(1, 10))
    kb = load_kb()
    names = {e.label: concept_for_label(e, kb).canonical_name for e in spec.labels}
    assert names["TemporalLobe_L"] == "Left temporal lobe" and names["Hippocampus_L"] == "Left hippocampus"
    assert names["PharynxConst"] == "Pharyngeal constrictor muscles" and names["ETbone_R"].startswith(
        "Right bony"
    )
    items = items_of(spec, raw)
    assert sorted(items) == ["segrap_0000", "segrap_0012", "segrap_0013"]
    base = f"{spec.root}/SegRap2023_Training_Set_120cases/segrap_0012"
    assert items["segrap_0012"].files == (
        SourceFile("image", f"{base}/image.nii.gz"),  # the non-contrast CT
        SourceFile(
            "label", f"{spec.root}/SegRap2023_Training_Set_120cases_OneHot_Labels/Task001/segrap_0012.nii.gz"
        ),
    )
    frames = frames_of(spec, raw, items["segrap_0012"])
    assert all(np.array_equal(f.image, display(ct_image(SEGRAP, 12), f.slice_index)) for f in frames)
    got = {f.slice_index: regions_of(spec, f) for f in frames}
    assert {k: dict(Counter(r.label for r in rs)) for k, rs in got.items()} == SEGRAP_TRUTH
    assert {r.label: r.bbox for r in got[2]} == SEGRAP_BOXES
    masks = dict(frames[0].masks)  # the shared value 6 is in both the temporal lobe and the hippocampus
    assert (masks["TemporalLobe_L"] & masks["Hippocampus_L"]).sum() == 16
    assert masks["Brain"].sum() == 64 and masks["Trachea"].sum() == 16
    e = rejected(spec, raw, items["segrap_0013"])
    assert e.reason == "bad_label_value" and "[60]" in e.detail


def test_label_sets_must_name_every_spec_label_and_need_a_label_map(raw):
    data = resolve_spec("segrap2023_task1").model_dump(mode="json")
    del data["format"]["options"]["label_sets"]["Trachea"]
    spec = parse_spec(data)
    with pytest.raises(ReadError) as e:
        items_of(spec, raw)
    assert e.value.reason == "bad_option" and "no set: ['Trachea']" in e.value.detail
    data = resolve_spec("lascarqs22_task1").model_dump(mode="json")
    data["format"]["options"]["label_sets"] = {"atriumSegImgMO": [1], "scarSegImgM": [2]}
    with pytest.raises(SpecError, match="label_sets name values of a label map"):
        parse_spec(data)


def test_toothfairy2_names_every_fdi_tooth(raw):
    spec = resolve_spec("toothfairy2")
    kb = load_kb()
    fdi = [e.value for e in spec.labels if e.value > 10]
    assert fdi == [q * 10 + k for q in (1, 2, 3, 4) for k in range(1, 9)] and len(spec.labels) == 42
    names = {e.value: concept_for_label(e, kb) for e in spec.labels}
    assert names[1].canonical_name == "Mandible" and names[2].canonical_name == "Maxilla"
    assert (
        names[36].canonical_name == "Lower left first molar"
        and names[18].canonical_name == "Upper right third molar"
    )
    assert {kb.parent_of(names[v].concept_id).canonical_name for v in fdi} == {"Tooth"}
    assert {names[v].category for v in (8, 9, 10)} == {"device"}
    e = rejected(spec, raw, items_of(spec, raw)["ToothFairy2F_002"])
    assert "[19]" in e.detail  # an NA placeholder value: not a tooth
