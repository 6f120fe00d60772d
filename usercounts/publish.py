"""Publish the built marts by atomically replacing the warehouse file analysts read.

Analysts hold read-only connections to the published file. DuckDB lets them keep reading
their snapshot while the file is replaced by rename, and new connections see the new file.
So the run never opens the published file for writing: it writes a complete, checkpointed
copy beside it and renames that copy over it.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from usercounts.pause import pause_point
from usercounts.state import attach_with_retry

# What analysts get: the marts, the quarantined rows, and the run's own record.
PUBLISHED_SCHEMAS = ("marts", "quarantine", "meta")


def publish(work_path: Path, published_path: Path) -> list[str]:
    """Copy the published schemas of the working database into place; return the tables."""
    published_path.parent.mkdir(parents=True, exist_ok=True)
    staging = published_path.with_name(f".{published_path.name}.publishing")
    for leftover in (staging, staging.with_name(staging.name + ".wal")):
        leftover.unlink(missing_ok=True)

    con = duckdb.connect(str(staging))
    try:
        attach_with_retry(con, work_path, "work", read_only=True)
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() "
            "where database_name = 'work' and schema_name in (select unnest(?)) "
            "order by 1, 2",
            [list(PUBLISHED_SCHEMAS)],
        ).fetchall()
        for schema in sorted({s for s, _ in tables}):
            con.execute(f"create schema if not exists {schema}")
        for schema, table in tables:
            # names come from our own catalog, never from data
            copy = f"create table {schema}.{table} as select * from work.{schema}.{table}"  # noqa: S608
            con.execute(copy)
        con.execute("detach work")
        pause_point("publish:copied")
        con.execute("checkpoint")
    finally:
        con.close()

    # A .wal left beside the new file would not match it; checkpoint + close leaves none.
    wal = staging.with_name(staging.name + ".wal")
    if wal.exists():
        raise RuntimeError(f"publishing left a write-ahead log behind: {wal}")
    fsync_path(staging)
    os.chmod(staging, 0o644)
    keep_previous(published_path)
    os.replace(staging, published_path)
    fsync_path(published_path.parent)
    return [f"{s}.{t}" for s, t in tables]


def previous_path(published_path: Path) -> Path:
    """Where the snapshot before the latest publish is kept (warehouse.previous.duckdb)."""
    return published_path.with_name(f"{published_path.stem}.previous{published_path.suffix}")


def keep_previous(published_path: Path) -> None:
    """Keep the current published file as the previous snapshot: a hard link, no copy.

    It is what to roll back to by hand if a published run turns out wrong (see
    docs/operations.md). On a filesystem without hard links nothing is kept.
    """
    if not published_path.exists():
        return
    previous = previous_path(published_path)
    linking = previous.with_name(f".{previous.name}.linking")
    linking.unlink(missing_ok=True)
    try:
        os.link(published_path, linking)
    except OSError:
        return
    os.replace(linking, previous)


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
