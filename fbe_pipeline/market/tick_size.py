"""Infer an instrument's tick size and lot size from the prices and quantities it traded at.

The rule (the same for prices and quantities): the increment is the **largest candidate step
that every finite, positive value is a whole multiple of**, within floating-point tolerance.

Candidates are ``m * 10**k`` with ``m`` in ``{1, 2, 2.5, 5}`` and ``MIN_STEP <= step <=
MAX_STEP`` (1e-10 to 1e4). Decimal steps with these mantissas cover the tick tables met in
practice: powers of ten (equities, crypto venues), halves and fifths (COMEX silver 0.005, NSE
0.05, Nikkei 225 5), the 1-2-5 ladder of the MiFID II tick-size tables (0.0002, 0.02, 2) and
quarters (CME E-mini 0.25, grains 0.0025). Restricting to them, rather than taking the exact
greatest common divisor, keeps a coincidence in the data (say every price a multiple of 0.03)
from becoming a tick size no venue uses. Binary-fraction ticks (US Treasury futures' 1/32,
1/64) are not candidates: such data yields the largest decimal step dividing them (2.5e-5 for
1/64), finer than the true tick, so give those instruments their tick size explicitly.

What the data can show is the grid it is quoted on, which is a multiple of the venue's tick: a
market that never traded an odd cent looks like a 0.02 market. Requiring at least
``MIN_DISTINCT`` distinct values on the grid bounds that risk: with the closest candidate
ratio of 2, ``n`` distinct prices of a 0.01 market all fall on even cents by chance with
probability about ``2 ** -(n - 1)``, below 1e-4 for 16. The same rule holds above 1: integer
prices give 1.0 unless all of at least 16 distinct prices are multiples of a larger candidate
(5, 10, ... up to 1e4), which is how 5-point index futures and high-priced stocks with coarse
ticks trade. Conversely a single off-grid value (a sub-penny print) makes the step finer: the
result divides every observed value, so each price the market traded at stays on the grid.

Tolerance: a value ``v`` is a multiple of ``step`` when ``|v - step * round(v / step)|`` is at
most ``min(RTOL * v, STEP_TOL * step)``. ``RTOL`` (1e-10, about a million ulps) absorbs the
noise of parsing decimals and of a few float64 operations (``0.1 + 0.2``, ``price / 10000``)
yet stays below one tick for values up to about 1e9 ticks. ``STEP_TOL`` (1e-3) refuses a step
that float64 cannot resolve at the data's magnitude, so noise is never reported as a tick.
Data that is on no candidate grid (float32 round-trips, computed mid prices) raises
``ValueError`` rather than yielding a made-up step.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import numpy.typing as npt
import pandas as pd

MIN_STEP = 1e-10
MAX_STEP = 1e4
MIN_DISTINCT = 16
RTOL = 1e-10
STEP_TOL = 1e-3
_MANTISSAS = ("5", "2.5", "2", "1")
_SCREEN = 4096


def _candidates(limit: float) -> list[float]:
    """Candidate steps ``<= limit`` within ``[MIN_STEP, MAX_STEP]``, largest first."""
    # Parsing the decimal text gives the float nearest to the decimal step (0.0025, not
    # 2.5 * 1e-3 = 0.0025000000000000005), so a returned step prints as what it means.
    steps = (float(Decimal(m).scaleb(k)) for k in range(4, -11, -1) for m in _MANTISSAS)
    return [s for s in steps if MIN_STEP <= s <= min(limit, MAX_STEP)]


def _on_grid(values: npt.NDArray[np.float64], step: float) -> bool:
    """Whether every value is a whole multiple of ``step`` within the module's tolerance."""
    off = np.abs(values - step * np.rint(values / step))
    return bool(np.all(off <= np.minimum(RTOL * values, STEP_TOL * step)))


def _grid_count(values: npt.NDArray[np.float64], step: float) -> int:
    """Number of distinct grid points ``round(value / step)`` among ``values``."""
    return len(pd.unique(np.rint(values / step)))


