"""Generated abdominal CT volumes for the build benchmarks, in the Medical Segmentation Decathlon layout.

Each case is a 512×512×Z int16 HU volume (default Z = 100, 0.8 × 0.8 × 2.5 mm, stored LPS like most
scanners' exports) with BTCV's 13-organ label map: a body outline with a fat ring, organs as jittered
ellipsoids at their usual place and height, both kidneys and adrenals as two labels each, and scanner-like
noise (σ = 12 HU). A mid-abdomen slice carries 6–10 labels, the way a real multi-organ scan does; the pixels
compress like real CT (air outside the body, smooth organs), which matters because PNG encoding is most of
the codec floor.

``write_ct_dataset(root, n_cases)`` writes ``root/Task91_BenchAbdomenCT`` (imagesTr, labelsTr, dataset.json)
and ``root/bench_ct.yaml`` (the spec the build reads). Output is byte-deterministic for a given argument set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from medpclip.demo import nifti_gz

FOLDER = "Task91_BenchAbdomenCT"
LEVEL = 1  # gzip level of most converters (dcm2niix -z y)
SPACING = (0.8, 0.8, 2.5)

# label value, label (BTCV's), HU, centre (x, y as a fraction of the side; z as a fraction of the height),
# semi-axes (x, y as a fraction of the side; z as a fraction of the height), in canonical voxel axes.
ORGANS = (
    (6, "liver", 60, (0.33, 0.45, 0.66), (0.15, 0.13, 0.25)),
    (1, "spleen", 50, (0.72, 0.52, 0.66), (0.06, 0.07, 0.13)),
    (7, "stomach", 20, (0.62, 0.40, 0.70), (0.09, 0.07, 0.15)),
    (2, "right kidney", 35, (0.34, 0.60, 0.40), (0.05, 0.06, 0.14)),
    (3, "left kidney", 35, (0.66, 0.60, 0.42), (0.05, 0.06, 0.14)),
    (11, "pancreas", 45, (0.52, 0.50, 0.55), (0.10, 0.025, 0.06)),
    (4, "gallbladder", 10, (0.37, 0.42, 0.50), (0.03, 0.035, 0.07)),
    (8, "aorta", 160, (0.53, 0.58, 0.50), (0.02, 0.02, 0.60)),
    (9, "inferior vena cava", 130, (0.46, 0.57, 0.50), (0.022, 0.02, 0.60)),
    (10, "portal vein and splenic vein", 140, (0.50, 0.48, 0.60), (0.06, 0.012, 0.04)),
    (5, "esophagus", 30, (0.52, 0.55, 0.93), (0.015, 0.015, 0.10)),
    (12, "right adrenal gland", 30, (0.40, 0.56, 0.60), (0.012, 0.02, 0.05)),
    (13, "left adrenal gland", 30, (0.61, 0.56, 0.60), (0.012, 0.02, 0.05)),
)
TUBE = 0.5  # a z semi-axis this long (aorta, IVC) is a tube, so every slice has a region above the minimum
VERSION = 2  # of the generator: part of the cache stamp, so changed volumes are never mixed with old ones
VERTEBRA_HU = 700  # unlabelled bone: present in the pixels, absent from the label map (as in BTCV)


def case_volumes(case: int, size: int = 512, slices: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, labels uint8), canonical orientation (x, y, z), for case number ``case``."""
    rng = np.random.default_rng(1000 + case)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    body = ((xx - 0.5) / 0.44) ** 2 + ((yy - 0.52) / 0.34) ** 2
    hu2d = np.where(body <= 1, 40.0, -1000.0).astype(np.float32)
    hu2d[(body <= 1) & (body > 0.82)] = -100  # subcutaneous fat
    spine = ((xx - 0.52) / 0.045) ** 2 + ((yy - 0.70) / 0.045) ** 2 <= 1
    hu2d[spine] = VERTEBRA_HU
    hu = np.repeat(hu2d[:, :, None], slices, axis=2)  # (y, x, z) for now
    labels = np.zeros((size, size, slices), np.uint8)
    zz = np.arange(slices, dtype=np.float32) / slices
    for value, _, organ_hu, centre, semi in ORGANS:
        cx, cy, cz = (c + rng.uniform(-0.02, 0.02) for c in centre)
        sx, sy, sz = (s * rng.uniform(0.85, 1.15) for s in semi)
        z_in = np.arange(slices) if sz >= TUBE else np.flatnonzero(np.abs(zz - cz) < sz)
        if z_in.size == 0:
            continue
        y0, y1 = max(int((cy - sy) * size), 0), min(int((cy + sy) * size) + 2, size)
        x0, x1 = max(int((cx - sx) * size), 0), min(int((cx + sx) * size) + 2, size)
        d2 = ((xx[y0:y1, x0:x1] - cx) / sx) ** 2 + ((yy[y0:y1, x0:x1] - cy) / sy) ** 2
        for z in z_in:
            # vessels are tubes through the whole scan; organs ellipsoids (cross-section shrinks to the tips)
            shrink = 1.0 if sz >= TUBE else 1 - ((zz[z] - cz) / sz) ** 2
            inside = d2 <= shrink
            labels[y0:y1, x0:x1, z][inside] = value
            hu[y0:y1, x0:x1, z][inside] = organ_hu
    hu += rng.normal(0, 12, hu.shape).astype(np.float32) * (hu > -900)
    hu_xyz = np.clip(np.rint(hu), -1024, 3071).astype(np.int16).transpose(1, 0, 2)
    return np.ascontiguousarray(hu_xyz), np.ascontiguousarray(labels.transpose(1, 0, 2))


