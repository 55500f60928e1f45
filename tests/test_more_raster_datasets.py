"""The issue-15 2D image + mask specs (CVC-ColonDB, ETIS-Larib, Kvasir-Instrument, ISIC 2016/2017, PH2, GlaS)
on tiny fixtures written here in each publisher's layout and mask encoding, checked against the truth the
fixtures were drawn from: case ids, official splits, labels and region counts (through the region extractor
the build uses). GlaS masks are instance-coded (1…N, one id per gland): each separate gland is one region.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from layouts import save_image as _save
from PIL import Image

from medpclip.frame import ReadError
from medpclip.regions import extract_regions
from medpclip.sources import raster
from medpclip.specs import resolve_spec

H, W = 32, 40


def _rect(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean (H, W) mask of rectangles (row0, row1, col0, col1), exclusive ends."""
    m = np.zeros((H, W), bool)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = True
    return m


def _u8(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8) * 255


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 230, (H, W, 3), dtype=np.uint8)


ONE = _rect((6, 22, 8, 28))  # 320 px
TWO = _rect((2, 10, 2, 12), (18, 28, 24, 36))  # 80 + 120 px, apart


# --- the layouts: spec → {case id: (official split, regions)} ----------------------------------------------


def write_cvc_colondb(raw: Path) -> dict:
    root = raw / "CVC-ColonDB"
    truth = {"1": ONE, "2": TWO, "15": ONE}
    for n, (stem, mask) in enumerate(truth.items()):
        _save(root / f"{stem}.bmp", _photo(n))
        _save(root / f"p{stem}.bmp", _u8(mask))
        _save(root / f"s{stem}.bmp", _u8(_rect((0, 4, 0, W))))  # non-informative region: not a label
        _save(root / f"c{stem}.bmp", _u8(mask & ~_rect((7, 21, 9, 27))))  # contour: not a label
    return {stem: (None, 1 if m is ONE else 2) for stem, m in truth.items()}


def write_etis_larib(raw: Path) -> dict:
    root = raw / "ETIS-LaribPolypDB"
    truth = {"1": ONE, "196": TWO}
    for n, (stem, mask) in enumerate(truth.items()):
        _save(root / "ETIS-LaribPolypDB" / f"{stem}.tif", _photo(10 + n))
        _save(root / "Ground Truth" / f"p{stem}.tif", _u8(mask))
    return {"1": (None, 1), "196": (None, 2)}


def write_kvasir_instrument(raw: Path) -> dict:
    root = raw / "kvasir-instrument"
    truth = {"ckcu8ty6z00003b5yzfaezbs5": ONE, "ckcuag4hy00023b5ynbjt3y7s": TWO}
    for n, (stem, mask) in enumerate(truth.items()):
        _save(root / "images" / f"{stem}.jpg", _photo(20 + n))
        _save(root / "masks" / f"{stem}.png", _u8(mask))
    (root / "train.txt").write_text("ckcu8ty6z00003b5yzfaezbs5\n")  # official lists: one bare id a line
    (root / "test.txt").write_text("ckcuag4hy00023b5ynbjt3y7s\n")
    (root / "bboxes.json").write_text("{}")
    split = {"ckcu8ty6z00003b5yzfaezbs5": "train", "ckcuag4hy00023b5ynbjt3y7s": "test"}
    return {stem: (split[stem], 1 if m is ONE else 2) for stem, m in truth.items()}


def write_isic2016(raw: Path) -> dict:
    root = raw / "isic2016"
    cases = {"ISIC_0000000": "Training", "ISIC_0000001": "Training", "ISIC_0000003": "Test"}
    for n, (case, part) in enumerate(cases.items()):
        _save(root / f"ISBI2016_ISIC_Part1_{part}_Data" / f"{case}.jpg", _photo(30 + n))
        suffix = "_Segmentation" if n < 2 else "_segmentation"  # either spelling
        _save(root / f"ISBI2016_ISIC_Part1_{part}_GroundTruth" / f"{case}{suffix}.png", _u8(ONE))
    split = {"Training": "train", "Test": "test"}
    return {case: (split[part], 1) for case, part in cases.items()}


