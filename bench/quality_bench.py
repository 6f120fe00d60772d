"""How much of a run the data-quality checks take, at a size that matters.

    PYTHONPATH=$PWD .venv/bin/python bench/quality_bench.py --users 100000

Generates (with DuckDB SQL, once per size) a landing folder under bench/data/ with the given
number of users, ~3 access events each and 0.1% malformed rows, then runs the nightly steps
in order without Prefect (load, validate raw, dbt build, read back, validate marts, publish)
and prints each step's wall time, the GX import, and how the two validate steps split
between DuckDB (the check tables) and Great Expectations (validation and data docs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from datetime import date
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from usercounts import pipeline, quality, workdb  # noqa: E402
from usercounts.config import Settings, quiet_tool_defaults  # noqa: E402

AS_OF = date(2024, 12, 31)

# One statement per landing source; $users and $plans are the sizes. Users are spread over
# plans (one instance each, every 7th plan has a second one); each user is invited, granted
# and, for a third of them, revoked later; 0.1% of the event rows are malformed.
GENERATE = {
    "plans": """
        select
            'P' || lpad(i::varchar, 6, '0') as plan_id,
            'O' || (i // 2)::varchar as org_id,
            'Plan ' || i::varchar as plan_name,
            'jira-software' as product_key,
            'product' as plan_type,
            case when i % 4 = 0 then 'monthly' else 'annual' end as billing_cycle,
            (100 + (i * 37) % 400)::varchar as user_tier,
            '2025-06-01' as renewal_date,
            '2023-01-01T00:00:00Z' as updated_at
        from range($plans) as t(i)
    """,
    "instances": """
        select
            'I' || lpad(i::varchar, 7, '0') as instance_id,
            'P' || lpad((i % $plans)::varchar, 6, '0') as plan_id,
            'site ' || i::varchar as instance_name,
            'https://s' || i::varchar || '.example.com' as site_url
        from range($plans + $plans // 7) as t(i)
    """,
    "users": """
        select
            'u' || i::varchar as user_id,
            'u' || i::varchar || '@example.com' as email,
            'User ' || i::varchar as display_name,
            case when i % 50 = 0 then 'app' else 'atlassian' end as account_type,
            case when i % 20 = 0 then 'false' else 'true' end as is_billable
        from range($users) as t(i)
    """,
    "org_admins": """
        select
            'O' || i::varchar as org_id,
            'admin' || i::varchar || '@example.com' as email,
            'Admin ' || i::varchar as display_name
        from range($plans // 2 + 1) as t(i)
    """,
    "access_events": """
        with users as (
            select
                i,
                'u' || i::varchar as user_id,
                'I' || lpad((i % ($plans + $plans // 7))::varchar, 7, '0') as instance_id,
                timestamp '2023-01-01' + to_minutes((i * 7919) % (700 * 1440)) as invited_at
            from range($users) as t(i)
        ),
        events as (
            select i, 0 as n, user_id, instance_id, invited_at as occurred, 'invite' as action
            from users
            union all
            select i, 1, user_id, instance_id, invited_at + interval 2 day, 'grant' from users
            union all
            select i, 2, user_id, instance_id, invited_at + interval 90 day, 'revoke'
            from users where i % 3 = 0
        )
        select
            'E' || i::varchar || '-' || n::varchar as event_id,
            case when (i * 3 + n) % 1000 = 7 then 'not a time'
                else strftime(occurred, '%Y-%m-%dT%H:%M:%SZ') end as occurred_at,
            instance_id,
            user_id,
            action
        from events
    """,
    "last_seen": """
        select
            'I' || lpad((i % ($plans + $plans // 7))::varchar, 7, '0') as instance_id,
            'u' || i::varchar as user_id,
            strftime(timestamp '2024-06-01' + to_minutes((i * 104729) % (200 * 1440)),
                '%Y-%m-%dT%H:%M:%SZ') as last_seen_at
        from range($users) as t(i)
        where i % 10 <> 0
    """,
}


def generate(landing: Path, users: int) -> None:
    """Write one Parquet file per source (skipped when the folder is already there)."""
    if (landing / "last_seen" / "part_000.parquet").exists():
        return
    con = duckdb.connect()
    sizes = {"users": users, "plans": max(users // 100, 10)}
    for source, sql in GENERATE.items():
        (landing / source).mkdir(parents=True, exist_ok=True)
        params = {k: v for k, v in sizes.items() if f"${k}" in sql}
        con.execute(f"create or replace table t as {sql}", params)  # noqa: S608 - our SQL
        con.execute(f"copy t to '{landing / source / 'part_000.parquet'}' (format parquet)")
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument(
        "--preload-gx",
        action="store_true",
        help="import GX in a background thread while the load step runs (not what runs do)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "bench" / "data",
        help="where the generated data and the run are kept (default bench/data/)",
    )
    args = parser.parse_args()
    quiet_tool_defaults()
    data = args.data / f"quality_{args.users}"
    started = time.perf_counter()
    generate(data / "landing", args.users)
    print(f"landing ready in {time.perf_counter() - started:.1f} s: {data / 'landing'}")

    settings = Settings(landing=data / "landing", database=data / "home" / "warehouse.duckdb")
    summary = pipeline.RunSummary(as_of=AS_OF)
    seconds: dict[str, float] = {}

    def step(name: str, call) -> None:
        began = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - began

    began = time.perf_counter()
    if args.preload_gx:
        preload = threading.Thread(target=importlib.import_module, args=["great_expectations"])
        preload.start()
    else:
        import great_expectations  # noqa: F401 - timed on its own; the validate step pays it

    gx_import = time.perf_counter() - began
    workdb.remove(settings.work_path)
    step("load", lambda: summary.rows_loaded.update(pipeline.load(settings).rows_read()))
    if args.preload_gx:
        began = time.perf_counter()
        preload.join()
        seconds["(GX import left after load)"] = time.perf_counter() - began
    step("validate raw", lambda: pipeline.validate_raw(settings, summary))
    step("dbt build", lambda: pipeline.build(settings, AS_OF))
    step("read back", lambda: pipeline.read_back(settings, summary))
    step("validate marts", lambda: pipeline.validate_marts(settings, summary))
    step("publish", lambda: pipeline.record_and_publish(settings, summary))

    # The DuckDB part of each validate step, measured again on its own. The raw checks
    # keep counts of the rows they checked: dropped first, so that every row is checked
    # again, as the validate step (the first check of this working database) did.
    sql_seconds = {}
    with workdb.connect(settings.work_path) as con:
        for (table,) in con.execute(
            "select table_name from duckdb_tables() where schema_name = 'raw' "
            "and table_name in ('access_events_check_counts', "
            "'access_events_check_conflicts', 'last_seen_check_counts')"
        ).fetchall():
            con.execute(f"drop table raw.{table}")
        for layer, suites in (
            ("raw", [f"raw_{s}" for s in summary.rows_loaded]),
            ("marts", [s for s in quality_suites() if not s.startswith("raw_")]),
        ):
            began = time.perf_counter()
            quality.check_frame(con, suites, AS_OF)
            sql_seconds[layer] = time.perf_counter() - began

    run = sum(seconds.values()) + gx_import
    gx_total = (
        seconds["validate raw"]
        + seconds["validate marts"]
        + gx_import
        + seconds.get("(GX import left after load)", 0)
    )
    print(f"rows loaded: {summary.rows_loaded}")
    print(f"{'step':<30}{'seconds':>9}")
    print(f"{'(GX import)':<30}{gx_import:>9.2f}")
    for name, secs in seconds.items():
        print(f"{name:<30}{secs:>9.2f}")
    print(f"{'run':<30}{run:>9.2f}")
    waited = gx_import + seconds.get("(GX import left after load)", 0)
    print(
        f"quality: {gx_total:.2f} s = {100 * gx_total / run:.1f}% of the run "
        f"(GX import {waited:.2f} s; check tables in DuckDB: raw {sql_seconds['raw']:.2f} s, "
        f"marts {sql_seconds['marts']:.2f} s; the rest is GX validation and data docs)"
    )
    print(summary.quality_line())


def quality_suites() -> list[str]:
    return [p.stem for p in (quality.EXPECTATIONS_DIR / "expectations").glob("*.json")]


if __name__ == "__main__":
    main()
