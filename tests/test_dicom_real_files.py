"""Real DICOM files from pydicom-data (pydicom's external test files) through the project's read path.

pydicom-data is a dev dependency (``make setup`` installs it), so a missing file is a failure, not a skip.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medpclip.sources.dicom.files import decode_pixels, read_dataset
from medpclip.sources.dicom.image import read_dicom_image
from medpclip.sources.dicom.intensity import frame_images


def _path(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    assert found is not None, f"{name} not found: pydicom-data is not installed (run `make setup`)"
    return Path(found)


def _frames(name: str) -> np.ndarray:
    """Every frame of a file as the dicom family reader decodes it (read_dataset → decode_pixels →
    frame_images), stacked."""
    ds = read_dataset(_path(name), name)
    images = list(frame_images(ds, decode_pixels(ds, name), True))
    assert all(intensity == "uint8" for _, intensity in images)
    return np.stack([img for img, _ in images])


def _single(name: str) -> np.ndarray:
    image = read_dicom_image(_path(name), name)
    assert image.intensity == "uint8"
    return image.array[None]


def _colours(arr: np.ndarray) -> int:
    return len(np.unique(arr.reshape(-1, arr.shape[-1]), axis=0))


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


# Each PALETTE COLOR file in pydicom-data 1.0.0 and pydicom 3.0.2's own data, found once by scanning
# get_testdata_files("*") for PhotometricInterpretation == "PALETTE COLOR": (name, decode, frames, colours, sha256).
OBXXXX1A_SHA = "f27736ea1acb75cbd77cc44bdf061c884774d5dfaab52429152f950a19a1bde8"
OBXXXX1A_2FRAME_SHA = "7b43b70eef9406161dae9c89784c13534b0c43b4608b98203dfc2f9597f66daa"
ALOKA_SHA = "97697b719ccd7c15c9cfbee12cb1285b2423b8bc3adf6bf45cb3858e4f0f3db4"
PALETTE_FILES = [
    ("OBXXXX1A.dcm", _single, 1, 207, OBXXXX1A_SHA),
    ("OBXXXX1A_expb.dcm", _single, 1, 207, OBXXXX1A_SHA),
    ("OBXXXX1A_rle.dcm", _single, 1, 207, OBXXXX1A_SHA),
    ("OBXXXX1A_2frame.dcm", _frames, 2, 226, OBXXXX1A_2FRAME_SHA),
    ("OBXXXX1A_expb_2frame.dcm", _frames, 2, 226, OBXXXX1A_2FRAME_SHA),
    ("OBXXXX1A_rle_2frame.dcm", _frames, 2, 226, OBXXXX1A_2FRAME_SHA),
    (
        "examples_palette.dcm",
        _single,
        1,
        207,
        "322156a65198e9bee9b231c14fcb48d06306bea5d39e9f3c0b0befb037eb834f",
    ),
    ("gdcm-US-ALOKA-16.dcm", _single, 1, 66, ALOKA_SHA),  # segmented LUT, 16-bit pixels
    ("gdcm-US-ALOKA-16_big.dcm", _single, 1, 66, ALOKA_SHA),
]


@pytest.mark.parametrize(
    ("little", "big", "decode"),
    [
        ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm", _single),
        ("OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm", _frames),
    ],
    ids=["single_frame", "two_frame"],
)
def test_palette_big_endian_matches_little_endian_twin(little, big, decode):
    """Explicit VR Big Endian palette files decode to the same RGB as their little-endian twins (their 16-bit
    LUT Data is big-endian OW; it used to come back byte-swapped and the image black → constant_image)."""
    a, b = decode(little), decode(big)
    assert a.dtype == b.dtype == np.uint8 and a.shape[-1] == 3
    assert _colours(b) > 200 and all(_colours(f) > 1 for f in b)
    assert np.array_equal(a, b)
    assert _sha256(b) == _sha256(a)


@pytest.mark.parametrize(
    ("name", "decode", "frames", "colours", "sha"), PALETTE_FILES, ids=[p[0] for p in PALETTE_FILES]
)
def test_palette_file_decodes_not_constant(name, decode, frames, colours, sha):
    arr = decode(name)
    assert arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[0] == frames and arr.shape[-1] == 3
    assert all(_colours(f) > 1 for f in arr), "a frame holds one colour everywhere"
    assert _colours(arr) == colours
    assert _sha256(arr) == sha


def test_palette_8_bit_entries_in_16_bit_words():
    """A LUT Descriptor of 8 bits per entry with the data in 16-bit words (an encoder quirk PS3.3 C.7.6.3.1.5
    notes) holds 0-255 already: scaled by the descriptor, it decodes like the 16-bit LUT it came from."""
    ds = read_dataset(_path("OBXXXX1A.dcm"), "OBXXXX1A.dcm")
    for c in ("Red", "Green", "Blue"):
        lut = np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, "<u2")
        assert not np.any(lut & 0xFF)  # 8-bit values in the high byte: 0x0000..0xFF00
        ds[f"{c}PaletteColorLookupTableData"].value = (lut >> 8).astype("<u2").tobytes()
        ds[f"{c}PaletteColorLookupTableDescriptor"].value = [256, 0, 8]
    ((img, intensity),) = list(frame_images(ds, decode_pixels(ds, "x"), True))
    assert intensity == "uint8"
    assert _sha256(img) == OBXXXX1A_SHA
