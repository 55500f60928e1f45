"""Intensity and geometry on known values, and on real DICOM files shipped inside the pydicom wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from medpclip import imaging


@pytest.mark.parametrize(
    "window, hu, expected",
    [
        ("soft_tissue", [-1000, -160, 40, 240, 3000], [0, 0, 128, 255, 255]),  # L40 W400: -160..240
        ("lung", [-1350, -600, 150], [0, 128, 255]),  # L-600 W1500
        ("bone", [-500, 400, 1300], [0, 128, 255]),  # L400 W1800
        ("brain", [0, 40, 80], [0, 128, 255]),  # L40 W80
        ("liver", [-45, 30, 105], [0, 128, 255]),  # L30 W150
        ((100.0, 200.0), [-10, 50, 100, 150, 210], [0, 64, 128, 191, 255]),  # level/width pair
    ],
)
def test_ct_windows_on_known_hu(window, hu, expected):
    out = imaging.window_ct(np.array(hu, dtype=np.int16), window)
    assert out.dtype == np.uint8 and out.tolist() == expected


def test_real_ct_file_rescaled_to_hu_then_windowed():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = ds.pixel_array
    hu = apply_modality_lut(raw, ds)
    assert float(ds.RescaleIntercept) == -1024 and np.array_equal(hu, raw.astype(np.float64) - 1024)
    out = imaging.window_ct(hu, "abdomen")  # L50 W400: -150..250 HU
    assert out[hu <= -150].max() == 0 and out[hu >= 250].min() == 255
    inside = (hu > -150) & (hu < 250)
    assert inside.any()
    expected = np.rint((hu[inside] + 150) / 400 * 255)
    assert np.array_equal(out[inside], expected.astype(np.uint8))


def test_real_monochrome1_radiograph():
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files/dicomdirtests/77654033/CR3/6278")
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 12
    raw = ds.pixel_array
    shown = imaging.invert(imaging.rescale_bits(raw, ds.BitsStored))
    # In MONOCHROME1 low values are white: the smallest stored value becomes the brightest pixel.
    assert shown.flat[raw.argmin()] == shown.max() and shown.flat[raw.argmax()] == shown.min()
    assert shown.flat[raw.argmin()] == 255 - round(int(raw.min()) / 4095 * 255)


def test_rescale_bits_and_percentile():
    assert imaging.rescale_bits(np.array([0, 2048, 4095], np.uint16), 12).tolist() == [0, 128, 255]
    x = np.arange(1000, dtype=np.float32)
    out = imaging.normalize_percentile(x, 10, 90)  # 99.9 .. 899.1
    assert out[:100].max() == 0 and out[900:].min() == 255 and out[500] == 128
    assert (
        imaging.normalize_percentile(np.full((4, 4), 7.0)).max() == 0
    )  # constant image: no division by zero
    with_nan = np.array([np.nan, 0.0, 1.0, np.inf], np.float32)
    assert imaging.normalize_percentile(with_nan, 0, 100).tolist() == [0, 0, 255, 0]


def test_as_uint8_image_collapses_grey_rgb_and_drops_alpha():
    grey = np.dstack([np.arange(12, dtype=np.uint8).reshape(3, 4)] * 3)
    assert imaging.as_uint8_image(grey).shape == (3, 4)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 200
    assert imaging.as_uint8_image(rgba).shape == (3, 4, 3)


def test_reorient_lps_to_ras_and_display_convention():
    data = np.zeros(
        (4, 5, 6), np.int16
    )  # voxel (0, 0, 0) is the patient's most RIGHT, most ANTERIOR point in LPS
    data[0, 0, 2] = 1
    lps = np.diag([-1.5, -2.0, 3.0, 1.0])
    ras, zooms = imaging.reorient_canonical(data, lps)
    assert zooms == (1.5, 2.0, 3.0)
    assert tuple(np.argwhere(ras)[0]) == (3, 4, 2)  # R is high x, A is high y in RAS
    (index, shown, spacing), *_ = [s for s in imaging.iter_slices(ras, zooms, "ax") if s[0] == 2]
    assert shown.shape == (5, 4) and spacing == (2.0, 1.5)
    # Radiological view: the patient's right on the image left, anterior at the top.
    assert tuple(np.argwhere(shown)[0]) == (0, 0)


@pytest.mark.parametrize("plane,axis", [("ax", 2), ("co", 1), ("sa", 0)])
def test_iter_slices_matches_take_on_a_reoriented_fortran_volume(plane, axis):
    # NIfTI data is Fortran-ordered and reorientation flips it into a non-contiguous view: the slices must
    # be the same whatever the memory layout.
    data = np.asfortranarray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    ras, zooms = imaging.reorient_canonical(data, np.diag([-1.0, -1.0, 2.0, 1.0]))
    assert not ras.flags.c_contiguous and not ras.flags.f_contiguous
    got = list(imaging.iter_slices(ras, zooms, plane, step=2))
    assert [i for i, _, _ in got] == list(range(0, ras.shape[axis], 2))
    for i, shown, _ in got:
        assert shown.flags.c_contiguous
        assert np.array_equal(shown, imaging.display_slice(np.take(ras, i, axis=axis)))


def test_permuted_axes_are_reordered():
    data = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    affine = np.array([[0, 0, 2.0, 0], [1.5, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]])  # stored (A, S, R)
    ras, zooms = imaging.reorient_canonical(data, affine)
    assert ras.shape == (6, 4, 5) and zooms == (2.0, 1.5, 3.0)
    assert ras[1, 2, 3] == data[2, 3, 1]


def test_target_shape_square_pixels_and_cap():
    assert imaging.target_shape(512, 512, (0.7, 0.7), 1024) == (512, 512)  # never upsampled
    assert imaging.target_shape(512, 512, (0.7, 0.7), 256) == (256, 256)
    assert imaging.target_shape(100, 200, (2.0, 1.0), 1024) == (200, 200)  # 2 mm rows → square 1 mm pixels
    assert imaging.target_shape(300, 1200, None, 600) == (150, 600)


def test_resize_labels_never_mixes_values():
    labels = np.zeros((10, 10), np.uint8)
    labels[:5, :5], labels[5:, 5:] = 3, 7
    small = imaging.resize_labels(labels, (4, 4))
    assert set(np.unique(small)) <= {0, 3, 7} and small[0, 0] == 3 and small[3, 3] == 7
    assert imaging.resize_labels(labels, (20, 20)).sum() == labels.sum() * 4
    img = imaging.resize_image(np.full((10, 20), 100, np.uint8), (5, 10))
    assert img.shape == (5, 10) and (img == 100).all()
