"""Threshold notifications (data-contract section 4) against a real SMTP server.

One landing folder holds every scenario as its own plan. A module fixture runs the nights of
the main story once, with the pipeline's own steps and usercounts.notify (real DuckDB, real
dbt, a real aiosmtpd server on 127.0.0.1); the tests then read what each night sent and
logged. The failure story and the command-line run through the Prefect flow use the same
landing folder in their own data folders.

Story nights (as-of dates): 1 Mar (SMTP), 2 Mar (outbox), 11 Mar (SMTP), 31 Mar (SMTP), then
11 Mar again. Plans, tiers and the expected notifications:

| plan | cycle, tier | users over time | expected |
|---|---|---|---|
| A Acme Jira | annual 10 | 8 from 1 Mar 10:00 | tier_80 1 Mar, 31 Mar (30 days later) |
| B | annual 10 | 7, 8 from 2 Mar | tier_80 2 Mar (outbox); 31 Mar is 29 days later: none |
| C | annual 7 | 5, 6 from 5 Mar | tier_80 11 Mar (5*6 >= 4*7; 5*5 < 4*7) |
| M | monthly 10 | 9, 10 from 5 Mar | tier_limit 11 Mar only (monthly: no tier_80) |
| E | monthly 5 | 5, 4 on 4-5 Mar, 5, 6 from 20 Mar | tier_limit 1 Mar, 11 Mar |
| E2 | monthly 5 | 5, dip within 7 Mar only | tier_limit 1 Mar |
| O | annual 10 | 10 (80% off, then on) | tier_limit 1 Mar, tier_80 11 Mar |
| N | annual 10, no admins | 9 | tier_80 undeliverable 1 Mar, 31 Mar |
| X | annual 4, hostile name | 5 | tier_80 + tier_limit 1 Mar, tier_80 31 Mar |
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import hashlib
import ipaddress
import ssl
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import duckdb
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from conftest import (
    Landing,
    Received,
    Recorder,
    free_port,
    query,
    run_cli,
    settings_for,
    smtp_server,
)
from test_counting_rules import ev

from usercounts import cli, notify, pipeline, workdb
from usercounts.config import Settings
from usercounts.lock import run_lock
from usercounts.mail import DeliveryError, RecipientsRefused, deliver
from usercounts.state import (
    NotificationNotFound,
    NotificationNotOwed,
    cancel_notification,
    connect_state,
)

D1 = date(2026, 3, 1)
D1_NEXT = date(2026, 3, 2)
D2 = date(2026, 3, 11)  # 10 days after D1
D3 = date(2026, 3, 31)  # 30 days after D1, 29 after D1_NEXT

ACME_ADMINS = ["admin1@acme.example", "admin2@acme.example"]
OTHER_ADMINS = ["boss@other.example"]
EVIL_ADMINS = ["sec@evil.example"]
EVIL_NAME = "Evil <b>Corp</b>\r\nBcc: attacker@example.com"


def nid(plan_id: str, kind: str, as_of: date) -> str:
    """The notification id worked out independently of the model: md5 of plan|kind|date."""
    return hashlib.md5(f"{plan_id}|{kind}|{as_of.isoformat()}".encode()).hexdigest()


def mid(plan_id: str, kind: str, as_of: date) -> str:
    return f"<{nid(plan_id, kind, as_of)}@usercounts>"


def mids(as_of: date, *plan_kinds: str) -> list[str]:
    """Sorted Message-IDs for 'plan:kind' pairs of one as-of date ('80' or 'limit')."""
    pairs = (pk.split(":") for pk in plan_kinds)
    return sorted(mid(plan, f"tier_{kind}", as_of) for plan, kind in pairs)


# --- a real SMTP server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp() -> Any:
    with smtp_server(Recorder()) as controller:
        yield controller


def smtp_settings(controller: Controller) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": controller.port}


# --- the landing folder -----------------------------------------------------------------


def write_scenarios(landing: Landing) -> None:
    """Every plan of the module docstring's table, in one landing folder."""
    p = landing.plan
    landing.write(
        "plans",
        [
            p("A", 10, org_id="ACME", plan_name="Acme Jira"),
            p("B", 10, org_id="ACME", plan_name="Acme Confluence", product_key="confluence"),
            p("C", 7, org_id="OTHER", plan_name="Other Jira"),
            p("M", 10, org_id="OTHER", plan_name="Other Bitbucket", billing_cycle="monthly"),
            p("E", 5, org_id="OTHER", plan_name="Other Trello", billing_cycle="monthly"),
            p("E2", 5, org_id="OTHER", plan_name="Other Statuspage", billing_cycle="monthly"),
            p("O", 10, org_id="ACME", plan_name="Acme Service"),
            p("N", 10, org_id="LONELY", plan_name="Lonely Jira"),
        ],
    )
    # Line breaks in a name and an address: written as Parquet, as a real drop could be.
    landing.write("plans", [p("X", 4, org_id="EVIL", plan_name=EVIL_NAME)], fmt="parquet")
    plans = ["A", "B", "C", "M", "E", "E2", "O", "N", "X"]
    instances = [{"instance_id": f"I{pl}", "plan_id": pl} for pl in plans]
    instances.append({"instance_id": "IA2", "plan_id": "A"})
    landing.write("instances", instances)
    landing.write(
        "org_admins",
        [{"org_id": "ACME", "email": a} for a in ACME_ADMINS]
        + [{"org_id": "OTHER", "email": a} for a in OTHER_ADMINS],
    )
    landing.write(
        "org_admins",
        [
            {"org_id": "EVIL", "email": EVIL_ADMINS[0]},
            {"org_id": "EVIL", "email": "bad@evil.example\r\nBcc: attacker@example.com"},
        ],
        fmt="parquet",
    )

    events: list[dict[str, str]] = []

    def grant(instance: str, user: str, at: str, action: str = "grant") -> None:
        events.append(
            {
                "event_id": f"ev{len(events) + 1}",
                "occurred_at": at,
                "instance_id": instance,
                "user_id": user,
                "action": action,
            }
        )

    def grant_many(plan: str, users: range, at: str) -> None:
        for n in users:
            grant(f"I{plan}", f"{plan}{n}", at)

    # A: 5 in Dec, 6 in Jan, 7 in Feb, 8 on 1 Mar; A1 also on a second instance
    grant_many("A", range(1, 6), "2025-12-10T09:00:00Z")
    grant("IA", "A6", "2026-01-15T09:00:00Z")
    grant("IA", "A7", "2026-02-10T09:00:00Z")
    grant("IA", "A8", "2026-03-01T10:00:00Z")
    grant("IA2", "A1", "2026-02-01T09:00:00Z")
    grant_many("B", range(1, 8), "2026-01-10T09:00:00Z")
    grant("IB", "B8", "2026-03-02T08:00:00Z")
    grant_many("C", range(1, 6), "2026-02-01T09:00:00Z")
    grant("IC", "C6", "2026-03-05T09:00:00Z")
    grant_many("M", range(1, 10), "2026-02-01T09:00:00Z")
    grant("IM", "M10", "2026-03-05T09:00:00Z")
    grant_many("E", range(1, 6), "2026-02-20T09:00:00Z")
    grant("IE", "E1", "2026-03-04T10:00:00Z", "revoke")  # 4 users on 4 and 5 Mar
    grant("IE", "E1", "2026-03-06T10:00:00Z")
    grant("IE", "E6", "2026-03-20T10:00:00Z")  # over the limit: the same episode
    grant_many("E2", range(1, 6), "2026-02-20T09:00:00Z")
    grant("IE2", "E21", "2026-03-07T10:00:00Z", "revoke")  # back the same day: no dip
    grant("IE2", "E21", "2026-03-07T12:00:00Z")
    grant_many("O", range(1, 11), "2026-02-15T09:00:00Z")
    grant_many("N", range(1, 10), "2026-02-01T09:00:00Z")
    grant_many("X", range(1, 6), "2026-02-01T09:00:00Z")
    landing.write("access_events", events)

    users = {e["user_id"] for e in events}
    landing.write(
        "users",
        [
            {
                "user_id": u,
                "email": f"{u.lower()}@users.example",
                "display_name": f"User {u}",
                "account_type": "atlassian",
                "is_billable": "true",
            }
            for u in sorted(users)
        ],
    )
    # A's users by last seen (A3 and A7 never): A4 20 Dec, A2 5 Jan, A6 1 Feb, A1 25 Feb
    # (and 1 Mar on IA2), A5 28 Feb, A8 1 Mar.
    seen = [
        ("IA", "A1", "2026-02-25T08:00:00Z"),
        ("IA2", "A1", "2026-03-01T08:00:00Z"),
        ("IA", "A2", "2026-01-05T08:00:00Z"),
        ("IA", "A4", "2025-12-20T08:00:00Z"),
        ("IA", "A5", "2026-02-28T08:00:00Z"),
        ("IA", "A6", "2026-02-01T08:00:00Z"),
        ("IA", "A8", "2026-03-01T12:00:00Z"),
    ]
    landing.write(
        "last_seen",
        [{"instance_id": i, "user_id": u, "last_seen_at": at} for i, u, at in seen],
    )


