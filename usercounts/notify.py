"""Tell org admins when a plan reaches 80% of its user tier or the limit (contract section 4).

dbt decides what is due (`intermediate.int_notifications_due`); this module renders each
message, records the intent in the state file's notification_log (status `pending`, with
the rendered message) BEFORE sending, and marks it `sent` after. A send that fails is left
`failed` with its attempts and last error, and every unsent row, of this run or an earlier
one, is sent again by the next call. So each notification is delivered once, except when
the process dies between the send and its record; the re-send then carries the same
Message-ID, which mail clients fold into the first copy.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import html
import shlex
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from usercounts import workdb
from usercounts.build import dbt_home, run_dbt
from usercounts.config import Settings
from usercounts.export import REFUSED_PLAN_TYPES
from usercounts.figures import percent
from usercounts.mail import DeliveryError, RecipientsRefused, deliver, one_line, to_addresses
from usercounts.state import (
    FAILED,
    PENDING,
    SENT,
    SHOWN_ID_CHARS,
    UNDELIVERABLE,
    UNSENT,
    connect_state,
    copy_state_into,
)

# How many of the least active users a message lists; the export has them all.
INACTIVE_LISTED = 10

LOG_COLUMNS = (
    "notification_id",
    "org_id",
    "plan_id",
    "kind",
    "as_of_date",
    "user_count",
    "user_tier",
    "recipients",
    "status",
    "message_id",
    "attempts",
    "last_error",
    "decided_at",
    "sent_at",
    "message_eml",
)


@dataclass
class NotifyReport:
    """What the notify step did in this run, read back from the notification log."""

    decided: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    unsent: int = 0
    changed: bool = False
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Figures for the run summary."""
        return {"decided": sum(self.decided.values()), "sent": self.sent, "unsent": self.unsent}


class NotificationsFailed(RuntimeError):
    """Some notifications are still unsent; raised so that the Prefect task retries."""

    def __init__(self, report: NotifyReport) -> None:
        super().__init__(f"{report.unsent} notification(s) not delivered")
        self.report = report

    def __reduce__(self) -> tuple[type, tuple[NotifyReport]]:
        return (type(self), (self.report,))  # picklable, should Prefect store it


