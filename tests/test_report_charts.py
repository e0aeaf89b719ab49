"""Review charts and the review page, drawn from the real SPY sample sessions.

The frames are built by the pipeline's domain functions (as the assets and
``benchmarks/bench_pipeline.py`` do) from the Lean tick files loaded into a raw store, with a
trigger low enough that each session has several signals and trades.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.pipeline import (
    data_version,
    prepare_raw_ticks,
    session_backtest,
    session_bars,
    session_features,
    session_regimes,
    session_scores,
    session_signals,
)
from fbe_pipeline.reports import charts
from fbe_pipeline.reports.page import render_page
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.storage.store import LocalRawStore
from tests.realdata import require_data

DAYS = (date(2013, 10, 7), date(2013, 10, 8))
TZ = "America/New_York"
WIDTH, HEIGHT = 900, 360


@dataclass(frozen=True)
class Frames:
    """The review inputs of the sample SPY sessions (both sessions concatenated)."""

    bars: pd.DataFrame
    scores: pd.DataFrame
    signals: pd.DataFrame
    trades: pd.DataFrame

    def day(self, day: date) -> Frames:
        """The frames of one session only."""

        def of(frame: pd.DataFrame) -> pd.DataFrame:
            return frame.loc[frame["trading_date"] == pd.Timestamp(day)].reset_index(drop=True)

        return Frames(of(self.bars), of(self.scores), of(self.signals), of(self.trades))

    def empty(self) -> Frames:
        """Frames with the real columns and dtypes but no rows."""
        return Frames(self.bars[:0], self.scores[:0], self.signals[:0], self.trades[:0])


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Frames:
    """Bars, scores, signals and trades of 2013-10-07 and 2013-10-08 (features of the second
    session warmed up on the first, regimes with the first session's ATR as history)."""
    root = require_data()
    store = LocalRawStore(tmp_path_factory.mktemp("report_charts") / "raw")
    spy = get_instrument("SPY")
    for day in DAYS:
        load_file(
            store, "lean-trades", root / "lean" / "spy" / "tick" / f"{day:%Y%m%d}_trade.zip", spy
        )
    config = ScoringConfig(trigger_score=30)
    out: dict[str, list[pd.DataFrame]] = {"bars": [], "scores": [], "signals": [], "trades": []}
    feats_seen: list[pd.DataFrame] = []
    for day in DAYS:
        ticks, _ = prepare_raw_ticks(store, spy, day)
        bars = session_bars(ticks, spy, day)
        window = pd.concat([*out["bars"], bars], ignore_index=True)
        feats = session_features(window, day, store.read_partition("books", "SPY", day))
        feats_seen.append(feats)
        regimes = session_regimes(pd.concat(feats_seen, ignore_index=True), spy, day)
        scores = session_scores(feats, config)
        signals = session_signals(scores, config)
        trades = session_backtest(
            bars, feats, signals, regimes, config, data_version(store, "SPY", day)
        )
        for name, frame in zip(out, (bars, scores, signals, trades), strict=True):
            out[name].append(frame)
    built = Frames(*(pd.concat(parts, ignore_index=True) for parts in out.values()))
    for day in DAYS:
        one = built.day(day)
        assert len(one.bars) == 390, day
        assert len(one.signals) >= 3, day
        assert len(one.trades) >= 3, day
    assert set(built.signals["direction"]) == {"long", "short"}
    return built


def draw(name: str, f: Frames) -> bytes:
    """Chart ``name`` of the frames, called as the review does."""
    calls: dict[str, Callable[[], bytes]] = {
        "equity_drawdown": lambda: charts.equity_drawdown(f.trades),
        "price_with_signals": lambda: charts.price_with_signals(f.bars, f.signals, f.trades, TZ),
        "signals_by_time_of_day": lambda: charts.signals_by_time_of_day(f.signals, TZ),
        "score_distribution": lambda: charts.score_distribution(f.scores, f.signals),
        "regime_session_bars": lambda: charts.regime_session_bars(f.trades),
    }
    return calls[name]()


def pixels(png: bytes) -> np.ndarray:
    """Decoded RGBA pixels, after checking the PNG signature and size."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (HEIGHT, WIDTH)
    return image


def colours(png: bytes) -> int:
    """Number of distinct colours in the PNG."""
    image = pixels(png)
    return len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))


def test_chart_names_in_order() -> None:
    assert charts.CHARTS == (
        "equity_drawdown",
        "price_with_signals",
        "signals_by_time_of_day",
        "score_distribution",
        "regime_session_bars",
    )


@pytest.mark.parametrize("name", charts.CHARTS)
def test_real_session_chart_is_a_drawn_png_of_the_fixed_size(frames: Frames, name: str) -> None:
    daily = draw(name, frames.day(DAYS[0]))
    weekly = draw(name, frames)
    # Lines, markers, text and fills: far more than a blank or single-colour image.
    assert colours(daily) > 50
    assert colours(weekly) > 50
    assert daily != weekly
    assert b"Software" not in daily


@pytest.mark.parametrize("name", charts.CHARTS)
def test_same_frames_give_identical_bytes_in_any_thread(frames: Frames, name: str) -> None:
    first = draw(name, frames)
    with ThreadPoolExecutor(max_workers=2) as pool:
        again = list(pool.map(lambda _: draw(name, frames), range(4)))
    assert all(png == first for png in again)


@pytest.mark.parametrize("name", charts.CHARTS)
def test_empty_frames_give_a_valid_png_saying_so(frames: Frames, name: str) -> None:
    empty = draw(name, frames.empty())
    assert colours(empty) > 2
    assert empty != draw(name, frames)
    # Frames without any column at all are empty too.
    bare = pd.DataFrame()
    assert draw(name, Frames(bare, bare, bare, bare)) == empty


def test_price_chart_shows_signals_and_trades(frames: Frames) -> None:
    day = frames.day(DAYS[0])
    full = charts.price_with_signals(day.bars, day.signals, day.trades, TZ)
    no_signals = charts.price_with_signals(day.bars, day.signals[:0], day.trades, TZ)
    no_trades = charts.price_with_signals(day.bars, day.signals, day.trades[:0], TZ)
    bare = charts.price_with_signals(day.bars, day.signals[:0], day.trades[:0], TZ)
    assert len({full, no_signals, no_trades, bare}) == 4
    # The local time zone moves the axis labels.
    assert charts.price_with_signals(day.bars, day.signals, day.trades, "UTC") != full


def test_charts_follow_the_data(frames: Frames) -> None:
    trades = frames.trades
    assert charts.equity_drawdown(trades) != charts.equity_drawdown(trades[: len(trades) // 2])
    flipped = trades.assign(r_multiple=-trades["r_multiple"])
    assert charts.equity_drawdown(flipped) != charts.equity_drawdown(trades)
    assert charts.regime_session_bars(flipped) != charts.regime_session_bars(trades)
    shifted = frames.signals.assign(ts=frames.signals["ts"] + pd.Timedelta(minutes=30))
    assert charts.signals_by_time_of_day(shifted, TZ) != charts.signals_by_time_of_day(
        frames.signals, TZ
    )
    assert charts.score_distribution(frames.scores, frames.signals[:0]) != (
        charts.score_distribution(frames.scores, frames.signals)
    )


def test_single_trade_and_single_signal(frames: Frames) -> None:
    one_trade = frames.trades[:1]
    for png in (
        charts.equity_drawdown(one_trade),
        charts.regime_session_bars(one_trade),
        charts.signals_by_time_of_day(frames.signals[:1], TZ),
        charts.score_distribution(frames.scores[:0], frames.signals[:1]),
    ):
        assert colours(png) > 20


def test_unknown_time_zone_is_a_value_error(frames: Frames) -> None:
    with pytest.raises(ValueError, match="time zone"):
        charts.signals_by_time_of_day(frames.signals, "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="time zone"):
        charts.price_with_signals(frames.bars, frames.signals, frames.trades, "Nowhere")


def chart_pngs(f: Frames) -> dict[str, bytes]:
    """Every chart of the frames, by name."""
    return {name: draw(name, f) for name in charts.CHARTS}


def test_render_page_writes_the_html_and_the_pngs(frames: Frames, tmp_path: Path) -> None:
    pngs = chart_pngs(frames.day(DAYS[0]))
    out = tmp_path / "reports" / "daily" / "SPY" / "2013-10-07.html"
    figures = [("Trades", str(len(frames.day(DAYS[0]).trades))), ("Total PnL", "-3.21 R")]
    sections = [
        ("By session", ["session", "trades", "PnL"], [["morning", "2", "-1.50 R"]]),
        ("Failed checks", ["session", "checks"], []),
    ]
    written = render_page("SPY daily review 2013-10-07", "PnL in R", figures, sections, pngs, out)

    folder = out.parent / "2013-10-07"
    assert written == [out, *(folder / f"{name}.png" for name in charts.CHARTS)]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.png" for n in charts.CHARTS)
    html = out.read_text(encoding="utf-8")
    for name, png in pngs.items():
        assert (folder / f"{name}.png").read_bytes() == png
        assert f'src="2013-10-07/{name}.png"' in html
        assert re.search(rf'<img src="2013-10-07/{name}\.png" alt="[^"]+"', html)
    assert html.count("<h2>") == 1 + len(sections) + len(charts.CHARTS)
    assert "<h2>Price with signals and trades</h2>" in html
    for label, value in figures:
        assert f'<th scope="row">{label}</th><td>{value}</td>' in html
    assert "<td>morning</td><td>2</td><td>-1.50 R</td>" in html
    assert '<th scope="col">session</th>' in html
    assert 'class="none"' in html
    # Self-contained: no script, stylesheet link or remote address.
    assert "<script" not in html
    assert "http" not in html
    assert not list(tmp_path.rglob("*.tmp"))


def test_render_page_tables_with_and_without_a_header(tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    render_page("t", "", [], [("Table", ["a", "b"], [["1", "2"]])], {}, out)
    html = out.read_text(encoding="utf-8")
    assert '<th scope="col">a</th><th scope="col">b</th>' in html
    assert "<td>1</td><td>2</td>" in html
    render_page("t", "", [], [("Headerless", [], [["3", "4"]])], {}, out)
    assert "<td>3</td><td>4</td>" in out.read_text(encoding="utf-8")


def test_render_page_escapes_markup(frames: Frames, tmp_path: Path) -> None:
    out = tmp_path / "weekly" / "SPY" / "2013-10-07_2013-10-11.html"
    pngs = {"equity_drawdown": draw("equity_drawdown", frames)}
    render_page(
        "<script>alert(1)</script> review",
        'a "quoted" & <b>bold</b> subtitle',
        [("<i>label</i>", "<img src=x onerror=alert(1)>")],
        [("<h1>heading</h1>", ["<th>"], [["<td>cell"]])],
        pngs,
        out,
    )
    html = out.read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; review" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;i&gt;label&lt;/i&gt;" in html
    assert "&lt;h1&gt;heading&lt;/h1&gt;" in html
    assert "&lt;td&gt;cell" in html
    assert "a &#34;quoted&#34; &amp; &lt;b&gt;bold&lt;/b&gt; subtitle" in html
    assert 'src="2013-10-07_2013-10-11/equity_drawdown.png"' in html
    assert (out.parent / "2013-10-07_2013-10-11" / "equity_drawdown.png").is_file()


def test_render_page_overwrites_a_previous_render(frames: Frames, tmp_path: Path) -> None:
    out = tmp_path / "2013-10-07.html"
    render_page("first", "", [], [], {"equity_drawdown": draw("equity_drawdown", frames)}, out)
    png = draw("regime_session_bars", frames)
    written = render_page("second", "", [], [], {"equity_drawdown": png}, out)
    assert "second" in out.read_text(encoding="utf-8")
    assert written[1].read_bytes() == png


@pytest.mark.parametrize("title", ["", "   "])
def test_render_page_rejects_an_empty_title(tmp_path: Path, title: str) -> None:
    with pytest.raises(ValueError, match="title"):
        render_page(title, "", [], [], {}, tmp_path / "page.html")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "", ".hidden", "/abs"])
def test_render_page_rejects_a_chart_name_with_a_path(
    frames: Frames, tmp_path: Path, name: str
) -> None:
    png = draw("equity_drawdown", frames.empty())
    with pytest.raises(ValueError, match="chart name"):
        render_page("t", "", [], [], {name: png}, tmp_path / "out" / "page.html")
    assert not (tmp_path / "out").exists()


def test_render_page_rejects_bytes_that_are_not_a_png(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        render_page("t", "", [], [], {"equity_drawdown": b"GIF89a"}, tmp_path / "page.html")
