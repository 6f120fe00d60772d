"""The users export, its delivery (file mode, manifest, expiry, admins' email) and the
inactive-user candidates, against one real warehouse built from hand-written landing files.

As of D = 2024-06-30, so the as-of instant A is 2024-07-01 00:00 UTC.

Org O1 (admins Ada Admin, Ben Boss):
  P1 "Main Jira" (jira-software, tier 10) on instances alpha, beta and `gamma "eu"`;
  P2 "Wiki" (confluence), PG (guard_standard), PM (marketplace_app).
Org O2 (admin Olga Other): B7, B8, B10, B12, tier 10, with 7, 8, 10 and 12 users, product
  key `custom-tool` (not in the product catalogue).
Org O3: only a guard_standard plan, G3.
The inactive candidates are built for N = 89 days (USERCOUNTS_INACTIVE_DAYS=89).
"""

from __future__ import annotations

import csv
import email
import json
import os
import stat
from datetime import UTC, date, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Landing,
    Recorder,
    build_warehouse,
    free_port,
    query,
    run_cli,
    singular_test_rows,
    smtp_server,
)

from usercounts.config import Settings
from usercounts.export import ExportRefused, ExportResult, Plan, export_plans, ready_message
from usercounts.inactive import ON_THE_FLY, built_inactive_days, candidates
from usercounts.manifest import MANIFEST_NAME, purge_expired, read_entries
from usercounts.views import open_published

AS_OF = date(2024, 6, 30)
FIXTURES = Path(__file__).parent / "fixtures"
O1_ADMINS = {"ada.admin@o1.example", "ben.boss@o1.example"}


def grant(event_id: str, at: str, instance: str, user: str, action: str = "grant") -> dict:
    return {
        "event_id": event_id,
        "occurred_at": at,
        "instance_id": instance,
        "user_id": user,
        "action": action,
    }


def seen(instance: str, user: str, at: str) -> dict:
    return {"instance_id": instance, "user_id": user, "last_seen_at": at}


