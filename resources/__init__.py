"""Dagster resources: settings and stores, configured from the environment."""

from resources.duckdb_io import FbeDuckDBIOManager
from resources.fbe import (
    RawStoreResource,
    ScoringConfigResource,
    raw_store_from_env,
    scoring_from_env,
)

__all__ = [
    "FbeDuckDBIOManager",
    "RawStoreResource",
    "ScoringConfigResource",
    "raw_store_from_env",
    "scoring_from_env",
]
