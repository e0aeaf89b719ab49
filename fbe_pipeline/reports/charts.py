"""PNG charts of the daily and weekly trading reviews.

Every chart is drawn on its own :class:`matplotlib.figure.Figure` with the Agg canvas, never
through :mod:`matplotlib.pyplot`, and every font size, colour and time zone is passed explicitly
rather than read from changed ``rcParams``: rendering is then thread-safe and the same frames
always give the same bytes. Each chart is 900 x 360 pixels (9 x 3.6 inches at 100 dpi).

Frames are the pipeline's tables (``datetime64[ns, UTC]`` timestamps, ``trading_date`` as naive
``datetime64[ns]`` midnight). An empty frame gives a chart that says there is nothing to show.
"""

from __future__ import annotations

import io
import math
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CHARTS: tuple[str, ...] = (
    "equity_drawdown",
    "price_with_signals",
    "signals_by_time_of_day",
    "score_distribution",
    "regime_session_bars",
)

WIDTH_IN = 9.0
HEIGHT_IN = 3.6
DPI = 100
FONT_SIZE = 9.0

_LINE = "#1f4e79"
_GAIN = "#2e7d32"
_LOSS = "#c62828"
_ENTRY = "#1565c0"
_EXIT = "#212121"
_MUTED = "#9e9e9e"
_HIGHLIGHT = "#ef6c00"
_BUCKET_MINUTES = 30
_REGIME_ORDER = ("low", "normal", "high", "unknown")
# Above this many heatmap cells the count labels would overlap; the colour still carries them.
_MAX_ANNOTATED_CELLS = 400
_MAX_TICK_LABELS = 16


def _figure() -> Figure:
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No Software tag: the PNG would otherwise change with the matplotlib version.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _label(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=FONT_SIZE + 1)
    ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    ax.set_ylabel(ylabel, fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE)


def _message(title: str, message: str) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, fontsize=FONT_SIZE + 1)
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=FONT_SIZE + 5,
        color=_MUTED,
    )
    return _png(fig)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


def _utc_index(values: pd.Series) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(values)
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _date_nums(values: pd.Series) -> np.ndarray:
    # matplotlib's own date numbers (days, UTC) so no pandas unit converter has to be
    # registered, which would be process-wide state.
    naive_utc = _utc_index(values).tz_localize(None)
    return np.asarray(mdates.date2num(naive_utc.to_numpy()), dtype=np.float64)


def _time_axis(ax: Axes, zone: ZoneInfo, x: np.ndarray) -> None:
    locator = mdates.AutoDateLocator(tz=zone, minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=zone))
    ax.xaxis.get_offset_text().set_fontsize(FONT_SIZE)
    if len(x) and x.min() == x.max():
        # A single instant would make a zero-width axis; show a minute either side instead.
        ax.set_xlim(x.min() - 1 / 1440, x.max() + 1 / 1440)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def equity_drawdown(trades: pd.DataFrame) -> bytes:
    """Cumulative PnL in R (step line, top) and drawdown from its running peak (bottom).

    Parameters
    ----------
    trades : pandas.DataFrame
        Backtest trades; uses ``entry_time`` and ``exit_time`` (``datetime64[ns, UTC]``) and
        ``r_multiple`` (float64, PnL in R = multiples of the trade's initial risk). Trades
        without an exit time or R multiple are left out.

    Returns
    -------
    bytes
        900 x 360 PNG. The curve starts at 0 R at the first entry and steps at every exit;
        the drawdown (R, <= 0) is measured from the running peak including that 0 R start.
        The time axis is in UTC. Without trades the chart says "no trades in this period".

    Raises
    ------
    KeyError
        If a column listed above is missing from a non-empty frame.
    """
    title = "Cumulative PnL and drawdown"
    if trades.empty:
        return _message(title, "no trades in this period")
    done = trades.loc[trades["exit_time"].notna() & trades["r_multiple"].notna()]
    if done.empty:
        return _message(title, "no closed trades in this period")
    done = done.sort_values("exit_time", kind="stable")
    r = done["r_multiple"].to_numpy(np.float64)
    equity = np.concatenate([[0.0], np.cumsum(r)])
    drawdown = equity - np.maximum.accumulate(equity)
    first_entry = done["entry_time"].min()
    start = _utc_index(done["exit_time"]).min()
    if pd.notna(first_entry):
        start = min(start, _utc_index(pd.Series([first_entry])).min())
    x = np.concatenate([_date_nums(pd.Series([start])), _date_nums(done["exit_time"])])

    fig = _figure()
    ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    ax_eq.step(x, equity, where="post", color=_LINE, linewidth=1.5)
    ax_eq.plot(x[1:], equity[1:], "o", color=_LINE, markersize=3)
    ax_eq.axhline(0.0, color=_MUTED, linewidth=0.8)
    _label(
        ax_eq,
        f"Cumulative PnL and drawdown ({_plural(len(r), 'trade')}, "
        f"total {equity[-1]:+.2f} R, max drawdown {drawdown.min():.2f} R)",
        "",
        "Cumulative PnL (R)",
    )
    ax_dd.fill_between(x, drawdown, 0.0, step="post", color=_LOSS, alpha=0.35, linewidth=0)
    ax_dd.step(x, drawdown, where="post", color=_LOSS, linewidth=1.0)
    ax_dd.set_ylim(drawdown.min() * 1.15 if drawdown.min() < 0 else -1.0, 0.0)
    _label(ax_dd, "", "Exit time (UTC)", "Drawdown (R)")
    _time_axis(ax_dd, ZoneInfo("UTC"), x)
    return _png(fig)