@pytest.fixture(scope="module")
def scenario_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    landing = Landing(tmp_path_factory.mktemp("notify") / "landing")
    write_scenarios(landing)
    return landing.root


# --- running nights with the pipeline's own steps ----------------------------------------


def build_night(settings: Settings, as_of: date) -> pipeline.RunSummary:
    """Load and dbt build for one as-of date (what the flow does before notifying)."""
    summary = pipeline.RunSummary(as_of=as_of)
    workdb.remove(settings.work_path)
    summary.rows_loaded = pipeline.load(settings).rows
    pipeline.build(settings, as_of)
    pipeline.read_back(settings, summary)
    return summary


def finish_night(settings: Settings, summary: pipeline.RunSummary) -> notify.NotifyReport:
    """Notify, refresh marts.notifications when the log changed, publish."""
    report = notify.notify(settings, summary.as_of)
    if report.changed:
        notify.refresh_notifications_mart(settings, summary.as_of)
    pipeline.record_and_publish(settings, summary)
    return report


def run_night(settings: Settings, as_of: date) -> notify.NotifyReport:
    return finish_night(settings, build_night(settings, as_of))


def log_rows(settings: Settings) -> dict[str, dict[str, Any]]:
    """The published marts.notifications, by notification_id."""
    cursor = duckdb.connect(str(settings.published_path), read_only=True)
    try:
        result = cursor.execute("select * from marts.notifications")
        names = [d[0] for d in result.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in result.fetchall()}
    finally:
        cursor.close()


def keys(rows: dict[str, dict[str, Any]]) -> set[tuple[str, str, date]]:
    return {(r["plan_id"], r["kind"], r["as_of_date"]) for r in rows.values()}


def sent_keys(received: list[Received]) -> list[str]:
    return sorted(r.message["Message-ID"] for r in received)


def cli_notify_at_80(setting: str, plan: str, database: Path) -> None:
    """The real command, as a user types it (before the first run, too)."""
    result = run_cli("notify-at-80", setting, "--plan", plan, "--database", str(database))
    assert result.returncode == 0, result.stderr
    assert f"plan {plan} are {setting}" in result.stdout


@dataclass
class Night:
    report: notify.NotifyReport
    received: list[Received]
    log: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def story(
    tmp_path_factory: pytest.TempPathFactory, scenario_landing: Path, smtp: Controller
) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("story")
    by_smtp = settings_for(home, scenario_landing, **smtp_settings(smtp))
    to_outbox = settings_for(home, scenario_landing)
    handler: Recorder = smtp.handler
    handler.take()
    nights: dict[str, Any] = {}

    cli_notify_at_80("off", "O", by_smtp.published_path)
    nights["state_before_first_run"] = by_smtp.state_path.exists()
    for name, settings, as_of in [
        ("d1", by_smtp, D1),
        ("d1_next", to_outbox, D1_NEXT),
        ("d2", by_smtp, D2),
        ("d3", by_smtp, D3),
        ("d2_again", by_smtp, D2),
    ]:
        if name == "d2":
            cli_notify_at_80("on", "O", by_smtp.published_path)
        report = run_night(settings, as_of)
        nights[name] = Night(report, handler.take(), log_rows(settings))
    nights["settings"] = by_smtp
    return nights


# --- the decisions ----------------------------------------------------------------------


def test_first_night_sends_what_is_due_to_admins_only(story: dict[str, Any]) -> None:
    night: Night = story["d1"]
    # A crosses 80% today; E and E2 reach the limit; O is at the limit with 80% turned off;
    # X is over the limit (both kinds). B (7 of 10) and C (5 of 7) are below 80%; M (9 of
    # 10) is over 80% but monthly.
    assert sent_keys(night.received) == mids(
        D1, "A:80", "E:limit", "E2:limit", "O:limit", "X:80", "X:limit"
    )
    admins = {"A": ACME_ADMINS, "O": ACME_ADMINS, "E": OTHER_ADMINS, "E2": OTHER_ADMINS}
    admins["X"] = EVIL_ADMINS
    recipients_by_id = {
        mid(plan, kind, D1): to for plan, to in admins.items() for kind in ("tier_80", "tier_limit")
    }
    for received in night.received:
        assert sorted(received.rcpt_tos) == recipients_by_id[received.message["Message-ID"]]
        assert received.mail_from == "usercounts@localhost"
    assert night.report.counts() == {"decided": 7, "sent": 6, "unsent": 0}


