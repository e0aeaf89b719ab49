"""Jobs, automation and schedules: per-instrument jobs, declarative automation over the
observable raw store, and the raw store integrity schedule."""

from sensors.automation import automation_sensor
from sensors.jobs import build_pipeline_job, pipeline_job_name
from sensors.schedules import integrity_schedule

__all__ = ["automation_sensor", "build_pipeline_job", "integrity_schedule", "pipeline_job_name"]
