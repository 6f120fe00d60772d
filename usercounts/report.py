"""The capacity report: one self-contained HTML page and the same figures as CSV.

It reads the published warehouse read-only (marts.capacity_forecast and the monthly and
current counts) and writes, into one folder, files named for the as-of date plus copies
under fixed "latest" names. The page carries no script and loads nothing: its charts are
matplotlib SVG inlined in the HTML, so it opens offline, prints, and can be mailed.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from usercounts.errors import RunFailed
from usercounts.views import open_published

# A month in the forecast, as in models/marts/capacity_forecast.sql.
DAYS_PER_MONTH = 30.4375
# Month-end balances shown per plan (the admin's "View usage" picture is 12 months).
HISTORY_MONTHS = 12
# Forecast months drawn at most; a renewal further out is named, not drawn.
FORECAST_MONTHS = 18
LATEST_HTML = "capacity-report.html"
# Charts are drawn for this many plans, the most urgent first: a chart costs matplotlib
# about 0.3 s, and a page of a thousand charts is read by nobody. Every plan keeps its
# figures and table (and its rows in the CSV files).
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
        value = round(max(0.0, forecast["user_count"] + per_day * (end - as_of).days), 1)
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
# Charts: matplotlib's SVG backend, no pyplot (no global figure state, no display).

COLORS = {
    "billable": "#2563eb",
    "non_billable": "#93c5fd",
    "invited": "#d97706",
    "tier": "#dc2626",
    "eighty": "#ea580c",
    "forecast": "#6366f1",
    "renewal": "#7c3aed",
    "up": "#16a34a",
    "down": "#dc2626",
    "grid": "#e5e7eb",
    "text": "#374151",
    "muted": "#6b7280",
}


def render_chart(plan: Plan, svg_id: str) -> str:
    """The plan's month-end balances, tier and 80% lines, forecast and monthly change."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    matplotlib.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: selectable, styled by the page
            "svg.hashsalt": svg_id,  # deterministic ids, different per chart
            "font.size": 9,
            "axes.edgecolor": COLORS["grid"],
            "axes.labelcolor": COLORS["text"],
            "xtick.color": COLORS["muted"],
            "ytick.color": COLORS["muted"],
        }
    )
    f = plan.forecast
    months = plan.months
    future = plan.projection
    labels = [m["month"].strftime("%b\n%Y") for m in months]
    if months and not months[-1]["is_month_complete"]:
        labels[-1] = months[-1]["month"].strftime("%b\nto date")
    for p in future:
        if p["kind"] == "renewal":
            labels.append("renewal\n" + p["figure_date"].strftime("%-d %b"))
        else:
            labels.append(p["month"].strftime("%b\n%Y"))
    n_actual, n_all = len(months), len(months) + len(future)
    xs = list(range(n_all))
    width = 0.7 if n_all >= 8 else 0.45  # a few months do not make fat bars

    fig = Figure(figsize=(9.2, 4.4), dpi=72)
    grid = fig.add_gridspec(
        2, 1, height_ratios=[3.2, 1], left=0.08, right=0.9, top=0.9, bottom=0.12, hspace=0.08
    )
    ax = fig.add_subplot(grid[0])
    ax_change = fig.add_subplot(grid[1], sharex=ax)

    billable = [m["billable_count"] for m in months]
    non_billable = [m["non_billable_count"] for m in months]
    bars_b = ax.bar(xs[:n_actual], billable, width=width, color=COLORS["billable"], zorder=2)
    _tag(bars_b, "billable")
    bars_n = ax.bar(
        xs[:n_actual],
        non_billable,
        bottom=billable,
        width=width,
        color=COLORS["non_billable"],
        zorder=2,
    )
    _tag(bars_n, "non-billable")
    if months and not months[-1]["is_month_complete"]:
        for bar in (bars_b[-1], bars_n[-1]):  # the month so far: not a month end yet
            bar.set_alpha(0.6)
    for x, m in zip(xs, months, strict=False):
        _label(ax, str(m["closing_balance"]), (x, m["closing_balance"]), COLORS["text"])

    if future:
        values = [p["value"] for p in future]
        is_renewal = [p["kind"] == "renewal" for p in future]
        bars_f = ax.bar(
            xs[n_actual:],
            values,
            width=width,
            facecolor="#eef2ff",
            edgecolor=[COLORS["renewal"] if r else COLORS["forecast"] for r in is_renewal],
            linewidth=[1.8 if r else 0.9 for r in is_renewal],
            linestyle="--",
            zorder=2,
        )
        _tag(bars_f, "forecast")
        start = [months[-1]["closing_balance"]] if months else [f["user_count"]]
        line_x = [n_actual - 1, *xs[n_actual:]] if months else xs[n_actual:]
        line_y = start + values if months else values
        (trend_line,) = ax.plot(
            line_x, line_y, color=COLORS["forecast"], linewidth=1.6, linestyle=":", zorder=3
        )
        trend_line.set_gid("forecast-line")
        color = COLORS["renewal"] if is_renewal[-1] else COLORS["forecast"]
        _label(ax, f"{values[-1]:g}", (xs[-1], values[-1]), color, fontweight="bold")

    # The tier of each month (the version in force at its close), then the current tier.
    tiers = [m["user_tier"] for m in months] + [f["user_tier"]] * len(future)
    if tiers:
        step_x = [xs[0] - 0.5, *[x + 0.5 for x in xs]]
        step_tier = [tiers[0], *tiers]
        (tier_line,) = ax.step(
            step_x, step_tier, where="pre", color=COLORS["tier"], linewidth=1.8, zorder=4
        )
        tier_line.set_gid("tier")
        (eighty_line,) = ax.step(
            step_x,
            [0.8 * t for t in step_tier],
            where="pre",
            color=COLORS["eighty"],
            linewidth=1.2,
            linestyle="--",
            zorder=4,
        )
        eighty_line.set_gid("eighty")
        right = {"offset": (3, 0), "ha": "left", "va": "center", "annotation_clip": False}
        _label(ax, f"tier {tiers[-1]}", (step_x[-1], tiers[-1]), COLORS["tier"], **right)
        _label(ax, "80%", (step_x[-1], 0.8 * tiers[-1]), COLORS["eighty"], **right)

    invited = [m["invited_count"] for m in months]
    if any(invited):
        (invited_line,) = ax.plot(
            xs[:n_actual],
            invited,
            color=COLORS["invited"],
            marker="o",
            markersize=3.5,
            linewidth=1.2,
            zorder=5,
        )
        invited_line.set_gid("invited")

    top = max(
        [f["user_tier"], *tiers, *[m["closing_balance"] for m in months]]
        + [p["value"] for p in future]
    )
    ax.set_ylim(0, max(1, top) * 1.18)
    ax.set_xlim(-0.6, n_all - 0.4 if n_all else 0.6)
    ax.grid(axis="y", color=COLORS["grid"], linewidth=0.8, zorder=0)
    ax.set_axisbelow(True)
    ax.set_ylabel("users at month end")
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
        ax_change.spines[spine].set_visible(False)
    ax.xaxis.set_visible(False)  # the change panel below labels the months

    legend = [
        Patch(color=COLORS["billable"], label="billable"),
        Patch(color=COLORS["non_billable"], label="non-billable"),
    ]
    legend_items = legend + [
        Line2D([], [], color=COLORS["tier"], linewidth=1.8, label="user tier"),
        Line2D([], [], color=COLORS["eighty"], linewidth=1.2, linestyle="--", label="80% of tier"),
    ]
    if any(invited):
        legend_items.append(
            Line2D([], [], color=COLORS["invited"], marker="o", markersize=3.5, label="invited")
        )
    if future:
        legend_items.append(
            Patch(
                facecolor="#eef2ff",
                edgecolor=COLORS["forecast"],
                linestyle="--",
                label="forecast",
            )
        )
    ax.legend(
        handles=legend_items,
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncols=len(legend_items),
        frameon=False,
        fontsize=8,
        handlelength=1.6,
        columnspacing=1.2,
    )

    changes = [m["change"] for m in months]
    change_values = [c or 0 for c in changes]
    bars_c = ax_change.bar(
        xs[:n_actual],
        change_values,
        width=width,
        color=[COLORS["up"] if c > 0 else COLORS["down"] for c in change_values],
        zorder=2,
    )
    _tag(bars_c, "change")
    for x, c in zip(xs, changes, strict=False):
        if c is None:
            continue
        _label(
            ax_change,
            f"{c:+d}" if c else "0",
            (x, c),
            COLORS["text"],
            offset=(0, 2 if c >= 0 else -2),
            va="bottom" if c >= 0 else "top",
            fontsize=7.5,
        )
    span = max([abs(c) for c in change_values] + [1])
    ax_change.set_ylim(-span * 1.6, span * 1.6)
    ax_change.axhline(0, color=COLORS["muted"], linewidth=0.8)
    ax_change.set_ylabel("change")
    ax_change.set_yticks([])
    ax_change.spines["left"].set_visible(False)
    # Month labels as plain text under the panel, not tick labels: matplotlib builds five
    # artists per tick (0.7 s of the 24 charts' 3.9 s at 1M users), for the same picture.
    ax_change.set_xticks([])
    below_panel = blended_transform_factory(ax_change.transData, ax_change.transAxes)
    for x, label in zip(xs, labels, strict=True):
        ax_change.text(
            x,
            -0.06,
            label,
            transform=below_panel,
            ha="center",
            va="top",
            fontsize=8,
            color=COLORS["muted"],
        )

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return _inline_svg(buffer.getvalue(), svg_id)


