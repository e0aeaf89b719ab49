"""The Alpaca feed connector against a local Alpaca stock stream that plays real SPY trades of
2013-10-07 (Lean) in Alpaca's wire format (``tests/venues/alpaca.py``), forwarding to a real
ingest service (``fbe serve``) on loopback.

Expected: every trade published while the feed is subscribed lands in the raw store exactly
once, with the venue's price, size and time; Alpaca has no history by id, so a disconnection
loses the trades published meanwhile and is recorded as one ``disconnected`` gap; refused auths
forward nothing and are followed by recovery; junk messages are counted as malformed and never
forwarded (nor stop the feed); refused auths open the circuit; a disconnect is a gap of every
symbol of the feed, from the last trade received before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from websockets.asyncio.client import connect

from fbe_pipeline.live.feeds.alpaca import AlpacaFeed
from fbe_pipeline.live.feeds.connector import FeedConnector, FeedSettings
from fbe_pipeline.live.feeds.runner import session_clock
from fbe_pipeline.live.feeds.status import FeedStatusStore, feeds_path
from fbe_pipeline.live.replay import WATERMARK_PATH, read_ticks, signature_header, watermarks
from fbe_pipeline.market.instruments import get_instrument, load_instruments
from fbe_pipeline.pipeline import session_bounds
from fbe_pipeline.storage.store import LocalRawStore
from tests.test_feeds import FAST, KEY, Ingest, _wait
from tests.test_feeds import ingest as ingest  # the fixture: a real `fbe serve`
from tests.test_live import _wait_until_sealed, free_port
from tests.venues.alpaca import AlpacaVenue

KEY_ID, SECRET = "alpaca-test-key", "alpaca-test-secret"
DAY = date(2013, 10, 7)
JUNK: list[str | bytes] = [
    "not json",
    b"\x00\x01",
    "[" * 5000,  # nested too deep: must not raise RecursionError in the stream task
    '[{"T":"mystery"}]',
    '[{"T":"t","S":"SPY"}]',  # a trade without its fields
    # Taken for trades, these two would make the ingest refuse their batch (4xx): feed stopped.
    '[{"T":"t","S":"SPY","i":1,"x":"P","p":NaN,"s":100,"t":"2013-10-07T13:30:00Z"}]',
    '[{"T":"t","S":"SPY","i":-1,"x":"P","p":167.4,"s":100,"t":"2013-10-07T13:30:00Z"}]',
    # A trade of a symbol the feed did not subscribe to.
    '[{"T":"t","S":"QQQ","i":7,"x":"P","p":85.1,"s":100,"t":"2013-10-07T13:30:00Z"}]',
]


def _session_trades(sample_data: Path, symbol: str, n: int) -> pd.DataFrame:
    """The first ``n`` recorded trades of ``symbol`` from the open of the :data:`DAY` session."""
    instrument = get_instrument(symbol)
    path = sample_data / "lean" / symbol.lower() / "tick" / f"{DAY:%Y%m%d}_trade.zip"
    ticks = read_ticks("lean-trades", [path], instrument)
    open_ns, _ = session_bounds(instrument, DAY)
    return ticks[ticks["ts_event"] >= open_ns].head(n).reset_index(drop=True)


@pytest.fixture(scope="module")
def spy(sample_data: Path) -> pd.DataFrame:
    """3000 real SPY trades from the open of 2013-10-07 (its first 78 s)."""
    return _session_trades(sample_data, "SPY", 3000)


@contextlib.contextmanager
def _feed(
    home: Path,
    venue: AlpacaVenue,
    ingest_url: str,
    symbols: tuple[str, ...] = ("SPY",),
    drain_timeout_s: float = 30.0,
    **settings: Any,
) -> Iterator[FeedConnector]:
    """An Alpaca :class:`FeedConnector` running on a thread of its own until the block ends
    (then stopped and joined; raises what ``run`` raised)."""
    status = FeedStatusStore(feeds_path(home))
    connector = FeedConnector(
        "alpaca",
        AlpacaFeed(KEY_ID, SECRET, ws_url=venue.ws_url),
        list(symbols),
        FeedSettings(ingest_url=ingest_url, hmac_key=KEY.encode(), **{**FAST, **settings}),
        status,
        in_session=session_clock(load_instruments()),
        rng=random.Random(7),
    )
    runner = asyncio.Runner()
    loop = runner.get_loop()
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="alpaca-feed") as pool:
            running = pool.submit(runner.run, connector.run(drain_timeout_s))
            try:
                yield connector
            finally:
                loop.call_soon_threadsafe(connector.stop)
                running.result(timeout=60)
    finally:
        runner.close()
        status.close()


def _tables(home: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The feed status rows (indexed by symbol), the gaps and the events."""
    store = FeedStatusStore(feeds_path(home))
    try:
        return store.symbols().set_index("symbol"), store.gaps(), store.events()
    finally:
        store.close()


