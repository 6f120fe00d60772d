"""The capacity report's chart: one plan's month ends, tier, forecast and change, as SVG.

Written directly as SVG text, not drawn by a plotting library: the chart is a fixed layout
of bars, step lines and labels, and matplotlib spent ~0.1 s per chart building artists for
it (24 charts: ~3 s of every nightly run at 1M users) where this takes a millisecond. Text
stays text in the page's font (inline SVG inherits it); every mark has an id prefixed per
chart, so several charts in one page never clash and tests can find each bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usercounts.report import Plan

COLORS = {
    "billable": "#2563eb",
    "non_billable": "#93c5fd",
    "invited": "#d97706",
    "tier": "#dc2626",
    "eighty": "#ea580c",
    "forecast": "#6366f1",
    "forecast_fill": "#eef2ff",
    "renewal": "#7c3aed",
    "up": "#16a34a",
    "down": "#dc2626",
    "grid": "#e5e7eb",
    "text": "#374151",
    "muted": "#6b7280",
}

# The canvas in points (9.2 x 4.4 inches at 72 per inch); the page scales it to its width.
WIDTH, HEIGHT = 662.4, 316.8
# The two panels: users at month end above, the month-over-month change below.
LEFT, RIGHT = 53.0, 596.2
MAIN_TOP, MAIN_BOTTOM = 31.7, 212.7
CHANGE_TOP, CHANGE_BOTTOM = 222.2, 278.8
FONT_SIZE = 9.0
SMALL = 8.0
# Dash patterns of the lines, in points (what a dashed or dotted line looks like at 1 pt).
DASHED, DOTTED = (3.7, 1.6), (1.0, 1.65)
# An average glyph's width in the page's sans-serif font, in ems: enough to place the
# legend and the axis title; the text itself is drawn by the browser.
GLYPH_EMS = 0.55
# The lines drawn and their legend keys alike: colour, width in points, dash pattern.
STROKES = {
    "tier": (COLORS["tier"], 1.8, None),
    "eighty": (COLORS["eighty"], 1.2, DASHED),
    "invited": (COLORS["invited"], 1.2, None),
}


def render_chart(plan: Plan, svg_id: str) -> str:
    """The plan's month-end balances, tier and 80% lines, forecast and monthly change."""
    return _Chart(plan, svg_id).svg()


