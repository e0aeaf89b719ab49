"""Load vendor files into the immutable raw store, one object per trading date (SPEC §2).

Every format is read by its reader in :mod:`fbe_pipeline.market.sources` into FBE's raw frames,
split by
the instrument's trading date (:func:`fbe_pipeline.market.sessions.assign_trading_dates`) and
written
as write-once Parquet objects named after the source file and its SHA-256, so loading the same
file twice stores nothing new.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.market.sessions import assign_trading_dates
from fbe_pipeline.market.sources.candles import CANDLE_FORMATS, CandleLayout, read_candles
from fbe_pipeline.market.sources.checks import check_timestamps
from fbe_pipeline.storage.store import RawStore, frame_to_parquet, object_key, sha256_file

log = logging.getLogger(__name__)

FORMATS = (
    "lean-trades",
    "lean-quotes",
    "lean-minute",
    "tardis-trades",
    "tardis-quotes",
    "databento-mbo",
    "csv",
    "parquet",
    "bars-csv",
    "bars-parquet",
)
# Kinds of 1-minute bars (labelled by open time ``ts``) rather than events.
BAR_KINDS = ("refbars", "candles")
EQUITY_CALENDARS = frozenset({"XNYS", "XNAS", "XASE", "ARCX", "BATS", "IEXG"})


@dataclass
class LoadReport:
    """What one ``load_file`` call did.

    Attributes
    ----------
    path : Path
        The vendor file.
    written : list[str]
        Keys of new objects.
    skipped : list[str]
        Keys already stored from the same source file (idempotent re-load).
    rows : int
        Rows read from the file (all kinds).
    """

    path: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows: int = 0


def _lean_params(instrument: Instrument) -> tuple[str, float]:
    # Lean stores equities in exchange-local time with prices x 10,000; futures in UTC, unscaled.
    if instrument.calendar in EQUITY_CALENDARS:
        return instrument.tz, 10_000.0
    return "UTC", 1.0


def read_source(
    fmt: str, path: Path, instrument: Instrument, layout: CandleLayout | None = None
) -> dict[str, pd.DataFrame]:
    """Read one vendor file into raw frames keyed by store kind.

    ``layout`` tells how vendor 1-minute candles (``bars-csv``, ``bars-parquet``) label and
    zone their times (default: bar open, naive times in the instrument's zone).

    Returns
    -------
    dict[str, pandas.DataFrame]
        Some of ``ticks``, ``books``, ``quotes``, ``refbars`` with the layouts of
        :mod:`fbe_pipeline.market.frames`, or ``candles``
        (:data:`fbe_pipeline.market.sources.candles.CANDLE_COLUMNS`).

    Raises
    ------
    ValueError
        On an unknown format or a malformed file (the reader's message).
    FileNotFoundError
        If the file is missing.
    """
    symbol = instrument.symbol
    if fmt.startswith("lean-"):
        from fbe_pipeline.market.sources import lean

        tz, scale = _lean_params(instrument)
        if fmt == "lean-trades":
            return {"ticks": lean.read_lean_trades(path, symbol, tz, scale)}
        if fmt == "lean-quotes":
            return {"quotes": lean.read_lean_quotes(path, symbol, tz, scale)}
        if fmt == "lean-minute":
            return {"refbars": lean.read_lean_minute_bars(path, symbol, tz, scale)}
    if fmt == "tardis-trades":
        from fbe_pipeline.market.sources.tardis import read_tardis_trades

        return {"ticks": read_tardis_trades(path, symbol)}
    if fmt == "tardis-quotes":
        from fbe_pipeline.market.sources.tardis import read_tardis_quotes

        return {"quotes": read_tardis_quotes(path, symbol)}
    if fmt == "databento-mbo":
        from fbe_pipeline.market.sources.databento import read_databento_mbo

        ticks, books = read_databento_mbo(path, symbol)
        return {"ticks": ticks, "books": books}
    if fmt in ("csv", "parquet"):
        from fbe_pipeline.market.sources.generic import read_generic_trades

        return {"ticks": read_generic_trades(path, symbol, fmt)}
    if fmt in CANDLE_FORMATS:
        return {"candles": read_candles(path, fmt, symbol, instrument.tz, layout or CandleLayout())}
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _check_times(kind: str, frame: pd.DataFrame, name: str) -> None:
    # Every reader's timestamps, whatever the format: a real instant since 1990, not later
    # than tomorrow. Outside the session is fine (the pipeline drops those ticks).
    for column in ("ts",) if kind in BAR_KINDS else ("ts_event", "ts_recv"):
        values = frame[column]
        if values.isna().any() and column != "ts_recv":
            raise ValueError(f"{name}: {kind} column {column} has empty timestamps")
        check_timestamps(values.dropna().to_numpy(dtype=np.int64), column, name)


def load_file(
    store: RawStore,
    fmt: str,
    path: Path,
    instrument: Instrument,
    reader: Callable[[str, Path, Instrument], dict[str, pd.DataFrame]] = read_source,
) -> LoadReport:
    """Read ``path`` and store its frames, one write-once object per kind and trading date.

    Objects are named ``<file stem>-<first 16 hex of the file's SHA-256>.parquet``. A key
    already in the manifest from the same source file is skipped, so a re-load is a no-op.

    Raises
    ------
    ValueError, FileNotFoundError
        From the reader, before anything is written. Also a ValueError (message starting with
        the file's name) when the file yields no rows at all (``"no rows"``: a header-only CSV,
        an empty Parquet file, an empty Lean zip entry, a DBN file without records), or when a
        timestamp is before 1990-01-01 UTC or after now + 1 day.
    fbe_pipeline.storage.store.ObjectExistsError
        If an object would be overwritten with different content.
    """
    path = Path(path)
    source_sha = sha256_file(path) if path.exists() else ""
    frames = reader(fmt, path, instrument)
    if not any(len(frame) for frame in frames.values()):
        raise ValueError(f"{path.name}: no rows: the file holds no {'/'.join(frames)} to store")
    for kind, frame in frames.items():
        _check_times(kind, frame, path.name)
    report = LoadReport(path=path)
    name = f"{path.name.split('.')[0]}-{source_sha[:16]}.parquet"
    for kind, frame in frames.items():
        report.rows += len(frame)
        if frame.empty:
            continue
        ts_col = "ts" if kind in BAR_KINDS else "ts_event"
        dates, _ = assign_trading_dates(instrument, frame[ts_col].to_numpy())
        for day in sorted(set(dates.tolist())):
            part = frame[dates == day].reset_index(drop=True)
            key = object_key(kind, instrument.symbol, day, name)
            if any(e.key == key and e.source_sha256 == source_sha for e in store.entries(key)):
                report.skipped.append(key)
                continue
            written = store.put(
                key,
                frame_to_parquet(part),
                rows=len(part),
                source_file=path.name,
                source_sha256=source_sha,
            )
            (report.written if written else report.skipped).append(key)
    log.info("%s: %d rows, %d objects written", path.name, report.rows, len(report.written))
    return report
