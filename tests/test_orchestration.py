"""Orchestration with real servers on loopback: a Prefect server + `medpclip serve` + `prefect deployment run`,
a two-node Ray cluster + `ray job submit` (raw root and output on folders, or both in an S3 bucket of a moto
server, the two nodes started in different working directories and sharing no disk), and SIGKILLed builds that
resume to identical bytes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from corpus_utils import DEMO_SPECS, bucket_hashes, tree_hashes
from procs import free_port, http_ok, running, stop, wait_until

from medpclip.corpus.build import build_corpus
from medpclip.corpus.inspect import check_corpus
from medpclip.specs import resolve_specs

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS", "MEDPCLIP_"))}
    env.update(
        RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    env.update(extra)
    return env


# --- Prefect ----------------------------------------------------------------------------------------------


def test_prefect_deployment_run_builds_the_demo(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api)
    work = tmp_path / "work"
    work.mkdir()
    server_cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with running(server_cmd, tmp_path / "server.log", env=env) as server:
        wait_until(lambda: http_ok(f"{api}/health"), 120, "prefect server", server)
        with running([str(BIN / "medpclip"), "serve"], tmp_path / "serve.log", env=env, cwd=work) as serve:

            def deployed() -> bool:
                ls = subprocess.run(
                    [str(BIN / "prefect"), "deployment", "ls"], env=env, capture_output=True, text=True
                )
                return "build-corpus/demo" in ls.stdout and "build-corpus/default" in ls.stdout

            wait_until(deployed, 120, "served deployments", serve)
            run = subprocess.run(
                [str(BIN / "prefect"), "deployment", "run", "build-corpus/demo", "--watch"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
            assert "Completed" in run.stdout
            # The artifacts the UI shows: the totals table and the summary, read back from the server's API.
            req = urllib.request.Request(
                f"{api}/artifacts/filter",
                data=b"{}",
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                artifacts = {a["key"]: a for a in json.load(r)}
            assert {"build-corpus-totals", "build-corpus-summary", "build-corpus-progress"} <= set(artifacts)
            rows = json.loads(artifacts["build-corpus-totals"]["data"])
            assert {row["dataset"]: row["samples"] for row in rows} == {
                "demo_ct": 200,
                "demo_polyp": 12,
                "demo_cxr": 19,
            }
            assert artifacts["build-corpus-progress"]["data"] == 100.0
    corpus = work / "demo" / "corpus"
    report = check_corpus(corpus)
    assert report.problems == [] and report.samples == 231  # 200 CT slices + 12 polyp + 19 CXR images


# --- Ray cluster ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _output(kind: str, tmp_path: Path, demo_raw: Path):
    """(the build's --raw-root, its --out, extra environment, a check of the result) for folders, or for raw
    files and corpus in an S3 bucket."""
    if kind == "posix":
        out = tmp_path / "corpus"
        yield str(demo_raw), str(out), {}, lambda env: check_corpus(out).problems
        return
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "two-nodes",
        "AWS_SECRET_ACCESS_KEY": "two-nodes",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "MEDPCLIP_CACHE": str(tmp_path / "driver-cache"),  # the job driver's raw skeleton
    }
    with running(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], tmp_path / "moto.log"
    ) as moto:
        wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), 60, "moto_server", moto)
        mk = (
            "import s3fs, sys; fs = s3fs.S3FileSystem(); fs.mkdir('two-nodes'); "
            "fs.put(sys.argv[1] + '/', 'two-nodes/raw', recursive=True)"
        )
        subprocess.run([sys.executable, "-c", mk, str(demo_raw)], env=_env(**aws), check=True)

        def problems(env) -> list[str]:
            done = subprocess.run([str(BIN / "medpclip"), "validate", "--corpus", "s3://two-nodes/corpus"],
                                  env=env, capture_output=True, text=True)  # fmt: skip
            return [] if done.returncode == 0 else [done.stdout + done.stderr]

        yield "s3://two-nodes/raw", "s3://two-nodes/corpus", aws, problems


@pytest.mark.parametrize("storage", ["posix", "s3"])
def test_ray_job_on_a_two_node_cluster(tmp_path, demo_raw, demo_corpus, storage):
    with _output(storage, tmp_path, demo_raw) as (raw, out, aws, problems):
        _two_node_build(tmp_path, raw, out, _env(**aws))
        assert problems(_env(**aws)) == []
        if storage == "s3":
            # planned on the job driver's skeleton, units staged on both nodes: the bytes of a local build
            assert (tmp_path / "driver-cache" / "raw-skeleton").is_dir()
            assert bucket_hashes(_env(**aws), "two-nodes/corpus") == tree_hashes(demo_corpus.out)


def _two_node_build(tmp_path: Path, raw: str, out: str, env: dict[str, str]) -> None:
    gcs, dash = free_port(), free_port()

    def agent_ports() -> list[str]:
        # Every Ray on a machine starts a dashboard agent on the same default ports; the test session's own
        # local Ray already holds them, so each node of this cluster gets free ones (else: "No available
        # agent to submit job").
        return ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port",
                str(free_port()), "--runtime-env-agent-port", str(free_port()), "--metrics-export-port",
                str(free_port())]  # fmt: skip

    head_cmd = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(gcs), "--num-cpus", "1",
                "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--disable-usage-stats",
                *agent_ports()]  # fmt: skip
    node_cmd = [str(BIN / "ray"), "start", "--block", "--address", f"127.0.0.1:{gcs}", "--num-cpus", "1",
                *agent_ports()]  # fmt: skip
    # the nodes share no working directory (and, with an S3 output, no output disk)
    (tmp_path / "head-cwd").mkdir()
    (tmp_path / "node-cwd").mkdir()
    with running(head_cmd, tmp_path / "head.log", env=env, cwd=tmp_path / "head-cwd") as head:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{dash}/api/version"), 120, "ray head", head)
        with running(node_cmd, tmp_path / "node.log", env=env, cwd=tmp_path / "node-cwd") as node:

            def two_nodes() -> bool:
                status = subprocess.run(
                    [str(BIN / "ray"), "status", "--address", f"127.0.0.1:{gcs}"],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                return status.stdout.count("node_") >= 2

            wait_until(two_nodes, 120, "second ray node", node)
            attempts: list[subprocess.CompletedProcess] = []

            def submitted() -> bool:
                """Submit the build; the head answers 'No available agent … try again later' until its job
                agent has registered, which is the readiness condition to wait for (each try its own id)."""
                attempts.append(
                    subprocess.run(
                        [
                            str(BIN / "ray"),
                            "job",
                            "submit",
                            "--address",
                            f"http://127.0.0.1:{dash}",
                            "--submission-id",
                            f"medpclip-{tmp_path.name}-{len(attempts)}",
                            "--",
                            sys.executable,
                            "-m",
                            "medpclip.jobs.build",
                            "--spec",
                            ",".join(DEMO_SPECS),
                            "--raw-root",
                            raw,
                            "--out",
                            str(out),
                            "--max-side",
                            "256",
                        ],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=600,
                    )  # fmt: skip
                )
                return "No available agent" not in attempts[-1].stderr + attempts[-1].stdout

            wait_until(submitted, 180, "ray job agent", head)
            job = attempts[-1]
            assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
            assert "units built on 2 Ray node(s)" in job.stdout  # both nodes did work


# --- crashes and resume -----------------------------------------------------------------------------------

# (fault point, n-th time reached, kill the driver from a worker?) — the moments a build can die.
KILL_POINTS = [
    ("shard.sample", 3, True),  # a tar half-written under its temporary name
    ("shard.close", 1, True),  # a complete tar not yet renamed
    ("manifest.write", 2, True),  # a Parquet manifest written, not renamed
    ("unit.marker", 2, True),  # shards and manifests final, marker missing
    ("unit.done", 1, True),  # between units
    ("finish", 1, False),  # all units done, nothing of finish written
    ("finish.indexes", 1, False),  # sizes.json written, build.json not
]


def _build_cmd(raw: Path, out: Path) -> list[str]:
    """The demo build as users run it (a subprocess with its own local Ray), same parameters as demo_corpus."""
    return [
        str(BIN / "medpclip"),
        "build",
        "--spec",
        ",".join(DEMO_SPECS),
        "--raw-root",
        str(raw),
        "--out",
        str(out),
        "--max-side",
        "256",
        "--num-cpus",
        "2",
    ]


def _assert_no_partial_final_files(out: Path) -> None:
    for p in out.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue  # temporaries are dot-files; the next build removes them
        if p.suffix == ".tar":
            with tarfile.open(p) as t:
                t.getmembers()
        elif p.suffix == ".parquet":
            pq.read_table(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())


@pytest.mark.parametrize("point, nth, from_worker", KILL_POINTS, ids=[k[0] for k in KILL_POINTS])
def test_sigkill_then_resume_gives_identical_bytes(point, nth, from_worker, demo_corpus, demo_raw, tmp_path):
    out = tmp_path / "corpus"
    env = _env(MEDPCLIP_FAULT=f"{point}:{nth}", MEDPCLIP_FAULT_ONCE=str(tmp_path / "fired"))
    if from_worker:
        env["MEDPCLIP_FAULT_TARGET"] = "driver"
    proc = subprocess.Popen(
        _build_cmd(demo_raw, out),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=600)
    finally:
        stop(proc, grace=5)  # the driver's local Ray: whatever survived the kill, by PID
    fired = (tmp_path / "fired").exists()
    assert proc.returncode == -9, f"exit {proc.returncode}, fault fired: {fired}\n{log.decode()[-3000:]}"
    assert fired
    _assert_no_partial_final_files(out)
    resumed = build_corpus(resolve_specs(DEMO_SPECS), demo_raw, out, max_side=256)
    assert tree_hashes(out) == tree_hashes(demo_corpus.out)
    assert resumed.units_skipped + resumed.units_run == 5


def test_worker_killed_mid_unit_is_retried_by_ray(demo_corpus, demo_raw, tmp_path):
    out = tmp_path / "corpus"
    proc = subprocess.run(
        _build_cmd(demo_raw, out),
        env=_env(MEDPCLIP_FAULT="shard.sample:2", MEDPCLIP_FAULT_ONCE=str(tmp_path / "fired")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "fired").exists()  # a worker really died mid-unit
    assert tree_hashes(out) == tree_hashes(demo_corpus.out)


def test_spec_change_rebuilds_only_that_dataset_and_force_rebuilds_all(demo_corpus, demo_raw, tmp_path):
    out = tmp_path / "corpus"
    shutil.copytree(demo_corpus.out, out)
    spec_file = tmp_path / "demo_polyp.yaml"
    text = (Path(__file__).parent.parent / "dataset_specs" / "demo_polyp.yaml").read_text()
    spec_file.write_text(text.replace("min_pixels: 16", "min_pixels: 400"))
    specs = resolve_specs(["demo_ct", str(spec_file), "demo_cxr"])
    r = build_corpus(specs, demo_raw, out, max_side=256)
    assert r.units_run == 1 and r.units_skipped == 4  # demo_polyp is one unit
    changed = {k for k, v in tree_hashes(out).items() if tree_hashes(demo_corpus.out).get(k) != v}
    assert changed and all(
        "demo_polyp" in k or k in {"build.json", "sizes.json"} or k.startswith("wids-") for k in changed
    )
    r = build_corpus(specs, demo_raw, out, max_side=256, force=True)
    assert r.units_run == 5 and r.units_skipped == 0
