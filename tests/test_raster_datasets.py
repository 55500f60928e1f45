"""The 2D image + mask specs on fixtures written here in each publisher's exact layout (folder and file names,
spaces and parentheses, mask encodings), checked against the ground truth the fixtures were drawn from.

Images are tiny (40x32) and written with Pillow: JPEG masks (Kvasir-SEG), 3-channel TIFF masks and numeric
names (CVC-ClinicDB), PNG masks beside the images (BUSI), left/right mask folders (Montgomery), GIF vessel
masks next to a field-of-view GIF (DRIVE), BMP masks coded 0/128/255 (REFUGE). No mocks, no network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from corpus_utils import as_from_json, items_of
from layouts import save_image as _save
from PIL import Image
from scipy import ndimage

from medpclip.corpus.schema import sample_key
from medpclip.frame import Box, Frame, ReadError, SourceItem
from medpclip.sources import raster
from medpclip.specs import DatasetSpec, SpecError, parse_spec, resolve_spec

H, W = 32, 40
SPECS = ["kvasir_seg", "cvc_clinicdb", "isic2018", "busi", "montgomery", "shenzhen", "drive", "refuge"]


# --- drawing helpers ---------------------------------------------------------------------------------------


def _rect(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean (H, W) mask of rectangles given as (row0, row1, col0, col1), exclusive ends."""
    m = np.zeros((H, W), bool)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = True
    return m


def _u8(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8) * 255


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 230, (H, W, 3), dtype=np.uint8)


def _grey_rgb(seed: int) -> np.ndarray:
    """A greyscale picture stored as RGB (equal channels), as BUSI and some CXR PNGs are."""
    g = np.random.default_rng(seed).integers(0, 255, (H, W), dtype=np.uint8)
    return np.stack([g, g, g], axis=-1)


def _text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- the published layouts, with their ground truth ---------------------------------------------------------

KVASIR_MASKS = {
    "cju0qkwl35piu0993l0dewei2": _rect((8, 20, 10, 26)),  # one polyp, 192 px
    "cju0roawvklrq0799vmjorwfv": _rect((4, 12, 4, 14), (20, 28, 24, 36)),  # two polyps, 80 + 96 px
}
KVASIR_BOXED = "cju1cu1u2474n0878tt7v4tdr"  # no mask file: its box in kavsir_bboxes.json stands in


def write_kvasir(raw: Path) -> None:
    root = raw / "Kvasir-SEG"
    boxes = {}
    for n, (stem, mask) in enumerate(KVASIR_MASKS.items()):
        _save(root / "images" / f"{stem}.jpg", _photo(n))
        _save(root / "masks" / f"{stem}.jpg", np.stack([_u8(mask)] * 3, -1), quality=75)  # lossy RGB
        rows, cols = np.nonzero(mask)
        box = {
            "xmin": int(cols.min()),
            "ymin": int(rows.min()),
            "xmax": int(cols.max()) + 1,
            "ymax": int(rows.max()) + 1,
        }
        boxes[stem] = {"height": H, "width": W, "bbox": [{"label": "polyp", **box}]}
    _save(root / "images" / f"{KVASIR_BOXED}.jpg", _photo(9))
    boxes[KVASIR_BOXED] = {
        "height": H,
        "width": W,
        "bbox": [{"label": "polyp", "xmin": 5, "ymin": 6, "xmax": 20, "ymax": 18}],
    }
    (root / "kavsir_bboxes.json").write_text(json.dumps(boxes))
    (root / "images" / f"._{KVASIR_BOXED}.jpg").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # AppleDouble
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")


# Numeric names: lexicographic order (1, 10, 100, 2, 41) differs from numeric; each mask has its own area.
CVC_AREAS = {"1": (5, 6), "2": (6, 7), "10": (7, 8), "41": (8, 9), "100": (9, 10)}
CVC_GROUPS = {"1": "0001-0040", "2": "0001-0040", "10": "0001-0040", "41": "0041-0080", "100": "0081-0120"}


def _cvc_mask(stem: str) -> np.ndarray:
    h, w = CVC_AREAS[stem]
    return _rect((4, 4 + h, 6, 6 + w))


