"""Read-only views of the operational store for people: orders and positions as frames.

Owns :func:`orders_frame` and :func:`positions_frame` (used by ``fbe orders`` and
``fbe positions``).
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from fbe_pipeline.ops import models as m

_ORDER_COLUMNS = (
    "order_id",
    "signal_id",
    "symbol",
    "side",
    "qty",
    "state",
    "reference_price",
    "stop",
    "target",
    "fill_price",
    "estimated_slippage",
    "realized_slippage",
    "decision_time",
    "valid_until",
    "fill_time",
    "source",
    "reason",
)


def _time(ns: int | None) -> str | None:
    return None if ns is None else pd.Timestamp(ns, unit="ns", tz="UTC").isoformat()


def orders_frame(engine: Engine) -> pd.DataFrame:
    """Every order, oldest first: ``side`` ``buy``/``sell``, prices in the price currency,
    times ISO-8601 UTC."""
    with Session(engine) as s:
        rows = s.scalars(select(m.Order).order_by(m.Order.created_ns, m.Order.order_id)).all()
    records = [
        {
            "order_id": o.order_id,
            "signal_id": o.signal_id,
            "symbol": o.symbol,
            "side": "buy" if o.side > 0 else "sell",
            "qty": o.qty,
            "state": o.state,
            "reference_price": o.reference_price,
            "stop": o.stop,
            "target": o.target,
            "fill_price": o.fill_price,
            "estimated_slippage": o.estimated_slippage,
            "realized_slippage": o.realized_slippage,
            "decision_time": _time(o.decision_ns),
            "valid_until": _time(o.valid_until_ns),
            "fill_time": _time(o.fill_ns),
            "source": o.source,
            "reason": o.reason,
        }
        for o in rows
    ]
    return pd.DataFrame(records, columns=list(_ORDER_COLUMNS))


def positions_frame(engine: Engine) -> pd.DataFrame:
    """Every position (open first), with entry, mark, exit and PnL in the price currency."""
    with Session(engine) as s:
        rows = s.scalars(select(m.Position).order_by(m.Position.entry_ns)).all()
    records = [
        {
            "order_id": p.order_id,
            "symbol": p.symbol,
            "side": "long" if p.side > 0 else "short",
            "qty": p.qty,
            "status": p.status,
            "entry_price": p.entry_price,
            "entry_time": _time(p.entry_ns),
            "stop": p.stop,
            "target": p.target,
            "mark_price": p.mark_price,
            "unrealized_pnl": p.unrealized_pnl,
            "exit_price": p.exit_price,
            "exit_time": _time(p.exit_ns),
            "exit_reason": p.exit_reason,
            "pnl": p.pnl,
        }
        for p in rows
    ]
    frame = pd.DataFrame(records)
    return (
        frame.sort_values("status", key=lambda c: c != "open", kind="stable")
        if len(frame)
        else frame
    )
