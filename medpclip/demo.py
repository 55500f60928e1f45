"""Small demo raw datasets, written in their publishers' real layouts (for `make demo` and the tests).

Four datasets, each in the folder its publisher's archive unpacks to (the first three by default):

- ``demo_ct`` → ``Task90_DemoAbdomenCT``: a Medical Segmentation Decathlon task (dataset.json, imagesTr,
  labelsTr, imagesTs) of synthetic abdominal CT with liver, spleen, kidneys, aorta and vertebra.
- ``demo_polyp`` → ``Kvasir-SEG``: colonoscopy JPEGs, JPEG-compressed RGB masks, ``kavsir_bboxes.json``.
- ``demo_cxr`` → ``ChestX-ray14``: NIH ChestX-ray14 PNGs with ``Data_Entry_2017.csv``, ``BBox_List_2017.csv``
  and the official ``train_val_list.txt`` / ``test_list.txt``.
- ``demo_context`` → ``Task91_DemoContextCT``: MSD-layout single-slice abdominal CT whose region classes only
  the image context separates (left vs right kidney, a lesion named by its host organ); the region-mode
  benchmark's task (``bench/bench_regions.py``).

The quirks that break naive loaders are reproduced on purpose (see DESIGN §6 and the format reference):
macOS ``._*`` junk next to MSD volumes, an LPS-stored (non-canonical) affine, one MSD label volume stored as
float32, a lesion below the minimum region area, lossy Kvasir masks, NIH's broken CSV headers, the
``Infiltrate``/``Infiltration`` label mismatch and RGBA PNGs among greyscale radiographs.

Everything is deterministic: seeded generators per case, no timestamps (gzip ``mtime=0``, no PNG/JPEG
metadata), so two calls write byte-identical files. The ``*_truth`` functions recompute what was drawn, so
tests can compare readers against the structure itself rather than against the files the readers parse.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

# spec name → dataset folder under the raw root
DEMO_FOLDERS = {
    "demo_ct": "Task90_DemoAbdomenCT",
    "demo_polyp": "Kvasir-SEG",
    "demo_cxr": "ChestX-ray14",
    "demo_context": "Task91_DemoContextCT",
}
#: What ``medpclip demo-data`` writes unless told otherwise: ``demo_context`` (300 cases) is the region-mode
#: benchmark's task, asked for by name (``--dataset demo_context``), so the quick demo stays quick.
DEFAULT_DEMOS = ("demo_ct", "demo_polyp", "demo_cxr")


def write_demo_data(root: Path, names: tuple[str, ...] | list[str] = DEFAULT_DEMOS) -> dict[str, Path]:
    """Write the demo datasets ``names`` under ``root``; returns spec name → dataset folder."""
    root = Path(root)
    writers = {
        "demo_ct": write_demo_ct,
        "demo_polyp": write_demo_polyp,
        "demo_cxr": write_demo_cxr,
        "demo_context": write_demo_context,
    }
    unknown = [n for n in names if n not in writers]
    if unknown:
        raise ValueError(f"unknown demo dataset '{unknown[0]}': use {', '.join(writers)}")
    return {name: writers[name](root / DEMO_FOLDERS[name]) for name in names}


# --- shared helpers ----------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _ellipse(shape: tuple[int, int], center: tuple[float, float], semi: tuple[float, float]) -> np.ndarray:
    """Boolean ellipse over a 2D grid; ``center``/``semi`` in (axis0, axis1) order."""
    a0, a1 = np.ogrid[: shape[0], : shape[1]]
    return ((a0 - center[0]) / semi[0]) ** 2 + ((a1 - center[1]) / semi[1]) ** 2 <= 1.0


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    return buf.getvalue()


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box of a 2D mask as (x0, y0, x1, y1), exclusive max — the corpus's box convention."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# --- (a) MSD-layout abdominal CT ---------------------------------------------------------------------------

CT_TRAIN_CASES = (
    "democt_3", "democt_8", "democt_12", "democt_19", "democt_24",
    "democt_31", "democt_40", "democt_47", "democt_52", "democt_66",
)  # fmt: skip
CT_TEST_CASES = ("democt_71",)
CT_FLOAT_LABEL_CASE = "democt_19"  # its label volume is stored as float32 (an MSD quirk)
CT_LESION_CASE = "democt_31"  # carries one tiny 'liver tumour' (label 6), below the minimum region area
CT_LESION_SLICE = 13  # axial index (canonical, inferior → superior) of that lesion
CT_JUNK_FILE = "imagesTr/._democt_3.nii.gz"
CT_SHAPE = (128, 128, 24)  # voxels (x, y, z)
CT_SPACING = (1.5, 1.5, 5.0)  # mm
CT_LABELS = {
    0: "background",
    1: "liver",
    2: "spleen",
    3: "kidney",
    4: "aorta",
    5: "vertebra",
    6: "liver tumour",
}
# Axial slices (canonical index) that every training case has a given structure on; tests rely on these.
CT_KIDNEY_SLICES = range(3, 11)
CT_LIVER_SLICES = range(8, 19)
CT_EMPTY_SLICES = (0, 1, 22, 23)  # no label at all in any case


@dataclass(frozen=True)
class Blob:
    """An ellipsoid-ish structure in canonical voxel space: (i → patient's right, j → anterior, k → superior)."""

    label: int
    center: tuple[float, float]  # (i, j)
    semi: tuple[float, float]  # (i, j) semi-axes at the middle slice
    z: tuple[int, int]  # half-open axial range
    hu: float
    taper: bool = True  # organs narrow towards their ends; tubes and vertebrae keep their calibre


def ct_case_plan(case_id: str) -> list[Blob]:
    """The structures drawn for a case, in painting order (later ones win where they touch)."""
    rng = np.random.default_rng(1000 + int(case_id.rsplit("_", 1)[1]))

    def jitter(v: float, d: float) -> float:
        return float(v + rng.uniform(-d, d))

    def scale(v: float) -> float:
        return float(v * rng.uniform(0.85, 1.15))

    dz = int(rng.integers(-1, 2))
    kz = int(rng.integers(0, 2))
    return [
        # liver: large, on the patient's right (high canonical i), anterior
        Blob(1, (jitter(88, 3), jitter(70, 3)), (scale(22), scale(19)), (7 + dz, 20 + dz), jitter(60, 4)),
        # spleen: patient's left, posterolateral
        Blob(2, (jitter(31, 2), jitter(64, 3)), (scale(9), scale(12)), (12 + dz, 21 + dz), jitter(45, 3)),
        # kidneys: one label, two components (right then left), posterior
        Blob(3, (jitter(90, 2), jitter(40, 2)), (scale(7), scale(9)), (2 + kz, 11 + kz), jitter(30, 3)),
        Blob(3, (jitter(38, 2), jitter(40, 2)), (scale(7), scale(9)), (2 + kz, 11 + kz), jitter(30, 3)),
        # aorta: small disc anterior to the spine, just left of the midline
        Blob(4, (jitter(60, 1), jitter(46, 1)), (4.5, 4.5), (2, 22), jitter(200, 15), taper=False),
        # vertebral body: posterior midline
        Blob(
            5, (jitter(64, 1), jitter(33, 1)), (scale(7), scale(6.5)), (2, 22), jitter(700, 40), taper=False
        ),
    ]


def _blob_slice(shape2d: tuple[int, int], blob: Blob, k: int) -> np.ndarray:
    """The blob's cross-section on axial slice k: semi-axes shrink towards both ends of its range."""
    z0, z1 = blob.z
    if not z0 <= k < z1:
        return np.zeros(shape2d, bool)
    mid, half = (z0 + z1 - 1) / 2, max((z1 - z0) / 2, 1)
    s = max(0.6, float(np.sqrt(max(0.0, 1 - ((k - mid) / half) ** 2)))) if blob.taper else 1.0
    return _ellipse(shape2d, blob.center, (blob.semi[0] * s, blob.semi[1] * s))


def ct_case_volumes(case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, labels uint8) in CANONICAL orientation (RAS: i → right, j → anterior, k → superior)."""
    nx, ny, nz = CT_SHAPE
    rng = np.random.default_rng(5000 + int(case_id.rsplit("_", 1)[1]))
    body_semi = (rng.uniform(52, 58), rng.uniform(37, 42))
    body = _ellipse((nx, ny), (64, 62), body_semi)
    inner = _ellipse((nx, ny), (64, 62), (body_semi[0] - 6, body_semi[1] - 5))  # inside the subcutaneous fat
    hu = np.full(CT_SHAPE, -1000.0)
    labels = np.zeros(CT_SHAPE, np.uint8)
    plan = ct_case_plan(case_id)
    for k in range(nz):
        sl = hu[:, :, k]
        sl[body] = -100.0
        sl[inner] = 40.0
        for blob in plan:
            m = _blob_slice((nx, ny), blob, k)
            sl[m] = blob.hu
            labels[:, :, k][m] = blob.label
            if blob.label == 3:  # enhancing cortex: a brighter rim of the same label
                rim = m & ~ndimage.binary_erosion(m, iterations=2)
                sl[rim] = blob.hu + 110
    if case_id == CT_LESION_CASE:
        liver = plan[0]
        ci, cj = int(liver.center[0]), int(liver.center[1])
        labels[ci : ci + 3, cj : cj + 2, CT_LESION_SLICE] = 6  # 3×2 voxels: 6 px < 16 px minimum
        hu[ci : ci + 3, cj : cj + 2, CT_LESION_SLICE] = 15.0
    hu += rng.normal(0, 8, CT_SHAPE) * (hu > -900)
    hu += rng.normal(0, 3, CT_SHAPE) * (hu <= -900)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), labels


def ct_stored_affine() -> np.ndarray:
    """An LPS-stored scan's affine: x and y flipped, so voxel i runs to the patient's LEFT."""
    sx, sy, sz = CT_SPACING
    nx, ny, _ = CT_SHAPE
    return np.array(
        [
            [-sx, 0, 0, sx * (nx - 1) - 96.0],
            [0, -sy, 0, sy * (ny - 1) - 96.0],
            [0, 0, sz, -60.0],
            [0, 0, 0, 1],
        ]
    )


def nifti_gz(data: np.ndarray, affine: np.ndarray, compresslevel: int = 6) -> bytes:
    """A .nii.gz file's bytes with qform = sform = ``affine`` (mm), the same bytes on every run."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    # nibabel's own .nii.gz writer stores the current time in the gzip header: compress it ourselves
    return gzip.compress(img.to_bytes(), compresslevel=compresslevel, mtime=0)


def _to_stored(canonical: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(canonical[::-1, ::-1, :])


def write_demo_ct(folder: Path) -> Path:
    affine = ct_stored_affine()
    for case in (*CT_TRAIN_CASES, *CT_TEST_CASES):
        hu, labels = ct_case_volumes(case)
        sub = "imagesTs" if case in CT_TEST_CASES else "imagesTr"
        _write(folder / sub / f"{case}.nii.gz", nifti_gz(_to_stored(hu), affine))
        if case in CT_TEST_CASES:
            continue
        stored = _to_stored(labels)
        if case == CT_FLOAT_LABEL_CASE:
            stored = stored.astype(np.float32)
        _write(folder / "labelsTr" / f"{case}.nii.gz", nifti_gz(stored, affine))
    # AppleDouble resource fork left by macOS tar: not a NIfTI file
    _write(folder / CT_JUNK_FILE, b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4064))
    order = np.random.default_rng(7).permutation(len(CT_TRAIN_CASES))  # MSD lists are not sorted
    meta = {
        "name": "DemoAbdomenCT",
        "description": "Synthetic abdominal CT multi-organ segmentation (medpclip demo)",
        "reference": "medpclip demo generator (synthetic, no patient data)",
        "licence": "CC-BY-SA 4.0",
        "relase": "1.0 01/11/2026",  # sic: several MSD tasks spell it so
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in CT_LABELS.items()},
        "numTraining": len(CT_TRAIN_CASES),
        "numTest": len(CT_TEST_CASES),
        "training": [
            {
                "image": f"./imagesTr/{CT_TRAIN_CASES[i]}.nii.gz",
                "label": f"./labelsTr/{CT_TRAIN_CASES[i]}.nii.gz",
            }
            for i in order
        ],
        "test": [f"./imagesTs/{c}.nii.gz" for c in CT_TEST_CASES],
    }
    _write(folder / "dataset.json", (json.dumps(meta, indent=4) + "\n").encode())
    return folder


