"""Readers on data in the publishers' layouts: the demo datasets (whose truth the generator knows), files
shipped inside the nibabel wheel, and small broken copies for the reject paths. No mocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from PIL import Image
from scipy import ndimage

from medpclip import demo
from medpclip.corpus.plan import BuildParams, plan_build
from medpclip.frame import ReadError, SourceFile
from medpclip.sources import READERS, contours, dicom, get_reader, raster, reports, tables, volumes
from medpclip.specs import DatasetSpec, SpecError, parse_spec, resolve_spec

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


@pytest.fixture(scope="module")
def raw(demo_raw) -> Path:
    """The session's demo raw root (conftest); tests that break data work on private copies."""
    return demo_raw


def _copy(raw: Path, folder: str, tmp_path: Path) -> Path:
    """A private copy of one demo dataset (for tests that break it); returns the new raw root."""
    shutil.copytree(raw / folder, tmp_path / folder)
    return tmp_path


def _spec(base: str, **changes) -> DatasetSpec:
    data = resolve_spec(base).model_dump(mode="json")
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    return parse_spec(data)


def test_registry_maps_families_to_options_and_readers():
    assert {name: (f.options, f.reader) for name, f in READERS.items()} == {
        "volumes": (volumes.VolumeOptions, "medpclip.sources.volumes.reader"),
        "raster": (raster.RasterOptions, "medpclip.sources.raster.reader"),
        "tables": (tables.TableOptions, "medpclip.sources.tables.reader"),
        "dicom": (dicom.DicomOptions, "medpclip.sources.dicom.reader"),
        "contours": (contours.ContourOptions, "medpclip.sources.contours.reader"),
        "reports": (reports.ReportOptions, "medpclip.sources.reports.reader"),
    }
    assert {name: f.unit_items for name, f in READERS.items()} == {
        "volumes": 4, "dicom": 4, "contours": 4, "raster": 250, "tables": 250, "reports": 250,
    }  # fmt: skip
    reader = get_reader("tables")
    assert reader.family == "tables" and reader.options is tables.TableOptions
    with pytest.raises(ValueError, match="unknown format family 'nope'"):
        get_reader("nope")


def test_unknown_option_is_refused_when_the_spec_loads():
    with pytest.raises(SpecError, match=r"field 'format.options.chanel': unknown field") as e:
        _spec("demo_ct", format__options={"layout": "msd", "chanel": 1})
    assert "\n" not in str(e.value)


# --- volumes: MSD demo CT ----------------------------------------------------------------------------------


def test_msd_discovery_follows_dataset_json(raw):
    spec = resolve_spec("demo_ct")
    items = items_of(spec, raw)
    assert sorted(items) == sorted(demo.CT_TRAIN_CASES)  # not the test case, not the ._ junk
    item = items["democt_3"]
    assert item.files == (
        SourceFile("image", "Task90_DemoAbdomenCT/imagesTr/democt_3.nii.gz"),
        SourceFile("label", "Task90_DemoAbdomenCT/labelsTr/democt_3.nii.gz"),
    )
    assert item.patient_id == "3" and item.official_split is None and item.dataset == "demo_ct"
    assert not any("._" in f.path for i in items.values() for f in i.files)


def test_msd_frames_are_canonical_radiological_slices(raw):
    spec = resolve_spec("demo_ct")
    frames = frames_of(spec, raw, items_of(spec, raw)["democt_3"])
    assert [f.slice_index for f in frames] == list(range(24))
    assert {(f.plane, f.intensity, f.spacing_mm, f.shape) for f in frames} == {
        ("ax", "hu", (1.5, 1.5), (128, 128))
    }
    assert frames[0].label_values == {
        1: "liver",
        2: "spleen",
        3: "kidney",
        4: "aorta",
        5: "vertebra",
        6: "liver tumour",
    }
    hu, lab = demo.ct_case_volumes("democt_3")  # canonical: i → patient's right, j → anterior
    for f in frames:  # display: patient's right on the image left, anterior at the top
        assert np.array_equal(f.image, hu[:, :, f.slice_index].T[::-1, ::-1])
        assert np.array_equal(f.label_map, lab[:, :, f.slice_index].T[::-1, ::-1])
    liver = frames[12].label_map == 1
    assert np.nonzero(liver)[1].max() < 64  # wholly on the image's left half
    spleen = frames[15].label_map == 2
    assert np.nonzero(spleen)[1].min() > 64
    rows_vertebra = np.nonzero(frames[12].label_map == 5)[0]
    rows_aorta = np.nonzero(frames[12].label_map == 4)[0]
    assert rows_aorta.mean() < rows_vertebra.mean() and rows_vertebra.mean() > 64  # posterior at the bottom
    kidneys, n = ndimage.label(frames[6].label_map == 3)
    assert n == 2
    assert [not f.label_map.any() for f in frames].count(True) == 4  # slices 0, 1, 22, 23
    assert frames[12].image.dtype == np.int16 and frames[12].image[0, 0] < -950


