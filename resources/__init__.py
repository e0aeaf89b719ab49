"""Dagster resources: settings and stores, configured from the environment (``EnvVar``)."""

from resources.fbe import FbeSettings, RawStoreResource, ScoringConfigResource, environment

__all__ = ["FbeSettings", "RawStoreResource", "ScoringConfigResource", "environment"]
