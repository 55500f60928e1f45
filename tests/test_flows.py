"""The Prefect flows ``pretrain``, ``evaluate`` and ``medpclip-pipeline`` run in-process against a real Prefect
server on loopback (one for the module, stopped by PID), on the session's Ray and a copy of the demo corpus.

What each flow leaves behind is checked where users look for it: the training run directory and its
checkpoints, the metrics Parquet files through DuckDB's ``metrics`` view, and the flow runs, task runs and
artifacts as the server recorded them (read back through its API). The pipeline re-runs the whole loop on
copies of what the first two tests produced, so it also shows that a re-run resumes: every corpus unit is
kept and training continues from the last checkpoint of the same run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from corpus_utils import DEMO_SPECS
from procs import free_port, http_ok, running, wait_until

from medpclip.evaluate import COLUMNS, TASKS
from medpclip.train.loop import RUN_NAME, verified_step
from medpclip.warehouse import query

slow = pytest.mark.slow  # a Prefect server, Ray Train and the demo corpus (the prefect.yaml check is fast)
BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parent.parent
# The smallest run that still exercises everything: the tiny model, one Ray Train worker, two checkpoints.
STEPS, EVERY, MORE = 4, 2, 2  # the pipeline resumes the same run for MORE steps
TRAIN = {"model": "tiny", "batch_size": 8, "lr": 1e-3, "checkpoint_every": EVERY}
DATASETS = {"demo_ct", "demo_cxr", "demo_polyp"}


def _load(entrypoint: str):
    """A flow as a deployment loads it (prefect.yaml entrypoints are relative to the project)."""
    from prefect.flows import load_flow_from_entrypoint

    path, _, name = entrypoint.partition(":")
    return load_flow_from_entrypoint(f"{PROJECT / path}:{name}")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A real ``prefect server start`` on a free loopback port, its own PREFECT_HOME; flows run in this
    process report to it (temporary settings, so nothing leaks into other modules)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    root = tmp_path_factory.mktemp("prefect")
    api = f"http://127.0.0.1:{free_port()}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS", "MEDPCLIP_"))}
    env.update(PREFECT_HOME=str(root / "home"), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    port = api.rsplit(":", 1)[1].split("/")[0]
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port]
    with running(cmd, root / "server.log", env=env) as server:
        wait_until(lambda: http_ok(f"{api}/health"), 120, "prefect server", server)
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_HOME: root / "client-home"}):
            try:
                yield api
            finally:
                # logs and events are sent by background workers: deliver them before the server goes
                APILogWorker.drain_all(timeout=20)
                EventsWorker.drain_all(timeout=20)


# The tasks each flow runs (flows/*.py); the pipeline runs only subflows.
FLOW_TASKS = {
    "pretrain": ("train",),
    "evaluate": ("evaluate-checkpoint",),
    "build-corpus": ("validate-specs", "plan", "run-dataset", "settle-splits", "finish", "warehouse-check",
                     "qa-summary"),
    "medpclip-pipeline": (),
}  # fmt: skip


def _server_view(flow_run_id) -> dict:
    """The flow run, its task runs (by task name) and its artifacts (by key) as the server recorded them.

    Flow run states and artifacts are written through the API before the flow call returns; task run states
    reach the server as events, recorded asynchronously: wait until each of the flow's tasks has a run in a
    final state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        flow = client.read_flow(run.flow_id).name
        tasks, task_runs = FLOW_TASKS[flow], {}

        def tasks_recorded() -> bool:
            found = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))
            )
            task_runs.clear()
            task_runs.update({t.name.rsplit("-", 1)[0]: t for t in found})
            return all(n in task_runs and task_runs[n].state and task_runs[n].state.is_final() for n in tasks)

        wait_until(tasks_recorded, 60, f"task runs {tasks} of flow run {flow_run_id}")
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        return {
            "run": run,
            "flow": flow,
            "tasks": task_runs,
            "artifacts": {a.key: a for a in artifacts},
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corpus(demo_corpus, tmp_path_factory) -> Path:
    """A private copy of the demo corpus: evaluation writes metrics/ into the corpus it measured."""
    out = tmp_path_factory.mktemp("flows") / "corpus"
    shutil.copytree(demo_corpus.out, out)
    return out


@pytest.fixture(scope="module")
def pretrained(prefect_api, corpus, ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "train"
    flow = _load("flows/pretrain.py:pretrain_flow")
    state = flow(corpus=str(corpus), out=str(out), steps=STEPS, workers=1, loader_workers=0, **TRAIN,
                 return_state=True)  # fmt: skip
    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    return {"out": out, "summary": state.result(), "server": _server_view(run_id)}


@pytest.fixture(scope="module")
def evaluated(pretrained, corpus):
    flow = _load("flows/evaluate.py:evaluate_flow")
    state = flow(corpus=str(corpus), checkpoint=str(pretrained["out"]), split="test", return_state=True)
    assert state.is_completed(), state.message
    return {"summary": state.result(), "server": _server_view(state.state_details.flow_run_id)}


# --- pretrain ----------------------------------------------------------------------------------------------


@slow
def test_pretrain_flow_trains_and_records_the_run(pretrained, corpus):
    out, summary = pretrained["out"], pretrained["summary"]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["step"] == STEPS
    assert run["config"]["model"] == "tiny" and run["config"]["steps"] == STEPS
    assert run["config"]["corpus"] == str(corpus.resolve())
    # a checkpoint every EVERY steps, the last one at STEPS; each complete: files match their meta.json
    names = sorted(d.name for d in (out / RUN_NAME).glob("checkpoint-*"))
    assert names == [f"checkpoint-{s:07d}" for s in range(EVERY, STEPS + 1, EVERY)]
    last = out / RUN_NAME / names[-1]
    meta = json.loads((last / "meta.json").read_text())
    assert meta["step"] == STEPS and meta["run_id"] == run["run_id"] and meta["model"]["name"] == "tiny"
    assert set(meta["files"]) == {"model.pt", "train_state.pt"}
    for name, want in meta["files"].items():
        assert (last / name).stat().st_size == want["bytes"] and _sha256(last / name) == want["sha256"]
    assert verified_step(last) == STEPS and run["checkpoint"] == str(last)
    # what the flow returns (and a pipeline passes on)
    assert summary["run_id"] == run["run_id"] and summary["step"] == STEPS
    assert summary["checkpoint"] == str(last) and summary["out"] == str(out)
    m = summary["metrics"]
    assert math.isfinite(m["loss"]) and m["loss"] > 0 and m["samples_per_s"] > 0
    assert 0 <= m["data_wait_frac"] <= 1 and m["gpu_mem_peak_gb"] == 0.0  # CPU run


@slow
def test_pretrain_flow_run_as_the_server_recorded_it(pretrained):
    server, summary = pretrained["server"], pretrained["summary"]
    run = server["run"]
    assert server["flow"] == "pretrain" and run.state.is_completed()
    assert run.parameters["steps"] == STEPS and run.parameters["model"] == "tiny"
    train = server["tasks"]["train"]
    assert train.state.is_completed() and train.run_count == 1  # no retry was needed
    table = server["artifacts"]["pretrain-summary"]
    assert table.type == "table" and summary["checkpoint"] in table.description
    rows = json.loads(table.data)
    assert rows == [{"run_id": summary["run_id"], "step": STEPS, **summary["metrics"]}]


# --- evaluate ----------------------------------------------------------------------------------------------


@slow
def test_evaluate_flow_writes_the_metrics_view(evaluated, pretrained, corpus):
    summary, run_id = evaluated["summary"], pretrained["summary"]["run_id"]
    assert summary["run_id"] == run_id and summary["step"] == STEPS
    assert summary["checkpoint"] == pretrained["summary"]["checkpoint"]  # the latest of the out directory
    path = Path(summary["path"])
    assert path == corpus.resolve() / "metrics" / f"{run_id}-{STEPS:07d}-test.parquet" and path.is_file()
    columns, rows = query(corpus, "SELECT * FROM metrics ORDER BY task, dataset, metric")
    assert tuple(columns) == COLUMNS
    got = [dict(zip(columns, r, strict=True)) for r in rows]
    assert {r["task"] for r in got} == set(TASKS) and {r["dataset"] for r in got} == DATASETS
    assert {(r["run_id"], r["split"], r["checkpoint"]) for r in got} == {
        (run_id, "test", summary["checkpoint"])
    }
    assert all(0 <= r["value"] <= 1 and 0 <= r["chance"] <= 1 and r["n"] > 0 for r in got)
    # classification needs two classes or more: demo_polyp (polyps only) has retrieval rows alone
    by_task = {t: {r["dataset"] for r in got if r["task"] == t} for t in TASKS}
    assert by_task == {t: DATASETS if t.startswith("retrieval") else DATASETS - {"demo_polyp"} for t in TASKS}
    metrics = {(r["task"], r["dataset"]): set() for r in got}
    for r in got:
        metrics[r["task"], r["dataset"]].add(r["metric"])
    # the summary rows, and per category of the split (its own n) the same top-1 for each prompt kind
    _, present = query(
        corpus,
        "SELECT DISTINCT lower(category) FROM regions WHERE dataset = 'demo_ct' AND split = 'test'",
    )
    per_class = {f"{m}:{c}" for m in ("top1", "top1_box", "top1_point") for (c,) in present}
    assert metrics["region_cls", "demo_ct"] == {
        "top1", "balanced_acc", "top1_box", "top1_point", "top1_shuffled_prompts", *per_class
    }  # fmt: skip
    assert {r["region_mode"] for r in got} == {"medpclip"}
    assert all(m == {"r@1", "r@5", "r@10"} for (t, _), m in metrics.items() if t.startswith("retrieval"))
    # every held-out image and region of the split was measured: n as the corpus's own views count them
    n = {(r["task"], r["dataset"], r["metric"]): r["n"] for r in got}
    _, images = query(corpus, "SELECT dataset, count(*) FROM samples WHERE split = 'test' GROUP BY ALL")
    _, regions = query(corpus, "SELECT dataset, count(*) FROM regions WHERE split = 'test' GROUP BY ALL")
    assert {d: n["retrieval_i2t", d, "r@1"] for d in DATASETS} == dict(images)
    assert {d: n["region_cls", d, "top1"] for d in DATASETS - {"demo_polyp"}} == {
        d: c for d, c in regions if d != "demo_polyp"
    }
    by_class = sum(
        v for (t, d, m), v in n.items() if (t, d) == ("region_cls", "demo_ct") and m.startswith("top1:")
    )
    assert by_class == n["region_cls", "demo_ct", "top1"]
    # the flow returns exactly the rows it wrote
    key = ("task", "dataset", "metric")
    assert sorted(tuple(r[k] for k in key) for r in summary["rows"]) == [
        tuple(r[k] for k in key) for r in got
    ]


@slow
def test_evaluate_flow_run_and_its_metrics_artifact(evaluated):
    server, summary = evaluated["server"], evaluated["summary"]
    assert server["flow"] == "evaluate" and server["run"].state.is_completed()
    assert server["run"].parameters["split"] == "test"
    assert server["tasks"]["evaluate-checkpoint"].state.is_completed()
    table = server["artifacts"]["evaluate-metrics"]
    assert table.type == "table" and table.description == f"{summary['run_id']} step {STEPS} on test"
    fields = ("task", "dataset", "metric", "value", "chance", "n")
    assert json.loads(table.data) == [{k: r[k] for k in fields} for r in summary["rows"]]


# --- the whole loop ----------------------------------------------------------------------------------------


UNIT_FILE = re.compile(r"shards/\w+/\w+/[\w-]+\.tar|manifests/\w+/\w+/\d{5}\.(parquet|json)")


def _unit_files(corpus: Path) -> dict[str, tuple[int, str]]:
    """(mtime, sha256) of every file a corpus unit writes: its shards, its manifests (``NNNNN.parquet``) and
    its marker (``manifests/units/DATASET/NNNNN.json``); not the indexes and plan rejects a build redoes."""
    files = {p.relative_to(corpus).as_posix(): p for p in corpus.rglob("*") if p.is_file()}
    return {k: (p.stat().st_mtime_ns, _sha256(p)) for k, p in sorted(files.items()) if UNIT_FILE.fullmatch(k)}


@pytest.fixture(scope="module")
def pipelined(pretrained, demo_corpus, demo_raw, tmp_path_factory):
    """``medpclip-pipeline`` re-run over copies of what the tests above produced: the corpus as the session
    built it, the training run as the pretrain flow left it, MORE steps asked for."""
    root = tmp_path_factory.mktemp("pipeline")
    corpus, train_out = root / "corpus", root / "train"
    shutil.copytree(demo_corpus.out, corpus)
    shutil.copytree(pretrained["out"], train_out)
    units_before = _unit_files(corpus)
    flow = _load("flows/pipeline.py:pipeline_flow")
    state = flow(
        specs=",".join(DEMO_SPECS), raw_root=str(demo_raw), corpus=str(corpus), train_out=str(train_out),
        max_side=256, steps=STEPS + MORE, loader_workers=0, **TRAIN, return_state=True,
    )  # fmt: skip
    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
        )
    subflows = {}
    for child in children:
        view = _server_view(child.id)
        subflows[view["flow"]] = view
    return {
        "corpus": corpus,
        "units_before": units_before,
        "units_after": _unit_files(corpus),
        "train_out": train_out,
        "summary": state.result(),
        "server": _server_view(run_id),
        "subflows": subflows,
    }


@slow
def test_pipeline_resumes_the_corpus_and_the_run_then_evaluates(pipelined, pretrained, demo_corpus):
    summary, corpus, train_out = pipelined["summary"], pipelined["corpus"], pipelined["train_out"]
    assert summary["corpus"] == str(corpus.resolve())
    assert summary["totals"] == demo_corpus.build["totals"] and summary["totals"]["samples"] == 231
    # the corpus was already built: the build flow kept every unit (not one shard or manifest rewritten)
    before = pipelined["units_before"]
    assert {k.split("/")[1] for k in before if k.startswith("shards/")} == DATASETS
    assert sum(k.startswith("manifests/units/") for k in before) == 5  # one marker per unit, 5 units
    assert pipelined["units_after"] == before
    build = pipelined["subflows"]["build-corpus"]
    assert all(t.state.is_completed() for t in build["tasks"].values())
    datasets = json.loads(build["artifacts"]["build-corpus-totals"].data)
    assert {d["dataset"]: d["samples"] for d in datasets} == {
        "demo_ct": 200,
        "demo_polyp": 12,
        "demo_cxr": 19,
    }
    # training continued the same run from its last checkpoint
    run = json.loads((train_out / "run.json").read_text())
    first = pretrained["summary"]
    assert run["run_id"] == first["run_id"] and run["status"] == "finished" and run["step"] == STEPS + MORE
    assert run["metrics"]["resumed_from_step"] == STEPS
    training = summary["training"]
    assert training["run_id"] == first["run_id"] and training["step"] == STEPS + MORE
    assert training["checkpoint"] == str(train_out / RUN_NAME / f"checkpoint-{STEPS + MORE:07d}")
    assert verified_step(Path(training["checkpoint"])) == STEPS + MORE
    # evaluated on the corpus it built, with the checkpoint it trained
    assert summary["metrics"] == str(
        corpus.resolve() / "metrics" / f"{first['run_id']}-{STEPS + MORE:07d}-test.parquet"
    )
    _, rows = query(corpus, "SELECT DISTINCT checkpoint, split FROM metrics")
    assert rows == [(training["checkpoint"], "test")]
    region = summary["region_cls"]
    assert {r["dataset"] for r in region} == {"demo_ct", "demo_cxr"} and all(
        0 <= r["value"] <= 1 for r in region
    )
    assert all(r["checkpoint"] == training["checkpoint"] and r["split"] == "test" for r in region)


@slow
def test_pipeline_runs_its_stages_as_subflows_on_the_server(pipelined):
    server, subflows = pipelined["server"], pipelined["subflows"]
    assert server["flow"] == "medpclip-pipeline" and server["run"].state.is_completed()
    assert set(subflows) == {"build-corpus", "pretrain", "evaluate"}
    assert all(s["run"].state.is_completed() for s in subflows.values())
    # each stage's artifacts belong to its own flow run
    assert {"build-corpus-totals", "build-corpus-summary", "build-corpus-progress"} <= set(
        subflows["build-corpus"]["artifacts"]
    )
    assert set(subflows["pretrain"]["artifacts"]) == {"pretrain-summary"}
    assert set(subflows["evaluate"]["artifacts"]) == {"evaluate-metrics"}
    assert subflows["build-corpus"]["artifacts"]["build-corpus-progress"].data == 100.0
    # the pipeline hands its training parameters on (loader_workers is not one of the pretrain defaults)
    assert subflows["pretrain"]["run"].parameters["steps"] == STEPS + MORE
    assert subflows["pretrain"]["run"].parameters["loader_workers"] == 0


# --- prefect.yaml ------------------------------------------------------------------------------------------


def test_every_deployment_loads_and_its_parameters_validate():
    """The deployments `medpclip serve` and `prefect deploy` read: each entrypoint loads, the parameters it
    sets are the flow's and the demo ones are complete; the example in each default deployment's description
    (`prefect deployment run … -p NAME=VALUE …`) is a complete, valid set of parameters."""
    from medpclip.orchestration import load_deployments

    def cli_value(
        text: str,
    ):  # as `prefect deployment run -p` reads a value: JSON if it parses, else a string
        try:
            return json.loads(text)
        except ValueError:
            return text

    entries = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
    deployments = load_deployments(PROJECT)
    assert [(d.flow_name, d.name) for d in deployments] == [
        ("build-corpus", "demo"), ("build-corpus", "default"), ("pretrain", "default"),
        ("evaluate", "default"), ("medpclip-pipeline", "demo"), ("medpclip-pipeline", "default"),
    ]  # fmt: skip
    for entry, deployment in zip(entries, deployments, strict=True):
        flow = _load(entry["entrypoint"])
        assert deployment.flow_name == flow.name and deployment.parameters == (entry["parameters"] or {})
        assert set(entry["parameters"]) <= set(flow.parameters.properties), entry
        example = {k: cli_value(v) for k, v in re.findall(r"-p (\w+)=(\S+)", entry["description"])}
        given = entry["parameters"] if entry["name"] == "demo" else example
        assert given, entry  # a demo runs as it is; a default deployment documents how to run it
        validated = flow.validate_parameters(given)  # raises for a missing, unknown or ill-typed parameter
        assert set(flow.parameters.required) <= set(validated)
