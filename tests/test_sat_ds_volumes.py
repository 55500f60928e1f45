"""SAT-DS datasets read by the volumes family (issue 15): PDDCA, SEG.A./AVT, LNDb and HaN-Seg from their
NRRD/MetaImage files, ATLAS (liver CE-MRI) and BrainPTM (brain tracts) from NIfTI, each read by its shipped spec from a tiny copy this file writes in the publisher's layout
(folder depth, file names, one mask file per structure or per radiologist, value encodings), with junk that
must not be read and the cases the reader must refuse.

Every phantom is drawn on the canonical RAS+ grid (16 × 12 × 4: i → patient's right, j → anterior,
k → superior) as axis-aligned boxes, one connected box per structure, and stored in the orientation named per
case with ITK's LPS geometry. A reader is right when its axial frame k shows ``canonical[:, :, k].T[::-1, ::-1]``
and carries exactly the structures whose boxes cross slice k, one region per box. No mocks, no Ray.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from corpus_utils import discovery_notes, frames_of, items_of
from layouts import junk, save_nifti

from medpclip.frame import Frame, ReadError, SourceFile
from medpclip.regions import extract_regions
from medpclip.specs import resolve_spec
from medpclip.text.kb import spec_concept_problems

SHAPE = (16, 12, 4)
ZOOMS = (0.75, 0.8, 2.5)
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def volume(boxes: list[tuple[int, Box]], dtype=np.uint8) -> np.ndarray:
    out = np.zeros(SHAPE, dtype)
    for value, (i, j, k) in boxes:
        out[slice(*i), slice(*j), slice(*k)] = value
    return out


def ct_of(mask: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (-100 + 60 * (mask > 0) + rng.integers(0, 9, SHAPE)).astype(np.int16)


def display(vol: np.ndarray, k: int) -> np.ndarray:
    return vol[:, :, k].T[::-1, ::-1]


def write_itk(path: Path, canonical: np.ndarray, axcodes: str = "LPS", zooms=ZOOMS) -> None:
    """``canonical`` (RAS+) stored as a scanner would in ``axcodes`` order, as an ITK file (format by suffix):
    ITK's array is (z, y, x) and its physical space LPS (the RAS affine with its first two rows negated)."""
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = (12.5, -30.0, 41.0)
    img = nib.Nifti1Image(canonical, affine)
    if axcodes != "RAS":
        img = img.as_reoriented(
            nib.orientations.ornt_transform(
                nib.orientations.axcodes2ornt(tuple("RAS")), nib.orientations.axcodes2ornt(tuple(axcodes))
            )
        )
    stored = np.asarray(img.dataobj)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    out = sitk.GetImageFromArray(np.ascontiguousarray(stored.transpose(2, 1, 0)))
    out.SetSpacing(spacing.tolist())
    out.SetOrigin(lps[:3, 3].tolist())
    out.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(path))


def names_of(frame: Frame) -> set[str]:
    if frame.masks:
        return {label for label, m in frame.masks if m.any()}
    return {frame.label_values[int(v)] for v in np.unique(frame.label_map) if v}


def regions_of(frame: Frame) -> int:
    regions, _ = extract_regions(
        frame.shape,
        label_map=frame.label_map,
        label_values=frame.label_values,
        masks=frame.masks,
        min_area_px=4,
        rng_for=lambda _: np.random.default_rng(0),
    )
    return len(regions)


def expected(structures: dict[str, list[Box]]) -> tuple[dict[int, set[str]], dict[int, int]]:
    """Names per annotated slice and regions per slice of one case: one region per box crossing slice k."""
    names: dict[int, set[str]] = {}
    regions: dict[int, int] = {}
    for label, boxes in structures.items():
        for _, _, (k0, k1) in boxes:
            for k in range(k0, k1):
                names.setdefault(k, set()).add(label)
                regions[k] = regions.get(k, 0) + 1
    return names, regions


