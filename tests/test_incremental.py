"""Incremental nights give the marts a rebuild from scratch gives, whatever the night brings.

One warehouse is brought up to date night after night (the nightly flow's way); another is
rebuilt from scratch from the same landing folder at the same as-of date. Their marts and
quarantine tables must be equal, and a few figures are checked against hand-worked values.

Night 1 (D1 = 2025-01-31) loads plans P1, P2; instances I1, I2 (P1) and I3 (P2); users u1..u5
(u3 not billable) and the January events (e7, dated after D1, is already in the file).
Night 2 (D2 = 2025-02-28) brings a new events file with e8 (a revoke), a duplicate of e2 (a
different user on I3: must be ignored, the first read wins), e9 dated in January (late) and
e10 dated in March (after D2); a late instances file that declares I4 (events since
January) and moves I2 from P1 to P2; and a users file that makes u1 not billable and gives
u3 (no new event) an email.
Night 3 (D3 = 2025-03-31) brings nothing new but moves the as-of date (e10 appears, and
the last-seen of u2 on I2 on March 20, in night 1's file).

At A = 2025-04-01: I1 has u1 revoked (e8), u2 invited (e2), u5 revoked (e7); I2 has u2
active (e3) and u1 invited (e9); I3 has u3 and u5 (e10) active; I4 has u4 active (e5).
So P1 = {u2} (invited), P2 = {u1 (invited), u2, u3, u4, u5}, billable 3 (u1, u3 are not).
Month ends: P1 Jan {u1, u2, u5}, Feb {u2}, Mar {u2}; P2 Jan {u1, u2, u3, u4}, Feb the same,
Mar + u5. (I2 counts in P2 for the whole history: a plan's instances are as declared now.)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
from conftest import (
    Landing,
    build_warehouse,
    canonical_dump,
    copy_project,
    query,
    run_in_project,
)
from test_counting_rules import ev

from usercounts import incremental, pipeline, quality, workdb
from usercounts.build import dbt_target, run_dbt
from usercounts.load import landing_changes, landing_files, load_landing

D1, D2, D3 = date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 31)


def night_1(landing: Landing) -> None:
    landing.write("plans", [landing.plan("P1", 10), landing.plan("P2", 10)], name="p_1.csv")
    landing.write(
        "instances",
        [
            {"instance_id": "I1", "plan_id": "P1"},
            {"instance_id": "I2", "plan_id": "P1"},
            {"instance_id": "I3", "plan_id": "P2"},
        ],
        name="i_1.csv",
    )
    landing.write(
        "users",
        [
            {"user_id": f"u{n}", "account_type": "atlassian", "is_billable": n != 3}
            for n in range(1, 6)
        ],
        name="u_1.csv",
    )
    landing.write(
        "access_events",
        [
            ev("e1", "2025-01-05T09:00:00Z", "I1", "u1", "grant"),
            ev("e2", "2025-01-06T09:00:00Z", "I1", "u2", "invite"),
            ev("e3", "2025-01-07T09:00:00Z", "I2", "u2", "grant"),
            ev("e4", "2025-01-10T09:00:00Z", "I3", "u3", "grant"),
            ev("e5", "2025-01-20T09:00:00Z", "I4", "u4", "grant"),
            ev("e6", "2025-01-25T09:00:00Z", "I1", "u5", "grant"),
            ev("e7", "2025-02-03T09:00:00Z", "I1", "u5", "revoke"),
        ],
        name="ev_2025-01.csv",
    )
    # Seen after D2: only the as-of date of night 3 uncovers it.
    landing.write(
        "last_seen",
        [{"instance_id": "I2", "user_id": "u2", "last_seen_at": "2025-03-20T10:00:00Z"}],
        name="ls_1.csv",
    )


def night_2(landing: Landing) -> None:
    landing.write(
        "access_events",
        [
            ev("e8", "2025-02-10T09:00:00Z", "I1", "u1", "revoke"),
            ev("e2", "2025-02-11T09:00:00Z", "I3", "u6", "grant"),
            ev("e9", "2025-01-15T09:00:00Z", "I2", "u1", "invite"),
            ev("e10", "2025-03-05T09:00:00Z", "I3", "u5", "grant"),
        ],
        name="ev_2025-02.parquet",
        fmt="parquet",
    )
    landing.write(
        "instances",
        [{"instance_id": "I4", "plan_id": "P2"}, {"instance_id": "I2", "plan_id": "P2"}],
        name="i_2.csv",
    )
    landing.write(
        "users",
        [
            {"user_id": "u1", "account_type": "atlassian", "is_billable": "false"},
            {"user_id": "u3", "email": "u3@new.example", "account_type": "atlassian",
             "is_billable": "false"},
        ],
        name="u_2.csv",
    )  # fmt: skip
    landing.write(
        "last_seen",
        [{"instance_id": "I3", "user_id": "u3", "last_seen_at": "2025-02-20T10:00:00Z"}],
        name="ls_2.csv",
    )


def night_with_file(nights: dict, source: str, name: str, rows: list[dict[str, str]]) -> bool:
    """A night at D3 that brings one file of a source; True when it rebuilt from scratch.

    Also checks that its marts equal a rebuild from scratch of the same landing folder.
    """
    settings = nights["settings"]
    nights["landing"].write(source, rows, name=name)
    build_warehouse(settings.landing, settings.home, D3)
    rebuilt = build_warehouse(settings.landing, settings.home.parent / f"scratch_{name}", D3)
    assert canonical_dump(settings.published_path) == canonical_dump(rebuilt.published_path)
    return builds(settings.home)[-1][1]


def builds(settings_home: Path) -> list[tuple[date, bool]]:
    """(as-of date, rebuilt from scratch) of every build recorded in a working database."""
    work = settings_home / ".warehouse.work.duckdb"
    with duckdb.connect(str(work), read_only=True) as con:
        return con.execute(
            "select as_of_date, full_refresh from raw.builds order by build_number"
        ).fetchall()


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Nights 1-3 built incrementally, and rebuilds from scratch at D2 and D3."""
    root = tmp_path_factory.mktemp("incremental")
    landing = Landing(root / "landing")
    nightly, scratch = root / "nightly", root / "scratch"

    night_1(landing)
    build_warehouse(landing.root, nightly, D1)
    seeds_built = [seeds_in_last_build(nightly)]
    night_2(landing)
    settings = build_warehouse(landing.root, nightly, D2)
    seeds_built.append(seeds_in_last_build(nightly))
    after_2 = canonical_dump(settings.published_path)
    rebuilt = build_warehouse(landing.root, scratch, D2, full_refresh=True)
    seeds_built.append(seeds_in_last_build(scratch))
    scratch_2 = canonical_dump(rebuilt.published_path)
    build_warehouse(landing.root, nightly, D3)
    seeds_built.append(seeds_in_last_build(nightly))
    after_3 = canonical_dump(settings.published_path)
    build_warehouse(landing.root, scratch, D3, full_refresh=True)
    scratch_3 = canonical_dump(rebuilt.published_path)
    return {
        "landing": landing,
        "settings": settings,
        "after_2": after_2,
        "scratch_2": scratch_2,
        "after_3": after_3,
        "scratch_3": scratch_3,
        "builds_after_3": builds(nightly),
        "seeds_built": seeds_built,
    }


