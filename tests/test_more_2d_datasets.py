"""The issue-15 2D image + mask specs of chest X-ray, dermoscopy, fundus, ultrasound and colonoscopy sets
(QaTa-COV19 v2, COVID-QU-Ex lung and infection trees, HAM10000 with the Tschandl segmentations and its metadata table, Drishti-GS1
soft maps, TN3K trainval and test folders numbering alike, with JPEG masks, PolypGen single frames with JPEG masks) on tiny fixtures
written here in each publisher's layout and mask encoding, checked against the truth the fixtures were drawn
from: case ids, official splits, patient ids, image labels, region labels and counts (through the region
extractor the build uses), and the junk each archive carries that must not be read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from layouts import junk
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


def _grey(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 230, (H, W), dtype=np.uint8)


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 230, (H, W, 3), dtype=np.uint8)


ONE = _rect((6, 22, 8, 28))  # 320 px
LUNGS = _rect((4, 28, 3, 17), (4, 28, 23, 37))  # two lung fields, apart: 336 + 336 px
SPOTS = _rect((8, 14, 5, 12), (16, 24, 26, 34))  # infection inside each lung: 42 + 64 px


# --- the layouts: spec → {case id: (official split, patient id, image labels, {region label: regions})} ----


def write_qata_cov19(raw: Path) -> dict:
    v2 = raw / "QaTa-COV19" / "QaTa-COV19-v2"
    cases = {  # BIMCV names keep the subject (the patient); other names are their own group
        "sub-S09112_ses-E18522_run-1_bp-chest_vp-ap_dx": ("Train Set", SPOTS),
        "covid_1": ("Train Set", ONE),
        "sub-S09112_ses-E20931_run-1_bp-chest_vp-ap_cr": ("Test Set", ONE),
    }
    for n, (stem, (part, mask)) in enumerate(cases.items()):
        _save(
            v2 / part / "Images" / f"{stem}.png", _photo(n)
        )  # stored RGB here: grey: true reads one channel
        _save(v2 / part / "Ground-truths" / f"mask_{stem}.png", _u8(mask))
    junk(v2 / "Train Set" / "Images" / "._covid_1.png")
    _save(v2 / "Test Set" / "Ground-truths" / "mask_covid_9.png", _u8(ONE))  # orphan mask: no case
    (raw / "QaTa-COV19" / "readme.txt").write_text("QaTa-COV19 v2\n")
    split = {"Train Set": "train", "Test Set": "test"}
    pid = {stem: stem.split("_ses-")[0] if stem.startswith("sub-") else stem for stem in cases}
    return {
        stem: (split[part], pid[stem], set(), {"infection": 2 if mask is SPOTS else 1})
        for stem, (part, mask) in cases.items()
    }


LUNG_TREE = ("Lung Segmentation Data", "Lung Segmentation Data")
INFECTION_TREE = ("Infection Segmentation Data", "Infection Segmentation Data")
CLASS_LABEL = {"COVID-19": {"covid-19"}, "Non-COVID": {"non-covid"}, "Normal": {"normal"}}


def _covid_qu_ex(raw: Path, tree: tuple[str, str], cases: dict, seed: int) -> Path:
    base = raw / "COVID-QU-Ex" / Path(*tree)
    for n, (stem, (part, cls, infection)) in enumerate(cases.items()):
        _save(base / part / cls / "images" / f"{stem}.png", _grey(seed + n))
        _save(base / part / cls / "lung masks" / f"{stem}.png", _u8(LUNGS))
        if infection is not None:
            _save(base / part / cls / "infection masks" / f"{stem}.png", _u8(infection))
    return base


def write_covid_qu_ex(raw: Path) -> dict:
    cases = {  # names with spaces and parentheses, as released
        "covid_1": ("Train", "COVID-19", None),
        "non_COVID (1)": ("Val", "Non-COVID", None),
        "Normal (1)": ("Test", "Normal", None),
    }
    base = _covid_qu_ex(raw, LUNG_TREE, cases, 10)
    junk(base / "Train" / "COVID-19" / "images" / "._covid_1.png")
    (base / "Train" / "COVID-19" / "images" / "Thumbs.db").write_bytes(b"\xd0\xcf")
    _write_infection_tree(raw)  # the other tree sits beside it under the same root: never read here
    split = {"Train": "train", "Val": "val", "Test": "test"}
    return {
        stem: (split[part], stem, CLASS_LABEL[cls], {"lung": 2}) for stem, (part, cls, _) in cases.items()
    }


INFECTION_CASES = {  # infection masks: COVID-19 ones hold infection, the others are all background
    "covid_2": ("Train", "COVID-19", SPOTS),
    "non_COVID (2)": ("Val", "Non-COVID", np.zeros((H, W), bool)),
    "Normal (2)": ("Test", "Normal", None),  # no infection file at all: allowed
}


def _write_infection_tree(raw: Path) -> Path:
    if (raw / "COVID-QU-Ex" / Path(*INFECTION_TREE)).exists():
        return raw / "COVID-QU-Ex" / Path(*INFECTION_TREE)
    return _covid_qu_ex(raw, INFECTION_TREE, INFECTION_CASES, 20)


def write_covid_qu_ex_infection(raw: Path) -> dict:
    base = _write_infection_tree(raw)
    junk(base / "Val" / "Non-COVID" / "infection masks" / "._non_COVID (2).png")
    split = {"Train": "train", "Val": "val", "Test": "test"}
    return {
        stem: (
            split[part],
            stem,
            CLASS_LABEL[cls],
            {"lung": 2, "infection": 2} if cls == "COVID-19" else {"lung": 2},
        )
        for stem, (part, cls, _) in INFECTION_CASES.items()
    }


HAM10000 = {  # image → (part folder, lesion_id, region label from dx); two images of lesion HAM_0000118
    "ISIC_0024306": ("HAM10000_images_part_1", "HAM_0000118", "melanocytic nevus"),
    "ISIC_0025030": ("HAM10000_images_part_1", "HAM_0000118", "melanocytic nevus"),
    "ISIC_0029306": ("HAM10000_images_part_2", "HAM_0002730", "melanoma"),
    "ISIC_0031633": ("HAM10000_images_part_2", "HAM_0007418", "vascular lesion"),
}


def write_ham10000(raw: Path) -> dict:
    root = raw / "HAM10000"
    cases = {case: part for case, (part, _, _) in HAM10000.items()}
    for n, (case, part) in enumerate(cases.items()):
        _save(root / part / f"{case}.jpg", _photo(30 + n), quality=90)
        _save(root / "HAM10000_segmentations_lesion_tschandl" / f"{case}_segmentation.png", _u8(ONE))
    # the Kaggle mirror's lower-case duplicate folder and its tables: none of them is a case
    _save(root / "ham10000_images_part_1" / "ISIC_0024307.jpg", _photo(39), quality=90)
    (root / "HAM10000_metadata.csv").write_text(  # as released: lesion_id first, dx codes
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_0000118,ISIC_0025030,nv,follow_up,45.0,male,trunk\n"
        "HAM_0000118,ISIC_0024306,nv,follow_up,45.0,male,trunk\n"
        "HAM_0002730,ISIC_0029306,mel,histo,70.0,female,back\n"
        "HAM_0007418,ISIC_0031633,vasc,consensus,55.0,female,abdomen\n"
    )
    (root / "hmnist_28_28_RGB.csv").write_text("pixel0000,label\n0,2\n")
    return {case: (None, lesion, set(), {label: 1}) for case, (_, lesion, label) in HAM10000.items()}


def _soft_map(*layers: tuple[np.ndarray, int]) -> np.ndarray:
    """A Drishti soft map: each (mask, grey) layer paints its grey, later layers on top."""
    out = np.zeros((H, W), np.uint8)
    for mask, grey in layers:
        out[mask] = grey
    return out


# one disc marked by 1…4 experts in rings (64 / 128 / 191 / 255); the cup inside it likewise
DISC = _soft_map(
    (_rect((2, 30, 4, 36)), 64),
    (_rect((4, 28, 6, 34)), 128),
    (_rect((6, 26, 8, 32)), 191),
    (_rect((8, 24, 10, 30)), 255),
)
CUP = _soft_map(
    (_rect((10, 22, 12, 28)), 128), (_rect((12, 20, 14, 26)), 191), (_rect((14, 18, 16, 24)), 255)
)


def write_drishti_gs(raw: Path) -> dict:
    root = raw / "Drishti-GS1_files"
    cases = {"drishtiGS_002": ("Training", "GT"), "drishtiGS_001": ("Test", "Test_GT")}
    for n, (case, (part, gt)) in enumerate(cases.items()):
        _save(root / part / "Images" / f"{case}.png", _photo(40 + n))
        soft = root / part / gt / case / "SoftMap"
        _save(soft / f"{case}_ODsegSoftmap.png", DISC)
        _save(soft / f"{case}_cupsegSoftmap.png", CUP)
        boundary = root / part / gt / case / "AvgBoundary"
        boundary.mkdir(parents=True)
        (boundary / f"{case}_ODAvgBoundary.txt").write_text("100 200\n")
        (root / part / gt / case / f"{case}_cdrValues.txt").write_text("0.6 0.6 0.6 0.6\n")
    junk(root / "Training" / "Images" / "._drishtiGS_002.png")
    split = {"Training": "train", "Test": "test"}
    return {
        case: (split[part], case, set(), {"optic disc": 1, "optic cup": 1})
        for case, (part, _) in cases.items()
    }


TWO_NODULES = _rect((2, 10, 2, 12), (18, 28, 24, 36))
TN3K = {  # both folders number from 0000: same names, other pixels; the case id names the folder
    "trainval": {"0000": ONE, "0007": TWO_NODULES},
    "test": {"0000": _rect((4, 20, 10, 30)), "0613": ONE},
}


def write_tn3k(raw: Path) -> dict:
    root = raw / "tn3k"
    for seed, (part, cases) in zip((50, 60), TN3K.items(), strict=True):
        for n, (stem, mask) in enumerate(cases.items()):
            _save(root / f"{part}-image" / f"{stem}.jpg", _photo(seed + n), quality=85)  # RGB-stored B-mode
            _save(root / f"{part}-mask" / f"{stem}.jpg", _u8(mask), quality=75)  # JPEG mask: noisy edges
    (root / "tn3k-trainval-fold0.json").write_text('{"train": [0], "val": [1]}')
    junk(root / "trainval-image" / "._0000.jpg")
    junk(root / "test-mask" / "._0613.jpg")
    split = {"trainval": "train", "test": "test"}
    return {
        f"{part}-{stem}": (split[part], f"{part}-{stem}", set(), {"nodule": 2 if mask is TWO_NODULES else 1})
        for part, cases in TN3K.items()
        for stem, mask in cases.items()
    }


POLYPGEN = {  # centre → {frame: drawn polyps}; masks are JPEG with the `_mask` suffix
    "C1": {"100H0050": _rect((2, 10, 2, 12), (18, 28, 24, 36))},
    "C3": {"C3_000001": ONE},
}


def write_polypgen(raw: Path) -> dict:
    root = raw / "PolypGen2021_MultiCenterData_v3"
    for n, (centre, frames) in enumerate(POLYPGEN.items()):
        for stem, mask in frames.items():
            _save(root / f"data_{centre}" / f"images_{centre}" / f"{stem}.jpg", _photo(70 + n), quality=90)
            _save(root / f"data_{centre}" / f"masks_{centre}" / f"{stem}_mask.jpg", _u8(mask), quality=75)
            (root / f"data_{centre}" / f"bbox_{centre}").mkdir(parents=True, exist_ok=True)
            (root / f"data_{centre}" / f"bbox_{centre}" / f"{stem}_mask.txt").write_text("polyp 2 2 12 10\n")
    seq = root / "sequenceData" / "positive" / "seq1"  # video frames: not read by this spec
    _save(seq / "images_seq1" / "seq1_0001.jpg", _photo(79), quality=90)
    _save(seq / "masks_seq1" / "seq1_0001_mask.jpg", _u8(ONE), quality=75)
    _save(root / "data_C2_negative" / "images_C2_negative" / "neg_0001.jpg", _photo(78), quality=90)
    junk(root / "data_C1" / "images_C1" / "._100H0050.jpg")
    return {
        stem: (None, stem, set(), {"polyp": 2 if stem == "100H0050" else 1})
        for frames in POLYPGEN.values()
        for stem in frames
    }


WRITERS = {
    "qata_cov19": write_qata_cov19,
    "covid_qu_ex": write_covid_qu_ex,
    "covid_qu_ex_infection": write_covid_qu_ex_infection,
    "ham10000": write_ham10000,
    "drishti_gs": write_drishti_gs,
    "tn3k": write_tn3k,
    "polypgen": write_polypgen,
}
MASK_FILES = {
    "qata_cov19": 1,
    "covid_qu_ex": 1,
    "ham10000": 1,
    "drishti_gs": 2,
    "tn3k": 1,
    "polypgen": 1,
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("raw2d_issue15")
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


def _counts(regions) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in regions:
        out[r.label] = out.get(r.label, 0) + 1
    return out


# --- every spec --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(WRITERS))
def test_spec_is_complete_and_has_census_stats(name):
    spec = resolve_spec(name)
    assert spec.format.family == "raster" and spec.intensity.kind == "uint8"
    assert spec.citation and spec.licence and spec.homepage.startswith(("https://", "http://"))
    assert raster.parse_options(spec, raster.RasterOptions)
    assert spec.stats is not None and spec.stats.images and spec.stats.source
    assert "regions_per_sample" in spec.stats.estimated


@pytest.mark.parametrize("name", list(WRITERS))
def test_layout_gives_the_cases_splits_labels_and_regions(fixtures, name):
    raw, truth = fixtures
    spec = resolve_spec(name)
    items = items_of(spec, raw)
    assert sorted(items) == sorted(truth[name])  # masks, junk, tables, the other tree are no cases
    for case, (split, patient, image_labels, regions) in truth[name].items():
        item = items[case]
        assert item.official_split == split and item.patient_id == patient, case
        roles = [f.role for f in item.files]
        assert roles[0] == "image" and set(roles[1:]) == {"mask"}, roles
        (frame,) = frames_of(spec, raw, item)
        assert set(frame.image_labels) == image_labels, case
        assert _counts(_regions(frame)) == regions, case


@pytest.mark.parametrize("name", list(MASK_FILES))
def test_each_image_brings_exactly_its_mask_files(fixtures, name):
    raw, truth = fixtures
    spec = resolve_spec(name)
    for case, item in items_of(spec, raw).items():
        masks = [f.path for f in item.files if f.role == "mask"]
        stem = case.split("-", 1)[1] if name == "tn3k" else case  # tn3k: the case id names the folder too
        assert len(masks) == MASK_FILES[name] and all(stem in Path(m).name for m in masks), masks


def test_covid_qu_ex_infection_reads_only_the_masks_that_exist(fixtures):
    raw, _ = fixtures
    items = items_of(resolve_spec("covid_qu_ex_infection"), raw)
    n_masks = {case: sum(f.role == "mask" for f in item.files) for case, item in items.items()}
    assert n_masks == {"covid_2": 2, "non_COVID (2)": 2, "Normal (2)": 1}


def test_drishti_soft_maps_keep_the_pixels_of_three_or_four_experts(fixtures):
    raw, _ = fixtures
    spec = resolve_spec("drishti_gs")
    for item in items_of(spec, raw).values():
        (frame,) = frames_of(spec, raw, item)
        area = {r.label: int(r.area_px) for r in _regions(frame)}
        assert area == {"optic disc": int((DISC >= 191).sum()), "optic cup": int((CUP >= 191).sum())}


def test_qata_masks_are_prefixed_and_bimcv_subjects_group_their_images(fixtures):
    raw, truth = fixtures
    items = items_of(resolve_spec("qata_cov19"), raw)
    bimcv = [i for i in items.values() if i.case_id.startswith("sub-S09112_")]
    assert {i.patient_id for i in bimcv} == {"sub-S09112"} and {i.official_split for i in bimcv} == {
        "train",
        "test",
    }
    for item in items.values():
        (mask,) = [f.path for f in item.files if f.role == "mask"]
        assert Path(mask).name == f"mask_{item.case_id}.png" and "/Ground-truths/" in mask


@pytest.mark.parametrize(
    "name, missing",
    [
        ("qata_cov19", "QaTa-COV19/QaTa-COV19-v2/Test Set/Ground-truths/mask_{}.png"),
        (
            "covid_qu_ex",
            "COVID-QU-Ex/Lung Segmentation Data/Lung Segmentation Data/Val/Non-COVID/lung masks/{}.png",
        ),
        (
            "covid_qu_ex_infection",
            "COVID-QU-Ex/Infection Segmentation Data/Infection Segmentation Data/Train/COVID-19/infection masks/{}.png",
        ),
        ("ham10000", "HAM10000/HAM10000_segmentations_lesion_tschandl/{}_segmentation.png"),
        ("drishti_gs", "Drishti-GS1_files/Test/Test_GT/{0}/SoftMap/{0}_cupsegSoftmap.png"),
        ("tn3k", "tn3k/test-mask/0613.jpg"),
        ("polypgen", "PolypGen2021_MultiCenterData_v3/data_C3/masks_C3/{}_mask.jpg"),
    ],
)
def test_an_image_without_its_mask_is_rejected_naming_it(tmp_path, name, missing):
    truth = WRITERS[name](tmp_path)
    case = {
        "qata_cov19": "sub-S09112_ses-E20931_run-1_bp-chest_vp-ap_cr",
        "covid_qu_ex": "non_COVID (1)",
        "covid_qu_ex_infection": "covid_2",
        "ham10000": "ISIC_0029306",
        "drishti_gs": "drishtiGS_001",
        "tn3k": "test-0613",
        "polypgen": "C3_000001",
    }[name]
    rel = missing.format(case)
    (tmp_path / rel).unlink()
    spec = resolve_spec(name)
    items = items_of(spec, tmp_path)
    assert sorted(items) == sorted(truth)  # still a case, rejected when read
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items[case])
    assert e.value.reason == "missing_file" and rel.split("/", 1)[1] in e.value.detail


def test_covid_qu_ex_infection_in_a_normal_image_is_refused(tmp_path):
    """Non-COVID and Normal infection masks must be all background: a drawn pixel rejects the image."""
    base = _write_infection_tree(tmp_path)
    _save(base / "Val" / "Non-COVID" / "infection masks" / "non_COVID (2).png", _u8(SPOTS))
    spec = resolve_spec("covid_qu_ex_infection")
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items_of(spec, tmp_path)["non_COVID (2)"])
    assert e.value.reason == "bad_label_value" and "must be empty" in e.value.detail


def test_ham10000_refuses_a_one_coded_mask(tmp_path):
    """The released masks are lossless 0/255 PNGs; a 0/1-coded mask, as some re-packs write, is refused
    rather than read as empty."""
    write_ham10000(tmp_path)
    spec = resolve_spec("ham10000")
    mask = tmp_path / "HAM10000" / "HAM10000_segmentations_lesion_tschandl" / "ISIC_0024306_segmentation.png"
    _save(mask, ONE.astype(np.uint8))
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items_of(spec, tmp_path)["ISIC_0024306"])
    assert e.value.reason == "bad_label_value"


def test_ham10000_labels_and_lesion_groups_come_from_the_metadata_table(fixtures):
    """dx names each image's lesion label; lesion_id is the group, so one lesion's images share a split."""
    from medpclip.corpus.split import split_by_rule

    raw, _ = fixtures
    spec = resolve_spec("ham10000")
    items = items_of(spec, raw)
    by_lesion: dict[str, set[str]] = {}
    for case, (_, lesion, label) in HAM10000.items():
        item = items[case]
        assert item.patient_id == lesion and dict(item.meta)["mask_labels"] == (label,), case
        by_lesion.setdefault(lesion, set()).add(split_by_rule(spec.split, spec.name, item.patient_id))
    assert all(len(splits) == 1 for splits in by_lesion.values()), by_lesion
    assert len([c for c, (_, lesion, _) in HAM10000.items() if lesion == "HAM_0000118"]) == 2


@pytest.mark.parametrize(
    "row, reason",
    [
        ("HAM_0009999,ISIC_0099999,mel,histo,60.0,male,back\n", "missing_file"),  # a row without its image
        ("HAM_0002730,ISIC_0029306,scc,histo,70.0,female,back\n", "bad_label_value"),  # a dx not listed
    ],
)
def test_ham10000_table_rows_that_do_not_fit_are_rejected_cases(tmp_path, row, reason):
    write_ham10000(tmp_path)
    table = tmp_path / "HAM10000" / "HAM10000_metadata.csv"
    lines = table.read_text().splitlines(keepends=True)
    table.write_text("".join([lines[0], row, *lines[1:]]))  # first row of an id wins
    spec = resolve_spec("ham10000")
    items = items_of(spec, tmp_path)
    case = row.split(",")[1]
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items[case])
    assert e.value.reason == reason and "HAM10000_metadata.csv" in e.value.detail


def test_ham10000_image_missing_from_the_table_is_rejected(tmp_path):
    write_ham10000(tmp_path)
    table = tmp_path / "HAM10000" / "HAM10000_metadata.csv"
    table.write_text(
        "".join(line for line in table.read_text().splitlines(keepends=True) if "ISIC_0031633" not in line)
    )
    spec = resolve_spec("ham10000")
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items_of(spec, tmp_path)["ISIC_0031633"])
    assert e.value.reason == "bad_row" and "no row" in e.value.detail


def test_tn3k_jpeg_masks_are_noisy_and_thresholded_to_the_drawn_nodule(fixtures):
    """The JPEG masks carry compression noise (values between 0 and 255): grey > 127 recovers the drawn
    nodule within a thin edge band, and the same image number in the two folders is two cases, each read
    with its own folder's mask."""
    raw, _ = fixtures
    spec = resolve_spec("tn3k")
    items = items_of(spec, raw)
    assert {"trainval-0000", "test-0000"} <= set(items)
    for part, cases in TN3K.items():
        for stem, drawn in cases.items():
            with Image.open(raw / "tn3k" / f"{part}-mask" / f"{stem}.jpg") as img:
                grey = np.asarray(img.convert("L"))
            assert len(np.unique(grey)) > 2  # the fixture's noise is real
            item = items[f"{part}-{stem}"]
            assert [f.path for f in item.files] == [
                f"tn3k/{part}-image/{stem}.jpg",
                f"tn3k/{part}-mask/{stem}.jpg",
            ]
            (frame,) = frames_of(spec, raw, item)
            (mask,) = [m for _, m in frame.masks]
            assert (mask ^ drawn).sum() <= 0.1 * drawn.sum(), (part, stem)
