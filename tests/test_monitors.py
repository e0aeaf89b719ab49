"""Monitors (issue 10): each fires on input made to trip it and stays quiet where it should on
the real sample data; the monitors sensor reports them as checks of the ``monitors`` asset
with their severities."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    DagsterInstance,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from sqlalchemy.orm import Session

from fbe_pipeline.governance import monitors as mon
from fbe_pipeline.live.replay import read_ticks
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.db import database_url, engine_for, upgrade
from fbe_pipeline.pipeline import (
    session_bars,
    session_features,
    session_scores,
    session_signals,
    session_ticks,
)
from fbe_pipeline.research.config import ScoringConfig

LEVELS = mon.MonitorThresholds()


def _real_signals(sample_data: Path, symbol: str) -> pd.DataFrame:
    instrument = get_instrument(symbol)
    frames, previous = [], None
    for day in ("20131007", "20131008", "20131009", "20131010", "20131011"):
        path = sample_data / "lean" / symbol.lower() / "tick" / f"{day}_trade.zip"
        raw = read_ticks("lean-trades", [path], instrument)
        trading_date = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        ticks, _ = session_ticks(raw, None, instrument, trading_date)
        bars = session_bars(ticks, instrument, trading_date)
        features = session_features(
            pd.concat([b for b in (previous, bars) if b is not None]), trading_date, None
        )
        config = ScoringConfig(trigger_score=30)
        frames.append(session_signals(session_scores(features, config), config))
        previous = bars
    return pd.concat(frames, ignore_index=True)


def test_low_liquidity_share_is_quiet_on_real_signals_and_fires_on_a_midday_cluster(
    sample_data: Path,
) -> None:
    spy = get_instrument("SPY")
    real = _real_signals(sample_data, "SPY")
    quiet = mon.low_liquidity_share(real, spy, LEVELS)
    assert quiet.severity == mon.OK and quiet.value is not None
    assert quiet.value <= LEVELS.low_liquidity_share_max
    assert quiet.metadata["signals"] == min(len(real), LEVELS.low_liquidity_signals)
    noon = pd.date_range("2013-10-14 16:05", periods=20, freq="1min", tz="UTC")  # 12:05 ET
    tripped = mon.low_liquidity_share(
        pd.concat([real, pd.DataFrame({"symbol": "SPY", "ts": noon})], ignore_index=True),
        spy,
        mon.MonitorThresholds(low_liquidity_signals=20),
    )
    assert (tripped.severity, tripped.value) == (mon.WARN, 1.0)
    btc = mon.low_liquidity_share(real.assign(symbol="BTCUSDT"), get_instrument("BTCUSDT"), LEVELS)
    assert btc.severity == mon.OK and btc.detail == "no low-liquidity window"


def test_slippage_ratio_fires_above_the_limit_over_a_full_window() -> None:
    fills = pd.DataFrame(
        {"ts_ns": np.arange(12), "estimated_slippage": 0.02, "realized_slippage": 0.02}
    )
    assert mon.slippage_ratio(fills, "SPY-paper", 1.5, 10).severity == mon.OK
    worse = fills.assign(realized_slippage=[0.02] * 2 + [0.04] * 10)
    tripped = mon.slippage_ratio(worse, "SPY-paper", 1.5, 10)
    assert (tripped.severity, tripped.value) == (mon.ERROR, pytest.approx(2.0))
    waiting = mon.slippage_ratio(worse.head(5), "SPY-paper", 1.5, 10)
    assert waiting.severity == mon.OK and waiting.value is None


def test_clock_drift_fires_on_the_tardis_recorders_real_drift(sample_data: Path) -> None:
    """The Tardis recording keeps the recorder's receive time: its real drift from Binance's
    trade time is ~300 ms, far above the 100 ms limit; a loopback feed's few ms are quiet."""
    raw = pd.read_csv(
        sample_data / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
    )
    drift_ms = (raw["local_timestamp"] - raw["timestamp"]) / 1000.0
    fired = mon.clock_drift(drift_ms, "BTCUSDT", LEVELS)
    assert fired.severity == mon.WARN
    assert fired.value == pytest.approx(float(np.percentile(drift_ms, 99)))
    quiet = mon.clock_drift(np.full(5000, 4.0), "BTCUSDT", LEVELS)
    assert (quiet.severity, quiet.value) == (mon.OK, 4.0)