def _label(
    ax: Any,
    text: str,
    xy: tuple[float, float],
    color: str,
    *,
    offset: tuple[float, float] = (0, 3),
    **style: Any,
) -> None:
    """A small text label next to a point of the chart (above it unless told)."""
    style = {"ha": "center", "fontsize": 8, **style}
    ax.annotate(text, xy, xytext=offset, textcoords="offset points", color=color, **style)


def _tag(artists: Iterable[Any], name: str) -> None:
    """Name each mark (an SVG group id per bar) so tests and readers can find them."""
    for n, artist in enumerate(artists):
        artist.set_gid(f"{name}-{n}")


def _inline_svg(svg: str, svg_id: str) -> str:
    """An SVG document made fit to sit in HTML: no prolog, unique ids, scalable, page fonts."""
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    # ids must be unique in the page: prefix each, and every reference to one
    svg = re.sub(r'\bid="', f'id="{svg_id}-', svg)
    svg = svg.replace("url(#", f"url(#{svg_id}-")
    svg = svg.replace('xlink:href="#', f'xlink:href="#{svg_id}-')
    svg = re.sub(r"font-family: [^;\"]*", "font-family: inherit", svg)
    svg = re.sub(
        r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg \1class="chart"', svg, count=1
    )
    return svg


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
    if value is None:
        return "–"
    return f"{value:+.{digits}f}"


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
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.0f}%"
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
