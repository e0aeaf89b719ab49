"""The review of any date range, read straight from the analytical store (the console's
analytics page): the same figures and charts as the daily and weekly reviews."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.ops.fills import entry_fills
from fbe_pipeline.reports.review import (
    Review,
    ReviewFrames,
    build_review,
    render_review,
    report_path,
)
from fbe_pipeline.storage.tables import Warehouse
from fbe_pipeline.storage.warehouse import table_names, warehouse_from_env

_TABLES = {
    "bars": "bars_1m",
    "scores": "scores",
    "signals": "signals",
    "trades": "backtest_trades",
    "regimes": "regime_tags",
}


class NoSessionsError(LookupError):
    """The analytical store has no materialized session of the symbol in the date range."""


def tick_drift(warehouse: Warehouse, symbol: str, days: Sequence[date]) -> pd.Series:
    """``drift_ms`` (``ts_recv - ts_event``, ms, float64; NaN where unknown) of the symbol's
    ticks of the sessions ``days``, read as one column of ``raw_ticks`` (loading the table would
    read each tick's sixteen); empty when none was materialized."""
    frame = warehouse.read("raw_ticks", symbol, days, columns=["drift_ms"])
    return frame["drift_ms"].astype("float64").reset_index(drop=True)


def period_frames(
    warehouse: Warehouse,
    engine: Engine | None,
    instrument: Instrument,
    start: date,
    end: date,
) -> tuple[ReviewFrames, list[date]]:
    """The rows of ``instrument``'s sessions from ``start`` to ``end`` (inclusive) of the
    pipeline tables, its paper entry fills and its ticks' clock drift.

    Parameters
    ----------
    warehouse : Warehouse
        The pipeline's tables.
    engine : sqlalchemy.Engine or None
        The operational store for paper fills (None: no fills).

    Returns
    -------
    (ReviewFrames, list of date)
        The frames (failed checks left empty: Dagster keeps them, see the daily reviews) and
        the sessions found, in order.

    Raises
    ------
    NoSessionsError
        When no session of the symbol in the range has bars.
    ValueError
        When ``start`` is after ``end``.
    """
    if start > end:
        raise ValueError(f"the range starts ({start}) after it ends ({end})")
    present = table_names(warehouse)
    frames: dict[str, pd.DataFrame] = {}
    args = [instrument.symbol, start, end]
    where = "where symbol = ? and trading_date between ? and ?"
    with warehouse.query() as con:
        for name, table in _TABLES.items():
            if table not in present:
                raise NoSessionsError(f"nothing materialized yet (no {table} table)")
            frames[name] = con.execute(f"select * from {table} {where}", args).fetchdf()
    days = sorted(set(pd.to_datetime(frames["bars"]["trading_date"]).dt.date))
    if not days:
        raise NoSessionsError(f"no {instrument.symbol} session materialized from {start} to {end}")
    fills = (
        entry_fills(engine, instrument.symbol, [d.isoformat() for d in days])
        if engine is not None
        else pd.DataFrame()
    )
    review_frames = ReviewFrames(
        bars=frames["bars"],
        scores=frames["scores"],
        signals=frames["signals"],
        trades=frames["trades"],
        regimes=frames["regimes"],
        fills=fills,
        drift_ms=tick_drift(warehouse, instrument.symbol, days),
    )
    return review_frames, days


def period_review(
    home: Path, engine: Engine | None, instrument: Instrument, start: date, end: date
) -> tuple[Review, Path]:
    """Compute and render the review of a date range to
    ``$FBE_HOME/reports/range/<SYMBOL>/<FIRST>_<LAST>.html`` (first and last session found).

    Returns
    -------
    (Review, Path)
        The review and its page.

    Raises
    ------
    NoSessionsError, ValueError
        As :func:`period_frames`.
    """
    frames, days = period_frames(warehouse_from_env(home), engine, instrument, start, end)
    review = build_review("range", instrument, days[0], days[-1], len(days), frames)
    page = report_path(home, review)
    render_review(review, frames, instrument, page)
    return review, page
