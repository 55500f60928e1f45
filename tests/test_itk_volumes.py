"""ITK image files in the volumes family (issue 15): MetaImage (``.mha``, ``.mhd`` + ``.raw``/``.zraw``) and NRRD
(``.nrrd``, ``.nhdr``) read with SimpleITK, and the datasets shipped in them (PROMISE12, LA 2018, SLIVER07),
each read by its shipped spec from a tiny copy this file writes in the publisher's layout.

Every phantom is defined on the canonical RAS+ grid (16 × 12 × 4: i → patient's right, j → anterior,
k → superior) and stored in the orientation named per case, with ITK's geometry (LPS: spacing, origin,
direction). A reader is right when it sees exactly what nibabel sees in the same volume saved as NIfTI, and
when its axial frame k equals ``canonical[:, :, k].T[::-1, ::-1]``. No mocks, no Ray.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from corpus_utils import MINIMAL_SPEC, discovery_notes, frames_of, items_of
from layouts import junk, save_nifti
from scipy import ndimage

from medpclip.frame import Frame, ReadError, SourceFile
from medpclip.regions import extract_regions
from medpclip.sources.volumes import reader as volumes
from medpclip.sources.volumes.itk_images import detached_data_file, load_itk
from medpclip.specs import SpecError, load_spec_file, resolve_spec

SHAPE = (16, 12, 4)
ZOOMS = (0.75, 0.8, 2.5)


def box(i: tuple[int, int], j: tuple[int, int], k: tuple[int, int]) -> tuple[slice, slice, slice]:
    return (slice(*i), slice(*j), slice(*k))


def phantom(parts, dtype=np.uint8) -> np.ndarray:
    lab = np.zeros(SHAPE, dtype)
    for value, b in parts:
        lab[b] = value
    return lab


def image_of(labels: np.ndarray, seed: int, dtype=np.int16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (40 + 30 * (labels > 0) + rng.integers(0, 9, SHAPE)).astype(dtype)


def display(volume: np.ndarray, k: int) -> np.ndarray:
    return volume[:, :, k].T[::-1, ::-1]


def oriented(canonical: np.ndarray, axcodes: str = "LPS", zooms=ZOOMS, origin=(12.5, -30.0, 41.0)):
    """``canonical`` (RAS+) as a scanner would store it in ``axcodes`` order, with a non-zero origin."""
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = origin
    img = nib.Nifti1Image(canonical, affine)
    if axcodes != "RAS":
        ornt = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(tuple("RAS")), nib.orientations.axcodes2ornt(tuple(axcodes))
        )
        img = img.as_reoriented(ornt)
    return img


def save_itk(path: Path, img: nib.Nifti1Image, compress: bool = False) -> None:
    """Write a nibabel image's voxels and geometry as an ITK file (format from the suffix): ITK's array is
    (z, y, x), its physical space LPS (the RAS affine with the first two rows negated)."""
    stored = np.asarray(img.dataobj)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    out = sitk.GetImageFromArray(np.ascontiguousarray(stored.transpose(2, 1, 0)))
    out.SetSpacing(spacing.tolist())
    out.SetOrigin(lps[:3, 3].tolist())
    out.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(path), useCompression=compress)


def write_itk(path: Path, canonical: np.ndarray, axcodes: str = "LPS", compress: bool = False) -> None:
    save_itk(path, oriented(canonical, axcodes), compress)


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


# --- the loader --------------------------------------------------------------------------------------------

VOLUME = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)  # every voxel distinct: any flip shows
SUFFIXES = [".mha", ".mhd", ".nrrd", ".nhdr"]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("axcodes", ["LPS", "RAS", "PIL", "ASL"])  # scanner LPS, flipped, permuted
def test_itk_images_load_as_nibabel_loads_the_same_volume(tmp_path, suffix, axcodes):
    nifti = save_nifti(tmp_path / "v.nii.gz", VOLUME, axcodes, ZOOMS)
    save_itk(tmp_path / f"v{suffix}", nifti)
    img = volumes._load(tmp_path, f"v{suffix}")
    assert isinstance(img, nib.Nifti1Image) and img.shape == nifti.shape
    assert "".join(nib.aff2axcodes(img.affine)) == axcodes
    assert np.allclose(img.affine, nifti.affine, atol=1e-6)
    assert np.array_equal(np.asarray(img.dataobj), np.asarray(nifti.dataobj))
    assert np.asarray(img.dataobj).dtype == np.int16


def test_int64_and_float_voxels_load(tmp_path):
    for dtype in (np.int64, np.float32, np.uint16):
        sitk.WriteImage(
            sitk.GetImageFromArray(VOLUME.transpose(2, 1, 0).astype(dtype)), str(tmp_path / "t.nrrd")
        )
        data = np.asarray(volumes._load(tmp_path, "t.nrrd").dataobj)
        assert data.dtype == dtype and np.array_equal(data, VOLUME.astype(dtype))


def test_origin_and_direction_become_the_ras_affine(tmp_path):
    """ITK LPS geometry → RAS: the first two rows of direction·spacing and origin change sign."""
    out = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8))  # x 5, y 4, z 3
    out.SetSpacing((0.5, 0.7, 2.0))
    out.SetOrigin((10.0, 20.0, 30.0))
    out.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))  # x → posterior, y → left, z → inferior
    sitk.WriteImage(out, str(tmp_path / "g.nrrd"))
    img = load_itk(tmp_path / "g.nrrd", "g.nrrd")
    expected = np.array(
        [[0, -0.7, 0, -10.0], [-0.5, 0, 0, -20.0], [0, 0, -2.0, 30.0], [0, 0, 0, 1]], dtype=float
    )
    assert img.shape == (5, 4, 3) and np.allclose(img.affine, expected)
    assert nib.aff2axcodes(img.affine) == ("P", "L", "I")


def test_a_compressed_mhd_reads_its_zraw(tmp_path):
    nifti = save_nifti(tmp_path / "v.nii.gz", VOLUME, "LPS", ZOOMS)
    save_itk(tmp_path / "v.mhd", nifti, compress=True)
    assert (tmp_path / "v.zraw").is_file() and not (tmp_path / "v.raw").exists()
    assert np.array_equal(np.asarray(volumes._load(tmp_path, "v.mhd").dataobj), np.asarray(nifti.dataobj))


def test_vector_and_2d_images_keep_nibabel_axis_order(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)  # (y, x, c) as ITK holds it
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.mha"))
    img = volumes._load(tmp_path, "rgb.mha")
    assert img.shape == (6, 4, 3) and np.array_equal(np.asarray(img.dataobj), rgb.transpose(1, 0, 2))
    frame2d = np.arange(24, dtype=np.uint8).reshape(4, 6)  # a 2D echo frame (CAMUS .mhd)
    sitk.WriteImage(sitk.GetImageFromArray(frame2d), str(tmp_path / "echo.mhd"))
    img = volumes._load(tmp_path, "echo.mhd")
    assert img.shape == (6, 4) and np.array_equal(np.asarray(img.dataobj), frame2d.T)
    assert img.affine.shape == (4, 4)


def test_voxels_are_read_only_when_used(tmp_path):
    """The header is read first (the reader checks the size against its limit before decoding)."""
    nifti = save_nifti(tmp_path / "v.nii.gz", VOLUME, "LPS", ZOOMS)
    save_itk(tmp_path / "v.mhd", nifti)
    img = volumes._load(tmp_path, "v.mhd")
    (tmp_path / "v.raw").unlink()  # the header was read; the voxels were not
    assert img.shape == SHAPE
    with pytest.raises(ReadError) as e:
        np.asarray(img.dataobj)
    assert e.value.reason == "unreadable_image"


def _broken(tmp_path: Path, what: str) -> str:
    nifti = save_nifti(tmp_path / "v.nii.gz", VOLUME, "LPS", ZOOMS)
    if what == "missing raw":
        save_itk(tmp_path / "v.mhd", nifti)
        (tmp_path / "v.raw").unlink()
        return "v.mhd"
    if what == "truncated raw":
        save_itk(tmp_path / "v.mhd", nifti)
        with open(tmp_path / "v.raw", "r+b") as f:
            f.truncate(100)
        return "v.mhd"
    if what == "truncated mha":
        save_itk(tmp_path / "v.mha", nifti)
        data = (tmp_path / "v.mha").read_bytes()
        (tmp_path / "v.mha").write_bytes(data[:-64])
        return "v.mha"
    if what == "truncated nrrd":
        save_itk(tmp_path / "v.nrrd", nifti)
        data = (tmp_path / "v.nrrd").read_bytes()
        (tmp_path / "v.nrrd").write_bytes(data[:-64])
        return "v.nrrd"
    if what == "corrupt header":
        (tmp_path / "v.mhd").write_text("ObjectType = Image\nNDims = three\nDimSize = x\n")
        return "v.mhd"
    assert what == "raw named"
    save_itk(tmp_path / "v.mhd", nifti)
    return "v.raw"


@pytest.mark.parametrize(
    "what, fragment",
    [
        ("missing raw", "data file it names is missing or shorter"),
        ("truncated raw", "data file it names is missing or shorter"),
        ("truncated mha", "truncated or corrupt voxel data"),
        ("truncated nrrd", "truncated or corrupt voxel data"),
        ("corrupt header", "corrupt or unknown header"),
        ("raw named", "not an image"),
    ],
)
def test_broken_itk_files_are_one_unreadable_image_row(tmp_path, what, fragment):
    rel = _broken(tmp_path, what)
    with pytest.raises(ReadError) as e:
        img = volumes._load(tmp_path, rel)
        np.asarray(img.dataobj)
    assert e.value.reason == "unreadable_image"
    assert e.value.detail.startswith(f"{rel}: ") and fragment in e.value.detail and "\n" not in e.value.detail


def test_suffix_rules_cover_itk_files(tmp_path):
    assert [volumes.file_stem(n) for n in ("Case00.mhd", "a.mha", "lgemri.nrrd", "b.nhdr", "c.nii.gz")] == [
        "Case00",
        "a",
        "lgemri",
        "b",
        "c",
    ]
    (tmp_path / "x.mha").write_bytes(b"")
    (tmp_path / "y.nhdr").write_bytes(b"")
    assert volumes._resolve(tmp_path, "x.mhd") == "x.mha"  # the same image, header attached
    assert volumes._resolve(tmp_path, "y.nrrd") == "y.nhdr"
    assert volumes._resolve(tmp_path, "z.mhd") == "z.mhd"  # neither: as given, rejected at read


# --- a whole case: ITK and NIfTI copies give identical frames ----------------------------------------------

TRUTH = phantom([(1, box((9, 15), (3, 9), (0, 3))), (2, box((2, 6), (4, 8), (1, 4)))])


def _spec(tmp_path: Path, images: str, labels: str, name: str):
    data = {
        **MINIMAL_SPEC,
        "name": name,
        "root": "D",
        "modality": "MR",
        "intensity": {"kind": "percentile", "low": 0.5, "high": 99.5},
        "format": {"family": "volumes", "options": {"layout": "pairs", "images": images, "labels": labels}},
        "labels": [
            {"value": 1, "label": "liver", "name": "Liver", "category": "liver"},
            {"value": 2, "label": "spleen", "name": "Spleen", "category": "spleen"},
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_spec_file(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_itk_and_nifti_copies_of_a_case_give_identical_frames(tmp_path, suffix):
    d = tmp_path / "D"
    for axcodes, case in (("LPS", "a"), ("PIL", "b")):
        image, label = oriented(image_of(TRUTH, 1), axcodes), oriented(TRUTH, axcodes)
        (d / "nii").mkdir(parents=True, exist_ok=True)
        nib.save(image, d / "nii" / f"{case}.nii.gz")
        nib.save(label, d / "nii" / f"{case}_seg.nii.gz")
        save_itk(d / "itk" / f"{case}{suffix}", image)
        save_itk(d / "itk" / f"{case}_seg{suffix}", label)
    nii = _spec(tmp_path, "nii/?.nii.gz", "{dir}/{stem}_seg.nii.gz", "tiny_nii")
    itk = _spec(tmp_path, f"itk/?{suffix}", f"{{dir}}/{{stem}}_seg{suffix}", "tiny_itk")
    for case in ("a", "b"):
        a = frames_of(nii, tmp_path, items_of(nii, tmp_path)[case])
        b = frames_of(itk, tmp_path, items_of(itk, tmp_path)[case])
        assert len(a) == len(b) == SHAPE[2]
        for fa, fb in zip(a, b, strict=True):
            assert (fa.slice_index, fa.plane) == (fb.slice_index, fb.plane)
            assert fa.spacing_mm == pytest.approx(fb.spacing_mm, abs=1e-6)  # NIfTI stores float32 zooms
            assert np.array_equal(fa.image, fb.image) and np.array_equal(fa.label_map, fb.label_map)
            assert np.array_equal(fb.label_map, display(TRUTH, fb.slice_index))


def data_files_of(raw: Path, headers: tuple[SourceFile, ...]) -> tuple[SourceFile, ...]:
    """The ``{role}_data`` files discovery lists after the headers: each detached header's data file."""
    out = []
    for f in headers:
        name = detached_data_file(raw / f.path)
        if name is not None:
            out.append(SourceFile(f"{f.role}_data", f"{f.path.rsplit('/', 1)[0]}/{name}"))
    return tuple(out)


