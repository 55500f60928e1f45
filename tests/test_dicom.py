"""The DICOM family on real files from the pydicom wheel (CT, MR, a JPEG 2000 CT, a MONOCHROME1 CR, the SEG
``liver_1frame.dcm``, ``rtstruct.dcm``) and on series this test writes itself with known truth (shuffled file
names and instance numbers, enhanced multi-frame with per-frame rescale), plus broken files. No mocks."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_windowing, pack_bits
from pydicom.uid import (
    MPEG2MPML,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedXAImageStorage,
    ExplicitVRLittleEndian,
    SegmentationStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from medpclip.frame import Frame, ReadError, SourceItem
from medpclip.sources import dicom, get_reader
from medpclip.sources._common import read_image
from medpclip.specs import DatasetSpec, parse_spec, resolve_spec

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _real(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not in the pydicom wheel"
    return Path(path)


def _spec(labels=(), **options) -> DatasetSpec:
    return parse_spec(
        {
            "name": "dcm",
            "root": "DCM",
            "title": "DICOM test data",
            "citation": "pydicom test files and series written by this test",
            "licence": "MIT",
            "access": "open",
            "homepage": "https://pydicom.github.io",
            "modality": "CT",
            "body_part": "body",
            "format": {"family": "dicom", "options": options},
            "labels": list(labels) or [{"label": "liver", "name": "Liver", "category": "liver"}],
            "intensity": {"kind": "ct_window", "window": "soft_tissue"},
            "slicing": {"planes": ["ax"]},
            "patient_id": {"field": "PatientID"},
            "unit_items": 2,
        }
    )


def _spec_planes(planes: list[str], **kw) -> DatasetSpec:
    data = _spec(**kw).model_dump(mode="json")
    data["slicing"]["planes"] = planes
    return parse_spec(data)


def _items(spec: DatasetSpec, raw: Path) -> dict[str, SourceItem]:
    items = list(dicom.discover(spec, raw / spec.root))
    assert [i.case_id for i in items] == sorted(i.case_id for i in items)
    return {i.case_id: i for i in items}


def _read(spec: DatasetSpec, raw: Path, item: SourceItem) -> list[Frame]:
    """Read the item as a Ray worker gets it: through JSON."""
    d = json.loads(json.dumps({"meta": list(item.meta)}))
    item = SourceItem(
        item.dataset, item.case_id, item.files, item.patient_id, item.study_id, item.official_split,
        tuple((k, v) for k, v in d["meta"]),
    )  # fmt: skip
    return list(get_reader("dicom").read(spec, raw, item))


def _write_slice(
    path: Path,
    pixels: np.ndarray,
    *,
    position,
    series_uid: str,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    sop_uid: str | None = None,
    instance: int = 1,
    orientation=(1, 0, 0, 0, 1, 0),
    spacing=(0.5, 0.5),
    slope: float = 1.0,
    intercept: float = -1024.0,
    patient_id: str = "PAT-0001",
    frame_of_reference: str = "1.2.826.0.1.3680043.8.498.2",
    pixel_data: bool = True,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = 1.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if pixel_data:
        ds.PixelData = pixels.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


# --- series: slice order, geometry, HU --------------------------------------------------------------------


def _shuffled_series(folder: Path, n: int = 6, shape=(32, 24)) -> np.ndarray:
    """A CT series whose file names and instance numbers are in neither z nor any shared order. Returns the
    true HU volume (k, rows, cols), k ascending in z."""
    rng = random.Random(7)
    names, instances = list(range(n)), list(range(1, n + 1))
    rng.shuffle(names)
    rng.shuffle(instances)
    pattern = (np.arange(shape[0] * shape[1]).reshape(shape) * 7) % 50
    truth = np.stack([pattern + 100 * k for k in range(n)]).astype(np.int16)
    for k in range(n):
        _write_slice(
            folder / f"IM{names[k] * 37 % 101:04d}.dcm",
            truth[k] + 1024,
            position=(-10.0, -20.0, 2.5 + 5.0 * k),
            series_uid="1.2.826.0.1.3680043.8.498.10",
            instance=instances[k],
            spacing=(0.7, 0.5),
        )
    return truth


def test_series_is_ordered_by_position_not_by_names_or_instance_numbers(tmp_path):
    truth = _shuffled_series(tmp_path / "DCM" / "patient1" / "series_a")
    (tmp_path / "DCM" / "patient1" / "series_a" / "._IM0001.dcm").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (tmp_path / "DCM" / "README.txt").write_text("not an image")
    spec = _spec_planes(["ax", "co"])
    items = _items(spec, tmp_path)
    assert list(items) == ["patient1/series_a"]
    item = items["patient1/series_a"]
    assert [f.role for f in item.files] == ["image"] * 6 and item.meta_dict() == {"kind": "series"}
    assert item.patient_id == "PAT-0001"  # raw here; the build hashes it
    assert "PAT-0001" not in json.dumps([item.case_id, list(item.meta), [f.path for f in item.files]])

    frames = _read(spec, tmp_path, item)
    ax = [f for f in frames if f.plane == "ax"]
    co = [f for f in frames if f.plane == "co"]
    assert [f.slice_index for f in ax] == list(range(6)) and len(co) == 32
    for f in ax:  # axial display of an axial LPS series is the stored image; index counts inferior → superior
        assert f.intensity == "hu" and f.image.dtype == np.int16 and f.spacing_mm == (0.7, 0.5)
        assert np.array_equal(f.image, truth[f.slice_index])
        assert f.modality == "CT"
    for f in co:  # coronal index j runs posterior → anterior (rows are anterior-first); superior at the top
        assert f.image.shape == (6, 24) and f.spacing_mm == (5.0, 0.5)
        assert np.array_equal(f.image, truth[::-1, 31 - f.slice_index, :])


def test_real_ct_series_from_the_wheel(tmp_path):
    """pydicom's dicomdirtests CT5N: five 16×16 CT slices whose InstanceNumber runs superior → inferior."""
    files = sorted((TEST_FILES / "dicomdirtests" / "98892001" / "CT5N").iterdir())
    folder = tmp_path / "DCM" / "ct5n"
    folder.mkdir(parents=True)
    for n, f in enumerate(reversed(files)):
        shutil.copy(f, folder / f"slice{n}")  # no suffix: found by the DICM preamble
    spec = _spec()
    (item,) = _items(spec, tmp_path).values()
    frames = _read(spec, tmp_path, item)
    by_z = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    assert [int(d.InstanceNumber) for d in by_z] == [10, 9, 8, 7, 6]
    for f, ds in zip(frames, by_z, strict=True):
        assert np.array_equal(f.image, apply_modality_lut(ds.pixel_array, ds).astype(np.int16))
        assert f.spacing_mm == (0.488281, 0.488281)


