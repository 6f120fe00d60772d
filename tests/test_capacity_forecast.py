"""marts.capacity_forecast: its dbt unit tests, and the mart on a real build.

The forecast rules are pinned by dbt unit tests (models/marts/_capacity_forecast__models.yml:
flat, growing, shrinking, short history, tier change, noisy, ladder boundaries); they run
here against a real working database. The end-to-end test checks the mart built from
access events through the counting models and the real tier ladder seed.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from conftest import Landing, build_warehouse, query

from usercounts.build import run_dbt
from usercounts.config import Settings

AS_OF = date(2026, 11, 15)


def grants(instance: str, when: str, users: list[str]) -> list[dict[str, str]]:
    return [
        {
            "event_id": f"{instance}-{when}-{user}",
            "occurred_at": f"{when}T09:00:00Z",
            "instance_id": instance,
            "user_id": user,
            "action": "grant",
        }
        for user in users
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("forecast")
    landing = Landing(root / "landing")
    landing.write(
        "plans",
        [
            # grows by 2 a month: 10 at the end of May ... 20 at the end of October, 21 now
            landing.plan("grow", 40, renewal_date="2027-05-15"),
            # one complete month (October: 9); no trend
            landing.plan("new", 10, product_key="confluence", renewal_date="2027-01-15"),
        ],
    )
    landing.write(
        "instances",
        [
            {"instance_id": "grow-1", "plan_id": "grow"},
            {"instance_id": "new-1", "plan_id": "new"},
        ],
    )
    events = grants("grow-1", "2026-05-05", [f"g{n:02d}" for n in range(10)])
    for n, month in enumerate(("06", "07", "08", "09", "10")):
        events += grants("grow-1", f"2026-{month}-05", [f"g{10 + 2 * n}", f"g{11 + 2 * n}"])
    events += grants("grow-1", "2026-11-05", ["g20"])
    events += grants("new-1", "2026-10-10", [f"n{n}" for n in range(9)])
    landing.write("access_events", events)
    return build_warehouse(landing.root, root / "data", AS_OF)


def test_dbt_unit_tests_of_the_forecast_pass(built: Settings) -> None:
    result = run_dbt("test", built.work_path, AS_OF, "--select", "capacity_forecast,test_type:unit")
    assert result.statuses == {"pass": 8}


def forecast(database: Path, plan_id: str) -> dict[str, object]:
    columns = [
        "user_count",
        "trend_months",
        "trend_users_per_month",
        "trend_r2",
        "projected_user_count_at_renewal",
        "projected_80_date",
        "projected_limit_date",
        "recommended_tier",
        "recommended_tier_status",
        "confidence",
        "urgency",
    ]
    sql = f"select {', '.join(columns)} from marts.capacity_forecast where plan_id = ?"  # noqa: S608
    (row,) = query(database, sql, [plan_id])
    return dict(zip(columns, row, strict=True))


def test_growing_plan_from_access_events(built: Settings) -> None:
    # month ends May..Oct: 10, 12, ..., 20: slope 2 a month, a perfect fit; 21 now.
    # 32 (80% of 40) after 11 * 30.4375 / 2 = 167.4 days -> day 168 = 2027-05-02;
    # 40 after 19 * 30.4375 / 2 = 289.2 days -> day 290 = 2027-09-01;
    # renewal 181 days on: 21 + 2 * 181 / 30.4375 = 32.89 -> 32.8 (rounded down); the seed's
    # jira-software ladder has ... 30, 35 ...: 35.
    assert forecast(built.published_path, "grow") == {
        "user_count": 21,
        "trend_months": 6,
        "trend_users_per_month": 2.0,
        "trend_r2": 1.0,
        "projected_user_count_at_renewal": 32.8,
        "projected_80_date": date(2027, 5, 2),
        "projected_limit_date": date(2027, 9, 1),
        "recommended_tier": 35,
        "recommended_tier_status": "on_ladder",
        "confidence": "ok",
        "urgency": "crosses_80_before_renewal",
    }


def test_one_month_of_history_has_no_trend(built: Settings) -> None:
    # 9 of 10 (at 80%): the projection holds 9, which the confluence ladder's 10 holds
    assert forecast(built.published_path, "new") == {
        "user_count": 9,
        "trend_months": 1,
        "trend_users_per_month": None,
        "trend_r2": None,
        "projected_user_count_at_renewal": 9.0,
        "projected_80_date": None,
        "projected_limit_date": None,
        "recommended_tier": 10,
        "recommended_tier_status": "on_ladder",
        "confidence": "short_history",
        "urgency": "approaching",
    }