def test_raw_files_are_never_images_or_labels(tmp_path):
    d = tmp_path / "D"
    write_itk(d / "img" / "a.mhd", image_of(TRUTH, 0))
    write_itk(d / "lab" / "a.mhd", TRUTH)
    write_itk(d / "img" / "b.mhd", image_of(TRUTH, 1), compress=True)  # b.zraw
    write_itk(d / "lab" / "b.mhd", TRUTH)
    spec = _spec(tmp_path, "img/*", "lab/{stem}.mhd", "tiny_raw")  # the glob sees a.raw and b.zraw too
    items = items_of(spec, tmp_path)
    assert sorted(items) == ["a", "b"]
    # the data files ride with their headers (hashed into the sources manifest, fetched from object storage)
    assert items["b"].files == (
        SourceFile("image", "D/img/b.mhd"),
        SourceFile("label", "D/lab/b.mhd"),
        SourceFile("image_data", "D/img/b.zraw"),
        SourceFile("label_data", "D/lab/b.raw"),
    )
    assert len(frames_of(spec, tmp_path, items["b"])) == SHAPE[2]
    # an attached header (.mha) names no data file; LOCAL (data inside) is none either
    write_itk(d / "img" / "c.mha", image_of(TRUTH, 0))
    assert detached_data_file(d / "img" / "c.mha") is None
    (d / "local.mhd").write_text("NDims = 2\nElementDataFile = LOCAL\n")
    assert detached_data_file(d / "local.mhd") is None