def test_irregular_series_gives_its_acquisition_plane_only(tmp_path):
    """dicomdirtests CT2: slices at z −99.48, 103.02, 104.27, 105.52 (a gap of 202 mm)."""
    shutil.copytree(TEST_FILES / "dicomdirtests" / "77654033" / "CT2", tmp_path / "DCM" / "CT2")
    spec = _spec_planes(["ax", "co", "sa"])
    frames = _read(spec, tmp_path, _items(spec, tmp_path)["CT2"])
    assert [(f.plane, f.slice_index) for f in frames] == [("ax", k) for k in range(4)]


def test_repeated_positions_are_an_inconsistent_series(tmp_path):
    """MR_small.dcm and its RLE copy share series and SOP UIDs: two slices at one position."""
    folder = tmp_path / "DCM" / "mr"
    folder.mkdir(parents=True)
    shutil.copy(_real("MR_small.dcm"), folder / "a.dcm")
    shutil.copy(_real("MR_small_RLE.dcm"), folder / "b.dcm")
    spec = _spec()
    with pytest.raises(ReadError) as e:
        _read(spec, tmp_path, _items(spec, tmp_path)["mr"])
    assert e.value.reason == "inconsistent_series"


# --- compressed transfer syntaxes, MR, MONOCHROME1 ------------------------------------------------------


def test_jpeg2000_ct_decodes_to_hu(tmp_path):
    src = _real("693_J2KI.dcm")
    ds = pydicom.dcmread(src)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91" and ds.Modality == "CT"
    hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    loaded = read_image(src, "693_J2KI.dcm")
    img, intensity = loaded.array, loaded.intensity
    assert intensity == "hu" and img.dtype == np.int16 and np.array_equal(img, hu)
    (tmp_path / "DCM" / "cq500").mkdir(parents=True)
    shutil.copy(src, tmp_path / "DCM" / "cq500" / "CT000010.dcm")
    spec = _spec_planes(["ax", "co"])
    item = _items(spec, tmp_path)["cq500"]
    assert item.patient_id == ds.PatientID
    (frame,) = _read(spec, tmp_path, item)  # one slice: its own plane only
    assert (frame.plane, frame.slice_index, frame.intensity) == ("ax", 0, "hu")
    assert np.array_equal(frame.image, hu) and frame.spacing_mm == (0.478516, 0.478516)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_jp2klossless.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
    ],
)
def test_lossless_mr_codecs_match_the_uncompressed_file(name):
    loaded = read_image(_real("MR_small.dcm"), "MR_small.dcm", dicom_voi=False)
    ref, _ = loaded.array, loaded.intensity
    loaded = read_image(_real(name), name, dicom_voi=False)
    img, intensity = loaded.array, loaded.intensity
    assert intensity == "raw" and np.array_equal(img, ref)
    assert np.array_equal(ref, pydicom.dcmread(_real("MR_small.dcm")).pixel_array)


def test_real_mr_volume_is_raw(tmp_path):
    (tmp_path / "DCM" / "mr").mkdir(parents=True)
    shutil.copy(_real("MR_small.dcm"), tmp_path / "DCM" / "mr" / "MR1.dcm")
    spec = _spec()
    (frame,) = _read(spec, tmp_path, _items(spec, tmp_path)["mr"])
    stored = pydicom.dcmread(_real("MR_small.dcm")).pixel_array
    assert (frame.plane, frame.intensity, frame.modality) == ("ax", "raw", "MR")
    assert np.array_equal(frame.image, stored)


