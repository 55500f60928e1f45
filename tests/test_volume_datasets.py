"""The NIfTI datasets as published: MSD (Task01/03/05/09), BTCV, AMOS22, KiTS23, TotalSegmentator v2,
BraTS 2021/2023, ACDC, FLARE22, each read by its shipped spec from a tiny copy that this file writes in the
publisher's layout (folders, names, dataset.json / meta.csv / Info.cfg, junk files, storage quirks).

Every phantom is defined on the canonical RAS+ grid (24 × 20 × 6, i → patient's right, j → anterior,
k → superior) and stored in the orientation a dataset uses; a reader is right when its axial frame k equals
``canonical[:, :, k].T[::-1, ::-1]`` (radiological display: patient's right on the image's left, anterior at
the top). No mocks; the last test builds three specs end to end on a real local Ray.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
from corpus_utils import (
    axial_frames_of,
    axial_only,
    discovery_notes,
    frames_of,
    items_of,
    planes_for,
    totalsegmentator_class_map,
)
from layouts import junk
from layouts import save_nifti as save
from scipy import ndimage

from medpclip.corpus.build import build_corpus
from medpclip.corpus.split import assign_split
from medpclip.frame import DiscoveryNote, Frame, ReadError, SourceFile, SourceItem
from medpclip.sources._common import parse_options
from medpclip.sources.volumes import VolumeLayout, _present_values
from medpclip.specs import DatasetSpec, SpecError, parse_spec, resolve_spec, resolve_specs

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
SHAPE = (24, 20, 6)
SPECS = [
    "msd_liver", "msd_spleen", "msd_brain_tumour", "msd_prostate", "btcv", "amos22", "kits23",
    "totalsegmentator", "brats2021", "brats2023", "acdc", "flare22",
]  # fmt: skip

# --- phantoms on the canonical grid ------------------------------------------------------------------------
Box = tuple[slice, slice, slice]
ABDOMEN: dict[str, Box] = {  # region count per axial slice k: 3, 4, 3, 3, 2, 1 → 16 regions, 6 samples
    "liver": (slice(14, 22), slice(6, 16), slice(1, 5)),  # patient's right
    "spleen": (slice(2, 8), slice(8, 14), slice(2, 4)),  # patient's left
    "right kidney": (slice(15, 20), slice(1, 5), slice(0, 2)),
    "left kidney": (slice(3, 8), slice(1, 5), slice(0, 2)),
    "aorta": (slice(10, 14), slice(4, 9), slice(0, 6)),
}
ABDOMEN_REGIONS = {0: 3, 1: 4, 2: 3, 3: 3, 4: 2, 5: 1}
BRAIN = {"outer": (slice(4, 20), slice(3, 17), slice(1, 5)), "mid": (slice(8, 16), slice(6, 14), slice(2, 4)),
         "core": (slice(10, 14), slice(8, 12), slice(2, 4))}  # fmt: skip
BRAIN_REGIONS = {1: 1, 2: 3, 3: 3, 4: 1}  # edema ring; + enhancing ring and core on k = 2, 3


def abdomen(values: dict[str, int], dtype=np.uint8) -> np.ndarray:
    lab = np.zeros(SHAPE, dtype)
    for organ, value in values.items():
        lab[ABDOMEN[organ]] = value
    return lab


def brain(edema: int, enhancing: int, core: int) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[BRAIN["outer"]], lab[BRAIN["mid"]], lab[BRAIN["core"]] = edema, enhancing, core
    return lab


def ct_image(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (-50 + 15 * labels.astype(np.int16) + rng.integers(-5, 6, SHAPE)).astype(np.int16)


def mr_image(labels: np.ndarray, base: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (base + 40 * labels.astype(np.int16) + rng.integers(0, 30, labels.shape)).astype(np.int16)


def display(volume: np.ndarray, k: int) -> np.ndarray:
    return volume[:, :, k].T[::-1, ::-1]


# --- the datasets, in their publishers' layouts ------------------------------------------------------------

BTCV_VALUES = {"spleen": 1, "right kidney": 2, "left kidney": 3, "liver": 6, "aorta": 8}
AMOS_VALUES = {"spleen": 1, "right kidney": 2, "left kidney": 3, "liver": 6, "aorta": 8}  # 8 = "arota"
FLARE_VALUES = {"liver": 1, "right kidney": 2, "spleen": 3, "aorta": 5, "left kidney": 13}
AMOS_LABELS = ["background", "spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver",
               "stomach", "arota", "postcava", "pancreas", "right adrenal gland", "left adrenal gland",
               "duodenum", "bladder", "prostate/uterus"]  # fmt: skip
TS_PRESENT: dict[str, Box] = {  # per axial slice k: 2, 4, 4, 3, 2, 1 → 16 regions, 6 samples
    "liver": ABDOMEN["liver"],
    "spleen": ABDOMEN["spleen"],
    "kidney_left": (slice(3, 8), slice(1, 6), slice(0, 3)),
    "kidney_cyst_left": (slice(4, 8), slice(2, 6), slice(1, 2)),  # inside kidney_left: overlapping masks
    "aorta": ABDOMEN["aorta"],
}
TS_REGIONS = {0: 2, 1: 4, 2: 4, 3: 3, 4: 2, 5: 1}
KITS = {"kidney_r": (slice(15, 21), slice(3, 10), slice(1, 5)), "kidney_l": (slice(3, 9), slice(3, 10), slice(1, 5)),
        "tumor": (slice(16, 20), slice(4, 9), slice(2, 4)), "cyst": (slice(3, 7), slice(3, 7), slice(3, 4))}  # fmt: skip


def msd_json(name: str, modality: dict, labels: dict, training: list[str], test: list[str]) -> str:
    return json.dumps(
        {
            "name": name,
            "description": f"{name} Segmentation",
            "reference": "see medicaldecathlon.com",
            "licence": "CC-BY-SA 4.0",
            "relase": "1.0 04/05/2018",  # the misspelled key of some tasks
            "tensorImageSize": "4D" if len(modality) > 1 else "3D",
            "modality": modality,
            "labels": labels,
            "numTraining": len(training),
            "numTest": len(test),
            "training": [
                {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in training
            ],
            "test": [f"./imagesTs/{c}.nii.gz" for c in test],
        },
        indent=4,
    )


def write_msd_liver(raw: Path) -> None:
    d = raw / "Task03_Liver"
    lab0 = abdomen({"liver": 1})
    lab0[16:20, 9:13, 2:4] = 2  # a tumour inside the liver on k = 2, 3 (16 px)
    save(d / "imagesTr" / "liver_0.nii.gz", ct_image(lab0, 0))
    save(d / "labelsTr" / "liver_0.nii.gz", lab0)
    lab7 = abdomen({"liver": 1}, dtype=np.float32)  # float-stored labels; no tumour in this case
    save(d / "imagesTr" / "liver_7.nii.gz", ct_image(lab7.astype(np.uint8), 7))
    save(d / "labelsTr" / "liver_7.nii.gz", lab7)
    save(d / "imagesTs" / "liver_3.nii.gz", ct_image(lab0, 3))  # test: no label
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        junk(d / sub / "._liver_0.nii.gz")
    labels = {"0": "background", "1": "liver", "2": "cancer"}
    (d / "dataset.json").write_text(
        msd_json("Liver", {"0": "CT"}, labels, ["liver_0", "liver_7"], ["liver_3"])
    )


def write_msd_spleen(raw: Path) -> None:
    d = raw / "Task09_Spleen"
    for n, case in enumerate(("spleen_3", "spleen_19")):
        lab = abdomen({"spleen": 1})
        save(d / "imagesTr" / f"{case}.nii.gz", ct_image(lab, n))
        save(d / "labelsTr" / f"{case}.nii.gz", lab[..., None] if case == "spleen_19" else lab)  # (x,y,z,1)
        junk(d / "imagesTr" / f"._{case}.nii.gz")
    labels = {"0": "background", "1": "spleen"}
    (d / "dataset.json").write_text(msd_json("Spleen", {"0": "CT"}, labels, ["spleen_19", "spleen_3"], []))


BRAIN_CHANNELS = {"FLAIR": 100, "T1w": 400, "t1gd": 700, "T2w": 1000}


def write_msd_brain(raw: Path) -> None:
    d = raw / "Task01_BrainTumour"
    for n, case in enumerate(("BRATS_001", "BRATS_002")):
        lab = brain(edema=1, enhancing=3, core=2)
        image = np.stack([mr_image(lab, base, n) for base in BRAIN_CHANNELS.values()], axis=-1)
        save(d / "imagesTr" / f"{case}.nii.gz", image)  # (24, 20, 6, 4): channels last
        save(d / "labelsTr" / f"{case}.nii.gz", lab)
    modality = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    labels = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
    (d / "dataset.json").write_text(msd_json("BRATS", modality, labels, ["BRATS_001", "BRATS_002"], []))


def write_msd_prostate(raw: Path) -> nib.Nifti1Image:
    """nibabel's real 4D scan (128, 96, 24, 2) as prostate_04, with a label volume on its grid."""
    d = raw / "Task05_Prostate"
    img = nib.load(NIBABEL_DATA / "example4d.nii.gz")
    (d / "imagesTr").mkdir(parents=True)
    shutil.copy(NIBABEL_DATA / "example4d.nii.gz", d / "imagesTr" / "prostate_04.nii.gz")
    lab = np.zeros(img.shape[:3], np.uint8)
    lab[40:60, 30:50, 5:10] = 1
    lab[70:90, 30:50, 8:12] = 2
    (d / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(lab, img.affine), d / "labelsTr" / "prostate_04.nii.gz")
    labels = {"0": "background", "1": "PZ", "2": "TZ"}
    (d / "dataset.json").write_text(
        msd_json("Prostate", {"0": "T2", "1": "ADC"}, labels, ["prostate_04"], [])
    )
    return img


