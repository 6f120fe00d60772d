"""The users export (data-contract section 5): one CSV row per user counted in a plan.

DuckDB writes the file with `COPY (...) TO`: the pivot (one `Last seen in <product> -
<instance>` column per instance of the plan) is a grouped SELECT, so a plan of a million
users streams out in seconds without passing through Python. Column names come from the
data (instance names) and are quoted as identifiers; every value from the data (plan and
instance ids) is a query parameter.

Delivery: files go to the exports folder (owner-only), are listed in its manifest with a
24-hour expiry, and the org's admins, and only they, get an email that the export is ready.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import duckdb

from usercounts.config import Settings
from usercounts.mail import DeliveryError, RecipientsRefused, deliver, one_line, to_addresses
from usercounts.manifest import (
    EXPORT_LIFETIME,
    TEMP_PREFIX,
    ensure_folder,
    file_identity,
    locked_entries,
    purge_expired,
    utc_now,
)
from usercounts.views import open_published

# Plans whose users are not exported, and why (the seed feature refuses them).
REFUSED_PLAN_TYPES = {
    "guard_standard": "Guard Standard plans are billed per organization member, not per "
    "product user",
    "marketplace_app": "marketplace app plans follow the user count of the product they extend",
}
DATE_FORMAT = "%d %b %Y"  # 28 Apr 2024, as Atlassian's own users export
NEVER_SEEN = "Never accessed"
# Cells a spreadsheet would run as a formula start with one of these; such text values get
# a leading apostrophe (OWASP's advice for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportRefused(RuntimeError):
    """The plan does not exist or its users cannot be exported; the message says which."""


@dataclass(frozen=True)
class Plan:
    """The plan being exported, as published."""

    plan_id: str
    org_id: str
    plan_name: str
    plan_type: str
    as_of_date: date
    user_count: int


@dataclass
class ExportResult:
    """One export written: where, how many rows, until when, and who was told."""

    plan: Plan
    path: Path
    rows: int
    created_at: datetime
    expires_at: datetime
    notified: list[str] = field(default_factory=list)


def load_plan(con: duckdb.DuckDBPyConnection, plan_id: str) -> Plan:
    """The published plan, or ExportRefused when there is none by that id."""
    row = con.execute(
        "select plan_id, org_id, plan_name, plan_type, cast(as_of as date) - 1, user_count "
        "from marts.plan_user_counts_current where plan_id = ?",
        [plan_id],
    ).fetchone()
    if row is None:
        raise ExportRefused(f"no plan {plan_id!r} in the published warehouse")
    return Plan(*row)


def check_exportable(plan: Plan) -> None:
    """Refuse guard_standard and marketplace_app plans with the reason."""
    reason = REFUSED_PLAN_TYPES.get(plan.plan_type)
    if reason:
        raise ExportRefused(
            f"plan {plan.plan_id} is a {plan.plan_type} plan: users exports cover product "
            f"plans only ({reason})"
        )


def instance_columns(con: duckdb.DuckDBPyConnection, plan_id: str) -> list[tuple[str, str]]:
    """(instance_id, column name) per instance of the plan, ordered by instance name.

    Names are `Last seen in <product> - <instance>`; two instances whose names would clash
    (DuckDB compares column names case-insensitively) get the instance id appended.
    """
    rows = con.execute(
        "select instance_id, product_name, instance_name from marts.plan_instances "
        "where plan_id = ? order by instance_name, instance_id",
        [plan_id],
    ).fetchall()
    columns: list[tuple[str, str]] = []
    taken: set[str] = set()
    for instance_id, product_name, instance_name in rows:
        name = _printable(f"Last seen in {product_name} - {instance_name}")
        if name.lower() in taken:
            name = _printable(f"{name} ({instance_id})")
        suffix = 2
        base = name
        while name.lower() in taken:
            name, suffix = f"{base} #{suffix}", suffix + 1
        taken.add(name.lower())
        columns.append((instance_id, name))
    return columns


def _printable(text: str) -> str:
    """Control characters (line breaks) in a header become spaces."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()


