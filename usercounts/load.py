"""Load the landing folder into the `raw` schema of the working database.

Every contract column lands as text, so that a value that does not parse is quarantined by
the dbt staging layer with a reason instead of failing the read. Rows the CSV reader cannot
split at all (wrong column count, bad encoding) and files that cannot be read go to
`raw.load_rejects`. Reading is DuckDB's own CSV and Parquet readers, one file at a time,
because the CSV reader keeps rejected rows only for single-schema scans.

Loads are incremental: `raw.loaded_files` lists every file read (path, size, modification
time) with the number of the load that read it (`_load_id` on every raw row), and a load
reads only files it has not seen. A file that changed or disappeared, or a new file that
sorts before one already read of a source whose winners depend on file order, cannot be
applied on top: `landing_changes` names the reason and the run rebuilds from scratch.
"""

from __future__ import annotations

import csv
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
# Sources whose rows compete by file order: the first read of an event_id counts, the last
# file wins per user_id. A new file that sorts before one already loaded could change an
# earlier winner, so it makes the run rebuild from scratch. (Plans, instances and org
# admins are re-derived in full on every build; last-seen keeps the latest instant, which
# does not depend on order.)
ORDERED_SOURCES: tuple[str, ...] = ("access_events", "users")
# The longest CSV line DuckDB's reader takes: a longer one makes the whole file unreadable
# (the reader fails even with ignore_errors; docs/operations.md).
MAX_LINE_BYTES = 16 * 1024 * 1024
# Characters DuckDB reads as a glob in a file's path (a landing file cannot have them).
GLOB_CHARACTERS = frozenset("*?")
# How DuckDB reads a CSV file's dialect: comma-separated (the contract), quoting detected
# from every row. By default it samples the first 20,480 rows, and a file whose first quoted
# value comes later was read without quotes ("" as a user id, "Doe, Jane" as two values).
# Fixing the quote instead makes the detection fail on a file with an unclosed quote, which
# is then rejected whole rather than row by row.
CSV_DIALECT = "delim=',', sample_size=-1"


@dataclass
class LoadSummary:
    """What the working database holds after a load, and what this load added.

    rows, rejected and files count everything loaded so far (what the build reads);
    new_rows and new_files what this load read. load_id numbers this load (None: nothing new).
    """

    rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    new_rows: dict[str, int] = field(default_factory=dict)
    new_files: dict[str, int] = field(default_factory=dict)
    skipped_files: list[str] = field(default_factory=list)
    # .csv and .parquet files outside the source folders (not read: the run says so)
    stray_files: list[str] = field(default_factory=list)
    load_id: int | None = None
    # Why this load started from an empty working database (None: it added to it).
    full_reload_reason: str | None = None

    def rows_read(self) -> dict[str, int]:
        """Rows read per source, the lines the reader rejected included: a run's "rows
        loaded", so that rows loaded minus rows quarantined are the rows used."""
        return {source: rows + self.rejected.get(source, 0) for source, rows in self.rows.items()}


class FullReloadNeeded(Exception):
    """The landing folder changed in a way a load on top cannot apply; the message says how."""


@dataclass(frozen=True)
class LandingFile:
    """One landing file: its source, path relative to the landing folder, and format."""

    source: str
    name: str
    path: Path
    fmt: str


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
    """Create the raw tables when missing: one per source plus the shared reject and file logs.

    They persist across runs (a load adds to them); an empty working database starts over.
    """
    con.execute("create schema if not exists raw")
    for source, columns in SOURCE_COLUMNS.items():
        cols = ", ".join(f"{c} varchar" for c in columns)
        con.execute(
            f"create table if not exists raw.{source} "
            f"({cols}, _file_name varchar, _row_number bigint, _load_id bigint)"
        )
    con.execute(
        "create table if not exists raw.load_rejects (source varchar, file_name varchar, "
        "row_number bigint, reason varchar, raw_line varchar, _load_id bigint)"
    )
    con.execute(
        "create table if not exists raw.loaded_files (source varchar, file_name varchar, "
        "file_format varchar, size_bytes bigint, rows_loaded bigint, rows_rejected bigint, "
        "mtime_ns bigint, load_id bigint)"
    )
    # Contract columns a file lacks (loaded as null); the data-quality checks read this.
    con.execute(
        "create table if not exists raw.missing_columns "
        "(source varchar, file_name varchar, column_name varchar, _load_id bigint)"
    )


