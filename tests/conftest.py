"""Shared fixtures: one real local Ray for the session, the demo raw data, and one demo corpus build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corpus_utils import DEMO_SPECS

# Loopback test clusters: no token files, no usage reporting (stack notes, "Ray 2.60").
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session():
    """A real Ray started once (3–5 s) with small settings, shut down at the end of the session."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        logging_level="WARNING",
        log_to_driver=True,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory) -> Path:
    from medpclip.demo import write_demo_data

    root = tmp_path_factory.mktemp("raw")
    write_demo_data(root)
    return root


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory, demo_raw, ray_session):
    """The demo corpus built once through the public entry point; returns (BuildResult, out path)."""
    from medpclip.corpus.build import build_corpus
    from medpclip.specs import resolve_specs

    out = tmp_path_factory.mktemp("corpus")
    result = build_corpus(resolve_specs(DEMO_SPECS), demo_raw, out, max_side=256)
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One real text pipeline (spaCy, negspacy, scispacy linker); its linker index goes to a cache folder
    shared by this session's text tests."""
    from medpclip.text import nlp as textnlp

    mp = pytest.MonkeyPatch()
    mp.setenv("MEDPCLIP_CACHE", str(tmp_path_factory.getbasetemp() / "medpclip-cache"))
    mp.delenv(textnlp.LINKER_ENV, raising=False)
    mp.delenv(textnlp.MODEL_ENV, raising=False)
    yield textnlp.get_pipeline()
    mp.undo()