def write_scenarios(landing: Landing) -> None:
    """Every scenario of this module in one landing folder (one dbt build)."""
    landing.write(
        "plans",
        [
            landing.plan("P1", 10, plan_name="Main Jira"),
            landing.plan("P2", 50, plan_name="Wiki", product_key="confluence"),
            landing.plan(
                "PG", 100, plan_name="Guard", product_key="guard", plan_type="guard_standard"
            ),
            landing.plan(
                "PM", 10, plan_name="Tempo", product_key="tempo", plan_type="marketplace_app"
            ),
            *[
                landing.plan(f"B{n}", 10, org_id="O2", product_key="custom-tool")
                for n in (7, 8, 10, 12)
            ],
            landing.plan("G3", 10, org_id="O3", product_key="guard", plan_type="guard_standard"),
        ],
    )
    landing.write(
        "instances",
        [
            {"instance_id": "I1", "plan_id": "P1", "instance_name": "alpha"},
            {"instance_id": "I2", "plan_id": "P1", "instance_name": "beta"},
            {"instance_id": "I3", "plan_id": "P1", "instance_name": 'gamma "eu"'},
            {"instance_id": "W1", "plan_id": "P2", "instance_name": "wiki"},
            # its id sorts before W1, its name after "wiki": columns follow the name
            {"instance_id": "W0", "plan_id": "P2", "instance_name": "wiki-archive"},
            {"instance_id": "G1", "plan_id": "PG", "instance_name": "guard"},
            {"instance_id": "M1", "plan_id": "PM", "instance_name": "tempo"},
            *[
                {"instance_id": f"B{n}-1", "plan_id": f"B{n}", "instance_name": f"b{n}"}
                for n in (7, 8, 10, 12)
            ],
        ],
    )
    users = [
        ("u1", "alice@o1.example", "Alice Archer", ""),
        ("u2", "bob@o1.example", "Bob Baker", ""),
        ("u3", "carol@o1.example", "Carol Cruz", ""),
        ("u4", "ADA.ADMIN@o1.example", "Dan Admin", ""),  # an admin's address: Org role Admin
        ("u5", "eve@o1.example", "Eve Ex", ""),
        ("u6", "jd@o1.example", 'Doe, "JD" John', "false"),
        ("u8", "mallory@o1.example", "=2+3", ""),
        # u7 is in no users file: no name, no email, billable
    ]
    landing.write(
        "users",
        [
            {
                "user_id": u,
                "email": e,
                "display_name": n,
                "account_type": "atlassian",
                "is_billable": b,
            }
            for u, e, n, b in users
        ],
    )
    landing.write(
        "org_admins",
        [
            # the same address in another case: one admin, the later row's spelling
            {"org_id": "O1", "email": "Ada.Admin@O1.example", "display_name": "Ada A."},
            {"org_id": "O1", "email": "ada.admin@o1.example", "display_name": "Ada Admin"},
            {"org_id": "O1", "email": "ben.boss@o1.example", "display_name": "Ben Boss"},
            {"org_id": "O2", "email": "olga@o2.example", "display_name": "Olga Other"},
        ],
    )
    events = [
        # u1: alpha and beta, not gamma; in the org since the Wiki grant of 2023-01-15
        grant("e1", "2024-02-10T09:00:00Z", "I1", "u1"),
        grant("e2", "2024-03-01T12:00:00Z", "I2", "u1"),
        grant("e3", "2023-01-15T08:00:00Z", "W1", "u1"),
        # u2: all three, never seen
        *[
            grant(f"e4{i}", "2024-05-01T10:00:00Z", inst, "u2")
            for i, inst in enumerate(["I1", "I2", "I3"])
        ],
        # u3: only invited, on gamma
        grant("e5", "2024-06-20T10:00:00Z", "I3", "u3", "invite"),
        # u4: invited then active on alpha
        grant("e6", "2024-01-05T10:00:00Z", "I1", "u4", "invite"),
        grant("e7", "2024-01-06T10:00:00Z", "I1", "u4"),
        # u5: granted, then revoked: not counted
        grant("e8", "2024-02-01T00:00:00Z", "I2", "u5"),
        grant("e9", "2024-03-01T00:00:00Z", "I2", "u5", "revoke"),
        grant("e10", "2024-04-10T00:00:00Z", "I2", "u6"),
        grant("e11", "2024-06-30T23:59:59Z", "I1", "u7"),
        grant("e12", "2024-06-01T00:00:00Z", "I1", "u8"),
        # at A itself: not counted
        grant("e13", "2024-07-01T00:00:00Z", "I1", "u9"),
        grant("e14", "2024-01-01T00:00:00Z", "G1", "u1"),
        grant("e15", "2024-01-01T00:00:00Z", "M1", "u1"),
    ]
    last_seen = [
        seen("I1", "u1", "2024-04-28T10:00:00Z"),
        seen("I1", "u1", "2024-03-01T10:00:00Z"),
        seen("I2", "u1", "2024-06-01T08:00:00Z"),
        seen("I3", "u1", "2024-06-15T08:00:00Z"),  # no access to gamma: column stays empty
        seen("I1", "u4", "2024-06-30T23:59:59Z"),
        seen("I1", "u4", "2024-07-01T00:00:00Z"),  # at A: not seen by this run
        seen("I2", "u6", "2024-05-05T05:05:00Z"),
        seen("I1", "u8", "2024-06-02T00:00:00Z"),
        seen("W1", "u1", "2024-06-29T12:00:00Z"),
    ]
    # boundary plans: 7, 8, 10, 12 users on a tier of 10
    for n in (7, 8, 10, 12):
        for i in range(1, n + 1):
            events.append(grant(f"b{n}-{i}", "2023-01-01T00:00:00Z", f"B{n}-1", f"b{n}-{i:02d}"))
    # B12's activity, for the inactive candidates (N = 90: inactive since 2024-04-01 or
    # before; N = 89: since 2024-04-02 or before)
    b12_seen = {
        "b12-01": "2024-06-29T10:00:00Z",  # 1 day
        "b12-02": "2024-04-01T08:00:00Z",  # 90 days: candidate
        "b12-03": "2024-04-02T08:00:00Z",  # 89 days
        "b12-07": "2023-06-01T00:00:00Z",
        "b12-08": "2024-01-15T00:00:00Z",
        "b12-09": "2022-06-01T00:00:00Z",  # seen before its current access began
        "b12-10": "2024-06-20T00:00:00Z",
        "b12-11": "2024-06-20T00:00:00Z",
        "b12-12": "2024-06-20T00:00:00Z",
    }
    last_seen += [seen("B12-1", user, at) for user, at in b12_seen.items()]
    # b12-04 and b12-05 get access later (never seen); b12-09 lost it and got it back
    events = [e for e in events if e["user_id"] not in ("b12-04", "b12-05", "b12-09")]
    events += [
        grant("x1", "2024-04-01T09:00:00Z", "B12-1", "b12-04"),  # 90 days: candidate
        grant("x2", "2024-04-02T09:00:00Z", "B12-1", "b12-05"),  # 89 days
        grant("x3", "2022-01-01T00:00:00Z", "B12-1", "b12-09"),
        grant("x4", "2022-12-01T00:00:00Z", "B12-1", "b12-09", "revoke"),
        grant("x5", "2024-05-15T00:00:00Z", "B12-1", "b12-09"),
    ]
    landing.write("access_events", events)
    landing.write("last_seen", last_seen)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One real build (load, dbt, publish) of every scenario of this module."""
    root = tmp_path_factory.mktemp("export")
    landing = Landing(root / "landing")
    write_scenarios(landing)
    # built for N = 89 days (not the default 90): proves the setting reaches dbt, and lets
    # `usercounts inactive` be tested both from the mart and computed on the fly
    return build_warehouse(landing.root, root / "home", AS_OF, inactive_days=89)


@pytest.fixture
def settings(warehouse: Settings, tmp_path: Path) -> Settings:
    """The shared warehouse, with this test's own exports folder and outbox."""
    return Settings(
        database=warehouse.published_path,
        exports_dir=tmp_path / "exports",
        outbox=tmp_path / "outbox",
    )


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def outbox_messages(settings: Settings) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in sorted(settings.outbox_path.glob("*.eml"))
    ]


