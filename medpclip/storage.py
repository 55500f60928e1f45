"""Where a corpus lives: a local folder, or a prefix in object storage (``s3://bucket/prefix``, ``gs://…``, any
fsspec URL), read in place.

A location string becomes a path object with pathlib's API either way: :class:`pathlib.Path` for a folder,
``upath.UPath`` (universal_pathlib over fsspec: ``s3fs``, ``gcsfs``…) for a URL, so the code that reads a
corpus (``warehouse``, ``corpus.inspect``) is the same for both. DuckDB reads the manifests through the same
fsspec filesystem (``register_filesystem``), so no DuckDB extension has to be downloaded.

Credentials and endpoint come from the standard environment of the filesystem's own library, never from
the command line: for S3 ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` (MinIO, a local S3 API), or a profile; for GCS the
application default credentials. :func:`check_location` turns the usual failures into one line that says what
to fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class StorageError(ValueError):
    """The corpus location cannot be read (unreachable endpoint, refused credentials, no such bucket)."""


class NothingThere(StorageError):
    """The store answered, and holds no such bucket or no object under the prefix."""


def is_url(location: str | os.PathLike) -> bool:
    """True for ``scheme://…`` locations other than ``file://``."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def corpus_path(location: str | os.PathLike) -> Any:
    """A pathlib-like path for a folder or an fsspec URL (a ``Path`` for folders, a ``UPath`` for URLs)."""
    if isinstance(location, Path) or not is_url(location):
        return Path(str(location).removeprefix("file://"))
    from upath import UPath

    return UPath(str(location))


def filesystem(path: Any):
    """The fsspec filesystem of a ``UPath`` (None for a local ``Path``)."""
    return None if isinstance(path, Path) else path.fs


def resolved(location: str | os.PathLike) -> str:
    """A location as a stable string: a URL as given, a folder as its absolute path."""
    return str(location) if is_url(location) else str(Path(location).resolve())


def open_url(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    """webdataset ``gopen`` handler for fsspec URLs (``s3://…``): the shard opened through the filesystem the
    corpus lives on, with its credentials from the standard environment."""
    import fsspec

    return fsspec.open(url, mode).open()


def register_webdataset_schemes() -> None:
    """Let webdataset open ``s3://`` shards (and the other fsspec object stores it has no handler for)."""
    from webdataset.gopen import gopen_schemes

    for scheme in ("s3", "gcs", "az", "abfs"):
        gopen_schemes.setdefault(scheme, open_url)


def location_str(path: Any) -> str:
    """The location as the user would write it (``s3://bucket/prefix``, or the folder path)."""
    return path.as_posix() if isinstance(path, Path) else str(path)


def check_location(path: Any) -> None:
    """Raise :class:`StorageError` with one actionable line when an object-storage location cannot be listed.
    A local path is never checked here (its readers say what is missing)."""
    if isinstance(path, Path):
        return
    where = location_str(path)
    try:
        path.fs.ls(path.path, detail=False)
    except FileNotFoundError:
        bucket = path.path.split("/", 1)[0]
        raise NothingThere(
            f"{where}: nothing there (no bucket '{bucket}' or no objects under the prefix): check the URL"
        ) from None
    except PermissionError as e:
        raise StorageError(
            f"{where}: access refused ({_first_line(e)}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "(or the profile) and the bucket's policy"
        ) from None
    except OSError as e:
        raise StorageError(_unreachable(where, e)) from None
    except Exception as e:  # noqa: BLE001 — botocore and friends raise their own classes for bad endpoints
        if "Credentials" in type(e).__name__:  # botocore's NoCredentialsError, PartialCredentialsError
            raise StorageError(
                f"{where}: no usable credentials ({type(e).__name__}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment"
            ) from None
        raise StorageError(_unreachable(where, e)) from None


def _unreachable(where: str, e: BaseException) -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the provider's default endpoint"
    return (
        f"{where}: cannot reach the object store at {endpoint} ({type(e).__name__}: {_first_line(e)}): "
        "check AWS_ENDPOINT_URL and the network"
    )


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] if text else type(e).__name__