def write_btcv(raw: Path) -> None:
    d = raw / "RawData"
    for n in (1, 2):
        lab = abdomen(BTCV_VALUES)
        image = ct_image(lab, n)
        save(
            d / "Training" / "img" / f"img{n:04d}.nii.gz", image[..., None] if n == 2 else image
        )  # (x,y,z,1)
        save(d / "Training" / "label" / f"label{n:04d}.nii.gz", lab)
    save(d / "Training" / "label" / "label0005.nii.gz", abdomen(BTCV_VALUES))  # its image is missing
    save(d / "Testing" / "img" / "img0061.nii.gz", ct_image(abdomen(BTCV_VALUES), 61))
    junk(d / "Training" / "img" / "._img0001.nii.gz")


def write_amos(raw: Path) -> None:
    d = raw / "amos22"
    stored = {"amos_0001": ("imagesTr", "labelsTr", "LPS"), "amos_0508": ("imagesTr", "labelsTr", "PIR"),
              "amos_0008": ("imagesVa", "labelsVa", "RAS"), "amos_0002": ("imagesTs", None, "LPS")}  # fmt: skip
    for n, (case, (images, labels, axcodes)) in enumerate(stored.items()):
        lab = abdomen(AMOS_VALUES)
        image = ct_image(lab, n) if int(case[-4:]) <= 500 else mr_image(lab, 200, n)
        save(d / images / f"{case}.nii.gz", image, axcodes)
        if labels:
            save(d / labels / f"{case}.nii.gz", lab, axcodes)
    junk(raw / "__MACOSX" / "amos22" / "imagesTr" / "._amos_0001.nii.gz")
    index = {
        "name": "AMOS",
        "description": "MICCAI2022 Multi-Modality Abdominal Multi-Organ Segmentation Challenge",
        "tensorImageSize": "3D",
        "reference": "SRIBD, CUHK-SZ",
        "licence": "CC-BY 4.0",
        "release": "1.0 01/05/2022",
        "modality": {"0": "CT"},
        "labels": {str(i): name for i, name in enumerate(AMOS_LABELS)},
        "numTraining": 2,
        "numValidation": 1,
        "numTest": 1,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("amos_0001", "amos_0508")],
        "validation": [{"image": "./imagesVa/amos_0008.nii.gz", "label": "./labelsVa/amos_0008.nii.gz"}],
        "test": [{"image": "./imagesTs/amos_0002.nii.gz"}],
    }  # fmt: skip
    (d / "dataset.json").write_text(json.dumps(index, indent=4))


