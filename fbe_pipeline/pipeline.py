"""One function per pipeline step, on plain frames: the code the Dagster assets, the intraday
path and replays all call (no Dagster import here).
"""

from __future__ import annotations

import hashlib
from datetime import date

import numpy as np
import pandas as pd

from fbe_pipeline.market.aggressor import resolve_sides
from fbe_pipeline.market.bars import bars_from_candles, build_bars
from fbe_pipeline.market.frames import TICK_COLUMNS
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.market.sessions import session_for
from fbe_pipeline.quality.schemas import RAW_TICKS
from fbe_pipeline.research.backtest import run_backtest, summarize
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.features import compute_features
from fbe_pipeline.research.regimes import compute_regimes
from fbe_pipeline.research.scoring import compute_scores, generate_signals
from fbe_pipeline.storage.store import KINDS, RawStore

# The raw_ticks table is exactly its pandera contract (column order included).
RAW_TICK_TABLE_COLUMNS: tuple[str, ...] = tuple(RAW_TICKS.columns)


class NoSessionError(ValueError):
    """The instrument's calendar has no session on the requested trading date."""


def session_bounds(instrument: Instrument, trading_date: date) -> tuple[int, int]:
    """``(open_ns, close_ns)`` of the session; raises :class:`NoSessionError` when closed."""
    bounds = session_for(instrument, trading_date)
    if bounds is None:
        raise NoSessionError(
            f"{instrument.symbol}: {instrument.calendar} has no session on {trading_date}"
        )
    return bounds


def _digest(entries: list[tuple[str, str]]) -> str:
    blob = "\n".join(f"{k} {s}" for k, s in sorted(entries))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_version(store: RawStore, symbol: str, trading_date: date) -> str:
    """Identifier of a partition's raw data: SHA-256 over its objects' keys and SHA-256s.

    Returns the first 16 hex digits; ``"none"`` when the partition holds no object.
    """
    entries = [
        (e.key, e.sha256)
        for kind in KINDS
        for e in store.entries(f"{kind}/{symbol}/{trading_date:%Y/%m/%d}/")
    ]
    return _digest(entries) if entries else "none"


def data_versions(store: RawStore, symbol: str) -> dict[date, str]:
    """:func:`data_version` of every trading date holding raw objects of ``symbol`` (ticks,
    quotes, books, reference bars), from one scan of the manifest per kind."""
    by_day: dict[date, list[tuple[str, str]]] = {}
    for kind in KINDS:
        for entry in store.entries(f"{kind}/{symbol}/"):
            _, _, y, m, d, _ = entry.key.split("/")
            by_day.setdefault(date(int(y), int(m), int(d)), []).append((entry.key, entry.sha256))
    return {day: _digest(entries) for day, entries in sorted(by_day.items())}


