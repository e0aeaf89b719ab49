"""What each feed is doing, in ``$FBE_HOME/live/feeds.sqlite`` (WAL): the state and counters of
every (feed, symbol), the gaps the venue could not fill, and the state changes as events.

Written by the feed processes (one writer per feed), read by ``fbe feeds``, the ingest
service's ``/metrics``, the Dagster observations and the paper gateway (safe mode). The last
acknowledged trade id per symbol is kept here too, so a restarted feed backfills from it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fbe_pipeline.live.feeds.base import Gap

CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
STALE = "stale"
SAFE_MODE = "safe_mode"
STOPPED = "stopped"
STATES = (CONNECTING, CONNECTED, RECONNECTING, STALE, SAFE_MODE, STOPPED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feed_symbols (
    feed TEXT NOT NULL, symbol TEXT NOT NULL, venue TEXT NOT NULL, state TEXT NOT NULL,
    received INTEGER NOT NULL, backfilled INTEGER NOT NULL, duplicates INTEGER NOT NULL,
    forwarded INTEGER NOT NULL, malformed INTEGER NOT NULL, reconnects INTEGER NOT NULL,
    last_trade_id INTEGER, last_trade_ns INTEGER, lag_trades INTEGER NOT NULL,
    lag_ms REAL NOT NULL, last_message_ns INTEGER, updated_ns INTEGER NOT NULL,
    PRIMARY KEY (feed, symbol)
);
CREATE TABLE IF NOT EXISTS feed_gaps (
    gap_id INTEGER PRIMARY KEY, feed TEXT NOT NULL, symbol TEXT NOT NULL, first_id INTEGER,
    last_id INTEGER, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, reason TEXT NOT NULL,
    recorded_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_events (
    event_id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, feed TEXT NOT NULL,
    symbol TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL
);
"""


def feeds_path(home: Path) -> Path:
    """``$FBE_HOME/live/feeds.sqlite``."""
    return home / "live" / "feeds.sqlite"


@dataclass(slots=True)
class SymbolStatus:
    """Counters of one symbol on one feed (see :meth:`FeedStatusStore.write`).

    Attributes
    ----------
    state : str
        One of :data:`STATES`.
    received : int
        Trades received on the stream (duplicates included).
    backfilled : int
        Trades fetched from the REST history to fill holes.
    duplicates : int
        Trades dropped because their id was already forwarded (overlaps, reorders).
    forwarded : int
        Trades acknowledged by the ingest service.
    malformed : int
        Stream messages that could not be parsed (counted on every symbol of the feed).
    reconnects : int
        Connections lost and re-opened.
    last_trade_id, last_trade_ns : int or None
        The last acknowledged trade (id, and its time in ns UTC).
    lag_trades : int
        Trades received but not yet acknowledged by the ingest.
    lag_ms : float
        Age of the oldest trade received and not yet acknowledged by the ingest, ms (0 when
        none waits).
    last_message_ns : int or None
        Wall clock of the last message of any kind (trade, heartbeat, pong), ns UTC.
    """

    state: str = CONNECTING
    received: int = 0
    backfilled: int = 0
    duplicates: int = 0
    forwarded: int = 0
    malformed: int = 0
    reconnects: int = 0
    last_trade_id: int | None = None
    last_trade_ns: int | None = None
    lag_trades: int = 0
    lag_ms: float = 0.0
    last_message_ns: int | None = None


