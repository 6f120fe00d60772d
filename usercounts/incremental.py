"""When a run may add to the working database, and when it must rebuild it from scratch.

The working database keeps what earlier runs loaded (raw.*) and built (the incremental dbt
models). A run adds to it only when that is certain to give what a rebuild from the landing
folder would give; in every other case it rebuilds. The rules (docs/operations.md):

- A run writes the marker file `.<stem>.work.unfinished` before it touches the working
  database and removes it only after dbt built everything and the build is recorded in
  `raw.builds`. A run that finds the marker (the last one was killed, or failed while
  loading, checking the raw layer or building) rebuilds from scratch.
- It also rebuilds when asked (`--full-refresh`), when the dbt project, the raw checks that
  keep counts or the raw layout changed since the last build (see PROJECT_INPUTS), when
  the landing folder is another one, and when landing files changed in a way
  `usercounts.load.landing_changes` names.
- A run whose as-of date is earlier than the last build's reloads nothing but rebuilds
  every dbt model (`dbt build --full-refresh`) from the rows already loaded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import duckdb

from usercounts import workdb
from usercounts.config import PROJECT_ROOT
from usercounts.publish import fsync_path

# Bump when the tables the load writes change shape: working databases built before
# rebuild. (The shapes of the models and of the raw checks' kept counts are in their files.)
WORK_LAYOUT_VERSION = 1
# What the incremental models, and the raw checks that keep counts of the rows they
# checked, are made of: a change to any of these rebuilds the working database.
PROJECT_INPUTS = (
    "dbt_project.yml",
    "profiles.yml",
    "models",
    "macros",
    "seeds",
    "expectations/checks/_macros.sql",
    "expectations/checks/raw_access_events.sql",
    "expectations/checks/raw_last_seen.sql",
)

BUILDS_DDL = """
create table if not exists raw.builds (
    build_number integer not null,
    load_id bigint,
    as_of_date date not null,
    landing varchar not null,
    fingerprint varchar not null,
    full_refresh boolean not null,
    built_at timestamp not null default (now()::timestamp)
)
"""


@dataclass(frozen=True)
class Build:
    """The last successful build recorded in a working database."""

    load_id: int
    as_of_date: date
    landing: str
    fingerprint: str


def marker_path(work_path: Path) -> Path:
    """The file that says a run started on this working database and has not finished."""
    return work_path.with_name(f"{work_path.stem}.unfinished")


def mark_unfinished(work_path: Path) -> None:
    """Write the marker durably before the working database is touched."""
    marker = marker_path(work_path)
    marker.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_path(marker.parent)


def clear_unfinished(work_path: Path) -> None:
    """Remove the marker once the build is complete and recorded."""
    marker_path(work_path).unlink(missing_ok=True)
    fsync_path(work_path.parent)


def fingerprint(inputs: tuple[str, ...] = PROJECT_INPUTS) -> str:
    """A hash of everything the working database's kept tables depend on besides the data:
    the project inputs above (or the files given), the layout version and the tool versions."""
    digest = hashlib.sha256(f"layout {WORK_LAYOUT_VERSION}\n".encode())
    for package in ("duckdb", "dbt-core", "dbt-duckdb"):
        try:
            digest.update(f"{package} {version(package)}\n".encode())
        except PackageNotFoundError:
            digest.update(f"{package} -\n".encode())
    for name in inputs:
        root = PROJECT_ROOT / name
        paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in paths:
            if path.exists():
                digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def last_build(con: duckdb.DuckDBPyConnection) -> Build | None:
    """The last build recorded in the working database (None before the first one)."""
    exists = con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'raw' and table_name = 'builds'"
    ).fetchone()[0]
    if not exists:
        return None
    row = con.execute(
        "select coalesce(load_id, 0), as_of_date, landing, fingerprint from raw.builds "
        "order by build_number desc limit 1"
    ).fetchone()
    return Build(int(row[0]), row[1], row[2], row[3]) if row else None


def reload_reason(work_path: Path, landing: Path, full_refresh: bool) -> str | None:
    """Why this run must start from an empty working database (None: it can add to it).

    Landing-file changes are found while loading (usercounts.load.landing_changes).
    """
    if full_refresh:
        return "full refresh requested"
    if not work_path.exists():
        return "first build of this warehouse"
    if not workdb.marts_path(work_path).exists():
        return "the working copy of the marts is missing"
    if marker_path(work_path).exists():
        return "the previous run did not finish"
    try:
        # through workdb.connect: a damaged working copy of the marts rebuilds as well
        with workdb.connect(work_path, read_only=True) as con:
            build = last_build(con)
    except duckdb.Error as exc:
        return f"the working database cannot be read ({str(exc).splitlines()[0]})"
    if build is None:
        return "no complete build in the working database"
    if build.fingerprint != fingerprint():
        return "the dbt project, the raw checks or the tool versions changed since the last build"
    if build.landing != str(landing.resolve()):
        return f"the landing folder changed (was {build.landing})"
    return None


def record_build(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    landing: Path,
    full_refresh: bool,
    project_fingerprint: str,
) -> None:
    """Append this successful build to raw.builds (the loads it includes, its as-of date, and
    the fingerprint of the project as it was when the build started)."""
    con.execute(BUILDS_DDL)
    con.execute(
        "insert into raw.builds (build_number, load_id, as_of_date, landing, fingerprint, "
        "full_refresh) select coalesce((select max(build_number) from raw.builds), 0) + 1, "
        "(select max(load_id) from raw.loaded_files), ?, ?, ?, ?",
        [as_of, str(landing.resolve()), project_fingerprint, full_refresh],
    )
    con.execute("checkpoint")
