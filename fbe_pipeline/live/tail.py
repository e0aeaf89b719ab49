"""Incremental reader of the landing log: new complete lines of every landing file as raw-tick
frames.

Owns :class:`LandingTail` (one byte offset per file) and :func:`landed_frame`. Used by the live
service loop (:mod:`.service`), whose detector and sealer both consume what it returns, and by
crash recovery (a fresh tail starts at offset 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from fbe_pipeline.market.frames import TICK_COLUMNS

# Raw tick columns plus the idempotency key every landing line carries.
LANDED_COLUMNS: tuple[str, ...] = (*TICK_COLUMNS, "key")


def landed_frame(lines: list[dict[str, object]]) -> pd.DataFrame:
    """Turn parsed landing lines into a raw-tick frame.

    Parameters
    ----------
    lines : list of dict
        :class:`~.models.LandedTick` objects as parsed JSON (``seq`` always set by the landing
        log).

    Returns
    -------
    pandas.DataFrame
        :data:`LANDED_COLUMNS` in line order: ``ts_event`` int64 and ``ts_recv`` Int64 ns UTC,
        ``price``/``size`` float64, ``seq`` int64, the eligibility flags bool, strings else.
    """
    frame = pd.DataFrame.from_records(lines, columns=[*LANDED_COLUMNS])
    frame["ts_event"] = frame["ts_event"].astype(np.int64)
    frame["ts_recv"] = frame["ts_recv"].astype("Int64")
    frame["price"] = frame["price"].astype(np.float64)
    frame["size"] = frame["size"].astype(np.float64)
    frame["seq"] = frame["seq"].astype(np.int64)
    for col in ("ohlc_eligible", "volume_eligible"):
        frame[col] = frame[col].astype(bool)
    for col in ("symbol", "side", "source", "exchange", "condition", "key"):
        frame[col] = frame[col].astype(object)
    return frame


def landing_files(root: Path) -> list[tuple[str, date, Path]]:
    """Every landing file under ``root`` (``$FBE_HOME/landing``) as ``(symbol, trading_date,
    path)``, sorted by date then symbol; empty when ``root`` does not exist."""
    found = []
    for path in root.glob("*/*.jsonl"):
        try:
            day = date.fromisoformat(path.stem)
        except ValueError:
            continue
        found.append((path.parent.name, day, path))
    return sorted(found, key=lambda f: (f[1], f[0]))


def landing_days(root: Path) -> list[tuple[str, date]]:
    """``(symbol, trading_date)`` of every landing file: the instruments and days seen live."""
    return [(symbol, day) for symbol, day, _ in landing_files(root)]


@dataclass
class LandingTail:
    """Follows ``$FBE_HOME/landing/<SYMBOL>/<YYYY-MM-DD>.jsonl`` files as they grow.

    Reads only up to the last newline of each file (a line being written is left for the next
    poll) and skips lines that are not valid JSON (torn by a crash). Does not de-duplicate:
    consumers keep the first line of each ``key``.

    Parameters
    ----------
    root : Path
        ``$FBE_HOME/landing``.
    offsets : dict
        Bytes already consumed per file; files not listed start at 0.
    """

    root: Path
    offsets: dict[Path, int] = field(default_factory=dict)

    def skip(self, path: Path) -> None:
        """Treat everything now in ``path`` as consumed (recovery of days no one needs)."""
        self.offsets[path] = path.stat().st_size

    def files(self) -> list[tuple[str, date, Path]]:
        """Every landing file as ``(symbol, trading_date, path)``, sorted by date then symbol."""
        return landing_files(self.root)

    def poll(self) -> dict[tuple[str, date], pd.DataFrame]:
        """New complete lines since the last poll.

        Returns
        -------
        dict
            ``(symbol, trading_date)`` to a :func:`landed_frame` of the new lines, in file
            order; days without new lines are absent.

        Raises
        ------
        OSError
            If a landing file cannot be read.
        """
        out: dict[tuple[str, date], pd.DataFrame] = {}
        for symbol, day, path in self.files():
            start = self.offsets.get(path, 0)
            if path.stat().st_size <= start:
                continue
            with path.open("rb") as fh:
                fh.seek(start)
                chunk = fh.read()
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            self.offsets[path] = start + end + 1
            lines = []
            for raw in chunk[: end + 1].splitlines():
                if not raw.strip():
                    continue
                try:
                    doc = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict) and doc.get("key") and doc.get("seq") is not None:
                    lines.append(doc)
            if lines:
                out[(symbol, day)] = landed_frame(lines)
        return out
