"""Sensors and schedules: react to new raw data; verify the raw store on a schedule."""

from sensors.raw_data import build_new_raw_data_sensor, build_pipeline_job, pipeline_job_name
from sensors.schedules import integrity_schedule

__all__ = [
    "build_new_raw_data_sensor",
    "build_pipeline_job",
    "integrity_schedule",
    "pipeline_job_name",
]