def quote_identifier(name: str) -> str:
    """A column name as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _formula_safe(expr: str) -> str:
    starts = ", ".join(f"'{c}'" if c.isprintable() else f"chr({ord(c)})" for c in FORMULA_STARTS)
    return f"case when left({expr}, 1) in ({starts}) then '''' || {expr} else {expr} end"


def export_query(columns: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """The export SELECT and its parameters: $1 the plan id, then one instance id per column."""
    params: list[str] = []
    pivots, selected = [], []
    for n, (instance_id, name) in enumerate(columns, start=1):
        params.append(instance_id)
        pivots.append(
            f"max(case when instance_id = ${n + 1} then coalesce("
            f"strftime(last_seen_at, '{DATE_FORMAT}'), '{NEVER_SEEN}') end) as instance_{n}"
        )
        selected.append(f"seen.instance_{n} as {quote_identifier(name)}")
    # all identifiers and literals below are ours; data arrives only as $n parameters
    sql = f"""
        with
        users as (
            select * from marts.counted_users where plan_id = $1
        ),
        seen as (
            select
                {", ".join(["user_id", *pivots])}
            from marts.user_last_seen
            where plan_id = $1
            group by user_id
        )
        select
            users.user_id as "User id",
            {_formula_safe("users.display_name")} as "User name",
            {_formula_safe("users.email")} as "email",
            'Active' as "User status",
            strftime(users.added_to_org_at, '{DATE_FORMAT}') as "Added to org",
            case when users.is_org_admin then 'Admin' else 'Member' end as "Org role",
            {"".join(f"{s}, " for s in selected)}
            users.access_status,
            users.is_billable,
            users.days_since_last_seen
        from users
        left join seen on users.user_id = seen.user_id
        order by lower(users.display_name) nulls last, users.user_id
    """  # noqa: S608
    return sql, params


def write_csv(con: duckdb.DuckDBPyConnection, plan_id: str, path: Path) -> int:
    """Write the plan's export to path (mode 0600, replaced atomically); return the rows.

    DuckDB creates files with the umask's mode, so it writes into a private temporary
    folder (mode 0700) beside the target, and the file is renamed into place once it is
    owner-only.
    """
    sql, params = export_query(instance_columns(con, plan_id))
    con.execute("set enable_progress_bar = false")  # the command prints its own one line
    work = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=path.parent))
    try:
        tmp = work / "export.csv"
        params = [plan_id, *params, str(tmp)]
        rows = con.execute(
            f"copy ({sql}) to ${len(params)} (format csv, header true)",  # noqa: S608
            params,
        ).fetchone()[0]
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return int(rows)


def default_path(settings: Settings, plan: Plan, created_at: datetime) -> Path:
    """users-<plan>-<as-of>-<created>-<random>.csv in the exports folder."""
    safe_plan = re.sub(r"[^A-Za-z0-9._-]+", "_", plan.plan_id)[:64]
    stamp = created_at.strftime("%Y%m%dT%H%M%SZ")
    name = f"users-{safe_plan}-{plan.as_of_date.isoformat()}-{stamp}-{secrets.token_hex(3)}.csv"
    return settings.exports_path.resolve() / name


def export_plans(
    settings: Settings,
    plan_ids: list[str] | None = None,
    *,
    org_id: str | None = None,
    out: Path | None = None,
    now: datetime | None = None,
) -> tuple[list[ExportResult], list[str]]:
    """Export the given plans, or every exportable plan of org_id; then email the admins.

    Returns the exports and warnings (plans skipped, mail not delivered). Expired exports
    are purged first.
    """
    now = now or utc_now()
    warnings = purge_expired(settings.exports_path, now).warnings
    with open_published(settings.published_path) as con:
        if org_id is not None:
            plans = _org_plans(con, org_id, warnings)
        else:
            plans = [load_plan(con, plan_id) for plan_id in plan_ids or []]
            for plan in plans:
                check_exportable(plan)
        results = [_export_one(con, settings, plan, out, now) for plan in plans]
        for org in sorted({r.plan.org_id for r in results}):
            _notify_admins(con, settings, [r for r in results if r.plan.org_id == org], warnings)
    return results, warnings


def _org_plans(con: duckdb.DuckDBPyConnection, org_id: str, warnings: list[str]) -> list[Plan]:
    rows = con.execute(
        "select plan_id from marts.plan_user_counts_current where org_id = ? order by plan_id",
        [org_id],
    ).fetchall()
    if not rows:
        raise ExportRefused(f"no org {org_id!r} in the published warehouse")
    plans = []
    for (plan_id,) in rows:
        plan = load_plan(con, plan_id)
        if plan.plan_type in REFUSED_PLAN_TYPES:
            warnings.append(f"skipped plan {plan_id}: {plan.plan_type} plans are not exported")
        else:
            plans.append(plan)
    if not plans:
        raise ExportRefused(
            f"org {org_id} has only guard_standard and marketplace_app plans: nothing to export"
        )
    return plans


def _export_one(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    plan: Plan,
    out: Path | None,
    now: datetime,
) -> ExportResult:
    """Record the export in the manifest, write it, then record its rows and identity.

    The entry is made first, so even a process killed mid-write leaves an entry that
    expires; a write that fails removes its entry.
    """
    folder = settings.exports_path
    ensure_folder(folder)
    if out is not None:
        path = Path(out).expanduser().resolve()
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder {path.parent} does not exist (--out {out})")
    else:
        path = default_path(settings, plan, now)
    result = ExportResult(plan, path, 0, now, now + EXPORT_LIFETIME)
    entry = {
        "path": str(path),
        "plan_id": plan.plan_id,
        "org_id": plan.org_id,
        "as_of_date": plan.as_of_date.isoformat(),
        "created_at": result.created_at.isoformat(),
        "expires_at": result.expires_at.isoformat(),
        "rows": None,
    }
    with locked_entries(folder) as entries:
        entries[:] = [e for e in entries if e["path"] != str(path)]
        entries.append(entry)
    try:
        result.rows = write_csv(con, plan.plan_id, path)
    except BaseException:
        with locked_entries(folder) as entries:
            entries[:] = [e for e in entries if e["path"] != str(path)]
        raise
    with locked_entries(folder) as entries:
        for listed in entries:
            if listed["path"] == str(path):
                listed.update(rows=result.rows, **file_identity(path))
    return result


def _notify_admins(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    results: list[ExportResult],
    warnings: list[str],
) -> None:
    """One email to the org's admins, and nobody else, listing the exports made."""
    org_id = results[0].plan.org_id
    admins = con.execute(
        "select email, display_name from marts.org_admins where org_id = ? order by lower(email)",
        [org_id],
    ).fetchall()
    message = ready_message(org_id, results, admins, warnings)
    if message is None:
        return
    told = to_addresses(message)
    try:
        deliver(settings, message)
    except DeliveryError as exc:
        # Refused at RCPT TO: the others have it. Any other failure (the server down, a
        # login refused): nobody has it.
        if isinstance(exc, RecipientsRefused):
            told = [address for address in told if address not in exc.refused]
        else:
            told = []
        if not told:
            warnings.append(f"export written, but the email to org {org_id}'s admins failed: {exc}")
            return
        warnings.append(f"export written, but not emailed to every admin of org {org_id}: {exc}")
    for result in results:
        result.notified = list(told)