def recipients(message: email.message.EmailMessage) -> set[str]:
    return {a.addr_spec.lower() for a in message["To"].addresses}


# --- the export file -------------------------------------------------------------------


def test_export_matches_the_hand_written_file(settings: Settings) -> None:
    """Header, column order, value formats, quoting: byte for byte the expected CSV."""
    [result], warnings = export_plans(settings, ["P1"])
    assert warnings == []
    expected = (FIXTURES / "export_P1.csv").read_text(encoding="utf-8")
    assert result.path.read_text(encoding="utf-8") == expected
    assert result.rows == 7
    assert (
        result.rows
        == query(
            settings.published_path,
            "select user_count from marts.plan_user_counts_current where plan_id = 'P1'",
        )[0][0]
    )


def test_export_cells_per_scenario(settings: Settings) -> None:
    """The same file read as a table: each scenario's cells by column name."""
    [result], _ = export_plans(settings, ["P1"])
    header, *rows = read_csv(result.path)
    by_user = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    alpha, beta, gamma = (
        "Last seen in Jira - alpha",
        "Last seen in Jira - beta",
        'Last seen in Jira - gamma "eu"',
    )
    assert header[:6] == [
        "User id",
        "User name",
        "email",
        "User status",
        "Added to org",
        "Org role",
    ]
    assert header[6:9] == [alpha, beta, gamma]
    assert header[9:] == ["access_status", "is_billable", "days_since_last_seen"]
    # on two of three instances: the third is empty, though u1 was seen there
    assert (by_user["u1"][alpha], by_user["u1"][beta], by_user["u1"][gamma]) == (
        "28 Apr 2024",
        "01 Jun 2024",
        "",
    )
    assert by_user["u1"]["Added to org"] == "15 Jan 2023"  # the Wiki grant, same org
    assert by_user["u1"]["days_since_last_seen"] == "29"
    # never seen anywhere
    assert [by_user["u2"][c] for c in (alpha, beta, gamma)] == ["Never accessed"] * 3
    assert by_user["u2"]["days_since_last_seen"] == ""
    # invited only: counted, Active for Atlassian, invited in our column
    assert by_user["u3"]["User status"] == "Active"
    assert by_user["u3"]["access_status"] == "invited"
    assert (by_user["u3"][alpha], by_user["u3"][gamma]) == ("", "Never accessed")
    assert by_user["u4"]["Org role"] == "Admin"
    assert by_user["u4"][alpha] == "30 Jun 2024"  # the sighting at A is not seen yet
    assert by_user["u4"]["access_status"] == "active"
    assert by_user["u6"]["is_billable"] == "false"
    assert by_user["u7"]["User name"] == by_user["u7"]["email"] == ""
    assert by_user["u8"]["User name"] == "'=2+3"  # no formula for spreadsheets
    assert set(by_user) == {"u1", "u2", "u3", "u4", "u6", "u7", "u8"}  # not u5, not u9


