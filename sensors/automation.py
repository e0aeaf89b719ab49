"""Declarative automation: the sensor that evaluates every asset's automation condition.

The raw store is observed every minute (each lane's ``raw_objects`` source); a session whose
raw data version changed, and every later session whose look-back covers it, is
re-materialized once its inputs' blocking checks passed (:data:`assets.common.REFRESH`).
"""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

automation_sensor = AutomationConditionSensorDefinition(
    "fbe_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Observes the raw store and refreshes the sessions whose inputs changed.",
)