def test_msd_float32_labels_are_read_as_integers(raw):
    spec = resolve_spec("demo_ct")
    frames = frames_of(spec, raw, items_of(spec, raw)[demo.CT_FLOAT_LABEL_CASE])
    _, lab = demo.ct_case_volumes(demo.CT_FLOAT_LABEL_CASE)
    for f in frames:
        assert f.label_map.dtype == np.uint8
        assert np.array_equal(f.label_map, lab[:, :, f.slice_index].T[::-1, ::-1])
    assert set(np.unique(np.stack([f.label_map for f in frames]))) == {0, 1, 2, 3, 4, 5}


def test_msd_tiny_lesion_reaches_the_frame(raw):
    spec = resolve_spec("demo_ct")
    frames = frames_of(spec, raw, items_of(spec, raw)[demo.CT_LESION_CASE])
    counts = {f.slice_index: int((f.label_map == 6).sum()) for f in frames if (f.label_map == 6).any()}
    assert counts == {demo.CT_LESION_SLICE: 6}  # the reader keeps it; the build drops it as too small


def test_msd_missing_index_is_a_dataset_level_error(raw, tmp_path):
    root = _copy(raw, "Task90_DemoAbdomenCT", tmp_path)
    (root / "Task90_DemoAbdomenCT" / "dataset.json").unlink()
    spec = resolve_spec("demo_ct")
    with pytest.raises(ReadError) as e:
        list(volumes.discover(spec, root / spec.root))
    assert e.value.reason == "missing_file"


def test_msd_label_value_outside_the_spec_is_rejected(raw, tmp_path):
    root = _copy(raw, "Task90_DemoAbdomenCT", tmp_path)
    spec = _spec(
        "demo_ct", labels=[lab.model_dump() for lab in resolve_spec("demo_ct").labels if lab.value != 6]
    )
    items = items_of(spec, root)
    with pytest.raises(ReadError) as e:
        frames_of(spec, root, items[demo.CT_LESION_CASE])
    assert e.value.reason == "bad_label_value" and "[6]" in e.value.detail
    assert len(frames_of(spec, root, items["democt_3"])) == 24  # other cases unaffected


def test_msd_truncated_volume_is_unreadable(raw, tmp_path):
    root = _copy(raw, "Task90_DemoAbdomenCT", tmp_path)
    path = root / "Task90_DemoAbdomenCT" / "imagesTr" / "democt_8.nii.gz"
    path.write_bytes(path.read_bytes()[:5000])
    spec = resolve_spec("demo_ct")
    with pytest.raises(ReadError) as e:
        frames_of(spec, root, items_of(spec, root)["democt_8"])
    assert e.value.reason == "unreadable_image"


# --- volumes: pairs layout on nibabel's own files ----------------------------------------------------------


def _pairs_spec(**options) -> DatasetSpec:
    return parse_spec(
        {
            "name": "anat",
            "root": "Anat",
            "title": "nibabel test data",
            "citation": "nibabel",
            "licence": "MIT",
            "access": "open",
            "homepage": "https://nipy.org/nibabel/",
            "modality": "MR",
            "body_part": "brain",
            "format": {"family": "volumes", "options": {"layout": "pairs", **options}},
            "labels": [{"value": 1, "label": "blob", "name": "Blob", "category": "blob"}],
            "intensity": {"kind": "percentile"},
            "slicing": {"planes": ["ax", "co"]},
        }
    )


