"""Sessions built from vendor 1-minute candles: real Lean minute bars of SPY loaded as candles
give the same features as the project's own tick bars where the bars agree, and a candle-only
score records the components that could not fire."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.market.sources.lean import read_lean_minute_bars, read_lean_trades
from fbe_pipeline.pipeline import (
    session_bars,
    session_features,
    session_ticks,
)
from fbe_pipeline.settings import prepare_dagster_home
from fbe_pipeline.storage.store import LocalRawStore
from fbe_pipeline.storage.warehouse import open_tables

DAY = date(2013, 10, 7)
SPY = get_instrument("SPY")
OHLC_FEATURES = ["atr14", "range_high", "range_low", "poke", "poke_atr", "wick_ratio", "vol_ratio"]


def _tick_bars(sample_data: Path) -> pd.DataFrame:
    raw = read_lean_trades(
        sample_data / f"lean/spy/tick/{DAY:%Y%m%d}_trade.zip", "SPY", SPY.tz, 10_000.0
    )
    ticks, _ = session_ticks(raw, None, SPY, DAY)
    return session_bars(ticks, SPY, DAY)


def _vendor_candles(sample_data: Path) -> pd.DataFrame:
    bars = read_lean_minute_bars(
        sample_data / f"lean/spy/minute/{DAY:%Y%m%d}_trade.zip", "SPY", SPY.tz, 10_000.0
    )
    return bars.assign(open_interest=np.nan)[
        ["ts", "open", "high", "low", "close", "volume", "open_interest"]
    ]


def _no_ticks() -> pd.DataFrame:
    ticks, _ = session_ticks(None, None, SPY, DAY)
    return ticks


def test_candles_of_the_projects_own_bars_give_the_same_features(sample_data: Path) -> None:
    own = _tick_bars(sample_data)
    traded = own.loc[~own["is_filled"]]
    candles = pd.DataFrame(
        {
            "ts": pd.DatetimeIndex(traded["ts"]).as_unit("ns").asi8,
            **{c: traded[c].to_numpy() for c in ("open", "high", "low", "close", "volume")},
            "open_interest": np.nan,
        }
    )
    rebuilt = session_bars(_no_ticks(), SPY, DAY, candles)
    # Gaps are filled exactly as from ticks; what candles cannot tell is unknown.
    same = ["ts", "open", "high", "low", "close", "volume", "is_filled"]
    pd.testing.assert_frame_equal(rebuilt[same], own[same])
    assert rebuilt[["buy_volume", "sell_volume", "delta"]].isna().all().all()
    assert (rebuilt["tick_count"] == 0).all()

    from_ticks = session_features(own, DAY, None)
    from_candles = session_features(rebuilt, DAY, None)
    pd.testing.assert_frame_equal(from_candles[OHLC_FEATURES], from_ticks[OHLC_FEATURES])
    assert from_candles["delta_ratio"].isna().all()
    assert not from_candles["delta_against"].any()


def test_vendor_minute_bars_match_the_tick_features_where_the_bars_agree(
    sample_data: Path,
) -> None:
    own = _tick_bars(sample_data)
    vendor = session_bars(_no_ticks(), SPY, DAY, _vendor_candles(sample_data))
    assert len(vendor) == len(own) == 390
    cols = ["open", "high", "low", "close", "volume"]
    agree = (vendor[cols].to_numpy() == own[cols].to_numpy()).all(axis=1)
    # The range and volume features look back 20 bars: compare where all 21 bars agree.
    window = pd.Series(agree).rolling(21, min_periods=21).min().fillna(0).astype(bool).to_numpy()
    assert window.sum() > 300, "too few agreeing windows for the comparison to mean anything"
    a = session_features(vendor, DAY, None).loc[window]
    b = session_features(own, DAY, None).loc[window]
    for column in ("range_high", "range_low", "poke", "wick_ratio", "vol_ratio"):
        pd.testing.assert_series_equal(a[column], b[column], obj=column)


def test_a_candle_only_session_runs_through_the_pipeline_and_says_what_could_not_fire(
    fbe_home: Path, sample_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FBE_SCORING_CONFIG", '{"trigger_score": 30}')
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    store = LocalRawStore(fbe_home / "raw")
    for day in (DAY, date(2013, 10, 8)):
        path = sample_data / f"lean/spy/minute/{day:%Y%m%d}_trade.zip"
        local = pd.to_datetime(
            read_lean_minute_bars(path, "SPY", SPY.tz, 10_000.0)["ts"], utc=True
        ).dt.tz_convert(SPY.tz)
        vendor = read_lean_minute_bars(path, "SPY", SPY.tz, 10_000.0).assign(
            timestamp=local.dt.strftime("%Y-%m-%dT%H:%M:%S%z")
        )[["timestamp", "open", "high", "low", "close", "volume"]]
        csv = tmp_path / f"spy_{day:%Y%m%d}.csv"
        vendor.to_csv(csv, index=False)
        load_file(store, "bars-csv", csv, SPY)
    prepare_dagster_home()
    try:
        from fbe_pipeline.definitions import materialize_partitions

        assert materialize_partitions(store) == 0
    finally:
        os.environ.pop("DAGSTER_HOME", None)
    with open_tables(fbe_home) as con:
        ticks = con.execute("select count(*) from raw_ticks").fetchone()[0]
        bars = con.execute("select count(*), count(delta) from bars_1m").fetchone()
        unavailable = dict(
            con.execute(
                "select unavailable, count(*) from scores where poke <> 'none' group by 1"
            ).fetchall()
        )
        signals = con.execute(
            "select s.signal_id, c.unavailable from signals s join scores c using (symbol, ts)"
        ).fetchall()
    assert ticks == 0 and bars == (780, 0)
    # No aggressor side and no L2 book: delta and book churn could never fire.
    assert set(unavailable) <= {"book_churn,delta", "vol,book_churn,delta"}
    assert unavailable.get("book_churn,delta", 0) > 0
    assert signals, "no signal on two real sessions at trigger 30"
    assert all("delta" in u and "book_churn" in u for _, u in signals)
    page = fbe_home / "reports" / "daily" / "SPY" / f"{DAY}.html"
    assert "SPY daily review" in page.read_text()
