"""Data quality: the GX suites in expectations/ guard the raw layer and the marts.

Every critical expectation is tripped by a crafted input: landing folders for the raw layer
(the run stops before dbt, so these cost no build), and marts edited after one real build
for the mart invariants (no landing can break those: they would be bugs). Each failing run
names the check in one line and leaves the published warehouse exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import (
    Landing,
    query,
    raw_checks,
    run_cli,
    settings_for,
    singular_test_rows,
    validations_without_page,
)

from usercounts import pipeline, quality, workdb
from usercounts.build import run_dbt
from usercounts.config import Settings
from usercounts.errors import RunFailed
from usercounts.load import SOURCE_COLUMNS

AS_OF = date(2024, 3, 31)
REQUIRED = {
    "plans": ["plan_id", "org_id", "plan_type", "billing_cycle", "user_tier", "updated_at"],
    "instances": ["instance_id", "plan_id"],
    "users": ["user_id", "account_type"],
    "org_admins": ["org_id", "email"],
    "access_events": ["event_id", "occurred_at", "instance_id", "user_id", "action"],
    "last_seen": ["instance_id", "user_id", "last_seen_at"],
}
# Bad rows in the "warnings" landing, one per row rule of each source (all under 5%).
BAD_ROWS = {
    "plans": 13,
    "instances": 2,
    "users": 4,
    "org_admins": 3,
    "access_events": 7,
    "last_seen": 4,
}


# ---------------------------------------------------------------- landing folders


def event(event_id: str, at: str, instance: str, user: str, action: str) -> dict[str, str]:
    return {
        "event_id": event_id,
        "occurred_at": at,
        "instance_id": instance,
        "user_id": user,
        "action": action,
    }


def write_landing(root: Path, *, warnings: bool) -> Landing:
    """A landing folder that passes every critical check.

    Plan PA: u1, u2 granted in January; u3 granted and u1 revoked in February; u4 invited in
    March, so its months close at 2, 2, 3. Plan PB: 200 users granted on 2024-01-15.
    B000-B249: plans without events. With warnings=True, one bad row per row rule of each
    source and the other warning-level problems are added, each source staying under 5%.
    """
    landing = Landing(root)
    plans = [landing.plan(f"B{n:03d}", 10, org_id=f"O{n % 60}") for n in range(250)]
    plans += [landing.plan("PA", 10, org_id="O1"), landing.plan("PB", 1000, org_id="O2")]
    plans.append(landing.plan("PC", 20, org_id="O3"))
    landing.write("plans", plans, name="plans_01.csv")
    instances = [{"instance_id": f"I{n:03d}", "plan_id": f"B{n:03d}"} for n in range(250)]
    instances += [
        {"instance_id": "IA", "plan_id": "PA", "instance_name": "a", "site_url": "a.example"},
        {"instance_id": "IB", "plan_id": "PB", "instance_name": "b", "site_url": "b.example"},
    ]
    landing.write("instances", instances, name="instances_01.csv")
    users = [
        {"user_id": f"b{n:03d}", "email": f"b{n}@example.com", "account_type": "atlassian"}
        for n in range(200)
    ]
    users += [
        {"user_id": f"u{n}", "email": f"u{n}@example.com", "account_type": "customer"}
        for n in range(1, 4 if warnings else 5)  # with warnings, u4 has no profile
    ]
    for user in users:
        user["is_billable"] = "true"
    landing.write("users", users, name="users_01.csv")
    admins = [{"org_id": f"O{n}", "email": f"admin{n}@example.com"} for n in range(80)]
    landing.write("org_admins", admins, name="org_admins_01.csv")
    events = [
        event(f"EB{n:03d}", "2024-01-15T10:00:00Z", "IB", f"b{n:03d}", "grant") for n in range(200)
    ]
    events += [
        event("E1", "2024-01-05T09:00:00Z", "IA", "u1", "grant"),
        event("E2", "2024-01-06T09:00:00Z", "IA", "u2", "grant"),
        event("E3", "2024-02-10T09:00:00Z", "IA", "u3", "grant"),
        event("E4", "2024-02-20T09:00:00Z", "IA", "u1", "revoke"),
        event("E5", "2024-03-03T09:00:00Z", "IA", "u4", "invite"),
    ]
    landing.write("access_events", events, name="access_events_01.csv")
    seen = [
        {"instance_id": "IB", "user_id": f"b{n:03d}", "last_seen_at": "2024-03-01T08:00:00Z"}
        for n in range(200)
    ]
    landing.write("last_seen", seen, name="last_seen_01.csv")
    if warnings:
        write_warnings(landing)
    return landing


def write_warnings(landing: Landing) -> None:
    """One bad row per row rule of every source, plus the other warning-level problems."""
    plan = landing.plan
    landing.write(
        "plans",
        [
            plan("", 10),
            plan("X1", 10, org_id=""),
            plan("X2", 10, plan_type=""),
            plan("X3", 10, plan_type="enterprise"),
            plan("X4", 10, billing_cycle=""),
            plan("X5", 10, billing_cycle="weekly"),
            plan("X6", ""),
            plan("X7", "ten"),
            plan("X7F", "10.5"),
            plan("X8", 0),
            plan("X9", 10, renewal_date="someday"),
            plan("X10", 10, updated_at=""),
            plan("X11", 10, updated_at="yesterday"),
            # a second row for PC's version that disagrees (a warning; the later file wins)
            plan("PC", 25, org_id="O3"),
        ],
        name="plans_02.csv",
    )
    landing.write(
        "instances",
        [
            {"instance_id": "", "plan_id": "PA"},
            {"instance_id": "X1", "plan_id": ""},
            {"instance_id": "IX", "plan_id": "NO_SUCH_PLAN"},  # unknown plan
            {"instance_id": "I249", "plan_id": "B248"},  # a second plan for I249
            {"instance_id": "IX8", "plan_id": "X8"},  # X8's only row is quarantined: unknown
        ],
        name="instances_02.csv",
    )
    landing.write(
        "users",
        [
            {"user_id": "", "account_type": "customer"},
            {"user_id": "x1", "account_type": ""},
            {"user_id": "x2", "account_type": "robot"},
            {"user_id": "x3", "account_type": "app", "is_billable": "maybe"},
            # b000's profile again, blank: still in the users files (no warning)
            {"user_id": "b000", "account_type": "app", "email": "", "display_name": ""},
        ],
        name="users_02.csv",
    )
    landing.write(
        "org_admins",
        [
            {"org_id": "", "email": "a@example.com"},
            {"org_id": "O1", "email": ""},
            {"org_id": "O1", "email": "not-an-address"},
        ],
        name="org_admins_02.csv",
    )
    # a file without the optional display_name column
    landing.write(
        "org_admins",
        [{"org_id": "O2", "email": "second@example.com"}],
        name="org_admins_03.csv",
        columns=["org_id", "email"],
    )
    landing.write(
        "access_events",
        [
            event("", "2024-01-20T09:00:00Z", "I000", "b000", "grant"),
            event("X1", "", "I000", "b000", "grant"),
            event("X2", "2024-02-30T09:00:00Z", "I000", "b000", "grant"),
            event("X3", "2024-01-20T09:00:00Z", "", "b000", "grant"),
            event("X4", "2024-01-20T09:00:00Z", "I000", "", "grant"),
            event("X5", "2024-01-20T09:00:00Z", "I000", "b000", ""),
            event("X6", "2024-01-20T09:00:00Z", "I000", "b000", "promote"),
            # E_DUP twice, disagreeing (a warning; the first read wins) and an unknown instance
            event("E_DUP", "2024-01-20T09:00:00Z", "I000", "b000", "grant"),
            event("E_DUP", "2024-01-20T09:00:00Z", "I000", "b000", "revoke"),
            event("E_UNK", "2024-01-20T09:00:00Z", "NO_SUCH_INSTANCE", "b001", "grant"),
            # X1's only instances row is quarantined (no plan_id): an unknown instance too
            event("E_UNK2", "2024-01-20T09:00:00Z", "X1", "b001", "grant"),
        ],
        name="access_events_02.csv",
    )
    landing.write(
        "last_seen",
        [
            {"instance_id": "", "user_id": "b000", "last_seen_at": "2024-03-01T08:00:00Z"},
            {"instance_id": "IB", "user_id": "", "last_seen_at": "2024-03-01T08:00:00Z"},
            {"instance_id": "IB", "user_id": "b001", "last_seen_at": ""},
            {"instance_id": "IB", "user_id": "b002", "last_seen_at": "last tuesday"},
        ],
        name="last_seen_02.csv",
    )


# ---------------------------------------------------------------- running and comparing


def run_steps(settings: Settings, as_of: date) -> pipeline.RunSummary:
    """The nightly flow's steps in its order, without Prefect (flows/nightly.py)."""
    summary = pipeline.RunSummary(as_of=as_of)
    with pipeline.failure_recorded(settings, summary):
        workdb.remove(settings.work_path)
        summary.rows_loaded = pipeline.load(settings).rows
        pipeline.validate_raw(settings, summary)
        pipeline.build(settings, as_of)
        pipeline.read_back(settings, summary)
        pipeline.validate_marts(settings, summary)
        pipeline.record_and_publish(settings, summary)
    return summary


