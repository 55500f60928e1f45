"""The HTML build report, rendered by a real headless Chromium; contact sheets; terminal-free progress."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from medpclip.qa.progress import BuildProgress
from medpclip.qa.report import bar_chart
from medpclip.qa.sheets import choose_keys
from medpclip.warehouse import query

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, (
        "Chromium is missing: `make test` installs Debian's chromium package (apt-get install chromium)"
    )
    return path


def test_report_numbers_match_the_warehouse(demo_corpus):
    out = demo_corpus.out
    page = (out / "report" / "index.html").read_text()
    n_samples = query(out, "SELECT count(*) FROM samples")[1][0][0]
    patients = query(out, "SELECT count(DISTINCT patient_id) FROM samples")[1][0][0]
    assert f"<b>{n_samples}</b>samples" in page and f"<b>{patients}</b>patients" in page
    # The below-min-area liver tumour is listed as a reject example with its detail.
    assert "below_min_area" in page and "liver tumour" in page and "6 px &lt; 16 px" in page
    # One contact sheet per dataset × split, each a PNG referenced by the page.
    groups = query(out, "SELECT dataset, split FROM samples GROUP BY ALL")[1]
    for dataset, split in groups:
        assert f'src="sheets/{dataset}-{split}.png"' in page
        assert (out / "report" / "sheets" / f"{dataset}-{split}.png").is_file()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing from the network


def test_report_renders_in_headless_chromium(demo_corpus, tmp_path):
    chromium = _chromium()
    url = (demo_corpus.out / "report" / "index.html").as_uri()
    dom = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'ud1'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    total = int(re.search(r'data-images-total="(\d+)"', body).group(1))
    broken = int(re.search(r'data-images-broken="(\d+)"', body).group(1))
    assert total == 9 and broken == 0  # 3 datasets × 3 splits, every image loaded
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'ud2'}",
            "--window-size=1280,1600",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (1600, 1280)
    assert (
        pixels.std() > 10 and (pixels < 128).mean() > 0.01
    )  # text, charts and sheets drawn, not a blank page


def test_contact_sheet_choice_is_seeded():
    keys = [f"k{i:03d}" for i in range(100)]
    a, b = choose_keys(keys, 12, seed=0), choose_keys(list(reversed(keys)), 12, seed=0)
    assert a == b and len(a) == 12 and a == sorted(a)
    assert choose_keys(keys, 12, seed=1) != a
    assert choose_keys(keys[:5], 12, seed=0) == keys[:5]


def test_bar_chart_scales_to_the_largest_value():
    svg = bar_chart([("liver", 200), ("spleen", 50)], "regions")
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)"', svg)]
    assert widths[0] == pytest.approx(4 * widths[1])


def test_progress_without_a_terminal_prints_one_line_per_unit():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)

    class Plan:
        units = [type("U", (), {"dataset": "demo_ct"})(), type("U", (), {"dataset": "demo_cxr"})()]

    with BuildProgress(console) as progress:
        progress.on_plan(Plan())
        progress.on_unit(
            {
                "dataset": "demo_ct",
                "unit": 0,
                "n_samples": 80,
                "n_regions": 320,
                "n_rejects": 1,
                "seconds": 0.4,
            }
        )
        progress.on_unit(
            {
                "dataset": "demo_cxr",
                "unit": 0,
                "n_samples": 19,
                "n_regions": 10,
                "n_rejects": 0,
                "skipped": True,
            }
        )
    lines = buf.getvalue().splitlines()
    assert lines == [
        "planned 2 units over 2 datasets",
        "[1/2] demo_ct unit 00000: 80 samples, 320 regions, 1 rejects (0.4s)",
        "[2/2] demo_cxr unit 00000: 19 samples, 10 regions, 0 rejects (kept)",
    ]


def test_planning_notes_reach_the_report(demo_corpus, tmp_path):
    """build.json's per-dataset notes (a table only part of whose images are on disk) are on the page."""
    import json

    from medpclip.qa.report import write_report

    corpus = tmp_path / "corpus"
    shutil.copytree(demo_corpus.out, corpus)
    build = json.loads((corpus / "build.json").read_text())
    note = "Data_Entry_2017.csv: 1,000 of 112,120 rows have their image"
    build["datasets"][0]["notes"] = [note]
    page = write_report(corpus, build).read_text()
    assert f"<b>{build['datasets'][0]['name']}</b>: {note}" in page
    del build["datasets"][0]["notes"]
    assert "class=notes" not in write_report(corpus, build).read_text()  # nothing to say, no list
