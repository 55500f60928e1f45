"""The census: samples and regions projected from a spec's ``stats`` under its own slicing and keep_empty
rules (medpclip/census.py), the stats block's checks, and ``medpclip specs census`` / ``specs list`` filters."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medpclip.census import CensusError, census, project
from medpclip.cli import app
from medpclip.specs import SpecError, available_specs, parse_spec, resolve_spec

runner = CliRunner()


def _with(name: str, stats: dict, **changes) -> object:
    data = resolve_spec(name).model_dump(mode="json")
    data["stats"] = {"source": "this test", **stats}
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return parse_spec(data)


def test_3d_projection_follows_planes_step_and_keep_empty():
    stats = {"cases": 10, "slices_per_case": 100, "matrix": 512, "structures": 2,
             "annotated_fraction": 0.25, "regions_per_sample": 1.5,
             "estimated": ["slices_per_case", "annotated_fraction", "regions_per_sample"]}  # fmt: skip
    p = project(_with("msd_spleen", stats))  # axial only, step 1, empty slices dropped
    assert (p.frames, p.samples, p.regions) == (1000, 250, 375)
    assert p.published == ("cases",) and p.estimated == (
        "slices_per_case",
        "annotated_fraction",
        "regions_per_sample",
    )
    # coronal and sagittal planes add cases × matrix frames each; step 2 halves every plane
    p = project(_with("msd_spleen", stats, slicing={"planes": ["ax", "co", "sa"], "step": 2}))
    assert p.frames == 500 + 2560 + 2560 and p.samples == round(5620 * 0.25) == 1405
    assert p.regions == round(1405 * 1.5)
    # keep_empty keeps every frame; regions still come from the annotated ones only
    p = project(_with("msd_spleen", stats, slicing={"keep_empty": True}))
    assert (p.samples, p.regions) == (1000, 375)
    # a published slice total wins over cases × slices_per_case
    p = project(_with("msd_spleen", {**stats, "slices": 3650}))
    assert p.frames == 3650 and "slices_per_case" not in p.published + p.estimated


def test_2d_projection_uses_the_published_annotation_count_and_the_modality_mix():
    spec = _with("chestxray14", {"images": 112_120, "structures": 8, "annotations": 984,
                                 "annotated_fraction": 880 / 112_120})  # fmt: skip
    p = project(spec)
    assert spec.slicing.keep_empty  # image-level labels: every image is a sample
    assert (p.frames, p.samples, p.regions) == (112_120, 112_120, 984)
    mixed = _with("amos22", {"cases": 500, "slices": 50_000, "structures": 15, "regions_per_sample": 6.0,
                             "modalities": {"CT": 0.8, "MR": 0.2}})  # fmt: skip
    p = project(mixed)
    assert p.by_modality == {"CT": 40_000, "MR": 10_000} and p.modality == "CT+MR"


def test_census_totals_skip_synthetic_specs_and_list_those_without_stats():
    a = _with("msd_spleen", {"cases": 41, "slices": 4000, "structures": 1, "annotated_fraction": 0.25,
                             "regions_per_sample": 1.0})  # fmt: skip
    b = _with("kvasir_seg", {"images": 1000, "structures": 1, "annotations": 1071})
    demo = resolve_spec("demo_ct")
    assert demo.synthetic
    c = census([a, b, demo, resolve_spec("msd_liver").model_copy(update={"stats": None})])
    assert [p.dataset for p in c.projections] == ["msd_spleen", "kvasir_seg"]
    assert (c.samples, c.regions) == (1000 + 1000, 1000 + 1071)
    assert c.by_modality() == {"CT": 1000, "endoscopy": 1000}
    assert c.without_stats == ["msd_liver"]


@pytest.mark.parametrize(
    "stats, fragment",
    [
        ({"structures": 1, "regions_per_sample": 1}, "give 'images' (a 2D dataset) or 'cases'"),
        ({"cases": 3, "structures": 1, "regions_per_sample": 1}, "needs 'slices', or 'cases' and 'slices_per_case'"),
        ({"images": 10, "structures": 1}, "give 'regions_per_sample' or (2D) 'annotations'"),
        ({"images": 10, "structures": 1, "annotations": 3, "estimated": ["annotatons"]}, "estimated names unknown"),
        ({"images": 10, "structures": 1, "annotations": 3, "modalities": {"CT": 0.5, "MR": 0.4}}, "sum to 1"),
    ],
)  # fmt: skip
def test_stats_block_errors_are_one_line_at_load(stats, fragment):
    with pytest.raises(SpecError) as e:
        _with("kvasir_seg", stats)
    assert fragment in str(e.value) and "field 'stats'" in str(e.value) and "\n" not in str(e.value)


def test_other_planes_need_a_matrix():
    spec = _with("msd_spleen", {"cases": 4, "slices": 400, "structures": 1, "regions_per_sample": 1},
                 slicing={"planes": ["ax", "sa"]})  # fmt: skip
    with pytest.raises(CensusError, match="stats need 'cases' and 'matrix'"):
        project(spec)


def test_census_command_formats_and_filters():
    res = runner.invoke(app, ["specs", "census", "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    rows = {r["dataset"]: r for r in doc["datasets"]}
    assert doc["total"]["samples"] == sum(r["samples"] for r in rows.values())
    assert doc["total"]["regions"] == sum(r["regions"] for r in rows.values())
    assert not {"demo_ct", "demo_cxr", "demo_polyp"} & (set(rows) | set(doc["without_stats"]))
    shipped = {n for n in available_specs() if not resolve_spec(n).synthetic}
    assert set(rows) | set(doc["without_stats"]) == shipped  # every public spec is projected or listed
    res = runner.invoke(app, ["specs", "census", "--format", "csv", "--access", "credentialed"])
    assert res.exit_code == 0
    table = list(csv.DictReader(io.StringIO(res.output)))
    assert all(r["access"] == "credentialed" for r in table)
    assert {r["dataset"] for r in table} == {n for n in rows if rows[n]["access"] == "credentialed"}
    res = runner.invoke(app, ["specs", "census", "--format", "xml"])
    assert res.exit_code == 2 and "--format must be table, csv, json or markdown" in res.output


def test_specs_list_filters_by_access_and_licence():
    res = runner.invoke(app, ["specs", "list", "--access", "open", "--licence", "CC-BY-SA", "--names"])
    assert res.exit_code == 0
    names = res.output.strip().split(",")
    assert "msd_spleen" in names and "mimic_cxr" not in names
    assert all(
        resolve_spec(n).access == "open" and "cc-by-sa" in resolve_spec(n).licence.lower() for n in names
    )
    res = runner.invoke(app, ["specs", "list", "--access", "public"])
    assert res.exit_code == 2 and "--access takes credentialed, open, registration" in res.output


def test_overlapping_specs_are_counted_once_in_the_distinct_totals():
    liver = _with("msd_liver", {"cases": 131, "slices": 58_638, "structures": 2, "regions_per_sample": 1.5})
    data = liver.model_dump(mode="json")
    data["overlaps"] = [{"spec": "kits23", "cases": 131, "note": "this test: every case shared"}]
    shared_all = parse_spec(data)
    kits = _with("kits23", {"cases": 489, "slices_per_case": 200, "structures": 3, "regions_per_sample": 2.0})
    c = census([shared_all, kits])
    assert c.shared == {"msd_liver": 1.0}
    assert c.distinct_samples == c.samples - c.projections[0].samples
    assert c.distinct_regions == c.regions - c.projections[0].regions
    assert census([shared_all]).shared == {}  # the other spec not in this census: nothing is counted twice
    data = kits.model_dump(mode="json")
    data["overlaps"] = [
        {"spec": "msd_liver", "cases": 131, "note": "this test: the same pair, declared twice"}
    ]
    both = census([shared_all, parse_spec(data)])
    assert both.shared == {"msd_liver": 1.0}  # a pair is taken off once, from the spec listed first


def test_every_declared_overlap_names_a_shipped_spec():
    names = set(available_specs())
    for name in names:
        spec = resolve_spec(name)
        for o in spec.overlaps:
            assert o.spec in names and o.spec != name, (name, o.spec)
            total = spec.stats.images or spec.stats.cases if spec.stats else None
            assert total is None or o.cases <= total, (name, o.spec, o.cases, total)


COVERAGE = Path(__file__).resolve().parents[1] / "docs" / "COVERAGE.md"
BEGIN, END = "<!-- census: medpclip specs census --format markdown -->", "<!-- end census -->"


def test_coverage_md_holds_the_census_of_the_shipped_specs():
    """docs/COVERAGE.md's census is the command's output for the specs as shipped: a stats change that does
    not regenerate it fails here (fix: paste `medpclip specs census --format markdown` between the markers)."""
    text = COVERAGE.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    held = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    res = runner.invoke(app, ["specs", "census", "--format", "markdown"])
    assert res.exit_code == 0
    assert held == res.output.strip()