# --- the phantoms (boxes on the canonical grid: i → patient's right, so low i is the patient's LEFT) -------

# PDDCA: the nine structures; 0522c0002 lacks the Chiasm and both OpticNerve files (not outlined)
PDDCA_BOXES: dict[str, list[Box]] = {
    "BrainStem": [((7, 10), (2, 5), (2, 4))],
    "Chiasm": [((7, 10), (8, 10), (3, 4))],
    "Mandible": [((3, 13), (9, 12), (0, 1))],
    "OpticNerve_L": [((2, 5), (9, 11), (3, 4))],
    "OpticNerve_R": [((11, 14), (9, 11), (3, 4))],
    "Parotid_L": [((0, 3), (3, 7), (0, 3))],
    "Parotid_R": [((13, 16), (3, 7), (0, 3))],
    "Submandibular_L": [((3, 6), (6, 9), (0, 2))],
    "Submandibular_R": [((10, 13), (6, 9), (0, 2))],
}
PDDCA_CASES = {  # case → (orientation stored, structures with a file)
    "0522c0001": ("LPS", list(PDDCA_BOXES)),
    "0522c0002": ("RAS", [s for s in PDDCA_BOXES if s != "Chiasm" and not s.startswith("OpticNerve")]),
}

# SEGA (Dongyang): the aorta as one label; ascending and descending aorta two discs on k 1-3, the arch joining
# them on k 3 (one component there), the abdominal aorta alone on k 0
AORTA = volume(
    [
        (1, ((6, 9), (6, 9), (1, 4))),  # ascending
        (1, ((6, 9), (1, 4), (0, 4))),  # descending / abdominal
        (1, ((6, 9), (1, 9), (3, 4))),  # arch
    ]
)
AORTA_NAMES = {k: {"aorta"} for k in range(4)}
AORTA_REGIONS = {0: 1, 1: 2, 2: 2, 3: 1}

# ATLAS: the liver (1) on k 0-3 with a tumour (2) inside it on k 1-2; the labels are disjoint
LIVER_TUMOUR = volume([(1, ((3, 13), (2, 10), (0, 4))), (2, ((6, 9), (4, 7), (1, 3)))])
LIVER_NAMES = {0: {"liver"}, 1: {"liver", "liver tumor"}, 2: {"liver", "liver tumor"}, 3: {"liver"}}
LIVER_REGIONS = {0: 1, 1: 2, 2: 2, 3: 1}

# BrainPTM: four tract masks; case_2 has only the corticospinal tracts' files
TRACT_BOXES: dict[str, list[Box]] = {
    "OR_left": [((2, 5), (2, 6), (1, 2))],
    "OR_right": [((11, 14), (2, 6), (1, 2))],
    "CST_left": [((5, 7), (5, 8), (0, 4))],
    "CST_right": [((9, 11), (5, 8), (0, 4))],
}
TRACT_CASES = {"case_1": ("LAS", list(TRACT_BOXES)), "case_2": ("RAS", ["CST_left", "CST_right"])}

# LNDb: rad1 outlines two nodules (finding ids 1 and 2 as mask values), rad2 only the first (its id 1)
NODULE_1: Box = ((3, 6), (4, 7), (1, 3))
NODULE_2: Box = ((10, 13), (2, 5), (2, 4))

# HaN-Seg: five of the 30 OARs outlined on case_01, three on case_02 (the others have no file); in the
# spec's label order, the order of a case's mask files
HANSEG_BOXES: dict[str, list[Box]] = {
    "Brainstem": [((7, 10), (3, 6), (2, 4))],
    "OpticNrv_L": [((2, 5), (9, 11), (3, 4))],
    "Parotid_L": [((0, 3), (3, 7), (0, 3))],
    "Parotid_R": [((13, 16), (3, 7), (0, 3))],
    "SpinalCord": [((7, 9), (1, 3), (0, 2))],
}
HANSEG_CASES = {
    "case_01": ("LPS", list(HANSEG_BOXES)),
    "case_02": ("LAI", ["Brainstem", "Parotid_L", "SpinalCord"]),
}