@pytest.mark.parametrize("option", ["images", "labels"])
def test_a_pattern_naming_data_files_is_refused_at_load(tmp_path, option):
    with pytest.raises(SpecError) as e:
        if option == "images":
            _spec(tmp_path, "img/*.raw", "lab/{stem}.mhd", "tiny_bad")
        else:
            _spec(tmp_path, "img/*.mhd", "lab/{stem}.zraw", "tiny_bad")
    assert f"'{option}' names" in str(e.value) and ".mhd/.nhdr header" in str(e.value)


# --- the datasets, in their publishers' layouts ------------------------------------------------------------

# PROMISE12: the prostate, one compact structure on k 0-2 (one label value)
PROSTATE = phantom([(1, box((5, 11), (3, 8), (0, 3)))])
PROSTATE_NAMES = {0: {"prostate"}, 1: {"prostate"}, 2: {"prostate"}}
PROSTATE_REGIONS = {0: 1, 1: 1, 2: 1}

# LA 2018: the atrial cavity (k 1-3) with a pulmonary vein stump as a second component on k 3, stored 0/255
ATRIUM = phantom([(255, box((4, 11), (2, 8), (1, 4))), (255, box((13, 16), (9, 12), (3, 4)))])
ATRIUM_NAMES = {1: {"left atrium"}, 2: {"left atrium"}, 3: {"left atrium"}}
ATRIUM_REGIONS = {1: 1, 2: 1, 3: 2}