def test_instance_columns_follow_the_instance_names(settings: Settings) -> None:
    [result], _ = export_plans(settings, ["P2"])
    header, *rows = read_csv(result.path)
    assert header[6:8] == [
        "Last seen in Confluence - wiki",
        "Last seen in Confluence - wiki-archive",
    ]
    assert [row[6:8] for row in rows] == [["29 Jun 2024", ""]]  # u1, on W1 only


def test_unknown_product_key_shows_as_itself(settings: Settings) -> None:
    [result], _ = export_plans(settings, ["B12"])
    header, *rows = read_csv(result.path)
    assert header[6] == "Last seen in custom-tool - b12"
    assert len(rows) == 12


@pytest.mark.parametrize(
    ("plan_id", "plan_type"), [("PG", "guard_standard"), ("PM", "marketplace_app")]
)
def test_refused_plan_types(settings: Settings, plan_id: str, plan_type: str) -> None:
    with pytest.raises(ExportRefused, match=f"plan {plan_id} is a {plan_type} plan"):
        export_plans(settings, [plan_id])
    assert not settings.exports_path.exists() or not list(settings.exports_path.glob("*.csv"))
    assert not settings.outbox_path.exists()


def test_cli_refusals_exit_non_zero_with_one_line(settings: Settings, tmp_path: Path) -> None:
    env = {
        "USERCOUNTS_EXPORTS_DIR": str(settings.exports_path),
        "USERCOUNTS_OUTBOX": str(settings.outbox_path),
    }
    database = str(settings.published_path)
    for plan_id, expected in (
        ("PG", "plan PG is a guard_standard plan"),
        ("PM", "plan PM is a marketplace_app plan"),
        ("NOPE", "no plan 'NOPE'"),
    ):
        done = run_cli("export", "--plan", plan_id, "--database", database, env=env)
        assert done.returncode == 1
        assert done.stdout == ""
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
    # --all-plans goes with --org (one file per plan, so no --out), and --plan without them
    out = tmp_path / "mine.csv"
    for args in (
        ("--all-plans",),
        ("--all-plans", "--org", "O1", "--out", str(out)),
        ("--plan", "P1", "--org", "O1"),
    ):
        done = run_cli("export", *args, "--database", database, env=env)
        assert done.returncode == 2, args
        assert done.stderr == (
            "usercounts: error: use --plan PLAN_ID [--out FILE], or --all-plans --org ORG_ID\n"
        )
    assert not out.exists()
    done = run_cli("export", "--plan", "P1", "--database", database, "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert f"wrote 7 users of plan P1 to {out}" in done.stdout
    assert out.read_text(encoding="utf-8") == (FIXTURES / "export_P1.csv").read_text("utf-8")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


# --- delivery --------------------------------------------------------------------------


def test_file_mode_and_manifest(settings: Settings) -> None:
    now = datetime(2024, 7, 1, 6, 0, tzinfo=UTC)
    [result], _ = export_plans(settings, ["P1"], now=now)
    assert result.path.parent == settings.exports_path.resolve()
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.exports_path.stat().st_mode) == 0o700
    manifest = settings.exports_path / MANIFEST_NAME
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    [entry] = json.loads(manifest.read_text())["exports"]
    assert entry["path"] == str(result.path)
    assert entry["plan_id"] == "P1" and entry["org_id"] == "O1"
    assert entry["rows"] == 7
    assert entry["as_of_date"] == "2024-06-30"
    assert datetime.fromisoformat(entry["created_at"]) == now
    assert datetime.fromisoformat(entry["expires_at"]) == now + timedelta(hours=24)
    assert entry["size_bytes"] == result.path.stat().st_size
    # no temporary folder left behind
    assert sorted(p.name for p in settings.exports_path.iterdir()) == sorted(
        [".manifest.lock", MANIFEST_NAME, result.path.name]
    )


def test_email_goes_to_the_org_admins_only(settings: Settings) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    [result], _ = export_plans(settings, ["P1"])
    [message] = outbox_messages(settings)
    # RFC 5322's required headers, as a notification's
    assert message["From"] and message["Message-ID"]
    assert before <= message["Date"].datetime <= datetime.now(UTC)
    assert recipients(message) == O1_ADMINS
    assert query(
        settings.published_path, "select email from marts.org_admins where org_id = 'O1' order by 1"
    ) == [(a,) for a in sorted(O1_ADMINS)]  # fmt: skip
    assert message["Cc"] is None and message["Bcc"] is None
    assert message["Subject"] == "usercounts: users export ready for Main Jira"
    body = message.get_content()
    assert str(result.path) in body and "Users counted as of 2024-06-30: 7" in body
    assert result.notified == sorted(O1_ADMINS)