def kits_labels() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[KITS["kidney_r"]] = lab[KITS["kidney_l"]] = 1
    lab[KITS["tumor"]], lab[KITS["cyst"]] = 2, 3
    return lab


def write_kits(raw: Path) -> None:
    d = raw / "kits23" / "dataset"
    for n in (0, 1):
        case = d / f"case_{n:05d}"
        lab = kits_labels()
        save(case / "imaging.nii.gz", ct_image(lab, n), "IPL")  # slices first: (6, 20, 24)
        save(case / "segmentation.nii.gz", lab, "IPL")
        save(case / "instances" / "kidney_instance-1_annotation-1.nii.gz", (lab == 1).astype(np.uint8), "IPL")
    save(d / "case_00002" / "imaging.nii.gz", ct_image(kits_labels(), 2), "IPL")  # no segmentation
    (d / "kits23.json").write_text(
        json.dumps([{"case_id": f"case_{n:05d}", "gender": "male"} for n in range(3)])
    )
    (raw / "kits23" / "README.md").write_text("# KiTS23\n")


TS_SPLITS = {"s0000": "train", "s0001": "val", "s0002": "test", "s0003": "train", "s0004": "test"}


def write_totalsegmentator(raw: Path) -> None:
    d = raw / "Totalsegmentator_dataset_v201"
    header = "image_id;age;gender;institute;study_type;split;manufacturer;scanner_model;kvp;pathology;pathology_location"
    rows = [f"{c};63;m;A;ct abdomen-pelvis;{s};siemens;SOMATOM;120;;" for c, s in TS_SPLITS.items()]
    d.mkdir(parents=True)
    (d / "meta.csv").write_bytes(("\n".join([header, *rows]) + "\n").encode("utf-8-sig"))  # BOM, ';'
    # every case ships one file per structure of the spec (all 117 v2 classes), all-zero unless TS_PRESENT
    # draws it, as the real dataset does; 'face' is a v1 class (a v2 subtask) the spec does not read
    structures = [e.label for e in resolve_spec("totalsegmentator").labels]
    for n, case in enumerate(("s0000", "s0001", "s0002", "s0004")):  # s0003: in meta.csv, not on disk
        save(d / case / "ct.nii.gz", ct_image(_box_union(), n), "LAS")
        for name in [*structures, "face"]:
            if case == "s0004" and name == "prostate":
                continue  # a partial download
            mask = np.zeros(SHAPE, np.float32 if name == "liver" else np.uint8)  # liver stored as float
            if name in TS_PRESENT:
                mask[TS_PRESENT[name]] = 1
            save(d / case / "segmentations" / f"{name}.nii.gz", mask, "LAS")
        junk(d / case / "segmentations" / "._liver.nii.gz")


BRATS21_SEQS = {"t1": 300, "t1ce": 600, "t2": 900, "flair": 1200}
BRATS23_SEQS = {"t1c": 600, "t1n": 300, "t2f": 1200, "t2w": 900}


def write_brats2021(raw: Path) -> None:
    d = raw / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"
    for n, case in enumerate(("BraTS2021_00000", "BraTS2021_00002")):
        lab = brain(edema=2, enhancing=4, core=1)
        for seq, base in BRATS21_SEQS.items():
            save(d / case / f"{case}_{seq}.nii.gz", mr_image(lab, base, n))
        seg = d / case / (f"{case}_seg.nii" if n == 1 else f"{case}_seg.nii.gz")  # one .nii, as in BraTS 2020
        save(seg, lab)
        junk(d / case / f"._{case}_flair.nii.gz")


def write_brats2023(raw: Path) -> None:
    d = raw / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    d = d / d.name  # unzipped into a folder of the same name
    for n, case in enumerate(
        ("BraTS-GLI-00000-000", "BraTS-GLI-00000-001", "BraTS-GLI-00002-000", "BraTS-GLI-00005-000")
    ):
        lab = brain(edema=2, enhancing=3, core=1)
        if case.endswith("00005-000"):
            lab[lab == 3] = 4  # a 2021-style label: not a BraTS 2023 value
        for seq, base in BRATS23_SEQS.items():
            save(d / case / f"{case}-{seq}.nii.gz", mr_image(lab, base, n))
        save(d / case / f"{case}-seg.nii.gz", lab)


def acdc_labels(shift: int) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:9, 6:14, 1:5] = 1  # RV cavity
    lab[11:21, 4:16, 1:5] = 2  # myocardium ring around
    lab[13 : 19 - shift, 6:14, 1:5] = 3  # LV cavity (smaller at end-systole)
    return lab


def write_acdc(raw: Path) -> None:
    d = raw / "ACDC" / "database"
    for split, patient, es in (("training", 1, 12), ("training", 2, 9), ("testing", 101, 14)):
        folder = d / split / f"patient{patient:03d}"
        for frame, shift in ((1, 0), (es, 2)):
            lab = acdc_labels(shift)
            save(
                folder / f"patient{patient:03d}_frame{frame:02d}.nii.gz",
                mr_image(lab, 50, frame),
                zooms=(1.5, 1.5, 10),
            )
            save(folder / f"patient{patient:03d}_frame{frame:02d}_gt.nii.gz", lab, zooms=(1.5, 1.5, 10))
        cine = np.stack([mr_image(acdc_labels(0), 50, t) for t in range(3)], axis=-1)
        save(folder / f"patient{patient:03d}_4d.nii.gz", cine, zooms=(1.5, 1.5, 10))
        info = f"ED: 1\nES: {es}\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n"
        (folder / "Info.cfg").write_text(info)
        junk(folder / f"._patient{patient:03d}_frame01.nii.gz")


def write_flare(raw: Path) -> None:
    d = raw / "FLARE22Train"
    for n in (1, 2):
        lab = abdomen(FLARE_VALUES)
        save(d / "images" / f"FLARE22_Tr_{n:04d}_0000.nii.gz", ct_image(lab, n))
        save(d / "labels" / f"FLARE22_Tr_{n:04d}.nii.gz", lab)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("volraw")
    for write in (write_msd_liver, write_msd_spleen, write_msd_brain, write_msd_prostate, write_btcv,
                  write_amos, write_kits, write_totalsegmentator, write_brats2021, write_brats2023,
                  write_acdc, write_flare):  # fmt: skip
        write(root)
    return root