def seeds_in_last_build(home: Path) -> list[str]:
    """The seeds the last dbt build in this data folder loaded (dbt's run_results.json)."""
    work_path = home / ".warehouse.work.duckdb"
    results = json.loads((dbt_target(work_path) / "run_results.json").read_text())
    return sorted(
        r["unique_id"].split(".")[-1]
        for r in results["results"]
        if r["unique_id"].startswith("seed.")
    )


def test_nights_2_and_3_were_incremental(nights: dict) -> None:
    assert nights["builds_after_3"] == [(D1, True), (D2, False), (D3, False)]


def test_incremental_nights_keep_the_seeds_the_first_build_loaded(nights: dict) -> None:
    # night 1, night 2, the rebuild from scratch at D2, night 3
    both = ["product_catalogue", "tier_ladder"]
    assert nights["seeds_built"] == [both, [], both, []]


# Nights in one new process, on the project found first on PYTHONPATH: each argument after
# the landing folder and the database is a night's as-of date, or "edit the seed" between two
# nights. Each night prints its build mode and the name the seeds give Jira.
NIGHTS_IN_PROJECT = """
import sys
from datetime import date
from pathlib import Path

import duckdb

import usercounts
from usercounts import pipeline
from usercounts.config import PROJECT_ROOT, Settings

settings = Settings(landing=Path(sys.argv[1]), database=Path(sys.argv[2]))
print(Path(usercounts.__file__).parent.parent)
for step in sys.argv[3:]:
    if step == "edit the seed":
        seed = PROJECT_ROOT / "seeds" / "product_catalogue.csv"
        seed.write_text(seed.read_text().replace("jira,Jira\\n", "jira,Jira Cloud\\n"))
        continue
    summary = pipeline.load_build_publish(settings, date.fromisoformat(step))
    with duckdb.connect(str(settings.work_path), read_only=True) as con:
        sql = "select product_name from seeds.product_catalogue where product_key = 'jira'"
        print(summary.build_mode, "|", con.execute(sql).fetchone()[0])
"""


def test_an_edited_seed_rebuilds_and_is_used_by_the_next_night(
    landing: Landing, tmp_path: Path
) -> None:
    # Incremental nights do not load the seeds again (the nights fixture): an edit to one
    # must reach the next night through the project's fingerprint. The seed is edited in
    # a copy of the project, not in the checkout the other tests run. The nights run in one
    # process, as the benchmark's do: nothing of the project may be kept from one to the next.
    project = copy_project(tmp_path / "project")
    night_1(landing)
    database = tmp_path / "home" / "warehouse.duckdb"
    steps = (D1.isoformat(), D2.isoformat(), "edit the seed", D2.isoformat())
    out = run_in_project(project, NIGHTS_IN_PROJECT, str(landing.root), str(database), *steps)
    ran_in, *nights = out.strip().splitlines()[-4:]
    assert Path(ran_in) == project
    assert nights[:2] == [
        "full rebuild (first build of this warehouse) | Jira",
        "incremental | Jira",
    ]
    assert nights[2].startswith("full rebuild (the dbt project, the raw checks or the tool")
    assert nights[2].endswith(" | Jira Cloud")
    assert seeds_in_last_build(database.parent) == ["product_catalogue", "tier_ladder"]


