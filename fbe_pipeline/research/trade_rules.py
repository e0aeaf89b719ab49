"""Per-trade rules of the false-breakout fade (SPEC §3), shared by the backtest and paper trading.

Everything here is a pure function of numbers known at the moment the rule applies, so the
backtest (:mod:`fbe_pipeline.research.backtest`, a loop over a session's bars) and a paper broker
(bar by
bar, as each bar opens and closes) make the same decisions and fills:

1. :func:`bracket_levels` -- stop and target of a signal, or ``None`` when the signal cannot
   trade (incomplete range, NaN ATR or extreme).
2. :func:`entry_decision` -- enter or skip, from the levels and the entry bar's open only
   (never from the slipped fill, whose random draw is not known before the order is sent).
3. :func:`entry_fill` / :func:`exit_fill` -- a reference price moved against the trade by the
   slippage of :mod:`fbe_pipeline.research.slippage`.
4. :func:`exit_on_bar` -- does this bar's open / high / low close the trade at its stop or
   target, and at which reference price; :func:`close_exit_reason` -- does the trade close at
   this bar's close (time stop, session end); :func:`scan_exit` runs both over a bar sequence.
5. :func:`trade_pnl` -- PnL after costs.

Sides are ``+1`` (long) and ``-1`` (short). Prices are in the instrument's price currency per
unit; nothing here reads timestamps (the caller maps bar indices to ns/UTC times). No Dagster,
no pandas: a paper broker may import this module directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LONG = 1
SHORT = -1

STOP = "stop"
TARGET = "target"
TIME_STOP = "time_stop"
SESSION_END = "session_end"
EXIT_REASONS: tuple[str, ...] = (STOP, TARGET, TIME_STOP, SESSION_END)


def _check_side(side: int) -> None:
    if side not in (LONG, SHORT):
        raise ValueError(f"side must be +1 (long) or -1 (short), got {side!r}")


def side_of(direction: str) -> int:
    """``+1`` for ``"long"``, ``-1`` for ``"short"``.

    Raises
    ------
    ValueError
        For any other direction.
    """
    if direction == "long":
        return LONG
    if direction == "short":
        return SHORT
    raise ValueError(f"direction must be 'long' or 'short', got {direction!r}")


def bracket_levels(
    side: int,
    extreme: float,
    atr: float,
    range_high: float,
    range_low: float,
    stop_atr_buffer: float,
) -> tuple[float, float] | None:
    """Stop and target of a signal.

    Parameters
    ----------
    side : int
        ``+1`` long (fading a down poke), ``-1`` short (fading an up poke).
    extreme : float
        The poke extreme: the signal bar's high for a short, its low for a long; price currency.
    atr : float
        The signal bar's ``atr14``, price currency.
    range_high, range_low : float
        The signal bar's range (max high / min low of the prior 20 bars), price currency.
    stop_atr_buffer : float
        Stop distance beyond the extreme, ATR units (>= 0).

    Returns
    -------
    (float, float) or None
        ``(stop, target)`` with ``stop = extreme - side * stop_atr_buffer * atr`` (beyond the
        extreme, away from the trade) and ``target = (range_high + range_low) / 2``; ``None``
        when any input is NaN or infinite: a signal without a complete range or ATR cannot
        trade.

    Raises
    ------
    ValueError
        If ``side`` is not +1 / -1 or ``stop_atr_buffer`` is negative.
    """
    _check_side(side)
    if stop_atr_buffer < 0:
        raise ValueError(f"stop_atr_buffer must be >= 0, got {stop_atr_buffer}")
    if not all(math.isfinite(x) for x in (extreme, atr, range_high, range_low)):
        return None
    stop = extreme - side * stop_atr_buffer * atr
    target = (range_high + range_low) / 2.0
    return stop, target


def entry_decision(side: int, entry_open: float, stop: float, target: float) -> bool:
    """Whether to enter at the entry bar's open.

    Enter only when the open lies strictly between the stop and the target: a long needs
    ``stop < open < target``, a short ``target < open < stop``. An open at or beyond either
    level (equality counts as reached), or a NaN, skips the signal. The decision never looks
    at the slipped fill: its random slippage draw is not known before the order is sent.

    Parameters
    ----------
    side : int
        ``+1`` long, ``-1`` short.
    entry_open, stop, target : float
        The entry bar's open and the :func:`bracket_levels`, price currency.

    Returns
    -------
    bool
        True to send the entry order.

    Raises
    ------
    ValueError
        If ``side`` is not +1 / -1.
    """
    _check_side(side)
    return side * (target - entry_open) > 0 and side * (entry_open - stop) > 0


def entry_fill(side: int, reference: float, slip: float) -> float:
    """Entry fill price: ``reference + side * slip`` (a long pays more, a short gets less).

    ``reference`` is the entry bar's open and ``slip`` (>= 0) the slippage of
    :func:`fbe_pipeline.research.slippage.slippage`, both price currency.
    """
    _check_side(side)
    return reference + side * slip


def exit_fill(side: int, reference: float, slip: float) -> float:
    """Exit fill price: ``reference - side * slip`` (a long gets less, a short pays more).

    ``reference`` is the exit reference price from :func:`exit_on_bar` or the bar's close, and
    ``slip`` (>= 0) its slippage, both price currency.
    """
    _check_side(side)
    return reference - side * slip


def exit_on_bar(
    side: int, stop: float, target: float, bar_open: float, bar_high: float, bar_low: float
) -> tuple[float, str] | None:
    """Whether an open trade exits at its stop or target during a bar, and at what price.

    Checked in this order, the first that applies wins:

    1. the open is at or beyond the stop (long: ``open <= stop``, short: ``open >= stop``):
       the stop is already crossed when the bar opens; exit at the **open** (a stop is a
       market order once triggered, it cannot fill at the better stop level);
    2. the bar touches the stop (long: ``low <= stop``, short: ``high >= stop``): exit at the
       stop. Stop before target: a bar touching both is a stop (the path inside the bar is
       unknown; conservative);
    3. the bar touches the target (long: ``high >= target``, short: ``low <= target``),
       including an open already at or beyond it: exit at the **target**. The target is a
       resting limit order: it never fills better than its limit price, also when the bar
       opens beyond it (conservative; the SPEC leaves this open).

    A touch equal to a level counts. Apply it to every bar the trade is open, the entry bar
    included (there, rule 1 cannot fire after a positive :func:`entry_decision`).

    Parameters
    ----------
    side : int
        ``+1`` long, ``-1`` short.
    stop, target : float
        The trade's levels, price currency.
    bar_open, bar_high, bar_low : float
        The bar's prices, price currency.

    Returns
    -------
    (float, str) or None
        ``(reference price, reason)`` with reason ``"stop"`` or ``"target"``, before slippage
        (see :func:`exit_fill`); ``None`` when the trade stays open through this bar's extremes.

    Raises
    ------
    ValueError
        If ``side`` is not +1 / -1.
    """
    _check_side(side)
    if side * (bar_open - stop) <= 0:
        return bar_open, STOP
    if side * ((bar_low if side > 0 else bar_high) - stop) <= 0:
        return stop, STOP
    if side * ((bar_high if side > 0 else bar_low) - target) >= 0:
        return target, TARGET
    return None


def close_exit_reason(bars_held: int, time_stop_bars: int, last_session_bar: bool) -> str | None:
    """Whether a trade still open at a bar's close exits at that close, and why.

    Parameters
    ----------
    bars_held : int
        Bars the trade has been open including this one; the entry bar is bar 1.
    time_stop_bars : int
        The time stop, bars (>= 1).
    last_session_bar : bool
        This is the session's last bar.

    Returns
    -------
    str or None
        ``"time_stop"`` when ``bars_held >= time_stop_bars`` (also on the session's last bar),
        else ``"session_end"`` on the session's last bar, else ``None`` (stay in the trade).

    Raises
    ------
    ValueError
        If ``bars_held`` or ``time_stop_bars`` is below 1.
    """
    if bars_held < 1 or time_stop_bars < 1:
        raise ValueError("bars_held and time_stop_bars must be >= 1")
    if bars_held >= time_stop_bars:
        return TIME_STOP
    if last_session_bar:
        return SESSION_END
    return None


def scan_exit(
    side: int,
    stop: float,
    target: float,
    bar_open: Sequence[float],
    bar_high: Sequence[float],
    bar_low: Sequence[float],
    bar_close: Sequence[float],
    entry_index: int,
    time_stop_bars: int,
) -> tuple[float, str, int]:
    """Exit of a trade entered at the open of bar ``entry_index``, bar by bar.

    For each bar from the entry bar on: :func:`exit_on_bar`, then, when the trade is still
    open, :func:`close_exit_reason` at the bar's close (exit reference = the close).

    Parameters
    ----------
    side : int
        ``+1`` long, ``-1`` short.
    stop, target : float
        The trade's levels, price currency.
    bar_open, bar_high, bar_low, bar_close : sequence of float
        The session's bars in time order (equal lengths), price currency.
    entry_index : int
        Index of the entry bar.
    time_stop_bars : int
        The time stop, bars (>= 1; the entry bar counts).

    Returns
    -------
    (float, str, int)
        Exit reference price (before slippage), reason (:data:`EXIT_REASONS`) and the index
        of the exit bar.

    Raises
    ------
    ValueError
        If ``entry_index`` is outside the bars, or on a bad ``side`` / ``time_stop_bars``.
    """
    n = len(bar_close)
    if not 0 <= entry_index < n:
        raise ValueError(f"entry_index {entry_index} outside the {n} bars")
    for i in range(entry_index, n):
        hit = exit_on_bar(side, stop, target, bar_open[i], bar_high[i], bar_low[i])
        if hit is not None:
            return float(hit[0]), hit[1], i
        reason = close_exit_reason(i - entry_index + 1, time_stop_bars, i == n - 1)
        if reason is not None:
            return float(bar_close[i]), reason, i
    raise AssertionError("unreachable: the session's last bar always closes the trade")


def trade_pnl(side: int, entry: float, exit_price: float, cost_bps: float) -> tuple[float, float]:
    """PnL of one unit after costs.

    Parameters
    ----------
    side : int
        ``+1`` long, ``-1`` short.
    entry, exit_price : float
        Fill prices (slippage included), price currency.
    cost_bps : float
        Commission and fees per side, basis points of each fill's notional.

    Returns
    -------
    (float, float)
        ``(pnl, cost)``: ``cost = cost_bps / 1e4 * (entry + exit_price)`` and
        ``pnl = side * (exit_price - entry) - cost``, price currency.
    """
    _check_side(side)
    cost = cost_bps / 1e4 * (entry + exit_price)
    return side * (exit_price - entry) - cost, cost
