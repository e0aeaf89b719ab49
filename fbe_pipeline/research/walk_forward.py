"""Walk-forward parameter search (SPEC §3, issue 10): choose the score thresholds and trigger on
an in-sample window only, evaluate the choice on the out-of-sample window that follows, roll.

Windows are counted in sessions of one symbol, oldest first. With ``N`` in-sample and ``M``
out-of-sample sessions, window ``k`` (0, 1, ...) searches on sessions ``[k*M, k*M + N)`` and
evaluates on ``[k*M + N, k*M + N + M)``; trailing sessions too few for a full out-of-sample
window are left out.

**Objective.** Every candidate (the base config, then each point of the grid applied to it) is
backtested on the in-sample sessions. Among the candidates with at least ``min_trades``
in-sample trades, the one with the largest total R (sum of ``r_multiple``) is chosen. Ties go
to the candidate nearest the base config (sum over the grid keys of ``|value - base| /
span``, ``span`` the range of that key's grid values and the base value), then to the earlier
grid point. A candidate whose in-sample trades are the same signal bars and directions as a
nearer one is skipped: the two differ only in their slippage draws (signal ids carry the config
version), which is noise, not evidence. When no candidate reaches ``min_trades`` the base config
is kept (``qualified`` False). The last window's choice is the proposal, a new config version
that still needs approval through the versioned configuration (``fbe config set``).

**No look-ahead.** The choice of window ``k`` is computed from the in-sample sessions alone
(:func:`choose` never receives an out-of-sample session). Each session's bars, features and
regime tags are built once (:func:`build_sessions`), from that session and earlier ones only:
features warm up on the previous calendar session (for the first in-sample session, the one
before the window), regime tags rank the ATR among up to 20 earlier sessions. Features do not
depend on the config, so only scores, signals and the backtest are recomputed per candidate.

No Dagster here: the CLI and the ``walk_forward`` asset both call these functions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.market.sessions import session_table
from fbe_pipeline.pipeline import (
    data_versions,
    loaded_sessions,
    prepare_raw_ticks,
    session_backtest,
    session_bars,
    session_features,
    session_regimes,
    session_scores,
    session_signals,
)
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.regimes import TRAILING_SESSIONS
from fbe_pipeline.storage.store import RawStore

# The settings a search may vary: the score's component thresholds and the trigger. Features
# do not depend on any of them, which is what lets each session's features be built once.
SEARCHABLE: tuple[str, ...] = (
    "wick_ratio_threshold",
    "vol_ratio_threshold",
    "poke_max_atr",
    "churn_threshold",
    "trigger_score",
)
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "trigger_score": (30.0, 50.0, 70.0),
    "wick_ratio_threshold": (0.6, 0.7, 0.8),
    "vol_ratio_threshold": (0.5, 0.6, 0.7),
}
# Small defaults so the five-session sample store yields two windows; real use passes more.
DEFAULT_IN_SAMPLE = 3
DEFAULT_OUT_OF_SAMPLE = 1
# Below this many in-sample trades a total R says too little to prefer one config to another.
DEFAULT_MIN_TRADES = 5

METRICS: tuple[str, ...] = ("trades", "win_rate", "total_r", "mean_r", "pnl_bps", "max_drawdown_r")
BREAKDOWNS: tuple[str, ...] = ("vol_regime", "session_tag")
PERIODS: tuple[str, ...] = ("in_sample", "out_of_sample")
TABLE_COLUMNS: tuple[str, ...] = (
    "window",
    "is_start",
    "is_end",
    "oos_start",
    "oos_end",
    "chosen",
    "config_version",
    "qualified",
    "period",
    "group_by",
    "group",
    *METRICS,
)


@dataclass(frozen=True)
class SessionData:
    """The config-independent backtest inputs of one session.

    Attributes
    ----------
    symbol : str
        The instrument.
    trading_date : datetime.date
        The session's trading date.
    bars, features, regimes : pandas.DataFrame
        The session's ``bars_1m``, ``features`` and ``regime_tags`` rows (one per bar, same
        ``ts`` order), as the pipeline's assets build them.
    data_version : str
        Identifier of the session's raw data (:func:`fbe_pipeline.pipeline.data_version`),
        recorded on every trade.
    """

    symbol: str
    trading_date: date
    bars: pd.DataFrame
    features: pd.DataFrame
    regimes: pd.DataFrame
    data_version: str


@dataclass(frozen=True)
class WindowResult:
    """One window: its sessions, the config chosen in-sample and both periods' results.

    Attributes
    ----------
    index : int
        Window number, 0 first.
    is_dates, oos_dates : tuple of datetime.date
        Trading dates of the in-sample and out-of-sample sessions, ascending.
    chosen : ScoringConfig
        The config chosen on the in-sample sessions.
    qualified : bool
        Whether it reached the minimum in-sample trade count (False: the base config, kept
        for want of evidence).
    candidates : int
        Candidates compared after skipping in-sample duplicates.
    is_trades, oos_trades : pandas.DataFrame
        The chosen config's trades in each period
        (:data:`fbe_pipeline.research.backtest.TRADE_COLUMNS`).
    is_metrics, oos_metrics : dict
        :func:`period_metrics` of those trades.
    """

    index: int
    is_dates: tuple[date, ...]
    oos_dates: tuple[date, ...]
    chosen: ScoringConfig
    qualified: bool
    candidates: int
    is_trades: pd.DataFrame
    oos_trades: pd.DataFrame
    is_metrics: dict[str, Any]
    oos_metrics: dict[str, Any]


@dataclass(frozen=True)
class WalkForwardReport:
    """Every window of a walk-forward run of one symbol, and what it was run with.

    Attributes
    ----------
    symbol : str
        The instrument.
    base : ScoringConfig
        The config the grid points modify; ties go towards it.
    grid : dict
        ``key -> values`` searched.
    in_sample, out_of_sample, min_trades : int
        Window lengths (sessions) and the minimum in-sample trade count.
    windows : tuple of WindowResult
        Oldest first.
    """

    symbol: str
    base: ScoringConfig
    grid: dict[str, tuple[float, ...]]
    in_sample: int
    out_of_sample: int
    min_trades: int
    windows: tuple[WindowResult, ...]

    @property
    def proposal(self) -> ScoringConfig:
        """The last window's choice: the config proposed as a new version."""
        return self.windows[-1].chosen

    def changes(self, config: ScoringConfig) -> dict[str, float]:
        """The grid keys whose value in ``config`` differs from the base config."""
        return {
            k: getattr(config, k) for k in self.grid if getattr(config, k) != getattr(self.base, k)
        }