class _Chart:
    def __init__(self, plan: Plan, svg_id: str) -> None:
        self.plan = plan
        self.id = svg_id
        self.parts: list[str] = []
        months, future = plan.months, plan.projection
        self.n_actual = len(months)
        self.n_all = len(months) + len(future)
        self.x_min, self.x_max = -0.6, (self.n_all - 0.4 if self.n_all else 0.6)
        self.bar_width = 0.7 if self.n_all >= 8 else 0.45  # a few months: no fat bars
        # the tier of each month (the version in force at its close), then today's tier
        self.tiers = [m["user_tier"] for m in months] + [plan.forecast["user_tier"]] * len(future)
        top = max(
            [plan.forecast["user_tier"], *self.tiers, *[m["closing_balance"] for m in months]]
            + [p["value"] for p in future]
        )
        self.y_max = max(1, top) * 1.18
        self.changes = [m["change"] for m in months]
        self.span = max([abs(c or 0) for c in self.changes] + [1]) * 1.6

    # -- scales: data to points --------------------------------------------------------

    def x(self, value: float) -> float:
        return LEFT + (value - self.x_min) / (self.x_max - self.x_min) * (RIGHT - LEFT)

    def y(self, value: float) -> float:
        return MAIN_BOTTOM - value / self.y_max * (MAIN_BOTTOM - MAIN_TOP)

    def y_change(self, value: float) -> float:
        middle = (CHANGE_TOP + CHANGE_BOTTOM) / 2
        return middle - value / self.span * (CHANGE_BOTTOM - CHANGE_TOP) / 2

    # -- the picture, back to front ----------------------------------------------------

    def svg(self) -> str:
        self.axes()
        self.month_bars()
        self.forecast()
        self.tier_lines()
        self.invited()
        self.change_panel()
        self.month_labels()
        self.legend()
        name = escape(str(self.plan.forecast.get("plan_name") or self.plan.plan_id))
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{self.id}-title">\n'
            f'<title id="{self.id}-title">{name}: users at month end, user tier, forecast '
            "and monthly change</title>\n" + "\n".join(self.parts) + "\n</svg>"
        )

    def axes(self) -> None:
        """Grid lines and y ticks of the main panel, the spines, the axis titles."""
        ticks = _nice_ticks(self.y_max)
        for tick in ticks:
            y = self.y(tick)
            self.line(LEFT, y, RIGHT, y, COLORS["grid"], 0.8)
            self.line(LEFT - 3.5, y, LEFT, y, COLORS["muted"], 0.8)
            self.text(_number(tick), LEFT - 7, y + FONT_SIZE * 0.35, COLORS["muted"], "end")
        self.line(LEFT, MAIN_TOP, LEFT, MAIN_BOTTOM, COLORS["grid"], 0.8)
        self.line(LEFT, MAIN_BOTTOM, RIGHT, MAIN_BOTTOM, COLORS["grid"], 0.8)
        self.line(LEFT, CHANGE_BOTTOM, RIGHT, CHANGE_BOTTOM, COLORS["grid"], 0.8)
        # the axis titles beside the tick labels; the change panel has none
        widest = max(len(_number(t)) for t in ticks) * FONT_SIZE * GLYPH_EMS
        for label, top, bottom, title_x in (
            ("users at month end", MAIN_TOP, MAIN_BOTTOM, max(9, LEFT - 7 - widest - 6)),
            ("change", CHANGE_TOP, CHANGE_BOTTOM, LEFT - 8),
        ):
            x, middle = _pt(title_x), _pt((top + bottom) / 2)
            self.parts.append(
                f'<text x="{x}" y="{middle}" transform="rotate(-90 {x} {middle})" '
                f'text-anchor="middle" font-size="{FONT_SIZE}" fill="{COLORS["text"]}">'
                f"{label}</text>"
            )

    def month_bars(self) -> None:
        """Billable users with the non-billable stacked on them; the month so far lighter."""
        months = self.plan.months
        for n, m in enumerate(months):
            so_far = n == len(months) - 1 and not m["is_month_complete"]
            opacity = ' opacity="0.6"' if so_far else ""
            billable, total = m["billable_count"], m["closing_balance"]
            self.bar(f"billable-{n}", n, 0, billable, self.y, COLORS["billable"], opacity)
            self.bar(
                f"non-billable-{n}", n, billable, total, self.y, COLORS["non_billable"], opacity
            )
        for n, m in enumerate(months):
            self.label(str(m["closing_balance"]), self.x(n), self.y(m["closing_balance"]) - 3)

    def forecast(self) -> None:
        """Dashed bars to the renewal (its bar violet), joined by a dotted trend line."""
        future = self.plan.projection
        if not future:
            return
        for n, point in enumerate(future):
            x = self.n_actual + n
            renewal = point["kind"] == "renewal"
            width = 1.8 if renewal else 0.9
            edge = COLORS["renewal"] if renewal else COLORS["forecast"]
            style = f' stroke="{edge}" stroke-width="{width}"{_dasharray(DASHED, width)}'
            self.bar(f"forecast-{n}", x, 0, point["value"], self.y, COLORS["forecast_fill"], style)
        values = [p["value"] for p in future]
        if self.plan.months:
            start = [(self.n_actual - 1, self.plan.months[-1]["closing_balance"])]
        else:
            start = []
        points = start + [(self.n_actual + n, v) for n, v in enumerate(values)]
        self.group(
            "forecast-line",
            _polyline([(self.x(a), self.y(b)) for a, b in points]),
            f'stroke="{COLORS["forecast"]}" stroke-width="1.6"{_dasharray(DOTTED, 1.6)}',
        )
        last = COLORS["renewal"] if future[-1]["kind"] == "renewal" else COLORS["forecast"]
        at_end = _pt(values[-1], 1)  # one decimal at most: 1234567.5, never 1.23457e+06
        self.label(at_end, self.x(self.n_all - 1), self.y(values[-1]) - 3, last, bold=True)

    def tier_lines(self) -> None:
        """The user tier and 80% of it as steps: each month shows the tier it closed on."""
        if not self.tiers:
            return
        for gid, share in (("tier", 1.0), ("eighty", 0.8)):
            d = f"M{_pt(self.x(-0.5))} {_pt(self.y(share * self.tiers[0]))}"
            for x, tier in enumerate(self.tiers):
                d += f" V{_pt(self.y(share * tier))} H{_pt(self.x(x + 0.5))}"
            self.group(gid, d, _stroke(gid))
        right = self.x(self.n_all - 0.5) + 3
        last = self.tiers[-1]
        middle = SMALL * 0.35
        self.text(f"tier {last}", right, self.y(last) + middle, COLORS["tier"], size=SMALL)
        self.text("80%", right, self.y(0.8 * last) + middle, COLORS["eighty"], size=SMALL)

    def invited(self) -> None:
        """Invited, not yet accepted users as a line with a dot per month end."""
        invited = [m["invited_count"] for m in self.plan.months]
        if not any(invited):
            return
        points = [(self.x(n), self.y(v)) for n, v in enumerate(invited)]
        dots = "".join(
            f'<circle cx="{_pt(x)}" cy="{_pt(y)}" r="1.75" fill="{COLORS["invited"]}"/>'
            for x, y in points
        )
        self.parts.append(
            f'<g id="{self.id}-invited"><path d="{_polyline(points)}" fill="none" '
            f"{_stroke('invited')}/>{dots}</g>"
        )

    def change_panel(self) -> None:
        """Each month's change as a green (up) or red bar around a zero line, labelled."""
        for n, change in enumerate(self.changes):
            value = change or 0
            color = COLORS["up"] if value > 0 else COLORS["down"]
            self.bar(f"change-{n}", n, 0, value, self.y_change, color)
        zero = self.y_change(0)
        self.line(LEFT, zero, RIGHT, zero, COLORS["muted"], 0.8)
        for n, change in enumerate(self.changes):
            if change is None:
                continue
            text = f"{change:+d}" if change else "0"
            y = self.y_change(change)
            # above a rise, below a fall (the text's top 2 pt under the bar's end)
            baseline = y - 2 if change >= 0 else y + 2 + 7.5 * 0.8
            self.label(text, self.x(n), baseline, size=7.5)

    def month_labels(self) -> None:
        """Under the change panel: month and year, the month so far, the renewal date."""
        months, future = self.plan.months, self.plan.projection
        labels = [(f"{m['month']:%b}", f"{m['month']:%Y}") for m in months]
        if months and not months[-1]["is_month_complete"]:
            labels[-1] = (f"{months[-1]['month']:%b}", "to date")
        for p in future:
            if p["kind"] == "renewal":
                labels.append(("renewal", f"{p['figure_date'].day} {p['figure_date']:%b}"))
            else:
                labels.append((f"{p['month']:%b}", f"{p['month']:%Y}"))
        top = CHANGE_BOTTOM + 0.06 * (CHANGE_BOTTOM - CHANGE_TOP)
        for n, (first, second) in enumerate(labels):
            x = self.x(n)
            self.text(first, x, top + SMALL * 0.9, COLORS["muted"], "middle", SMALL)
            self.text(second, x, top + SMALL * 2.1, COLORS["muted"], "middle", SMALL)

    def legend(self) -> None:
        """One row above the main panel: a swatch or line and a name per mark shown."""
        items = ["billable", "non-billable", "user tier", "80% of tier"]
        if any(m["invited_count"] for m in self.plan.months):
            items.append("invited")
        if self.plan.projection:
            items.append("forecast")
        x, middle = LEFT, MAIN_TOP - 9.0
        swatch = 12.8  # 1.6 em of the legend's 8 pt text
        for item in items:
            right = x + swatch
            if item in ("billable", "non-billable"):
                color = COLORS["billable" if item == "billable" else "non_billable"]
                self.parts.append(
                    f'<rect x="{_pt(x)}" y="{_pt(middle - 3.5)}" width="{swatch}" height="7" '
                    f'fill="{color}"/>'
                )
            elif item == "forecast":
                self.parts.append(
                    f'<rect x="{_pt(x)}" y="{_pt(middle - 3.5)}" width="{swatch}" height="7" '
                    f'fill="{COLORS["forecast_fill"]}" stroke="{COLORS["forecast"]}" '
                    f'stroke-width="0.9"{_dasharray(DASHED, 0.9)}/>'
                )
            else:
                stroke = {"user tier": "tier", "80% of tier": "eighty", "invited": "invited"}[item]
                self.parts.append(
                    f'<path d="M{_pt(x)} {_pt(middle)} H{_pt(right)}" {_stroke(stroke)}/>'
                )
                if item == "invited":
                    self.parts.append(
                        f'<circle cx="{_pt(x + swatch / 2)}" cy="{_pt(middle)}" r="1.75" '
                        f'fill="{COLORS["invited"]}"/>'
                    )
            self.text(item, right + 6.4, middle + SMALL * 0.35, COLORS["text"], size=SMALL)
            x = right + 6.4 + len(item) * SMALL * GLYPH_EMS + 9.6

    # -- marks -----------------------------------------------------------------------

    def bar(
        self,
        gid: str,
        x: float,
        low: float,
        high: float,
        to_y: Callable[[float], float],
        fill: str,
        extra: str = "",
    ) -> None:
        """One bar from `low` to `high` at month `x`, in its own group (an id per bar);
        `to_y` is the panel's scale."""
        left = self.x(x - self.bar_width / 2)
        right = self.x(x + self.bar_width / 2)
        top, bottom = sorted((to_y(low), to_y(high)))
        d = f"M{_pt(left)} {_pt(bottom)} H{_pt(right)} V{_pt(top)} H{_pt(left)} Z"
        self.parts.append(f'<g id="{self.id}-{gid}"><path d="{d}" fill="{fill}"{extra}/></g>')

    def group(self, gid: str, d: str, style: str) -> None:
        """A named line (tier, 80%, forecast): a group with one unfilled path."""
        self.parts.append(f'<g id="{self.id}-{gid}"><path d="{d}" fill="none" {style}/></g>')

    def line(
        self, x1: float, y1: float, x2: float, y2: float, color: str, width: float, extra: str = ""
    ) -> None:
        self.parts.append(
            f'<path d="M{_pt(x1)} {_pt(y1)} L{_pt(x2)} {_pt(y2)}" stroke="{color}" '
            f'stroke-width="{width}"{extra}/>'
        )

    def text(
        self,
        text: str,
        x: float,
        baseline: float,
        color: str,
        anchor: str = "start",
        size: float = FONT_SIZE,
        bold: bool = False,
    ) -> None:
        weight = ' font-weight="bold"' if bold else ""
        self.parts.append(
            f'<text x="{_pt(x)}" y="{_pt(baseline)}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{color}"{weight}>{escape(text)}</text>'
        )

    def label(
        self,
        text: str,
        x: float,
        baseline: float,
        color: str = COLORS["text"],
        *,
        size: float = SMALL,
        bold: bool = False,
    ) -> None:
        """A small figure centred over a point of the chart."""
        self.text(text, x, baseline, color, "middle", size, bold)