def _union(structures: dict[str, list[Box]], names: list[str]) -> np.ndarray:
    return volume([(1, b) for n in names for b in structures[n]])


def write_pddca(raw: Path) -> None:
    """Patient folders of img.nrrd + structures/<Name>.nrrd (0/1 uint8), one patient without some structure
    files, a folder without img.nrrd, macOS junk, a README and a non-patient folder."""
    d = raw / "PDDCA"
    for n, (case, (axcodes, present)) in enumerate(PDDCA_CASES.items()):
        write_itk(d / case / "img.nrrd", ct_of(_union(PDDCA_BOXES, present), n), axcodes)
        for s in present:
            write_itk(
                d / case / "structures" / f"{s}.nrrd", volume([(1, b) for b in PDDCA_BOXES[s]]), axcodes
            )
    write_itk(d / "0522c0003" / "structures" / "Mandible.nrrd", volume([(1, PDDCA_BOXES["Mandible"][0])]))
    junk(d / "0522c0001" / "._img.nrrd")
    junk(d / "0522c0001" / "structures" / "._BrainStem.nrrd")
    (d / "README.txt").write_text("PDDCA version 1.4.1\n")
    write_itk(d / "docs" / "example.nrrd", ct_of(AORTA, 9))  # not a 0522c* folder: never a case


def write_sega(raw: Path) -> None:
    """Dongyang/D<n>/D<n>.nrrd + D<n>.seg.nrrd (two cases, stored LPS and RAS), one folder without its
    .seg.nrrd, the KiTS and Rider subsets (offset-stored HU: not read; Rider folders with a diagnosis
    suffix), macOS junk and a stray preview PNG."""
    d = raw / "SEGA"
    for n, axcodes in ((1, "LPS"), (2, "RAS")):
        write_itk(d / "Dongyang" / f"D{n}" / f"D{n}.nrrd", ct_of(AORTA, n), axcodes)
        write_itk(d / "Dongyang" / f"D{n}" / f"D{n}.seg.nrrd", AORTA, axcodes)
    write_itk(d / "Dongyang" / "D3" / "D3.nrrd", ct_of(AORTA, 3))  # its D3.seg.nrrd is missing
    write_itk(d / "KiTS" / "K1" / "K1.nrrd", (ct_of(AORTA, 4) + 1000).astype(np.int16))
    write_itk(d / "KiTS" / "K1" / "K1.seg.nrrd", AORTA)
    write_itk(d / "Rider" / "R1 (AD)" / "R1.nrrd", (ct_of(AORTA, 5) + 1000).astype(np.int16))
    write_itk(d / "Rider" / "R1 (AD)" / "R1.seg.nrrd", AORTA)
    junk(d / "Dongyang" / "D1" / "._D1.nrrd")
    (d / "Dongyang" / "D1" / "D1_preview.png").write_bytes(b"\x89PNG\r\n\x1a\n")


def write_lndb(raw: Path) -> None:
    """data0/ and a nested data1/data1/ of LNDb-NNNN.mhd/.raw CTs, masks/LNDb-NNNN_rad<R>.mhd holding each
    reader's finding ids, a CT read by one radiologist only, the CSVs (not read) and macOS junk."""
    d = raw / "LNDb"
    rad1 = volume([(1, NODULE_1), (2, NODULE_2)])  # finding ids of reader 1
    rad2 = volume([(1, NODULE_1)])
    write_itk(d / "data0" / "LNDb-0001.mhd", (ct_of(rad1, 1) - 700).astype(np.int16), "LPS")
    write_itk(d / "masks" / "LNDb-0001_rad1.mhd", rad1, "LPS")
    write_itk(d / "masks" / "LNDb-0001_rad2.mhd", rad2, "LPS")
    write_itk(d / "data1" / "data1" / "LNDb-0042.mhd", (ct_of(rad2, 2) - 700).astype(np.int16), "RAS")
    write_itk(d / "masks" / "LNDb-0042_rad1.mhd", rad2 * 3, "RAS")  # its finding id 3
    (d / "trainNodules.csv").write_text("LNDbID,RadID,RadFindingID,FindingID,x,y,z,Nodule,Volume,Text\n")
    junk(d / "data0" / "._LNDb-0001.mhd")
    junk(d / "masks" / "._LNDb-0001_rad1.mhd")