def landing_files(landing: Path) -> tuple[list[LandingFile], list[str]]:
    """The readable landing files in load order, and the names of files of other formats."""
    files, skipped = [], []
    for source, paths in discover(landing).items():
        for path in paths:
            name = path.relative_to(landing).as_posix()
            fmt = FORMATS.get(path.suffix.lower())
            if fmt is None:
                skipped.append(name)
            else:
                files.append(LandingFile(source, name, path, fmt))
    return files, skipped


def stray_files(landing: Path) -> list[str]:
    """Data files the run does not read because they are not in a source folder (the landing
    folder itself, `access-events/`, ...): named in a warning rather than silently left."""
    # only what lies outside the source folders is walked: discover() walked those
    outside = [entry for entry in landing.iterdir() if entry.name not in SOURCES]
    paths = [p for entry in outside for p in ([entry] if entry.is_file() else entry.rglob("*"))]
    return sorted(
        path.relative_to(landing).as_posix()
        for path in paths
        if path.suffix.lower() in FORMATS and path.is_file()
    )


def landing_changes(con: duckdb.DuckDBPyConnection, files: list[LandingFile]) -> str | None:
    """Why the loaded rows no longer match the landing folder (None: a load can add to them)."""
    loaded = {
        (source, name): (size, mtime)
        for source, name, size, mtime in con.execute(
            "select source, file_name, size_bytes, mtime_ns from raw.loaded_files"
        ).fetchall()
    }
    present = {(f.source, f.name) for f in files}
    gone = sorted(name for _, name in loaded.keys() - present)
    if gone:
        return f"landing file {gone[0]} was loaded before and is gone"
    last_loaded: dict[str, str] = {}
    for source, name in loaded:
        last_loaded[source] = max(last_loaded.get(source, name), name)
    for f in files:
        if (f.source, f.name) in loaded:
            try:
                stat = f.path.stat()
                now = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                now = (None, None)
            if loaded[(f.source, f.name)] != now:
                return f"landing file {f.name} changed since it was loaded"
        elif f.source in ORDERED_SOURCES and f.name < last_loaded.get(f.source, ""):
            return (
                f"new landing file {f.name} sorts before {last_loaded[f.source]}, "
                "which is already loaded"
            )
    return None


def load_landing(
    con: duckdb.DuckDBPyConnection, landing: Path, *, incremental: bool = False
) -> LoadSummary:
    """Load the landing files not loaded yet into raw.*; return the totals and what was new.

    incremental=False expects an empty working database. With incremental=True, raise
    FullReloadNeeded (before reading anything) when the new files cannot simply be added.
    """
    create_raw_schema(con)
    files, skipped = landing_files(landing)
    if incremental:
        reason = landing_changes(con, files)
        if reason:
            raise FullReloadNeeded(reason)
    done = {
        (source, name)
        for source, name in con.execute("select source, file_name from raw.loaded_files").fetchall()
    }
    summary = LoadSummary(skipped_files=skipped, stray_files=stray_files(landing))
    summary.new_rows = dict.fromkeys(SOURCES, 0)
    summary.new_files = dict.fromkeys(SOURCES, 0)
    to_load = [f for f in files if (f.source, f.name) not in done]
    if to_load:
        previous = con.execute("select max(load_id) from raw.loaded_files").fetchone()[0]
        summary.load_id = (previous or 0) + 1
    pause_point("load:files")
    for f in to_load:
        loaded, _ = load_file(con, f.source, f.path, f.name, f.fmt, summary.load_id)
        summary.new_rows[f.source] += loaded
        summary.new_files[f.source] += 1
    _count_totals(con, summary)
    return summary