def test_data_cannot_add_headers_or_recipients() -> None:
    """Line breaks in a plan or admin name and a list in an address stay out of headers."""
    plan = Plan("P", "O", "Evil\r\nBcc: thief@evil.example", "product", AS_OF, 1)
    result = ExportResult(plan, Path("/x.csv"), 1, datetime.now(UTC), datetime.now(UTC))
    warnings: list[str] = []
    message = ready_message(
        "O",
        [result],
        [
            ("ok@o.example", "Ok\r\nCc: thief@evil.example"),
            ("a@o.example, thief@evil.example", "Two"),
        ],
        warnings,
    )
    assert message is not None
    parsed = email.message_from_bytes(message.as_bytes(), policy=policy.default)
    assert parsed["Bcc"] is None and parsed["Cc"] is None
    assert recipients(parsed) == {"ok@o.example"}
    assert parsed["Subject"] == "usercounts: users export ready for Evil Bcc: thief@evil.example"
    assert warnings == [
        "org O: admin address 'a@o.example, thief@evil.example' is not valid: not emailed"
    ]
    assert ready_message("O", [result], [], warnings) is None
    assert warnings[-1] == "org O has no admins: nobody was told the export is ready"


def smtp_settings(warehouse: Settings, tmp_path: Path, controller: Any) -> Settings:
    """The shared warehouse, this test's exports folder, mail through `controller`."""
    return Settings(
        database=warehouse.published_path,
        exports_dir=tmp_path / "exports",
        smtp_host="127.0.0.1",
        smtp_port=controller.port,
    )


def test_email_by_real_smtp_server(warehouse: Settings, tmp_path: Path) -> None:
    """The same message through a real SMTP server on 127.0.0.1: envelope = the admins."""
    with smtp_server(Recorder()) as controller:
        export_plans(smtp_settings(warehouse, tmp_path, controller), ["B10"])
    [received] = controller.handler.take()
    assert received.rcpt_tos == ["olga@o2.example"]


def test_an_admin_refused_by_the_server_is_a_warning(warehouse: Settings, tmp_path: Path) -> None:
    """The server takes the email for one admin and refuses the other (smtplib returns
    instead of raising): the command says so and counts only the admin who has it."""
    handler = Recorder(refuse={"ben.boss@o1.example": "450 4.2.1 mailbox busy"})
    with smtp_server(handler) as controller:
        settings = smtp_settings(warehouse, tmp_path, controller)
        [result], warnings = export_plans(settings, ["P1"])
        [received] = handler.take()
        assert received.rcpt_tos == ["ada.admin@o1.example"]
        assert result.notified == ["ada.admin@o1.example"]
        assert warnings == [
            "export written, but not emailed to every admin of org O1: "
            "SMTP refused ben.boss@o1.example (450 '4.2.1 mailbox busy')"
        ]

        # both refused: nobody has it, and the warning says the email failed
        handler.refuse["ada.admin@o1.example"] = "550 5.1.1 no such user"
        [result], warnings = export_plans(settings, ["P1"])
        assert handler.take() == [] and result.notified == []
        assert warnings == [
            "export written, but the email to org O1's admins failed: SMTP refused "
            "ada.admin@o1.example (550 '5.1.1 no such user'), "
            "ben.boss@o1.example (450 '4.2.1 mailbox busy')"
        ]


def test_an_email_the_server_never_took_reaches_no_admin(
    warehouse: Settings, tmp_path: Path
) -> None:
    """Nothing listening on the port: the warning says the email failed, and the command
    does not say it emailed anyone."""
    settings = Settings(
        database=warehouse.published_path,
        exports_dir=tmp_path / "exports",
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        smtp_timeout_seconds=2,
    )
    [result], warnings = export_plans(settings, ["P1"])
    assert result.notified == []
    assert len(warnings) == 1
    assert warnings[0].startswith("export written, but the email to org O1's admins failed: ")


