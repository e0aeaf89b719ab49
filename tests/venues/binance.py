"""A local Binance spot market-data venue: trade streams and REST on loopback, replaying
recorded trades as a live market, with fault injection.

The venue runs one asyncio event loop in a background thread. On it run

* a websocket server (``websockets``) serving ``/ws/<symbol>@trade`` and
  ``/stream?streams=<symbol>@trade/...`` (symbols in lower case, as Binance requires);
* a REST server (FastAPI under uvicorn, on its own port): ``/api/v3/ping``,
  ``/api/v3/historicalTrades`` and ``/api/v3/exchangeInfo``;
* one publisher task per symbol once :meth:`BinanceVenue.start_publishing` is called.

Semantics worth knowing when writing assertions:

* Live market: a connection receives only trades published while it is subscribed. Trades
  published while a client is away are only available from ``historicalTrades``.
* ``E`` (event time) of a trade event equals its recorded trade time ``T``: the recording
  has no separate event time, and keeping recorded times lets tests compare values with the
  source data. ``serverTime`` and the ``E`` of ``serverShutdown`` are wall-clock ms.
* Backpressure: each connection has its own outgoing queue drained by a sender task that
  awaits ``send()``. With ``rate=0`` the publisher waits while any connection's queue is above
  a high-water mark, so a slow reader slows publication for everyone and nothing is dropped.
  With ``rate>0`` publication keeps its pace and a slow reader's queue grows without bound.
* A stream that is unknown or malformed (path, symbol, stream type, upper-case symbol) is
  accepted at the handshake and then closed with code 1008 and the reason
  ``"Invalid stream: <name>"`` (or ``"Invalid path: <path>"``); such connections are not
  counted in ``connections``.
* Connection faults (``disconnect_after``, ``stall``, ``inject_raw``, ``reorder``,
  ``shutdown_after``) apply to every connection open when armed, each counting the trade
  messages sent on it; when none is open, to the next connection accepted. A fault whose
  count is never reached does not fire. Negative counts raise ``ValueError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import socket
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from http import HTTPStatus
from itertools import islice, pairwise
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

__all__ = ["BinanceVenue", "SymbolInfo", "load_tardis_trades"]

_T = TypeVar("_T")
_HOST = "127.0.0.1"
_HIGH_WATER = 256
_LOW_WATER = 64
_MAX_LIMIT = 1000
_QUOTE_ASSETS = ("USDT", "FDUSD", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB")
_COLUMNS = ("symbol", "id", "price", "qty", "time_ms", "is_buyer_maker")
_REST_FAILURE_CODES = {429: -1003, 418: -1003}
_REST_FAILURE_MSG = {
    -1001: "Internal error; unable to process your request. Please try again.",
    -1003: "Too many requests; current limit is exceeded.",
}


def load_tardis_trades(path: str | Path) -> pd.DataFrame:
    """Read a Tardis trades CSV into the venue's trade table.

    Parameters
    ----------
    path
        A Tardis ``trades`` CSV (columns ``exchange,symbol,timestamp,local_timestamp,id,side,
        price,amount``; ``timestamp`` in µs UTC; ``side`` is the aggressor).

    Returns
    -------
    pandas.DataFrame
        Columns ``symbol`` (str), ``id`` (int64), ``price`` (float64), ``qty`` (float64),
        ``time_ms`` (int64, ms UTC, the exchange timestamp floored to ms) and
        ``is_buyer_maker`` (bool, true when the aggressor sold), in file order.

    Raises
    ------
    ValueError
        If ``side`` holds anything but ``buy`` / ``sell``.
    """
    raw = pd.read_csv(
        path,
        usecols=["symbol", "timestamp", "id", "side", "price", "amount"],
        dtype={"symbol": str, "timestamp": "int64", "id": "int64", "side": str},
    )
    sides = set(raw["side"].unique())
    if not sides <= {"buy", "sell"}:
        raise ValueError(f"{path}: unexpected side values {sorted(sides - {'buy', 'sell'})}")
    return pd.DataFrame(
        {
            "symbol": raw["symbol"].astype(str),
            "id": raw["id"].astype("int64"),
            "price": raw["price"].astype("float64"),
            "qty": raw["amount"].astype("float64"),
            "time_ms": (raw["timestamp"] // 1000).astype("int64"),
            "is_buyer_maker": (raw["side"] == "sell").astype(bool),
        }
    )


@dataclass(frozen=True)
class SymbolInfo:
    """``exchangeInfo`` description of a symbol.

    Parameters
    ----------
    base_asset, quote_asset
        Asset codes, e.g. ``BTC`` and ``USDT``.
    tick_size, step_size
        ``PRICE_FILTER.tickSize`` and ``LOT_SIZE.stepSize`` as Binance decimal strings.
    """

    base_asset: str
    quote_asset: str
    tick_size: str = "0.01000000"
    step_size: str = "0.00001000"


def _default_info(symbol: str) -> SymbolInfo:
    for quote in _QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return SymbolInfo(symbol[: -len(quote)], quote)
    raise ValueError(f"cannot split {symbol!r} into base and quote assets; pass a SymbolInfo")


def _decimal_str(value: Decimal) -> str:
    return f"{value:.8f}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _error_response(status: int, code: int, msg: str) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg}, status_code=status)


class _BinanceError(Exception):
    """A request rejected with HTTP 400 and a Binance error body."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class _Book:
    """One symbol's trades, pre-rendered for the stream and REST, and its publication cursor."""

    def __init__(self, symbol: str, trades: pd.DataFrame) -> None:
        missing = [c for c in _COLUMNS if c not in trades.columns]
        if missing:
            raise ValueError(f"{symbol}: trades lack columns {missing}")
        ids = [int(i) for i in trades["id"]]
        if any(b <= a for a, b in pairwise(ids)):
            raise ValueError(f"{symbol}: trade ids must be strictly increasing")
        self.symbol = symbol
        self.stream = f"{symbol.lower()}@trade"
        self.ids = ids
        # Wall clock (ns) at which each trade was published, 0 before; for latency benchmarks.
        self.published_ns = [0] * len(ids)
        self.texts: list[str] = []
        self.rows: list[dict[str, Any]] = []
        columns = zip(
            ids,
            trades["price"],
            trades["qty"],
            trades["time_ms"],
            trades["is_buyer_maker"],
            strict=True,
        )
        for trade_id, price, qty, time_ms, maker in columns:
            # repr() is the shortest exact rendering of the recorded decimal, so the product
            # is the exact notional rather than a float approximation of it.
            p, q = Decimal(repr(float(price))), Decimal(repr(float(qty)))
            price_s, qty_s = _decimal_str(p), _decimal_str(q)
            t_ms, is_maker = int(time_ms), bool(maker)
            event = {
                "e": "trade",
                "E": t_ms,
                "s": symbol,
                "t": trade_id,
                "p": price_s,
                "q": qty_s,
                "T": t_ms,
                "m": is_maker,
                "M": True,
            }
            self.texts.append(json.dumps(event, separators=(",", ":")))
            self.rows.append(
                {
                    "id": trade_id,
                    "price": price_s,
                    "qty": qty_s,
                    "quoteQty": _decimal_str(p * q),
                    "time": t_ms,
                    "isBuyerMaker": is_maker,
                    "isBestMatch": True,
                }
            )
        self.published = 0

    def page(self, from_id: int | None, limit: int, lost: set[int]) -> list[dict[str, Any]]:
        """Published, not lost trades: from the first id >= ``from_id``, else the latest."""
        if from_id is None:
            newest_first = range(self.published - 1, -1, -1)
            latest = islice((i for i in newest_first if self.ids[i] not in lost), limit)
            return [self.rows[i] for i in sorted(latest)]
        start = bisect_left(self.ids, from_id)
        visible = (i for i in range(start, self.published) if self.ids[i] not in lost)
        return [self.rows[i] for i in islice(visible, limit)]


