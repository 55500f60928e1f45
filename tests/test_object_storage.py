"""Corpora in object storage (issue 17): `medpclip build --out s3://…` and `query`, `validate`, `show` with
``--corpus s3://bucket/prefix``, against a real S3 API server on loopback (moto's standalone ``moto_server``,
started and stopped by PID), with the endpoint and credentials only in the standard environment.

Covered: a build to S3 holds exactly the bytes of a POSIX build of the same inputs, object by object; a build
killed mid-upload (SIGKILL of the driver at a fault point) resumes to those same bytes; reads give the same
answers as from the local copy; validate finds a stray and a damaged shard in the bucket; the bad inputs —
unreachable endpoint, missing bucket, refused credentials, no credentials — each give one line and exit 1.
Train and eval read the corpus from the bucket too. A raw root in the bucket (``--raw-root s3://…``): builds
to a folder and to the bucket hold the POSIX build's bytes (the second with a sparse discovery skeleton);
SIGKILLed mid-unit (while staging raw files, while writing a shard) they resume to those bytes; the skeleton
has every object's size, heads of large ones (a DICOM's whole header) and refreshes incrementally; an object
gone between plan and unit is a ``missing_file`` reject; bad raw locations are one line. Two nodes with raw and
corpus in a bucket: tests/test_orchestration.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from corpus_utils import bucket_hashes, tree_hashes
from procs import free_port, http_ok, running, wait_until

ROOT = Path(__file__).resolve().parents[1]
MEDPCLIP = Path(sys.executable).parent / "medpclip"
MOTO = Path(sys.executable).parent / "moto_server"
SECRET = "medpclip-test-secret-7f3a"
pytestmark = pytest.mark.slow


def _env(endpoint: str, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="medpclip-test",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",  # never probe an instance-metadata endpoint for credentials
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port; the demo corpus built locally and uploaded to it."""
    base = tmp_path_factory.mktemp("s3")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with running([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], base / "moto.log") as server:
        wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), 60, "moto_server", server)
        env = _env(endpoint)
        subprocess.run(
            [str(MEDPCLIP), "demo-data", str(base / "raw")], check=True, env=env, capture_output=True
        )
        built = subprocess.run(
            [str(MEDPCLIP), "build", "--spec", "demo_ct,demo_polyp", "--raw-root", str(base / "raw"),
             "--out", str(base / "corpus"), "--max-side", "128", "--num-cpus", "1"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr[-2000:]
        upload = (
            "import s3fs, sys; fs = s3fs.S3FileSystem(); fs.mkdir('medpclip-corpora'); "
            "fs.put(sys.argv[1], 'medpclip-corpora/demo', recursive=True)"
        )
        subprocess.run([sys.executable, "-c", upload, str(base / "corpus")], check=True, env=env)
        yield {"endpoint": endpoint, "env": env, "local": base / "corpus", "url": "s3://medpclip-corpora/demo",
               "base": base}  # fmt: skip


BUILD = ["build", "--spec", "demo_ct,demo_polyp", "--max-side", "128", "--num-cpus", "1"]


def test_build_to_s3_holds_the_bytes_of_a_posix_build(s3):
    done = _cli(
        s3["env"], *BUILD, "--raw-root", str(s3["base"] / "raw"), "--out", "s3://medpclip-corpora/built"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert bucket_hashes(s3["env"], "medpclip-corpora/built") == tree_hashes(s3["local"])
    again = _cli(
        s3["env"], *BUILD, "--raw-root", str(s3["base"] / "raw"), "--out", "s3://medpclip-corpora/built"
    )
    assert again.returncode == 0 and "0 units built" in again.stdout and "4 kept" in again.stdout


def test_build_to_s3_killed_mid_upload_resumes_to_the_same_bytes(s3, tmp_path):
    url, prefix = "s3://medpclip-corpora/killed", "medpclip-corpora/killed"
    env = s3["env"] | {
        "MEDPCLIP_FAULT": "unit.upload:3",  # the third object of the first unit: shards up, marker not
        "MEDPCLIP_FAULT_TARGET": "driver",
        "MEDPCLIP_FAULT_ONCE": str(tmp_path / "fired"),
    }
    killed = _cli(env, *BUILD, "--raw-root", str(s3["base"] / "raw"), "--out", url)
    assert killed.returncode != 0 and (tmp_path / "fired").exists()
    partial = bucket_hashes(s3["env"], prefix)
    assert partial and not any(k.startswith("manifests/units/") for k in partial)  # nothing looks done
    resumed = _cli(s3["env"], *BUILD, "--raw-root", str(s3["base"] / "raw"), "--out", url)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert bucket_hashes(s3["env"], prefix) == tree_hashes(s3["local"])


def test_train_and_eval_read_the_corpus_from_s3(s3, tmp_path):
    """Ray Train workers read the shards by s3:// URL (webdataset through fsspec); eval writes its metrics next
    to the manifests in the bucket, where the metrics view finds them."""
    trained = _cli(s3["env"], "train", "--corpus", s3["url"], "--out", str(tmp_path / "run"), "--model", "tiny",
                   "--steps", "2", "--batch-size", "4", "--workers", "1")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    evaluated = _cli(
        s3["env"], "eval", "--corpus", s3["url"], "--checkpoint", str(tmp_path / "run"), "--split", "test"
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"metrics: {s3['url']}/metrics/" in evaluated.stdout
    rows = _rows(s3["env"], s3["url"], "SELECT DISTINCT task FROM metrics ORDER BY 1")
    assert {r["task"] for r in rows} >= {"region_cls", "retrieval_i2t"}


def test_build_to_a_missing_bucket_is_one_line(s3):
    done = _cli(
        s3["env"], *BUILD, "--raw-root", str(s3["base"] / "raw"), "--out", "s3://not-created-bucket/x"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: s3://not-created-bucket/x: no bucket 'not-created-bucket': create it first (a build never "
        "creates buckets)"
    ]


def _cli(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(MEDPCLIP), *args], env=env, capture_output=True, text=True, timeout=300)


def _rows(env, corpus, sql):
    done = _cli(env, "query", "--corpus", corpus, "--format", "json", sql)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


SQL = [
    "SELECT dataset, split, image_format, count(*) AS n, sum(n_regions) AS r FROM samples GROUP BY ALL ORDER BY ALL",
    "SELECT kind, count(*) AS n, sum(area_px) AS a FROM regions GROUP BY ALL ORDER BY ALL",
    "SELECT count(*) AS n FROM concepts WHERE n_regions > 0",
    "SELECT path, n_samples, sha256 FROM shards ORDER BY path",
]


@pytest.mark.parametrize("sql", SQL)
def test_query_from_s3_answers_as_the_local_copy(s3, sql):
    assert _rows(s3["env"], s3["url"], sql) == _rows(s3["env"], str(s3["local"]), sql)


def test_validate_and_show_from_s3(s3, tmp_path):
    done = _cli(s3["env"], "validate", "--corpus", s3["url"])
    assert done.returncode == 0, done.stderr
    assert "0 problems" in done.stdout
    (key,) = _rows(s3["env"], s3["url"], "SELECT min(key) AS k FROM samples WHERE dataset = 'demo_polyp'")[
        0
    ].values()
    shown = _cli(s3["env"], "show", key, "--corpus", s3["url"], "--out", str(tmp_path / "s.png"))
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "s.png").stat().st_size > 0


def test_validate_finds_a_stray_and_a_damaged_shard_in_the_bucket(s3):
    env = s3["env"]
    (first,) = _rows(env, s3["url"], "SELECT min(path) AS p FROM shards")[0].values()
    # a copy of the demo in a second prefix, then damage it there (bytes flipped mid-file: the last 1 KiB of
    # a tar is its zero end-of-archive blocks)
    script = (
        "import s3fs, sys; fs = s3fs.S3FileSystem(); src, dst, first = sys.argv[1:]; "
        "fs.copy(src, dst, recursive=True); "
        "data = fs.cat(f'{dst}/{first}'); mid = len(data) // 2; "
        "fs.pipe(f'{dst}/{first}', data[:mid] + bytes(x ^ 0xFF for x in data[mid : mid + 64]) + data[mid + 64 :]); "
        "fs.pipe(f'{dst}/shards/demo_ct/train/train-09999-00.tar', data)"
    )
    subprocess.run(
        [sys.executable, "-c", script, "medpclip-corpora/demo", "medpclip-corpora/damaged", first],
        check=True, env=env,
    )  # fmt: skip
    done = _cli(env, "validate", "--corpus", "s3://medpclip-corpora/damaged")
    assert done.returncode == 1
    assert f"{first}: size or sha256 differs from its unit marker" in done.stderr
    assert "shards/demo_ct/train/train-09999-00.tar: stray shard" in done.stderr


def test_unreachable_endpoint_missing_bucket_and_credentials_are_one_line(s3):
    closed = f"http://127.0.0.1:{free_port()}"
    cases = [
        (_env(closed), s3["url"], f"cannot reach the object store at {closed}"),
        (s3["env"], "s3://no-such-bucket-here/demo", "nothing there (no bucket 'no-such-bucket-here'"),
        (
            {k: v for k, v in s3["env"].items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
            | {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"},
            s3["url"],
            "no usable credentials",
        ),
    ]
    for env, url, message in cases:
        for args in (["query", "--corpus", url, "SELECT 1"], ["validate", "--corpus", url]):
            done = _cli(env, *args)
            assert done.returncode == 1, (args, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
            assert SECRET not in done.stderr + done.stdout


def test_refused_credentials_are_one_line(tmp_path):
    """A server that checks signatures (moto with IAM authentication on) refuses unknown keys."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    with running([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], tmp_path / "moto.log", env=env) as server:
        wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), 60, "moto_server", server)
        done = _cli(_env(endpoint), "query", "--corpus", "s3://any-bucket/demo", "SELECT 1")
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith("error: s3://any-bucket/demo: access refused") and "AWS_ACCESS_KEY_ID" in line, (
        line
    )
    assert SECRET not in done.stderr


# --- raw root in object storage -----------------------------------------------------------------------------

RAW_URL = "s3://medpclip-raw/demo"


@pytest.fixture(scope="module")
def raw_s3(s3):
    """The demo raw tree the local corpus was built from, uploaded to a bucket of its own."""
    upload = (
        "import s3fs, sys; fs = s3fs.S3FileSystem(); fs.mkdir('medpclip-raw'); "
        "fs.put(sys.argv[1] + '/', 'medpclip-raw/demo', recursive=True)"
    )
    subprocess.run([sys.executable, "-c", upload, str(s3["base"] / "raw")], check=True, env=s3["env"])
    return s3["env"] | {"MEDPCLIP_CACHE": str(s3["base"] / "cache")}


def test_build_from_raw_on_s3_holds_the_bytes_of_a_posix_build(s3, raw_s3, tmp_path):
    done = _cli(raw_s3, *BUILD, "--raw-root", RAW_URL, "--out", str(tmp_path / "corpus"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert tree_hashes(tmp_path / "corpus") == tree_hashes(s3["local"])
    # Raw and corpus both in the bucket, on a skeleton of heads and holes (only tables and text whole).
    sparse = raw_s3 | {"MEDPCLIP_CACHE": str(tmp_path / "cache"), "MEDPCLIP_RAW_WHOLE_BYTES": "0"}
    done = _cli(sparse, *BUILD, "--raw-root", RAW_URL, "--out", "s3://medpclip-corpora/from-raw")
    assert done.returncode == 0, done.stderr[-2000:]
    assert bucket_hashes(s3["env"], "medpclip-corpora/from-raw") == tree_hashes(s3["local"])
    again = _cli(sparse, *BUILD, "--raw-root", RAW_URL, "--out", "s3://medpclip-corpora/from-raw")
    assert again.returncode == 0 and "0 units built" in again.stdout and "4 kept" in again.stdout


@pytest.mark.parametrize(
    ("point", "out"),
    [("raw.fetch:5", "s3://medpclip-corpora/raw-killed"), ("shard.sample:3", "local")],
)
def test_raw_on_s3_killed_mid_unit_resumes_to_the_same_bytes(s3, raw_s3, tmp_path, point, out):
    out = str(tmp_path / "corpus") if out == "local" else out
    env = raw_s3 | {
        "MEDPCLIP_FAULT": point,  # a worker kills the driver, then itself, in the middle of a unit
        "MEDPCLIP_FAULT_TARGET": "driver",
        "MEDPCLIP_FAULT_ONCE": str(tmp_path / "fired"),
    }
    killed = _cli(env, *BUILD, "--raw-root", RAW_URL, "--out", out)
    assert killed.returncode != 0 and (tmp_path / "fired").exists()
    resumed = _cli(raw_s3, *BUILD, "--raw-root", RAW_URL, "--out", out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = (
        bucket_hashes(s3["env"], out.removeprefix("s3://"))
        if out.startswith("s3://")
        else tree_hashes(Path(out))
    )
    assert got == tree_hashes(s3["local"])
    # the killed worker's staging folder went with the next unit staged on the node (it names a dead pid)
    staged = [p for p in Path(tempfile.gettempdir()).glob("medpclip-raw-*-*") if not _alive(p)]
    assert staged == []


def _alive(staging: Path) -> bool:
    try:
        os.kill(int(staging.name.split("-")[2]), 0)
    except ProcessLookupError:
        return False
    return True


def test_bad_raw_locations_are_one_line(s3, raw_s3, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    never = str(tmp_path / "never")
    cases = [
        (raw_s3, "s3://no-such-raw-bucket/demo", never, "raw root s3://no-such-raw-bucket/demo: nothing there"),
        (raw_s3, "s3://medpclip-raw/not-uploaded", never, "raw root s3://medpclip-raw/not-uploaded: nothing there"),
        (raw_s3 | {"AWS_ENDPOINT_URL": closed}, RAW_URL, never, f"cannot reach the object store at {closed}"),
        # the output's bucket is checked first; an unreachable endpoint is not 'no bucket'
        (raw_s3 | {"AWS_ENDPOINT_URL": closed}, RAW_URL, "s3://medpclip-corpora/never", f"cannot reach the object store at {closed}"),
    ]  # fmt: skip
    for env, url, out, message in cases:
        done = _cli(env, *BUILD, "--raw-root", url, "--out", out)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
        assert SECRET not in done.stderr + done.stdout
    assert not (tmp_path / "never").exists()  # nothing written before the raw root was known to be readable
    assert "never/" not in json.dumps(bucket_hashes(s3["env"], "medpclip-corpora"))


@pytest.fixture
def in_process_s3(s3, tmp_path, monkeypatch):
    """This process talking to the moto server (library-level tests), its skeleton cache under tmp_path."""
    import s3fs

    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    for k, v in s3["env"].items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("MEDPCLIP_CACHE", str(tmp_path / "cache"))
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3fs.S3FileSystem()
    s3fs.S3FileSystem.clear_instance_cache()


def test_an_object_gone_since_planning_is_a_missing_file_reject(raw_s3, in_process_s3, tmp_path):
    import pyarrow.parquet as pq

    from medpclip.corpus.build import prepare_build
    from medpclip.corpus.unit import run_unit
    from medpclip.specs import resolve_specs

    fs = in_process_s3
    fs.copy("medpclip-raw/demo/Kvasir-SEG", "medpclip-raw/vanish/Kvasir-SEG", recursive=True)
    plan = prepare_build(
        resolve_specs("demo_polyp"), "s3://medpclip-raw/vanish", tmp_path / "out", max_side=64
    )
    (unit,) = plan.units
    assert unit.raw_root == "s3://medpclip-raw/vanish"
    gone = unit.items[1].files[0].path  # an image: 'Kvasir-SEG/images/….jpg'
    fs.rm(f"medpclip-raw/vanish/{gone}")
    stats = run_unit(unit)
    assert stats["n_items"] == 12 and stats["n_items_rejected"] == 1 and stats["n_samples"] == 11
    rejects = pq.read_table(tmp_path / "out/manifests/rejects/demo_polyp/00000.parquet").to_pylist()
    assert [(r["reason"], r["path"], r["detail"]) for r in rejects] == [
        ("missing_file", gone, f"{gone}: No such file or directory")
    ]


def test_the_skeleton_holds_sizes_heads_and_dicom_headers_and_refreshes(in_process_s3, tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    from medpclip.corpus import raw_staging

    fs = in_process_s3
    fs.mkdir("medpclip-skeleton")
    big = bytes(range(256)) * (3 * 2**20 // 256)  # 3 MiB, not a table: head + hole
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.add_new(0x00091010, "LO", "medpclip test")  # a private block, 300 KiB, before the pixels
    ds.add_new(0x00091011, "OB", bytes(300 * 1024))
    ds.PixelData = ds.PixelData * 64  # 2 MiB of pixels, never fetched (NumberOfFrames stays 1)
    dicom_file = tmp_path / "long-header.dcm"
    ds.save_as(dicom_file)
    rows = "\n".join(f"case{i},{i}" for i in range(80_000)).encode()  # a 1.1 MiB table: whole
    fs.pipe({"medpclip-skeleton/raw/DS/big.bin": big, "medpclip-skeleton/raw/DS/table.csv": rows,
             "medpclip-skeleton/raw/DS/small.png": b"png" * 10,
             "medpclip-skeleton/raw/DS/dicom/1.dcm": dicom_file.read_bytes(),
             "medpclip-skeleton/raw/Other/x.txt": b"not listed"})  # fmt: skip
    url = "s3://medpclip-skeleton/raw"
    first = raw_staging.materialise(url, ["DS", "Missing"])
    root = first.root
    assert (first.objects, first.fetched, first.removed) == (4, 4, 0)
    assert root == tmp_path / "cache" / "raw-skeleton" / raw_staging.skeleton_dir(url).name
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "DS/big.bin", "DS/dicom/1.dcm", "DS/small.png", "DS/table.csv",
    ]  # fmt: skip
    assert (root / "DS/table.csv").read_bytes() == rows
    assert (root / "DS/small.png").read_bytes() == b"png" * 10
    local = (root / "DS/big.bin").read_bytes()
    assert len(local) == len(big) and local[: 64 * 1024] == big[: 64 * 1024]
    assert not local[64 * 1024 :].strip(b"\0")
    assert (root / "DS/big.bin").stat().st_blocks * 512 < 2**20  # a hole, not 3 MiB of zeros on disk
    header = pydicom.dcmread(root / "DS/dicom/1.dcm", stop_before_pixels=True)
    assert header == pydicom.dcmread(dicom_file, stop_before_pixels=True)
    assert (root / "DS/dicom/1.dcm").stat().st_size == dicom_file.stat().st_size
    # Refresh: nothing changed → nothing fetched; a rewritten object (same size) fetched, a removed one removed.
    assert raw_staging.materialise(url, ["DS"]).fetched == 0
    fs.pipe("medpclip-skeleton/raw/DS/small.png", b"PNG" * 10)
    fs.rm("medpclip-skeleton/raw/DS/dicom/1.dcm")
    again = raw_staging.materialise(url, ["DS"])
    assert (again.objects, again.fetched, again.removed) == (3, 1, 1)
    assert (root / "DS/small.png").read_bytes() == b"PNG" * 10
    assert not (root / "DS/dicom").exists()  # no empty folder where the bucket has none
