"""`usercounts inactive`: whom to remove first to lower a plan's count, in the terminal.

The list is marts.inactive_user_candidates when it was built for the same number of days;
for another --days it is computed from marts.counted_users with the same rule and order
(inactive for N days or more, earliest inactive_since first).
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

from usercounts.export import ExportRefused, load_plan, missing_mart, plural
from usercounts.views import format_table, on_one_line, open_published

CANDIDATE_COLUMNS = (
    "cumulative_users, user_id, display_name, email, last_seen_at, days_inactive, "
    "access_since, access_status, is_billable"
)
FROM_MART = f"""
    select {CANDIDATE_COLUMNS}
    from marts.inactive_user_candidates
    where plan_id = $1 and inactive_days = $2
    order by cumulative_users
"""  # noqa: S608
ON_THE_FLY = f"""
    select {CANDIDATE_COLUMNS}
    from (
        select
            *,
            row_number() over (order by inactive_since, user_id) as cumulative_users
        from marts.counted_users
        where plan_id = $1 and days_inactive >= $2
    )
    order by cumulative_users
"""  # noqa: S608


def built_inactive_days(con: duckdb.DuckDBPyConnection) -> int | None:
    """The N marts.inactive_user_candidates was built with (None: no rows to tell)."""
    return con.execute("select max(inactive_days) from marts.inactive_user_candidates").fetchone()[
        0
    ]


def candidates(con: duckdb.DuckDBPyConnection, plan_id: str, days: int) -> list[tuple]:
    """The plan's candidates for N = days, most inactive first, with the running total."""
    sql = FROM_MART if built_inactive_days(con) == days else ON_THE_FLY
    return con.execute(sql, [plan_id, days]).fetchall()


def print_inactive(published: Path, plan_id: str, days: int, limit: int | None = None) -> int:
    """Print the plan's figures, how many must go, and the candidates to remove first."""
    with open_published(published) as con:
        try:
            plan = load_plan(con, plan_id)
            count, tier, status, for_80, for_limit = con.execute(
                "select user_count, user_tier, threshold_status, users_to_remove_for_80, "
                "users_to_remove_for_limit from marts.plan_user_counts_current where plan_id = ?",
                [plan_id],
            ).fetchone()
            rows = candidates(con, plan_id, days)
        except ExportRefused as exc:
            print(f"usercounts: error: {exc}", file=sys.stderr)
            return 1
        except duckdb.CatalogException as exc:
            print(f"usercounts: error: {missing_mart(exc)}", file=sys.stderr)
            return 1
    print(
        on_one_line(
            f"{plan.plan_name} ({plan.plan_id}, org {plan.org_id}): {count} of {tier} users, "
            f"{status}, as of {plan.as_of_date.isoformat()}"
        )
    )
    print(f"  must go: {for_80} to be under 80% of the tier, {for_limit} to be at most the tier")
    print(
        f"  inactive for {plural(days, 'day')} or more: {plural(len(rows), 'user')}, "
        "most inactive first"
    )
    for needed, goal in ((for_limit, "at most the tier"), (for_80, "under 80%")):
        if needed > len(rows):
            print(f"  note: {needed} must go to be {goal}, more than the inactive users listed")
    if not rows:
        return 0
    shown = rows if limit is None else rows[:limit]
    table = []
    goals = ((for_limit, "at most the tier"), (for_80, "under 80%"))
    for (
        cumulative,
        user_id,
        name,
        email,
        last_seen,
        days_inactive,
        since,
        access,
        billable,
    ) in shown:
        marks = [goal for needed, goal in goals if needed == cumulative]
        table.append(
            (
                cumulative,
                user_id,
                name,
                email,
                last_seen.strftime("%Y-%m-%d") if last_seen else "never",
                days_inactive,
                since.strftime("%Y-%m-%d"),
                access,
                "yes" if billable else "no",
                ", ".join(marks),
            )
        )
    headers = [
        "cumulative",
        "user id",
        "name",
        "email",
        "last seen",
        "days inactive",
        "access since",
        "access",
        "billable",
        "removing up to here gets",
    ]
    print()
    print(format_table(headers, table, right={0, 5}))
    if len(shown) < len(rows):
        print(f"... and {len(rows) - len(shown)} more (without --limit: all)")
    return 0