def utc_now() -> datetime:
    """Now, as the naive UTC timestamp the state file stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def notify(settings: Settings, as_of: date, since: datetime | None = None) -> NotifyReport:
    """Record this run's due notifications, then deliver every unsent one; never raises on
    a failed delivery (it stays `failed` for the next run). `since` is when the run began.
    """
    since = since or utc_now()
    warnings: list[str] = []
    with workdb.connect(settings.work_path, read_only=True) as work:
        dues = due_notifications(work, as_of)
        plan_ids = [due["plan_id"] for due in dues]
        facts = PlanFacts(
            admins=admin_addresses(work, [due["org_id"] for due in dues], warnings),
            month_ends=month_end_balances(work, plan_ids),
            least_active=least_active_users(work, plan_ids),
        )
        decided = [intent_for(settings, due, facts) for due in dues]
    recorded = record_intents(settings, [row for row, _ in decided])
    attempted = deliver_unsent(settings, {row["message_eml"]: m for row, m in decided if m})
    report = read_report(settings, since)
    report.changed = bool(recorded or attempted or report.decided or report.sent)
    report.warnings[:0] = list(dict.fromkeys(warnings))  # once each, in order
    return report


def retry_delays(retries: int, first_delay: float) -> list[float]:
    """The notify step's waits before each retry within a run: the first delay, doubling
    (USERCOUNTS_NOTIFY_RETRY_DELAY_SECONDS=30: 30, 60, 120 s)."""
    return [first_delay * 2**n for n in range(retries)]


def notify_or_raise(settings: Settings, as_of: date, since: datetime | None = None) -> NotifyReport:
    """`notify`, raising NotificationsFailed while anything is unsent (for task retries)."""
    report = notify(settings, as_of, since)
    if report.unsent:
        raise NotificationsFailed(report)
    return report


def due_notifications(work: duckdb.DuckDBPyConnection, as_of: date) -> list[dict[str, Any]]:
    """The rows dbt decided are due for the as-of date, in a stable order."""
    cursor = work.execute(
        "select * from intermediate.int_notifications_due where as_of_date = ? "
        "order by org_id, plan_id, kind",
        [as_of],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@dataclass
class PlanFacts:
    """What the messages of one run say beyond the due row, read for all due plans at once
    (a query per message cost ~5 ms each: seconds when a first run decides hundreds)."""

    admins: dict[str, list[str]]
    month_ends: dict[str, list[tuple[date, int]]]
    least_active: dict[str, list[tuple[Any, ...]]]


def intent_for(
    settings: Settings, due: dict[str, Any], facts: PlanFacts
) -> tuple[dict[str, Any], EmailMessage | None]:
    """The log row for one due notification, pending with its message (also returned, so
    that it is not parsed back from the log), or undeliverable."""
    recipients = facts.admins.get(due["org_id"], [])
    row = {
        "notification_id": due["notification_id"],
        "org_id": due["org_id"],
        "plan_id": due["plan_id"],
        "kind": due["kind"],
        "as_of_date": due["as_of_date"],
        "user_count": due["user_count"],
        "user_tier": due["user_tier"],
        "recipients": ", ".join(recipients) or None,
        "status": PENDING if recipients else UNDELIVERABLE,
        "message_id": due["message_id"],
        "attempts": 0,
        "last_error": None if recipients else "the org has no admins",
        "decided_at": utc_now(),
        "sent_at": None,
        "message_eml": None,
    }
    if recipients:
        message_facts = {
            **due,
            "month_ends": facts.month_ends.get(due["plan_id"], []),
            "least_active": facts.least_active.get(due["plan_id"], []),
        }
        message = render_message(message_facts, recipients, settings.mail_from)
        row["message_eml"] = message.as_string()
        return row, message
    return row, None


def admin_addresses(
    work: duckdb.DuckDBPyConnection, org_ids: list[str], warnings: list[str]
) -> dict[str, list[str]]:
    """Per org, its admin addresses that are valid; invalid ones are left out with a warning.

    Each address once: the staging model keeps one row per org and address in any case."""
    rows = work.execute(
        "select org_id, email from staging.stg_landing__org_admins "
        "where org_id in (select unnest(?)) order by org_id, lower(email)",
        [sorted(set(org_ids))],
    ).fetchall()
    by_org: dict[str, list[str]] = {}
    for org_id, text in rows:
        addresses = by_org.setdefault(org_id, [])
        address = valid_address(text)
        if address is None:
            warnings.append(f"org {org_id}: admin address {text!r} is not valid; not used")
        else:
            addresses.append(address)
    return by_org


def valid_address(text: str) -> str | None:
    """The address if it is one plain ASCII addr-spec (no display name, no line breaks)."""
    if not text or not text.isascii() or any(c in text for c in "\r\n\t,;<>"):
        return None
    try:
        address = Address(addr_spec=text)
    except (ValueError, HeaderParseError, IndexError):
        return None
    if address.addr_spec != text or not address.username or not address.domain:
        return None
    return address.addr_spec


def month_end_balances(
    work: duckdb.DuckDBPyConnection, plan_ids: list[str]
) -> dict[str, list[tuple[date, int]]]:
    """Per plan, the last three complete months' closing balances, oldest first."""
    rows = work.execute(
        """
        select plan_id, month, closing_balance
        from marts.plan_user_counts_monthly
        where plan_id in (select unnest(?)) and is_month_complete
        qualify row_number() over (partition by plan_id order by month desc) <= 3
        order by plan_id, month
        """,
        [sorted(set(plan_ids))],
    ).fetchall()
    by_plan: dict[str, list[tuple[date, int]]] = {}
    for plan_id, month, balance in rows:
        by_plan.setdefault(plan_id, []).append((month, balance))
    return by_plan


def least_active_users(
    work: duckdb.DuckDBPyConnection, plan_ids: list[str], limit: int = INACTIVE_LISTED
) -> dict[str, list[tuple[str, str | None, str | None, date | None, int | None, bool]]]:
    """Per plan, the users counted in it, never seen first, then by their latest sighting on
    any of the plan's instances: (user_id, email, display_name, last seen, days since,
    invited). One scan of marts.user_last_seen for all the plans (a query per plan read the
    whole mart each time: ~30 ms per notification at 1M users)."""
    rows = work.execute(
        """
        with per_user as (
            select
                plan_id,
                user_id,
                any_value(email) as email,
                any_value(display_name) as display_name,
                max(last_seen_at) as last_seen_at,
                min(days_since_last_seen) as days_since_last_seen,
                bool_and(access_status = 'invited') as is_only_invited
            from marts.user_last_seen
            where plan_id in (select unnest(?))
            group by plan_id, user_id
        )

        select
            plan_id,
            user_id,
            email,
            display_name,
            cast(last_seen_at as date) as last_seen_date,
            days_since_last_seen,
            is_only_invited
        from per_user
        qualify row_number() over (
            partition by plan_id order by last_seen_at nulls first, user_id
        ) <= ?
        order by plan_id, last_seen_at nulls first, user_id
        """,
        [sorted(set(plan_ids)), limit],
    ).fetchall()
    by_plan: dict[str, list[tuple[str, str | None, str | None, date | None, int | None, bool]]] = {}
    for plan_id, *user in rows:
        by_plan.setdefault(plan_id, []).append(tuple(user))
    return by_plan


