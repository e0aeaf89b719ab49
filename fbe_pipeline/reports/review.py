"""The daily and weekly review of one instrument (SPEC §7): key figures, regime and session
breakdown, failed checks, as numbers, Markdown and an HTML page with charts.

A review covers one or more sessions (a day, or the sessions of a week) and is computed from the
pipeline's tables only, so it can be re-made from raw data at any time. PnL is given in R
(multiples of each trade's initial risk) and in basis points of the entry price, units that
survive any price level; the price-currency sum is shown beside them for reference only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from fbe_pipeline.governance.monitors import low_liquidity_window
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.reports import charts
from fbe_pipeline.reports.page import render_page

# A day's review, a week's, or any date range's (the console's analytics).
KINDS = ("daily", "weekly", "range")


@dataclass(frozen=True)
class ReviewFrames:
    """The tables a review reads, restricted to its sessions.

    Attributes
    ----------
    bars, scores, signals, trades, regimes : pandas.DataFrame
        Rows of ``bars_1m``, ``scores``, ``signals``, ``backtest_trades`` and ``regime_tags``
        (contracts in :mod:`fbe_pipeline.quality.schemas`; times ``datetime64[ns, UTC]``).
    fills : pandas.DataFrame
        Paper entry fills of the sessions: ``ts_ns`` (int, ns), ``realized_slippage`` and
        ``estimated_slippage`` (price currency per unit); may be empty.
    drift_ms : pandas.Series
        ``ts_recv - ts_event`` of the sessions' ticks, ms (float; NaN where unknown).
    failed_checks : dict
        ``{trading date (YYYY-MM-DD): [failed check names]}``.
    """

    bars: pd.DataFrame
    scores: pd.DataFrame
    signals: pd.DataFrame
    trades: pd.DataFrame
    regimes: pd.DataFrame
    fills: pd.DataFrame = field(default_factory=pd.DataFrame)
    drift_ms: pd.Series = field(default_factory=lambda: pd.Series(dtype="float64"))
    failed_checks: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Review:
    """A computed review.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    symbol : str
    first, last : datetime.date
        The first and last session covered.
    sessions : int
        Sessions covered.
    figures : dict
        Key figures (None where undefined): ``signals``, ``trades``, ``wins``, ``win_rate``
        (0-1), ``pnl_r``, ``avg_r``, ``pnl_bps`` (sum of trade returns, bps of entry),
        ``pnl_price`` (price currency per unit), ``max_drawdown_r`` (>= 0),
        ``slippage_bps`` (mean modelled slippage paid per trade, bps of entry),
        ``paper_fills``, ``slippage_ratio`` (paper fills: realized / estimated),
        ``low_liquidity_share`` (0-1 of signals in the low-liquidity window), ``drift_p50_ms``,
        ``drift_p99_ms``, ``failed_checks`` (count).
    by_regime, by_session : pandas.DataFrame
        Per ``vol_regime`` / ``session_tag``: ``group`` (str), ``trades`` (int), ``wins``
        (int), ``pnl_r`` and ``pnl_bps`` (float).
    failed_checks : dict
        As in :class:`ReviewFrames`.
    """

    kind: str
    symbol: str
    first: date
    last: date
    sessions: int
    figures: dict[str, float | int | None]
    by_regime: pd.DataFrame
    by_session: pd.DataFrame
    failed_checks: dict[str, list[str]]


def _breakdown(trades: pd.DataFrame, column: str) -> pd.DataFrame:
    if trades.empty:
        return pd.DataFrame({"group": [], "trades": [], "wins": [], "pnl_r": [], "pnl_bps": []})
    grouped = trades.assign(win=trades["pnl"] > 0).groupby(column, sort=True)
    return pd.DataFrame(
        {
            "group": grouped.size().index.astype(str),
            "trades": grouped.size().to_numpy(dtype=np.int64),
            "wins": grouped["win"].sum().to_numpy(dtype=np.int64),
            "pnl_r": grouped["r_multiple"].sum().to_numpy(dtype=np.float64),
            "pnl_bps": grouped["return_bps"].sum().to_numpy(dtype=np.float64),
        }
    )


def max_drawdown_r(trades: pd.DataFrame) -> float:
    """Largest fall of cumulative PnL in R from its running peak (starting at 0), trades in
    ``exit_time`` order; 0.0 without trades. Units: R (>= 0)."""
    if trades.empty:
        return 0.0
    equity = np.concatenate([[0.0], trades.sort_values("exit_time")["r_multiple"].cumsum()])
    return float((np.maximum.accumulate(equity) - equity).max())


def build_review(
    kind: str,
    instrument: Instrument,
    first: date,
    last: date,
    sessions: int,
    frames: ReviewFrames,
) -> Review:
    """Compute the review of ``instrument`` over the sessions ``first``..``last``.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    sessions : int
        Sessions in the period (>= 1).
    frames : ReviewFrames
        The period's rows.

    Raises
    ------
    ValueError
        For an unknown ``kind``, ``sessions`` < 1 or ``first`` after ``last``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if sessions < 1 or first > last:
        raise ValueError(f"a review covers at least one session, got {sessions} ({first}..{last})")
    trades, signals = frames.trades, frames.signals
    n = len(trades)
    wins = int((trades["pnl"] > 0).sum()) if n else 0
    fills = frames.fills
    estimated = float(fills["estimated_slippage"].sum()) if len(fills) else 0.0
    window = low_liquidity_window(instrument)
    low_liquidity: float | None = None
    if window is not None and len(signals):
        local = pd.DatetimeIndex(signals["ts"]).tz_convert(instrument.tz).time
        low_liquidity = float(np.mean([window[0] <= t < window[1] for t in local]))
    drift = frames.drift_ms.dropna().to_numpy(dtype=np.float64)
    figures: dict[str, float | int | None] = {
        "signals": len(signals),
        "trades": n,
        "wins": wins,
        "win_rate": wins / n if n else None,
        "pnl_r": float(trades["r_multiple"].sum()) if n else 0.0,
        "avg_r": float(trades["r_multiple"].mean()) if n else None,
        "pnl_bps": float(trades["return_bps"].sum()) if n else 0.0,
        "pnl_price": float(trades["pnl"].sum()) if n else 0.0,
        "max_drawdown_r": max_drawdown_r(trades),
        "slippage_bps": (
            float((trades["slippage_paid"] / trades["entry_price"]).mean() * 1e4) if n else None
        ),
        "paper_fills": len(fills),
        "slippage_ratio": (
            float(fills["realized_slippage"].sum()) / estimated if estimated > 0 else None
        ),
        "low_liquidity_share": low_liquidity,
        "drift_p50_ms": float(np.percentile(drift, 50)) if len(drift) else None,
        "drift_p99_ms": float(np.percentile(drift, 99)) if len(drift) else None,
        "failed_checks": sum(len(v) for v in frames.failed_checks.values()),
    }
    return Review(
        kind=kind,
        symbol=instrument.symbol,
        first=first,
        last=last,
        sessions=sessions,
        figures=figures,
        by_regime=_breakdown(trades, "vol_regime"),
        by_session=_breakdown(trades, "session_tag"),
        failed_checks={k: sorted(v) for k, v in sorted(frames.failed_checks.items()) if v},
    )


