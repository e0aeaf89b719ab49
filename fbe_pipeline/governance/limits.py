"""Limits and sizing of paper execution (issue 9), read from ``FBE_EXECUTION_CONFIG`` (JSON
overrides) until the versioned config of the governance issue replaces it.

Owns :class:`ExecutionConfig`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ExecutionConfig:
    """Risk limits, the first-trades gate, sizing and the paper account.

    Attributes
    ----------
    approval_gate_trades : int
        The first N orders of an automation wait in ``pending_approval`` (SPEC §5: 10).
    max_daily_trades : int
        Orders accepted per automation and trading day; more are rejected ``max_daily_trades``.
    max_daily_drawdown : float
        Loss from the day's opening equity, price currency, that pauses the automation.
    max_daily_drawdown_pct : float
        The same limit in percent of the day's opening equity (the stricter one applies).
    breaker_errors : int
        Consecutive broker errors that trip the circuit breaker (status ``stopped``).
    slippage_ratio_limit : float
        Mean realized / mean estimated slippage over the last ``slippage_window`` entry fills
        above which the automation becomes ``paused_slippage`` (SPEC §5: 1.5).
    slippage_window : int
        K, the number of fills of the slippage monitor.
    stop_file : str
        Path of the STOP file; empty means ``$FBE_HOME/STOP``.
    sizing : str
        ``fixed_qty`` or ``fixed_risk``.
    fixed_qty : float
        Units per order with ``fixed_qty``.
    risk_fraction : float
        Fraction of equity risked per order with ``fixed_risk`` (divided by |entry - stop|).
    starting_equity : float
        Paper account equity at creation, price currency.
    max_notional : float
        Largest position notional (qty x price), price currency.
    lot_size : float
        Quantities are multiples of it.
    validity_bars : int
        Bars after the signal bar during which an order may still fill (default 1: the order
        expires once the bar after the signal bar has closed).
    """

    approval_gate_trades: int = 10
    max_daily_trades: int = 20
    max_daily_drawdown: float = 5_000.0
    max_daily_drawdown_pct: float = 5.0
    breaker_errors: int = 3
    slippage_ratio_limit: float = 1.5
    slippage_window: int = 10
    stop_file: str = ""
    sizing: str = "fixed_qty"
    fixed_qty: float = 1.0
    risk_fraction: float = 0.005
    starting_equity: float = 100_000.0
    max_notional: float = 1_000_000.0
    lot_size: float = 1.0
    validity_bars: int = 1

    def __post_init__(self) -> None:
        positive = ("max_daily_drawdown", "max_daily_drawdown_pct", "starting_equity")
        for name in (*positive, "max_notional", "lot_size", "slippage_ratio_limit"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_daily_trades", "breaker_errors", "slippage_window", "validity_bars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.approval_gate_trades < 0:
            raise ValueError("approval_gate_trades must be >= 0")
        if self.sizing not in ("fixed_qty", "fixed_risk"):
            raise ValueError(f"sizing must be fixed_qty or fixed_risk, got {self.sizing!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExecutionConfig:
        """Defaults overridden by the JSON object in ``FBE_EXECUTION_CONFIG``.

        Raises
        ------
        ValueError
            On malformed JSON, an unknown key or an invalid value.
        """
        env = os.environ if env is None else env
        raw = json.loads(env.get("FBE_EXECUTION_CONFIG") or "{}")
        if not isinstance(raw, dict):
            raise ValueError("FBE_EXECUTION_CONFIG must be a JSON object")
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown execution config keys: {unknown}")
        return cls(**raw)

    def to_json(self) -> str:
        """Canonical JSON of the config."""
        return json.dumps(asdict(self), sort_keys=True)
