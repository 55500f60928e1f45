"""The build's own codecs (issue 18): PNG written with zlib-ng, .nii.gz inflated with zlib-ng, and the codec
versions in every unit's fingerprint."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest
from corpus_utils import frames_of, items_of, rejected
from PIL import Image

from medpclip.corpus import encoding, plan
from medpclip.demo import nifti_gz
from medpclip.sources.volumes.nifti_files import load_nifti
from medpclip.specs import parse_spec


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
        assert struct.unpack(">I", data[i + 8 + n : i + 12 + n])[0] == zlib.crc32(kind + body)
        out.append((kind, body))
        i += 12 + n
    return out


@pytest.mark.parametrize(
    "shape", [(1, 1), (5, 7), (300, 200), (64, 48, 3), (2, 1, 3)], ids=lambda s: "x".join(map(str, s))
)
def test_png_round_trips_through_pillow_with_valid_chunks(shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, shape).astype(np.uint8)
    img[: shape[0] // 2] = img[: shape[0] // 2] // 16  # smooth rows too, so that more than one filter is used
    data = encoding.encode_png(img, 6)
    assert np.array_equal(_decoded(data), img)
    kinds = [k for k, _ in _chunks(data)]
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]  # no time or text chunks: bytes depend only on the pixels
    w, h, depth, colour = struct.unpack(">IIBB", _chunks(data)[0][1][:10])
    assert (h, w, depth, colour) == (shape[0], shape[1], 8, 0 if len(shape) == 2 else 2)
    assert encoding.encode_png(img.copy(), 6) == data


def test_each_row_gets_the_filter_with_the_smallest_absolute_sum():
    # row 0: all zero (None sums to 0); row 1: a ramp (Sub: every difference is 1 after the first byte);
    # row 2: equal to row 1 (Up: all zero); row 3: noise around 128 (None: |128| is the largest signed value,
    # but Sub/Up of noise are no smaller here: the expected type is computed, not assumed)
    ramp = np.arange(0, 200, 4, dtype=np.uint8)
    noise = np.random.default_rng(3).integers(0, 256, ramp.size).astype(np.uint8)
    img = np.stack([np.zeros_like(ramp), ramp, ramp, noise])
    rows = encoding.png_filtered_rows(img)
    assert rows[:3, 0].tolist() == [0, 1, 2]

    def score(f):
        return int(np.minimum(f, 0 - f).astype(np.int64).sum())

    x, left, up = img[3], np.r_[np.uint8(0), img[3, :-1]], img[2]
    expected = int(np.argmin([score(x), score(x - left), score(x - up)]))
    assert rows[3, 0] == expected
    inflated = zlib.decompress(_chunks(encoding.encode_png(img, 6))[1][1])
    assert inflated == rows.tobytes()


def test_png_bytes_are_pinned_by_the_codec_version():
    """Same pixels, same bytes, on every machine with the pinned zlib-ng (constraints.txt): this hash moves
    only when zlib-ng's version (or this encoder) does, and then every unit's fingerprint moves with it."""
    yy, xx = np.mgrid[:96, :128]
    img = ((xx * 2 + yy) % 256).astype(np.uint8)
    img[40:60, 30:90] = 200
    digest = hashlib.sha256(encoding.encode_png(img, 6)).hexdigest()
    assert encoding.codec_versions().startswith("zlib-ng 2.3.3;")
    assert digest == PINNED_PNG_SHA256


PINNED_PNG_SHA256 = "bf2745611880cb43d2f8983e0ba19107eada44b64054bf073e4b16b906f569a4"


def test_other_layouts_go_through_pillow():
    grey_alpha = np.zeros((4, 5, 2), np.uint8)
    grey_alpha[..., 1] = 255
    assert np.array_equal(_decoded(encoding.encode_png(grey_alpha, 6)), grey_alpha)
    sixteen = np.arange(20, dtype=np.uint16).reshape(4, 5) * 1000
    assert np.array_equal(_decoded(encoding.encode_png(sixteen, 6)), sixteen)


def test_the_fingerprint_covers_the_codec_versions(monkeypatch):
    before = plan.code_version()
    monkeypatch.setattr(plan, "codec_versions", lambda: "zlib-ng 9.9.9; pillow 13.0.0")
    assert plan.code_version() != before


AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def test_load_nifti_reads_what_nibabel_reads(tmp_path):
    data = (np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) * 7 - 300).astype(np.int16)
    (tmp_path / "one.nii.gz").write_bytes(nifti_gz(data, AFFINE))
    two = nib.Nifti2Image(data, AFFINE)
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(two.to_bytes(), mtime=0))
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "plain.nii")
    for name, kind in (
        ("one.nii.gz", nib.Nifti1Image),
        ("two.nii.gz", nib.Nifti2Image),
        ("plain.nii", nib.Nifti1Image),
    ):
        img = load_nifti(tmp_path / name)
        assert type(img) is kind, name
        assert np.array_equal(np.asanyarray(img.dataobj), np.asanyarray(nib.load(tmp_path / name).dataobj))
        assert np.allclose(img.affine, AFFINE)


VOLUME_SPEC = {
    "name": "codec_ct", "root": "Task09_Codec", "title": "t", "citation": "-", "licence": "-", "access": "open",
    "homepage": "-", "modality": "CT", "body_part": "abdomen",
    "format": {"family": "volumes", "options": {"layout": "msd"}},
    "labels": [{"value": 1, "label": "liver", "name": "Liver", "category": "liver"}],
    "intensity": {"kind": "ct_window", "window": "abdomen"},
}  # fmt: skip


def _msd_case(root, name: str, image: bytes, label: bytes) -> None:
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    (root / "imagesTr" / f"{name}.nii.gz").write_bytes(image)
    (root / "labelsTr" / f"{name}.nii.gz").write_bytes(label)


def test_a_truncated_or_corrupt_gzip_volume_is_an_unreadable_image_reject(tmp_path):
    spec = parse_spec(VOLUME_SPEC)
    root = tmp_path / spec.root
    hu = np.random.default_rng(0).integers(-1000, 1000, (32, 32, 6)).astype(np.int16)
    labels = np.zeros((32, 32, 6), np.uint8)
    labels[8:20, 8:20, 2:4] = 1
    image, label = nifti_gz(hu, AFFINE), nifti_gz(labels, AFFINE)
    _msd_case(root, "codec_001", image, label)
    _msd_case(root, "codec_002", image[: len(image) - 200], label)  # truncated in the voxel data
    corrupt = bytearray(image)
    corrupt[len(corrupt) // 2] ^= 0xFF
    _msd_case(root, "codec_003", bytes(corrupt), label)
    cases = ("codec_001", "codec_002", "codec_003")
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases]
    (root / "dataset.json").write_text(json.dumps({"name": "Codec", "training": training}))
    items = items_of(spec, tmp_path)
    assert len(frames_of(spec, tmp_path, items["codec_001"])) == 6
    for case in ("codec_002", "codec_003"):
        err = rejected(spec, tmp_path, items[case])
        assert err.reason == "unreadable_image", (case, err)
        assert "imagesTr/" + case in err.detail