def dump(database: Path) -> dict[str, Any]:
    """A canonical dump of a DuckDB file: every table's rows, sorted, plus the file's hash."""
    tables: dict[str, list[tuple]] = {}
    with duckdb.connect(str(database), read_only=True) as con:
        names = con.execute(
            "select schema_name, table_name from duckdb_tables() order by 1, 2"
        ).fetchall()
        for schema, table in names:
            rows = con.execute(f'select * from "{schema}"."{table}" order by all').fetchall()  # noqa: S608
            tables[f"{schema}.{table}"] = rows
    return {"sha256": hashlib.sha256(database.read_bytes()).hexdigest(), "tables": tables}


def copy_home(source: Settings, home: Path, landing: Path) -> Settings:
    """A new data folder holding copies of source's published, work and state files."""
    home.mkdir(parents=True)
    marts = workdb.marts_path(source.work_path)
    for path in (source.published_path, source.work_path, marts, source.state_path):
        shutil.copy2(path, home / path.name)
    return settings_for(home, landing)


def failed_criticals(summary: pipeline.RunSummary) -> dict[tuple[str, str], int | None]:
    return {
        (c.suite, c.column): c.unexpected_count
        for c in summary.checks
        if c.severity == "critical" and not c.success
    }


def suite_files() -> dict[str, dict[str, Any]]:
    folder = quality.EXPECTATIONS_DIR / "expectations"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def tree_digest(folder: Path) -> dict[str, str]:
    """Hashes of the committed files under expectations/ (results go to uncommitted/)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "uncommitted" not in p.parts
    }


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One good run (with warnings) through every step: published, work db and state kept."""
    root = tmp_path_factory.mktemp("baseline")
    landing = write_landing(root / "landing", warnings=True)
    settings = settings_for(root / "home", landing.root)
    before = tree_digest(quality.EXPECTATIONS_DIR)
    summary = run_steps(settings, AS_OF)
    return {
        "settings": settings,
        "summary": summary,
        "dump": dump(settings.published_path),
        "expectations_before": before,
        "expectations_after": tree_digest(quality.EXPECTATIONS_DIR),
    }


# ---------------------------------------------------------------- the suite files


