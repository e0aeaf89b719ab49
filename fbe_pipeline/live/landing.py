"""Durable landing of accepted ticks, idempotency keys and dead letters.

Owns ``$FBE_HOME/landing/``: append-only JSON-lines files
``<SYMBOL>/<YYYY-MM-DD>.jsonl`` (one :class:`~.models.LandedTick` per line, the file named by
the instrument's trading date), and the SQLite database ``idempotency.sqlite`` (WAL mode) with
the tables ``landed`` (UNIQUE idempotency key per stored tick, and the raw object it was
sealed into), ``seals`` (the sealing journal of :mod:`.sealer`), ``watermarks`` (senders'
end-of-data promises) and ``dead_letters`` (refused requests: body, reason, time). Imported by
:mod:`.app`; :mod:`.tail` reads the files.

Write order per request: the new keys are inserted in an open SQLite transaction, the lines
are appended and ``fsync``-ed (and the directory, for a new file), then the transaction
commits, then the caller answers 2xx. A crash between the ``fsync`` and the commit leaves
lines whose keys are not recorded; a redelivery then lands them again, so readers must
de-duplicate on ``key`` (every line carries it); the first line of a key is its tick. A torn
last line from a crash is isolated by a newline before the next append, and readers skip lines
that are not valid JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fbe_pipeline.live.models import LandedTick
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.market.sessions import assign_trading_dates

DEAD_LETTER_BODY_LIMIT = 64 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS landed (
    key TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    trading_date TEXT NOT NULL,
    ts_event INTEGER NOT NULL,
    ts_recv INTEGER NOT NULL,
    sealed TEXT
);
CREATE INDEX IF NOT EXISTS landed_unsealed ON landed (symbol, trading_date, sealed);
CREATE TABLE IF NOT EXISTS seals (
    object_key TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    trading_date TEXT NOT NULL,
    ticks INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS watermarks (
    symbol TEXT PRIMARY KEY,
    watermark_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ns INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    remote TEXT,
    content_type TEXT,
    body_bytes INTEGER NOT NULL,
    body BLOB NOT NULL
);
"""


_INSERT_LANDED = (
    "INSERT INTO landed (key, symbol, trading_date, ts_event, ts_recv) VALUES (?, ?, ?, ?, ?)"
)
# SQLite's default limit of host parameters per statement is 32,766 (999 before 3.32).
_KEYS_PER_QUERY = 900