@dataclass
class _Fault:
    kind: Literal["disconnect", "stall", "inject", "reorder", "shutdown"]
    remaining: int
    how: Literal["abrupt", "close"] = "abrupt"
    seconds: float = 0.0
    then: Literal["close", "resume"] = "close"
    texts: tuple[str | bytes, ...] = ()


# A queued trade is (event JSON, stream name); None marks the end of a symbol's publication,
# so that a trade held back by ``reorder`` is still delivered.
_Item = tuple[str, str] | None


@dataclass(eq=False)
class _Subscriber:
    ws: ServerConnection
    index: int
    streams: dict[str, str]
    combined: bool
    items: deque[_Item] = field(default_factory=deque)
    urgent: deque[_Fault] = field(default_factory=deque)
    faults: list[_Fault] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    unanswered: deque[tuple[float, asyncio.Future[float]]] = field(default_factory=deque)
    held: str | None = None
    swap: bool = False
    stalled: bool = False
    drop_while_stalled: bool = False
    closed: bool = False

    def push(self, item: _Item) -> None:
        self.items.append(item)
        self.wake.set()

    def takes(self, symbol: str) -> bool:
        """Whether a newly published trade of ``symbol`` is queued for this connection."""
        return (
            symbol in self.streams
            and not self.closed
            and not (self.stalled and self.drop_while_stalled)
        )