def _count_totals(con: duckdb.DuckDBPyConnection, summary: LoadSummary) -> None:
    """Rows, rejects and files per source in the working database after the load."""
    for source in SOURCES:
        rows, rejected, files = con.execute(
            "select coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0), count(*) "
            "from raw.loaded_files where source = ?",
            [source],
        ).fetchone()
        summary.rows[source] = int(rows)
        summary.rejected[source] = int(rejected)
        summary.files[source] = int(files)


def load_file(
    con: duckdb.DuckDBPyConnection,
    source: str,
    path: Path,
    name: str,
    fmt: str,
    load_id: int | None = None,
) -> tuple[int, int]:
    """Load one file into raw.<source>; a file that cannot be read becomes one reject row.

    The rows and the file's line in raw.loaded_files commit together, so a run killed while
    reading leaves either the whole file or nothing of it.
    """
    try:
        # Taken before reading: a file changed while being read shows as changed next run.
        stat = path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:
        size = mtime = None
    try:
        if size is None:
            raise OSError(f"cannot stat {name}")
        if set(path.as_posix()) & GLOB_CHARACTERS:
            # DuckDB's readers take the path as a pattern: `a*.csv` would read other files too
            raise OSError(f"its path has a {' or '.join(sorted(GLOB_CHARACTERS))}: rename it")
        if fmt == "csv":
            # Read into temporary tables first, outside the transaction: rows written inside
            # one have provisional row ids, and the CSV line numbers are computed from them.
            _read_csv(con, path)
            lines = csv_lines(con, path)
        con.begin()
        if fmt == "csv":
            loaded, rejected = _insert_csv(con, source, name, lines, load_id)
        else:
            loaded, rejected = _load_parquet(con, source, path, name, load_id)
    except (duckdb.Error, OSError) as exc:
        if _in_transaction(con):
            con.rollback()
        con.begin()
        loaded, rejected = 0, 1
        reason = f"file could not be read: {_first_line(exc)}"
        con.execute(
            "insert into raw.load_rejects values (?, ?, null, ?, null, ?)",
            [source, name, reason, load_id],
        )
    con.execute(
        "insert into raw.loaded_files values (?, ?, ?, ?, ?, ?, ?, ?)",
        [source, name, fmt, size, loaded, rejected, mtime, load_id],
    )
    con.commit()
    for temp in ("_file", "_rejects", "_reject_scans", "_blank_lines", "_line_shifts"):
        con.execute(f"drop table if exists {temp}")
    return loaded, rejected


def _in_transaction(con: duckdb.DuckDBPyConnection) -> bool:
    try:
        con.execute("begin transaction")
    except duckdb.TransactionException:
        return True
    con.execute("rollback")
    return False


def _select_list(
    con: duckdb.DuckDBPyConnection, source: str, name: str, columns: list[str], load_id: int | None
) -> str:
    """Contract columns in contract order from a file's columns; one it lacks becomes null.

    A lacking column is noted in raw.missing_columns, which the data-quality checks read.
    """
    present = {c.strip().lower(): c for c in columns}
    parts = []
    for col in SOURCE_COLUMNS[source]:
        if col in present:
            quoted = present[col].replace('"', '""')
            parts.append(f'cast("{quoted}" as varchar) as {col}')
        else:
            parts.append(f"cast(null as varchar) as {col}")
            con.execute(
                "insert into raw.missing_columns values (?, ?, ?, ?)", [source, name, col, load_id]
            )
    return ", ".join(parts)


