"""A local Alpaca market-data v2 stock stream on loopback, replaying recorded trades as a live
market, with fault injection.

The protocol is Alpaca's documented one (docs.alpaca.markets, "Real-time Stock Data" and
"WebSocket Stream"): ``/v2/iex`` and ``/v2/sip`` (any other path is refused with HTTP 404); on
connect ``[{"T":"success","msg":"connected"}]``; ``{"action":"auth","key","secret"}`` within
``auth_timeout_s`` → ``[{"T":"success","msg":"authenticated"}]``, else ``402 auth failed`` (then
the venue closes with 1008) or ``404 auth timeout``; ``{"action":"subscribe"|"unsubscribe",
"trades":[...]}`` → ``[{"T":"subscription","trades":[...],"quotes":[],"bars":[]}]`` (``401 not
authenticated`` before auth, ``400 invalid syntax`` for anything unreadable). Trades go out as
JSON arrays of up to ``batch`` objects ``{"T":"t","S","i","x","p","s","c","t","z"}``.

Semantics worth knowing when writing assertions:

* Live market: a connection receives only trades published while it is authenticated and
  subscribed to their symbol. Alpaca keeps no history by id, so trades published while a client
  is away are lost to it.
* ``t`` is the recorded trade time, rendered like Go's RFC 3339 with nanoseconds (trailing zeros
  of the fraction dropped, as Alpaca sends them). ``i`` is a per-exchange sequence with random
  steps (the exchange's prints of other symbols in between): unique per (symbol, exchange), not
  consecutive, and the same id does occur on two exchanges, as on the real feed. ``c`` holds the
  recording's condition code, ``z`` the symbol's tape.
* The publisher sends each message to every subscribed connection in turn and waits for each
  send: a client that stops reading slows publication for everyone; nothing is dropped.
* Connection faults (``disconnect_after``, ``inject_raw``) count trade messages sent on each
  connection open when armed; when none is open, they apply to the next connection accepted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal

import numpy as np
import pandas as pd
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

__all__ = ["AlpacaVenue", "rfc3339_ns"]

_HOST = "127.0.0.1"
_PATHS = ("/v2/iex", "/v2/sip")
NS_PER_S = 1_000_000_000


def rfc3339_ns(ts_ns: int) -> str:
    """``ts_ns`` (ns UTC) as Alpaca writes trade times, e.g. ``2013-10-07T13:30:00.1234Z``."""
    seconds, fraction = divmod(ts_ns, NS_PER_S)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def _array(*objects: dict[str, Any]) -> str:
    return json.dumps(list(objects), separators=(",", ":"))


def _error(code: int, msg: str) -> str:
    return _array({"T": "error", "code": code, "msg": msg})


@dataclass
class _Fault:
    kind: Literal["disconnect", "inject"]
    remaining: int
    how: Literal["abrupt", "close"] = "abrupt"
    texts: tuple[str | bytes, ...] = ()


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    index: int
    authenticated: bool = False
    trades: set[str] = field(default_factory=set)
    faults: list[_Fault] = field(default_factory=list)
    closed: bool = False


class AlpacaVenue:
    """An Alpaca stock stream on loopback replaying recorded trades (see the module docstring).

    Parameters
    ----------
    ticks : pandas.DataFrame
        Trades in the raw ticks layout of :func:`fbe_pipeline.live.replay.read_ticks`
        (``symbol``, ``ts_event`` ns UTC, ``price``, ``size`` whole shares, ``exchange`` one
        letter, ``condition``), published in row order.
    key, secret : str
        The credentials that authenticate.
    rate : float
        Trades published per second (> 0).
    batch : int
        Most trades per message (>= 1).
    z : str
        Tape of every trade (SPY, listed on NYSE Arca, is on tape B).
    auth_timeout_s : float
        Seconds a connection may take to authenticate (Alpaca: 10).
    seed : int
        Seed of the trade id steps.

    Attributes
    ----------
    trades : pandas.DataFrame
        The published trades: the columns of ``ticks`` plus ``id`` (the venue's ``i``), in
        publication order with a fresh index.
    connections : int
        Websocket connections accepted.
    auth_failures : int
        Auth attempts answered with ``402 auth failed``.
    deliveries : list of list of int
        Per accepted connection, the ``trades`` rows sent on it, in order.

    Raises
    ------
    ValueError
        On no trades, a size that is not a whole number, an exchange code that is not one
        letter, ``rate <= 0``, ``batch < 1`` or ``auth_timeout_s <= 0``.
    """

    def __init__(
        self,
        ticks: pd.DataFrame,
        *,
        key: str,
        secret: str,
        rate: float = 2000.0,
        batch: int = 8,
        z: str = "B",
        auth_timeout_s: float = 10.0,
        seed: int = 0,
    ) -> None:
        if ticks.empty or rate <= 0 or batch < 1 or auth_timeout_s <= 0:
            raise ValueError("give trades, rate > 0, batch >= 1 and auth_timeout_s > 0")
        if not (ticks["size"] == ticks["size"].round()).all():
            raise ValueError("Alpaca sizes are whole shares")
        if not ticks["exchange"].astype(str).str.fullmatch("[A-Z]").all():
            raise ValueError("exchange codes must be one letter A-Z")
        self.key, self.secret = key, secret
        self.rate, self.batch, self.auth_timeout_s = rate, batch, auth_timeout_s
        frame = ticks.reset_index(drop=True)
        steps = np.random.default_rng(seed).integers(1, 40, len(frame))
        ids = pd.Series(steps).groupby(frame["exchange"].to_numpy()).cumsum()
        self.trades = frame.assign(id=ids.to_numpy(dtype=np.int64))
        self._texts = [
            json.dumps(
                {
                    "T": "t",
                    "S": symbol,
                    "i": int(trade_id),
                    "x": exchange,
                    "p": float(price),
                    "s": int(size),
                    "c": [str(condition)],
                    "t": rfc3339_ns(int(ts)),
                    "z": z,
                },
                separators=(",", ":"),
            )
            for symbol, trade_id, exchange, price, size, condition, ts in zip(
                self.trades["symbol"],
                self.trades["id"],
                self.trades["exchange"],
                self.trades["price"],
                self.trades["size"],
                self.trades["condition"],
                self.trades["ts_event"],
                strict=True,
            )
        ]
        self.connections = 0
        self.auth_failures = 0
        self.deliveries: list[list[int]] = []
        self._clients: list[_Client] = []
        self._pending: list[_Fault] = []
        self._refuse_auth = 0
        self._published = threading.Event()
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> AlpacaVenue:
        """Start the server on a thread of its own; raises ``RuntimeError`` if it does not
        come up within 10 s."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(ready),), name="alpaca-venue", daemon=True
        )
        self._thread.start()
        try:
            ready.result(timeout=10)
        except Exception as exc:
            raise RuntimeError("venue failed to start") from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop publishing, close every connection (1001) and the server, join the thread."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=15)

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>``: the ``ws_url`` of ``AlpacaFeed`` (which appends
        ``/v2/iex``)."""
        return f"ws://{_HOST}:{self._port}"

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            async with serve(
                self._handle,
                _HOST,
                0,
                process_request=self._route,
                compression=None,  # Alpaca does not negotiate permessage-deflate
                close_timeout=1.0,
            ) as server:
                self._port = server.sockets[0].getsockname()[1]
                ready.set_result(None)
                await self._stopping.wait()
                if self._publisher is not None:
                    self._publisher.cancel()
                    await asyncio.gather(self._publisher, return_exceptions=True)
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    # -- publication -------------------------------------------------------------------------

    def start_publishing(self) -> None:
        """Start publishing ``trades`` at ``rate``; raises ``RuntimeError`` if already started."""

        def begin() -> None:
            if self._publisher is not None:
                raise RuntimeError("publication already started")
            self._publisher = asyncio.create_task(self._publish())

        self._on_loop(begin)

    def wait_published(self, timeout: float | None = None) -> bool:
        """Block until every trade is published (and sent to the subscribers of its time);
        ``False`` if ``timeout`` (s) elapsed first."""
        return self._published.wait(timeout)

    def wait_connected(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` connections are open, authenticated and subscribed to
        some trades; ``False`` after ``timeout`` (s)."""

        def subscribed() -> bool:
            live = [c for c in self._clients if not c.closed and c.authenticated and c.trades]
            return len(live) >= n

        with self._changed:
            return self._changed.wait_for(subscribed, timeout)

    async def _publish(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        symbols = self.trades["symbol"].to_numpy()
        for first in range(0, len(self._texts), self.batch):
            await asyncio.sleep(max(0.0, start + first / self.rate - loop.time()))
            rows = range(first, min(first + self.batch, len(self._texts)))
            for client in list(self._clients):
                chosen = [r for r in rows if client.authenticated and symbols[r] in client.trades]
                if chosen and not client.closed:
                    await self._send_trades(client, chosen)
        self._published.set()

    async def _send_trades(self, client: _Client, rows: list[int]) -> None:
        await self._fire_due(client)
        if client.closed:
            return
        try:
            await client.ws.send("[" + ",".join(self._texts[r] for r in rows) + "]")
        except ConnectionClosed:
            return
        self.deliveries[client.index].extend(rows)
        for fault in client.faults:
            fault.remaining -= 1
        await self._fire_due(client)

    async def _fire_due(self, client: _Client) -> None:
        due = [f for f in client.faults if f.remaining <= 0]
        client.faults = [f for f in client.faults if f.remaining > 0]
        for fault in due:
            if fault.kind == "inject":
                with contextlib.suppress(ConnectionClosed):
                    for text in fault.texts:
                        await client.ws.send(text)
                continue
            self._closed(client)
            if fault.how == "close":
                await client.ws.close(CloseCode.GOING_AWAY, "disconnect fault")
                continue
            # What was sent must reach the client's kernel first (bounded, should the client
            # not read), or the abort would discard it here, as if it had never been sent.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2.0
            while client.ws.transport.get_write_buffer_size() and loop.time() < deadline:
                await asyncio.sleep(0.001)
            client.ws.transport.abort()

    # -- faults ------------------------------------------------------------------------------

    def disconnect_after(self, n: int, how: Literal["abrupt", "close"] = "abrupt") -> None:
        """After ``n`` more trade messages, drop the connection: ``abrupt`` aborts TCP without a
        close frame, ``close`` closes with 1001. Raises ``ValueError`` if ``n < 0``."""
        self._arm(_Fault("disconnect", _count(n), how=how))

    def inject_raw(self, texts: Sequence[str | bytes], after: int = 0) -> None:
        """After ``after`` more trade messages, send ``texts`` verbatim, one frame each.

        Raises
        ------
        TypeError
            If ``texts`` is one ``str`` or ``bytes`` (it would go out one character a frame).
        ValueError
            If ``after < 0``.
        """
        if isinstance(texts, str | bytes):
            raise TypeError("texts must be a sequence of frames, not one frame")
        self._arm(_Fault("inject", _count(after), texts=tuple(texts)))

    def refuse_auth_next(self, k: int) -> None:
        """Answer the next ``k`` auth attempts with ``402 auth failed`` whatever the credentials
        (counted in ``auth_failures``). Raises ``ValueError`` if ``k < 0``."""
        count = _count(k)

        def arm() -> None:
            self._refuse_auth = count

        self._on_loop(arm)

    def _arm(self, fault: _Fault) -> None:
        def arm() -> None:
            live = [c for c in self._clients if not c.closed]
            for client in live:
                client.faults.append(replace(fault))
            if not live:
                self._pending.append(fault)

        self._on_loop(arm)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the venue's loop, where all state is mutated; raises what it raises."""
        if self._loop is None:
            raise RuntimeError("venue not started")

        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    # -- connections -------------------------------------------------------------------------

    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] not in _PATHS:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    def _closed(self, client: _Client) -> None:
        client.closed = True
        with self._changed:
            self._changed.notify_all()

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws, index=self.connections, faults=self._pending)
        self._pending = []
        self.connections += 1
        self.deliveries.append([])
        self._clients.append(client)
        deadline = asyncio.get_running_loop().time() + self.auth_timeout_s
        try:
            await ws.send(_array({"T": "success", "msg": "connected"}))
            while True:
                try:
                    async with asyncio.timeout_at(None if client.authenticated else deadline):
                        message = await ws.recv()
                except TimeoutError:
                    await ws.send(_error(404, "auth timeout"))
                    return
                reply = self._answer(client, message)
                await ws.send(reply)
                if reply == _error(402, "auth failed"):
                    await ws.close(CloseCode.POLICY_VIOLATION, "auth failed")
                    return
                with self._changed:
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self._clients.remove(client)
            self._closed(client)

    def _answer(self, client: _Client, message: str | bytes) -> str:
        """The venue's reply to one client message."""
        try:
            doc = json.loads(message)
        except ValueError:
            doc = None
        action = doc.get("action") if isinstance(doc, dict) else None
        if action == "auth":
            if client.authenticated:
                return _error(403, "already authenticated")
            if self._refuse_auth or (doc.get("key"), doc.get("secret")) != (self.key, self.secret):
                self._refuse_auth = max(0, self._refuse_auth - 1)
                self.auth_failures += 1
                return _error(402, "auth failed")
            client.authenticated = True
            return _array({"T": "success", "msg": "authenticated"})
        if action not in ("subscribe", "unsubscribe") or not isinstance(doc, dict):
            return _error(400, "invalid syntax")
        if not client.authenticated:
            return _error(401, "not authenticated")
        symbols = doc.get("trades", [])
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            return _error(400, "invalid syntax")
        if action == "subscribe":
            client.trades |= set(symbols)
        else:
            client.trades -= set(symbols)
        return _array(
            {"T": "subscription", "trades": sorted(client.trades), "quotes": [], "bars": []}
        )


def _count(n: int) -> int:
    if n < 0:
        raise ValueError(f"count must be >= 0, got {n}")
    return n
