"""The steps of a run as plain functions; flows/nightly.py runs each as a Prefect task.

Keeping the bodies here lets tests drive the real load, dbt build and publish directly,
without paying for a Prefect server per test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import duckdb

from usercounts import incremental, quality, workdb
from usercounts.build import BuildResult, run_dbt
from usercounts.config import Settings
from usercounts.load import SOURCE_COLUMNS, FullReloadNeeded, LoadSummary, load_landing
from usercounts.publish import publish
from usercounts.state import append_quality, copy_state_into, record_quality, record_run

logger = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


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
    started_at: datetime = field(default_factory=_utc_now)
    # Data-quality results of this run, and its quarantined rows per (source, reason).
    checks: list[quality.CheckResult] = field(default_factory=list)
    quarantine_reasons: list[tuple[str, str | None, int, int]] = field(default_factory=list)
    quality_report: str | None = None
    # This run's validations whose data docs pages are not built yet (quality.build_data_docs).
    quality_docs_pending: list[Any] = field(default_factory=list)
    # "incremental", or "full rebuild (<why>)": how the working database was brought up to date.
    build_mode: str | None = None
    # Whether dbt's child parsed the project while the run loaded (build.prestart_dbt).
    dbt_parsed_in_advance: bool = False

    def to_markdown(self) -> str:
        """A short table a person reads at a glance."""
        lines = [
            f"## usercounts run, as of {self.as_of.isoformat()}",
            "",
            f"Published: `{self.published}`" if self.published else "Nothing published.",
            f"Plans: {self.plans}",
            f"Capacity report: `{self.report}`" if self.report else "No capacity report.",
            f"Notifications: {self.notifications_text()}",
            *([f"Build: {self.build_mode}"] if self.build_mode else []),
            "",
            "| source | rows loaded | rows quarantined |",
            "|---|---:|---:|",
        ]
        for source, rows in self.rows_loaded.items():
            lines.append(f"| {source} | {rows} | {self.rows_quarantined.get(source, 0)} |")
        if self.checks:
            lines += ["", self.quality_line()]
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
            *([f"  build: {self.build_mode}"] if self.build_mode else []),
            f"  rows loaded: {loaded}",
            f"  rows quarantined: {sum(quarantined.values())}{detail}",
            f"  capacity report: {self.report or 'not written'}",
            f"  time: {steps}",
        ]
        if self.checks:
            lines.append(f"  {self.quality_line()}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def quality_line(self) -> str:
        """How many expectations were checked and failed, and where the report is."""
        failed = [c for c in self.checks if not c.success]
        warnings = sum(c.severity == "warning" for c in failed)
        return (
            f"data quality: {len(self.checks)} expectations checked, {warnings} warning(s) "
            f"and {len(failed) - warnings} critical failed; report: {self.quality_report}"
        )


def load(settings: Settings, full_refresh: bool = False) -> LoadSummary:
    """Load the landing files not loaded yet into raw.*, and snapshot the state file beside.

    The working database is kept between runs; it is emptied first when a rebuild from
    scratch is needed (usercounts.incremental says when). summary.full_reload_reason says why.
    """
    reason = incremental.reload_reason(settings.work_path, settings.landing, full_refresh)
    incremental.mark_unfinished(settings.work_path)
    summary: LoadSummary | None = None
    if reason:
        workdb.remove(settings.work_path)
    else:
        with workdb.connect(settings.work_path) as con:
            try:
                summary = load_landing(con, settings.landing, incremental=True)
            except FullReloadNeeded as exc:
                reason = str(exc)
        if reason:
            workdb.remove(settings.work_path)
    with workdb.connect(settings.work_path) as con:
        if summary is None:
            summary = load_landing(con, settings.landing)
        summary.full_reload_reason = reason
        copy_state_into(con, settings.state_path)
    return summary


def validate_raw(settings: Settings, summary: RunSummary) -> None:
    """Great Expectations on the loaded raw layer; RunFailed on a critical failure."""
    quality.validate_layer(settings, summary, "raw")


def validate_marts(settings: Settings, summary: RunSummary) -> None:
    """Great Expectations on the built marts; RunFailed on a critical failure."""
    quality.validate_layer(settings, summary, "marts")


def build(settings: Settings, as_of: date, full_refresh: bool = False) -> BuildResult:
    """dbt build (models and their data tests) in the working database, then record it.

    Incremental models add what was loaded since the last build; every model is rebuilt
    when asked, on the first build, and when the as-of date is earlier than the last one.
    """
    incremental.mark_unfinished(settings.work_path)
    # Taken once, before dbt reads the project: a file edited during the build must not be
    # recorded as built (the next run then rebuilds, or loads the edited seed).
    fingerprint = incremental.fingerprint()
    with duckdb.connect(str(settings.work_path), read_only=True) as con:
        last = incremental.last_build(con)
    reason = None
    if full_refresh:
        reason = "full refresh requested"
    elif last is not None and as_of < last.as_of_date:
        reason = f"as-of date before the last build's ({last.as_of_date.isoformat()})"
    # The load added to the last build because the project was the same; it changed since.
    changed_since_load = last is not None and last.fingerprint != fingerprint
    exclude = ["test_type:unit"]
    if last is not None and reason is None and not changed_since_load:
        # Adding to the last build of this project: its seeds are loaded and tested already
        # (a changed seed changes the fingerprint; the load then rebuilds from scratch).
        exclude.append("resource_type:seed")
    extra = ["--full-refresh"] if reason else []
    result = run_dbt(
        "build",
        settings.work_path,
        as_of,
        "--exclude",
        *exclude,
        *extra,
        inactive_days=settings.inactive_days,
    )
    result.full_refresh = last is None or reason is not None
    result.full_refresh_reason = reason if last is not None else "nothing built before"
    # A build on a project edited during the run is recorded as no project's: the next run
    # rebuilds from scratch rather than add to tables built partly by the older project.
    recorded = "" if changed_since_load else fingerprint
    with duckdb.connect(str(settings.work_path)) as con:
        incremental.record_build(con, as_of, settings.landing, result.full_refresh, recorded)
    incremental.clear_unfinished(settings.work_path)
    return result


def load_build_publish(settings: Settings, as_of: date, full_refresh: bool = False) -> RunSummary:
    """A run's data steps without its checks, notifications and report: load, dbt build,
    publish. For tests and the benchmark's rebuild; the nightly flow runs every step."""
    summary = RunSummary(as_of=as_of)
    loaded = load(settings, full_refresh)
    summary.rows_loaded = loaded.rows_read()
    built = build(settings, as_of, full_refresh)
    summary.build_mode = build_mode(loaded, built)
    summary.dbt_parsed_in_advance = built.parsed_in_advance
    read_back(settings, summary)
    record_and_publish(settings, summary)
    return summary


