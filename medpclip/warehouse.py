"""DuckDB over a corpus: the views of ``warehouse/views.sql`` on the Parquet manifests and unit markers.

Nothing is copied: a view reads the manifests where the build left them, so a query sees the corpus as it
is on disk (and a resumed or incremental build is visible at once).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import duckdb

from medpclip.text.kb import KB_PATH

# ``medpclip/sql`` links to the repository's ``warehouse/`` (a real folder in a built wheel).
VIEWS_SQL = Path(str(resources.files("medpclip").joinpath("sql", "views.sql")))
VIEWS = ("samples", "regions", "sources", "rejects", "units", "shards", "concepts")


class CorpusError(ValueError):
    """The directory is not a finished corpus; the message says what is missing."""


def _sql_path(path: Path) -> str:
    return path.as_posix().replace("'", "''")


def connect(corpus: Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the corpus views (and ``metrics`` once an evaluation wrote some)."""
    corpus = Path(corpus).resolve()
    if not (corpus / "build.json").is_file():
        raise CorpusError(f"'{corpus}' is not a corpus (no build.json; run `medpclip build` first)")
    con = duckdb.connect(database)
    sql = VIEWS_SQL.read_text(encoding="utf-8").replace("{corpus}", _sql_path(corpus))
    con.execute(sql.replace("{kb}", _sql_path(KB_PATH)))
    metrics = corpus / "metrics"
    if any(metrics.glob("*.parquet")):
        con.execute(
            f"CREATE OR REPLACE VIEW metrics AS SELECT * FROM read_parquet('{_sql_path(metrics)}/*.parquet', union_by_name = true)"
        )
    return con


def query(corpus: Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one SQL statement against the corpus views; returns column names and rows."""
    con = connect(corpus)
    try:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        return columns, cur.fetchall()
    finally:
        con.close()
