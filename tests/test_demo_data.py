"""The demo raw datasets: deterministic bytes, the publishers' layouts and their quirks, and anatomy that
matches what the generator says it drew."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medpclip import demo


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def raw(demo_raw) -> Path:
    """The session's demo raw root (conftest); tests that break data work on private copies."""
    return demo_raw


def test_returns_each_spec_folder(tmp_path):
    written = demo.write_demo_data(tmp_path)
    assert written == {
        "demo_ct": tmp_path / "Task90_DemoAbdomenCT",
        "demo_polyp": tmp_path / "Kvasir-SEG",
        "demo_cxr": tmp_path / "ChestX-ray14",
    }
    assert all(p.is_dir() for p in written.values())


def test_two_writes_are_byte_identical(raw, tmp_path):
    demo.write_demo_data(tmp_path)
    first, second = _digests(raw), _digests(tmp_path)
    assert (
        len(first) == 23 + 25 + 23
    )  # CT: json, 11 images, 10 labels, junk; polyp: 12 + 12 + json; CXR: 19 + 4
    assert first == second


# --- MSD CT ------------------------------------------------------------------------------------------------


def _ct(raw: Path) -> Path:
    return raw / "Task90_DemoAbdomenCT"


def test_msd_dataset_json_has_the_real_fields(raw):
    meta = json.loads((_ct(raw) / "dataset.json").read_text())
    assert meta["relase"] == "1.0 01/11/2026" and "release" not in meta  # the MSD typo
    assert meta["licence"] == "CC-BY-SA 4.0" and meta["tensorImageSize"] == "3D"
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {
        "0": "background", "1": "liver", "2": "spleen", "3": "kidney",
        "4": "aorta", "5": "vertebra", "6": "liver tumour",
    }  # fmt: skip
    assert (meta["numTraining"], meta["numTest"]) == (10, 1)
    listed = [e["image"] for e in meta["training"]]
    assert sorted(listed) == sorted(f"./imagesTr/{c}.nii.gz" for c in demo.CT_TRAIN_CASES)
    assert listed != sorted(listed)  # MSD lists are not in name order
    assert all(e["label"] == e["image"].replace("imagesTr", "labelsTr") for e in meta["training"])
    assert meta["test"] == ["./imagesTs/democt_71.nii.gz"]  # plain strings, not dicts


def test_msd_folders_hold_volumes_and_appledouble_junk(raw):
    folder = _ct(raw)
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["democt_71.nii.gz"]
    assert not (folder / "labelsTs").exists()
    assert len(list((folder / "labelsTr").iterdir())) == 10
    junk = folder / "imagesTr" / "._democt_3.nii.gz"
    assert junk.read_bytes().startswith(b"\x00\x05\x16\x07") and b"Mac OS X" in junk.read_bytes()[:32]
    with pytest.raises(Exception):  # noqa: B017 — whatever nibabel raises: it is not an image
        np.asanyarray(nib.load(junk).dataobj)


def test_ct_volumes_are_lps_int16_hu_with_mtime_zero_gzip(raw):
    path = _ct(raw) / "imagesTr" / "democt_3.nii.gz"
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\x00\x00\x00\x00"  # gzip mtime field
    img = nib.load(path)
    assert img.shape == (128, 128, 24) and img.get_data_dtype() == np.int16
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")  # not canonical: reorientation matters
    assert img.header.get_zooms() == (1.5, 1.5, 5.0)
    hu = np.asanyarray(img.dataobj)
    assert hu.min() >= -1024 and hu[0, 0, 0] < -950  # air in the corner
    assert nib.Nifti1Image.from_bytes(gzip.decompress(data)).shape == (128, 128, 24)


def test_ct_labels_uint8_except_one_float32_case(raw):
    for case in demo.CT_TRAIN_CASES:
        dtype = nib.load(_ct(raw) / "labelsTr" / f"{case}.nii.gz").get_data_dtype()
        assert dtype == (np.float32 if case == demo.CT_FLOAT_LABEL_CASE else np.uint8), case