def test_all_plans_of_an_org(settings: Settings) -> None:
    results, warnings = export_plans(settings, org_id="O1")
    assert [r.plan.plan_id for r in results] == ["P1", "P2"]
    assert sorted(warnings) == [
        "skipped plan PG: guard_standard plans are not exported",
        "skipped plan PM: marketplace_app plans are not exported",
    ]
    assert len({r.path for r in results}) == 2
    assert all(stat.S_IMODE(r.path.stat().st_mode) == 0o600 for r in results)
    assert [e["plan_id"] for e in read_entries(settings.exports_path)] == ["P1", "P2"]
    [message] = outbox_messages(settings)  # one email listing both files
    assert recipients(message) == O1_ADMINS
    assert all(str(r.path) in message.get_content() for r in results)
    with pytest.raises(ExportRefused, match="no org 'O9'"):
        export_plans(settings, org_id="O9")
    with pytest.raises(ExportRefused, match="org O3 has only guard_standard and marketplace_app"):
        export_plans(settings, org_id="O3")


def test_expired_exports_are_purged(settings: Settings) -> None:
    created = datetime(2024, 7, 1, 6, 0, tzinfo=UTC)
    [old], _ = export_plans(settings, ["P1"], now=created)
    [fresh], _ = export_plans(settings, ["P2"], now=created + timedelta(hours=12))
    # one second before expiry nothing goes
    assert (
        purge_expired(settings.exports_path, created + timedelta(hours=24, seconds=-1)).deleted
        == []
    )
    # the next export command purges what has expired
    [newest], _ = export_plans(settings, ["B7"], now=created + timedelta(hours=24))
    assert not old.path.exists()
    assert fresh.path.exists() and newest.path.exists()
    assert [e["plan_id"] for e in read_entries(settings.exports_path)] == ["P2", "B7"]
    # and a purge a day later takes the rest
    result = purge_expired(settings.exports_path, created + timedelta(hours=48))
    assert sorted(result.deleted) == sorted([str(fresh.path), str(newest.path)])
    assert read_entries(settings.exports_path) == []


def test_purge_spares_a_replaced_out_file(settings: Settings, tmp_path: Path) -> None:
    created = datetime(2024, 7, 1, 6, 0, tzinfo=UTC)
    kept, gone = tmp_path / "kept.csv", tmp_path / "gone.csv"
    export_plans(settings, ["P1"], out=kept, now=created)
    export_plans(settings, ["P1"], out=gone, now=created)
    kept.write_text("someone else's file now\n")
    result = purge_expired(settings.exports_path, created + timedelta(days=2))
    assert result.deleted == [str(gone)]
    assert kept.exists() and not gone.exists()
    assert result.warnings == [f"expired export {kept} changed since it was written: not deleted"]


def test_purge_sweeps_unlisted_old_files(settings: Settings) -> None:
    folder = settings.exports_path
    folder.mkdir(mode=0o700)
    stray = folder / "users-P1-2024-06-30-20240701T000000Z-abcdef.csv"
    stray.write_text("x\n")
    (folder / MANIFEST_NAME).write_text("not json")
    # a temporary folder an interrupted export left behind, and a file not a day old
    leftover = folder / ".usercounts-export-x"
    leftover.mkdir()
    (leftover / "part.csv").write_text("x\n")
    young = folder / "users-P2-2024-06-30-20240701T000000Z-fedcba.csv"
    young.write_text("x\n")
    day_old = (datetime.now(UTC) - timedelta(hours=25)).timestamp()
    for path in (stray, leftover / "part.csv", leftover):
        os.utime(path, (day_old, day_old))
    result = purge_expired(folder)
    assert sorted(result.deleted) == sorted([str(stray.resolve()), str(leftover.resolve())])
    assert not stray.exists() and not leftover.exists() and young.exists()
    assert (folder / f"{MANIFEST_NAME}.unreadable").exists()


