"""The capacity report: the nightly flow writes it, `usercounts report` writes it, and a real
headless browser (Debian's Chromium) renders it offline with every chart drawn.

One hand-made landing, one real flow run (real Prefect server, real dbt build), as of
2026-11-15. Four plans, one per urgency (figures worked out by hand below):

- north-jira  tier 10, month ends May..Oct 8, 8, 9, 9, 10, 12; 12 now: over the limit.
- north-wiki  tier 25, +1 a month (10 ... 15), 16 now: reaches 80% (20) before renewal.
- south-jsm   tier 15, Sep 5, Oct 10, 11 now: reaches the limit before renewal.
- south-tempo tier 50, -1 a month (20 ... 15), 4 app accounts and 2 invited users: ok.
"""

from __future__ import annotations

import csv
import gc
import os
import re
import shutil
import subprocess
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import Landing, query, run_cli

from usercounts import gc_tuning
from usercounts.config import PROJECT_ROOT
from usercounts.figures import percent
from usercounts.pipeline import RunSummary
from usercounts.report import _signed, projection

AS_OF = date(2026, 11, 15)
ARTIFACTS = PROJECT_ROOT / "data" / "ci-artifacts"
PLANS = ("north-jira", "north-wiki", "south-jsm", "south-tempo")


def events(instance: str, when: str, users: list[str], action: str = "grant") -> list[dict]:
    return [
        {
            "event_id": f"{instance}-{when}-{user}-{action}",
            "occurred_at": f"{when}T09:00:00Z",
            "instance_id": instance,
            "user_id": user,
            "action": action,
        }
        for user in users
    ]


def write_landing(landing: Landing) -> None:
    landing.write(
        "plans",
        [
            landing.plan("north-jira", 10, org_id="north", renewal_date="2027-02-01"),
            landing.plan(
                "north-wiki",
                25,
                org_id="north",
                product_key="confluence",
                plan_name="North Wiki",
                renewal_date="2027-06-01",
            ),
            landing.plan(
                "south-jsm",
                15,
                org_id="south",
                product_key="jira-service-management",
                plan_name="South <Service> Desk",
                billing_cycle="monthly",
                renewal_date="2027-01-10",
            ),
            landing.plan(
                "south-tempo",
                50,
                org_id="south",
                product_key="tempo-timesheets",
                plan_type="marketplace_app",
                renewal_date="2027-04-01",
            ),
        ],
    )
    landing.write(
        "instances", [{"instance_id": f"{p}-1", "plan_id": p, "site_url": ""} for p in PLANS]
    )
    users = [
        {"user_id": f"u{n:02d}", "account_type": "atlassian", "is_billable": "true"}
        for n in range(1, 61)
    ]
    for user in users[40:44]:  # u41..u44: app accounts, not billable
        user.update(account_type="app", is_billable="false")
    landing.write("users", users)
    landing.write(
        "org_admins",
        [{"org_id": o, "email": f"admin@{o}.example"} for o in ("north", "south")],
    )
    e = events("north-jira-1", "2026-05-03", [f"u{n:02d}" for n in range(1, 9)])
    e += events("north-jira-1", "2026-07-03", ["u09"])
    e += events("north-jira-1", "2026-09-03", ["u10"])
    e += events("north-jira-1", "2026-10-03", ["u11", "u12"])
    e += events("north-wiki-1", "2026-05-10", [f"u{n:02d}" for n in range(1, 11)])
    for n, month in enumerate(("06", "07", "08", "09", "10", "11")):
        e += events("north-wiki-1", f"2026-{month}-10", [f"u{11 + n:02d}"])
    e += events("south-jsm-1", "2026-09-02", [f"u{n:02d}" for n in range(20, 25)])
    e += events("south-jsm-1", "2026-10-02", [f"u{n:02d}" for n in range(25, 30)])
    e += events("south-jsm-1", "2026-11-02", ["u30"])
    e += events("south-tempo-1", "2026-05-01", [f"u{n:02d}" for n in range(41, 45)])
    e += events("south-tempo-1", "2026-05-01", ["u45", "u46"], action="invite")
    e += events("south-tempo-1", "2026-05-01", [f"u{n:02d}" for n in range(47, 61)])
    for n, month in enumerate(("06", "07", "08", "09", "10")):
        e += events("south-tempo-1", f"2026-{month}-15", [f"u{60 - n}"], action="revoke")
    landing.write("access_events", e)


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> dict[str, Any]:
    """One real nightly flow run on the hand-made landing."""
    from flows.nightly import nightly

    root = tmp_path_factory.mktemp("report")
    landing = Landing(root / "landing")
    write_landing(landing)
    database = root / "data" / "warehouse.duckdb"
    untuned_gc()  # an earlier flow run in this process tuned it already
    summary = nightly(landing=str(landing.root), database=str(database), as_of=AS_OF)
    gc_after = {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}
    return {
        "root": root,
        "landing": landing.root,
        "database": database,
        "summary": summary,
        "gc": gc_after,
    }