def _anat_dataset(tmp_path: Path, source: str = "anatomical.nii", label_shape=None) -> nib.Nifti1Image:
    """nibabel's real scan plus a label volume marking stored voxels i < 10 (the patient's RIGHT: the file's
    x axis runs towards the left, LAS)."""
    img = nib.load(NIBABEL_DATA / source)
    (tmp_path / "Anat" / "images").mkdir(parents=True)
    (tmp_path / "Anat" / "labels").mkdir()
    shutil.copy(NIBABEL_DATA / source, tmp_path / "Anat" / "images" / source)
    shape = label_shape or img.shape[:3]
    lab = np.zeros(shape, np.uint8)
    lab[:10, 10:30, 5:20] = 1
    nib.save(
        nib.Nifti1Image(lab, img.affine), tmp_path / "Anat" / "labels" / source.replace(".nii.gz", ".nii")
    )
    (tmp_path / "Anat" / "images" / "._junk.nii").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    return img


def test_pairs_layout_reads_a_real_las_scan(tmp_path):
    img = _anat_dataset(tmp_path)
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S") and img.get_data_dtype().byteorder == ">"
    spec = _pairs_spec(images="images/*.nii", labels="labels/{stem}.nii")
    items = items_of(spec, tmp_path)
    assert list(items) == ["anatomical"]  # junk skipped
    assert items["anatomical"].files[1] == SourceFile("label", "Anat/labels/anatomical.nii")
    frames = frames_of(spec, tmp_path, items["anatomical"])
    ax = [f for f in frames if f.plane == "ax"]
    co = [f for f in frames if f.plane == "co"]
    assert (len(ax), len(co)) == (25, 41)  # shape (33, 41, 25)
    assert ax[0].shape == (41, 33) and co[0].shape == (25, 33) and ax[0].spacing_mm == (2.0, 2.0)
    assert ax[0].intensity == "raw" and ax[0].image.dtype.isnative
    canonical = np.asanyarray(nib.as_closest_canonical(img).dataobj)
    assert np.array_equal(ax[7].image, canonical[:, :, 7].T[::-1, ::-1])
    assert canonical.max() == 30393 and max(int(f.image.max()) for f in ax) == 30393
    cols = np.nonzero(ax[10].label_map)[1]
    assert cols.min() == 0 and cols.max() == 9  # the patient's right is the image's left
    assert {f.slice_index for f in ax if f.label_map.any()} == set(range(5, 20))


def test_pairs_shape_mismatch_and_missing_label(tmp_path):
    _anat_dataset(tmp_path, label_shape=(33, 41, 24))
    spec = _pairs_spec(images="images/*.nii", labels="labels/{stem}.nii")
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items_of(spec, tmp_path)["anatomical"])
    assert e.value.reason == "shape_mismatch"

    (tmp_path / "Anat" / "labels" / "anatomical.nii").unlink()
    items = items_of(spec, tmp_path)  # still discovered: the reject must name it
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items["anatomical"])
    assert (e.value.reason, e.value.detail) == ("missing_file", "Anat/labels/anatomical.nii")


def test_pairs_4d_image_needs_a_channel(tmp_path):
    img = _anat_dataset(tmp_path, source="example4d.nii.gz")
    assert img.shape == (128, 96, 24, 2)
    spec = _pairs_spec(images="images/*.nii.gz", labels="labels/{stem}.nii")
    item = items_of(spec, tmp_path)["example4d"]
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, item)
    assert e.value.reason == "bad_dimensions"
    frames = frames_of(
        _pairs_spec(images="images/*.nii.gz", labels="labels/{stem}.nii", channel=1), tmp_path, item
    )
    canonical = np.asanyarray(nib.as_closest_canonical(img).dataobj)[..., 1]
    assert np.array_equal(frames[3].image, canonical[:, :, 3].T[::-1, ::-1])
    assert not np.array_equal(canonical, np.asanyarray(nib.as_closest_canonical(img).dataobj)[..., 0])


# --- raster: Kvasir-SEG demo ------------------------------------------------------------------------------


