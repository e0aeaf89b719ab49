"""Reading paper fills back from the operational store (monitors, reviews)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from fbe_pipeline.ops import models as m

FILL_COLUMNS = (
    "automation",
    "symbol",
    "trading_date",
    "ts_ns",
    "realized_slippage",
    "estimated_slippage",
)


def entry_fills(
    engine: Engine, symbol: str | None = None, trading_dates: Iterable[str] | None = None
) -> pd.DataFrame:
    """Entry fills with their order's automation, symbol and trading date.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The operational store (:func:`fbe_pipeline.ops.db.engine_for`), already migrated.
    symbol : str, optional
        Only this symbol's fills.
    trading_dates : iterable of str, optional
        Only these trading dates (``YYYY-MM-DD``).

    Returns
    -------
    pandas.DataFrame
        :data:`FILL_COLUMNS`: ``automation``, ``symbol``, ``trading_date`` (str),
        ``ts_ns`` (int, ns), ``realized_slippage`` and ``estimated_slippage`` (price
        currency per unit), in fill order.
    """
    query = (
        select(
            m.Order.automation,
            m.Order.symbol,
            m.Order.trading_date,
            m.Fill.ts_ns,
            m.Fill.realized_slippage,
            m.Fill.estimated_slippage,
        )
        .join(m.Order, m.Order.order_id == m.Fill.order_id)
        .where(m.Fill.kind == "entry")
        .order_by(m.Fill.ts_ns)
    )
    if symbol is not None:
        query = query.where(m.Order.symbol == symbol)
    if trading_dates is not None:
        query = query.where(m.Order.trading_date.in_(list(trading_dates)))
    with Session(engine) as session:
        rows = session.execute(query).all()
    return pd.DataFrame(rows, columns=list(FILL_COLUMNS))
