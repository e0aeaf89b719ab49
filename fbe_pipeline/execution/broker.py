"""Orders, fills and the paper broker (SPEC §5), with the SPEC §3 slippage model.

A :class:`Broker` turns an :class:`OrderIntent` into a :class:`Fill`, a :class:`Rejection`, or
``None`` (no price yet: ask again later). :class:`PaperBroker` is the default broker: it fills an
entry at the first trade at or after ``decision_ns + execution_latency_ms`` (SPEC §4: fill time
>= decision time + latency), moved against the order by the seeded slippage of
:func:`fbe_pipeline.research.slippage.slippage` (key: the signal id) and rounded to the tick in
the adverse direction (:func:`fbe_pipeline.execution.sizing.round_to_tick`). Exits use the same
slippage with the key ``signal_id + ":exit"``, exactly as :mod:`fbe_pipeline.research.backtest`.

Sides are ``+1`` (long) and ``-1`` (short), as in :mod:`fbe_pipeline.research.trade_rules`;
prices are in the instrument's price currency per unit, quantities in units, times in ns UTC.
No database, no Dagster: pandas only for :class:`FrameMarketData` (replays and tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from fbe_pipeline.execution.sizing import ENTRY, EXIT, round_to_tick
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.slippage import slippage
from fbe_pipeline.research.trade_rules import entry_fill, exit_fill

MS_NS = 1_000_000

EXPIRED = "expired"
UNKNOWN_SYMBOL = "unknown_symbol"


def _check_side(side: int) -> None:
    if side not in (1, -1):
        raise ValueError(f"side must be +1 (long) or -1 (short), got {side!r}")


@dataclass(frozen=True)
class OrderIntent:
    """An entry order to send: one per signal (SPEC §5).

    Attributes
    ----------
    order_id : str
        Unique id of the order (the caller derives it from the signal id, so re-runs and
        duplicate sensor ticks map to the same order).
    signal_id : str
        The signal's id; seeds the slippage draw.
    symbol : str
        Instrument symbol.
    side : int
        ``+1`` buy to open a long, ``-1`` sell to open a short.
    qty : float
        Units, > 0 (sized by :func:`fbe_pipeline.execution.sizing.order_quantity`).
    decision_ns : int
        Decision time, ns UTC (the signal's ``decision_time``).
    valid_until_ns : int
        Last trade time at which the order may still fill, ns UTC (>= ``decision_ns``).
    reference_price : float
        The signal bar's close, price currency: the price the decision saw, against which
        realized slippage is measured.
    vol_ratio : float
        The signal bar's volume ratio (slippage model input; NaN counts as 1).
    stop, target : float
        The bracket levels of the trade, price currency.

    Raises
    ------
    ValueError
        If ``side`` is not +1 / -1, ``qty`` is not finite and > 0, ``valid_until_ns <
        decision_ns``, or ``reference_price``, ``stop`` or ``target`` is not finite.
    """

    order_id: str
    signal_id: str
    symbol: str
    side: int
    qty: float
    decision_ns: int
    valid_until_ns: int
    reference_price: float
    vol_ratio: float
    stop: float
    target: float

    def __post_init__(self) -> None:
        _check_side(self.side)
        if not (math.isfinite(self.qty) and self.qty > 0):
            raise ValueError(f"order {self.order_id}: qty must be finite and > 0, got {self.qty}")
        if self.valid_until_ns < self.decision_ns:
            raise ValueError(f"order {self.order_id}: valid_until_ns is before decision_ns")
        for name in ("reference_price", "stop", "target"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"order {self.order_id}: {name} must be finite")


@dataclass(frozen=True)
class Fill:
    """An executed order.

    Attributes
    ----------
    order_id : str
        The filled order.
    ts_ns : int
        Fill time, ns UTC (the time of the trade it filled against).
    price : float
        Fill price, slippage included, on the tick grid; price currency.
    qty : float
        Units filled.
    reference_price : float
        The price the order was decided on (entry: the signal bar's close; exit: the exit
        reference price), price currency.
    estimated_slippage : float
        The model's expected slippage per unit, price currency: the SPEC §3 formula at
        ``reference_price`` with ``U = 1`` (:func:`expected_slippage`).
    realized_slippage : float
        Adverse distance per unit between the fill and the reference, price currency:
        ``order_side * (price - reference_price)`` with ``order_side`` +1 for a buy and -1 for
        a sell (entry of a long: ``side * (fill - reference)``); positive = paid.
    """

    order_id: str
    ts_ns: int
    price: float
    qty: float
    reference_price: float
    estimated_slippage: float
    realized_slippage: float


@dataclass(frozen=True)
class Rejection:
    """An order that will not fill.

    Attributes
    ----------
    order_id : str
        The refused order.
    reason : str
        Machine-readable reason: ``"expired"`` (no trade between the fill time and
        ``valid_until_ns``) or ``"unknown_symbol"`` (no instrument, hence no tick).
    detail : str
        Human-readable explanation with the times / prices involved.
    """

    order_id: str
    reason: str
    detail: str


class MarketData(Protocol):
    """Source of trades for fills."""

    def next_trade(self, symbol: str, after_ns: int) -> tuple[int, float] | None:
        """The first trade of ``symbol`` with ``ts_event >= after_ns``.

        Returns
        -------
        (int, float) or None
            ``(ts_event ns UTC, price in price currency)``, or ``None`` when there is no such
            trade (yet).
        """
        ...


class Broker(Protocol):
    """An execution venue behind the gateway (paper by default, SPEC §5)."""

    name: str

    def submit(
        self, intent: OrderIntent, market: MarketData, now_ns: int
    ) -> Fill | Rejection | None:
        """Try to execute ``intent`` at wall-clock ``now_ns`` (ns UTC).

        Returns
        -------
        Fill, Rejection or None
            ``None`` when no price is available yet: submit again later.
        """
        ...


def expected_slippage(price: float, vol_ratio: float, config: ScoringConfig) -> float:
    """Expected slippage per unit: the SPEC §3 model with its uniform draw at its mean ``U = 1``.

    ``price * slippage_base * (1 + slippage_vol_coeff * vol_ratio)``, NaN ``vol_ratio`` counting
    as 1 and a negative one as 0, as :func:`fbe_pipeline.research.slippage.slippage` does.

    Parameters
    ----------
    price : float
        Reference price, price currency.
    vol_ratio : float
        The signal bar's volume ratio.
    config : ScoringConfig
        ``slippage_base`` and ``slippage_vol_coeff``.

    Returns
    -------
    float
        Price currency per unit, >= 0 for a positive price.
    """
    vr = 1.0 if math.isnan(vol_ratio) else max(vol_ratio, 0.0)
    return price * config.slippage_base * (1.0 + config.slippage_vol_coeff * vr)


def exit_slippage_key(signal_id: str) -> str:
    """Seed key of an exit's slippage draw: ``signal_id + ":exit"`` (as the backtest, rule 7)."""
    return f"{signal_id}:exit"


class PaperBroker:
    """Simulated fills on real trades with the SPEC §3 slippage model (the default broker).

    Parameters
    ----------
    config : ScoringConfig
        ``execution_latency_ms``, ``slippage_base`` and ``slippage_vol_coeff``.
    instruments : mapping of str to Instrument
        Instruments by symbol (their ``tick_size`` rounds fill prices).
    """

    name = "paper"

    def __init__(self, config: ScoringConfig, instruments: Mapping[str, Instrument]) -> None:
        self.config = config
        self.instruments = dict(instruments)

    def submit(
        self, intent: OrderIntent, market: MarketData, now_ns: int
    ) -> Fill | Rejection | None:
        """Fill an entry order on the first trade at or after the decision plus the latency.

        Rules, in order:

        1. unknown symbol: ``Rejection("unknown_symbol")``;
        2. the first trade ``(t, p)`` with ``t >= decision_ns + execution_latency_ms`` that is
           already known at ``now_ns`` (``t <= now_ns``: a replay over a whole day never fills
           on a trade that has not happened yet, SPEC §4);
        3. such a trade after ``valid_until_ns``: ``Rejection("expired")``; no such trade:
           ``Rejection("expired")`` when ``now_ns > valid_until_ns`` (nothing can fill any
           more), else ``None`` (ask again later);
        4. otherwise a :class:`Fill` at ``t``: ``price = round_to_tick(entry_fill(side, p,
           slip), tick, side, "entry")`` with ``slip = slippage(p, vol_ratio, signal_id)``
           (SPEC §3; backtest rule 5) -- a long pays more, a short gets less, and tick
           rounding never improves the fill.

        Parameters
        ----------
        intent : OrderIntent
            The entry order.
        market : MarketData
            Trades to fill against.
        now_ns : int
            Current time, ns UTC.

        Returns
        -------
        Fill, Rejection or None
            See the rules; ``Fill.estimated_slippage`` is :func:`expected_slippage` at the
            signal bar's close, ``Fill.realized_slippage`` ``side * (price -
            reference_price)`` (it includes the market's move since the signal bar closed).
        """
        instrument = self.instruments.get(intent.symbol)
        if instrument is None:
            return Rejection(intent.order_id, UNKNOWN_SYMBOL, f"no instrument {intent.symbol!r}")
        fill_from = intent.decision_ns + self.config.execution_latency_ms * MS_NS
        trade = market.next_trade(intent.symbol, fill_from)
        if trade is not None and trade[0] > now_ns:
            trade = None  # not happened yet at now_ns: no look-ahead in replays
        if trade is None:
            if now_ns > intent.valid_until_ns:
                return Rejection(
                    intent.order_id,
                    EXPIRED,
                    f"no trade of {intent.symbol} from {fill_from} to valid_until "
                    f"{intent.valid_until_ns} (now {now_ns})",
                )
            return None
        ts, price = trade
        if ts > intent.valid_until_ns:
            return Rejection(
                intent.order_id,
                EXPIRED,
                f"first trade of {intent.symbol} at or after {fill_from} is at {ts}, "
                f"after valid_until {intent.valid_until_ns}",
            )
        slip = slippage(price, intent.vol_ratio, intent.signal_id, self.config)
        filled = round_to_tick(
            entry_fill(intent.side, price, slip), instrument.tick_size, intent.side, ENTRY
        )
        return Fill(
            order_id=intent.order_id,
            ts_ns=int(ts),
            price=filled,
            qty=intent.qty,
            reference_price=intent.reference_price,
            estimated_slippage=expected_slippage(
                intent.reference_price, intent.vol_ratio, self.config
            ),
            realized_slippage=intent.side * (filled - intent.reference_price),
        )

    def exit(
        self,
        *,
        order_id: str,
        signal_id: str,
        symbol: str,
        side: int,
        qty: float,
        reference_price: float,
        vol_ratio: float,
        ts_ns: int,
    ) -> Fill:
        """Close a position at a reference price, with the backtest's exit slippage.

        ``price = round_to_tick(exit_fill(side, reference_price, slip), tick, side, "exit")``
        with ``slip = slippage(reference_price, vol_ratio, signal_id + ":exit")`` (backtest
        rule 7): a long gets less, a short pays more, and tick rounding never improves it.

        Parameters
        ----------
        order_id : str
            Id of the closing order.
        signal_id : str
            The position's signal id (seeds the exit slippage draw).
        symbol : str
            Instrument symbol.
        side : int
            The side of the position being closed: ``+1`` long (the exit sells), ``-1`` short.
        qty : float
            Units to close, > 0.
        reference_price : float
            Exit reference price (the stop, the target, a bar's open or close; see
            :func:`fbe_pipeline.research.trade_rules.exit_on_bar`), price currency.
        vol_ratio : float
            The signal bar's volume ratio.
        ts_ns : int
            Exit time, ns UTC.

        Returns
        -------
        Fill
            ``realized_slippage = side * (reference_price - price)`` (adverse for the closing
            order, whose side is ``-side``); ``estimated_slippage`` at ``reference_price``.

        Raises
        ------
        ValueError
            On an unknown symbol, a bad ``side``, a ``qty`` not > 0 or a non-finite reference.
        """
        _check_side(side)
        instrument = self.instruments.get(symbol)
        if instrument is None:
            raise ValueError(f"no instrument {symbol!r}: cannot round the exit of {order_id}")
        if not (math.isfinite(qty) and qty > 0):
            raise ValueError(f"exit {order_id}: qty must be finite and > 0, got {qty}")
        if not math.isfinite(reference_price):
            raise ValueError(f"exit {order_id}: reference_price must be finite")
        slip = slippage(reference_price, vol_ratio, exit_slippage_key(signal_id), self.config)
        filled = round_to_tick(
            exit_fill(side, reference_price, slip), instrument.tick_size, side, EXIT
        )
        return Fill(
            order_id=order_id,
            ts_ns=int(ts_ns),
            price=filled,
            qty=qty,
            reference_price=reference_price,
            estimated_slippage=expected_slippage(reference_price, vol_ratio, self.config),
            realized_slippage=side * (reference_price - filled),
        )


class FrameMarketData:
    """:class:`MarketData` over a frame of trades (replays and tests).

    Parameters
    ----------
    ticks : pandas.DataFrame
        Columns ``symbol`` (str), ``ts_event`` (int64 ns UTC) and ``price`` (float64, price
        currency), any order; e.g. the output of
        :func:`fbe_pipeline.market.sources.tardis.read_tardis_trades`. Trades are ordered by
        ``(ts_event, seq)`` when a ``seq`` column is present, else by ``ts_event`` keeping the
        input order of equal times. When an
        ``ohlc_eligible`` column is present, prints not eligible for OHLC (odd lots, late
        reports) are left out: they are not prices an order could have traded at.

    Raises
    ------
    ValueError
        If a column is missing or a price is not finite.
    """

    def __init__(self, ticks: pd.DataFrame) -> None:
        missing = [c for c in ("symbol", "ts_event", "price") if c not in ticks.columns]
        if missing:
            raise ValueError(f"trades frame lacks columns {missing}")
        if "ohlc_eligible" in ticks.columns:
            ticks = ticks.loc[ticks["ohlc_eligible"].astype(bool)]
        self._by_symbol: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for symbol, group in ticks.groupby("symbol", sort=False):
            # Trades sharing a timestamp: exchange sequence order when known (SPEC §3 orders
            # ticks by (ts_event, sequence)), else input order (stable sort).
            keys = ["ts_event", "seq"] if "seq" in group.columns else ["ts_event"]
            ordered = group.sort_values(keys, kind="stable")
            ts = ordered["ts_event"].to_numpy(np.int64)
            price = ordered["price"].to_numpy(np.float64)
            if not np.isfinite(price).all():
                raise ValueError(f"trades of {symbol}: non-finite price")
            self._by_symbol[str(symbol)] = (ts, price)

    def next_trade(self, symbol: str, after_ns: int) -> tuple[int, float] | None:
        """The first trade of ``symbol`` with ``ts_event >= after_ns`` (binary search).

        Returns
        -------
        (int, float) or None
            ``(ts_event ns UTC, price)``; ``None`` for an unknown symbol or no later trade.
        """
        found = self._by_symbol.get(symbol)
        if found is None:
            return None
        ts, price = found
        i = int(np.searchsorted(ts, after_ns, side="left"))
        if i >= len(ts):
            return None
        return int(ts[i]), float(price[i])
