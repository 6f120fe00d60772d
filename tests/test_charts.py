"""The report's chart is drawn to the figures: bars, steps and labels read back from the SVG.

tests/test_report.py renders the charts of a real run in Chromium; these tests read one
chart's marks as numbers and hold them to the plan's own figures (no database needed: the
chart is drawn from a Plan, the same object the report builds).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date

import pytest

from usercounts.charts import COLORS, _nice_ticks, render_chart
from usercounts.report import Plan, projection

NS = {"svg": "http://www.w3.org/2000/svg"}
# (month, billable, closing balance, invited, tier, change); the last month is unfinished
MONTHS = [
    (date(2026, 6, 1), 40, 50, 0, 60, None),
    (date(2026, 7, 1), 45, 55, 2, 60, 5),
    (date(2026, 8, 1), 40, 52, 3, 100, -3),
    (date(2026, 9, 1), 42, 52, 0, 100, 0),
    (date(2026, 10, 1), 60, 81, 1, 100, 29),
]


def plan(plan_name: str = "Acme Jira") -> Plan:
    forecast = {
        "plan_id": "acme-jira",
        "plan_name": plan_name,
        "user_tier": 100,
        "user_count": 81,
        "as_of_date": date(2026, 10, 20),
        "renewal_date": date(2027, 2, 10),
        "trend_users_per_month": 6.0,
        "projected_user_count_at_renewal": 103,
    }
    months = [
        {
            "month": month,
            "billable_count": billable,
            "closing_balance": total,
            "non_billable_count": total - billable,
            "invited_count": invited,
            "user_tier": tier,
            "change": change,
            "is_month_complete": month < date(2026, 10, 1),
        }
        for month, billable, total, invited, tier, change in MONTHS
    ]
    return Plan(forecast=forecast, months=months, projection=projection(forecast), rank=3)


def bar(svg: ET.Element, gid: str) -> tuple[float, float, ET.Element]:
    """(top, bottom) of one bar, in points, and its path."""
    (path,) = svg.findall(f".//svg:g[@id='c3-{gid}']/svg:path", NS)
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path.get("d"))]
    _left, bottom, _right, top = numbers[:4]
    return top, bottom, path


def test_bars_are_drawn_to_scale() -> None:
    svg = ET.fromstring(render_chart(plan(), "c3"))
    zero = bar(svg, "billable-0")[1]
    scales = []
    for n, (_, billable, total, *_rest) in enumerate(MONTHS):
        b_top, b_bottom, _ = bar(svg, f"billable-{n}")
        n_top, n_bottom, _ = bar(svg, f"non-billable-{n}")
        assert b_bottom == zero and n_bottom == pytest.approx(b_top, abs=0.01)
        scales += [(zero - b_top) / billable, (zero - n_top) / total]
    assert max(scales) - min(scales) < 0.01, scales  # one scale for every bar
    # the month so far is lighter; the month ends are not
    assert bar(svg, "billable-4")[2].get("opacity") == "0.6"
    assert bar(svg, "billable-3")[2].get("opacity") is None
    # forecast bars on the same scale, to the renewal (its figure from the forecast mart)
    f_top, f_bottom, f_path = bar(svg, f"forecast-{len(plan().projection) - 1}")
    assert f_bottom == zero
    assert (zero - f_top) / 103 == pytest.approx(scales[0], abs=0.01)
    assert f_path.get("stroke") == COLORS["renewal"]


def test_tier_steps_follow_the_tier_of_each_month() -> None:
    chart = plan()
    svg = ET.fromstring(render_chart(chart, "c3"))
    zero = bar(svg, "billable-0")[1]
    scale = (zero - bar(svg, "billable-0")[0]) / 40
    for gid, share in (("tier", 1.0), ("eighty", 0.8)):
        (path,) = svg.findall(f".//svg:g[@id='c3-{gid}']/svg:path", NS)
        levels = [float(v) for v in re.findall(r"V(-?[\d.]+)", path.get("d"))]
        tiers = [m[4] for m in MONTHS] + [100] * len(chart.projection)
        assert levels == pytest.approx([zero - share * t * scale for t in tiers], abs=0.02)


def test_change_panel_and_labels() -> None:
    svg = ET.fromstring(render_chart(plan(), "c3"))
    texts = [t.text for t in svg.iter(f"{{{NS['svg']}}}text")]
    for label in ("+5", "-3", "0", "+29", "tier 100", "80%", "103", "to date", "renewal"):
        assert label in texts, (label, texts)
    assert "10 Feb" in texts  # the renewal's date under its bar
    assert bar(svg, "change-1")[2].get("fill") == COLORS["up"]
    assert bar(svg, "change-2")[2].get("fill") == COLORS["down"]
    # a rise above the zero line, a fall below it
    assert bar(svg, "change-1")[1] == pytest.approx(bar(svg, "change-2")[0], abs=0.01)
    # whole numbers of users on the axis, from 0 past the tier
    ticks = [int(t.text) for t in svg.iter(f"{{{NS['svg']}}}text") if t.get("text-anchor") == "end"]
    assert ticks == list(range(0, 121, 20))  # the top: 103 at renewal, plus room for labels
    assert svg.find(".//svg:g[@id='c3-invited']", NS) is not None


def test_chart_is_one_valid_svg_with_its_own_ids() -> None:
    text = render_chart(plan("Acme <Jira> & Co"), "c3")
    svg = ET.fromstring(text)  # well-formed: the plan name is escaped
    assert svg.get("class") == "chart" and svg.get("viewBox")
    ids = [e.get("id") for e in svg.iter() if e.get("id")]
    assert len(ids) == len(set(ids)) and all(i.startswith("c3-") for i in ids)
    assert "Acme &lt;Jira&gt; &amp; Co" in text


def test_a_plan_without_history_or_forecast() -> None:
    bare = plan()
    bare.months, bare.projection = [], []
    svg = ET.fromstring(render_chart(bare, "c9"))
    assert svg.findall(".//svg:g", NS) == []  # no marks, and no error


@pytest.mark.parametrize("top", [0.5, 1.18, 7, 11.8, 118, 1234, 99_999, 2_500_000])
def test_nice_ticks(top: float) -> None:
    ticks = _nice_ticks(top)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1
    assert ticks[0] == 0 and all(t == int(t) for t in ticks)
    assert ticks[-1] <= top < ticks[-1] + step
    assert len(ticks) <= 8 and (len(ticks) >= 3 or top < 3)
    assert re.fullmatch(r"[125]0*", str(int(step)))


def test_large_figures_are_written_out() -> None:
    """A plan of millions keeps plain figures on its axis and its forecast label."""
    big = plan()
    for month in big.months:
        for column in ("billable_count", "closing_balance", "user_tier"):
            month[column] *= 30_000
    big.forecast |= {"user_tier": 3_000_000, "user_count": 2_430_000}
    big.forecast |= {
        "trend_users_per_month": 180_000.0,
        "projected_user_count_at_renewal": 3_090_000,
    }
    big.projection = projection(big.forecast)
    svg = ET.fromstring(render_chart(big, "c3"))
    texts = [t.text or "" for t in svg.iter(f"{{{NS['svg']}}}text")]
    assert not [t for t in texts if "e+" in t], texts
    assert "3090000" in texts and "tier 3000000" in texts