def test_first_night_log_rows(story: dict[str, Any]) -> None:
    log = story["d1"].log
    assert keys(log) == {
        ("A", "tier_80", D1),
        ("E", "tier_limit", D1),
        ("E2", "tier_limit", D1),
        ("O", "tier_limit", D1),
        ("X", "tier_80", D1),
        ("X", "tier_limit", D1),
        ("N", "tier_80", D1),
    }
    a = log[nid("A", "tier_80", D1)]
    assert (a["org_id"], a["user_count"], a["user_tier"], a["status"]) == ("ACME", 8, 10, "sent")
    assert a["recipients"] == "admin1@acme.example, admin2@acme.example"
    assert a["attempts"] == 1 and a["sent_at"] is not None and a["last_error"] is None
    assert a["message_id"] == mid("A", "tier_80", D1)


def test_no_admins_is_undeliverable_and_warned(story: dict[str, Any]) -> None:
    night: Night = story["d1"]
    row = night.log[nid("N", "tier_80", D1)]
    assert (row["status"], row["recipients"], row["sent_at"]) == ("undeliverable", None, None)
    assert any("org LONELY has no admins" in w for w in night.report.warnings)
    # the undeliverable decision counts for the 30-day cadence: nothing on 11 Mar
    assert ("N", "tier_80", D2) not in keys(story["d2"].log)
    assert story["d3"].log[nid("N", "tier_80", D3)]["status"] == "undeliverable"


def test_outbox_night_writes_parseable_eml(story: dict[str, Any]) -> None:
    night: Night = story["d1_next"]
    assert night.received == []  # no SMTP configured that night
    settings: Settings = story["settings"]
    files = sorted(settings.outbox_path.glob("*.eml"))
    assert [f.name for f in files] == [f"{nid('B', 'tier_80', D1_NEXT)}_usercounts.eml"]
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        files[0].read_bytes()
    )
    assert message["Subject"] == "Acme Confluence has reached 80% of its user tier: 8 of 10 users"
    assert message["Message-ID"] == mid("B", "tier_80", D1_NEXT)
    assert message["To"] == "admin1@acme.example, admin2@acme.example"
    assert body(message, "plain").startswith("Acme Confluence has 8 users on a user tier of 10")
    assert night.log[nid("B", "tier_80", D1_NEXT)]["status"] == "sent"
    assert night.report.counts() == {"decided": 1, "sent": 1, "unsent": 0}


def test_ten_days_later_only_new_crossings_and_episodes(story: dict[str, Any]) -> None:
    night: Night = story["d2"]
    # A, B still over 80% (nothing); C crosses 80% (6 of 7); M reaches its limit (monthly);
    # E dipped below its tier on 4-5 Mar and is back at it; E2's dip stayed within a day;
    # O has 80% notices on again and had none logged.
    assert sent_keys(night.received) == mids(D2, "C:80", "M:limit", "E:limit", "O:80")


def test_thirty_days_later_tier_80_again(story: dict[str, Any]) -> None:
    night: Night = story["d3"]
    # A and X: 30 days after 1 Mar; B: only 29 days after 2 Mar; E is over the limit now
    # (6 of 5) but in the same episode; N again, undeliverable.
    assert sent_keys(night.received) == mids(D3, "A:80", "X:80")
    assert night.report.counts() == {"decided": 3, "sent": 2, "unsent": 0}


def test_opt_out_off_then_on(story: dict[str, Any]) -> None:
    assert story["state_before_first_run"]  # the command created the state file
    d1_kinds = {k for p, k, _ in keys(story["d1"].log) if p == "O"}
    assert d1_kinds == {"tier_limit"}  # 80% off: only the limit, which has no opt-out
    d2 = {(k, d) for p, k, d in keys(story["d2"].log) if p == "O"}
    assert d2 == {("tier_limit", D1), ("tier_80", D2)}


def test_rerun_of_an_older_as_of_date_sends_nothing_new(story: dict[str, Any]) -> None:
    night: Night = story["d2_again"]
    assert night.received == []
    assert night.log.keys() == story["d3"].log.keys()
    assert night.report.counts() == {"decided": 0, "sent": 0, "unsent": 0}
    assert not night.report.changed


def test_every_message_was_delivered_once(story: dict[str, Any]) -> None:
    ids = Counter(
        r.message["Message-ID"]
        for name in ("d1", "d2", "d3", "d2_again")
        for r in story[name].received
    )
    assert ids and set(ids.values()) == {1}
    sent = {r["message_id"] for r in story["d2_again"].log.values() if r["status"] == "sent"}
    assert sent == set(ids) | {mid("B", "tier_80", D1_NEXT)}


# --- the message ------------------------------------------------------------------------


def body(message: EmailMessage, kind: str) -> str:
    """A part's text with the line ends a reader sees (SMTP carries CRLF)."""
    return message.get_body((kind,)).get_content().replace("\r\n", "\n")


def received_message(night: Night, message_id: str) -> EmailMessage:
    return next(r.message for r in night.received if r.message["Message-ID"] == message_id)


def test_message_figures_and_advice(story: dict[str, Any]) -> None:
    message = received_message(story["d1"], mid("A", "tier_80", D1))
    assert message["Subject"] == "Acme Jira has reached 80% of its user tier: 8 of 10 users"
    assert message["Auto-Submitted"] == "auto-generated"
    text = body(message, "plain")
    assert text.startswith(
        "Acme Jira has 8 users on a user tier of 10 (80%) as of 1 Mar 2026.\n"
        "Plan A (jira-software) of org ACME.\n"
    )
    # month-end balances: 5 in Dec, 6 in Jan, 7 in Feb (March is not complete)
    assert "\n  Dec 2025: 5\n  Jan 2026: 6\n  Feb 2026: 7\n" in text
    assert (
        "  - Upgrade the plan to a higher user tier, or\n"
        "  - lower the user count:\n"
        "      remove at least 1 user to be under 80% of the tier (7 or fewer)\n\n"
    ) in text  # and nothing about the limit: it is 2 users away
    # least active: never seen (A3, A7), then by the latest sighting on any instance:
    # A4 20 Dec, A2 5 Jan, A6 1 Feb, A5 28 Feb, A1 (25 Feb on IA, 1 Mar 08:00 on IA2),
    # A8 (1 Mar 12:00)
    listed = [line.split(" <")[0] for line in text.splitlines() if line.startswith("  - User ")]
    assert listed == [f"  - User A{n}" for n in (3, 7, 4, 2, 6, 5, 1, 8)]
    assert "  - User A4 <a4@users.example>: last seen 20 Dec 2025 (71 days)\n" in text
    assert "  - User A1 <a1@users.example>: last seen 1 Mar 2026 (0 days)\n" in text
    assert "  - User A3 <a3@users.example>: never seen\n" in text
    assert "\n  usercounts export --plan A\n" in text
    assert "To stop the 80% notices for this plan: usercounts notify-at-80 off --plan A" in text
    html_part = body(message, "html")
    assert "<li>User A4 &lt;a4@users.example&gt;: last seen 20 Dec 2025 (71 days)</li>" in html_part
    assert "<pre>usercounts export --plan A</pre>" in html_part


