"""Retinal vessel specs on tiny fixtures written in each publisher's layout (flat CHASE_DB1 folder with
first- and second-observer PNG masks; HRF TIFF vessel masks beside RGB field-of-view TIFFs; STARE RGB PPM labels of two observers), checked against the truth the fixtures were drawn from.

Images are 32x40 and written with Pillow. No mocks, no network, no Ray.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from layouts import save_image as _save
from PIL import Image
from scipy import ndimage

from medpclip.frame import ReadError
from medpclip.specs import resolve_spec

H, W = 32, 40


def _rect(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean (H, W) mask of rectangles (row0, row1, col0, col1), exclusive ends."""
    m = np.zeros((H, W), bool)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = True
    return m


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 230, (H, W, 3), dtype=np.uint8)


# --- CHASE_DB1: Image_XXL.jpg + Image_XXL_1stHO.png (the label) / _2ndHO.png (never read) ----------------

CHASE_1ST = {
    "Image_01L": _rect((2, 30, 10, 14), (14, 18, 14, 36)),  # one tree (a T), one component
    "Image_01R": _rect((2, 12, 4, 8), (20, 30, 30, 34)),  # two fragments
    "Image_02L": _rect((4, 28, 20, 23)),  # one vessel
}
CHASE_2ND = _rect((0, 32, 0, 40))  # the second observer: all foreground, would change every count if read


def write_chase(raw: Path) -> None:
    root = raw / "CHASEDB1"
    for n, (stem, vessels) in enumerate(CHASE_1ST.items()):
        _save(root / f"{stem}.jpg", _photo(n))
        _save(root / f"{stem}_1stHO.png", vessels.astype(np.uint8) * 255)
        _save(root / f"{stem}_2ndHO.png", CHASE_2ND.astype(np.uint8) * 255)
    _save(root / "Image_02R.jpg", _photo(9))  # no 1stHO mask: rejected, naming the expected path


CHASE_LABELS = dict.fromkeys(CHASE_1ST, [])
CHASE_MISSING = {"Image_02R": "CHASEDB1/Image_02R_1stHO.png (the mask of CHASEDB1/Image_02R.jpg)"}


# --- HRF: images/NN_{h,dr,g}.jpg + manual1/<stem>.tif (label) + mask/<stem>_mask.tif (FOV, never read) -----

HRF_VESSELS = {
    "01_h": _rect((2, 30, 18, 21)),  # one vessel
    "01_dr": _rect((2, 10, 2, 6), (12, 30, 30, 36)),  # two fragments
    "01_g": _rect((4, 28, 8, 11), (14, 17, 8, 36)),  # one tree (an L)
}
HRF_LABELS = {"01_h": ["healthy"], "01_dr": ["diabetic retinopathy"], "01_g": ["glaucoma"]}
HRF_FOV = _rect((1, 31, 1, 39))  # the field of view: not a label
HRF_MISSING = {"02_g": "HRF/manual1/02_g.tif (the mask of HRF/images/02_g.jpg)"}


def write_hrf(raw: Path) -> None:
    root = raw / "HRF"
    for n, (stem, vessels) in enumerate(HRF_VESSELS.items()):
        _save(root / "images" / f"{stem}.jpg", _photo(n))
        _save(root / "manual1" / f"{stem}.tif", vessels.astype(np.uint8) * 255)
        _save(root / "mask" / f"{stem}_mask.tif", np.stack([HRF_FOV.astype(np.uint8) * 255] * 3, -1))
    _save(root / "images" / "02_g.jpg", _photo(7))  # no manual1 file


# --- STARE: stare-images/imNNNN.ppm + labels-ah/imNNNN.ah.ppm (label) / labels-vk/ (never read) ------------

STARE_AH = {
    "im0001": _rect((2, 30, 12, 15), (10, 13, 15, 36)),  # one tree (a T on its side)
    "im0002": _rect((2, 9, 2, 6), (20, 30, 28, 38)),  # two fragments
}
STARE_MISSING = {"im0005": "STARE/labels-ah/im0005.ah.ppm (the mask of STARE/stare-images/im0005.ppm)"}


def write_stare(raw: Path) -> None:
    root = raw / "STARE"
    for n, (stem, vessels) in enumerate(STARE_AH.items()):
        _save(root / "stare-images" / f"{stem}.ppm", _photo(n))
        _save(root / "labels-ah" / f"{stem}.ah.ppm", np.stack([vessels.astype(np.uint8) * 255] * 3, -1))
        _save(root / "labels-vk" / f"{stem}.vk.ppm", np.full((H, W, 3), 255, np.uint8))
    _save(root / "stare-images" / "im0005.ppm", _photo(5))  # a labelled id whose label file is missing
    _save(root / "stare-images" / "im0006.ppm", _photo(6))  # one of the ~380 unlabelled images: not listed


CASES = [
    pytest.param("chase_db1", write_chase, CHASE_1ST, CHASE_LABELS, CHASE_MISSING, id="chase_db1"),
    pytest.param("hrf", write_hrf, HRF_VESSELS, HRF_LABELS, HRF_MISSING, id="hrf"),
    pytest.param("stare", write_stare, STARE_AH, dict.fromkeys(STARE_AH, []), STARE_MISSING, id="stare"),
]


