"""Benchmark: `usercounts export` of a plan with a million users.

Builds (once, with DuckDB directly) a file shaped like the published warehouse: one org
with a product plan of USERS users on three instances (each user on one to three of them,
about 10% never seen), then runs the real `usercounts export` command in a child process
and prints its wall time and peak RSS (the child's ru_maxrss, so the build does not count).

    PYTHONPATH=$PWD .venv/bin/python bench/export_bench.py [--users 1000000] [--runs 3]

Figures go in BENCHMARKS.md, section "Users export".
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"

SHAPE = """
create schema marts;
create table marts.plan_user_counts_current as
select
    'BIG' as plan_id, 'ORG' as org_id, 'Big Jira' as plan_name, 'jira-software' as product_key,
    'product' as plan_type, timestamp '2024-07-01' as as_of, $users as user_count,
    $users as user_tier, 0 as users_to_remove_for_80, 0 as users_to_remove_for_limit,
    'at_limit' as threshold_status;
create table marts.plan_instances as
select 'ORG' as org_id, 'BIG' as plan_id, 'I' || n as instance_id, 'site-' || n as instance_name,
    'https://site-' || n || '.example' as site_url, 'jira-software' as product_key,
    'Jira' as product_name
from range(1, 4) t(n);
create table marts.org_admins as
select 'ORG' as org_id, 'admin@org.example' as email, 'Org Admin' as display_name;
create table marts.user_last_seen as
select
    'ORG' as org_id, 'BIG' as plan_id, 'I' || n as instance_id,
    'user-' || lpad(u::varchar, 8, '0') as user_id,
    'user' || u || '@org.example' as email, 'User ' || u as display_name,
    case when hash(u, 'invited') % 20 = 0 then 'invited' else 'active' end as access_status,
    timestamp '2022-01-01' + to_seconds(cast(hash(u, n, 'since') % 63072000 as bigint))
        as access_since,
    case when hash(u, n, 'never') % 10 = 0 then null
        else timestamp '2024-07-01' - to_seconds(cast(hash(u, n, 'seen') % 63072000 as bigint))
    end as last_seen_at
from range($users) t(u), range(1, 4) i(n)
where n = 1 + hash(u) % 3 or hash(u, n) % 3 = 0;
create table marts.counted_users as
select
    org_id, plan_id, user_id, any_value(email) as email, any_value(display_name) as display_name,
    case when bool_and(access_status = 'invited') then 'invited' else 'active' end
        as access_status,
    count(*) as instances_with_access,
    date '2024-06-30' - cast(max(last_seen_at) as date) as days_since_last_seen,
    date '2024-06-30' - cast(greatest(max(last_seen_at), min(access_since)) as date)
        as days_inactive,
    true as is_billable, false as is_org_admin, min(access_since) as added_to_org_at,
    min(access_since) as access_since, max(last_seen_at) as last_seen_at,
    greatest(max(last_seen_at), min(access_since)) as inactive_since
from marts.user_last_seen
group by org_id, plan_id, user_id;
"""


def build(path: Path, users: int) -> None:
    """Write the warehouse-shaped file (skipped when it exists for the same size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    started = time.perf_counter()
    with duckdb.connect(str(tmp)) as con:
        for statement in filter(str.strip, SHAPE.split(";")):
            con.execute(statement.replace("$users", str(int(users))))
        rows = con.execute("select count(*) from marts.user_last_seen").fetchone()[0]
        con.execute("checkpoint")
    os.replace(tmp, path)
    size = path.stat().st_size / 1e6
    print(
        f"built {path.name}: {users} users, {rows} user x instance rows, {size:.0f} MB "
        f"in {time.perf_counter() - started:.1f} s"
    )


def export_once(database: Path, out_dir: Path) -> tuple[float, float, int]:
    """Run `usercounts export` as a user would; return seconds, peak RSS (MB), file size."""
    out = out_dir / "big.csv"
    env = {
        **os.environ,
        "USERCOUNTS_EXPORTS_DIR": str(out_dir / "exports"),
        "USERCOUNTS_OUTBOX": str(out_dir / "outbox"),
    }
    command = [
        str(Path(sys.executable).with_name("usercounts")),
        "export",
        "--plan",
        "BIG",
        "--database",
        str(database),
        "--out",
        str(out),
    ]
    # a fresh wrapper per run reads RUSAGE_CHILDREN: the peak of this one export alone
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "p = subprocess.run(sys.argv[1:]); e = time.perf_counter() - t; "
        "r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
        "print(f'{e} {r} {p.returncode}')"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *command],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, rss_kb, code = done.stdout.split()[-3:]
    if code != "0":
        raise SystemExit(f"export failed: {done.stdout}{done.stderr}")
    return float(seconds), int(rss_kb) / 1024, out.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    database = DATA / f"export_bench_{args.users}.duckdb"
    if not database.exists():
        build(database, args.users)
    print(f"python {sys.version.split()[0]}, duckdb {duckdb.__version__}, {os.cpu_count()} cpus")
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, rss_mb, size = export_once(database, Path(tmp))
        print(
            f"run {run}: export of {args.users} users: {seconds:.2f} s wall, "
            f"peak RSS {rss_mb:.0f} MB, file {size / 1e6:.0f} MB"
        )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(this script's own peak RSS, building included: {own:.0f} MB)")


if __name__ == "__main__":
    main()
