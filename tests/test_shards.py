"""Tar shards: same samples → same bytes; read back by the webdataset library as complete samples."""

from __future__ import annotations

import hashlib
import tarfile

import pytest
import webdataset as wds

from medpclip.corpus.shards import TAR_MTIME, ShardWriter, iter_samples, write_indexes


def _samples(n):
    return [
        (
            f"ds_case{i:03d}_ax{i:04d}",
            {"png": bytes([i]) * (100 + i), "json": b'{"k":%d}\n' % i, "txt": b"cap"},
        )
        for i in range(n)
    ]


def _write(root, samples, max_bytes=1 << 30):
    w = ShardWriter(root, "shards/ds/train", "train", 3, max_bytes)
    for key, members in samples:
        w.write(key, members)
    return w.close()


def test_two_writes_give_identical_bytes(tmp_path):
    a = _write(tmp_path / "a", _samples(20))
    b = _write(tmp_path / "b", _samples(20))
    assert [s.sha256 for s in a] == [s.sha256 for s in b]
    for s in a:
        data = (tmp_path / "a" / s.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s.sha256 and len(data) == s.bytes


def test_members_fixed_metadata_and_order(tmp_path):
    (info,) = _write(tmp_path, _samples(3))
    assert info.path == "shards/ds/train/train-00003-00.tar" and info.n_samples == 3
    with tarfile.open(tmp_path / info.path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members][:3] == [
        "ds_case000_ax0000.json",
        "ds_case000_ax0000.png",
        "ds_case000_ax0000.txt",
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (TAR_MTIME, 0, 0, "", "", 0o644)
    }
    assert not list(tmp_path.rglob(".*tmp*"))


def test_parts_roll_at_sample_boundaries(tmp_path):
    shards = _write(tmp_path, _samples(30), max_bytes=8 * 1024)
    assert len(shards) > 1 and sum(s.n_samples for s in shards) == 30
    assert [s.path.rsplit("-", 1)[-1] for s in shards] == [f"{i:02d}.tar" for i in range(len(shards))]
    keys = [k for s in shards for k, _ in iter_samples(tmp_path / s.path)]
    assert keys == [k for k, _ in _samples(30)]


def test_keys_must_increase(tmp_path):
    w = ShardWriter(tmp_path, "shards/ds/train", "train", 0)
    w.write("b", {"txt": b"x"})
    with pytest.raises(ValueError, match="must increase"):
        w.write("a", {"txt": b"x"})


def test_webdataset_reads_complete_samples(tmp_path):
    shards = _write(tmp_path, _samples(12), max_bytes=4 * 1024)
    urls = [str(tmp_path / s.path) for s in shards]
    got = list(wds.WebDataset(urls, shardshuffle=False))
    assert [g["__key__"] for g in got] == [k for k, _ in _samples(12)]
    assert all({"png", "json", "txt"} <= set(g) for g in got)
    assert got[5]["png"] == bytes([5]) * 105


def test_indexes(tmp_path):
    shards = _write(tmp_path, _samples(12), max_bytes=4 * 1024)
    write_indexes(tmp_path, shards)
    import json

    sizes = json.loads((tmp_path / "sizes.json").read_text())
    assert sum(sizes.values()) == 12 and all(k.startswith("ds/train/") for k in sizes)
    local = json.loads((tmp_path / "shards/ds/train/sizes.json").read_text())
    assert set(local) == {s.path.rsplit("/", 1)[1] for s in shards}
    wids = json.loads((tmp_path / "wids-train.json").read_text())
    assert sum(s["nsamples"] for s in wids["shardlist"]) == 12