def _stored_affine(size: int) -> np.ndarray:
    sx, sy, sz = SPACING
    return np.array(
        [[-sx, 0, 0, sx * (size - 1) / 2], [0, -sy, 0, sy * (size - 1) / 2], [0, 0, sz, 0], [0, 0, 0, 1]]
    )


def spec_dict(unit_items: int = 1) -> dict:
    btcv = yaml.safe_load((Path(__file__).parents[1] / "dataset_specs" / "btcv.yaml").read_text())
    assert {e["value"]: e["label"] for e in btcv["labels"]} == {v: label for v, label, *_ in ORGANS}
    return {
        "name": "bench_ct",
        "root": FOLDER,
        "title": "Benchmark abdominal CT (generated, MSD layout, BTCV labels)",
        "citation": "medpclip bench/volumes.py (generated, no patient data)",
        "licence": "CC0-1.0",
        "access": "open",
        "homepage": "-",
        "modality": "CT",
        "body_part": "abdomen",
        "format": {"family": "volumes", "options": {"layout": "msd"}},
        "labels": btcv["labels"],  # BTCV's own label map: names, categories, CUIs
        "intensity": {"kind": "ct_window", "window": "abdomen"},
        "slicing": {"planes": ["ax"], "step": 1, "keep_empty": False},
        "split": {"rule": "hash", "salt": "bench", "ratios": {"train": 0.8, "val": 0.1, "test": 0.1}},
        "patient_id": {"regex": "^benchct_(?P<pid>\\d+)$"},
        "regions": {"min_fraction": 0.0005, "min_pixels": 16},
        "unit_items": unit_items,
    }


def write_ct_dataset(
    root: Path, n_cases: int, size: int = 512, slices: int = 100, unit_items: int = 1
) -> Path:
    """Write ``n_cases`` cases under ``root`` (skipped when the same set is already there); returns the spec path."""
    root = Path(root)
    folder = root / FOLDER
    spec_path = root / "bench_ct.yaml"
    stamp = folder / ".complete"
    want = f"v{VERSION} {n_cases} {size} {slices}"
    if stamp.is_file() and stamp.read_text() == want and spec_path.is_file():
        return spec_path
    affine = _stored_affine(size)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    cases = [f"benchct_{i:03d}" for i in range(n_cases)]
    for i, case in enumerate(cases):
        hu, labels = case_volumes(i, size, slices)
        # stored LPS: both in-plane axes flipped (the reader reorients to canonical)
        (folder / "imagesTr" / f"{case}.nii.gz").write_bytes(nifti_gz(hu[::-1, ::-1].copy(), affine, LEVEL))
        (folder / "labelsTr" / f"{case}.nii.gz").write_bytes(
            nifti_gz(labels[::-1, ::-1].copy(), affine, LEVEL)
        )
    meta = {
        "name": "BenchAbdomenCT",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", **{str(v): label for v, label, *_ in sorted(ORGANS)}},
        "numTraining": n_cases,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    spec_path.write_text(yaml.safe_dump(spec_dict(unit_items), sort_keys=False))
    stamp.write_text(want)
    return spec_path