# --- (b) Kvasir-SEG colonoscopy ----------------------------------------------------------------------------

POLYP_COUNT = 12
# Chosen so that the demo's hash split (salt medpclip-v1, 0.6/0.2/0.2) puts images in each of train, val, test.
POLYP_SEED = 200
_ID_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))


@dataclass(frozen=True)
class PolypImage:
    image_id: str
    height: int
    width: int
    polyps: tuple[tuple[tuple[float, float], tuple[float, float]], ...]  # ((cy, cx), (ry, rx)) each


def polyp_plan() -> list[PolypImage]:
    """Ids, sizes and polyp ellipses of every demo image (sorted by id)."""
    rng = np.random.default_rng(POLYP_SEED)
    out = []
    for n in range(POLYP_COUNT):
        image_id = "cju" + "".join(rng.choice(_ID_ALPHABET, 22))
        width = int(rng.integers(160, 225))
        height = int(width * rng.uniform(0.8, 1.0))
        polyps: list[tuple[tuple[float, float], tuple[float, float]]] = []
        for _ in range(2 if n % 4 == 1 else 1):
            for _attempt in range(50):  # keep two polyps apart so each stays its own component
                ry, rx = rng.uniform(0.10, 0.22) * height, rng.uniform(0.10, 0.22) * width
                cy, cx = rng.uniform(ry + 4, height - ry - 4), rng.uniform(rx + 4, width - rx - 4)
                if all(
                    abs(cy - py) > ry + pry + 6 or abs(cx - px) > rx + prx + 6
                    for (py, px), (pry, prx) in polyps
                ):
                    polyps.append(((cy, cx), (ry, rx)))
                    break
        out.append(PolypImage(image_id, height, width, tuple(polyps)))
    return sorted(out, key=lambda p: p.image_id)