@pytest.mark.slow
def test_the_nightly_run_purges_expired_exports(
    settings: Settings, tmp_path: Path, prefect_api_url: str
) -> None:
    """The real `usercounts run` deletes an export whose expiry has passed, and says in its
    summary that it left one written with --out that someone has changed since
    (docs/export.md)."""
    created = datetime.now(UTC) - timedelta(hours=30)
    [result], _ = export_plans(settings, ["P1"], now=created)
    replaced = tmp_path / "replaced.csv"
    export_plans(settings, ["P1"], out=replaced, now=created)
    replaced.write_text("someone else's file now\n")
    landing = Landing(tmp_path / "landing")
    # The smallest landing that passes the data-quality checks: a plan, an instance, an event.
    landing.write("plans", [landing.plan("Z1", 5)])
    landing.write("instances", [{"instance_id": "Z1-1", "plan_id": "Z1"}])
    landing.write(
        "access_events",
        [{"event_id": "z1", "occurred_at": "2024-06-01T00:00:00Z", "instance_id": "Z1-1",
          "user_id": "zu", "action": "grant"}],
    )  # fmt: skip
    done = run_cli(
        "run",
        "--landing",
        str(landing.root),
        "--database",
        str(tmp_path / "run" / "warehouse.duckdb"),
        "--as-of",
        "2024-06-30",
        env={
            "USERCOUNTS_EXPORTS_DIR": str(settings.exports_path),
            "PREFECT_API_URL": prefect_api_url,
        },
    )
    assert done.returncode == 0, done.stderr
    assert not result.path.exists()
    assert read_entries(settings.exports_path) == []
    assert replaced.exists()
    assert (
        f"  warning: expired export {replaced} changed since it was written: not deleted\n"
    ) in done.stdout


# --- users to remove, inactive candidates ----------------------------------------------


def test_users_to_remove_at_the_boundaries(warehouse: Settings) -> None:
    """Tier 10: under 80% means at most 7 users; at most the tier means 10."""
    rows = query(
        warehouse.published_path,
        "select plan_id, user_count, users_to_remove_for_80, users_to_remove_for_limit "
        "from marts.plan_user_counts_current where org_id = 'O2' order by user_count",
    )
    assert rows == [("B7", 7, 0, 0), ("B8", 8, 1, 0), ("B10", 10, 3, 0), ("B12", 12, 5, 2)]


REMOVALS = "assert_users_to_remove_are_minimal"
CANDIDATES = "assert_inactive_candidates_most_inactive_first"
# (dbt singular test, an edit of the built marts): each breaks one clause of the test alone.
# B8: 8 of 10 users, 1 to remove for 80%; B10: 10 of 10, 3 for 80% (8 is exactly 80%, not
# under it), 0 for the limit; B12: 12 of 10, 2 for the limit, and 7 inactive candidates.
SINGULAR_CASES = [
    (REMOVALS, "update marts.plan_user_counts_current set users_to_remove_for_80 = 2 "
     "where plan_id = 'B8'"),  # more than the fewest
    (REMOVALS, "update marts.plan_user_counts_current set users_to_remove_for_80 = 2 "
     "where plan_id = 'B10'"),  # not enough
    (REMOVALS, "update marts.plan_user_counts_current set users_to_remove_for_limit = 1 "
     "where plan_id = 'B10'"),  # more than the fewest
    (REMOVALS, "update marts.plan_user_counts_current set users_to_remove_for_limit = 1 "
     "where plan_id = 'B12'"),  # not enough
    # the running total in reverse: the least inactive first
    (CANDIDATES, "update marts.inactive_user_candidates set cumulative_users = "
     "8 - cumulative_users where plan_id = 'B12'"),
    # the running total no longer ends at the number of candidates
    (CANDIDATES, "delete from marts.inactive_user_candidates "
     "where plan_id = 'B12' and cumulative_users = 1"),
]  # fmt: skip


@pytest.mark.parametrize(("test_name", "edit"), SINGULAR_CASES)
def test_each_clause_of_the_singular_dbt_tests_fails_them(
    warehouse: Settings, test_name: str, edit: str
) -> None:
    """A dbt singular test passes on the real build and fails once one of its clauses is
    broken."""
    assert singular_test_rows(warehouse.work_path, test_name) == 0
    assert singular_test_rows(warehouse.work_path, test_name, edit) >= 1