def test_the_least_active_are_the_ten_never_seen_or_seen_longest_ago(
    story: dict[str, Any],
) -> None:
    """Of 12 users: u01 never seen, u02..u12 last seen on 2..12 Jan (u02 also on 20 Jan on
    another instance: its latest sighting counts). The 10 listed leave out the two seen
    most recently, u12 and u02. The rows are written by hand into a table with the columns
    of the mart the story's nights built, so that it cannot drift from the real one."""
    seen = [("I1", "u01", None)]
    seen += [("I1", f"u{n:02d}", datetime(2026, 1, n, 9)) for n in range(2, 13)]
    seen.append(("I2", "u02", datetime(2026, 1, 20, 9)))
    with duckdb.connect() as con:  # closed even when the test fails: it attaches a real file
        con.execute("attach ? as built (read_only)", [str(story["settings"].published_path)])
        con.execute("create schema marts")
        con.execute("create table marts.user_last_seen as from built.marts.user_last_seen limit 0")
        con.executemany(
            "insert into marts.user_last_seen by name "
            "select 'P' as plan_id, ? as instance_id, ? as user_id, 'active' as access_status, "
            "? as last_seen_at",
            seen,
        )
        listed = [user[0] for user in notify.least_active_users(con, ["P"])["P"]]
    assert listed == ["u01", *(f"u{n:02d}" for n in range(3, 12))]


def test_limit_messages(story: dict[str, Any]) -> None:
    at_limit = received_message(story["d2"], mid("M", "tier_limit", D2))
    assert at_limit["Subject"] == "Other Bitbucket has reached its user tier limit: 10 of 10 users"
    text = body(at_limit, "plain")
    assert "as of 11 Mar 2026. That is the tier's limit.\n" in text
    assert "remove at least 3 users to be under 80% of the tier (7 or fewer)\n" in text
    assert "to be within the tier" not in text
    assert "notify-at-80" not in text  # the limit notice has no opt-out
    c = received_message(story["d2"], mid("C", "tier_80", D2))
    assert c["Subject"] == "Other Jira has reached 80% of its user tier: 6 of 7 users"
    assert "Other Jira has 6 users on a user tier of 7 (85.7%)" in body(c, "plain")
    over = received_message(story["d1"], mid("X", "tier_limit", D1))
    assert over["Subject"] == (
        "Evil <b>Corp</b> Bcc: attacker@example.com is over its user tier limit: 5 of 4 users"
    )
    text = body(over, "plain")
    assert "(125%) as of 1 Mar 2026. That is 1 user over the tier's limit.\n" in text
    assert "remove at least 2 users to be under 80% of the tier (3 or fewer)\n" in text
    assert "remove at least 1 user to be within the tier (4 or fewer)\n" in text


def test_hostile_plan_name_and_address_inject_nothing(story: dict[str, Any]) -> None:
    evil = [r for r in story["d1"].received if r.rcpt_tos == EVIL_ADMINS]
    assert len(evil) == 2  # tier_80 and tier_limit, to the one valid admin only
    for received in evil:
        message = received.message
        assert message["Bcc"] is None
        assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
        assert message["To"] == "sec@evil.example"
        html_part = body(message, "html")
        assert "Evil &lt;b&gt;Corp&lt;/b&gt;" in html_part and "<b>Corp" not in html_part
    assert any(
        "org EVIL: admin address 'bad@evil.example\\r\\nBcc: attacker@example.com' is not valid"
        in w
        for w in story["d1"].report.warnings
    )


def test_email_message_refuses_line_breaks_in_headers() -> None:
    """The second guard: even an unsanitised value cannot reach a header."""
    message = EmailMessage()
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        message["Subject"] = EVIL_NAME
    assert notify.one_line(EVIL_NAME) == "Evil <b>Corp</b> Bcc: attacker@example.com"


# --- failures: refused, 4xx, 5xx, retried by the next run, delivered once ----------------


