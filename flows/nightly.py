"""The nightly usercounts flow: load -> build counts -> check -> notify -> publish.

Each step is a Prefect task around a plain function of usercounts.pipeline; the flow reads
like the job's outline. Nothing is published unless every step before it succeeded, so
analysts never see a failed or half-built state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date
from typing import TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from usercounts import pipeline
from usercounts.config import Settings, today_utc
from usercounts.lock import run_lock
from usercounts.pipeline import RunSummary

T = TypeVar("T")

load_step = task(name="load landing files", cache_policy=NO_CACHE)(pipeline.load)
build_step = task(name="build counts with dbt", cache_policy=NO_CACHE)(pipeline.build)
publish_step = task(name="publish warehouse", cache_policy=NO_CACHE)(pipeline.record_and_publish)


def timed(summary: RunSummary, step: str, call: Callable[[], T]) -> T:
    """Run one step and note its wall time in the summary."""
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
    logger = get_run_logger()

    with run_lock(settings.lock_path):
        loaded = timed(summary, "load", lambda: load_step(settings, full_refresh))
        summary.rows_loaded = dict(loaded.rows)
        if loaded.skipped_files:
            summary.warnings.append(
                f"ignored {len(loaded.skipped_files)} file(s) that are neither .csv nor "
                f".parquet: {', '.join(loaded.skipped_files[:5])}"
            )
        built = timed(
            summary, "dbt build", lambda: build_step(settings, summary.as_of, full_refresh)
        )
        summary.build_mode = pipeline.build_mode(loaded, built)
        pipeline.read_back(settings, summary)
        timed(summary, "publish", lambda: publish_step(settings, summary))

    for warning in summary.warnings:
        logger.warning(warning)
    create_markdown_artifact(
        key="usercounts-run-summary", markdown=summary.to_markdown(), description="run summary"
    )
    return summary
