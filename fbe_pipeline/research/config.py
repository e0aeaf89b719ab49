"""The scoring/backtest admin configuration (SPEC §8) and its content-addressed version."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ScoringConfig:
    """Thresholds and weights of the false-breakout score, plus backtest parameters.

    Attributes
    ----------
    wick_ratio_threshold, vol_ratio_threshold, poke_max_atr, churn_threshold : float
        Component thresholds (SPEC §3): unitless ratios; ``poke_max_atr`` in ATR units.
    weight_wick, weight_vol, weight_poke, weight_book_churn, weight_delta : float
        Points each component adds to the 0-100 score.
    trigger_score : float
        A signal fires when the score is at least this.
    slippage_base : float
        Slippage as a fraction of price (0.0002 = 2 basis points) before the volume term.
    slippage_vol_coeff : float
        Multiplier of ``vol_ratio`` in the slippage model.
    heartbeat_interval_ms : int
        Live heartbeat interval, ms.
    paper_mode : bool
        Paper trading only.
    decision_latency_ms : int
        Time from bar close to the decision being available, ms (>= 0).
    execution_latency_ms : int
        Time from decision to entry fill, ms (> 0, so entries come strictly after decisions).
    stop_atr_buffer : float
        Stop distance beyond the poke extreme, in ATR units.
    time_stop_bars : int
        Bars after entry at whose close an open trade is closed.
    cost_bps : float
        Commission and fees per side, basis points of notional.
    """

    wick_ratio_threshold: float = 0.7
    vol_ratio_threshold: float = 0.6
    poke_max_atr: float = 0.5
    churn_threshold: float = 1.0
    weight_wick: float = 30
    weight_vol: float = 20
    weight_poke: float = 10
    weight_book_churn: float = 20
    weight_delta: float = 20
    trigger_score: float = 70
    slippage_base: float = 0.0002
    slippage_vol_coeff: float = 1.0
    heartbeat_interval_ms: int = 5000
    paper_mode: bool = True
    decision_latency_ms: int = 0
    execution_latency_ms: int = 250
    stop_atr_buffer: float = 0.25
    time_stop_bars: int = 10
    cost_bps: float = 0.5

    def __post_init__(self) -> None:
        # One spelling per value (30 and 30.0 are the same weight), so that equal configs have
        # the same content hash however they were written (JSON, the versioned store, code).
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
        if self.execution_latency_ms <= 0 or self.decision_latency_ms < 0:
            raise ValueError("execution_latency_ms must be > 0 and decision_latency_ms >= 0")
        if self.time_stop_bars < 1:
            raise ValueError("time_stop_bars must be >= 1")

    @property
    def version(self) -> str:
        """First 12 hex digits of the SHA-256 of the canonical JSON of every field."""
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> ScoringConfig:
        """Build from a dict, rejecting unknown keys with a clear error.

        Raises
        ------
        ValueError
            On an unknown key or an invalid value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown scoring config keys: {unknown}")
        return cls(**raw)  # type: ignore[arg-type]

    def to_json(self) -> str:
        """Canonical JSON of the config."""
        return json.dumps(asdict(self), sort_keys=True)