def test_integrity_and_failed_checks_fire_on_any_finding() -> None:
    assert mon.integrity(pd.DataFrame(columns=["problem", "key"])).severity == mon.OK
    found = mon.integrity(pd.DataFrame({"problem": ["sha_mismatch"], "key": ["ticks/SPY/x"]}))
    assert (found.severity, found.detail) == (mon.ERROR, "sha_mismatch: ticks/SPY/x")
    assert mon.failed_blocking_checks([]).severity == mon.OK
    assert mon.failed_blocking_checks(["SPY/bars_1m:ohlc[2013-10-07]"]).fired


def test_the_sensor_reports_each_monitor_with_its_severity(fbe_home: Path) -> None:
    from fbe_pipeline.definitions import build_definitions, build_lanes
    from sensors.monitors import MONITORS_KEY, monitors_sensor

    engine = engine_for(database_url(fbe_home))
    upgrade(engine)
    with Session(engine) as s, s.begin():
        s.add(
            m.Automation(
                name="SPY-paper",
                symbol="SPY",
                status="active",
                gate_remaining=0,
                consecutive_errors=0,
                created_ns=0,
                updated_ns=0,
            )
        )
        s.flush()  # the rows have foreign keys but no relationships to order the inserts by
        s.add(
            m.Account(
                automation="SPY-paper",
                currency="USD",
                starting_equity=1e5,
                realized_pnl=0.0,
                equity=1e5,
                peak_equity=1e5,
                day="2013-10-07",
                day_start_equity=1e5,
                updated_ns=0,
            )
        )
        for i in range(10):
            s.add(
                m.Order(
                    order_id=f"o{i}",
                    automation="SPY-paper",
                    signal_id=f"s{i}",
                    trading_date="2013-10-07",
                    source="live",
                    symbol="SPY",
                    side=1,
                    qty=1.0,
                    state="filled",
                    reference_price=100.0,
                    stop=99.0,
                    target=102.0,
                    vol_ratio=0.5,
                    decision_ns=i,
                    valid_until_ns=i,
                    config_version="x",
                    created_ns=i,
                    updated_ns=i,
                )
            )
            s.flush()
            s.add(
                m.Fill(
                    order_id=f"o{i}",
                    kind="entry",
                    ts_ns=i,
                    price=100.0,
                    qty=1.0,
                    reference_price=100.0,
                    estimated_slippage=0.02,
                    realized_slippage=0.05,
                )
            )
    engine.dispose()
    defs = build_definitions(build_lanes([("SPY", date(2013, 10, 7))]))
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
        result = monitors_sensor(context)
        assert isinstance(result, SensorResult)
        by_name = {e.check_name: e for e in result.asset_events}
        assert all(isinstance(e, AssetCheckEvaluation) for e in by_name.values())
        assert set(by_name) == {x.name for x in mon.MONITORS}
        slip = by_name["slippage_ratio"]
        assert (slip.asset_key, slip.passed, slip.severity) == (
            MONITORS_KEY,
            False,
            AssetCheckSeverity.ERROR,
        )
        assert str(slip.metadata["SPY-paper"].value).startswith("ERROR 2.5")
        assert by_name["integrity"].passed and by_name["failed_blocking_checks"].passed
        again = monitors_sensor(
            build_sensor_context(
                instance=instance, repository_def=defs.get_repository_def(), cursor=result.cursor
            )
        )
        assert isinstance(again, SkipReason)
