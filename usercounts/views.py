"""Terminal views over the published warehouse (read-only, so they work during a run), and
over the state file's notification log."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import duckdb

from usercounts.state import SHOWN_ID_CHARS, UNSENT, connect_state


def open_published(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published warehouse, or a clear error if none yet."""
    if not path.exists():
        raise FileNotFoundError(f"no published warehouse at {path}: run `usercounts run` first")
    return duckdb.connect(str(path), read_only=True)


# Control characters in a value from the data (a line break or tab in a name, a terminal
# escape sequence, a Unicode line separator or direction override) would break the
# table's rows, reach the terminal or reorder what it shows: each becomes a space.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def on_one_line(value: object) -> str:
    """A value from the data as one line of a terminal view."""
    return CONTROL_CHARACTERS.sub(" ", str(value))


def format_table(headers: list[str], rows: list[tuple], right: set[int]) -> str:
    """Plain aligned columns; numbers right-aligned."""
    cells = [headers] + [["" if v is None else on_one_line(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_counts(published: Path, plan_id: str | None, months: int = 12) -> int:
    """The 12-month view per plan: month, closing balance, change, tier."""
    with open_published(published) as con:
        plans = con.execute(
            "select plan_id, plan_name, org_id, user_count, user_tier, threshold_status, "
            "cast(as_of as date) - 1 from marts.plan_user_counts_current "
            "where ? is null or plan_id = ? order by org_id, plan_name, plan_id",
            [plan_id, plan_id],
        ).fetchall()
        if not plans:
            print(f"usercounts: error: no plan {plan_id!r} in {published}", file=sys.stderr)
            return 1
        for pid, name, org, count, tier, status, as_of in plans:
            print(
                on_one_line(
                    f"{name} ({pid}, org {org}): {count} of {tier} users, {status}, as of {as_of}"
                )
            )
            rows = con.execute(
                """
                select
                    strftime(month, '%Y-%m') || case when is_month_complete then '' else ' *' end,
                    closing_balance,
                    case when change > 0 then '+' else '' end
                    || coalesce(cast(change as varchar), ''),
                    coalesce(printf('%.1f%%', 100 * change_pct), ''),
                    users_added,
                    users_removed,
                    user_tier
                from (
                    select * from marts.plan_user_counts_monthly
                    where plan_id = ? order by month desc limit ?
                )
                order by month
                """,
                [pid, months],
            ).fetchall()
            headers = ["month", "closing", "change", "change %", "added", "removed", "tier"]
            print(
                format_table(headers, rows, right={1, 2, 3, 4, 5, 6}) if rows else "  (no history)"
            )
            print()
        print("* month of the as-of date: not complete")
    return 0


def print_notifications(state_path: Path, plan_id: str | None, everything: bool) -> int:
    """The notification log, newest first: the owed rows (pending, failed), or every row.

    Read from the state file, not the published copy (marts.notifications), so that a
    delivery or a cancellation since the last run shows at once.
    """
    if not state_path.exists():
        print(f"usercounts: no notifications yet ({state_path} does not exist)")
        return 0
    with connect_state(state_path, read_only=True) as con:
        rows = con.execute(
            """
            select
                left(notification_id, $4),
                org_id, plan_id, kind, as_of_date, status, attempts,
                regexp_replace(coalesce(last_error, ''), '\\s+', ' ', 'g')  -- one line a row
            from notification_log
            where ($1 or status in (select unnest($2)))
                and ($3 is null or plan_id = $3)
            order by as_of_date desc, decided_at desc, notification_id
            """,
            [everything, list(UNSENT), plan_id, SHOWN_ID_CHARS],
        ).fetchall()
    which = "notifications" if everything else "owed notifications (pending or failed)"
    where = f" for plan {plan_id}" if plan_id else ""
    if not rows:
        print(f"usercounts: no {which}{where}")
        return 0
    headers = ["id", "org", "plan", "kind", "as of", "status", "attempts", "last error"]
    print(format_table(headers, [tuple(r) for r in rows], right={6}))
    if not everything:
        print(
            f"\n{len(rows)} owed{where}: every run retries them, and each blocks its plan's "
            "next notice of that kind.\nTo stop one for good: usercounts notifications cancel ID"
        )
    return 0