# --- helpers -----------------------------------------------------------------------------------------------


def rejected(spec: DatasetSpec, raw: Path, item: SourceItem) -> ReadError:
    with pytest.raises(ReadError) as e:
        axial_frames_of(spec, raw, item)
    return e.value


def with_options(name: str, **options) -> DatasetSpec:
    data = resolve_spec(name).model_dump(mode="json")
    data["format"]["options"].update(options)
    return parse_spec(data)


def components(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=np.ones((3, 3)))[1]


def regions_per_frame(frame: Frame) -> int:
    """Connected components per label (what the build turns into regions; all phantoms are ≥ 16 px)."""
    n = sum(components(m) for _, m in frame.masks)
    if frame.label_map is not None:
        n += sum(components(frame.label_map == v) for v in np.unique(frame.label_map) if v)
    return n


# --- specs -------------------------------------------------------------------------------------------------


def test_every_spec_is_complete_and_its_options_parse():
    roots = {}
    for name in SPECS:
        spec = resolve_spec(name)
        opts = parse_options(spec, VolumeLayout)
        roots[name] = spec.root
        assert (
            spec.format.family == "volumes"
            and spec.slicing.planes == planes_for(spec)
            and not spec.slicing.keep_empty
        )
        assert spec.citation and spec.licence and spec.homepage.startswith("http") and spec.unit_items > 0
        assert spec.access in ("open", "registration") and spec.modality in ("CT", "MR")
        assert (spec.intensity.kind == "ct_window") == (spec.modality == "CT")
        assert all(e.value not in (None, 0) and e.name[0].isupper() and e.category for e in spec.labels)
        assert opts.layout in ("msd", "pairs", "cases")
    assert roots == {
        "msd_liver": "Task03_Liver", "msd_spleen": "Task09_Spleen", "msd_brain_tumour": "Task01_BrainTumour",
        "msd_prostate": "Task05_Prostate", "btcv": "RawData", "amos22": "amos22", "kits23": "kits23",
        "totalsegmentator": "Totalsegmentator_dataset_v201",
        "brats2021": "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021",
        "brats2023": "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData", "acdc": "ACDC", "flare22": "FLARE22Train",
    }  # fmt: skip
    # the label maps that differ between datasets of the same anatomy
    by_value = {n: {e.value: e.label for e in resolve_spec(n).labels} for n in SPECS}
    assert by_value["msd_brain_tumour"] == {1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"}
    assert by_value["brats2021"] == {1: "NCR", 2: "ED", 4: "ET"}
    assert by_value["brats2023"] == {1: "NCR", 2: "ED", 3: "ET"}
    assert by_value["amos22"][8] == "arota" and by_value["amos22"][9] == "postcava"
    assert by_value["flare22"][1] == "liver" and by_value["btcv"][1] == "spleen"
    assert len(by_value["totalsegmentator"]) == 117 and by_value["totalsegmentator"][52] == "aorta"


# --- MSD ---------------------------------------------------------------------------------------------------


def test_msd_liver_reads_the_training_list_only_and_rounds_float_labels(raw):
    spec = resolve_spec("msd_liver")
    items = items_of(spec, raw)
    assert list(items) == ["liver_0", "liver_7"]  # not the test case, not the ._ files
    assert items["liver_0"].files == (
        SourceFile("image", "Task03_Liver/imagesTr/liver_0.nii.gz"),
        SourceFile("label", "Task03_Liver/labelsTr/liver_0.nii.gz"),
    )
    assert items["liver_0"].patient_id == "liver_0" and items["liver_0"].official_split is None
    frames = axial_frames_of(spec, raw, items["liver_0"])
    assert [f.slice_index for f in frames] == list(range(6))
    assert {(f.intensity, f.modality, f.shape, f.spacing_mm) for f in frames} == {
        ("hu", "CT", (20, 24), (1.0, 1.0))
    }
    assert frames[0].label_values == {1: "liver", 2: "cancer"}
    assert {k: sorted(np.unique(f.label_map).tolist()) for k, f in enumerate(frames)} == {
        0: [0],
        1: [0, 1],
        2: [0, 1, 2],
        3: [0, 1, 2],
        4: [0, 1],
        5: [0],
    }
    lab = abdomen({"liver": 1})
    lab[16:20, 9:13, 2:4] = 2
    assert all(np.array_equal(f.label_map, display(lab, f.slice_index)) for f in frames)
    assert np.nonzero(frames[2].label_map == 1)[1].max() < 12  # the liver: patient's right = image left
    frames7 = axial_frames_of(spec, raw, items["liver_7"])  # float32 labels
    assert nib.load(raw / "Task03_Liver/labelsTr/liver_7.nii.gz").get_data_dtype() == np.float32
    assert all(f.label_map.dtype == np.uint8 for f in frames7)
    assert all(np.array_equal(f.label_map, display(abdomen({"liver": 1}), f.slice_index)) for f in frames7)


def test_msd_spleen_label_stored_xyz1(raw):
    spec = resolve_spec("msd_spleen")
    items = items_of(spec, raw)
    assert list(items) == ["spleen_19", "spleen_3"]
    assert nib.load(raw / "Task09_Spleen/labelsTr/spleen_19.nii.gz").shape == (24, 20, 6, 1)
    for item in items.values():
        frames = axial_frames_of(spec, raw, item)
        assert [k for k, f in enumerate(frames) if f.label_map.any()] == [2, 3]
        assert (frames[2].label_map == 1).sum() == 36 and frames[2].label_values == {1: "spleen"}


def test_msd_brain_tumour_4d_channel_by_name(raw):
    spec = resolve_spec("msd_brain_tumour")
    items = items_of(spec, raw)
    assert list(items) == ["BRATS_001", "BRATS_002"] and items["BRATS_001"].meta_dict()["channel"] == 0
    lab = brain(edema=1, enhancing=3, core=2)
    for channel, base in (("FLAIR", 100), ("t1gd", 700), (3, 1000)):
        s = spec if channel == "FLAIR" else with_options("msd_brain_tumour", channel=channel)
        frames = axial_frames_of(s, raw, items_of(s, raw)["BRATS_002"])
        expected = mr_image(lab, base, 1)
        assert all(np.array_equal(f.image, display(expected, f.slice_index)) for f in frames), channel
        assert {(f.intensity, f.modality) for f in frames} == {("raw", "MR")}
    frames = axial_frames_of(spec, raw, items["BRATS_001"])
    assert frames[2].label_values == {1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"}
    assert {k: regions_per_frame(f) for k, f in enumerate(frames) if f.has_annotations} == BRAIN_REGIONS
    assert int((frames[2].label_map == 1).sum()) == 160 and int((frames[2].label_map == 2).sum()) == 16
    bad = with_options("msd_brain_tumour", channel="DWI")
    with pytest.raises(ReadError) as e:
        items_of(bad, raw)
    assert e.value.reason == "bad_option" and "FLAIR, T1w, t1gd, T2w" in e.value.detail


def test_msd_prostate_on_nibabels_real_4d_scan(raw):
    spec = resolve_spec("msd_prostate")
    img = nib.load(NIBABEL_DATA / "example4d.nii.gz")
    assert img.shape == (128, 96, 24, 2)
    (item,) = items_of(spec, raw).values()
    assert item.case_id == "prostate_04" and item.meta_dict()["channel"] == 0
    canonical = np.asanyarray(nib.as_closest_canonical(img).dataobj)
    lab_img = nib.load(raw / "Task05_Prostate/labelsTr/prostate_04.nii.gz")
    lab = np.asanyarray(nib.as_closest_canonical(lab_img).dataobj)
    for channel in (None, "ADC"):
        s = spec if channel is None else with_options("msd_prostate", channel=channel)
        frames = axial_frames_of(s, raw, items_of(s, raw)["prostate_04"])
        c = 0 if channel is None else 1
        assert len(frames) == canonical.shape[2]
        assert all(np.array_equal(f.image, display(canonical[..., c], f.slice_index)) for f in frames)
    assert all(np.array_equal(f.label_map, display(lab, f.slice_index)) for f in frames)
    assert {f.slice_index for f in frames if (f.label_map == 2).any()} == {
        k for k in range(lab.shape[2]) if (lab[:, :, k] == 2).any()
    } and frames[0].label_values == {1: "PZ", 2: "TZ"}
    assert not np.array_equal(canonical[..., 0], canonical[..., 1])


# --- abdominal multi-organ ---------------------------------------------------------------------------------


def test_btcv_pairs_by_number_laterality_and_orphan_label(raw):
    spec = resolve_spec("btcv")
    items = items_of(spec, raw)
    assert list(items) == ["0001", "0002", "0005"]  # Testing/ has no labels; 0005 has a label only
    assert items["0001"].files == (
        SourceFile("image", "RawData/Training/img/img0001.nii.gz"),
        SourceFile("label", "RawData/Training/label/label0001.nii.gz"),
    )
    assert items["0002"].patient_id == "0002"
    e = rejected(spec, raw, items["0005"])
    assert e.reason == "missing_file" and "label0005" in e.detail
    frames = axial_frames_of(spec, raw, items["0002"])  # image stored (24, 20, 6, 1)
    lab = abdomen(BTCV_VALUES)
    assert all(np.array_equal(f.image, display(ct_image(lab, 2), f.slice_index)) for f in frames)
    assert {k: regions_per_frame(f) for k, f in enumerate(frames)} == ABDOMEN_REGIONS
    right, left = frames[0].label_map == 2, frames[0].label_map == 3
    assert np.nonzero(right)[1].max() < 12 <= np.nonzero(left)[1].min()  # radiological: right on the left
    assert np.nonzero(right)[0].min() >= 15  # posterior at the bottom
    assert frames[0].label_values[2] == "right kidney" and frames[0].label_values[13] == "left adrenal gland"


def test_amos22_lists_per_case_modality_and_any_orientation(raw, tmp_path):
    spec = resolve_spec("amos22")
    items = items_of(spec, raw)
    assert list(items) == ["amos_0001", "amos_0008", "amos_0508"]  # amos_0002 (test) has no labelsTs here
    facts = {c: (i.official_split, i.meta_dict()["modality"], i.patient_id) for c, i in items.items()}
    assert facts == {
        "amos_0001": ("train", "CT", "amos_0001"),
        "amos_0008": ("val", "CT", "amos_0008"),
        "amos_0508": ("train", "MR", "amos_0508"),
    }
    assert items["amos_0008"].files[0] == SourceFile("image", "amos22/imagesVa/amos_0008.nii.gz")
    lab = abdomen(AMOS_VALUES)
    assert nib.aff2axcodes(nib.load(raw / "amos22/imagesTr/amos_0508.nii.gz").affine) == ("P", "I", "R")
    assert nib.load(raw / "amos22/imagesTr/amos_0508.nii.gz").shape == (20, 6, 24)
    for case, n, intensity, modality in (("amos_0001", 0, "hu", "CT"), ("amos_0508", 1, "raw", "MR")):
        frames = axial_frames_of(spec, raw, items[case])
        image = ct_image(lab, n) if modality == "CT" else mr_image(lab, 200, n)
        assert len(frames) == 6 and {(f.intensity, f.modality) for f in frames} == {(intensity, modality)}
        assert all(np.array_equal(f.image, display(image, f.slice_index)) for f in frames), case
        assert all(np.array_equal(f.label_map, display(lab, f.slice_index)) for f in frames), case
        assert frames[0].label_values[8] == "arota"
    # a release with test labels: the test list is read, as the official test split
    root = tmp_path / "raw"
    shutil.copytree(raw / "amos22", root / "amos22")
    save(root / "amos22/labelsTs/amos_0002.nii.gz", lab, "LPS")
    test_item = items_of(spec, root)["amos_0002"]
    assert (
        test_item.official_split == "test" and test_item.files[1].path == "amos22/labelsTs/amos_0002.nii.gz"
    )
    assert assign_split(spec.split, spec.name, "amos_0001", "train") == "train"  # nothing carved out of train


def test_flare22_strips_the_channel_suffix(raw):
    spec = resolve_spec("flare22")
    items = items_of(spec, raw)
    assert list(items) == ["FLARE22_Tr_0001", "FLARE22_Tr_0002"]
    assert items["FLARE22_Tr_0001"].files[1] == SourceFile(
        "label", "FLARE22Train/labels/FLARE22_Tr_0001.nii.gz"
    )
    frames = axial_frames_of(spec, raw, items["FLARE22_Tr_0002"])
    assert np.array_equal(frames[1].label_map, display(abdomen(FLARE_VALUES), 1))
    assert frames[1].label_values[1] == "liver" and frames[1].label_values[13] == "left kidney"
    assert {k: regions_per_frame(f) for k, f in enumerate(frames)} == ABDOMEN_REGIONS


def test_kits23_slices_first_volumes_are_reoriented(raw):
    spec = resolve_spec("kits23")
    items = items_of(spec, raw)
    assert list(items) == ["case_00000", "case_00001", "case_00002"]
    assert items["case_00001"].files == (
        SourceFile("image", "kits23/dataset/case_00001/imaging.nii.gz"),
        SourceFile("label", "kits23/dataset/case_00001/segmentation.nii.gz"),
    )
    stored = nib.load(raw / "kits23/dataset/case_00000/imaging.nii.gz")
    assert stored.shape == (6, 20, 24) and nib.aff2axcodes(stored.affine) == ("I", "P", "L")
    frames = axial_frames_of(spec, raw, items["case_00000"])
    lab = kits_labels()
    assert len(frames) == 6 and frames[0].shape == (20, 24) and frames[0].spacing_mm == (1.0, 1.0)
    assert all(np.array_equal(f.image, display(ct_image(lab, 0), f.slice_index)) for f in frames)
    assert all(np.array_equal(f.label_map, display(lab, f.slice_index)) for f in frames)
    assert components(frames[2].label_map == 1) == 2  # both kidneys
    assert sorted(np.unique(frames[3].label_map).tolist()) == [0, 1, 2, 3]
    assert frames[3].label_values == {1: "kidney", 2: "tumor", 3: "cyst"}
    assert {k: regions_per_frame(f) for k, f in enumerate(frames) if f.has_annotations} == {
        1: 2,
        2: 3,
        3: 4,
        4: 2,
    }
    e = rejected(spec, raw, items["case_00002"])
    assert (e.reason, e.detail) == ("missing_file", "kits23/dataset/case_00002/segmentation.nii.gz")


def test_totalsegmentator_per_structure_masks_meta_csv_split(raw):
    spec = resolve_spec("totalsegmentator")
    assert (raw / spec.root / "meta.csv").read_bytes().startswith(b"\xef\xbb\xbfimage_id;age;")
    items = items_of(spec, raw)
    assert {c: i.official_split for c, i in items.items()} == TS_SPLITS
    item = items["s0000"]
    assert item.files[0] == SourceFile("image", "Totalsegmentator_dataset_v201/s0000/ct.nii.gz")
    assert item.files[1] == SourceFile(
        "mask", "Totalsegmentator_dataset_v201/s0000/segmentations/spleen.nii.gz"
    )
    assert len(item.files) == 118 and item.patient_id == "s0000"  # ct + the 117 structures, not face
    e = rejected(spec, raw, items["s0003"])  # a meta.csv row the folder lacks
    assert e.reason == "missing_file" and "meta.csv" in e.detail
    # one mask file missing (a partial download): the case is built with its other 116 masks, and the absent
    # file is one plan-stage row naming it (missing_masks: skip, the default); once the whole case was lost
    item = items["s0004"]
    assert len(item.files) == 117 and "prostate" not in item.meta_dict()["structures"]
    assert {k: regions_per_frame(f) for k, f in enumerate(axial_frames_of(spec, raw, item))} == TS_REGIONS
    assert discovery_notes(spec, raw) == [
        DiscoveryNote(
            "missing_file",
            "case 's0004': Totalsegmentator_dataset_v201/s0004/segmentations/prostate.nii.gz is absent; the "
            "case is built with its other 116 masks (format.options.missing_masks: reject refuses it)",
            "Totalsegmentator_dataset_v201/s0004/segmentations/prostate.nii.gz",
        )
    ]
    strict = with_options("totalsegmentator", missing_masks="reject")
    e = rejected(strict, raw, items_of(strict, raw)["s0004"])
    assert (e.reason, e.detail) == (
        "missing_file",
        "Totalsegmentator_dataset_v201/s0004/segmentations/prostate.nii.gz",
    )
    assert discovery_notes(strict, raw) == []
    frames = axial_frames_of(spec, raw, items["s0001"])
    assert len(frames) == 6 and all(f.label_map is None for f in frames)
    names = {k: sorted(n for n, _ in f.masks) for k, f in enumerate(frames)}
    assert names[1] == ["aorta", "kidney_cyst_left", "kidney_left", "liver"]  # absent structures: no mask
    assert names[5] == ["aorta"]
    masks = dict(frames[1].masks)
    assert masks["kidney_left"].sum() == 25 and masks["kidney_cyst_left"].sum() == 16
    assert (masks["kidney_left"] & masks["kidney_cyst_left"]).sum() == 16  # overlap kept on both
    assert np.array_equal(masks["liver"], display(_box(TS_PRESENT["liver"]), 1))  # float mask, binarised
    assert {k: regions_per_frame(f) for k, f in enumerate(frames)} == TS_REGIONS
    assert frames[2].image.dtype == np.int16 and frames[2].intensity == "hu"
    assert all(np.array_equal(f.image, display(ct_image(_box_union(), 1), f.slice_index)) for f in frames)
    # missing_masks: empty counts the missing structure as absent, without a row
    lenient = with_options("totalsegmentator", missing_masks="empty")
    item = items_of(lenient, raw)["s0004"]
    assert len(item.files) == 117 and "prostate" not in item.meta_dict()["structures"]
    assert {k: regions_per_frame(f) for k, f in enumerate(axial_frames_of(lenient, raw, item))} == TS_REGIONS
    assert discovery_notes(lenient, raw) == []


def _box_union() -> np.ndarray:
    present = np.zeros(SHAPE, np.uint8)
    for box in TS_PRESENT.values():
        present[box] = 1
    return present


def _box(box: Box) -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[box] = True
    return m


# --- brain -------------------------------------------------------------------------------------------------


def test_brats2021_sequence_option_and_nii_variant(raw):
    spec = resolve_spec("brats2021")
    items = items_of(spec, raw)
    assert list(items) == ["BraTS2021_00000", "BraTS2021_00002"]
    root = "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"
    assert items["BraTS2021_00002"].files == (
        SourceFile("image", f"{root}/BraTS2021_00002/BraTS2021_00002_flair.nii.gz"),
        SourceFile("label", f"{root}/BraTS2021_00002/BraTS2021_00002_seg.nii"),
    )
    lab = brain(edema=2, enhancing=4, core=1)
    for sequence in ("flair", "t1ce"):
        s = spec if sequence == "flair" else with_options("brats2021", sequence=sequence)
        frames = axial_frames_of(s, raw, items_of(s, raw)["BraTS2021_00002"])
        expected = mr_image(lab, BRATS21_SEQS[sequence], 1)
        assert all(np.array_equal(f.image, display(expected, f.slice_index)) for f in frames), sequence
    assert frames[2].label_values == {1: "NCR", 2: "ED", 4: "ET"}
    assert sorted(np.unique(frames[2].label_map).tolist()) == [0, 1, 2, 4]
    assert {k: regions_per_frame(f) for k, f in enumerate(frames) if f.has_annotations} == BRAIN_REGIONS


def test_isotropic_specs_slice_all_three_planes_at_the_volumes_own_positions(raw):
    """brats2021 (240x240x155 at 1 mm) slices axial, coronal and sagittal: every plane's frames are the label
    volume's sections at their RAS indices (the empty ones unannotated, for the build to drop), and each
    plane holds every labelled voxel."""
    spec = resolve_spec("brats2021")
    assert spec.slicing.planes == ("ax", "co", "sa") and spec.stats.matrix == 240
    frames = frames_of(spec, raw, items_of(spec, raw)["BraTS2021_00002"])
    lab = brain(edema=2, enhancing=4, core=1)  # canonical RAS, as written
    image = mr_image(lab, BRATS21_SEQS["flair"], 1)  # its noise tells every section (and a flipped one) apart
    for plane, axis in (("ax", 2), ("co", 1), ("sa", 0)):
        got = [f for f in frames if f.plane == plane]
        kept = [i for i in range(lab.shape[axis]) if np.take(lab, i, axis).any()]
        assert [f.slice_index for f in got] == list(range(lab.shape[axis])), plane
        assert [f.slice_index for f in got if f.has_annotations] == kept, plane
        assert all(np.array_equal(f.image, np.take(image, f.slice_index, axis).T[::-1, ::-1]) for f in got)
        got = [f for f in got if f.has_annotations]
        for value in (1, 2, 4):
            per_slice = {f.slice_index: int((f.label_map == value).sum()) for f in got}
            assert per_slice == {i: int((np.take(lab, i, axis) == value).sum()) for i in kept}, (plane, value)
    assert sum(f.has_annotations for f in frames) == 4 + 14 + 16  # k 1-4, j 3-16, i 4-19: the edema box


def test_brats2023_patient_and_timepoint_ids_and_foreign_label_value(raw):
    spec = resolve_spec("brats2023")
    items = items_of(spec, raw)
    ids = {c: (i.patient_id, i.study_id) for c, i in items.items()}
    assert ids == {
        "BraTS-GLI-00000-000": ("00000", "000"),
        "BraTS-GLI-00000-001": ("00000", "001"),
        "BraTS-GLI-00002-000": ("00002", "000"),
        "BraTS-GLI-00005-000": ("00005", "000"),
    }
    root = "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    assert items["BraTS-GLI-00000-001"].files[0].path == (
        f"{root}/{root}/BraTS-GLI-00000-001/BraTS-GLI-00000-001-t2f.nii.gz"
    )
    splits = {c: assign_split(spec.split, spec.name, i.patient_id) for c, i in items.items()}
    assert splits["BraTS-GLI-00000-000"] == splits["BraTS-GLI-00000-001"]  # timepoints stay together
    frames = axial_frames_of(spec, raw, items["BraTS-GLI-00000-001"])
    lab = brain(edema=2, enhancing=3, core=1)
    assert all(np.array_equal(f.image, display(mr_image(lab, 1200, 1), f.slice_index)) for f in frames)
    assert frames[2].label_values == {1: "NCR", 2: "ED", 3: "ET"}
    e = rejected(spec, raw, items["BraTS-GLI-00005-000"])
    assert e.reason == "bad_label_value" and "[4]" in e.detail


# --- heart -------------------------------------------------------------------------------------------------


def test_acdc_labelled_frames_info_and_folder_split(raw):
    spec = resolve_spec("acdc")
    items = items_of(spec, raw)
    assert list(items) == [
        "patient001_frame01",
        "patient001_frame12",
        "patient002_frame01",
        "patient002_frame09",
        "patient101_frame01",
        "patient101_frame14",
    ]  # fmt: skip  (no _4d, no _gt, no ._ file)
    item = items["patient001_frame12"]
    assert item.files == (
        SourceFile("image", "ACDC/database/training/patient001/patient001_frame12.nii.gz"),
        SourceFile("label", "ACDC/database/training/patient001/patient001_frame12_gt.nii.gz"),
    )
    assert (item.patient_id, item.study_id, item.official_split) == ("patient001", "patient001", "train")
    assert dict(item.meta_dict()["info"])["ES"] == "12" and dict(item.meta_dict()["info"])["Group"] == "DCM"
    assert items["patient101_frame14"].official_split == "test"
    frames = axial_frames_of(spec, raw, item)
    assert len(frames) == 6 and frames[1].spacing_mm == (1.5, 1.5) and frames[1].modality == "MR"
    assert all(np.array_equal(f.label_map, display(acdc_labels(2), f.slice_index)) for f in frames)
    assert frames[1].label_values == {1: "RV cavity", 2: "myocardium", 3: "LV cavity"}
    assert {k: regions_per_frame(f) for k, f in enumerate(frames) if f.has_annotations} == {
        1: 3,
        2: 3,
        3: 3,
        4: 3,
    }


# --- bad input ---------------------------------------------------------------------------------------------


def test_shape_mismatch_of_label_or_mask(raw, tmp_path):
    root = tmp_path / "raw"
    shutil.copytree(raw / "RawData", root / "RawData")
    save(root / "RawData/Training/label/label0001.nii.gz", np.zeros((24, 20, 5), np.uint8))
    spec = resolve_spec("btcv")
    items = items_of(spec, root)
    assert rejected(spec, root, items["0001"]).reason == "shape_mismatch"
    assert len(axial_frames_of(spec, root, items["0002"])) == 6  # the other case is unaffected

    ts = resolve_spec("totalsegmentator")
    shutil.copytree(raw / ts.root, root / ts.root)
    save(root / ts.root / "s0000/segmentations/aorta.nii.gz", np.zeros((24, 20, 7), np.uint8), "LAS")
    e = rejected(ts, root, items_of(ts, root)["s0000"])
    assert e.reason == "shape_mismatch" and "aorta" in e.detail


def test_label_value_outside_the_spec(raw, tmp_path):
    root = tmp_path / "raw"
    shutil.copytree(raw / "Task09_Spleen", root / "Task09_Spleen")
    lab = abdomen({"spleen": 1})
    lab[0, 0, 0] = 7
    save(root / "Task09_Spleen/labelsTr/spleen_3.nii.gz", lab)
    spec = resolve_spec("msd_spleen")
    e = rejected(spec, root, items_of(spec, root)["spleen_3"])
    assert e.reason == "bad_label_value" and "[7]" in e.detail


def test_options_are_checked(raw):
    # option errors: when the spec loads, in one line naming the field
    with pytest.raises(SpecError, match=r"field 'format.options'.*\{sequence\}"):
        with_options("brats2021", sequence=None)
    with pytest.raises(SpecError, match=r"field 'format.options'.*exactly one of 'labels' and 'masks'"):
        with_options("kits23", masks="{dir}/{label}.nii.gz")
    with pytest.raises(SpecError, match=r"field 'format.options.case_regex': .*invalid regex") as e:
        with_options("brats2021", case_regex="(?P<case>BraTS[")  # re.error: once a bare traceback
    assert "\n" not in str(e.value)
    # options against the rest of the spec (intensity): when the dataset is discovered
    data = resolve_spec("amos22").model_dump(mode="json")
    data["intensity"] = {"kind": "percentile"}
    with pytest.raises(ReadError) as e:
        items_of(parse_spec(data), raw)
    assert e.value.reason == "bad_option" and "ct_window" in e.value.detail


# --- end to end --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_build_amos_totalsegmentator_brats2023(raw, tmp_path, ray_session):
    # axial only: the split and region counts below are the fixture's per axial slice
    specs = [axial_only(s) for s in resolve_specs(["amos22", "totalsegmentator", "brats2023"])]
    result = build_corpus(specs, raw, tmp_path / "corpus", max_side=256)
    datasets = {d["name"]: d for d in result.build["datasets"]}
    assert datasets["amos22"]["samples_by_split"] == {"train": 12, "val": 6}
    assert (datasets["amos22"]["samples"], datasets["amos22"]["regions"], datasets["amos22"]["rejects"]) == (
        18,
        48,
        0,
    )
    # s0004 lacks one mask file: built with its other masks (its 6 samples in test), the file one plan row
    assert datasets["totalsegmentator"]["samples_by_split"] == {"test": 12, "train": 6, "val": 6}
    assert (datasets["totalsegmentator"]["regions"], datasets["totalsegmentator"]["rejects"]) == (64, 2)
    assert (
        datasets["brats2023"]["samples"],
        datasets["brats2023"]["regions"],
        datasets["brats2023"]["rejects"],
    ) == (12, 24, 1)

    out = result.out
    samples = pq.read_table(out / "manifests" / "samples" / "amos22").to_pylist()
    by_case = {}
    for s in samples:
        by_case.setdefault(s["key"].split("_ax")[0], set()).add((s["modality"], s["intensity"]))
    assert by_case == {
        "amos22_amos_0001": {("CT", "ct:abdomen")},
        "amos22_amos_0008": {("CT", "ct:abdomen")},
        "amos22_amos_0508": {("MR", "percentile:0.5-99.5")},
    }
    mr = [s for s in samples if s["modality"] == "MR"]
    assert mr and all("MRI" in s["caption"] and "CT" not in s["caption"] for s in mr)
    regions = pq.read_table(out / "manifests" / "regions" / "totalsegmentator").to_pylist()
    labels = {r["label"] for r in regions}
    assert labels == {"liver", "spleen", "kidney_left", "kidney_cyst_left", "aorta"}
    assert {r["name"] for r in regions if r["label"] == "kidney_cyst_left"} == {"Left kidney cyst"}
    rejects = pq.read_table(out / "manifests" / "rejects" / "totalsegmentator").to_pylist()
    assert sorted((r["stage"], r["reason"], r["path"]) for r in rejects) == [
        ("plan", "missing_file", "Totalsegmentator_dataset_v201/s0004/segmentations/prostate.nii.gz"),
        ("read", "missing_file", "Totalsegmentator_dataset_v201/meta.csv"),
    ]
    brats_rejects = pq.read_table(out / "manifests" / "rejects" / "brats2023").to_pylist()
    assert [(r["reason"], r["path"].rsplit("/", 1)[-1]) for r in brats_rejects] == [
        ("bad_label_value", "BraTS-GLI-00005-000-t2f.nii.gz")
    ]


def test_label_values_scan_spans_chunks_in_storage_order():
    # More voxels than one counting chunk, Fortran-ordered like nibabel's arrays, values placed at both ends
    # of memory: every present value is found, absent ones are not.
    data = np.zeros((128, 128, 80), np.uint8, order="F")
    data[0, 0, 0], data[-1, -1, -1], data[5, 7, 40] = 3, 200, 9
    assert data.size > 1 << 20
    assert _present_values(data) == [0, 3, 9, 200]
    assert _present_values(data.astype(np.int32, order="F")) == [0, 3, 9, 200]
    assert _present_values(np.array([[-1, 0], [70000, 2]])) == [-1, 0, 2, 70000]


# --- the TotalSegmentator class map ------------------------------------------------------------------------


def test_totalsegmentator_labels_are_the_packages_class_map():
    wheel, total = totalsegmentator_class_map("total")
    spec = resolve_spec("totalsegmentator")
    assert {e.value: e.label for e in spec.labels} == total, wheel
    assert len(total) == 117 and len(spec.labels) == 117
    assert spec.stats is not None and spec.stats.structures == len(spec.labels)