def polyp_truth(p: PolypImage) -> list[np.ndarray]:
    """One boolean mask per polyp, as drawn."""
    return [_ellipse((p.height, p.width), c, r) for c, r in p.polyps]


def _polyp_image(p: PolypImage, rng: np.random.Generator) -> np.ndarray:
    h, w = p.height, p.width
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 3) * 160
    rgb = np.empty((h, w, 3))
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 205 + texture, 118 + 0.6 * texture, 108 + 0.5 * texture
    yy, xx = np.mgrid[:h, :w]
    for _ in range(3):  # submucosal vessels: thin darker curves
        y0, amp, freq, ph = rng.uniform(0, h), rng.uniform(5, 20), rng.uniform(0.02, 0.06), rng.uniform(0, 6)
        vessel = np.abs(yy - (y0 + amp * np.sin(freq * xx + ph))) < 1.2
        rgb[vessel] -= (40, 55, 35)
    lumen = _ellipse((h, w), (rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w), (0.12 * h, 0.1 * w))
    rgb[ndimage.gaussian_filter(lumen.astype(float), 6) > 0.3] *= 0.45  # dark lumen in the distance
    for mask, ((cy, cx), (ry, rx)) in zip(polyp_truth(p), p.polyps, strict=True):
        d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        shade = (1.15 - 0.35 * d)[..., None]  # dome lit from the scope
        rgb[mask] = (np.array([188.0, 72.0, 64.0]) * shade + 0.3 * texture[..., None])[mask]
        spot = mask & (
            ((yy - (cy - 0.35 * ry)) / (0.15 * ry)) ** 2 + ((xx - (cx - 0.3 * rx)) / (0.15 * rx)) ** 2 <= 1
        )
        rgb[spot] = (245, 235, 232)  # specular highlight (still polyp)
    vignette = 1 - 0.45 * (((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2) / 2
    return np.clip(rgb * vignette[..., None] + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)


def write_demo_polyp(folder: Path) -> Path:
    boxes: dict[str, dict] = {}
    for n, p in enumerate(polyp_plan()):
        rng = np.random.default_rng(300 + n)
        _write(
            folder / "images" / f"{p.image_id}.jpg", _jpeg_bytes(Image.fromarray(_polyp_image(p, rng)), 90)
        )
        masks = polyp_truth(p)
        union = np.logical_or.reduce(masks).astype(np.uint8) * 255
        # Kvasir masks are RGB JPEGs: compression leaves values between 0 and 255 near the edges
        _write(folder / "masks" / f"{p.image_id}.jpg", _jpeg_bytes(Image.fromarray(union).convert("RGB"), 75))
        entries = []
        for m in masks:
            x0, y0, x1, y1 = tight_box(m)
            entries.append({"label": "polyp", "xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1})
        boxes[p.image_id] = {"height": p.height, "width": p.width, "bbox": entries}
    _write(folder / "kavsir_bboxes.json", json.dumps(boxes, indent=4).encode())  # sic: 'kavsir'
    return folder


# --- (c) NIH ChestX-ray14 ----------------------------------------------------------------------------------

CXR_SIZE = 256
# patient id → findings of each follow-up (Data_Entry spelling)
CXR_PATIENTS: dict[int, list[list[str]]] = {
    11: [["Cardiomegaly"], ["Cardiomegaly", "Effusion"]],
    25: [["No Finding"]],
    37: [["Nodule"], ["Nodule"], ["No Finding"]],
    42: [["Infiltration"], ["Infiltration", "Effusion"]],
    58: [["Pneumothorax"]],
    63: [["No Finding"], ["Effusion"]],
    77: [["Nodule", "Infiltration"]],
    84: [["Cardiomegaly"], ["No Finding"], ["Pneumothorax"]],
    90: [["No Finding"], ["No Finding"]],
    101: [["Effusion", "Pneumothorax"], ["Infiltration"]],
}
CXR_TEST_PATIENTS = (37, 77, 90)  # official test list (patient-disjoint from train_val)
CXR_RGBA_PATIENT = 63  # its PNGs are RGBA, as a minority of the real ones are
CXR_BOXED = (
    "00000011_001.png", "00000037_000.png", "00000042_000.png", "00000058_000.png",
    "00000077_000.png", "00000084_000.png", "00000101_000.png",
)  # fmt: skip
CXR_BOX_LABEL = {"Infiltration": "Infiltrate"}  # BBox_List spells this one differently from Data_Entry


def cxr_name(patient: int, follow_up: int) -> str:
    return f"{patient:08d}_{follow_up:03d}.png"


def _cxr_anatomy(patient: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A PA chest film of one patient (same anatomy on every follow-up) and its lung/heart masks."""
    n = CXR_SIZE
    rng = np.random.default_rng(patient)
    img = np.full((n, n), 18.0)
    img[_ellipse((n, n), (150, 128), (150, rng.uniform(108, 116)))] = 105  # soft tissue of the trunk
    img[:, 116:140] = np.maximum(img[:, 116:140], 135)  # spine / mediastinum
    lung_r = _ellipse((n, n), (128, 80), (rng.uniform(78, 84), rng.uniform(36, 40)))  # patient's right
    lung_l = _ellipse((n, n), (130, 176), (rng.uniform(74, 80), rng.uniform(34, 38)))  # patient's left
    img[lung_r | lung_l] = 48
    yy, xx = np.mgrid[:n, :n]
    for k in range(7):  # ribs: faint arcs across the lungs
        ribs = np.abs(yy - (70 + 22 * k) - 0.004 * (xx - 128) ** 2) < 2.5
        img[ribs & (lung_r | lung_l)] += 18
    heart = _ellipse((n, n), (rng.uniform(172, 178), 142), (30, 40))  # left of the midline: image right
    img[heart] = 150
    img = ndimage.gaussian_filter(img, 1.5)
    return img, {"lung_r": lung_r, "lung_l": lung_l, "heart": heart}


def _cxr_findings(name: str, findings: list[str], anatomy: dict[str, np.ndarray], img: np.ndarray) -> dict:
    """Draw each finding into ``img`` (in place); returns finding → its mask (what a box should cover)."""
    n = CXR_SIZE
    rng = np.random.default_rng(int(name[:8]) * 1000 + int(name[9:12]))
    yy, xx = np.mgrid[:n, :n]
    drawn: dict[str, np.ndarray] = {}
    for finding in findings:
        lung = anatomy["lung_r" if rng.uniform() < 0.5 else "lung_l"]
        rows, cols = np.nonzero(lung)
        if finding == "Cardiomegaly":  # heart silhouette wider than half the thorax
            m = _ellipse((n, n), (170, 140), (40, rng.uniform(58, 64)))
            img[m] = 152
        elif finding == "Nodule":  # small bright round opacity inside a lung
            k = int(rng.integers(len(rows)))
            cy, cx, r = rows[k], cols[k], rng.uniform(4, 6)
            while not lung[_ellipse((n, n), (cy, cx), (r + 3, r + 3))].all():
                k = int(rng.integers(len(rows)))
                cy, cx = rows[k], cols[k]
            m = _ellipse((n, n), (cy, cx), (r, r))
            img[m] = 175
        elif finding == "Effusion":  # basal opacity with a meniscus
            base = rows.max()
            m = lung & (yy > base - rng.uniform(28, 38) - 0.01 * (xx - cols.mean()) ** 2)
            img[m] = 128
        elif finding == "Infiltration":  # patchy hazy opacity in the mid/lower lung
            field = ndimage.gaussian_filter(rng.normal(0, 1, (n, n)), 4)
            cy, cx = rows.mean() + rng.uniform(0, 25), cols.mean()
            m = lung & _ellipse((n, n), (cy, cx), (26, 20)) & (field > 0)
            m = ndimage.binary_opening(m, iterations=1)
            if not m.any():  # a field with no positive patch there: fall back to a plain hazy ellipse
                m = lung & _ellipse((n, n), (cy, cx), (18, 14))
            img[m] += 45
        elif finding == "Pneumothorax":  # apical-lateral air without lung markings, edged by the pleural line
            top = rows.min()
            lateral = -1 if cols.mean() < n / 2 else 1  # towards the chest wall
            m = lung & (yy < top + rng.uniform(45, 60)) & (lateral * (xx - cols.mean()) > -4)
            img[m] = 20
            img[m & ~ndimage.binary_erosion(m)] = 95
        else:
            continue  # "No Finding"
        drawn[finding] = m
    return drawn


def cxr_image(patient: int, follow_up: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The uint8 film as written (before any RGBA packing) and finding → drawn mask."""
    name = cxr_name(patient, follow_up)
    img, anatomy = _cxr_anatomy(patient)
    drawn = _cxr_findings(name, CXR_PATIENTS[patient][follow_up], anatomy, img)
    noise = np.random.default_rng(int(name[:8]) * 1000 + int(name[9:12]) + 7).normal(0, 2.5, img.shape)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8), drawn


def cxr_truth() -> dict[str, list[tuple[str, tuple[int, int, int, int]]]]:
    """Image name → [(BBox_List label, tight xyxy box of the drawn structure)] for the boxed images."""
    out = {}
    for name in CXR_BOXED:
        _, drawn = cxr_image(int(name[:8]), int(name[9:12]))
        out[name] = [(CXR_BOX_LABEL.get(f, f), tight_box(m)) for f, m in drawn.items()]
    return out


def write_demo_cxr(folder: Path) -> Path:
    rng = np.random.default_rng(14)
    entries: list[list[str]] = []
    box_rows: list[list[str]] = []
    for patient, visits in CXR_PATIENTS.items():
        age, sex = int(rng.integers(25, 80)), ("M" if rng.uniform() < 0.5 else "F")
        for fu, findings in enumerate(visits):
            name = cxr_name(patient, fu)
            img, drawn = cxr_image(patient, fu)
            pil = Image.fromarray(img)
            if patient == CXR_RGBA_PATIENT:
                pil = pil.convert("RGBA")
            _write(folder / "images" / name, _png_bytes(pil))
            view = "PA" if rng.uniform() < 0.6 else "AP"
            w, h = int(rng.integers(2000, 3000)), int(rng.integers(2000, 3000))
            spacing = "0.143" if rng.uniform() < 0.7 else "0.168"
            row = [
                name,
                "|".join(sorted(findings)),
                str(fu),
                str(patient),
                str(age + fu),
                sex,
                view,
                str(w),
                str(h),
            ]
            entries.append(row + [spacing, spacing])
            if name in CXR_BOXED:
                for finding, m in drawn.items():
                    x0, y0, x1, y1 = tight_box(m)
                    box_rows.append(
                        [name, CXR_BOX_LABEL.get(finding, finding)]
                        + [repr(float(v)) for v in (x0, y0, x1 - x0, y1 - y0)]
                    )
    header = (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"  # the older file's trailing comma
    )
    _write(folder / "Data_Entry_2017.csv", _csv_bytes(header, entries))
    _write(folder / "BBox_List_2017.csv", _csv_bytes("Image Index,Finding Label,Bbox [x,y,w,h],,,", box_rows))
    names = sorted(r[0] for r in entries)
    test = [x for x in names if int(x[:8]) in CXR_TEST_PATIENTS]
    train = [x for x in names if int(x[:8]) not in CXR_TEST_PATIENTS]
    _write(folder / "train_val_list.txt", ("\n".join(train) + "\n").encode())
    _write(folder / "test_list.txt", ("\n".join(test) + "\n").encode())
    return folder


def _csv_bytes(header: str, rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    buf.write(header + "\n")
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


# --- (d) context-decided regions (the region-mode benchmark) -------------------------------------------------
#
# Single-slice abdominal CT in the MSD layout, drawn so that some region classes CANNOT be told apart from the
# region's own pixels (docs/BENCHMARKS.md, "Region modes"):
#
# - laterality: the right and left kidney are drawn from one distribution (same shape, size, intensity);
#   only where they sit in the body says which is which;
# - host organ: a lesion is the same hypodense disc in the liver and in the spleen, and the two organs have
#   the same intensity and texture; half the cases are mirrored (situs inversus: liver on the patient's left),
#   so the lesion's position in the frame does not tell its host either. Only the organ around it does;
# - appearance: liver and spleen differ by their own shape and size (large oblong vs small round), wherever
#   they sit.
#
# What each method should manage: a box crop sees a kidney or a disc and nothing of where it is (chance on
# both context pairs); mask-input keeps the region's place in the frame (laterality) but blanks the host
# organ (chance on lesions); alpha and medpclip see the whole image and the prompt (both pairs).

CONTEXT_CASES = 300
CONTEXT_SHAPE = (128, 128, 1)  # one axial slice per case (MSD volumes of depth 1)
CONTEXT_SPACING = (1.5, 1.5, 5.0)
CONTEXT_LABELS = {
    0: "background",
    1: "liver",
    2: "spleen",
    3: "right kidney",
    4: "left kidney",
    5: "liver lesion",
    6: "splenic lesion",
}
CONTEXT_DECIDED = ("right kidney", "left kidney", "liver lesion", "splenic lesion")
LESION_SPREAD = 4.0  # px: a lesion's centre lies within this of its host organ's centre, in each axis
APPEARANCE_DECIDED = ("liver", "spleen")


def context_case_id(n: int) -> str:
    return f"ctx_{n:03d}"


@dataclass(frozen=True)
class ContextCase:
    """What one case shows, in canonical voxel space (i → patient's right, j → anterior)."""

    mirrored: bool  # situs inversus: liver on the patient's left
    organs: tuple[Blob, ...]  # liver, spleen, right kidney, left kidney (labelled), vertebra, aorta (not)
    lesions: tuple[tuple[int, tuple[float, float], float], ...]  # (label, centre (i, j), radius)


def context_case_plan(n: int) -> ContextCase:
    rng = np.random.default_rng(9000 + n)
    mirrored = bool(rng.random() < 0.5)
    organ_hu = 55.0  # liver and spleen: one intensity, so a lesion's rim cannot tell its host

    def near(v: float, d: float) -> float:
        return float(v + rng.uniform(-d, d))

    # Geometry: every labelled structure keeps a few pixels of plain soft tissue around it, more than a box
    # crop's margin, so a crop shows the region and the same grey rim whatever it is (a kidney near the
    # body wall would show the fat on one side, and the side would give its laterality away).
    # Both organs are centred on the same two spots (one per side), so the lesions they hold, kept near their
    # host's centre, sit where the other organ's would: a lesion's place in the frame says nothing either.
    liver_i, spleen_i = (42.0, 86.0) if mirrored else (86.0, 42.0)
    liver = Blob(1, (near(liver_i, 3), near(84, 3)), (near(19, 1.5), near(12, 1)), (0, 1), organ_hu, False)
    spleen = Blob(2, (near(spleen_i, 3), near(84, 3)), (near(13, 1), near(13, 1)), (0, 1), organ_hu, False)
    kidneys = tuple(
        Blob(label, (near(i, 3), near(52, 2)), (near(7, 0.5), near(9.5, 0.7)), (0, 1), 30.0, False)
        for label, i in ((3, 86.0), (4, 42.0))
    )
    context = (
        Blob(0, (near(64, 1), near(25, 1)), (7.0, 6.0), (0, 1), 700.0, False),  # vertebral body
        Blob(0, (near(64, 0.5), near(44, 1)), (4.5, 4.5), (0, 1), 200.0, False),  # aorta
    )
    hosts = {0: (liver,), 1: (spleen,), 2: (liver, spleen)}[int(rng.integers(0, 3))]
    lesions = []
    for host in hosts:
        r = float(rng.uniform(3.5, 4.5))
        # The whole crop window of the lesion (its box grown by the crop margin, one pixel spare) lies inside
        # the host, so a crop shows disc and organ only; the organ's centre always qualifies.
        half = 1.2 * r + 1.5
        centre = host.center
        for _ in range(200):
            u, v = rng.uniform(-1, 1, size=2)
            c = (host.center[0] + u * LESION_SPREAD, host.center[1] + v * LESION_SPREAD)
            corners = [(c[0] + a * half, c[1] + b * half) for a in (-1, 1) for b in (-1, 1)]
            if all(
                ((x - host.center[0]) / (host.semi[0] - 1)) ** 2
                + ((y - host.center[1]) / (host.semi[1] - 1)) ** 2
                <= 1
                for x, y in corners
            ):
                centre = c
                break
        lesions.append((5 if host.label == 1 else 6, centre, r))
    return ContextCase(mirrored, (liver, spleen, *kidneys, *context), tuple(lesions))


def context_case_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, labels uint8) of case ``n`` in canonical orientation, shape ``CONTEXT_SHAPE``."""
    hu, labels, rng = context_case_drawing(n)
    hu = hu + rng.normal(0, 8, hu.shape) * (hu > -900)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return hu[:, :, None], labels[:, :, None]


def context_case_drawing(n: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """The noise-free 2D drawing of case ``n`` (HU float, labels), and the generator that adds its noise."""
    nx, ny, _ = CONTEXT_SHAPE
    plan = context_case_plan(n)
    rng = np.random.default_rng(19000 + n)
    body_semi = (rng.uniform(57, 59), rng.uniform(47, 49))
    hu = np.full((nx, ny), -1000.0)
    labels = np.zeros((nx, ny), np.uint8)
    hu[_ellipse((nx, ny), (64, 64), body_semi)] = -100.0
    hu[_ellipse((nx, ny), (64, 64), (body_semi[0] - 6, body_semi[1] - 5))] = 40.0
    for blob in plan.organs:
        m = _ellipse((nx, ny), blob.center, blob.semi)
        hu[m] = blob.hu
        labels[m] = blob.label
        if blob.label in (3, 4):  # enhancing cortex, the same on both sides
            hu[m & ~ndimage.binary_erosion(m, iterations=2)] = blob.hu + 110
    for label, centre, r in plan.lesions:
        m = _ellipse((nx, ny), centre, (r, r))
        hu[m] = 10.0
        labels[m] = label
    return hu, labels, rng


def write_demo_context(folder: Path) -> Path:
    affine = np.diag([*CONTEXT_SPACING, 1.0])  # RAS as stored: i → patient's right
    cases = [context_case_id(n) for n in range(CONTEXT_CASES)]
    for n, case in enumerate(cases):
        hu, labels = context_case_arrays(n)
        _write(folder / "imagesTr" / f"{case}.nii.gz", nifti_gz(hu, affine))
        _write(folder / "labelsTr" / f"{case}.nii.gz", nifti_gz(labels, affine))
    meta = {
        "name": "DemoContextCT",
        "description": "Synthetic abdominal CT slices whose region classes need the image context (medpclip demo)",
        "reference": "medpclip demo generator (synthetic, no patient data)",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 07/12/2026",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in CONTEXT_LABELS.items()},
        "numTraining": len(cases),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
        "test": [],
    }
    _write(folder / "dataset.json", (json.dumps(meta, indent=4) + "\n").encode())
    return folder
