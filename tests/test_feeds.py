"""Websocket feed connectors (issue 14) against a local Binance venue that plays the real
BTCUSDT trades of ``../shared/data`` in Binance's wire format (``tests/venues/binance.py``),
forwarding to a real ingest service (``fbe serve``) on loopback.

Expected: every trade lands in the raw store exactly once through forced disconnects, withheld
ids (backfilled from the REST history), malformed and reordered messages, a planned shutdown and
refused reconnects; ids the venue cannot supply are a gap; a stall longer than the heartbeat
makes the feed ``stale`` and then reconnect; 10 refused connections open the circuit (safe
mode) and the first message after closes it.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetKey,
    AssetObservation,
    SensorResult,
    SkipReason,
    build_sensor_context,
)

from assets import make_lane
from fbe_pipeline.execution.runtime import feeds_in_safe_mode
from fbe_pipeline.live.feeds.binance import BinanceFeed
from fbe_pipeline.live.feeds.connector import FeedConnector, FeedSettings
from fbe_pipeline.live.feeds.runner import register_unknown, session_clock
from fbe_pipeline.live.feeds.status import FeedStatusStore, SymbolStatus, feed_gaps, feeds_path
from fbe_pipeline.live.replay import WATERMARK_PATH, signature_header
from fbe_pipeline.market.instruments import get_instrument, load_instruments
from fbe_pipeline.pipeline import prepare_raw_ticks, session_bars, session_bounds
from fbe_pipeline.quality.checks import gap_report
from fbe_pipeline.settings import REPO_ROOT, sample_data_dir
from fbe_pipeline.storage.store import LocalRawStore
from sensors.feeds import build_feed_status_sensor
from tests.processes import cli_env
from tests.test_live import _wait_until_sealed, free_port
from tests.test_live_crash import _stop, _wait_healthy
from tests.venues.binance import BinanceVenue, SymbolInfo
from tests.venues.netfault import TcpFaultProxy

KEY = "feed-test-key"
FAST = {
    "backoff_first_s": 0.01,
    "backoff_max_s": 0.05,
    "status_interval_s": 0.05,
    "heartbeat_interval_ms": 1000,
}


@dataclass
class Ingest:
    """A real ``fbe serve`` on its own ``FBE_HOME``."""

    home: Path
    url: str
    env: dict[str, str]


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    port = free_port()
    env = cli_env(
        tmp_path,
        sample_data_dir(),
        FBE_WEBHOOK_PASSPHRASE="p",
        FBE_INGEST_HMAC_KEY=KEY,
        FBE_LIVE_SEAL_INTERVAL_S="0.3",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "fbe_pipeline.cli", "serve", "--port", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_healthy(port, proc)
        yield Ingest(tmp_path, f"http://127.0.0.1:{port}", env)
    finally:
        _stop(proc)


class FeedThread:
    """A :class:`FeedConnector` running on an event loop of its own thread."""

    def __init__(self, home: Path, venue: BinanceVenue, url: str, **settings: Any) -> None:
        self.home = home
        self.error: BaseException | None = None
        self.connector: FeedConnector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        ready = threading.Event()
        feed = BinanceFeed(ws_url=venue.ws_url, rest_url=venue.rest_url)
        config = FeedSettings(ingest_url=url, hmac_key=KEY.encode(), **{**FAST, **settings})

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            status = FeedStatusStore(feeds_path(home))
            self.connector = FeedConnector(
                "binance",
                feed,
                ["BTCUSDT"],
                config,
                status,
                in_session=session_clock(load_instruments()),
                rng=random.Random(7),
            )
            ready.set()
            try:
                await self.connector.run()
            finally:
                status.close()

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name="feed", daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        assert self._loop is not None and self.connector is not None
        self._loop.call_soon_threadsafe(self.connector.stop)
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.error is None, repr(self.error)


def _status(home: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The BTCUSDT row of ``fbe feeds``, the gaps and the events."""
    store = FeedStatusStore(feeds_path(home))
    try:
        rows, gaps, events = store.symbols(), store.gaps(), store.events()
    finally:
        store.close()
    row = rows[rows["symbol"] == "BTCUSDT"].to_dict("records")
    return (row[0] if row else {}), gaps, events


