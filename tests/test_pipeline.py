"""The run as a whole, through the pipeline's steps: re-runs, late data, dbt unit tests."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import yaml
from conftest import Landing, build_warehouse, canonical_dump, query

from usercounts import workdb
from usercounts.build import dbt_env, run_dbt
from usercounts.config import PROJECT_ROOT, Settings


def small_landing(landing: Landing) -> None:
    landing.write("plans", [landing.plan("P1", 10)])
    landing.write("instances", [{"instance_id": "I1", "plan_id": "P1"}])
    landing.write("users", [{"user_id": "u1", "account_type": "atlassian"}])
    landing.write(
        "access_events",
        [
            {"event_id": "e1", "occurred_at": "2025-01-10T00:00:00Z", "instance_id": "I1",
             "user_id": "u1", "action": "grant"},
            {"event_id": "e2", "occurred_at": "2025-02-10T00:00:00Z", "instance_id": "I2",
             "user_id": "u2", "action": "invite"},
            {"event_id": "e3", "occurred_at": "not a time", "instance_id": "I1",
             "user_id": "u3", "action": "grant"},
        ],
    )  # fmt: skip


def test_rerun_of_the_same_as_of_date_gives_identical_marts(
    landing: Landing, tmp_path: Path
) -> None:
    small_landing(landing)
    home = tmp_path / "data"
    settings = build_warehouse(landing.root, home, date(2025, 3, 31))
    first = canonical_dump(settings.published_path)
    assert first["marts.plan_user_counts_current"]
    assert first["quarantine.access_events"]

    # The contract's dbt unit tests (state table, month boundaries) on the built project.
    result = run_dbt("test", settings.work_path, date(2025, 3, 31), "--select", "test_type:unit")
    ran = {name for name, _ in result.timings}
    assert {
        "state_table_every_transition",
        "same_instant_grant_and_revoke_leave_no_span",
        "month_boundaries_of_membership",
    } <= ran
    assert result.statuses == {"pass": len(ran)}

    build_warehouse(landing.root, home, date(2025, 3, 31))
    assert canonical_dump(settings.published_path) == first
    # Each published run is recorded; no write-ahead log is left beside the published file.
    assert query(settings.published_path, "select count(*) from meta.runs") == [(2,)]
    assert not settings.published_path.with_name("warehouse.duckdb.wal").exists()
    # Publishing copies the file dbt built the published schemas in; it holds nothing else.
    built = workdb.marts_path(settings.work_path)
    assert settings.published_path.read_bytes() == built.read_bytes()
    schemas = "select distinct schema_name from duckdb_tables() order by 1"
    assert query(settings.published_path, schemas) == [("marts",), ("meta",), ("quarantine",)]


def test_events_for_an_undeclared_instance_count_once_it_appears(
    landing: Landing, tmp_path: Path
) -> None:
    small_landing(landing)
    home = tmp_path / "data"
    as_of = date(2025, 3, 31)
    settings = build_warehouse(landing.root, home, as_of)
    sql = "select user_count from marts.plan_user_counts_current where plan_id = 'P1'"
    assert query(settings.published_path, sql) == [(1,)]

    # Next night's drop declares I2 under P1: u2's earlier invite now counts, from February.
    landing.write("instances", [{"instance_id": "I2", "plan_id": "P1"}], name="late.csv")
    build_warehouse(landing.root, home, as_of)
    assert query(settings.published_path, sql) == [(2,)]
    assert query(
        settings.published_path,
        "select strftime(month, '%Y-%m'), closing_balance, invited_count "
        "from marts.plan_user_counts_monthly where plan_id = 'P1' order by month",
    ) == [("2025-01", 1, 0), ("2025-02", 2, 1), ("2025-03", 2, 1)]


def test_dbt_run_by_hand_builds_in_the_files_the_run_uses() -> None:
    """profiles.yml's defaults (dbt run by hand, without the run's environment) name the
    working files the run itself builds in for the default warehouse, data/warehouse.duckdb
    (README, docs/operations.md), and attach the marts file under the run's alias."""
    output = yaml.safe_load((PROJECT_ROOT / "profiles.yml").read_text())["usercounts"]["outputs"]
    profile = output["duckdb"]

    def default(template: str) -> Path:
        return PROJECT_ROOT / re.fullmatch(r"\{\{ env_var\('\w+', '(.+)'\) \}\}", template)[1]

    settings = Settings.model_construct(data_dir=PROJECT_ROOT / "data")
    assert (
        default(profile["path"])
        == settings.work_path
        == PROJECT_ROOT / "data" / ".warehouse.work.duckdb"
    )
    [attached] = profile["attach"]
    assert default(attached["path"]) == workdb.marts_path(settings.work_path)
    assert attached["alias"] == workdb.MARTS_ALIAS


def test_duckdb_memory_limit_is_half_the_machine_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/operations.md: USERCOUNTS_DUCKDB_MEMORY_LIMIT, default half the machine's memory."""
    mem_kib = int(re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())[1])
    for unset in (None, " "):  # unset or blank: the default
        if unset is None:
            monkeypatch.delenv("USERCOUNTS_DUCKDB_MEMORY_LIMIT", raising=False)
        else:
            monkeypatch.setenv("USERCOUNTS_DUCKDB_MEMORY_LIMIT", unset)
        env = dbt_env(Path("w.duckdb"), date(2025, 1, 1))
        assert env["USERCOUNTS_DUCKDB_MEMORY_LIMIT"] == f"{mem_kib // 2048}MB"
    monkeypatch.setenv("USERCOUNTS_DUCKDB_MEMORY_LIMIT", "3GB")
    assert dbt_env(Path("w.duckdb"), date(2025, 1, 1))["USERCOUNTS_DUCKDB_MEMORY_LIMIT"] == "3GB"