def write_cvc(raw: Path) -> None:
    root = raw / "CVC-ClinicDB"
    for n, stem in enumerate(CVC_AREAS):
        _save(root / "Original" / f"{stem}.tif", _photo(20 + n))
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[_cvc_mask(stem)] = (255, 255, 255)
        _save(root / "Ground Truth" / f"{stem}.tif", rgb)  # 3-channel TIFF mask
    (root / "Original" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "Original" / "._1.tif").write_bytes(b"\x00\x05\x16\x07Mac OS X")


ISIC = {  # case → (input folder part, mask)
    "ISIC_0000000": ("Training", _rect((5, 25, 8, 30))),  # 440 px
    "ISIC_0000001": ("Training", _rect((10, 20, 10, 20))),  # 100 px
    "ISIC_0012255": ("Validation", _rect((0, 16, 0, 16))),  # 256 px
    "ISIC_0036309": ("Test", _rect((16, 32, 20, 40))),  # 320 px
}
ISIC_SPLIT = {"Training": "train", "Validation": "val", "Test": "test"}


def write_isic(raw: Path) -> None:
    root = raw / "isic2018"
    for n, (case, (part, mask)) in enumerate(ISIC.items()):
        _save(root / f"ISIC2018_Task1-2_{part}_Input" / f"{case}.jpg", _photo(40 + n))
        _save(root / f"ISIC2018_Task1_{part}_GroundTruth" / f"{case}_segmentation.png", _u8(mask))
    for part in ISIC_SPLIT:
        for folder in (f"ISIC2018_Task1-2_{part}_Input", f"ISIC2018_Task1_{part}_GroundTruth"):
            _text(root / folder / "ATTRIBUTION.txt", "ISIC_0000000: Anonymous, CC-BY-NC\n")
            _text(root / folder / "LICENSE.txt", "Creative Commons Attribution-NonCommercial 4.0\n")


BUSI_LESIONS = {  # image → [(mask file suffix, mask)]; the folder is the class
    "benign (1)": [("_mask", _rect((3, 9, 3, 12))), ("_mask_1", _rect((18, 26, 22, 34)))],  # 54 + 96 px
    "benign (10)": [("_mask", _rect((10, 22, 12, 28)))],  # 192 px; 'benign (1)' must not claim it
    "malignant (1)": [("_mask", _rect((6, 24, 8, 30)))],  # 396 px
    "normal (1)": [("_mask", _rect())],  # all zero
}