class FeedStatusStore:
    """The feeds database (see the module docstring).

    Parameters
    ----------
    path : Path
        SQLite file, created with its tables when missing.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def write(self, feed: str, venue: str, statuses: dict[str, SymbolStatus]) -> None:
        """Replace the rows of ``feed``'s symbols with ``statuses`` (one transaction)."""
        now = time.time_ns()
        rows = [
            {"feed": feed, "symbol": symbol, "venue": venue, "updated_ns": now, **asdict(status)}
            for symbol, status in statuses.items()
        ]
        columns = list(rows[0]) if rows else []
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                f"INSERT OR REPLACE INTO feed_symbols ({', '.join(columns)}) "
                f"VALUES ({', '.join(':' + c for c in columns)})",
                rows,
            )

    def record_gap(self, feed: str, gap: Gap) -> None:
        """Append one gap."""
        with self.db:
            self.db.execute(
                "INSERT INTO feed_gaps (feed, symbol, first_id, last_id, start_ns, end_ns, "
                "reason, recorded_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    feed,
                    gap.symbol,
                    gap.first_id,
                    gap.last_id,
                    gap.start_ns,
                    gap.end_ns,
                    gap.reason,
                    time.time_ns(),
                ),
            )

    def record_event(self, feed: str, symbol: str, event: str, detail: str = "") -> None:
        """Append one state change or alert (``stale``, ``safe_mode``, ``recovered`` ...)."""
        with self.db:
            self.db.execute(
                "INSERT INTO feed_events (ts_ns, feed, symbol, event, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                (time.time_ns(), feed, symbol, event, detail),
            )

    def last_trade_ids(self, feed: str) -> dict[str, tuple[int, int]]:
        """``symbol -> (last acknowledged trade id, its time ns)`` of ``feed``."""
        rows = self.db.execute(
            "SELECT symbol, last_trade_id, last_trade_ns FROM feed_symbols "
            "WHERE feed = ? AND last_trade_id IS NOT NULL",
            (feed,),
        ).fetchall()
        return {symbol: (int(i), int(ns or 0)) for symbol, i, ns in rows}

    def symbols(self) -> pd.DataFrame:
        """Every (feed, symbol) row with the columns of :class:`SymbolStatus` plus ``feed``,
        ``symbol``, ``venue``, ``updated_ns`` and ``gaps`` (count)."""
        return pd.read_sql_query(
            "SELECT s.*, (SELECT count(*) FROM feed_gaps g WHERE g.feed = s.feed "
            "AND g.symbol = s.symbol) AS gaps FROM feed_symbols s ORDER BY s.feed, s.symbol",
            self.db,
        )

    def gaps(self) -> pd.DataFrame:
        """Every recorded gap, oldest first (columns of :class:`~.base.Gap` plus ``feed``,
        ``gap_id`` and ``recorded_ns``)."""
        return pd.read_sql_query("SELECT * FROM feed_gaps ORDER BY gap_id", self.db)

    def events(self) -> pd.DataFrame:
        """Every recorded event, oldest first (``ts_ns, feed, symbol, event, detail``)."""
        return pd.read_sql_query("SELECT * FROM feed_events ORDER BY event_id", self.db)

    def down_symbols(self) -> set[str]:
        """Symbols that some feed has stale, reconnecting or in safe mode now."""
        rows = self.db.execute(
            "SELECT DISTINCT symbol FROM feed_symbols WHERE state IN (?, ?, ?)",
            (STALE, RECONNECTING, SAFE_MODE),
        ).fetchall()
        return {r[0] for r in rows}

    def safe_mode_symbols(self) -> set[str]:
        """Symbols that some feed has in safe mode now."""
        rows = self.db.execute(
            "SELECT DISTINCT symbol FROM feed_symbols WHERE state = ?", (SAFE_MODE,)
        ).fetchall()
        return {r[0] for r in rows}


def down_symbols_reader(home: Path, ttl_s: float = 1.0) -> Callable[[], set[str]]:
    """A cached ``() -> set`` of :meth:`FeedStatusStore.down_symbols` of ``home`` (empty while
    no feed has run), re-read at most every ``ttl_s`` seconds: the detector asks often."""
    path = feeds_path(home)
    cached: list[Any] = [float("-inf"), set()]

    def down() -> set[str]:
        if time.monotonic() - cached[0] >= ttl_s:
            symbols: set[str] = set()
            if path.exists():
                store = FeedStatusStore(path)
                try:
                    symbols = store.down_symbols()
                finally:
                    store.close()
            cached[:] = [time.monotonic(), symbols]
        return set(cached[1])

    return down


def feed_gaps(home: Path, symbol: str, start_ns: int, end_ns: int) -> pd.DataFrame:
    """Gaps of ``symbol`` recorded by any feed of ``home`` that overlap ``[start_ns, end_ns)``
    (columns of :meth:`FeedStatusStore.gaps`; empty when no feed has run)."""
    path = feeds_path(home)
    if not path.exists():
        return pd.DataFrame(
            columns=["feed", "symbol", "first_id", "last_id", "start_ns", "end_ns", "reason"]
        )
    store = FeedStatusStore(path)
    try:
        gaps = store.gaps()
    finally:
        store.close()
    overlap = (
        (gaps["symbol"] == symbol) & (gaps["start_ns"] < end_ns) & (gaps["end_ns"] >= start_ns)
    )
    return gaps.loc[overlap].reset_index(drop=True)