def idempotency_key(tick: LandedTick) -> str:
    """Return the tick's idempotency key.

    ``source|symbol|trade_id`` when the sender gave a trade id, else ``sha256:`` and the hex
    SHA-256 of the canonical tick (symbol, ts_event, price, size, side, source, seq; not
    ``ts_recv``, so a redelivery maps to the same key).
    """
    if tick.trade_id:
        return f"{tick.source}|{tick.symbol}|{tick.trade_id}"
    canonical = json.dumps(
        [
            tick.source,
            tick.symbol,
            tick.ts_event,
            repr(tick.price),
            repr(tick.size),
            tick.side,
            tick.seq,
        ],
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class AppendResult:
    """Outcome of :meth:`LandingLog.append`: newly stored ticks and redeliveries."""

    accepted: int
    duplicates: int
    landed: tuple[LandedTick, ...] = ()


@dataclass
class _Request:
    """One caller's ticks waiting for a group commit, and its outcome."""

    ticks: list[LandedTick]
    result: AppendResult | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class DeadLetter:
    """One refused request as stored (``body`` truncated to 64 KiB; ``received_ns`` ns UTC)."""

    id: int
    received_ns: int
    endpoint: str
    reason: str
    detail: str
    remote: str | None
    content_type: str | None
    body_bytes: int
    body: bytes


class LandingLog:
    """Append-only landing files plus the SQLite idempotency and dead-letter store.

    Thread-safe: appends from concurrent requests are group-committed (one transaction and one
    ``fsync`` per file for all requests waiting), since ``fsync`` bounds the throughput. One
    instance per process and directory.

    Parameters
    ----------
    root : Path
        ``$FBE_HOME/landing``; created if missing.
    instruments : dict of str to Instrument
        Known instruments, used for trading dates.
    """

    def __init__(self, root: Path, instruments: dict[str, Instrument]) -> None:
        self.root = root
        self.instruments = instruments
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Request] = []
        self._db = sqlite3.connect(
            root / "idempotency.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def path_for(self, symbol: str, trading_date: str) -> Path:
        """Return the landing file of ``symbol`` on ``trading_date`` (``YYYY-MM-DD``)."""
        return self.root / symbol / f"{trading_date}.jsonl"

    def _trading_dates(self, ticks: list[LandedTick]) -> list[str]:
        dates = [""] * len(ticks)
        by_symbol: dict[str, list[int]] = defaultdict(list)
        for i, tick in enumerate(ticks):
            by_symbol[tick.symbol].append(i)
        for symbol, idx in by_symbol.items():
            ts = np.array([ticks[i].ts_event for i in idx], dtype=np.int64)
            days, _ = assign_trading_dates(self.instruments[symbol], ts)
            for i, day in zip(idx, days, strict=True):
                dates[i] = str(day)
        return dates

    def append(self, ticks: list[LandedTick]) -> AppendResult:
        """Store the ticks not stored before, durably, all or nothing.

        Parameters
        ----------
        ticks : list of LandedTick
            Validated ticks (``ts_event``/``ts_recv`` ns UTC); ``trading_date``, ``key`` and
            (without a sender's sequence) ``seq`` are set on them in place.

        Returns
        -------
        AppendResult
            ``accepted`` new ticks (written and fsynced when this returns) and ``duplicates``
            (keys already stored, also repeats inside ``ticks``).

        Raises
        ------
        OSError, sqlite3.Error
            On a storage failure; nothing is recorded as stored then.
        """
        dates = self._trading_dates(ticks)
        for tick, day in zip(ticks, dates, strict=True):
            # In place: a pydantic copy per tick costs as much as the rest of the append.
            tick.trading_date = day
            tick.key = idempotency_key(tick)
        request = _Request(ticks)
        with self._queue_lock:
            self._queue.append(request)
        # Group commit: whoever holds the write lock stores every request queued so far in one
        # transaction and one fsync per file, so concurrent senders share the cost of a sync.
        with self._lock:
            if request.result is None and request.error is None:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _commit(self, batch: list[_Request]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            stored = self._stored_keys([t.key for item in batch for t in item.ticks])
            fresh_by_request: list[list[LandedTick]] = []
            rows = []
            for item in batch:
                fresh: list[LandedTick] = []
                for tick in item.ticks:
                    if tick.key in stored:
                        continue
                    stored.add(tick.key)
                    row = (tick.key, tick.symbol, tick.trading_date, tick.ts_event, tick.ts_recv)
                    if tick.seq is None:
                        # Without a sender's sequence the arrival number orders equal times.
                        tick.seq = self._db.execute(_INSERT_LANDED, row).lastrowid
                    else:
                        rows.append(row)
                    fresh.append(tick)
                fresh_by_request.append(fresh)
            self._db.executemany(_INSERT_LANDED, rows)
            self._write([t for fresh in fresh_by_request for t in fresh])
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._db.execute("ROLLBACK")
            for item in batch:
                item.error = exc
            return
        for item, fresh in zip(batch, fresh_by_request, strict=True):
            item.result = AppendResult(len(fresh), len(item.ticks) - len(fresh), tuple(fresh))

    def _stored_keys(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` already in ``landed`` (one indexed lookup per chunk of keys)."""
        found: set[str] = set()
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), _KEYS_PER_QUERY):
            chunk = unique[i : i + _KEYS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self._db.execute(f"SELECT key FROM landed WHERE key IN ({marks})", chunk)
            )
        return found

    def _write(self, ticks: list[LandedTick]) -> None:
        by_day: dict[tuple[str, str], list[str]] = defaultdict(list)
        for tick in ticks:
            by_day[(tick.symbol, tick.trading_date)].append(tick.model_dump_json())
        for (symbol, day), lines in by_day.items():
            path = self.path_for(symbol, day)
            path.parent.mkdir(parents=True, exist_ok=True)
            created = not path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                prefix = ""
                size = os.fstat(fd).st_size
                if size:
                    with path.open("rb") as existing:
                        existing.seek(size - 1)
                        if existing.read(1) != b"\n":
                            prefix = "\n"  # isolate a torn line left by a crash
                data = (prefix + "\n".join(lines) + "\n").encode()
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(path.parent)
                _fsync_dir(path.parent.parent)

    def dead_letter(
        self,
        *,
        endpoint: str,
        reason: str,
        detail: str,
        body: bytes,
        remote: str | None = None,
        content_type: str | None = None,
        received_ns: int | None = None,
    ) -> None:
        """Record a refused request (the body truncated to 64 KiB, its full size kept).

        Parameters
        ----------
        endpoint : str
            The request path.
        reason : str
            Short machine reason, e.g. ``unauthorized``, ``invalid``, ``too_large``.
        detail : str
            The message returned to the caller.
        body : bytes
            The request body (secrets already redacted by the caller).
        received_ns : int, optional
            Arrival time, ns UTC (default now).
        """
        stamp = time.time_ns() if received_ns is None else received_ns
        with self._lock:
            self._db.execute(
                "INSERT INTO dead_letters (received_ns, endpoint, reason, detail, remote,"
                " content_type, body_bytes, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stamp,
                    endpoint,
                    reason,
                    detail,
                    remote,
                    content_type,
                    len(body),
                    body[:DEAD_LETTER_BODY_LIMIT],
                ),
            )

    def dead_letters(self) -> list[DeadLetter]:
        """Return every dead letter, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, received_ns, endpoint, reason, detail, remote, content_type,"
                " body_bytes, body FROM dead_letters ORDER BY id"
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def advance_watermark(self, symbol: str, watermark_ns: int) -> int:
        """Record a sender's promise that no tick of ``symbol`` before ``watermark_ns`` (ns UTC)
        will follow; never moves backwards. Returns the symbol's watermark after the call."""
        with self._lock:
            self._db.execute(
                "INSERT INTO watermarks VALUES (?, ?) ON CONFLICT (symbol) DO UPDATE SET"
                " watermark_ns = max(watermark_ns, excluded.watermark_ns)",
                (symbol, watermark_ns),
            )
            row = self._db.execute(
                "SELECT watermark_ns FROM watermarks WHERE symbol = ?", (symbol,)
            ).fetchone()
        return int(row[0])

    def stored_count(self) -> int:
        """Return how many distinct ticks have been stored."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM landed").fetchone()[0])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_landing_file(path: Path) -> list[LandedTick]:
    """Read a landing file, skipping lines that are not valid JSON (torn by a crash).

    Returns
    -------
    list of LandedTick
        In file order; may hold a key twice after a crash (see the module docstring).
    """
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(LandedTick.model_validate_json(line))
            except ValueError:
                continue
    return out