def untuned_gc() -> None:
    """This process's garbage collector back to Python's defaults, as before any run."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)


def test_the_flow_tunes_its_process_garbage_collector(flow_run: dict[str, Any]) -> None:
    assert flow_run["gc"]["threshold"] == gc_tuning.YOUNG_GENERATION_THRESHOLD
    assert flow_run["gc"]["frozen"] > 0


def test_the_flow_has_dbt_parse_the_project_while_it_loads(flow_run: dict[str, Any]) -> None:
    # the parse made beside the load served the build (tests/test_dbt_child.py)
    assert flow_run["summary"].dbt_parsed_in_advance


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_flow_writes_the_report_after_publishing(flow_run: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summary: RunSummary = flow_run["summary"]
    reports = flow_run["database"].parent / "reports"
    assert summary.published
    # (the hand landing has no last_seen files: data-quality warnings only, nothing else)
    assert [w for w in summary.warnings if not w.startswith("data quality")] == []
    assert summary.report == str(reports / "capacity-report.html")
    assert sorted(p.name for p in reports.iterdir()) == [
        "capacity-forecast-2026-11-15.csv",
        "capacity-forecast.csv",
        "capacity-months-2026-11-15.csv",
        "capacity-months.csv",
        "capacity-report-2026-11-15.html",
        "capacity-report.html",
    ]
    latest = (reports / "capacity-report.html").read_bytes()
    assert latest == (reports / "capacity-report-2026-11-15.html").read_bytes()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["usercounts-capacity-report"])
            )
        )
    # Other tests' flow runs share the session's server and the key: find this run's link.
    uri = (reports / "capacity-report.html").as_uri()
    assert [a for a in artifacts if uri in a.data], "no Prefect artifact links this report"


def test_report_figures_as_csv(flow_run: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("report", "--database", str(flow_run["database"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "4 plans" in result.stdout
    rows = {r["plan_id"]: r for r in read_csv(out / "capacity-forecast.csv")}
    # first the most urgent
    assert [r["plan_id"] for r in read_csv(out / "capacity-forecast.csv")] == [
        "north-jira",
        "south-jsm",
        "north-wiki",
        "south-tempo",
    ]
    picked = ("urgency", "user_count", "trend_users_per_month", "projected_user_count_at_renewal")
    more = ("recommended_tier", "projected_80_date", "projected_limit_date", "confidence")
    got = {pid: tuple(row[c] for c in picked + more) for pid, row in rows.items()}
    assert got == {
        # slope = sum((x - mean x) * y) / sum((x - mean x)^2) = 13 / 17.5 = 0.7429; 78 days
        # to renewal: 12 + 0.7429 * 78 / 30.4375 = 13.9; jira-software ladder: 15
        "north-jira": ("over_limit", "12", "0.7429", "13.9", "15", "", "", "ok"),
        # +5 a month from 11: 12 on day ceil(30.4375 / 5) = 7, 15 on day ceil(24.35) = 25;
        # 56 days to renewal: 11 + 5 * 56 / 30.4375 = 20.199, rounded down 20.1: tier 25
        "south-jsm": (
            "crosses_limit_before_renewal",
            "11",
            "5.0",
            "20.1",
            "25",
            "2026-11-22",
            "2026-12-10",
            "short_history",
        ),
        # +1 a month from 16: 20 after 4 * 30.4375 = 121.75 days -> 2027-03-17; 25 after
        # 273.9 -> 2027-08-16; renewal 198 days on: 16 + 198 / 30.4375 = 22.5: tier 25
        "north-wiki": (
            "crosses_80_before_renewal",
            "16",
            "1.0",
            "22.5",
            "25",
            "2027-03-17",
            "2027-08-16",
            "ok",
        ),
        # -1 a month from 15: 137 days to renewal: 15 - 137 / 30.4375 = 10.499 -> 10.4: tier 15
        "south-tempo": ("ok", "15", "-1.0", "10.4", "15", "", "", "ok"),
    }
    months = [r for r in read_csv(out / "capacity-months.csv") if r["plan_id"] == "south-tempo"]
    october = next(r for r in months if r["month"] == "2026-10-01")
    assert [october[c] for c in ("kind", "closing_balance", "change")] == ["actual", "15", "-1"]
    # 15 users: 4 app accounts not billable, 2 invited and not yet accepted
    assert (october["billable_count"], october["non_billable_count"]) == ("11", "4")
    assert october["invited_count"] == "2"
    # the bars drawn after today: month ends Nov (to date), Dec..Mar forecast, the renewal
    assert [(r["kind"], r["month"]) for r in months[-6:]] == [
        ("to_date", "2026-11-01"),
        ("forecast", "2026-12-01"),
        ("forecast", "2027-01-01"),
        ("forecast", "2027-02-01"),
        ("forecast", "2027-03-01"),
        ("renewal", "2027-04-01"),
    ]
    # rounded down to a tenth like the mart's count at renewal: 31 Dec is 46 days on,
    # 15 - 46 / 30.4375 = 13.49 -> 13.4
    assert [m["closing_balance"] for m in (months[-5], months[-1])] == ["13.4", "10.4"]


def test_a_renewal_on_a_month_end_is_one_bar() -> None:
    """Forecast bars are the month ends before the renewal date: a renewal on 31 January
    is the renewal bar only, not a January forecast bar as well."""
    forecast = {
        "as_of_date": AS_OF,
        "renewal_date": date(2027, 1, 31),
        "user_count": 21,
        "trend_users_per_month": 1.0,
        "projected_user_count_at_renewal": 23.5,
    }
    # 31 Dec is 46 days on: 21 + 46 / 30.4375 = 22.51 -> 22.5
    assert [
        (p["kind"], p["month"], p["figure_date"], p["value"]) for p in projection(forecast)
    ] == [
        ("forecast", date(2026, 12, 1), date(2026, 12, 31), 22.5),
        ("renewal", date(2027, 1, 1), date(2027, 1, 31), 23.5),
    ]


def test_a_trend_that_rounds_to_nothing_reads_zero() -> None:
    """The page's trend figures: signed, but -0.0286 users a month is 0.0, not -0.0."""
    values = (None, 2.0, -0.0286, 0.04, 0.0, -1.26)
    assert [_signed(v) for v in values] == ["–", "+2.0", "0.0", "0.0", "0.0", "-1.3"]


