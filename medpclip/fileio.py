"""Generic file helpers with no medpclip dependencies: the build's one JSON encoding, hashing, atomic writes.

Every file is written under a temporary name in the same directory and renamed when complete, so a final
name never holds a partial file. In object storage (a ``UPath`` from ``medpclip.storage``) there is no rename
and none is needed: an object PUT is all or nothing, so the object is written under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def stable_json(obj: Any) -> bytes:
    """The one JSON encoding used for every file the build writes: sorted keys, compact, UTF-8, newline."""
    return (
        json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
    ).encode()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (source volumes and checkpoints are large)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a whole file under a temporary name, then rename: readers see the old file or the new one."""
    if not isinstance(path, Path):  # an object store: one PUT, never visible half-written
        path.write_bytes(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, stable_json(obj))


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