# SLIVER07: the liver (patient's right, k 0-2) with a lobe tip cut off on k 2
LIVER = phantom([(1, box((8, 15), (3, 10), (0, 3))), (1, box((2, 5), (9, 12), (2, 3)))])
LIVER_NAMES = {0: {"liver"}, 1: {"liver"}, 2: {"liver"}}
LIVER_REGIONS = {0: 1, 1: 1, 2: 2}

# LUNA16: the two lungs (values 3 and 4, sides not verified: see the spec) on k 0-3, the airway (5) on k 2-3
LUNGS = phantom(
    [(3, box((1, 7), (2, 10), (0, 4))), (4, box((9, 15), (2, 10), (0, 4))), (5, box((7, 9), (5, 7), (2, 4)))]
)
LUNG_NAMES = {0: {"lung_3", "lung_4"}, 1: {"lung_3", "lung_4"}, 2: {"lung_3", "lung_4", "airway_5"},
              3: {"lung_3", "lung_4", "airway_5"}}  # fmt: skip
LUNG_REGIONS = {0: 2, 1: 2, 2: 3, 3: 3}
LUNA_UIDS = tuple(f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{n}" for n in (105756658031515062000744821260,
                  979083010707182900091062408058, 124154461048929153767743874565))  # fmt: skip

