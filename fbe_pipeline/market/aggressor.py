"""Aggressor side of trades: the source's when it has one, else Lee-Ready, else the tick rule.

References
----------
Lee, C. M. C. and Ready, M. J. (1991), "Inferring Trade Direction from Intraday Data",
Journal of Finance 46(2): a trade above the prevailing quote midpoint is buyer-initiated, below
it seller-initiated; at the midpoint the tick rule decides. Tick rule: a trade on an up-tick (or
zero-up-tick) is a buy, on a down-tick (or zero-down-tick) a sell.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIDE_METHODS = ("source", "lee_ready", "tick_rule", "none")


def tick_rule(price: np.ndarray) -> np.ndarray:
    """Classify trades by the tick rule.

    Parameters
    ----------
    price : numpy.ndarray
        float64 trade prices, shape (n,), in trade order.

    Returns
    -------
    numpy.ndarray
        int8, shape (n,): +1 (up-tick or zero-up-tick), -1 (down-tick or zero-down-tick), 0
        while no price change has been seen yet.
    """
    if len(price) == 0:
        return np.zeros(0, dtype=np.int8)
    step = np.sign(np.diff(price, prepend=price[0])).astype(np.int8)
    idx = np.where(step != 0, np.arange(len(step)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, step[np.maximum(idx, 0)], 0).astype(np.int8)


def consolidated_quotes(quotes: pd.DataFrame) -> pd.DataFrame:
    """Best bid and offer across venues from one-sided per-venue quote updates.

    Each venue's latest bid and latest ask are carried forward; the consolidated bid is the
    maximum and the ask the minimum over venues at every quote event.

    Parameters
    ----------
    quotes : pandas.DataFrame
        L1 quotes (:data:`fbe_pipeline.market.frames.QUOTE_COLUMNS`), NaN for a side a row does not
        carry.

    Returns
    -------
    pandas.DataFrame
        Columns ``ts_event`` (int64 ns UTC), ``bid_px``, ``ask_px`` (float64), one row per quote
        event in ``(ts_event, seq)`` order.
    """
    q = quotes.sort_values(["ts_event", "seq"], kind="stable")
    venue = q["exchange"].astype(str).to_numpy()
    venues = np.unique(venue)
    n = len(q)
    bid = np.full(n, -np.inf)
    ask = np.full(n, np.inf)
    bid_px = q["bid_px"].to_numpy(np.float64)
    ask_px = q["ask_px"].to_numpy(np.float64)
    for v in venues:
        mine = venue == v
        for px, out, better in ((bid_px, bid, np.fmax), (ask_px, ask, np.fmin)):
            vals = np.where(mine, px, np.nan)
            idx = np.where(~np.isnan(vals), np.arange(n), -1)
            np.maximum.accumulate(idx, out=idx)
            carried = np.where(idx >= 0, vals[np.maximum(idx, 0)], np.nan)
            better(out, carried, out=out)
    bid[np.isinf(bid)] = np.nan
    ask[np.isinf(ask)] = np.nan
    return pd.DataFrame(
        {"ts_event": q["ts_event"].to_numpy(np.int64), "bid_px": bid, "ask_px": ask}
    )


def resolve_sides(ticks: pd.DataFrame, quotes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add the aggressor sign to raw ticks.

    The source's side is kept where it is ``buy``/``sell``; otherwise Lee-Ready against the
    consolidated quote strictly before the trade (when ``quotes`` is given and that quote is
    two-sided and not crossed or locked), otherwise the tick rule over the ticks' price sequence.

    Parameters
    ----------
    ticks : pandas.DataFrame
        Raw ticks (:data:`fbe_pipeline.market.frames.TICK_COLUMNS`) sorted by ``(ts_event, seq)``.
    quotes : pandas.DataFrame, optional
        L1 quotes of the same symbol and day.

    Returns
    -------
    pandas.DataFrame
        A copy of ``ticks`` with ``side`` filled in, plus ``side_sign`` (int8: +1 buy, -1 sell,
        0 unknown) and ``side_method`` (one of :data:`SIDE_METHODS`).
    """
    out = ticks.copy()
    n = len(out)
    src = out["side"].to_numpy()
    sign = np.where(src == "buy", 1, np.where(src == "sell", -1, 0)).astype(np.int8)
    method = np.where(sign != 0, "source", "none").astype(object)
    price = out["price"].to_numpy(np.float64)
    todo = sign == 0
    if todo.any() and quotes is not None and len(quotes):
        nbbo = consolidated_quotes(quotes)
        pos = np.searchsorted(nbbo["ts_event"].to_numpy(), out["ts_event"].to_numpy(), "left") - 1
        has = pos >= 0
        bid = np.where(has, nbbo["bid_px"].to_numpy()[np.maximum(pos, 0)], np.nan)
        ask = np.where(has, nbbo["ask_px"].to_numpy()[np.maximum(pos, 0)], np.nan)
        usable = todo & (bid < ask)
        mid = (bid + ask) / 2.0
        lr = np.where(price > mid, 1, np.where(price < mid, -1, 0)).astype(np.int8)
        decided = usable & (lr != 0)
        sign[decided] = lr[decided]
        method[decided] = "lee_ready"
        todo = sign == 0
    if todo.any():
        tr = tick_rule(price)
        decided = todo & (tr != 0)
        sign[decided] = tr[decided]
        method[decided] = "tick_rule"
    out["side"] = np.where(sign > 0, "buy", np.where(sign < 0, "sell", "unknown"))
    out["side_sign"] = sign
    out["side_method"] = method if n else np.array([], dtype=object)
    return out