def _wait(what: str, check: Callable[[], object], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _forwarded_through(home: Path, last_id: int) -> Callable[[], bool]:
    return lambda: _status(home)[0].get("last_trade_id") == last_id


def _landed(ingest: Ingest, trades: pd.DataFrame) -> pd.DataFrame:
    """Every BTCUSDT tick in the raw store once sealed (``seq`` is the venue's trade id).

    The recording is historic, so no later trade closes its last minute: a watermark past it
    does, as at the end of a replay."""
    body = json.dumps(
        {"symbol": "BTCUSDT", "watermark": int(trades["time_ms"].max()) * 1_000_000 + 120 * 10**9}
    ).encode()
    headers = {"FBE-Signature": signature_header(KEY.encode(), body, int(time.time()))}
    response = httpx.post(f"{ingest.url}{WATERMARK_PATH}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    home = ingest.home
    _wait_until_sealed(home)
    store = LocalRawStore(home / "raw")
    frames = [store.read_partition("ticks", s, d) for s, d in store.partitions("ticks")]
    return pd.concat([f for f in frames if f is not None], ignore_index=True)


def _assert_landed_once(landed: pd.DataFrame, trades: pd.DataFrame, missing: set[int]) -> None:
    """The raw store holds each trade of ``trades`` but ``missing`` exactly once, with the
    venue's price, quantity, time and aggressor side."""
    assert not landed["seq"].duplicated().any()
    expected = trades[~trades["id"].isin(missing)].reset_index(drop=True)
    got = landed.sort_values("seq").reset_index(drop=True)
    np.testing.assert_array_equal(got["seq"].to_numpy(), expected["id"].to_numpy())
    np.testing.assert_array_equal(got["price"].to_numpy(), expected["price"].to_numpy())
    np.testing.assert_array_equal(got["size"].to_numpy(), expected["qty"].to_numpy())
    np.testing.assert_array_equal(
        got["ts_event"].to_numpy(), expected["time_ms"].to_numpy() * 1_000_000
    )
    sides = np.where(expected["is_buyer_maker"], "sell", "buy")
    np.testing.assert_array_equal(got["side"].astype(str).to_numpy(), sides)


def test_every_trade_lands_once_through_disconnects_withheld_ids_and_junk(
    ingest: Ingest, trades: pd.DataFrame
) -> None:
    first = int(trades["id"].iloc[0])
    last = int(trades["id"].iloc[-1])
    withheld = {first + 100, first + 101, first + 2500}
    lost = set(range(first + 3000, first + 3005))
    junk = ["not json", b"\x00\x01", '{"e":"trade","s":"BTCUSDT"}', '{"e":"mystery"}']
    with BinanceVenue({"BTCUSDT": trades}, rate=2500, ping_interval_s=0.5) as venue:
        venue.withhold(withheld)
        venue.lose(lost)
        venue.inject_raw(junk, after=300)
        venue.reorder(after=800)
        venue.disconnect_after(1500)  # abrupt: no close frame
        feed = FeedThread(ingest.home, venue, ingest.url)
        assert venue.wait_connected(1, timeout=10)
        venue.start_publishing()
        _wait("the reconnect", lambda: venue.connections >= 2)
        assert venue.wait_connected(1, timeout=10)
        venue.refuse_next(2)
        venue.shutdown_after(2000)
        assert venue.wait_published(timeout=60)
        _wait("every trade forwarded", _forwarded_through(ingest.home, last))
        feed.stop()
        refused, connections = venue.refused, venue.connections

    _assert_landed_once(_landed(ingest, trades), trades, lost)
    row, gaps, events = _status(ingest.home)
    assert gaps[["symbol", "first_id", "last_id", "reason"]].to_dict("records") == [
        {
            "symbol": "BTCUSDT",
            "first_id": first + 3000,
            "last_id": first + 3004,
            "reason": "not_in_history",
        }
    ]
    in_order = trades.set_index("id")["time_ms"] * 1_000_000
    assert (gaps["start_ns"].iloc[0], gaps["end_ns"].iloc[0]) == (
        in_order[first + 2999],
        in_order[first + 3005],
    )
    # The session's gap report (a check on bars_1m) lists the feed's gap.
    day = date(2020, 2, 22)
    instrument = get_instrument("BTCUSDT")
    open_ns, close_ns = session_bounds(instrument, day)
    ticks, _ = prepare_raw_ticks(LocalRawStore(ingest.home / "raw"), instrument, day)
    report = gap_report(
        session_bars(ticks, instrument, day),
        open_ns,
        close_ns,
        feed_gaps(ingest.home, "BTCUSDT", open_ns, close_ns),
    )
    assert not report.passed
    assert (report.metadata["feed_gaps"], report.metadata["feed_missing_trades"]) == (1, 5)
    assert feed_gaps(ingest.home, "BTCUSDT", close_ns, close_ns + 86_400 * 10**9).empty
    assert row["malformed"] == len(junk)
    assert row["duplicates"] >= 1  # the reordered pair: its first arrival was backfilled
    assert row["backfilled"] >= len(withheld)
    assert row["forwarded"] == len(trades) - len(lost)
    assert row["received"] + row["backfilled"] - row["duplicates"] == row["forwarded"]
    assert refused == 2 and connections == 3
    assert row["reconnects"] == 4  # disconnect, shutdown, two refused handshakes
    assert row["state"] == "stopped"
    assert "safe_mode" not in set(events["event"])


def test_a_stall_longer_than_the_heartbeat_is_stale_then_reconnects(
    ingest: Ingest, trades: pd.DataFrame
) -> None:
    last = int(trades["id"].iloc[-1])
    with BinanceVenue({"BTCUSDT": trades}, rate=2500, ping_interval_s=0.2) as venue:
        venue.stall(3.0, after=1000, then="close")
        feed = FeedThread(ingest.home, venue, ingest.url, heartbeat_interval_ms=300)
        assert venue.wait_connected(1, timeout=10)
        venue.start_publishing()
        _wait("the stale state", lambda: _status(ingest.home)[0].get("state") == "stale", 10)
        _wait("the reconnect", lambda: venue.connections >= 2, 10)
        assert venue.wait_published(timeout=60)
        _wait("every trade forwarded", _forwarded_through(ingest.home, last))
        feed.stop()

    _assert_landed_once(_landed(ingest, trades), trades, set())
    row, gaps, events = _status(ingest.home)
    assert gaps.empty
    stale = events[events["event"] == "stale"]
    assert len(stale) == 1 and stale["detail"].iloc[0].startswith("no message for")
    after = events[events["event_id"] > stale["event_id"].iloc[0]]
    assert "connected" in set(after["event"])
    assert row["reconnects"] == 1


def test_ten_refused_connections_open_the_circuit_and_a_message_closes_it(
    ingest: Ingest, trades: pd.DataFrame
) -> None:
    last = int(trades["id"].iloc[-1])
    with BinanceVenue({"BTCUSDT": trades}, rate=2500, ping_interval_s=0.5) as venue:
        venue.refuse_next(14)
        feed = FeedThread(ingest.home, venue, ingest.url, backoff_max_s=0.3)
        _wait("safe mode", lambda: feeds_in_safe_mode(ingest.home) == {"BTCUSDT"}, 20)
        assert venue.refused < 14  # retries go on at the maximum interval
        _wait("the connection", lambda: venue.connections >= 1, 20)
        venue.start_publishing()
        _wait("the recovery", lambda: feeds_in_safe_mode(ingest.home) == set(), 20)
        assert venue.wait_published(timeout=60)
        _wait("every trade forwarded", _forwarded_through(ingest.home, last))
        feed.stop()
        assert venue.refused == 14

    _assert_landed_once(_landed(ingest, trades), trades, set())
    _, _, events = _status(ingest.home)
    kinds = list(events["event"])
    assert kinds.index("safe_mode") < kinds.index("recovered")
    [entered] = events.loc[events["event"] == "safe_mode", "detail"]
    assert entered == "data_feed_down: 10 failed connections in a row"


def test_fbe_feed_runs_until_sigterm_and_fbe_feeds_reports_it(
    ingest: Ingest, trades: pd.DataFrame
) -> None:
    last = int(trades["id"].iloc[-1])
    with BinanceVenue({"BTCUSDT": trades}, rate=5000, ping_interval_s=0.5) as venue:
        env = {**ingest.env, "FBE_FEED_SETTINGS": json.dumps(FAST)}
        urls = ["--ws-url", venue.ws_url, "--rest-url", venue.rest_url, "--url", ingest.url]
        feed = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fbe_pipeline.cli",
                "feed",
                "binance",
                "--symbol",
                "btcusdt",
                *urls,
            ],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert venue.wait_connected(1, timeout=60)
            venue.start_publishing()
            assert venue.wait_published(timeout=60)
            _wait("every trade forwarded", _forwarded_through(ingest.home, last))
            feed.send_signal(signal.SIGTERM)
            assert feed.wait(timeout=30) == 0, feed.stderr.read() if feed.stderr else ""
        finally:
            if feed.poll() is None:
                feed.kill()
    shown = subprocess.run(
        [sys.executable, "-m", "fbe_pipeline.cli", "feeds", "--format", "json"],
        env=ingest.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [row] = json.loads(shown.stdout)
    assert row["feed"] == "binance" and row["symbol"] == "BTCUSDT"
    assert row["state"] == "stopped"
    assert row["forwarded"] == len(trades) and row["last_trade_id"] == last
    assert row["gaps"] == 0 and row["gap_list"] == []
    metrics = httpx.get(f"{ingest.url}/metrics").text
    labels = 'feed="binance",symbol="BTCUSDT"'
    assert f"fbe_feed_trades_forwarded{{{labels}}} {float(len(trades))}" in metrics
    # The exposition sorts labels by name.
    state = 'fbe_feed_state{feed="binance",state="%s",symbol="BTCUSDT"} %s'
    assert state % ("stopped", "1.0") in metrics and state % ("connected", "0.0") in metrics
    _assert_landed_once(_landed(ingest, trades), trades, set())


def test_an_unknown_symbol_is_registered_from_the_venues_exchange_information(
    tmp_path: Path, trades: pd.DataFrame
) -> None:
    """Issue 14 item 7: an XRP/ETH-like pair (price about 0.0014) registers with the venue's
    tick, lot and quote currency, not with a guessed tick of 0.01 in USD."""
    pair = trades.assign(symbol="XRPETH", price=trades["price"] / 7_000_000)
    info = SymbolInfo(
        base_asset="XRP", quote_asset="ETH", tick_size="0.00000001", step_size="1.00000000"
    )
    instruments = tmp_path / "instruments.yaml"
    with BinanceVenue({"XRPETH": pair}, symbols_info={"XRPETH": info}) as venue:
        feed = BinanceFeed(ws_url=venue.ws_url, rest_url=venue.rest_url)
        added = asyncio.run(register_unknown(feed, ["XRPETH", "BTCUSDT"], instruments))
    [xrp] = added
    assert (xrp.symbol, xrp.calendar, xrp.tz) == ("XRPETH", "24/7", "UTC")
    assert (xrp.tick_size, xrp.lot_size, xrp.currency) == (1e-8, 1.0, "ETH")
    assert load_instruments(instruments)["XRPETH"] == replace(xrp)


def test_feed_figures_become_observations_of_the_live_session_when_they_change(
    fbe_home: Path,
) -> None:
    lane = make_lane(get_instrument("BTCUSDT"), date(2020, 2, 22), date(2020, 2, 22), live=True)
    sensor = build_feed_status_sensor({"BTCUSDT": lane.partitions_def})
    store = FeedStatusStore(feeds_path(fbe_home))
    status = SymbolStatus(state="connected", received=120, forwarded=118, last_trade_id=42)
    store.write("binance", "binance", {"BTCUSDT": status})
    first = sensor(build_sensor_context(cursor=None))
    assert isinstance(first, SensorResult)
    [observation] = first.asset_events
    assert isinstance(observation, AssetObservation)
    assert observation.asset_key == AssetKey(["BTCUSDT", "live_session"])
    assert observation.partition == datetime.now(UTC).date().isoformat()  # 24/7, UTC days
    figures = {k: v.value for k, v in observation.metadata.items()}
    assert (figures["feed"], figures["feed_state"], figures["feed_forwarded"]) == (
        "binance",
        "connected",
        118,
    )
    again = sensor(build_sensor_context(cursor=first.cursor))
    assert isinstance(again, SkipReason)  # nothing changed
    store.write("binance", "binance", {"BTCUSDT": replace(status, state="stale")})
    store.close()
    later = sensor(build_sensor_context(cursor=first.cursor))
    assert isinstance(later, SensorResult)
    assert [e.metadata["feed_state"].value for e in later.asset_events] == ["stale"]


def test_a_slow_ingest_slows_the_feed_which_reports_its_lag_and_drops_nothing(
    ingest: Ingest, trades: pd.DataFrame
) -> None:
    """The ingest stops answering for 4 s (a frozen link): the feed's bounded queue fills and
    the feed stops reading the venue (TCP then slows the venue), the lag shows in
    ``fbe feeds``, and its own backpressure is not taken for a silent venue; afterwards every
    trade lands once, with no reconnect."""
    last = int(trades["id"].iloc[-1])
    port = int(ingest.url.rsplit(":", 1)[1])
    with (
        TcpFaultProxy("127.0.0.1", port) as link,
        BinanceVenue({"BTCUSDT": trades}, rate=0, send_buffer_bytes=16_384) as venue,
    ):
        feed = FeedThread(ingest.home, venue, f"http://127.0.0.1:{link.port}", queue_max=300)
        assert venue.wait_connected(1, timeout=10)
        link.freeze(4.0)
        venue.start_publishing()
        _wait("a full queue", lambda: (_status(ingest.home)[0].get("lag_trades") or 0) >= 300, 10)
        received = _status(ingest.home)[0]["received"]
        time.sleep(1.5)  # longer than the heartbeat interval of 1 s
        row = _status(ingest.home)[0]
        assert row["received"] == received < len(trades)  # not reading while the queue is full
        assert row["lag_trades"] >= 300 and row["lag_ms"] > 1500 and row["state"] == "connected"
        assert venue.wait_published(timeout=60)
        _wait("every trade forwarded", _forwarded_through(ingest.home, last))
        feed.stop()
    _assert_landed_once(_landed(ingest, trades), trades, set())
    row, gaps, _ = _status(ingest.home)
    assert gaps.empty and row["duplicates"] == 0 and row["reconnects"] == 0


def test_a_feed_in_safe_mode_queues_an_alert(tmp_path: Path) -> None:
    import asyncio

    from fbe_pipeline.live.feeds.binance import BinanceFeed
    from fbe_pipeline.live.feeds.connector import FeedConnector, FeedSettings
    from fbe_pipeline.live.feeds.status import FeedStatusStore

    alerts: list[tuple[str, str, str, str]] = []
    status = FeedStatusStore(tmp_path / "feeds.sqlite")
    settings = FeedSettings(
        ingest_url="http://127.0.0.1:9",
        hmac_key=b"k",
        backoff_first_s=0.001,
        backoff_max_s=0.002,
        breaker_failures=3,
    )
    connector = FeedConnector(
        "binance",
        BinanceFeed(ws_url="ws://127.0.0.1:9"),
        ["BTCUSDT"],
        settings,
        status,
        alert=lambda *a: alerts.append(a),
    )

    async def run() -> None:
        task = asyncio.create_task(connector.run(drain_timeout_s=0.1))
        while not alerts:
            await asyncio.sleep(0.01)
        connector.stop()
        await task

    asyncio.run(asyncio.wait_for(run(), 30))
    status.close()
    severity, title, body, key = alerts[0]
    assert (severity, title) == ("ERROR", "feed binance safe_mode: BTCUSDT")
    assert body == "data_feed_down: 3 failed connections in a row"
    assert key.startswith("feed:binance:safe_mode:")
