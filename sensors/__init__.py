"""Sensors and schedules: react to new raw data; verify the raw store on a schedule."""

from sensors.raw_data import new_raw_data_sensor, pipeline_job
from sensors.schedules import integrity_schedule

__all__ = ["integrity_schedule", "new_raw_data_sensor", "pipeline_job"]