def test_kvasir_discovery_pairs_images_and_masks(raw):
    spec = resolve_spec("demo_polyp")
    items = items_of(spec, raw)
    plan = demo.polyp_plan()
    assert list(items) == [p.image_id for p in plan]
    first = items[plan[0].image_id]
    assert first.files == (
        SourceFile("image", f"Kvasir-SEG/images/{plan[0].image_id}.jpg"),
        SourceFile("mask", f"Kvasir-SEG/masks/{plan[0].image_id}.jpg"),
    )
    assert first.patient_id == plan[0].image_id


def test_kvasir_masks_threshold_to_the_drawn_polyps(raw):
    spec = resolve_spec("demo_polyp")
    items = items_of(spec, raw)
    for p in demo.polyp_plan():
        (frame,) = frames_of(spec, raw, items[p.image_id])
        assert frame.image.shape == (p.height, p.width, 3) and frame.image.dtype == np.uint8
        assert frame.intensity == "uint8" and frame.plane == "im" and frame.boxes == []
        ((label, mask),) = frame.masks
        truth = np.logical_or.reduce(demo.polyp_truth(p))
        assert label == "polyp" and mask.dtype == bool
        assert (mask & truth).sum() / (mask | truth).sum() > 0.97
        assert ndimage.label(mask)[1] == len(p.polyps)


def test_kvasir_boxes_json_stands_in_for_a_missing_mask(raw, tmp_path):
    root = _copy(raw, "Kvasir-SEG", tmp_path)
    p = next(p for p in demo.polyp_plan() if len(p.polyps) == 2)
    (root / "Kvasir-SEG" / "masks" / f"{p.image_id}.jpg").unlink()
    spec = resolve_spec("demo_polyp")
    item = items_of(spec, root)[p.image_id]
    assert [f.role for f in item.files] == ["image"]
    (frame,) = frames_of(spec, root, item)
    assert frame.masks == []
    assert [(b.label, b.xyxy) for b in frame.boxes] == [
        ("polyp", demo.tight_box(m)) for m in demo.polyp_truth(p)
    ]


def test_kvasir_image_without_mask_or_box_is_rejected(raw, tmp_path):
    root = _copy(raw, "Kvasir-SEG", tmp_path)
    p = demo.polyp_plan()[3]
    (root / "Kvasir-SEG" / "masks" / f"{p.image_id}.jpg").unlink()
    boxes_path = root / "Kvasir-SEG" / "kavsir_bboxes.json"
    boxes = json.loads(boxes_path.read_text())
    del boxes[p.image_id]
    boxes_path.write_text(json.dumps(boxes))
    spec = resolve_spec("demo_polyp")
    with pytest.raises(ReadError) as e:
        frames_of(spec, root, items_of(spec, root)[p.image_id])
    assert e.value.reason == "missing_file"