def build_sessions(
    instrument: Instrument,
    bars: Mapping[date, pd.DataFrame],
    books: Mapping[date, pd.DataFrame | None] | None = None,
    versions: Mapping[date, str] | None = None,
) -> list[SessionData]:
    """Features and regime tags of each session's bars, as the pipeline's assets compute them.

    A session's features warm up on the previous session of the instrument's calendar when its
    bars are given (else none, like an empty look-back partition); its regime tags rank ATRs
    among the up to :data:`~fbe_pipeline.research.regimes.TRAILING_SESSIONS` calendar sessions
    before it that are given. No session reads a later one.

    Parameters
    ----------
    instrument : Instrument
        The instrument (calendar, time zone, session tags).
    bars : mapping of datetime.date to pandas.DataFrame
        ``bars_1m`` rows of each session (:func:`fbe_pipeline.pipeline.session_bars`); every
        date must be a session of the calendar.
    books : mapping of datetime.date to pandas.DataFrame or None, optional
        L2 snapshots of each session for book churn; missing dates have none.
    versions : mapping of datetime.date to str, optional
        Raw data version of each session; ``"none"`` when missing.

    Returns
    -------
    list of SessionData
        One per date of ``bars``, ascending.

    Raises
    ------
    ValueError
        If a date is not a session of the instrument's calendar.
    """
    days = sorted(bars)
    if not days:
        return []
    calendar = [t.date() for t in session_table(instrument, days[0], days[-1])["trading_date"]]
    position = {d: i for i, d in enumerate(calendar)}
    closed = [d.isoformat() for d in days if d not in position]
    if closed:
        raise ValueError(f"{instrument.symbol}: no {instrument.calendar} session on {closed}")
    books = books or {}
    versions = versions or {}
    features: dict[date, pd.DataFrame] = {}
    out: list[SessionData] = []
    for day in days:
        at = position[day]
        previous = bars.get(calendar[at - 1]) if at else None
        filled = [b for b in (previous, bars[day]) if b is not None and len(b)]
        feats = session_features(
            pd.concat(filled, ignore_index=True) if filled else bars[day], day, books.get(day)
        )
        features[day] = feats
        earlier = calendar[max(0, at - TRAILING_SESSIONS) : at]
        history = [features[d] for d in (*earlier, day) if d in features and len(features[d])]
        regimes = session_regimes(
            pd.concat(history, ignore_index=True) if history else feats, instrument, day
        )
        out.append(
            SessionData(
                instrument.symbol, day, bars[day], feats, regimes, versions.get(day, "none")
            )
        )
    return out


