"""Tests for the synthetic landing-data generator, on real DuckDB output files."""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest
from conftest import run_cli

from usercounts.config import DEMO_LANDING
from usercounts.generate import LADDER, generate, generate_demo

COLUMNS: dict[str, list[str]] = {
    "plans": [
        "plan_id", "org_id", "plan_name", "product_key", "plan_type", "billing_cycle",
        "user_tier", "renewal_date", "updated_at",
    ],
    "instances": ["instance_id", "plan_id", "instance_name", "site_url"],
    "users": ["user_id", "email", "display_name", "account_type", "is_billable"],
    "org_admins": ["org_id", "email", "display_name"],
    "access_events": ["event_id", "occurred_at", "instance_id", "user_id", "action"],
    "last_seen": ["instance_id", "user_id", "last_seen_at"],
}  # fmt: skip

# The state table of data-contract section 1, written out independently of the generator.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("none", "invite"): "invited",
    ("invited", "invite"): "invited",
    ("active", "invite"): "active",
    ("none", "grant"): "active",
    ("invited", "grant"): "active",
    ("active", "grant"): "active",
    ("none", "revoke"): "none",
    ("invited", "revoke"): "none",
    ("active", "revoke"): "none",
}
DEMO_AS_OF = datetime(2026, 11, 21, tzinfo=UTC)


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_csv(root: Path, source: str) -> list[dict[str, str]]:
    """All rows of a CSV source folder."""
    return [row for path in sorted((root / source).glob("*.csv")) for row in _read_csv_file(path)]