def write_han_seg(raw: Path) -> None:
    """HaN-Seg/set_1/case_XX/ with case_XX_IMG_CT.nrrd, case_XX_IMG_MR_T1.nrrd (another grid: not read) and
    case_XX_OAR_<name>.seg.nrrd for the OARs outlined; case_19 whose mask grid does not match its CT; a
    case folder without its CT; macOS junk and a readme."""
    d = raw / "HaN-Seg" / "set_1"
    for n, (case, (axcodes, present)) in enumerate(HANSEG_CASES.items()):
        write_itk(d / case / f"{case}_IMG_CT.nrrd", ct_of(_union(HANSEG_BOXES, present), n), axcodes)
        mr = np.random.default_rng(n).integers(0, 400, (10, 10, 6)).astype(np.int16)
        write_itk(d / case / f"{case}_IMG_MR_T1.nrrd", mr, "RAS", zooms=(1.0, 1.0, 1.0))
        for s in present:
            write_itk(
                d / case / f"{case}_OAR_{s}.seg.nrrd", volume([(1, b) for b in HANSEG_BOXES[s]]), axcodes
            )
    write_itk(d / "case_19" / "case_19_IMG_CT.nrrd", ct_of(_union(HANSEG_BOXES, ["Brainstem"]), 19))
    bad = np.zeros((16, 12, 5), np.uint8)  # one slice more than its CT
    bad[7:10, 3:6, 2:4] = 1
    write_itk(d / "case_19" / "case_19_OAR_Brainstem.seg.nrrd", bad)
    write_itk(d / "case_20" / "case_20_OAR_Brainstem.seg.nrrd", _union(HANSEG_BOXES, ["Brainstem"]))
    junk(d / "case_01" / "._case_01_IMG_CT.nrrd")
    (raw / "HaN-Seg" / "readme.md").write_text("HaN-Seg dataset\n")


def write_atlas_liver(raw: Path) -> None:
    """train/imagesTr/imN.nii.gz + train/labelsTr/lbN.nii.gz (one case stored LPS), a label without its image,
    an image without its label, the release's dataset.json and macOS junk."""
    d = raw / "atlas-train-dataset-1.0.1" / "train"
    for n, axcodes in ((0, "RAS"), (1, "LPS")):
        save_nifti(
            d / "imagesTr" / f"im{n}.nii.gz", (ct_of(LIVER_TUMOUR, n) + 200).astype(np.int16), axcodes, ZOOMS
        )
        save_nifti(d / "labelsTr" / f"lb{n}.nii.gz", LIVER_TUMOUR, axcodes, ZOOMS)
    save_nifti(d / "labelsTr" / "lb7.nii.gz", LIVER_TUMOUR, "RAS", ZOOMS)  # im7.nii.gz is missing
    save_nifti(d / "imagesTr" / "im8.nii.gz", ct_of(LIVER_TUMOUR, 8), "RAS", ZOOMS)  # lb8.nii.gz is missing
    (d / "dataset.json").write_text('{"labels": {"background": 0, "liver": 1, "tumour": 2}}\n')
    junk(d / "imagesTr" / "._im0.nii.gz")


