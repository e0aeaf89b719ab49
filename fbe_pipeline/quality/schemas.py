"""pandera schemas: the contracts of every table at an asset boundary (SPEC §2-3)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.engines.pandas_engine import NpString
from pandera.pandas import Check, Column, DataFrameSchema

from fbe_pipeline.storage.integrity import MANIFEST_PROBLEMS, OBJECT_PROBLEMS


class Text(NpString):
    """pandera's ``str`` dtype with a vectorized check of the values.

    pandera checks a ``str`` column by calling ``isinstance`` on every element (0.6 s of the
    0.7 s that validating a 440,000-tick session took); pandas' ``infer_dtype`` (C) answers
    the same question in one pass. Only a column that fails is checked element by element, so
    the error still names the offending rows. ``str(Text())`` is ``"str"``, like ``str``.
    """

    def check(self, pandera_dtype: Any, data_container: Any = None) -> bool | Iterable[bool]:
        """True when every non-null value is a ``str``; element-wise results on failure."""
        if isinstance(data_container, pd.Series) and pd.api.types.infer_dtype(
            data_container, skipna=True
        ) in ("string", "empty"):
            return True
        return super().check(pandera_dtype, data_container)


TEXT = Text()  # type: ignore[call-arg]  # pandera sets the dtype field itself
_TS = "datetime64[ns, UTC]"
_DATE = "datetime64[ns]"

RAW_TICKS = DataFrameSchema(
    {
        "symbol": Column(TEXT),
        "trading_date": Column(_DATE),
        "ts_event": Column("int64"),
        "ts_recv": Column("Int64", nullable=True),
        "drift_ms": Column(float, nullable=True),
        "price": Column(float, [Check.gt(0), Check(lambda s: s.abs() < float("inf"))]),
        "size": Column(float, Check.ge(0)),
        "side": Column(TEXT, Check.isin(["buy", "sell", "unknown"])),
        "side_sign": Column("int8", Check.isin([-1, 0, 1])),
        "side_method": Column(TEXT, Check.isin(["source", "lee_ready", "tick_rule", "none"])),
        "source": Column(TEXT),
        "seq": Column("int64"),
        "exchange": Column(TEXT),
        "condition": Column(TEXT),
        "ohlc_eligible": Column(bool),
        "volume_eligible": Column(bool),
    },
    strict=True,
    ordered=True,
    name="raw_ticks",
)

BARS_1M = DataFrameSchema(
    {
        "symbol": Column(TEXT),
        "trading_date": Column(_DATE),
        "ts": Column(_TS, unique=True),
        "open": Column(float, Check.gt(0)),
        "high": Column(float, Check.gt(0)),
        "low": Column(float, Check.gt(0)),
        "close": Column(float, Check.gt(0)),
        "volume": Column(float, Check.ge(0)),
        # Unknown (NaN) in bars built from vendor candles: they carry no aggressor side.
        "buy_volume": Column(float, Check.ge(0), nullable=True),
        "sell_volume": Column(float, Check.ge(0), nullable=True),
        "delta": Column(float, nullable=True),
        "tick_count": Column("int64", Check.ge(0)),
        "vwap": Column(float, Check.gt(0)),
        "is_filled": Column(bool),
    },
    checks=[
        Check(
            lambda d: (d["high"] >= d[["open", "close", "low"]].max(axis=1)).all(), name="high_max"
        ),
        Check(
            lambda d: (d["low"] <= d[["open", "close", "high"]].min(axis=1)).all(), name="low_min"
        ),
    ],
    strict=True,
    ordered=True,
    name="bars_1m",
)

FEATURES = DataFrameSchema(
    {
        "symbol": Column(TEXT),
        "trading_date": Column(_DATE),
        "ts": Column(_TS, unique=True),
        "atr14": Column(float, Check.ge(0), nullable=True),
        "range_high": Column(float, nullable=True),
        "range_low": Column(float, nullable=True),
        "poke": Column(TEXT, Check.isin(["up", "down", "none"])),
        "poke_atr": Column(float, nullable=True),
        "wick_ratio": Column(float, Check.in_range(0, 1)),
        "vol_ratio": Column(float, Check.ge(0), nullable=True),
        "delta_ratio": Column(float, Check.in_range(-1, 1), nullable=True),
        "delta_against": Column(bool),
        "book_churn": Column(float, Check.ge(0), nullable=True),
        "has_l2": Column(bool),
    },
    strict=True,
    ordered=True,
    name="features",
)

SCORES = DataFrameSchema(
    {
        "symbol": Column(TEXT),
        "trading_date": Column(_DATE),
        "ts": Column(_TS, unique=True),
        "poke": Column(TEXT, Check.isin(["up", "down", "none"])),
        "score": Column(float, Check.in_range(0, 100)),
        "c_wick": Column(bool),
        "c_vol": Column(bool),
        "c_poke": Column(bool),
        "c_book_churn": Column(bool),
        "c_delta": Column(bool),
        "unavailable": Column(TEXT),
        "config_version": Column(TEXT),
    },
    checks=[
        Check(lambda d: ((d["poke"] != "none") | (d["score"] == 0)).all(), name="score_0_off_poke")
    ],
    strict=True,
    ordered=True,
    name="scores",
)

SIGNALS = DataFrameSchema(
    {
        "signal_id": Column(TEXT, unique=True),
        "symbol": Column(TEXT),
        "trading_date": Column(_DATE),
        "ts": Column(_TS),
        "bar_close": Column(_TS),
        "decision_time": Column(_TS),
        "direction": Column(TEXT, Check.isin(["long", "short"])),
        "poke": Column(TEXT, Check.isin(["up", "down"])),
        "score": Column(float, Check.in_range(0, 100)),
        "components": Column(TEXT),
        "config_version": Column(TEXT),
    },
    checks=[
        Check(lambda d: (d["decision_time"] >= d["bar_close"]).all(), name="decision_after_close")
    ],
    strict=True,
    ordered=True,
    name="signals",
)

REGIME_TAGS = DataFrameSchema(
    {
        "symbol": Column(TEXT),
        "trading_date": Column(_DATE),
        "ts": Column(_TS, unique=True),
        "atr14": Column(float, nullable=True),
        "atr_pct": Column(float, Check.in_range(0, 1), nullable=True),
        "vol_regime": Column(TEXT, Check.isin(["low", "normal", "high", "unknown"])),
        "session_tag": Column(TEXT),
    },
    strict=True,
    ordered=True,
    name="regime_tags",
)

BACKTEST_TRADES = DataFrameSchema(
    {
        "trade_id": Column(TEXT, unique=True),
        "signal_id": Column(TEXT, unique=True),
        "symbol": Column(TEXT),
        "trading_date": Column(_DATE),
        "direction": Column(TEXT, Check.isin(["long", "short"])),
        "signal_ts": Column(_TS),
        "decision_time": Column(_TS),
        "entry_time": Column(_TS),
        "entry_price": Column(float, Check.gt(0)),
        "stop_price": Column(float),
        "target_price": Column(float),
        "exit_time": Column(_TS),
        "exit_price": Column(float, Check.gt(0)),
        "exit_reason": Column(TEXT, Check.isin(["stop", "target", "time_stop", "session_end"])),
        "bars_held": Column("int64", Check.ge(1)),
        "pnl": Column(float),
        "r_multiple": Column(float),
        "return_bps": Column(float),
        "slippage_paid": Column(float, Check.ge(0)),
        "cost": Column(float, Check.ge(0)),
        "vol_regime": Column(TEXT),
        "session_tag": Column(TEXT),
        "config_version": Column(TEXT),
        "data_version": Column(TEXT),
    },
    checks=[
        Check(lambda d: (d["entry_time"] > d["decision_time"]).all(), name="entry_after_decision")
    ],
    strict=True,
    ordered=True,
    name="backtest_trades",
)

BACKTEST_SUMMARY = DataFrameSchema(
    {
        "symbol": Column(TEXT),
        "trading_date": Column(_DATE),
        "period": Column(TEXT, Check.isin(["in_sample", "out_of_sample"])),
        "group_by": Column(TEXT),
        "group": Column(TEXT),
        "trades": Column("int64", Check.ge(0)),
        "win_rate": Column(float, nullable=True),
        "avg_r": Column(float, nullable=True),
        "pnl": Column(float),
        "sharpe": Column(float, nullable=True),
        "max_drawdown": Column(float, Check.ge(0)),
        "slippage_paid": Column(float, Check.ge(0)),
        "config_version": Column(TEXT),
        "data_version": Column(TEXT),
    },
    strict=True,
    ordered=True,
    name="backtest_summary",
)

RAW_INTEGRITY = DataFrameSchema(
    {
        "checked_at": Column(_TS),
        "problem": Column(TEXT, Check.isin([*OBJECT_PROBLEMS, *MANIFEST_PROBLEMS])),
        "key": Column(TEXT),
    },
    strict=True,
    ordered=True,
    name="raw_integrity",
)

ALL: dict[str, pa.DataFrameSchema] = {
    s.name: s  # type: ignore[misc]
    for s in (
        RAW_TICKS,
        BARS_1M,
        FEATURES,
        SCORES,
        SIGNALS,
        REGIME_TAGS,
        BACKTEST_TRADES,
        BACKTEST_SUMMARY,
        RAW_INTEGRITY,
    )
}
