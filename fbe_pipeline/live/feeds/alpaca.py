"""Alpaca market-data v2 trade stream (the venue's documented wire protocol).

Stream ``<ws_url>/v2/<feed>`` (``iex`` or ``sip`` for stocks): on connect the venue sends
``[{"T": "success", "msg": "connected"}]``; the client sends ``{"action": "auth", "key",
"secret"}`` and ``{"action": "subscribe", "trades": [...]}``; the venue answers with
``success`` / ``subscription`` / ``error`` objects and streams arrays of trades ``{"T": "t",
"S": symbol, "i": trade id, "x": exchange, "p": price, "s": size, "t": RFC 3339 time,
"c": conditions, "z": tape}``. Trade ids are unique per exchange, not consecutive per symbol, so
a disconnection is recorded as a gap of its interval rather than backfilled by id.

The key and secret are market-data credentials (``FBE_FEED_ALPACA_KEY``,
``FBE_FEED_ALPACA_SECRET``); use a data-only key, never the trading account's broker key.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from fbe_pipeline.live.feeds.base import FeedError, InstrumentInfo, Parsed, VenueTrade
from fbe_pipeline.live.models import parse_timestamp_ns


def _trade(doc: dict[str, Any]) -> VenueTrade:
    """A :class:`VenueTrade` from one ``T: t`` object; raises ``ValueError`` on a bad one."""
    symbol, price, size, trade_id = doc["S"], doc["p"], doc["s"], doc.get("i")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError("symbol is not a string")
    for name, value in (("price", price), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} is not a number")
    if price <= 0 or size < 0:
        raise ValueError("price must be > 0 and size >= 0")
    if trade_id is not None and (isinstance(trade_id, bool) or not isinstance(trade_id, int)):
        raise ValueError("trade id is not an integer")
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
            doc = json.loads(message)
        except ValueError:
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
            elif kind in ("success", "subscription"):
                out.heartbeat = True
            elif kind == "error":
                errors.append(f"venue error {item.get('code')}: {item.get('msg')}")
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
