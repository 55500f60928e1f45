"""Generated 1024² chest radiographs in NIH ChestX-ray14's published layout, for the 2D build benchmark.

The pixels come from the two real radiographs that ship in pydicom-data (``RG1_UNCR.dcm``, 1955×1841, and
``RG3_UNCR.dcm``, 1760×1760; a dev dependency): each image is a seeded 1024² window of one of them, with a
seeded gamma and scanner-like noise, so that it compresses the way a radiograph does (what a PNG codec's
speed depends on), not like a synthetic gradient. The layout is the spec's (``chestxray14.yaml``):
``CXR8/images/images/NNNNNNNN_NNN.png`` (8-bit grey, Pillow level 6, as NIH's files are),
``Data_Entry_2017_v2020.csv`` with its real header, ``BBox_List_2017.csv`` with boxes on one image in ten,
and the two official split lists. Deterministic for a given count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

VERSION = 1
SIDE = 1024
SOURCES = ("RG1_UNCR.dcm", "RG3_UNCR.dcm")
FINDINGS = (
    "No Finding",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Atelectasis|Effusion",
    "Nodule",
    "Mass",
)
HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def _sources() -> list[np.ndarray]:
    from pydicom.data import get_testdata_file

    out = []
    for name in SOURCES:
        pixels = pydicom.dcmread(get_testdata_file(name)).pixel_array.astype(np.float32)
        lo, hi = np.percentile(pixels, [0.5, 99.5])
        out.append(np.clip((pixels - lo) / (hi - lo), 0, 1))
    return out


def write_cxr8(root: Path, n_images: int) -> Path:
    """``root/CXR8`` with ``n_images`` radiographs (skipped when the same set is there); returns ``root``."""
    folder = Path(root) / "CXR8"
    stamp = folder / ".complete"
    want = f"v{VERSION} {n_images}"
    if stamp.is_file() and stamp.read_text() == want:
        return Path(root)
    images = folder / "images" / "images"
    images.mkdir(parents=True, exist_ok=True)
    sources = _sources()
    rows, boxes, train, test = [], [], [], []
    for i in range(n_images):
        rng = np.random.default_rng(7000 + i)
        src = sources[i % len(sources)]
        y = int(rng.integers(0, src.shape[0] - SIDE + 1))
        x = int(rng.integers(0, src.shape[1] - SIDE + 1))
        window = src[y : y + SIDE, x : x + SIDE] ** float(rng.uniform(0.8, 1.25))
        pixels = np.clip(window * 255 + rng.normal(0, 2.0, window.shape), 0, 255).astype(np.uint8)
        patient, follow_up = 1 + i // 3, i % 3
        name = f"{patient:08d}_{follow_up:03d}.png"
        Image.fromarray(pixels).save(images / name, compress_level=6)
        finding = FINDINGS[i % len(FINDINGS)]
        rows.append(
            f"{name},{finding},{follow_up},{patient},{40 + i % 40},{'MF'[i % 2]},PA,2500,2048,0.171,0.171"
        )
        if i % 10 == 1 and finding != "No Finding":
            bx, by = int(rng.integers(100, 600)), int(rng.integers(100, 600))
            boxes.append(f"{name},{finding.split('|')[0]},{bx}.0,{by}.0,{int(rng.integers(60, 300))}.0,180.0")
        (test if patient % 5 == 0 else train).append(name)
    (folder / "Data_Entry_2017_v2020.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    (folder / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + "\n".join(boxes) + "\n"
    )
    (folder / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (folder / "test_list.txt").write_text("\n".join(test) + "\n")
    stamp.write_text(want)
    return Path(root)
