"""Report language on real reports (issue 16): precision and recall of positive findings against NLM's MeSH
indexing of IU X-ray, the rate at which 'normal' reports get no positive finding, what the misses are, an
anchor side by side, and throughput.

    python -m bench.bench_reports [--split dev] [--medspacy-python .cache/medspacy-venv/bin/python]

Rows, all on the same reports and the same findings map (bench/iu_xray_mesh_findings.yaml):

- ``medpclip``: the shipped pipeline (KB names, report phrases, negation and hedge passes);
- ``before issue 16``: the same pipeline without the report phrases and the hedge pass (KB names and negex
  only; the KB is today's, so its new concepts' names are still found);
- ``medspaCy ConText (anchor)``: medpclip's mentions, asserted by medspaCy's ConText with its default rules
  (its own venv, ``bench/anchors/medspacy_context.py``): the same mention detection, another assertion
  algorithm. Not run when no medspacy venv is given (the output says so).

Throughput is reports per second on one core (the process pinned to one CPU), the median of rounds over all
development reports, the linker cache warm (the steady state of a build).

``--split holdout`` scores the reports with ids above 2000: the hold-out that decides whether the phrase
file and the assertion rules generalise. Nobody working on the linker runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench import report_eval
from bench.common import save_result
from bench.text_throughput import _pin_one_core
from medpclip.text import nlp as textnlp
from medpclip.text.kb import load_kb

ROOT = Path(__file__).resolve().parent.parent
MEDSPACY_PYTHON = ROOT / ".cache" / "medspacy-venv" / "bin" / "python"
ANCHOR = ROOT / "bench" / "anchors" / "medspacy_context.py"


class _Asserted:
    """A mention with another assertion (the anchor's), everything else as medpclip found it."""

    def __init__(self, m, assertion: str) -> None:
        self.concept_id, self.category, self.text, self.assertion = (
            m.concept_id,
            m.category,
            m.text,
            assertion,
        )


class _Linked:
    def __init__(self, mentions) -> None:
        self.mentions = mentions


def _anchor(texts: list[str], linked, python: Path) -> list[_Linked]:
    lines = "".join(
        json.dumps({"text": lt.text, "ents": [[m.start, m.end] for m in lt.mentions]}) + "\n" for lt in linked
    )
    out = subprocess.run(
        [str(python), str(ANCHOR)], input=lines, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    result = []
    for lt, line in zip(linked, out, strict=True):
        verdicts = json.loads(line)
        result.append(
            _Linked([_Asserted(m, v or "positive") for m, v in zip(lt.mentions, verdicts, strict=True)])
        )
    return result


def _misses(reports, linked, findings, kb) -> Counter:
    """Why each false negative was missed: the concept found but hedged, found but negated, or not found."""
    why: Counter = Counter()
    for rep, lt in zip(reports, linked, strict=True):
        if rep.text is None:
            continue
        for f in findings:
            if f.in_mesh(rep.majors) and not f.in_mentions(lt.mentions, kb):
                found = [m for m in lt.mentions if m.concept_id in f.concepts or m.category == f.category]
                kinds = {m.assertion for m in found}
                why[
                    "uncertain" if "uncertain" in kinds else "negated" if "negated" in kinds else "not found"
                ] += 1
    return why


def _row(name: str, s: report_eval.Score) -> dict:
    return {
        "name": name,
        "precision": round(s.micro.precision, 4),
        "recall": round(s.micro.recall, 4),
        "tp": s.micro.tp,
        "fp": s.micro.fp,
        "fn": s.micro.fn,
        "normal_rate": round(s.normal_rate, 4),
        "normal_reports": s.normal_reports,
    }


def main(split: str = "dev", rounds: int = 5, medspacy_python: Path | None = MEDSPACY_PYTHON) -> dict:
    pinned = _pin_one_core()
    reports = list(report_eval.iu_reports(split))
    texts = [r.text or "" for r in reports]
    findings = report_eval.load_findings()
    kb = load_kb()
    nlp = textnlp.get_pipeline()
    textnlp.link_many(texts[:200], nlp)  # warm-up

    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        linked = textnlp.link_many(texts, nlp)
        times.append(time.perf_counter() - t)
    seconds = sorted(times)[len(times) // 2]
    score = report_eval.score(reports, linked, findings, kb)
    rows = [_row("medpclip", score)]

    with nlp.select_pipes(disable=["medpclip_report_phrases", "uncertainty"]):
        before = textnlp.link_many(texts, nlp)
    rows.append(_row("before issue 16 (KB names + negex)", report_eval.score(reports, before, findings, kb)))

    anchor_note = None
    if medspacy_python is not None and Path(medspacy_python).exists():
        anchored = _anchor(texts, linked, Path(medspacy_python))
        rows.append(
            _row(
                "medspaCy ConText (anchor), medpclip's mentions",
                report_eval.score(reports, anchored, findings, kb),
            )
        )
    else:
        anchor_note = f"anchor not run: no medspacy venv at {medspacy_python} (make bench creates it)"
        print(anchor_note)

    result = {
        "split": split,
        "reports": len(reports),
        "scored_reports": score.reports,
        "reports_per_s_one_core": round(len(reports) / seconds, 1),
        "sentences_per_report": round(sum(len(lt.sentences) for lt in linked) / len(linked), 2),
        "pinned": pinned,
        "rows": rows,
        "misses": dict(_misses(reports, linked, findings, kb)),
        "normal_offenders": [f"{rid}: {text}" for rid, text in score.normal_offenders],
        "per_finding": {
            f.name: {
                "reports": score.per_finding[f.name].support,
                "precision": round(score.per_finding[f.name].precision, 4),
                "recall": round(score.per_finding[f.name].recall, 4),
            }
            for f in findings
        },
        "table": report_eval.markdown_table(score, findings),
        "anchor_note": anchor_note,
        "cpu_count": os.cpu_count(),
    }
    save_result(f"reports-{split}", result)
    print(result["table"])
    for r in rows:
        print(
            f"{r['name']}: precision {r['precision']:.3f} recall {r['recall']:.3f} "
            f"normals {r['normal_rate']:.3f} ({r['normal_reports']} normal reports)"
        )
    print(f"misses: {result['misses']}")
    print(f"throughput: {result['reports_per_s_one_core']} reports/s on one core ({pinned})")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="dev", choices=["dev", "holdout"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--medspacy-python", type=Path, default=MEDSPACY_PYTHON)
    a = ap.parse_args()
    main(a.split, a.rounds, a.medspacy_python)
