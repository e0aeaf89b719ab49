"""Run one feed: subscribe to a venue's trade stream and forward every trade, once, in signed
batches to the ingest service's ``POST /v1/ticks`` (issue 14).

Tasks of one :class:`FeedConnector` (one asyncio loop):

- **stream**: connect (``websockets``), parse, fill holes in sequential trade ids from the
  venue's REST history before the trade after the hole is forwarded, drop ids already
  forwarded, and put trades on a bounded queue. A full queue makes the stream task wait, so it
  stops reading and TCP flow control slows the venue down: nothing is dropped silently.
- **sender**: batches the queue (up to ``batch_max`` trades per request), signs and posts them,
  and retries a transport error or 5xx forever with capped backoff; a 4xx stops the feed with
  the service's message (a batch the service refuses will not heal by retrying).
- **heartbeat**: pings the venue; during a session of the feed's instruments, no message of any
  kind (trade, venue heartbeat, pong) for ``heartbeat_interval_ms`` makes the feed ``stale``
  (event and warning), and 3 intervals make it reconnect.
- **status**: writes the counters to :class:`~fbe_pipeline.live.feeds.status.FeedStatusStore`.

Failures to connect back off exponentially with full jitter between ``backoff_first_s`` (1 s)
and ``backoff_max_s`` (60 s); after ``breaker_failures`` (10) in a row the circuit opens: the
feed's symbols are in ``safe_mode`` (the paper gateway pauses their automations with reason
``data_feed_down``), retries go on at the maximum interval, and the first message on a new
connection closes the circuit again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection, connect

from fbe_pipeline.live.feeds.base import Feed, FeedError, Gap, VenueTrade
from fbe_pipeline.live.feeds.status import (
    CONNECTED,
    CONNECTING,
    RECONNECTING,
    SAFE_MODE,
    STALE,
    STOPPED,
    FeedStatusStore,
    SymbolStatus,
)
from fbe_pipeline.live.replay import TICKS_PATH, signature_header

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class FeedSettings:
    """How a connector behaves (defaults: SPEC §6 and §8).

    Attributes
    ----------
    ingest_url : str
        Base URL of the ingest service, e.g. ``http://127.0.0.1:8001``.
    hmac_key : bytes
        The service's ``FBE_INGEST_HMAC_KEY``.
    backoff_first_s, backoff_max_s : float
        Reconnect delay bounds, s (1 and 60).
    breaker_failures : int
        Consecutive failed connections that open the circuit (10).
    heartbeat_interval_ms : int
        Silence after which a feed in session is stale, ms (SPEC §8: 5000).
    stale_reconnect_intervals : int
        Intervals of silence after which the feed reconnects (3).
    max_connection_age_s : float
        Reconnect before the venue's own cut (Binance: 24 h), s.
    queue_max : int
        Trades held between the stream and the sender (backpressure beyond it).
    batch_max : int
        Most trades per ``/v1/ticks`` request.
    history_page : int
        Trades per REST history request.
    history_attempts : int
        Attempts of one history page before its ids are recorded as a gap.
    status_interval_s : float
        Seconds between two status writes.
    sender_backoff_max_s : float
        Cap of the sender's retry delay, s.
    max_body_bytes : int
        The ingest service's body limit (``FBE_INGEST_MAX_BODY_BYTES``, 1 MiB).
    in_flight : int
        Requests to the ingest at once (2); acknowledgements are counted in order.
    """

    ingest_url: str
    hmac_key: bytes
    backoff_first_s: float = 1.0
    backoff_max_s: float = 60.0
    breaker_failures: int = 10
    heartbeat_interval_ms: int = 5000
    stale_reconnect_intervals: int = 3
    max_connection_age_s: float = 23.5 * 3600
    queue_max: int = 100_000
    batch_max: int = 5000
    history_page: int = 1000
    history_attempts: int = 5
    status_interval_s: float = 1.0
    sender_backoff_max_s: float = 5.0
    max_body_bytes: int = 1 << 20
    in_flight: int = 2


class IngestRefused(FeedError):
    """The ingest service refused a batch with a 4xx (the feed stops)."""


def backoff_delay(failures: int, first_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before reconnect attempt ``failures`` (>= 1): "full jitter" (AWS Architecture
    Blog, Brooker 2015) over ``first_s * 2**(failures - 1)`` capped at ``max_s``, never below
    ``first_s``; seconds."""
    ceiling = min(max_s, first_s * 2 ** min(failures - 1, 32))
    return max(first_s, rng.uniform(0, ceiling))