def write_brainptm(raw: Path) -> None:
    """sheba75_data_train/case_N/ (T1.nii.gz, a 4D Diffusion.nii.gz and brain_mask.nii.gz, none of the last
    two read) and sheba75_tracts_train/case_N/<tract>.nii.gz, a case without T1, a test case, junk."""
    d = raw / "sheba75_data"
    for n, (case, (axcodes, present)) in enumerate(TRACT_CASES.items()):
        t1 = (ct_of(_union(TRACT_BOXES, present), n) + 300).astype(np.int16)
        save_nifti(d / "sheba75_data_train" / case / "T1.nii.gz", t1, axcodes, ZOOMS)
        save_nifti(
            d / "sheba75_data_train" / case / "Diffusion.nii.gz", np.zeros((*SHAPE, 3), np.int16), axcodes
        )
        save_nifti(d / "sheba75_data_train" / case / "brain_mask.nii.gz", np.ones(SHAPE, np.uint8), axcodes)
        for t in present:
            tract = volume([(1, b) for b in TRACT_BOXES[t]]).astype(np.float32)
            save_nifti(d / "sheba75_tracts_train" / case / f"{t}.nii.gz", tract, axcodes, ZOOMS)
    save_nifti(d / "sheba75_data_train" / "case_3" / "brain_mask.nii.gz", np.ones(SHAPE, np.uint8))  # no T1
    save_nifti(d / "sheba75_data_test" / "case_61" / "T1.nii.gz", ct_of(_union(TRACT_BOXES, []), 61))
    junk(d / "sheba75_data_train" / "case_1" / "._T1.nii.gz")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("satds")
    for write in (write_pddca, write_sega, write_lndb, write_han_seg, write_atlas_liver, write_brainptm):
        write(root)
    return root


def _masks_case(structures: dict[str, list[Box]], present: list[str]) -> dict:
    names, regions = expected({s: structures[s] for s in present})
    return dict(names=names, regions=regions, present=present)


CASES: dict[str, dict] = {
    "pddca": dict(
        read={c: ("img.nrrd", [f"structures/{s}.nrrd" for s in p]) for c, (_, p) in PDDCA_CASES.items()},
        truth={c: _masks_case(PDDCA_BOXES, p) for c, (_, p) in PDDCA_CASES.items()},
        rejected={"0522c0003": "missing_file"},
    ),
    "sega": dict(
        read={f"D{n}": (f"D{n}.nrrd", [f"D{n}.seg.nrrd"]) for n in (1, 2)},
        truth={f"D{n}": dict(names=AORTA_NAMES, regions=AORTA_REGIONS) for n in (1, 2)},
        rejected={"D3": "missing_file"},
    ),
    "lndb": dict(
        read={"LNDb-0001": ("LNDb-0001.mhd", ["LNDb-0001_rad1.mhd", "LNDb-0001_rad2.mhd"]),
              "LNDb-0042": ("LNDb-0042.mhd", ["LNDb-0042_rad1.mhd"])},
        truth={"LNDb-0001": dict(names={1: {"rad1", "rad2"}, 2: {"rad1", "rad2"}, 3: {"rad1"}},
                                 regions={1: 2, 2: 3, 3: 1}, present=["rad1", "rad2"]),
               "LNDb-0042": dict(names={1: {"rad1"}, 2: {"rad1"}}, regions={1: 1, 2: 1}, present=["rad1"])},
        rejected={},
    ),
    "han_seg": dict(
        read={c: (f"{c}_IMG_CT.nrrd", [f"{c}_OAR_{s}.seg.nrrd" for s in p]) for c, (_, p) in HANSEG_CASES.items()},
        truth={c: _masks_case(HANSEG_BOXES, p) for c, (_, p) in HANSEG_CASES.items()},
        rejected={"case_19": "shape_mismatch", "case_20": "missing_file"},
    ),
    "atlas_liver": dict(
        read={str(n): (f"im{n}.nii.gz", [f"lb{n}.nii.gz"]) for n in (0, 1)},
        truth={str(n): dict(names=LIVER_NAMES, regions=LIVER_REGIONS) for n in (0, 1)},
        rejected={"7": "missing_file", "8": "missing_file"},
    ),
    "brainptm": dict(
        read={c: ("T1.nii.gz", [f"{t}.nii.gz" for t in p]) for c, (_, p) in TRACT_CASES.items()},
        truth={c: _masks_case(TRACT_BOXES, p) for c, (_, p) in TRACT_CASES.items()},
        rejected={"case_3": "missing_file"},
    ),
}  # fmt: skip
SPECS = list(CASES)
LABEL_MAPS = {"sega": AORTA, "atlas_liver": LIVER_TUMOUR}  # specs read through one label volume
FOLDERS = {  # case → its folder inside the dataset folder
    "pddca": lambda c: c,
    "sega": lambda c: f"Dongyang/{c}",
    "lndb": lambda c: {"LNDb-0001": "data0", "LNDb-0042": "data1/data1"}[c],
    "han_seg": lambda c: f"set_1/{c}",
    "atlas_liver": lambda c: "train/imagesTr",
    "brainptm": lambda c: f"sheba75_data_train/{c}",
}


