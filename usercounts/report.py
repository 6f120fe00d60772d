"""The capacity report: one self-contained HTML page and the same figures as CSV.

It reads the published warehouse read-only (marts.capacity_forecast and the monthly and
current counts) and writes, into one folder, files named for the as-of date plus copies
under fixed "latest" names. The page carries no script and loads nothing: its charts are
SVG inlined in the HTML (usercounts/charts.py), so it opens offline, prints, and can be
mailed.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from usercounts.charts import render_chart
from usercounts.errors import RunFailed
from usercounts.figures import percent
from usercounts.views import open_published

# A month in the forecast, as in models/marts/capacity_forecast.sql.
DAYS_PER_MONTH = 30.4375
# Month-end balances shown per plan (the admin's "View usage" picture is 12 months).
HISTORY_MONTHS = 12
# Forecast months drawn at most; a renewal further out is named, not drawn.
FORECAST_MONTHS = 18
LATEST_HTML = "capacity-report.html"
# Charts are drawn for this many plans, the most urgent first: a page of a thousand charts
# is read by nobody (and weighs megabytes). Every plan keeps its figures and table (and its
# rows in the CSV files).
MAX_CHARTS = 24

URGENCY_LABELS = {
    "over_limit": "Over limit",
    "at_limit": "At limit",
    "approaching": "At 80% or more",
    "crosses_limit_before_renewal": "Limit before renewal",
    "crosses_80_before_renewal": "80% before renewal",
    "ok": "OK",
}
CONFIDENCE_LABELS = {"ok": "", "short_history": "Short history", "noisy": "Noisy history"}
TIER_STATUS_TEXT = {
    "above_ladder": "above the ladder",
    "no_ladder": "no ladder for this product",
    "no_projection": "renewal passed",
}

FORECAST_COLUMNS = (
    "org_id",
    "plan_id",
    "plan_name",
    "product_key",
    "plan_type",
    "billing_cycle",
    "urgency",
    "urgency_rank",
    "threshold_status",
    "user_count",
    "billable_count",
    "non_billable_count",
    "invited_count",
    "user_tier",
    "utilization",
    "users_at_80",
    "has_reached_80",
    "has_reached_limit",
    "trend_months",
    "trend_first_month",
    "trend_last_month",
    "trend_users_per_month",
    "trend_r2",
    "trend_residual_sd",
    "confidence",
    "confidence_note",
    "as_of_date",
    "renewal_date",
    "projected_user_count_at_renewal",
    "projected_80_date",
    "projected_limit_date",
    "recommended_tier",
    "recommended_tier_status",
)
MONTH_COLUMNS = (
    "org_id",
    "plan_id",
    "plan_name",
    "kind",
    "month",
    "figure_date",
    "closing_balance",
    "change",
    "change_pct",
    "users_added",
    "users_removed",
    "billable_count",
    "non_billable_count",
    "invited_count",
    "user_tier",
)


@dataclass
class Plan:
    """One plan's forecast row and the month-end figures its chart and table show."""

    forecast: dict[str, Any]
    months: list[dict[str, Any]] = field(default_factory=list)
    projection: list[dict[str, Any]] = field(default_factory=list)
    chart_svg: str = ""
    # Position in the report, most urgent first (1 = most urgent): the page's anchor.
    rank: int = 0

    @property
    def plan_id(self) -> str:
        return self.forecast["plan_id"]


@dataclass
class Report:
    """What the report shows: the as-of date and every plan, most urgent first."""

    as_of: date
    plans: list[Plan]