def test_monochrome1_cr_is_handed_over_display_correct(tmp_path):
    src = TEST_FILES / "dicomdirtests" / "77654033" / "CR3" / "6278"
    ds = pydicom.dcmread(src)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 12
    stored = ds.pixel_array
    values = apply_modality_lut(stored, ds)
    windowed = apply_windowing(values, ds)  # pydicom's output range is the rescaled stored range
    lo, hi = 0 * 0.684 + 200, 4095 * 0.684 + 200
    expected = 255 - np.rint((windowed - lo) / (hi - lo) * 255)

    loaded = read_image(src, "CR3/6278")  # no suffix: the DICM preamble says DICOM

    img, intensity = loaded.array, loaded.intensity
    assert intensity == "uint8" and img.dtype == np.uint8
    assert np.abs(img.astype(int) - expected).max() <= 1
    dense = np.unravel_index(np.argmax(stored), stored.shape)
    assert img[dense] == img.min()  # MONOCHROME1: the highest stored value is the darkest… so it is inverted
    loaded = read_image(src, "CR3/6278", dicom_voi=False)
    raw, intensity = loaded.array, loaded.intensity
    assert intensity == "raw" and raw[dense] == raw.min()

    shutil.copytree(src.parent, tmp_path / "DCM" / "CR3")
    spec = _spec()
    items = _items(spec, tmp_path)
    assert list(items) == ["CR3/6278"] and items["CR3/6278"].meta_dict() == {"kind": "image"}
    (frame,) = _read(spec, tmp_path, items["CR3/6278"])
    assert (frame.plane, frame.intensity, frame.modality, frame.spacing_mm) == (
        "im",
        "uint8",
        "XR",
        (0.1, 0.1),
    )
    assert np.array_equal(frame.image, img)


# --- SEG and RTSTRUCT --------------------------------------------------------------------------------------

LIVER_SERIES = "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"
LIVER_SOPS = {  # referenced SOP → z of its frame in liver_1frame.dcm
    "1.2.392.200103.20080913.113635.2.2009.6.22.21.43.10.23433.1": -128.69,
    "1.2.392.200103.20080913.113635.2.2009.6.22.21.43.10.23432.1": -127.69,
    "1.2.392.200103.20080913.113635.2.2009.6.22.21.43.10.23431.1": -126.69,
}


def _liver_ct(folder: Path, keep_sop_uids: bool = True) -> None:
    for n, (sop, z) in enumerate(LIVER_SOPS.items()):
        _write_slice(
            folder / f"ct{n}.dcm",
            np.full((512, 512), 1000 + n, np.int16),
            position=(-235.2, -226.8, z),
            spacing=(0.810547, 0.810547),
            series_uid=LIVER_SERIES,
            sop_uid=sop if keep_sop_uids else None,
            frame_of_reference="1.2.392.200103.20080913.113635.3.2009.6.22.21.44.34.23882.1",
        )


@pytest.mark.parametrize("keep_sop_uids", [True, False], ids=["by-sop-uid", "by-position"])
def test_dicom_seg_segments_become_named_masks_on_their_slices(tmp_path, keep_sop_uids):
    seg_file = _real("liver_1frame.dcm")
    truth = pydicom.dcmread(seg_file).pixel_array.astype(bool)
    assert int(truth.sum()) == 36233
    _liver_ct(tmp_path / "DCM" / "liver" / "ct", keep_sop_uids)
    (tmp_path / "DCM" / "liver" / "seg").mkdir()
    shutil.copy(seg_file, tmp_path / "DCM" / "liver" / "seg" / "liver_seg.dcm")
    spec = _spec()
    items = _items(spec, tmp_path)
    assert list(items) == ["liver/ct"]
    assert [f.role for f in items["liver/ct"].files] == ["image"] * 3 + ["seg"]
    frames = _read(spec, tmp_path, items["liver/ct"])
    assert [f.slice_index for f in frames] == [0, 1, 2]
    ((label, mask),) = frames[0].masks  # z −128.69, the frame the SEG holds
    assert label == "liver" and mask.dtype == bool and np.array_equal(mask, truth)
    assert frames[1].masks == [] and frames[2].masks == []
    assert int(frames[0].image[0, 0]) == 1000 - 1024


def test_seg_without_its_series_is_a_missing_file(tmp_path):
    (tmp_path / "DCM").mkdir()
    shutil.copy(_real("liver_1frame.dcm"), tmp_path / "DCM" / "seg.dcm")
    spec = _spec()
    (item,) = _items(spec, tmp_path).values()
    with pytest.raises(ReadError) as e:
        _read(spec, tmp_path, item)
    assert e.value.reason == "missing_file" and LIVER_SERIES in e.value.detail


RT_SERIES = "1.2.826.0.1.3680043.8.498.2010020400001.2.1.1"
RT_FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.8.498.2010020400001.2"


def _rt_case(tmp_path: Path) -> None:
    """rtstruct.dcm (no preamble) beside a CT series it references: slices at z −200…−180 every 5 mm,
    256×256 pixels of 2 mm from (−256, −256)."""
    for k, z in enumerate(range(-200, -175, 5)):
        _write_slice(
            tmp_path / "DCM" / "phantom" / f"{k:03d}.dcm",
            np.zeros((256, 256), np.int16),
            position=(-256.0, -256.0, float(z)),
            spacing=(2.0, 2.0),
            series_uid=RT_SERIES,
            frame_of_reference=RT_FRAME_OF_REFERENCE,
        )
    shutil.copy(_real("rtstruct.dcm"), tmp_path / "DCM" / "phantom" / "rtstruct.dcm")


