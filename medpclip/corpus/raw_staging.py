"""A raw root in object storage (``--raw-root s3://bucket/prefix``, any fsspec URL): readers still read local
files, so the build brings the raw files to them, twice over.

- **Planning (driver): the discovery skeleton.** Discovery lists folders, reads tables and text, and reads
  DICOM headers; it never decodes pixels. So the driver lists each dataset's prefix (``fs.find``: key, size,
  ETag) and mirrors it in a local cache folder (``$MEDPCLIP_CACHE/raw-skeleton/<sha of the URL>/``, else
  ``~/.cache/medpclip/…``) where every object is a file of its real size: tables and text (csv, tsv, json,
  jsonl, txt, xml, yaml, xlsx, also gzipped) and anything up to 1 MiB are downloaded whole; a larger object
  gets its first 64 KiB (one range read: the headers of PNG, JPEG, NIfTI, MHA, NRRD) — a DICOM file its whole
  header up to the pixel data, however long — and a sparse remainder (a hole, no disk). Discovery runs on the
  skeleton unchanged, and unit fingerprints use sizes, so a POSIX build and this one plan the same units. A
  second build refreshes the skeleton: an object whose size and ETag are unchanged is kept, a changed one is
  fetched again, a vanished one removed.
- **Each unit (worker): staging.** The unit's ``item.files`` — exactly those — are downloaded into a
  temporary folder on the node's own disk (same relative paths), the unit runs with that folder as its raw
  root, and the folder is deleted. A file a reader needs and the item does not list is absent there, so it
  is a visible reject, never fetched from elsewhere; an object gone since planning is a ``missing_file``
  reject. Manifests record paths relative to the raw root, as on POSIX: the bytes are the POSIX build's.

Credentials and endpoint come from the filesystem library's standard environment (``storage``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from medpclip.faults import fault_point
from medpclip.fileio import atomic_write_json, load_json
from medpclip.frame import SourceItem
from medpclip.storage import StorageError, corpus_path, location_str

log = logging.getLogger("medpclip.build")

HEAD_BYTES = 64 * 2**10  # a range read's worth: every header discovery reads but DICOM's fits
WHOLE_BYTES = 2**20  # below this a range read saves nothing worth a second code path
WHOLE_BYTES_ENV = "MEDPCLIP_RAW_WHOLE_BYTES"  # overrides WHOLE_BYTES (0: only tables and text whole)
# What discovery reads whole (index files, tables, split lists, reports), also compressed.
WHOLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".txt", ".xml", ".yaml", ".yml", ".xlsx")
_COMPRESSED = (".gz", ".bz2", ".xz", ".zip")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
_BATCH = 256  # objects per concurrent request batch (bounded memory: ≤ 256 × 1 MiB)
_STATE_VERSION = 1


@dataclass(frozen=True)
class Skeleton:
    """The local stand-in of a raw URL for discovery, and what refreshing it cost."""

    root: Path
    objects: int
    fetched: int
    removed: int
    bytes_fetched: int


def whole_bytes() -> int:
    return int(os.environ.get(WHOLE_BYTES_ENV) or WHOLE_BYTES)


def skeleton_base() -> Path:
    from medpclip.text.kb import cache_root  # the one cache rule ($MEDPCLIP_CACHE, XDG, ~/.cache)

    return cache_root() / "raw-skeleton"


def _key_of(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def skeleton_dir(url: str) -> Path:
    return skeleton_base() / _key_of(url)


def _reads_whole(rel: str) -> bool:
    name = rel.lower()
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    return name.endswith(WHOLE_SUFFIXES)


def _safe_rel(rel: str) -> bool:
    """A key that is a plain relative POSIX path (no '..', no empty or '.' parts): the only ones a local
    folder can hold at the same relative path."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _etag(info: dict[str, Any]) -> str:
    for k in ("ETag", "etag", "md5Hash", "crc32c", "LastModified", "mtime"):
        if info.get(k) is not None:
            return str(info[k])
    return ""


