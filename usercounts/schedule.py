"""The nightly schedule: the flow served as a Prefect deployment on a cron schedule.

Scheduling needs a real Prefect server (the temporary one cannot schedule): start one with
`prefect server start` and point PREFECT_API_URL at it before `usercounts serve`.
"""

from __future__ import annotations

from typing import Any

from usercounts.config import Settings
from usercounts.errors import UsageError

DEPLOYMENT_NAME = "nightly"


def build_deployment(settings: Settings, cron: str | None = None) -> Any:
    """The nightly deployment: the flow with this machine's paths, on the cron schedule."""
    from prefect.schedules import Cron

    from flows.nightly import nightly

    cron = cron or settings.schedule_cron
    try:
        schedule = Cron(cron, timezone=settings.schedule_timezone)
    except ValueError as exc:  # the option or USERCOUNTS_SCHEDULE_CRON
        raise UsageError(f"{exc} (five fields: minute hour day month weekday)") from None
    parameters = {"landing": str(settings.landing), "database": str(settings.published_path)}
    if settings.outbox is not None:
        parameters["outbox"] = str(settings.outbox)
    return nightly.to_deployment(
        name=DEPLOYMENT_NAME,
        schedule=schedule,
        parameters=parameters,
        description="usercounts: the nightly user-count job",
        tags=["usercounts"],
    )


def serve(settings: Settings, cron: str | None = None) -> None:
    """Register the deployment and run its scheduled flow runs until interrupted."""
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        # Prefect would serve against a temporary server of its own that never schedules.
        raise UsageError(
            "usercounts serve needs a running Prefect server: start one with `prefect server "
            "start` and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )

    deployment = build_deployment(settings, cron)
    print(
        f"usercounts: serving '{deployment.flow_name}/{DEPLOYMENT_NAME}' on "
        f"'{cron or settings.schedule_cron}' ({settings.schedule_timezone}); Ctrl-C stops"
    )
    prefect_serve(deployment)
