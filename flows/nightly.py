"""The nightly usercounts flow: load -> validate -> build counts -> validate -> notify -> publish.

Each step is a Prefect task around a plain function of usercounts.pipeline; the flow reads
like the job's outline. Nothing is published unless every step before it succeeded, so
analysts never see a failed or half-built state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime
from typing import TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from usercounts import notify, pipeline
from usercounts.build import prestart_dbt
from usercounts.config import SOURCES, Settings, today_utc
from usercounts.gc_tuning import tune_for_batch_run
from usercounts.lock import run_lock
from usercounts.manifest import purge_expired
from usercounts.pause import pause_point
from usercounts.pipeline import RunSummary
from usercounts.report import write_report

T = TypeVar("T")

load_step = task(name="load landing files", cache_policy=NO_CACHE)(pipeline.load)
validate_raw_step = task(name="validate raw layer (GX)", cache_policy=NO_CACHE)(
    pipeline.validate_raw
)
build_step = task(name="build counts with dbt", cache_policy=NO_CACHE)(pipeline.build)
validate_marts_step = task(name="validate marts (GX)", cache_policy=NO_CACHE)(
    pipeline.validate_marts
)
notify_step = task(name="notify org admins", cache_policy=NO_CACHE)(notify.notify_or_raise)
publish_step = task(name="publish warehouse", cache_policy=NO_CACHE)(pipeline.record_and_publish)
purge_step = task(name="purge expired exports", cache_policy=NO_CACHE)(purge_expired)
report_step = task(name="write capacity report", cache_policy=NO_CACHE)(write_report)


def notify_admins(settings: Settings, summary: RunSummary, since: datetime) -> None:
    """Send the due notifications, retrying with backoff; what still fails is a warning
    (the next run retries it), and marts.notifications is refreshed when the log changed."""
    delays = notify.retry_delays(settings.notify_retries, settings.notify_retry_delay_seconds)
    step = notify_step.with_options(retries=settings.notify_retries, retry_delay_seconds=delays)
    try:
        report = step(settings, summary.as_of, since)
    except notify.NotificationsFailed as exc:
        report = exc.report
    summary.notifications = report.counts()
    summary.warnings.extend(report.warnings)
    if report.changed:
        notify.refresh_notifications_mart(settings, summary.as_of)


def timed(summary: RunSummary, step: str, call: Callable[[], T]) -> T:
    """Run one step and note its wall time in the summary (a test can pause it: pause.py)."""
    pause_point(step)
    started = time.perf_counter()
    try:
        return call()
    finally:
        summary.step_seconds[step] = time.perf_counter() - started


@flow(name="usercounts-nightly", log_prints=True)
def nightly(
    landing: str | None = None,
    database: str | None = None,
    as_of: date | None = None,
    outbox: str | None = None,
    full_refresh: bool = False,
) -> RunSummary:
    """The nightly job: load, build, check thresholds, notify, publish.

    The working database is kept between runs and brought up to date incrementally;
    full_refresh=True rebuilds it from the landing folder (docs/operations.md).
    """
    overrides = {"landing": landing, "database": database, "outbox": outbox}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    summary = RunSummary(as_of=as_of or today_utc())
    started = notify.utc_now()
    logger = get_run_logger()

    with run_lock(settings.lock_path), pipeline.failure_recorded(settings, summary):
        tune_for_batch_run()  # seconds of full garbage collections a night otherwise
        # dbt's imports (~3 s) and its parse (~0.7 s) overlap the load and the raw checks
        prestart_dbt(settings.work_path, summary.as_of, settings.inactive_days)
        # users exports live 24 hours: each run deletes the expired ones first
        summary.warnings.extend(purge_step(settings.exports_path).warnings)
        loaded = timed(summary, "load", lambda: load_step(settings, full_refresh))
        summary.rows_loaded = loaded.rows_read()
        if loaded.skipped_files:
            summary.warnings.append(
                f"ignored {len(loaded.skipped_files)} file(s) that are neither .csv nor "
                f".parquet: {', '.join(loaded.skipped_files[:5])}"
            )
        if loaded.stray_files:
            summary.warnings.append(
                f"ignored {len(loaded.stray_files)} data file(s) outside the source folders "
                f"({', '.join(f'{s}/' for s in SOURCES)}): {', '.join(loaded.stray_files[:5])}"
            )
        timed(summary, "validate raw", lambda: validate_raw_step(settings, summary))
        built = timed(
            summary, "dbt build", lambda: build_step(settings, summary.as_of, full_refresh)
        )
        summary.build_mode = pipeline.build_mode(loaded, built)
        summary.dbt_parsed_in_advance = built.parsed_in_advance
        pipeline.read_back(settings, summary)
        timed(summary, "validate marts", lambda: validate_marts_step(settings, summary))
        timed(summary, "notify", lambda: notify_admins(settings, summary, started))
        timed(summary, "publish", lambda: publish_step(settings, summary))
        # After publishing: a report that fails leaves the warehouse published and the
        # run completed, with a warning (DECISIONLOG.md, "Capacity report in the run").
        try:
            report = timed(
                summary,
                "report",
                lambda: report_step(settings.published_path, settings.reports_path),
            )
            summary.report = str(report.latest_html)
            create_link_artifact(
                key="usercounts-capacity-report",
                link=report.latest_html.as_uri(),
                link_text=f"Capacity report, as of {report.as_of.isoformat()}",
                description=f"{report.plans} plans; dated copy {report.html.name}",
            )
        except Exception as exc:  # any report failure is a warning, never an un-publish
            summary.warnings.append(f"capacity report not written: {exc}")

    for warning in summary.warnings:
        logger.warning(warning)
    create_markdown_artifact(
        key="usercounts-run-summary", markdown=summary.to_markdown(), description="run summary"
    )
    return summary
