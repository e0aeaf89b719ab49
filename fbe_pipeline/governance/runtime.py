"""The versioned configuration of one ``$FBE_HOME``: its store with the scoring and execution
sections, the market hours that decide whether a change needs a second approver, and the
settings in effect for runs, the detector and the gateway."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from fbe_pipeline.governance.config import SCORING, ConfigStore, Section
from fbe_pipeline.governance.limits import ExecutionConfig
from fbe_pipeline.governance.monitors import MonitorThresholds
from fbe_pipeline.market.instruments import Instrument, load_instruments
from fbe_pipeline.market.sessions import assign_trading_dates
from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.db import database_url, engine_for, upgrade
from fbe_pipeline.research.config import ScoringConfig

EXECUTION = Section("execution", ExecutionConfig(), lambda values: ExecutionConfig(**values))
MONITORING = Section("monitors", MonitorThresholds(), lambda values: MonitorThresholds(**values))


def seed_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The first version's values: ``FBE_SCORING_CONFIG`` and ``FBE_EXECUTION_CONFIG``.

    Raises
    ------
    ValueError
        When either is not a JSON object.
    """
    seed: dict[str, Any] = {}
    for name in ("FBE_SCORING_CONFIG", "FBE_EXECUTION_CONFIG"):
        raw = json.loads(env.get(name) or "{}")
        if not isinstance(raw, dict):
            raise ValueError(f"{name} must be a JSON object")
        seed.update(raw)
    return seed


def market_hours(engine: Engine, instruments: Mapping[str, Instrument]) -> Callable[[int], bool]:
    """``now_ns -> bool``: whether an instrument the desk trades (one with an automation; with
    none yet, every registered instrument) is in session by its exchange calendar."""

    def in_hours(now_ns: int) -> bool:
        with Session(engine) as s:
            traded = set(s.scalars(select(m.Automation.symbol)).all())
        scope = [instruments[x] for x in traded if x in instruments] or list(instruments.values())
        return any(assign_trading_dates(i, np.array([now_ns]))[1][0] for i in scope)

    return in_hours


def config_store(
    home: Path, env: Mapping[str, str] | None = None, seed_scoring: str | None = None
) -> ConfigStore:
    """The config store of ``home`` (operational store migrated), seeded from ``env``;
    ``seed_scoring`` (JSON) replaces ``FBE_SCORING_CONFIG`` in the seed.

    Raises
    ------
    ValueError
        On a malformed seed.
    """
    env = dict(os.environ if env is None else env)
    if seed_scoring is not None:
        env["FBE_SCORING_CONFIG"] = seed_scoring
    engine = engine_for(database_url(home, env))
    upgrade(engine)
    instruments = load_instruments(home / "instruments.yaml")
    return ConfigStore(
        engine,
        [SCORING, EXECUTION, MONITORING],
        market_hours(engine, instruments),
        seed_from_env(env),
    )


def split(values: Mapping[str, Any]) -> tuple[ScoringConfig, ExecutionConfig]:
    """A version's flat settings as the scoring config and the execution limits."""
    return (
        ScoringConfig.from_dict({k: values[k] for k in SCORING.keys}),
        ExecutionConfig(**{k: values[k] for k in EXECUTION.keys}),
    )


def thresholds(values: Mapping[str, Any]) -> MonitorThresholds:
    """A version's monitor thresholds (defaults for a version older than the section)."""
    return MonitorThresholds(**{k: values[k] for k in MONITORING.keys if k in values})