LA_IDS = ("0RZDK210BSMWAA6467LU", "CMPXO4J23G58J53Q98SZ", "06SR5RBREL16DQ6M8LWS", "VIXBEFTNVHZWKAKURJBN")


def write_promise12(raw: Path) -> None:
    """Three training parts of CaseNN.mhd/.raw pairs (Part2's case stored with a flipped, permuted direction),
    a segmentation without its image, the test data (not read), macOS junk and a README."""
    d = raw / "PROMISE12"
    for part, n, axcodes in ((1, 0, "LPS"), (1, 1, "LPS"), (2, 20, "LAI")):
        folder = d / f"TrainingData_Part{part}"
        write_itk(folder / f"Case{n:02d}.mhd", image_of(PROSTATE, n), axcodes)
        write_itk(folder / f"Case{n:02d}_segmentation.mhd", PROSTATE, axcodes)
    write_itk(d / "TrainingData_Part3" / "Case45_segmentation.mhd", PROSTATE)  # Case45.mhd is missing
    write_itk(d / "TestData" / "Case00.mhd", image_of(PROSTATE, 100))  # same id as a training case
    junk(d / "TrainingData_Part1" / "._Case00.mhd")
    (d / "README.txt").write_text("PROMISE12 training data\n")


def write_la2018(raw: Path) -> None:
    """Training Set/ and Testing Set/ folders of lgemri.nrrd + laendo.nrrd (0/255; one case also lawall.nrrd
    and a desktop.ini; one stored in another orientation), and a training folder without its laendo.nrrd."""
    d = raw / "2018_UTAH_MICCAI"
    for split_dir, cid, axcodes in (
        ("Training Set", LA_IDS[0], "LPS"),
        ("Training Set", LA_IDS[1], "RAS"),
        ("Testing Set", LA_IDS[2], "LPS"),
    ):
        write_itk(d / split_dir / cid / "lgemri.nrrd", image_of(ATRIUM, len(cid)).astype(np.uint8), axcodes)
        write_itk(d / split_dir / cid / "laendo.nrrd", ATRIUM, axcodes)
    write_itk(d / "Training Set" / LA_IDS[1] / "lawall.nrrd", (ATRIUM > 0).astype(np.uint8) * 255, "RAS")
    (d / "Training Set" / LA_IDS[1] / "desktop.ini").write_text("[.ShellClassInfo]\n")
    write_itk(d / "Training Set" / LA_IDS[3] / "lgemri.nrrd", image_of(ATRIUM, 3).astype(np.uint8))


def write_sliver07(raw: Path) -> None:
    """scan/ and label/ as the Zenodo training archives unpack: liver-origNNN.mhd/.raw (CT) and
    liver-segNNN.mhd/.raw (one storing 1, one 255, one compressed .zraw), a scan without its label, junk."""
    d = raw / "SLIVER07"
    for n, value, compress in ((1, 1, False), (2, 255, True)):
        write_itk(d / "scan" / f"liver-orig{n:03d}.mhd", (image_of(LIVER, n) - 60).astype(np.int16), "LPS")
        write_itk(d / "label" / f"liver-seg{n:03d}.mhd", (LIVER * value).astype(np.uint8), "LPS", compress)
    write_itk(d / "scan" / "liver-orig003.mhd", image_of(LIVER, 3))  # no liver-seg003.mhd
    junk(d / "scan" / "._liver-orig001.mhd")
    (d / "license.txt").write_text("SLIVER07 rules\n")


