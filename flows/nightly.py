"""The nightly usercounts flow: load -> build counts -> check -> notify -> publish.

Each step is a Prefect task; the flow reads like the job's outline. Nothing is published
unless every step before publishing succeeded, so analysts never see a failed state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import duckdb
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from usercounts.build import BuildResult, run_dbt
from usercounts.config import Settings, today_utc
from usercounts.load import LoadSummary, load_landing
from usercounts.lock import run_lock
from usercounts.publish import publish
from usercounts.state import copy_state_into


@dataclass
class RunSummary:
    """What one run did, for the terminal, the Prefect artifact and meta.runs."""

    as_of: date
    published: str | None = None
    rows_loaded: dict[str, int] = field(default_factory=dict)
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    plans: int = 0
    step_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """A short table a person reads at a glance."""
        lines = [
            f"## usercounts run, as of {self.as_of.isoformat()}",
            "",
            f"Published: `{self.published}`" if self.published else "Nothing published.",
            f"Plans: {self.plans}",
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

    def to_text(self) -> str:
        """The same summary for a terminal."""
        loaded = ", ".join(f"{s} {n}" for s, n in self.rows_loaded.items())
        quarantined = sum(self.rows_quarantined.values())
        steps = ", ".join(f"{s} {secs:.1f}s" for s, secs in self.step_seconds.items())
        lines = [
            f"usercounts: as of {self.as_of.isoformat()}: {self.plans} plans; "
            f"published {self.published or 'nothing'}",
            f"  rows loaded: {loaded}",
            f"  rows quarantined: {quarantined}"
            + (
                " ("
                + ", ".join(f"{s} {n}" for s, n in self.rows_quarantined.items() if n)
                + ")"
                if quarantined
                else ""
            ),
            f"  time: {steps}",
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@task(name="load landing files", cache_policy=NO_CACHE)
def load_step(settings: Settings) -> LoadSummary:
    """Rebuild the working database's raw layer from the landing folder and the state file."""
    settings.work_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.work_path)) as con:
        summary = load_landing(con, settings.landing)
        copy_state_into(con, settings.state_path)
    return summary


@task(name="build counts with dbt", cache_policy=NO_CACHE)
def build_step(settings: Settings, as_of: date) -> BuildResult:
    """dbt build: models, their tests and unit tests, in the working database."""
    return run_dbt("build", settings.work_path, as_of, "--exclude", "test_type:unit")


@task(name="publish warehouse", cache_policy=NO_CACHE)
def publish_step(settings: Settings, summary: RunSummary) -> list[str]:
    """Record the run in meta.runs, then replace the published file atomically."""
    with duckdb.connect(str(settings.work_path)) as con:
        record_run(con, summary)
        con.execute("checkpoint")
    return publish(settings.work_path, settings.published_path)


def record_run(con: duckdb.DuckDBPyConnection, summary: RunSummary) -> None:
    """Append this run to meta.runs (kept across runs in the working database)."""
    con.execute("create schema if not exists meta")
    con.execute(
        "create table if not exists meta.runs (as_of_date date, published_at timestamp, "
        "plans bigint, rows_loaded bigint, rows_quarantined bigint)"
    )
    con.execute(
        "insert into meta.runs values (?, ?, ?, ?, ?)",
        [
            summary.as_of,
            datetime.now(UTC).replace(tzinfo=None),
            summary.plans,
            sum(summary.rows_loaded.values()),
            sum(summary.rows_quarantined.values()),
        ],
    )


def count_outputs(settings: Settings, summary: RunSummary) -> None:
    """Read plan and quarantine counts back from the built marts."""
    with duckdb.connect(str(settings.work_path), read_only=True) as con:
        summary.plans = con.execute("select count(*) from marts.plan_user_counts_current").fetchone()[0]
        for source in summary.rows_loaded:
            summary.rows_quarantined[source] = con.execute(
                f"select count(*) from quarantine.{source}"  # noqa: S608 - fixed source names
            ).fetchone()[0]


@flow(name="usercounts-nightly", log_prints=True)
def nightly(
    landing: str | None = None,
    database: str | None = None,
    as_of: date | None = None,
    outbox: str | None = None,
) -> RunSummary:
    """The nightly job: load, build, check thresholds, notify, publish."""
    overrides = {"landing": landing, "database": database, "outbox": outbox}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    as_of = as_of or today_utc()
    summary = RunSummary(as_of=as_of)
    logger = get_run_logger()

    with run_lock(settings.lock_path):
        # A run always starts from a clean working database: whatever a crashed run left
        # there is rebuilt from the landing files, which are the source of truth.
        for leftover in (settings.work_path, settings.work_path.with_suffix(".duckdb.wal")):
            leftover.unlink(missing_ok=True)

        started = time.perf_counter()
        loaded = load_step(settings)
        summary.rows_loaded = dict(loaded.rows)
        summary.step_seconds["load"] = time.perf_counter() - started
        if loaded.skipped_files:
            summary.warnings.append(
                f"ignored {len(loaded.skipped_files)} file(s) that are neither .csv nor "
                f".parquet: {', '.join(loaded.skipped_files[:5])}"
            )

        started = time.perf_counter()
        build_step(settings, as_of)
        summary.step_seconds["dbt build"] = time.perf_counter() - started
        count_outputs(settings, summary)

        started = time.perf_counter()
        publish_step(settings, summary)
        summary.published = str(settings.published_path)
        summary.step_seconds["publish"] = time.perf_counter() - started

    for warning in summary.warnings:
        logger.warning(warning)
    create_markdown_artifact(
        key="usercounts-run-summary", markdown=summary.to_markdown(), description="run summary"
    )
    return summary