def test_suite_files_are_complete_and_consistent() -> None:
    suites = suite_files()
    checkpoints = {
        p.stem: json.loads(p.read_text())
        for p in (quality.EXPECTATIONS_DIR / "checkpoints").glob("*.json")
    }
    in_checkpoints = [v["name"] for c in checkpoints.values() for v in c["validation_definitions"]]
    assert sorted(in_checkpoints) == sorted(suites)  # each suite in exactly one layer
    assert set(checkpoints) == set(quality.LAYERS)
    assert {f"raw_{s}" for s in SOURCE_COLUMNS} | {
        "plan_user_counts_current",
        "plan_user_counts_daily",
        "plan_user_counts_monthly",
        "user_last_seen",
    } == set(suites)
    for name, suite in suites.items():
        assert (quality.CHECKS_DIR / f"{name}.sql").is_file()
        for expectation in suite["expectations"]:
            assert expectation["meta"]["severity"] in quality.SEVERITIES, expectation
            assert expectation["severity"] == expectation["meta"]["severity"], expectation
            assert expectation["description"], expectation
            assert expectation["kwargs"]["column"].startswith(f"{name}__"), expectation
    # the >5% quarantined share is critical for every source
    for source in SOURCE_COLUMNS:
        share = [
            e
            for e in suites[f"raw_{source}"]["expectations"]
            if e["kwargs"]["column"].endswith("__quarantined_share")
        ]
        assert [e["meta"]["severity"] for e in share] == ["critical"]
        assert share[0]["kwargs"]["max_value"] == {"$PARAMETER": "quarantine_max_share"}
    # every severity as docs/data-quality.md's tables give it
    for name, suite in suites.items():
        for expectation in suite["expectations"]:
            column = expectation["kwargs"]["column"].removeprefix(f"{name}__")
            assert expectation["meta"]["severity"] == documented_severity(name, column), column


def documented_severity(suite: str, column: str) -> str:
    """The severity docs/data-quality.md gives an expectation ("What is checked")."""
    if not suite.startswith("raw_"):  # marts: all critical but the users-files one
        return "warning" if column == "users_without_profile_rows" else "critical"
    file_level = ("unreadable_files", "empty_files", "files_missing_required_columns")
    if column in (*file_level, "quarantined_share"):
        return "critical"
    if column == "rows_loaded":  # at least one row
        critical = suite in ("raw_plans", "raw_instances", "raw_access_events")
        return "critical" if critical else "warning"
    return "warning"  # optional columns, row rules, agreement, known references


def test_a_run_does_not_write_into_the_reviewed_files(baseline: dict[str, Any]) -> None:
    assert baseline["expectations_after"] == baseline["expectations_before"]
    report = quality.report_path(baseline["settings"])
    assert report.is_file() and report.parent.parent == baseline["settings"].home / "quality"


def test_every_validation_has_its_page_after_a_run(baseline: dict[str, Any]) -> None:
    quality_path = baseline["settings"].quality_path
    assert len(list((quality_path / "results").rglob("*.json"))) == len(suite_files())
    assert validations_without_page(quality_path) == []
    assert baseline["summary"].quality_docs_pending == []


