"""Order sizing and tick rounding of paper execution (SPEC §5).

Pure functions of numbers: no database, no Dagster, no pandas.

Tick rounding
-------------
Every price a paper order or fill carries sits on the instrument's tick grid, and the rounding
direction is always the one that is worse for the position (``side`` is the position's side,
``+1`` long / ``-1`` short, as in :mod:`fbe_pipeline.research.trade_rules`):

==========  ============  ============  ====================================================
kind        long (+1)     short (-1)    why
==========  ============  ============  ====================================================
``entry``   up            down          the opening buy pays more / the opening sell gets
                                        less: an entry fill is never better than the model
``exit``    down          up            the closing sell gets less / the closing buy pays
                                        more: an exit fill is never better than the model
``stop``    down          up            away from the entry: the stop stays beyond the poke
                                        extreme + ATR buffer (never tighter than the rule),
                                        the risk per unit ``|entry - stop|`` used for sizing is
                                        never understated, and a fill at the stop is never
                                        better than the rule's level. On a tick grid, ``low <=
                                        stop`` is unchanged by rounding a long's stop down, so
                                        the stop triggers on exactly the same trades
``target``  down          up            toward the entry: a closing limit order never rests at
                                        a better price than the rule's level (the reward is
                                        never overstated); it may fill one tick earlier, at a
                                        worse price, never at a better one
==========  ============  ============  ====================================================

In short: entries round against a buyer for a long and against a seller for a short; every
closing price (exit fill, stop, target) rounds down for a long and up for a short.

Floats such as ``0.1 + 0.2`` are not exact multiples of a tick; a price within
``1e-9 + 1e-12 * |price / tick|`` ticks of a grid point (far above float artifacts of a few
ulps, far below any real price difference) counts as on that grid point and is not moved. The
result is the nearest float to the decimal ``k * tick`` (so ``3 * 0.1`` gives ``0.3``, not
``0.30000000000000004``).
"""

from __future__ import annotations

import math
from decimal import Decimal

ENTRY = "entry"
EXIT = "exit"
STOP = "stop"
TARGET = "target"
PRICE_KINDS: tuple[str, ...] = (ENTRY, EXIT, STOP, TARGET)

FIXED_QTY = "fixed_qty"
FIXED_RISK = "fixed_risk"
SIZING_METHODS: tuple[str, ...] = (FIXED_QTY, FIXED_RISK)

# Float artifacts of a price or quantity are a few ulps (~2e-16 relative); these tolerances, in
# units of the step (tick or lot), are far above them and far below any meaningful difference.
_ABS_TOL = 1e-9
_REL_TOL = 1e-12


def _steps(value: float, step: float, up: bool) -> int:
    """``value / step`` rounded up or down to an integer, snapping float artifacts first."""
    n = value / step
    nearest = round(n)
    if abs(n - nearest) <= _ABS_TOL + _REL_TOL * abs(n):
        return int(nearest)
    return int(math.ceil(n) if up else math.floor(n))


def _on_grid(steps: int, step: float) -> float:
    # Decimal of the step's shortest repr: 3 * Decimal("0.1") is exactly 0.3, whose nearest
    # float is 0.3 (3 * 0.1 in floats is 0.30000000000000004).
    return float(Decimal(steps) * Decimal(repr(step)))


def round_to_tick(price: float, tick: float, side: int, kind: str) -> float:
    """Round a price to the instrument's tick, in the direction worse for the position.

    See the module docstring for the convention table and the float-artifact tolerance.

    Parameters
    ----------
    price : float
        Price to round, price currency (any finite value; negative prices are allowed).
    tick : float
        The instrument's tick size (:attr:`fbe_pipeline.market.instruments.Instrument.tick_size`),
        price currency, finite and > 0.
    side : int
        The position's side: ``+1`` long, ``-1`` short.
    kind : str
        ``"entry"`` (long up, short down), ``"exit"``, ``"stop"`` or ``"target"`` (long down,
        short up).

    Returns
    -------
    float
        A multiple of ``tick``, price currency; ``price`` itself (up to float representation)
        when it is already on the grid.

    Raises
    ------
    ValueError
        If ``price`` is not finite, ``tick`` is not finite and > 0, ``side`` is not +1 / -1, or
        ``kind`` is unknown.
    """
    if not math.isfinite(price):
        raise ValueError(f"price must be finite, got {price!r}")
    if not (math.isfinite(tick) and tick > 0):
        raise ValueError(f"tick must be finite and > 0, got {tick!r}")
    if side not in (1, -1):
        raise ValueError(f"side must be +1 (long) or -1 (short), got {side!r}")
    if kind not in PRICE_KINDS:
        raise ValueError(f"kind must be one of {PRICE_KINDS}, got {kind!r}")
    up = (side > 0) == (kind == ENTRY)
    return _on_grid(_steps(price, tick, up), tick)


