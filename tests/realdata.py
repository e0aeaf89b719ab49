"""Real-data helpers for tests: bars and features built straight from ../shared/data files."""

from __future__ import annotations

import os
from datetime import date
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

from fbe_pipeline.market.aggressor import resolve_sides
from fbe_pipeline.market.bars import build_bars
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.market.sessions import session_for
from fbe_pipeline.market.sources.lean import (
    read_lean_minute_bars,
    read_lean_quotes,
    read_lean_trades,
)

DATA = Path(
    os.environ.get("FBE_SAMPLE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
)
DAYS = [date(2013, 10, d) for d in (7, 8, 9, 10, 11)]


def require_data() -> Path:
    """The sample data directory, or skip the test with the reason."""
    if not (DATA / "lean").is_dir():
        pytest.skip(f"real sample data not found at {DATA} (set FBE_SAMPLE_DATA)")
    return DATA


@lru_cache(maxsize=16)
def lean_ticks(symbol: str, day: date) -> pd.DataFrame:
    """Session-agnostic raw ticks of a Lean equity day with aggressor sides resolved."""
    root = require_data()
    path = root / "lean" / symbol.lower() / "tick" / f"{day:%Y%m%d}_trade.zip"
    ticks = read_lean_trades(path, symbol, "America/New_York", 10_000.0)
    quotes_path = root / "lean" / symbol.lower() / "tick" / f"{day:%Y%m%d}_quote.zip"
    quotes = (
        read_lean_quotes(quotes_path, symbol, "America/New_York", 10_000.0)
        if quotes_path.exists()
        else None
    )
    return resolve_sides(ticks, quotes)


def session(symbol: str, day: date) -> tuple[int, int]:
    """Session bounds (ns UTC) of a configured instrument."""
    bounds = session_for(get_instrument(symbol), day)
    assert bounds is not None
    return bounds


@lru_cache(maxsize=16)
def lean_bars(symbol: str, day: date) -> pd.DataFrame:
    """Our 1-minute bars of a Lean equity day's regular session."""
    open_ns, close_ns = session(symbol, day)
    return build_bars(lean_ticks(symbol, day), symbol, pd.Timestamp(day), open_ns, close_ns)


def lean_reference(symbol: str, day: date) -> pd.DataFrame:
    """Lean's own minute bars of the day."""
    root = require_data()
    path = root / "lean" / symbol.lower() / "minute" / f"{day:%Y%m%d}_trade.zip"
    return read_lean_minute_bars(path, symbol, "America/New_York", 10_000.0)


def sample_lanes() -> list[object]:
    """Lanes of the sample instruments over their sample sessions (no store needed)."""
    from assets import make_lane

    spans = {
        "SPY": (DAYS[0], DAYS[-1]),
        "BAC": (DAYS[0], DAYS[-1]),
        "GC": (date(2013, 10, 7), date(2013, 10, 9)),
        "ES": (date(2023, 12, 26), date(2023, 12, 26)),
        "BTCUSDT": (date(2020, 2, 22), date(2020, 2, 22)),
    }
    return [make_lane(get_instrument(s), first, last) for s, (first, last) in spans.items()]