def test_rtstruct_contours_are_rasterized_on_their_slices(tmp_path):
    _rt_case(tmp_path)
    labels = [{"label": "patient", "name": "Body", "category": "body"}]
    spec = _spec(labels=labels)
    items = _items(spec, tmp_path)
    assert list(items) == ["phantom"] and items["phantom"].files[-1].role == "rtstruct"
    frames = _read(spec, tmp_path, items["phantom"])
    assert [f.slice_index for f in frames] == [0, 1, 2, 3, 4]
    # the 'patient' ROI: x −200…200, y −150…150 mm on z −200, −190, −180 → rows 53…203, cols 28…228
    expected = np.zeros((256, 256), bool)
    expected[53:204, 28:229] = True
    for f in frames:
        if f.slice_index in (0, 2, 4):
            ((label, mask),) = f.masks
            assert label == "patient" and np.array_equal(mask, expected)
        else:
            assert f.masks == []  # the isocentre POINT ROIs are no region


def test_rtstruct_roi_names_must_be_spec_labels_or_ignored(tmp_path):
    _rt_case(tmp_path)
    spec = _spec()  # knows only 'liver'
    item = _items(spec, tmp_path)["phantom"]
    with pytest.raises(ReadError) as e:
        _read(spec, tmp_path, item)
    assert e.value.reason == "bad_label_value" and "patient" in e.value.detail
    spec = _spec(ignore_labels=["PAT*"])
    assert all(f.masks == [] for f in _read(spec, tmp_path, item))


def test_contour_off_the_series_is_unmatched(tmp_path):
    _rt_case(tmp_path)
    (tmp_path / "DCM" / "phantom" / "000.dcm").unlink()  # the slice at z −200 holds a contour
    spec = _spec(labels=[{"label": "patient", "name": "Body", "category": "body"}])
    with pytest.raises(ReadError) as e:
        _read(spec, tmp_path, _items(spec, tmp_path)["phantom"])
    assert e.value.reason == "unmatched_annotation"


def test_polygon_fill_keeps_pixel_centres_inside_or_on_the_contour():
    rows, cols = np.array([1.0, 1.0, 4.0, 4.0]), np.array([2.0, 6.0, 6.0, 2.0])
    m = dicom.fill_polygon(rows, cols, (8, 9))
    assert np.array_equal(np.argwhere(m), np.argwhere(np.pad(np.ones((4, 5), bool), ((1, 3), (2, 2)))))
    tri = dicom.fill_polygon(np.array([0.0, 6.0, 6.0]), np.array([0.0, 0.0, 6.0]), (7, 7))
    assert np.array_equal(tri, np.tril(np.ones((7, 7), bool)))


# --- enhanced multi-frame ----------------------------------------------------------------------------------


