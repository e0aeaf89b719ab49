"""Dagster resources: settings and stores, configured from the environment."""

from resources.fbe import (
    RawStoreResource,
    ScoringConfigResource,
    raw_store_from_env,
    scoring_from_env,
)
from resources.warehouse_io import FbeWarehouseIOManager, warehouse_io_from_env

__all__ = [
    "FbeWarehouseIOManager",
    "RawStoreResource",
    "ScoringConfigResource",
    "raw_store_from_env",
    "scoring_from_env",
    "warehouse_io_from_env",
]