def test_failed_sends_are_recorded_retried_and_delivered_once(
    tmp_path: Path, scenario_landing: Path, smtp: Controller
) -> None:
    handler: Recorder = smtp.handler
    handler.take()
    home = tmp_path / "failing"
    refused = settings_for(home, scenario_landing, smtp_host="127.0.0.1", smtp_port=free_port())
    working = settings_for(home, scenario_landing, **smtp_settings(smtp))
    first = {
        ("A", "tier_80"), ("E", "tier_limit"), ("E2", "tier_limit"), ("O", "tier_80"),
        ("O", "tier_limit"), ("X", "tier_80"), ("X", "tier_limit"),
    }  # fmt: skip
    first_ids = {nid(p, k, D1) for p, k in first}

    def state_rows() -> dict[str, tuple]:
        with duckdb.connect(str(home / "warehouse.state.duckdb"), read_only=True) as con:
            return {
                r[0]: r[1:]
                for r in con.execute(
                    "select notification_id, status, attempts, last_error, sent_at "
                    "from notification_log"
                ).fetchall()
            }

    # night 1: the server refuses connections
    summary = build_night(refused, D1)
    report = finish_night(refused, summary)
    rows = state_rows()
    assert report.counts() == {"decided": 8, "sent": 0, "unsent": 7}
    for i in first_ids:
        status, attempts, error, sent_at = rows[i]
        assert (status, attempts, sent_at) == ("failed", 1, None)
        assert error.startswith("temporary: SMTP 127.0.0.1:") and "refused" in error.lower()
    assert any("not delivered after 1 attempt(s)" in w for w in report.warnings)
    for i in first_ids:  # each names the command that gives it up, with what it takes
        hint = f"usercounts notifications cancel {i[:12]} --database {refused.published_path})"
        assert sum(hint in w for w in report.warnings) == 1
    published = log_rows(refused)
    assert {r["status"] for i, r in published.items() if i in first_ids} == {"failed"}

    # the same night's notify step again, the server answering 4xx, then 5xx
    handler.reply = "451 4.7.1 greylisted"
    notify.notify(working, D1)
    rows = state_rows()
    assert {rows[i][:2] for i in first_ids} == {("failed", 2)}
    assert all(rows[i][2].startswith("temporary: SMTP 451") for i in first_ids)
    handler.reply = "554 5.7.1 rejected"
    notify.notify(working, D1)
    rows = state_rows()
    assert {rows[i][:2] for i in first_ids} == {("failed", 3)}
    assert all(rows[i][2].startswith("permanent: SMTP 554") for i in first_ids)
    assert handler.take() == []

    # the operator's view: the seven owed rows, newest first; N's undeliverable row only
    # with --all
    database = ["--database", str(working.database)]
    owed = run_cli("notifications", *database)
    assert owed.returncode == 0, owed.stderr
    listed = [line.split()[0] for line in owed.stdout.splitlines()[2:9]]
    assert sorted(listed) == sorted(i[:12] for i in first_ids)
    assert "7 owed: every run retries them" in owed.stdout
    assert owed.stdout.count("permanent: SMTP 554") == 7
    assert nid("N", "tier_80", D1)[:12] not in owed.stdout
    everything = run_cli("notifications", "--all", "--plan", "N", *database)
    assert everything.stdout.splitlines()[2].split()[:7] == [
        nid("N", "tier_80", D1)[:12], "LONELY", "N", "tier_80", "2026-03-01", "undeliverable", "0",
    ]  # fmt: skip

    # an operator gives up on X's tier_80 (docs/notifications.md): not retried, and it
    # counts for the 30-day rule like a sent one. Not while a run holds the data folder,
    # not a row that is not owed, and an id prefix must name one row.
    x_80 = nid("X", "tier_80", D1)
    with run_lock(working.lock_path):
        locked = run_cli("notifications", "cancel", x_80, *database)
    assert locked.returncode == 1 and "another usercounts run" in locked.stderr
    refused = run_cli("notifications", "cancel", nid("N", "tier_80", D1)[:8], *database)
    assert refused.returncode == 1
    assert "is undeliverable: only pending or failed ones can be cancelled" in refused.stderr
    unknown = run_cli("notifications", "cancel", "0" * 32, *database)
    assert unknown.returncode == 1 and "no notification '" in unknown.stderr
    cancelled = run_cli("notifications", *database, "cancel", x_80[:8].upper())
    assert cancelled.returncode == 0, cancelled.stderr
    assert (
        f"cancelled the tier_80 notification for plan X as of 2026-03-01 ({x_80}), failed "
        "after 3 attempt(s); delivered to nobody."
    ) in cancelled.stdout
    again = run_cli("notifications", "cancel", x_80, *database)
    assert again.returncode == 0 and "was already cancelled" in again.stdout
    assert "6 owed" in run_cli("notifications", *database).stdout

    # night 2, 30 days later: the unsent rows block new ones for their plan and kind (A's
    # tier_80 would otherwise be due again), the new decisions are made (X's tier_80 too: the
    # cancelled row is 30 days old), and all are delivered, once
    handler.reply = None
    report = run_night(working, D3)
    received = handler.take()
    expected_new = {
        nid("B", "tier_80", D3), nid("C", "tier_80", D3), nid("M", "tier_limit", D3),
        nid("N", "tier_80", D3), nid("X", "tier_80", D3),
    }  # fmt: skip
    retried = first_ids - {x_80}
    rows = state_rows()
    assert set(rows) == first_ids | {nid("N", "tier_80", D1)} | expected_new
    assert sorted(r.message["Message-ID"] for r in received) == sorted(
        f"<{i}@usercounts>" for i in (retried | expected_new) - {nid("N", "tier_80", D3)}
    )
    assert all(rows[i][:2] == ("sent", 4) and rows[i][3] is not None for i in retried)
    assert rows[x_80][:2] == ("cancelled", 3)
    assert report.counts() == {"decided": 5, "sent": 10, "unsent": 0}
    published = {r["status"] for r in log_rows(working).values()}
    assert published == {"sent", "undeliverable", "cancelled"}

    # and nothing more on the next call
    assert notify.notify(working, D3).counts() == {"decided": 0, "sent": 0, "unsent": 0}
    assert handler.take() == []


def test_an_episode_from_the_first_day_and_a_cancelled_row_block_the_next_night(
    tmp_path: Path, smtp: Controller
) -> None:
    """Two rules the story does not reach. F is at its limit from its first event day (1 Mar):
    the day before, it had no users, so its episode began then, and 2 Mar is the same
    episode. G's tier_80 of 1 Mar is refused, then cancelled: a cancelled row counts like a
    sent one, so 2 Mar (1 day later, not 30) decides nothing for G either."""
    landing = Landing(tmp_path / "landing")
    landing.write(
        "plans",
        [
            landing.plan("F", 2, org_id="FIRST", billing_cycle="monthly"),
            landing.plan("G", 10, org_id="GIVE"),
        ],
    )
    landing.write(
        "instances", [{"instance_id": "IF", "plan_id": "F"}, {"instance_id": "IG", "plan_id": "G"}]
    )
    landing.write(
        "org_admins",
        [
            {"org_id": "FIRST", "email": "f@first.example"},
            {"org_id": "GIVE", "email": "g@give.example"},
        ],
    )
    first_day = [("IF", f"F{n}", "2026-03-01T09:00:00Z") for n in (1, 2)]
    earlier = [("IG", f"G{n}", "2026-02-01T09:00:00Z") for n in range(1, 9)]
    landing.write(
        "access_events",
        [ev(f"e{n}", at, i, u, "grant") for n, (i, u, at) in enumerate(first_day + earlier)],
    )
    settings = settings_for(tmp_path / "data", landing.root, **smtp_settings(smtp))
    handler: Recorder = smtp.handler
    handler.take()
    handler.refuse = {"g@give.example": "550 5.1.1 no such user"}
    try:
        report = run_night(settings, D1)
    finally:
        handler.refuse = {}
    assert sent_keys(handler.take()) == mids(D1, "F:limit")
    assert report.counts() == {"decided": 2, "sent": 1, "unsent": 1}
    cancelled, changed = cancel_notification(settings.state_path, nid("G", "tier_80", D1))
    assert changed and cancelled.status == "failed"

    report = run_night(settings, D1_NEXT)
    assert report.counts() == {"decided": 0, "sent": 0, "unsent": 0}
    assert handler.take() == []
    assert {(r["plan_id"], r["kind"], r["status"]) for r in log_rows(settings).values()} == {
        ("F", "tier_limit", "sent"),
        ("G", "tier_80", "cancelled"),
    }


OUTBOX_FACTS: dict[str, Any] = {
    "notification_id": "n1",
    "message_id": "<n1@usercounts>",
    "org_id": "O",
    "plan_id": "P 1",
    "plan_name": "Zürich Jira",
    "product_key": "jira-software",
    "kind": "tier_limit",
    "user_count": 10,
    "user_tier": 10,
    "users_to_remove_for_80": 3,
    "users_to_remove_for_limit": 0,
    "as_of_date": D1,
    "month_ends": [],
    "least_active": [],
}