def write_busi(raw: Path) -> None:
    root = raw / "Dataset_BUSI_with_GT"
    for n, (stem, masks) in enumerate(BUSI_LESIONS.items()):
        cls = stem.split(" ")[0]
        _save(root / cls / f"{stem}.png", _grey_rgb(60 + n))
        for suffix, mask in masks:
            _save(root / cls / f"{stem}{suffix}.png", _u8(mask))
    _save(root / "benign" / "benign (7)_mask.png", _u8(_rect((0, 8, 0, 8))))  # orphan mask: not an image
    (root / "malignant" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")


MC_RIGHT_LUNG = _rect((4, 28, 4, 16))  # patient's right: the image's left (PA view), 288 px
MC_LEFT_LUNG = _rect((4, 28, 24, 36))  # patient's left: the image's right, 288 px
MC_STRAY = _rect((0, 2, 0, 2))  # 4 px stray component, as in leftMask/MCUCXR_0399_1.png


def write_montgomery(raw: Path) -> None:
    root = raw / "MontgomerySet"
    for n, stem in enumerate(("MCUCXR_0001_0", "MCUCXR_0399_1", "MCUCXR_0002_0")):
        _save(root / "CXR_png" / f"{stem}.png", _grey_rgb(80 + n)[..., 0] if n != 1 else _grey_rgb(80 + n))
        _text(root / "ClinicalReadings" / f"{stem}.txt", "Patient's Sex: F\nPatient's Age: 040Y\nnormal\n")
        left = MC_LEFT_LUNG | MC_STRAY if stem == "MCUCXR_0399_1" else MC_LEFT_LUNG
        _save(root / "ManualMask" / "leftMask" / f"{stem}.png", _u8(left))
        if stem != "MCUCXR_0002_0":  # its right lung mask is missing
            _save(root / "ManualMask" / "rightMask" / f"{stem}.png", _u8(MC_RIGHT_LUNG))


SZ_LUNGS = {  # one mask file holds both lungs
    "CHNCXR_0001_0": _rect((4, 28, 4, 16), (4, 28, 24, 36)),
    "CHNCXR_0327_1": _rect((6, 26, 4, 16), (6, 26, 24, 36)),
}


def write_shenzhen(raw: Path) -> None:
    root = raw / "ChinaSet_AllFiles"
    for n, stem in enumerate(("CHNCXR_0001_0", "CHNCXR_0327_1", "CHNCXR_0005_0")):
        _save(root / "CXR_png" / f"{stem}.png", _grey_rgb(100 + n))
        _text(root / "ClinicalReadings" / f"{stem}.txt", "male 35yrs\nnormal\n")
        if stem in SZ_LUNGS:  # CHNCXR_0005_0 is outside the masks' subset
            _save(root / "mask" / f"{stem}_mask.png", _u8(SZ_LUNGS[stem]))


DRIVE_VESSELS = {
    "21_training": _rect((10, 12, 2, 38), (0, 32, 20, 22), (28, 30, 4, 6)),  # 72 + 64 - 4 + a 4 px fragment
    "22_training": _rect((16, 18, 0, 40)),  # 80 px
    "01_test": _rect((5, 7, 0, 40)),  # 80 px
}
DRIVE_FOV = _rect((1, 31, 1, 39))  # 1,140 px: the field of view, not a label


def _gif(path: Path, mask: np.ndarray) -> None:
    _save(path, _u8(mask), format="GIF")


def write_drive(raw: Path) -> None:
    root = raw / "DRIVE"
    for n, (stem, vessels) in enumerate(DRIVE_VESSELS.items()):
        number, part = stem.split("_")
        folder = root / ("training" if part == "training" else "test")
        _save(folder / "images" / f"{stem}.tif", _photo(120 + n))
        _gif(folder / "1st_manual" / f"{number}_manual1.gif", vessels)
        _gif(folder / "mask" / f"{stem}_mask.gif", DRIVE_FOV)
    _gif(root / "test" / "2nd_manual" / "01_manual2.gif", _rect((5, 8, 0, 40)))  # second observer: unused
    _save(root / "test" / "images" / "02_test.tif", _photo(130))  # shipped without its 1st_manual
    _gif(root / "test" / "mask" / "02_test_mask.gif", DRIVE_FOV)


REFUGE = {  # image path → (mask path, disc rect, cup rect)
    "Training400/Glaucoma/g0001.jpg": (
        "Annotation-Training400/Disc_Cup_Masks/Glaucoma/g0001.bmp", (6, 26, 10, 30), (12, 20, 16, 24)),
    "Training400/Non-Glaucoma/n0001.jpg": (
        "Annotation-Training400/Disc_Cup_Masks/Non-Glaucoma/n0001.bmp", (8, 24, 12, 28), (14, 19, 18, 22)),
    "REFUGE-Validation400/V0001.jpg": (
        "REFUGE-Validation400-GT/Disc_Cup_Masks/V0001.bmp", (4, 20, 4, 20), (8, 14, 8, 14)),
    "Test400/T0001.jpg": ("REFUGE-Test-GT/Disc_Cup_Masks/G/T0001.bmp", (10, 30, 15, 35), (16, 24, 21, 29)),
}  # fmt: skip


def _refuge_coded(disc, cup) -> np.ndarray:
    coded = np.full((H, W), 255, np.uint8)
    coded[_rect(disc)] = 128
    coded[_rect(cup)] = 0
    return coded


def write_refuge(raw: Path) -> None:
    root = raw / "refuge"
    for n, (image, (mask, disc, cup)) in enumerate(REFUGE.items()):
        _save(root / image, _photo(140 + n))
        _save(root / mask, _refuge_coded(disc, cup))  # 8-bit BMP
    _save(root / "Training400" / "AMD" / "A0001.jpg", _photo(150))  # not a class folder of REFUGE


WRITERS = {
    "kvasir_seg": write_kvasir,
    "cvc_clinicdb": write_cvc,
    "isic2018": write_isic,
    "busi": write_busi,
    "montgomery": write_montgomery,
    "shenzhen": write_shenzhen,
    "drive": write_drive,
    "refuge": write_refuge,
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw2d")
    for write in WRITERS.values():
        write(root)
    return root


def _fresh(name: str, tmp_path: Path) -> Path:
    """A private raw root holding one dataset (for tests that break it)."""
    WRITERS[name](tmp_path)
    return tmp_path


# --- reading helpers ---------------------------------------------------------------------------------------


def _frame(spec: DatasetSpec, raw: Path, item: SourceItem) -> Frame:
    (frame,) = raster.read(spec, raw, as_from_json(item))
    return frame


def _reason(spec: DatasetSpec, raw: Path, item: SourceItem) -> tuple[str, str]:
    with pytest.raises(ReadError) as e:
        _frame(spec, raw, item)
    return e.value.reason, e.value.detail


def _paths(item: SourceItem) -> list[tuple[str, str]]:
    return [(f.role, f.path) for f in item.files]


# --- every spec --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS)
def test_spec_is_complete_for_a_user_with_the_download(name):
    spec = resolve_spec(name)
    assert spec.format.family == "raster" and spec.intensity.kind == "uint8"
    assert spec.citation and spec.licence and spec.homepage.startswith("https://") and spec.body_part
    assert all(e.name and e.category for e in spec.labels)
    assert raster.parse_options(spec, raster.RasterOptions)  # options valid for the reader


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"masks": ["masks/{stm}.jpg"]}, "unknown fields ['stm']"),
        ({"masks": ["masks/all.jpg"]}, "needs {stem} or a name_regex group"),
        ({"image_labels": [{"regex": "x"}]}, "named group (?P<label>...)"),
        ({"mask_mode": "ranges"}, "needs 'ranges'"),
        ({"numbered_groups": {"size": 10, "ranges": [[1, 5]]}}, "exactly one of"),
        ({"splits": {"*": "holdout"}}, "splits"),
    ],
)
def test_bad_options_fail_when_the_spec_loads(change, fragment):
    data = resolve_spec("kvasir_seg").model_dump(mode="json")
    data["format"]["options"].update(change)
    with pytest.raises(SpecError, match=r"^<spec>: field 'format\.options") as e:
        parse_spec(data)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_options_against_the_labels_fail_discovery_once(raw):
    data = resolve_spec("kvasir_seg").model_dump(mode="json")
    data["format"]["options"].update({"image_labels": [{"regex": "(?P<label>x)", "map": {"x": "fracture"}}]})
    spec = DatasetSpec.model_validate(data)
    with pytest.raises(ReadError) as e:
        list(raster.discover(spec, raw / spec.root))
    assert e.value.reason == "bad_option" and "'fracture' is not in spec" in e.value.detail


