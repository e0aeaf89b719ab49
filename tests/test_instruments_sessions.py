"""Tests of instruments as configuration and of sessions / trading dates (SPEC §1)."""

from __future__ import annotations

from datetime import date, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fbe_pipeline.market.instruments import (
    Instrument,
    InstrumentError,
    get_instrument,
    load_instruments,
    register_instrument,
)
from fbe_pipeline.market.sessions import assign_trading_dates, session_for, session_table


def _ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


def _utc(ns: int) -> pd.Timestamp:
    return pd.Timestamp(ns, tz="UTC")


# --- instruments -----------------------------------------------------------------------------


def test_shipped_instruments_include_spec_symbols_with_their_venues(fbe_home: Path) -> None:
    found = load_instruments()
    assert {"SPY", "BAC", "GC", "ES", "BTCUSDT", "NIFTY_FUT", "BANKNIFTY_FUT"} <= set(found)
    assert (found["SPY"].calendar, found["SPY"].tz) == ("XNYS", "America/New_York")
    assert (found["BTCUSDT"].calendar, found["BTCUSDT"].tz) == ("24/7", "UTC")
    assert (found["ES"].calendar, found["ES"].tz) == ("CMES", "America/Chicago")
    for sym in ("NIFTY_FUT", "BANKNIFTY_FUT"):
        inst = found[sym]
        assert (inst.calendar, inst.tz) == ("XBOM", "Asia/Kolkata")
        assert (inst.session_open, inst.session_close) == (time(9, 15), time(15, 30))
        assert inst.currency == "INR"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"calendar": "NOPE"}, "unknown exchange calendar 'NOPE'"),
        ({"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"tick_size": 0.0}, "tick_size must be > 0"),
        ({"tick_size": -0.01}, "tick_size must be > 0"),
        ({"tick_size": float("nan")}, "tick_size must be > 0"),
        ({"session_open": time(15, 30), "session_close": time(9, 15)}, "before session_close"),
        ({"session_open": time(9, 15), "session_close": time(9, 15)}, "before session_close"),
        ({"session_open": time(9, 15)}, "both session_open and session_close"),
        ({"symbol": "bad sym"}, "invalid symbol"),
    ],
    ids=[
        "bad-calendar",
        "bad-tz",
        "zero-tick",
        "negative-tick",
        "nan-tick",
        "open-after-close",
        "open-equals-close",
        "open-without-close",
        "bad-symbol",
    ],
)
def test_invalid_instrument_definition_raises_instrument_error(
    kwargs: dict[str, object], message: str
) -> None:
    base: dict[str, object] = {
        "symbol": "TEST",
        "calendar": "XNYS",
        "tz": "America/New_York",
        "tick_size": 0.01,
    }
    with pytest.raises(InstrumentError, match=message):
        Instrument(**{**base, **kwargs})  # type: ignore[arg-type]


def test_invalid_entry_in_local_instruments_file_raises_on_load(tmp_path: Path) -> None:
    local = tmp_path / "instruments.yaml"
    local.write_text(
        yaml.safe_dump(
            {"instruments": [{"symbol": "X1", "calendar": "XNYS", "tz": "UTC", "tick_size": -1}]}
        )
    )
    with pytest.raises(InstrumentError, match="tick_size must be > 0"):
        load_instruments(local)
    local.write_text(yaml.safe_dump({"instruments": [{"symbol": "X1", "calendar": "XNYS"}]}))
    with pytest.raises(InstrumentError, match="lacks field 'tz'"):
        load_instruments(local)


def test_unknown_symbol_error_tells_how_to_register(fbe_home: Path) -> None:
    with pytest.raises(InstrumentError, match=r"unknown symbol 'NOPE'.*--calendar"):
        get_instrument("NOPE")


def test_registered_instrument_is_written_to_fbe_home_and_found_on_reload(
    fbe_home: Path,
) -> None:
    inst = Instrument(
        symbol="RELIANCE",
        calendar="XBOM",
        tz="Asia/Kolkata",
        tick_size=0.05,
        currency="INR",
        session_open=time(9, 15),
        session_close=time(15, 30),
        session_tags=(("open", time(9, 15), time(10, 0)), ("rest", time(10, 0), time(0, 0))),
    )

    register_instrument(inst)

    local = fbe_home / "instruments.yaml"
    doc = yaml.safe_load(local.read_text())
    assert [e["symbol"] for e in doc["instruments"]] == ["RELIANCE"]
    assert get_instrument("RELIANCE") == inst
    assert load_instruments()["SPY"].calendar == "XNYS"  # shipped list still merged in


def test_registering_identical_instrument_again_is_a_no_op(fbe_home: Path) -> None:
    inst = Instrument(symbol="NEWCO", calendar="XNYS", tz="America/New_York", tick_size=0.01)
    register_instrument(inst)
    before = (fbe_home / "instruments.yaml").read_text()
    register_instrument(inst)
    assert (fbe_home / "instruments.yaml").read_text() == before


def test_conflicting_registration_raises_and_keeps_the_first(fbe_home: Path) -> None:
    register_instrument(
        Instrument(symbol="NEWCO", calendar="XNYS", tz="America/New_York", tick_size=0.01)
    )
    with pytest.raises(InstrumentError, match="NEWCO is already configured differently"):
        register_instrument(
            Instrument(symbol="NEWCO", calendar="CMES", tz="America/Chicago", tick_size=0.25)
        )
    assert get_instrument("NEWCO").calendar == "XNYS"


