"""The working database: two DuckDB files the run builds in, never opened by analysts.

`.<stem>.work.duckdb` holds what is loaded and worked on (raw, staging, intermediate, seeds);
`.<stem>.work.marts.duckdb` holds what gets published (the marts, quarantine and meta
schemas), so that publishing is a copy of that file rather than a copy of its tables (which
meant compressing millions of rows of text again on every run). dbt attaches the second
file as `work_marts` (profiles.yml); connect() does the same, so that the run's own SQL
keeps naming `marts.x`, `quarantine.x`, `meta.x` and `raw.x` alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from usercounts.state import attach_with_retry

# The alias dbt and connect() attach the published schemas' file under (profiles.yml).
MARTS_ALIAS = "work_marts"
PUBLISHED_SCHEMAS = ("marts", "quarantine", "meta")


def marts_path(work_path: Path) -> Path:
    """The working copy of the published warehouse, beside the working database."""
    return work_path.with_name(f"{work_path.stem}.marts{work_path.suffix}")


def files(work_path: Path) -> tuple[Path, ...]:
    """Every file of the working database (each DuckDB file and its write-ahead log)."""
    marts = marts_path(work_path)
    return tuple(p for f in (work_path, marts) for p in (f, f.with_name(f.name + ".wal")))


def remove(work_path: Path) -> None:
    """Delete the working database: the next load starts from an empty one."""
    work_path.parent.mkdir(parents=True, exist_ok=True)
    for path in files(work_path):
        path.unlink(missing_ok=True)


@contextmanager
def connect(work_path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """The working database with the published schemas' file attached and on the search
    path: `marts.x` names the table dbt built in that file, `raw.x` the one in this."""
    con = duckdb.connect(str(work_path), read_only=read_only)
    try:
        attach_with_retry(con, marts_path(work_path), MARTS_ALIAS, read_only=read_only)
        if not read_only:
            for schema in PUBLISHED_SCHEMAS:
                con.execute(f"create schema if not exists {MARTS_ALIAS}.{schema}")
        present = con.execute(
            "select list(schema_name) from duckdb_schemas() where database_name = ?",
            [MARTS_ALIAS],
        ).fetchone()[0]
        # a read-only connection before anything was built finds some schemas missing
        schemas = [f"{MARTS_ALIAS}.{s}" for s in PUBLISHED_SCHEMAS if s in present]
        search_path = ",".join(["main", *schemas])
        con.execute(f"set search_path = '{search_path}'")
        yield con
    finally:
        con.close()
