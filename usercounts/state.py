"""State that outlives rebuilds and publishing: per-plan settings and the notification log.

It lives in its own small DuckDB file beside the published warehouse (owner-only mode). The
run copies it into the working database before `dbt build`, so the models read a snapshot
and the file itself is held open only for moments (the notify step: at most ~1 s at a time).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import NamedTuple

import duckdb

# A notification_log row's status. Pending and failed rows are owed: every run retries them,
# and they block a new notice of the same plan and kind. Cancelled is set by the operator
# (`usercounts notifications cancel`) and counts as sent.
PENDING, FAILED, SENT, UNDELIVERABLE, CANCELLED = (
    "pending",
    "failed",
    "sent",
    "undeliverable",
    "cancelled",
)
UNSENT = (PENDING, FAILED)
# A notification id is an md5 in hex; a shorter prefix names it when only one id starts so.
# Lists show SHOWN_ID_CHARS of it.
MIN_ID_PREFIX, SHOWN_ID_CHARS = 6, 12

STATE_DDL = (
    """
    create table if not exists plan_settings (
        plan_id varchar primary key,
        notify_at_80 boolean not null,
        updated_at timestamp not null
    )
    """,
    """
    create table if not exists notification_log (
        notification_id varchar primary key,
        org_id varchar not null,
        plan_id varchar not null,
        kind varchar not null,
        as_of_date date not null,
        user_count bigint not null,
        user_tier bigint not null,
        recipients varchar,
        status varchar not null,
        message_id varchar,
        attempts integer not null default 0,
        last_error varchar,
        decided_at timestamp not null,
        sent_at timestamp,
        message_eml varchar,
        delivered_to varchar
    )
    """,
    # The rendered message (RFC 5322 text), so that a retry re-sends exactly what was decided.
    "alter table notification_log add column if not exists message_eml varchar",
    # Who has the message (", "-separated; null: nobody yet), so that a retry after the
    # server refused some recipients goes to those only.
    "alter table notification_log add column if not exists delivered_to varchar",
    """
    create table if not exists run_log (
        as_of_date date not null,
        published_at timestamp not null,
        plans bigint not null,
        rows_loaded bigint not null,
        rows_quarantined bigint not null
    )
    """,
    # One row per expectation per run, failed runs included (published as
    # marts.data_quality_runs).
    """
    create table if not exists data_quality_log (
        run_at timestamp not null,
        as_of_date date not null,
        run_status varchar not null,
        layer varchar not null,
        suite varchar not null,
        expectation varchar not null,
        expectation_type varchar not null,
        column_name varchar,
        severity varchar not null,
        success boolean not null,
        unexpected_count bigint,
        unit varchar,
        observed_value double
    )
    """,
    # Quarantined rows per source and reason per run (published as marts.quarantine_history).
    """
    create table if not exists quarantine_log (
        run_at timestamp not null,
        as_of_date date not null,
        run_status varchar not null,
        source varchar not null,
        reason varchar,
        quarantined_rows bigint not null,
        source_rows bigint not null
    )
    """,
)
# The state tables copied into the working database (raw.<table>) before dbt and publishing.
STATE_TABLES = (
    "plan_settings",
    "notification_log",
    "run_log",
    "data_quality_log",
    "quarantine_log",
)
# How long to wait for another process (a CLI command, another run) holding the state file.
LOCK_WAIT_SECONDS = 30.0


@contextmanager
def connect_state(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the state file, creating it (mode 0600) with its tables when missing."""
    if read_only and not path.exists():
        read_only = False  # nothing to read yet: create it so readers see empty tables
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        if not read_only:
            for ddl in STATE_DDL:
                con.execute(ddl)
            os.chmod(path, 0o600)
        yield con
    finally:
        con.close()


def set_notify_at_80(path: Path, plan_id: str, enabled: bool) -> None:
    """Turn the per-plan 80% notification on or off; it lasts across runs."""
    with connect_state(path) as con:
        con.execute(
            "insert or replace into plan_settings values (?, ?, now()::timestamp)",
            [plan_id, enabled],
        )


class NotificationNotFound(LookupError):
    """No notification, or more than one, matches the id given."""


class NotificationNotOwed(ValueError):
    """The notification is sent or undeliverable: there is nothing to cancel."""


