"""One declared parameter set per entry family, reachable from every entry point with the same defaults.

- training: the fields of ``TrainConfig`` (less ``TrainConfig.EXEMPT``) ↔ ``medpclip train`` ↔ the
  ``pretrain`` flow ↔ the ``pipeline`` flow;
- evaluation: ``EVAL_OPTIONS`` of ``medpclip.evaluate.evaluate`` ↔ ``medpclip eval`` ↔ the ``evaluate`` flow
  ↔ the ``pipeline`` flow;
- build: ``BUILD_OPTIONS`` of ``medpclip.corpus.build.build_corpus`` ↔ ``medpclip build`` ↔ the
  ``build-corpus`` flow ↔ the ``pipeline`` flow.

Pure introspection: typer's click parameters and the flow functions' signatures (no Ray, no Prefect server).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import pytest
import typer

from medpclip.cli import app
from medpclip.corpus.build import BUILD_EXEMPT, BUILD_OPTIONS, build_corpus
from medpclip.evaluate import EVAL_EXEMPT, EVAL_OPTIONS, evaluate
from medpclip.train.loop import TrainConfig

FLOWS = Path(__file__).resolve().parents[1] / "flows"
REQUIRED = object()  # a parameter without a default

# The pipeline runs all three families in one signature: where two would collide, it renames.
PIPELINE_RENAMES = {
    "train": {"out": "train_out", "datasets": "train_datasets"},
    "eval": {"batch_size": "eval_batch_size", "seed": "eval_seed"},
    "build": {"out": "corpus"},
}


def _pipeline_module():
    name = "_medpclip_test_params_pipeline"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FLOWS / "pipeline.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _flow_params(flow) -> dict[str, object]:
    sig = inspect.signature(flow.fn)
    return {
        n: (REQUIRED if p.default is inspect.Parameter.empty else p.default)
        for n, p in sig.parameters.items()
    }


def _cli_params(command: str) -> dict[str, object]:
    group = typer.main.get_command(app)
    cmd = group.commands[command]
    return {p.name: (REQUIRED if p.required else p.default) for p in cmd.params}


def _signature_defaults(fn, names) -> dict[str, object]:
    sig = inspect.signature(fn)
    return {n: sig.parameters[n].default for n in names}


def _train_model() -> dict[str, object]:
    out = {}
    for name, f in TrainConfig.model_fields.items():
        if name in TrainConfig.EXEMPT:
            continue
        out[name] = REQUIRED if f.is_required() else f.get_default(call_default_factory=True)
    return out


def _entry_points(family: str) -> dict[str, dict[str, object]]:
    pipeline = _pipeline_module()
    command, flow = {
        "train": ("train", pipeline.pretrain_flow),
        "eval": ("eval", pipeline.evaluate_flow),
        "build": ("build", pipeline.build_corpus_flow),
    }[family]
    renames = PIPELINE_RENAMES[family]
    pipe = _flow_params(pipeline.pipeline_flow)
    return {
        f"medpclip {command}": _cli_params(command),
        f"flow {flow.name}": _flow_params(flow),
        "flow medpclip-pipeline": {
            n: pipe[renames.get(n, n)] for n in _MODELS[family]() if renames.get(n, n) in pipe
        },
    }


_MODELS = {
    "train": _train_model,
    "eval": lambda: _signature_defaults(evaluate, EVAL_OPTIONS),
    "build": lambda: _signature_defaults(build_corpus, BUILD_OPTIONS),
}


def _norm(value: object) -> object:
    return str(value) if isinstance(value, Path) else value  # --pretrained is a Path on the CLI, str in flows


def _problems(family: str) -> list[str]:
    model = _MODELS[family]()
    problems = []
    for where, params in _entry_points(family).items():
        for name, default in model.items():
            if name not in params:
                problems.append(f"{where}: no parameter for {family} field '{name}'")
            elif default is not REQUIRED and _norm(params[name]) != default:
                problems.append(
                    f"{where}: default of '{name}' is {params[name]!r}, the model's is {default!r}"
                )
    return problems


@pytest.mark.parametrize("family", ["train", "eval", "build"])
def test_every_parameter_is_reachable_from_every_entry_point_with_the_same_default(family):
    assert _problems(family) == []


def test_the_declared_sets_cover_the_library_signatures():
    """Every keyword parameter of evaluate/build_corpus is declared or exempt (a new one cannot slip by)."""
    for fn, declared, exempt, positional in (
        (evaluate, EVAL_OPTIONS, EVAL_EXEMPT, {"corpus", "checkpoint"}),
        (build_corpus, BUILD_OPTIONS, BUILD_EXEMPT, {"specs", "raw_root", "out"}),
    ):
        names = set(inspect.signature(fn).parameters) - positional
        assert names == set(declared) | set(exempt), fn.__name__
        assert not set(declared) & set(exempt)
    assert set(TrainConfig.EXEMPT) <= set(TrainConfig.model_fields)
    assert all(reason.strip() for reason in {**TrainConfig.EXEMPT, **EVAL_EXEMPT, **BUILD_EXEMPT}.values())


def test_the_check_catches_a_missing_option_and_a_drifted_default(monkeypatch):
    """The check itself can fail: drop a CLI option, change a flow default."""
    real_cli, real_flow = _cli_params, _flow_params

    def cli_without_weight_decay(command):
        params = real_cli(command)
        params.pop("weight_decay", None)
        return params

    monkeypatch.setattr(sys.modules[__name__], "_cli_params", cli_without_weight_decay)
    assert any("'weight_decay'" in p and "medpclip train" in p for p in _problems("train"))
    monkeypatch.setattr(sys.modules[__name__], "_cli_params", real_cli)

    def flow_with_other_warmup(flow):
        params = real_flow(flow)
        if "warmup" in params:
            params["warmup"] = 7
        return params

    monkeypatch.setattr(sys.modules[__name__], "_flow_params", flow_with_other_warmup)
    assert any("default of 'warmup'" in p for p in _problems("train"))


# ``train()``'s run options (not part of a run's config: they say how to run it, not what it is). Every entry
# point has them; ``resume`` defaults differ on purpose: the CLI never continues an existing run unasked (a
# typo in --out would silently extend someone's run), a flow does (a retried or re-run deployment must pick
# up its checkpoints instead of failing on them).
RUN_OPTION_DEFAULTS = {
    "medpclip train": {"resume": False, "ray_address": None, "num_cpus": None},
    "flow pretrain": {"resume": True, "ray_address": None, "num_cpus": None},
    "flow medpclip-pipeline": {"resume": True, "ray_address": None, "num_cpus": None},
}


def test_train_run_options_are_reachable_from_every_entry_point():
    from medpclip.train.loop import train

    run_options = set(inspect.signature(train).parameters) - {"cfg"}
    pipeline = _pipeline_module()
    entry_points = {
        "medpclip train": _cli_params("train"),
        "flow pretrain": _flow_params(pipeline.pretrain_flow),
        "flow medpclip-pipeline": _flow_params(pipeline.pipeline_flow),
    }
    for where, params in entry_points.items():
        assert set(RUN_OPTION_DEFAULTS[where]) == run_options, where
        assert {n: params.get(n, "absent") for n in run_options} == RUN_OPTION_DEFAULTS[where], where
