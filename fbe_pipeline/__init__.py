"""FBE, the False Breakout Engine: the domain core (no Dagster import) plus ``definitions``."""

__version__ = "0.1.0"
