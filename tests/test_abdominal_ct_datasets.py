"""More public CT segmentation datasets as published (issue 15, step 3): LiTS, KiTS19, AbdomenCT-1K, CT-ORG and
SegTHOR, each read by its shipped spec from a tiny copy that this file writes in the publisher's layout
(folders, file names, label encoding, files a download holds that are not cases).

Every phantom is defined on the canonical RAS+ grid (16 × 12 × 4: i → patient's right, j → anterior,
k → superior) and stored in the orientation named per dataset; a reader is right when its axial frame k equals
``canonical[:, :, k].T[::-1, ::-1]`` (patient's right on the image's left, anterior at the top). No mocks, no
Ray: discovery and reading only (tests/corpus_utils.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from layouts import junk, save_nifti
from scipy import ndimage

from medpclip.census import census
from medpclip.frame import Frame, ReadError, SourceFile
from medpclip.specs import resolve_spec

SHAPE = (16, 12, 4)
Box = tuple[slice, slice, slice]


save = functools.partial(save_nifti, zooms=(0.75, 0.75, 2.5))


def box(i: tuple[int, int], j: tuple[int, int], k: tuple[int, int]) -> Box:
    return (slice(*i), slice(*j), slice(*k))


def phantom(parts: list[tuple[int, Box]], dtype=np.uint8) -> np.ndarray:
    """A label volume: each (value, box) written in order (later boxes overwrite earlier ones)."""
    lab = np.zeros(SHAPE, dtype)
    for value, b in parts:
        lab[b] = value
    return lab


def ct_image(labels: np.ndarray, seed: int, dtype=np.int16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (-60 + 20 * labels.astype(np.int16) + rng.integers(-5, 6, SHAPE)).astype(dtype)


def display(volume: np.ndarray, k: int) -> np.ndarray:
    return volume[:, :, k].T[::-1, ::-1]


# --- the phantoms (known truth: names and connected components per axial slice k) --------------------------

# LiTS: liver (k 0-2, patient's right) with one tumour inside it on k 1.
LITS = phantom([(1, box((9, 15), (3, 9), (0, 3))), (2, box((10, 13), (4, 7), (1, 2)))])
LITS_NAMES = {0: {"liver"}, 1: {"liver", "tumor"}, 2: {"liver"}}
LITS_REGIONS = {0: 1, 1: 2, 2: 1}

# KiTS19: both kidneys (one label, two components), a tumour inside the right one on k 1-2.
KITS = phantom(
    [(1, box((9, 14), (2, 8), (0, 4))), (1, box((1, 6), (2, 8), (0, 3))), (2, box((10, 13), (3, 6), (1, 3)))]
)
KITS_NAMES = {0: {"kidney"}, 1: {"kidney", "tumor"}, 2: {"kidney", "tumor"}, 3: {"kidney"}}
KITS_REGIONS = {0: 2, 1: 3, 2: 3, 3: 1}

# AbdomenCT-1K: 1 liver, 2 kidney (both sides, one label), 3 spleen, 4 pancreas.
ABDOMEN1K = phantom(
    [
        (1, box((9, 15), (6, 12), (1, 4))),
        (3, box((1, 5), (7, 11), (2, 4))),
        (2, box((10, 14), (0, 4), (0, 2))),
        (2, box((2, 6), (0, 4), (0, 2))),
        (4, box((6, 9), (4, 7), (1, 3))),
    ]
)
ABDOMEN1K_NAMES = {0: {"kidney"}, 1: {"liver", "kidney", "pancreas"}, 2: {"liver", "spleen", "pancreas"},
                   3: {"liver", "spleen"}}  # fmt: skip
ABDOMEN1K_REGIONS = {0: 2, 1: 4, 2: 3, 3: 2}

# CT-ORG: 1 liver, 2 bladder, 3 lungs (two components on k 3), 4 kidneys (two), 5 bone (the spine, every k).
CTORG = phantom(
    [
        (5, box((6, 10), (0, 3), (0, 4))),
        (4, box((11, 15), (0, 4), (0, 2))),
        (4, box((1, 5), (0, 4), (0, 2))),
        (2, box((5, 10), (5, 9), (0, 1))),
        (1, box((9, 15), (6, 12), (1, 3))),
        (3, box((1, 7), (5, 11), (2, 4))),
        (3, box((10, 15), (6, 12), (3, 4))),
    ]
)
CTORG_NAMES = {0: {"bone", "kidneys", "bladder"}, 1: {"bone", "kidneys", "liver"}, 2: {"bone", "liver", "lungs"},
               3: {"bone", "lungs"}}  # fmt: skip
CTORG_REGIONS = {0: 4, 1: 4, 2: 3, 3: 3}

# SegTHOR: 1 oesophagus (every k), 2 heart (k 0-1), 3 trachea (k 2-3), 4 aorta: the descending aorta on every
# k, the ascending one as a second component on k 2-3.
SEGTHOR = phantom(
    [
        (1, box((7, 9), (2, 4), (0, 4))),
        (2, box((3, 11), (6, 12), (0, 2))),
        (3, box((6, 10), (6, 9), (2, 4))),
        (4, box((10, 13), (1, 4), (0, 4))),
        (4, box((10, 13), (7, 10), (2, 4))),
    ]
)
SEGTHOR_NAMES = {0: {"esophagus", "heart", "aorta"}, 1: {"esophagus", "heart", "aorta"},
                 2: {"esophagus", "trachea", "aorta"}, 3: {"esophagus", "trachea", "aorta"}}  # fmt: skip
SEGTHOR_REGIONS = {0: 3, 1: 3, 2: 4, 3: 4}


# --- the datasets, in their publishers' layouts ------------------------------------------------------------


def write_lits(raw: Path) -> None:
    """Two training batches of uncompressed .nii pairs (batch 2 stored LPS with float labels), the test batch
    (not read), and a segmentation whose volume is missing."""
    d = raw / "LiTS"
    save(d / "Training Batch 1" / "volume-0.nii", ct_image(LITS, 0))
    save(d / "Training Batch 1" / "segmentation-0.nii", LITS)
    save(d / "Training Batch 2" / "volume-28.nii", ct_image(LITS, 28), "LPS")
    save(d / "Training Batch 2" / "segmentation-28.nii", LITS.astype(np.float32), "LPS")
    save(d / "Training Batch 2" / "segmentation-29.nii", LITS)  # its volume-29.nii is missing
    save(d / "Test Batch" / "test-volume-0.nii", ct_image(LITS, 100))
    junk(d / "Training Batch 1" / "._volume-0.nii")


def write_kits19(raw: Path) -> None:
    """The cloned repository: labelled cases stored slices-first (IPL, as the README's affine), an older
    clone's test case with imaging only, kits.json and the repository's own files."""
    d = raw / "kits19"
    for n in (0, 1):
        case = d / "data" / f"case_{n:05d}"
        save(case / "imaging.nii.gz", ct_image(KITS, n), "IPL")
        save(case / "segmentation.nii.gz", KITS, "IPL")
    save(d / "data" / "case_00210" / "imaging.nii.gz", ct_image(KITS, 210), "IPL")  # test: no labels
    (d / "data" / "kits.json").write_text(json.dumps([{"case_id": "case_00000", "gender": "male"}]))
    (d / "starter_code").mkdir(parents=True)
    (d / "starter_code" / "get_imaging.py").write_text("# downloads imaging.nii.gz\n")
    (d / "README.md").write_text("# KiTS19\n")


def write_abdomenct_1k(raw: Path) -> None:
    """Three image parts (nnU-Net _0000 suffix), Mask/ with one label per case; the third part's case has no
    mask (about 62 images of the release have none)."""
    d = raw / "AbdomenCT-1K"
    for part, n in ((1, 1), (2, 401)):
        save(d / f"AbdomenCT-1K-ImagePart{part}" / f"Case_{n:05d}_0000.nii.gz", ct_image(ABDOMEN1K, n))
        save(d / "Mask" / f"Case_{n:05d}.nii.gz", ABDOMEN1K)
    save(d / "AbdomenCT-1K-ImagePart3" / "Case_01001_0000.nii.gz", ct_image(ABDOMEN1K, 1001))  # no mask
    junk(d / "Mask" / "._Case_00001.nii.gz")
    junk(d / "__MACOSX" / "AbdomenCT-1K-ImagePart1" / "._Case_00001_0000.nii.gz")


def write_ct_org(raw: Path) -> None:
    """OrganSegmentations/ as TCIA ships it: 32-bit float volumes and labels (case 1 stored LPS), and a labels
    file whose volume is missing."""
    d = raw / "OrganSegmentations"
    save(d / "volume-0.nii.gz", ct_image(CTORG, 0, np.float32))
    save(d / "labels-0.nii.gz", CTORG.astype(np.float32))
    save(d / "volume-1.nii.gz", ct_image(CTORG, 1, np.float32), "LPS")
    save(d / "labels-1.nii.gz", CTORG.astype(np.float32), "LPS")
    save(d / "labels-5.nii.gz", CTORG.astype(np.float32))  # volume-5.nii.gz is missing


def write_segthor(raw: Path) -> None:
    """train/Patient_NN/ with the CT named after the folder and GT.nii.gz (stored LPS here); a patient whose
    GT is missing; the test folder of unlabelled scans (not read)."""
    d = raw / "SegTHOR"
    for n in (1, 2):
        p = f"Patient_{n:02d}"
        save(d / "train" / p / f"{p}.nii.gz", ct_image(SEGTHOR, n), "LPS")
        save(d / "train" / p / "GT.nii.gz", SEGTHOR, "LPS")
    save(d / "train" / "Patient_03" / "Patient_03.nii.gz", ct_image(SEGTHOR, 3), "LPS")  # no GT.nii.gz
    save(d / "test" / "Patient_41.nii.gz", ct_image(SEGTHOR, 41), "LPS")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("abdraw")
    for write in (write_lits, write_kits19, write_abdomenct_1k, write_ct_org, write_segthor):
        write(root)
    return root


# --- helpers -----------------------------------------------------------------------------------------------


def names_of(frame: Frame) -> set[str]:
    return {frame.label_values[int(v)] for v in np.unique(frame.label_map) if v}


def regions_of(frame: Frame) -> int:
    """Connected components per label value (8-connected, what the build turns into regions)."""
    lab = frame.label_map
    return sum(ndimage.label(lab == v, structure=np.ones((3, 3)))[1] for v in np.unique(lab) if v)


# Per spec: its phantom, the cases read (with their files), the cases discovery rejects, names and regions.
CASES: dict[str, dict] = {
    "lits": dict(
        truth=LITS, names=LITS_NAMES, regions=LITS_REGIONS,
        read={"0": ("Training Batch 1/volume-0.nii", "Training Batch 1/segmentation-0.nii"),
              "28": ("Training Batch 2/volume-28.nii", "Training Batch 2/segmentation-28.nii")},
        rejected={"29": "missing_file"},
    ),
    "kits19": dict(
        truth=KITS, names=KITS_NAMES, regions=KITS_REGIONS,
        read={f"case_{n:05d}": (f"data/case_{n:05d}/imaging.nii.gz", f"data/case_{n:05d}/segmentation.nii.gz")
              for n in (0, 1)},
        rejected={},
    ),
    "abdomenct_1k": dict(
        truth=ABDOMEN1K, names=ABDOMEN1K_NAMES, regions=ABDOMEN1K_REGIONS,
        read={"Case_00001": ("AbdomenCT-1K-ImagePart1/Case_00001_0000.nii.gz", "Mask/Case_00001.nii.gz"),
              "Case_00401": ("AbdomenCT-1K-ImagePart2/Case_00401_0000.nii.gz", "Mask/Case_00401.nii.gz")},
        rejected={"Case_01001": "missing_file"},
    ),
    "ct_org": dict(
        truth=CTORG, names=CTORG_NAMES, regions=CTORG_REGIONS,
        read={"0": ("volume-0.nii.gz", "labels-0.nii.gz"), "1": ("volume-1.nii.gz", "labels-1.nii.gz")},
        rejected={"5": "missing_file"},
    ),
    "segthor": dict(
        truth=SEGTHOR, names=SEGTHOR_NAMES, regions=SEGTHOR_REGIONS,
        read={f"Patient_0{n}": (f"train/Patient_0{n}/Patient_0{n}.nii.gz", f"train/Patient_0{n}/GT.nii.gz")
              for n in (1, 2)},
        rejected={"Patient_03": "missing_file"},
    ),
}  # fmt: skip
SPECS = list(CASES)


# --- specs -------------------------------------------------------------------------------------------------


def test_the_new_specs_are_complete_and_declare_what_they_share():
    for name in SPECS:
        spec = resolve_spec(name)
        assert (
            spec.format.family == "volumes" and spec.modality == "CT" and spec.intensity.kind == "ct_window"
        )
        assert spec.slicing.planes == ("ax",) and not spec.slicing.keep_empty and spec.split.rule == "hash"
        assert spec.citation and spec.licence and spec.homepage.startswith("http") and spec.unit_items > 0
        assert spec.stats is not None and spec.stats.structures == len(spec.labels)
        assert all(e.value not in (None, 0) and e.name[0].isupper() and e.category for e in spec.labels)
    by_value = {n: {e.value: e.label for e in resolve_spec(n).labels} for n in SPECS}
    assert by_value["lits"] == {1: "liver", 2: "tumor"} and by_value["kits19"] == {1: "kidney", 2: "tumor"}
    assert by_value["abdomenct_1k"] == {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}
    assert by_value["ct_org"] == {1: "liver", 2: "bladder", 3: "lungs", 4: "kidneys", 5: "bone", 6: "brain"}
    assert by_value["segthor"] == {1: "esophagus", 2: "heart", 3: "trachea", 4: "aorta"}
    # access as published: LiTS (CodaLab), AbdomenCT-1K (form), SegTHOR (agreement) need a sign-up
    assert {n: resolve_spec(n).access for n in SPECS} == {
        "lits": "registration", "kits19": "open", "abdomenct_1k": "registration", "ct_org": "open",
        "segthor": "registration",
    }  # fmt: skip
    assert "NC" in resolve_spec("lits").licence and "NC" in resolve_spec("kits19").licence
    # re-published cases: LiTS is MSD Task03, KiTS19 is KiTS23's first 210; the census counts them once
    shared = {n: {o.spec: o.cases for o in resolve_spec(n).overlaps} for n in SPECS}
    assert shared["lits"] == {"msd_liver": 131} and shared["kits19"] == {"kits23": 210}
    c = census([resolve_spec(n) for n in ("msd_liver", "kits23", *SPECS)])
    assert c.shared["lits"] == 1.0 and c.shared["kits19"] == 1.0
    assert c.distinct_samples < c.samples


# --- discovery and reading, every spec ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS)
def test_discovery_finds_the_published_cases(raw, name):
    spec, case = resolve_spec(name), CASES[name]
    items = items_of(spec, raw)
    assert sorted(items) == sorted({**case["read"], **case["rejected"]})
    for cid, (image, label) in case["read"].items():
        item = items[cid]
        assert item.files == (
            SourceFile("image", f"{spec.root}/{image}"),
            SourceFile("label", f"{spec.root}/{label}"),
        )
        assert item.patient_id == cid and item.official_split is None
    for cid, reason in case["rejected"].items():
        with pytest.raises(ReadError) as e:
            frames_of(spec, raw, items[cid])
        assert e.value.reason == reason


@pytest.mark.parametrize("name", SPECS)
def test_frames_carry_the_label_names_and_regions_of_each_slice(raw, name):
    spec, case = resolve_spec(name), CASES[name]
    items = items_of(spec, raw)
    for cid in case["read"]:
        frames = frames_of(spec, raw, items[cid])
        assert [f.slice_index for f in frames] == list(range(SHAPE[2]))
        assert {(f.intensity, f.modality, f.shape, f.spacing_mm) for f in frames} == {
            ("hu", "CT", (SHAPE[1], SHAPE[0]), (0.75, 0.75))
        }
        assert frames[0].label_values == {e.value: e.label for e in spec.labels}
        assert all(f.label_map.dtype == np.uint8 for f in frames)  # float-stored labels are rounded
        assert all(np.array_equal(f.label_map, display(case["truth"], f.slice_index)) for f in frames), cid
        assert {k: names_of(f) for k, f in enumerate(frames) if f.has_annotations} == case["names"], cid
        assert {k: regions_of(f) for k, f in enumerate(frames) if f.has_annotations} == case["regions"], cid


# --- per-dataset traps -------------------------------------------------------------------------------------


def _image_matches(raw: Path, name: str, cid: str, truth: np.ndarray, seed: int, dtype=np.int16) -> None:
    spec = resolve_spec(name)
    frames = frames_of(spec, raw, items_of(spec, raw)[cid])
    expected = ct_image(truth, seed, dtype)
    assert all(np.array_equal(f.image, display(expected, f.slice_index)) for f in frames)


@pytest.mark.parametrize(
    "name, cid, truth, seed, stored",
    [
        ("lits", "28", LITS, 28, "LPS"),
        ("kits19", "case_00001", KITS, 1, "IPL"),  # slices first, the permuted affine of the README
        ("ct_org", "1", CTORG, 1, "LPS"),
        ("segthor", "Patient_02", SEGTHOR, 2, "LPS"),
    ],
)
def test_volumes_are_reoriented_before_slicing(raw, name, cid, truth, seed, stored):
    spec = resolve_spec(name)
    item = items_of(spec, raw)[cid]
    assert "".join(nib.aff2axcodes(nib.load(raw / item.files[0].path).affine)) == stored
    _image_matches(raw, name, cid, truth, seed, np.float32 if name == "ct_org" else np.int16)


def test_the_patients_right_is_on_the_image_left(raw):
    spec = resolve_spec("kits19")
    frames = frames_of(spec, raw, items_of(spec, raw)["case_00000"])
    cols = np.nonzero(frames[1].label_map == 2)[1]  # the tumour, in the right kidney
    assert cols.max() < SHAPE[0] // 2


def test_kits19_reads_the_labelled_cases_only(raw):
    """An older clone holds the 90 test cases (case_00210 …) with imaging only: they are not cases, so no
    reject row either (case_regex stops at case_00209)."""
    spec = resolve_spec("kits19")
    assert sorted(items_of(spec, raw)) == ["case_00000", "case_00001"]
    assert (raw / "kits19/data/case_00210/imaging.nii.gz").is_file()


def test_lits_reads_uncompressed_pairs_of_both_batches_not_the_test_batch(raw):
    spec = resolve_spec("lits")
    items = items_of(spec, raw)
    assert all(not f.path.endswith(".gz") for i in items.values() for f in i.files)
    assert not any("Test Batch" in f.path for i in items.values() for f in i.files)
    assert nib.load(raw / "LiTS/Training Batch 2/segmentation-28.nii").get_data_dtype() == np.float32
    _image_matches(raw, "lits", "0", LITS, 0)


@pytest.mark.parametrize(
    "name, writer",
    [("abdomenct_1k", write_abdomenct_1k), ("ct_org", write_ct_org), ("segthor", write_segthor)],
)
def test_a_fresh_copy_discovers_the_same_cases(tmp_path, name, writer: Callable[[Path], None]):
    """Discovery depends on the files alone (no state between datasets or runs)."""
    writer(tmp_path)
    spec = resolve_spec(name)
    assert sorted(items_of(spec, tmp_path)) == sorted({**CASES[name]["read"], **CASES[name]["rejected"]})


# --- WORD: labels in a sibling folder per split (pairs + annotation_dirs) ---------------------------------

# liver (value 1, patient's right), stomach (5) and the two femoral heads (15 left, 16 right) on k 2-3
WORD = phantom(
    [
        (1, box((9, 15), (3, 9), (0, 3))),
        (5, box((2, 7), (4, 9), (0, 2))),
        (15, box((1, 4), (1, 3), (2, 4))),
        (16, box((12, 15), (1, 3), (2, 4))),
    ]
)
WORD_NAMES = {0: {"liver", "stomach"}, 1: {"liver", "stomach"}, 2: {"liver", "Head_of_femur_L", "Head_of_femur_R"},
              3: {"Head_of_femur_L", "Head_of_femur_R"}}  # fmt: skip
WORD_SPLITS = {"word_0001": "train", "word_0002": "train", "word_0101": "val", "word_0121": "test"}


def write_word(raw: Path) -> None:
    """WORD-V0.1.0/images{Tr,Val,Ts}/word_NNNN.nii.gz with labels{Tr,Val,Ts}/word_NNNN.nii.gz (stored LPS, as
    the shipped labelsTs are), a labelsTr file without its image, and macOS junk."""
    d = raw / "WORD-V0.1.0"
    for n, (case, split) in enumerate(WORD_SPLITS.items()):
        folder = {"train": "Tr", "val": "Val", "test": "Ts"}[split]
        save(d / f"images{folder}" / f"{case}.nii.gz", ct_image(WORD, n), "LPS")
        save(d / f"labels{folder}" / f"{case}.nii.gz", WORD, "LPS")
    save(d / "labelsTr" / "word_0099.nii.gz", WORD, "LPS")  # a label without its image: never a case
    junk(d / "imagesTr" / "._word_0001.nii.gz")


def test_word_finds_each_label_in_its_splits_label_folder(tmp_path):
    write_word(tmp_path)
    spec = resolve_spec("word")
    assert spec.stats.structures == len(spec.labels) == 16 and spec.access == "open"
    items = items_of(spec, tmp_path)
    orphan = items.pop("word_0099")  # labelsTr/word_0099 has no image: a case rejected for it
    assert {c: i.official_split for c, i in items.items()} == WORD_SPLITS
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, orphan)
    assert e.value.reason == "missing_file" and "labelsTr/word_0099.nii.gz has no image" in e.value.detail
    val = items["word_0101"]
    assert val.files == (
        SourceFile("image", "WORD-V0.1.0/imagesVal/word_0101.nii.gz"),
        SourceFile("label", "WORD-V0.1.0/labelsVal/word_0101.nii.gz"),
    )
    frames = frames_of(spec, tmp_path, val)
    assert all(np.array_equal(f.label_map, display(WORD, f.slice_index)) for f in frames)
    assert {k: names_of(f) for k, f in enumerate(frames) if f.has_annotations} == WORD_NAMES
    assert regions_of(frames[2]) == 3 and regions_of(frames[3]) == 2
    # the label names resolve to the KB's femoral heads (a display name of its own, laterality kept)
    from medpclip.text.kb import concept_for_label, load_kb

    kb = load_kb()
    heads = {e.label: concept_for_label(e, kb).canonical_name for e in spec.labels if e.value in (15, 16)}
    assert heads == {"Head_of_femur_L": "Left femoral head", "Head_of_femur_R": "Right femoral head"}