def stored_sessions(
    store: RawStore, instrument: Instrument, days: Iterable[date] | None = None
) -> list[date]:
    """Trading dates of the instrument's sessions holding raw ticks in the store, ascending.

    Parameters
    ----------
    store : RawStore
        The raw store.
    instrument : Instrument
        The instrument.
    days : iterable of datetime.date, optional
        Only these trading dates (e.g. a lane's partitions); default every stored one.

    Returns
    -------
    list of datetime.date
        Dates with ticks but no session in the calendar (e.g. a holiday's pre-market prints)
        are left out, as the pipeline has no bars for them.
    """
    stored = [d for s, d in loaded_sessions(store) if s == instrument.symbol]
    if days is not None:
        wanted = set(days)
        stored = [d for d in stored if d in wanted]
    if not stored:
        return []
    sessions = set(session_table(instrument, stored[0], stored[-1])["trading_date"].dt.date)
    return [d for d in stored if d in sessions]


def load_sessions(
    store: RawStore, instrument: Instrument, days: Iterable[date] | None = None
) -> list[SessionData]:
    """:func:`build_sessions` of the instrument's sessions holding raw ticks in the store.

    Parameters
    ----------
    store : RawStore
        The raw store (ticks, quotes for the aggressor side, books for book churn).
    instrument : Instrument
        The instrument.
    days : iterable of datetime.date, optional
        Only these trading dates (e.g. a lane's partitions); default every stored one.

    Returns
    -------
    list of SessionData
        One per :func:`stored_sessions` date, ascending.
    """
    symbol = instrument.symbol
    bars: dict[date, pd.DataFrame] = {}
    books: dict[date, pd.DataFrame | None] = {}
    for day in stored_sessions(store, instrument, days):
        ticks, _ = prepare_raw_ticks(store, instrument, day)
        bars[day] = session_bars(ticks, instrument, day)
        books[day] = store.read_partition("books", symbol, day)
    return build_sessions(instrument, bars, books, data_versions(store, symbol))


def session_trades(session: SessionData, config: ScoringConfig) -> pd.DataFrame:
    """Backtest trades of one session under ``config``: scores, signals, then the backtest
    (:data:`fbe_pipeline.research.backtest.TRADE_COLUMNS`)."""
    signals = session_signals(session_scores(session.features, config), config)
    return session_backtest(
        session.bars, session.features, signals, session.regimes, config, session.data_version
    )


