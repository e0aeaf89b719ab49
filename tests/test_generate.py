"""The scale benchmarks' synthetic data (``benchmarks/generate.py``): the same arguments give
the same bytes, candles are consistent 1-minute OHLCV bars on the instrument's tick inside its
sessions, and ``fbe load bars-csv`` stores every candle."""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fbe_pipeline.cli import app
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.market.sessions import session_table
from fbe_pipeline.storage.store import LocalRawStore

FIRST = date(2024, 1, 2)


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """``benchmarks/generate.py`` (not a package) imported by path."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generate.py"
    spec = importlib.util.spec_from_file_location("bench_generate", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.*"))}


def test_trades_are_the_same_bytes_twice(gen: ModuleType, tmp_path: Path) -> None:
    for out in ("a", "b"):
        assert gen.generate(tmp_path / out, ["SYN1", "SYN2"], 2, FIRST, 500) == 4
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(first) == 4
    assert first == second


@pytest.mark.parametrize("calendar", ["XNYS", "XBOM"])
def test_candles_are_the_same_bytes_twice(gen: ModuleType, tmp_path: Path, calendar: str) -> None:
    for out in ("a", "b"):
        assert gen.generate_candles(tmp_path / out, ["SYMA", "SYMB"], 2, FIRST, calendar) == 4
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(first) == 4
    assert first == second
    # Another symbol's data does not change this one's.
    gen.generate_candles(tmp_path / "c", ["SYMA"], 2, FIRST, calendar)
    assert _files(tmp_path / "c") == {k: v for k, v in first.items() if k.startswith("SYMA")}


@pytest.mark.parametrize("calendar", ["XNYS", "XBOM"])
def test_candles_are_consistent_on_the_tick_and_inside_the_sessions(
    gen: ModuleType, tmp_path: Path, calendar: str
) -> None:
    market = gen.CANDLE_MARKETS[calendar]
    gen.generate_candles(tmp_path, ["SYMA"], 2, FIRST, calendar)
    instrument = Instrument(symbol="SYMA", calendar=calendar, tz=market.tz, tick_size=market.tick)
    sessions = session_table(instrument, FIRST, date(2024, 1, 31)).head(2)
    files = sorted((tmp_path / "SYMA").glob("*.csv"))
    assert [f.stem for f in files] == [f"{d:%Y%m%d}" for d in sessions["trading_date"]]
    for path, row in zip(files, sessions.itertuples(index=False), strict=True):
        text = path.read_text()
        assert text.splitlines()[0] == "date,time,open,high,low,close,volume"
        frame = pd.read_csv(path, dtype={"time": str})
        local = pd.to_datetime(
            frame["date"].astype(str) + " " + frame["time"], format="%Y%m%d %H:%M"
        ).dt.tz_localize(market.tz)
        ts = local.dt.tz_convert("UTC").astype("int64").to_numpy()
        minutes = (row.close_ns - row.open_ns) // 60_000_000_000
        assert len(frame) == minutes
        assert ts[0] == row.open_ns
        assert ts[-1] == row.close_ns - 60_000_000_000
        assert (np.diff(ts) == 60_000_000_000).all()
        o, h, lo, c = (frame[k].to_numpy() for k in ("open", "high", "low", "close"))
        assert (lo > 0).all()
        assert (lo <= np.minimum(o, c)).all()
        assert (h >= np.maximum(o, c)).all()
        assert (o[1:] == c[:-1]).all()
        for prices in (o, h, lo, c):
            ticks = prices / market.tick
            assert np.allclose(ticks, np.round(ticks), rtol=0, atol=1e-6)
        assert frame["volume"].dtype == np.int64
        assert (frame["volume"] >= 1).all()
        # Busier at the open and the close than at midday (U-shaped activity).
        third = len(frame) // 3
        volume = frame["volume"].to_numpy()
        assert volume[third : 2 * third].mean() < volume[:third].mean()
        assert volume[third : 2 * third].mean() < volume[2 * third :].mean()


def test_candles_load_with_fbe_load_bars_csv(
    gen: ModuleType, tmp_path: Path, fbe_home: Path
) -> None:
    gen.generate_candles(tmp_path / "data", ["NSE1"], 2, FIRST, "XBOM")
    files = sorted((tmp_path / "data" / "NSE1").glob("*.csv"))
    args = ["--symbol", "NSE1", "--calendar", "XBOM", "--tick-size", "0.05", "--lot-size", "1"]
    result = CliRunner().invoke(app, ["load", "bars-csv", *map(str, files), *args])
    assert result.exit_code == 0, result.output
    store = LocalRawStore(fbe_home / "raw")
    days = sorted(day for symbol, day in store.partitions("candles") if symbol == "NSE1")
    assert days == [date(2024, 1, 2), date(2024, 1, 3)]
    for day in days:
        candles = store.read_partition("candles", "NSE1", day)
        assert candles is not None
        # XBOM: 09:15-15:30 IST, 375 one-minute candles a session.
        assert len(candles) == 375
