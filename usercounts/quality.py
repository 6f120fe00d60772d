"""Data-quality checks: DuckDB computes small check tables, Great Expectations validates them.

The suites, validation definitions and checkpoints are reviewed files under expectations/
(GX 1.x file context). GX never scans the data: for each suite, expectations/checks/<suite>.sql
reduces the working database to one row of counts, and one checkpoint per layer (raw, marts)
validates a one-row frame of all its suites' counts, columns named `<suite>__<column>`.
The checks of access events and last-seen also write: they keep counts of the rows they
checked in the working database, so a night checks only the rows it loaded
(checks/raw_access_events.sql, checks/raw_last_seen.sql).
Validation results and HTML data docs go to the data folder's quality/ directory. The data
docs are built once a run: after the marts layer, or as soon as a critical check fails, or
when the run fails in between (pipeline.failure_recorded).

Great Expectations is imported inside the functions that need it: it costs ~5 s.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from usercounts import workdb
from usercounts.config import PROJECT_ROOT, Settings
from usercounts.errors import RunFailed

if TYPE_CHECKING:
    import pandas as pd

    from usercounts.pipeline import RunSummary

EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
CHECKS_DIR = EXPECTATIONS_DIR / "checks"
LAYERS = ("raw", "marts")
SEVERITIES = ("critical", "warning")
# Validation results (and their data docs pages) kept per suite; older ones are removed.
KEEP_RESULTS_PER_SUITE = 30

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one expectation in one run."""

    layer: str
    suite: str
    expectation: str
    expectation_type: str
    column: str
    severity: str
    success: bool
    # How many rows (files, plans, ... see unit) break it; None when it is not a count.
    unexpected_count: int | None
    unit: str
    observed_value: float | None
    detail: str = ""

    def describe(self) -> str:
        """Suite, expectation and how many, in one line."""
        return f'suite {self.suite}, expectation "{self.expectation}": {self.detail}'


def report_path(settings: Settings) -> Path:
    """The HTML data docs index of the data folder."""
    return settings.quality_path / "docs" / "index.html"


def validate_layer(settings: Settings, summary: RunSummary, layer: str) -> list[CheckResult]:
    """Validate one layer of the working database; note the results and warnings in the
    summary, and raise RunFailed naming the first failed critical expectation."""
    context = _context(settings)
    results, pages = run_checkpoint(context, settings, layer, summary.as_of)
    summary.checks.extend(results)
    summary.quality_docs_pending.extend(pages)
    summary.quality_report = str(report_path(settings))
    for result in results:
        if not result.success and result.severity == "warning":
            summary.warnings.append(f"data quality: {result.describe()}")
    failed = [r for r in results if not r.success and r.severity == "critical"]
    if failed:
        build_data_docs_or_warn(settings, summary, context)  # the failed check is the error
        more = f" (and {len(failed) - 1} more critical)" if len(failed) > 1 else ""
        raise RunFailed(
            f"data quality check failed: {failed[0].describe()}{more}; "
            f"full report: {report_path(settings)}"
        )
    if layer == LAYERS[-1]:
        build_data_docs(settings, summary, context)
    return results


def run_checkpoint(
    context: Any, settings: Settings, layer: str, as_of: date
) -> tuple[list[CheckResult], list[Any]]:
    """Compute the layer's check tables with DuckDB and run its GX checkpoint (of `context`,
    from _context) on them.

    Returns the results and the data docs pages they need (GX resource identifiers: the
    validation results and their suites), which build_data_docs builds.
    """
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    checkpoint = context.checkpoints.get(layer)
    suites = [definition.suite for definition in checkpoint.validation_definitions]
    # Raw checks keep counts of the rows they checked (checks/raw_access_events.sql,
    # checks/raw_last_seen.sql); the marts are only read.
    with workdb.connect(settings.work_path, read_only=layer != "raw") as con:
        frame = check_frame(con, [suite.name for suite in suites], as_of)
    for suite in suites:
        _check_suite_file(suite, frame)
    prune_results(settings.quality_path, KEEP_RESULTS_PER_SUITE - 1)
    outcome = checkpoint.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters={"quarantine_max_share": settings.quarantine_max_share},
    )
    pages = [
        *outcome.run_results.keys(),
        *(ExpectationSuiteIdentifier(name=suite.name) for suite in suites),
    ]
    row = frame.iloc[0].to_dict()
    results: list[CheckResult] = []
    for suite_result in outcome.run_results.values():
        for result in suite_result.results:
            results.append(_result(layer, suite_result.suite_name, result, row))
    return results, pages


def build_data_docs(settings: Settings, summary: RunSummary, context: Any = None) -> None:
    """Build the data docs pages of the run's validations that have none yet, in one build
    (with `context` when the caller has one: opening a GX context costs ~0.1 s).

    Not GX's UpdateDataDocsAction, which rebuilds the site once per suite; and not once per
    layer: each build recompiles GX's page templates and the index (0.3-0.5 s a build).
    """
    if not summary.quality_docs_pending:
        return
    if context is None:
        context = _context(settings)
    context.build_data_docs(resource_identifiers=summary.quality_docs_pending)
    summary.quality_docs_pending = []


