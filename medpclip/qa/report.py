"""The HTML build report (``OUT/report/index.html``): what a person reviewing a new corpus looks at first.

Self-contained: one HTML file with inline CSS and SVG charts, plus the contact sheets as PNG files beside it;
nothing is fetched from the network. Every number comes from the warehouse views, so the report agrees with
``medpclip query``. Only the timings section changes between two builds of the same inputs.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medpclip.fileio import atomic_write_bytes
from medpclip.qa.sheets import choose_keys, contact_sheet
from medpclip.storage import corpus_path
from medpclip.warehouse import connect

SHEET_SAMPLES = 12
SIZE_BINS = [
    (0.0, 0.001, "< 0.1 %"),
    (0.001, 0.003, "0.1–0.3 %"),
    (0.003, 0.01, "0.3–1 %"),
    (0.01, 0.03, "1–3 %"),
    (0.03, 0.1, "3–10 %"),
    (0.1, 0.3, "10–30 %"),
    (0.3, 1.01, "≥ 30 %"),
]

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#1d2330;padding:0 16px}
h1{font-size:24px;margin-bottom:4px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #eef;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#667} .kpi{display:inline-block;
margin:8px 24px 8px 0} .kpi b{display:block;font-size:22px} figure{display:inline-block;vertical-align:top;margin:8px 16px 16px 0}
figcaption{font-size:12px;color:#556} code{background:#f3f4f8;padding:0 3px}
"""
IMAGE_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesBroken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
});
</script>"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"n" if i in numeric else ""}">{_e(v)}</td>' for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def bar_chart(items: Sequence[tuple[str, int]], title: str, width: int = 520, color: str = "#3b6fd8") -> str:
    """Horizontal bars as inline SVG (no plotting library, no network)."""
    if not items:
        return f"<p class=muted>{_e(title)}: nothing to show.</p>"
    row, label_w = 18, 190
    top = max(v for _, v in items) or 1
    height = row * len(items) + 8
    bars = []
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = max(1.0, (width - label_w - 70) * value / top)
        bars.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="12">{_e(label[:30])}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 5}" fill="{color}"/>'
            f'<text x="{label_w + w + 5:.1f}" y="{y + 13}" font-size="12">{value}</text>'
        )
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(title)}">{"".join(bars)}</svg><figcaption>{_e(title)}</figcaption></figure>'
    )


def _rows(con, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def write_report(
    corpus: Path, build: dict[str, Any], timings: dict[str, float] | None = None, seed: int = 0
) -> Path:
    """Write ``report/index.html`` and ``report/sheets/*.png`` for a finished corpus; returns the HTML path."""
    corpus = corpus_path(corpus)  # a folder, or an object-storage prefix
    report_dir = corpus / "report"
    con = connect(corpus)
    try:
        sections = [
            _overview(con, build),
            _histograms(con),
            _region_sizes(con),
            _rejects(con),
            _duplicates(con),
            _sheets(con, corpus, report_dir, seed),
            _parameters(build, timings),
        ]
    finally:
        con.close()
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>medpclip corpus report</title>'
        f"<style>{CSS}</style>{IMAGE_CHECK}</head><body>{''.join(sections)}</body></html>\n"
    )
    path = report_dir / "index.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def _overview(con, build: dict[str, Any]) -> str:
    t = build["totals"]
    patients = dict(_rows(con, "SELECT dataset, count(DISTINCT patient_id) FROM samples GROUP BY dataset"))
    kpis = "".join(
        f'<span class="kpi"><b>{v}</b>{_e(k)}</span>'
        for k, v in (
            ("samples", t["samples"]),
            ("regions", t["regions"]),
            ("patients", sum(patients.values())),
            ("rejects", t["rejects"]),
            ("shards", t["shards"]),
            ("MiB", round(t["shard_bytes"] / 2**20, 1)),
        )
    )
    rows = []
    for d in build["datasets"]:
        s = d["samples_by_split"]
        rows.append(
            [
                d["name"],
                d["title"],
                d["licence"],
                d["access"],
                d["samples"],
                d["regions"],
                patients.get(d["name"], 0),
                s.get("train", 0),
                s.get("val", 0),
                s.get("test", 0),
                d["rejects"],
            ]
        )
    table = _table(
        [
            "dataset",
            "title",
            "licence",
            "access",
            "samples",
            "regions",
            "patients",
            "train",
            "val",
            "test",
            "rejects",
        ],
        rows,
        numeric={4, 5, 6, 7, 8, 9, 10},
    )
    # planning's notes: what part of a dataset was on disk (a table only part of whose images are present)
    notes = "".join(
        f"<li><b>{_e(d['name'])}</b>: {_e(note)}</li>"
        for d in build["datasets"]
        for note in d.get("notes", ())
    )
    notes = f"<ul class=notes>{notes}</ul>" if notes else ""
    return f"<h1>medpclip corpus report</h1><p class=muted>schema v{build['schema_version']}, code {build['code_version']}</p>{kpis}<h2>Datasets</h2>{table}{notes}"