def _enhanced_ct(
    path: Path, zs=(10.0, 0.0, 15.0, 5.0), spacing: dict[int, tuple[float, float]] | None = None
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Four 4×5 frames in the file order z = 10, 0, 15, 5 mm (or ``zs``), each with its own rescale in the
    per-frame Pixel Value Transformation; pixel spacing 0.8 mm in the shared Pixel Measures, per-frame where
    ``spacing`` says. Returns the true HU volume (k ascending in z) and the per-frame rescales."""
    rescale = [(2.0, -1000.0), (1.0, -1024.0), (0.5, -10.0), (1.0, 0.0)]
    stored = np.stack([np.arange(20, dtype=np.int16).reshape(4, 5) * (f + 1) + 100 for f in range(4)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CT", "PAT-0002"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = 4, 4, 5
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.8], 5.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per = []
    for f, (z, (slope, intercept)) in enumerate(zip(zs, rescale, strict=True)):
        item, position, pvt = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, z]
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slope, intercept, "HU"
        item.PlanePositionSequence, item.PixelValueTransformationSequence = [position], [pvt]
        if spacing and f in spacing:
            own = Dataset()
            own.PixelSpacing, own.SliceThickness = list(spacing[f]), 5.0
            item.PixelMeasuresSequence = [own]
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = per
    ds.PixelData = stored.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    hu = np.stack([stored[f] * rescale[f][0] + rescale[f][1] for f in range(4)]).astype(np.float32)
    return hu[np.argsort(zs)], rescale


def test_enhanced_ct_uses_per_frame_rescale_and_positions(tmp_path):
    truth, _ = _enhanced_ct(tmp_path / "DCM" / "enhanced" / "ct.dcm")
    ds = pydicom.dcmread(tmp_path / "DCM" / "enhanced" / "ct.dcm")
    naive = apply_modality_lut(ds.pixel_array, ds)  # the whole-dataset call does not see per-frame rescale
    assert not np.allclose(np.sort(naive, axis=None), np.sort(truth, axis=None))
    spec = _spec()
    items = _items(spec, tmp_path)
    assert items["enhanced/ct"].meta_dict() == {"kind": "enhanced"}
    frames = _read(spec, tmp_path, items["enhanced/ct"])
    assert [f.slice_index for f in frames] == [0, 1, 2, 3]
    for f in frames:
        assert f.intensity == "hu" and f.spacing_mm == (0.8, 0.8)
        assert np.array_equal(f.image, truth[f.slice_index])


def _new_dataset(sop_class: str, modality: str, series_uid: str | None = None) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = modality, "PAT-0003"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series_uid or generate_uid()
    return ds


def _grey_frames(ds: Dataset, frames: np.ndarray) -> None:
    """8-bit MONOCHROME2 pixel data: (n, rows, cols) as n frames, (rows, cols) as a single-frame image."""
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frames.astype(np.uint8).tobytes()


def _write_seg(
    path: Path, masks: list[np.ndarray], refs: list[tuple[str, int | list[int] | None]], series_uid: str
) -> None:
    """A BINARY SEG with one segment 'Liver': frame i is ``masks[i]``, derived from ``refs[i]`` = (SOP Instance
    UID, ReferencedFrameNumber — one, several or None). No plane positions: only the references can place its
    frames."""
    ds = _new_dataset(SegmentationStorage, "SEG")
    ds.SegmentationType = "BINARY"
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(masks), masks[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    segment = Dataset()
    segment.SegmentNumber, segment.SegmentLabel = 1, "Liver"
    ds.SegmentSequence = [segment]
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedInstanceSequence = series_uid, []
    for sop in dict.fromkeys(sop for sop, _ in refs):
        instance = Dataset()
        instance.ReferencedSOPInstanceUID = sop
        series.ReferencedInstanceSequence.append(instance)
    ds.ReferencedSeriesSequence = [series]
    per = []
    for sop, frame in refs:
        item, ident, deriv, source = Dataset(), Dataset(), Dataset(), Dataset()
        ident.ReferencedSegmentNumber = 1
        source.ReferencedSOPInstanceUID = sop
        if frame is not None:
            source.ReferencedFrameNumber = frame
        deriv.SourceImageSequence = [source]
        item.SegmentIdentificationSequence, item.DerivationImageSequence = [ident], [deriv]
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = per
    ds.PixelData = pack_bits(np.stack(masks).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _masks(n: int, shape=(4, 5)) -> list[np.ndarray]:
    """``n`` different masks: mask i covers the first i + 1 pixels in raster order."""
    return [np.arange(shape[0] * shape[1]).reshape(shape) <= i for i in range(n)]


def test_enhanced_frames_that_are_no_volume_keep_their_seg_masks(tmp_path):
    """Two phases at z 0 and 5 mm: no volume, so every frame is a 2D image; the SEG's (SOP, frame) references
    still place its masks (they used to vanish without a reject)."""
    _enhanced_ct(tmp_path / "DCM" / "phases" / "ct.dcm", zs=(0.0, 5.0, 0.0, 5.0))
    ct = pydicom.dcmread(tmp_path / "DCM" / "phases" / "ct.dcm")
    a, b = _masks(2)
    refs = [(ct.SOPInstanceUID, 3), (ct.SOPInstanceUID, 2)]  # 1-based frame numbers
    _write_seg(tmp_path / "DCM" / "phases" / "seg.dcm", [a, b], refs, ct.SeriesInstanceUID)
    spec = _spec()
    item = _items(spec, tmp_path)["phases/ct"]
    assert item.meta_dict() == {"kind": "enhanced"} and [f.role for f in item.files] == ["image", "seg"]
    frames = _read(spec, tmp_path, item)
    assert [(f.plane, f.slice_index) for f in frames] == [("im", f) for f in range(4)]
    assert [[label for label, _ in f.masks] for f in frames] == [[], ["liver"], ["liver"], []]
    assert np.array_equal(frames[2].masks[0][1], a) and np.array_equal(frames[1].masks[0][1], b)


def test_rtstruct_on_enhanced_frames_that_are_no_volume_is_unmatched(tmp_path):
    """Contours are placed by slice geometry, which frames that form no volume lack: the case is rejected with
    the reason, not read without the RTSTRUCT."""
    _enhanced_ct(tmp_path / "DCM" / "phases" / "ct.dcm", zs=(0.0, 5.0, 0.0, 5.0))
    ct = pydicom.dcmread(tmp_path / "DCM" / "phases" / "ct.dcm")
    rt = pydicom.dcmread(_real("rtstruct.dcm"), force=True)  # a raw dataset: no preamble
    refs = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    refs.RTReferencedSeriesSequence[0].SeriesInstanceUID = ct.SeriesInstanceUID
    rt.save_as(tmp_path / "DCM" / "phases" / "rtstruct.dcm")
    spec = _spec()
    item = _items(spec, tmp_path)["phases/ct"]
    assert [f.role for f in item.files] == ["image", "rtstruct"]
    with pytest.raises(ReadError) as e:
        _read(spec, tmp_path, item)
    assert e.value.reason == "unmatched_annotation"
    assert e.value.detail.startswith("DCM/phases/rtstruct.dcm: RTSTRUCT contours need a volume")
    assert "position(s) repeat" in e.value.detail


def test_seg_is_held_to_max_pixels_before_decoding(tmp_path):
    """An 80-pixel enhanced CT with a 160-pixel SEG: ``max_pixels: 100`` refuses the SEG from its header."""
    _enhanced_ct(tmp_path / "DCM" / "enhanced" / "ct.dcm")
    ct = pydicom.dcmread(tmp_path / "DCM" / "enhanced" / "ct.dcm")
    refs = [(ct.SOPInstanceUID, f) for f in (1, 2, 3, 4, 1, 2, 3, 4)]
    _write_seg(tmp_path / "DCM" / "enhanced" / "seg.dcm", _masks(8), refs, ct.SeriesInstanceUID)
    item = _items(_spec(), tmp_path)["enhanced/ct"]
    assert any(f.masks for f in _read(_spec(), tmp_path, item))  # the default limit reads it
    with pytest.raises(ReadError) as e:
        _read(_spec(max_pixels=100), tmp_path, item)
    assert e.value.reason == "too_large"
    assert e.value.detail.startswith("DCM/enhanced/seg.dcm: the header claims a 8 x 4 x 5 x 1 image")


def test_enhanced_frames_read_as_images_get_their_functional_group_spacing(tmp_path):
    """Enhanced files keep pixel spacing only in the functional groups: shared, per-frame (which wins), or for
    XA/XRF the detector's ImagerPixelSpacing in Frame Pixel Data Properties."""
    _enhanced_ct(tmp_path / "DCM" / "mixed" / "ct.dcm", zs=(0.0, 5.0, 10.0, 15.0), spacing={2: (0.6, 0.9)})
    xa = _new_dataset(EnhancedXAImageStorage, "XA")
    _grey_frames(xa, np.arange(40).reshape(2, 4, 5))
    shared, pixels = Dataset(), Dataset()
    pixels.ImagerPixelSpacing = [0.2, 0.3]
    shared.FramePixelDataPropertiesSequence = [pixels]
    xa.SharedFunctionalGroupsSequence = [shared]
    xa.save_as(tmp_path / "DCM" / "xa.dcm", enforce_file_format=True)
    spec = _spec()
    items = _items(spec, tmp_path)
    assert items["mixed/ct"].meta_dict() == {"kind": "enhanced"}
    assert items["xa"].meta_dict() == {"kind": "image"}
    frames = _read(spec, tmp_path, items["mixed/ct"])  # frame 2's own spacing: no volume, 2D images
    assert [f.plane for f in frames] == ["im"] * 4
    assert [f.spacing_mm for f in frames] == [(0.8, 0.8), (0.8, 0.8), (0.6, 0.9), (0.8, 0.8)]
    assert [f.spacing_mm for f in _read(spec, tmp_path, items["xa"])] == [(0.2, 0.3)] * 2


# --- multi-frame images (cine, US, XA): frames as 2D images ------------------------------------------------


def _us(path: Path, frames: np.ndarray) -> Dataset:
    ds = _new_dataset(UltrasoundMultiFrameImageStorage if frames.ndim == 3 else UltrasoundImageStorage, "US")
    _grey_frames(ds, frames + 10)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_seg_reference_without_frame_number_is_to_every_frame_of_a_multiframe_image(tmp_path):
    """PS3.3 Table 10-3: ReferencedFrameNumber is required only when a reference to a multi-frame image does
    not apply to all its frames. Without it the SEG frame goes on every frame (it used to match none); on a
    single-frame image, on that frame, with or without the number."""
    cine = _us(tmp_path / "DCM" / "cine" / "us.dcm", np.zeros((3, 4, 5), np.uint8))
    (a,) = _masks(1)
    _write_seg(
        tmp_path / "DCM" / "cine" / "seg.dcm", [a], [(cine.SOPInstanceUID, None)], cine.SeriesInstanceUID
    )
    still = _us(tmp_path / "DCM" / "still" / "us.dcm", np.zeros((4, 5), np.uint8))
    for n, frame in enumerate((None, 1)):
        refs = [(still.SOPInstanceUID, frame)]
        _write_seg(tmp_path / "DCM" / "still" / f"seg{n}.dcm", [a], refs, still.SeriesInstanceUID)
    spec = _spec()
    items = _items(spec, tmp_path)
    frames = _read(spec, tmp_path, items["cine/us"])
    assert [f.slice_index for f in frames] == [0, 1, 2]
    for f in frames:
        ((label, mask),) = f.masks
        assert label == "liver" and np.array_equal(mask, a)
    (frame,) = _read(spec, tmp_path, items["still/us"])
    assert [label for label, _ in frame.masks] == ["liver", "liver"]  # one per SEG
    assert all(np.array_equal(mask, a) for _, mask in frame.masks)

    # two frames of one segment that each claim every frame: which is whose only a frame number can say
    refs = [(cine.SOPInstanceUID, None)] * 2
    _write_seg(tmp_path / "DCM" / "cine" / "seg.dcm", _masks(2), refs, cine.SeriesInstanceUID)
    with pytest.raises(ReadError) as e:
        _read(spec, tmp_path, _items(spec, tmp_path)["cine/us"])
    assert e.value.reason == "unmatched_annotation" and "ReferencedFrameNumber" in e.value.detail


def test_seg_frame_referencing_several_frames_goes_on_each_of_them(tmp_path):
    """A SEG frame derived from several source frames (multi-valued ReferencedFrameNumber) applies to each: its
    mask lands on frames 1 and 3 of a cine and of an enhanced CT volume (it used to land on the first only).
    One referenced frame the image lacks rejects the case instead of losing the mask there."""
    cine = _us(tmp_path / "DCM" / "cine" / "us.dcm", np.zeros((4, 4, 5), np.uint8))
    a, b = _masks(2)
    refs = [(cine.SOPInstanceUID, [1, 3]), (cine.SOPInstanceUID, 2)]
    _write_seg(tmp_path / "DCM" / "cine" / "seg.dcm", [a, b], refs, cine.SeriesInstanceUID)
    written = pydicom.dcmread(tmp_path / "DCM" / "cine" / "seg.dcm").PerFrameFunctionalGroupsSequence[0]
    source = written.DerivationImageSequence[0].SourceImageSequence[0]
    assert list(source.ReferencedFrameNumber) == [1, 3]  # one multi-valued attribute in the file
    _enhanced_ct(tmp_path / "DCM" / "enhanced" / "ct.dcm")  # file frames 1, 3 at z 10, 15: stack k 2, 3
    ct = pydicom.dcmread(tmp_path / "DCM" / "enhanced" / "ct.dcm")
    refs = [(ct.SOPInstanceUID, [1, 3])]
    _write_seg(tmp_path / "DCM" / "enhanced" / "seg.dcm", [a], refs, ct.SeriesInstanceUID)
    spec = _spec()
    items = _items(spec, tmp_path)
    assert items["enhanced/ct"].meta_dict() == {"kind": "enhanced"}
    frames = _read(spec, tmp_path, items["cine/us"])
    assert [(f.plane, f.slice_index) for f in frames] == [("im", f) for f in range(4)]
    assert [len(f.masks) for f in frames] == [1, 1, 1, 0]
    assert np.array_equal(frames[0].masks[0][1], a) and np.array_equal(frames[2].masks[0][1], a)
    assert np.array_equal(frames[1].masks[0][1], b)
    frames = _read(spec, tmp_path, items["enhanced/ct"])
    assert [(f.plane, f.slice_index) for f in frames] == [("ax", k) for k in range(4)]
    assert [len(f.masks) for f in frames] == [0, 0, 1, 1]
    assert all(np.array_equal(f.masks[0][1], a) for f in frames[2:])

    refs = [(cine.SOPInstanceUID, [1, 9])]  # the cine has 4 frames
    _write_seg(tmp_path / "DCM" / "cine" / "seg.dcm", [a], refs, cine.SeriesInstanceUID)
    with pytest.raises(ReadError) as e:
        _read(spec, tmp_path, items["cine/us"])
    assert e.value.reason == "unmatched_annotation" and "frames 1, 9" in e.value.detail


# --- broken input ------------------------------------------------------------------------------------------


def test_broken_files_get_reason_codes(tmp_path):
    folder = tmp_path / "DCM"
    for name in ("notes", "truncated", "nopixels", "video"):
        (folder / name).mkdir(parents=True)
    (folder / "notes" / "notes.dcm").write_bytes(b"this is a text file, not DICOM\n" * 10)
    data = _real("CT_small.dcm").read_bytes()
    (folder / "truncated" / "truncated.dcm").write_bytes(data[: len(data) - 4000])
    _write_slice(
        folder / "nopixels" / "nopixels.dcm", np.zeros((8, 8), np.int16), position=(0, 0, 0),
        series_uid="1.2.3.9", pixel_data=False,
    )  # fmt: skip
    mpeg = _write_slice(
        folder / "video" / "video.dcm", np.zeros((8, 8), np.int16), position=(0, 0, 0), series_uid="1.2.3.8"
    )
    mpeg.file_meta.TransferSyntaxUID = MPEG2MPML
    mpeg.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    mpeg["PixelData"].VR = "OB"
    mpeg.save_as(folder / "video" / "video.dcm", enforce_file_format=True)
    expected = {
        "notes": "not_dicom",
        "truncated": "unreadable_image",
        "nopixels": "no_pixel_data",
        "video": "unsupported_transfer_syntax",
    }
    for name, reason in expected.items():  # the 2D loader other readers use
        with pytest.raises(ReadError) as e:
            read_image(folder / name / f"{name}.dcm", f"DCM/{name}/{name}.dcm")
        assert e.value.reason == reason, name
    with pytest.raises(ReadError) as e:
        read_image(_real("MR_truncated.dcm"), "MR_truncated.dcm")
    assert e.value.reason == "unreadable_image"

    spec = _spec()
    items = _items(spec, tmp_path)
    assert sorted(items) == ["nopixels", "notes/notes", "truncated", "video"]
    for case, item in items.items():  # discovery never fails; each bad case is rejected at read
        with pytest.raises(ReadError) as e:
            _read(spec, tmp_path, item)
        assert e.value.reason == expected[case.split("/")[0]], case


def test_discovery_in_processes_gives_the_serial_result(tmp_path):
    # More files than one task of the pool (500), an unreadable one in the middle and a non-DICOM one: the
    # items, their order and the error item are the same as a serial scan's.
    folder = tmp_path / "DCM"
    px = np.zeros((4, 4), np.int16)
    for s in range(11):
        uid = f"1.2.826.0.1.3680043.8.498.{700 + s}"
        for k in range(50):
            _write_slice(
                folder / f"p{s:02d}" / f"im{k:02d}.dcm", px, position=(0, 0, 2.0 * k), series_uid=uid,
                sop_uid=f"{uid}.{k + 1}", patient_id=f"P{s % 4}",
            )  # fmt: skip
    (folder / "p05" / "notes.dcm").write_bytes(b"not DICOM\n" * 20)
    (folder / "p05" / "readme.txt").write_text("not DICOM, not named so")
    serial = list(dicom.discover(_spec(discovery_workers=1), folder))
    pooled = list(dicom.discover(_spec(discovery_workers=2), folder))
    assert pooled == serial
    assert len(serial) == 12
    bad = [i for i in serial if i.case_id == "p05/notes"]
    assert len(bad) == 1 and dict(bad[0].meta)["error"][0] == "not_dicom"
    series = [i for i in serial if i.case_id != "p05/notes"]
    assert all(len(i.files) == 50 for i in series)


# --- end to end ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dicom_family_builds_end_to_end(tmp_path, ray_session):
    from medpclip.corpus.build import build_corpus
    from medpclip.corpus.inspect import check_corpus
    from medpclip.warehouse import query

    raw, out = tmp_path / "raw", tmp_path / "corpus"
    _liver_ct(raw / "DCM" / "liver" / "ct")
    shutil.copy(_real("liver_1frame.dcm"), raw / "DCM" / "liver" / "seg.dcm")
    shutil.copytree(TEST_FILES / "dicomdirtests" / "77654033" / "CR3", raw / "DCM" / "CR3")
    _shuffled_series(raw / "DCM" / "patient1" / "series_a")
    (raw / "DCM" / "bad").mkdir()
    (raw / "DCM" / "bad" / "notes.dcm").write_text("not a DICOM file")
    data = _spec().model_dump(mode="json")
    data["slicing"]["keep_empty"] = True
    build_corpus([parse_spec(data)], raw, out, max_side=64)
    assert check_corpus(out).problems == []
    by_modality = dict(query(out, "SELECT modality, count(*) FROM samples GROUP BY modality")[1])
    assert by_modality == {"CT": 3 + 6, "XR": 1}
    assert query(out, "SELECT DISTINCT label, kind FROM regions")[1] == [("liver", "mask")]
    assert query(out, "SELECT DISTINCT slice_index FROM samples JOIN regions USING (key)")[1] == [(0,)]
    assert query(out, "SELECT reason FROM rejects WHERE stage = 'read'")[1] == [("not_dicom",)]
    for path in out.rglob("*"):
        if path.is_file():
            assert b"PAT-0001" not in path.read_bytes(), path


# --- DICOM named by a 2D family's spec (raster, reports): the one image loader (issue 14) ----------------


def _cr_with_pixel_spacing(path: Path) -> np.ndarray:
    """pydicom's 16 x 16 MONOCHROME1 CR (ImagerPixelSpacing 0.1) given PixelSpacing 0.2 x 0.4 mm: pixels
    twice as wide as tall. Returns the stored values."""
    ds = pydicom.dcmread(TEST_FILES / "dicomdirtests" / "77654033" / "CR3" / "6278")
    ds.PixelSpacing = [0.2, 0.4]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds.pixel_array


@pytest.mark.parametrize("family", ["raster", "reports"])
@pytest.mark.parametrize("voi", [True, False])
def test_dicom_read_by_a_2d_family_keeps_its_spacing_and_the_voi_option(tmp_path, family, voi):
    from medpclip.imaging import target_shape

    if family == "raster":
        root = tmp_path / "raw" / "XR"
        _cr_with_pixel_spacing(root / "images" / "a.dcm")
        options = {"images": "images/*.dcm", "require_annotation": False, "dicom_voi": voi}
        spec = parse_spec(
            {
                **_spec().model_dump(
                    mode="json", include={"title", "citation", "licence", "access", "homepage"}
                ),
                "name": "xr",
                "root": "XR",
                "modality": "XR",
                "body_part": "chest",
                "format": {"family": "raster", "options": options},
                "labels": [{"label": "lung", "name": "Lung", "category": "lung"}],
                "intensity": {"kind": "percentile"},
                "slicing": {"keep_empty": True},
            }
        )
    else:  # MIMIC-CXR's own DICOM release, read through the reports layout instead of the JPGs
        root = tmp_path / "raw" / "mimic_cxr"
        study = root / "files" / "p10" / "p10000032" / "s50414267"
        _cr_with_pixel_spacing(study / "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.dcm")
        (study.parent / "s50414267.txt").write_text("FINDINGS: No effusion.\n")
        data = resolve_spec("mimic_cxr").model_dump(mode="json")
        data["format"]["options"].update(images="files/p*/p*/s*/*.dcm", dicom_voi=voi)
        data["intensity"] = {"kind": "percentile"}
        spec = parse_spec(data)
    reader = get_reader(family)
    (item,) = list(reader.discover(spec, root))
    (frame,) = list(reader.read(spec, tmp_path / "raw", item))
    assert frame.spacing_mm == (0.2, 0.4)  # once dropped: the image was stored stretched to 16 x 16
    assert target_shape(16, 16, frame.spacing_mm, 64) == (16, 32)  # stored at its true 1:2 aspect
    # the VOI option reaches the DICOM loader: window to 8 bits, or the raw (modality-LUT) values
    assert (frame.intensity, frame.image.dtype) == (("uint8", np.uint8) if voi else ("raw", np.float32))
