"""Deterministic WebDataset tar shards, and the small files that index them.

Same samples in, same bytes out: members sorted by key and contiguous per sample, fixed mtime/uid/gid/
owner names/mode, PAX format. Every file is written under a temporary name in the same directory and
renamed when complete, so a final name never holds a partial file.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from medpclip.faults import fault_point
from medpclip.fileio import atomic_write_json

TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z: fixed, and not 0, which some tools show as "missing"
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the corpus root
    n_samples: int
    bytes: int
    sha256: str


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class ShardWriter:
    """Writes samples of one (dataset, split, unit) into ``{split}-{unit:05d}-{part:02d}.tar`` parts.

    Keys must arrive in strictly increasing order; a new part starts at a sample boundary once the current
    part holds ``max_bytes``.
    """

    def __init__(self, root: Path, rel_dir: str, split: str, unit: int, max_bytes: int = DEFAULT_SHARD_BYTES):
        self.root = root
        self.rel_dir = rel_dir
        self.prefix = f"{split}-{unit:05d}"
        self.max_bytes = max_bytes
        self.shards: list[ShardInfo] = []
        self._part = -1
        self._tar: tarfile.TarFile | None = None
        self._file = None
        self._hash = None
        self._count = 0
        self._last_key: str | None = None

    def _rel(self, part: int) -> str:
        return f"{self.rel_dir}/{self.prefix}-{part:02d}.tar"

    def _roll(self) -> None:
        self._close_part()
        self._part += 1
        final = self.root / self._rel(self._part)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        self._file = open(self._tmp, "wb")
        self._hash = hashlib.sha256()
        self._tar = tarfile.open(
            fileobj=_HashingWriter(self._file, self._hash), mode="w", format=tarfile.PAX_FORMAT
        )
        self._count = 0

    def write(self, key: str, members: dict[str, bytes]) -> str:
        """Add one sample; returns the relative path of the shard it went to."""
        if self._last_key is not None and key <= self._last_key:
            raise ValueError(
                f"sample keys must increase within a shard writer: {key!r} after {self._last_key!r}"
            )
        if self._tar is None or self._file.tell() >= self.max_bytes:
            self._roll()
        shard = self._rel(self._part)
        for ext in sorted(members):
            data = members[ext]
            self._tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
        self._count += 1
        self._last_key = key
        fault_point("shard.sample")
        return shard

    def _close_part(self) -> None:
        if self._tar is None:
            return
        self._tar.close()  # writes the end-of-archive blocks through the hashing writer
        self._file.flush()
        os.fsync(self._file.fileno())
        size = self._file.tell()
        self._file.close()
        final = self.root / self._rel(self._part)
        fault_point("shard.close")
        os.replace(self._tmp, final)
        self.shards.append(ShardInfo(self._rel(self._part), self._count, size, self._hash.hexdigest()))
        self._tar = None

    def close(self) -> list[ShardInfo]:
        self._close_part()
        return self.shards


class _HashingWriter:
    """A write-only file object that hashes what passes through (tarfile only writes sequentially)."""

    def __init__(self, f, h):
        self._f, self._h = f, h

    def write(self, data: bytes) -> int:
        self._h.update(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()


def iter_samples(path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) of a shard, in file order. For checks and tools; training uses webdataset.
    ``path``: a local path, a ``UPath`` into object storage (``storage.corpus_path``), or the shard's bytes."""
    if isinstance(path, bytes):
        yield from _iter_tar(io.BytesIO(path))
        return
    with (Path(path) if isinstance(path, str) else path).open("rb") as f:
        yield from _iter_tar(f)


def _iter_tar(fileobj) -> Iterator[tuple[str, dict[str, bytes]]]:
    current: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=fileobj, mode="r") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, _, ext = info.name.partition(".")
            if key != current and current is not None:
                yield current, members
                members = {}
            current = key
            members[ext] = tar.extractfile(info).read()
    if current is not None:
        yield current, members


def read_sample(path: Path, key: str) -> dict[str, bytes]:
    for k, members in iter_samples(path):
        if k == key:
            return members
    raise KeyError(f"{key} not in {path}")


def write_indexes(root: Path, shards: list[ShardInfo]) -> None:
    """``sizes.json`` (open_clip's sample counts) at the root, keyed by path under ``shards/``, and one per
    shard directory keyed by file name, which is where open_clip's loader looks; plus a ``wids`` index per
    split (webdataset's indexed-dataset format) with URLs relative to the index file."""
    ordered = sorted(shards, key=lambda s: s.path)
    atomic_write_json(root / "sizes.json", {s.path.removeprefix("shards/"): s.n_samples for s in ordered})
    by_dir: dict[str, dict[str, int]] = {}
    by_split: dict[str, list[ShardInfo]] = {}
    for s in ordered:
        d, _, name = s.path.rpartition("/")
        by_dir.setdefault(d, {})[name] = s.n_samples
        by_split.setdefault(d.rsplit("/", 1)[-1], []).append(s)
    for d, sizes in by_dir.items():
        atomic_write_json(root / d / "sizes.json", sizes)
    for split, items in sorted(by_split.items()):
        index = {
            "__kind__": "wids-shard-index-v1",
            "wids_version": 1,
            "name": f"medpclip-{split}",
            "shardlist": [{"url": s.path, "nsamples": s.n_samples, "filesize": s.bytes} for s in items],
        }
        atomic_write_json(root / f"wids-{split}.json", index)