def price_with_signals(
    bars: pd.DataFrame, signals: pd.DataFrame, trades: pd.DataFrame, tz: str
) -> bytes:
    """Close price of the 1-minute bars with the signals, trade entries and trade exits.

    Parameters
    ----------
    bars : pandas.DataFrame
        1-minute bars; uses ``symbol`` (str), ``trading_date`` (naive ``datetime64[ns]``),
        ``ts`` (bar open, ``datetime64[ns, UTC]``) and ``close`` (float64, price currency).
        Each trading date is drawn as its own line segment, so overnight gaps are not bridged.
    signals : pandas.DataFrame
        Signals; uses ``ts`` (signal bar open, ``datetime64[ns, UTC]``) and ``direction``
        (``'long'``/``'short'``). Drawn as up/down triangles at the close of the signal bar;
        a signal whose bar is not in ``bars`` is left out.
    trades : pandas.DataFrame
        Backtest trades; uses ``entry_time``, ``exit_time`` (``datetime64[ns, UTC]``),
        ``entry_price`` and ``exit_price`` (float64, price currency): circles at entries and
        crosses at exits.
    tz : str
        IANA time zone of the instrument (e.g. ``'America/New_York'``); the time axis is in
        this local time.

    Returns
    -------
    bytes
        900 x 360 PNG; without bars it says "no bars in this period".

    Raises
    ------
    ValueError
        If ``tz`` is not a known time zone.
    KeyError
        If a column listed above is missing from a non-empty frame.
    """
    zone = _zone(tz)
    if bars.empty:
        return _message("Close price with signals and trades", "no bars in this period")
    bars = bars.sort_values("ts", kind="stable")
    symbols = ", ".join(sorted(bars["symbol"].astype(str).unique()))

    fig = _figure()
    ax = fig.add_subplot()
    x_all = _date_nums(bars["ts"])
    for i, (_, session) in enumerate(bars.groupby("trading_date", sort=True)):
        ax.plot(
            _date_nums(session["ts"]),
            session["close"].to_numpy(np.float64),
            color=_LINE,
            linewidth=1.0,
            label="Close" if i == 0 else None,
        )

    n_signals = 0
    if not signals.empty:
        close_at = bars.drop_duplicates("ts", keep="last").set_index("ts")["close"]
        placed = signals.assign(price=signals["ts"].map(close_at)).dropna(subset=["price"])
        n_signals = len(placed)
        for direction, marker, colour in (("long", "^", _GAIN), ("short", "v", _LOSS)):
            chosen = placed.loc[placed["direction"] == direction]
            if chosen.empty:
                continue
            ax.scatter(
                _date_nums(chosen["ts"]),
                chosen["price"].to_numpy(np.float64),
                marker=marker,
                s=60,
                color=colour,
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
                label=f"{direction.capitalize()} signal ({len(chosen)})",
            )

    n_trades = 0
    if not trades.empty:
        entries = trades.dropna(subset=["entry_time", "entry_price"])
        exits = trades.dropna(subset=["exit_time", "exit_price"])
        n_trades = len(entries)
        if len(entries):
            ax.scatter(
                _date_nums(entries["entry_time"]),
                entries["entry_price"].to_numpy(np.float64),
                marker="o",
                s=36,
                facecolors="none",
                edgecolors=_ENTRY,
                linewidths=1.2,
                zorder=4,
                label=f"Trade entry ({len(entries)})",
            )
        if len(exits):
            ax.scatter(
                _date_nums(exits["exit_time"]),
                exits["exit_price"].to_numpy(np.float64),
                marker="x",
                s=36,
                color=_EXIT,
                linewidths=1.2,
                zorder=4,
                label=f"Trade exit ({len(exits)})",
            )

    _label(
        ax,
        f"{symbols} close price with {_plural(n_signals, 'signal')} "
        f"and {_plural(n_trades, 'trade')}",
        f"Local time ({tz})",
        "Price (quote currency)",
    )
    # Prices are plotted as they are quoted, not as an offset from a large constant.
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    _time_axis(ax, zone, x_all)
    ax.legend(loc="best", fontsize=FONT_SIZE, framealpha=0.85)
    return _png(fig)