def _listing(fs, base: str, dataset_root: str) -> dict[str, tuple[int, str]]:
    """Every object under ``base/dataset_root/`` → (size, ETag), by key relative to ``base``."""
    prefix = f"{base}/{dataset_root}".rstrip("/")
    fs.invalidate_cache(prefix)  # a long-lived process (``medpclip serve``) must see today's bucket
    try:
        found = fs.find(prefix, detail=True)
    except FileNotFoundError:
        return {}
    out: dict[str, tuple[int, str]] = {}
    for path, info in sorted(found.items()):
        path = path.rstrip("/") if info.get("type") == "directory" else path
        if info.get("type", "file") != "file" or path.endswith("/"):
            continue  # folder markers: a folder exists locally where its objects do
        rel = path[len(base) + 1 :] if base else path
        if rel != dataset_root and not rel.startswith(f"{dataset_root}/"):
            continue  # 'Task03_Liver/…' when listing 'Task03'
        if not _safe_rel(rel):
            log.warning(
                "raw object %r has no local path (empty, '.' or '..' parts): not seen by discovery", rel
            )
            continue
        out[rel] = (int(info.get("size") or 0), _etag(info))
    return out


def materialise(location: str, dataset_roots: Iterable[str]) -> Skeleton:
    """Create or refresh the discovery skeleton of the raw URL ``location`` for these dataset folders."""
    path = corpus_path(location)
    url = location_str(path).rstrip("/")
    fs, base = path.fs, path.path.rstrip("/")
    root = skeleton_dir(url)
    root.mkdir(parents=True, exist_ok=True)
    state_file = root.with_suffix(".json")
    # One refresh of a skeleton at a time (two builds of the same raw URL on one driver machine).
    with open(root.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = _load_state(state_file, url, whole_bytes())
        fetched = removed = nbytes = n = 0
        for dataset_root in sorted(set(dataset_roots)):
            listing = _listing(fs, base, dataset_root)
            n += len(listing)
            # Gone from the bucket: gone from discovery. The local tree is walked, not the state, so files of an
            # older state (or a refresh killed halfway: '.part' files) cannot linger as ghosts.
            local = _local_files(root, dataset_root)
            for rel in sorted(local - set(listing)):
                _unlink(root / rel)
                state.pop(rel, None)
                removed += not PurePosixPath(rel).name.startswith(".")
            for rel in [r for r in state if r.startswith(f"{dataset_root}/") and r not in listing]:
                del state[rel]
            stale = [
                rel
                for rel, (size, etag) in listing.items()
                if state.get(rel) != [size, etag] or not _has_size(root / rel, size)
            ]
            for rel in stale:
                state.pop(rel, None)  # refetched now; a kill halfway refetches it next time
            got = _fetch(fs, base, root, {rel: listing[rel][0] for rel in stale})
            for rel, size in got.items():
                state[rel] = list(listing[rel])
                nbytes += size
            fetched += len(got)
            _prune_empty(root / dataset_root)
        doc = {"version": _STATE_VERSION, "url": url, "whole_bytes": whole_bytes(), "objects": state}
        atomic_write_json(state_file, doc)
    log.info(
        "raw skeleton %s: %d objects, %d fetched (%d bytes), %d removed", root, n, fetched, nbytes, removed
    )
    return Skeleton(root, n, fetched, removed, nbytes)


def _load_state(state_file: Path, url: str, whole: int) -> dict[str, list]:
    """rel → [size, ETag] of the objects the skeleton holds; empty (everything fetched again) when it was
    made another way (another threshold for whole downloads: a head-only file would stay head-only)."""
    try:
        doc = load_json(state_file)
    except (OSError, ValueError):
        return {}
    if (doc.get("version"), doc.get("url"), doc.get("whole_bytes")) != (_STATE_VERSION, url, whole):
        return {}
    return dict(doc.get("objects") or {})


def _local_files(root: Path, dataset_root: str) -> set[str]:
    folder = root / dataset_root
    if folder.is_file():
        return {dataset_root}
    return {p.relative_to(root).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _has_size(p: Path, size: int) -> bool:
    try:
        return p.is_file() and p.stat().st_size == size
    except OSError:
        return False


def _unlink(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
        p.unlink()


def _prune_empty(folder: Path) -> None:
    """Folders left empty by removed objects: an object store has no empty folders, so neither does this."""
    if not folder.is_dir():
        return
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()  # only succeeds when empty
    with contextlib.suppress(OSError):
        folder.rmdir()


def _fetch(fs, base: str, root: Path, sizes: dict[str, int]) -> dict[str, int]:
    """Fetch what the skeleton needs of each object; returns rel → bytes fetched for those written (an
    object that vanished since the listing is left out: discovery will not see it)."""
    written: dict[str, int] = {}
    limit = whole_bytes()
    whole = sorted(r for r, s in sizes.items() if s <= limit)
    big_whole = sorted(r for r, s in sizes.items() if s > limit and _reads_whole(r))
    heads = sorted(r for r, s in sizes.items() if s > limit and not _reads_whole(r))
    for start in range(0, len(whole), _BATCH):
        batch = whole[start : start + _BATCH]
        # cat_ranges, not cat: cat expands glob characters ('[', '*') that real file names hold
        paths = [f"{base}/{r}" for r in batch]
        data = fs.cat_ranges(paths, [None] * len(batch), [None] * len(batch), on_error="return")
        for rel, got in zip(batch, data, strict=True):
            if _fetched(rel, got) and _write(root, rel, got, sizes[rel]):
                written[rel] = len(got)
    for rel in big_whole:  # large tables (a COCO JSON): streamed to disk, never whole in memory
        target = root / rel
        if not _prepare_parent(target):
            continue
        tmp = target.with_name(f".{target.name}.part")
        try:
            fs.get_file(f"{base}/{rel}", str(tmp))
        except FileNotFoundError:
            continue
        os.replace(tmp, target)
        written[rel] = sizes[rel]
    for start in range(0, len(heads), _BATCH):
        batch = heads[start : start + _BATCH]
        paths = [f"{base}/{r}" for r in batch]
        data = fs.cat_ranges(paths, [0] * len(batch), [HEAD_BYTES] * len(batch), on_error="return")
        for rel, head in zip(batch, data, strict=True):
            if not _fetched(rel, head):
                continue
            if _is_dicom(rel, head):
                head = _dicom_header(fs, f"{base}/{rel}", head, sizes[rel])
            if _write(root, rel, head, sizes[rel]):
                written[rel] = len(head)
    return written


def _fetched(rel: str, got: object) -> bool:
    """True for bytes; False for an object gone since the listing; any other failure is one line."""
    if isinstance(got, bytes):
        return True
    if isinstance(got, FileNotFoundError):
        return False
    assert isinstance(got, BaseException), type(got)
    raise StorageError(f"{rel}: cannot download ({type(got).__name__}: {_first_line(got)})")


def _prepare_parent(target: Path) -> bool:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():  # 'a/b' is an object and a prefix of others: a folder wins, as it must locally
            raise IsADirectoryError(str(target))
        return True
    except OSError:
        log.warning("raw object %s clashes with a folder of the same name: not seen by discovery", target)
        return False


def _write(root: Path, rel: str, data: bytes, size: int) -> bool:
    """The file ``rel`` with ``data`` first and a hole up to ``size`` (sparse: no disk for what is not read),
    under a temporary name then renamed (a killed refresh never leaves a short file under the final name)."""
    target = root / rel
    if not _prepare_parent(target):
        return False
    tmp = target.with_name(f".{target.name}.part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.truncate(max(size, len(data)))
    os.replace(tmp, target)
    return True


# --- DICOM headers ---------------------------------------------------------------------------------------
# DICOM discovery parses every header up to the pixel data; a header can be far longer than 64 KiB (an
# enhanced multi-frame file's per-frame groups, a SEG's references). The skeleton holds the exact bytes the
# parse reads, found by parsing: a read past what was fetched asks for more (a doubled range read).


class _NeedMore(BaseException):  # noqa: N818 — control flow past pydicom's own `except Exception`
    pass


class _Head(io.RawIOBase):
    def __init__(self, data: bytes, complete: bool):
        self.data, self.complete, self.pos, self.furthest = data, complete, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: len(self.data) + offset}[whence]
        return self.pos

    def read(self, n: int | None = -1) -> bytes:
        if not self.complete and (n is None or n < 0 or self.pos + n > len(self.data)):
            raise _NeedMore
        end = len(self.data) if n is None or n < 0 else self.pos + n
        chunk = self.data[self.pos : end]
        self.pos += len(chunk)
        self.furthest = max(self.furthest, self.pos)
        return chunk

    def readinto(self, b) -> int:
        chunk = self.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def _is_dicom(rel: str, head: bytes) -> bool:
    """As the DICOM readers decide (``sources.dicom.files.is_dicom_path``): a DICOM suffix, or none / an
    all-digit one and the DICM preamble."""
    suffix = PurePosixPath(rel).suffix.lower()
    if suffix in _DICOM_SUFFIXES:
        return True
    return (suffix == "" or suffix[1:].isdigit()) and head[128:132] == b"DICM"


def _dicom_header(fs, path: str, head: bytes, size: int) -> bytes:
    """The first bytes of a DICOM object up to where a header-only parse stops (at least ``head``); the
    whole object when the parse fails, so discovery meets the same error as on POSIX."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    while True:
        complete = len(head) >= size
        try:
            for force in (False, True):
                f = _Head(head, complete)
                try:
                    pydicom.dcmread(f, stop_before_pixels=True, force=force)
                    return head[: max(HEAD_BYTES, f.furthest)]
                except InvalidDicomError:
                    continue
            return head  # not DICOM after all: discovery reads no more of it than its preamble
        except _NeedMore:
            extra = fs.cat_file(path, start=len(head), end=min(size, 2 * len(head)))
            head += extra
            if not extra:
                return head
        except Exception:  # noqa: BLE001 — a damaged header: the whole file, discovery says what is wrong
            return head if complete else fs.cat_file(path)


# --- per unit, on the worker -----------------------------------------------------------------------------

_STAGE_PREFIX = "medpclip-raw-"


def _remove_orphans() -> None:
    """Staging folders of workers that were killed (SIGKILL runs no cleanup; the folder name carries the
    worker's pid): a node that loses many workers must not fill its disk with their raw files."""
    import shutil

    tmp = Path(tempfile.gettempdir())
    for d in tmp.glob(f"{_STAGE_PREFIX}*-*"):
        pid = d.name[len(_STAGE_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def staged(location: str, items: Iterable[SourceItem]) -> Iterator[Path]:
    """A temporary node-local raw root holding exactly the files ``items`` list, downloaded from the raw URL
    ``location``; removed on exit. An object that is not there (vanished since planning) is simply absent:
    the unit makes it a ``missing_file`` reject. Any other storage failure stops the unit with a
    :class:`StorageError` (one line), never a half-read case."""
    path = corpus_path(location)
    fs, base = path.fs, path.path.rstrip("/")
    rels = sorted({f.path for item in items for f in item.files if _safe_rel(f.path)})
    _remove_orphans()
    with tempfile.TemporaryDirectory(prefix=f"{_STAGE_PREFIX}{os.getpid()}-") as stage:
        local = Path(stage)

        def get(rel: str) -> None:
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get_file(f"{base}/{rel}", str(target))
            except FileNotFoundError:
                _unlink(target)  # a partial file would read as a damaged one
                return
            except Exception as e:  # noqa: BLE001 — botocore and aiohttp raise their own classes
                _unlink(target)
                raise StorageError(
                    f"{location_str(path)}/{rel}: cannot download ({type(e).__name__}: {_first_line(e)}): "
                    "check AWS_ENDPOINT_URL, the credentials and the network"
                ) from None
            fault_point("raw.fetch")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(get, rels))
        yield local


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] if text else type(e).__name__