def test_ct_anatomy_per_label(raw):
    """In canonical space (i → patient's right, j → anterior): each structure where and how bright it should be."""
    for case in demo.CT_TRAIN_CASES:
        canon_img = nib.as_closest_canonical(nib.load(_ct(raw) / "imagesTr" / f"{case}.nii.gz"))
        canon_lab = nib.as_closest_canonical(nib.load(_ct(raw) / "labelsTr" / f"{case}.nii.gz"))
        hu = np.asanyarray(canon_img.dataobj)
        lab = np.rint(np.asanyarray(canon_lab.dataobj)).astype(int)
        truth_hu, truth_lab = demo.ct_case_volumes(case)
        assert np.array_equal(hu, truth_hu) and np.array_equal(lab, truth_lab)

        def centroid(v, lab=lab):
            return np.argwhere(lab == v).mean(axis=0)

        assert centroid(1)[0] > 64 + 15  # liver on the patient's right
        assert centroid(2)[0] < 64 - 20  # spleen on the patient's left
        assert abs(centroid(5)[0] - 64) < 3 and centroid(5)[1] < 40  # vertebra: midline, posterior
        assert centroid(4)[1] > centroid(5)[1] + 8  # aorta anterior to the spine
        assert abs(np.median(hu[lab == 1]) - 60) < 8 and abs(np.median(hu[lab == 5]) - 700) < 60
        assert abs(np.median(hu[lab == 4]) - 200) < 25
        for k in demo.CT_KIDNEY_SLICES:
            assert ndimage.label(lab[:, :, k] == 3)[1] == 2, (case, k)
        assert all((lab[:, :, k] == 1).any() for k in demo.CT_LIVER_SLICES)
        assert not lab[:, :, list(demo.CT_EMPTY_SLICES)].any()
        assert ((lab == 6).sum() > 0) == (case == demo.CT_LESION_CASE)


def test_ct_tiny_lesion_is_below_the_minimum_area(raw):
    _, lab = demo.ct_case_volumes(demo.CT_LESION_CASE)
    slices = np.flatnonzero((lab == 6).any(axis=(0, 1)))
    assert slices.tolist() == [demo.CT_LESION_SLICE]
    assert 4 <= int((lab == 6).sum()) < 16


# --- Kvasir-SEG ---------------------------------------------------------------------------------------------