def _require(condition: object, what: str) -> None:
    """Fail the test outright unless ``condition``: in an ``xfail`` test a broken setup must
    not pass for the expected ``AssertionError``."""
    if not condition:
        pytest.fail(f"setup failed: {what}")


def _forwarded(home: Path) -> int:
    rows = _tables(home)[0]
    return int(rows.loc["SPY", "forwarded"]) if "SPY" in rows.index else 0


def _sealed(ingest: Ingest, published: pd.DataFrame) -> pd.DataFrame:
    """Every tick in the raw store, after a watermark per symbol of ``published`` closed its
    last minute (no later trade of the recording will)."""
    for symbol, mark in watermarks(published).items():
        body = json.dumps({"symbol": symbol, "watermark": mark}).encode()
        signature = signature_header(KEY.encode(), body, int(time.time()))
        answer = httpx.post(
            ingest.url + WATERMARK_PATH, content=body, headers={"FBE-Signature": signature}
        )
        assert answer.status_code == 200, answer.text
    _wait_until_sealed(ingest.home)
    raw = LocalRawStore(ingest.home / "raw")
    parts = [raw.read_partition("ticks", s, d) for s, d in raw.partitions("ticks")]
    return pd.concat([p for p in parts if p is not None], ignore_index=True)


def _assert_landed_once(landed: pd.DataFrame, expected: pd.DataFrame) -> None:
    """``landed`` holds each trade of ``expected`` (rows of the venue's ``trades``) once, with
    its price, size and time, as the feed's id: the venue's id and the exchange letter's rank
    (two exchanges print the same id, which the ingest would take for a duplicate)."""
    rank = expected["exchange"].map(lambda x: ord(x) - ord("A") + 1)
    want = expected.assign(seq=expected["id"] * 100 + rank).sort_values(["ts_event", "seq"])
    got = landed.sort_values(["ts_event", "seq"])
    assert not got["seq"].duplicated().any()
    for column in ("seq", "ts_event", "price", "size"):
        np.testing.assert_array_equal(got[column].to_numpy(), want[column].to_numpy(), column)
    assert set(got["source"]) == {"alpaca"} and set(got["side"].astype(str)) == {"unknown"}


def test_trades_published_while_subscribed_land_once_through_a_drop_refused_auths_and_junk(
    ingest: Ingest, spy: pd.DataFrame
) -> None:
    """The venue drops the feed after 800 trades and refuses its next 3 auths: the trades
    published meanwhile are lost and are one ``disconnected`` gap; nothing else is lost."""
    with AlpacaVenue(spy, key=KEY_ID, secret=SECRET, rate=2000) as venue:
        venue.inject_raw(JUNK, after=20)
        # A close frame, not an abort: an abort can discard trades in flight, and the test
        # must tell what was sent from what was published while the feed was away.
        venue.disconnect_after(100, how="close")
        with _feed(ingest.home, venue, ingest.url):
            assert venue.wait_connected(1, timeout=10)
            venue.refuse_auth_next(3)
            venue.start_publishing()
            assert venue.wait_published(timeout=30)
            delivered = [row for rows in venue.deliveries for row in rows]
            _wait("every trade forwarded", lambda: _forwarded(ingest.home) == len(delivered), 30)
    trades = venue.trades
    assert trades["id"].duplicated().any()  # ids repeat across exchanges, as on the real feed
    assert (venue.connections, venue.auth_failures) == (5, 3)
    assert len(venue.deliveries[0]) == 800 and venue.deliveries[1:4] == [[], [], []]
    back = venue.deliveries[4]
    away = trades.drop(index=delivered)
    assert len(away) > 0 and len(back) > 0

    _assert_landed_once(_sealed(ingest, trades), trades.loc[delivered])
    rows, gaps, _ = _tables(ingest.home)
    row = rows.loc["SPY"]
    assert row["received"] == row["forwarded"] == len(delivered)
    assert (row["reconnects"], row["duplicates"]) == (4, 0)
    assert row["malformed"] == 3 + len(JUNK)  # each `402 auth failed`, each junk message
    assert row["state"] == "stopped"
    assert gaps[["symbol", "first_id", "last_id", "reason"]].to_dict("records") == [
        {"symbol": "SPY", "first_id": None, "last_id": None, "reason": "disconnected"}
    ]
    # It ends at the first trade received after the recovery, which follows every trade lost.
    first_back = int(trades.loc[back[0], "ts_event"])
    assert gaps["end_ns"].iloc[0] == first_back >= away["ts_event"].max()