def _read_csv_file(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class PlanAtAsOf:
    """A demo plan's figures at the as-of instant, computed independently."""

    count: int
    tier: int
    billing_cycle: str
    plan_type: str
    versions: int

    @property
    def status(self) -> str:
        if self.count > self.tier:
            return "over_limit"
        if self.count == self.tier:
            return "at_limit"
        return "approaching" if 5 * self.count >= 4 * self.tier else "ok"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo(out)
    return out


@pytest.fixture(scope="module")
def demo_counts(demo: Path) -> dict[str, PlanAtAsOf]:
    """Per plan at the demo as-of instant: count, tier in force, cycle and type."""
    instance_plan = {r["instance_id"]: r["plan_id"] for r in _read_csv(demo, "instances")}
    events = {r["event_id"]: r for r in _read_csv(demo, "access_events")}  # one per event_id
    state: dict[tuple[str, str], str] = defaultdict(lambda: "none")
    for e in sorted(events.values(), key=lambda e: (_ts(e["occurred_at"]), e["event_id"])):
        if _ts(e["occurred_at"]) < DEMO_AS_OF:
            key = (e["instance_id"], e["user_id"])
            state[key] = TRANSITIONS[(state[key], e["action"])]
    members: dict[str, set[str]] = defaultdict(set)
    for (instance_id, user_id), s in state.items():
        if s != "none":
            members[instance_plan[instance_id]].add(user_id)

    versions: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _read_csv(demo, "plans"):
        versions[row["plan_id"]].append(row)
    result: dict[str, PlanAtAsOf] = {}
    for plan_id, rows in versions.items():
        rows.sort(key=lambda r: _ts(r["updated_at"]))
        in_force = [r for r in rows if _ts(r["updated_at"]) <= DEMO_AS_OF] or rows[:1]
        current = in_force[-1]
        result[plan_id] = PlanAtAsOf(
            count=len(members[plan_id]),
            tier=int(current["user_tier"]),
            billing_cycle=current["billing_cycle"],
            plan_type=current["plan_type"],
            versions=len(rows),
        )
    return result


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_same_arguments_give_identical_bytes(tmp_path: Path, fmt: str) -> None:
    first = generate(tmp_path / "a", users=400, orgs=3, seed=5, fmt=fmt)
    second = generate(tmp_path / "b", users=400, orgs=3, seed=5, fmt=fmt)
    assert first == second
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    other = generate(tmp_path / "c", users=400, orgs=3, seed=6, fmt=fmt)
    assert _digests(tmp_path / "c") != _digests(tmp_path / "a")
    assert other["users"] == 400


def test_demo_is_deterministic_and_is_the_bundled_demo(tmp_path: Path, demo: Path) -> None:
    generate_demo(tmp_path)
    assert _digests(tmp_path) == _digests(demo)
    # `generate --demo` writes the demo the repository bundles (README): regenerate
    # demo/landing with it after a change to the generator
    assert _digests(demo) == _digests(DEMO_LANDING)


def test_daily_files_split_the_last_days_one_file_per_day(tmp_path: Path) -> None:
    """--daily-files 3: the last 3 UTC days of events and sightings as one file each, the
    rows the same as in one file."""
    end = date(2025, 3, 31)
    whole = generate(tmp_path / "a", users=400, orgs=2, fmt="csv", end_date=end)
    split = generate(tmp_path / "b", users=400, orgs=2, fmt="csv", end_date=end, daily_files=3)
    assert split == whole
    days = ["2025-03-29", "2025-03-30", "2025-03-31"]
    for source, column in (("access_events", "occurred_at"), ("last_seen", "last_seen_at")):
        files = sorted(p.name for p in (tmp_path / "b" / source).iterdir())
        assert files == [f"{source}_0001.csv"] + [f"{source}_{day}.csv" for day in days]
        for day in days:
            rows = _read_csv_file(tmp_path / "b" / source / f"{source}_{day}.csv")
            assert rows, (source, day)
            assert {_ts(row[column]).astimezone(UTC).date().isoformat() for row in rows} == {day}
        first = _read_csv_file(tmp_path / "b" / source / f"{source}_0001.csv")
        assert max(_ts(row[column]) for row in first) < datetime(2025, 3, 29, tzinfo=UTC)
        assert sorted(map(str, _read_csv(tmp_path / "b", source))) == sorted(
            map(str, _read_csv(tmp_path / "a", source))
        )


def test_generate_command_writes_the_months_asked(tmp_path: Path) -> None:
    done = run_cli(
        "generate", "--out", str(tmp_path), "--users", "50", "--months", "2", "--format", "csv"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usercounts: wrote ")
    first = min(_ts(row["occurred_at"]) for row in _read_csv(tmp_path, "access_events"))
    last = max(_ts(row["occurred_at"]) for row in _read_csv(tmp_path, "access_events"))
    assert (last - first).days < 62
    for bad in ("-1", "9999"):
        refused = run_cli("generate", "--out", str(tmp_path / bad), "--daily-files", bad)
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "--daily-files" in refused.stderr


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_sources_match_the_contract(tmp_path: Path, fmt: str) -> None:
    written = generate(tmp_path, users=500, orgs=4, fmt=fmt)
    con = duckdb.connect()
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    for source, columns in COLUMNS.items():
        files = sorted((tmp_path / source).glob(f"*.{fmt}"))
        assert [f.name for f in files] == [f"{source}_0001.{fmt}"]
        rel = con.sql(f"select * from {reader}(?)", params=[str(files[0])])  # noqa: S608
        assert rel.columns == columns, source
        assert len(rel.fetchall()) == written[source] > 0, source
    if fmt == "parquet":
        types = dict(
            con.execute(
                "select column_name, column_type from (describe select * from read_parquet(?))",
                [str(tmp_path / "access_events" / "access_events_0001.parquet")],
            ).fetchall()
        )
        assert types == {
            "event_id": "VARCHAR",
            "occurred_at": "TIMESTAMP",
            "instance_id": "VARCHAR",
            "user_id": "VARCHAR",
            "action": "VARCHAR",
        }

    def values(source: str, column: str) -> set[object]:
        path = str(tmp_path / source / f"{source}_0001.{fmt}")
        sql = f"select distinct {column} from {reader}(?)"  # noqa: S608 (our own names)
        return {r[0] for r in con.execute(sql, [path]).fetchall()}

    assert values("plans", "plan_type") <= {"product", "marketplace_app", "guard_standard"}
    assert values("plans", "billing_cycle") <= {"annual", "monthly"}
    assert values("plans", "user_tier") <= set(LADDER)
    assert values("users", "account_type") <= {"atlassian", "app", "customer"}
    assert values("access_events", "action") == {"invite", "grant", "revoke"}
    # every instance belongs to a known plan, every event to a known instance and user
    assert values("instances", "plan_id") <= values("plans", "plan_id")
    assert values("access_events", "instance_id") <= values("instances", "instance_id")
    assert values("access_events", "user_id") <= values("users", "user_id")


def test_a_small_landing_has_admins_so_that_it_runs(tmp_path: Path) -> None:
    # seed 7 gave the only org of 2,000 users no admins: a header-only org_admins file,
    # which stops a run (a critical check)
    assert generate(tmp_path, users=2000, seed=7, fmt="csv")["org_admins"] > 0


def test_history_stays_inside_the_window(tmp_path: Path) -> None:
    end = date(2025, 3, 31)
    generate(tmp_path, users=600, orgs=2, fmt="parquet", end_date=end, months=6)
    con = duckdb.connect()
    cutoff = datetime(2025, 4, 1)
    start = datetime(2024, 10, 1)
    low, high = con.execute(
        "select min(occurred_at), max(occurred_at) from read_parquet(?)",
        [str(tmp_path / "access_events" / "*.parquet")],
    ).fetchone()
    assert start <= low and high < cutoff
    (seen_high,) = con.execute(
        "select max(last_seen_at) from read_parquet(?)",
        [str(tmp_path / "last_seen" / "*.parquet")],
    ).fetchone()
    assert seen_high < cutoff


def test_demo_has_every_threshold_state(demo_counts: dict[str, PlanAtAsOf]) -> None:
    plans = demo_counts.values()
    assert {p.status for p in plans} == {"ok", "approaching", "at_limit", "over_limit"}
    assert any(p.billing_cycle == "monthly" and 5 * p.count >= 4 * p.tier for p in plans)
    assert {p.plan_type for p in plans} == {"product", "marketplace_app", "guard_standard"}
    assert any(p.versions == 2 for p in plans), "a tier change mid-history"


def test_demo_covers_the_edge_cases(demo: Path) -> None:
    orgs = {r["org_id"] for r in _read_csv(demo, "plans")}
    with_admins = {r["org_id"] for r in _read_csv(demo, "org_admins")}
    assert orgs - with_admins, "an org without admins"

    users = _read_csv(demo, "users")
    assert len(users) <= 400
    assert any(u["is_billable"] == "false" for u in users)

    events = _read_csv(demo, "access_events")
    ids = [e["event_id"] for e in events]
    assert len(ids) > len(set(ids)), "some duplicated event rows"
    assert max(_ts(e["occurred_at"]) for e in events) < DEMO_AS_OF
    assert min(_ts(e["occurred_at"]) for e in events) >= datetime(2024, 11, 21, tzinfo=UTC)

    instance_plan = {r["instance_id"]: r["plan_id"] for r in _read_csv(demo, "instances")}
    per_user_plan: dict[tuple[str, str], set[str]] = defaultdict(set)
    actions: dict[str, set[str]] = defaultdict(set)
    for e in events:
        per_user_plan[(e["user_id"], instance_plan[e["instance_id"]])].add(e["instance_id"])
        actions[e["user_id"]].add(e["action"])
    assert any(len(instances) > 1 for instances in per_user_plan.values())
    assert any(a == {"invite"} for a in actions.values()), "some invited-only users"