def test_a_tier_raised_then_lowered_again_starts_a_new_limit_episode(
    tmp_path: Path, smtp: Controller
) -> None:
    """A day below the tier is below that day's tier. T has 10 users from 20 Feb at a tier
    of 10: at its limit on 1 Mar. Its tier is 12 from 3 Mar 00:00 and 10 again from 6 Mar
    00:00, so the days 2-4 Mar (each at its end) were below the tier: 11 Mar is a new
    episode, though 10 users never fell below today's tier of 10."""
    landing = Landing(tmp_path / "landing")
    landing.write(
        "plans",
        [
            landing.plan("T", tier, org_id="TIER", billing_cycle="monthly", updated_at=at)
            for tier, at in (
                (10, "2026-01-01T00:00:00Z"),
                (12, "2026-03-03T00:00:00Z"),
                (10, "2026-03-06T00:00:00Z"),
            )
        ],
    )
    landing.write("instances", [{"instance_id": "IT", "plan_id": "T"}])
    landing.write("org_admins", [{"org_id": "TIER", "email": "t@tier.example"}])
    landing.write(
        "access_events",
        [ev(f"t{n}", "2026-02-20T09:00:00Z", "IT", f"T{n}", "grant") for n in range(1, 11)],
    )
    settings = settings_for(tmp_path / "data", landing.root, **smtp_settings(smtp))
    handler: Recorder = smtp.handler
    handler.take()
    run_night(settings, D1)
    assert sent_keys(handler.take()) == mids(D1, "T:limit")
    run_night(settings, D2)
    assert query(
        settings.published_path,
        "select day, user_count, user_tier from marts.plan_user_counts_daily "
        "where plan_id = 'T' and day between '2026-03-02' and '2026-03-06' order by day",
    ) == [(date(2026, 3, d), 10, 12 if d < 5 else 10) for d in range(2, 7)]
    assert sent_keys(handler.take()) == mids(D2, "T:limit")
    assert keys(log_rows(settings)) == {("T", "tier_limit", D1), ("T", "tier_limit", D2)}


def test_deliver_to_outbox_is_rfc5322(tmp_path: Path) -> None:
    """The outbox default on its own: a message with non-ASCII text parses back intact."""
    settings = Settings(database=tmp_path / "w.duckdb")
    message = notify.render_message(OUTBOX_FACTS, ["a@b.example"], settings.mail_from)
    path = Path(deliver(settings, message))
    assert path.parent == tmp_path / "outbox"
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())
    assert parsed["Subject"] == "Zürich Jira has reached its user tier limit: 10 of 10 users"
    assert "usercounts export --plan 'P 1'" in parsed.get_body(("plain",)).get_content()
    assert path.read_bytes().isascii()


@pytest.mark.parametrize("plan_type", ["marketplace_app", "guard_standard"])
def test_a_plan_the_export_refuses_is_pointed_to_its_inactive_users(plan_type: str) -> None:
    """The users export refuses these plan types, so the message must not suggest it."""
    facts = {**OUTBOX_FACTS, "plan_type": plan_type}
    message = notify.render_message(facts, ["a@b.example"], "usercounts@localhost")
    text = message.get_body(("plain",)).get_content()
    html_part = message.get_body(("html",)).get_content()
    assert "usercounts export" not in text and "usercounts export" not in html_part
    assert (
        "The inactive users, most inactive first (the users export does not cover "
        f"{plan_type} plans):\n  usercounts inactive --plan 'P 1'\n"
    ) in text
    assert "<pre>usercounts inactive --plan &#x27;P 1&#x27;</pre>" in html_part


def test_outbox_file_is_the_logged_message(tmp_path: Path) -> None:
    """A message delivered from the log (a later run retrying it) is filed as logged, not
    as parsed and serialized again: Python folds this Subject differently the second time."""
    settings = Settings(database=tmp_path / "w.duckdb")
    due = {**OUTBOX_FACTS, "plan_name": "Northern Bikes Confluence"}
    facts = notify.PlanFacts(admins={"O": ["a@b.example"]}, month_ends={}, least_active={})
    row, _ = notify.intent_for(settings, due, facts)
    reserialized = email.message_from_string(row["message_eml"], policy=email.policy.default)
    assert reserialized.as_bytes() != row["message_eml"].encode()  # what the test tells apart
    assert notify.record_intents(settings, [row]) == 1
    assert notify.deliver_unsent(settings) == 1  # no message of this run: read from the log
    [path] = (tmp_path / "outbox").glob("*.eml")
    assert path.read_bytes() == row["message_eml"].encode()


def test_recipients_refused_get_the_retry_and_the_others_nothing_twice(
    tmp_path: Path, smtp: Controller
) -> None:
    """The server takes a message for one admin and refuses the other at RCPT TO (smtplib
    then returns instead of raising): the row stays failed, naming who was refused, and
    the retry goes to that admin only, with the same message."""
    handler: Recorder = smtp.handler
    handler.take()
    settings = Settings(database=tmp_path / "w.duckdb", **smtp_settings(smtp))
    admins = ["ada@o.example", "ben@o.example"]
    facts = notify.PlanFacts(admins={"O": admins}, month_ends={}, least_active={})
    row, _ = notify.intent_for(settings, OUTBOX_FACTS, facts)
    notify.record_intents(settings, [row])

    def logged() -> tuple:
        with duckdb.connect(str(settings.state_path), read_only=True) as con:
            return con.execute(
                "select status, attempts, delivered_to, last_error, sent_at is not null "
                "from notification_log"
            ).fetchone()

    handler.refuse = {"ben@o.example": "450 4.2.1 mailbox busy"}
    try:
        notify.deliver_unsent(settings)
        [first] = handler.take()
        assert first.rcpt_tos == ["ada@o.example"]
        status, attempts, delivered_to, error, sent = logged()
        assert (status, attempts, delivered_to, sent) == ("failed", 1, "ada@o.example", False)
        assert error == "temporary: SMTP refused ben@o.example (450 '4.2.1 mailbox busy')"
        report = notify.read_report(settings, datetime(2000, 1, 1))
        assert report.unsent == 1 and "ben@o.example (450" in report.warnings[0]

        # refused for good (5xx) on the next try: still only ben is tried, and it stays owed
        handler.refuse = {"ben@o.example": "550 5.1.1 no such user"}
        notify.deliver_unsent(settings)
        assert handler.take() == []
        assert logged()[:3] == ("failed", 2, "ada@o.example")
        assert logged()[3].startswith("permanent: SMTP refused ben@o.example (550")
    finally:
        handler.refuse = {}

    notify.deliver_unsent(settings)
    [retry] = handler.take()
    assert retry.rcpt_tos == ["ben@o.example"]
    assert retry.message["Message-ID"] == first.message["Message-ID"] == row["message_id"]
    assert retry.message["To"] == first.message["To"] == "ada@o.example, ben@o.example"
    assert logged() == ("sent", 3, "ada@o.example, ben@o.example", None, True)
    assert notify.deliver_unsent(settings) == 0
    assert handler.take() == []