@pytest.mark.parametrize(("name", "write", "truth", "image_labels", "missing"), CASES)
def test_layout_labels_and_regions(tmp_path, name, write, truth, image_labels, missing):
    write(tmp_path)
    spec = resolve_spec(name)
    items = items_of(spec, tmp_path)
    assert set(items) == set(truth) | set(missing)
    for stem, mask in truth.items():
        item = items[stem]
        assert [f.role for f in item.files] == ["image", "mask"]
        assert not any(t in f.path for f in item.files for t in ("2ndHO", "_mask", "labels-vk"))
        assert item.official_split is None  # neither dataset publishes a split
        (frame,) = frames_of(spec, tmp_path, item)
        assert frame.image_labels == image_labels[stem]
        assert frame.shape == (H, W)
        assert [label for label, _ in frame.masks] == ["vessel"]
        got = frame.masks[0][1]
        assert np.array_equal(got, mask)
        assert ndimage.label(got)[1] == ndimage.label(mask)[1]
    for stem, detail in missing.items():
        with pytest.raises(ReadError) as e:
            frames_of(spec, tmp_path, items[stem])
        assert (e.value.reason, e.value.detail) == ("missing_file", detail)


def test_chase_patient_is_the_child(tmp_path):
    write_chase(tmp_path)
    spec = resolve_spec("chase_db1")
    items = items_of(spec, tmp_path)
    assert items["Image_01L"].patient_id == items["Image_01R"].patient_id != items["Image_02L"].patient_id
    assert ndimage.label(CHASE_1ST["Image_01R"])[1] == 2


def test_hrf_patient_is_the_stem(tmp_path):
    """Numbers restart in each group: 01_h, 01_dr and 01_g are three subjects."""
    write_hrf(tmp_path)
    items = items_of(resolve_spec("hrf"), tmp_path)
    assert len({items[s].patient_id for s in HRF_VESSELS}) == 3
    assert ndimage.label(HRF_VESSELS["01_dr"])[1] == 2 and ndimage.label(HRF_VESSELS["01_g"])[1] == 1


# --- IDRiD part A: one red RGB TIFF per lesion type (grey 76), absent types have no file, official split ----

SEG = "A. Segmentation"
IDRID_GT = {  # per image: lesion folder code → mask; no entry = no file (the type is absent)
    "IDRiD_01": {
        "MA": _rect((4, 6, 4, 6), (20, 22, 30, 32)),  # two microaneurysms, 4 px each
        "HE": _rect((10, 16, 20, 26)),
        "EX": _rect((24, 28, 4, 10)),
        "OD": _rect((8, 18, 30, 38)),
    },
    "IDRiD_55": {"SE": _rect((2, 8, 2, 8)), "OD": _rect((20, 30, 2, 12))},
}
IDRID_FOLDER = {
    "MA": ("1. Microaneurysms", "microaneurysm"),
    "HE": ("2. Haemorrhages", "haemorrhage"),
    "EX": ("3. Hard Exudates", "hard exudate"),
    "SE": ("4. Soft Exudates", "soft exudate"),
    "OD": ("5. Optic Disc", "optic disc"),
}


def _red(mask: np.ndarray) -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[mask, 0] = 255
    return rgb


def write_idrid(raw: Path) -> None:
    root = raw / SEG
    sets = {"IDRiD_01": "a. Training Set", "IDRiD_55": "b. Testing Set", "IDRiD_02": "a. Training Set"}
    for n, (stem, subset) in enumerate(sets.items()):
        _save(root / "1. Original Images" / subset / f"{stem}.jpg", _photo(n))
        for code, mask in IDRID_GT.get(stem, {"MA": _rect((4, 8, 4, 8))}).items():
            folder = root / "2. All Segmentation Groundtruths" / subset / IDRID_FOLDER[code][0]
            _save(folder / f"{stem}_{code}.tif", _red(mask))  # IDRiD_02: no optic disc file


def test_idrid(tmp_path):
    write_idrid(tmp_path)
    spec = resolve_spec("idrid")
    items = items_of(spec, tmp_path)
    assert sorted(items) == ["IDRiD_01", "IDRiD_02", "IDRiD_55"]
    assert {c: i.official_split for c, i in items.items()} == {
        "IDRiD_01": "train", "IDRiD_02": "train", "IDRiD_55": "test",
    }  # fmt: skip
    red = np.array(Image.open(tmp_path / SEG / "2. All Segmentation Groundtruths" / "a. Training Set"
                              / "5. Optic Disc" / "IDRiD_01_OD.tif").convert("L"))  # fmt: skip
    assert sorted(np.unique(red).tolist()) == [0, 76]  # why the threshold is 50, not 127
    for stem, truth in IDRID_GT.items():
        (frame,) = frames_of(spec, tmp_path, items[stem])
        want = {IDRID_FOLDER[code][1]: mask for code, mask in truth.items()}
        got = dict(frame.masks)
        assert sorted(got) == sorted(want), stem
        for label, mask in want.items():
            assert np.array_equal(got[label], mask), (stem, label)
    assert ndimage.label(IDRID_GT["IDRiD_01"]["MA"])[1] == 2
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items["IDRiD_02"])
    assert e.value.reason == "missing_file"
    assert e.value.detail.startswith(
        f"{SEG}/2. All Segmentation Groundtruths/a. Training Set/5. Optic Disc/IDRiD_02_OD.tif (the mask of"
    )