def test_kvasir_mask_of_the_wrong_size_is_a_shape_mismatch(raw, tmp_path):
    root = _copy(raw, "Kvasir-SEG", tmp_path)
    p = demo.polyp_plan()[0]
    mask_path = root / "Kvasir-SEG" / "masks" / f"{p.image_id}.jpg"
    Image.open(mask_path).resize((p.width // 2, p.height // 2)).save(mask_path, format="JPEG")
    spec = resolve_spec("demo_polyp")
    items = items_of(spec, root)
    with pytest.raises(ReadError) as e:
        frames_of(spec, root, items[p.image_id])
    assert e.value.reason == "shape_mismatch"
    assert len(frames_of(spec, root, items[demo.polyp_plan()[1].image_id])) == 1


def test_kvasir_unreadable_image(raw, tmp_path):
    root = _copy(raw, "Kvasir-SEG", tmp_path)
    p = demo.polyp_plan()[2]
    (root / "Kvasir-SEG" / "images" / f"{p.image_id}.jpg").write_bytes(b"not a jpeg at all")
    spec = resolve_spec("demo_polyp")
    with pytest.raises(ReadError) as e:
        frames_of(spec, root, items_of(spec, root)[p.image_id])
    assert e.value.reason == "unreadable_image"


# --- raster: coded masks and masks beside the images -------------------------------------------------------


def _raster_spec(labels: list[dict], **options) -> DatasetSpec:
    return parse_spec(
        {
            "name": "tiny",
            "root": "Tiny",
            "title": "t",
            "citation": "c",
            "licence": "l",
            "access": "open",
            "homepage": "h",
            "modality": "other",
            "body_part": "b",
            "format": {"family": "raster", "options": options},
            "labels": labels,
            "intensity": {"kind": "uint8"},
        }
    )


def test_values_mode_turns_a_coded_mask_into_a_label_map(tmp_path):
    """REFUGE style: disc 128 (including the cup), cup 0, background 255, in BMP."""
    folder = tmp_path / "Tiny"
    (folder / "img").mkdir(parents=True)
    (folder / "gt").mkdir()
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(folder / "img" / "g0001.jpg")
    coded = np.full((20, 30), 255, np.uint8)
    coded[5:15, 5:20] = 128
    coded[8:12, 9:14] = 0
    Image.fromarray(coded).save(folder / "gt" / "g0001.bmp")
    labels = [
        {"value": 1, "label": "disc", "name": "Optic disc", "category": "optic disc"},
        {"value": 2, "label": "cup", "name": "Optic cup", "category": "optic cup"},
    ]
    spec = _raster_spec(
        labels, images="img/*.jpg", masks=["gt/{stem}.bmp"], mask_mode="values", values={0: 2, 128: 1, 255: 0}
    )
    (frame,) = frames_of(spec, tmp_path, items_of(spec, tmp_path)["g0001"])
    assert frame.label_values == {1: "disc", 2: "cup"} and frame.masks == []
    assert int((frame.label_map == 2).sum()) == 20 and int((frame.label_map == 1).sum()) == 150 - 20
    coded[0, 0] = 200
    Image.fromarray(coded).save(folder / "gt" / "g0001.bmp")
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items_of(spec, tmp_path)["g0001"])
    assert e.value.reason == "bad_label_value" and "200" in e.value.detail


def test_masks_beside_images_are_not_images_and_stay_separate(tmp_path):
    """BUSI style: 'benign (1).png' with 'benign (1)_mask.png' and '_mask_1.png' in the same folder."""
    folder = tmp_path / "Tiny" / "benign"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 80, np.uint8)).save(folder / "benign (1).png")
    for n, suffix in enumerate(("_mask", "_mask_1")):
        m = np.zeros((16, 16), np.uint8)
        m[2 + 8 * n : 6 + 8 * n, 3:9] = 255
        Image.fromarray(m).save(folder / f"benign (1){suffix}.png")
    (folder / "Thumbs.db").write_bytes(b"junk")
    labels = [{"label": "tumour", "name": "Breast tumour", "category": "tumour"}]
    spec = _raster_spec(labels, images="*/*.png", masks=["{dir}/{stem}_mask*.png"])
    items = items_of(spec, tmp_path)
    assert list(items) == ["benign (1)"]
    assert [f.path for f in items["benign (1)"].files] == [
        "Tiny/benign/benign (1).png", "Tiny/benign/benign (1)_mask.png", "Tiny/benign/benign (1)_mask_1.png",
    ]  # fmt: skip
    (frame,) = frames_of(spec, tmp_path, items["benign (1)"])
    assert (
        frame.image.shape == (16, 16)
        and [(lab, int(m.sum())) for lab, m in frame.masks] == [("tumour", 24)] * 2
    )


# --- tables: NIH ChestX-ray14 demo ------------------------------------------------------------------------


def test_nih_discovery_patients_and_official_split(raw):
    spec = resolve_spec("demo_cxr")
    items = items_of(spec, raw)
    assert len(items) == 19
    assert items["00000101_001"].files == (SourceFile("image", "ChestX-ray14/images/00000101_001.png"),)
    assert {i.patient_id for i in items.values()} == {str(p) for p in demo.CXR_PATIENTS}
    for case, item in items.items():
        expected = "test" if int(case[:8]) in demo.CXR_TEST_PATIENTS else "train"
        assert item.official_split == expected and item.patient_id == str(int(case[:8]))
    json.dumps([list(i.meta) for i in items.values()])  # meta stays JSON-serialisable


