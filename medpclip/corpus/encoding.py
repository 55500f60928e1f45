"""How a sample's image is stored: colour photographs as JPEG, everything else as lossless PNG.

Endoscopy, dermoscopy, fundus and pathology sources are colour photographs that their publishers ship as
JPEG; re-encoding them as PNG multiplies their bytes (5.4x on the demo polyps) and every later read of the
corpus with it, for no fidelity the source ever had. Grey medical images (CT, MR, X-ray, ultrasound) keep
lossless PNG: their 8 bits are a window of the scanner's values, and JPEG's blocks would be visible in it.

- A photograph that is neither resized nor converted (its pixels are the source JPEG's, decoded) is stored
  as the source file's own bytes, with every metadata segment removed (EXIF, XMP, ICC, comments: camera
  serials, dates and GPS must not reach the corpus, and an EXIF orientation would make viewers rotate what
  the regions were computed on). The decoded pixels are unchanged by that removal.
- Any other photograph is encoded by Pillow at quality 95 (4:2:0, optimised Huffman tables), no metadata.
- Both are deterministic: the same pixels and settings give the same bytes.

PNG is written here rather than by Pillow, for speed: Pillow's encoder (libpng-style adaptive filtering over
classic zlib) was 45 % of a CT unit's time. ``encode_png`` filters each row with the cheapest of PNG's None,
Sub and Up filters (by libpng's minimum-sum-of-absolute-differences rule, vectorised over the whole image) and
deflates with zlib-ng at the build's level (``SampleParams.png_compress_level``, 2): on 512² CT slices 3x
faster than Pillow at level 6 for 1 % more bytes, on 1024² radiographs 7x faster for 11 % more
(docs/BENCHMARKS.md §12). The pixels are the same; any PNG decoder reads them. zlib-ng's output depends on
its version (pinned, and part of ``codec_versions``, hence of every unit's fingerprint) and, since zlib-ng 2.2,
not on the CPU's instruction set.

The tar member is ``KEY.jpg`` or ``KEY.png``; webdataset, open_clip (``jpg;png``) and HF ``datasets`` read
either by extension.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import PIL
from PIL import Image
from zlib_ng import zlib_ng

PHOTOGRAPHIC_MODALITIES = frozenset({"endoscopy", "dermoscopy", "fundus", "pathology"})
IMAGE_EXTS = ("png", "jpg")  # the image member of a sample: exactly one of these
JPEG_QUALITY = 95

# JPEG markers kept when a source file is stored as it is: everything that decodes the image, nothing else
_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field
_METADATA = {*range(0xE1, 0xF0), 0xFE}  # APP1-APP15 (EXIF, XMP, ICC, Adobe, …) and COM


def image_ext(modality: str, img8: np.ndarray) -> str:
    """``jpg`` for a colour image of a photographic modality, else ``png``."""
    return "jpg" if img8.ndim == 3 and modality in PHOTOGRAPHIC_MODALITIES else "png"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (grey, RGB); 8 bits per sample


def codec_versions() -> str:
    """The libraries that decide image bytes (part of every unit's fingerprint, ``corpus.plan``)."""
    return f"zlib-ng {zlib_ng.ZLIBNG_VERSION}; pillow {PIL.__version__}"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def png_filtered_rows(img: np.ndarray) -> np.ndarray:
    """The PNG scanlines of an 8-bit image: each row prefixed by its filter type, None (0), Sub (1) or Up (2),
    whichever has the smallest sum of absolute values of its bytes read as signed (libpng's heuristic).
    Average and Paeth are left out: on CT they gained 2 % of bytes for 60 % more encoding time."""
    h = img.shape[0]
    bpp = 1 if img.ndim == 2 else img.shape[2]
    x = np.ascontiguousarray(img).reshape(h, -1)
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    candidates = (x, x - left, x - up)  # uint8 arithmetic wraps modulo 256, as PNG's filters do
    # |byte as int8| is min(v, 256 - v); summed per row, the first minimum wins (None before Sub before Up)
    # uint32 holds a row sum (at most 128 per byte) and sums twice as fast as int64
    scores = np.stack([np.minimum(f, 0 - f).sum(axis=1, dtype=np.uint32) for f in candidates])
    best = np.argmin(scores, axis=0).astype(np.uint8)
    rows = np.empty((h, x.shape[1] + 1), np.uint8)
    rows[:, 0] = best
    for kind, filtered in enumerate(candidates):
        chosen = best == kind
        if chosen.all():
            rows[:, 1:] = filtered
        elif chosen.any():
            rows[chosen, 1:] = filtered[chosen]
    return rows


def encode_png(img: np.ndarray, compress_level: int) -> bytes:
    """An 8-bit grey (H, W) or RGB (H, W, 3) image as PNG: one IDAT, no timestamps or text chunks, so the
    bytes depend only on the pixels (and the codec versions). Other layouts go through Pillow."""
    channels = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype != np.uint8 or channels not in _PNG_COLOUR_TYPE:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=compress_level)
        return buf.getvalue()
    h, w = img.shape[:2]
    header = struct.pack(">IIBBBBB", w, h, 8, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    data = zlib_ng.compress(png_filtered_rows(img).tobytes(), compress_level)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def strip_jpeg_metadata(data: bytes) -> bytes:
    """The JPEG stream without its APP1–APP15 and COM segments (APP0/JFIF, tables, frame and scans kept, in
    order). Raises ValueError on bytes that are not a well-formed JPEG up to its first scan."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI marker)")
    out = bytearray(data[:2])
    i = 2
    while i < len(data):
        if data[i] != 0xFF or i + 1 >= len(data):
            raise ValueError(f"byte {i}: expected a marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _STANDALONE:
            out += data[i : i + 2]
            i += 2
            continue
        if marker == _EOI:
            out += data[i : i + 2]
            return bytes(out)
        if i + 4 > len(data):
            raise ValueError(f"byte {i}: truncated segment")
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        end = i + 2 + length
        if length < 2 or end > len(data):
            raise ValueError(f"byte {i}: segment length {length} runs past the end")
        if marker == _SOS:  # the entropy-coded data and everything after it (more scans, EOI) as stored
            out += data[i:]
            return bytes(out)
        if marker not in _METADATA:
            out += data[i:end]
        i = end
    raise ValueError("no scan in the JPEG stream")


def encode_image(
    img8: np.ndarray,
    modality: str,
    *,
    png_compress_level: int,
    source_jpeg: bytes | None = None,
) -> tuple[str, bytes]:
    """(tar member extension, bytes) of a sample's image. ``source_jpeg``: the source file's bytes, given only
    when ``img8`` is exactly its decoded pixels (no resize, no conversion)."""
    ext = image_ext(modality, img8)
    if ext == "png":
        return ext, encode_png(img8, png_compress_level)
    if source_jpeg is not None:
        try:
            return ext, strip_jpeg_metadata(source_jpeg)
        except ValueError:
            pass  # a stream our parser does not follow: re-encode from the decoded pixels
    return ext, encode_jpeg(img8)


def image_member(members: dict[str, bytes]) -> tuple[str, bytes]:
    """(extension, bytes) of a sample's image member, ``png`` or ``jpg``."""
    found = [(ext, members[ext]) for ext in IMAGE_EXTS if ext in members]
    if len(found) != 1:
        raise KeyError(
            f"a sample has exactly one image member of {IMAGE_EXTS}, this one has {sorted(members)}"
        )
    return found[0]
