"""Managing an open paper position bar by bar with the backtest's exit rules (SPEC §3, §5).

:func:`on_bar_close` is :func:`fbe_pipeline.research.trade_rules.scan_exit` unrolled one bar at a
time, with the exit fill, time and PnL of :func:`fbe_pipeline.research.backtest.run_backtest`
(its docstring rules 6-8), using the same functions of :mod:`fbe_pipeline.research.trade_rules`
and :mod:`fbe_pipeline.research.slippage` in the same order, so a position fed the backtest's
entry and the session's bars exits at the same bar, for the same reason, at the same price and
PnL. Stop and target are one-cancels-other: a position has one exit.

Prices are not rounded to the tick here, exactly as in the backtest; the paper broker's
:meth:`fbe_pipeline.execution.broker.PaperBroker.exit` gives the tick-rounded fill of the same
reference price. Sides are ``+1`` long / ``-1`` short; prices in the instrument's price currency
per unit; quantities in units; times ns UTC. No database, no Dagster, no pandas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from fbe_pipeline.execution.broker import exit_slippage_key
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.slippage import slippage
from fbe_pipeline.research.trade_rules import (
    close_exit_reason,
    exit_fill,
    exit_on_bar,
    trade_pnl,
)

BAR_NS = 60_000_000_000  # a bar t covers [t, t + 60 s) (SPEC §3)


@dataclass(frozen=True)
class OpenPosition:
    """A filled entry still open.

    Attributes
    ----------
    order_id : str
        The entry order's id.
    signal_id : str
        The signal's id (seeds the exit slippage: ``signal_id + ":exit"``).
    symbol : str
        Instrument symbol.
    side : int
        ``+1`` long, ``-1`` short.
    qty : float
        Units held, > 0.
    entry_price : float
        Entry fill price, slippage included, price currency.
    entry_ns : int
        Entry fill time, ns UTC.
    stop, target : float
        The bracket levels, price currency.
    bars_held : int
        Bars already closed with the position open (0 until the bar containing the entry
        closes; :func:`advance` adds one).
    vol_ratio : float
        The signal bar's volume ratio: the exit slippage input (backtest rule 7). Not in the
        original field list of the brief, but the exit fill cannot be reproduced without it.

    Raises
    ------
    ValueError
        If ``side`` is not +1 / -1, ``qty`` is not finite and > 0, ``bars_held < 0``, or a
        price is not finite.
    """

    order_id: str
    signal_id: str
    symbol: str
    side: int
    qty: float
    entry_price: float
    entry_ns: int
    stop: float
    target: float
    bars_held: int
    vol_ratio: float

    def __post_init__(self) -> None:
        if self.side not in (1, -1):
            raise ValueError(f"position {self.order_id}: side must be +1 or -1, got {self.side}")
        if not (math.isfinite(self.qty) and self.qty > 0):
            raise ValueError(f"position {self.order_id}: qty must be finite and > 0")
        if self.bars_held < 0:
            raise ValueError(f"position {self.order_id}: bars_held must be >= 0")
        for name in ("entry_price", "stop", "target"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"position {self.order_id}: {name} must be finite")


@dataclass(frozen=True)
class ExitDecision:
    """How and when a position closes (backtest rules 6-8).

    Attributes
    ----------
    reason : str
        ``"stop"``, ``"target"``, ``"time_stop"`` or ``"session_end"``.
    reference_price : float
        Exit reference before slippage (the stop, the target, the bar's open for a stop already
        crossed at the open, or the bar's close), price currency.
    fill_price : float
        ``reference_price - side * slip`` with the seeded exit slippage, price currency.
    slippage : float
        The exit slippage per unit, price currency, >= 0.
    exit_ns : int
        The exit bar's close (``bar ts + 60 s``; an intrabar stop or target is stamped at its
        bar's close), never before the entry; ns UTC.
    bars_held : int
        Bars the position was open, the entry bar being bar 1.
    pnl_per_unit : float
        ``side * (fill - entry) - cost_per_unit``, price currency per unit.
    cost_per_unit : float
        ``cost_bps / 1e4 * (entry + fill)``, price currency per unit.
    pnl : float
        ``qty * pnl_per_unit``, price currency.
    r_multiple : float
        ``pnl_per_unit / |entry_price - stop|`` (the backtest's R); NaN when the entry fill
        sits exactly at the stop (no initial risk to measure against).
    """

    reason: str
    reference_price: float
    fill_price: float
    slippage: float
    exit_ns: int
    bars_held: int
    pnl_per_unit: float
    cost_per_unit: float
    pnl: float
    r_multiple: float


def advance(position: OpenPosition) -> OpenPosition:
    """The position after a bar it survived (``bars_held + 1``); call when
    :func:`on_bar_close` returned ``None``."""
    return replace(position, bars_held=position.bars_held + 1)


def on_bar_close(
    position: OpenPosition,
    bar: Mapping[str, float],
    last_session_bar: bool,
    config: ScoringConfig,
) -> ExitDecision | None:
    """Whether the position closes during or at the close of ``bar``, as the backtest decides.

    Call it for every closed bar from the one during which the entry filled (bar 1, as the
    backtest applies its exit scan from the entry bar) in time order, with :func:`advance`
    between bars. Steps (backtest rules 6-8):

    1. :func:`~fbe_pipeline.research.trade_rules.exit_on_bar` on the bar's open / high / low: a
       stop already crossed at the open exits at the open; a touched stop at the stop (a bar
       touching both levels is a stop); a touched target at the target;
    2. else :func:`~fbe_pipeline.research.trade_rules.close_exit_reason` with ``bars_held + 1``
       bars: the time stop or the session's end exits at the close;
    3. the fill: ``exit_fill(side, reference, slippage(reference, vol_ratio, signal_id +
       ":exit"))``; the time: ``max(bar ts + 60 s, entry_ns)``; PnL:
       :func:`~fbe_pipeline.research.trade_rules.trade_pnl` with ``cost_bps``.

    Parameters
    ----------
    position : OpenPosition
        The open position.
    bar : mapping
        The closed 1-minute bar: ``open``, ``high``, ``low``, ``close`` (price currency) and
        ``ts`` (the bar's open time, int ns UTC).
    last_session_bar : bool
        This is the session's last bar.
    config : ScoringConfig
        ``time_stop_bars``, ``cost_bps`` and the slippage parameters.

    Returns
    -------
    ExitDecision or None
        ``None`` while the position stays open.

    Raises
    ------
    ValueError
        If the bar closed before the entry (``ts + 60 s <= entry_ns``) or lacks a key.
    """
    try:
        ts = int(bar["ts"])
        bar_open, high, low, close = (float(bar[k]) for k in ("open", "high", "low", "close"))
    except KeyError as exc:
        raise ValueError(f"bar lacks {exc.args[0]!r}") from exc
    if ts + BAR_NS <= position.entry_ns:
        raise ValueError(f"position {position.order_id}: bar {ts} closed before the entry")
    side = position.side
    held = position.bars_held + 1
    hit = exit_on_bar(side, position.stop, position.target, bar_open, high, low)
    if hit is not None:
        reference, reason = float(hit[0]), hit[1]
    else:
        close_reason = close_exit_reason(held, config.time_stop_bars, last_session_bar)
        if close_reason is None:
            return None
        reference, reason = close, close_reason
    slip = slippage(reference, position.vol_ratio, exit_slippage_key(position.signal_id), config)
    fill = exit_fill(side, reference, slip)
    pnl, cost = trade_pnl(side, position.entry_price, fill, config.cost_bps)
    risk = abs(position.entry_price - position.stop)
    return ExitDecision(
        reason=reason,
        reference_price=reference,
        fill_price=fill,
        slippage=slip,
        exit_ns=max(ts + BAR_NS, position.entry_ns),
        bars_held=held,
        pnl_per_unit=pnl,
        cost_per_unit=cost,
        pnl=position.qty * pnl,
        r_multiple=pnl / risk if risk > 0 else math.nan,
    )


def mark_to_market(position: OpenPosition, price: float) -> float:
    """Unrealized PnL of the position at ``price``: ``qty * side * (price - entry_price)``.

    Parameters
    ----------
    position : OpenPosition
        The open position.
    price : float
        Mark price (e.g. the last trade), price currency.

    Returns
    -------
    float
        Price currency, before exit slippage and costs (those are charged by the exit).
    """
    return position.qty * position.side * (price - position.entry_price)