def read_report(con: Any) -> Report:
    """Every plan's forecast and last 12 month-end figures from the published warehouse."""
    has_forecast = con.execute(
        "select count(*) from duckdb_tables() "
        "where schema_name = 'marts' and table_name = 'capacity_forecast'"
    ).fetchone()[0]
    if not has_forecast:
        raise RunFailed(
            "the published warehouse has no marts.capacity_forecast (published by an older "
            "version): run `usercounts run` to rebuild it"
        )
    forecast_rows = _dicts(
        con.execute(
            """
            select
                f.*,
                c.billable_count,
                c.non_billable_count,
                c.invited_count,
                c.utilization
            from marts.capacity_forecast as f
            inner join marts.plan_user_counts_current as c on f.plan_id = c.plan_id
            order by f.urgency_rank, f.org_id, f.plan_name, f.plan_id
            """
        )
    )
    month_rows = _dicts(
        con.execute(
            """
            select *
            from marts.plan_user_counts_monthly
            qualify row_number() over (partition by plan_id order by month desc) <= ?
            order by plan_id, month
            """,
            [HISTORY_MONTHS],
        )
    )
    by_plan: dict[str, list[dict[str, Any]]] = {}
    for row in month_rows:
        row["non_billable_count"] = row["closing_balance"] - row["billable_count"]
        by_plan.setdefault(row["plan_id"], []).append(row)
    if not forecast_rows:
        as_of = con.execute("select max(as_of_date) from meta.runs").fetchone()[0]
    else:
        as_of = forecast_rows[0]["as_of_date"]
    plans = [
        Plan(forecast=f, months=by_plan.get(f["plan_id"], []), rank=n)
        for n, f in enumerate(forecast_rows, start=1)
    ]
    for plan in plans:
        plan.projection = projection(plan.forecast)
    return Report(as_of=as_of, plans=plans)