def r_metrics(trades: pd.DataFrame) -> dict[str, Any]:
    """R-based metrics of a set of trades.

    Parameters
    ----------
    trades : pandas.DataFrame
        Backtest trades (``entry_time``, ``pnl``, ``r_multiple``, ``return_bps``), any order.

    Returns
    -------
    dict
        ``trades`` (int); ``win_rate`` (share with pnl > 0); ``total_r`` and ``mean_r`` (sum and
        mean of ``r_multiple``, R = pnl / initial risk); ``pnl_bps`` (sum of ``return_bps``:
        one unit per trade, basis points of its entry price); ``max_drawdown_r`` (largest
        peak-to-trough fall of cumulative R in entry order, from 0, >= 0). Without trades
        the ratios are NaN and the sums 0.
    """
    n = len(trades)
    if n == 0:
        nan = float("nan")
        return {
            "trades": 0,
            "win_rate": nan,
            "total_r": 0.0,
            "mean_r": nan,
            "pnl_bps": 0.0,
            "max_drawdown_r": 0.0,
        }
    ordered = trades.sort_values("entry_time", kind="stable")
    r = ordered["r_multiple"].to_numpy(np.float64)
    equity = np.cumsum(r)
    peak = np.maximum.accumulate(np.r_[0.0, equity])[1:]
    return {
        "trades": n,
        "win_rate": float((ordered["pnl"].to_numpy(np.float64) > 0).mean()),
        "total_r": float(r.sum()),
        "mean_r": float(r.mean()),
        "pnl_bps": float(ordered["return_bps"].sum()),
        "max_drawdown_r": float(np.max(peak - equity)),
    }


def period_metrics(trades: pd.DataFrame) -> dict[str, Any]:
    """:func:`r_metrics` of a period's trades, plus ``by_vol_regime`` and ``by_session_tag``:
    ``{value: r_metrics}`` of each volatility regime and session tag present (sorted)."""
    out = r_metrics(trades)
    for by in BREAKDOWNS:
        out[f"by_{by}"] = {str(g): r_metrics(t) for g, t in trades.groupby(by, sort=True)}
    return out


def candidates(base: ScoringConfig, grid: Mapping[str, Sequence[float]]) -> list[ScoringConfig]:
    """The base config and each grid point applied to it, nearest the base first.

    Distance to the base is the sum over the grid keys of ``|value - base value| / span``
    (``span``: the range of the key's grid values and base value, 1 when 0); equal distances
    keep the grid's order (keys as given, last key fastest). Duplicates are dropped, so the
    base comes first even when it is a grid point.

    Raises
    ------
    ValueError
        On an empty grid, a key outside :data:`SEARCHABLE`, or a key without values or with a
        non-finite value.
    """
    if not grid:
        raise ValueError("the walk-forward grid is empty")
    unknown = sorted(set(grid) - set(SEARCHABLE))
    if unknown:
        raise ValueError(f"walk-forward grid keys {unknown} are not searchable; use {SEARCHABLE}")
    for key, values in grid.items():
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(f"walk-forward grid key {key!r} needs finite values, got {values}")
    spans = {}
    for key, values in grid.items():
        around = [*values, getattr(base, key)]
        spans[key] = (max(around) - min(around)) or 1.0

    def distance(config: ScoringConfig) -> float:
        return sum(abs(getattr(config, k) - getattr(base, k)) / spans[k] for k in grid)

    points = []
    for values in itertools.product(*grid.values()):
        point: dict[str, Any] = dict(zip(grid, values, strict=True))
        points.append(replace(base, **point))
    ordered = sorted(enumerate([base, *points]), key=lambda ic: (distance(ic[1]), ic[0]))
    seen: set[str] = set()
    out = []
    for _, config in ordered:
        if config.version not in seen:
            seen.add(config.version)
            out.append(config)
    return out


TradesOf = Callable[[SessionData, ScoringConfig], pd.DataFrame]