def test_kvasir_layout_ids_and_sizes(raw):
    folder = raw / "Kvasir-SEG"
    ids = sorted(p.stem for p in (folder / "images").glob("*.jpg"))
    assert len(ids) == 12 and all(re.fullmatch(r"[a-z0-9]{25}", i) for i in ids)
    assert ids == sorted(p.stem for p in (folder / "masks").glob("*.jpg"))
    widths = set()
    for p in demo.polyp_plan():
        with Image.open(folder / "images" / f"{p.image_id}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (p.width, p.height)
            assert 160 <= im.width <= 224
            widths.add(im.width)
    assert len(widths) > 6
    assert sorted(len(p.polyps) for p in demo.polyp_plan()) == [1] * 9 + [2] * 3


def test_kvasir_masks_are_lossy_rgb_jpegs_that_threshold_to_the_polyps(raw):
    folder = raw / "Kvasir-SEG"
    for p in demo.polyp_plan():
        with Image.open(folder / "masks" / f"{p.image_id}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            grey = np.asarray(im.convert("L"))
        assert not np.isin(grey, (0, 255)).all()  # the real quirk: not exactly 0/255
        truth = np.logical_or.reduce(demo.polyp_truth(p))
        mask = grey > 127
        assert (mask & truth).sum() / (mask | truth).sum() > 0.97


def test_kvasir_bboxes_json_matches_the_polyps(raw):
    boxes = json.loads((raw / "Kvasir-SEG" / "kavsir_bboxes.json").read_text())
    for p in demo.polyp_plan():
        entry = boxes[p.image_id]
        assert (entry["height"], entry["width"]) == (p.height, p.width)
        got = [(b["label"], b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in entry["bbox"]]
        assert got == [("polyp", *demo.tight_box(m)) for m in demo.polyp_truth(p)]


def test_polyps_are_redder_than_mucosa(raw):
    p = demo.polyp_plan()[0]
    rgb = np.asarray(Image.open(raw / "Kvasir-SEG" / "images" / f"{p.image_id}.jpg")).astype(float)
    inside = demo.polyp_truth(p)[0]
    ring = ndimage.binary_dilation(inside, iterations=6) & ~ndimage.binary_dilation(inside, iterations=2)
    g_over_r = rgb[..., 1] / np.maximum(rgb[..., 0], 1)
    assert g_over_r[inside].mean() < g_over_r[ring].mean() - 0.1


# --- NIH ChestX-ray14 ---------------------------------------------------------------------------------------


def _cxr(raw: Path) -> Path:
    return raw / "ChestX-ray14"


def test_nih_data_entry_has_the_trailing_comma_header(raw):
    text = (_cxr(raw) / "Data_Entry_2017.csv").read_text()
    header, *rows = text.splitlines()
    assert header.endswith("OriginalImagePixelSpacing[x,y],")
    parsed = list(csv.reader(io.StringIO(text)))
    assert len(parsed[0]) == 12 and {len(r) for r in parsed[1:]} == {11}
    assert len(rows) == 19 and len({r.split(",")[3] for r in rows}) == 10  # 19 images of 10 patients
    by_name = {r[0]: r for r in parsed[1:]}
    assert by_name["00000042_001.png"][1] == "Effusion|Infiltration"
    assert by_name["00000025_000.png"][1] == "No Finding"
    assert by_name["00000101_000.png"][3] == "101"


def test_nih_bbox_list_header_quirk_and_label_spelling(raw):
    lines = (_cxr(raw) / "BBox_List_2017.csv").read_text().splitlines()
    assert lines[0] == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    assert len(lines[0].split(",")) == 9 and {len(line.split(",")) for line in lines[1:]} == {6}
    labels = {line.split(",")[1] for line in lines[1:]}
    assert "Infiltrate" in labels and "Infiltration" not in labels
    assert "Infiltration" in (_cxr(raw) / "Data_Entry_2017.csv").read_text()


def test_nih_boxes_cover_the_drawn_structures(raw):
    truth = demo.cxr_truth()
    rows = [line.split(",") for line in (_cxr(raw) / "BBox_List_2017.csv").read_text().splitlines()[1:]]
    written = {}
    for name, label, x, y, w, h in rows:
        written.setdefault(name, []).append((label, float(x), float(y), float(w), float(h)))
    assert sorted(written) == sorted(demo.CXR_BOXED) and len(rows) == 10
    for name, boxes in truth.items():
        assert written[name] == [(lab, x0, y0, x1 - x0, y1 - y0) for lab, (x0, y0, x1, y1) in boxes]
    # the nodule of patient 37 is a small bright disc exactly inside its box
    ((label, (x0, y0, x1, y1)),) = truth["00000037_000.png"]
    assert label == "Nodule" and 8 <= x1 - x0 <= 13 and 8 <= y1 - y0 <= 13
    img = np.asarray(Image.open(_cxr(raw) / "images" / "00000037_000.png")).astype(float)
    ring = img[y0 - 4 : y1 + 4, x0 - 4 : x1 + 4].copy()
    ring[4:-4, 4:-4] = np.nan
    assert img[y0:y1, x0:x1].max() > np.nanmean(ring) + 60


def test_nih_images_grey_png_with_one_rgba_patient(raw):
    for p in sorted((_cxr(raw) / "images").iterdir()):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (256, 256)
            assert im.mode == ("RGBA" if p.name.startswith("00000063_") else "L"), p.name


def test_nih_official_split_is_patient_disjoint(raw):
    train = (_cxr(raw) / "train_val_list.txt").read_text().split()
    test = (_cxr(raw) / "test_list.txt").read_text().split()
    assert sorted(train + test) == sorted(p.name for p in (_cxr(raw) / "images").iterdir())
    assert {n[:8] for n in test} == {"00000037", "00000077", "00000090"}
    assert not {n[:8] for n in train} & {n[:8] for n in test}
