"""Binance spot public trade streams and REST history (the venue's documented wire protocol).

Stream: ``<ws_url>/ws/<symbol>@trade`` for one symbol, ``<ws_url>/stream?streams=a@trade/
b@trade`` for several (messages wrapped as ``{"stream", "data"}``); a trade event is
``{"e": "trade", "E": event ms, "s": symbol, "t": trade id, "p": price, "q": quantity,
"T": trade ms, "m": buyer is maker}`` with price and quantity as strings. The venue pings every
20 s (the ``websockets`` client answers), cuts every connection after 24 h and announces planned
closes with ``{"e": "serverShutdown"}``. REST: ``GET /api/v3/historicalTrades?symbol=&fromId=
&limit=`` (at most 1000 per page) and ``GET /api/v3/exchangeInfo?symbol=``.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import orjson

from fbe_pipeline.live.feeds.base import FeedError, InstrumentInfo, Parsed, VenueTrade

NS_PER_MS = 1_000_000
HISTORY_PAGE_MAX = 1000


def _number(value: Any, name: str) -> float:
    """A finite float from Binance's decimal string (or a JSON number)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name} is not a decimal")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} is not finite")
    return number


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} is not an integer")
    return value


def _trade(
    symbol: str, trade_id: Any, price: Any, qty: Any, time_ms: Any, maker: Any
) -> VenueTrade:
    """A :class:`VenueTrade` from Binance's fields; raises ``ValueError`` on a bad one.

    ``isBuyerMaker`` / ``m`` true means the seller took liquidity: the aggressor sold.
    """
    if not isinstance(maker, bool):
        raise ValueError("buyer-is-maker flag is not a boolean")
    price_f, qty_f = _number(price, "price"), _number(qty, "quantity")
    if price_f <= 0 or qty_f < 0:
        raise ValueError("price must be > 0 and quantity >= 0")
    return VenueTrade(
        symbol=symbol,
        trade_id=_integer(trade_id, "trade id"),
        price=price_f,
        size=qty_f,
        ts_event_ns=_integer(time_ms, "trade time") * NS_PER_MS,
        side="sell" if maker else "buy",
    )


class BinanceFeed:
    """Binance spot trades (:class:`~fbe_pipeline.live.feeds.base.Feed`).

    Parameters
    ----------
    ws_url : str
        Stream base URL (default ``wss://stream.binance.com:9443``).
    rest_url : str
        REST base URL (default ``https://api.binance.com``).
    """

    venue = "binance"
    sequential_ids = True

    def __init__(
        self,
        ws_url: str = "wss://stream.binance.com:9443",
        rest_url: str = "https://api.binance.com",
    ) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")

    def stream_url(self, symbols: list[str]) -> str:
        """The raw stream for one symbol, the combined stream for several."""
        streams = [f"{s.lower()}@trade" for s in symbols]
        if len(streams) == 1:
            return f"{self.ws_url}/ws/{streams[0]}"
        return f"{self.ws_url}/stream?streams={'/'.join(streams)}"

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        """None: the URL names the streams."""
        return []

    def parse(self, message: str | bytes) -> Parsed:
        """Parse a raw or combined-stream message (see the module docstring)."""
        if isinstance(message, bytes):
            return Parsed(error="binary frame")
        try:
            doc = orjson.loads(message)
        except orjson.JSONDecodeError:
            return Parsed(error=f"not JSON: {message[:80]!r}")
        if isinstance(doc, dict) and "data" in doc and "stream" in doc:
            doc = doc["data"]
        if not isinstance(doc, dict):
            return Parsed(error=f"not an object: {message[:80]!r}")
        event = doc.get("e")
        if event == "trade":
            try:
                symbol = doc["s"]
                if not isinstance(symbol, str) or not symbol:
                    raise ValueError("symbol is not a string")
                trade = _trade(symbol.upper(), doc["t"], doc["p"], doc["q"], doc["T"], doc["m"])
            except (KeyError, ValueError) as exc:
                return Parsed(error=f"bad trade ({type(exc).__name__}: {exc}): {message[:120]!r}")
            return Parsed(trades=[trade])
        if event == "serverShutdown":
            return Parsed(shutdown=True)
        if "result" in doc and "id" in doc:
            return Parsed(heartbeat=True)
        if "code" in doc and "msg" in doc:
            return Parsed(error=f"venue error {doc['code']}: {doc['msg']}", refused=True)
        return Parsed(error=f"unknown message: {message[:80]!r}")

    async def history(
        self, client: httpx.AsyncClient, symbol: str, from_id: int, limit: int
    ) -> list[VenueTrade]:
        """One page of ``historicalTrades`` (``limit`` capped at 1000)."""
        response = await client.get(
            f"{self.rest_url}/api/v3/historicalTrades",
            params={"symbol": symbol, "fromId": from_id, "limit": min(limit, HISTORY_PAGE_MAX)},
        )
        response.raise_for_status()
        rows = response.json()
        if not isinstance(rows, list):
            raise FeedError(f"historicalTrades of {symbol} is not a list: {str(rows)[:120]}")
        try:
            return [
                _trade(symbol, r["id"], r["price"], r["qty"], r["time"], r["isBuyerMaker"])
                for r in rows
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise FeedError(f"historicalTrades of {symbol}: bad row ({exc})") from exc

    async def instrument_info(self, client: httpx.AsyncClient, symbol: str) -> InstrumentInfo:
        """``exchangeInfo``'s quote asset and the ``PRICE_FILTER`` / ``LOT_SIZE`` steps."""
        response = await client.get(
            f"{self.rest_url}/api/v3/exchangeInfo", params={"symbol": symbol}
        )
        if response.status_code == 400:
            raise FeedError(f"Binance does not list {symbol}: {response.text[:200]}")
        response.raise_for_status()
        try:
            (entry,) = [s for s in response.json()["symbols"] if s["symbol"] == symbol]
            filters = {f["filterType"]: f for f in entry["filters"]}
            return InstrumentInfo(
                symbol=symbol,
                tick_size=float(filters["PRICE_FILTER"]["tickSize"]),
                lot_size=float(filters["LOT_SIZE"]["stepSize"]),
                currency=str(entry["quoteAsset"]),
                calendar="24/7",
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FeedError(f"exchangeInfo of {symbol} lacks {exc}") from exc