def _fmt(value: float | int | None, unit: str = "", places: int = 2, signed: bool = False) -> str:
    """A figure rounded for people: thousands separators, fixed places, a unit; "n/a" for
    None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}{unit}"
    sign = "+" if signed else ""
    return f"{value:{sign},.{places}f}{unit}"


def key_figures(review: Review) -> list[tuple[str, str]]:
    """The review's key figures as (label, formatted value) pairs, in reading order."""
    f = review.figures
    pct: dict[str, float | None] = {}
    for k in ("win_rate", "low_liquidity_share"):
        value = f[k]
        pct[k] = None if value is None else 100 * float(value)
    return [
        ("Sessions", _fmt(review.sessions)),
        ("Signals", _fmt(f["signals"])),
        ("Trades (wins)", f"{_fmt(f['trades'])} ({_fmt(f['wins'])})"),
        ("Win rate", _fmt(pct["win_rate"], " %", 0)),
        ("PnL", f"{_fmt(f['pnl_r'], ' R', 2, True)} / {_fmt(f['pnl_bps'], ' bps', 1, True)}"),
        ("Average trade", _fmt(f["avg_r"], " R", 2, True)),
        ("Max drawdown", _fmt(f["max_drawdown_r"], " R", 2)),
        ("Modelled slippage per trade", _fmt(f["slippage_bps"], " bps", 1)),
        (
            "Paper slippage realized / estimated",
            f"{_fmt(f['slippage_ratio'], '', 2)} over {_fmt(f['paper_fills'])} fills",
        ),
        ("Signals in the low-liquidity window", _fmt(pct["low_liquidity_share"], " %", 0)),
        (
            "Clock drift p50 / p99",
            f"{_fmt(f['drift_p50_ms'], ' ms', 0)} / {_fmt(f['drift_p99_ms'], ' ms', 0)}",
        ),
        ("Failed checks", _fmt(f["failed_checks"])),
    ]