def _histograms(con) -> str:
    modality = _rows(con, "SELECT modality, count(*) FROM samples GROUP BY ALL ORDER BY 2 DESC, 1")
    labels = _rows(con, "SELECT label, count(*) FROM regions GROUP BY ALL ORDER BY 2 DESC, 1 LIMIT 40")
    kinds = _rows(con, "SELECT kind, count(*) FROM regions GROUP BY ALL ORDER BY 2 DESC, 1")
    return (
        "<h2>Modalities, labels, kinds</h2>"
        + bar_chart(modality, "samples by modality")
        + bar_chart(kinds, "regions by kind", color="#8a5cd8")
        + bar_chart(labels, "regions by label (top 40)", color="#2f9e6e")
    )


def _region_sizes(con) -> str:
    cases = " ".join(f"WHEN area_fraction < {hi} THEN {i}" for i, (_, hi, _) in enumerate(SIZE_BINS))
    counts = dict(_rows(con, f"SELECT CASE {cases} END AS b, count(*) FROM regions GROUP BY b"))
    items = [(label, int(counts.get(i, 0))) for i, (_, _, label) in enumerate(SIZE_BINS)]
    return "<h2>Region sizes (share of the image)</h2>" + bar_chart(
        items, "regions by area fraction", color="#d8843b"
    )


def _rejects(con) -> str:
    reasons = _rows(con, "SELECT stage, reason, count(*) FROM rejects GROUP BY ALL ORDER BY 3 DESC, 1, 2")
    if not reasons:
        return "<h2>Rejects</h2><p>None.</p>"
    examples = _rows(
        con,
        "SELECT stage, reason, dataset, coalesce(key, path), label, detail FROM (SELECT *, row_number() OVER "
        "(PARTITION BY stage, reason ORDER BY dataset, path, key, label) AS n FROM rejects) WHERE n <= 3 ORDER BY ALL",
    )
    return (
        "<h2>Rejects</h2>"
        + _table(["stage", "reason", "count"], reasons, numeric={2})
        + "<p class=muted>Up to three examples per reason:</p>"
        + _table(["stage", "reason", "dataset", "key or path", "label", "detail"], examples)
    )


def _duplicates(con) -> str:
    exact = _rows(
        con,
        "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(CAST(splits > 1 AS INTEGER)), 0) FROM (SELECT "
        "count(*) AS n, count(DISTINCT split) AS splits FROM samples GROUP BY pixel_sha256 HAVING n > 1)",
    )[0]
    near = _rows(
        con,
        "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(CAST(splits > 1 AS INTEGER)), 0) FROM (SELECT count(*) "
        "AS n, count(DISTINCT split) AS splits FROM samples GROUP BY phash "
        "HAVING count(DISTINCT dataset || patient_id) > 1)",
    )[0]
    rows = [["exact (same pixels)", *exact], ["near (same perceptual hash, different patients)", *near]]
    return (
        "<h2>Duplicates</h2>"
        + _table(["kind", "groups", "samples in groups", "groups across splits"], rows, numeric={1, 2, 3})
        + "<p class=muted>Near-duplicates of one patient (neighbouring slices) are expected and not counted.</p>"
    )


def _sheets(con, corpus: Path, report_dir: Path, seed: int) -> str:
    parts = ["<h2>Contact sheets</h2>"]
    groups = _rows(con, "SELECT dataset, split FROM samples GROUP BY ALL ORDER BY ALL")
    for dataset, split in groups:
        rows = _rows(con, "SELECT key, shard FROM samples WHERE dataset = ? AND split = ?", [dataset, split])
        shard_of = dict(rows)
        keys = choose_keys(list(shard_of), SHEET_SAMPLES, seed)
        sheet = contact_sheet(corpus, [(shard_of[k], k) for k in keys])
        name = f"sheets/{dataset}-{split}.png"
        buf = io.BytesIO()
        sheet.save(buf, format="PNG", optimize=False)
        atomic_write_bytes(report_dir / name, buf.getvalue())
        parts.append(
            f'<figure><img src="{_e(name)}" width="{sheet.width // 2}" alt="{_e(dataset)} {_e(split)}">'
            f"<figcaption>{_e(dataset)} / {_e(split)}: {len(keys)} of {len(rows)} samples</figcaption></figure>"
        )
    return "".join(parts)


def _parameters(build: dict[str, Any], timings: dict[str, float] | None) -> str:
    params = json.dumps(build["params"], sort_keys=True)
    out = f"<h2>Build</h2><p>parameters: <code>{_e(params)}</code>; id salt sha256 <code>{_e(build['id_salt_sha256'])}</code></p>"
    if timings:
        out += _table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()], numeric={1})
    return out