def _check_finite(
    name: str, value: float, *, positive: bool = False, non_negative: bool = False
) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if non_negative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def order_quantity(
    *,
    method: str,
    fixed_qty: float,
    risk_fraction: float,
    equity: float,
    entry: float,
    stop: float,
    lot_size: float,
    max_notional: float,
) -> float:
    """Quantity of an entry order, in units of the instrument, a multiple of ``lot_size``.

    1. Raw quantity: ``fixed_qty`` (method ``"fixed_qty"``), or ``equity * risk_fraction /
       |entry - stop|`` (method ``"fixed_risk"``: the loss at the stop, before slippage and
       costs, is ``risk_fraction`` of equity; the usual fixed-fractional sizing).
    2. Rounded **down** to a multiple of ``lot_size`` (never more risk than budgeted).
    3. Capped so that ``qty * entry <= max_notional``, the cap also rounded down to a lot.

    Parameters
    ----------
    method : str
        ``"fixed_qty"`` or ``"fixed_risk"``.
    fixed_qty : float
        Units per order for ``"fixed_qty"`` (>= 0); ignored by ``"fixed_risk"``.
    risk_fraction : float
        Fraction of equity risked per trade for ``"fixed_risk"``, in ``(0, 1]``; ignored by
        ``"fixed_qty"``.
    equity : float
        Account equity, price currency (>= 0).
    entry : float
        Expected entry price, price currency (> 0).
    stop : float
        The stop level, price currency; must differ from ``entry`` for ``"fixed_risk"``
        (ignored by ``"fixed_qty"``). Pass tick-rounded levels (:func:`round_to_tick`) so the
        risk is the one the orders carry.
    lot_size : float
        Quantity step, units (> 0).
    max_notional : float
        Largest ``qty * entry`` of one order, price currency (> 0; ``math.inf`` for no cap).

    Returns
    -------
    float
        The quantity, units; ``0.0`` when it rounds to less than one lot (the caller refuses
        the order as ``size_zero``). Equality to the cap holds up to float rounding.

    Raises
    ------
    ValueError
        On an unknown ``method``, a negative or non-finite ``equity``, ``lot_size <= 0``,
        ``entry <= 0``, ``max_notional <= 0``, a negative ``fixed_qty``, a ``risk_fraction``
        outside ``(0, 1]``, or ``entry == stop`` (or a risk per unit so small that the
        quantity overflows) for ``"fixed_risk"``; the message names the argument.
    """
    if method not in SIZING_METHODS:
        raise ValueError(f"method must be one of {SIZING_METHODS}, got {method!r}")
    _check_finite("equity", equity, non_negative=True)
    _check_finite("lot_size", lot_size, positive=True)
    _check_finite("entry", entry, positive=True)
    if math.isnan(max_notional) or not max_notional > 0:
        raise ValueError(f"max_notional must be > 0, got {max_notional!r}")
    if method == FIXED_QTY:
        _check_finite("fixed_qty", fixed_qty, non_negative=True)
        raw = fixed_qty
    else:
        _check_finite("risk_fraction", risk_fraction)
        if not 0 < risk_fraction <= 1:
            raise ValueError(f"risk_fraction must be in (0, 1], got {risk_fraction!r}")
        _check_finite("stop", stop)
        risk = abs(entry - stop)
        if risk == 0:
            raise ValueError(f"fixed_risk sizing needs entry != stop, both are {entry!r}")
        raw = equity * risk_fraction / risk
        if not math.isfinite(raw):
            raise ValueError(f"fixed_risk quantity overflows: risk per unit {risk!r} too small")
    lots = _steps(raw, lot_size, up=False)
    if math.isfinite(max_notional):
        lots = min(lots, _steps(max_notional / entry, lot_size, up=False))
    return _on_grid(max(lots, 0), lot_size)
