"""Sensors: react to new raw data in the store."""

from sensors.raw_data import new_raw_data_sensor

__all__ = ["new_raw_data_sensor"]
