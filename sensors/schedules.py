"""Schedules: the raw store integrity job (hourly by default, ``FBE_INTEGRITY_CRON``)."""

import os

from dagster import DefaultScheduleStatus, ScheduleDefinition

from assets.integrity import integrity_job

integrity_schedule = ScheduleDefinition(
    name="raw_integrity_hourly",
    job=integrity_job,
    cron_schedule=os.environ.get("FBE_INTEGRITY_CRON", "0 * * * *"),
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