def _thinned_ticks(labels: list[str]) -> tuple[list[int], list[str]]:
    step = max(1, math.ceil(len(labels) / _MAX_TICK_LABELS))
    positions = list(range(0, len(labels), step))
    return positions, [labels[i] for i in positions]


def signals_by_time_of_day(signals: pd.DataFrame, tz: str) -> bytes:
    """Heatmap of signal counts: trading dates by 30-minute buckets of the local time of day.

    Parameters
    ----------
    signals : pandas.DataFrame
        Signals; uses ``trading_date`` (naive ``datetime64[ns]``, one row per date) and ``ts``
        (signal bar open, ``datetime64[ns, UTC]``, bucketed by its local time of day).
    tz : str
        IANA time zone of the instrument; buckets are in this local time.

    Returns
    -------
    bytes
        900 x 360 PNG. Columns run from the earliest to the latest bucket holding a signal;
        non-zero counts are written in their cells. Without signals it says "no signals in
        this period".

    Raises
    ------
    ValueError
        If ``tz`` is not a known time zone.
    KeyError
        If a column listed above is missing from a non-empty frame.
    """
    zone = _zone(tz)
    title = "Signals by local time of day"
    if signals.empty:
        return _message(title, "no signals in this period")
    local = _utc_index(signals["ts"]).tz_convert(zone)
    bucket = ((local.hour * 60 + local.minute) // _BUCKET_MINUTES).to_numpy(np.int64)
    dates = pd.DatetimeIndex(signals["trading_date"]).normalize()
    rows = sorted(dates.unique())
    row_of = {day: i for i, day in enumerate(rows)}
    first, last = int(bucket.min()), int(bucket.max())
    counts = np.zeros((len(rows), last - first + 1), dtype=np.int64)
    np.add.at(counts, (np.array([row_of[d] for d in dates]), bucket - first), 1)
    top = max(1, int(counts.max()))

    fig = _figure()
    ax = fig.add_subplot()
    image = ax.imshow(
        counts, aspect="auto", cmap="Blues", vmin=0, vmax=top, interpolation="nearest"
    )
    colorbar = fig.colorbar(image, ax=ax, ticks=MaxNLocator(integer=True))
    colorbar.set_label("Signals (count)", fontsize=FONT_SIZE)
    colorbar.ax.tick_params(labelsize=FONT_SIZE)
    if counts.size <= _MAX_ANNOTATED_CELLS:
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(
                    j,
                    i,
                    str(n),
                    ha="center",
                    va="center",
                    fontsize=FONT_SIZE,
                    color="white" if n > top / 2 else "black",
                )
    minutes = [b * _BUCKET_MINUTES for b in range(first, last + 1)]
    x_pos, x_labels = _thinned_ticks([f"{m // 60:02d}:{m % 60:02d}" for m in minutes])
    ax.set_xticks(x_pos, x_labels)
    y_pos, y_labels = _thinned_ticks([f"{d:%Y-%m-%d %a}" for d in rows])
    ax.set_yticks(y_pos, y_labels)
    _label(
        ax,
        f"{title} ({_plural(len(signals), 'signal')}, {_BUCKET_MINUTES}-minute buckets)",
        f"Local time of day ({tz}), start of bucket",
        "Trading date",
    )
    return _png(fig)


def score_distribution(scores: pd.DataFrame, signals: pd.DataFrame) -> bytes:
    """Histogram of the scores of the bars that poked out of their range, signals overlaid.

    Parameters
    ----------
    scores : pandas.DataFrame
        Per-bar scores; uses ``poke`` (``'up'``/``'down'``/``'none'``) and ``score``
        (float64, points 0-100). Only bars with ``poke != 'none'`` are counted.
    signals : pandas.DataFrame
        Signals of the same bars; uses ``score`` (float64, points 0-100), drawn on top as a
        second histogram (the pokes that fired), with a dashed line at the lowest signal score.

    Returns
    -------
    bytes
        900 x 360 PNG, bins of 5 points from 0 to 100. Without pokes or signals it says "no
        breakout pokes in this period".

    Raises
    ------
    KeyError
        If a column listed above is missing from a non-empty frame.
    """
    title = "Score distribution of breakout pokes"
    pokes = (
        scores.loc[scores["poke"] != "none", "score"].dropna().to_numpy(np.float64)
        if not scores.empty
        else np.empty(0)
    )
    fired = signals["score"].dropna().to_numpy(np.float64) if not signals.empty else np.empty(0)
    if not len(pokes) and not len(fired):
        return _message(title, "no breakout pokes in this period")
    bins = [5.0 * i for i in range(21)]

    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(
        np.clip(pokes, 0.0, 100.0),
        bins=bins,
        color=_MUTED,
        edgecolor="white",
        label=f"Bars with a poke ({len(pokes)})",
    )
    if len(fired):
        ax.hist(
            np.clip(fired, 0.0, 100.0),
            bins=bins,
            color=_HIGHLIGHT,
            edgecolor="white",
            alpha=0.9,
            label=f"of which signals ({len(fired)})",
        )
        lowest = float(fired.min())
        ax.axvline(
            lowest,
            color=_EXIT,
            linestyle="--",
            linewidth=1.0,
            label=f"Lowest signal score ({lowest:g})",
        )
    ax.set_xlim(0.0, 100.0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _label(ax, title, "Score (points, 0-100)", "Bars (count)")
    ax.legend(loc="upper right", fontsize=FONT_SIZE, framealpha=0.85)
    return _png(fig)


def _pnl_bars(ax: Axes, groups: pd.DataFrame, title: str, xlabel: str) -> None:
    totals = groups["total"].to_numpy(np.float64)
    bars = ax.bar(
        [str(k) for k in groups.index],
        totals,
        color=[_GAIN if t >= 0 else _LOSS for t in totals],
        edgecolor="black",
        linewidth=0.5,
    )
    ax.bar_label(
        bars,
        labels=[_plural(int(n), "trade") for n in groups["count"]],
        padding=2,
        fontsize=FONT_SIZE,
    )
    ax.axhline(0.0, color=_MUTED, linewidth=0.8)
    # Room above and below the bars for their trade-count labels.
    ax.margins(y=0.25)
    _label(ax, title, xlabel, "Total PnL (R)")


def regime_session_bars(trades: pd.DataFrame) -> bytes:
    """Total PnL in R per volatility regime and per session period, with trade counts.

    Parameters
    ----------
    trades : pandas.DataFrame
        Backtest trades; uses ``r_multiple`` (float64, PnL in R; NaN counts as 0 R but the
        trade is still counted), ``vol_regime`` (``'low'``/``'normal'``/``'high'``/
        ``'unknown'``), ``session_tag`` (str) and ``entry_time`` (``datetime64[ns, UTC]``).

    Returns
    -------
    bytes
        900 x 360 PNG with two bar charts side by side. Regimes are in the order low, normal,
        high, unknown (then any other value alphabetically); session periods in the order
        they first occur by entry time. Without trades it says "no trades in this period".

    Raises
    ------
    KeyError
        If a column listed above is missing from a non-empty frame.
    """
    title = "PnL by volatility regime and session period"
    if trades.empty:
        return _message(title, "no trades in this period")
    ordered = trades.sort_values("entry_time", kind="stable")
    regime = ordered["vol_regime"].astype(str)
    session = ordered["session_tag"].astype(str)
    r = ordered["r_multiple"].astype(np.float64)

    def grouped(keys: pd.Series, order: list[str]) -> pd.DataFrame:
        table = r.groupby(keys.to_numpy()).agg(total="sum", count="size")
        return table.reindex(order)

    present = set(regime)
    regime_order = [k for k in _REGIME_ORDER if k in present]
    regime_order += sorted(present.difference(_REGIME_ORDER))

    fig = _figure()
    ax_regime, ax_session = fig.subplots(1, 2)
    fig.suptitle(
        f"{title} ({_plural(len(ordered), 'trade')}, total {r.sum():+.2f} R)",
        fontsize=FONT_SIZE + 1,
    )
    _pnl_bars(
        ax_regime,
        grouped(regime, regime_order),
        "By volatility regime",
        "Volatility regime (ATR percentile tercile)",
    )
    _pnl_bars(
        ax_session,
        grouped(session, list(dict.fromkeys(session))),
        "By session period",
        "Session period (local time window)",
    )
    return _png(fig)
