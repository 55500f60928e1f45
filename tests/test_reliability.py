"""Issue 7: bad inputs are rejected with a reason and leave every other sample byte-identical; builds are
identical across worker counts; exact duplicates never span two splits; nothing a dataset names can write
(or read) outside its folders; specs cannot run code or explode. Real Ray, real DuckDB, no mocks.

The catalogue of bad-input kinds, with the test that proves each, is docs/RELIABILITY.md."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml
from corpus_utils import DEMO_SPECS, tree_hashes
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from medpclip import demo
from medpclip.corpus.build import build_corpus
from medpclip.corpus.inspect import check_corpus
from medpclip.corpus.schema import KEY_RE, case_slug, sample_key, scrub_uids
from medpclip.corpus.split import derive_overrides, load_overrides, split_by_rule
from medpclip.frame import ReadError
from medpclip.sources import dicom, tables
from medpclip.sources._common import glob_files, read_image
from medpclip.specs import DatasetSpec, SpecError, load_spec_file, parse_spec, resolve_spec, resolve_specs
from medpclip.warehouse import query

BIN = Path(sys.executable).parent
CT = "Task90_DemoAbdomenCT"
UID_NAME = "1.2.826.0.1.3680043.8.498.4242.7"  # a file named by a DICOM UID (as SIIM names its images)


# --- writers of bad files ------------------------------------------------------------------------------------


def _nii_bytes(data: np.ndarray, *, gz: bool = True) -> bytes:
    raw = nib.Nifti1Image(data, demo.ct_stored_affine()).to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def _with_dims(nii: bytes, dims: tuple[int, ...]) -> bytes:
    """An uncompressed NIfTI-1 whose header claims other dimensions than its data has."""
    b = bytearray(nii)
    struct.pack_into("<8h", b, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    return bytes(b)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a size its few data bytes do not have."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _image_bytes(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _photo(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _blob_mask(size: int = 64) -> bytes:
    m = np.zeros((size, size), np.uint8)
    m[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return _image_bytes(np.stack([m] * 3, axis=-1), "JPEG")


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- the bad raw root ----------------------------------------------------------------------------------------

# (dataset, file name fragment) → the reason its reject row must carry. Names sort after every demo case, so
# the demo's units keep their cases and their shards must come out byte-identical.
EXPECTED = {
    ("demo_ct", "democt_901"): "empty_file",
    ("demo_ct", "democt_902"): "unreadable_image",  # truncated .nii.gz
    ("demo_ct", "democt_903"): "unreadable_image",  # corrupt header
    ("demo_ct", "democt_904"): "non_finite_voxels",
    ("demo_ct", "democt_905"): "constant_image",
    ("demo_ct", "democt_906"): "bad_dimensions",  # 4D where 3D is expected
    ("demo_ct", "democt_907"): "too_large",  # header claims 32767³ voxels
    ("demo_ct", "democt_908"): "shape_mismatch",
    ("demo_ct", "democt_909"): "bad_label_value",
    ("demo_ct", "democt_910"): "no_regions",
    ("demo_ct", "democt_911"): "missing_file",
    ("demo_ct", "democt_912"): "outside_root",  # '..' in dataset.json
    ("demo_polyp", "zzzz_empty"): "empty_file",
    ("demo_polyp", "zzzz_trunc"): "unreadable_image",
    ("demo_polyp", "zzzz_blank"): "constant_image",
    ("demo_polyp", "zzzz_wrongmask"): "shape_mismatch",
    ("demo_polyp", "zzzz_huge"): "too_large",  # PNG header claims 100000²
    ("demo_polyp", "zzzz_escape"): "outside_root",  # a symlink out of the dataset folder
    ("demo_polyp", "zzzz_loop"): "symlink_loop",  # a folder link to its own parent
    ("demo_polyp", "zzzz_self"): "symlink_loop",  # a link to itself
    ("demo_polyp", "zzzz_outdir"): "outside_root",  # a folder link out of the dataset folder
    ("demo_cxr", "zzzz_empty"): "empty_file",
    ("demo_cxr", "zzzz_trunc"): "unreadable_image",
    ("demo_cxr", "zzzz_missing"): "missing_files",  # at plan: the table's one row for its absent images
    ("demo_cxr", "zzzz_norow"): "no_table_row",
    ("odd_names", "dup"): "duplicate_key",  # images/a/dup.jpg and images/b/dup.jpg: one key
    ("odd_names", "boxes only"): "box_outside_image",
    ("bad_csv", "Data_Entry"): "bad_encoding",
}


def _bad_ct(root: Path, outside: Path) -> None:
    folder = root / CT
    rng = np.random.default_rng(9)
    shape = (16, 16, 4)
    image = rng.normal(40, 30, shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[4:12, 4:12, :] = 1
    good_label = _nii_bytes(label)
    nan = image.astype(np.float32)
    nan[3, 3, 1], nan[5, 5, 2] = np.nan, np.inf
    four_d = np.stack([image, image], axis=-1)
    foreign = label.copy()
    foreign[0, 0, 0] = 9
    header = bytearray(_nii_bytes(image, gz=False))
    struct.pack_into("<h", header, 70, 1234)  # a datatype code NIfTI does not have
    cases = {
        "democt_901": (b"", good_label),
        "democt_902": (_nii_bytes(image)[:300], good_label),
        "democt_903": (bytes(header), good_label),
        "democt_904": (_nii_bytes(nan), good_label),
        "democt_905": (_nii_bytes(np.full(shape, -1000, np.int16)), good_label),
        "democt_906": (_nii_bytes(four_d), good_label),
        "democt_907": (
            gzip.compress(_with_dims(_nii_bytes(image, gz=False), (32767, 32767, 32767))),
            good_label,
        ),
        "democt_908": (_nii_bytes(image), _nii_bytes(np.zeros((16, 16, 5), np.uint8))),
        "democt_909": (_nii_bytes(image), _nii_bytes(foreign)),
        "democt_910": (_nii_bytes(image), _nii_bytes(np.zeros(shape, np.uint8))),
        "democt_911": (None, good_label),
    }
    index = json.loads((folder / "dataset.json").read_text())
    for case, (img, lab) in cases.items():
        name = f"{case}.nii" if case == "democt_903" else f"{case}.nii.gz"
        if img is not None:
            _write(folder / "imagesTr" / name, img)
        _write(folder / "labelsTr" / f"{case}.nii.gz", lab)
        index["training"].append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{case}.nii.gz"})
    # a path in the index that climbs out of the dataset folder, to a real NIfTI beside it
    _write(outside / "democt_912.nii.gz", _nii_bytes(image))
    _write(folder / "labelsTr" / "democt_912.nii.gz", good_label)
    escape = os.path.relpath(outside / "democt_912.nii.gz", folder)
    index["training"].append({"image": f"./{escape}", "label": "./labelsTr/democt_912.nii.gz"})
    (folder / "dataset.json").write_text(json.dumps(index, indent=4))


def _bad_polyp(root: Path, outside: Path) -> None:
    folder = root / "Kvasir-SEG"
    mask = _blob_mask()
    good = _image_bytes(_photo(1), "JPEG")
    files = {
        "zzzz_empty": b"",
        "zzzz_trunc": good[: len(good) // 3],
        "zzzz_blank": _image_bytes(np.full((64, 64, 3), 90, np.uint8), "PNG"),  # content decides, not suffix
        "zzzz_wrongmask": _image_bytes(_photo(2, 80), "JPEG"),
        "zzzz_huge": _png_claiming(100_000, 100_000),
    }
    for stem, data in files.items():
        _write(folder / "images" / f"{stem}.jpg", data)
        _write(folder / "masks" / f"{stem}.jpg", mask)
    _write(outside / "secret.jpg", _image_bytes(_photo(3), "JPEG"))
    (folder / "images" / "zzzz_escape.jpg").symlink_to(outside / "secret.jpg")
    _write(folder / "masks" / "zzzz_escape.jpg", mask)
    (folder / "images" / "zzzz_loop").symlink_to("..", target_is_directory=True)
    (folder / "images" / "zzzz_self.jpg").symlink_to("zzzz_self.jpg")
    (folder / "images" / "zzzz_outdir").symlink_to(outside, target_is_directory=True)


def _bad_cxr(root: Path) -> None:
    folder = root / "ChestX-ray14"
    entry = folder / "Data_Entry_2017.csv"
    rows = [f"{n},No Finding,0,900,50,M,PA,2000,2000,0.143,0.143\n" for n in (
        "zzzz_empty.png", "zzzz_trunc.png", "zzzz_missing.png",
    )]  # fmt: skip
    entry.write_bytes(b"\xef\xbb\xbf" + entry.read_bytes() + "".join(rows).encode())  # and a BOM: tolerated
    png = _image_bytes(np.full((32, 32), 7, np.uint8) + np.eye(32, dtype=np.uint8), "PNG")
    _write(folder / "images" / "zzzz_empty.png", b"")
    _write(folder / "images" / "zzzz_trunc.png", png[: len(png) // 2])
    _write(folder / "images" / "zzzz_norow.png", png)


def _odd_names(root: Path) -> DatasetSpec:
    """A raster dataset whose file names carry dots, spaces, unicode, '..' and a DICOM UID."""
    folder = root / "Odd Names ü"
    names = ["my polyp.v2", "ünïcödé 東京", "a..b", UID_NAME, "a/dup", "b/dup"]
    for n, name in enumerate(names):
        _write(folder / "images" / f"{name}.jpg", _image_bytes(_photo(100 + n), "JPEG"))
        _write(folder / "masks" / f"{Path(name).name}.jpg", _blob_mask())
    _write(folder / "images" / "boxes only.jpg", _image_bytes(_photo(99), "JPEG"))
    boxes = [(10, 10, 40, 40), (100, 100, 120, 120), (30, 30, 20, 50)]  # good, outside, negative width
    bbox = [dict(label="polyp", xmin=a, ymin=b, xmax=c, ymax=d) for a, b, c, d in boxes]
    _write(
        folder / "boxes.json", json.dumps({"boxes only": {"height": 64, "width": 64, "bbox": bbox}}).encode()
    )
    data = resolve_spec("demo_polyp").model_dump(mode="json")
    data.update(name="odd_names", root="Odd Names ü")
    data["format"]["options"].update(images="images/**/*.jpg", boxes_json="boxes.json")
    return parse_spec(data)


def _bad_csv(root: Path) -> DatasetSpec:
    """A table with a byte that is not UTF-8 (Latin-1 'é') on its third line."""
    folder = root / "CXR latin1"
    src = (root / "ChestX-ray14" / "Data_Entry_2017.csv").read_bytes().split(b"\n")
    src[2] += b"\xe9"  # a Latin-1 'é' at the end of line 3
    _write(folder / "Data_Entry_2017.csv", b"\n".join(src))
    for name in ("BBox_List_2017.csv", "train_val_list.txt", "test_list.txt"):
        _write(folder / name, (root / "ChestX-ray14" / name).read_bytes())
    (folder / "images").mkdir()
    data = resolve_spec("demo_cxr").model_dump(mode="json")
    data.update(name="bad_csv", root="CXR latin1")
    return parse_spec(data)


@pytest.fixture(scope="module")
def bad_build(demo_raw, ray_session, tmp_path_factory):
    """The demo datasets with bad files added to copies of them, plus two extra datasets, built once."""
    import shutil

    base = tmp_path_factory.mktemp("bad")
    raw, out, outside = base / "raw", base / "corpus", base / "outside"
    shutil.copytree(demo_raw, raw, symlinks=True)
    _bad_ct(raw, raw / "outside_ct")
    _bad_polyp(raw, outside)
    _bad_cxr(raw)
    specs = [*resolve_specs(DEMO_SPECS), _odd_names(raw), _bad_csv(raw)]
    result = build_corpus(specs, raw, out, max_side=256)
    return result, raw, out


@pytest.mark.slow
def test_every_bad_input_has_its_reason_and_a_readable_detail(bad_build):
    _, _, out = bad_build
    rows = query(out, "SELECT dataset, stage, reason, detail, coalesce(path, '') FROM rejects")[1]
    for (dataset, fragment), reason in EXPECTED.items():
        hits = [r for r in rows if r[0] == dataset and fragment in r[3] + r[4] and r[2] == reason]
        assert hits, f"{dataset} {fragment}: no '{reason}' row; rows: {[r for r in rows if fragment in r[4]]}"
        detail = hits[0][3]
        assert detail and len(detail) < 400 and "Traceback" not in detail, detail
    by = {(r[0], r[2]) for r in rows}
    assert ("odd_names", "invalid_box") in by  # the negative-width box, at region level
    assert not any(r[2] == "unexpected_error" for r in rows), [r for r in rows if r[2] == "unexpected_error"]
    details = {r[2]: r[3] for r in rows if r[0] in ("demo_ct", "bad_csv")}
    assert "32767 x 32767 x 32767" in details["too_large"] and "max_pixels" in details["too_large"]
    assert "NaN or infinite" in details["non_finite_voxels"]
    assert "line 3" in details["bad_encoding"]
    assert "corrupt header" in " ".join(r[3] for r in rows if "democt_903" in r[4])
    # rejected items are sources with status 'rejected' and no samples
    bad = query(out, "SELECT count(*) FROM sources WHERE status = 'rejected' AND n_samples > 0")[1][0][0]
    assert bad == 0


@pytest.mark.slow
def test_good_samples_are_byte_identical_to_a_build_without_the_bad_files(bad_build, demo_corpus):
    result, _, out = bad_build
    clean = tree_hashes(demo_corpus.out)
    dirty = tree_hashes(out)
    compared = [
        p
        for p in clean
        if p.startswith(("shards/demo_", "manifests/samples/demo_", "manifests/regions/demo_"))
    ]
    assert len(compared) > 20
    assert {p: dirty.get(p) for p in compared} == {p: clean[p] for p in compared}
    # the units that hold only bad cases wrote no shard and empty sample manifests
    extra = [p for p in dirty if p.startswith("shards/demo_") and p not in clean]
    assert extra == []
    assert check_corpus(out).problems == []
    assert result.build["totals"]["samples"] == demo_corpus.build["totals"]["samples"] + 6  # odd names kept


@pytest.mark.slow
def test_names_with_dots_spaces_unicode_and_dotdot_stay_inside_the_corpus(bad_build):
    _, raw, out = bad_build
    keys = [k for (k,) in query(out, "SELECT key FROM samples WHERE dataset = 'odd_names' ORDER BY key")[1]]
    assert len(keys) == 6 and all(KEY_RE.match(k) for k in keys)
    assert not any("3680043" in k for k in keys)  # the UID is pseudonymised in the key …
    paths = [p for (p,) in query(out, "SELECT source_path FROM samples WHERE dataset = 'odd_names'")[1]]
    assert not any("3680043" in p for p in paths) and any("/uid-" in p for p in paths)  # … and in the path
    root = out.resolve()
    for p in out.rglob("*"):
        assert p.resolve().is_relative_to(root), p
        if p.suffix == ".tar":
            with tarfile.open(p) as t:
                for m in t.getmembers():
                    assert m.isfile() and "/" not in m.name and ".." not in m.name, m.name
                    key, ext = m.name.split(".", 1)
                    assert KEY_RE.match(key) and ext in ("json", "png", "jpg", "txt"), m.name
    assert not list(raw.parent.glob("*.tar")) and not (raw / "shards").exists()  # nothing written elsewhere


def test_keys_of_hostile_case_ids_are_safe():
    for case_id in ("../../etc/passwd", "/abs/path", "C:\\x\\y", "..", "a/../../b", "x" * 300, "\x00\n"):
        key = sample_key("ds", case_id, "im", 0)
        assert KEY_RE.match(key) and "/" not in key and ".." not in key, key
    assert case_slug("../../etc/passwd") != case_slug("etc/passwd")  # never collide: the hash of the id
    assert scrub_uids("DCM/1.2.840.113619.2.55.3.604688119/IM1.dcm").startswith("DCM/uid-")
    assert scrub_uids("version 2.60.0, ip 10.0.0.1") == "version 2.60.0, ip 10.0.0.1"


# --- size limits before allocation, RLE, encodings -----------------------------------------------------------


def test_headers_claiming_enormous_sizes_are_refused_before_allocating(tmp_path):
    huge_png = _write(tmp_path / "huge.png", _png_claiming(40_000, 40_000))
    with pytest.raises(ReadError) as e:  # 1.6 G px claimed by 60 bytes (Pillow's bomb guard or ours)
        read_image(huge_png, "x/huge.png")
    assert e.value.reason == "too_large"
    small = _write(tmp_path / "small.png", _image_bytes(_photo(5), "PNG"))
    with pytest.raises(ReadError) as e:  # the limit is an option
        read_image(small, "x/small.png", max_pixels=1000)
    assert e.value.reason == "too_large" and "max_pixels" in e.value.detail
    assert read_image(small, "x/small.png").array.shape == (64, 64, 3)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.5"
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, "1.2.826.0.1.3680043.8.498.5"
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "OT", 65535, 65535, 100000
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = b"\0" * 64
    ds.save_as(tmp_path / "huge.dcm", enforce_file_format=True)
    with pytest.raises(ReadError) as e:  # 4·10^14 pixels claimed: refused from the header
        read_image(tmp_path / "huge.dcm", "x/huge.dcm")
    assert e.value.reason == "too_large" and "65535" in e.value.detail

    with pytest.raises(SpecError, match=r"field 'format.options.max_pixels'"):  # refused when the spec loads
        parse_spec({**resolve_spec("demo_polyp").model_dump(mode="json"), "format": {"family": "raster",
            "options": {"images": "images/*.jpg", "label": "polyp", "require_annotation": False, "max_pixels": 0}}})  # fmt: skip


def test_dicom_with_burned_in_annotation_is_rejected(tmp_path):
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    (tmp_path / "DCM").mkdir()
    ds.save_as(tmp_path / "DCM" / "burned.dcm")
    spec = parse_spec({**resolve_spec("demo_ct").model_dump(mode="json"), "name": "dcm", "root": "DCM",
        "format": {"family": "dicom", "options": {}}, "patient_id": {"field": "PatientID"}})  # fmt: skip
    (item,) = list(dicom.discover(spec, tmp_path / "DCM"))
    with pytest.raises(ReadError) as e:
        list(dicom.read(spec, tmp_path, item))
    assert e.value.reason == "burned_in_annotation"


def _rle_dataset(tmp_path: Path, rows: list[str]) -> tuple[DatasetSpec, Path]:
    folder = tmp_path / "RLE"
    for n in range(len(rows)):
        _write(folder / "images" / f"im{n}.png", _image_bytes(_photo(n, 8)[..., 0], "PNG"))
    body = "ImageId,EncodedPixels\n" + "".join(f"im{n},{r}\n" for n, r in enumerate(rows))
    _write(folder / "rle.csv", body.encode())
    spec = parse_spec({**resolve_spec("demo_cxr").model_dump(mode="json"), "name": "rle", "root": "RLE",
        "split": {"rule": "hash"}, "patient_id": {},
        "format": {"family": "tables", "options": {"images": "images/*.png", "match": "stem",
            "rle_table": {"file": "rle.csv", "image_column": "ImageId", "rle_column": "EncodedPixels",
                          "label": "Pneumothorax"}}}})  # fmt: skip
    return spec, tmp_path


def test_malformed_and_overlong_rle_are_bad_rle(tmp_path):
    rows = ["3 4", "3 4 5", "60 10", "0 99999999999999", "x y", "-5 3"]
    spec, raw = _rle_dataset(tmp_path, rows)
    items = {i.case_id: i for i in tables.discover(spec, raw / "RLE")}
    (frame,) = list(tables.read(spec, raw, items["im0"]))
    assert frame.masks[0][1].sum() == 4
    for n in range(1, len(rows)):
        with pytest.raises(ReadError) as e:
            list(tables.read(spec, raw, items[f"im{n}"]))
        assert e.value.reason == "bad_rle", rows[n]
    with pytest.raises(ValueError, match="beyond"):  # an overlong run never allocates more than H × W
        tables.decode_rle("0 1000000000000", (8, 8))


def test_csv_that_is_not_utf8_or_empty_is_refused_with_its_line(tmp_path):
    spec, raw = _rle_dataset(tmp_path, ["3 4", "3 4"])
    path = raw / "RLE" / "rle.csv"
    path.write_bytes(path.read_bytes().replace(b"im1", b"im\xff1"))
    with pytest.raises(ReadError) as e:
        list(tables.discover(spec, raw / "RLE"))
    assert e.value.reason == "bad_encoding" and "line 3" in e.value.detail and "0xff" in e.value.detail
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"im\xff1", b"im1"))  # BOM: fine
    assert len(list(tables.discover(spec, raw / "RLE"))) == 2
    path.write_bytes(b"")  # a zero-byte table: the dataset's index is gone, said at discovery
    with pytest.raises(ReadError) as e:
        list(tables.discover(spec, raw / "RLE"))
    assert e.value.reason == "unreadable_table" and "empty" in e.value.detail


# --- symlinks and paths ----------------------------------------------------------------------------------------


def test_discovery_terminates_on_symlink_loops_and_stays_in_the_folder(tmp_path):
    folder = tmp_path / "D"
    _write(folder / "images" / "a.jpg", b"x")
    (folder / "images" / "loop").symlink_to("..", target_is_directory=True)
    (folder / "images" / "deep").symlink_to(folder, target_is_directory=True)
    (folder / "images" / "etc").symlink_to("/etc", target_is_directory=True)
    for pattern in ("**/*.jpg", "images/*/*.jpg", "images/*/*/*.jpg", "**/*"):
        found = [p.relative_to(folder).as_posix() for p in glob_files(folder, pattern)]
        assert found in ([], ["images/a.jpg"]), (pattern, found)


# --- determinism across worker counts ---------------------------------------------------------------------------


@pytest.mark.slow
def test_one_and_two_workers_give_identical_bytes(demo_corpus, demo_raw, tmp_path):
    out = tmp_path / "one-worker"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MEDPCLIP_"))}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    cmd = [str(BIN / "medpclip"), "build", "--spec", ",".join(DEMO_SPECS), "--raw-root", str(demo_raw),
           "--out", str(out), "--max-side", "256", "--num-cpus", "1"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree_hashes(out) == tree_hashes(demo_corpus.out)  # the session corpus ran on 2 workers


# --- duplicates never span two splits ----------------------------------------------------------------------------


def _dup_spec(name: str) -> DatasetSpec:
    data = resolve_spec("demo_polyp").model_dump(mode="json")
    data.update(name=name, root=name.upper(), patient_id={"field": "pid"})
    data["split"] = {"rule": "hash", "salt": "medpclip-v1", "ratios": {"train": 0.5, "val": 0.0, "test": 0.5}}
    data["format"]["options"] = {"images": "images/*.png", "name_regex": r"^images/(?P<pid>p\d+)_",
                                 "label": "polyp", "require_annotation": False}  # fmt: skip
    return parse_spec(data)


def _patient_in(spec: DatasetSpec, split: str, start: int = 0) -> str:
    return next(
        f"p{i}" for i in range(start, 10_000) if split_by_rule(spec.split, spec.name, f"p{i}") == split
    )


def test_overrides_are_the_least_fixpoint_and_cascade():
    rows = [
        ("a", "pa", "train", "X"), ("b", "pb", "test", "X"),  # X: b's patient joins train …
        ("b", "pb", "test", "Y"), ("c", "pc", "val", "Y"),  # … so does c's twin of pb's other image
        ("c", "pc", "val", "Z"), ("d", "pd", "test", "Z"),  # … and d's twin of pc's: a chain
        ("e", "pe", "val", "W"), ("f", "pf", "test", "W"),  # no train member: test moves to val
        ("g", "pg", "test", "V"), ("g", "pg", "test", "V"),  # one patient: nothing to move
    ]  # fmt: skip
    want = {"b": {"pb": "train"}, "c": {"pc": "train"}, "d": {"pd": "train"}, "f": {"pf": "val"}}
    assert derive_overrides(rows) == want
    assert derive_overrides(reversed(rows)) == want  # order-independent


@pytest.mark.slow
def test_exact_duplicates_never_span_train_and_test(ray_session, tmp_path):
    a, b = _dup_spec("dup_a"), _dup_spec("dup_b")
    pa, pb = _patient_in(a, "train"), _patient_in(b, "test")
    twin = _image_bytes(_photo(7), "PNG")
    raw, out = tmp_path / "raw", tmp_path / "corpus"
    _write(raw / "DUP_A" / "images" / f"{pa}_twin.png", twin)
    _write(raw / "DUP_A" / "images" / f"{_patient_in(a, 'test')}_solo.png", _image_bytes(_photo(8), "PNG"))
    _write(raw / "DUP_B" / "images" / f"{pb}_twin.png", twin)
    _write(raw / "DUP_B" / "images" / f"{pb}_other.png", _image_bytes(_photo(9), "PNG"))  # same patient
    _write(raw / "DUP_B" / "images" / f"{_patient_in(b, 'test', 500)}_x.png", _image_bytes(_photo(10), "PNG"))
    first = build_corpus([a, b], raw, out, max_side=64)
    assert first.units_rerun == 1  # only dup_b's unit ran again
    rows = query(out, "SELECT dataset, source_path, split, split_by_rule FROM samples ORDER BY ALL")[1]
    split_of = {Path(p).name: (s, r) for _, p, s, r in rows}
    assert split_of[f"{pa}_twin.png"] == ("train", "train")
    assert split_of[f"{pb}_twin.png"] == ("train", "test")  # moved …
    assert split_of[f"{pb}_other.png"] == ("train", "test")  # … with its whole patient
    assert sum(s == "test" for s, _ in split_of.values()) == 2  # the others keep their rule's split
    leaks = (
        "SELECT count(*) FROM (SELECT pixel_sha256 FROM samples GROUP BY 1 HAVING count(DISTINCT split) > 1)"
    )
    assert query(out, leaks)[1][0][0] == 0
    patients = "SELECT count(*) FROM (SELECT dataset, patient_id FROM samples GROUP BY ALL HAVING count(DISTINCT split) > 1)"
    assert query(out, patients)[1][0][0] == 0
    doc = json.loads((out / "manifests" / "split_overrides.json").read_text())
    assert list(doc["datasets"]) == ["dup_b"] and list(doc["datasets"]["dup_b"].values()) == ["train"]
    assert load_overrides(out) == doc["datasets"]
    assert first.build["datasets"][1]["patients_moved_by_dedup"] == 1
    assert check_corpus(out).problems == []
    before = tree_hashes(out)
    again = build_corpus([a, b], raw, out, max_side=64)  # a no-op: the overrides are a fixpoint
    assert (again.units_run, again.units_rerun, again.units_skipped) == (0, 0, 2)
    assert tree_hashes(out) == before


# --- specs -------------------------------------------------------------------------------------------------------


def _spec_yaml(tmp_path: Path, options: str) -> Path:
    text = (Path(__file__).parent.parent / "dataset_specs" / "demo_polyp.yaml").read_text()
    head, _, tail = text.partition("  options:\n")
    rest = tail[tail.index("labels:") :]
    path = tmp_path / "spec.yaml"
    path.write_text(head + "  options:\n" + options + rest)
    return path


def test_spec_with_python_tags_is_refused(tmp_path):
    path = _spec_yaml(tmp_path, "    images: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML") as e:
        load_spec_file(path)
    assert "\n" not in str(e.value) and not (tmp_path / "pwned").exists()


def test_yaml_alias_bomb_is_refused_before_any_work(tmp_path):
    bomb = '      l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    bomb += "".join(f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
    path = _spec_yaml(tmp_path, "    images: images/*.jpg\n    junk:\n" + bomb)
    with pytest.raises(SpecError, match="aliases"):  # spec files: no aliases at all
        load_spec_file(path)
    # A spec built in code from such a document (shared nodes: cheap to load, explosive to walk): the typed
    # options have no free-form field to hold it, so it is refused while loading, before anything walks it.
    with pytest.raises(SpecError, match=r"field 'format.options.junk': unknown field") as e:
        parse_spec(yaml.safe_load(path.read_text()), "bomb")
    assert "\n" not in str(e.value)
    data = yaml.safe_load(path.read_text())
    data["format"]["options"] = {"images": data["format"]["options"]["junk"]["l9"]}  # 10^10 strings, shared
    with pytest.raises(SpecError, match=r"field 'format.options.images") as e:
        parse_spec(data, "bomb")
    assert "\n" not in str(e.value)
