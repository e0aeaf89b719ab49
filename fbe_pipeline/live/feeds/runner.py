"""Run a feed as a process (``fbe feed``): the venue by name, its settings from the
environment, unknown symbols registered from the venue's metadata, and SIGTERM / Ctrl-C
stopping it after the queued trades are acknowledged."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fbe_pipeline.governance.alerts import channels_from_env, enqueue_alert
from fbe_pipeline.live.feeds.alpaca import AlpacaFeed
from fbe_pipeline.live.feeds.base import Feed
from fbe_pipeline.live.feeds.binance import BinanceFeed
from fbe_pipeline.live.feeds.connector import FeedConnector, FeedSettings
from fbe_pipeline.live.feeds.status import FeedStatusStore, feeds_path
from fbe_pipeline.market.instruments import Instrument, load_instruments, register_instrument
from fbe_pipeline.market.sessions import assign_trading_dates
from fbe_pipeline.ops.db import database_url, engine_for, upgrade
from fbe_pipeline.research.config import ScoringConfig

log = logging.getLogger(__name__)


def _urls(ws_url: str | None, rest_url: str | None) -> dict[str, str]:
    return {k: v for k, v in (("ws_url", ws_url), ("rest_url", rest_url)) if v}


def _alpaca(ws_url: str | None, rest_url: str | None) -> Feed:
    return AlpacaFeed(
        os.environ.get("FBE_FEED_ALPACA_KEY", ""),
        os.environ.get("FBE_FEED_ALPACA_SECRET", ""),
        feed=os.environ.get("FBE_FEED_ALPACA_FEED", "iex"),
        **_urls(ws_url, rest_url),
    )


VENUES: dict[str, Callable[[str | None, str | None], Feed]] = {
    "binance": lambda ws_url, rest_url: BinanceFeed(**_urls(ws_url, rest_url)),
    "alpaca": _alpaca,
}


def make_feed(venue: str, ws_url: str | None = None, rest_url: str | None = None) -> Feed:
    """The :class:`~fbe_pipeline.live.feeds.base.Feed` of ``venue`` with optional base URLs.

    Raises
    ------
    ValueError
        On a venue FBE has no connector for, or missing venue credentials (Alpaca:
        ``FBE_FEED_ALPACA_KEY`` and ``FBE_FEED_ALPACA_SECRET``; ``FBE_FEED_ALPACA_FEED``
        picks ``iex`` or ``sip``).
    """
    if venue not in VENUES:
        raise ValueError(f"unknown venue {venue!r}; FBE has feeds for {', '.join(VENUES)}")
    return VENUES[venue](ws_url, rest_url)


def settings_from_env(ingest_url: str, env: Mapping[str, str] | None = None) -> FeedSettings:
    """Feed settings: ``FBE_INGEST_HMAC_KEY`` (required), ``heartbeat_interval_ms`` from
    ``FBE_SCORING_CONFIG`` (SPEC §8), the service's ``FBE_INGEST_MAX_BODY_BYTES``, and
    ``FBE_FEED_SETTINGS`` (JSON overrides of
    :class:`~fbe_pipeline.live.feeds.connector.FeedSettings` fields, e.g. the backoff bounds).

    Raises
    ------
    ValueError
        When the key is unset, or on a malformed or unknown override.
    """
    env = os.environ if env is None else env
    key = env.get("FBE_INGEST_HMAC_KEY", "")
    if not key:
        raise ValueError("FBE_INGEST_HMAC_KEY is not set: it must be the ingest service's key")
    scoring = ScoringConfig.from_dict(json.loads(env.get("FBE_SCORING_CONFIG") or "{}"))
    overrides = json.loads(env.get("FBE_FEED_SETTINGS") or "{}")
    if not isinstance(overrides, dict):
        raise ValueError("FBE_FEED_SETTINGS must be a JSON object")
    allowed = set(FeedSettings.__dataclass_fields__) - {"ingest_url", "hmac_key"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown FBE_FEED_SETTINGS keys {unknown}; known: {sorted(allowed)}")
    defaults: dict[str, Any] = {"heartbeat_interval_ms": scoring.heartbeat_interval_ms}
    if env.get("FBE_INGEST_MAX_BODY_BYTES"):
        defaults["max_body_bytes"] = int(env["FBE_INGEST_MAX_BODY_BYTES"])
    return FeedSettings(ingest_url=ingest_url, hmac_key=key.encode(), **{**defaults, **overrides})


async def register_unknown(feed: Feed, symbols: list[str], local_file: Path) -> list[Instrument]:
    """Register each of ``symbols`` unknown to FBE from the venue's metadata (calendar, tick
    size, lot size, quote currency); returns the instruments registered.

    Raises
    ------
    FeedError
        When the venue does not list a symbol.
    """
    known = load_instruments(local_file)
    added = []
    async with httpx.AsyncClient(timeout=30) as client:
        for symbol in symbols:
            if symbol in known:
                continue
            info = await feed.instrument_info(client, symbol)
            instrument = Instrument(
                symbol=symbol,
                calendar=info.calendar,
                tz="UTC",
                tick_size=info.tick_size,
                lot_size=info.lot_size,
                currency=info.currency,
                description=f"registered from {feed.venue} exchange information",
            )
            register_instrument(instrument, local_file)
            added.append(instrument)
    return added


def session_clock(instruments: Mapping[str, Instrument]) -> Callable[[str, int], bool]:
    """``(symbol, now_ns) -> in session`` from each instrument's calendar, cached per minute."""
    cache: dict[tuple[str, int], bool] = {}

    def in_session(symbol: str, now_ns: int) -> bool:
        minute = now_ns // 60_000_000_000
        if (symbol, minute) not in cache:
            if len(cache) > 10_000:
                cache.clear()
            _, mask = assign_trading_dates(instruments[symbol], np.array([now_ns]))
            cache[(symbol, minute)] = bool(mask[0])
        return cache[(symbol, minute)]

    return in_session


def _alerts(home: Path) -> Callable[[str, str, str, str], None] | None:
    """Queue feed alerts in the operational store's outbox when channels are configured."""
    channels = channels_from_env()
    if not channels:
        return None
    engine = engine_for(database_url(home))
    upgrade(engine)

    def alert(severity: str, title: str, body: str, key: str) -> None:
        enqueue_alert(engine, channels, severity, title, body, key)

    return alert


def run_feed(
    home: Path,
    name: str,
    feed: Feed,
    symbols: list[str],
    settings: FeedSettings,
) -> None:
    """Run one feed until SIGTERM or SIGINT, then forward what is queued.

    Raises
    ------
    FeedError
        When the venue does not list an unknown symbol.
    InstrumentError
        When a symbol cannot be registered.
    IngestRefused
        When the ingest service refuses a batch.
    """

    async def main() -> None:
        await register_unknown(feed, symbols, home / "instruments.yaml")
        instruments = load_instruments(home / "instruments.yaml")
        status = FeedStatusStore(feeds_path(home))
        connector = FeedConnector(
            name,
            feed,
            symbols,
            settings,
            status,
            in_session=session_clock(instruments),
            alert=_alerts(home),
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, connector.stop)
        started = time.monotonic()
        try:
            await connector.run()
        finally:
            status.close()
            log.info("feed %s ran %.0f s", name, time.monotonic() - started)

    asyncio.run(main())
