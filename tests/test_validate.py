"""`medpclip validate` (issue 7): copies of the demo corpus corrupted in several ways, each caught with a
readable message and exit code 1; the intact corpus passes with exit code 0."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from medpclip.cli import app
from medpclip.corpus.shards import TAR_MTIME
from medpclip.regions import decode_rle

pytestmark = pytest.mark.slow
runner = CliRunner()


def _first_shard(out: Path, dataset: str = "demo_ct") -> Path:
    return sorted((out / "shards" / dataset).rglob("*.tar"))[0]


def flip_a_byte(out: Path) -> None:
    p = _first_shard(out)
    data = bytearray(p.read_bytes())
    data[700] ^= 0xFF
    p.write_bytes(bytes(data))


def delete_a_shard(out: Path) -> None:
    _first_shard(out, "demo_polyp").unlink()


def bbox_not_the_tight_box(out: Path) -> None:
    """Rewrite one sample record inside its tar: its first mask region's bbox grows by a pixel."""
    p = _first_shard(out)
    with tarfile.open(p) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        done = False
        for info, data in members:
            if not done and info.name.endswith(".json"):
                rec = json.loads(data)
                region = next((r for r in rec["regions"] if "mask_rle" in r), None)
                if region is not None:
                    assert list(region["bbox"]) != [0, 0, rec["width"], rec["height"]]
                    assert decode_rle(region["mask_rle"]).shape == (rec["height"], rec["width"])
                    x0, y0, x1, y1 = region["bbox"]
                    region["bbox"] = [x0, y0, min(x1 + 1, rec["width"]), y1] if x1 < rec["width"] else [
                        max(x0 - 1, 0), y0, x1, y1]  # fmt: skip
                    data = (json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n").encode()
                    info.size = len(data)
                    done = True
            info.mtime = TAR_MTIME
            t.addfile(info, io.BytesIO(data))
    assert done
    p.write_bytes(buf.getvalue())


def drop_a_manifest_row(out: Path) -> None:
    p = sorted((out / "manifests" / "samples" / "demo_cxr").glob("*.parquet"))[0]
    table = pq.read_table(p)
    pq.write_table(table.slice(1), p, compression="zstd")


def change_sizes_json(out: Path) -> None:
    """Move one sample's count from one shard to another: the total still adds up."""
    p = out / "sizes.json"
    sizes = json.loads(p.read_text())
    a, b = sorted(sizes)[:2]
    sizes[a] += 1
    sizes[b] -= 1
    p.write_text(json.dumps(sizes, sort_keys=True))


def remove_a_marker(out: Path) -> None:
    sorted((out / "manifests" / "units" / "demo_ct").glob("*.json"))[1].unlink()


def add_a_stray_tar(out: Path) -> None:
    shutil.copy(_first_shard(out, "demo_cxr"), out / "shards" / "demo_cxr" / "train" / "train-00042-00.tar")


def leave_a_temporary(out: Path) -> None:
    (out / "shards" / "demo_cxr" / "train" / ".train-00000-00.tar.tmp-123").write_bytes(b"partial")


CORRUPTIONS: list[tuple[Callable[[Path], None], str]] = [
    (flip_a_byte, "size or sha256 differs from its unit marker"),
    (delete_a_shard, "shard missing"),
    (bbox_not_the_tight_box, "is not the tight box"),
    (drop_a_manifest_row, "not in the samples manifest"),
    (change_sizes_json, "sizes.json: 2 entries differ from the shards"),
    (remove_a_marker, "has no marker (unfinished)"),
    (add_a_stray_tar, "stray shard, in no unit marker"),
    (leave_a_temporary, "temporary file of an interrupted build"),
]


def _validate(out: Path):
    return runner.invoke(app, ["validate", "--corpus", str(out)])


def test_intact_corpus_validates(demo_corpus, tmp_path):
    out = tmp_path / "intact"
    shutil.copytree(demo_corpus.out, out)
    res = _validate(out)
    assert res.exit_code == 0, res.output
    assert "0 problems" in res.output


@pytest.mark.parametrize("corrupt, message", CORRUPTIONS, ids=[c.__name__ for c, _ in CORRUPTIONS])
def test_each_corruption_is_caught_with_a_readable_message(corrupt, message, demo_corpus, tmp_path):
    out = tmp_path / "corpus"
    shutil.copytree(demo_corpus.out, out)
    corrupt(out)
    res = _validate(out)
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())  # the console wraps long lines
    assert message in text, res.output
    problems = [p for p in text.split(" - ") if p]
    assert problems and "Traceback" not in text and all(len(p) < 400 for p in problems)