class BinanceVenue:
    """A Binance spot market-data venue on loopback replaying recorded trades.

    Parameters
    ----------
    trades
        Symbol (upper case, e.g. ``BTCUSDT``) → trade table as returned by
        :func:`load_tardis_trades` (ids strictly increasing).
    rate
        Trades published per second per symbol; ``0`` publishes as fast as the subscribed
        connections accept them (see the module docstring on backpressure).
    ping_interval_s
        Seconds between the venue's websocket pings on each connection.
    pong_timeout_s
        Seconds after which a connection with an unanswered ping is closed (code 1011,
        reason ``pong timeout``).
    symbols_info
        ``exchangeInfo`` details per symbol; by default the assets are split off a known quote
        suffix and the tick and step sizes are ``0.01`` and ``0.00001``.
    send_buffer_bytes
        ``SO_SNDBUF`` of each accepted connection; by default the kernel autotunes it (up to
        megabytes on loopback, which hides backpressure behind a short recording).

    Attributes
    ----------
    connections : int
        Websocket connections accepted with a valid stream.
    refused : int
        Handshakes refused with HTTP 503 by :meth:`refuse_next`.
    pongs : int
        Pongs received for the venue's pings.
    pong_timeouts : int
        Connections closed because a pong did not arrive in time.
    sent : list[int]
        Trade messages sent on each accepted connection, in acceptance order.
    rest_requests : list[str]
        Every REST request as ``path`` or ``path?query``, in arrival order.

    Raises
    ------
    ValueError
        On a negative rate, non-positive intervals, no symbol or one not in upper case, trades
        lacking a
        column or with ids not strictly increasing, or a symbol whose assets cannot be
        derived without ``symbols_info``.

    Examples
    --------
    >>> with BinanceVenue({"BTCUSDT": trades}, ping_interval_s=0.5) as venue:  # doctest: +SKIP
    ...     url = venue.ws_url + "/ws/btcusdt@trade"
    ...     venue.start_publishing()
    """

    def __init__(
        self,
        trades: Mapping[str, pd.DataFrame],
        *,
        rate: float = 0.0,
        ping_interval_s: float = 20.0,
        pong_timeout_s: float = 60.0,
        symbols_info: Mapping[str, SymbolInfo] | None = None,
        send_buffer_bytes: int | None = None,
    ) -> None:
        if rate < 0 or ping_interval_s <= 0 or pong_timeout_s <= 0:
            raise ValueError("rate must be >= 0 and the ping interval and pong timeout > 0")
        if not trades or any(symbol != symbol.upper() for symbol in trades):
            raise ValueError("give at least one symbol, in upper case, e.g. BTCUSDT")
        self.rate = rate
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.send_buffer_bytes = send_buffer_bytes
        self._books = {symbol: _Book(symbol, df) for symbol, df in trades.items()}
        info = dict(symbols_info or {})
        self._info = {s: info[s] if s in info else _default_info(s) for s in self._books}
        self.connections = 0
        self.refused = 0
        self.pongs = 0
        self.pong_timeouts = 0
        self.sent: list[int] = []
        self.rest_requests: list[str] = []
        self._withheld: dict[str, set[int]] = {s: set() for s in self._books}
        self._lost: dict[str, set[int]] = {s: set() for s in self._books}
        self._subs: list[_Subscriber] = []
        self._pending: list[_Fault] = []
        self._refuse = 0
        self._rest_failures = 0
        self._rest_failure_status = 503
        self._publishers: list[asyncio.Task[None]] = []
        self._done = threading.Event()
        self._subs_changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ws_port = 0
        self._rest_port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the websocket and REST servers in a background thread. A venue runs once.

        Raises
        ------
        RuntimeError
            If already started, or if the servers did not come up within 10 s (the cause is
            chained).
        """
        if self._thread is not None or self._ws_port:
            raise RuntimeError("venue already started")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main(ready)), name="binance-venue", daemon=True
        )
        self._thread.start()
        try:
            ready.result(timeout=10)
        except Exception as exc:
            self.stop()
            raise RuntimeError("venue failed to start") from exc

    def stop(self) -> None:
        """Stop publishing, close every connection (code 1001) and both servers, and join the
        thread. Idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if thread.is_alive() and loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=15)
        self._thread = None
        self._loop = None

    def __enter__(self) -> BinanceVenue:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def ws_url(self) -> str:
        """Websocket base URL, ``ws://127.0.0.1:<port>``; append ``/ws/btcusdt@trade`` or
        ``/stream?streams=...``. Raises ``RuntimeError`` before :meth:`start`."""
        if not self._ws_port:
            raise RuntimeError("venue not started")
        return f"ws://{_HOST}:{self._ws_port}"

    @property
    def rest_url(self) -> str:
        """REST base URL, ``http://127.0.0.1:<port>``. Raises ``RuntimeError`` before
        :meth:`start`."""
        if not self._rest_port:
            raise RuntimeError("venue not started")
        return f"http://{_HOST}:{self._rest_port}"

    # -- publication -------------------------------------------------------------------------

    def start_publishing(self) -> None:
        """Start publishing every symbol's trades in id order at ``rate``.

        Raises
        ------
        RuntimeError
            If the venue is not running or publication already started.
        """
        if self._loop is None:
            raise RuntimeError("venue not started")

        def begin() -> None:
            if self._publishers:
                raise RuntimeError("publication already started")
            self._publishers = [asyncio.create_task(self._publish(b)) for b in self._books.values()]

        self._on_loop(begin)

    def publication_times(self, symbol: str) -> dict[int, int]:
        """Trade id -> wall clock (ns UTC) at which the publisher passed it, for the trades of
        ``symbol`` published so far (the venue's "trade time" in latency benchmarks)."""
        book = self._books[symbol]
        return dict(
            zip(book.ids[: book.published], book.published_ns[: book.published], strict=True)
        )

    def published_through(self, symbol: str) -> int | None:
        """Id of the last trade of ``symbol`` the publisher has passed (withheld and lost ids
        included), or ``None`` before the first. Raises ``KeyError`` for an unknown symbol."""
        book = self._books[symbol]
        count = book.published
        return book.ids[count - 1] if count else None

    @property
    def done(self) -> threading.Event:
        """Set once every symbol's trades have all been published."""
        return self._done

    def wait_published(self, timeout: float | None = None) -> bool:
        """Block until every trade is published; ``False`` if ``timeout`` (s) elapsed first.
        Published means passed by the publisher, not yet necessarily delivered."""
        return self._done.wait(timeout)

    @property
    def open_connections(self) -> int:
        """Subscribed websocket connections currently open."""
        return sum(not sub.closed for sub in self._subs)

    def wait_connected(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` subscribed connections are open; ``False`` on timeout
        (s). A client's handshake completes slightly before its subscription is registered,
        so call this before :meth:`start_publishing` to be sure the client sees trade one."""
        with self._subs_changed:
            return self._subs_changed.wait_for(lambda: self.open_connections >= n, timeout)

    # -- faults ------------------------------------------------------------------------------

    def disconnect_after(self, n: int, how: Literal["abrupt", "close"] = "abrupt") -> None:
        """After ``n`` more trade messages, drop the connection: ``abrupt`` aborts the TCP
        transport without a close frame, ``close`` closes with code 1001."""
        self._arm(_Fault("disconnect", _count(n), how=how))

    def stall(
        self, seconds: float, after: int = 0, then: Literal["close", "resume"] = "close"
    ) -> None:
        """After ``after`` more trades, go silent for ``seconds``: no trades, no pings, and the
        socket is not read, so the client's pings go unanswered. Publication continues.

        ``then="close"``: trades published during the stall are never sent on that connection
        and it is aborted (no close frame) when the stall ends; the client must reconnect and
        backfill through REST. ``then="resume"``: those trades are queued and delivered late,
        as after a network hiccup, and the connection carries on.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._arm(_Fault("stall", _count(after), seconds=seconds, then=then))

    def inject_raw(self, texts: Sequence[str | bytes], after: int = 0) -> None:
        """After ``after`` more trades, send ``texts`` verbatim, one frame each (``str`` as a
        text frame, ``bytes`` as a binary frame). Raises ``TypeError`` if ``texts`` is itself
        a ``str`` or ``bytes``, which would be sent one character per frame."""
        if isinstance(texts, str | bytes):
            raise TypeError("texts must be a sequence of frames, not one frame")
        self._arm(_Fault("inject", _count(after), texts=tuple(texts)))

    def reorder(self, after: int = 0) -> None:
        """After ``after`` more trades, send the next two trades in swapped order."""
        self._arm(_Fault("reorder", _count(after)))

    def shutdown_after(self, n: int) -> None:
        """After ``n`` more trades, send ``{"e":"serverShutdown","E":<ms>}`` and close with
        code 1001."""
        self._arm(_Fault("shutdown", _count(n)))

    def withhold(self, ids: Iterable[int], symbol: str | None = None) -> None:
        """Never send these trade ids on the stream; REST still returns them. ``symbol=None``
        applies to every symbol; an unknown symbol raises ``KeyError``."""
        self._add_ids(self._withheld, ids, symbol)

    def lose(self, ids: Iterable[int], symbol: str | None = None) -> None:
        """Neither send these trade ids nor return them from REST: an unrecoverable gap.
        ``symbol=None`` applies to every symbol; an unknown symbol raises ``KeyError``."""
        self._add_ids(self._lost, ids, symbol)

    def refuse_next(self, k: int) -> None:
        """Refuse the next ``k`` websocket handshakes with HTTP 503 (counted in ``refused``)."""
        count = _count(k)

        def arm() -> None:
            self._refuse = count

        self._on_loop(arm)

    def rest_fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` REST requests with HTTP ``status`` and a Binance error body
        (``-1003`` for 418/429, else ``-1001``)."""

        count = _count(n)

        def arm() -> None:
            self._rest_failures, self._rest_failure_status = count, status

        self._on_loop(arm)

    # -- loop-thread internals ---------------------------------------------------------------

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the venue's loop (where all state is mutated) and return its result."""
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            return fn()
        result: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def call() -> None:
            try:
                result.set_result(fn())
            except Exception as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return result.result(timeout=10)

    def _add_ids(self, table: dict[str, set[int]], ids: Iterable[int], symbol: str | None) -> None:
        targets = list(table.values()) if symbol is None else [table[symbol]]
        new = {int(i) for i in ids}

        def add() -> None:
            for target in targets:
                target.update(new)

        self._on_loop(add)

    def _arm(self, fault: _Fault) -> None:
        def arm() -> None:
            live = [sub for sub in self._subs if not sub.closed]
            if not live:
                self._pending.append(fault)
            for sub in live:
                self._attach(sub, replace(fault))

        self._on_loop(arm)

    @staticmethod
    def _attach(sub: _Subscriber, fault: _Fault) -> None:
        if fault.remaining == 0:
            sub.urgent.append(fault)
            sub.wake.set()
        else:
            sub.faults.append(fault)

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            rest_sock = socket.create_server((_HOST, 0))
            rest = uvicorn.Server(
                uvicorn.Config(
                    self._rest_app(),
                    log_level="warning",
                    access_log=False,
                    log_config=None,
                    lifespan="off",
                )
            )
            async with serve(
                self._handle,
                _HOST,
                0,
                process_request=self._process_request,
                compression=None,
                # The venue sends its own pings so that a stall can suppress them.
                ping_interval=None,
                close_timeout=1.0,
            ) as ws_server:
                rest_task = asyncio.create_task(rest.serve(sockets=[rest_sock]))
                while not rest.started:
                    if rest_task.done():
                        raise RuntimeError("REST server exited during startup")
                    await asyncio.sleep(0.01)
                self._ws_port = ws_server.sockets[0].getsockname()[1]
                self._rest_port = rest_sock.getsockname()[1]
                ready.set_result(None)
                await self._stopping.wait()
                for task in self._publishers:
                    task.cancel()
                await asyncio.gather(*self._publishers, return_exceptions=True)
                for sub in self._subs:
                    if sub.stalled:
                        # Not reading, it would hold the closing handshake for close_timeout.
                        sub.ws.transport.abort()
                rest.should_exit = True
                await rest_task
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def _process_request(
        self, connection: ServerConnection, request: WsRequest
    ) -> WsResponse | None:
        if self._refuse > 0:
            self._refuse -= 1
            self.refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        return None

    def _parse_streams(self, target: str) -> tuple[dict[str, str], bool]:
        """Symbol → stream name of a request target, and whether it is a combined stream.

        Raises
        ------
        ValueError
            With the close reason, for an unknown path, stream type or symbol.
        """
        parts = urlsplit(target)
        if parts.path.startswith("/ws/"):
            names, combined = [parts.path.removeprefix("/ws/")], False
        elif parts.path == "/stream":
            names, combined = parse_qs(parts.query).get("streams", [""])[0].split("/"), True
        else:
            raise ValueError(f"Invalid path: {parts.path}"[:120])
        streams: dict[str, str] = {}
        for name in names:
            base, _, kind = name.partition("@")
            if kind != "trade" or base != base.lower() or base.upper() not in self._books:
                raise ValueError(f"Invalid stream: {name}"[:120])
            streams[base.upper()] = name
        return streams, combined

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        try:
            streams, combined = self._parse_streams(ws.request.path)
        except ValueError as exc:
            await ws.close(CloseCode.POLICY_VIOLATION, str(exc))
            return
        if self.send_buffer_bytes is not None:
            sock = ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        sub = _Subscriber(ws=ws, index=len(self.sent), streams=streams, combined=combined)
        self.sent.append(0)
        self.connections += 1
        for fault in self._pending:
            self._attach(sub, fault)
        self._pending.clear()
        self._subs.append(sub)
        self._notify_subs()
        tasks = [
            asyncio.create_task(self._send_loop(sub)),
            asyncio.create_task(self._keepalive(sub)),
        ]
        try:
            # Client messages are not supported; they are read and discarded so that the
            # receive queue never fills up and pauses reading, which would stop pongs too.
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
        finally:
            sub.closed = True
            sub.room.set()
            self._subs.remove(sub)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._notify_subs()

    def _notify_subs(self) -> None:
        with self._subs_changed:
            self._subs_changed.notify_all()

    async def _publish(self, book: _Book) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, trade_id in enumerate(book.ids):
            if self.rate > 0:
                # Sleeping even when late keeps REST and the senders served in a burst.
                await asyncio.sleep(max(0.0, start + i / self.rate - loop.time()))
            else:
                await self._room_for(book.symbol)
            book.published = i + 1
            book.published_ns[i] = time.time_ns()
            if trade_id in self._lost[book.symbol] or trade_id in self._withheld[book.symbol]:
                continue
            for sub in self._subs:
                if sub.takes(book.symbol):
                    sub.push((book.texts[i], book.stream))
        for sub in self._subs:
            if sub.takes(book.symbol):
                sub.push(None)
        if all(b.published == len(b.ids) for b in self._books.values()):
            self._done.set()

    async def _room_for(self, symbol: str) -> None:
        await asyncio.sleep(0)
        for sub in list(self._subs):
            while sub.takes(symbol) and not sub.stalled and len(sub.items) > _HIGH_WATER:
                sub.room.clear()
                await sub.room.wait()

    async def _send_loop(self, sub: _Subscriber) -> None:
        with contextlib.suppress(ConnectionClosed):
            while not sub.closed:
                if sub.urgent:
                    await self._fire(sub, sub.urgent.popleft())
                    continue
                if not sub.items:
                    sub.room.set()
                    sub.wake.clear()
                    await sub.wake.wait()
                    continue
                item = sub.items.popleft()
                if len(sub.items) <= _LOW_WATER:
                    sub.room.set()
                if item is None:
                    if sub.held is not None:
                        held, sub.held = sub.held, None
                        await self._send_trade(sub, held)
                    continue
                text, stream = item
                if sub.combined:
                    text = f'{{"stream":"{stream}","data":{text}}}'
                if not sub.swap:
                    await self._send_trade(sub, text)
                elif sub.held is None:
                    sub.held = text
                else:
                    held, sub.held, sub.swap = sub.held, None, False
                    await self._send_trade(sub, text)
                    await self._send_trade(sub, held)

    async def _send_trade(self, sub: _Subscriber, text: str) -> None:
        if sub.closed:
            return
        await sub.ws.send(text)
        self.sent[sub.index] += 1
        for fault in list(sub.faults):
            fault.remaining -= 1
            if fault.remaining == 0:
                sub.faults.remove(fault)
                sub.urgent.append(fault)

    async def _fire(self, sub: _Subscriber, fault: _Fault) -> None:
        match fault.kind:
            case "disconnect":
                await self._drop(sub, fault.how, CloseCode.GOING_AWAY, "disconnect fault")
            case "inject":
                for text in fault.texts:
                    await sub.ws.send(text)
            case "reorder":
                sub.swap = True
            case "shutdown":
                await sub.ws.send(
                    json.dumps({"e": "serverShutdown", "E": _now_ms()}, separators=(",", ":"))
                )
                await self._drop(sub, "close", CloseCode.GOING_AWAY, "server shutdown")
            case "stall":
                sub.stalled, sub.drop_while_stalled = True, fault.then == "close"
                # Pings sent before the stall cannot be answered while the venue is not
                # reading; the venue's own stall must not count against the client.
                sub.unanswered.clear()
                sub.ws.transport.pause_reading()
                await asyncio.sleep(fault.seconds)
                if fault.then == "close":
                    await self._drop(sub, "abrupt", CloseCode.GOING_AWAY, "")
                    return
                sub.ws.transport.resume_reading()
                sub.stalled = False

    async def _drop(
        self, sub: _Subscriber, how: Literal["abrupt", "close"], code: int, reason: str
    ) -> None:
        sub.closed = True
        sub.wake.set()
        sub.room.set()
        if how == "abrupt":
            sub.ws.transport.abort()
        else:
            await sub.ws.close(code, reason)

    async def _keepalive(self, sub: _Subscriber) -> None:
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_interval_s
        with contextlib.suppress(ConnectionClosed):
            while not sub.closed:
                while sub.unanswered and sub.unanswered[0][1].done():
                    sub.unanswered.popleft()
                now = loop.time()
                deadline = (
                    sub.unanswered[0][0] + self.pong_timeout_s if sub.unanswered else math.inf
                )
                if now >= deadline:
                    self.pong_timeouts += 1
                    await self._drop(sub, "close", CloseCode.INTERNAL_ERROR, "pong timeout")
                    return
                if now >= next_ping:
                    next_ping = now + self.ping_interval_s
                    if not sub.stalled:
                        pong = asyncio.ensure_future(await sub.ws.ping())
                        pong.add_done_callback(self._count_pong)
                        sub.unanswered.append((now, pong))
                    continue
                await asyncio.sleep(min(next_ping, deadline) - now)

    def _count_pong(self, pong: asyncio.Future[float]) -> None:
        if not pong.cancelled() and pong.exception() is None:
            self.pongs += 1

    # -- REST --------------------------------------------------------------------------------

    def _rest_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        # Handlers are coroutines so that they run on the venue loop, where the state lives;
        # plain functions would run in a worker thread.
        @app.middleware("http")
        async def record_and_fail(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            query = request.url.query
            self.rest_requests.append(request.url.path + (f"?{query}" if query else ""))
            if self._rest_failures > 0:
                self._rest_failures -= 1
                status = self._rest_failure_status
                code = _REST_FAILURE_CODES.get(status, -1001)
                return _error_response(status, code, _REST_FAILURE_MSG[code])
            return await call_next(request)

        @app.get("/api/v3/ping")
        async def ping() -> dict[str, Any]:
            return {}

        @app.get("/api/v3/historicalTrades")
        async def historical_trades(request: Request) -> list[dict[str, Any]]:
            params = request.query_params
            book = self._book_param(params.get("symbol"))
            limit = _int_param(params, "limit")
            limit = 500 if limit is None else limit
            if not 1 <= limit <= _MAX_LIMIT:
                raise _BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
            return book.page(_int_param(params, "fromId"), limit, self._lost[book.symbol])

        @app.get("/api/v3/exchangeInfo")
        async def exchange_info(request: Request) -> dict[str, Any]:
            symbol = request.query_params.get("symbol")
            symbols = list(self._books) if symbol is None else [self._book_param(symbol).symbol]
            return {
                "timezone": "UTC",
                "serverTime": _now_ms(),
                "symbols": [self._symbol_info(s) for s in symbols],
            }

        async def binance_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, _BinanceError)
            return _error_response(400, exc.code, exc.msg)

        app.add_exception_handler(_BinanceError, binance_error)
        return app

    def _book_param(self, symbol: str | None) -> _Book:
        if not symbol:
            raise _BinanceError(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        if symbol not in self._books:
            raise _BinanceError(-1121, "Invalid symbol.")
        return self._books[symbol]

    def _symbol_info(self, symbol: str) -> dict[str, Any]:
        info = self._info[symbol]
        return {
            "symbol": symbol,
            "status": "TRADING",
            "baseAsset": info.base_asset,
            "quoteAsset": info.quote_asset,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": info.tick_size,
                    "maxPrice": "1000000.00000000",
                    "tickSize": info.tick_size,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": info.step_size,
                    "maxQty": "9000.00000000",
                    "stepSize": info.step_size,
                },
            ],
        }


def _count(n: int) -> int:
    if n < 0:
        raise ValueError(f"count must be >= 0, got {n}")
    return n


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20):
        raise _BinanceError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(raw)