def _infer_increment(values: npt.ArrayLike, what: str, option: str, min_distinct: int) -> float:
    """The shared rule of :func:`infer_tick_size` and :func:`infer_lot_size`."""
    data = np.asarray(values, dtype=np.float64).ravel()
    # Hashing dedupes 10^7 values several times faster than np.unique's sort; the grid test
    # then runs on the few thousand distinct values, not on every tick.
    distinct = pd.unique(data[np.isfinite(data) & (data > 0)])
    if len(distinct) == 0:
        raise ValueError(f"no finite positive {what}s to infer from; pass {option}")
    # A too-coarse candidate almost always fails on a few values already: screening on a slice
    # spares a full pass over millions of distinct values for each candidate rejected.
    head = distinct[:_SCREEN]
    step = next(
        (
            s
            for s in _candidates(float(distinct.min()))
            if _on_grid(head, s) and _on_grid(distinct, s)
        ),
        None,
    )
    if step is None:
        raise ValueError(
            f"the {what}s are on no decimal grid between {MIN_STEP:g} and {MAX_STEP:g} "
            f"(computed or float32-rounded values?); pass {option}"
        )
    # Counted on the grid so that float noise (0.1 + 0.2 vs 0.3) does not pass for variety;
    # the screening slice usually holds enough, sparing a second dedup of millions of values.
    found = _grid_count(head, step)
    if found < min_distinct:
        found = _grid_count(distinct, step)
    if found < min_distinct:
        raise ValueError(
            f"only {found} distinct {what}(s) on a {step:g} grid; need at least {min_distinct} "
            f"to infer the increment reliably; pass {option}"
        )
    return step


def infer_tick_size(prices: npt.ArrayLike, *, min_distinct: int = MIN_DISTINCT) -> float:
    """Infer the price increment the data is quoted in (see the module docstring for the rule).

    Parameters
    ----------
    prices : numpy.ndarray or pandas.Series
        Trade or quote prices, float64 (anything ``numpy.asarray`` turns into float64), any
        shape (flattened), in the price currency. NaN, +/-inf and values <= 0 are ignored:
        they carry no grid information (NaN marks e.g. an absent quote side).
    min_distinct : int, default ``MIN_DISTINCT`` (16)
        Fewest distinct prices on the inferred grid that make the inference trustworthy.

    Returns
    -------
    float
        The largest ``m * 10**k`` (``m`` in 1, 2, 2.5, 5), between 1e-10 and 1e4, that every
        kept price is a multiple of; in the price currency. E.g. 0.01 for prices 9682.01,
        9682.02, ...; 0.0001 for 0.0014, 0.0015, 0.0021, ...

    Raises
    ------
    ValueError
        If no price is finite and positive, if the prices are on no candidate grid, or if
        fewer than ``min_distinct`` distinct prices lie on the grid found; the message says
        to pass ``--tick-size``.

    Notes
    -----
    Vectorized; the cost is one hash-based dedup of ``prices`` (0.1 s for 10^7 prices with
    few distinct values, about 1.5 s when millions are distinct) plus about one pass over the
    distinct values.
    """
    return _infer_increment(prices, "price", "--tick-size", min_distinct)


def infer_lot_size(sizes: npt.ArrayLike, *, min_distinct: int = MIN_DISTINCT) -> float:
    """Infer the quantity increment the data is traded in, by the rule of :func:`infer_tick_size`.

    Parameters
    ----------
    sizes : numpy.ndarray or pandas.Series
        Trade or quote quantities, float64, any shape (flattened), in units of the instrument
        (shares, contracts, coins). NaN, +/-inf and values <= 0 are ignored (zero-size rows
        occur, e.g. in Lean futures trades).
    min_distinct : int, default ``MIN_DISTINCT`` (16)
        Fewest distinct sizes on the inferred grid that make the inference trustworthy.

    Returns
    -------
    float
        The largest ``m * 10**k`` (``m`` in 1, 2, 2.5, 5), between 1e-10 and 1e4, that every
        kept size is a multiple of; in units of the instrument. E.g. 0.001 for sizes 0.132,
        0.412, ...; 1.0 for share counts that include odd lots.

    Raises
    ------
    ValueError
        If no size is finite and positive, if the sizes are on no candidate grid, or if fewer
        than ``min_distinct`` distinct sizes lie on the grid found; the message says to pass
        ``--lot-size``.
    """
    return _infer_increment(sizes, "size", "--lot-size", min_distinct)
