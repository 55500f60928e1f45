"""Photographs stored as photographs (issue 18): colour photographic samples are JPEG — the source file's own
bytes without metadata when nothing was resized or converted, else quality 95 —, grey images lossless PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from layouts import save_image
from PIL import Image

from medpclip.corpus import encoding
from medpclip.corpus.sample import SampleParams, make_sample
from medpclip.specs import resolve_spec


def _photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([yy * 4 % 256, xx * 3 % 256, (yy + xx) % 256], axis=-1).astype(np.int16)
    return np.clip(base + rng.integers(-10, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def _jpeg_with_metadata(img: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0110] = "Camera XYZ serial 0042"  # Model
    exif[0x0132] = "2019:03:04 10:11:12"  # DateTime
    exif[0x0112] = 6  # Orientation: a viewer would rotate the image
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=85, exif=exif, comment=b"patient Jane Doe")
    return buf.getvalue()


def _markers(data: bytes) -> list[int]:
    """The markers of the segments before the first scan."""
    out, i = [], 2
    while i < len(data) and data[i] == 0xFF:
        m = data[i + 1]
        out.append(m)
        if m == 0xDA:
            break
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return out


def test_strip_jpeg_metadata_keeps_the_pixels_and_drops_exif_and_comments():
    img = _photo()
    src = _jpeg_with_metadata(img)
    assert 0xE1 in _markers(src) and 0xFE in _markers(src)  # the fixture has EXIF and a comment
    clean = encoding.strip_jpeg_metadata(src)
    assert 0xE1 not in _markers(clean) and 0xFE not in _markers(clean) and 0xE0 in _markers(clean)
    assert b"Camera XYZ" not in clean and b"Jane Doe" not in clean
    decoded = lambda b: np.asarray(Image.open(io.BytesIO(b)))  # noqa: E731
    assert np.array_equal(decoded(clean), decoded(src))
    assert encoding.strip_jpeg_metadata(clean) == clean
    assert len(clean) < len(src)


def test_strip_refuses_what_is_not_a_jpeg_and_encode_falls_back():
    with pytest.raises(ValueError, match="no SOI"):
        encoding.strip_jpeg_metadata(b"\x89PNG\r\n")
    src = _jpeg_with_metadata(_photo())
    with pytest.raises(ValueError, match="runs past the end"):
        encoding.strip_jpeg_metadata(src[:30])
    with pytest.raises(ValueError, match="expected a marker"):
        encoding.strip_jpeg_metadata(b"\xff\xd8\xff")
    img = _photo()
    ext, data = encoding.encode_image(img, "endoscopy", png_compress_level=6, source_jpeg=src[:30])
    assert ext == "jpg" and data == encoding.encode_jpeg(img)  # re-encoded, never the broken bytes


@pytest.mark.parametrize(
    ("modality", "channels", "ext"),
    [("endoscopy", 3, "jpg"), ("dermoscopy", 3, "jpg"), ("fundus", 3, "jpg"), ("pathology", 3, "jpg"),
     ("endoscopy", 1, "png"), ("US", 3, "png"), ("CT", 1, "png"), ("XR", 1, "png")],
)  # fmt: skip
def test_only_colour_photographs_become_jpeg(modality, channels, ext):
    img = _photo() if channels == 3 else _photo()[:, :, 0]
    got, data = encoding.encode_image(img, modality, png_compress_level=6)
    assert got == ext
    assert Image.open(io.BytesIO(data)).format == {"jpg": "JPEG", "png": "PNG"}[ext]
    if ext == "png":  # lossless
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), img)


def _kvasir(raw, img: np.ndarray) -> bytes:
    root = raw / "Kvasir-SEG"
    src = _jpeg_with_metadata(img)
    (root / "images").mkdir(parents=True)
    (root / "images" / "cju0qkwl35piu0993l0dewei2.jpg").write_bytes(src)
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[10:30, 12:40] = 255
    save_image(root / "masks" / "cju0qkwl35piu0993l0dewei2.jpg", mask, quality=90)
    (root / "kavsir_bboxes.json").write_text("{}")  # shipped beside the folders; no boxes needed here
    return src


def _sample(spec, raw, max_side: int):
    (item,) = items_of(spec, raw).values()
    (frame,) = frames_of(spec, raw, item)
    files = [{"role": "image", "path": item.files[0].path, "sha256": "0" * 64}]
    sample, _ = make_sample(
        frame, spec, SampleParams(max_side=max_side), key="k", split="train", source_files=files
    )
    return sample


def test_an_unresized_photograph_is_its_source_bytes_without_metadata(tmp_path):
    img = _photo(48, 64)
    src = _kvasir(tmp_path, img)
    spec = resolve_spec("kvasir_seg")
    sample = _sample(spec, tmp_path, max_side=512)
    assert sample.image_ext == "jpg" and set(sample.members()) == {"json", "jpg", "txt"}
    assert sample.image == encoding.strip_jpeg_metadata(src)
    stored = np.asarray(Image.open(io.BytesIO(sample.image)))
    assert np.array_equal(stored, np.asarray(Image.open(io.BytesIO(src))))  # exactly the pixels regions used
    assert len(sample.image) <= 1.3 * len(src)
    again = _sample(spec, tmp_path, max_side=512)
    assert again.members() == sample.members()  # same inputs, same bytes


def test_a_resized_photograph_is_encoded_at_quality_95(tmp_path):
    img = _photo(96, 128)
    src = _kvasir(tmp_path, img)
    spec = resolve_spec("kvasir_seg")
    sample = _sample(spec, tmp_path, max_side=64)
    assert sample.image_ext == "jpg" and (sample.record["width"], sample.record["height"]) == (64, 48)
    assert b"Camera XYZ" not in sample.image and b"Jane Doe" not in sample.image
    stored = Image.open(io.BytesIO(sample.image))
    assert stored.size == (64, 48) and stored.mode == "RGB"
    resized = np.asarray(
        Image.fromarray(np.asarray(Image.open(io.BytesIO(src)))).resize((64, 48), Image.BILINEAR)
    )
    assert np.abs(np.asarray(stored).astype(int) - resized.astype(int)).mean() < 8  # a faithful q95 encoding
    assert len(sample.image) <= 1.3 * len(src)