# --- Kvasir-SEG: lossy RGB JPEG masks, boxes JSON ----------------------------------------------------------


def test_kvasir_seg(raw):
    spec = resolve_spec("kvasir_seg")
    items = items_of(spec, raw)
    assert sorted(items) == sorted([*KVASIR_MASKS, KVASIR_BOXED])  # no ._ fork, no .DS_Store
    stem = "cju0roawvklrq0799vmjorwfv"
    assert _paths(items[stem]) == [
        ("image", f"Kvasir-SEG/images/{stem}.jpg"),
        ("mask", f"Kvasir-SEG/masks/{stem}.jpg"),
    ]
    assert items[stem].patient_id == stem and items[stem].official_split is None
    raw_mask = np.asarray(Image.open(raw / "Kvasir-SEG" / "masks" / f"{stem}.jpg").convert("L"))
    assert not set(np.unique(raw_mask).tolist()) <= {0, 255}  # really lossy
    for stem, truth in KVASIR_MASKS.items():
        frame = _frame(spec, raw, items[stem])
        assert frame.image.shape == (H, W, 3) and frame.intensity == "uint8" and frame.image_labels == []
        ((label, mask),) = frame.masks
        assert label == "polyp" and np.array_equal(mask, truth)
    assert ndimage.label(_frame(spec, raw, items[stem]).masks[0][1])[1] == 2
    boxed = _frame(spec, raw, items[KVASIR_BOXED])
    assert boxed.masks == [] and boxed.boxes == [Box("polyp", (5.0, 6.0, 20.0, 18.0))]


