"""The contract's counting rules, each case a plan of its own in one real dbt build.

As-of date D = 2025-06-30, so the as-of instant A = 2025-07-01 00:00 UTC. Day d's figure is
at d + 1 day 00:00; month M closes at the first instant of M + 1 (June closes at A). Every
expected figure below is worked out by hand from the events in the comment above it.
How CSV rows are numbered for the quarantine is checked on the load alone, at the end.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
from conftest import Landing, build_warehouse, query, raw_checks, settings_for

from usercounts import pipeline
from usercounts.build import dbt_args, dbt_env, dbt_folder
from usercounts.load import load_landing

AS_OF = date(2025, 6, 30)

# Plans whose tier is 5 and whose user count is 3, 4, 5 and 6 users (threshold states).
THRESHOLD_PLANS = {"P_T3": 3, "P_T4": 4, "P_T5": 5, "P_T6": 6}


def ev(event_id: str, at: str, instance: str, user: str, action: str) -> dict[str, str]:
    return {
        "event_id": event_id,
        "occurred_at": at,
        "instance_id": instance,
        "user_id": user,
        "action": action,
    }


def write_scenario(landing: Landing) -> None:
    """Every case as its own plan (tier 10 unless noted), instance and users."""
    plan = landing.plan
    plans = [
        plan(p, 10)
        for p in [
            "P_DUP", "P_ORD", "P_SAME", "P_IG", "P_IR", "P_RWA", "P_GWA", "P_IWA",
            "P_TWO", "P_X1", "P_OFF", "P_MID", "P_AFTER", "P_LATE", "P_BAD",
            "P_PQ", "P_BILL", "P_REGRANT", "P_WIN_A", "P_WIN_B", "P_MIX", "P_MOVE",
        ]
    ]  # fmt: skip
    plans += [plan(p, 5) for p in THRESHOLD_PLANS]
    # a signed whole number reads; enums ignore case and surrounding spaces
    plans.append(plan("P_X2", "+10", plan_type=" Product "))
    # Its only version dates from after its first events: it is in force before it, too.
    plans.append(plan("P_EARLY", 4, updated_at="2025-03-01T00:00:00Z"))
    # a whole number as a double reads, padded with a tab; a blank name reads as the plan_id
    plans.append(plan("P_MON", " 5.0\t", billing_cycle="monthly", plan_name="  "))
    # Tier change mid-history: 10, then 25 from 2025-03-15 12:00, then 50 from 2025-05-01 00:00.
    plans += [
        plan("P_TIER", 10, plan_name="Tier v1"),
        plan("P_TIER", 25, plan_name="Tier v2", updated_at="2025-03-15T12:00:00Z"),
        plan("P_TIER", 50, plan_name="Tier v3", updated_at="2025-05-01T00:00:00Z"),
    ]
    # A version dated exactly at A is the one in force at A (the latest updated_at <= A).
    plans += [plan("P_AT_A", 10), plan("P_AT_A", 20, updated_at="2025-07-01T00:00:00Z")]
    # Malformed plan rows (rows 2..7 of this file); DuckDB's cast alone reads 10.5 as 11.
    bad_plans = [
        plan("P_Z0", 0),
        plan("P_ZT", "ten"),
        plan("P_ZE", 10, plan_type="server"),
        plan("P_ZU", 10, updated_at="not a time"),
        plan("P_ZF", "10.5"),
        plan("P_ZX", "1e3"),
    ]
    landing.write("plans", plans, name="plans_001.csv")
    landing.write("plans", bad_plans, name="plans_002.csv")
    # The same version of P_X1 again in a later file: that row wins (tier 12).
    landing.write("plans", [plan("P_X1", 12)], name="plans_003.csv")

    instances = [
        # P_MON's site has a blank name, which reads as its id
        {
            "instance_id": f"I_{p[2:]}",
            "plan_id": p,
            "instance_name": " " if p == "P_MON" else f"site {p}",
        }
        for p in [row["plan_id"] for row in plans]
        if p not in ("P_TWO", "P_LATE")
    ]
    instances += [
        {"instance_id": "I_TWO_A", "plan_id": "P_TWO", "instance_name": "two a"},
        {"instance_id": "I_TWO_B", "plan_id": "P_TWO", "instance_name": "two b"},
        {"instance_id": "", "plan_id": "P_TWO", "instance_name": "no id"},
        {"instance_id": "I_MIX_B", "plan_id": "P_MIX", "instance_name": "mix b"},
        {"instance_id": "I_MOVE_B", "plan_id": "P_MOVE", "instance_name": "move b"},
        {"instance_id": "I_MOVE_C", "plan_id": "P_MOVE", "instance_name": "move c"},
        # Within one file the later row wins: I_WIN is P_WIN_B's.
        {"instance_id": "I_WIN", "plan_id": "P_WIN_A", "instance_name": "win"},
        {"instance_id": "I_WIN", "plan_id": "P_WIN_B", "instance_name": "win"},
    ]
    landing.write("instances", instances, name="instances_001.csv")
    # Declared only in a later file than its events.
    landing.write(
        "instances",
        [{"instance_id": "I_LATE", "plan_id": "P_LATE", "instance_name": "late"}],
        name="instances_002.csv",
    )

    landing.write(
        "users",
        [
            {"user_id": "nb", "email": "nb@x.test", "account_type": " APP ", "is_billable": " NO "},
            # a blank is_billable is true, like an empty one
            {"user_id": "b1", "email": "b1@x.test", "account_type": "atlassian",
             "is_billable": "  "},
            {"user_id": "flip", "email": "f@x.test", "account_type": "atlassian",
             "is_billable": "true"},
            {"user_id": "bad1", "email": "q@x.test", "account_type": "robot"},
            {"user_id": "bad2", "email": "q@x.test", "account_type": "atlassian",
             "is_billable": "maybe"},
            # Within one file the later row wins: twice is non-billable.
            {"user_id": "twice", "email": "t@x.test", "account_type": "atlassian",
             "is_billable": "yes"},
            {"user_id": "twice", "email": "t@x.test", "account_type": "atlassian",
             "is_billable": "false"},
        ],
        name="users_001.csv",
    )  # fmt: skip
    # The later users file wins: flip becomes non-billable.
    landing.write(
        "users",
        [{"user_id": "flip", "email": "f@x.test", "account_type": "customer", "is_billable": "0"}],
        name="users_002.csv",
    )
    # Quarantine row numbers are the file's lines although the reader counts records: a
    # quoted name spans lines 2-3, lines 4 and 7 are blank (bad rows on lines 5, 6 and 8).
    (landing.root / "users" / "users_003.csv").write_text(
        "user_id,email,display_name,account_type,is_billable\n"
        'ml1,ml1@x.test,"Multi\nLine",atlassian,true\n'
        "\n"
        "ml2,ml2@x.test,Two,robot,true\n"
        'ml3,ml3@x.test,"Three",atlassian,true,surplus\n'
        "\n"
        'ml4,ml4@x.test,"Four ""4""",atlassian,perhaps\n',
        encoding="utf-8",
    )
    # The same with Windows line ends and a blank first line (the header is line 2).
    (landing.root / "users" / "users_004.csv").write_bytes(
        b"\r\nuser_id,email,display_name,account_type,is_billable\r\n"
        b'ml5,ml5@x.test,"Five\r\nLines",atlassian,true\r\n'
        b"ml6,ml6@x.test,Six,robot,true\r\n"
        b"ml7,ml7@x.test,Seven\r\n"
    )
    landing.write(
        "org_admins",
        [{"org_id": "O1", "email": "admin@x.test"}, {"org_id": "O1", "email": "@x.test"}],
    )

    events = [
        # Duplicates across files: D1 and D2 repeat in file 2; D3 repeats with other content
        # (the first read wins, so u3 stays granted).
        ev("D1", "2025-01-10T00:00:00Z", "I_DUP", "u1", "grant"),
        ev("D2", "2025-02-10T00:00:00Z", "I_DUP", "u2", "grant"),
        ev("D3", "2025-03-10T00:00:00Z", "I_DUP", "u3", "grant"),
        # Out of file order: the revoke is listed first.
        ev("O2", "2025-03-01T10:00:00Z", "I_ORD", "u1", "revoke"),
        ev("O1", "2025-01-05T00:00:00Z", "I_ORD", "u1", "grant"),
        # Same instant, event_id order: S1 revoke then S2 grant -> active;
        # S3 grant then S4 revoke -> none.
        ev("S2", "2025-02-10T10:00:00Z", "I_SAME", "u1", "grant"),
        ev("S1", "2025-02-10T10:00:00Z", "I_SAME", "u1", "revoke"),
        ev("S4", "2025-02-10T10:00:00Z", "I_SAME", "u2", "revoke"),
        ev("S3", "2025-02-10T10:00:00Z", "I_SAME", "u2", "grant"),
        # invite -> grant
        ev("IG1", "2025-01-10T00:00:00Z", "I_IG", "u1", "invite"),
        ev("IG2", "2025-02-15T00:00:00Z", "I_IG", " u1 ", "grant"),  # ids are trimmed
        # invite -> revoke within January
        ev("IR1", "2025-01-10T00:00:00Z", "I_IR", "u1", "invite"),
        ev("IR2", "2025-01-20T09:00:00Z", "I_IR", "u1", "revoke"),
        # revoke without access, then invite
        ev("RW1", "2025-01-10T00:00:00Z", "I_RWA", "u1", "revoke"),
        ev("RW2", "2025-02-01T12:00:00Z", "I_RWA", "u1", "invite"),
        # grant while active
        ev("GA1", "2025-01-10T00:00:00Z", "I_GWA", "u1", "grant"),
        ev("GA2", "2025-02-10T00:00:00Z", "I_GWA", "u1", "grant"),
        # invite while active stays active
        ev("IA1", "2025-01-10T00:00:00Z", "I_IWA", "u1", "grant"),
        ev("IA2", "2025-02-10T00:00:00Z", "I_IWA", "u1", "invite"),
        # One user on two instances of a plan; u1 loses A on Mar 5 and is then invited on B
        # only; u2 is invited on both from Apr 1.
        ev("T1", "2025-01-10T00:00:00Z", "I_TWO_A", "u1", "grant"),
        ev("T2", "2025-01-12T00:00:00Z", "I_TWO_B", "u1", "invite"),
        ev("T3", "2025-03-05T00:00:00Z", "I_TWO_A", "u1", "revoke"),
        ev("T4", "2025-04-01T00:00:00Z", "I_TWO_A", "u2", "invite"),
        ev("T5", "2025-04-01T00:00:00Z", "I_TWO_B", "u2", "invite"),
        # One user in two plans.
        ev("X1", "2025-01-10T00:00:00Z", "I_X1", "u9", " Grant "),  # enums: case, spaces
        ev("X2", "2025-01-10T00:00:00Z", "I_X2", "u9", "grant"),
        # Offsets: 2025-03-31T23:30-02:00 is April 1 01:30 UTC (April);
        # 2025-05-01T01:00+02:00 is April 30 23:00 UTC (April).
        ev("OF0", "2025-01-05T00:00:00Z", "I_OFF", "u0", "grant"),
        ev("OF1", "2025-03-31T23:30:00-02:00", "I_OFF", "u1", "grant"),
        ev("OF2", "2025-05-01T01:00:00+02:00", "I_OFF", "u2", "grant"),
        ev("OF3", "2025-05-31T23:30:00-0200", "I_OFF", "u3", "grant"),
        # Exactly 00:00 on the 1st belongs to the new month.
        ev("M0", "2025-01-05T00:00:00Z", "I_MID", "u0", "grant"),
        ev("M1", "2025-02-01T00:00:00Z", "I_MID", "u1", "grant"),
        ev("M2", "2025-03-01T00:00:00Z", "I_MID", "u0", "revoke"),
        # After the as-of instant: the revoke at A itself and the later grant are not seen.
        ev("AF1", "2025-06-15T00:00:00Z", "I_AFTER", "u1", "grant"),
        ev("AF2", "2025-07-01T00:00:00Z", "I_AFTER", "u1", "revoke"),
        ev("AF3", "2025-07-05T00:00:00Z", "I_AFTER", "u2", "grant"),
        # An instance declared in a later file; and one never declared.
        ev("L1", "2025-02-01T10:00:00Z", "I_LATE", "u1", "grant"),
        ev("L2", "2025-02-01T10:00:00Z", "I_NEVER", "u1", "grant"),
        # Tier change mid-history.
        ev("TI1", "2025-01-10T00:00:00Z", "I_TIER", "u1", "grant"),
        # Billable: nb is non-billable, flip became non-billable in the later users file,
        # b1 billable by default, zz is not in any users file (billable).
        ev("B1", "2025-01-10T00:00:00Z", "I_BILL", "nb", "grant"),
        ev("B2", "2025-01-10T00:00:00Z", "I_BILL", "b1", "grant"),
        ev("B3", "2025-01-10T00:00:00Z", "I_BILL", "flip", "grant"),
        ev("B4", "2025-01-10T00:00:00Z", "I_BILL", "zz", "invite"),
        # A monthly plan at 80% of tier 5 (4 users).
        *[ev(f"MO{i}", "2025-01-10T00:00:00Z", "I_MON", f"u{i}", "grant") for i in range(4)],
        # A revoke and a re-grant at the same instant (RG2 then RG3, by event_id) leave no
        # instant without access: access_since stays 2025-01-10.
        ev("RG1", "2025-01-10T00:00:00Z", "I_REGRANT", "u1", "grant"),
        ev("RG2", "2025-03-01T10:00:00Z", "I_REGRANT", "u1", "revoke"),
        ev("RG3", "2025-03-01T10:00:00Z", "I_REGRANT", "u1", "grant"),
        # Moved from one instance of P_MOVE to another: u1 at one instant, u2 with an
        # overlap (seen on I_MOVE before leaving it), u3 after a gap without access; u4's
        # access to I_MOVE_B breaks while I_MOVE's lasts, so the plan's is unbroken.
        ev("MV1", "2025-01-10T00:00:00Z", "I_MOVE", "u1", "grant"),
        ev("MV2", "2025-04-01T10:00:00Z", "I_MOVE", "u1", "revoke"),
        ev("MV3", "2025-04-01T10:00:00Z", "I_MOVE_B", "u1", "grant"),
        ev("MV4", "2025-01-10T00:00:00Z", "I_MOVE", "u2", "grant"),
        ev("MV5", "2025-03-01T00:00:00Z", "I_MOVE_B", "u2", "grant"),
        ev("MV6", "2025-05-01T00:00:00Z", "I_MOVE", "u2", "revoke"),
        ev("MV7", "2025-01-10T00:00:00Z", "I_MOVE", "u3", "grant"),
        ev("MV8", "2025-02-01T00:00:00Z", "I_MOVE", "u3", "revoke"),
        ev("MV9", "2025-02-15T00:00:00Z", "I_MOVE_B", "u3", "grant"),
        ev("MV10", "2025-01-05T00:00:00Z", "I_MOVE", "u4", "grant"),
        ev("MV11", "2025-01-10T00:00:00Z", "I_MOVE_B", "u4", "grant"),
        ev("MV12", "2025-01-20T00:00:00Z", "I_MOVE_B", "u4", "revoke"),
        ev("MV13", "2025-02-15T00:00:00Z", "I_MOVE_B", "u4", "grant"),
        ev("MV14", "2025-03-01T00:00:00Z", "I_MOVE", "u4", "revoke"),
        # Active on one instance of the plan and invited on the other: active.
        ev("MX1", "2025-01-10T00:00:00Z", "I_MIX", "u1", "grant"),
        ev("MX2", "2025-01-12T00:00:00Z", "I_MIX_B", "u1", "invite"),
        # Four users before P_EARLY's only version (tier 4, from 2025-03-01).
        *[ev(f"EA{i}", "2025-01-10T00:00:00Z", "I_EARLY", f"u{i}", "grant") for i in range(4)],
        # On the instance the same file moved to P_WIN_B, by the user the file made
        # non-billable.
        ev("W1", "2025-01-10T00:00:00Z", "I_WIN", "twice", "grant"),
        # CSV part of the mixed-format source (the Parquet file adds two more users).
        ev("PQ3", "2025-03-10T00:00:00Z", "I_PQ", "u3", "grant"),
        ev("AA1", "2025-06-01T00:00:00Z", "I_AT_A", "u1", "grant"),
    ]
    for plan_id, n in THRESHOLD_PLANS.items():
        events += [
            ev(f"{plan_id}_{i}", "2025-01-10T00:00:00Z", f"I_{plan_id[2:]}", f"u{i}", "grant")
            for i in range(n)
        ]
    landing.write("access_events", events, name="access_events_001.csv")
    landing.write(
        "access_events",
        [
            ev("D1", "2025-01-10T00:00:00Z", "I_DUP", "u1", "grant"),
            ev("D2", "2025-02-10T00:00:00Z", "I_DUP", "u2", "grant"),
            ev("D3", "2025-03-11T00:00:00Z", "I_DUP", "u3", "revoke"),
        ],
        name="access_events_002.csv",
    )
    landing.write(
        "access_events",
        [
            ev("PQ1", "2025-01-10T00:00:00Z", "I_PQ", "u1", "grant"),
            ev("PQ2", "2025-02-10T00:00:00", "I_PQ", "u2", "invite"),
        ],
        name="access_events_003.parquet",
        fmt="parquet",
    )
    # Malformed events, one kind per row (rows 2..7); the good row (row 8) still counts.
    bad = landing.root / "access_events" / "access_events_004.csv"
    bad.write_text(
        "event_id,occurred_at,instance_id,user_id,action\n"
        ",2025-01-10T00:00:00Z,I_BAD,u9,grant\n"
        "BAD2,2025-01-10T00:00:00Z,I_BAD,,grant\n"
        "BAD3,2025-01-10T00:00:00Z,I_BAD,u9,delete\n"
        "BAD4,yesterday,I_BAD,u9,grant\n"
        "BAD5,2025-01-10T00:00:00Z,I_BAD,u9,grant,surplus\n"
        "BAD6,,I_BAD,u9,grant\n"
        "GOOD,2025-01-10T00:00:00Z,I_BAD,u1,grant\n",
        encoding="utf-8",
    )
    landing.write(
        "last_seen",
        [
            {"instance_id": "I_AFTER", "user_id": "u1", "last_seen_at": "2025-06-20T08:00:00.75Z"},
            # At and after A: not seen by this run.
            {"instance_id": "I_AFTER", "user_id": "u1", "last_seen_at": "2025-07-01T00:00:00Z"},
            {"instance_id": "I_AFTER", "user_id": "u1", "last_seen_at": "2025-07-02T08:00:00Z"},
            {"instance_id": "I_TWO_B", "user_id": "u1", "last_seen_at": "2025-05-31T23:59:59Z"},
            {"instance_id": "I_TWO_B", "user_id": "u1", "last_seen_at": "2025-04-01T00:00:00Z"},
            {"instance_id": "I_TWO_B", "user_id": "u2", "last_seen_at": "whenever"},
            {"instance_id": "I_MOVE", "user_id": "u2", "last_seen_at": "2025-04-20T08:00:00Z"},
            {"instance_id": "I_MOVE", "user_id": "u3", "last_seen_at": "2025-01-20T08:00:00Z"},
            # on an instance of P_MOVE u1 never had access to: not a sighting on the plan
            {"instance_id": "I_MOVE_C", "user_id": "u1", "last_seen_at": "2025-06-01T08:00:00Z"},
        ],
    )


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rules")
    landing = Landing(root / "landing")
    write_scenario(landing)
    settings = build_warehouse(landing.root, root / "data", AS_OF)
    return settings.published_path