def test_nih_boxes_equal_the_drawn_structures_and_infiltrate_resolves(raw):
    spec = resolve_spec("demo_cxr")
    items = items_of(spec, raw)
    truth = demo.cxr_truth()
    rename = {"Infiltrate": "Infiltration"}
    for name in demo.CXR_BOXED:
        (frame,) = frames_of(spec, raw, items[name[:-4]])
        expected = [(rename.get(lab, lab), tuple(float(v) for v in box)) for lab, box in truth[name]]
        assert [(b.label, b.xyxy) for b in frame.boxes] == expected
    (frame,) = frames_of(spec, raw, items["00000077_000"])
    assert {b.label for b in frame.boxes} == {"Nodule", "Infiltration"}
    assert frame.image_labels == ["Infiltration", "Nodule"]


def test_nih_image_labels_and_no_finding(raw):
    spec = resolve_spec("demo_cxr")
    items = items_of(spec, raw)
    (frame,) = frames_of(spec, raw, items["00000025_000"])
    assert frame.image_labels == ["No Finding"] and frame.boxes == [] and not frame.has_annotations
    (frame,) = frames_of(spec, raw, items["00000042_001"])
    assert frame.image_labels == ["Effusion", "Infiltration"] and frame.boxes == []
    assert frame.image.shape == (256, 256) and frame.intensity == "uint8" and frame.plane == "im"
    img, _ = demo.cxr_image(42, 1)
    assert np.array_equal(frame.image, img)


def test_nih_rgba_png_is_read_as_grey(raw):
    spec = resolve_spec("demo_cxr")
    (frame,) = frames_of(spec, raw, items_of(spec, raw)["00000063_001"])
    img, _ = demo.cxr_image(63, 1)
    assert frame.image.ndim == 2 and np.array_equal(frame.image, img)


def test_nih_row_naming_a_missing_image_is_summarised_at_plan(raw, tmp_path):
    root = _copy(raw, "ChestX-ray14", tmp_path)
    with open(root / "ChestX-ray14" / "Data_Entry_2017.csv", "a") as f:
        f.write("00000999_000.png,Nodule,0,999,40,F,PA,2500,2048,0.143,0.143\n")
    spec = resolve_spec("demo_cxr")
    items = items_of(spec, root)
    assert len(items) == 19 and "00000999_000" not in items  # no item for an image that is not there
    plan = plan_build([spec], root, tmp_path / "corpus", BuildParams())
    assert sum(len(u.items) for u in plan.units) == 19
    (row,) = plan.rejects["demo_cxr"]  # even one absent image: the table's one summary row
    assert (row["stage"], row["reason"], row["path"], row["detail"]) == (
        "plan",
        "missing_files",
        "ChestX-ray14/Data_Entry_2017.csv",
        "Data_Entry_2017.csv: 1 of 20 rows name an image that is not on disk (00000999_000.png)",
    )
    assert plan.notes == {"demo_cxr": ["Data_Entry_2017.csv: 19 of 20 rows have their image"]}


def test_nih_broken_rows_reject_only_their_image(raw, tmp_path):
    root = _copy(raw, "ChestX-ray14", tmp_path)
    folder = root / "ChestX-ray14"
    with open(folder / "BBox_List_2017.csv", "a") as f:
        f.write("00000058_000.png,Pneumothorax,12.5,oops,10,10\n")  # unparseable coordinate
        f.write("00000090_000.png,Hernia,10,10,20,20\n")  # a label the spec does not have
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(folder / "images" / "00000500_000.png")  # no row
    spec = resolve_spec("demo_cxr")
    items = items_of(spec, root)
    expected = {"00000058_000": "bad_row", "00000090_000": "bad_label_value", "00000500_000": "no_table_row"}
    for case, reason in expected.items():
        with pytest.raises(ReadError) as e:
            frames_of(spec, root, items[case])
        assert e.value.reason == reason, case
    assert len(frames_of(spec, root, items["00000090_001"])) == 1


def test_nih_unknown_finding_label_is_rejected(raw, tmp_path):
    root = _copy(raw, "ChestX-ray14", tmp_path)
    path = root / "ChestX-ray14" / "Data_Entry_2017.csv"
    path.write_text(path.read_text().replace("00000025_000.png,No Finding", "00000025_000.png,Hernia"))
    spec = resolve_spec("demo_cxr")
    with pytest.raises(ReadError) as e:
        frames_of(spec, root, items_of(spec, root)["00000025_000"])
    assert e.value.reason == "bad_label_value" and "Hernia" in e.value.detail