# A night, then a night whose project is edited between its load and its build, in a new
# process.
EDIT_BETWEEN_LOAD_AND_BUILD = """
import sys
from datetime import date
from pathlib import Path

from usercounts import incremental, pipeline
from usercounts.config import PROJECT_ROOT, Settings

settings = Settings(landing=Path(sys.argv[1]), database=Path(sys.argv[2]))
as_of = date.fromisoformat(sys.argv[3])
pipeline.load_build_publish(settings, as_of)
pipeline.load(settings)
model = PROJECT_ROOT / "models" / "marts" / "plan_instances.sql"
model.write_text(model.read_text() + "\\n-- edited while the run loaded\\n")
pipeline.build(settings, as_of)
print(incremental.reload_reason(settings.work_path, settings.landing, False))
"""


def test_a_project_edited_during_a_night_makes_the_next_night_rebuild(
    landing: Landing, tmp_path: Path
) -> None:
    project = copy_project(tmp_path / "project")
    night_1(landing)
    args = (str(landing.root), str(tmp_path / "home" / "warehouse.duckdb"), D1.isoformat())
    out = run_in_project(project, EDIT_BETWEEN_LOAD_AND_BUILD, *args)
    reason = out.strip().splitlines()[-1]
    assert reason.startswith("the dbt project, the raw checks or the tool versions changed")


# Which edits change the working database's fingerprint, in a copy of the project.
EDITS_AND_FINGERPRINTS = """
import sys

from usercounts import incremental
from usercounts.config import PROJECT_ROOT

for name in sys.argv[1:]:
    before = incremental.fingerprint()
    path = PROJECT_ROOT / name
    path.write_text(path.read_text() + "\\n-- edited\\n")
    print(name, incremental.fingerprint() != before)
"""


def test_the_fingerprint_covers_what_the_kept_tables_are_made_of(tmp_path: Path) -> None:
    """docs/operations.md: an edit to the dbt project or to the raw checks that keep counts of
    the rows they checked rebuilds from scratch; the other checks keep nothing."""
    project = copy_project(tmp_path / "project")
    changes = [
        "dbt_project.yml", "profiles.yml", "models/marts/plan_instances.sql",
        "macros/parsing.sql", "seeds/product_catalogue.csv",
        "expectations/checks/_macros.sql", "expectations/checks/raw_access_events.sql",
        "expectations/checks/raw_last_seen.sql",
    ]  # fmt: skip
    keeps = ["expectations/checks/raw_plans.sql", "expectations/checks/user_last_seen.sql"]
    out = run_in_project(project, EDITS_AND_FINGERPRINTS, *changes, *keeps)
    assert out.splitlines() == [f"{name} True" for name in changes] + [
        f"{name} False" for name in keeps
    ]


def test_a_night_with_a_late_instance_and_a_duplicate_equals_a_rebuild(nights: dict) -> None:
    assert nights["after_2"] == nights["scratch_2"]


def test_a_users_row_alone_reaches_the_user_rows(nights: dict) -> None:
    published = nights["settings"].published_path
    emails = query(
        published,
        "select distinct email from marts.user_last_seen where user_id = 'u3' union all "
        "select distinct email from marts.counted_users where user_id = 'u3'",
    )
    assert emails == [("u3@new.example",), ("u3@new.example",)]


def test_a_night_with_no_new_files_equals_a_rebuild(nights: dict) -> None:
    assert nights["after_3"] == nights["scratch_3"]


def test_hand_worked_figures(nights: dict) -> None:
    published = nights["settings"].published_path
    current = query(
        published,
        "select plan_id, user_count, invited_count, billable_count "
        "from marts.plan_user_counts_current order by plan_id",
    )
    assert current == [("P1", 1, 1, 1), ("P2", 5, 1, 3)]
    monthly = query(
        published,
        "select plan_id, strftime(month, '%m'), closing_balance "
        "from marts.plan_user_counts_monthly order by plan_id, month",
    )
    assert monthly == [
        ("P1", "01", 3), ("P1", "02", 1), ("P1", "03", 1),
        ("P2", "01", 4), ("P2", "02", 4), ("P2", "03", 5),
    ]  # fmt: skip
    # Uncovered by the as-of date alone (u2 has no change of its own on night 3).
    seen = query(
        published,
        "select plan_id, strftime(last_seen_at, '%m-%d'), days_since_last_seen "
        "from marts.user_last_seen where user_id = 'u2' and instance_id = 'I2'",
    )
    assert seen == [("P2", "03-20", 11)]
    assert query(
        published,
        "select strftime(last_seen_at, '%m-%d'), days_since_last_seen "
        "from marts.counted_users where user_id = 'u2' and plan_id = 'P2'",
    ) == [("03-20", 11)]
    # The duplicate of e2 (u6 on I3) is not an event of its own.
    assert query(published, "select count(*) from marts.user_last_seen where user_id = 'u6'") == [
        (0,)
    ]


def test_an_earlier_as_of_date_rebuilds_the_models(nights: dict) -> None:
    settings = nights["settings"]
    build_warehouse(settings.landing, settings.home, D2)
    assert canonical_dump(settings.published_path) == nights["scratch_2"]
    assert builds(settings.home)[-1] == (D2, True)
    build_warehouse(settings.landing, settings.home, D3)
    assert canonical_dump(settings.published_path) == nights["scratch_3"]