def long_date(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def subject_for(facts: dict[str, Any]) -> str:
    """The subject: the plan and the figures, e.g. 'Acme Jira has reached 80% of ...'."""
    name = one_line(facts["plan_name"])
    figures = f"{facts['user_count']} of {facts['user_tier']} users"
    if facts["kind"] == "tier_80":
        return f"{name} has reached 80% of its user tier: {figures}"
    if facts["user_count"] > facts["user_tier"]:
        return f"{name} is over its user tier limit: {figures}"
    return f"{name} has reached its user tier limit: {figures}"


def users(n: int) -> str:
    return f"{n} user" if n == 1 else f"{n} users"


def message_lines(facts: dict[str, Any]) -> dict[str, Any]:
    """The message's content as plain strings; the text and HTML parts render the same."""
    count, tier = facts["user_count"], facts["user_tier"]
    plan_id = str(facts["plan_id"])
    headline = (
        f"{one_line(facts['plan_name'])} has {users(count)} on a user tier of {tier} "
        f"({percent(count, tier)}) as of {long_date(facts['as_of_date'])}."
    )
    if count > tier:
        headline += f" That is {users(count - tier)} over the tier's limit."
    elif count == tier:
        headline += " That is the tier's limit."
    remove = []
    if facts["users_to_remove_for_80"] > 0:
        remove.append(
            f"remove at least {users(facts['users_to_remove_for_80'])} to be under 80% of "
            f"the tier ({(4 * tier - 1) // 5} or fewer)"
        )
    if facts["users_to_remove_for_limit"] > 0:
        remove.append(
            f"remove at least {users(facts['users_to_remove_for_limit'])} to be within the "
            f"tier ({tier} or fewer)"
        )
    least_active = []
    for user_id, mail, name, seen_on, days, only_invited in facts["least_active"]:
        who = f"{one_line(name)} <{mail}>" if name and mail else one_line(mail or name or user_id)
        seen = "never seen" if seen_on is None else f"last seen {long_date(seen_on)} ({days} days)"
        least_active.append(f"{who}: {seen}{', invited, not yet accepted' if only_invited else ''}")
    return {
        "headline": headline,
        "plan": (
            f"Plan {one_line(plan_id)}"
            + (f" ({one_line(facts['product_key'])})" if facts["product_key"] else "")
            + f" of org {one_line(facts['org_id'])}."
        ),
        "month_ends": [(f"{m:%b %Y}", str(n)) for m, n in facts["month_ends"]],
        "actions": ["Upgrade the plan to a higher user tier, or", "lower the user count:"],
        "remove": remove,
        "least_active": least_active,
        # the users export refuses Guard and Marketplace app plans: point to what works there
        "export": (
            (
                "The inactive users, most inactive first (the users export does not cover "
                f"{facts['plan_type']} plans):",
                f"usercounts inactive --plan {shlex.quote(plan_id)}",
            )
            if facts.get("plan_type") in REFUSED_PLAN_TYPES
            else (
                "The full list of users with their last-seen dates:",
                f"usercounts export --plan {shlex.quote(plan_id)}",
            )
        ),
        "why": f"You receive this because you are an admin of org {one_line(facts['org_id'])}.",
        "opt_out": (
            f"usercounts notify-at-80 off --plan {shlex.quote(plan_id)}"
            if facts["kind"] == "tier_80"
            else None
        ),
    }


def render_text(content: dict[str, Any]) -> str:
    """The plain text part."""
    lines = [content["headline"], content["plan"], ""]
    if content["month_ends"]:
        lines.append("Users at the end of the last months:")
        lines += [f"  {month}: {n}" for month, n in content["month_ends"]]
        lines.append("")
    lines += ["What you can do:", *[f"  - {line}" for line in content["actions"]]]
    lines += [f"      {line}" for line in content["remove"]]
    if content["least_active"]:
        lines += ["", "The least active users (by last seen):"]
        lines += [f"  - {user}" for user in content["least_active"]]
    what, command = content["export"]
    lines += ["", what, f"  {command}"]
    lines += ["", content["why"]]
    if content["opt_out"]:
        lines.append(f"To stop the 80% notices for this plan: {content['opt_out']}")
    return "\n".join(lines) + "\n"


def render_html(content: dict[str, Any]) -> str:
    """The HTML part; every value from the data is escaped."""
    e = html.escape
    parts = [f"<p><strong>{e(content['headline'])}</strong><br>{e(content['plan'])}</p>"]
    if content["month_ends"]:
        rows = "".join(
            f'<tr><td>{e(month)}</td><td align="right">{e(n)}</td></tr>'
            for month, n in content["month_ends"]
        )
        parts.append(f"<p>Users at the end of the last months:</p>\n<table>{rows}</table>")
    remove = "".join(f"<li>{e(line)}</li>" for line in content["remove"])
    upgrade, lower = (e(a) for a in content["actions"])
    parts.append(
        f"<p>What you can do:</p>\n<ul><li>{upgrade}</li><li>{lower}<ul>{remove}</ul></li></ul>"
    )
    if content["least_active"]:
        rows = "".join(f"<li>{e(user)}</li>" for user in content["least_active"])
        parts.append(f"<p>The least active users (by last seen):</p>\n<ul>{rows}</ul>")
    what, command = content["export"]
    parts.append(f"<p>{e(what)}</p>\n<pre>{e(command)}</pre>")
    why = e(content["why"])
    if content["opt_out"]:
        why += f"<br>To stop the 80% notices for this plan: <code>{e(content['opt_out'])}</code>"
    parts.append(f"<p><small>{why}</small></p>")
    return "<!DOCTYPE html>\n<html><body>\n" + "\n".join(parts) + "\n</body></html>\n"


def render_message(facts: dict[str, Any], recipients: list[str], sender: str) -> EmailMessage:
    """The complete message: headers, a plain text part and an HTML part."""
    content = message_lines(facts)
    message = EmailMessage()
    message["Subject"] = subject_for(facts)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = facts["message_id"]
    message["Auto-Submitted"] = "auto-generated"
    message["X-Usercounts-Notification"] = f"{facts['kind']} {facts['as_of_date']:%Y-%m-%d}"
    message.set_content(render_text(content), cte="quoted-printable")
    message.add_alternative(render_html(content), subtype="html", cte="quoted-printable")
    return message


def record_intents(settings: Settings, intents: list[dict[str, Any]]) -> int:
    """Write the decided rows before anything is sent; a row already logged is kept as is."""
    if not intents:
        return 0
    columns = ", ".join(LOG_COLUMNS)
    # one insert from a frame: executemany costs ~3 ms a row, seconds for a first run
    decided = pd.DataFrame([[row[c] for c in LOG_COLUMNS] for row in intents], columns=LOG_COLUMNS)
    with connect_state(settings.state_path) as state:
        state.register("decided", decided)
        before = state.execute("select count(*) from notification_log").fetchone()[0]
        state.execute(
            f"insert or ignore into notification_log ({columns}) select {columns} from decided"  # noqa: S608
        )
        after = state.execute("select count(*) from notification_log").fetchone()[0]
    return after - before


def deliver_unsent(settings: Settings, rendered: dict[str, EmailMessage] | None = None) -> int:
    """Send every pending or failed row, oldest first; return how many were attempted.
    rendered: this run's messages by their logged text (parsing the text back costs ~4 ms).
    A row some of whose recipients have it already (the server refused the others) goes to
    the others only."""
    rendered = rendered or {}
    # not read-only: opening it writable adds columns a state file of an older version lacks
    with connect_state(settings.state_path) as state:
        unsent = state.execute(
            "select notification_id, message_eml, delivered_to from notification_log "
            "where status in (?, ?) order by decided_at, notification_id",
            list(UNSENT),
        ).fetchall()
    with DeliveryLog(settings.state_path) as log:
        for notification_id, message_eml, delivered_to in unsent:
            if not message_eml:  # only a hand-edited log has an unsent row without a message
                log.note(notification_id, FAILED, "no message stored for this row")
                continue
            message = rendered.get(message_eml) or email.message_from_string(
                message_eml, policy=email.policy.default
            )
            everyone = to_addresses(message)
            has_it = split_addresses(delivered_to)
            owed = [address for address in everyone if address not in has_it]
            try:
                if owed or not has_it:  # else everyone has it: only its record was missing
                    deliver(settings, message, message_eml, owed if has_it else None)
            except RecipientsRefused as exc:
                now_has = [address for address in owed if address not in exc.refused]
                log.note(notification_id, FAILED, failure(exc), has_it + now_has)
            except DeliveryError as exc:
                log.note(notification_id, FAILED, failure(exc))
            else:
                log.note(notification_id, SENT, None, everyone)
    return len(unsent)


def failure(exc: DeliveryError) -> str:
    return f"{'permanent' if exc.permanent else 'temporary'}: {exc}"


def split_addresses(text: str | None) -> list[str]:
    """The addresses of a `recipients` or `delivered_to` value."""
    return [address for address in (text or "").split(", ") if address]


class DeliveryLog:
    """Notes each delivery attempt in the log as soon as it is made (its own commit).

    Opening the state file costs ~20 ms, most of a first run's notify step when it was
    opened per delivery; so the file stays open across deliveries, but for at most
    HOLD_SECONDS and the delivery under way: `notify-at-80` and other commands wait up to
    30 s for it (state.LOCK_WAIT_SECONDS), an SMTP delivery gives up after 10 s by default.
    """

    HOLD_SECONDS = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = contextlib.ExitStack()
        self.state: duckdb.DuckDBPyConnection | None = None
        self.opened = 0.0

    def __enter__(self) -> DeliveryLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        self.held.close()
        self.state = None

    def note(
        self,
        notification_id: str,
        status: str,
        error: str | None,
        delivered_to: list[str] | None = None,
    ) -> None:
        """Record one attempt; delivered_to: who has the message now (None: as before)."""
        if self.state is None:
            self.state = self.held.enter_context(connect_state(self.path))
            self.opened = time.monotonic()
        self.state.execute(
            "update notification_log set status = ?, attempts = attempts + 1, last_error = ?, "
            "sent_at = ?, delivered_to = coalesce(?, delivered_to) where notification_id = ?",
            [
                status,
                error,
                utc_now() if status == SENT else None,
                ", ".join(delivered_to) if delivered_to else None,
                notification_id,
            ],
        )
        if time.monotonic() - self.opened > self.HOLD_SECONDS:
            self.release()


def read_report(settings: Settings, since: datetime) -> NotifyReport:
    """This run's decisions and deliveries, and what is still unsent, from the log."""
    report = NotifyReport()
    with connect_state(settings.state_path, read_only=True) as state:
        for status, n in state.execute(
            "select status, count(*) from notification_log where decided_at >= ? group by 1",
            [since],
        ).fetchall():
            report.decided[status] = n
        report.sent = state.execute(
            "select count(*) from notification_log where sent_at >= ?", [since]
        ).fetchone()[0]
        for org_id, plan_id, kind, as_of in state.execute(
            "select org_id, plan_id, kind, as_of_date from notification_log "
            "where status = ? and decided_at >= ? order by all",
            [UNDELIVERABLE, since],
        ).fetchall():
            report.warnings.append(
                f"org {org_id} has no admins: {kind} notification for plan {plan_id} "
                f"as of {as_of} recorded as undeliverable"
            )
        unsent = state.execute(
            "select plan_id, kind, as_of_date, attempts, last_error, left(notification_id, ?) "
            "from notification_log where status in (?, ?) order by all",
            [SHOWN_ID_CHARS, *UNSENT],
        ).fetchall()
    report.unsent = len(unsent)
    for plan_id, kind, as_of, attempts, error, shown_id in unsent:
        report.warnings.append(
            f"{kind} notification for plan {plan_id} as of {as_of} not delivered after "
            f"{attempts} attempt(s) ({error}); the next run retries it "
            f"(to give it up: usercounts notifications cancel {shown_id}"
            f"{settings.database_option()})"
        )
    return report


def refresh_notifications_mart(settings: Settings, as_of: date) -> None:
    """Make the working database's marts.notifications show the log as this run left it.

    Re-snapshots the log into raw and runs the notifications model's SQL as this run's dbt
    build compiled it: the same query, without a second dbt start (~5-8 s).
    """
    compiled = (
        dbt_home(settings.work_path) / "target/compiled/usercounts/models/marts/notifications.sql"
    )
    with workdb.connect(settings.work_path) as work:
        copy_state_into(work, settings.state_path)
        if compiled.exists():
            # the project's own compiled model: no value from the data is in this text
            select = compiled.read_text()
            rebuild = f"create or replace table marts.notifications as (\n{select}\n)"  # noqa: S608
            work.execute(rebuild)
            work.execute(f"checkpoint {workdb.MARTS_ALIAS}")
            return
    run_dbt("run", settings.work_path, as_of, "--select", "notifications")
