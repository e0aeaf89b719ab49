"""Sealing of closed minutes from the landing log into write-once raw objects.

Owns :class:`Sealer`. The landing log (:mod:`.landing`) holds every acknowledged tick; sealing
copies the ticks of closed minutes into ``ticks/<SYMBOL>/YYYY/MM/DD/live-<first ns>-<hash>.parquet``
objects of the raw store (several per partition, each listed in the manifest), so the batch
assets read live days like any other.

Crash safety is a journal in the landing database, in three steps per object:

1. one transaction picks the keys (stored, not yet sealed, before the cut-off), names the
   object after them and records it in ``seals`` as ``pending`` with each key's ``sealed``
   column set to the object;
2. the object is built from the first landing line of each of those keys (sorted by
   ``(ts_event, seq, key)``, so the same keys always give the same bytes) and put in the store;
3. the journal row becomes ``done``.

A crash after 1 leaves a ``pending`` row whose keys no other object can take; :meth:`recover`
rebuilds the same bytes and puts them (``RawStore.put`` is idempotent for identical bytes and
records a missing manifest line). So each acknowledged tick lands in exactly one object.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from fbe_pipeline.market.frames import TICK_COLUMNS
from fbe_pipeline.storage.store import RawStore, frame_to_parquet, object_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seal:
    """One sealed raw object: its key, symbol, trading date and tick count."""

    object_key: str
    symbol: str
    trading_date: date
    ticks: int


class Sealer:
    """Copies closed minutes of the landing log into the raw store, exactly once per tick.

    Not thread-safe: one sealer per landing directory, driven by the live service loop.

    Parameters
    ----------
    database : Path
        The landing database (``$FBE_HOME/landing/idempotency.sqlite``).
    store : RawStore
        Destination of the sealed objects.
    """

    def __init__(self, database: Path, store: RawStore) -> None:
        self.store = store
        self._db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=10000")
        # First landing line of every key read so far and not yet sealed, per partition.
        self._candidates: dict[tuple[str, date], dict[str, dict[str, object]]] = {}

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def add(self, symbol: str, trading_date: date, frame: pd.DataFrame) -> None:
        """Offer newly read landing lines (:func:`~.tail.landed_frame`, file order); lines of
        keys in a finished seal are dropped."""
        keys = frame["key"].astype(str).tolist()
        sealed: set[str] = set()
        for i in range(0, len(keys), 900):  # SQLite's default limit of bound parameters
            chunk = keys[i : i + 900]
            marks = ",".join("?" * len(chunk))
            sealed.update(
                k
                for (k,) in self._db.execute(
                    "SELECT l.key FROM landed l JOIN seals s ON l.sealed = s.object_key"
                    f" WHERE s.state = 'done' AND l.key IN ({marks})",
                    chunk,
                )
            )
        pending = self._candidates.setdefault((symbol, trading_date), {})
        for row in frame.to_dict("records"):
            key = str(row["key"])
            if key not in sealed:
                pending.setdefault(key, row)

    def days(self) -> list[tuple[str, date]]:
        """Partitions with landing lines read and not yet sealed."""
        return [day for day, pending in self._candidates.items() if pending]

    def unsealed_days(self) -> list[tuple[str, date]]:
        """Partitions with stored ticks not yet sealed or with an unfinished seal."""
        rows = self._db.execute(
            "SELECT DISTINCT symbol, trading_date FROM landed WHERE sealed IS NULL "
            "UNION SELECT symbol, trading_date FROM seals WHERE state = 'pending'"
        ).fetchall()
        return [(s, date.fromisoformat(d)) for s, d in rows]

    def recover(self) -> list[Seal]:
        """Finish every ``pending`` seal (after a crash); the lines must have been added."""
        done = []
        rows = self._db.execute(
            "SELECT object_key, symbol, trading_date FROM seals WHERE state = 'pending'"
        ).fetchall()
        for name, symbol, day in rows:
            keys = [
                k for (k,) in self._db.execute("SELECT key FROM landed WHERE sealed = ?", (name,))
            ]
            done.append(self._write(name, symbol, date.fromisoformat(day), keys))
        return done

    def seal(self, cutoffs: Mapping[tuple[str, date], int]) -> list[Seal]:
        """Seal the stored ticks with ``ts_event`` before each partition's cut-off.

        Parameters
        ----------
        cutoffs : Mapping
            ``(symbol, trading_date)`` to a cut-off, ns UTC (a minute boundary the detector
            has closed; a very large value for a finished day).

        Returns
        -------
        list of Seal
            The objects written, one per partition with something to seal.

        Raises
        ------
        RawStoreError, OSError, sqlite3.Error
            On a storage failure; the journal keeps the seal ``pending`` for :meth:`recover`.
        """
        written = []
        for (symbol, day), cutoff in cutoffs.items():
            pending = self._candidates.get((symbol, day))
            if not pending:
                continue
            self._db.execute("BEGIN IMMEDIATE")
            try:
                stored = self._db.execute(
                    "SELECT key FROM landed WHERE symbol = ? AND trading_date = ? "
                    "AND sealed IS NULL AND ts_event < ?",
                    (symbol, day.isoformat(), cutoff),
                ).fetchall()
                # Only keys whose line was read: a key commits just after its line is written.
                keys = sorted(k for (k,) in stored if k in pending)
                if not keys:
                    self._db.execute("ROLLBACK")
                    continue
                digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
                first = min(int(pending[k]["ts_event"]) for k in keys)  # type: ignore[call-overload]
                name = object_key("ticks", symbol, day, f"live-{first}-{digest}.parquet")
                self._db.execute(
                    "INSERT INTO seals VALUES (?, ?, ?, ?, 'pending', ?)",
                    (name, symbol, day.isoformat(), len(keys), time.time_ns()),
                )
                self._db.executemany(
                    "UPDATE landed SET sealed = ? WHERE key = ?", [(name, k) for k in keys]
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            written.append(self._write(name, symbol, day, keys))
        return written

    def _write(self, name: str, symbol: str, day: date, keys: list[str]) -> Seal:
        pending = self._candidates.get((symbol, day), {})
        missing = [k for k in keys if k not in pending]
        if missing:
            raise RuntimeError(
                f"cannot seal {name}: {len(missing)} of its ticks are not in the landing log "
                f"(first key {missing[0]!r})"
            )
        frame = pd.DataFrame([pending[k] for k in keys])
        frame = frame.sort_values(["ts_event", "seq", "key"], kind="stable")
        frame = frame[list(TICK_COLUMNS)].reset_index(drop=True)
        self.store.put(
            name,
            frame_to_parquet(frame),
            rows=len(frame),
            source_file=f"landing/{symbol}/{day.isoformat()}.jsonl",
            source_sha256=hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest(),
        )
        self._db.execute("UPDATE seals SET state = 'done' WHERE object_key = ?", (name,))
        for k in keys:
            pending.pop(k, None)
        log.info("sealed %d ticks of %s %s into %s", len(keys), symbol, day, name)
        return Seal(name, symbol, day, len(keys))