def choose(
    in_sample: Sequence[SessionData],
    configs: Sequence[ScoringConfig],
    min_trades: int,
    trades_of: TradesOf = session_trades,
) -> tuple[ScoringConfig, bool, int]:
    """The config chosen on in-sample sessions (objective in the module docstring).

    Parameters
    ----------
    in_sample : sequence of SessionData
        The in-sample sessions, the only data read.
    configs : sequence of ScoringConfig
        Candidates, nearest the base first (:func:`candidates`); the first is the base.
    min_trades : int
        Minimum in-sample trades for a candidate to be chosen.
    trades_of : callable
        ``(session, config) -> trades``; :func:`session_trades` or a memo of it.

    Returns
    -------
    (ScoringConfig, bool, int)
        The choice, whether it reached ``min_trades`` (else the base), and how many candidates
        were compared after skipping in-sample duplicates.
    """
    best: tuple[float, ScoringConfig] | None = None
    seen: set[tuple[tuple[pd.Timestamp, str], ...]] = set()
    compared = 0
    for config in configs:
        frames = [t for t in (trades_of(s, config) for s in in_sample) if len(t)]
        trades = pd.concat(frames, ignore_index=True) if frames else None
        keys = (
            ()
            if trades is None
            else tuple(zip(trades["signal_ts"], trades["direction"], strict=True))
        )
        if keys in seen:
            continue
        seen.add(keys)
        compared += 1
        if trades is None or len(trades) < min_trades:
            continue
        total = float(trades["r_multiple"].sum())
        if best is None or total > best[0]:
            best = (total, config)
    if best is None:
        return configs[0], False, compared
    return best[1], True, compared


def window_count(symbol: str, sessions: int, in_sample: int, out_of_sample: int) -> int:
    """How many windows ``sessions`` sessions make: ``1 + (sessions - in_sample -
    out_of_sample) // out_of_sample``.

    Raises
    ------
    ValueError
        When a window length is below 1, or with fewer than ``in_sample + out_of_sample``
        sessions (the message names the symbol, both lengths and the count).
    """
    if in_sample < 1 or out_of_sample < 1:
        raise ValueError(
            f"in-sample ({in_sample}) and out-of-sample ({out_of_sample}) windows need >= 1 "
            "session each"
        )
    need = in_sample + out_of_sample
    if sessions < need:
        raise ValueError(
            f"walk-forward of {symbol} needs at least {need} sessions ({in_sample} in-sample + "
            f"{out_of_sample} out-of-sample), got {sessions}; load more sessions or shorten "
            "the windows"
        )
    return 1 + (sessions - need) // out_of_sample


def walk_forward(
    sessions: Sequence[SessionData],
    base: ScoringConfig,
    grid: Mapping[str, Sequence[float]] = DEFAULT_GRID,
    in_sample: int = DEFAULT_IN_SAMPLE,
    out_of_sample: int = DEFAULT_OUT_OF_SAMPLE,
    min_trades: int = DEFAULT_MIN_TRADES,
) -> WalkForwardReport:
    """Rolling in-sample search and out-of-sample evaluation (see the module docstring).

    Parameters
    ----------
    sessions : sequence of SessionData
        One symbol's sessions, strictly ascending by date (:func:`load_sessions`).
    base : ScoringConfig
        The config in effect: grid points change only the grid keys of it, and it is kept
        when no candidate qualifies.
    grid : mapping of str to sequence of float
        Values searched per :data:`SEARCHABLE` key (default :data:`DEFAULT_GRID`).
    in_sample, out_of_sample : int
        Window lengths in sessions (>= 1); windows advance by ``out_of_sample``.
    min_trades : int
        Minimum in-sample trades of a chosen candidate (>= 0).

    Returns
    -------
    WalkForwardReport
        :func:`window_count` windows.

    Raises
    ------
    ValueError
        With too few sessions or window lengths below 1 (:func:`window_count`), a negative
        ``min_trades``, sessions of several symbols or not strictly ascending, or a bad grid
        (:func:`candidates`).
    """
    if min_trades < 0:
        raise ValueError(f"min_trades must be >= 0, got {min_trades}")
    symbols = sorted({s.symbol for s in sessions})
    if len(symbols) > 1:
        raise ValueError(f"walk-forward runs on one symbol's sessions, got {symbols}")
    symbol = symbols[0] if symbols else "an instrument"
    count = window_count(symbol, len(sessions), in_sample, out_of_sample)
    dates = [s.trading_date for s in sessions]
    if any(b <= a for a, b in itertools.pairwise(dates)):
        raise ValueError(f"{symbol}: sessions must be strictly ascending by date, got {dates}")
    configs = candidates(base, grid)
    memo: dict[tuple[str, date], pd.DataFrame] = {}

    def trades_of(session: SessionData, config: ScoringConfig) -> pd.DataFrame:
        # Windows overlap: a session's trades under one config are computed once.
        key = (config.version, session.trading_date)
        if key not in memo:
            memo[key] = session_trades(session, config)
        return memo[key]

    def period(chunk: Sequence[SessionData], config: ScoringConfig) -> pd.DataFrame:
        frames = [t for t in (trades_of(s, config) for s in chunk) if len(t)]
        return pd.concat(frames, ignore_index=True) if frames else trades_of(chunk[0], config)

    windows = []
    for k in range(count):
        start = k * out_of_sample
        is_part = sessions[start : start + in_sample]
        oos_part = sessions[start + in_sample : start + in_sample + out_of_sample]
        chosen, qualified, compared = choose(is_part, configs, min_trades, trades_of)
        is_trades, oos_trades = period(is_part, chosen), period(oos_part, chosen)
        windows.append(
            WindowResult(
                index=k,
                is_dates=tuple(s.trading_date for s in is_part),
                oos_dates=tuple(s.trading_date for s in oos_part),
                chosen=chosen,
                qualified=qualified,
                candidates=compared,
                is_trades=is_trades,
                oos_trades=oos_trades,
                is_metrics=period_metrics(is_trades),
                oos_metrics=period_metrics(oos_trades),
            )
        )
    return WalkForwardReport(
        symbol=symbol,
        base=base,
        grid={k: tuple(float(v) for v in vs) for k, vs in grid.items()},
        in_sample=in_sample,
        out_of_sample=out_of_sample,
        min_trades=min_trades,
        windows=tuple(windows),
    )