def _files(name: str, case: str) -> tuple[SourceFile, ...]:
    spec = resolve_spec(name)
    image, annotations = CASES[name]["read"][case]
    folder = FOLDERS[name](case)
    role = "label" if name in LABEL_MAPS else "mask"
    beside = {
        "lndb": "masks",
        "atlas_liver": "train/labelsTr",
        "brainptm": f"sheba75_tracts_train/{case}",
    }.get(name, folder)
    paths = [f"{beside}/{a}" for a in annotations]
    headers = (
        SourceFile("image", f"{spec.root}/{folder}/{image}"),
        *(SourceFile(role, f"{spec.root}/{p}") for p in paths),
    )
    # detached MetaImage headers (LNDb's .mhd) bring their data files, as ``{role}_data``
    data = []
    for f in headers:
        if f.path.endswith(".mhd"):
            data.append(SourceFile(f"{f.role}_data", f.path[: -len(".mhd")] + ".raw"))
    return headers + tuple(data)


def test_the_specs_are_complete_and_their_labels_have_concepts():
    for name in SPECS:
        spec = resolve_spec(name)
        assert (
            spec.format.family == "volumes" and spec.slicing.planes == ("ax",) and spec.split.rule == "hash"
        )
        assert spec.citation and spec.licence and spec.homepage.startswith("http") and spec.unit_items > 0
        assert spec.intensity.kind == ("percentile" if spec.modality == "MR" else "ct_window")
        assert spec.stats is not None and spec.stats.structures == len(spec.labels)
        assert all(e.value not in (None, 0) and e.name[0].isupper() and e.category for e in spec.labels)
        assert spec_concept_problems(spec) == [], name
    assert [e.label for e in resolve_spec("pddca").labels] == list(PDDCA_BOXES)
    assert len(resolve_spec("han_seg").labels) == 30 and resolve_spec("han_seg").stats.cases == 42
    # HaN-Seg's licence forbids sharing derivatives: the spec says so
    assert "derived corpus must not be redistributed" in resolve_spec("han_seg").licence


@pytest.mark.parametrize("name", SPECS)
def test_discovery_finds_the_published_cases_and_nothing_else(raw, name):
    spec, case = resolve_spec(name), CASES[name]
    items = items_of(spec, raw)
    assert sorted(items) == sorted({**case["read"], **case["rejected"]})
    for cid in case["read"]:
        assert items[cid].files == _files(name, cid), cid
        assert items[cid].patient_id == cid and items[cid].official_split is None
    paths = [f.path for i in items.values() for f in i.files if not f.role.endswith("_data")]
    assert not any(p.endswith((".raw", ".zraw", ".png", ".txt", ".md", ".csv")) or "/._" in p for p in paths)
    assert not any("_MR_T1" in p or "/KiTS/" in p or "/Rider/" in p or "/docs/" in p for p in paths)
    assert not any("Diffusion" in p or "brain_mask" in p or "_test/" in p for p in paths)
    for cid, reason in case["rejected"].items():
        with pytest.raises(ReadError) as e:
            frames_of(spec, raw, items[cid])
        assert e.value.reason == reason, cid
    assert (
        discovery_notes(spec, raw) == []
    )  # an absent structure file is no reject row (missing_masks: empty)


