"""The console script as users run it: `medpclip demo-data` then `medpclip build` in a subprocess (its own
local Ray), and the `specs` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medpclip.cli import app

MEDPCLIP = str(Path(sys.executable).parent / "medpclip")
runner = CliRunner()


@pytest.mark.slow
def test_console_script_builds_the_demo(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    raw, out = tmp_path / "raw", tmp_path / "corpus"
    subprocess.run([MEDPCLIP, "demo-data", str(raw)], check=True, env=env, capture_output=True, timeout=300)
    proc = subprocess.run(
        [
            MEDPCLIP,
            "build",
            "--spec",
            "demo_ct,demo_polyp,demo_cxr",
            "--raw-root",
            str(raw),
            "--out",
            str(out),
            "--max-side",
            "128",
            "--num-cpus",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    build = json.loads((out / "build.json").read_text())
    assert "medpclip corpus" in proc.stdout and f"corpus: {out}" in proc.stdout
    assert "│ total      │" in proc.stdout and str(build["totals"]["samples"]) in proc.stdout
    # 10 CT cases × 20 labelled slices, 12 polyp images, 19 radiographs (DESIGN demo truth).
    assert {d["name"]: d["samples"] for d in build["datasets"]} == {
        "demo_ct": 200,
        "demo_polyp": 12,
        "demo_cxr": 19,
    }
    assert (
        max(
            json.loads(
                subprocess.run(
                    [
                        MEDPCLIP,
                        "query",
                        "--corpus",
                        str(out),
                        "--format",
                        "json",
                        "SELECT max(greatest(width, height)) AS m FROM samples",
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )[0].values()
        )
        <= 128
    )
    check = subprocess.run(
        [MEDPCLIP, "validate", "--corpus", str(out)], env=env, capture_output=True, text=True
    )
    assert check.returncode == 0 and "0 problems" in check.stdout


def test_specs_commands(tmp_path):
    res = runner.invoke(app, ["specs", "list"])
    assert res.exit_code == 0 and all(n in res.stdout for n in ("demo_ct", "demo_polyp", "demo_cxr"))
    res = runner.invoke(app, ["specs", "show", "demo_ct"])
    assert res.exit_code == 0 and "name: demo_ct" in res.stdout and "min_pixels: 16" in res.stdout
    assert runner.invoke(app, ["specs", "validate"]).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nroot: x\n")
    res = runner.invoke(app, ["specs", "validate", str(bad)])
    assert res.exit_code == 1 and f"{bad}: field 'title': Field required (+" in res.output


def test_bad_arguments_are_one_line(tmp_path):
    res = runner.invoke(
        app, ["build", "--spec", "demo_ct", "--raw-root", str(tmp_path / "nope"), "--out", str(tmp_path)]
    )
    assert res.exit_code == 1 and "is not a directory" in res.output and res.output.count("\n") == 1
    res = runner.invoke(app, ["query", "--corpus", str(tmp_path), "SELECT 1"])
    assert res.exit_code == 2 and "is not a corpus" in res.output
    res = runner.invoke(app, ["query", "--corpus", str(tmp_path), "--format", "xml", "SELECT 1"])
    assert res.exit_code == 2 and "--format must be" in res.output
    # a training value out of range: refused by TrainConfig (one model, every entry point) before Ray starts
    res = runner.invoke(
        app, ["train", "--corpus", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "0"]
    )
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "--steps: Input should be greater than or equal to 1 (got 0)" in res.output


@pytest.mark.parametrize("command", ["build", "train"])
def test_out_naming_a_file_is_one_line_and_exit_2(tmp_path, command):
    somefile = tmp_path / "somefile.txt"
    somefile.write_text("x")
    args = {
        "build": ["build", "--spec", "demo_ct", "--raw-root", str(tmp_path)],
        "train": ["train", "--corpus", str(tmp_path)],
    }[command]
    for out, says in ((somefile, "is a file"), (somefile / "sub", f"is under {somefile}, a file")):
        res = runner.invoke(app, [*args, "--out", str(out)])
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output
        assert res.output.count("\n") == 1, res.output
        assert f"--out {out} {says}; give a directory (it is created)" in res.output
    res = runner.invoke(app, ["demo-data", str(somefile)])
    assert res.exit_code == 2 and f"DIRECTORY {somefile} is a file" in res.output
