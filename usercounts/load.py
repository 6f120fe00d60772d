"""Load the landing folder into the `raw` schema of the working database.

Every contract column lands as text, so that a value that does not parse is quarantined by
the dbt staging layer with a reason instead of failing the read. Rows the CSV reader cannot
split at all (wrong column count, bad encoding) and files that cannot be read go to
`raw.load_rejects`. Reading is DuckDB's own CSV and Parquet readers, one file at a time,
because the CSV reader keeps rejected rows only for single-schema scans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from usercounts.config import SOURCES
from usercounts.pause import pause_point

# Columns per landing source (data-contract section 1), in contract order.
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "plans": (
        "plan_id",
        "org_id",
        "plan_name",
        "product_key",
        "plan_type",
        "billing_cycle",
        "user_tier",
        "renewal_date",
        "updated_at",
    ),
    "instances": ("instance_id", "plan_id", "instance_name", "site_url"),
    "users": ("user_id", "email", "display_name", "account_type", "is_billable"),
    "org_admins": ("org_id", "email", "display_name"),
    "access_events": ("event_id", "occurred_at", "instance_id", "user_id", "action"),
    "last_seen": ("instance_id", "user_id", "last_seen_at"),
}
FORMATS = {".csv": "csv", ".parquet": "parquet"}
# A CSV line longer than this is rejected as a row rather than failing the whole file.
MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass
class LoadSummary:
    """What one load read: rows per source, rejected rows, and the files seen."""

    rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    skipped_files: list[str] = field(default_factory=list)


def discover(landing: Path) -> dict[str, list[Path]]:
    """Landing files per source, in name order (the order nightly drops are named in)."""
    if not landing.is_dir():
        raise FileNotFoundError(f"landing folder {landing} does not exist")
    found: dict[str, list[Path]] = {}
    for source in SOURCES:
        folder = landing / source
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        found[source] = sorted(files, key=lambda p: p.relative_to(landing).as_posix())
    return found


def create_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the raw tables: one per source plus the shared reject and file logs."""
    con.execute("create schema if not exists raw")
    for source, columns in SOURCE_COLUMNS.items():
        cols = ", ".join(f"{c} varchar" for c in columns)
        con.execute(
            f"create or replace table raw.{source} ({cols}, _file_name varchar, _row_number bigint)"
        )
    con.execute(
        "create or replace table raw.load_rejects (source varchar, file_name varchar, "
        "row_number bigint, reason varchar, raw_line varchar)"
    )
    con.execute(
        "create or replace table raw.loaded_files (source varchar, file_name varchar, "
        "file_format varchar, size_bytes bigint, rows_loaded bigint, rows_rejected bigint)"
    )
    # Contract columns a file lacks (loaded as null); the data-quality checks read this.
    con.execute(
        "create or replace table raw.missing_columns "
        "(source varchar, file_name varchar, column_name varchar)"
    )


def load_landing(con: duckdb.DuckDBPyConnection, landing: Path) -> LoadSummary:
    """Load every landing file into raw.* (a full reload); return what was read."""
    create_raw_schema(con)
    summary = LoadSummary()
    found = discover(landing)
    pause_point("load:files")
    for source, files in found.items():
        summary.rows[source] = summary.rejected[source] = summary.files[source] = 0
        for path in files:
            fmt = FORMATS.get(path.suffix.lower())
            name = path.relative_to(landing).as_posix()
            if fmt is None:
                summary.skipped_files.append(name)
                continue
            loaded, rejected = load_file(con, source, path, name, fmt)
            summary.rows[source] += loaded
            summary.rejected[source] += rejected
            summary.files[source] += 1
    return summary


def load_file(
    con: duckdb.DuckDBPyConnection, source: str, path: Path, name: str, fmt: str
) -> tuple[int, int]:
    """Load one file into raw.<source>; a file that cannot be read becomes one reject row."""
    try:
        size = path.stat().st_size
        if fmt == "csv":
            loaded, rejected = _load_csv(con, source, path, name)
        else:
            loaded, rejected = _load_parquet(con, source, path, name)
    except (duckdb.Error, OSError) as exc:
        size = None
        loaded, rejected = 0, 1
        reason = f"file could not be read: {_first_line(exc)}"
        con.execute(
            "insert into raw.load_rejects values (?, ?, null, ?, null)", [source, name, reason]
        )
    con.execute(
        "insert into raw.loaded_files values (?, ?, ?, ?, ?, ?)",
        [source, name, fmt, size, loaded, rejected],
    )
    return loaded, rejected


def _select_list(con: duckdb.DuckDBPyConnection, source: str, table: str, name: str) -> str:
    """Contract columns in contract order; a column the file lacks becomes null (and is noted)."""
    present = {r[0].strip().lower(): r[0] for r in con.execute(f"describe {table}").fetchall()}
    parts = []
    for col in SOURCE_COLUMNS[source]:
        if col in present:
            parts.append(f'cast("{present[col]}" as varchar) as {col}')
        else:
            parts.append(f"cast(null as varchar) as {col}")
            con.execute("insert into raw.missing_columns values (?, ?, ?)", [source, name, col])
    return ", ".join(parts)


def _load_parquet(
    con: duckdb.DuckDBPyConnection, source: str, path: Path, name: str
) -> tuple[int, int]:
    con.execute(
        "create or replace temp table _file as select * from read_parquet(?, file_row_number=true)",
        [str(path)],
    )
    cols = _select_list(con, source, "_file", name)
    con.execute(
        f"insert into raw.{source} select {cols}, ?, file_row_number + 1 from _file",  # noqa: S608
        [name],
    )
    loaded = con.execute("select count(*) from _file").fetchone()[0]
    con.execute("drop table _file")
    return loaded, 0


def _load_csv(
    con: duckdb.DuckDBPyConnection, source: str, path: Path, name: str
) -> tuple[int, int]:
    con.execute("drop table if exists _rejects")
    con.execute("drop table if exists _reject_scans")
    # parallel=false keeps rows in file order, so each good row's line can be recovered
    # from its position and the lines the reader rejected.
    con.execute(
        "create or replace temp table _file as select * from read_csv(?, all_varchar=true, "
        "header=true, auto_detect=true, store_rejects=true, rejects_table='_rejects', "
        "rejects_scan='_reject_scans', parallel=false, max_line_size=?, "
        "rejects_line_size_limit=200)",
        [str(path), MAX_LINE_BYTES],
    )
    # The reader reports a short row once per missing column: keep one reject per line.
    rejected = con.execute("select count(distinct line) from _rejects").fetchone()[0]
    con.execute(
        "insert into raw.load_rejects select ?, ?, line, "
        "error_type || ': ' || error_message, left(csv_line, 200) from _rejects "
        "qualify row_number() over (partition by line order by column_idx) = 1 order by line",
        [source, name],
    )
    cols = _select_list(con, source, "_file", name)
    # Line numbers count the header as line 1; rejected lines are skipped when numbering.
    con.execute(
        f"""
        insert into raw.{source}
        with slots as (
            select line, row_number() over (order by line) - 1 as position
            from range(2, 2 + (select count(*) from _file) + ?) as r(line)
            where line not in (select line from _rejects)
        )
        select {cols}, ?, slots.line
        from (select rowid as position, * from _file) as f
        inner join slots on f.position = slots.position
        order by slots.line
        """,  # noqa: S608
        [rejected, name],
    )
    loaded = con.execute("select count(*) from _file").fetchone()[0]
    con.execute("drop table _file")
    con.execute("drop table if exists _rejects")
    con.execute("drop table if exists _reject_scans")
    return loaded, rejected


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
