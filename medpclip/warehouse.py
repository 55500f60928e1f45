"""DuckDB over a corpus: the views of ``warehouse/views.sql`` on the Parquet manifests and unit markers.

Nothing is copied: a view reads the manifests where the build left them, so a query sees the corpus as it
is on disk (and a resumed or incremental build is visible at once).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import duckdb

from medpclip.storage import StorageError, check_location, corpus_path, filesystem, location_str
from medpclip.text.kb import KB_PATH

# ``medpclip/sql`` links to the repository's ``warehouse/`` (a real folder in a built wheel).
VIEWS_SQL = Path(str(resources.files("medpclip").joinpath("sql", "views.sql")))
VIEWS = ("samples", "regions", "sources", "rejects", "units", "shards", "concepts")


class CorpusError(ValueError):
    """The directory is not a finished corpus; the message says what is missing."""


class CorpusUnreachable(CorpusError):
    """The corpus's object store cannot be read (endpoint, credentials, bucket): the CLI exits 1."""


def _sql_path(location: str) -> str:
    return location.replace("'", "''")


def open_corpus(corpus: str | Path):
    """The corpus location as a path object (a folder, or an object-storage prefix), checked to be a
    finished corpus; :class:`CorpusError` with one line otherwise (unreachable store, no build.json)."""
    path = corpus_path(corpus)
    try:
        check_location(path)
    except StorageError as e:
        raise CorpusUnreachable(str(e)) from None
    if isinstance(path, Path):
        path = path.resolve()
    if not (path / "build.json").is_file():
        raise CorpusError(
            f"'{location_str(path)}' is not a corpus (no build.json; run `medpclip build` first)"
        )
    return path


def connect(corpus: str | Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the corpus views (and ``metrics`` once an evaluation wrote some). A corpus in
    object storage is read in place through its fsspec filesystem, registered with DuckDB."""
    corpus = open_corpus(corpus)
    con = duckdb.connect(database)
    fs = filesystem(corpus)
    if fs is not None:
        con.register_filesystem(fs)
    root = location_str(corpus)
    sql = VIEWS_SQL.read_text(encoding="utf-8").replace("{corpus}", _sql_path(root))
    con.execute(sql.replace("{kb}", _sql_path(KB_PATH.as_posix())))
    metrics = corpus / "metrics"
    if any(metrics.glob("*.parquet")):
        con.execute(
            f"CREATE OR REPLACE VIEW metrics AS SELECT * FROM read_parquet('{_sql_path(root)}/metrics/*.parquet', union_by_name = true)"
        )
    return con


def query(corpus: str | Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one SQL statement against the corpus views; returns column names and rows."""
    con = connect(corpus)
    try:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        return columns, cur.fetchall()
    finally:
        con.close()
