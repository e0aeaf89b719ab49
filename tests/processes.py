"""Helpers for tests that run ``fbe`` or ``scripts/ui.sh`` as real processes."""

from __future__ import annotations

import os
from pathlib import Path


def cli_env(home: Path, sample: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``fbe`` process on its own ``FBE_HOME`` and the sample data, with
    the demo config (trigger 30) and none of the caller's ``FBE_*`` / ``DAGSTER_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FBE_", "DAGSTER_"))}
    env.update(
        FBE_HOME=str(home),
        FBE_SAMPLE_DATA=str(sample),
        FBE_SCORING_CONFIG='{"trigger_score": 30}',
        **extra,
    )
    return env