def _nice_ticks(top: float) -> list[float]:
    """0 and round steps (1, 2 or 5 times a power of ten, at least 1: users are whole) up
    to `top`: 3 to 8 ticks."""
    raw = top / 7
    power = 10 ** math.floor(math.log10(raw))
    step = max(1, next(s * power for s in (1, 2, 5, 10) if s * power >= raw))
    return [n * step for n in range(int(top // step) + 1)]


def _number(value: float) -> str:
    return str(round(value))


def _pt(value: float, decimals: int = 2) -> str:
    """A number with at most `decimals` decimals and no trailing zeros (a smaller page)."""
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")


def _stroke(name: str) -> str:
    """The stroke attributes of one of the named lines (STROKES)."""
    color, width, dashes = STROKES[name]
    return f'stroke="{color}" stroke-width="{width}"' + (
        _dasharray(dashes, width) if dashes else ""
    )


def _dasharray(pattern: tuple[float, float], width: float) -> str:
    """The stroke-dasharray attribute of a dashed or dotted line `width` points wide (its
    dashes grow with it, as matplotlib's did)."""
    return f' stroke-dasharray="{" ".join(_pt(d * width) for d in pattern)}"'


def _polyline(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if n == 0 else 'L'}{_pt(x)} {_pt(y)}" for n, (x, y) in enumerate(points))
