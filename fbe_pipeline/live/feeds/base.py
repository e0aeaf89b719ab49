"""Venue-neutral feed types: a venue's trade, a message parsed from its stream, a gap of
trades it could not supply, its instrument metadata, and the :class:`Feed` protocol one venue
module implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import httpx


class FeedError(Exception):
    """A venue answered something a connector cannot use (bad REST body, unknown symbol)."""


@dataclass(frozen=True, slots=True)
class VenueTrade:
    """One trade as the venue published it.

    Attributes
    ----------
    symbol : str
        FBE symbol (upper case).
    trade_id : int or None
        The venue's trade id (sequential per symbol on venues like Binance).
    price : float
        Price currency.
    size : float
        Quantity, instrument units.
    ts_event_ns : int
        Trade time, ns UTC.
    side : str
        Aggressor side: ``buy``, ``sell`` or ``unknown``.
    """

    symbol: str
    trade_id: int | None
    price: float
    size: float
    ts_event_ns: int
    side: str


@dataclass(slots=True)
class Parsed:
    """What one stream message said.

    Attributes
    ----------
    trades : list of VenueTrade
    heartbeat : bool
        A venue heartbeat or an acknowledgement (counts as a sign of life, carries no trade).
    shutdown : bool
        The venue announced it will close this connection (reconnect now, not a failure).
    error : str
        Non-empty when the message was malformed or an error from the venue (logged, counted,
        never forwarded).
    refused : bool
        The venue refused this connection (bad credentials, a refused subscription): the
        connection counts as a failed attempt, whatever else it carried.
    """

    trades: list[VenueTrade] = field(default_factory=list)
    heartbeat: bool = False
    shutdown: bool = False
    error: str = ""
    refused: bool = False


@dataclass(frozen=True, slots=True)
class Gap:
    """Trades a feed knows it missed and the venue could not supply.

    Attributes
    ----------
    symbol : str
    first_id, last_id : int or None
        Inclusive id range of the missing trades (None on a venue without sequential ids).
    start_ns, end_ns : int
        Time range, ns UTC: the neighbouring trades' times, or the disconnected interval.
    reason : str
        E.g. ``not_in_history`` or ``disconnected``.
    """

    symbol: str
    first_id: int | None
    last_id: int | None
    start_ns: int
    end_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    """A venue's metadata of one symbol (to register an unknown instrument).

    Attributes
    ----------
    symbol : str
    tick_size, lot_size : float
        Price increment (quote currency) and quantity increment.
    currency : str
        Quote currency, e.g. ``USDT``.
    calendar : str
        Exchange calendar (``24/7`` for crypto venues).
    """

    symbol: str
    tick_size: float
    lot_size: float
    currency: str
    calendar: str


class Feed(Protocol):
    """One venue's public trade stream.

    Attributes
    ----------
    venue : str
        Venue name; also the ``source`` of forwarded ticks (``binance``).
    sequential_ids : bool
        Whether trade ids of a symbol are consecutive integers, so a hole in them is a missed
        trade that the REST history can supply.
    """

    venue: str
    sequential_ids: bool

    def stream_url(self, symbols: list[str]) -> str:
        """The websocket URL that streams ``symbols``' trades."""
        ...

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        """Text messages to send after connecting (auth, subscribe); empty when the URL
        already subscribes."""
        ...

    def parse(self, message: str | bytes) -> Parsed:
        """Parse one stream message; never raises (a malformed one sets ``error``)."""
        ...

    async def history(
        self, client: httpx.AsyncClient, symbol: str, from_id: int, limit: int
    ) -> list[VenueTrade]:
        """Up to ``limit`` trades of ``symbol`` with id >= ``from_id`` in id order, from the
        venue's REST history. Raises :class:`FeedError` on an unusable answer and
        ``httpx.HTTPError`` on a transport error or an error status."""
        ...

    async def instrument_info(self, client: httpx.AsyncClient, symbol: str) -> InstrumentInfo:
        """The venue's metadata of ``symbol``; raises :class:`FeedError` when it is unknown."""
        ...