def test_the_venue_answers_alpacas_protocol_errors(spy: pd.DataFrame) -> None:
    async def session(url: str, *messages: dict[str, Any]) -> list[Any]:
        async with connect(url + "/v2/sip") as ws:
            answers = [json.loads(await ws.recv())]
            for message in messages:
                await ws.send(json.dumps(message))
                answers.append(json.loads(await ws.recv()))
            return answers

    subscribe = {"action": "subscribe", "trades": ["SPY"]}
    with AlpacaVenue(spy, key=KEY_ID, secret=SECRET) as venue:
        wrong = asyncio.run(
            session(venue.ws_url, subscribe, {"action": "auth", "key": KEY_ID, "secret": "x"})
        )
        right = asyncio.run(
            session(venue.ws_url, {"action": "auth", "key": KEY_ID, "secret": SECRET}, subscribe)
        )
    assert wrong == [
        [{"T": "success", "msg": "connected"}],
        [{"T": "error", "code": 401, "msg": "not authenticated"}],
        [{"T": "error", "code": 402, "msg": "auth failed"}],
    ]
    assert right[1:] == [
        [{"T": "success", "msg": "authenticated"}],
        [{"T": "subscription", "trades": ["SPY"], "quotes": [], "bars": []}],
    ]
    assert venue.auth_failures == 1


def test_refused_auths_count_as_failed_connections_and_open_the_circuit(
    tmp_path: Path, spy: pd.DataFrame
) -> None:
    with AlpacaVenue(spy, key=KEY_ID, secret=SECRET) as venue:
        venue.refuse_auth_next(12)
        # Nothing is published, so nothing is forwarded: no ingest is needed.
        with _feed(tmp_path, venue, f"http://127.0.0.1:{free_port()}", drain_timeout_s=0):
            _require(venue.wait_connected(1, timeout=20), "the connection after 12 refusals")
    _require(venue.auth_failures == 12, "12 refused auths")
    events = list(_tables(tmp_path)[2]["event"])
    assert "safe_mode" in events
    assert events.index("safe_mode") < events.index("recovered")


def _disconnect_gaps(
    home: Path, ticks: pd.DataFrame, symbols: tuple[str, ...]
) -> tuple[AlpacaVenue, pd.DataFrame]:
    """Play ``ticks`` to a feed of ``symbols`` (forwarding nowhere) with one abrupt disconnect
    after 50 messages (400 trades) and a reconnect 0.2 s later; the venue and the gaps."""
    with AlpacaVenue(ticks, key=KEY_ID, secret=SECRET, rate=2500) as venue:
        venue.disconnect_after(50)
        nowhere = f"http://127.0.0.1:{free_port()}"
        settings = {"backoff_first_s": 0.2, "backoff_max_s": 0.3}
        with _feed(home, venue, nowhere, symbols, drain_timeout_s=0, **settings):
            _require(venue.wait_connected(1, timeout=10), "the first connection")
            venue.start_publishing()
            _require(venue.wait_published(timeout=30), "the publication")
    _require(venue.connections == 2 and venue.deliveries[1], "trades after the reconnect")
    return venue, _tables(home)[1]


def test_the_disconnect_gap_spans_every_trade_published_while_away(
    tmp_path: Path, spy: pd.DataFrame
) -> None:
    venue, gaps = _disconnect_gaps(tmp_path, spy.head(2000), ("SPY",))
    away = venue.trades.drop(index=[r for rows in venue.deliveries for r in rows])
    [gap] = gaps.to_dict("records")
    assert gap["start_ns"] <= away["ts_event"].min()
    assert gap["end_ns"] >= away["ts_event"].max()


def test_a_disconnect_is_a_gap_of_every_symbol_of_the_feed(
    tmp_path: Path, sample_data: Path, spy: pd.DataFrame
) -> None:
    bac = _session_trades(sample_data, "BAC", 1000)
    both = pd.concat([spy.head(1000), bac]).sort_values("ts_event", kind="stable")
    _, gaps = _disconnect_gaps(tmp_path, both, ("SPY", "BAC"))
    assert sorted(gaps["symbol"]) == ["BAC", "SPY"]
    assert set(gaps["reason"]) == {"disconnected"}
