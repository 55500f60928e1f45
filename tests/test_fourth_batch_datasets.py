"""Datasets of the fourth batch (issue 15): RibFrac (fracture instances classed by a per-instance CSV: the
volumes option ``instance_table``) and PI-CAI (MetaImage T2 with the human-expert lesion labels of
picai_labels), each read by its shipped spec from a tiny copy written here in the publisher's layout
(folder names and depth, file names, CSV columns, label codes, files a download holds that are not cases).

Phantoms are 4 × 4 px cells on a canonical RAS+ grid of 16 × 12 × 4 (i → the patient's right, j → anterior,
k → superior); the axial display flips both in-plane axes, so a cell at (column, row) has the box
``cell_box(column, row)``. The truth (labels per slice, region counts, boxes) is written out by hand.
No mocks, no Ray.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from corpus_utils import discovery_notes, frames_of, items_of, regions_of, rejected
from layouts import junk, save_image
from layouts import save_nifti as save
from test_third_session_volumes import cell_box, cells, ct_image, display, mr_image, save_mha

from medpclip.census import census
from medpclip.frame import ReadError, SourceFile
from medpclip.specs import SpecError, parse_spec, resolve_spec
from medpclip.text.kb import concept_for_label, load_kb

# --- RibFrac: instance ids in the label map, their classes in the info CSVs ----------------------------------

# RibFrac1: two touching displaced fractures (instances 1, 2: one class, two regions), an unidentified one (3,
# code -1) and a buckle fracture (4) on the top slice
RIB1 = cells({1: [(0, 0, (0, 3))], 2: [(1, 0, (0, 3))], 3: [(3, 2, (1, 4))], 4: [(2, 2, (3, 4))]})
RIB1_TRUTH = {
    0: {"displaced": 2},
    1: {"displaced": 2, "unidentified": 1},
    2: {"displaced": 2, "unidentified": 1},
    3: {"unidentified": 1, "buckle": 1},
}
RIB1_BOXES = {0: [("displaced", cell_box(0, 0)), ("displaced", cell_box(1, 0))],
              3: [("buckle", cell_box(2, 2)), ("unidentified", cell_box(3, 2))]}  # fmt: skip
RIB_ONE = cells({1: [(2, 1, (1, 3))]})  # one fracture: RibFrac301 (segmental), RibFrac421 (non-displaced)

INFO_1 = (
    "public_id,label_id,label_code\n"
    "RibFrac1,0,0\nRibFrac1,1,1\nRibFrac1,2,1\nRibFrac1,3,-1\nRibFrac1,4,3\n"
    "RibFrac2,0,0\nRibFrac2,1,2\n"  # RibFrac2's map also holds instance 2, which has no row
    "RibFrac4,0,0\nRibFrac4,1,7\n"  # a code that is no class
)
INFO_2 = "public_id,label_id,label_code\nRibFrac301,0,0\nRibFrac301,1,4\n"
INFO_VAL = "public_id,label_id,label_code\nRibFrac421,0,0\nRibFrac421,1,2\nRibFrac422,0,0\n"  # 422: no image


def write_ribfrac(raw: Path) -> None:
    """Both Part1 zips unpacked into one Part1/, Part2/, the validation folders, the test images (no labels),
    the three info CSVs, a case none of them names (RibFrac3), junk."""
    d = raw / "RibFrac"
    for n, lab in (
        (1, RIB1),
        (2, cells({1: [(0, 0, (0, 2))], 2: [(2, 0, (0, 2))]})),
        (3, RIB_ONE),
        (4, RIB_ONE),
    ):
        save(d / "Part1" / f"RibFrac{n}-image.nii.gz", ct_image(lab, n), zooms=(0.8, 0.8, 1.25))
        save(d / "Part1" / f"RibFrac{n}-label.nii.gz", lab, zooms=(0.8, 0.8, 1.25))
    save(d / "Part2" / "RibFrac301-image.nii.gz", ct_image(RIB_ONE, 301), "LPS")
    save(d / "Part2" / "RibFrac301-label.nii.gz", RIB_ONE, "LPS")
    save(d / "ribfrac-val-images" / "RibFrac421-image.nii.gz", ct_image(RIB_ONE, 421))
    save(d / "ribfrac-val-labels" / "RibFrac421-label.nii.gz", RIB_ONE)
    save(d / "ribfrac-test-images" / "RibFrac501-image.nii.gz", ct_image(RIB_ONE, 501))
    (d / "ribfrac-train-info-1.csv").write_text(INFO_1)
    (d / "ribfrac-train-info-2.csv").write_text(INFO_2)
    (d / "ribfrac-val-info.csv").write_text(INFO_VAL)
    junk(d / "Part1" / "._RibFrac1-image.nii.gz")


# --- PI-CAI: T2W MetaImage per study, the human-expert lesion map (ISUP grade values) from picai_labels -------

# a patient with two studies: the later one has an ISUP 2 lesion and an ISUP 4 lesion, the prior none
LESIONS = cells({2: [(1, 1, (1, 3))], 4: [(3, 2, (2, 3))]})
LESION_TRUTH = {1: {"ISUP 2": 1}, 2: {"ISUP 2": 1, "ISUP 4": 1}}


def write_picai(raw: Path) -> None:
    d = raw / "PI-CAI"
    labels = d / "picai_labels" / "csPCa_lesion_delineations"
    studies = (("0", "10000", "1000000", LESIONS), ("0", "10000", "1000001", np.zeros_like(LESIONS)),
               ("3", "10005", "1000006", None))  # fmt: skip
    for fold, patient, study, lab in studies:
        folder = d / f"picai_public_images_fold{fold}" / patient
        for seq, base in (("t2w", 300), ("adc", 900), ("hbv", 20), ("sag", 300), ("cor", 300)):
            save_mha(folder / f"{patient}_{study}_{seq}.mha", mr_image(LESIONS, base, int(study) % 100))
        if lab is not None:  # 10005_1000006: its outcome was recorded per case, with no delineation
            save(
                labels / "human_expert" / "resampled" / f"{patient}_{study}.nii.gz",
                lab,
                "LPS",
                (0.3, 0.3, 0.3),
            )
        save(labels / "AI" / "Bosma22a" / f"{patient}_{study}.nii.gz", (LESIONS > 0).astype(np.uint8), "LPS")
    (d / "picai_labels" / "clinical_information").mkdir(parents=True)
    (d / "picai_labels" / "clinical_information" / "marksheet.csv").write_text(
        "patient_id,study_id,mri_date,patient_age,psa\n10000,1000000,2019-07-02,73,7.7\n"
    )


# --- 2D: BUS-UCLM (colour-coded RGB masks), EndoVis 2017 RIS (one mask file per instrument) ---------------

H, W = 32, 40
GREEN, RED = (0, 255, 0), (255, 0, 0)


def colour_mask(*parts: tuple[tuple[int, int, int, int], tuple[int, int, int]]) -> np.ndarray:
    """An RGB mask, black but for rectangles (rows r0..r1-1, columns c0..c1-1) of the given colours."""
    m = np.zeros((H, W, 3), np.uint8)
    for (r0, r1, c0, c1), colour in parts:
        m[r0:r1, c0:c1] = colour
    return m


def photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 230, (H, W, 3), dtype=np.uint8)


BUS_UCLM = {  # name → (mask rectangles and colours)
    "ALWI_000": [((4, 12, 6, 20), GREEN)],
    "ANFO_005": [((10, 30, 2, 12), RED), ((2, 8, 30, 38), GREEN)],
    "ALWI_001": [],  # a normal image: its mask is all black
}


def write_bus_uclm(raw: Path) -> None:
    d = raw / "BUS-UCLM"
    for n, (case, parts) in enumerate(BUS_UCLM.items()):
        save_image(d / "images" / f"{case}.png", photo(60 + n))
        save_image(d / "masks" / f"{case}.png", colour_mask(*parts))
    save_image(d / "images" / "COPE_002.png", photo(70))  # an anti-aliased edge: a colour neither class has
    save_image(
        d / "masks" / "COPE_002.png", colour_mask(((4, 12, 6, 20), GREEN), ((12, 13, 6, 20), (0, 128, 0)))
    )
    junk(d / "images" / "._ALWI_000.png")


def part_mask(*parts: tuple[tuple[int, int, int, int], int]) -> np.ndarray:
    """An EndoVis instrument mask: rectangles coded by part (10 shaft, 20 wrist, 30 claspers), 0 elsewhere."""
    m = np.zeros((H, W), np.uint8)
    for (r0, r1, c0, c1), code in parts:
        m[r0:r1, c0:c1] = code
    return m


ENDOVIS = {  # sequence → {instrument folder: mask of frame000}
    "instrument_dataset_1": {
        "Left_Prograsp_Forceps_labels": part_mask(
            ((2, 10, 2, 14), 10), ((10, 14, 2, 14), 30)
        ),  # shaft + claspers
        "Right_Prograsp_Forceps_labels": part_mask(((2, 10, 26, 38), 10)),
        "Maryland_Bipolar_Forceps_labels": part_mask(),  # out of view in this frame
        "Other_labels": part_mask(((20, 30, 16, 24), 10)),
    },
    "instrument_dataset_2": {"Left_Large_Needle_Driver_labels": part_mask(((16, 28, 4, 36), 20))},
}


def write_endovis2017(raw: Path) -> None:
    d = raw / "EndoVis2017_RIS" / "train"
    for n, (seq, masks) in enumerate(ENDOVIS.items()):
        save_image(d / seq / "left_frames" / "frame000.png", photo(80 + n))  # both sequences number from 000
        save_image(d / seq / "right_frames" / "frame000.png", photo(90 + n))
        for folder, mask in masks.items():
            save_image(d / seq / "ground_truth" / folder / "frame000.png", mask)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fourthraw")
    for write in (write_ribfrac, write_picai, write_bus_uclm, write_endovis2017):
        write(root)
    return root


def regions_2d(frame) -> list:
    return regions_of(None, frame, min_area_px=16)


def counts(regions) -> dict[str, int]:
    return dict(Counter(r.label for r in regions))


# --- RibFrac -------------------------------------------------------------------------------------------------


def test_ribfrac_reads_each_fracture_instance_under_its_csv_class(raw):
    spec = resolve_spec("ribfrac")
    items = items_of(spec, raw)
    # the test images are not cases; RibFrac422 (a validation row without its image) is a plan note
    assert sorted(items) == ["RibFrac1", "RibFrac2", "RibFrac3", "RibFrac301", "RibFrac4", "RibFrac421"]
    assert {c: i.official_split for c, i in items.items()} == {
        "RibFrac1": "train", "RibFrac2": "train", "RibFrac3": "train", "RibFrac4": "train",
        "RibFrac301": "train", "RibFrac421": "val",
    }  # fmt: skip
    assert items["RibFrac421"].files == (
        SourceFile("image", "RibFrac/ribfrac-val-images/RibFrac421-image.nii.gz"),
        SourceFile("label", "RibFrac/ribfrac-val-labels/RibFrac421-label.nii.gz"),
    )
    frames = frames_of(spec, raw, items["RibFrac1"])
    assert [f.slice_index for f in frames] == [0, 1, 2, 3] and {f.intensity for f in frames} == {"hu"}
    assert all(np.array_equal(f.image, display(ct_image(RIB1, 1), f.slice_index)) for f in frames)
    got = {f.slice_index: regions_of(spec, f) for f in frames}
    assert {k: counts(rs) for k, rs in got.items()} == RIB1_TRUTH
    for k, boxes in RIB1_BOXES.items():  # the two touching displaced fractures are two boxes, not one
        assert sorted((r.label, r.bbox) for r in got[k]) == sorted(boxes)
    masks = dict(frames[3].masks)
    assert masks.keys() == {"unidentified", "buckle"} and masks["buckle"].sum() == 16
    for case, label, k in (("RibFrac301", "segmental", 1), ("RibFrac421", "non-displaced", 2)):
        case_frames = frames_of(spec, raw, items[case])
        assert len(case_frames) == 4, case
        regions = {f.slice_index: regions_of(spec, f) for f in case_frames if f.has_annotations}
        assert {k: counts(rs) for k, rs in regions.items()} == {1: {label: 1}, 2: {label: 1}}, case
        assert [r.bbox for r in regions[k]] == [cell_box(2, 1)], case  # Part2's LPS copy lands the same
    e = rejected(spec, raw, items["RibFrac2"])  # instance 2 has no row: no class to give it
    assert e.reason == "bad_label_value" and "[2]" in e.detail
    e = rejected(spec, raw, items["RibFrac3"])
    assert (
        e.reason == "bad_row" and "no rows in ribfrac-train-info-1.csv, ribfrac-train-info-2.csv" in e.detail
    )
    e = rejected(spec, raw, items["RibFrac4"])
    assert e.reason == "bad_row" and "ribfrac-train-info-1.csv line 10" in e.detail and "'7'" in e.detail
    notes = discovery_notes(spec, raw)
    assert [(n.reason, n.summary) for n in notes] == [
        ("missing_files", "ribfrac-val-info.csv: 1 of 2 cases have no image on disk (first: RibFrac422)")
    ]


def test_ribfrac_names_its_fracture_types_in_the_kb():
    spec, kb = resolve_spec("ribfrac"), load_kb()
    concepts = {e.label: concept_for_label(e, kb) for e in spec.labels}
    assert {k: c.canonical_name for k, c in concepts.items()} == {
        "displaced": "Displaced rib fracture", "non-displaced": "Non-displaced rib fracture",
        "buckle": "Buckle rib fracture", "segmental": "Segmental rib fracture", "unidentified": "Rib fracture",
    }  # fmt: skip
    assert concepts["unidentified"].concept_id == "C0035522"
    assert {kb.parent_of(concepts[k].concept_id).concept_id for k in ("displaced", "buckle")} == {"C0035522"}


def test_instance_table_is_checked_against_the_spec(raw):
    data = resolve_spec("ribfrac").model_dump(mode="json")
    data["format"]["options"]["instance_table"]["classes"]["5"] = "greenstick"
    with pytest.raises(ReadError) as e:
        items_of(parse_spec(data), raw)
    assert e.value.reason == "bad_option" and "['greenstick']" in e.value.detail
    data = resolve_spec("ribfrac").model_dump(mode="json")
    data["format"]["options"]["label_sets"] = {"displaced": [1]}
    with pytest.raises(SpecError, match="instance_table and label_sets"):
        parse_spec(data)
    data = resolve_spec("ribfrac").model_dump(mode="json")
    data["format"]["options"]["instance_table"]["class_column"] = "public_id"
    with pytest.raises(SpecError, match="must differ"):
        parse_spec(data)


# --- PI-CAI --------------------------------------------------------------------------------------------------


def test_picai_reads_the_t2_with_its_human_expert_lesions(raw):
    spec = resolve_spec("picai")
    items = items_of(spec, raw)
    assert sorted(items) == ["10000_1000000", "10000_1000001", "10005_1000006"]
    assert {c: (i.patient_id, i.study_id) for c, i in items.items()} == {
        "10000_1000000": ("10000", "1000000"), "10000_1000001": ("10000", "1000001"),
        "10005_1000006": ("10005", "1000006"),
    }  # fmt: skip
    labels = "PI-CAI/picai_labels/csPCa_lesion_delineations/human_expert/resampled"
    assert items["10000_1000000"].files == (
        SourceFile("image", "PI-CAI/picai_public_images_fold0/10000/10000_1000000_t2w.mha"),
        SourceFile("label", f"{labels}/10000_1000000.nii.gz"),
    )
    frames = frames_of(spec, raw, items["10000_1000000"])
    assert [f.slice_index for f in frames] == [0, 1, 2, 3] and {f.intensity for f in frames} == {"raw"}
    assert all(np.array_equal(f.label_map, display(LESIONS, f.slice_index)) for f in frames)
    got = {f.slice_index: regions_of(spec, f) for f in frames if f.has_annotations}
    assert {k: counts(rs) for k, rs in got.items()} == LESION_TRUTH
    assert sorted((r.label, r.bbox) for r in got[2]) == [
        ("ISUP 2", cell_box(1, 1)),
        ("ISUP 4", cell_box(3, 2)),
    ]
    prior = frames_of(spec, raw, items["10000_1000001"])  # a benign prior study: no annotation anywhere
    assert len(prior) == 4 and not any(f.has_annotations for f in prior)
    e = rejected(spec, raw, items["10005_1000006"])
    assert e.reason == "missing_file" and "10005_1000006.nii.gz" in e.detail
    kb = load_kb()
    names = {e.label: concept_for_label(e, kb) for e in spec.labels}
    assert [names[f"ISUP {g}"].canonical_name for g in (2, 5)] == [
        "Prostate cancer of ISUP grade group 2", "Prostate cancer of ISUP grade group 5"
    ]  # fmt: skip
    assert kb.parent_of(names["ISUP 3"].concept_id).canonical_name == "Clinically significant prostate cancer"


# --- BUS-UCLM and EndoVis 2017 ------------------------------------------------------------------------------


def test_bus_uclm_reads_green_as_benign_and_red_as_malignant(raw):
    spec = resolve_spec("bus_uclm")
    items = items_of(spec, raw)
    assert sorted(items) == ["ALWI_000", "ALWI_001", "ANFO_005", "COPE_002"]  # no ._ file
    assert {c: i.patient_id for c, i in items.items()} == {
        "ALWI_000": "ALWI", "ALWI_001": "ALWI", "ANFO_005": "ANFO", "COPE_002": "COPE"
    }  # fmt: skip
    assert items["ANFO_005"].files == (
        SourceFile("image", "BUS-UCLM/images/ANFO_005.png"),
        SourceFile("mask", "BUS-UCLM/masks/ANFO_005.png"),
    )
    for case, parts in BUS_UCLM.items():
        (frame,) = frames_of(spec, raw, items[case])
        assert frame.shape == (H, W) and frame.image.ndim == 2  # grey: the scanner's RGB frames
        expected = sorted(
            ("Benign" if colour == GREEN else "Malignant", (c0, r0, c1, r1), (r1 - r0) * (c1 - c0))
            for (r0, r1, c0, c1), colour in parts
        )
        assert sorted((r.label, r.bbox, r.area_px) for r in regions_2d(frame)) == expected, case
    with pytest.raises(ReadError) as e:
        frames_of(spec, raw, items["COPE_002"])
    assert e.value.reason == "bad_label_value" and "75" in e.value.detail  # (0, 128, 0) as luminance
    kb = load_kb()
    names = {e.label: concept_for_label(e, kb).canonical_name for e in spec.labels}
    assert names == {"Benign": "Benign breast lesion", "Malignant": "Breast cancer"}


def test_endovis2017_reads_each_instrument_file_under_its_type(raw):
    spec = resolve_spec("endovis2017_ris")
    items = items_of(spec, raw)
    # one case per left frame, named by its sequence; right frames and masks are no cases
    assert sorted(items) == ["instrument_dataset_1-frame000", "instrument_dataset_2-frame000"]
    assert {c: i.patient_id for c, i in items.items()} == {
        "instrument_dataset_1-frame000": "instrument_dataset_1",
        "instrument_dataset_2-frame000": "instrument_dataset_2",
    }
    first = items["instrument_dataset_1-frame000"]
    gt = "EndoVis2017_RIS/train/instrument_dataset_1/ground_truth"
    assert first.files[0] == SourceFile(
        "image", "EndoVis2017_RIS/train/instrument_dataset_1/left_frames/frame000.png"
    )
    assert sorted(f.path for f in first.files[1:]) == sorted(
        f"{gt}/{k}/frame000.png" for k in ENDOVIS["instrument_dataset_1"]
    )
    (frame,) = frames_of(spec, raw, first)
    assert np.array_equal(frame.image, photo(80))
    got = sorted((r.label, r.bbox, r.area_px) for r in regions_2d(frame))
    assert got == [
        ("Other", (16, 20, 24, 30), 80),
        ("Prograsp_Forceps", (2, 2, 14, 14), 144),  # shaft and claspers: one instrument
        ("Prograsp_Forceps", (26, 2, 38, 10), 96),  # the right-hand one: its own region
    ]
    (frame,) = frames_of(spec, raw, items["instrument_dataset_2-frame000"])
    assert [(r.label, r.bbox) for r in regions_2d(frame)] == [("Large_Needle_Driver", (4, 16, 36, 28))]
    kb = load_kb()
    concepts = {e.label: concept_for_label(e, kb) for e in spec.labels}
    assert concepts["Monopolar_Curved_Scissors"].canonical_name == "Monopolar curved scissors"
    assert {kb.parent_of(c.concept_id).canonical_name for k, c in concepts.items() if k != "Other"} == {
        "Surgical instrument"
    }


# --- census --------------------------------------------------------------------------------------------------

FOURTH = ["ribfrac", "picai", "bus_uclm", "endovis2017_ris"]


def test_the_fourth_batch_specs_project_from_their_published_counts():
    for name in FOURTH:
        spec = resolve_spec(name)
        assert spec.citation and spec.licence and spec.homepage.startswith("https://") and spec.stats.source
        assert spec.stats.structures == len(spec.labels) and not spec.overlaps
    # samples = cases × slices_per_case × annotated_fraction, regions = samples × regions_per_sample
    # (ribfrac: 500 × 350 × 0.15 = 26,250 and × 1.5 = 39,375; picai: 1,295 × 24 × 0.035 = 1,087.8 → 1,088)
    c = census([resolve_spec(n) for n in FOURTH])
    assert {p.dataset: (p.samples, p.regions) for p in c.projections} == {
        "ribfrac": (26_250, 39_375), "picai": (1_088, 1_197), "bus_uclm": (266, 279),
        "endovis2017_ris": (1_764, 3_881),
    }  # fmt: skip


def test_instance_table_rows_that_contradict_or_are_not_ids_reject_their_case(tmp_path):
    write_ribfrac(tmp_path)
    (tmp_path / "RibFrac" / "ribfrac-train-info-2.csv").write_text(
        "public_id,label_id,label_code\nRibFrac301,0,0\nRibFrac301,1,4\nRibFrac1,x,1\n"
    )
    (tmp_path / "RibFrac" / "ribfrac-val-info.csv").write_text(
        "public_id,label_id,label_code\nRibFrac421,1,2\nRibFrac421,1,3\n"
    )
    spec = resolve_spec("ribfrac")
    items = items_of(spec, tmp_path)
    e = rejected(spec, tmp_path, items["RibFrac1"])
    assert e.reason == "bad_row" and "ribfrac-train-info-2.csv line 4: label_id 'x'" in e.detail
    e = rejected(spec, tmp_path, items["RibFrac421"])
    assert (
        e.reason == "bad_row" and "instance 1 is '3' here and '2' at ribfrac-val-info.csv line 2" in e.detail
    )
    assert len(frames_of(spec, tmp_path, items["RibFrac301"])) == 4  # its own rows are fine