def _table(frame: pd.DataFrame) -> list[list[str]]:
    return [
        [
            str(r.group),
            _fmt(int(r.trades)),
            _fmt(int(r.wins)),
            _fmt(float(r.pnl_r), " R", 2, True),
            _fmt(float(r.pnl_bps), " bps", 1, True),
        ]
        for r in frame.itertuples(index=False)
    ]


_HEADER = ["group", "trades", "wins", "PnL (R)", "PnL (bps)"]


def title(review: Review) -> str:
    """``"SPY daily review, 2013-10-07"`` or ``"SPY weekly review, 2013-10-07 to 2013-10-11"``
    (``range`` reviews: ``"SPY review, ..."``)."""
    period = (
        review.first.isoformat()
        if review.first == review.last
        else f"{review.first.isoformat()} to {review.last.isoformat()}"
    )
    kind = "" if review.kind == "range" else f" {review.kind}"
    return f"{review.symbol}{kind} review, {period}"


def to_markdown(review: Review) -> str:
    """The review as Markdown (for the Dagster UI): title, key figures, breakdowns by regime
    and session tag, failed checks."""
    lines = [f"# {title(review)}", "", "| figure | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in key_figures(review)]
    for heading, frame in (
        ("By volatility regime", review.by_regime),
        ("By session", review.by_session),
    ):
        lines += ["", f"## {heading}", ""]
        if frame.empty:
            lines.append("No trades.")
            continue
        lines += ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in _table(frame)]
    lines += ["", "## Failed checks", ""]
    if review.failed_checks:
        lines += [f"- {day}: {', '.join(names)}" for day, names in review.failed_checks.items()]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def report_path(home: Path, review: Review) -> Path:
    """``$FBE_HOME/reports/daily/<SYMBOL>/<DATE>.html``, or for a weekly (range) review
    ``reports/weekly/<SYMBOL>/<FIRST>_<LAST>.html`` (``reports/range/...``)."""
    stem = (
        review.first.isoformat()
        if review.kind == "daily"
        else f"{review.first.isoformat()}_{review.last.isoformat()}"
    )
    return home / "reports" / review.kind / review.symbol / f"{stem}.html"


def render_review(
    review: Review, frames: ReviewFrames, instrument: Instrument, out_html: Path
) -> list[Path]:
    """Draw the charts (:mod:`fbe_pipeline.reports.charts`) and write the HTML page with its
    PNGs beside it (:func:`fbe_pipeline.reports.page.render_page`).

    Returns
    -------
    list of Path
        The written files, the HTML page first.
    """
    pngs = {
        "equity_drawdown": charts.equity_drawdown(frames.trades),
        "price_with_signals": charts.price_with_signals(
            frames.bars, frames.signals, frames.trades, instrument.tz
        ),
        "signals_by_time_of_day": charts.signals_by_time_of_day(frames.signals, instrument.tz),
        "score_distribution": charts.score_distribution(frames.scores, frames.signals),
        "regime_session_bars": charts.regime_session_bars(frames.trades),
    }
    failed = [[day, ", ".join(names)] for day, names in review.failed_checks.items()]
    sections = [
        ("By volatility regime", _HEADER, _table(review.by_regime)),
        ("By session", _HEADER, _table(review.by_session)),
        ("Failed checks", ["session", "checks"], failed),
    ]
    subtitle = (
        f"{instrument.symbol} on {instrument.calendar}, times in {instrument.tz}; PnL in R "
        f"(multiples of initial risk) and bps of entry; price-currency PnL "
        f"{_fmt(review.figures['pnl_price'], f' {instrument.currency}', 4, True)} per unit"
    )
    return render_page(title(review), subtitle, key_figures(review), sections, pngs, out_html)