def test_a_changed_landing_file_rebuilds_from_scratch(nights: dict) -> None:
    settings = nights["settings"]
    users = nights["landing"].root / "users" / "u_1.csv"
    stat = users.stat()
    os.utime(users, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with duckdb.connect(str(settings.work_path), read_only=True) as con:
        reason = landing_changes(con, landing_files(settings.landing)[0])
    assert reason == "landing file users/u_1.csv changed since it was loaded"
    build_warehouse(settings.landing, settings.home, D3)
    assert builds(settings.home) == [(D3, True)]
    assert canonical_dump(settings.published_path) == nights["scratch_3"]


def test_a_run_that_did_not_finish_makes_the_next_rebuild(nights: dict) -> None:
    settings = nights["settings"]
    # A run is killed after loading, with an incremental table half updated.
    pipeline.load(settings)
    with duckdb.connect(str(settings.work_path)) as con:
        con.execute("delete from intermediate.int_access_state_intervals where user_id = 'u2'")
    assert incremental.marker_path(settings.work_path).exists()
    assert (
        incremental.reload_reason(settings.work_path, settings.landing, False)
        == "the previous run did not finish"
    )
    build_warehouse(settings.landing, settings.home, D3)
    assert builds(settings.home) == [(D3, True)]
    assert not incremental.marker_path(settings.work_path).exists()
    assert canonical_dump(settings.published_path) == nights["scratch_3"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("deleted", "the working copy of the marts is missing"),
        ("header overwritten", "the working database cannot be read"),
    ],
)
def test_a_missing_or_unreadable_working_copy_of_the_marts_makes_the_next_rebuild(
    nights: dict, damage: str, reason: str
) -> None:
    settings = nights["settings"]
    marts = workdb.marts_path(settings.work_path)
    if damage == "deleted":
        marts.unlink()
    else:
        marts.write_bytes(bytes(8192) + marts.read_bytes()[8192:])
    found = incremental.reload_reason(settings.work_path, settings.landing, False)
    assert found is not None and found.startswith(reason)
    build_warehouse(settings.landing, settings.home, D3)
    assert builds(settings.home) == [(D3, True)]
    assert canonical_dump(settings.published_path) == nights["scratch_3"]


def test_a_night_with_only_a_late_event_recomputes_from_its_day(nights: dict) -> None:
    # Dated February 20 (before the last build's as-of date), in a file read after the others:
    # u2, invited on I1, is active there from that day.
    late = [ev("e11", "2025-02-20T09:00:00Z", "I1", "u2", "grant")]
    assert night_with_file(nights, "access_events", "ev_2025-03.csv", late) is False
    invited = query(
        nights["settings"].published_path,
        "select strftime(day, '%m-%d'), invited_count from marts.plan_user_counts_daily "
        "where plan_id = 'P1' and day between '2025-02-19' and '2025-02-20' order by day",
    )
    assert invited == [("02-19", 1), ("02-20", 0)]


def test_an_org_admins_file_alone_reaches_counted_users(nights: dict) -> None:
    # u3's email (night 2) is now an admin's of O1: no event, users row or plan is new.
    admins = [{"org_id": "O1", "email": "U3@new.example", "display_name": "U3"}]
    assert night_with_file(nights, "org_admins", "oa_2025-03.csv", admins) is False
    assert query(
        nights["settings"].published_path,
        "select plan_id, user_id from marts.counted_users where is_org_admin",
    ) == [("P2", "u3")]


def test_a_new_file_sorting_before_loaded_ones_rebuilds(nights: dict) -> None:
    # Read before ev_2025-01.csv: its copy of e1 (u3 on I1) is now the event that counts.
    earlier = [ev("e1", "2025-01-05T09:00:00Z", "I1", "u3", "grant")]
    assert night_with_file(nights, "access_events", "ev_2024-12.csv", earlier) is True
    assert query(
        nights["settings"].published_path,
        "select user_count from marts.plan_user_counts_current where plan_id = 'P1'",
    ) == [(2,)]


def test_a_sighting_from_before_access_began_alone_keeps_inactive_since(nights: dict) -> None:
    # u1 is invited on I2 (P2 since night 2) from January 15 09:00 and was never seen. A night
    # that brings only a sighting of January 14 updates u1's rows in place (no event, users
    # row, plan or admin is new): last seen January 14, inactive since its access began.
    seen = [{"instance_id": "I2", "user_id": "u1", "last_seen_at": "2025-01-14T10:00:00Z"}]
    assert night_with_file(nights, "last_seen", "ls_2025-03.csv", seen) is False
    assert query(
        nights["settings"].published_path,
        "select plan_id, strftime(last_seen_at, '%m-%d'), strftime(inactive_since, '%m-%d %H') "
        "from marts.counted_users where user_id = 'u1'",
    ) == [("P2", "01-14", "01-15 09")]