def current(db: Path, plan_id: str) -> dict:
    rows = query(db, "select * from marts.plan_user_counts_current where plan_id = ?", [plan_id])
    assert len(rows) == 1, f"{plan_id}: {rows}"
    cols = [
        r[0]
        for r in query(
            db,
            "select column_name from information_schema.columns "
            "where table_schema = 'marts' and table_name = 'plan_user_counts_current' "
            "order by ordinal_position",
        )
    ]
    return dict(zip(cols, rows[0], strict=True))


def closings(db: Path, plan_id: str) -> dict[str, tuple]:
    """month (YYYY-MM) -> (closing, previous, added, removed, invited)."""
    rows = query(
        db,
        "select strftime(month, '%Y-%m'), closing_balance, previous_closing_balance, "
        "users_added, users_removed, invited_count from marts.plan_user_counts_monthly "
        "where plan_id = ? order by month",
        [plan_id],
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def daily(db: Path, plan_id: str, day: str) -> tuple[int, int, int]:
    rows = query(
        db,
        "select user_count, invited_count, user_tier from marts.plan_user_counts_daily "
        "where plan_id = ? and day = ?",
        [plan_id, day],
    )
    assert len(rows) == 1, f"{plan_id} {day}: {rows}"
    return rows[0]


def test_duplicate_event_ids_across_files_are_one_event(warehouse: Path) -> None:
    assert current(warehouse, "P_DUP")["user_count"] == 3
    assert closings(warehouse, "P_DUP") == {
        "2025-01": (1, None, 1, 0, 0),
        "2025-02": (2, 1, 1, 0, 0),
        "2025-03": (3, 2, 1, 0, 0),
        "2025-04": (3, 3, 0, 0, 0),
        "2025-05": (3, 3, 0, 0, 0),
        "2025-06": (3, 3, 0, 0, 0),
    }


def test_events_out_of_file_order(warehouse: Path) -> None:
    months = closings(warehouse, "P_ORD")
    assert months["2025-01"][:4] == (1, None, 1, 0)
    assert months["2025-02"][:4] == (1, 1, 0, 0)
    assert months["2025-03"][:4] == (0, 1, 0, 1)
    assert current(warehouse, "P_ORD")["user_count"] == 0


def test_same_instant_events_apply_in_event_id_order(warehouse: Path) -> None:
    # u1: revoke (S1) then grant (S2) -> active; u2: grant (S3) then revoke (S4) -> none.
    assert current(warehouse, "P_SAME")["user_count"] == 1
    assert query(
        warehouse, "select user_id from marts.user_last_seen where plan_id = 'P_SAME'"
    ) == [("u1",)]


def test_invite_then_grant(warehouse: Path) -> None:
    assert daily(warehouse, "P_IG", "2025-01-10") == (1, 1, 10)
    assert daily(warehouse, "P_IG", "2025-02-14") == (1, 1, 10)
    assert daily(warehouse, "P_IG", "2025-02-15") == (1, 0, 10)
    months = closings(warehouse, "P_IG")
    assert months["2025-01"] == (1, None, 1, 0, 1)
    assert months["2025-02"] == (1, 1, 0, 0, 0)
    row = current(warehouse, "P_IG")
    assert (row["user_count"], row["invited_count"]) == (1, 0)


def test_invite_then_revoke(warehouse: Path) -> None:
    assert daily(warehouse, "P_IR", "2025-01-19") == (1, 1, 10)
    assert daily(warehouse, "P_IR", "2025-01-20") == (0, 0, 10)
    months = closings(warehouse, "P_IR")
    # Added and removed within January: in no closing set.
    assert months["2025-01"] == (0, None, 0, 0, 0)
    # change_pct is null when the previous balance is 0.
    rows = query(
        warehouse,
        "select change, change_pct from marts.plan_user_counts_monthly "
        "where plan_id = 'P_IR' and month = '2025-02-01'",
    )
    assert rows == [(0, None)]


def test_revoke_without_access_then_invite(warehouse: Path) -> None:
    months = closings(warehouse, "P_RWA")
    assert months["2025-01"] == (0, None, 0, 0, 0)
    assert months["2025-02"] == (1, 0, 1, 0, 1)


def test_grant_while_active(warehouse: Path) -> None:
    months = closings(warehouse, "P_GWA")
    assert months["2025-01"] == (1, None, 1, 0, 0)
    assert months["2025-02"] == (1, 1, 0, 0, 0)


def test_invite_while_active_stays_active(warehouse: Path) -> None:
    row = current(warehouse, "P_IWA")
    assert (row["user_count"], row["invited_count"]) == (1, 0)
    assert query(
        warehouse, "select access_status from marts.user_last_seen where plan_id = 'P_IWA'"
    ) == [("active",)]


def test_one_user_on_two_instances_is_counted_once(warehouse: Path) -> None:
    months = closings(warehouse, "P_TWO")
    assert months["2025-01"] == (1, None, 1, 0, 0)  # active on A, invited on B: active
    assert months["2025-02"] == (1, 1, 0, 0, 0)
    assert months["2025-03"] == (1, 1, 0, 0, 1)  # A revoked: invited on B only
    assert months["2025-04"] == (2, 1, 1, 0, 2)
    # change = closing - previous; change_pct = change / previous (not / closing)
    assert query(
        warehouse,
        "select strftime(month, '%Y-%m'), change, change_pct from marts.plan_user_counts_monthly "
        "where plan_id = 'P_TWO' and month between '2025-01-01' and '2025-04-01' order by month",
    ) == [("2025-01", None, None), ("2025-02", 0, 0.0), ("2025-03", 0, 0.0), ("2025-04", 1, 1.0)]
    rows = query(
        warehouse,
        "select user_id, instance_id, access_status, access_since, last_seen_at, "
        "days_since_last_seen from marts.user_last_seen where plan_id = 'P_TWO' order by 1, 2",
    )
    assert rows == [
        ("u1", "I_TWO_B", "invited", datetime(2025, 1, 12), datetime(2025, 5, 31, 23, 59, 59), 30),
        ("u2", "I_TWO_A", "invited", datetime(2025, 4, 1), None, None),
        ("u2", "I_TWO_B", "invited", datetime(2025, 4, 1), None, None),
    ]


def test_same_instant_revoke_and_grant_keep_access_since(warehouse: Path) -> None:
    # DECISIONLOG: no measurement instant without access, so the access is unbroken.
    assert query(
        warehouse,
        "select user_id, access_status, access_since from marts.user_last_seen "
        "where plan_id = 'P_REGRANT'",
    ) == [("u1", "active", datetime(2025, 1, 10))]
    # never seen: inactive since access_since, 2025-01-10 -> 2025-06-30 = 171 days
    assert query(
        warehouse,
        "select user_id, access_since, days_inactive from marts.inactive_user_candidates "
        "where plan_id = 'P_REGRANT'",
    ) == [("u1", datetime(2025, 1, 10), 171)]
    assert closings(warehouse, "P_REGRANT")["2025-03"] == (1, 1, 0, 0, 0)


def test_a_move_between_the_plans_instances_keeps_its_access_and_sightings(
    warehouse: Path,
) -> None:
    # DECISIONLOG "Inactive-user candidates": access to the plan as a whole, sightings on
    # any of its instances the user has had access to.
    assert query(
        warehouse,
        "select user_id, access_since, last_seen_at, inactive_since, days_inactive "
        "from marts.counted_users where plan_id = 'P_MOVE' order by user_id",
    ) == [
        # moved at one instant: access unbroken since January 10, never seen
        ("u1", datetime(2025, 1, 10), None, datetime(2025, 1, 10), 171),
        # seen on I_MOVE on April 20, while on both: not seen on I_MOVE_B, but not inactive
        ("u2", datetime(2025, 1, 10), None, datetime(2025, 4, 20, 8), 71),
        # a gap without access: access began again on February 15, after the sighting
        ("u3", datetime(2025, 2, 15), None, datetime(2025, 2, 15), 135),
        # I_MOVE (January 5 - March 1) spans I_MOVE_B's gap (January 20 - February 15)
        ("u4", datetime(2025, 1, 5), None, datetime(2025, 1, 5), 176),
    ]
    assert query(
        warehouse,
        "select user_id, cumulative_users from marts.inactive_user_candidates "
        "where plan_id = 'P_MOVE' order by cumulative_users",
    ) == [("u4", 1), ("u1", 2), ("u3", 3)]
    # each instance's own access is unchanged: user_last_seen has the instance they are on
    assert query(
        warehouse,
        "select user_id, instance_id, access_since from marts.user_last_seen "
        "where plan_id = 'P_MOVE' order by user_id",
    ) == [
        ("u1", "I_MOVE_B", datetime(2025, 4, 1, 10)),
        ("u2", "I_MOVE_B", datetime(2025, 3, 1)),
        ("u3", "I_MOVE_B", datetime(2025, 2, 15)),
        ("u4", "I_MOVE_B", datetime(2025, 2, 15)),
    ]


def test_active_on_one_instance_and_invited_on_another_is_active(warehouse: Path) -> None:
    row = current(warehouse, "P_MIX")
    assert (row["user_count"], row["invited_count"]) == (1, 0)
    assert query(
        warehouse,
        "select user_id, access_status, instances_with_access from marts.counted_users "
        "where plan_id = 'P_MIX'",
    ) == [("u1", "active", 2)]


def test_one_user_in_two_plans_is_counted_in_each(warehouse: Path) -> None:
    assert current(warehouse, "P_X1")["user_count"] == 1
    assert current(warehouse, "P_X2")["user_count"] == 1


def test_plan_values_as_written(warehouse: Path) -> None:
    """P_X1's version repeated in a later file: the later row (tier 12). P_X2's tier is
    "+10" and its type " Product ": 10 and product."""
    assert current(warehouse, "P_X1")["user_tier"] == 12
    x2 = current(warehouse, "P_X2")
    assert (x2["user_tier"], x2["plan_type"]) == (10, "product")


def test_offsets_convert_across_month_boundaries(warehouse: Path) -> None:
    months = closings(warehouse, "P_OFF")
    assert months["2025-03"][0] == 1  # u1's grant is 2025-04-01 01:30 UTC
    assert months["2025-04"][0] == 3  # u2's grant is 2025-04-30 23:00 UTC
    assert daily(warehouse, "P_OFF", "2025-03-31")[0] == 1
    assert daily(warehouse, "P_OFF", "2025-04-01")[0] == 2
    assert daily(warehouse, "P_OFF", "2025-04-30")[0] == 3
    # u3's grant, written with a -0200 offset, is 2025-06-01 01:30 UTC
    assert daily(warehouse, "P_OFF", "2025-05-31")[0] == 3
    assert daily(warehouse, "P_OFF", "2025-06-01")[0] == 4


def test_event_at_midnight_on_the_first_belongs_to_the_new_month(warehouse: Path) -> None:
    months = closings(warehouse, "P_MID")
    assert months["2025-01"][0] == 1  # u1 granted 2025-02-01 00:00: February
    assert months["2025-02"][0] == 2  # u0 revoked 2025-03-01 00:00: still in February
    assert months["2025-03"][:4] == (1, 2, 0, 1)
    assert daily(warehouse, "P_MID", "2025-01-31")[0] == 1
    assert daily(warehouse, "P_MID", "2025-02-01")[0] == 2


def test_events_after_the_as_of_instant_are_not_seen(warehouse: Path) -> None:
    row = current(warehouse, "P_AFTER")
    assert row["user_count"] == 1
    assert row["as_of"] == datetime(2025, 7, 1)
    last_day = query(
        warehouse, "select max(day) from marts.plan_user_counts_daily where plan_id = 'P_AFTER'"
    )
    assert last_day == [(AS_OF,)]
    assert query(
        warehouse,
        "select user_id, last_seen_at, days_since_last_seen from marts.user_last_seen "
        "where plan_id = 'P_AFTER'",
    ) == [("u1", datetime(2025, 6, 20, 8, 0, 0, 750000), 10)]  # fractions of a second read
    months = closings(warehouse, "P_AFTER")
    assert list(months) == ["2025-06"]
    assert query(
        warehouse,
        "select is_month_complete from marts.plan_user_counts_monthly where plan_id = 'P_AFTER'",
    ) == [(False,)]


def test_event_for_an_instance_declared_in_a_later_file_counts(warehouse: Path) -> None:
    assert current(warehouse, "P_LATE")["user_count"] == 1
    # I_NEVER is declared nowhere: its event counts in no plan, and no plan appears for it.
    assert query(
        warehouse,
        "select count(*) from marts.user_last_seen where instance_id = 'I_NEVER'",
    ) == [(0,)]


def test_tier_in_force_follows_plan_versions(warehouse: Path) -> None:
    # v2 (25) from 2025-03-15 12:00: day 03-14's instant is 03-15 00:00 -> v1.
    assert daily(warehouse, "P_TIER", "2025-03-14")[2] == 10
    assert daily(warehouse, "P_TIER", "2025-03-15")[2] == 25
    # v3 (50) from 2025-05-01 00:00: day 04-30's instant is exactly then -> v3.
    assert daily(warehouse, "P_TIER", "2025-04-29")[2] == 25
    assert daily(warehouse, "P_TIER", "2025-04-30")[2] == 50
    tiers = query(
        warehouse,
        "select strftime(month, '%Y-%m'), user_tier from marts.plan_user_counts_monthly "
        "where plan_id = 'P_TIER' order by month",
    )
    assert tiers == [
        ("2025-01", 10),
        ("2025-02", 10),
        ("2025-03", 25),
        ("2025-04", 50),
        ("2025-05", 50),
        ("2025-06", 50),
    ]
    row = current(warehouse, "P_TIER")
    assert (row["user_tier"], row["plan_name"]) == (50, "Tier v3")
    # dated exactly at A: in force at A (current, day D, the month of D), and one row
    assert (
        current(warehouse, "P_AT_A")["user_tier"],
        daily(warehouse, "P_AT_A", "2025-06-30")[2],
    ) == (20, 20)
    assert closings(warehouse, "P_AT_A")["2025-06"][0] == 1
    padded = current(warehouse, "P_MON")
    assert (padded["user_tier"], padded["plan_name"]) == (5, "P_MON")
    assert query(
        warehouse, "select instance_name from marts.plan_instances where plan_id = 'P_MON'"
    ) == [("I_MON",)]


def test_before_its_first_version_a_plan_has_that_version(warehouse: Path) -> None:
    # granted 2025-01-10, the only version (tier 4) from 2025-03-01
    assert daily(warehouse, "P_EARLY", "2025-01-10") == (4, 0, 4)
    assert closings(warehouse, "P_EARLY")["2025-01"] == (4, None, 4, 0, 0)
    assert current(warehouse, "P_EARLY")["threshold_status"] == "at_limit"


def test_within_one_file_the_later_row_wins(warehouse: Path) -> None:
    moved_to = current(warehouse, "P_WIN_B")
    assert (moved_to["user_count"], moved_to["billable_count"]) == (1, 0)
    assert current(warehouse, "P_WIN_A")["user_count"] == 0
    assert query(
        warehouse, "select plan_id from marts.plan_instances where instance_id = 'I_WIN'"
    ) == [("P_WIN_B",)]


def test_malformed_rows_are_quarantined_and_good_rows_count(warehouse: Path) -> None:
    assert current(warehouse, "P_BAD")["user_count"] == 1
    rows = query(
        warehouse,
        "select file_name, row_number, reason from quarantine.access_events order by row_number",
    )
    name = "access_events/access_events_004.csv"
    assert [(r[0], r[1]) for r in rows] == [(name, n) for n in (2, 3, 4, 5, 6, 7)]
    reasons = [r[2] for r in rows]
    assert reasons[0] == "missing event_id"
    assert reasons[1] == "missing user_id"
    assert reasons[2] == "unknown action: delete"
    assert reasons[3] == "unparseable occurred_at: yesterday"
    assert reasons[4].startswith("TOO MANY COLUMNS")
    assert reasons[5] == "missing occurred_at"
    # where it is, why, and its values as read: no column of the models' bookkeeping
    columns = [r[0] for r in query(warehouse, "describe quarantine.access_events")]
    assert columns == [
        "file_name", "row_number", "reason", "event_id", "instance_id", "user_id", "action",
        "occurred_at", "occurred_at_text", "raw_line",
    ]  # fmt: skip
    # a quarantined row keeps its values as read, the unparseable one's text included
    kept = query(
        warehouse,
        "select row_number, occurred_at_text, user_id from quarantine.access_events "
        "where row_number in (3, 5) order by 1",
    )
    assert kept[0][2] is None and kept[0][1] is not None  # missing user_id: time as read
    assert kept[1][1] == "yesterday"

    plans = query(warehouse, "select row_number, reason from quarantine.plans order by 1")
    assert plans == [
        (2, "user_tier must be greater than 0: 0"),
        (3, "unparseable user_tier: ten"),
        (4, "unknown plan_type: server"),
        (5, "unparseable updated_at: not a time"),
        (6, "unparseable user_tier: 10.5"),
        (7, "unparseable user_tier: 1e3"),
    ]
    users = query(
        warehouse, "select file_name, row_number, reason from quarantine.users order by 1, 2"
    )
    assert [(file, row, reason.split(":")[0]) for file, row, reason in users] == [
        ("users/users_001.csv", 5, "unknown account_type"),
        ("users/users_001.csv", 6, "unparseable is_billable"),
        ("users/users_003.csv", 5, "unknown account_type"),
        ("users/users_003.csv", 6, "TOO MANY COLUMNS"),
        ("users/users_003.csv", 8, "unparseable is_billable"),
        ("users/users_004.csv", 5, "unknown account_type"),
        ("users/users_004.csv", 6, "MISSING COLUMNS"),
    ]
    assert query(warehouse, "select reason from quarantine.instances") == [("missing instance_id",)]
    assert query(warehouse, "select reason from quarantine.org_admins") == [
        ("not an email address: @x.test",)
    ]
    assert query(warehouse, "select reason, last_seen_at_text from quarantine.last_seen") == [
        ("unparseable last_seen_at: whenever", "whenever")
    ]
    # Quarantined plans are not counted as plans.
    assert query(
        warehouse,
        "select count(*) from marts.plan_user_counts_current where plan_id like 'P_Z%'",
    ) == [(0,)]


def test_the_marts_checks_hold_on_every_case(warehouse: Path) -> None:
    """The critical marts checks (Great Expectations, docs/data-quality.md) pass on the marts
    of every case here, the threshold edges among them (P_T4 at exactly 80%, P_T5 at
    exactly its tier): a check stricter than the rule it guards would fail a correct run.
    validate_marts raises on a critical failure."""
    settings = settings_for(warehouse.parent, warehouse.parent.parent / "landing")
    summary = pipeline.RunSummary(as_of=AS_OF)
    pipeline.validate_marts(settings, summary)
    assert {check.suite for check in summary.checks} == {
        "plan_user_counts_current", "plan_user_counts_daily", "plan_user_counts_monthly",
        "user_last_seen",
    }  # fmt: skip
    assert [c.column for c in summary.checks if c.severity == "critical" and not c.success] == []


def test_the_raw_checks_quarantine_what_the_models_quarantine(
    warehouse: Path, tmp_path: Path
) -> None:
    """docs/data-quality.md: the raw checks apply the base models' row rules. On this
    scenario's accepted spellings (yes and NO, +10, 5.0 with a tab, offsets, spaces and
    capitals) and its bad rows, each source's quarantined rows are the models' count. (The
    scenario breaks more rows than a run allows, so the share's limit is lifted here.)"""
    landing = warehouse.parent.parent / "landing"
    checks = raw_checks(tmp_path / "home", landing, AS_OF, quarantine_max_share=1.0)
    checked = {
        check.suite.removeprefix("raw_"): check.unexpected_count
        for check in checks
        if check.column == "quarantined_share"
    }
    quarantined = {
        source: query(warehouse, f"select count(*) from quarantine.{source}")[0][0]  # noqa: S608
        for source in checked
    }
    assert checked == quarantined
    assert len(checked) == 6 and all(quarantined.values())


def test_a_row_check_fails_closed(tmp_path: Path) -> None:
    """The quarantine's checks (macros/parsing.sql) pass a row only when every condition is
    false: one that is null fails the row, and a reason built from a null column still names
    the check. The base models put each column's blank check first, so neither happens there
    today; this runs the macro itself through dbt, on rows made to hit both."""
    sql = (
        "select c, {{ first_failed_check(["
        "(\"c = 'unknown'\", \"'unknown c: ' || c\"), "
        "(\"v is null or v = 'bad'\", \"'bad v: ' || v\")]) }} as reason "
        "from (values (1, null, 'x'), (2, 'unknown', 'x'), (3, 'ok', null), (4, 'ok', 'bad'), "
        "(5, 'ok', 'x')) as t (n, c, v) order by n"
    )
    work_path = tmp_path / "warehouse.work.duckdb"
    args = dbt_args("show", work_path, "--inline", sql, "--output", "json", "--log-format", "json")
    dbt = Path(sys.executable).with_name("dbt")
    proc = subprocess.run(
        [str(dbt), "--quiet", *args],
        env=dbt_env(work_path, AS_OF),
        cwd=dbt_folder(work_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(json.loads(proc.stdout.strip().splitlines()[-1])["data"]["preview"])
    assert [row["reason"] for row in rows] == [
        "failed check: c = 'unknown'",  # the condition is null: the row fails
        "unknown c: unknown",
        "failed check: v is null or v = 'bad'",  # the reason is null: the check's own text
        "bad v: bad",
        None,
    ]


def test_rows_loaded_count_every_record_the_quarantined_included(warehouse: Path) -> None:
    """meta.runs' rows loaded are the records of the landing files, counted here apart with
    Python's csv module and DuckDB's Parquet reader: the lines the CSV reader rejects (too
    many or too few columns) included, as they are in rows quarantined."""
    landing = warehouse.parent.parent / "landing"
    records = 0
    for path in sorted(landing.rglob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            records += sum(1 for row in csv.reader(fh) if row) - 1  # less the header
    with duckdb.connect() as con:
        for path in sorted(landing.rglob("*.parquet")):
            (rows,) = con.execute("select count(*) from read_parquet(?)", [str(path)]).fetchone()
            records += rows
    quarantined = sum(
        query(warehouse, f"select count(*) from quarantine.{source}")[0][0]  # noqa: S608
        for source in ("plans", "instances", "users", "org_admins", "access_events", "last_seen")
    )
    assert query(warehouse, "select rows_loaded, rows_quarantined from meta.runs") == [
        (records, quarantined)
    ]
    # and the run's as-of date D and its plans, as the current mart has them
    assert query(warehouse, "select as_of_date, plans from meta.runs") == [
        (AS_OF, query(warehouse, "select count(*) from marts.plan_user_counts_current")[0][0])
    ]


def test_csv_and_parquet_in_the_same_source(warehouse: Path) -> None:
    row = current(warehouse, "P_PQ")
    assert (row["user_count"], row["invited_count"]) == (3, 1)


def test_billable_and_non_billable_are_shown_apart(warehouse: Path) -> None:
    row = current(warehouse, "P_BILL")
    # nb and flip are non-billable; b1 and zz (no users row) are billable.
    assert (row["user_count"], row["billable_count"], row["non_billable_count"]) == (4, 2, 2)
    assert row["invited_count"] == 1
    assert closings(warehouse, "P_BILL")["2025-06"][0] == 4
    assert query(
        warehouse,
        "select billable_count from marts.plan_user_counts_monthly "
        "where plan_id = 'P_BILL' and month = '2025-01-01'",
    ) == [(2,)]


@pytest.mark.parametrize(
    ("plan_id", "status", "utilization"),
    [("P_T3", "ok", 0.6), ("P_T4", "approaching", 0.8), ("P_T5", "at_limit", 1.0),
     ("P_T6", "over_limit", 1.2), ("P_MON", "approaching", 0.8)],
)  # fmt: skip
def test_threshold_status(warehouse: Path, plan_id: str, status: str, utilization: float) -> None:
    row = current(warehouse, plan_id)
    assert row["threshold_status"] == status
    assert row["utilization"] == pytest.approx(utilization)
    assert row["notify_at_80"] is True


def test_months_have_no_gaps_and_the_as_of_month_is_incomplete(warehouse: Path) -> None:
    rows = query(
        warehouse,
        "select strftime(month, '%Y-%m'), is_month_complete from marts.plan_user_counts_monthly "
        "where plan_id = 'P_IR' order by month",
    )
    assert rows == [
        ("2025-01", True),
        ("2025-02", True),
        ("2025-03", True),
        ("2025-04", True),
        ("2025-05", True),
        ("2025-06", False),
    ]


def test_invariant_previous_plus_added_minus_removed_is_closing(warehouse: Path) -> None:
    broken = query(
        warehouse,
        "select plan_id, month from marts.plan_user_counts_monthly "
        "where coalesce(previous_closing_balance, 0) + users_added - users_removed "
        "<> closing_balance",
    )
    assert broken == []
    assert query(warehouse, "select count(*) from marts.plan_user_counts_monthly")[0][0] > 100


USERS_HEADER = b"user_id,email,display_name,account_type,is_billable"


def user_row(line: int, extra: bytes = b"") -> bytes:
    """A good users row named after the file line it is written on (L<line>)."""
    return b"L%d,l@x.test,Name,atlassian,true" % line + extra


@pytest.mark.parametrize(
    ("content", "rejected_lines"),
    [
        # a bare carriage return ends each line; line 3 is blank
        (b"\r".join([USERS_HEADER, user_row(2), b"", user_row(4)]) + b"\r", []),
        # a space before the opening quote of a value over two lines, then a blank line
        (b"\n".join([USERS_HEADER, b'L2,l@x.test, "a\nb",atlassian,true', user_row(4), b"",
                     user_row(6, b",surplus"), user_row(7)]), [6]),
        # one column (the others missing): a blank line is a row of its own, not skipped
        (b"\n".join([b"user_id", b"L2", b'"L3', b'x"', b"L5", b"", b"L7"]) + b"\n", []),
    ],
    ids=["bare-cr", "space-before-quote", "one-column"],
)  # fmt: skip
def test_csv_rows_are_numbered_by_the_file_line_they_start_on(
    tmp_path: Path, content: bytes, rejected_lines: list[int]
) -> None:
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "users.csv").write_bytes(content)
    with duckdb.connect(str(tmp_path / "work.duckdb")) as con:
        load_landing(con, tmp_path)
        rows = con.execute("select user_id, _row_number from raw.users").fetchall()
        rejects = con.execute("select row_number from raw.load_rejects order by 1").fetchall()
    named = sorted((user.split("\n")[0], line) for user, line in rows if user is not None)
    assert named == sorted((f"L{line}", line) for _, line in named), rows
    assert len(named) == content.count(b"L") - len(rejected_lines)
    assert [line for (line,) in rejects] == rejected_lines


def load_users_after_the_csv_readers_sample(
    tmp_path: Path, tail: list[bytes], sql: str
) -> tuple[list[tuple], int]:
    """Load a users CSV whose lines 2-21,001 are good rows (past DuckDB's 20,480-row sample)
    followed by `tail`; return the rows `sql` selects and the number of rejected lines."""
    lines = [USERS_HEADER, *(user_row(line) for line in range(2, 21_002)), *tail]
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "users.csv").write_bytes(b"\n".join(lines) + b"\n")
    with duckdb.connect(str(tmp_path / "work.duckdb")) as con:
        load_landing(con, tmp_path)
        rows = con.execute(sql).fetchall()
        rejects = con.execute("select count(*) from raw.load_rejects").fetchone()[0]
    return rows, rejects


def test_quotes_first_used_after_the_csv_readers_sample_are_read_as_quotes(
    tmp_path: Path,
) -> None:
    # DuckDB guesses a CSV file's quoting from its first 20,480 rows unless told otherwise;
    # here the first quoted values come after 21,000 rows.
    quoted, rejects = load_users_after_the_csv_readers_sample(
        tmp_path,
        [b'Q1,q@x.test,"Doe, Jane",atlassian,false', b'"",q@x.test,Empty,atlassian,true'],
        "select user_id, display_name, is_billable, _row_number from raw.users "
        "where email = 'q@x.test' order by _row_number",
    )
    # the empty quoted user_id is read as missing (the base model quarantines the row)
    assert quoted == [("Q1", "Doe, Jane", "false", 21_002), (None, "Empty", "true", 21_003)]
    assert rejects == 0


def test_an_unclosed_quote_after_the_csv_readers_sample_loses_no_row(tmp_path: Path) -> None:
    # With the quote character fixed instead of detected, DuckDB's reader drops every row
    # after an unclosed quote that comes after its sample, and rejects none of them.
    last, _ = load_users_after_the_csv_readers_sample(
        tmp_path,
        [b'L21002,"l@x.test,Name,atlassian,true', user_row(21_003), user_row(21_004)],
        "select user_id, email, _row_number from raw.users "
        "where _row_number > 21_001 order by _row_number",
    )
    # the row is read as it is, and the rows after it count
    assert last == [
        ("L21002", '"l@x.test', 21_002),
        ("L21003", "l@x.test", 21_003),
        ("L21004", "l@x.test", 21_004),
    ]


def test_a_file_name_duckdb_would_read_as_a_glob_is_refused_not_widened(tmp_path: Path) -> None:
    """`users_0002*.csv` as a path is a pattern to DuckDB's reader: it would read
    `users_0002b.csv` as well. The file is refused whole, naming why; the other counts once."""
    (tmp_path / "users").mkdir()
    header = b"user_id,email,display_name,account_type,is_billable\n"
    (tmp_path / "users" / "users_0002*.csv").write_bytes(header + b"u1,a@x.example,A,atlassian,\n")
    (tmp_path / "users" / "users_0002b.csv").write_bytes(header + b"u2,b@x.example,B,atlassian,\n")
    with duckdb.connect(str(tmp_path / "work.duckdb")) as con:
        load_landing(con, tmp_path)
        rows = con.execute("select user_id, _file_name from raw.users order by 1").fetchall()
        rejects = con.execute("select file_name, reason from raw.load_rejects").fetchall()
    assert rows == [("u2", "users/users_0002b.csv")]
    assert rejects == [
        ("users/users_0002*.csv", "file could not be read: its path has a * or ?: rename it")
    ]