@pytest.mark.parametrize("name", SPECS)
def test_frames_carry_the_structures_and_regions_of_each_slice(raw, name):
    spec, case = resolve_spec(name), CASES[name]
    items = items_of(spec, raw)
    for cid, truth in case["truth"].items():
        frames = frames_of(spec, raw, items[cid])
        assert [f.slice_index for f in frames] == list(range(SHAPE[2])), cid
        assert {(f.shape, f.modality) for f in frames} == {((SHAPE[1], SHAPE[0]), spec.modality)}
        assert all(f.spacing_mm == pytest.approx((ZOOMS[1], ZOOMS[0])) for f in frames)  # NIfTI: float32
        if name in LABEL_MAPS:
            truth_map = LABEL_MAPS[name]
            assert all(np.array_equal(f.label_map, display(truth_map, f.slice_index)) for f in frames), cid
        else:
            assert all(f.label_map is None for f in frames)
            assert {label for f in frames for label, _ in f.masks} <= set(truth["present"]), cid
        annotated = [f for f in frames if f.has_annotations]
        assert {f.slice_index: names_of(f) for f in annotated} == truth["names"], cid
        assert {f.slice_index: regions_of(f) for f in annotated} == truth["regions"], cid


def test_pddca_masks_keep_the_patient_side(raw):
    spec = resolve_spec("pddca")
    for cid in PDDCA_CASES:  # stored LPS and RAS: the patient's left parotid is on the image's right
        frame = frames_of(spec, raw, items_of(spec, raw)[cid])[0]
        masks = dict(frame.masks)
        assert np.nonzero(masks["Parotid_L"])[1].min() >= SHAPE[0] - 3, cid
        assert np.nonzero(masks["Parotid_R"])[1].max() < 3, cid
        assert np.array_equal(masks["Parotid_L"], display(volume([(1, PDDCA_BOXES["Parotid_L"][0])]) > 0, 0))


def test_lndb_finding_ids_are_one_nodule_mask_per_reader(raw):
    spec = resolve_spec("lndb")
    frames = frames_of(spec, raw, items_of(spec, raw)["LNDb-0001"])
    by_k = {f.slice_index: dict(f.masks) for f in frames}
    both = volume([(1, NODULE_1), (1, NODULE_2)]) > 0
    assert np.array_equal(by_k[2]["rad1"], display(both, 2))  # finding ids 1 and 2 → one binary mask
    assert np.array_equal(by_k[2]["rad2"], display(volume([(1, NODULE_1)]) > 0, 2))
    ct = frames_of(spec, raw, items_of(spec, raw)["LNDb-0042"])
    assert {label for f in ct for label, _ in f.masks} == {"rad1"}  # rad2/rad3 absent: no file, no mask
    assert [f.slice_index for f in ct if f.has_annotations] == [1, 2]  # finding id 3 is a nodule too


def test_sega_reads_the_dongyang_subset_only(raw):
    spec = resolve_spec("sega")
    items = items_of(spec, raw)
    assert (raw / "SEGA/KiTS/K1/K1.nrrd").is_file() and (raw / "SEGA/Rider/R1 (AD)/R1.nrrd").is_file()
    assert set(items) == {"D1", "D2", "D3"}
    assert {e.value: e.label for e in spec.labels} == {1: "aorta"} and spec.stats.cases == 18