def test_a_sighting_on_an_instance_the_user_left_raises_inactive_since_in_place(
    tmp_path: Path,
) -> None:
    # u1 moved from I1 to I2 (both P1's) and was never seen on I2; u1 is on P2's I9 too. A
    # night that brings only sightings updates u1's rows in place, as a rebuild has them:
    # on I1 from before the move (P1's row), on I3, P1's but never u1's (no row), on I9
    # (P2's row only).
    landing = Landing(tmp_path / "landing")
    landing.write("plans", [landing.plan("P1", 10), landing.plan("P2", 10)], name="p_1.csv")
    instances = [
        {"instance_id": "I1", "plan_id": "P1"},
        {"instance_id": "I2", "plan_id": "P1"},
        {"instance_id": "I3", "plan_id": "P1"},
        {"instance_id": "I9", "plan_id": "P2"},
    ]
    landing.write("instances", instances, name="i_1.csv")
    moved = [
        ev("m1", "2025-01-05T09:00:00Z", "I1", "u1", "grant"),
        ev("m2", "2025-01-10T09:00:00Z", "I2", "u1", "grant"),
        ev("m3", "2025-01-20T09:00:00Z", "I1", "u1", "revoke"),
        ev("m4", "2025-01-06T09:00:00Z", "I9", "u1", "grant"),
    ]
    landing.write("access_events", moved, name="ev_1.csv")
    nightly = build_warehouse(landing.root, tmp_path / "nightly", D1)
    seen = [
        {"instance_id": "I1", "user_id": "u1", "last_seen_at": "2025-01-15T10:00:00Z"},
        {"instance_id": "I3", "user_id": "u1", "last_seen_at": "2025-02-20T10:00:00Z"},
        {"instance_id": "I9", "user_id": "u1", "last_seen_at": "2025-02-10T10:00:00Z"},
    ]
    landing.write("last_seen", seen, name="ls_1.csv")
    build_warehouse(landing.root, nightly.home, D2)
    assert builds(nightly.home)[-1] == (D2, False)
    rebuilt = build_warehouse(landing.root, tmp_path / "scratch", D2)
    assert canonical_dump(nightly.published_path) == canonical_dump(rebuilt.published_path)
    assert query(
        nightly.published_path,
        "select plan_id, access_since, last_seen_at, inactive_since from marts.counted_users "
        "order by plan_id",
    ) == [
        ("P1", datetime(2025, 1, 5, 9), None, datetime(2025, 1, 15, 10)),
        ("P2", datetime(2025, 1, 6, 9), datetime(2025, 2, 10, 10), datetime(2025, 2, 10, 10)),
    ]


def test_another_landing_folder_rebuilds(nights: dict, tmp_path: Path) -> None:
    settings = nights["settings"]
    assert incremental.reload_reason(settings.work_path, settings.landing, False) is None
    other = tmp_path / "landing"
    shutil.copytree(settings.landing, other)  # the same names, sizes and mtimes
    assert incremental.reload_reason(settings.work_path, other, False) == (
        f"the landing folder changed (was {settings.landing.resolve()})"
    )


def changes_after(tmp_path: Path, landing: Landing, edit: Callable[[], None]) -> str | None:
    """Load a landing folder into a new working database, edit the folder, and say why a
    load could no longer add to what was loaded (None: it can)."""
    with duckdb.connect(str(tmp_path / "work.duckdb")) as con:
        load_landing(con, landing.root)
        edit()
        return landing_changes(con, landing_files(landing.root)[0])


def user_row(user_id: str) -> list[dict[str, str]]:
    return [{"user_id": user_id, "account_type": "atlassian"}]


def test_a_loaded_file_that_is_gone_is_named(tmp_path: Path) -> None:
    landing = Landing(tmp_path / "landing")
    landing.write("users", user_row("u1"), name="u_1.csv")
    landing.write("users", user_row("u2"), name="u_2.csv")
    gone = changes_after(tmp_path, landing, (landing.root / "users" / "u_1.csv").unlink)
    assert gone == "landing file users/u_1.csv was loaded before and is gone"


def test_a_new_users_file_sorting_before_a_loaded_one_is_named(tmp_path: Path) -> None:
    landing = Landing(tmp_path / "landing")
    landing.write("users", user_row("u1"), name="u_1.csv")
    landing.write("users", user_row("u2"), name="u_2.csv")
    found = changes_after(
        tmp_path, landing, lambda: landing.write("users", user_row("u1"), name="u_0.csv")
    )
    assert found == (
        "new landing file users/u_0.csv sorts before users/u_2.csv, which is already loaded"
    )


def test_a_new_events_file_sorting_between_loaded_ones_is_named(tmp_path: Path) -> None:
    """Before the last one loaded is enough: ev_2025-02 sorts after ev_2025-01."""
    landing = Landing(tmp_path / "landing")
    for month in ("01", "03"):
        rows = [ev(f"e{month}", f"2025-{month}-05T09:00:00Z", "I1", "u1", "grant")]
        landing.write("access_events", rows, name=f"ev_2025-{month}.csv")
    late = [ev("e02", "2025-02-05T09:00:00Z", "I1", "u2", "grant")]
    found = changes_after(
        tmp_path, landing, lambda: landing.write("access_events", late, name="ev_2025-02.csv")
    )
    assert found == (
        "new landing file access_events/ev_2025-02.csv sorts before "
        "access_events/ev_2025-03.csv, which is already loaded"
    )