def write_luna16(raw: Path) -> None:
    """subset0/ and a nested subset1/subset1/ of <seriesuid>.mhd/.raw scans, seg-lungs-LUNA16/<seriesuid>.mhd
    masks with compressed .zraw data, a scan without its mask, CSVFILES/ (not read) and macOS junk."""
    d = raw / "LUNA16"
    for folder, uid in (("subset0", LUNA_UIDS[0]), ("subset1/subset1", LUNA_UIDS[1])):
        write_itk(d / folder / f"{uid}.mhd", (image_of(LUNGS, len(folder)) - 900).astype(np.int16), "LPS")
        write_itk(d / "seg-lungs-LUNA16" / f"{uid}.mhd", LUNGS, "LPS", compress=True)
    write_itk(d / "subset2" / f"{LUNA_UIDS[2]}.mhd", image_of(LUNGS, 2))  # its lung mask is missing
    (d / "CSVFILES").mkdir()
    (d / "CSVFILES" / "annotations.csv").write_text(
        f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{LUNA_UIDS[0]},1,2,3,5\n"
    )
    junk(d / "subset0" / f"._{LUNA_UIDS[0]}.mhd")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("itkraw")
    for write in (write_promise12, write_la2018, write_sliver07, write_luna16):
        write(root)
    return root


CASES: dict[str, dict] = {
    "promise12": dict(
        truth=PROSTATE, names=PROSTATE_NAMES, regions=PROSTATE_REGIONS,
        read={f"Case{n:02d}": (f"TrainingData_Part{p}/Case{n:02d}.mhd",
                               f"TrainingData_Part{p}/Case{n:02d}_segmentation.mhd")
              for p, n in ((1, 0), (1, 1), (2, 20))},
        rejected={"Case45": "missing_file"}, splits={},
    ),
    "la2018": dict(
        truth=(ATRIUM > 0).astype(np.uint8) * 255, names=ATRIUM_NAMES, regions=ATRIUM_REGIONS,
        read={cid: (f"{s}/{cid}/lgemri.nrrd", f"{s}/{cid}/laendo.nrrd")
              for s, cid in (("Training Set", LA_IDS[0]), ("Training Set", LA_IDS[1]),
                             ("Testing Set", LA_IDS[2]))},
        rejected={LA_IDS[3]: "missing_file"},
        splits={LA_IDS[0]: "train", LA_IDS[1]: "train", LA_IDS[2]: "test", LA_IDS[3]: "train"},
    ),
    "sliver07": dict(
        truth=LIVER, names=LIVER_NAMES, regions=LIVER_REGIONS,
        read={f"{n:03d}": (f"scan/liver-orig{n:03d}.mhd", f"label/liver-seg{n:03d}.mhd") for n in (1, 2)},
        rejected={"003": "missing_file"}, splits={},
    ),
    "luna16": dict(
        truth=LUNGS, names=LUNG_NAMES, regions=LUNG_REGIONS,
        read={LUNA_UIDS[0]: (f"subset0/{LUNA_UIDS[0]}.mhd", f"seg-lungs-LUNA16/{LUNA_UIDS[0]}.mhd"),
              LUNA_UIDS[1]: (f"subset1/subset1/{LUNA_UIDS[1]}.mhd", f"seg-lungs-LUNA16/{LUNA_UIDS[1]}.mhd")},
        rejected={LUNA_UIDS[2]: "missing_file"}, splits={},
    ),
}  # fmt: skip
SPECS = list(CASES)


def test_the_new_specs_are_complete():
    for name in SPECS:
        spec = resolve_spec(name)
        assert (
            spec.format.family == "volumes" and spec.slicing.planes == ("ax",) and spec.split.rule == "hash"
        )
        assert spec.citation and spec.licence and spec.homepage.startswith("http") and spec.unit_items > 0
        assert spec.stats is not None and spec.stats.structures == len(spec.labels)
        assert all(e.value not in (None, 0) and e.name[0].isupper() and e.category for e in spec.labels)
    assert {n: resolve_spec(n).access for n in SPECS} == {
        "promise12": "registration", "la2018": "registration", "sliver07": "registration", "luna16": "open"
    }  # fmt: skip
    assert {n: resolve_spec(n).modality for n in SPECS} == {
        "promise12": "MR", "la2018": "MR", "sliver07": "CT", "luna16": "CT"
    }  # fmt: skip
    assert {e.value: e.label for e in resolve_spec("la2018").labels} == {255: "left atrium"}
    # SLIVER07's rules forbid passing on derived data: the licence says so
    assert "derived" in resolve_spec("sliver07").licence and "commercial" in resolve_spec("sliver07").licence