# ---------------------------------------------------------------------------------------
# The real browser.


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium not installed (apt-get install chromium)")


def render(page: Path, *, screenshot: Path | None = None, height: int = 1200) -> tuple[str, str]:
    """Open a page in headless Chromium, offline; return (DOM after load, browser log)."""
    with tempfile.TemporaryDirectory() as profile:
        mode = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        proc = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size=1280,{height}",
                "--enable-logging=stderr",
                "--v=0",
                *mode,
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def console_errors(log: str) -> list[str]:
    """Console messages, failed loads and uncaught errors in Chromium's log."""
    return [
        line
        for line in log.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line
    ]


def test_charts_only_for_the_most_urgent_plans(
    flow_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond MAX_CHARTS plans (2 here, 24 in a run), the less urgent plans keep their
    figures and table but get no chart: a thousand charts cost minutes and are read by none."""
    from usercounts import report

    monkeypatch.setattr(report, "MAX_CHARTS", 2)
    report.write_report(flow_run["database"], tmp_path)
    page = (tmp_path / "capacity-report.html").read_text()
    cards = re.findall(
        r'<article class="card plan" id="plan-(\d+)" data-plan-id="([^"]+)"(.*?)</article>',
        page,
        re.S,
    )
    charted = {plan_id: 'class="chart"' in body for _, plan_id, body in cards}
    # most urgent first: north-jira (over the limit), south-jsm (limit before renewal)
    assert charted == {
        "north-jira": True,
        "south-jsm": True,
        "north-wiki": False,
        "south-tempo": False,
    }
    ranks = {plan_id: int(rank) for rank, plan_id, _ in cards}
    assert ranks == {"north-jira": 1, "south-jsm": 2, "north-wiki": 3, "south-tempo": 4}
    assert page.count("charts are drawn for the 2 most urgent plans") == 2
    assert page.count("<th>Month end</th>") == 4  # every plan keeps its table


def test_console_error_check_sees_errors(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><title>x</title><img src='missing.png'>"
        "<script>console.error('drawn wrong'); throw new Error('boom')</script>"
    )
    _, log = render(page)
    assert any("boom" in line for line in console_errors(log)), log[-2000:]


@pytest.fixture(scope="module")
def report_page(flow_run: dict[str, Any]) -> Path:
    return flow_run["database"].parent / "reports" / "capacity-report.html"


def test_report_is_self_contained(report_page: Path) -> None:
    html = report_page.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    # nothing fetched: no src/href/url()/@import to another place, no web font
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html, re.I)
    assert "@import" not in html and "@font-face" not in html
    # data never reaches the page unescaped
    assert "South &lt;Service&gt; Desk" in html and "South <Service> Desk" not in html


def test_shares_of_the_tier_are_rounded_down() -> None:
    """As in the messages: a share reads as 80% or 100% only when the count is there."""
    pairs = [(8, 10), (6, 7), (799, 1000), (5, 4), (5010, 5000), (1, 8)]
    got = [percent(count, tier) for count, tier in pairs]
    assert got == ["80%", "85.7%", "79.9%", "125%", "100.2%", "12.5%"]


def test_report_shows_shares_of_the_tier_rounded_down(report_page: Path) -> None:
    html = report_page.read_text(encoding="utf-8")
    # south-jsm: 11 of 15 users = 73.33...%, in its tile and the overview table
    assert html.count("73.3%") >= 2 and "73%" not in html
    assert "120% of the tier" in html  # north-jira: 12 of 10


def test_report_renders_in_chromium(report_page: Path) -> None:
    dom, log = render(report_page)
    assert console_errors(log) == []
    articles = re.findall(r'<article class="card plan" id="(plan-\d+)" data-plan-id="([^"]+)"', dom)
    assert sorted(pid for _, pid in articles) == sorted(PLANS)
    for anchor, plan_id in articles:
        body = dom.split(f'id="{anchor}"', 1)[1].split("</article>", 1)[0]
        (chart,) = re.findall(r"<svg[^>]*class=\"chart\".*?</svg>", body, re.S)
        prefix = re.search(r'id="(c\d+)-', chart).group(1)
        marks = {
            kind: len(re.findall(rf'<g id="{prefix}-{kind}-\d+">\s*<path d="M', chart))
            for kind in ("billable", "non-billable", "forecast", "change")
        }
        # 7 month ends (May .. November to date), then the forecast bars to renewal
        assert marks["billable"] == marks["non-billable"] == marks["change"], (plan_id, marks)
        assert marks["billable"] == (7 if plan_id != "south-jsm" else 3), (plan_id, marks)
        assert marks["forecast"] >= 2, (plan_id, marks)
        for line in ("tier", "eighty", "forecast-line"):
            assert re.search(rf'<g id="{prefix}-{line}">\s*<path d="M', chart), (plan_id, line)
        # every bar is labelled below the change panel: its month, the month so far, renewal
        texts = re.findall(r"<text\b[^>]*>([^<]*)</text>", chart)
        month_names = [t for t in texts if re.fullmatch(r"[A-Z][a-z]{2}", t)]
        months_drawn = ["May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov"][-marks["billable"] :]
        assert month_names[: marks["billable"]] == months_drawn, (plan_id, texts)
        assert len(month_names) == marks["billable"] + marks["forecast"] - 1, (plan_id, texts)
        assert texts.count("to date") == 1 and texts.count("renewal") == 1, (plan_id, texts)
    # the plan with invited users draws them apart
    tempo = dom.split('data-plan-id="south-tempo"', 1)[1].split("</article>", 1)[0]
    assert re.search(r'id="c\d+-invited"', tempo)


def test_screenshot_shows_the_charts(report_page: Path) -> None:
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _, log = render(report_page, screenshot=shot, height=1400 + 1000 * len(PLANS))
    assert console_errors(log) == []
    image = Image.open(shot).convert("RGB")
    assert image.width == 1280
    colors = image.getcolors(maxcolors=1 << 20)
    counts = {rgb: n for n, rgb in colors}
    # the charts' own colors are on screen: billable bars, non-billable bars, tier lines
    assert counts.get((0x25, 0x63, 0xEB), 0) > 20_000, "no billable bars drawn"
    assert counts.get((0x93, 0xC5, 0xFD), 0) > 1_000, "no non-billable bars drawn"
    assert counts.get((0xDC, 0x26, 0x26), 0) > 2_000, "no tier lines drawn"


def test_report_failure_after_publishing_keeps_the_run(
    flow_run: dict[str, Any], tmp_path: Path
) -> None:
    from flows.nightly import nightly

    database = tmp_path / "data" / "warehouse.duckdb"
    database.parent.mkdir(parents=True)
    (database.parent / "reports").write_text("a file where the reports folder should be")
    summary = nightly(landing=str(flow_run["landing"]), database=str(database), as_of=AS_OF)
    assert summary.published == str(database)
    assert summary.report is None
    assert [w for w in summary.warnings if w.startswith("capacity report not written")]
    # the warehouse is published and readable
    assert query(database, "select count(*) from marts.capacity_forecast") == [(4,)]