def build_data_docs_or_warn(settings: Settings, summary: RunSummary, context: Any = None) -> None:
    """build_data_docs for a run that is failing or stopping: a docs error must not hide why."""
    try:
        build_data_docs(settings, summary, context)
    except Exception:  # noqa: BLE001 - logged; the run's own error is the one raised
        logger.warning("data docs of this run not built", exc_info=True)


def _context(settings: Settings) -> Any:
    """The GX file context of expectations/, writing into the data folder's quality/."""
    import great_expectations as gx

    return gx.get_context(
        mode="file",
        context_root_dir=str(EXPECTATIONS_DIR),
        runtime_environment={"usercounts_quality_dir": str(settings.quality_path)},
    )


def check_frame(con: duckdb.DuckDBPyConnection, suites: list[str], as_of: date) -> pd.DataFrame:
    """One row: each suite's check table (checks/<suite>.sql), columns prefixed `<suite>__`.

    The raw suites of access events and last-seen write their kept counts: for them `con`
    must be read-write and not inside a transaction (they commit their own).
    """
    import pandas as pd

    con.execute("set TimeZone = 'UTC'")
    con.execute((CHECKS_DIR / "_macros.sql").read_text())
    parts = []
    for suite in suites:
        sql = (CHECKS_DIR / f"{suite}.sql").read_text()
        params = {"as_of_date": as_of.isoformat()} if "$as_of_date" in sql else {}
        table = con.execute(sql, params).df()
        if len(table) != 1:
            raise RunFailed(f"checks/{suite}.sql returned {len(table)} rows, not one")
        parts.append(table.add_prefix(f"{suite}__"))
    return pd.concat(parts, axis=1)


def _check_suite_file(suite: Any, frame: pd.DataFrame) -> None:
    """Refuse a suite whose expectations lack a severity or name a column no check computes."""
    for expectation in suite.expectations:
        where = f"expectations/expectations/{suite.name}.json"
        severity = (expectation.meta or {}).get("severity")
        if severity not in SEVERITIES:
            raise RunFailed(
                f"{where}: expectation {expectation.description!r} needs meta.severity "
                f"critical or warning, not {severity!r}"
            )
        column = getattr(expectation, "column", None)
        if column is not None and column not in frame.columns:
            raise RunFailed(
                f"{where}: column {column} is not computed by expectations/checks/{suite.name}.sql"
            )


def _result(layer: str, suite: str, result: Any, row: dict[str, Any]) -> CheckResult:
    config = result.expectation_config
    kwargs, meta = config.kwargs, config.meta or {}
    column = kwargs.get("column", "")
    observed = _number(row.get(column))
    unit = meta.get("unit", "rows")
    count_column = meta.get("count_column")
    if count_column:
        count = _number(row.get(count_column))
    elif kwargs.get("max_value") == 0 and kwargs.get("min_value") is None:
        count = observed  # the column counts what breaks the expectation
    else:
        count = None
    short = column.removeprefix(f"{suite}__")
    if result.exception_info and result.exception_info.get("raised_exception"):
        detail = f"could not be evaluated: {result.exception_info.get('exception_message')}"
    elif count is None:
        detail = f"{short} is {_fmt(observed, short)}, expected {_bounds(kwargs, short)}"
    else:
        detail = f"{_fmt(count)} {_unit(unit, count)}"
        if count_column:
            detail += f" ({short} {_fmt(observed, short)}, allowed {_bounds(kwargs, short)})"
        names = row.get(f"{column}_names")  # the files a count of files is about
        if count and isinstance(names, str):
            detail += f" ({names})"
    return CheckResult(
        layer=layer,
        suite=suite,
        expectation=config.description or config.type,
        expectation_type=config.type,
        column=short,
        severity=meta.get("severity", "critical"),
        success=bool(result.success),
        unexpected_count=None if count is None else int(count),
        unit=unit,
        observed_value=observed,
        detail=detail,
    )


def _number(value: Any) -> float | None:
    """A check-table value as a float; None for SQL null / NaN."""
    if value is None:
        return None
    number = float(value)
    return None if number != number else number


def _fmt(value: float | None, column: str = "") -> str:
    """A number as a person reads it; a `*_share` column as a percentage."""
    if value is None:
        return "null"
    if column.endswith("_share"):
        return f"{value:.1%}"
    return str(int(value)) if value == int(value) else f"{value:.4g}"


def _unit(unit: str, count: float) -> str:
    """'rows' for 3, 'row' for 1."""
    return unit[:-1] if count == 1 and unit.endswith("s") else unit


def _bounds(kwargs: dict[str, Any], column: str) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        return f"between {_fmt(float(low), column)} and {_fmt(float(high), column)}"
    if low is not None:
        return f">= {_fmt(float(low), column)}"
    return f"<= {_fmt(float(high), column)}"


def prune_results(quality_path: Path, keep: int) -> None:
    """Keep the newest `keep` validation results per suite (and their data docs pages).

    GX rebuilds the data docs index from every page of the site, so an unpruned folder would
    make each run slower; marts.data_quality_runs keeps the full history.
    """
    for store in (quality_path / "results", quality_path / "docs" / "validations"):
        if not store.is_dir():
            continue
        for suite_dir in store.iterdir():
            runs = sorted(
                (run for run_name in suite_dir.glob("*") for run in run_name.glob("*")),
                key=lambda run: run.name,
            )
            for old in runs[: max(len(runs) - keep, 0)]:
                shutil.rmtree(old, ignore_errors=True)
