"""Alpaca market-data v2 trade stream (the venue's documented wire protocol).

Stream ``<ws_url>/v2/<feed>`` (``iex`` or ``sip`` for stocks): on connect the venue sends
``[{"T": "success", "msg": "connected"}]``; the client sends ``{"action": "auth", "key",
"secret"}`` and ``{"action": "subscribe", "trades": [...]}``; the venue answers with
``success`` / ``subscription`` / ``error`` objects and streams arrays of trades ``{"T": "t",
"S": symbol, "i": trade id, "x": exchange, "p": price, "s": size, "t": RFC 3339 time,
"c": conditions, "z": tape}``. Trade ids are unique per exchange, not consecutive per symbol, so
a disconnection is recorded as a gap of its interval rather than backfilled by id. Two exchanges
may print the same id for one symbol, and the ingest service deduplicates on ``source + symbol +
trade_id``: the forwarded id is therefore ``i * 100 + n`` with ``n`` the exchange letter's rank
(``A`` = 1 ... ``Z`` = 26, 0 without ``x``), e.g. id 96921 on ``D`` is ``9692104``.

The key and secret are market-data credentials (``FBE_FEED_ALPACA_KEY``,
``FBE_FEED_ALPACA_SECRET``); use a data-only key, never the trading account's broker key.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import orjson

from fbe_pipeline.live.feeds.base import FeedError, InstrumentInfo, Parsed, VenueTrade
from fbe_pipeline.live.models import parse_timestamp_ns

# Largest venue id whose forwarded id (i * 100 + exchange rank) fits the ingest's int64 seq.
_MAX_VENUE_ID = (2**63 - 1 - 99) // 100


def _exchange_rank(exchange: Any) -> int:
    """0 without an exchange code, else the rank of its single letter (``A`` = 1 ... ``Z`` =
    26); raises ``ValueError`` on anything else."""
    if exchange is None or exchange == "":
        return 0
    if not (isinstance(exchange, str) and len(exchange) == 1 and "A" <= exchange <= "Z"):
        raise ValueError(f"exchange code {str(exchange)[:8]!r} is not one letter A-Z")
    return ord(exchange) - ord("A") + 1


def _trade(doc: dict[str, Any]) -> VenueTrade:
    """A :class:`VenueTrade` from one ``T: t`` object; raises ``ValueError`` on a bad one (and
    ``KeyError`` on a missing field)."""
    symbol, price, size, trade_id = doc["S"], doc["p"], doc["s"], doc.get("i")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError("symbol is not a string")
    for name, value in (("price", price), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} is not a number")
        # The ingest refuses a non-finite number with a 4xx, which would stop the feed.
        if not math.isfinite(value):
            raise ValueError(f"{name} is not finite")
    if price <= 0 or size < 0:
        raise ValueError("price must be > 0 and size >= 0")
    if trade_id is not None:
        if isinstance(trade_id, bool) or not isinstance(trade_id, int):
            raise ValueError("trade id is not an integer")
        if not 0 <= trade_id <= _MAX_VENUE_ID:
            raise ValueError(f"trade id {trade_id} is out of range")
        trade_id = trade_id * 100 + _exchange_rank(doc.get("x"))
    # Crypto trades carry the taker side; stock trades do not (the tick rule decides later).
    side = {"B": "buy", "S": "sell"}.get(str(doc.get("tks", "")), "unknown")
    return VenueTrade(
        symbol=symbol.replace("/", "").upper(),
        trade_id=trade_id,
        price=float(price),
        size=float(size),
        ts_event_ns=parse_timestamp_ns(doc["t"]),
        side=side,
    )


class AlpacaFeed:
    """Alpaca stock trades (:class:`~fbe_pipeline.live.feeds.base.Feed`).

    Parameters
    ----------
    key, secret : str
        Market-data credentials.
    ws_url : str
        Stream base URL (default ``wss://stream.data.alpaca.markets``).
    rest_url : str
        Data REST base URL (default ``https://data.alpaca.markets``).
    feed : str
        ``iex`` (free) or ``sip``.
    """

    venue = "alpaca"
    sequential_ids = False

    def __init__(
        self,
        key: str,
        secret: str,
        ws_url: str = "wss://stream.data.alpaca.markets",
        rest_url: str = "https://data.alpaca.markets",
        feed: str = "iex",
    ) -> None:
        if not key or not secret:
            raise ValueError("Alpaca needs FBE_FEED_ALPACA_KEY and FBE_FEED_ALPACA_SECRET")
        self.key, self.secret = key, secret
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.feed = feed

    def stream_url(self, symbols: list[str]) -> str:
        """``<ws_url>/v2/<feed>``; symbols are subscribed by message."""
        return f"{self.ws_url}/v2/{self.feed}"

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        """Auth, then subscribe to the symbols' trades."""
        return [
            json.dumps({"action": "auth", "key": self.key, "secret": self.secret}),
            json.dumps({"action": "subscribe", "trades": symbols}),
        ]

    def parse(self, message: str | bytes) -> Parsed:
        """Parse one array of venue objects (see the module docstring)."""
        try:
            # orjson, unlike json, refuses NaN and Infinity and bounds the nesting depth (json
            # would raise RecursionError on a deeply nested message and end the stream task).
            doc = orjson.loads(message)
        except orjson.JSONDecodeError:
            return Parsed(error=f"not JSON: {message[:80]!r}")
        items = doc if isinstance(doc, list) else [doc]
        out = Parsed()
        errors = []
        for item in items:
            kind = item.get("T") if isinstance(item, dict) else None
            if kind == "t":
                try:
                    out.trades.append(_trade(item))
                except (KeyError, ValueError) as exc:
                    errors.append(f"bad trade ({exc})")
            elif kind == "success":
                # The greeting ("connected") proves nothing yet: the auth may be refused.
                out.heartbeat = out.heartbeat or item.get("msg") == "authenticated"
            elif kind == "subscription":
                out.heartbeat = True
            elif kind == "error":
                errors.append(f"venue error {item.get('code')}: {item.get('msg')}")
                out.refused = True
            elif kind not in ("q", "b", "d", "u", "s", "c", "x"):
                errors.append(f"unknown message {str(item)[:80]}")
        out.error = "; ".join(errors)
        return out

    async def history(
        self, client: httpx.AsyncClient, symbol: str, from_id: int, limit: int
    ) -> list[VenueTrade]:
        """Alpaca trade ids are not consecutive: there is no history by id."""
        raise FeedError("Alpaca has no trade history by id; disconnections are gaps")

    async def instrument_info(self, client: httpx.AsyncClient, symbol: str) -> InstrumentInfo:
        """US equities: XNYS calendar, USD, a cent tick and one-share lots."""
        return InstrumentInfo(symbol, tick_size=0.01, lot_size=1.0, currency="USD", calendar="XNYS")