def write_isic2017(raw: Path) -> dict:
    root = raw / "isic2017"
    cases = {"ISIC_0000000": "Training", "ISIC_0001769": "Validation", "ISIC_0012086": "Test_v2"}
    for n, (case, part) in enumerate(cases.items()):
        _save(root / f"ISIC-2017_{part}_Data" / f"{case}.jpg", _photo(40 + n))
        _save(root / f"ISIC-2017_{part}_Part1_GroundTruth" / f"{case}_segmentation.png", _u8(ONE))
    superpixels = np.zeros((H, W, 3), np.uint8)
    _save(root / "ISIC-2017_Training_Data" / "ISIC_0000000_superpixels.png", superpixels)  # Task 2 file
    (root / "ISIC-2017_Training_Data" / "ISIC-2017_Training_Data_metadata.csv").write_text("image_id\n")
    split = {"Training": "train", "Validation": "val", "Test_v2": "test"}
    return {case: (split[part], 1) for case, part in cases.items()}


def write_ph2(raw: Path) -> dict:
    images = raw / "PH2Dataset" / "PH2 Dataset images"
    for n, case in enumerate(("IMD002", "IMD437")):
        _save(images / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp", _photo(50 + n))
        lesion = Image.fromarray(_u8(ONE)).convert("1")  # a 1-bit BMP
        path = images / case / f"{case}_lesion" / f"{case}_lesion.bmp"
        path.parent.mkdir(parents=True, exist_ok=True)
        lesion.save(path)
        _save(images / case / f"{case}_roi" / f"{case}_R1_Label4.bmp", _u8(_rect((8, 12, 10, 14))))
    (raw / "PH2Dataset" / "PH2_dataset.txt").write_text("|| Name || Histological Diagnosis ||\n")
    return {"IMD002": (None, 1), "IMD437": (None, 1)}


def _glands(*rects: tuple[int, int, int, int]) -> np.ndarray:
    """Instance-coded gland mask: gland k (1-based) of the rectangles has value k."""
    coded = np.zeros((H, W), np.uint8)
    for k, r in enumerate(rects, start=1):
        coded[_rect(r)] = k
    return coded


GLAS = {  # case → (official split, instance-coded mask, glands)
    "train_1": ("train", _glands((2, 8, 2, 10), (2, 8, 14, 22), (14, 24, 4, 14), (20, 30, 26, 38)), 4),
    "train_10": ("train", _glands((4, 20, 6, 30)), 1),
    "testA_1": ("test", _glands((2, 12, 2, 12), (16, 28, 20, 34)), 2),
    "testB_20": ("test", _glands((1, 9, 1, 9), (1, 9, 12, 20), (1, 9, 24, 32), (14, 30, 4, 36)), 4),
}


def write_glas(raw: Path) -> dict:
    root = raw / "Warwick QU Dataset (Released 2016_07_08)"
    for n, (case, (_, coded, _)) in enumerate(GLAS.items()):
        _save(root / f"{case}.bmp", _photo(60 + n))
        _save(root / f"{case}_anno.bmp", coded)  # 8-bit BMP, ids 1…N
    (root / "Grade.csv").write_text("name,patient ID,grade (GlaS),grade (Sirinukunwattana et al. 2015)\n")
    return {case: (split, glands) for case, (split, _, glands) in GLAS.items()}


WRITERS = {
    "cvc_colondb": write_cvc_colondb,
    "etis_larib": write_etis_larib,
    "kvasir_instrument": write_kvasir_instrument,
    "isic2016": write_isic2016,
    "isic2017": write_isic2017,
    "ph2": write_ph2,
    "glas": write_glas,
}
LABEL = {
    "cvc_colondb": "polyp",
    "etis_larib": "polyp",
    "kvasir_instrument": "instrument",
    "isic2016": "lesion",
    "isic2017": "lesion",
    "ph2": "lesion",
    "glas": "gland",
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("raw2d_more")
    return root, {name: write(root) for name, write in WRITERS.items()}


def _regions(frame) -> list:
    regions, _ = extract_regions(
        frame.shape,
        label_map=frame.label_map,
        label_values=frame.label_values,
        masks=frame.masks,
        boxes=frame.boxes,
        min_area_px=16,
        rng_for=lambda _: np.random.default_rng(0),
    )
    return regions


# --- every spec --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(WRITERS))
def test_spec_is_complete_and_has_census_stats(name):
    spec = resolve_spec(name)
    assert spec.format.family == "raster" and spec.intensity.kind == "uint8"
    assert spec.citation and spec.licence and spec.homepage.startswith(("https://", "http://"))
    assert [e.label for e in spec.labels] == [LABEL[name]]
    assert raster.parse_options(spec, raster.RasterOptions)
    assert spec.stats is not None and spec.stats.images and spec.stats.source
    assert "regions_per_sample" in spec.stats.estimated


@pytest.mark.parametrize("name", list(WRITERS))
def test_layout_gives_the_cases_splits_labels_and_regions(fixtures, name):
    raw, truth = fixtures
    spec = resolve_spec(name)
    items = items_of(spec, raw)
    assert sorted(items) == sorted(truth[name])  # masks, contours, superpixels, tables are no cases
    for case, (split, n_regions) in truth[name].items():
        item = items[case]
        assert item.official_split == split and item.patient_id == case
        assert [f.role for f in item.files] == ["image", "mask"]
        (frame,) = frames_of(spec, raw, item)
        regions = _regions(frame)
        assert {r.label for r in regions} == {LABEL[name]}
        assert len(regions) == n_regions, (case, [r.area_px for r in regions])


def test_glas_gives_one_region_per_gland_with_its_area(fixtures):
    raw, _ = fixtures
    spec = resolve_spec("glas")
    items = items_of(spec, raw)
    for case, (_, coded, n) in GLAS.items():
        (frame,) = frames_of(spec, raw, items[case])
        regions = _regions(frame)
        areas = sorted(int(r.area_px) for r in regions)
        assert areas == sorted(int((coded == k).sum()) for k in range(1, n + 1)), case


def test_glas_touching_glands_stay_two_regions(tmp_path):
    """mask_mode instances: two gland ids that share an edge are two regions (a binary mask would merge them)."""
    root = tmp_path / "Warwick QU Dataset (Released 2016_07_08)"
    _save(root / "train_2.bmp", _photo(70))
    coded = _glands((4, 20, 4, 20), (4, 20, 20, 36))  # ids 1 and 2 share an edge
    _save(root / "train_2_anno.bmp", coded)
    spec = resolve_spec("glas")
    (frame,) = frames_of(spec, tmp_path, items_of(spec, tmp_path)["train_2"])
    assert sorted(int(r.area_px) for r in _regions(frame)) == sorted(int((coded == k).sum()) for k in (1, 2))


@pytest.mark.parametrize(
    "name, missing",
    [
        ("etis_larib", "ETIS-LaribPolypDB/Ground Truth/p1.tif"),
        ("isic2017", "isic2017/ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png"),
        ("ph2", "PH2Dataset/PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp"),
        ("glas", "Warwick QU Dataset (Released 2016_07_08)/train_1_anno.bmp"),
    ],
)
def test_an_image_without_its_mask_is_rejected_naming_it(tmp_path, name, missing):
    truth = WRITERS[name](tmp_path)
    (tmp_path / missing).unlink()
    spec = resolve_spec(name)
    items = items_of(spec, tmp_path)
    assert sorted(items) == sorted(truth)  # still a case, rejected when read
    case = Path(missing).stem.removeprefix("p").split("_anno")[0].split("_lesion")[0]
    case = case.removesuffix("_segmentation")
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items[case])
    assert e.value.reason == "missing_file" and spec.root in e.value.detail


def test_kvasir_instrument_split_lists_give_the_official_splits(tmp_path):
    """train.txt / test.txt decide the split; an id listed but not on disk, or in both lists, is rejected."""
    write_kvasir_instrument(tmp_path)
    root = tmp_path / "kvasir-instrument"
    (root / "train.txt").write_text(
        "ckcu8ty6z00003b5yzfaezbs5\nckcu00000000000000000000\n\n"
    )  # + an id not on disk
    (root / "test.txt").write_text(
        "ckcuag4hy00023b5ynbjt3y7s\r\nckcu8ty6z00003b5yzfaezbs5\r\n"
    )  # CRLF; in both
    spec = resolve_spec("kvasir_instrument")
    items = items_of(spec, tmp_path)
    assert items["ckcuag4hy00023b5ynbjt3y7s"].official_split == "test"
    for case, reason in (
        ("ckcu00000000000000000000", "missing_file"),
        ("ckcu8ty6z00003b5yzfaezbs5", "bad_row"),
    ):
        with pytest.raises(ReadError) as e:
            frames_of(spec, tmp_path, items[case])
        assert e.value.reason == reason and ".txt" in e.value.detail, e.value.detail