@pytest.mark.parametrize("name", SPECS)
def test_discovery_finds_the_published_cases(raw, name):
    spec, case = resolve_spec(name), CASES[name]
    items = items_of(spec, raw)
    assert sorted(items) == sorted({**case["read"], **case["rejected"]})
    for cid, (image, annotation) in case["read"].items():
        role = "mask" if name == "sliver07" else "label"
        headers = (SourceFile("image", f"{spec.root}/{image}"), SourceFile(role, f"{spec.root}/{annotation}"))
        assert items[cid].files == headers + data_files_of(raw, headers)
        assert items[cid].patient_id == cid
    assert {c: i.official_split for c, i in items.items() if i.official_split} == case["splits"]
    # a .raw/.zraw is never an image or a label, only the data file of its header
    assert not any(
        (f.path.endswith((".raw", ".zraw")) and not f.role.endswith("_data")) or "/._" in f.path
        for i in items.values()
        for f in i.files
    )
    for cid, reason in case["rejected"].items():
        with pytest.raises(ReadError) as e:
            frames_of(spec, raw, items[cid])
        assert e.value.reason == reason
    assert discovery_notes(spec, raw) == []


@pytest.mark.parametrize("name", SPECS)
def test_frames_carry_the_label_names_and_regions_of_each_slice(raw, name):
    spec, case = resolve_spec(name), CASES[name]
    items = items_of(spec, raw)
    for cid in case["read"]:
        frames = frames_of(spec, raw, items[cid])
        assert [f.slice_index for f in frames] == list(range(SHAPE[2]))
        assert {(f.shape, f.spacing_mm, f.modality) for f in frames} == {
            ((SHAPE[1], SHAPE[0]), (ZOOMS[1], ZOOMS[0]), spec.modality)
        }
        if name == "sliver07":  # a binary mask: any non-zero voxel is liver, 1 or 255 alike
            assert all(f.label_map is None for f in frames)
            for f in frames:
                got = dict(f.masks).get("liver", np.zeros((SHAPE[1], SHAPE[0]), bool))
                assert np.array_equal(got, display(case["truth"] > 0, f.slice_index)), cid
        else:
            assert all(np.array_equal(f.label_map, display(case["truth"], f.slice_index)) for f in frames), (
                cid
            )
        assert {k: names_of(f) for k, f in enumerate(frames) if f.has_annotations} == case["names"], cid
        assert {k: regions_of(f) for k, f in enumerate(frames) if f.has_annotations} == case["regions"], cid


@pytest.mark.parametrize(
    "name, cid, stored",
    [("promise12", "Case20", "LAI"), ("la2018", LA_IDS[1], "RAS"), ("sliver07", "002", "LPS")],
)
def test_images_are_reoriented_before_slicing(raw, name, cid, stored):
    spec = resolve_spec(name)
    item = items_of(spec, raw)[cid]
    img = load_itk(raw / item.files[0].path, item.files[0].path)
    assert "".join(nib.aff2axcodes(img.affine)) == stored
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(img.dataobj), img.affine))
    frames = frames_of(spec, raw, item)
    assert all(np.array_equal(f.image, display(np.asarray(canonical.dataobj), f.slice_index)) for f in frames)
    # the structure on the patient's right lies on the image's left
    if name == "sliver07":
        cols = np.nonzero(dict(frames[0].masks)["liver"])[1]
        assert cols.max() < SHAPE[0] // 2


def test_promise12_reads_training_parts_only(raw):
    spec = resolve_spec("promise12")
    items = items_of(spec, raw)
    assert not any("TestData" in f.path for i in items.values() for f in i.files)
    assert (raw / "PROMISE12/TestData/Case00.mhd").is_file() and "Case00_segmentation" not in items


def test_la2018_reads_the_cavity_not_the_wall(raw):
    spec = resolve_spec("la2018")
    item = items_of(spec, raw)[LA_IDS[1]]
    assert [f.path.rsplit("/", 1)[-1] for f in item.files] == ["lgemri.nrrd", "laendo.nrrd"]
    frames = frames_of(spec, raw, item)
    assert {int(v) for f in frames for v in np.unique(f.label_map)} == {0, 255}
    lab = frames[3].label_map == 255
    assert ndimage.label(lab, structure=np.ones((3, 3)))[1] == 2


