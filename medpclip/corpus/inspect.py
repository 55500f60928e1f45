"""Read a finished corpus back: one sample by key, and a full re-check of what the build claims."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import jsonschema
import numpy as np
from PIL import Image

from medpclip.corpus.encoding import image_ext, image_member
from medpclip.corpus.schema import KEY_RE, load_sample_json_schema
from medpclip.corpus.shards import iter_samples, read_sample
from medpclip.fileio import load_json
from medpclip.regions import decode_rle, tight_box
from medpclip.storage import corpus_path
from medpclip.warehouse import connect, open_corpus


def read_samples(corpus: Path, shard_keys: list[tuple[str, str]]) -> dict[str, tuple[np.ndarray, dict]]:
    """Images and records of many samples, reading each shard once: ``[(shard, key)]`` → ``{key: (img, rec)}``."""
    wanted: dict[str, set[str]] = {}
    for shard, key in shard_keys:
        wanted.setdefault(shard, set()).add(key)
    found: dict[str, tuple[np.ndarray, dict]] = {}
    for shard, keys in sorted(wanted.items()):
        for key, members in iter_samples(corpus_path(corpus) / shard):
            if key in keys:
                found[key] = (
                    np.asarray(Image.open(io.BytesIO(image_member(members)[1]))),
                    json.loads(members["json"]),
                )
    return found


def load_sample(corpus: Path, key: str) -> tuple[np.ndarray, dict]:
    """The image (uint8) and record of one sample, found through the samples manifest."""
    if not KEY_RE.match(key):
        raise KeyError(f"'{key}' is not a sample key (keys match [a-z0-9_-]+)")
    con = connect(corpus)
    try:
        row = con.execute("SELECT shard FROM samples WHERE key = ?", [key]).fetchone()
    finally:
        con.close()
    if row is None:
        raise KeyError(
            f"no sample '{key}' in {corpus} (try: medpclip query --corpus {corpus} \"SELECT key FROM samples LIMIT 5\")"
        )
    members = read_sample(corpus_path(corpus) / row[0], key)
    return np.asarray(Image.open(io.BytesIO(image_member(members)[1]))), json.loads(members["json"])


@dataclass
class CheckReport:
    shards: int = 0
    samples: int = 0
    regions: int = 0
    problems: list[str] = field(default_factory=list)


def _check_region(key: str, rec: dict, r: dict, problems: list[str]) -> None:
    w, h = rec["width"], rec["height"]
    x0, y0, x1, y1 = r["bbox"]
    where = f"{key} region {r['rid']} ({r['label']})"
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        problems.append(f"{where}: bbox {r['bbox']} outside the {w}x{h} image")
        return
    if "mask_rle" in r:
        mask = decode_rle(r["mask_rle"])
        if mask.shape != (h, w):
            problems.append(f"{where}: mask is {mask.shape}, image is {(h, w)}")
            return
        if int(mask.sum()) != r["area_px"]:
            problems.append(f"{where}: area_px {r['area_px']} but the mask has {int(mask.sum())} pixels")
        if list(tight_box(mask)) != r["bbox"]:
            problems.append(
                f"{where}: bbox {r['bbox']} is not the tight box {list(tight_box(mask))} of its mask"
            )
        for (x, y), lab in zip(r["points"], r["point_labels"], strict=True):
            if not (0 <= x < w and 0 <= y < h) or bool(mask[y, x]) != bool(lab):
                problems.append(f"{where}: point ({x},{y}) label {lab} disagrees with the mask")
    elif r["kind"] == "box" and r["area_px"] != (x1 - x0) * (y1 - y0):
        problems.append(f"{where}: box area_px {r['area_px']} != box area {(x1 - x0) * (y1 - y0)}")


def _check_sample(path: str, key: str, members: dict, validator, manifest: dict, report: CheckReport) -> None:
    problems = report.problems
    if set(members) not in ({"json", "png", "txt"}, {"json", "jpg", "txt"}):
        problems.append(f"{path}: sample {key} has members {sorted(members)}")
        return
    rec = json.loads(members["json"])
    errors = sorted(validator.iter_errors(rec), key=lambda e: list(e.path))
    if errors:
        problems.append(f"{key}: record invalid at {'/'.join(map(str, errors[0].path))}: {errors[0].message}")
        return
    if rec["key"] != key:
        problems.append(f"{key}: record carries key {rec['key']}")
    ext, data = image_member(members)
    img = Image.open(io.BytesIO(data))
    if img.size != (rec["width"], rec["height"]):
        problems.append(f"{key}: {ext} is {img.size}, record says {(rec['width'], rec['height'])}")
    if img.format != {"png": "PNG", "jpg": "JPEG"}[ext] or len(img.getbands()) != rec["channels"]:
        problems.append(
            f"{key}: {ext} member holds {img.format} {img.mode}, record says {rec['channels']} channel(s)"
        )
    if ext != image_ext(rec["modality"], np.empty((1, 1, 3) if rec["channels"] == 3 else (1, 1))):
        problems.append(f"{key}: {rec['modality']} image with {rec['channels']} channel(s) stored as {ext}")
    if members["txt"].decode("utf-8") != rec["caption"]:
        problems.append(f"{key}: txt differs from the record's caption")
    if manifest.get(key, (None, None))[0] != path:
        problems.append(f"{key}: not in the samples manifest under {path}")
    elif manifest[key][1] != len(rec["regions"]):
        problems.append(f"{key}: manifest says {manifest[key][1]} regions, record has {len(rec['regions'])}")
    elif manifest[key][2] != rec["split"] or f"/{rec['split']}/" not in f"/{path}":
        problems.append(f"{key}: record split {rec['split']}, manifest {manifest[key][2]}, shard {path}")
    for r in rec["regions"]:
        report.regions += 1
        _check_region(key, rec, r, problems)


def _check_files(corpus: Path, shard_rows: list[tuple], problems: list[str]) -> None:
    """Files the markers do not account for: stray or leftover shards, manifests of units without a marker
    (an unfinished unit that a consumer would read half of), temporaries of a killed build."""
    listed = {row[0] for row in shard_rows}
    for p in sorted((corpus / "shards").rglob("*.tar")):
        rel = p.relative_to(corpus).as_posix()
        if rel not in listed:
            problems.append(f"{rel}: stray shard, in no unit marker (left by another build, or copied in)")
    markers = {p.relative_to(corpus / "manifests" / "units").with_suffix("").as_posix()
               for p in (corpus / "manifests" / "units").glob("*/*.json")}  # fmt: skip
    for kind in ("samples", "regions", "sources", "rejects"):
        for p in sorted((corpus / "manifests" / kind).glob("*/[0-9]*.parquet")):
            unit = p.relative_to(corpus / "manifests" / kind).with_suffix("").as_posix()
            if unit not in markers:
                problems.append(f"manifests/{kind}/{unit}.parquet: unit {unit} has no marker (unfinished)")
    for p in sorted(corpus.rglob(".*.tmp-*")):
        problems.append(f"{p.relative_to(corpus).as_posix()}: temporary file of an interrupted build")


def _check_indexes(corpus: Path, counts: dict[str, int], problems: list[str]) -> None:
    """sizes.json (root and per folder) and the wids indexes against the samples counted in the shards."""
    try:
        sizes = load_json(corpus / "sizes.json")
    except (OSError, ValueError) as e:
        problems.append(f"sizes.json: unreadable: {type(e).__name__}: {e}")
        sizes = {}
    expected = {path.removeprefix("shards/"): n for path, n in counts.items()}
    if sizes != expected:
        wrong = sorted(k for k in set(sizes) | set(expected) if sizes.get(k) != expected.get(k))
        problems.append(
            f"sizes.json: {len(wrong)} entries differ from the shards, e.g. {wrong[0]}: "
            f"{sizes.get(wrong[0])} listed, {expected.get(wrong[0])} in the shard"
        )
    by_dir: dict[str, dict[str, int]] = {}
    for path, n in counts.items():
        d, _, name = path.rpartition("/")
        by_dir.setdefault(d, {})[name] = n
    for d, want in sorted(by_dir.items()):
        try:
            got = load_json(corpus / d / "sizes.json")
        except (OSError, ValueError):
            got = None
        if got != want:
            problems.append(f"{d}/sizes.json: does not list the folder's shards and their sample counts")
    for index in sorted(corpus.glob("wids-*.json")):
        try:
            listed = {e["url"]: e["nsamples"] for e in load_json(index)["shardlist"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{index.name}: unreadable: {type(e).__name__}: {e}")
            continue
        split = index.stem.removeprefix("wids-")
        want = {p: n for p, n in counts.items() if p.split("/")[2:3] == [split]}
        if listed != want:
            problems.append(f"{index.name}: its shard list or counts differ from the shards")


def _check_leakage(con: duckdb.DuckDBPyConnection, problems: list[str]) -> None:
    """No exact duplicate image on two sides of a split (the build moves such patients, ``corpus.split``)."""
    rows = con.execute(
        "SELECT pixel_sha256, list(DISTINCT split ORDER BY split), min(key) FROM samples "
        "GROUP BY pixel_sha256 HAVING count(DISTINCT split) > 1 ORDER BY 3"
    ).fetchall()
    if rows:
        _, splits, key = rows[0]
        problems.append(
            f"{len(rows)} exact duplicate image(s) span two splits, e.g. {key} ({', '.join(splits)})"
        )


def check_corpus(corpus: Path) -> CheckReport:
    """Everything a consumer relies on, re-derived from the bytes on disk: shards against their markers'
    size and sha256, every record against the JSON schema, the samples manifest and the region invariants
    of DESIGN §4, the indexes (sizes.json, wids) against the shards, files no marker accounts for, and
    duplicates across splits."""
    corpus = open_corpus(corpus)  # a folder or an object-storage prefix, read in place
    report = CheckReport()
    problems = report.problems
    validator = jsonschema.Draft202012Validator(load_sample_json_schema())
    con = connect(corpus)
    try:
        manifest = {
            k: (s, n, sp)
            for k, s, n, sp in con.execute("SELECT key, shard, n_regions, split FROM samples").fetchall()
        }
        n_region_rows = con.execute("SELECT count(*) FROM regions").fetchone()[0]
        shard_rows = con.execute("SELECT path, n_samples, bytes, sha256 FROM shards ORDER BY path").fetchall()
        _check_leakage(con, problems)
    except duckdb.Error as e:  # a damaged manifest or marker: nothing else can be checked against them
        problems.append(f"manifests or unit markers unreadable: {' '.join(str(e).split())[:300]}")
        return report
    finally:
        con.close()
    _check_files(corpus, shard_rows, problems)
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for path, n_samples, size, sha in shard_rows:
        report.shards += 1
        p = corpus / path
        if not p.is_file():
            problems.append(f"{path}: shard missing")
            continue
        data = p.read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            problems.append(f"{path}: size or sha256 differs from its unit marker")
        count = 0
        last = ""
        try:
            for key, members in iter_samples(data):
                count += 1
                report.samples += 1
                if key <= last:
                    problems.append(f"{path}: key {key} out of order")
                last = key
                try:
                    _check_sample(path, key, members, validator, manifest, report)
                    seen.add(key)
                except (ValueError, OSError) as e:  # undecodable JSON or PNG: report, keep checking
                    problems.append(f"{key}: unreadable member: {type(e).__name__}: {e}")
        except (tarfile.TarError, OSError) as e:
            problems.append(f"{path}: unreadable tar: {e}")
        counts[path] = count
        if count != n_samples:
            problems.append(f"{path}: {count} samples, marker says {n_samples}")
    missing = set(manifest) - seen
    if missing:
        problems.append(f"{len(missing)} manifest samples are in no shard, e.g. {sorted(missing)[0]}")
    if n_region_rows != report.regions:
        problems.append(f"regions manifest has {n_region_rows} rows, shards hold {report.regions} regions")
    _check_indexes(corpus, counts, problems)
    build = load_json(corpus / "build.json")
    if build["totals"]["samples"] != report.samples or build["totals"]["regions"] != report.regions:
        problems.append(
            f"build.json totals {build['totals']['samples']}/{build['totals']['regions']} differ from the shards"
        )
    return report