def pending_in_a_state_file(tmp_path: Path, ids: list[str] | None = None) -> Settings:
    """Settings whose state file logs OUTBOX_FACTS's notification as pending (to one admin),
    once under each id given, or under its own id."""
    settings = Settings(database=tmp_path / "w.duckdb")
    facts = notify.PlanFacts(admins={"O": ["a@b.example"]}, month_ends={}, least_active={})
    row, _ = notify.intent_for(settings, OUTBOX_FACTS, facts)
    rows = [{**row, "notification_id": i} for i in ids] if ids else [row]
    notify.record_intents(settings, rows)
    return settings


def test_an_outbox_that_cannot_be_written_is_a_failed_send_retried_later(tmp_path: Path) -> None:
    """As an SMTP server that cannot be reached: the row is failed with the reason, and the
    next attempt, the outbox usable again, files it once."""
    settings = pending_in_a_state_file(tmp_path)
    settings.outbox_path.write_text("a file where the outbox folder should be\n")
    assert notify.deliver_unsent(settings) == 1
    assert query(settings.state_path, "select status, last_error from notification_log") == [
        ("failed", f"temporary: outbox {settings.outbox_path}: File exists")
    ]
    settings.outbox_path.unlink()
    assert notify.deliver_unsent(settings) == 1
    assert query(settings.state_path, "select status from notification_log") == [("sent",)]
    assert len(list(settings.outbox_path.glob("*.eml"))) == 1


def test_a_state_file_of_an_older_version_gains_delivered_to(tmp_path: Path) -> None:
    """A state file written before `delivered_to` existed: delivering its unsent row adds
    the column (deliver_unsent may be the first to open the file in this version)."""
    settings = pending_in_a_state_file(tmp_path)
    with duckdb.connect(str(settings.state_path)) as con:
        con.execute("alter table notification_log drop column delivered_to")
    assert notify.deliver_unsent(settings) == 1
    with duckdb.connect(str(settings.state_path), read_only=True) as con:
        logged = con.execute("select status, delivered_to from notification_log").fetchall()
    assert logged == [("sent", "a@b.example")]


def test_cancel_needs_an_id_prefix_that_names_one_row(tmp_path: Path) -> None:
    ids = ["abcdef" + "0" * 26, "abcdef" + "1" * 26]
    settings = pending_in_a_state_file(tmp_path, ids)
    with pytest.raises(NotificationNotFound, match="2 notifications start with 'abcdef'"):
        cancel_notification(settings.state_path, "abcdef")
    with pytest.raises(NotificationNotFound, match="at least 6 characters"):
        cancel_notification(settings.state_path, "abcde")
    cancelled, changed = cancel_notification(settings.state_path, " ABCDEF1 ")
    assert (cancelled.notification_id, cancelled.status, changed) == (ids[1], "pending", True)
    with duckdb.connect(str(settings.state_path), read_only=True) as con:
        statuses = con.execute("select status from notification_log order by 1").fetchall()
    assert statuses == [("cancelled",), ("pending",)]


def test_the_notify_step_waits_twice_as_long_before_each_retry() -> None:
    assert notify.retry_delays(3, 30.0) == [30.0, 60.0, 120.0]
    assert notify.retry_delays(0, 30.0) == []


def test_a_refusal_is_permanent_only_when_every_refused_address_got_a_5xx() -> None:
    def refused(*codes: int) -> RecipientsRefused:
        return RecipientsRefused({f"a{n}@x.example": (c, b"no") for n, c in enumerate(codes)})

    assert [refused(*codes).permanent for codes in ((550,), (550, 551), (450, 550), (451,))] == [
        True, True, False, False
    ]  # fmt: skip


def test_cancel_refuses_a_row_that_is_not_owed(tmp_path: Path) -> None:
    """Sent and undeliverable rows have nothing left to stop: refused, and left as they are."""
    ids = {"sent": "a" * 32, "undeliverable": "b" * 32}
    settings = pending_in_a_state_file(tmp_path, list(ids.values()))
    with duckdb.connect(str(settings.state_path)) as con:
        for status, notification_id in ids.items():
            con.execute(
                "update notification_log set status = ? where notification_id = ?",
                [status, notification_id],
            )
    for status, notification_id in ids.items():
        with pytest.raises(NotificationNotOwed, match=f"is {status}: only pending or failed"):
            cancel_notification(settings.state_path, notification_id[:6])
    with duckdb.connect(str(settings.state_path), read_only=True) as con:
        statuses = con.execute("select status from notification_log order by 1").fetchall()
    assert statuses == [("sent",), ("undeliverable",)]


def test_the_owed_rows_are_listed_newest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pending_in_a_state_file(tmp_path, ["a" * 32, "b" * 32])
    with duckdb.connect(str(settings.state_path)) as con:
        con.execute(
            "update notification_log set as_of_date = date '2026-03-11' where notification_id = ?",
            ["b" * 32],
        )
    assert cli.main(["notifications", "--database", str(settings.published_path)]) == 0
    listed = capsys.readouterr().out.splitlines()
    ids = [line.split()[0] for line in listed if line.startswith(("aaaaaa", "bbbbbb"))]
    assert ids == ["b" * 12, "a" * 12]  # as of 11 Mar before 1 Mar


