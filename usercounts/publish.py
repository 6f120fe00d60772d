"""Publish the built marts by atomically replacing the warehouse file analysts read.

Analysts hold read-only connections to the published file. DuckDB lets them keep reading
their snapshot while the file is replaced by rename, and new connections see the new file.
So the run never opens the published file for writing: dbt builds the published schemas in
a file of their own (usercounts.workdb), and the run copies that file beside the published
one and renames the copy over it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb

from usercounts import workdb
from usercounts.pause import pause_point


def publish(work_path: Path, published_path: Path) -> list[str]:
    """Copy the working copy of the published schemas into place; return its tables."""
    source = workdb.marts_path(work_path)
    # The run closed the file after a checkpoint: a log beside it would hold changes the
    # copy would miss.
    source_wal = source.with_name(source.name + ".wal")
    if source_wal.exists():
        raise RuntimeError(f"the built marts still have a write-ahead log: {source_wal}")
    published_path.parent.mkdir(parents=True, exist_ok=True)
    staging = published_path.with_name(f".{published_path.name}.publishing")
    for leftover in (staging, staging.with_name(staging.name + ".wal")):
        leftover.unlink(missing_ok=True)

    shutil.copyfile(source, staging)
    pause_point("publish:copied")
    with duckdb.connect(str(staging), read_only=True) as con:
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() "
            "where schema_name in (select unnest(?)) order by 1, 2",
            [list(workdb.PUBLISHED_SCHEMAS)],
        ).fetchall()
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