# --- CVC-ClinicDB: numeric names, 3-channel TIFF masks, frame blocks ---------------------------------------


def test_cvc_clinicdb(raw):
    spec = resolve_spec("cvc_clinicdb")
    items = items_of(spec, raw)
    assert sorted(items) == sorted(CVC_AREAS)  # Thumbs.db and ._1.tif skipped
    assert _paths(items["10"]) == [
        ("image", "CVC-ClinicDB/Original/10.tif"),
        ("mask", "CVC-ClinicDB/Ground Truth/10.tif"),
    ]
    assert {s: i.patient_id for s, i in items.items()} == CVC_GROUPS
    assert Image.open(raw / "CVC-ClinicDB" / "Ground Truth" / "2.tif").mode == "RGB"
    for stem, item in items.items():
        frame = _frame(spec, raw, item)
        ((label, mask),) = frame.masks
        assert label == "polyp" and np.array_equal(mask, _cvc_mask(stem)), stem  # paired by stem
        assert frame.image.shape == (H, W, 3)


def test_cvc_clinicdb_missing_and_mismatched_masks(tmp_path):
    raw = _fresh("cvc_clinicdb", tmp_path)
    gt = raw / "CVC-ClinicDB" / "Ground Truth"
    (gt / "41.tif").unlink()
    Image.open(gt / "2.tif").resize((W // 2, H // 2)).save(gt / "2.tif")
    spec = resolve_spec("cvc_clinicdb")
    items = items_of(spec, raw)
    assert _paths(items["41"]) == [("image", "CVC-ClinicDB/Original/41.tif")]
    assert _reason(spec, raw, items["41"]) == (
        "missing_file",
        "CVC-ClinicDB/Ground Truth/41.tif (the mask of CVC-ClinicDB/Original/41.tif)",
    )
    reason, detail = _reason(spec, raw, items["2"])
    assert reason == "shape_mismatch" and "(16, 20)" in detail
    assert len(list(raster.read(spec, raw, items["100"]))) == 1  # the others are unaffected


# --- ISIC 2018 Task 1: official splits by folder, txt files skipped -----------------------------------------


def test_isic2018(raw):
    spec = resolve_spec("isic2018")
    items = items_of(spec, raw)
    assert sorted(items) == sorted(ISIC)  # ATTRIBUTION.txt / LICENSE.txt are no images
    assert _paths(items["ISIC_0012255"]) == [
        ("image", "isic2018/ISIC2018_Task1-2_Validation_Input/ISIC_0012255.jpg"),
        ("mask", "isic2018/ISIC2018_Task1_Validation_GroundTruth/ISIC_0012255_segmentation.png"),
    ]
    for case, (part, truth) in ISIC.items():
        assert items[case].official_split == ISIC_SPLIT[part] and items[case].patient_id == case
        ((label, mask),) = _frame(spec, raw, items[case]).masks
        assert label == "lesion" and np.array_equal(mask, truth)


def test_isic2018_unreadable_image_and_missing_mask(tmp_path):
    raw = _fresh("isic2018", tmp_path)
    root = raw / "isic2018"
    jpg = root / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg"
    jpg.write_bytes(jpg.read_bytes()[:60])  # truncated download
    (root / "ISIC2018_Task1_Test_GroundTruth" / "ISIC_0036309_segmentation.png").unlink()
    spec = resolve_spec("isic2018")
    items = items_of(spec, raw)
    assert _reason(spec, raw, items["ISIC_0000000"])[0] == "unreadable_image"
    assert _reason(spec, raw, items["ISIC_0036309"]) == (
        "missing_file",
        "isic2018/ISIC2018_Task1_Test_GroundTruth/ISIC_0036309_segmentation.png"
        " (the mask of isic2018/ISIC2018_Task1-2_Test_Input/ISIC_0036309.jpg)",
    )
    assert len(list(raster.read(spec, raw, items["ISIC_0000001"]))) == 1


# --- BUSI: masks beside images, several per image, normal images without regions ----------------------------


def test_busi(raw):
    spec = resolve_spec("busi")
    items = items_of(spec, raw)
    assert sorted(items) == sorted(BUSI_LESIONS)  # no mask and no orphan mask is an image
    assert _paths(items["benign (1)"]) == [
        ("image", "Dataset_BUSI_with_GT/benign/benign (1).png"),
        ("mask", "Dataset_BUSI_with_GT/benign/benign (1)_mask.png"),
        ("mask", "Dataset_BUSI_with_GT/benign/benign (1)_mask_1.png"),
    ]
    assert len(items["benign (10)"].files) == 2  # 'benign (1)_mask*' does not reach 'benign (10)_mask'
    for stem, masks in BUSI_LESIONS.items():
        frame = _frame(spec, raw, items[stem])
        cls = stem.split(" ")[0]
        assert frame.image.shape == (H, W) and frame.image_labels == [cls]
        assert items[stem].patient_id == stem
        union = np.logical_or.reduce([m for _, m in masks])
        if cls == "normal":
            assert frame.masks == [] and not frame.has_annotations
        else:
            ((label, mask),) = frame.masks  # the mask files of one image are unioned
            assert label == cls and np.array_equal(mask, union)
    both = _frame(spec, raw, items["benign (1)"]).masks[0][1]
    assert int(both.sum()) == 54 + 96 and ndimage.label(both)[1] == 2


def test_busi_quirks(tmp_path):
    raw = _fresh("busi", tmp_path)
    folder = raw / "Dataset_BUSI_with_GT"
    _save(folder / "normal" / "normal (1)_mask.png", _u8(_rect((0, 5, 0, 5))))  # a 'normal' with a lesion
    (folder / "malignant" / "malignant (1)_mask.png").unlink()
    _save(folder / "benign" / "benign (10).png", _grey_rgb(1)[:20])  # image smaller than its mask
    spec = resolve_spec("busi")
    items = items_of(spec, raw)
    reason, detail = _reason(spec, raw, items["normal (1)"])
    assert reason == "bad_label_value" and "25 foreground pixels" in detail
    assert _reason(spec, raw, items["malignant (1)"])[0] == "missing_file"
    assert _reason(spec, raw, items["benign (10)"])[0] == "shape_mismatch"
    assert len(list(raster.read(spec, raw, items["benign (1)"]))) == 1


# --- Montgomery: left/right lung folders, TB from the name suffix -------------------------------------------


def test_montgomery(raw):
    spec = resolve_spec("montgomery")
    items = items_of(spec, raw)
    assert sorted(items) == ["MCUCXR_0001_0", "MCUCXR_0002_0", "MCUCXR_0399_1"]
    assert _paths(items["MCUCXR_0001_0"]) == [
        ("image", "MontgomerySet/CXR_png/MCUCXR_0001_0.png"),
        ("mask", "MontgomerySet/ManualMask/leftMask/MCUCXR_0001_0.png"),
        ("mask", "MontgomerySet/ManualMask/rightMask/MCUCXR_0001_0.png"),
    ]
    assert items["MCUCXR_0399_1"].patient_id == "0399"
    normal = _frame(spec, raw, items["MCUCXR_0001_0"])
    assert normal.image_labels == ["normal"] and normal.image.shape == (H, W)
    assert [(lab, m.sum()) for lab, m in normal.masks] == [("leftMask", 288), ("rightMask", 288)]
    tb = _frame(spec, raw, items["MCUCXR_0399_1"])  # an RGB PNG among greyscale ones: read as grey
    assert tb.image_labels == ["tuberculosis"] and tb.image.shape == (H, W)
    assert np.array_equal(tb.masks[0][1], MC_LEFT_LUNG | MC_STRAY) and np.array_equal(
        tb.masks[1][1], MC_RIGHT_LUNG
    )
    assert _reason(spec, raw, items["MCUCXR_0002_0"]) == (
        "missing_file",
        "MontgomerySet/ManualMask/rightMask/MCUCXR_0002_0.png"
        " (the mask of MontgomerySet/CXR_png/MCUCXR_0002_0.png)",
    )


def test_montgomery_unknown_suffix_is_rejected(tmp_path):
    raw = _fresh("montgomery", tmp_path)
    root = raw / "MontgomerySet"
    for folder in ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask"):
        (root / folder / "MCUCXR_0001_0.png").rename(root / folder / "MCUCXR_0001_2.png")
    spec = resolve_spec("montgomery")
    reason, detail = _reason(spec, raw, items_of(spec, raw)["MCUCXR_0001_2"])
    assert reason == "bad_label_value" and "'2'" in detail


def test_montgomery_zero_one_coded_mask_is_refused_not_read_as_empty(tmp_path):
    raw = _fresh("montgomery", tmp_path)
    path = raw / "MontgomerySet" / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png"
    _save(path, MC_RIGHT_LUNG.astype(np.uint8))  # values 0/1
    spec = resolve_spec("montgomery")
    reason, detail = _reason(spec, raw, items_of(spec, raw)["MCUCXR_0001_0"])
    assert reason == "bad_label_value" and "0 and 1" in detail


# --- Shenzhen: community masks in mask/, subset only -------------------------------------------------------


def test_shenzhen(raw):
    spec = resolve_spec("shenzhen")
    items = items_of(spec, raw)
    assert sorted(items) == ["CHNCXR_0001_0", "CHNCXR_0005_0", "CHNCXR_0327_1"]
    assert _paths(items["CHNCXR_0327_1"])[1] == ("mask", "ChinaSet_AllFiles/mask/CHNCXR_0327_1_mask.png")
    for stem, truth in SZ_LUNGS.items():
        frame = _frame(spec, raw, items[stem])
        ((label, mask),) = frame.masks
        assert label == "lung" and np.array_equal(mask, truth) and ndimage.label(mask)[1] == 2
        assert frame.image_labels == (["tuberculosis"] if stem.endswith("_1") else ["normal"])
        assert items[stem].patient_id == stem[7:11]
    assert _reason(spec, raw, items["CHNCXR_0005_0"])[0] == "missing_file"


# --- DRIVE: GIF vessel masks, the FOV mask is not the label, official split ---------------------------------


def test_drive(raw):
    spec = resolve_spec("drive")
    items = items_of(spec, raw)
    assert sorted(items) == ["01_test", "02_test", "21_training", "22_training"]
    assert _paths(items["21_training"]) == [
        ("image", "DRIVE/training/images/21_training.tif"),
        ("mask", "DRIVE/training/1st_manual/21_manual1.gif"),
    ]
    assert {c: (i.official_split, i.patient_id) for c, i in items.items()} == {
        "01_test": ("test", "01"), "02_test": ("test", "02"),
        "21_training": ("train", "21"), "22_training": ("train", "22"),
    }  # fmt: skip
    assert Image.open(raw / "DRIVE" / "training" / "1st_manual" / "21_manual1.gif").mode == "P"
    for stem, truth in DRIVE_VESSELS.items():
        frame = _frame(spec, raw, items[stem])
        ((label, mask),) = frame.masks
        assert label == "vessel" and np.array_equal(mask, truth), stem  # not the FOV, not 2nd_manual
        assert frame.image.shape == (H, W, 3)
    assert int(DRIVE_VESSELS["21_training"].sum()) == 136 != int(DRIVE_FOV.sum())
    assert _reason(spec, raw, items["02_test"]) == (
        "missing_file",
        "DRIVE/test/1st_manual/02_manual1.gif (the mask of DRIVE/test/images/02_test.tif)",
    )


def test_drive_unexpected_name_is_rejected(tmp_path):
    raw = _fresh("drive", tmp_path)
    _save(raw / "DRIVE" / "training" / "images" / "21_training_copy.tif", _photo(1))
    spec = resolve_spec("drive")
    assert _reason(spec, raw, items_of(spec, raw)["21_training_copy"])[0] == "unexpected_name"


# --- REFUGE: BMP coded masks, nested disc and cup, glaucoma from folders ------------------------------------


def test_refuge(raw):
    spec = resolve_spec("refuge")
    items = items_of(spec, raw)
    assert sorted(items) == ["T0001", "V0001", "g0001", "n0001"]
    expected = {"g0001": ("train", ["glaucoma"]), "n0001": ("train", ["non-glaucoma"]),
                "V0001": ("val", []), "T0001": ("test", ["glaucoma"])}  # fmt: skip
    for image, (mask_path, disc, cup) in REFUGE.items():
        case = Path(image).stem
        item = items[case]
        assert _paths(item) == [("image", f"refuge/{image}"), ("mask", f"refuge/{mask_path}")]
        frame = _frame(spec, raw, item)
        assert (item.official_split, frame.image_labels) == expected[case]
        assert [lab for lab, _ in frame.masks] == ["optic disc", "optic cup"]
        (_, disc_mask), (_, cup_mask) = frame.masks
        assert np.array_equal(disc_mask, _rect(disc)) and np.array_equal(cup_mask, _rect(cup))  # disc ⊇ cup
        assert frame.label_map is None
    raw_mask = np.asarray(Image.open(raw / "refuge" / REFUGE["Training400/Glaucoma/g0001.jpg"][0]))
    assert sorted(np.unique(raw_mask).tolist()) == [0, 128, 255]


def test_refuge_mask_of_the_wrong_set_is_not_used(tmp_path):
    raw = _fresh("refuge", tmp_path)
    root = raw / "refuge"
    (root / "REFUGE-Validation400-GT" / "Disc_Cup_Masks" / "V0001.bmp").rename(
        root / "Annotation-Training400" / "Disc_Cup_Masks" / "Glaucoma" / "V0001.bmp"
    )
    spec = resolve_spec("refuge")
    item = items_of(spec, raw)["V0001"]
    assert [f.role for f in item.files] == ["image"]
    assert _reason(spec, raw, item)[0] == "missing_file"


# --- end to end: three specs through the real build --------------------------------------------------------


@pytest.mark.slow
def test_build_busi_montgomery_refuge(raw, tmp_path, ray_session):
    from medpclip.corpus.build import build_corpus
    from medpclip.specs import resolve_specs
    from medpclip.warehouse import query

    result = build_corpus(resolve_specs(["busi", "montgomery", "refuge"]), raw, tmp_path / "corpus")
    out = result.out
    per_dataset = {d["name"]: (d["items"], d["samples"], d["regions"]) for d in result.build["datasets"]}
    assert per_dataset == {"busi": (4, 4, 2 + 1 + 1), "montgomery": (3, 2, 4), "refuge": (4, 4, 8)}

    def rows(sql: str) -> list[tuple]:
        return query(out, sql)[1]

    key = sample_key("busi", "benign (1)", "im", 0)
    boxes = "SELECT label, instance, x0, y0, x1, y1, area_px FROM regions WHERE key = '{}' ORDER BY rid"
    assert rows(boxes.format(key)) == [  # two lesion files, unioned: one instance each, boxes in pixels
        ("benign", 0, 3, 3, 12, 9, 54),
        ("benign", 1, 22, 18, 34, 26, 96),
    ]
    normal = sample_key("busi", "normal (1)", "im", 0)
    assert rows(f"SELECT n_regions, image_labels FROM samples WHERE key = '{normal}'") == [(0, ["normal"])]

    g = sample_key("refuge", "g0001", "im", 0)
    assert rows(f"SELECT label, x0, y0, x1, y1, area_px FROM regions WHERE key = '{g}' ORDER BY rid") == [
        ("optic disc", 10, 6, 30, 26, 400),
        ("optic cup", 16, 12, 24, 20, 64),
    ]
    by_split = "SELECT split, count(*) FROM samples WHERE dataset = '{}' GROUP BY split ORDER BY split"
    assert rows(by_split.format("refuge")) == [("test", 1), ("train", 2), ("val", 1)]  # official

    tb = sample_key("montgomery", "MCUCXR_0399_1", "im", 0)
    assert rows(f"SELECT name, x0, y0, x1, y1 FROM regions WHERE key = '{tb}' ORDER BY rid") == [
        ("Left lung", 24, 4, 36, 28),
        ("Right lung", 4, 4, 16, 28),
    ]
    assert rows(f"SELECT image_labels FROM samples WHERE key = '{tb}'") == [(["tuberculosis"],)]
    assert rows("SELECT stage, reason, label FROM rejects WHERE dataset = 'montgomery' ORDER BY stage") == [
        ("read", "missing_file", None),
        ("region", "below_min_area", "leftMask"),
    ]