def test_inactive_candidates_most_inactive_first(warehouse: Settings) -> None:
    """The mart, built for N = 89: the running total, most inactive first."""
    rows = query(
        warehouse.published_path,
        "select user_id, cumulative_users, days_inactive, inactive_days "
        "from marts.inactive_user_candidates where plan_id = 'B12' order by cumulative_users",
    )
    assert rows == [
        ("b12-06", 1, 546, 89),  # never seen, access since 2023-01-01
        ("b12-07", 2, 395, 89),  # last seen 2023-06-01
        ("b12-08", 3, 167, 89),
        ("b12-02", 4, 90, 89),  # seen 2024-04-01 08:00
        ("b12-04", 5, 90, 89),  # never seen, access since 2024-04-01 09:00
        ("b12-03", 6, 89, 89),  # seen 2024-04-02 08:00
        ("b12-05", 7, 89, 89),  # never seen, access since 2024-04-02 09:00
    ]
    # not b12-09: seen in 2022, but its current access began 2024-05-15 (46 days)
    assert query(
        warehouse.published_path,
        "select count(*) from marts.inactive_user_candidates where plan_id in ('B7', 'B8')",
    ) == [(15,)]  # never seen, access since 2023-01-01


def test_inactive_candidates_inactive_since_the_same_instant_go_by_user_id(
    warehouse: Settings,
) -> None:
    """B7's 7 users were never seen and have had access since 2023-01-01 00:00: a tie,
    broken by user id, in the mart (N = 89) and computed on the fly (N = 90)."""
    by_user_id = [(f"b7-{n:02d}", n) for n in range(1, 8)]
    assert (
        query(
            warehouse.published_path,
            "select user_id, cumulative_users from marts.inactive_user_candidates "
            "where plan_id = 'B7' order by cumulative_users",
        )
        == by_user_id
    )
    with open_published(warehouse.published_path) as con:
        assert [(row[1], row[0]) for row in candidates(con, "B7", 90)] == by_user_id


def test_inactive_for_other_days_is_computed_on_the_fly(warehouse: Settings) -> None:
    with open_published(warehouse.published_path) as con:
        assert built_inactive_days(con) == 89
        for_90 = [r[1] for r in candidates(con, "B12", 90)]
        for_365 = [r[1] for r in candidates(con, "B12", 365)]
        from_mart = candidates(con, "B12", 89)
        on_the_fly = con.execute(ON_THE_FLY, ["B12", 89]).fetchall()
    assert for_90 == ["b12-06", "b12-07", "b12-08", "b12-02", "b12-04"]
    assert for_365 == ["b12-06", "b12-07"]
    assert len(from_mart) == 7
    assert from_mart == on_the_fly  # the mart and the on-the-fly query agree


def test_inactive_command(warehouse: Settings) -> None:
    """Default N (90) on the fly; the 5 that must go for 80% are exactly the 5 candidates."""
    database = str(warehouse.published_path)
    done = run_cli("inactive", "--plan", "B12", "--database", database)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Plan B12 (B12, org O2): 12 of 10 users, over_limit, as of 2024-06-30"
    assert lines[1] == "  must go: 5 to be under 80% of the tier, 2 to be at most the tier"
    assert lines[2] == "  inactive for 90 days or more: 5 users, most inactive first"
    assert lines[3] == ""  # no note: the 5 listed are enough for both goals
    table = lines[lines.index("") + 3 :]
    assert [line.split()[:2] for line in table] == [
        ["1", "b12-06"],
        ["2", "b12-07"],
        ["3", "b12-08"],
        ["4", "b12-02"],
        ["5", "b12-04"],
    ]
    # the rows at which the running total reaches each count, and only those
    goals = ("at most the tier", "under 80%")
    assert [[g for g in goals if g in line] for line in table] == [
        [], ["at most the tier"], [], [], ["under 80%"]
    ]  # fmt: skip
    done = run_cli(
        "inactive", "--plan", "B12", "--days", "89", "--limit", "2", "--database", database
    )
    assert "inactive for 89 days or more: 7 users" in done.stdout
    assert done.stdout.rstrip().endswith("... and 5 more (without --limit: all)")
    # without --days, N is USERCOUNTS_INACTIVE_DAYS
    done = run_cli(
        "inactive", "--plan", "B12", "--database", database,
        env={"USERCOUNTS_INACTIVE_DAYS": "365"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "inactive for 365 days or more: 2 users" in done.stdout
    done = run_cli("inactive", "--plan", "B12", "--days", "365", "--database", database)
    assert "inactive for 365 days or more: 2 users" in done.stdout
    # the 2 listed are enough to be at most the tier, not to be under 80%
    assert [line for line in done.stdout.splitlines() if "note:" in line] == [
        "  note: 5 must go to be under 80%, more than the inactive users listed"
    ]
    done = run_cli("inactive", "--plan", "NOPE", "--database", database)
    assert done.returncode == 1 and "no plan 'NOPE'" in done.stderr