def ready_message(
    org_id: str,
    results: list[ExportResult],
    admins: list[tuple[str, str | None]],
    warnings: list[str],
) -> EmailMessage | None:
    """The "export is ready" message to the admins (email, name); None when there are none.

    Addresses are parsed (one address each, or the admin is skipped with a warning) and
    text from the data loses its line breaks, so nothing from the data can add a header or
    a recipient.
    """
    recipients: list[Address] = []
    for email, display_name in admins:
        try:
            recipients.append(Address(display_name=one_line(display_name or ""), addr_spec=email))
        except (ValueError, IndexError):
            warnings.append(f"org {org_id}: admin address {email!r} is not valid: not emailed")
    if not recipients:
        warnings.append(f"org {org_id} has no admins: nobody was told the export is ready")
        return None
    message = EmailMessage()
    message["To"] = recipients
    message["Subject"] = one_line(
        f"usercounts: users export ready for {results[0].plan.plan_name}"
        if len(results) == 1
        else f"usercounts: {len(results)} users exports ready for org {org_id}"
    )
    message.set_content(export_message_body(results))
    return message


def export_message_body(results: list[ExportResult]) -> str:
    """The email text: which plans, how many users, where the files are, until when."""
    lines = ["A users export is ready.", ""]
    for r in results:
        lines += [
            f"Plan: {one_line(r.plan.plan_name)} ({r.plan.plan_id}), org {r.plan.org_id}",
            f"Users counted as of {r.plan.as_of_date.isoformat()}: {r.rows}",
            f"File: {r.path}",
            f"Available until: {r.expires_at:%Y-%m-%d %H:%M} UTC (then it is deleted)",
            "",
        ]
    lines.append(
        "The file lists personal data and is readable only by the account that runs "
        "usercounts. Only the organization's admins receive this message."
    )
    return "\n".join(lines) + "\n"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def missing_mart(exc: duckdb.CatalogException) -> str:
    """One line for a published warehouse built before the marts a command reads existed."""
    first = str(exc).splitlines()[0]
    return (
        f"the published warehouse lacks a table this command reads ({first}): run `usercounts run`"
    )


def run_export(
    settings: Settings,
    plan_id: str | None,
    org_id: str | None = None,
    out: Path | None = None,
) -> int:
    """The `usercounts export` command: write, report, exit 0; refusals exit 1."""
    try:
        results, warnings = export_plans(
            settings, [plan_id] if plan_id else None, org_id=org_id, out=out
        )
    except duckdb.CatalogException as exc:
        print(f"usercounts: error: {missing_mart(exc)}", file=sys.stderr)
        return 1
    except ExportRefused as exc:
        print(f"usercounts: error: {exc}", file=sys.stderr)
        return 1
    for r in results:
        told = f"emailed {len(r.notified)} admin(s) of org {r.plan.org_id}" if r.notified else ""
        print(
            f"usercounts: wrote {plural(r.rows, 'user')} of plan {r.plan.plan_id} to {r.path} "
            f"(expires {r.expires_at:%Y-%m-%d %H:%M} UTC){'; ' + told if told else ''}"
        )
    for warning in warnings:
        print(f"usercounts: warning: {warning}", file=sys.stderr)
    return 0