class LoggedNotification(NamedTuple):
    notification_id: str
    plan_id: str
    kind: str
    as_of_date: date
    status: str
    attempts: int
    delivered_to: str | None


def id_prefix(text: str) -> str:
    """A notification id, or the start of one, as the log stores it (lowercase hex)."""
    prefix = text.strip().lower()
    if len(prefix) < MIN_ID_PREFIX:
        raise NotificationNotFound(
            f"give at least {MIN_ID_PREFIX} characters of the notification id (got {text!r})"
        )
    return prefix


def cancel_notification(path: Path, id_or_prefix: str) -> tuple[LoggedNotification, bool]:
    """Stop retrying an owed notification for good: mark it cancelled.

    Returns the row as it was and whether it changed (a row already cancelled is left as it
    is). Raises NotificationNotFound for an unknown or ambiguous id, NotificationNotOwed for
    a row that is sent or undeliverable.
    """
    prefix = id_prefix(id_or_prefix)
    with connect_state(path) as con:
        rows = [
            LoggedNotification(*row)
            for row in con.execute(
                "select notification_id, plan_id, kind, as_of_date, status, attempts, "
                "delivered_to from notification_log "
                "where starts_with(lower(notification_id), ?) order by 1",
                [prefix],
            ).fetchall()
        ]
        if not rows:
            raise NotificationNotFound(f"no notification {id_or_prefix!r} in {path}")
        if len(rows) > 1:
            raise NotificationNotFound(
                f"{len(rows)} notifications start with {id_or_prefix!r}: give more of the id"
            )
        (row,) = rows
        if row.status == CANCELLED:
            return row, False
        if row.status not in UNSENT:
            raise NotificationNotOwed(
                f"notification {row.notification_id} ({row.kind} for plan {row.plan_id} as of "
                f"{row.as_of_date}) is {row.status}: only pending or failed ones can be cancelled"
            )
        con.execute(
            "update notification_log set status = ? where notification_id = ?",
            [CANCELLED, row.notification_id],
        )
        return row, True


def record_run(path: Path, row: list[object]) -> None:
    """Append one published run to the run log (published as meta.runs)."""
    with connect_state(path) as con:
        con.execute("insert into run_log values (?, ?, ?, ?, ?)", row)


def record_quality(
    path: Path, checks: list[tuple[object, ...]], quarantine: list[tuple[object, ...]]
) -> None:
    """Append one run's data-quality results and quarantine counts to the history."""
    with connect_state(path) as con:
        append_quality(con, checks, quarantine)


def append_quality(
    con: duckdb.DuckDBPyConnection,
    checks: list[tuple[object, ...]],
    quarantine: list[tuple[object, ...]],
    *,
    checks_table: str = "data_quality_log",
    quarantine_table: str = "quarantine_log",
) -> None:
    """Insert history rows into the quality and quarantine logs (or their published copies)."""
    for table, rows in ((checks_table, checks), (quarantine_table, quarantine)):
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            con.executemany(f"insert into {table} values ({marks})", rows)  # noqa: S608 - our names


# The name the state file is attached under while it is copied into the working database.
STATE_ALIAS = "state_db"


def copy_state_into(con: duckdb.DuckDBPyConnection, state_path: Path) -> None:
    """Snapshot the state tables into the working database's `raw` schema for dbt."""
    with connect_state(state_path):
        pass  # creates the file and its tables on the first run
    attach_with_retry(con, state_path, STATE_ALIAS, read_only=True)
    try:
        con.execute("create schema if not exists raw")
        for table in STATE_TABLES:
            copy = f"create or replace table raw.{table} as select * from {STATE_ALIAS}.{table}"  # noqa: S608
            con.execute(copy)
    finally:
        con.execute(f"detach {STATE_ALIAS}")


def sql_path(path: Path) -> str:
    """A file path as a SQL string literal (paths come from settings, never from data)."""
    return "'" + str(path).replace("'", "''") + "'"


def attach_with_retry(
    con: duckdb.DuckDBPyConnection, path: Path, alias: str, *, read_only: bool
) -> None:
    """ATTACH a DuckDB file, waiting while another process holds it for writing."""
    mode = " (read_only)" if read_only else ""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            con.execute(f"attach {sql_path(path)} as {alias}{mode}")
            return
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
