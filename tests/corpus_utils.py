"""Helpers shared by tests that compare corpora."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from medpclip.frame import DiscoveryNote, Frame, SourceItem
from medpclip.sources import get_reader
from medpclip.specs import DatasetSpec

DEMO_SPECS = ["demo_ct", "demo_polyp", "demo_cxr"]
# The smallest valid spec (a CT volume dataset with one label), for tests that vary one field.
MINIMAL_SPEC = {
    "name": "tiny",
    "root": "Tiny",
    "title": "t",
    "citation": "c",
    "licence": "CC-BY-4.0",
    "access": "open",
    "homepage": "https://example.org",
    "modality": "CT",
    "body_part": "abdomen",
    "format": {"family": "volumes", "options": {"layout": "msd"}},
    "labels": [{"value": 1, "label": "liver", "name": "Liver", "category": "liver", "cui": "C0023884"}],
    "intensity": {"kind": "ct_window", "window": "liver"},
}
NON_DETERMINISTIC = {"report/index.html"}  # its timings section; everything else must be byte-identical


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (except the report page's timings)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in NON_DETERMINISTIC
    }


def as_from_json(item: SourceItem) -> SourceItem:
    """The item as a Ray worker gets it: through the unit's JSON (tuples inside meta become lists)."""
    return SourceItem.from_dict(json.loads(json.dumps(dataclasses.asdict(item))))


def items_of(spec: DatasetSpec, raw: Path) -> dict[str, SourceItem]:
    """Discovered items by case id; discovery must yield them sorted."""
    items = list(get_reader(spec.format.family).discover(spec, raw / spec.root))
    assert [i.case_id for i in items] == sorted(i.case_id for i in items)
    return {i.case_id: i for i in items}


def discovery_notes(spec: DatasetSpec, raw: Path) -> list[DiscoveryNote]:
    """What ``discover`` returns after its items (``frame.DiscoveryNote``: plan-stage reject rows)."""
    found = iter(get_reader(spec.format.family).discover(spec, raw / spec.root))
    while True:
        try:
            next(found)
        except StopIteration as stop:
            return list(stop.value or ())


def bucket_hashes(env: dict[str, str], prefix: str) -> dict[str, str]:
    """sha256 of every object under ``prefix`` (bucket/key) by key relative to it, as ``tree_hashes`` gives
    for a folder (its non-deterministic files left out). Read in a subprocess with ``env``'s credentials and
    endpoint, so the test process's own environment never points at the test's S3 server."""
    import subprocess
    import sys

    script = (
        "import hashlib, json, s3fs, sys; fs = s3fs.S3FileSystem(); root = sys.argv[1]; "
        "print(json.dumps({p[len(root) + 1:]: hashlib.sha256(fs.cat(p)).hexdigest() for p in fs.find(root)}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, prefix], env=env, capture_output=True, text=True, check=True
    )
    return {k: v for k, v in json.loads(done.stdout).items() if k not in NON_DETERMINISTIC}


def frames_of(spec: DatasetSpec, raw: Path, item: SourceItem) -> list[Frame]:
    """All frames of an item, read as a worker would (after the JSON round trip)."""
    return list(get_reader(spec.format.family).read(spec, raw, as_from_json(item)))


def axial_frames_of(spec: DatasetSpec, raw: Path, item: SourceItem) -> list[Frame]:
    """The axial frames of an item: the per-spec fixture truths are written per axial slice, and specs on an
    isotropic grid also slice the coronal and sagittal planes (checked on their own in test_volume_datasets)."""
    frames = frames_of(spec, raw, item)
    # the filter must not hide a reader slicing a plane its spec does not ask for (an axial-only spec's co/sa)
    assert {f.plane for f in frames} <= set(spec.slicing.planes), (spec.name, spec.slicing.planes)
    return [f for f in frames if f.plane == "ax"]


def planes_for(spec: DatasetSpec) -> tuple[str, ...]:
    """The planes a shipped volume spec slices: all three exactly when its stats give the in-plane size the
    census counts coronal and sagittal frames from (the specs on an isotropic grid), else axial."""
    return ("ax", "co", "sa") if spec.stats is not None and spec.stats.matrix else ("ax",)


def axial_only(spec: DatasetSpec) -> DatasetSpec:
    """``spec`` slicing the axial plane only, for an end-to-end test whose counts are per axial slice."""
    return spec.model_copy(update={"slicing": spec.slicing.model_copy(update={"planes": ("ax",)})})


def regions_of(spec: DatasetSpec | None, frame: Frame, min_area_px: int | None = None) -> list:
    """The regions the harmoniser cuts from a frame's label map and masks (the spec's minimum area unless
    ``min_area_px``), asserting that none was dropped."""
    import numpy as np

    from medpclip.regions import extract_regions, min_area

    if min_area_px is None:
        assert spec is not None
        min_area_px = min_area(
            frame.shape[0], frame.shape[1], spec.regions.min_fraction, spec.regions.min_pixels
        )
    regions, drops = extract_regions(
        frame.shape,
        label_map=frame.label_map,
        label_values=frame.label_values,
        masks=frame.masks,
        min_area_px=min_area_px,
        rng_for=lambda _: np.random.default_rng(0),
    )
    assert drops == []
    return regions


def rejected(spec: DatasetSpec, raw: Path, item: SourceItem):
    """The ReadError reading ``item`` raises (the test fails if it reads)."""
    import pytest

    from medpclip.frame import ReadError

    with pytest.raises(ReadError) as e:
        frames_of(spec, raw, item)
    return e.value


TS_WHEELS = Path(__file__).resolve().parents[1] / ".cache" / "wheels"  # `make setup` downloads it there


def totalsegmentator_class_map(key: str) -> tuple[str, dict[int, str]]:
    """(wheel name, ``class_map[key]``) of the newest TotalSegmentator 2.x wheel in ``.cache/wheels``, read from
    its ``map_to_binary.py`` with ``ast`` (never imported: the package pulls torch and nnU-Net). Fails, never
    skips, without the wheel, and when the module reassigns that entry after its literal."""
    import ast
    import zipfile

    wheels = sorted(
        TS_WHEELS.glob("totalsegmentator-2.*-py3-none-any.whl"),
        key=lambda p: tuple(int(x) for x in p.name.split("-")[1].split(".") if x.isdigit()),
    )
    assert wheels, (
        f"no TotalSegmentator 2.x wheel in {TS_WHEELS}: run `make setup` (it downloads the wheel once with "
        "pip download --no-deps; the specs' labels are checked against its map_to_binary.py)"
    )
    wheel = wheels[-1]
    with zipfile.ZipFile(wheel) as z:
        tree = ast.parse(z.read("totalsegmentator/map_to_binary.py").decode("utf-8"))
    literal = None
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id == "class_map" and literal is None:
                literal = ast.literal_eval(node.value)
            elif (  # class_map["total"] = … or class_map["total"][k] = … later in the module
                isinstance(target, ast.Subscript)
                and f"class_map['{key}']" in ast.unparse(target).replace('"', "'")
            ):
                raise AssertionError(
                    f"{wheel.name}: map_to_binary.py changes class_map['{key}'] after its literal"
                )
    assert literal is not None, f"{wheel.name}: no 'class_map = {{...}}' literal in map_to_binary.py"
    return wheel.name, literal[key]