def test_a_step_failing_after_the_raw_checks_still_builds_their_pages(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    """The data docs are built once a run, after the marts; a run that fails between the
    layers (here dbt, which cannot attach the working marts file another program holds)
    builds the raw checks' pages on its way out."""
    landing = write_landing(tmp_path / "landing", warnings=False)
    settings = copy_home(baseline["settings"], tmp_path / "home", landing.root)
    summary = pipeline.RunSummary(as_of=AS_OF)
    with (
        pytest.raises(RunFailed, match="^dbt build failed"),
        pipeline.failure_recorded(settings, summary),
    ):
        pipeline.load(settings)
        pipeline.validate_raw(settings, summary)
        assert summary.quality_docs_pending  # not built after the raw layer
        assert not quality.report_path(settings).exists()
        with duckdb.connect(str(workdb.marts_path(settings.work_path))):
            pipeline.build(settings, AS_OF)
    raw_suites = [name for name in suite_files() if name.startswith("raw_")]
    stored = list((settings.quality_path / "results").rglob("*.json"))
    assert sorted(p.relative_to(settings.quality_path / "results").parts[0] for p in stored) == (
        sorted(raw_suites)
    )
    assert validations_without_page(settings.quality_path) == []
    assert quality.report_path(settings).is_file()


# ---------------------------------------------------------------- a good run with warnings


def test_warnings_do_not_fail_the_run_and_are_in_the_summary(baseline: dict[str, Any]) -> None:
    summary = baseline["summary"]
    assert summary.published
    assert not failed_criticals(summary)
    # write_warnings breaks each row rule once (user_tier twice: ten and 10.5; two events name
    # unknown instances), and a plan version, an event id and an instance id disagree once:
    # every warning and its count
    rules = {
        "raw_plans": [
            "plan_id is present", "org_id is present", "plan_type is present",
            "plan_type is product, marketplace_app or guard_standard",
            "billing_cycle is present", "billing_cycle is annual or monthly",
            "user_tier is present", "user_tier is a whole number",
            "user_tier is greater than 0", "renewal_date, when given, parses as a date",
            "updated_at is present", "updated_at parses as a timestamp",
        ],
        "raw_instances": [
            "instance_id is present", "plan_id is present",
            "every instance's plan_id is in the plans files, in a row that is not quarantined",
        ],
        "raw_users": [
            "user_id is present", "account_type is present",
            "account_type is atlassian, app or customer",
            "is_billable, when given, is true or false",
        ],
        "raw_org_admins": [
            "org_id is present", "email is present", "email looks like an email address",
        ],
        "raw_access_events": [
            "event_id is present", "occurred_at is present",
            "occurred_at parses as a timestamp", "instance_id is present",
            "user_id is present", "action is present", "action is invite, grant or revoke",
            "every event's instance_id is in the instances files (it counts once the "
            "instance appears)",
        ],
        "raw_last_seen": [
            "instance_id is present", "user_id is present", "last_seen_at is present",
            "last_seen_at parses as a timestamp",
        ],
        "user_last_seen": [
            "every user with access is in the users files (else email and display_name "
            "are empty)",
        ],
    }  # fmt: skip
    twice = [
        "user_tier is a whole number",
        rules["raw_instances"][-1],
        rules["raw_access_events"][-1],
    ]
    expected = [
        f'suite {suite}, expectation "{rule}": ' + ("2 rows" if rule in twice else "1 row")
        for suite, names in rules.items()
        for rule in names
    ]
    expected += [
        'suite raw_plans, expectation "rows for the same plan version (plan_id, updated_at) '
        'agree; the later file wins": 1 plan version',
        'suite raw_access_events, expectation "event ids are unique after de-duplication: '
        'rows sharing an event_id agree": 1 event id',
        'suite raw_instances, expectation "each instance_id names one plan_id; '
        'the later file wins": 1 instance id',
        'suite raw_org_admins, expectation "every org_admins file has the optional columns: '
        'display_name": 1 file (org_admins/org_admins_03.csv)',
    ]
    assert sorted(summary.warnings) == sorted(f"data quality: {line}" for line in expected)
    text = summary.to_text()
    assert "warning: data quality: suite raw_plans" in text
    checked = sum(len(s["expectations"]) for s in suite_files().values())
    report = quality.report_path(baseline["settings"])
    assert (
        f"data quality: {checked} expectations checked, {len(summary.warnings)} warning(s) "
        f"and 0 critical failed; report: {report}"
    ) in text


def test_raw_checks_count_what_the_models_quarantine(baseline: dict[str, Any]) -> None:
    """The check SQL repeats the base models' row rules: the two must agree."""
    settings, summary = baseline["settings"], baseline["summary"]
    checks = {(c.suite, c.column): c.unexpected_count for c in summary.checks}
    for source, bad in BAD_ROWS.items():
        published = query(settings.published_path, f"select count(*) from quarantine.{source}")  # noqa: S608
        assert published == [(bad,)], source
        assert checks[(f"raw_{source}", "quarantined_share")] == bad, source
        assert summary.rows_quarantined[source] == bad


def test_history_of_a_run_is_published(baseline: dict[str, Any]) -> None:
    settings, summary = baseline["settings"], baseline["summary"]
    rows = query(
        settings.published_path,
        "select run_status, count(*), count_if(not success), count_if(severity = 'critical') "
        "from marts.data_quality_runs group by all",
    )
    expectations = [e for s in suite_files().values() for e in s["expectations"]]
    critical = sum(e["meta"]["severity"] == "critical" for e in expectations)
    assert rows == [("published", len(expectations), len(summary.warnings), critical)]
    assert query(
        settings.published_path,
        "select severity, success, unexpected_count, unit, observed_value "
        "from marts.data_quality_runs "
        "where suite = 'raw_access_events' and column_name = 'unparseable_occurred_at_rows'",
    ) == [("warning", False, 1, "rows", 1.0)]
    quarantine = query(
        settings.published_path,
        "select source, reason, quarantined_rows from marts.quarantine_history "
        "where source in ('access_events', 'last_seen') order by all",
    )
    assert quarantine == [
        ("access_events", "missing action", 1),
        ("access_events", "missing event_id", 1),
        ("access_events", "missing instance_id", 1),
        ("access_events", "missing occurred_at", 1),
        ("access_events", "missing user_id", 1),
        ("access_events", "unknown action", 1),
        ("access_events", "unparseable occurred_at", 1),
        ("last_seen", "missing instance_id", 1),
        ("last_seen", "missing last_seen_at", 1),
        ("last_seen", "missing user_id", 1),
        ("last_seen", "unparseable last_seen_at", 1),
    ]


# ---------------------------------------------------------------- critical: raw layer


def file_defects(landing: Landing) -> None:
    """Per source: a file that cannot be read, an empty file, a file without a required column."""
    for source, required in REQUIRED.items():
        (landing.root / source / "zz_unreadable.parquet").write_bytes(b"not parquet at all")
        landing.write(source, [], name="zz_empty.csv")
        columns = [c for c in SOURCE_COLUMNS[source] if c != required[0]]
        row = {c: "1" for c in columns}
        landing.write(source, [row], name="zz_missing_column.csv", columns=columns)


def share_defects(landing: Landing) -> None:
    """Per source: 20 rows whose first required column is blank (over 5% of each source)."""
    for source, required in REQUIRED.items():
        rows = [{c: "" if c == required[0] else "1" for c in SOURCE_COLUMNS[source]}] * 20
        landing.write(source, rows, name="zz_blank.csv")


def no_rows(landing: Landing) -> None:
    """No plans, instances or access events at all."""
    for source in ("plans", "instances", "access_events"):
        for path in (landing.root / source).iterdir():
            path.unlink()


RAW_CASES = {
    "file_defects": (
        file_defects,
        {
            **{(f"raw_{s}", "unreadable_files"): 1 for s in REQUIRED},
            **{(f"raw_{s}", "empty_files"): 1 for s in REQUIRED},
            **{(f"raw_{s}", "files_missing_required_columns"): 1 for s in REQUIRED},
        },
        'suite raw_plans, expectation "every plans file can be read": 1 file '
        "(plans/zz_unreadable.parquet) (and 17 more critical)",
    ),
    "share_defects": (
        share_defects,
        {(f"raw_{s}", "quarantined_share"): 20 for s in REQUIRED},
        'suite raw_plans, expectation "at most the allowed share of plans rows is quarantined": '
        "20 rows (quarantined_share 7.3%, allowed <= 5.0%) (and 5 more critical)",
    ),
    "no_rows": (
        no_rows,
        {(f"raw_{s}", "rows_loaded"): None for s in ("plans", "instances", "access_events")},
        'suite raw_plans, expectation "plans has at least one row": '
        "rows_loaded is 0, expected >= 1 (and 2 more critical)",
    ),
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_raw_critical_fails_the_run_and_publishes_nothing(
    baseline: dict[str, Any], tmp_path: Path, case: str
) -> None:
    """Every critical raw expectation, tripped by a crafted landing folder."""
    defects, expected, reason = RAW_CASES[case]
    landing = write_landing(tmp_path / "landing", warnings=False)
    defects(landing)
    settings = copy_home(baseline["settings"], tmp_path / "home", landing.root)
    with pytest.raises(RunFailed) as failed:
        run_steps(settings, AS_OF + timedelta(days=1))
    report = quality.report_path(settings)
    assert str(failed.value) == (f"data quality check failed: {reason}; full report: {report}")
    assert "\n" not in str(failed.value)
    assert report.is_file()
    assert dump(settings.published_path) == baseline["dump"]
    assert not settings.outbox_path.exists() or not any(settings.outbox_path.iterdir())
    # which checks failed, and how many rows or files: exactly the crafted ones
    state = query(
        settings.state_path,
        "select suite, column_name, unexpected_count from data_quality_log "
        "where run_status = 'failed' and severity = 'critical' and not success",
    )
    assert {(s, c): n for s, c, n in state} == expected


def test_a_clean_landing_fails_no_expectation(baseline: dict[str, Any], tmp_path: Path) -> None:
    """The crafted cases above differ from this landing only by their defects."""
    landing = write_landing(tmp_path / "landing", warnings=False)
    checks = raw_checks(tmp_path / "home", landing.root, AS_OF)
    assert [c for c in checks if not c.success] == []
    assert len(checks) == sum(
        len(s["expectations"]) for n, s in suite_files().items() if n.startswith("raw_")
    )


def test_the_quarantined_share_may_reach_the_limit_and_counts_rejected_rows(
    tmp_path: Path,
) -> None:
    """At most 5%: 11 of 220 access event rows quarantined (6 breaking a rule, 5 the reader
    rejects) is 5.0% and passes; leaving the rejected rows out of the denominator (11 / 215)
    or reading "at most" as "under" would fail it."""
    landing = write_landing(tmp_path / "landing", warnings=False)
    good = [event(f"EX{n}", "2024-03-05T09:00:00Z", "IA", f"u{n}", "grant") for n in (1, 2, 3)]
    good.append(event("EX4", "2024-03-05T09:00:00Z", "IB", "b001", "grant"))
    blank_user = [event(f"EY{n}", "2024-03-05T09:00:00Z", "IA", "", "grant") for n in range(6)]
    landing.write("access_events", good + blank_user, name="access_events_02.csv")
    too_many_columns = "".join(f"EZ{n},2024-03-05T09:00:00Z,IA,u1,grant,extra\n" for n in range(5))
    (landing.root / "access_events" / "access_events_03.csv").write_text(
        "event_id,occurred_at,instance_id,user_id,action\n" + too_many_columns
    )
    checks = raw_checks(tmp_path / "home", landing.root, AS_OF)
    [share] = [
        c for c in checks if (c.suite, c.column) == ("raw_access_events", "quarantined_share")
    ]
    assert (share.success, share.unexpected_count, share.observed_value) == (True, 11, 0.05)
    assert [c for c in checks if not c.success and c.severity == "critical"] == []


# ---------------------------------------------------------------- critical: marts

CURRENT, DAILY = "plan_user_counts_current", "plan_user_counts_daily"
MONTHLY, LAST_SEEN = "plan_user_counts_monthly", "user_last_seen"
# The rows the cases edit: PA's months close at 2, 2, 3; PB has 200 users from 2024-01-15;
# B001 has no events (user_count 0, no daily rows).
B001, PB = "plan_id = 'B001'", "plan_id = 'PB'"
PB_DAY, PB_LAST_DAY = f"{PB} and day = '2024-02-10'", f"{PB} and day = '2024-03-31'"
PA_JAN, PA_FEB, PA_MAR = (f"plan_id = 'PA' and month = '2024-0{m}-01'" for m in (1, 2, 3))
PB_USER = f"{PB} and user_id = 'b005'"
# (suite, column, mart edited, change, rows changed, unit): each breaks exactly one invariant
MART_CASES = [
    (CURRENT, "duplicate_plan_rows", CURRENT, "duplicate", B001, "row"),
    (CURRENT, "missing_plans", CURRENT, "delete", B001, "plan"),
    (CURRENT, "negative_count_rows", CURRENT, "set non_billable_count = -1", B001, "row"),
    (CURRENT, "non_positive_tier_rows", CURRENT,
     "set user_tier = -5, utilization = 0 / -5, threshold_status = 'over_limit'", B001, "row"),
    (CURRENT, "invited_over_user_count_rows", CURRENT, "set invited_count = 1", B001, "row"),
    (CURRENT, "billable_over_user_count_rows", CURRENT, "set billable_count = 1", B001, "row"),
    (CURRENT, "utilization_mismatch_rows", CURRENT, "set utilization = utilization + 0.5", PB,
     "row"),
    (CURRENT, "threshold_status_mismatch_rows", CURRENT, "set threshold_status = 'at_limit'", PB,
     "row"),
    (CURRENT, "daily_mismatch_rows", DAILY, "set user_count = user_count + 1", PB_LAST_DAY, "row"),
    # More than one case for some checks: each column the check reads, broken alone
    (CURRENT, "negative_count_rows", CURRENT, "set billable_count = -1", B001, "row"),
    (CURRENT, "negative_count_rows", CURRENT, "set invited_count = -1", B001, "row"),
    # a missing count fails the counts check (it fails closed) and no other
    (CURRENT, "negative_count_rows", CURRENT, "set user_count = null", B001, "row"),
    (DAILY, "negative_count_rows", DAILY, "set user_count = null", PB_DAY, "row"),
    (MONTHLY, "negative_count_rows", MONTHLY, "set invited_count = null", PA_JAN, "row"),
    (CURRENT, "daily_mismatch_rows", DAILY, "set invited_count = invited_count + 1", PB_LAST_DAY,
     "row"),
    (DAILY, "duplicate_day_rows", DAILY, "duplicate", PB_DAY, "row"),
    (DAILY, "day_gap_rows", DAILY, "delete", PB_DAY, "row"),
    (DAILY, "plans_not_ending_at_as_of", DAILY, "delete", PB_LAST_DAY, "plan"),
    (DAILY, "plans_not_ending_at_as_of", DAILY, "copy to the next day", PB_LAST_DAY, "plan"),
    (DAILY, "negative_count_rows", DAILY, "set invited_count = -1", PB_DAY, "row"),
    (DAILY, "non_positive_tier_rows", DAILY, "set user_tier = 0", PB_DAY, "row"),
    (DAILY, "invited_over_user_count_rows", DAILY, "set invited_count = user_count + 1", PB_DAY,
     "row"),
    (MONTHLY, "duplicate_month_rows", MONTHLY, "duplicate", PA_FEB, "row"),
    (MONTHLY, "month_gap_rows", MONTHLY, "delete", PA_FEB, "row"),
    (MONTHLY, "plans_not_ending_at_as_of", MONTHLY, "delete", PA_MAR, "plan"),
    (MONTHLY, "negative_count_rows", MONTHLY, "set billable_count = -1", PA_JAN, "row"),
    (MONTHLY, "negative_count_rows", MONTHLY, "set users_added = 1, users_removed = -1", PA_JAN,
     "row"),  # still balanced: 0 + 1 - (-1) = 2
    (MONTHLY, "invited_over_closing_rows", MONTHLY, "set invited_count = 3", PA_JAN, "row"),
    (MONTHLY, "billable_over_closing_rows", MONTHLY, "set billable_count = 3", PA_JAN, "row"),
    (MONTHLY, "unbalanced_rows", MONTHLY, "set users_added = 2", PA_FEB, "row"),
    (MONTHLY, "previous_balance_mismatch_rows", MONTHLY,
     "set previous_closing_balance = 1, change = 1, users_added = 2", PA_FEB, "row"),
    (MONTHLY, "change_mismatch_rows", MONTHLY, "set change = 5", PA_FEB, "row"),
    (MONTHLY, "month_complete_mismatch_rows", MONTHLY, "set is_month_complete = true", PA_MAR,
     "row"),
    (LAST_SEEN, "duplicate_rows", LAST_SEEN, "duplicate", PB_USER, "row"),
    (LAST_SEEN, "unknown_status_rows", LAST_SEEN, "set access_status = 'revoked'", PB_USER, "row"),
    (LAST_SEEN, "negative_days_rows", LAST_SEEN, "set days_since_last_seen = -1", PB_USER, "row"),
    (LAST_SEEN, "plans_with_count_mismatch", LAST_SEEN, "delete", PB_USER, "plan"),
]  # fmt: skip


def edit_mart(con: duckdb.DuckDBPyConnection, mart: str, change: str, where: str) -> None:
    """Duplicate, copy to the next day, delete or update (`set ...`) some rows of a built mart
    (test constants only)."""
    table = f"marts.{mart}"
    if change == "duplicate":
        con.execute(f"insert into {table} select * from {table} where {where}")  # noqa: S608
    elif change == "copy to the next day":
        con.execute(
            f"insert into {table} select * replace (day + 1 as day) from {table} where {where}"  # noqa: S608
        )
    elif change == "delete":
        con.execute(f"delete from {table} where {where}")  # noqa: S608
    else:
        con.execute(f"update {table} {change} where {where}")  # noqa: S608


def test_every_critical_mart_expectation_has_a_case() -> None:
    criticals = {
        (name, e["kwargs"]["column"].removeprefix(f"{name}__"))
        for name, suite in suite_files().items()
        if not name.startswith("raw_")
        for e in suite["expectations"]
        if e["meta"]["severity"] == "critical"
    }
    assert {(suite, column) for suite, column, *_ in MART_CASES} == criticals


def test_the_built_marts_are_as_worked_out_by_hand(baseline: dict[str, Any]) -> None:
    """The mart cases below edit these rows; check they are what the cases assume."""
    published = baseline["settings"].published_path
    assert query(
        published,
        "select month, closing_balance, previous_closing_balance, users_added, users_removed, "
        "invited_count from marts.plan_user_counts_monthly where plan_id = 'PA' order by month",
    ) == [
        (date(2024, 1, 1), 2, None, 2, 0, 0),
        (date(2024, 2, 1), 2, 2, 1, 1, 0),
        (date(2024, 3, 1), 3, 2, 1, 0, 1),
    ]
    assert query(
        published,
        "select plan_id, user_count, threshold_status from marts.plan_user_counts_current "
        "where plan_id in ('B001', 'PB') order by 1",
    ) == [("B001", 0, "ok"), ("PB", 200, "ok")]
    assert query(
        published,
        "select min(day), max(day), count(*) from marts.plan_user_counts_daily "
        "where plan_id = 'PB'",
    ) == [(date(2024, 1, 15), AS_OF, 77)]


def test_users_per_plan_are_compared_both_ways(baseline: dict[str, Any], tmp_path: Path) -> None:
    """A user moved in user_last_seen to a plan the current mart lacks: that plan (0 users in
    current) and PB (one user short) both mismatch (the mart cases break one side only)."""
    settings = copy_home(baseline["settings"], tmp_path / "home", tmp_path / "unused")
    with workdb.connect(settings.work_path) as con:
        edit_mart(con, LAST_SEEN, "set plan_id = 'ZZ'", PB_USER)
    summary = pipeline.RunSummary(as_of=AS_OF)
    with pytest.raises(RunFailed), pipeline.failure_recorded(settings, summary):
        pipeline.validate_marts(settings, summary)
    assert failed_criticals(summary)[(LAST_SEEN, "plans_with_count_mismatch")] == 2


def test_counted_users_are_compared_with_the_current_counts_both_ways(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    """dbt's test assert_counted_users_match_plan_counts fails on a counted_users row of a plan
    the current mart lacks, not only on a plan the current mart has (a one-sided join passed
    it)."""
    settings = copy_home(baseline["settings"], tmp_path / "home", tmp_path / "unused")
    with workdb.connect(settings.work_path) as con:
        con.execute(
            "insert into marts.counted_users select * replace ('GHOST' as plan_id) "
            "from marts.counted_users where plan_id = 'PB' limit 1"
        )
    with pytest.raises(RunFailed, match=r"dbt test failed: assert_counted_users_match_plan_counts"):
        run_dbt(
            "test", settings.work_path, AS_OF, "--select", "assert_counted_users_match_plan_counts"
        )


@pytest.mark.parametrize("change", ["set closing_balance = -1", "set users_added = -1"])
def test_a_negative_monthly_figure_fails_the_counts_check(
    baseline: dict[str, Any], tmp_path: Path, change: str
) -> None:
    """A negative closing balance or users added fails "counts are present and not negative".
    It unbalances PA's month too (its figures never fall), so that check is not the only one
    failing, and MART_CASES, one failure each, cannot hold it."""
    settings = copy_home(baseline["settings"], tmp_path / "home", tmp_path / "unused")
    with workdb.connect(settings.work_path) as con:
        edit_mart(con, MONTHLY, change, PA_JAN)
    summary = pipeline.RunSummary(as_of=AS_OF)
    with pytest.raises(RunFailed), pipeline.failure_recorded(settings, summary):
        pipeline.validate_marts(settings, summary)
    assert failed_criticals(summary)[(MONTHLY, "negative_count_rows")] == 1


COUNTED_USERS, MONTHS = "assert_counted_users_match_plan_counts", "assert_months_contiguous"
CLOSING = "assert_monthly_closing_matches_daily"
# (dbt singular test, an edit of the built tables): each breaks one clause of the test alone.
# PB: 200 users, all active and billable; PA's months close at 2, 2, 3.
SINGULAR_CASES = [
    # a plan with users counted that counted_users does not list
    (COUNTED_USERS, "delete from marts.counted_users where plan_id = 'PB'"),
    (COUNTED_USERS, "update marts.counted_users set access_status = 'invited' "
     "where plan_id = 'PB' and user_id = 'b005'"),
    (COUNTED_USERS, "update marts.counted_users set is_billable = false "
     "where plan_id = 'PB' and user_id = 'b005'"),
    # one more user listed, active and not billable: only the user count differs
    (COUNTED_USERS, "insert into marts.counted_users select * replace ('zz' as user_id, false "
     "as is_billable) from marts.counted_users where plan_id = 'PB' and user_id = 'b005'"),
    (CLOSING, "update marts.plan_user_counts_monthly set closing_balance = 3 "
     "where plan_id = 'PA' and month = '2024-02-01'"),
    (CLOSING, "update marts.plan_user_counts_monthly set closing_balance = 4 "
     "where plan_id = 'PA' and month = '2024-03-01'"),  # the month of D, not complete
    (MONTHS, "delete from marts.plan_user_counts_monthly "
     "where plan_id = 'PA' and month = '2024-02-01'"),  # a gap
    (MONTHS, "delete from marts.plan_user_counts_monthly "
     "where plan_id = 'PA' and month = '2024-03-01'"),  # ends before the month of D
    ("assert_tier_ladder_rows_unique",
     "insert into seeds.tier_ladder select * from seeds.tier_ladder limit 1"),
]  # fmt: skip


@pytest.mark.parametrize(("test_name", "edit"), SINGULAR_CASES)
def test_each_clause_of_the_singular_dbt_tests_fails_them(
    baseline: dict[str, Any], test_name: str, edit: str
) -> None:
    """A dbt singular test passes on the real build and returns one failing row once one of its
    clauses is broken."""
    work = baseline["settings"].work_path
    assert singular_test_rows(work, test_name) == 0
    assert singular_test_rows(work, test_name, edit) == 1


@pytest.mark.parametrize(
    ("suite", "column", "mart", "change", "where", "unit"),
    MART_CASES,
    ids=[f"{suite}.{column}" for suite, column, *_ in MART_CASES],
)
def test_mart_critical_fails_the_run_and_publishes_nothing(
    baseline: dict[str, Any],
    tmp_path: Path,
    suite: str,
    column: str,
    mart: str,
    change: str,
    where: str,
    unit: str,
) -> None:
    """Each mart invariant, broken in a copy of a real build, stops the run before publishing."""
    settings = copy_home(baseline["settings"], tmp_path / "home", tmp_path / "unused")
    with workdb.connect(settings.work_path) as con:
        edit_mart(con, mart, change, where)
    summary = pipeline.RunSummary(as_of=AS_OF)
    with pytest.raises(RunFailed) as failed, pipeline.failure_recorded(settings, summary):
        # the flow's steps after the dbt build
        pipeline.validate_marts(settings, summary)
        pipeline.record_and_publish(settings, summary)
    description = next(
        e["description"]
        for e in suite_files()[suite]["expectations"]
        if e["kwargs"]["column"] == f"{suite}__{column}"
    )
    assert str(failed.value) == (
        f'data quality check failed: suite {suite}, expectation "{description}": 1 {unit}; '
        f"full report: {quality.report_path(settings)}"
    )
    assert failed_criticals(summary) == {(suite, column): 1}
    assert dump(settings.published_path) == baseline["dump"]
    assert validations_without_page(settings.quality_path) == []


# ---------------------------------------------------------------- the flow and the CLI


@pytest.fixture(scope="module")
def three_runs(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Through the real flow: a good run, a failing one (unreadable events file), a good one."""
    from flows.nightly import nightly

    root = tmp_path_factory.mktemp("history")
    good = write_landing(root / "good", warnings=True)
    # files the run does not read: named in warnings, not silently left
    (good.root / "users" / "notes.txt").write_text("not data")
    (good.root / "access_events_0099.csv").write_text("event_id\n")
    (good.root / "access-events").mkdir()
    (good.root / "access-events" / "late.parquet").write_bytes(b"")
    broken = write_landing(root / "broken", warnings=True)
    (broken.root / "access_events" / "zz_unreadable.parquet").write_bytes(b"garbage")
    database = root / "home" / "warehouse.duckdb"
    runs: dict[str, Any] = {"database": database}
    runs["first"] = nightly(landing=str(good.root), database=str(database), as_of=AS_OF)
    runs["first_dump"] = dump(database)
    with pytest.raises(RunFailed) as failed:
        nightly(landing=str(broken.root), database=str(database), as_of=AS_OF + timedelta(1))
    runs["failure"] = str(failed.value)
    runs["after_failure_dump"] = dump(database)
    runs["third"] = nightly(
        landing=str(good.root), database=str(database), as_of=AS_OF + timedelta(1)
    )
    return runs


def test_flow_warnings_are_in_the_summary(three_runs: dict[str, Any]) -> None:
    first = three_runs["first"]
    assert first.published
    assert (
        'data quality: suite raw_access_events, expectation "occurred_at parses as a timestamp": '
        "1 row" in first.warnings
    )
    assert set(first.step_seconds) >= {"validate raw", "validate marts"}
    assert "ignored 1 file(s) that are neither .csv nor .parquet: users/notes.txt" in first.warnings
    assert (
        "ignored 2 data file(s) outside the source folders (plans/, instances/, users/, "
        "org_admins/, access_events/, last_seen/): access-events/late.parquet, "
        "access_events_0099.csv" in first.warnings
    )


def test_flow_failure_publishes_nothing(three_runs: dict[str, Any]) -> None:
    assert three_runs["failure"].startswith(
        'data quality check failed: suite raw_access_events, expectation "every access_events '
        'file can be read": 1 file (access_events/zz_unreadable.parquet); full report: '
    )
    assert three_runs["after_failure_dump"] == three_runs["first_dump"]
    # the failed run's raw results have their pages, as the good runs' results do
    assert validations_without_page(three_runs["database"].parent / "quality") == []


def test_history_grows_by_one_set_of_rows_per_run(three_runs: dict[str, Any]) -> None:
    suites = suite_files()
    everything = sum(len(s["expectations"]) for s in suites.values())
    raw_only = sum(len(s["expectations"]) for n, s in suites.items() if n.startswith("raw_"))
    database = three_runs["database"]
    runs = query(
        database,
        "select as_of_date, run_status, count(*), count_if(not success and severity = 'critical') "
        "from marts.data_quality_runs group by run_at, as_of_date, run_status order by run_at",
    )
    assert runs == [
        (AS_OF, "published", everything, 0),
        (AS_OF + timedelta(1), "failed", raw_only, 1),
        (AS_OF + timedelta(1), "published", everything, 0),
    ]
    quarantine = query(
        database,
        "select as_of_date, run_status, sum(quarantined_rows) from marts.quarantine_history "
        "group by run_at, as_of_date, run_status order by run_at",
    )
    # the failed run stopped before dbt, so it has no quarantine counts
    total = sum(BAD_ROWS.values())
    assert quarantine == [
        (AS_OF, "published", total),
        (AS_OF + timedelta(1), "published", total),
    ]


def test_cli_run_with_all_events_malformed_fails_and_names_the_check(
    baseline: dict[str, Any], prefect_api_url: str, tmp_path: Path
) -> None:
    landing = write_landing(tmp_path / "landing", warnings=False)
    events = landing.root / "access_events" / "access_events_01.csv"
    lines = events.read_text().splitlines()
    # every event's action replaced by one the contract does not know
    events.write_text("\n".join([lines[0], *(ln.rsplit(",", 1)[0] + ",grnt" for ln in lines[1:])]))
    settings = copy_home(baseline["settings"], tmp_path / "home", landing.root)
    result = run_cli(
        "run",
        "--landing", str(landing.root),
        "--database", str(settings.published_path),
        "--as-of", "2024-04-01",
        env={"PREFECT_API_URL": prefect_api_url},
    )  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("usercounts:")]
    assert errors == [
        "usercounts: error: data quality check failed: suite raw_access_events, expectation "
        '"at most the allowed share of access_events rows is quarantined": 205 rows '
        "(quarantined_share 100.0%, allowed <= 5.0%); "
        f"full report: {quality.report_path(settings)}"
    ], result.stderr
    assert dump(settings.published_path) == baseline["dump"]


# ---------------------------------------------------------------- the step's own housekeeping


def test_a_suite_without_a_severity_is_refused(
    baseline: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewed file with a mistake stops the run instead of checking the wrong thing."""
    expectations = tmp_path / "expectations"
    shutil.copytree(quality.EXPECTATIONS_DIR, expectations, ignore=shutil.ignore_patterns("unc*"))
    suite_path = expectations / "expectations" / "raw_users.json"
    suite = json.loads(suite_path.read_text())
    suite["expectations"][0]["meta"] = {"severity": "fatal"}
    suite_path.write_text(json.dumps(suite))
    monkeypatch.setattr(quality, "EXPECTATIONS_DIR", expectations)
    monkeypatch.setattr(quality, "CHECKS_DIR", expectations / "checks")
    settings = copy_home(baseline["settings"], tmp_path / "home", tmp_path / "unused")
    with pytest.raises(RunFailed) as failed:
        pipeline.validate_raw(settings, pipeline.RunSummary(as_of=AS_OF))
    assert str(failed.value) == (
        "expectations/expectations/raw_users.json: expectation 'every users file can be read' "
        "needs meta.severity critical or warning, not 'fatal'"
    )


def test_old_validation_results_are_pruned(tmp_path: Path) -> None:
    quality_path = tmp_path / "quality"
    for store in ("results", "docs/validations"):
        for n in range(5):
            run = quality_path / store / "raw_users" / "__none__" / f"20240101T00000{n}.000000Z"
            run.mkdir(parents=True)
            (run / "batch.json").write_text("{}")
    quality.prune_results(quality_path, keep=2)
    for store in ("results", "docs/validations"):
        kept = sorted(p.name for p in (quality_path / store / "raw_users" / "__none__").iterdir())
        assert kept == ["20240101T000003.000000Z", "20240101T000004.000000Z"]