def test_luna16_masks_are_compressed_and_declare_the_lidc_overlap(raw):
    spec = resolve_spec("luna16")
    assert (raw / "LUNA16/seg-lungs-LUNA16" / f"{LUNA_UIDS[0]}.zraw").is_file()
    assert {o.spec: o.cases for o in spec.overlaps} == {"lidc_idri": 888}
    assert {e.value: e.label for e in spec.labels} == {3: "lung_3", 4: "lung_4", 5: "airway_5"}
    items = items_of(spec, raw)
    assert not any("CSVFILES" in f.path for i in items.values() for f in i.files)
    from medpclip.census import census

    c = census([resolve_spec("lidc_idri"), spec])
    assert c.shared["luna16"] == 1.0


# --- CAMUS: 2D echo frames as W × H × 1 MetaImages -----------------------------------------------------------

ECHO_GT = np.zeros((10, 8), np.uint8)  # (rows = depth, cols), as the frame is displayed
ECHO_GT[1:6, 2:6] = 2  # myocardium around …
ECHO_GT[2:5, 3:5] = 1  # … the LV cavity
ECHO_GT[7:10, 2:6] = 3  # the left atrium, below (further from the probe)


def _echo(path: Path, frame: np.ndarray) -> None:
    out = sitk.GetImageFromArray(frame[None])  # DimSize W H 1, as CAMUS ships its frames
    out.SetSpacing((0.31, 0.15, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(path))


def write_camus(raw: Path) -> dict[str, np.ndarray]:
    """training/patient0001 with its four frames, _gt maps, a cine sequence and Info files; patient0002 whose
    4CH_ES _gt is missing; testing/patient0451 without _gt (not read); macOS junk."""
    d = raw / "CAMUS_public" / "database"
    images = {}
    for pid in ("patient0001", "patient0002"):
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                stem = f"{pid}_{view}_{phase}"
                images[stem] = (
                    ECHO_GT * 40 + np.random.default_rng(len(images)).integers(0, 30, ECHO_GT.shape)
                ).astype(np.uint8)
                _echo(d / "training" / pid / f"{stem}.mhd", images[stem])
                if stem != "patient0002_4CH_ES":
                    _echo(d / "training" / pid / f"{stem}_gt.mhd", ECHO_GT)
            seq = sitk.GetImageFromArray(np.zeros((5, *ECHO_GT.shape), np.uint8))  # 5 frames of the loop
            sitk.WriteImage(seq, str(d / "training" / pid / f"{pid}_{view}_sequence.mhd"))
            (d / "training" / pid / f"Info_{view}.cfg").write_text(
                "ED: 1\nES: 5\nNbFrame: 5\nImageQuality: Good\n"
            )
    _echo(d / "testing" / "patient0451" / "patient0451_2CH_ED.mhd", images["patient0001_2CH_ED"])
    junk(d / "training" / "patient0001" / "._patient0001_2CH_ED.mhd")
    return images


def test_camus_reads_each_labelled_frame_as_one_slice(tmp_path):
    images = write_camus(tmp_path)
    spec = resolve_spec("camus")
    assert (
        spec.modality == "US" and spec.stats.images == 1800 and spec.stats.structures == len(spec.labels) == 3
    )
    items = items_of(spec, tmp_path)
    assert sorted(items) == sorted(k for k in images)  # no _gt, no _sequence, no testing/ frame, no junk
    item = items["patient0001_4CH_ES"]
    assert item.files == (
        SourceFile("image", "CAMUS_public/database/training/patient0001/patient0001_4CH_ES.mhd"),
        SourceFile("label", "CAMUS_public/database/training/patient0001/patient0001_4CH_ES_gt.mhd"),
        SourceFile("image_data", "CAMUS_public/database/training/patient0001/patient0001_4CH_ES.raw"),
        SourceFile("label_data", "CAMUS_public/database/training/patient0001/patient0001_4CH_ES_gt.raw"),
    )
    assert item.patient_id == "patient0001" and item.study_id == "patient0001_4CH"
    (frame,) = frames_of(spec, tmp_path, item)
    assert frame.modality == "US" and frame.shape == ECHO_GT.shape
    assert frame.spacing_mm == pytest.approx((0.15, 0.31))  # (row, col) mm
    assert np.array_equal(frame.image, images["patient0001_4CH_ES"])  # shown as stored, probe at the top
    assert np.array_equal(frame.label_map, ECHO_GT)
    assert names_of(frame) == {"LV endocardium", "LV epicardium", "left atrium"} and regions_of(frame) == 3
    with pytest.raises(ReadError) as e:
        frames_of(spec, tmp_path, items["patient0002_4CH_ES"])
    assert e.value.reason == "missing_file"
