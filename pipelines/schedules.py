"""Optional periodic refresh per dataset (``refresh_cron`` in the spec)."""

from __future__ import annotations

import dagster as dg

from quiver.resources.spec import DatasetSpec


def refresh_schedule(spec: DatasetSpec, job) -> dg.ScheduleDefinition | None:
    if not spec.refresh_cron:
        return None
    return dg.ScheduleDefinition(
        name=f"{spec.name}_refresh_schedule",
        job=job,
        cron_schedule=spec.refresh_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Refresh {spec.name!r} on {spec.refresh_cron!r} (refresh_cron in the spec).",
    )