def test_cancel_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the tool says, and that a folder with no state file is left as it was."""
    missing = tmp_path / "nothing-here" / "w.duckdb"
    assert cli.main(["notifications", "cancel", "abcdef", "--database", str(missing)]) == 1
    assert cli.main(["notifications", "--database", str(missing)]) == 0
    assert not missing.parent.exists()
    assert "no notifications yet" in capsys.readouterr().err

    settings = pending_in_a_state_file(tmp_path, ["a" * 32, "b" * 32])
    database = ["--database", str(settings.published_path)]
    with duckdb.connect(str(settings.state_path)) as con:
        con.execute(
            "update notification_log set status = 'failed', attempts = 2, last_error = ?, "
            "delivered_to = 'a@b.example' where notification_id = ?",
            ["permanent: SMTP 550 5.1.1 <c@b.example>:\r\n  no such user", "b" * 32],
        )
    assert cli.main(["notifications", "cancel", "aaaaaa", *database]) == 0
    said = f"for plan P 1 as of 2026-03-01 ({'a' * 32}), never attempted; delivered to nobody."
    assert said in capsys.readouterr().out
    assert cli.main(["notifications", *database, "cancel", "bbbbbb"]) == 0
    assert "failed after 2 attempt(s); delivered to a@b.example only." in capsys.readouterr().out
    assert cli.main(["notifications", "--plan", "P 1", "cancel", "aaaaaa", *database]) == 2
    assert "cancel takes an id only" in capsys.readouterr().err
    assert cli.main(["notifications", "--all", *database]) == 0
    listed = capsys.readouterr().out
    assert listed.count("cancelled") == 2  # and a multi-line error keeps its row one line
    assert "cancelled         2  permanent: SMTP 550 5.1.1 <c@b.example>: no such user\n" in listed
    with pytest.raises(SystemExit):
        cli.main(["notifications", "cancel", "--help"])
    assert capsys.readouterr().out.startswith(
        "usage: usercounts notifications cancel [-h] [--database DATABASE] ID\n"
    )


def other_process_reads_log(path: Path) -> list[tuple[str, str, int]] | None:
    """The log as another process sees it, or None while this process holds the file."""
    script = (
        "import sys, duckdb\n"
        "try:\n"
        "    con = duckdb.connect(sys.argv[1])\n"
        "except duckdb.IOException:\n"
        "    print('locked'); sys.exit(0)\n"
        "rows = con.execute('select notification_id, status, attempts from notification_log "
        "order by 1').fetchall()\n"
        "print(repr(rows))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    return None if out == "locked" else eval(out)  # noqa: S307 - our own repr of rows


def test_delivery_log_commits_each_attempt_and_lets_others_in(tmp_path: Path) -> None:
    """The state file stays open across deliveries (opening it per delivery cost most of a
    first run's notify step) but each attempt is committed at once, and the file is let go
    once held longer than HOLD_SECONDS, so other commands get their turn."""
    path = tmp_path / "state.duckdb"
    with connect_state(path) as state:
        for n in ("n1", "n2"):
            state.execute(
                "insert into notification_log (notification_id, org_id, plan_id, kind, "
                "as_of_date, user_count, user_tier, status, decided_at) "
                "values (?, 'o', 'p', 'tier_80', date '2026-03-01', 8, 10, 'pending', now())",
                [n],
            )

    class ShortHold(notify.DeliveryLog):
        HOLD_SECONDS = 0.5

    with ShortHold(path) as log:
        log.note("n1", notify.SENT, None)
        assert other_process_reads_log(path) is None  # held between deliveries
        time.sleep(ShortHold.HOLD_SECONDS)
        log.note("n2", notify.FAILED, "temporary: SMTP 451")
        # held past HOLD_SECONDS: let go right after the note, both attempts on disk
        assert other_process_reads_log(path) == [("n1", "sent", 1), ("n2", "failed", 1)]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (no network, no openssl binary)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_smtp_starttls_and_login_with_a_password_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        logins.append((data.login, data.password))
        ok = (data.login, data.password) == (b"counts", b"s3cret")
        return AuthResult(success=ok, handled=False)

    handler = Recorder()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    try:
        password = tmp_path / "smtp-password"
        password.write_text("s3cret\n")
        password.chmod(0o600)
        settings = Settings(
            database=tmp_path / "w.duckdb",
            smtp_host="127.0.0.1",
            smtp_port=controller.port,
            smtp_starttls=True,
            smtp_user="counts",
            smtp_password_file=password,
        )
        message = notify.render_message(OUTBOX_FACTS, ["a@b.example"], settings.mail_from)

        # the server's certificate is not trusted yet: refused before any password is sent
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            deliver(settings, message)
        assert logins == []

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert deliver(settings, message) == f"smtp://127.0.0.1:{controller.port}"
        assert logins == [(b"counts", b"s3cret")]
        assert [r.rcpt_tos for r in handler.take()] == [["a@b.example"]]

        password.write_text("wrong")
        with pytest.raises(DeliveryError, match="SMTP 535") as refused:
            deliver(settings, message)
        assert refused.value.permanent
        password.chmod(0o644)
        with pytest.raises(DeliveryError, match="chmod 600"):
            deliver(settings, message)
    finally:
        controller.stop()


# --- the real flow through the command line ---------------------------------------------


def test_cli_runs_notify_through_the_prefect_flow(
    tmp_path: Path, scenario_landing: Path, smtp: Controller, prefect_api_url: str
) -> None:
    """Two real runs of the same as-of date: the first cannot deliver (451 to every try,
    the task's retry included) and still publishes; the second decides nothing new, and its
    task retry gets past one more 451: every message is delivered exactly once."""
    handler: Recorder = smtp.handler
    handler.take()
    database = tmp_path / "cli" / "warehouse.duckdb"
    env = {
        "PREFECT_API_URL": prefect_api_url,
        "USERCOUNTS_SMTP_HOST": "127.0.0.1",
        "USERCOUNTS_SMTP_PORT": str(smtp.port),
        "USERCOUNTS_MAIL_FROM": "counts@example.org",
        "USERCOUNTS_NOTIFY_RETRIES": "1",
        "USERCOUNTS_NOTIFY_RETRY_DELAY_SECONDS": "0",
    }
    args = ["run", "--landing", str(scenario_landing), "--database", str(database)]
    args += ["--as-of", D1.isoformat()]
    status_sql = (
        "select status, count(*), sum(attempts) from marts.notifications group by 1 order by 1"
    )

    handler.reply = "451 4.3.0 try again later"
    try:
        first = run_cli(*args, env=env)
    finally:
        handler.reply = None
    assert first.returncode == 0, first.stderr
    assert handler.take() == []
    assert "notifications: 8 new, 0 sent, 7 unsent" in first.stdout
    assert "warning: org LONELY has no admins" in first.stdout
    assert "not delivered after 2 attempt(s) (temporary: SMTP 451" in first.stdout
    # published all the same, with the log as the run left it: 2 attempts each
    assert query(database, status_sql) == [("failed", 7, 14), ("undeliverable", 1, 0)]

    handler.fail_first = 1
    second = run_cli(*args, env={**env, "USERCOUNTS_NOTIFY_RETRIES": "2"})
    assert second.returncode == 0, second.stderr
    received = handler.take()
    expected = mids(D1, "A:80", "E:limit", "E2:limit", "O:80", "O:limit", "X:80", "X:limit")
    assert sent_keys(received) == expected
    assert {r.mail_from for r in received} == {"counts@example.org"}
    assert "notifications: 0 new, 7 sent, 0 unsent" in second.stdout
    # 3 attempts each, and one more for the message that met the 451
    assert query(database, status_sql) == [("sent", 7, 22), ("undeliverable", 1, 0)]


def test_module_imports_without_prefect() -> None:
    """notify is a plain module: tests and other commands use it without Prefect."""
    code = "import sys, usercounts.notify; sys.exit('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
