"""More 2D image + mask datasets in the raster family (issue 15, third session): BUS-BRA (masks named from the
image ID without its prefix, the tumour's label from bus_data.csv) and Kaggle's Ultrasound Nerve Segmentation
(TIFF images and masks side by side, empty masks for images without a marked nerve) and HC18 (the fetal
head drawn as an outline, read as the area it encloses through the raster option ``fill_holes``), each read by its shipped
spec from a tiny copy written here in the publisher's layout, checked against the truth the fixture was drawn
from: case ids, patients, region labels, counts and boxes (through the region extractor the build uses), and
the files each download holds that must not be read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from layouts import junk
from layouts import save_image as save

from medpclip.census import census
from medpclip.frame import ReadError, SourceFile
from medpclip.regions import extract_regions
from medpclip.specs import SpecError, parse_spec, resolve_spec
from medpclip.text.kb import concept_for_label, load_kb

H, W = 32, 40


def rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[r0:r1, c0:c1] = 255
    return m


def grey(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 230, (H, W), dtype=np.uint8)


def regions_of(frame) -> list:
    regions, drops = extract_regions(
        frame.shape, masks=frame.masks, min_area_px=16, rng_for=lambda _: np.random.default_rng(0)
    )
    assert drops == []
    return regions


# --- BUS-BRA -------------------------------------------------------------------------------------------------

BUSBRA = {  # ID → (Pathology, mask box rows/cols)
    "bus_0001-l": ("benign", (4, 12, 6, 20)),
    "bus_0001-r": ("benign", (10, 30, 2, 12)),
    "bus_0002-s": ("malignant", (8, 24, 16, 36)),
}


def write_bus_bra(raw: Path) -> None:
    d = raw / "BUSBRA"
    for n, (case, (_, box)) in enumerate(BUSBRA.items()):
        save(d / "Images" / f"{case}.png", grey(n))
        save(d / "Masks" / f"mask{case[3:]}.png", rect(*box))
    save(d / "Images" / "bus_0003-l.png", grey(9))  # no mask: a broken download, rejected
    (d / "bus_data.csv").write_text(
        "ID,Histology,Pathology,BIRADS,Device,Height,Width,Side,BBOX\n"
        "bus_0001-l,Fibroadenoma,benign,3,GE,32,40,left,None\n"
        "bus_0001-r,Cyst,benign,2,GE,32,40,right,None\n"
        "bus_0002-s,Invasive ductal carcinoma,malignant,5,Toshiba,32,40,left,None\n"
        "bus_0003-l,Fibroadenoma,benign,3,GE,32,40,left,None\n"
    )
    (d / "5-fold-cv.csv").write_text("ID,kFold\nbus_0001-l,1\n")
    junk(d / "Images" / "._bus_0001-l.png")


# --- Ultrasound Nerve Segmentation ---------------------------------------------------------------------------

NERVE = {"1_1": (1, (6, 18, 10, 30)), "1_2": (1, None), "10_3": (10, (14, 30, 2, 22))}


def write_ultrasound_nerve(raw: Path) -> None:
    d = raw / "ultrasound-nerve-segmentation"
    for n, (case, (_, box)) in enumerate(NERVE.items()):
        save(d / "train" / f"{case}.tif", grey(20 + n))
        save(d / "train" / f"{case}_mask.tif", rect(*box) if box else np.zeros((H, W), np.uint8))
    save(d / "test" / "1.tif", grey(30))
    (d / "train_masks.csv").write_text("subject,img,pixels\n1,1,100 4\n")


# --- HC18 ----------------------------------------------------------------------------------------------------


def outline(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """A closed 1 px outline of the rectangle rows r0..r1-1, columns c0..c1-1 (the head's drawn ellipse)."""
    m = rect(r0, r1, c0, c1)
    m[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = 0
    return m


HC18 = {"000_HC": (4, 28, 6, 34), "000_2HC": (8, 24, 10, 30), "012_HC": (2, 30, 2, 38)}


def write_hc18(raw: Path) -> None:
    d = raw / "HC18"
    for n, (case, box) in enumerate(HC18.items()):
        save(d / "training_set" / f"{case}.png", grey(40 + n))
        save(d / "training_set" / f"{case}_Annotation.png", outline(*box))
    save(d / "test_set" / "000_HC.png", grey(50))
    (d / "training_set_pixel_size_and_HC.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n000_HC.png,0.069,44.3\n"
    )


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("third2draw")
    write_bus_bra(root)
    write_ultrasound_nerve(root)
    write_hc18(root)
    return root


def test_the_new_2d_specs_are_complete():
    kb = load_kb()
    for name in ("bus_bra", "ultrasound_nerve", "hc18"):
        spec = resolve_spec(name)
        assert spec.format.family == "raster" and spec.modality == "US" and spec.intensity.kind == "uint8"
        assert spec.citation and spec.licence and spec.homepage.startswith("https://") and spec.stats.source
        assert spec.stats.structures == len(spec.labels) and not spec.overlaps
    names = {e.label: concept_for_label(e, kb).canonical_name for e in resolve_spec("bus_bra").labels}
    assert names == {"benign": "Benign breast lesion", "malignant": "Breast cancer"}
    (bp,) = resolve_spec("ultrasound_nerve").labels
    assert (
        concept_for_label(bp, kb).concept_id == "MEDP:1014"
        and kb.lookup("BP").canonical_name == "Brachial plexus"
    )
    assert concept_for_label(resolve_spec("hc18").labels[0], kb).canonical_name == "Fetal head"
    c = census([resolve_spec(n) for n in ("bus_bra", "ultrasound_nerve", "hc18")])
    assert (c.samples, c.regions) == (1875 + 2310 + 999, 1875 + 2310 + 999)


def test_bus_bra_masks_drop_the_prefix_and_the_table_names_the_tumour(raw):
    spec = resolve_spec("bus_bra")
    items = items_of(spec, raw)
    assert sorted(items) == ["bus_0001-l", "bus_0001-r", "bus_0002-s", "bus_0003-l"]  # no ._ file, no CSV
    assert {c: i.patient_id for c, i in items.items()} == {
        "bus_0001-l": "0001", "bus_0001-r": "0001", "bus_0002-s": "0002", "bus_0003-l": "0003"
    }  # fmt: skip
    for case, (label, (r0, r1, c0, c1)) in BUSBRA.items():
        item = items[case]
        assert item.files == (
            SourceFile("image", f"BUSBRA/Images/{case}.png"),
            SourceFile("mask", f"BUSBRA/Masks/mask{case[3:]}.png"),
        )
        (frame,) = frames_of(spec, raw, item)
        assert frame.shape == (H, W) and np.array_equal(frame.image, grey(list(BUSBRA).index(case)))
        (region,) = regions_of(frame)
        assert (region.label, region.bbox, region.area_px) == (label, (c0, r0, c1, r1), (r1 - r0) * (c1 - c0))
    with pytest.raises(ReadError) as e:
        frames_of(spec, raw, items["bus_0003-l"])
    assert e.value.reason == "missing_file" and "mask_0003-l.png" in e.value.detail


def test_ultrasound_nerve_groups_a_subjects_images_and_reads_empty_masks_as_no_nerve(raw):
    spec = resolve_spec("ultrasound_nerve")
    items = items_of(spec, raw)
    assert sorted(items) == ["10_3", "1_1", "1_2"]  # no mask, no test image, no CSV
    assert {c: i.patient_id for c, i in items.items()} == {"1_1": "1", "1_2": "1", "10_3": "10"}
    for case, (_, box) in NERVE.items():
        item = items[case]
        assert item.files == (
            SourceFile("image", f"ultrasound-nerve-segmentation/train/{case}.tif"),
            SourceFile("mask", f"ultrasound-nerve-segmentation/train/{case}_mask.tif"),
        )
        (frame,) = frames_of(spec, raw, item)
        regions = regions_of(frame)
        if box is None:  # no nerve marked: no region (the build drops the frame: keep_empty is off)
            assert regions == [] and not frame.has_annotations
            continue
        r0, r1, c0, c1 = box
        assert [(r.label, r.bbox) for r in regions] == [("BP", (c0, r0, c1, r1))]


def test_hc18_reads_the_area_inside_each_drawn_outline(raw):
    spec = resolve_spec("hc18")
    items = items_of(spec, raw)
    assert sorted(items) == ["000_2HC", "000_HC", "012_HC"]  # no annotation, test image or CSV
    assert {c: i.patient_id for c, i in items.items()} == {"000_2HC": "000", "000_HC": "000", "012_HC": "012"}
    for case, (r0, r1, c0, c1) in HC18.items():
        (frame,) = frames_of(spec, raw, items[case])
        (region,) = regions_of(frame)
        assert (region.label, region.bbox) == ("fetal head", (c0, r0, c1, r1))
        assert region.area_px == (r1 - r0) * (c1 - c0)  # filled, not the 1 px ring
    data = spec.model_dump(mode="json")
    data["format"]["options"]["fill_holes"] = False
    (frame,) = frames_of(parse_spec(data), raw, items["000_HC"])
    (ring,) = regions_of(frame)
    assert ring.area_px == 2 * (24 + 28) - 4  # without the option: the outline itself


def test_fill_holes_needs_threshold_masks():
    data = resolve_spec("hc18").model_dump(mode="json")
    data["format"]["options"]["mask_mode"] = "instances"
    with pytest.raises(SpecError, match="fill_holes fills outlines of a threshold mask"):
        parse_spec(data)