def test_registration_conflicting_with_a_shipped_instrument_raises(fbe_home: Path) -> None:
    with pytest.raises(InstrumentError, match="SPY is already configured differently"):
        register_instrument(
            Instrument(symbol="SPY", calendar="XNYS", tz="America/New_York", tick_size=0.05)
        )
    assert not (fbe_home / "instruments.yaml").exists()


# --- sessions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "day", "open_utc", "close_utc"),
    [
        ("SPY", date(2013, 10, 7), "2013-10-07 13:30", "2013-10-07 20:00"),
        ("ES", date(2023, 12, 26), "2023-12-25 23:00", "2023-12-26 23:00"),
        ("GC", date(2013, 10, 8), "2013-10-07 22:00", "2013-10-08 22:00"),
        ("BTCUSDT", date(2020, 2, 22), "2020-02-22 00:00", "2020-02-23 00:00"),
        ("NIFTY_FUT", date(2024, 1, 2), "2024-01-02 03:45", "2024-01-02 10:00"),
        ("BANKNIFTY_FUT", date(2024, 1, 2), "2024-01-02 03:45", "2024-01-02 10:00"),
    ],
)
def test_session_bounds_in_utc(
    fbe_home: Path, symbol: str, day: date, open_utc: str, close_utc: str
) -> None:
    bounds = session_for(get_instrument(symbol), day)
    assert bounds is not None
    assert (_utc(bounds[0]), _utc(bounds[1])) == (
        pd.Timestamp(open_utc, tz="UTC"),
        pd.Timestamp(close_utc, tz="UTC"),
    )


@pytest.mark.parametrize(
    ("symbol", "day"),
    [
        ("SPY", date(2013, 10, 12)),  # Saturday
        ("SPY", date(2013, 12, 25)),  # Christmas
        ("NIFTY_FUT", date(2024, 1, 6)),  # Saturday
        ("ES", date(2023, 12, 25)),  # CME closed on Christmas
    ],
)
def test_day_without_session_has_no_bounds(fbe_home: Path, symbol: str, day: date) -> None:
    assert session_for(get_instrument(symbol), day) is None


def test_session_table_lists_one_row_per_session_in_date_order(fbe_home: Path) -> None:
    table = session_table(get_instrument("SPY"), date(2013, 10, 7), date(2013, 10, 13))
    assert table["trading_date"].dt.date.tolist() == [date(2013, 10, d) for d in range(7, 12)]
    assert ((table["close_ns"] - table["open_ns"]) == 390 * 60 * 10**9).all()


def test_spy_pre_market_tick_gets_local_date_and_is_out_of_session(fbe_home: Path) -> None:
    ts = np.array(
        [
            _ns("2013-10-07 12:00"),  # 08:00 ET, pre-market
            _ns("2013-10-07 13:30"),  # 09:30 ET, the open
            _ns("2013-10-07 19:59:59.999"),  # last ns-ish before the close
            _ns("2013-10-07 20:00"),  # 16:00 ET, the close (excluded)
            _ns("2013-10-08 00:30"),  # 20:30 ET on 10-07, post-market after UTC midnight
        ],
        dtype=np.int64,
    )
    dates, in_session = assign_trading_dates(get_instrument("SPY"), ts)
    assert dates.tolist() == [date(2013, 10, 7)] * 5
    assert in_session.tolist() == [False, True, True, False, False]


def test_cme_evening_ticks_belong_to_next_trading_date(fbe_home: Path) -> None:
    ts = np.array(
        [
            _ns("2023-12-25 23:00"),  # 17:00 CT on Christmas: the 12-26 session opens
            _ns("2023-12-25 22:59:59"),  # Christmas, closed
            _ns("2013-10-07 21:59:59"),  # GC-style: still the 10-07 session
        ],
        dtype=np.int64,
    )
    dates, in_session = assign_trading_dates(get_instrument("ES"), ts)
    assert dates.tolist() == [date(2023, 12, 26), date(2023, 12, 25), date(2013, 10, 7)]
    assert in_session.tolist() == [True, False, True]


def test_crypto_trading_date_is_the_utc_date(fbe_home: Path) -> None:
    ts = np.array(
        [_ns("2020-02-22 23:59:59.999999999"), _ns("2020-02-23 00:00"), _ns("2020-02-22 00:00")],
        dtype=np.int64,
    )
    dates, in_session = assign_trading_dates(get_instrument("BTCUSDT"), ts)
    assert dates.tolist() == [date(2020, 2, 22), date(2020, 2, 23), date(2020, 2, 22)]
    assert in_session.all()


def test_assign_trading_dates_of_no_ticks_is_empty(fbe_home: Path) -> None:
    dates, in_session = assign_trading_dates(get_instrument("SPY"), np.array([], dtype=np.int64))
    assert dates.shape == (0,)
    assert in_session.shape == (0,)


def test_tick_during_multi_day_market_closure_gets_local_date(fbe_home: Path) -> None:
    ts = np.array([_ns("2001-09-13 15:00")], dtype=np.int64)
    dates, in_session = assign_trading_dates(get_instrument("SPY"), ts)
    assert dates.tolist() == [date(2001, 9, 13)]
    assert in_session.tolist() == [False]


def test_narrowed_session_on_dst_change_day_keeps_local_wall_clock_times() -> None:
    inst = Instrument(
        symbol="NY247",
        calendar="24/7",
        tz="America/New_York",
        tick_size=0.01,
        session_open=time(9, 30),
        session_close=time(16, 0),
    )
    bounds = session_for(inst, date(2013, 11, 3))
    assert bounds is not None
    local = [_utc(b).tz_convert("America/New_York") for b in bounds]
    assert [(t.hour, t.minute) for t in local] == [(9, 30), (16, 0)]
