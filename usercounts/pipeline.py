"""The steps of a run as plain functions; flows/nightly.py runs each as a Prefect task.

Keeping the bodies here lets tests drive the real load, dbt build and publish directly,
without paying for a Prefect server per test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import duckdb

from usercounts.build import BuildResult, run_dbt
from usercounts.config import Settings
from usercounts.load import SOURCE_COLUMNS, LoadSummary, load_landing
from usercounts.publish import publish
from usercounts.state import copy_state_into, record_run


@dataclass
class RunSummary:
    """What one run did, for the terminal, the Prefect artifact and meta.runs."""

    as_of: date
    published: str | None = None
    report: str | None = None
    rows_loaded: dict[str, int] = field(default_factory=dict)
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    plans: int = 0
    notifications: dict[str, int] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """A short table a person reads at a glance."""
        lines = [
            f"## usercounts run, as of {self.as_of.isoformat()}",
            "",
            f"Published: `{self.published}`" if self.published else "Nothing published.",
            f"Plans: {self.plans}",
            f"Capacity report: `{self.report}`" if self.report else "No capacity report.",
            f"Notifications: {self.notifications_text()}",
            "",
            "| source | rows loaded | rows quarantined |",
            "|---|---:|---:|",
        ]
        for source, rows in self.rows_loaded.items():
            lines.append(f"| {source} | {rows} | {self.rows_quarantined.get(source, 0)} |")
        lines += ["", "| step | seconds |", "|---|---:|"]
        lines += [f"| {step} | {secs:.2f} |" for step, secs in self.step_seconds.items()]
        if self.warnings:
            lines += ["", "Warnings:", *[f"- {w}" for w in self.warnings]]
        return "\n".join(lines)

    def notifications_text(self) -> str:
        n = self.notifications
        return f"{n.get('decided', 0)} new, {n.get('sent', 0)} sent, {n.get('unsent', 0)} unsent"

    def to_text(self) -> str:
        """The same summary for a terminal."""
        loaded = ", ".join(f"{s} {n}" for s, n in self.rows_loaded.items())
        quarantined = {s: n for s, n in self.rows_quarantined.items() if n}
        detail = (
            f" ({', '.join(f'{s} {n}' for s, n in quarantined.items())})" if quarantined else ""
        )
        steps = ", ".join(f"{s} {secs:.1f}s" for s, secs in self.step_seconds.items())
        lines = [
            f"usercounts: as of {self.as_of.isoformat()}: {self.plans} plans; "
            f"published {self.published or 'nothing'}",
            f"  notifications: {self.notifications_text()}",
            f"  rows loaded: {loaded}",
            f"  rows quarantined: {sum(quarantined.values())}{detail}",
            f"  capacity report: {self.report or 'not written'}",
            f"  time: {steps}",
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def reset_work(settings: Settings) -> None:
    """Start from a clean working database: what a crashed run left is rebuilt from landing."""
    settings.work_path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (
        settings.work_path,
        settings.work_path.with_name(settings.work_path.name + ".wal"),
    ):
        leftover.unlink(missing_ok=True)


def load(settings: Settings) -> LoadSummary:
    """Load the landing folder into raw.* and snapshot the state file beside it."""
    with duckdb.connect(str(settings.work_path)) as con:
        summary = load_landing(con, settings.landing)
        copy_state_into(con, settings.state_path)
    return summary


def build(settings: Settings, as_of: date) -> BuildResult:
    """dbt build (models and their data tests) in the working database."""
    return run_dbt(
        "build",
        settings.work_path,
        as_of,
        "--exclude",
        "test_type:unit",
        inactive_days=settings.inactive_days,
    )


def read_back(settings: Settings, summary: RunSummary) -> None:
    """Fill the summary's plan and quarantine counts from the built marts."""
    with duckdb.connect(str(settings.work_path), read_only=True) as con:
        summary.plans = con.execute(
            "select count(*) from marts.plan_user_counts_current"
        ).fetchone()[0]
        for source in SOURCE_COLUMNS:
            summary.rows_quarantined[source] = con.execute(
                f"select count(*) from quarantine.{source}"  # noqa: S608 - fixed names
            ).fetchone()[0]


def record_and_publish(settings: Settings, summary: RunSummary) -> list[str]:
    """Publish the marts with the run history (meta.runs), then log the run in the state.

    The history lives in the state file because the working database is rebuilt each run.
    """
    run = [
        summary.as_of,
        datetime.now(UTC).replace(tzinfo=None),
        summary.plans,
        sum(summary.rows_loaded.values()),
        sum(summary.rows_quarantined.values()),
    ]
    with duckdb.connect(str(settings.work_path)) as con:
        con.execute("create schema if not exists meta")
        con.execute("create or replace table meta.runs as select * from raw.run_log")
        con.execute("insert into meta.runs values (?, ?, ?, ?, ?)", run)
        con.execute("checkpoint")
    tables = publish(settings.work_path, settings.published_path)
    record_run(settings.state_path, run)
    summary.published = str(settings.published_path)
    return tables