def _load_parquet(
    con: duckdb.DuckDBPyConnection, source: str, path: Path, name: str, load_id: int | None
) -> tuple[int, int]:
    # Straight from the file into raw: no temporary copy (Parquet row numbers are exact).
    reader = "read_parquet(?, file_row_number=true)"
    header = con.execute("select * from read_parquet(?) limit 0", [str(path)]).description
    cols = _select_list(con, source, name, [d[0] for d in header], load_id)
    row = con.execute(
        f"insert into raw.{source} "  # noqa: S608 - fixed names; the file's columns, quoted
        f"select {cols}, ?, file_row_number + 1, ? from {reader}",
        [name, load_id, str(path)],
    ).fetchone()
    return (int(row[0]) if row else 0), 0


def _read_csv(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Read a CSV file into the temporary tables _file (good rows) and _rejects."""
    con.execute("drop table if exists _rejects")
    con.execute("drop table if exists _reject_scans")
    # parallel=false keeps rows in file order, so each good row's line can be recovered
    # from its position and the lines the reader rejected.
    # CSV_DIALECT is a constant of this module
    read = (
        "create or replace temp table _file as select * "  # noqa: S608
        "from read_csv(?, all_varchar=true, "
        f"header=true, auto_detect=true, {CSV_DIALECT}, store_rejects=true, "
        "rejects_table='_rejects', rejects_scan='_reject_scans', parallel=false, "
        "max_line_size=?, rejects_line_size_limit=200)"
    )
    con.execute(read, [str(path), MAX_LINE_BYTES])


def _insert_csv(
    con: duckdb.DuckDBPyConnection,
    source: str,
    name: str,
    lines: CsvLines,
    load_id: int | None,
) -> tuple[int, int]:
    """Copy what _read_csv read into raw.<source> and raw.load_rejects, with file lines."""
    # The reader reports a short row once per missing column: keep one reject per line.
    rejected = con.execute("select count(distinct line) from _rejects").fetchone()[0]
    loaded = con.execute("select count(*) from _file").fetchone()[0]
    con.execute(
        "create or replace temp table _blank_lines as select unnest(?::bigint[]) as line",
        [lines.blanks],
    )
    con.execute(
        "create or replace temp table _line_shifts as "
        "select unnest(?::bigint[]) as line, unnest(?::bigint[]) as shift",
        [[line for line, _ in lines.shifts], [shift for _, shift in lines.shifts]],
    )
    # A reader's line becomes a file line by the shift in force from the last change before it.
    con.execute(
        "insert into raw.load_rejects "
        "select ?, ?, r.line + coalesce(s.shift, 0), r.error_type || ': ' || r.error_message, "
        "left(r.csv_line, 200), ? "
        "from _rejects as r asof left join _line_shifts as s on r.line >= s.line "
        "qualify row_number() over (partition by r.line order by r.column_idx) = 1 "
        "order by r.line",
        [source, name, load_id],
    )
    columns = [r[0] for r in con.execute("describe _file").fetchall()]
    cols = _select_list(con, source, name, columns, load_id)
    # The good rows are, in order, the reader's lines after the header that it neither
    # rejected nor skipped as blank.
    con.execute(
        f"""
        insert into raw.{source}
        with slots as (
            select line, row_number() over (order by line) - 1 as position
            from range(?, ? + ?) as r(line)
            where line not in (select line from _rejects)
                and line not in (select line from _blank_lines)
        ),

        numbered as (
            select slots.position, slots.line + coalesce(s.shift, 0) as line
            from slots asof left join _line_shifts as s on slots.line >= s.line
        )

        select {cols}, ?, numbered.line, ?
        from (select rowid as position, * from _file) as f
        inner join numbered on f.position = numbered.position
        order by numbered.line
        """,  # noqa: S608
        [lines.header + 1, lines.header + 1, loaded + rejected + len(lines.blanks), name, load_id],
    )
    return loaded, rejected


@dataclass(frozen=True)
class CsvLines:
    """Where the CSV reader's lines are in the file.

    DuckDB numbers a file's records, counting a blank line as one and a quoted field that
    spans several lines as one; people (and editors) count the file's lines. `header` is
    the reader's number of the header line, `blanks` the reader's numbers of the blank
    lines it skipped, and `shifts` the (reader's line, file line - reader's line) pairs
    from which the difference changes.
    """

    header: int = 1
    blanks: list[int] = field(default_factory=list)
    shifts: list[tuple[int, int]] = field(default_factory=list)


def csv_lines(con: duckdb.DuckDBPyConnection, path: Path) -> CsvLines:
    """Map the line numbers of the CSV file _read_csv read to the file's lines (CsvLines).

    Only a file with a blank line, a rejected line or a value that spans lines needs reading
    again, with Python's csv module in the dialect DuckDB detected. Where the two readers
    would not agree on the file's rows, or anything goes wrong, the reader's own numbers
    are kept: numbering never costs a file its rows.
    """
    try:
        return _map_csv_lines(con, path)
    except Exception:  # noqa: BLE001 - any failure here falls back to the reader's numbers
        return CsvLines()


def _map_csv_lines(con: duckdb.DuckDBPyConnection, path: Path) -> CsvLines:
    delimiter, quote, escape, skip_rows = con.execute(
        "select Delimiter, Quote, Escape, SkipRows "  # noqa: S608 - CSV_DIALECT is a constant
        "from sniff_csv(?, ignore_errors=true, "
        f"all_varchar=true, header=true, {CSV_DIALECT}, max_line_size=?)",
        [str(path), MAX_LINE_BYTES],
    ).fetchone()
    quote = None if quote == "(empty)" else quote
    escape = None if escape in ("(empty)", quote) else escape
    plain = CsvLines(header=int(skip_rows) + 1)
    loaded = con.execute("select count(*) from _file").fetchone()[0]
    rejected = {line for (line,) in con.execute("select distinct line from _rejects").fetchall()}
    if not (rejected or _has_blank_line(path) or _spans_lines(con)):
        return plain
    # A file of one column reads a blank line as a row (an empty value), not as a blank.
    one_column = len(con.execute("describe _file").fetchall()) == 1
    blanks: list[int] = []
    shifts: list[tuple[int, int]] = []
    # Values up to the reader's line limit (the setting is the process's; only ever raised).
    csv.field_size_limit(max(csv.field_size_limit(), 2 * MAX_LINE_BYTES))
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.reader(
            fh,
            delimiter=delimiter,
            quotechar=quote or '"',
            quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
            escapechar=escape,
            doublequote=True,
            skipinitialspace=True,  # DuckDB opens a quote after spaces too
            strict=False,
        )
        line = shift = lines_read = 0
        for record in reader:
            line += 1
            # the reader's line `line` starts on the file's line lines_read + 1
            if lines_read + 1 - line != shift:
                shift = lines_read + 1 - line
                shifts.append((line, shift))
            if not record and not one_column:
                blanks.append(line)
            lines_read = reader.line_num
    blanks = [b for b in blanks if b > plain.header]
    if line - plain.header - len(blanks) - len(rejected) != loaded:
        return plain
    return CsvLines(header=plain.header, blanks=blanks, shifts=shifts)


def _has_blank_line(path: Path) -> bool:
    """Whether the file has an empty line after its first (or one inside a quoted value)."""
    blank_lines = (b"\n\n", b"\n\r\n", b"\r\r")
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 24):
            edge = tail + chunk[:2]  # a blank line across the read boundary
            if any(blank in part for part in (edge, chunk) for blank in blank_lines):
                return True
            tail = chunk[-2:]
    return False


def _spans_lines(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether a value of the rows read holds a line break (a quoted value over lines)."""
    columns = [r[0] for r in con.execute("describe _file").fetchall()]
    if not columns:
        return False
    quoted = ['"' + c.replace('"', '""') + '"' for c in columns]
    breaks = " or ".join(f"contains({c}, chr(10)) or contains({c}, chr(13))" for c in quoted)
    return con.execute(f"select exists (select 1 from _file where {breaks})").fetchone()[0]  # noqa: S608


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