def _dicts(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _month_end(month_start: date) -> date:
    return (month_start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def tenths_down(value: float) -> float:
    """Rounded down to a tenth, as capacity_forecast rounds the count at renewal: a bar
    reaches the tier or 80% line only once the line has (noise first rounded away)."""
    return math.floor(round(value, 6) * 10) / 10


def projection(forecast: dict[str, Any]) -> list[dict[str, Any]]:
    """The forecast line as chart points: each month end before the renewal, then renewal.

    The same line as capacity_forecast: the count at the as-of instant plus the trend per
    day (users per month / 30.4375) times the days after the as-of date, at least 0.
    Empty when the renewal date has passed.
    """
    renewal = forecast["renewal_date"]
    at_renewal = forecast["projected_user_count_at_renewal"]
    if at_renewal is None:
        return []
    as_of: date = forecast["as_of_date"]
    per_day = (forecast["trend_users_per_month"] or 0) / DAYS_PER_MONTH
    points = []
    month = _month_end(as_of) + timedelta(days=1)
    while _month_end(month) < renewal and len(points) < FORECAST_MONTHS:
        end = _month_end(month)
        value = tenths_down(max(0.0, forecast["user_count"] + per_day * (end - as_of).days))
        points.append({"kind": "forecast", "month": month, "figure_date": end, "value": value})
        month = end + timedelta(days=1)
    if len(points) < FORECAST_MONTHS:
        points.append(
            {
                "kind": "renewal",
                "month": renewal.replace(day=1),
                "figure_date": renewal,
                "value": float(at_renewal),
            }
        )
    return points


# ---------------------------------------------------------------------------------------
# The page.


def _fmt_date(value: date | None) -> str:
    return value.strftime("%-d %b %Y") if value else ""


def _crossing(f: dict[str, Any], which: str) -> str:
    """When a plan reaches 80% or its limit, in words."""
    reached = f["has_reached_80"] if which == "80" else f["has_reached_limit"]
    when = f["projected_80_date"] if which == "80" else f["projected_limit_date"]
    if reached:
        return "reached"
    if when:
        return _fmt_date(when)
    slope = f["trend_users_per_month"]
    if slope is None:
        return "no trend yet"
    if slope <= 0:
        return "not on trend"
    return "over 5 years out"


def _tier_arrow(f: dict[str, Any]) -> str:
    """A small arrow: the tier needed at renewal is above (▲) or below (▼) today's tier."""
    needed, tier = f["recommended_tier"], f["user_tier"]
    if needed is None or needed == tier:
        return '<span class="arrow"></span>'
    if needed > tier:
        return f'<span class="arrow more" title="up from {tier}">▲</span>'
    return f'<span class="arrow less" title="down from {tier}">▼</span>'


def _signed(value: float | None, digits: int = 1) -> str:
    """+1.5, -0.3; a trend that rounds to nothing is 0.0, not -0.0 or +0.0."""
    if value is None:
        return "–"
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def render_html(report: Report) -> str:
    """The whole page as one string: CSS inline, charts inline, no script."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    class RowsEnvironment(Environment):
        """`row.column` on a plain dict gives its key without Jinja's failed attribute lookup
        first (an exception each time: 0.35 s of 1 s at 1,520 plans). Same result: a plain
        dict's only attributes are its class's (`items`, `get`, ...), which still win."""

        def getattr(self, obj: Any, attribute: str) -> Any:
            if type(obj) is dict and attribute in obj and not hasattr(dict, attribute):
                return obj[attribute]
            return super().getattr(obj, attribute)

    env = RowsEnvironment(
        loader=PackageLoader("usercounts", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["date"] = _fmt_date
    env.filters["signed"] = _signed
    env.filters["pct"] = percent  # {{ count | pct(tier) }}
    env.globals["crossing"] = _crossing
    env.globals["tier_arrow"] = _tier_arrow
    orgs: dict[str, list[Plan]] = {}
    for plan in sorted(report.plans, key=lambda p: (p.forecast["org_id"], p.forecast["plan_name"])):
        orgs.setdefault(plan.forecast["org_id"], []).append(plan)
    counts = {key: 0 for key in URGENCY_LABELS}
    for plan in report.plans:
        counts[plan.forecast["urgency"]] += 1
    return env.get_template("capacity_report.html.j2").render(
        report=report,
        max_charts=MAX_CHARTS,
        forecast_months=FORECAST_MONTHS,
        orgs=orgs,
        counts=counts,
        urgency_labels=URGENCY_LABELS,
        confidence_labels=CONFIDENCE_LABELS,
        tier_status_text=TIER_STATUS_TEXT,
    )


# ---------------------------------------------------------------------------------------
# Files.


def forecast_rows(report: Report) -> list[dict[str, Any]]:
    return [{c: plan.forecast.get(c) for c in FORECAST_COLUMNS} for plan in report.plans]


def month_rows(report: Report) -> list[dict[str, Any]]:
    """Every bar of every chart: actual month ends, forecast month ends, the renewal."""
    rows = []
    for plan in report.plans:
        ids = {k: plan.forecast[k] for k in ("org_id", "plan_id", "plan_name")}
        for m in plan.months:
            complete = m["is_month_complete"]
            rows.append(
                {
                    **ids,
                    "kind": "actual" if complete else "to_date",
                    "month": m["month"],
                    "figure_date": _month_end(m["month"]) if complete else report.as_of,
                    **{c: m.get(c) for c in MONTH_COLUMNS[6:]},
                }
            )
        for p in plan.projection:
            rows.append(
                {
                    **ids,
                    "kind": p["kind"],
                    "month": p["month"],
                    "figure_date": p["figure_date"],
                    "closing_balance": p["value"],
                    "user_tier": plan.forecast["user_tier"],
                }
            )
    return rows


def _write_atomic(path: Path, text: str) -> None:
    """Write beside the target and rename: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _csv_text(columns: Iterable[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


@dataclass
class ReportFiles:
    """The files one report wrote: the dated ones and their latest copies."""

    as_of: date
    html: Path
    latest_html: Path
    csv: list[Path]
    plans: int


def write_report(published: Path, out_dir: Path) -> ReportFiles:
    """Read the published warehouse, write the HTML report and its CSVs into out_dir."""
    with open_published(published) as con:
        report = read_report(con)
    for plan in report.plans[:MAX_CHARTS]:
        plan.chart_svg = render_chart(plan, svg_id=f"c{plan.rank}")
    html = render_html(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report.as_of.isoformat()
    files = {
        f"capacity-report-{stamp}.html": html,
        f"capacity-forecast-{stamp}.csv": _csv_text(FORECAST_COLUMNS, forecast_rows(report)),
        f"capacity-months-{stamp}.csv": _csv_text(MONTH_COLUMNS, month_rows(report)),
    }
    written = []
    for name, text in files.items():
        dated = out_dir / name
        _write_atomic(dated, text)
        _write_atomic(out_dir / name.replace(f"-{stamp}", ""), text)
        written.append(dated)
    return ReportFiles(
        as_of=report.as_of,
        html=written[0],
        latest_html=out_dir / LATEST_HTML,
        csv=written[1:],
        plans=len(report.plans),
    )
