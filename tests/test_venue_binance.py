"""The local Binance spot venue simulator (tests/venues) on real recorded BTCUSDT trades:
stream and REST wire formats, the live publication model and every fault, exercised with a
plain ``websockets`` client and ``httpx`` over loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from tests.realdata import DATA
from tests.venues.binance import BinanceVenue, SymbolInfo, load_tardis_trades
from tests.venues.netfault import TcpFaultProxy

TARDIS = DATA / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
FIRST_ID = 42377944
LAST_ID = 42387942

MakeVenue = Callable[..., BinanceVenue]


@pytest.fixture(scope="module")
def trades() -> pd.DataFrame:
    """The recorded BTCUSDT trades (9,999 rows)."""
    if not TARDIS.is_file():
        pytest.skip(f"Tardis sample not found at {TARDIS} (set FBE_SAMPLE_DATA)")
    return load_tardis_trades(TARDIS)


@pytest.fixture
def make_venue(trades: pd.DataFrame) -> Iterator[MakeVenue]:
    """Start venues (BTCUSDT = the recorded trades unless ``books`` is given); all are stopped
    at teardown."""
    venues: list[BinanceVenue] = []

    def make(books: dict[str, pd.DataFrame] | None = None, **options: Any) -> BinanceVenue:
        venue = BinanceVenue(books or {"BTCUSDT": trades}, **options)
        venues.append(venue)
        venue.start()
        return venue

    yield make
    for venue in venues:
        venue.stop()


def expected_event(row: Any) -> dict[str, Any]:
    """The Binance trade event of a recorded trade, rendered independently of the venue."""
    return {
        "e": "trade",
        "E": int(row.time_ms),
        "s": "BTCUSDT",
        "t": int(row.id),
        "p": f"{row.price:.8f}",
        "q": f"{row.qty:.8f}",
        "T": int(row.time_ms),
        "m": bool(row.is_buyer_maker),
        "M": True,
    }


async def subscribe(
    venue: BinanceVenue, path: str = "/ws/btcusdt@trade", **options: Any
) -> ClientConnection:
    """Connect a client and wait until the venue has registered its subscription."""
    expected = venue.open_connections + 1
    ws = await connect(venue.ws_url + path, ping_interval=None, close_timeout=1, **options)
    assert await asyncio.to_thread(venue.wait_connected, expected)
    return ws


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> Any:
    """The next message, decoded."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_ids(ws: ClientConnection, n: int) -> list[int]:
    """Trade ids of the next ``n`` raw-stream messages."""
    return [(await recv_json(ws))["t"] for _ in range(n)]


