"""The nightly schedule: the flow served as a Prefect deployment on a cron schedule.

Scheduling needs a real Prefect server (the temporary one cannot schedule): start one with
`prefect server start` and point PREFECT_API_URL at it before `usercounts serve`.
"""

from __future__ import annotations

from typing import Any

from usercounts.config import Settings

DEPLOYMENT_NAME = "nightly"


def build_deployment(settings: Settings, cron: str | None = None) -> Any:
    """The nightly deployment: the flow with this machine's paths, on the cron schedule."""
    from prefect.schedules import Cron

    from flows.nightly import nightly

    parameters = {"landing": str(settings.landing), "database": str(settings.published_path)}
    if settings.outbox is not None:
        parameters["outbox"] = str(settings.outbox)
    return nightly.to_deployment(
        name=DEPLOYMENT_NAME,
        schedule=Cron(cron or settings.schedule_cron, timezone=settings.schedule_timezone),
        parameters=parameters,
        description="usercounts: the nightly user-count job",
        tags=["usercounts"],
    )


def serve(settings: Settings, cron: str | None = None) -> None:
    """Register the deployment and run its scheduled flow runs until interrupted."""
    from prefect import serve as prefect_serve

    deployment = build_deployment(settings, cron)
    print(
        f"usercounts: serving '{deployment.flow_name}/{DEPLOYMENT_NAME}' on "
        f"'{cron or settings.schedule_cron}' ({settings.schedule_timezone}); Ctrl-C stops"
    )
    prefect_serve(deployment)