# A second landing folder for nights whose changes reach days already built: an instance
# that moves away from a plan takes the plan's first event days with it, and a plan version
# that moves the plan to another org comes into force as the as-of date moves.
# Night A (D1): P5 has I51 (u1 granted Jan 3) and I52 (u2 granted Jan 10); P6 has I61 (u3
# granted Jan 12); P7 has I71 (u4 granted Jan 4) and a second version, dated March 10, that
# moves it from org O7 to org O8; I81 (u7 granted Jan 5) names plan P8, which no file
# declares yet. Night B (D2): an instances file moves I51 to P6, so P5's first event day is
# January 10 and P6's January 3, and a plans file declares P8 (u7 counts there from
# January 5; no event of u7 is new). Night C (D3): P7's March version is in
# force at A, so every day of P7 shows org O8 (the org in force at A). Night C also brings an
# events file with a late valid copy of m6 (whose January copy has an unknown action: this
# one counts, u6 on I61 from February 16), an invalid copy of m5 (the January copy still
# counts) and a row with no user_id (quarantined only). At A3, P6 = {u1, u3, u5, u6}.
# With no new event for them, night C's users file makes u3 not billable (P6 billable 3),
# its last_seen file brings an older sighting of u3 on I61 (January 20 stays the latest)
# and a first one of u2 on I52, and an org_admins file names O5's admin: u1 (by the email
# of night A's users file).
# Night C is then run again at the same as-of date.


