"""Store of the signals the live detector records, shared by several processes.

Owns the SQLite database ``$FBE_HOME/live/signals.sqlite`` (WAL mode, so the live service
writes while ``fbe signals``, the Dagster parity check and the paper-execution sensor read) and
its table ``live_signals``: the columns of the ``signals`` asset
(:data:`fbe_pipeline.research.scoring.SIGNAL_COLUMNS`) plus ``recorded_at`` (wall clock, ns UTC,
when the detector recorded the signal), ``closed_through`` (the event-time boundary, ns UTC,
up to which bars were closed when the signal was computed) and ``context`` (JSON of the signal
bar's :data:`fbe_pipeline.pipeline.CONTEXT_COLUMNS`, what a paper order needs). ``signal_id``
is the primary key, so a signal is recorded once however often it is recomputed (restarts,
replays). The table
``live_progress`` keeps, per symbol and trading date, how far the detector closed bars.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from fbe_pipeline.research.scoring import SIGNAL_COLUMNS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_signals (
    signal_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    trading_date TEXT NOT NULL,
    ts INTEGER NOT NULL,
    bar_close INTEGER NOT NULL,
    decision_time INTEGER NOT NULL,
    direction TEXT NOT NULL,
    poke TEXT NOT NULL,
    score REAL NOT NULL,
    components TEXT NOT NULL,
    config_version TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    closed_through INTEGER NOT NULL,
    context TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS live_signals_day ON live_signals (symbol, trading_date);
CREATE TABLE IF NOT EXISTS live_progress (
    symbol TEXT NOT NULL,
    trading_date TEXT NOT NULL,
    closed_through INTEGER NOT NULL,
    bars INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (symbol, trading_date)
);
"""

_TIME_COLUMNS = ("ts", "bar_close", "decision_time")


def signals_path(home: Path) -> Path:
    """The live signal database of ``$FBE_HOME`` (``home / "live" / "signals.sqlite"``)."""
    return home / "live" / "signals.sqlite"


class LiveSignalStore:
    """Records live signals once each and reads them back as frames.

    Thread-safe (one lock per instance); several processes may open the same file.

    Parameters
    ----------
    path : Path
        The SQLite file; created with its table if missing.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def record(self, signals: pd.DataFrame, recorded_at: int, closed_through: int) -> pd.DataFrame:
        """Insert the signals not recorded before.

        Parameters
        ----------
        signals : pandas.DataFrame
            :data:`SIGNAL_COLUMNS` rows (``ts``, ``bar_close``, ``decision_time``
            ``datetime64[ns, UTC]``; ``trading_date`` ``datetime64[ns]``).
        recorded_at : int
            Wall clock, ns UTC.
        closed_through : int
            Event-time boundary, ns UTC, through which bars were closed.

        Returns
        -------
        pandas.DataFrame
            The newly recorded rows of ``signals``, same columns.
        """
        if signals.empty:
            return signals
        rows = [
            (
                str(r.signal_id),
                str(r.symbol),
                pd.Timestamp(r.trading_date).date().isoformat(),
                pd.Timestamp(r.ts).value,
                pd.Timestamp(r.bar_close).value,
                pd.Timestamp(r.decision_time).value,
                str(r.direction),
                str(r.poke),
                float(r.score),
                str(r.components),
                str(r.config_version),
                recorded_at,
                closed_through,
                str(getattr(r, "context", "{}")),
            )
            for r in signals.itertuples(index=False)
        ]
        fresh = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row, sid in zip(rows, signals["signal_id"], strict=True):
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO live_signals VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    if cursor.rowcount == 1:
                        fresh.append(sid)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return signals[signals["signal_id"].isin(fresh)].reset_index(drop=True)

    def mark_progress(
        self, symbol: str, trading_date: date, closed_through: int, bars: int, now: int
    ) -> None:
        """Record that the session's bars are closed through ``closed_through`` (ns UTC; never
        moves backwards), with ``bars`` bars so far, at wall clock ``now`` (ns UTC)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO live_progress VALUES (?, ?, ?, ?, ?) ON CONFLICT (symbol,"
                " trading_date) DO UPDATE SET closed_through = max(closed_through,"
                " excluded.closed_through), bars = excluded.bars, updated_at = excluded.updated_at",
                (symbol, trading_date.isoformat(), closed_through, bars, now),
            )

    def progress(self, symbol: str, trading_date: date) -> pd.Timestamp | None:
        """How far (UTC) the live detector closed the session's bars; ``None`` if never."""
        with self._lock:
            row = self._db.execute(
                "SELECT closed_through FROM live_progress WHERE symbol = ? AND trading_date = ?",
                (symbol, trading_date.isoformat()),
            ).fetchone()
        return None if row is None else pd.Timestamp(int(row[0]), unit="ns", tz="UTC")

    def since(self, rowid: int, limit: int = 1000) -> tuple[pd.DataFrame, int]:
        """Signals recorded after the row ``rowid`` (SQLite's insertion counter), oldest first.

        Returns
        -------
        (pandas.DataFrame, int)
            The rows (as :meth:`signals` shapes them) and the last rowid returned (``rowid``
            when there is none): a cursor for the paper sensor.
        """
        with self._lock:
            found = self._db.execute(
                "SELECT rowid, signal_id FROM live_signals WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (rowid, limit),
            ).fetchall()
        if not found:
            return self.signals().iloc[:0], rowid
        ids = {sid for _, sid in found}
        frame = self.signals()
        return frame[frame["signal_id"].isin(ids)].reset_index(drop=True), int(found[-1][0])

    def count(self, symbol: str, trading_date: date) -> int:
        """Number of live signals of one symbol and trading date."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM live_signals WHERE symbol = ? AND trading_date = ?",
                (symbol, trading_date.isoformat()),
            ).fetchone()
        return int(row[0])

    def signals(
        self,
        symbol: str | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> pd.DataFrame:
        """Recorded signals, ordered by ``ts`` then ``symbol``.

        Parameters
        ----------
        symbol : str, optional
        start, end : datetime.date, optional
            Inclusive trading-date bounds.

        Returns
        -------
        pandas.DataFrame
            :data:`SIGNAL_COLUMNS` with the asset's dtypes, plus ``recorded_at`` and
            ``closed_through`` (``datetime64[ns, UTC]``) and ``context`` (JSON text).
        """
        where, args = [], []
        if symbol:
            where.append("symbol = ?")
            args.append(symbol)
        if start:
            where.append("trading_date >= ?")
            args.append(start.isoformat())
        if end:
            where.append("trading_date <= ?")
            args.append(end.isoformat())
        sql = "SELECT * FROM live_signals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            cursor = self._db.execute(sql + " ORDER BY ts, symbol", args)
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        frame = pd.DataFrame(rows, columns=names)
        for col in (*_TIME_COLUMNS, "recorded_at", "closed_through"):
            frame[col] = pd.to_datetime(frame[col].astype(np.int64), unit="ns", utc=True)
        frame["trading_date"] = pd.to_datetime(frame["trading_date"]).astype("datetime64[ns]")
        frame["score"] = frame["score"].astype(np.float64)
        return frame[[*SIGNAL_COLUMNS, "recorded_at", "closed_through", "context"]]