def _plain(value: Any) -> Any:
    """JSON-ready: NaN becomes None, nested dicts recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def report_json(report: WalkForwardReport) -> dict[str, Any]:
    """The report as JSON-ready data.

    Returns
    -------
    dict
        ``windows``: one object per window with ``is_start``, ``is_end``, ``oos_start``,
        ``oos_end`` (ISO dates), ``chosen`` (every :class:`ScoringConfig` field: ``ScoringConfig
        .from_dict`` rebuilds it), ``chosen_version``, ``changes`` (grid keys differing from
        the base), ``qualified``, ``candidates``, ``is_metrics`` and ``oos_metrics``
        (:func:`period_metrics`, NaN as null); ``proposal``: the last window's ``config``,
        ``version``, ``changes`` and ``qualified``; and the run's ``symbol``, ``in_sample``,
        ``out_of_sample``, ``min_trades``, ``grid``, ``base`` and ``base_version``.
    """
    last = report.windows[-1]
    return {
        "symbol": report.symbol,
        "in_sample": report.in_sample,
        "out_of_sample": report.out_of_sample,
        "min_trades": report.min_trades,
        "grid": {k: list(v) for k, v in report.grid.items()},
        "base": asdict(report.base),
        "base_version": report.base.version,
        "windows": [
            {
                "window": w.index,
                "is_start": w.is_dates[0].isoformat(),
                "is_end": w.is_dates[-1].isoformat(),
                "oos_start": w.oos_dates[0].isoformat(),
                "oos_end": w.oos_dates[-1].isoformat(),
                "chosen": asdict(w.chosen),
                "chosen_version": w.chosen.version,
                "changes": report.changes(w.chosen),
                "qualified": w.qualified,
                "candidates": w.candidates,
                "is_metrics": _plain(w.is_metrics),
                "oos_metrics": _plain(w.oos_metrics),
            }
            for w in report.windows
        ],
        "proposal": {
            "config": asdict(last.chosen),
            "version": last.chosen.version,
            "changes": report.changes(last.chosen),
            "qualified": last.qualified,
        },
    }


def report_table(report: WalkForwardReport) -> pd.DataFrame:
    """The report as one row per window, period and group.

    Returns
    -------
    pandas.DataFrame
        :data:`TABLE_COLUMNS`: ``window`` (int64); the window's dates (``YYYY-MM-DD`` strings);
        ``chosen`` (``key=value`` of every grid key, comma-separated), ``config_version`` and
        ``qualified`` (bool); ``period`` (``in_sample`` / ``out_of_sample``); ``group_by``
        (``all``, ``vol_regime``, ``session_tag``) and ``group``; then :data:`METRICS`
        (``trades`` int64, the rest float64, NaN without trades). Each period has its ``all``
        row even without trades.
    """
    rows = []
    for w in report.windows:
        head = {
            "window": w.index,
            "is_start": w.is_dates[0].isoformat(),
            "is_end": w.is_dates[-1].isoformat(),
            "oos_start": w.oos_dates[0].isoformat(),
            "oos_end": w.oos_dates[-1].isoformat(),
            "chosen": ", ".join(f"{k}={getattr(w.chosen, k):g}" for k in report.grid),
            "config_version": w.chosen.version,
            "qualified": w.qualified,
        }
        for name, metrics in zip(PERIODS, (w.is_metrics, w.oos_metrics), strict=True):
            rows.append({**head, "period": name, "group_by": "all", "group": "all", **metrics})
            for by in BREAKDOWNS:
                for group, sub in metrics[f"by_{by}"].items():
                    rows.append({**head, "period": name, "group_by": by, "group": group, **sub})
    out = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    floats = [m for m in METRICS if m != "trades"]
    return out.astype(
        {"window": np.int64, "trades": np.int64, "qualified": bool, **dict.fromkeys(floats, "f8")}
    )


def proposal_command(report: WalkForwardReport) -> str | None:
    """The ``fbe config set`` line an operator runs to request the proposal as a new config
    version (under the versioned configuration's approval rules), or None when the proposal is
    the base config. Values are written exactly (``repr``); the user is left as ``USER``."""
    changes = report.changes(report.proposal)
    if not changes:
        return None
    settings = " ".join(f"{k}={v!r}" for k, v in changes.items())
    last = report.windows[-1]
    reason = (
        f"walk-forward {report.symbol}, in-sample {last.is_dates[0]}..{last.is_dates[-1]}, "
        f"config {report.proposal.version}"
    )
    return f"fbe config set {settings} --reason '{reason}' --user USER"


def report_markdown(report: WalkForwardReport) -> str:
    """A Markdown summary: one line per window with the choice and both periods' trades, total
    R and win rate, then the proposal."""

    def cell(metrics: dict[str, Any]) -> str:
        win = metrics["win_rate"]
        rate = "-" if math.isnan(win) else f"{win:.0%}"
        return f"{metrics['trades']} / {metrics['total_r']:+.2f} R / {rate}"

    lines = [
        f"**{report.symbol}** walk-forward: {report.in_sample} in-sample / "
        f"{report.out_of_sample} out-of-sample sessions, min {report.min_trades} in-sample "
        f"trades, base `{report.base.version}`",
        "",
        "| window | in-sample | out-of-sample | chosen | IS trades / R / win | "
        "OOS trades / R / win |",
        "|---|---|---|---|---|---|",
    ]
    for w in report.windows:
        changes = report.changes(w.chosen)
        chosen = ", ".join(f"{k}={v:g}" for k, v in changes.items()) or "base"
        if not w.qualified:
            chosen += " (too few trades)"
        lines.append(
            f"| {w.index} | {w.is_dates[0]}..{w.is_dates[-1]} | "
            f"{w.oos_dates[0]}..{w.oos_dates[-1]} | {chosen} | {cell(w.is_metrics)} | "
            f"{cell(w.oos_metrics)} |"
        )
    command = proposal_command(report)
    lines.append("")
    if command is None:
        lines.append("Proposal: keep the base config.")
    else:
        lines.append(
            f"Proposal `{report.proposal.version}`, a new config version that needs approval: "
            f"`{command}`"
        )
    return "\n".join(lines)