@pytest.fixture(scope="module")
def moves(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("moves")
    landing = Landing(root / "landing")
    nightly, scratch = root / "nightly", root / "scratch"
    landing.write(
        "plans",
        [
            landing.plan("P5", 10, org_id="O5"),
            landing.plan("P6", 10, org_id="O5"),
            landing.plan("P7", 10, org_id="O7"),
            landing.plan("P7", 10, org_id="O8", updated_at="2025-03-10T00:00:00Z"),
        ],
        name="p_1.csv",
    )
    landing.write(
        "instances",
        [
            {"instance_id": "I51", "plan_id": "P5"},
            {"instance_id": "I52", "plan_id": "P5"},
            {"instance_id": "I61", "plan_id": "P6"},
            {"instance_id": "I71", "plan_id": "P7"},
            {"instance_id": "I81", "plan_id": "P8"},
        ],
        name="i_1.csv",
    )
    landing.write(
        "users",
        [{"user_id": "u1", "email": "a@o5.example", "account_type": "atlassian"}],
        name="u_1.csv",
    )
    landing.write(
        "last_seen",
        [{"instance_id": "I61", "user_id": "u3", "last_seen_at": "2025-01-20T10:00:00Z"}],
        name="ls_1.csv",
    )
    landing.write(
        "access_events",
        [
            ev("m1", "2025-01-03T09:00:00Z", "I51", "u1", "grant"),
            ev("m2", "2025-01-10T09:00:00Z", "I52", "u2", "grant"),
            ev("m3", "2025-01-12T09:00:00Z", "I61", "u3", "grant"),
            ev("m4", "2025-01-04T09:00:00Z", "I71", "u4", "grant"),
            ev("m5", "2025-01-15T09:00:00Z", "I61", "u5", "grant"),
            ev("m6", "2025-01-16T09:00:00Z", "I61", "u6", "promote"),
            ev("m8", "2025-01-05T09:00:00Z", "I81", "u7", "grant"),
        ],
        name="ev_2025-01.csv",
    )
    build_warehouse(landing.root, nightly, D1)
    landing.write("instances", [{"instance_id": "I51", "plan_id": "P6"}], name="i_2.csv")
    landing.write("plans", [landing.plan("P8", 10, org_id="O5")], name="p_2.csv")
    settings = build_warehouse(landing.root, nightly, D2)
    after_2 = canonical_dump(settings.published_path)
    rebuilt = build_warehouse(landing.root, scratch, D2, full_refresh=True)
    scratch_2 = canonical_dump(rebuilt.published_path)
    landing.write(
        "access_events",
        [
            ev("m6", "2025-02-16T09:00:00Z", "I61", "u6", "grant"),
            ev("m5", "2025-02-17T09:00:00Z", "I61", "u5", "bogus"),
            ev("m7", "2025-02-18T09:00:00Z", "I61", "", "grant"),
        ],
        name="ev_2025-03.csv",
    )
    landing.write(
        "users",
        [{"user_id": "u3", "account_type": "atlassian", "is_billable": "false"}],
        name="u_2.csv",
    )
    landing.write(
        "last_seen",
        [
            {"instance_id": "I61", "user_id": "u3", "last_seen_at": "2025-01-10T10:00:00Z"},
            {"instance_id": "I52", "user_id": "u2", "last_seen_at": "2025-02-01T10:00:00Z"},
        ],
        name="ls_2.csv",
    )
    landing.write(
        "org_admins",
        [{"org_id": "O5", "email": "a@o5.example", "display_name": "A"}],
        name="oa_1.csv",
    )
    build_warehouse(landing.root, nightly, D3)
    after_3 = canonical_dump(settings.published_path)
    build_warehouse(landing.root, nightly, D3)
    again_3 = canonical_dump(settings.published_path)
    build_warehouse(landing.root, scratch, D3, full_refresh=True)
    return {
        "settings": settings,
        "after_2": after_2,
        "scratch_2": scratch_2,
        "after_3": after_3,
        "again_3": again_3,
        "scratch_3": canonical_dump(rebuilt.published_path),
        "builds": builds(nightly),
    }


def test_an_instance_moving_away_takes_its_days_from_the_plan(moves: dict) -> None:
    assert moves["builds"] == [(D1, True), (D2, False), (D3, False), (D3, False)]
    assert moves["after_2"] == moves["scratch_2"]
    first_days = query(
        moves["settings"].published_path,
        "select plan_id, strftime(min(day), '%m-%d') from marts.plan_user_counts_daily "
        "group by plan_id order by plan_id",
    )
    assert first_days == [("P5", "01-10"), ("P6", "01-03"), ("P7", "01-04"), ("P8", "01-05")]
    counted = query(
        moves["settings"].published_path,
        "select plan_id, user_id from marts.counted_users where plan_id = 'P8'",
    )
    assert counted == [("P8", "u7")]


def test_a_plan_version_moving_it_to_another_org_reaches_every_day(moves: dict) -> None:
    assert moves["after_3"] == moves["scratch_3"]
    orgs = query(
        moves["settings"].published_path,
        "select distinct org_id from marts.plan_user_counts_daily where plan_id = 'P7'",
    )
    assert orgs == [("O8",)]


def test_late_duplicates_and_quarantined_rows_equal_a_rebuild(moves: dict) -> None:
    assert moves["after_3"] == moves["scratch_3"]
    published = moves["settings"].published_path
    p6 = query(
        published,
        "select strftime(day, '%m-%d'), user_count from marts.plan_user_counts_daily "
        "where plan_id = 'P6' and day between '2025-02-15' and '2025-02-16' order by day",
    )
    assert p6 == [("02-15", 3), ("02-16", 4)]
    assert query(
        published, "select user_count from marts.plan_user_counts_current where plan_id = 'P6'"
    ) == [(4,)]


def test_the_same_as_of_date_run_again_equals_a_rebuild(moves: dict) -> None:
    assert moves["again_3"] == moves["scratch_3"]


def test_users_last_seen_and_admins_without_new_events_equal_a_rebuild(moves: dict) -> None:
    assert moves["after_3"] == moves["scratch_3"]
    published = moves["settings"].published_path
    assert query(
        published,
        "select billable_count from marts.plan_user_counts_current where plan_id = 'P6'",
    ) == [(3,)]
    seen = query(
        published,
        "select user_id, strftime(last_seen_at, '%m-%d') from marts.user_last_seen "
        "where user_id in ('u2', 'u3') order by user_id",
    )
    assert seen == [("u2", "02-01"), ("u3", "01-20")]
    admins = query(
        published,
        "select plan_id, user_id from marts.counted_users where is_org_admin order by plan_id",
    )
    assert admins == [("P6", "u1")]


def test_a_plan_nobody_is_counted_in_moving_org_reaches_added_to_org(tmp_path: Path) -> None:
    # u1 had access to P7 (org O7) on January 2-5 only; P7's version of February 10 moves it
    # to O1, so from night 2 on u1 was added to O1 on January 2, not with P1 on January 10.
    # Nobody is counted in P7, and night 2 brings no file: only the as-of date moves.
    landing = Landing(tmp_path / "landing")
    landing.write(
        "plans",
        [
            landing.plan("P1", 10, org_id="O1"),
            landing.plan("P7", 10, org_id="O7"),
            landing.plan("P7", 10, org_id="O1", updated_at="2025-02-10T00:00:00Z"),
        ],
    )
    landing.write(
        "instances",
        [{"instance_id": "I1", "plan_id": "P1"}, {"instance_id": "I7", "plan_id": "P7"}],
    )
    landing.write(
        "access_events",
        [
            ev("a1", "2025-01-02T09:00:00Z", "I7", "u1", "grant"),
            ev("a2", "2025-01-05T09:00:00Z", "I7", "u1", "revoke"),
            ev("a3", "2025-01-10T09:00:00Z", "I1", "u1", "grant"),
        ],
    )
    build_warehouse(landing.root, tmp_path / "nightly", D1)
    nightly = build_warehouse(landing.root, tmp_path / "nightly", D2)
    rebuilt = build_warehouse(landing.root, tmp_path / "scratch", D2)
    assert builds(nightly.home)[-1] == (D2, False)
    assert canonical_dump(nightly.published_path) == canonical_dump(rebuilt.published_path)
    assert query(
        nightly.published_path,
        "select org_id, strftime(added_to_org_at, '%m-%d') from marts.counted_users",
    ) == [("O1", "01-02")]


def test_a_build_run_again_before_it_is_recorded_adds_no_row_twice(
    nights: dict, tmp_path: Path
) -> None:
    """A load's rows are added once even when dbt builds it twice: a first `dbt build` of
    night 2 that was never recorded (as one run by hand would leave), then the run's own
    build of the same load. The base tables keep their unique key's delete for this; the
    per-pair and per-user models append after their pre-hook's delete."""
    landing = Landing(tmp_path / "landing")
    night_1(landing)
    settings = build_warehouse(landing.root, tmp_path / "nightly", D1)
    night_2(landing)
    pipeline.load(settings)
    run_dbt("build", settings.work_path, D2, "--exclude", "test_type:unit", "resource_type:seed")
    pipeline.build(settings, D2)
    assert builds(settings.home) == [(D1, True), (D2, False)]
    with duckdb.connect(str(settings.work_path), read_only=True) as con:
        for source in ("access_events", "users", "last_seen"):
            typed, keys, raw = con.execute(
                f"select count(*), count(distinct (file_name, row_number)), "  # noqa: S608
                f"(select count(*) from raw.{source}) from staging.base_landing__{source}"
            ).fetchone()
            assert typed == keys == raw, source
    # the same landing files as the nights fixture's rebuild from scratch at D2
    assert canonical_dump(workdb.marts_path(settings.work_path)) == nights["scratch_2"]


# ---------------------------------------------------------------- raw checks, load by load


def load_and_check(landing: Path, home: Path, *, check: bool = True) -> dict:
    """Load what is new into a working database and, unless check=False, compute the checks
    of access events and last-seen, as the run does before dbt (the checks keep counts of
    the rows they checked)."""
    home.mkdir(parents=True, exist_ok=True)
    with workdb.connect(home / ".warehouse.work.duckdb") as con:
        load_landing(con, landing, incremental=True)
        if not check:
            return {}
        frame = quality.check_frame(con, ["raw_access_events", "raw_last_seen"], D1)
        checks = con.execute("select count(*) from raw.access_events_check_conflicts")
        return {"checks": frame.iloc[0].to_dict(), "checks_run": checks.fetchone()[0]}


def test_raw_checks_of_each_load_add_up_to_the_checks_of_every_row(tmp_path: Path) -> None:
    """Each load's rows are checked once; the counts must be those of a check of every row
    (a working database that loads all the files at once), whichever loads were checked."""
    landing = Landing(tmp_path / "landing")
    landing.write("plans", [landing.plan("P1", 10)], name="p_1.csv")
    landing.write("instances", [{"instance_id": "I1", "plan_id": "P1"}], name="i_1.csv")
    at = "2025-01-05T09:00:00Z"
    seen = {"instance_id": "I1", "user_id": "u1", "last_seen_at": at}
    loads = {
        1: [
            ev("a1", at, "I1", "u1", "grant"),
            ev("a2", at, "I1", "u2", "grant"),
            ev("a3", at, "I1", "u3", "grant"),
            ev("a3", at, "I1", "u3", "revoke"),  # disagrees within the load
            ev("a4", at, "I9", "u4", "grant"),  # I9 is declared by load 4
            ev("a5", at, "I1", "u5", "promote"),  # quarantined
            ev("a6", at, "I1", "", "grant"),  # quarantined
            ev("", at, "I1", "u0", "grant"),  # quarantined
        ],
        2: [
            ev("a1", at, "I1", "u1", "grant"),  # the same event again: no conflict
            ev(" a2", at, "I1", "u2", "revoke"),  # a2 (padded) disagreeing with load 1
            ev("a3", at, "I1", "u3", "invite"),  # a3 already disagreed: counted once
            ev("a5", at, "I1", "u5", "grant"),  # its load-1 row is quarantined: no conflict
            ev("a7", at, "I1", "u7", "grant"),
            ev("a7", at, "I9", "u7", "grant"),  # disagrees within the load
            ev(" ", at, "I1", "u0", "revoke"),  # quarantined
        ],
        3: [],  # a users file only; the nightly database skips its check
        4: [
            ev("a8", at, "I9", "u8", "grant"),
            ev("a5", at, "I1", "u5", "revoke"),  # disagrees with load 2's usable a5
            ev("a6", at, "I1", "u6", "grant"),  # a6's only earlier row is quarantined,
            ev("a6", at, "I1", "u6", "revoke"),  # and these two disagree
        ],
    }
    last_seen = {
        1: [seen],
        2: [seen, {**seen, "user_id": ""}],
        3: [],
        4: [seen, {**seen, "last_seen_at": "yesterday"}],
    }
    # after the load: events (rows, failed a rule, unknown instance, conflicting ids) and
    # last-seen (rows, missing user, unparseable time, failed a rule)
    expected = {
        1: ((8, 3, 1, 1), (1, 0, 0, 0)),
        2: ((15, 4, 2, 3), (3, 1, 0, 1)),
        4: ((19, 4, 0, 5), (5, 1, 1, 2)),
    }
    checks_run = {1: 1, 2: 2, 4: 3}
    for n in loads:
        if loads[n]:
            landing.write("access_events", loads[n], name=f"ev_{n}.csv")
        if last_seen[n]:
            landing.write("last_seen", last_seen[n], name=f"ls_{n}.csv")
        if n == 3:
            landing.write("users", [{"user_id": "u1", "account_type": "atlassian"}], name="u.csv")
        if n == 4:
            landing.write("instances", [{"instance_id": "I9", "plan_id": "P1"}], name="i_4.csv")
        late = load_and_check(landing.root, tmp_path / "late", check=n == 4)
        if n not in expected:
            load_and_check(landing.root, tmp_path / "nightly", check=False)
            continue
        nightly = load_and_check(landing.root, tmp_path / "nightly")
        scratch = load_and_check(landing.root, tmp_path / f"scratch_{n}")
        assert (nightly["checks_run"], scratch["checks_run"]) == (checks_run[n], 1)
        assert nightly["checks"] == scratch["checks"], n
        row = nightly["checks"]
        figures = (
            tuple(
                row[f"raw_access_events__{c}"]
                for c in (
                    "rows_loaded",
                    "failed_rule_rows",
                    "unknown_instance_rows",
                    "conflicting_event_ids",
                )
            ),
            tuple(
                row[f"raw_last_seen__{c}"]
                for c in (
                    "rows_loaded",
                    "missing_user_id_rows",
                    "unparseable_last_seen_at_rows",
                    "failed_rule_rows",
                )
            ),
        )
        assert figures == expected[n], n
    # one check after four loads (the first check of a database: every row at once)
    assert late["checks_run"] == 1
    assert late["checks"] == nightly["checks"]
