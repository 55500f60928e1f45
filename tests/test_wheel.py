"""The built wheel works outside the repository (issue 17): specs, views.sql, the KB, the report phrases and the
JSON schema ship inside the package and are found with importlib.resources.

The wheel is built from this checkout (``pip wheel --no-deps --no-build-isolation``: no network) and installed
with ``--no-deps`` into a fresh venv. Its dependencies come from the project's venv through a ``.pth`` path
line (a path line only: the project venv's own ``.pth`` hooks, among them the editable finder that maps
``medpclip`` to this checkout, are not run), so ``import medpclip`` in the fresh venv can only be the wheel's
copy; the test checks that before anything else. Every command runs from an empty temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w",
         str(base / "dist")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = (base / "dist").glob("medpclip-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    work = base / "cwd"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MEDPCLIP_CACHE"] = str(base / "cache")
    return {"wheel": wheel, "venv": venv, "site": Path(site), "cwd": work, "env": env}


def _run(fresh, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(fresh["venv"] / "bin" / "medpclip"), *args],
        cwd=fresh["cwd"], env=fresh["env"], capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_wheel_holds_the_package_data(fresh):
    names = set(zipfile.ZipFile(fresh["wheel"]).namelist())
    shipped_specs = {p.name for p in (ROOT / "dataset_specs").glob("*.yaml")}
    assert {n.rsplit("/", 1)[-1] for n in names if n.startswith("medpclip/dataset_specs/")} == shipped_specs
    for member in (
        "medpclip/sql/views.sql",
        "medpclip/text/data/concepts.jsonl",
        "medpclip/text/data/report_phrases.yaml",
        "medpclip/schemas/sample.schema.json",
    ):
        assert member in names
    where = subprocess.run(
        [str(fresh["venv"] / "bin" / "python"), "-c", "import medpclip; print(medpclip.__file__)"],
        cwd=fresh["cwd"], env=fresh["env"], capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(fresh["site"]), where  # the wheel's copy, not this checkout


def test_installed_wheel_runs_the_pipeline_from_anywhere(fresh):
    listed = _run(fresh, "specs", "list", "--names")
    assert listed.returncode == 0, listed.stderr
    assert "demo_ct" in listed.stdout.split(",") and "totalsegmentator" in listed.stdout.split(",")

    assert _run(fresh, "demo-data", "raw").returncode == 0
    built = _run(fresh, "build", "--spec", "demo_ct", "--raw-root", "raw", "--out", "corpus", "--max-side", "128",
                 "--num-cpus", "1")  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    checked = _run(fresh, "validate", "--corpus", "corpus")
    assert checked.returncode == 0, checked.stderr[-2000:]

    q = _run(fresh, "query", "--corpus", "corpus", "--format", "json",
             "SELECT count(*) AS n, count(DISTINCT dataset) AS d FROM samples")  # fmt: skip
    assert q.returncode == 0, q.stderr
    (row,) = json.loads(q.stdout)
    assert row["d"] == 1 and row["n"] > 0
    concepts = _run(fresh, "query", "--corpus", "corpus", "--format", "json",
                    "SELECT count(*) AS n FROM concepts WHERE n_regions > 0")  # fmt: skip
    assert json.loads(concepts.stdout)[0]["n"] > 0  # the KB view, from the package's concepts.jsonl

    linked = _run(fresh, "link", "--format", "json", "Low lung volumes. Possible small left effusion.")
    assert linked.returncode == 0, linked.stderr
    found = [(c["name"], c["assertion"]) for c in json.loads(linked.stdout)["concepts"]]
    assert found == [("Hypoinflation", "positive"), ("Pleural effusion", "uncertain")]  # report phrases

    trained = _run(fresh, "train", "--corpus", "corpus", "--out", "run", "--model", "tiny", "--steps", "2",
                   "--batch-size", "4", "--workers", "1")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert list((fresh["cwd"] / "run").rglob("*.pt")), "no checkpoint written"