async def read_until_closed(ws: ClientConnection, timeout: float = 5.0) -> ConnectionClosed:
    """Read and discard messages until the connection closes; the closing exception."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed


def backfill(venue: BinanceVenue, from_id: int) -> list[dict[str, Any]]:
    """Every trade the REST history holds from ``from_id`` on, paging 1000 at a time."""
    rows: list[dict[str, Any]] = []
    with httpx.Client(base_url=venue.rest_url) as client:
        while True:
            page = client.get(
                "/api/v3/historicalTrades",
                params={"symbol": "BTCUSDT", "fromId": from_id, "limit": 1000},
            ).json()
            rows += page
            if len(page) < 1000:
                return rows
            from_id = page[-1]["id"] + 1


def test_load_tardis_trades(trades: pd.DataFrame) -> None:
    assert len(trades) == 9999
    assert trades.dtypes.astype(str).to_dict() == {
        "symbol": "object",
        "id": "int64",
        "price": "float64",
        "qty": "float64",
        "time_ms": "int64",
        "is_buyer_maker": "bool",
    }
    assert trades["id"].tolist() == list(range(FIRST_ID, LAST_ID + 1))
    first = trades.iloc[0]
    assert (first.symbol, first.price, first.qty, first.time_ms) == (
        "BTCUSDT",
        9682.0,
        0.132,
        1582329602111,
    )
    assert not first.is_buyer_maker  # the recorded aggressor bought
    assert int(trades["is_buyer_maker"].sum()) == 4732  # rows whose aggressor sold


def test_raw_stream_delivers_every_published_trade(
    make_venue: MakeVenue, trades: pd.DataFrame
) -> None:
    venue = make_venue()

    async def scenario() -> list[Any]:
        async with await subscribe(venue) as ws:
            venue.start_publishing()
            return [await recv_json(ws) for _ in range(len(trades))]

    received = asyncio.run(scenario())
    assert received == [expected_event(row) for row in trades.itertuples()]
    assert received[0]["p"] == "9682.00000000" and received[0]["q"] == "0.13200000"
    assert venue.wait_published(5)
    assert venue.published_through("BTCUSDT") == LAST_ID
    assert venue.sent == [9999]
    assert venue.connections == 1


def test_combined_stream_wraps_each_stream(make_venue: MakeVenue, trades: pd.DataFrame) -> None:
    # The recording has one symbol; a second book made of later rows gives the multiplexer
    # two independent id sequences.
    books = {"BTCUSDT": trades.iloc[:300], "BTCUSDC": trades.iloc[5000:5200]}
    venue = make_venue(books)

    async def scenario() -> list[Any]:
        async with await subscribe(venue, "/stream?streams=btcusdt@trade/btcusdc@trade") as ws:
            venue.start_publishing()
            return [await recv_json(ws) for _ in range(500)]

    received = asyncio.run(scenario())
    assert all(set(m) == {"stream", "data"} for m in received)
    assert all(m["data"]["s"].lower() + "@trade" == m["stream"] for m in received)
    by_stream = {
        stream: [m["data"]["t"] for m in received if m["stream"] == stream]
        for stream in ("btcusdt@trade", "btcusdc@trade")
    }
    assert by_stream["btcusdt@trade"] == books["BTCUSDT"]["id"].tolist()
    assert by_stream["btcusdc@trade"] == books["BTCUSDC"]["id"].tolist()


@pytest.mark.parametrize(
    "path",
    [
        "/ws/ethusdt@trade",
        "/ws/btcusdt@depth",
        "/ws/BTCUSDT@trade",
        "/stream?streams=btcusdt@trade/xyzusdt@trade",
        "/v1/btcusdt",
    ],
)
def test_unknown_stream_is_closed_with_1008(make_venue: MakeVenue, path: str) -> None:
    venue = make_venue()

    async def scenario() -> ConnectionClosed:
        async with connect(venue.ws_url + path, ping_interval=None) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            return closed.value

    closed = asyncio.run(scenario())
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1008
    assert closed.rcvd.reason.startswith("Invalid ")
    assert venue.connections == 0


def test_trades_published_while_away_come_only_from_rest(
    make_venue: MakeVenue, trades: pd.DataFrame
) -> None:
    venue = make_venue({"BTCUSDT": trades.iloc[:2000]})
    venue.disconnect_after(500, how="abrupt")  # armed before connecting: the next connection

    async def first_session() -> tuple[list[int], ConnectionClosed]:
        async with await subscribe(venue) as ws:
            venue.start_publishing()
            ids = await recv_ids(ws, 500)
            with pytest.raises(ConnectionClosedError) as dropped:
                await asyncio.wait_for(ws.recv(), 5)
            return ids, dropped.value

    async def second_session() -> None:
        async with await subscribe(venue) as ws:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)

    ids, dropped = asyncio.run(first_session())
    assert ids == list(range(FIRST_ID, FIRST_ID + 500))
    assert dropped.rcvd is None  # transport aborted: no close frame
    assert venue.wait_published(5)
    asyncio.run(second_session())  # nothing is replayed to a reconnecting client
    assert [r["id"] for r in backfill(venue, ids[-1] + 1)] == list(
        range(FIRST_ID + 500, FIRST_ID + 2000)
    )
    assert venue.sent == [500, 0]
    assert venue.connections == 2


def test_disconnect_after_close_sends_1001(make_venue: MakeVenue) -> None:
    venue = make_venue()

    async def scenario() -> tuple[list[int], ConnectionClosed]:
        async with await subscribe(venue) as ws:
            venue.disconnect_after(10, how="close")
            venue.start_publishing()
            ids = await recv_ids(ws, 10)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            return ids, closed.value

    ids, closed = asyncio.run(scenario())
    assert ids == list(range(FIRST_ID, FIRST_ID + 10))
    assert closed.rcvd is not None and closed.rcvd.code == 1001


def test_rest_history_pages(make_venue: MakeVenue, trades: pd.DataFrame) -> None:
    venue = make_venue(symbols_info={"BTCUSDT": SymbolInfo("BTC", "USDT", tick_size="0.10000000")})
    with httpx.Client(base_url=venue.rest_url) as client:
        history = "/api/v3/historicalTrades"
        assert client.get(history, params={"symbol": "BTCUSDT"}).json() == []
        venue.start_publishing()
        assert venue.wait_published(5)
        assert client.get("/api/v3/ping").json() == {}
        page = client.get(history, params={"symbol": "BTCUSDT", "fromId": FIRST_ID + 1, "limit": 3})
        assert page.json() == [
            {
                "id": FIRST_ID + 1,
                "price": "9682.00000000",
                "qty": "0.41200000",
                "quoteQty": "3988.98400000",
                "time": 1582329602116,
                "isBuyerMaker": False,
                "isBestMatch": True,
            },
            {
                "id": FIRST_ID + 2,
                "price": "9682.00000000",
                "qty": "0.29600000",
                "quoteQty": "2865.87200000",
                "time": 1582329602150,
                "isBuyerMaker": False,
                "isBestMatch": True,
            },
            {
                "id": FIRST_ID + 3,
                "price": "9682.19000000",
                "qty": "0.01000000",
                "quoteQty": "96.82190000",
                "time": 1582329602150,
                "isBuyerMaker": False,
                "isBestMatch": True,
            },
        ]
        latest = client.get(history, params={"symbol": "BTCUSDT"}).json()
        assert [r["id"] for r in latest] == list(range(LAST_ID - 499, LAST_ID + 1))
        beyond = client.get(history, params={"symbol": "BTCUSDT", "fromId": LAST_ID + 1})
        assert beyond.json() == []
        errors: list[tuple[dict[str, str | int], int]] = [
            ({"symbol": "BTCUSDT", "limit": 1001}, -1130),
            ({"symbol": "BTCUSDT", "fromId": "12a"}, -1100),
            ({"symbol": "ETHUSDT"}, -1121),
            ({}, -1102),
        ]
        for params, code in errors:
            response = client.get(history, params=params)
            assert response.status_code == 400
            assert response.json()["code"] == code
        info = client.get("/api/v3/exchangeInfo", params={"symbol": "BTCUSDT"}).json()
        assert client.get("/api/v3/exchangeInfo", params={"symbol": "X"}).json()["code"] == -1121
    assert isinstance(info.pop("serverTime"), int)
    assert info == {
        "timezone": "UTC",
        "symbols": [
            {
                "symbol": "BTCUSDT",
                "status": "TRADING",
                "baseAsset": "BTC",
                "quoteAsset": "USDT",
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": "0.10000000",
                        "maxPrice": "1000000.00000000",
                        "tickSize": "0.10000000",
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": "0.00001000",
                        "maxQty": "9000.00000000",
                        "stepSize": "0.00001000",
                    },
                ],
            }
        ],
    }
    rows = backfill(venue, FIRST_ID)
    assert [r["id"] for r in rows] == trades["id"].tolist()
    assert [r["isBuyerMaker"] for r in rows] == trades["is_buyer_maker"].tolist()
    assert venue.rest_requests[:3] == [
        "/api/v3/historicalTrades?symbol=BTCUSDT",
        "/api/v3/ping",
        f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={FIRST_ID + 1}&limit=3",
    ]


def test_rest_returns_only_published_trades(make_venue: MakeVenue) -> None:
    venue = make_venue(rate=400)
    venue.start_publishing()
    time.sleep(0.25)
    rows = backfill(venue, FIRST_ID)
    through = venue.published_through("BTCUSDT")
    assert through is not None and through < LAST_ID
    assert rows, "some trades are published after 0.25 s at 400/s"
    assert [r["id"] for r in rows] == list(range(FIRST_ID, rows[-1]["id"] + 1))
    assert rows[-1]["id"] <= through
    assert not venue.done.is_set()


def test_rest_fail_next(make_venue: MakeVenue) -> None:
    venue = make_venue()
    venue.rest_fail_next(2)
    with httpx.Client(base_url=venue.rest_url) as client:
        failed = [client.get("/api/v3/ping") for _ in range(2)]
        assert [(r.status_code, r.json()["code"]) for r in failed] == [(503, -1001)] * 2
        assert client.get("/api/v3/ping").status_code == 200
        venue.rest_fail_next(1, status=429)
        limited = client.get("/api/v3/exchangeInfo")
        assert (limited.status_code, limited.json()["code"]) == (429, -1003)
    assert venue.rest_requests == ["/api/v3/ping"] * 3 + ["/api/v3/exchangeInfo"]


def test_withheld_ids_only_in_rest_and_lost_ids_nowhere(
    make_venue: MakeVenue, trades: pd.DataFrame
) -> None:
    venue = make_venue({"BTCUSDT": trades.iloc[:1000]})
    withheld = set(range(FIRST_ID + 100, FIRST_ID + 110))
    lost = {FIRST_ID + 500, FIRST_ID + 501, FIRST_ID + 999}
    venue.withhold(withheld)
    venue.lose(lost, symbol="BTCUSDT")
    every = set(range(FIRST_ID, FIRST_ID + 1000))

    async def scenario() -> list[int]:
        async with await subscribe(venue) as ws:
            venue.start_publishing()
            return await recv_ids(ws, len(every - withheld - lost))

    streamed = asyncio.run(scenario())
    assert streamed == sorted(every - withheld - lost)
    assert [r["id"] for r in backfill(venue, FIRST_ID)] == sorted(every - lost)
    assert venue.published_through("BTCUSDT") == FIRST_ID + 999
    assert venue.sent == [987]


def test_refuse_next_answers_503_then_connects(make_venue: MakeVenue) -> None:
    venue = make_venue()
    venue.refuse_next(2)

    async def scenario() -> list[int]:
        statuses = []
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                await connect(venue.ws_url + "/ws/btcusdt@trade", ping_interval=None)
            statuses.append(refused.value.response.status_code)
        async with await subscribe(venue):
            pass
        return statuses

    assert asyncio.run(scenario()) == [503, 503]
    assert (venue.refused, venue.connections) == (2, 1)


def test_pings_are_answered_and_a_silent_client_is_closed(make_venue: MakeVenue) -> None:
    venue = make_venue(ping_interval_s=0.2, pong_timeout_s=0.6)

    async def scenario() -> float:
        async with await subscribe(venue) as healthy, await subscribe(venue) as silent:
            # A client that stops reading never sees the pings, so never answers them.
            silent.transport.pause_reading()
            paused = time.monotonic()
            while venue.pong_timeouts == 0 and time.monotonic() - paused < 5:
                await asyncio.sleep(0.02)
            detected = time.monotonic() - paused
            silent.transport.resume_reading()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(silent.recv(), 5)
            await asyncio.sleep(0.5)
            assert healthy.state.name == "OPEN"
        return detected

    detected = asyncio.run(scenario())
    # The last ping may have reached the client just before it stopped reading.
    assert 0.6 - 0.2 <= detected < 0.6 + 0.2 + 0.3
    assert venue.pong_timeouts == 1
    assert venue.pongs >= 5  # the healthy client answered every ping for over a second


def test_server_shutdown_event_then_1001(make_venue: MakeVenue) -> None:
    venue = make_venue()

    async def scenario() -> tuple[list[Any], ConnectionClosed]:
        async with await subscribe(venue) as ws:
            venue.shutdown_after(3)
            venue.start_publishing()
            messages = [await recv_json(ws) for _ in range(4)]
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            return messages, closed.value

    messages, closed = asyncio.run(scenario())
    assert [m["t"] for m in messages[:3]] == [FIRST_ID, FIRST_ID + 1, FIRST_ID + 2]
    assert set(messages[3]) == {"e", "E"} and messages[3]["e"] == "serverShutdown"
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1001, "server shutdown")


def test_inject_raw_and_reorder(make_venue: MakeVenue, trades: pd.DataFrame) -> None:
    venue = make_venue({"BTCUSDT": trades.iloc[:10]})
    raw: list[str | bytes] = [
        "{not json",
        '{"e":"fancyEvent","E":1}',
        '{"e":"trade","E":1,"s":"BTCUSDT"}',
        b"\x00\x01binary",
    ]

    async def scenario() -> list[str | bytes]:
        async with await subscribe(venue) as ws:
            venue.inject_raw(raw, after=2)
            venue.reorder(after=5)
            venue.start_publishing()
            return [await asyncio.wait_for(ws.recv(), 5) for _ in range(14)]

    frames = asyncio.run(scenario())
    assert frames[2:6] == raw
    trade_ids = [json.loads(f)["t"] for f in frames[:2] + frames[6:]]
    order = [0, 1, 2, 3, 4, 6, 5, 7, 8, 9]
    assert trade_ids == [FIRST_ID + i for i in order]


def test_stall_silences_then_drops_and_rest_covers_the_gap(make_venue: MakeVenue) -> None:
    venue = make_venue(rate=500, ping_interval_s=0.1)

    async def scenario() -> tuple[list[int], float, int]:
        async with await subscribe(venue) as ws:
            venue.stall(0.6, after=50)
            venue.start_publishing()
            ids = await recv_ids(ws, 50)
            stalled_at = time.monotonic()
            pongs = venue.pongs
            pong = await ws.ping()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pong), 0.3)
            with pytest.raises(ConnectionClosedError) as dropped:
                await asyncio.wait_for(ws.recv(), 5)
            assert dropped.value.rcvd is None
            return ids, time.monotonic() - stalled_at, venue.pongs - pongs

    ids, silent_for, pongs_during_stall = asyncio.run(scenario())
    assert ids == list(range(FIRST_ID, FIRST_ID + 50))
    assert silent_for >= 0.55
    assert pongs_during_stall == 0  # no venue pings while stalled
    through = venue.published_through("BTCUSDT")
    assert through is not None and through > FIRST_ID + 50 + 200  # publication went on
    assert backfill(venue, FIRST_ID + 50)[0]["id"] == FIRST_ID + 50


def test_stall_then_resume_delivers_late_and_in_order(
    make_venue: MakeVenue, trades: pd.DataFrame
) -> None:
    venue = make_venue({"BTCUSDT": trades.iloc[:300]}, rate=1000)

    async def scenario() -> tuple[list[int], list[float]]:
        async with await subscribe(venue) as ws:
            venue.stall(0.4, after=20, then="resume")
            venue.start_publishing()
            ids, arrivals = [], []
            for _ in range(300):
                ids.append((await recv_json(ws))["t"])
                arrivals.append(time.monotonic())
            return ids, arrivals

    ids, arrivals = asyncio.run(scenario())
    assert ids == list(range(FIRST_ID, FIRST_ID + 300))
    assert arrivals[20] - arrivals[19] >= 0.35


def test_slow_reader_slows_publication_without_loss(
    make_venue: MakeVenue, trades: pd.DataFrame
) -> None:
    # A small socket buffer makes the backlog of a non-reading client fill within 9,999 trades.
    venue = make_venue(send_buffer_bytes=8192)

    async def scenario() -> tuple[int | None, int | None, list[int]]:
        async with await subscribe(venue) as ws:
            ws.transport.pause_reading()
            venue.start_publishing()
            await asyncio.sleep(0.4)
            before = venue.published_through("BTCUSDT")
            await asyncio.sleep(0.2)
            after = venue.published_through("BTCUSDT")
            ws.transport.resume_reading()
            return before, after, await recv_ids(ws, len(trades))

    before, after, ids = asyncio.run(scenario())
    assert before is not None and after == before
    assert before < LAST_ID
    assert ids == trades["id"].tolist()
    assert venue.wait_published(5)


def test_proxy_freeze_starves_pings_and_cut_resets(make_venue: MakeVenue) -> None:
    venue = make_venue(ping_interval_s=0.1, pong_timeout_s=0.5)
    ws_port = int(venue.ws_url.rsplit(":", 1)[1])

    async def scenario(proxy: TcpFaultProxy) -> None:
        via_proxy = f"ws://127.0.0.1:{proxy.port}/ws/btcusdt@trade"
        # A freeze shorter than the pong timeout is survived.
        async with connect(via_proxy, ping_interval=None, close_timeout=1) as ws:
            assert await asyncio.to_thread(venue.wait_connected, 1)
            proxy.freeze(0.3)
            await asyncio.sleep(0.5)
            assert venue.pong_timeouts == 0 and venue.open_connections == 1
            # A longer one makes the venue give up on the connection.
            proxy.freeze(1.5)
            await asyncio.sleep(1.0)
            assert venue.pong_timeouts == 1 and venue.open_connections == 0
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        async with connect(via_proxy, ping_interval=None, close_timeout=1) as ws:
            assert await asyncio.to_thread(venue.wait_connected, 1)
            venue.start_publishing()
            assert (await recv_json(ws))["t"] == FIRST_ID
            proxy.cut()
            reset = await read_until_closed(ws)
            assert isinstance(reset, ConnectionClosedError) and reset.rcvd is None

    with TcpFaultProxy("127.0.0.1", ws_port) as proxy:
        asyncio.run(scenario(proxy))
    deadline = time.monotonic() + 5
    while venue.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert venue.open_connections == 0


def test_stop_closes_connections_servers_and_thread(trades: pd.DataFrame) -> None:
    with BinanceVenue({"BTCUSDT": trades.iloc[:100]}) as venue:
        ws_port = int(venue.ws_url.rsplit(":", 1)[1])
        rest_port = int(venue.rest_url.rsplit(":", 1)[1])

        async def hold_open() -> None:
            async with await subscribe(venue) as ws:
                await asyncio.to_thread(venue.stop)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

        asyncio.run(hold_open())
    assert not [t for t in threading.enumerate() if t.name == "binance-venue"]
    for port in (ws_port, rest_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