def prepare_raw_ticks(
    store: RawStore, instrument: Instrument, trading_date: date
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Session ticks of one partition of the raw store (:func:`session_ticks` over every
    ``ticks`` object of the partition, with the partition's quotes).

    Raises
    ------
    NoSessionError
        If the calendar has no session that day.
    """
    session_bounds(instrument, trading_date)
    raw = store.read_partition("ticks", instrument.symbol, trading_date)
    quotes = store.read_partition("quotes", instrument.symbol, trading_date)
    return session_ticks(raw, quotes, instrument, trading_date)


def session_ticks(
    raw: pd.DataFrame | None,
    quotes: pd.DataFrame | None,
    instrument: Instrument,
    trading_date: date,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Session ticks with aggressor side and clock drift, from raw ticks of one trading date.

    The one implementation of this step for the batch assets and the live detector: drops exact
    duplicate prints (same source, sequence, time, price and size, e.g. overlapping vendor files
    or a tick both sealed and still in the landing log), keeps ticks inside the session, orders
    them by ``(ts_event, seq)`` and resolves the aggressor side (quotes enable Lee-Ready).

    Parameters
    ----------
    raw : pandas.DataFrame or None
        Raw ticks (:data:`fbe_pipeline.market.frames.TICK_COLUMNS`), any order; None for none.
    quotes : pandas.DataFrame or None
        L1 quotes of the same symbol and date.

    Returns
    -------
    (pandas.DataFrame, dict)
        Ticks with :data:`RAW_TICK_TABLE_COLUMNS` (``drift_ms`` = ``(ts_recv - ts_event) / 1e6``,
        NaN without a receive time) and counts ``stored``, ``duplicates``,
        ``outside_session``, ``kept``.

    Raises
    ------
    NoSessionError
        If the calendar has no session that day.
    """
    open_ns, close_ns = session_bounds(instrument, trading_date)
    if raw is None:
        raw = pd.DataFrame({c: pd.Series(dtype=object) for c in TICK_COLUMNS})
    stored = len(raw)
    raw = raw.drop_duplicates(["source", "seq", "ts_event", "price", "size"])
    duplicates = stored - len(raw)
    ts = raw["ts_event"].to_numpy(np.int64)
    inside = (ts >= open_ns) & (ts < close_ns)
    ticks = raw.loc[inside].sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)
    ticks = resolve_sides(ticks, quotes)
    recv = ticks["ts_recv"].astype("Int64")
    drift = (recv - ticks["ts_event"].astype("int64")).astype("Float64") / 1e6
    ticks["ts_recv"] = recv
    ticks["drift_ms"] = drift.astype(np.float64)
    ticks["trading_date"] = pd.Timestamp(trading_date)
    ticks["trading_date"] = ticks["trading_date"].astype("datetime64[ns]")
    for col in ("symbol", "side", "side_method", "source", "exchange", "condition"):
        ticks[col] = ticks[col].astype(str)
    ticks["ts_event"] = ticks["ts_event"].astype(np.int64)
    ticks["seq"] = ticks["seq"].astype(np.int64)
    ticks["price"] = ticks["price"].astype(np.float64)
    ticks["size"] = ticks["size"].astype(np.float64)
    ticks["ohlc_eligible"] = ticks["ohlc_eligible"].astype(bool)
    ticks["volume_eligible"] = ticks["volume_eligible"].astype(bool)
    counts = {
        "stored": stored,
        "duplicates": duplicates,
        "outside_session": int((~inside).sum()),
        "kept": len(ticks),
    }
    return ticks[list(RAW_TICK_TABLE_COLUMNS)], counts


def session_bars(
    raw_ticks: pd.DataFrame,
    instrument: Instrument,
    trading_date: date,
    candles: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """1-minute bars of one partition: from its ticks
    (:func:`fbe_pipeline.market.bars.build_bars`), or, for a session without ticks, from the
    vendor 1-minute ``candles`` stored for it
    (:func:`fbe_pipeline.market.bars.bars_from_candles`: no aggressor side, so ``delta`` is
    unknown).

    Raises
    ------
    NoSessionError
        If the calendar has no session that day.
    """
    open_ns, close_ns = session_bounds(instrument, trading_date)
    day = pd.Timestamp(trading_date)
    if not len(raw_ticks) and candles is not None and len(candles):
        return bars_from_candles(candles, instrument.symbol, day, open_ns, close_ns)
    return build_bars(raw_ticks, instrument.symbol, day, open_ns, close_ns)


def loaded_sessions(store: RawStore) -> list[tuple[str, date]]:
    """``(symbol, trading_date)`` of every partition with ticks or vendor candles, sorted: the
    sessions the pipeline can materialize."""
    return sorted(set(store.partitions("ticks")) | set(store.partitions("candles")))


def warmup_window(bars_window: pd.DataFrame, trading_date: date) -> pd.DataFrame:
    """This session's bars preceded by the most recent earlier session's bars, by ``ts``.

    Only one earlier session is used for warm-up so the result does not depend on how many
    older partitions happen to be materialized.
    """
    day = pd.Timestamp(trading_date)
    dates = pd.to_datetime(bars_window["trading_date"])
    earlier = dates[dates < day]
    keep = dates == day
    if len(earlier):
        keep |= dates == earlier.max()
    return bars_window.loc[keep].sort_values("ts").reset_index(drop=True)


def session_features(
    bars_window: pd.DataFrame,
    trading_date: date,
    books: pd.DataFrame | None,
) -> pd.DataFrame:
    """Features of one session's bars, warmed up on the previous session (no later bar read).

    Returns the :data:`fbe_pipeline.research.features.FEATURE_COLUMNS` rows of ``trading_date``
    only.
    """
    window = warmup_window(bars_window, trading_date)
    has_l2 = books is not None and not books.empty
    feats = compute_features(window, books, has_l2=has_l2)
    today = pd.to_datetime(feats["trading_date"]) == pd.Timestamp(trading_date)
    return feats.loc[today].reset_index(drop=True)


def session_scores(features: pd.DataFrame, config: ScoringConfig) -> pd.DataFrame:
    """Scores of one session (:func:`fbe_pipeline.research.scoring.compute_scores`)."""
    return compute_scores(features, config)


def session_signals(scores: pd.DataFrame, config: ScoringConfig) -> pd.DataFrame:
    """Signals of one session (:func:`fbe_pipeline.research.scoring.generate_signals`)."""
    return generate_signals(scores, config)


def session_regimes(
    features_window: pd.DataFrame, instrument: Instrument, trading_date: date
) -> pd.DataFrame:
    """Regime tags of one session; the ATR history is the up to 20 earlier sessions present."""
    day = pd.Timestamp(trading_date)
    dates = pd.to_datetime(features_window["trading_date"])
    earlier_days = sorted(dates[dates < day].unique())[-20:]
    history = features_window.loc[dates.isin(earlier_days), "atr14"].to_numpy(np.float64)
    today = features_window.loc[dates == day].sort_values("ts").reset_index(drop=True)
    return compute_regimes(today, history, instrument.tz, list(instrument.session_tags))


def session_backtest(
    bars: pd.DataFrame,
    features: pd.DataFrame,
    signals: pd.DataFrame,
    regimes: pd.DataFrame,
    config: ScoringConfig,
    version: str,
) -> pd.DataFrame:
    """Backtest trades of one session (:func:`fbe_pipeline.research.backtest.run_backtest`)."""
    return run_backtest(bars, features, signals, regimes, config, version)


def session_summary(
    trades_window: pd.DataFrame,
    symbol: str,
    trading_date: date,
    config: ScoringConfig,
    version: str,
) -> pd.DataFrame:
    """Walk-forward summary of one session (:func:`fbe_pipeline.research.backtest.summarize`)."""
    day = pd.Timestamp(trading_date)
    dates = pd.to_datetime(trades_window["trading_date"])
    return summarize(
        trades_window.loc[dates < day],
        trades_window.loc[dates == day],
        symbol,
        day,
        config.version,
        version,
    )


CONTEXT_COLUMNS: tuple[str, ...] = (
    "close",
    "high",
    "low",
    "atr14",
    "range_high",
    "range_low",
    "vol_ratio",
)


def signal_context(
    signals: pd.DataFrame, features: pd.DataFrame, bars: pd.DataFrame
) -> pd.DataFrame:
    """What an order needs to know about each signal's bar (bracket levels, slippage).

    Parameters
    ----------
    signals : pandas.DataFrame
        ``signals`` rows (``signal_id``, ``ts``).
    features, bars : pandas.DataFrame
        The same session's ``features`` and ``bars_1m`` rows (``ts`` the bar open, UTC).

    Returns
    -------
    pandas.DataFrame
        ``signal_id`` and :data:`CONTEXT_COLUMNS` (float64, price currency except
        ``vol_ratio``): the signal bar's close, high and low, ``atr14``, ``range_high``,
        ``range_low`` and ``vol_ratio``; one row per signal, same order.
    """
    keys = signals[["signal_id", "ts"]].assign(ts=pd.DatetimeIndex(signals["ts"]).as_unit("ns"))
    feats = features[["ts", "atr14", "range_high", "range_low", "vol_ratio"]].assign(
        ts=pd.DatetimeIndex(features["ts"]).as_unit("ns")
    )
    prices = bars[["ts", "close", "high", "low"]].assign(
        ts=pd.DatetimeIndex(bars["ts"]).as_unit("ns")
    )
    out = keys.merge(prices, on="ts", how="left").merge(feats, on="ts", how="left")
    return out[["signal_id", *CONTEXT_COLUMNS]].astype(dict.fromkeys(CONTEXT_COLUMNS, "float64"))