class FeedConnector:
    """One feed of one venue for some symbols (see the module docstring).

    Parameters
    ----------
    name : str
        The feed's name in the status store (e.g. ``binance``).
    feed : Feed
        The venue.
    symbols : list of str
        FBE symbols, as the venue names them (upper case).
    settings : FeedSettings
    status : FeedStatusStore
    in_session : callable, optional
        ``(symbol, now_ns) -> bool``; staleness only counts in session (default: always).
    rng : random.Random, optional
        Jitter source (seeded in tests).
    alert : callable, optional
        ``(severity, title, body, dedup_key)``: pushes an operational alert (the alert outbox,
        :mod:`fbe_pipeline.governance.alerts`) when the feed goes stale (WARN) or into safe
        mode (ERROR).
    """

    def __init__(
        self,
        name: str,
        feed: Feed,
        symbols: list[str],
        settings: FeedSettings,
        status: FeedStatusStore,
        in_session: Callable[[str, int], bool] | None = None,
        rng: random.Random | None = None,
        alert: Callable[[str, str, str, str], None] | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("a feed needs at least one symbol")
        self.name = name
        self.feed = feed
        self.symbols = [s.upper() for s in symbols]
        self.settings = settings
        self.status = status
        self.in_session = in_session or (lambda symbol, now_ns: True)
        self.rng = rng or random.Random()
        self.alert = alert
        self.stats = {s: SymbolStatus() for s in self.symbols}
        # Next expected id and the time of the last trade passed on, per symbol.
        self.expected: dict[str, int] = {}
        self.last_ns: dict[str, int] = {}
        for symbol, (trade_id, ts) in status.last_trade_ids(name).items():
            if symbol in self.stats:
                self.expected[symbol] = trade_id + 1
                self.last_ns[symbol] = ts
                self.stats[symbol].last_trade_id, self.stats[symbol].last_trade_ns = trade_id, ts
        self.failures = 0
        self.circuit_open = False
        self.stale = False
        self.backpressured = False
        # Per connection: whether it has proven to work, and whether the venue refused it.
        self._confirmed = False
        self._refused = False
        # True from a (re)connect until the first sign of life on the new connection.
        self._connecting = True
        self.queue: asyncio.Queue[VenueTrade] = asyncio.Queue(settings.queue_max)
        self.last_message = time.monotonic()
        # Symbols of a venue without sequential ids whose next trade follows a lost connection.
        self._away: set[str] = set()
        self.fatal: BaseException | None = None
        self._ws: ClientConnection | None = None
        self._stop = asyncio.Event()
        self._pings: set[asyncio.Task[None]] = set()
        # Monotonic receive time of each trade queued or in flight, oldest first (the lag).
        self._received_at: deque[float] = deque()

    # -- state -------------------------------------------------------------------------------

    def _set_state(self, state: str, detail: str = "") -> None:
        for symbol, stat in self.stats.items():
            if stat.state != state:
                stat.state = state
                if state in (STALE, SAFE_MODE) or detail:
                    self.status.record_event(self.name, symbol, state, detail)
        if state not in (STALE, SAFE_MODE):
            return
        severity = "WARN" if state == STALE else "ERROR"
        title = f"feed {self.name} {state}: {', '.join(self.symbols)}"
        if state == STALE:
            log.warning("feed %s is stale: %s", self.name, detail)
        else:
            log.error("feed %s: %s; its instruments are in safe mode", self.name, detail)
        if self.alert is not None:
            hour = time.time_ns() // 3_600_000_000_000
            try:
                self.alert(severity, title, detail, f"feed:{self.name}:{state}:{hour}")
            except Exception:  # an alert must never stop the feed
                log.exception("feed %s: could not queue the alert", self.name)

    # -- stream ------------------------------------------------------------------------------

    async def _stream(self, client: httpx.AsyncClient) -> None:
        url = self.feed.stream_url(self.symbols)
        while not self._stop.is_set():
            opened = time.monotonic()
            try:
                async with connect(
                    url, ping_interval=None, max_queue=64, open_timeout=10, close_timeout=2
                ) as ws:
                    self._ws = ws
                    self._connecting = True
                    self._confirmed = self._refused = False
                    for message in self.feed.subscribe_messages(self.symbols):
                        await ws.send(message)
                    await self._catch_up(client)
                    await self._consume(ws, client, opened)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                self.failures += 1
                log.info("feed %s: connection failed (%s: %s)", self.name, type(exc).__name__, exc)
            finally:
                self._ws = None
            if self._stop.is_set():
                break
            if not self.feed.sequential_ids:
                self._away.update(self.symbols)
            for stat in self.stats.values():
                stat.reconnects += 1
            if self.failures >= self.settings.breaker_failures and not self.circuit_open:
                self.circuit_open = True
                self._set_state(
                    SAFE_MODE, f"data_feed_down: {self.failures} failed connections in a row"
                )
            elif not self.circuit_open:
                self._set_state(RECONNECTING)
            delay = (
                self.settings.backoff_max_s
                if self.circuit_open
                else backoff_delay(
                    max(self.failures, 1),
                    self.settings.backoff_first_s,
                    self.settings.backoff_max_s,
                    self.rng,
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _catch_up(self, client: httpx.AsyncClient) -> None:
        """After (re)connecting, fetch what was published since the last trade passed on, so
        that the tail of a session is not left waiting for a next live trade; live trades
        meanwhile wait in the socket and are dropped as duplicates when they overlap."""
        if not self.feed.sequential_ids:
            return
        for symbol in self.symbols:
            if symbol in self.expected:
                await self._backfill(
                    symbol, self.expected[symbol], None, self.last_ns.get(symbol, 0), client
                )

    async def _consume(
        self, ws: ClientConnection, client: httpx.AsyncClient, opened: float
    ) -> None:
        """Read messages until the connection ends, the venue announces a shutdown, or the
        connection is older than ``max_connection_age_s``."""
        async for message in ws:
            parsed = self.feed.parse(message)
            self._refused = self._refused or parsed.refused
            self._alive(confirms=bool(parsed.trades) or (parsed.heartbeat and not parsed.error))
            if parsed.error:
                for stat in self.stats.values():
                    stat.malformed += 1
                log.warning("feed %s: dropped a message: %s", self.name, parsed.error)
            for trade in parsed.trades:
                await self._accept(trade, client)
            if parsed.shutdown:
                log.info("feed %s: the venue announced a shutdown; reconnecting", self.name)
                return
            if time.monotonic() - opened > self.settings.max_connection_age_s:
                log.info(
                    "feed %s: connection %.0f s old; renewing it",
                    self.name,
                    time.monotonic() - opened,
                )
                return
        if not self._confirmed:
            self.failures += 1

    async def _accept(self, trade: VenueTrade, client: httpx.AsyncClient) -> None:
        """Pass ``trade`` on after filling the hole before it, or drop it as a duplicate."""
        stat = self.stats.get(trade.symbol)
        if stat is None:
            for s in self.stats.values():
                s.malformed += 1
            log.warning("feed %s: trade of unsubscribed symbol %s dropped", self.name, trade.symbol)
            return
        stat.received += 1
        expected = self.expected.get(trade.symbol)
        if self.feed.sequential_ids and trade.trade_id is not None:
            if expected is not None and trade.trade_id < expected:
                stat.duplicates += 1
                return
            if expected is not None and trade.trade_id > expected:
                await self._backfill(
                    trade.symbol, expected, trade.trade_id - 1, trade.ts_event_ns, client
                )
            self.expected[trade.symbol] = trade.trade_id + 1
        elif trade.symbol in self._away:
            # From the last trade received before the connection was lost (the venue's clock,
            # like the end): whatever was in flight or published during a stall is inside.
            self._away.discard(trade.symbol)
            start = self.last_ns.get(trade.symbol, trade.ts_event_ns)
            self._gap(Gap(trade.symbol, None, None, start, trade.ts_event_ns, "disconnected"))
        self.last_ns[trade.symbol] = trade.ts_event_ns
        await self._enqueue(trade)

    async def _backfill(
        self,
        symbol: str,
        first: int,
        last: int | None,
        next_ns: int,
        client: httpx.AsyncClient,
    ) -> None:
        """Fetch ids ``first..last`` of ``symbol`` from the REST history and queue them; ids
        the venue does not return become gaps.

        With ``last`` None (catching up after a reconnect) it pages until the venue has no
        more, and leaves the next expected id after the last one fetched; missing ids at the
        very end are found by the next live trade instead.
        """
        stat = self.stats[symbol]
        cursor = first
        previous_ns = self.last_ns.get(symbol, next_ns)
        page_size = self.settings.history_page
        while last is None or cursor <= last:
            limit = page_size if last is None else min(page_size, last - cursor + 1)
            page = await self._history_page(symbol, cursor, limit, client)
            if page is None:
                if last is not None:
                    self._gap(
                        Gap(symbol, cursor, last, previous_ns, next_ns, "history_unavailable")
                    )
                return
            self._alive(confirms=False)  # a long backfill is not silence
            rows = sorted(
                (t for t in page if t.trade_id is not None and t.trade_id >= cursor),
                key=lambda t: t.trade_id or 0,
            )
            if last is not None:
                rows = [t for t in rows if (t.trade_id or 0) <= last]
                if not rows:
                    self._gap(Gap(symbol, cursor, last, previous_ns, next_ns, "not_in_history"))
                    return
            for trade in rows:
                trade_id = trade.trade_id or 0
                if trade_id > cursor:
                    self._gap(
                        Gap(
                            symbol,
                            cursor,
                            trade_id - 1,
                            previous_ns,
                            trade.ts_event_ns,
                            "not_in_history",
                        )
                    )
                stat.backfilled += 1
                await self._enqueue(trade)
                previous_ns = trade.ts_event_ns
                self.last_ns[symbol] = trade.ts_event_ns
                cursor = trade_id + 1
            if last is None:
                self.expected[symbol] = cursor
                if len(page) < limit:
                    return

    async def _enqueue(self, trade: VenueTrade) -> None:
        """Queue ``trade`` for the sender, waiting while the queue is full (backpressure: the
        stream is not read meanwhile, which is our doing, not the venue's silence)."""
        self._received_at.append(time.monotonic())
        if self.queue.full():
            self.backpressured = True
            try:
                await self.queue.put(trade)
            finally:
                self.backpressured = False
                self.last_message = time.monotonic()
        else:
            self.queue.put_nowait(trade)

    async def _history_page(
        self, symbol: str, from_id: int, limit: int, client: httpx.AsyncClient
    ) -> list[VenueTrade] | None:
        """One history page, retried ``history_attempts`` times; None when it never came."""
        delay = self.settings.backoff_first_s
        for attempt in range(1, self.settings.history_attempts + 1):
            try:
                return await self.feed.history(client, symbol, from_id, limit)
            except (httpx.HTTPError, FeedError) as exc:
                log.warning(
                    "feed %s: history of %s from id %d failed (attempt %d): %s",
                    self.name,
                    symbol,
                    from_id,
                    attempt,
                    exc,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.backoff_max_s)
        return None

    def _gap(self, gap: Gap) -> None:
        log.error(
            "feed %s: %s trades %s..%s are missing (%s)",
            self.name,
            gap.symbol,
            gap.first_id,
            gap.last_id,
            gap.reason,
        )
        self.status.record_gap(self.name, gap)

    # -- sender ------------------------------------------------------------------------------

    async def _sender(self, client: httpx.AsyncClient) -> None:
        # Up to `in_flight` requests at once, acknowledged in order: the ingest's group commit
        # stores concurrent batches with one fsync, and the next body is built meanwhile.
        pending: deque[tuple[list[VenueTrade], asyncio.Task[None]]] = deque()
        try:
            while True:
                if pending and (len(pending) >= self.settings.in_flight or self.queue.empty()):
                    batch, task = pending.popleft()
                    await task
                    self._acknowledged(batch)
                    continue
                first = await self.queue.get()
                batch = [first]
                while len(batch) < self.settings.batch_max and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                pending.append((batch, asyncio.create_task(self._post(batch, client))))
        finally:
            for _, task in pending:
                task.cancel()

    def _acknowledged(self, batch: list[VenueTrade]) -> None:
        for trade in batch:
            stat = self.stats[trade.symbol]
            stat.forwarded += 1
            if trade.trade_id is not None:
                stat.last_trade_id = trade.trade_id
            stat.last_trade_ns = trade.ts_event_ns
        for _ in batch:
            self._received_at.popleft()
            self.queue.task_done()

    def _body(self, batch: list[VenueTrade]) -> bytes:
        source = self.feed.venue
        return orjson.dumps(
            [
                {
                    "symbol": t.symbol,
                    "price": t.price,
                    "size": t.size,
                    "timestamp": t.ts_event_ns,
                    "side": t.side,
                    "source": source,
                    **(
                        {"trade_id": str(t.trade_id), "seq": t.trade_id}
                        if t.trade_id is not None
                        else {}
                    ),
                }
                for t in batch
            ]
        )

    async def _post(self, batch: list[VenueTrade], client: httpx.AsyncClient) -> None:
        """POST ``batch`` until acknowledged (see the module docstring); a body above the
        service's limit is sent as two halves."""
        body = self._body(batch)
        if len(body) > self.settings.max_body_bytes and len(batch) > 1:
            half = len(batch) // 2
            await self._post(batch[:half], client)
            await self._post(batch[half:], client)
            return
        delay = 0.05
        while True:
            headers = {
                "FBE-Signature": signature_header(self.settings.hmac_key, body, int(time.time())),
                "Content-Type": "application/json",
            }
            try:
                response = await client.post(
                    self.settings.ingest_url.rstrip("/") + TICKS_PATH, content=body, headers=headers
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    return
                if response.status_code < 500:
                    raise IngestRefused(
                        f"the ingest service refused a batch of {len(batch)} trades "
                        f"(HTTP {response.status_code}): {response.text[:500]}"
                    )
                problem = f"HTTP {response.status_code}"
            log.warning("feed %s: batch not acknowledged (%s); retrying", self.name, problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.sender_backoff_max_s)

    # -- heartbeat and status ----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        interval = self.settings.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval / 4)
            ws = self._ws
            if ws is None:
                continue
            # Held until done: the loop keeps only weak references to tasks.
            ping = asyncio.create_task(self._ping(ws, interval))
            self._pings.add(ping)
            ping.add_done_callback(self._pings.discard)
            if self.backpressured:
                # Nothing is read while the sender catches up, pongs included.
                self.last_message = time.monotonic()
                continue
            silent = time.monotonic() - self.last_message
            now_ns = time.time_ns()
            if not any(self.in_session(s, now_ns) for s in self.symbols):
                continue
            if silent > interval and not self.circuit_open and not self.stale:
                self.stale = True
                self._set_state(STALE, f"no message for {silent * 1000:.0f} ms")
            if silent > interval * self.settings.stale_reconnect_intervals:
                log.warning("feed %s: silent for %.1f s; reconnecting", self.name, silent)
                self.last_message = time.monotonic()
                # An abort, not a close handshake: a stalled peer would not answer it.
                ws.transport.abort()

    async def _ping(self, ws: ClientConnection, timeout_s: float) -> None:
        """Ping the venue; its pong is a sign of life like any message."""
        with contextlib.suppress(websockets.exceptions.WebSocketException, TimeoutError):
            waiter = await ws.ping()
            await asyncio.wait_for(waiter, timeout_s)
            # A pong proves the connection only where there is no sign-in to be refused.
            self._alive(confirms=not self.feed.subscribe_messages(self.symbols))

    def _alive(self, confirms: bool = True) -> None:
        """A message or a pong arrived. When it ``confirms`` that the connection works (a
        trade; a heartbeat or pong on a connection the venue has not refused), the failure
        count is reset, an open circuit closes and staleness ends."""
        self.last_message = time.monotonic()
        if not confirms or self._refused:
            return
        self._confirmed = True
        if not (self.failures or self.circuit_open or self.stale or self._connecting):
            return
        if self.circuit_open:
            self.circuit_open = False
            for symbol in self.symbols:
                self.status.record_event(self.name, symbol, "recovered", "circuit closed")
            log.warning("feed %s recovered; the circuit is closed", self.name)
        detail = "messages again" if self.stale else ""
        self.failures = 0
        self.stale = False
        self._connecting = False
        self._set_state(CONNECTED, detail)

    def _write_status(self) -> None:
        now_ns = time.time_ns()
        waiting = self._received_at
        oldest_ms = (time.monotonic() - waiting[0]) * 1000 if waiting else 0.0
        last_message_ns = now_ns - int((time.monotonic() - self.last_message) * 1e9)
        for stat in self.stats.values():
            stat.last_message_ns = last_message_ns
            stat.lag_trades = len(waiting)
            stat.lag_ms = oldest_ms
        self.status.write(self.name, self.feed.venue, self.stats)

    async def _reporter(self) -> None:
        while True:
            self._write_status()
            await asyncio.sleep(self.settings.status_interval_s)

    # -- run ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to finish (from the connector's loop)."""
        self._stop.set()

    async def run(self, drain_timeout_s: float = 30.0) -> None:
        """Run until :meth:`stop`; then forward what is queued (up to ``drain_timeout_s``).

        Raises
        ------
        IngestRefused
            When the ingest service refuses a batch (4xx).
        """
        self._set_state(CONNECTING)
        self._write_status()
        async with httpx.AsyncClient(timeout=30) as client:
            stream = asyncio.create_task(self._stream(client), name="stream")
            sender = asyncio.create_task(self._sender(client), name="sender")
            helpers = [
                asyncio.create_task(self._heartbeat(), name="heartbeat"),
                asyncio.create_task(self._reporter(), name="status"),
            ]
            stopped = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait(
                [stream, sender, stopped], return_when=asyncio.FIRST_COMPLETED
            )
            self._stop.set()
            if sender in done:
                for task in [stream, *helpers]:
                    task.cancel()
                await asyncio.gather(stream, *helpers, return_exceptions=True)
                self._set_state(STOPPED, "sender failed")
                self._write_status()
                sender.result()
            if self._ws is not None:
                await self._ws.close()
            await asyncio.gather(stream, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), drain_timeout_s)
            for task in [sender, *helpers]:
                task.cancel()
            await asyncio.gather(sender, *helpers, return_exceptions=True)
            self._set_state(STOPPED)
            self._write_status()
