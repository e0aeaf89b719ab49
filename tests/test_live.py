"""The live path end to end on real data (issue 8): real ticks replayed over HTTP into the real
ingest service (uvicorn on loopback), the streaming detector, sealing into the raw store, the
Dagster reports, then the batch pipeline on the sealed raw objects.

One replay feeds every test of the module: the Binance futures BTCUSDT trades of the Tardis
sample and two SPY sessions (so the warm-up crosses a session boundary), at trigger 30.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import uvicorn
from dagster import AssetKey, AssetRecordsFilter

from assets.signals import live_parity
from fbe_pipeline.definitions import dagster_instance, failed_checks, materialize_partitions
from fbe_pipeline.live.app import create_app
from fbe_pipeline.live.replay import ReplayReport, read_ticks, replay_frame
from fbe_pipeline.live.settings import IngestSettings
from fbe_pipeline.live.signal_store import LiveSignalStore, signals_path
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.quality.checks import check_live_parity
from fbe_pipeline.settings import REPO_ROOT, prepare_dagster_home, sample_data_dir
from fbe_pipeline.storage.store import LocalRawStore
from fbe_pipeline.storage.warehouse import batch_signals, open_tables
from sensors.live_events import DagsterBarReporter

KEY = b"live-test-key"
DATA = sample_data_dir()
REPLAYS = {
    "BTCUSDT": (
        "tardis-trades",
        [DATA / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"],
    ),
    "SPY": (
        "lean-trades",
        [DATA / "lean" / "spy" / "tick" / f"2013100{d}_trade.zip" for d in (7, 8)],
    ),
}
DAYS = {"BTCUSDT": [date(2020, 2, 22)], "SPY": [date(2013, 10, 7), date(2013, 10, 8)]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveRun:
    home: Path
    reports: dict[str, ReplayReport]
    ticks: dict[str, pd.DataFrame]
    observations_reported: int


def _wait_until_sealed(home: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with sqlite3.connect(home / "landing" / "idempotency.sqlite") as db:
        while True:
            left = db.execute(
                "SELECT (SELECT count(*) FROM landed WHERE sealed IS NULL)"
                " + (SELECT count(*) FROM seals WHERE state = 'pending')"
            ).fetchone()[0]
            if left == 0:
                return
            assert time.monotonic() < deadline, f"{left} ticks still unsealed"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    home = tmp_path_factory.mktemp("live_home")
    saved = {k: os.environ.get(k) for k in ("FBE_HOME", "FBE_SCORING_CONFIG", "DAGSTER_HOME")}
    os.environ["FBE_HOME"] = str(home)
    os.environ["FBE_SCORING_CONFIG"] = '{"trigger_score": 30}'
    prepare_dagster_home()
    reporter = DagsterBarReporter(dagster_instance())
    settings = IngestSettings(
        home=home,
        webhook_passphrase="p",
        hmac_key=KEY,
        seal_interval_s=0.5,
        scoring_json='{"trigger_score": 30}',
    )
    port = free_port()
    app = create_app(settings, on_bars_closed=reporter)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    reports, ticks = {}, {}
    try:
        for symbol, (fmt, files) in REPLAYS.items():
            ticks[symbol] = read_ticks(fmt, files, get_instrument(symbol))
            reports[symbol] = replay_frame(ticks[symbol], f"http://127.0.0.1:{port}", KEY)
        _wait_until_sealed(home)
        assert app.state.live.error is None
    finally:
        server.should_exit = True
        thread.join(30)
    failures = materialize_partitions(LocalRawStore(home / "raw"), symbols=list(REPLAYS))
    assert failures == 0
    yield LiveRun(home, reports, ticks, reporter.reported)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _live(home: Path, symbol: str) -> pd.DataFrame:
    store = LiveSignalStore(signals_path(home))
    try:
        return store.signals(symbol)
    finally:
        store.close()


@pytest.mark.parametrize("symbol", list(REPLAYS))
def test_live_signals_equal_the_batch_signals(live_run: LiveRun, symbol: str) -> None:
    live = _live(live_run.home, symbol)
    batch = batch_signals(symbol)
    assert len(batch) >= 5  # BTCUSDT: 7 signals at trigger 30; SPY: 33 over the two days
    assert live["signal_id"].tolist() == batch["signal_id"].tolist()
    cols = ["ts", "bar_close", "decision_time", "direction", "poke", "score", "components"]
    pd.testing.assert_frame_equal(live[cols], batch[cols])
    # Each was computed once its bar had closed in event time, never before.
    assert (live["closed_through"] >= live["bar_close"]).all()
    assert (live["recorded_at"] > pd.Timestamp("2026-01-01", tz="UTC")).all()


def test_the_warm_up_crossed_the_session_boundary(live_run: LiveRun) -> None:
    live = _live(live_run.home, "SPY")
    days = pd.to_datetime(live["trading_date"]).dt.date
    assert set(days) == set(DAYS["SPY"])
    # The first SPY bars of the second session have features only thanks to the first one.
    first_second_day = live[days == date(2013, 10, 8)]["ts"].min()
    assert first_second_day < pd.Timestamp("2013-10-08 14:00", tz="UTC")


def test_every_acknowledged_tick_is_in_the_raw_store_exactly_once(live_run: LiveRun) -> None:
    store = LocalRawStore(live_run.home / "raw")
    for symbol in DAYS:
        report = live_run.reports[symbol]
        sent = live_run.ticks[symbol]
        assert report.accepted == report.sent == len(sent)
        # Off-session ticks are sealed into their own dates' partitions: read them all.
        frames = [
            store.read_partition("ticks", s, d) for s, d in store.partitions("ticks") if s == symbol
        ]
        raw = pd.concat([f for f in frames if f is not None], ignore_index=True)
        assert len(raw) == len(sent)
        assert not raw.duplicated(["ts_event", "seq"]).any()
        pd.testing.assert_frame_equal(
            raw.sort_values(["ts_event", "seq"])[
                ["ts_event", "price", "size", "side", "seq"]
            ].reset_index(drop=True),
            sent[["ts_event", "price", "size", "side", "seq"]].reset_index(drop=True),
        )


def test_dagster_saw_one_observation_per_closed_bar(live_run: LiveRun) -> None:
    instance = dagster_instance()
    records = instance.fetch_observations(
        AssetRecordsFilter(
            asset_key=AssetKey(["SPY", "live_session"]), asset_partitions=["2013-10-08"]
        ),
        limit=10_000,
    ).records

    with open_tables(live_run.home) as con:
        bars = con.execute(
            "select count(*) from bars_1m where symbol = 'SPY' and trading_date = '2013-10-08'"
        ).fetchone()
    assert bars is not None
    assert len(records) == bars[0] == 390
    last = max(records, key=lambda r: r.storage_id).asset_observation
    assert last is not None
    assert last.metadata["bars"].value == 390
    assert last.metadata["signals"].value == int(
        (
            pd.to_datetime(_live(live_run.home, "SPY")["trading_date"]).dt.date == date(2013, 10, 8)
        ).sum()
    )


def test_live_batch_parity_check_passes_and_catches_a_difference(live_run: LiveRun) -> None:
    for symbol, days in DAYS.items():
        for day in days:
            batch = batch_signals(symbol, day, day)
            outcome = live_parity(symbol, day, batch)
            assert outcome.passed, outcome.metadata
            assert outcome.metadata["live"] is True
            assert outcome.metadata["batch_signals_live_covered"] == len(batch)
    assert not any(
        "live_batch_parity" in c
        for c in failed_checks(LocalRawStore(live_run.home / "raw")).values()
    )
    batch = batch_signals("SPY", date(2013, 10, 8), date(2013, 10, 8))
    live = _live(live_run.home, "SPY")
    live = live[live["signal_id"].isin(batch["signal_id"])]
    through = live["closed_through"].max()
    missing = check_live_parity(batch, live.iloc[1:], through)
    assert not missing.passed
    assert missing.metadata["missing_live"] == live["signal_id"].iloc[0]
    flipped = live.assign(direction=live["direction"].map({"long": "short", "short": "long"}))
    assert check_live_parity(batch, flipped, through).metadata["different"]


ARGS = ["--symbol", "SPY", "--from", "2013-10-08", "--to", "2013-10-08", "--format", "json"]


def test_fbe_signals_lists_live_and_batch_with_the_same_ids(live_run: LiveRun) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FBE_", "DAGSTER_"))}
    env["FBE_HOME"] = str(live_run.home)
    out = {}
    for source in ("live", "batch"):
        result = subprocess.run(
            [sys.executable, "-m", "fbe_pipeline.cli", "signals", "--source", source, *ARGS],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        out[source] = json.loads(result.stdout)
    assert [s["signal_id"] for s in out["live"]] == [s["signal_id"] for s in out["batch"]]
    assert len(out["live"]) >= 10
    assert "recorded_at" in out["live"][0] and "recorded_at" not in out["batch"][0]
    assert {s["trading_date"] for s in out["live"]} == {"2013-10-08"}
