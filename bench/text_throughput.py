"""Text pipeline throughput on one core, and the share of text work in per-frame harmonisation.

Sentences are the project's radiology test set (tests/data/radiology_sentences.jsonl, 80 sentences) with a
number appended so no two texts are equal. Stages, each the median of several rounds:

- ``sentences``: the full pipeline (sentencizer, ruler, abbreviations, negex, scispacy linker) over
  one-sentence docs, linker cache warm (the steady state of a build, where mention strings repeat);
- ``sentences, cold cache``: the same with an empty mention cache each round (exact KB names are still
  resolved without the index, everything else is queried once per distinct string);
- ``sentences, index query per mention``: no exact-name path and no cache, every mention goes through the
  TF-IDF transform and the HNSW query (what the stock scispacy linker does);
- ``reports``: the same sentences grouped five to a doc, as reports arrive;

and, for the build: ``region_texts`` per region against ``make_sample`` per frame (512² CT slice, ten KB
organs), and linking one five-sentence report against ``make_sample`` of a radiograph. Goal: ≥ 2,000
sentences/s on one core, and text generation a small share of a frame's time.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import ct_spec, save_result
from medpclip.corpus.sample import SampleParams, make_sample
from medpclip.frame import Box, Frame, SourceFile, SourceItem
from medpclip.specs import parse_spec
from medpclip.text import nlp as textnlp
from medpclip.text import prompts
from medpclip.text.kb import label_concepts

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "tests" / "data" / "radiology_sentences.jsonl"
ORGANS = ["liver", "spleen", "right kidney", "left kidney", "stomach", "pancreas", "aorta",
          "inferior vena cava", "gallbladder", "duodenum"]  # fmt: skip


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to cpu {cpu}"
    return "not pinned"


def _sentences(n: int) -> list[str]:
    base = [json.loads(line)["text"] for line in SENTENCES.read_text(encoding="utf-8").splitlines() if line]
    return [f"{base[i % len(base)][:-1]} ({i})." for i in range(n)]


def _timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ct_spec():
    return ct_spec(list(ORGANS))


def _ct_frame(seed: int = 0) -> Frame:
    size = 512
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    hu = rng.normal(40, 20, (size, size)).astype(np.float32)
    lm = np.zeros((size, size), np.uint8)
    for v in range(1, len(ORGANS) + 1):
        cy, cx = rng.integers(60, size - 60, 2)
        ry, rx = rng.integers(10, 60, 2)
        lm[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = v
    item = SourceItem("bench_ct", "case_1", (SourceFile("image", "x/img.nii.gz"),), "1")
    return Frame(
        item=item, image=hu, intensity="hu", plane="ax", spacing_mm=(0.8, 0.8), label_map=lm,
        label_values={v: o for v, o in enumerate(ORGANS, 1)},
    )  # fmt: skip


def _cxr(report: str) -> tuple[Frame, object]:
    spec = parse_spec(
        {
            "name": "bench_cxr",
            "root": "x",
            "title": "bench",
            "citation": "-",
            "licence": "-",
            "access": "open",
            "homepage": "-",
            "modality": "XR",
            "body_part": "chest",
            "format": {"family": "tables"},
            "labels": [
                {"label": "Pneumothorax", "name": "Pneumothorax", "category": "pneumothorax"},
                {"label": "Effusion", "name": "Pleural effusion", "category": "pleural effusion"},
            ],
            "intensity": {"kind": "uint8"},
        }
    )
    item = SourceItem("bench_cxr", "c1", (SourceFile("image", "x/c1.png"),), "1")
    frame = Frame(
        item=item,
        image=np.random.default_rng(0).integers(0, 255, (1024, 1024), dtype=np.uint8),
        intensity="uint8",
        boxes=[Box("Pneumothorax", (100, 100, 400, 500)), Box("Effusion", (600, 700, 900, 950))],
        report=report,
    )
    return frame, spec


def main(rounds: int = 5, n_sentences: int = 4000) -> dict:
    pinned = _pin_one_core()
    nlp = textnlp.get_pipeline()
    linker = nlp.get_pipe("scispacy_linker")
    memo = linker.candidate_generator
    sents = _sentences(n_sentences)
    reports = [" ".join(sents[i : i + 5]) for i in range(0, len(sents), 5)]
    textnlp.link_many(sents[:200], nlp)  # warm-up: vocabulary, linker cache

    rates = {
        "sentences": len(sents) / _timed(lambda: textnlp.link_many(sents, nlp), rounds),
        "reports (5 sentences each)": len(sents) / _timed(lambda: textnlp.link_many(reports, nlp), rounds),
    }

    # a fresh mention cache each round: the first pass over a corpus
    def cold():
        linker.candidate_generator = textnlp.CandidateCache(memo.generator, memo.exact_kb)
        textnlp.link_many(sents, nlp)

    try:
        rates["sentences, cold cache"] = len(sents) / _timed(cold, rounds)
        # no exact-name path and no cache: every mention is a TF-IDF transform and an HNSW query
        linker.candidate_generator = memo.generator
        rates["sentences, index query per mention"] = len(sents) / _timed(
            lambda: textnlp.link_many(sents, nlp), rounds
        )
    finally:
        linker.candidate_generator = memo

    # share of text work in a build
    spec = _ct_spec()
    concepts = label_concepts(spec.labels)
    frames = [_ct_frame(i) for i in range(10)]
    params = SampleParams(max_side=512)
    src = [{"role": "image", "path": "x/img.nii.gz", "sha256": "0" * 64}]

    def harmonise():
        for i, f in enumerate(frames):
            make_sample(f, spec, params, key=f"bench_ct_case_1_ax{i:04d}", split="train", source_files=src)

    def texts_only():
        for i in range(len(frames)):
            for o in ORGANS:
                prompts.region_texts(
                    o.capitalize(), o, modality="CT", plane="ax", body_part="abdomen",
                    concept=concepts[o], key=f"bench_ct_case_1_ax{i:04d}", label=o,
                )  # fmt: skip

    t_frame = _timed(harmonise, rounds) / len(frames)
    t_texts = _timed(texts_only, rounds) / len(frames)
    cxr, cxr_spec = _cxr(" ".join(sents[:5]))
    t_cxr = _timed(
        lambda: make_sample(cxr, cxr_spec, SampleParams(), key="k", split="train", source_files=src), rounds
    )
    t_report = _timed(lambda: prompts.link_report(cxr.report), rounds)

    result = {
        "bench": "text_throughput",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "affinity": pinned},
        "rounds": rounds,
        "n_sentences": len(sents),
        "sentences_per_s": {k: round(v) for k, v in rates.items()},
        "ct_frame_ms": round(t_frame * 1e3, 2),
        "region_texts_ms_per_frame": round(t_texts * 1e3, 3),
        "region_texts_share_of_frame": round(t_texts / t_frame, 4),
        "cxr_frame_with_report_ms": round(t_cxr * 1e3, 2),
        "report_linking_ms": round(t_report * 1e3, 3),
        "report_linking_share_of_frame": round(t_report / t_cxr, 4),
    }
    print(f"{'stage':32s} {'sentences/s (1 core)':>22s}")
    for k, v in result["sentences_per_s"].items():
        print(f"{k:32s} {v:22,d}")
    print(
        f"region texts: {result['region_texts_ms_per_frame']} ms per 10-organ CT frame of "
        f"{result['ct_frame_ms']} ms ({result['region_texts_share_of_frame']:.1%})"
    )
    print(
        f"report linking: {result['report_linking_ms']} ms per 5-sentence report, radiograph frame "
        f"{result['cxr_frame_with_report_ms']} ms ({result['report_linking_share_of_frame']:.1%})"
    )
    save_result("text_throughput", result)
    return result


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
