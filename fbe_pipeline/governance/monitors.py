"""Monitors (issue 10, SPEC §7): the known ways a live automation loses money before anyone
notices, each a pure function of its input with a severity, listed in one place
(:data:`MONITORS`; ``fbe monitors`` prints it, the ``monitors`` sensor evaluates it into the
Dagster UI and the alert outbox).

=========================  ========  ======================================================
monitor                    severity  fires when
=========================  ========  ======================================================
``low_liquidity_share``    WARN      > ``low_liquidity_share_max`` (30 %) of the last
                                     ``low_liquidity_signals`` (50) signals of a symbol fall
                                     in its low-liquidity window (the ``midday`` session tag:
                                     11:30-13:00 local, e.g. IST for NSE)
``slippage_ratio``         ERROR     mean realized / estimated slippage over the last
                                     ``slippage_window`` (10) fills > ``slippage_ratio_limit``
                                     (1.5); the gateway also sets ``paused_slippage``
``clock_drift``            WARN      p99 of ``ts_recv - ts_event`` of recent live ticks >
                                     ``drift_p99_max_ms`` (100 ms)
``integrity``              ERROR     the raw store's integrity job found a problem
``failed_blocking_checks`` ERROR     a blocking asset check failed on its latest run
=========================  ========  ======================================================

Thresholds are keys of the versioned configuration (section ``monitors``, plus the execution
limits for slippage).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import time as dtime
from typing import Any

import numpy as np
import pandas as pd

from fbe_pipeline.market.instruments import Instrument

OK, WARN, ERROR = "OK", "WARN", "ERROR"
LOW_LIQUIDITY_TAG = "midday"


@dataclass(frozen=True)
class MonitorThresholds:
    """The monitors' thresholds (versioned configuration, section ``monitors``).

    Attributes
    ----------
    low_liquidity_share_max : float
        Largest share (0-1) of recent signals inside the low-liquidity window.
    low_liquidity_signals : int
        How many of a symbol's latest signals the share is taken over (>= 1).
    drift_p99_max_ms : float
        Largest p99 of receive minus event time of live ticks, ms (> 0).
    drift_ticks : int
        How many of a symbol's latest live ticks the p99 is taken over (>= 1).
    """

    low_liquidity_share_max: float = 0.30
    low_liquidity_signals: int = 50
    drift_p99_max_ms: float = 100.0
    drift_ticks: int = 10_000

    def __post_init__(self) -> None:
        if not 0 <= self.low_liquidity_share_max <= 1:
            raise ValueError("low_liquidity_share_max must lie within 0-1")
        if self.low_liquidity_signals < 1 or self.drift_ticks < 1:
            raise ValueError("low_liquidity_signals and drift_ticks must be >= 1")
        if not self.drift_p99_max_ms > 0:
            raise ValueError("drift_p99_max_ms must be > 0")


@dataclass(frozen=True)
class Monitor:
    """One entry of :data:`MONITORS`."""

    name: str
    severity: str
    threshold: str
    description: str


MONITORS = (
    Monitor(
        "low_liquidity_share",
        WARN,
        "low_liquidity_share_max, low_liquidity_signals",
        "share of a symbol's latest signals in its low-liquidity (midday) window",
    ),
    Monitor(
        "slippage_ratio",
        ERROR,
        "slippage_ratio_limit, slippage_window",
        "mean realized / estimated slippage of an automation's latest fills",
    ),
    Monitor(
        "clock_drift",
        WARN,
        "drift_p99_max_ms, drift_ticks",
        "p99 of ts_recv - ts_event of a symbol's latest live ticks, ms",
    ),
    Monitor("integrity", ERROR, "", "findings of the raw store's integrity job"),
    Monitor(
        "failed_blocking_checks", ERROR, "", "blocking asset checks failed on their latest run"
    ),
)
SEVERITY = {mon.name: mon.severity for mon in MONITORS}


@dataclass(frozen=True)
class MonitorResult:
    """One evaluation.

    Attributes
    ----------
    monitor : str
        A name of :data:`MONITORS`.
    subject : str
        What it is about (a symbol, an automation, ``raw store``, ``checks``).
    severity : str
        ``OK`` when quiet, else the monitor's severity.
    value : float or None
        The measured figure (None when there was nothing to measure).
    threshold : float or None
    detail : str
        For people: what was measured over what.
    metadata : dict
        Extra figures for the UI.
    """

    monitor: str
    subject: str
    severity: str
    value: float | None
    threshold: float | None
    detail: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def fired(self) -> bool:
        """Whether the monitor fired."""
        return self.severity != OK


def _result(
    name: str,
    subject: str,
    fired: bool,
    value: float | None,
    threshold: float | None,
    detail: str,
    **metadata: Any,
) -> MonitorResult:
    return MonitorResult(
        name, subject, SEVERITY[name] if fired else OK, value, threshold, detail, metadata
    )


def low_liquidity_window(instrument: Instrument) -> tuple[dtime, dtime] | None:
    """The instrument's low-liquidity window (its ``midday`` session tag), local time; None
    when it has none (a 24/7 venue, say)."""
    for tag, start, end in instrument.session_tags:
        if tag == LOW_LIQUIDITY_TAG:
            return start, end
    return None


def low_liquidity_share(
    signals: pd.DataFrame, instrument: Instrument, thresholds: MonitorThresholds
) -> MonitorResult:
    """Share of the latest ``low_liquidity_signals`` signals of ``instrument`` whose bar opens
    inside its low-liquidity window.

    Parameters
    ----------
    signals : pandas.DataFrame
        At least ``symbol`` and ``ts`` (bar open, ``datetime64[ns, UTC]``), any order, any
        symbols (others are ignored).
    """
    name = "low_liquidity_share"
    window = low_liquidity_window(instrument)
    mine = signals.loc[signals["symbol"] == instrument.symbol]
    if window is None or mine.empty:
        why = "no low-liquidity window" if window is None else "no signals"
        return _result(
            name, instrument.symbol, False, None, thresholds.low_liquidity_share_max, why
        )
    latest = pd.DatetimeIndex(mine["ts"]).sort_values()[-thresholds.low_liquidity_signals :]
    local = latest.tz_convert(instrument.tz).time
    inside = np.array([window[0] <= t < window[1] for t in local])
    share = float(inside.mean())
    return _result(
        name,
        instrument.symbol,
        share > thresholds.low_liquidity_share_max,
        share,
        thresholds.low_liquidity_share_max,
        f"{int(inside.sum())} of the latest {len(inside)} signals in "
        f"{window[0]:%H:%M}-{window[1]:%H:%M} {instrument.tz}",
        signals=len(inside),
        inside=int(inside.sum()),
    )


def slippage_ratio(
    fills: pd.DataFrame, automation: str, limit: float, window: int
) -> MonitorResult:
    """Mean realized over mean estimated slippage of the latest ``window`` fills.

    Parameters
    ----------
    fills : pandas.DataFrame
        ``ts_ns`` (int), ``realized_slippage`` and ``estimated_slippage`` (price currency per
        unit, >= 0) of one automation's fills.
    limit : float
        ``slippage_ratio_limit`` (1.5).
    window : int
        ``slippage_window`` (10); the monitor waits for a full window.
    """
    name = "slippage_ratio"
    latest = fills.sort_values("ts_ns").tail(window)
    estimated = float(latest["estimated_slippage"].sum())
    if len(latest) < window or estimated <= 0:
        return _result(name, automation, False, None, limit, f"{len(latest)} of {window} fills")
    ratio = float(latest["realized_slippage"].sum()) / estimated
    return _result(
        name,
        automation,
        ratio > limit,
        ratio,
        limit,
        f"over the latest {window} fills",
        fills=len(latest),
    )


def clock_drift(
    drift_ms: Iterable[float], symbol: str, thresholds: MonitorThresholds
) -> MonitorResult:
    """p99 of the receive-minus-event times of a symbol's latest live ticks.

    Parameters
    ----------
    drift_ms : iterable of float
        ``ts_recv - ts_event`` per tick, ms, oldest first (the latest ``drift_ticks`` count).
    """
    name = "clock_drift"
    values = np.asarray(list(drift_ms), dtype=np.float64)[-thresholds.drift_ticks :]
    if not len(values):
        return _result(name, symbol, False, None, thresholds.drift_p99_max_ms, "no live ticks")
    p99 = float(np.percentile(values, 99))
    return _result(
        name,
        symbol,
        p99 > thresholds.drift_p99_max_ms,
        p99,
        thresholds.drift_p99_max_ms,
        f"p99 over the latest {len(values)} live ticks",
        ticks=len(values),
        p50_ms=float(np.percentile(values, 50)),
    )


def integrity(findings: pd.DataFrame) -> MonitorResult:
    """The integrity job's findings (``problem``, ``key``); fires on any."""
    detail = "; ".join(f"{r.problem}: {r.key}" for r in findings.head(5).itertuples())
    return _result(
        "integrity",
        "raw store",
        len(findings) > 0,
        float(len(findings)),
        0.0,
        detail or "no findings",
        findings=len(findings),
    )


def failed_blocking_checks(failed: list[str]) -> MonitorResult:
    """Blocking asset checks whose latest evaluation failed (``asset:check[partition]``)."""
    return _result(
        "failed_blocking_checks",
        "checks",
        bool(failed),
        float(len(failed)),
        0.0,
        ", ".join(failed[:10]) or "none failed",
        failed=len(failed),
    )