def build_mode(loaded: LoadSummary, built: BuildResult) -> str:
    """How the run brought the working database up to date, for the run summary."""
    if loaded.full_reload_reason:
        return f"full rebuild ({loaded.full_reload_reason})"
    if built.full_refresh:
        return f"full rebuild of the models ({built.full_refresh_reason})"
    return "incremental"


def read_back(settings: Settings, summary: RunSummary) -> None:
    """Fill the summary's plan and quarantine counts from the built marts."""
    with workdb.connect(settings.work_path, read_only=True) as con:
        summary.plans = con.execute(
            "select count(*) from marts.plan_user_counts_current"
        ).fetchone()[0]
        for source in SOURCE_COLUMNS:
            # fixed names; the reason up to its first ':' (the value that failed follows it)
            reasons = con.execute(
                f"select split_part(reason, ':', 1), count(*) from quarantine.{source} "  # noqa: S608
                "group by 1 order by 1"
            ).fetchall()
            total = con.execute(
                f"select (select count(*) from raw.{source}) + "  # noqa: S608
                "(select count(*) from raw.load_rejects where source = ?)",
                [source],
            ).fetchone()[0]
            summary.rows_quarantined[source] = sum(n for _, n in reasons)
            summary.quarantine_reasons += [
                (source, reason, n, total) for reason, n in reasons or [(None, 0)]
            ]


def quality_history(
    summary: RunSummary, status: str
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """This run's rows for marts.data_quality_runs and marts.quarantine_history."""
    run = (summary.started_at, summary.as_of, status)
    checks = [
        (*run, c.layer, c.suite, c.expectation, c.expectation_type, c.column, c.severity,
         c.success, c.unexpected_count, c.unit, c.observed_value)
        for c in summary.checks
    ]  # fmt: skip
    quarantine = [(*run, *reason) for reason in summary.quarantine_reasons]
    return checks, quarantine


@contextmanager
def failure_recorded(settings: Settings, summary: RunSummary) -> Iterator[None]:
    """On any failure, keep the run's data-quality record (the next published file shows it).
    On any failure or stop (Ctrl-C, SIGTERM), build the data docs of the checks it ran: they
    are built once a run, after the marts."""
    try:
        yield
    except BaseException as stopped:
        quality.build_data_docs_or_warn(settings, summary)
        if isinstance(stopped, Exception):
            checks, quarantine = quality_history(summary, "failed")
            try:
                if checks or quarantine:
                    record_quality(settings.state_path, checks, quarantine)
            except Exception:  # noqa: BLE001 - logged; the run's own error is the one raised
                # (a full disk fails this too: its error must not replace the run's)
                logger.warning("the failed run's data-quality history not recorded", exc_info=True)
        raise


def record_and_publish(settings: Settings, summary: RunSummary) -> list[str]:
    """Publish the marts with the run history (meta.runs), then log the run in the state.

    The history lives in the state file because the working database is rebuilt each run.
    """
    run = [
        summary.as_of,
        _utc_now(),
        summary.plans,
        sum(summary.rows_loaded.values()),
        sum(summary.rows_quarantined.values()),
    ]
    with workdb.connect(settings.work_path) as con:
        con.execute("create or replace table meta.runs as select * from raw.run_log")
        con.execute("insert into meta.runs values (?, ?, ?, ?, ?)", run)
        # the history so far (from the state file) and this run
        checks, quarantine = quality_history(summary, "published")
        con.execute(
            "create or replace table marts.data_quality_runs as select * from raw.data_quality_log"
        )
        con.execute(
            "create or replace table marts.quarantine_history as select * from raw.quarantine_log"
        )
        append_quality(
            con,
            checks,
            quarantine,
            checks_table="marts.data_quality_runs",
            quarantine_table="marts.quarantine_history",
        )
        # the published file is copied as it is on disk: nothing may be left in its log
        con.execute(f"checkpoint {workdb.MARTS_ALIAS}")
    tables = publish(settings.work_path, settings.published_path)
    record_run(settings.state_path, run)
    record_quality(settings.state_path, checks, quarantine)
    summary.published = str(settings.published_path)
    return tables
