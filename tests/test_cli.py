"""Tests of the ``fbe`` command line (load, load-sample, summary) with an isolated FBE_HOME."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fbe_pipeline.cli import app
from fbe_pipeline.storage.store import LocalRawStore

GOOD_CSV = (
    "timestamp,price,size,side\n"
    "2013-10-07T14:00:00Z,167.41,100,buy\n"
    "2013-10-07T14:00:01Z,167.42,200,sell\n"
)
BAD_CSV = "timestamp,price,size\n2013-10-07T14:00:00Z,-1.0,100\n"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _flat(text: str) -> str:
    """Output without whitespace: rich wraps long lines (and paths) at the console width."""
    return re.sub(r"\s+", "", text)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_load_with_unknown_format_exits_2_and_lists_formats(
    runner: CliRunner, fbe_home: Path, tmp_path: Path
) -> None:
    good = _write(tmp_path / "good.csv", GOOD_CSV)
    result = runner.invoke(app, ["load", "xlsx", str(good), "--symbol", "SPY"])
    assert result.exit_code == 2
    assert _flat("unknown format 'xlsx'") in _flat(result.output)
    assert "lean-trades" in result.output
    assert not (fbe_home / "raw" / "manifest.jsonl").exists()


def test_load_of_good_csv_writes_to_the_raw_store_in_fbe_home(
    runner: CliRunner, fbe_home: Path, tmp_path: Path
) -> None:
    good = _write(tmp_path / "good.csv", GOOD_CSV)
    result = runner.invoke(app, ["load", "csv", str(good), "--symbol", "SPY"])
    assert result.exit_code == 0, result.output
    assert _flat("good.csv: 2 rows, 1 new objects, 0 already stored") in _flat(result.output)
    [entry] = LocalRawStore(fbe_home / "raw").manifest()
    assert entry.key.startswith("ticks/SPY/2013/10/07/good-")
    assert entry.rows == 2

    again = runner.invoke(app, ["load", "csv", str(good), "--symbol", "SPY"])
    assert again.exit_code == 0
    assert _flat("0 new objects, 1 already stored") in _flat(again.output)
    assert len(LocalRawStore(fbe_home / "raw").manifest()) == 1


def test_load_with_bad_file_exits_1_names_it_and_still_loads_the_good_file(
    runner: CliRunner, fbe_home: Path, tmp_path: Path
) -> None:
    bad = _write(tmp_path / "bad_prices.csv", BAD_CSV)
    good = _write(tmp_path / "good.csv", GOOD_CSV)

    result = runner.invoke(app, ["load", "csv", str(bad), str(good), "--symbol", "SPY"])

    assert result.exit_code == 1
    flat = _flat(result.output)
    assert _flat(str(bad)) in flat
    assert "non-positiveprice" in flat
    assert "1of2fileswerenotloaded" in flat
    store = LocalRawStore(fbe_home / "raw")
    assert [e.source_file for e in store.manifest()] == ["good.csv"]
    assert store.manifest()[0].rows == 2


NEW_XNYS = ["load", "csv", "--symbol", "NEWSYM", "--calendar", "XNYS"]


def test_load_with_new_symbol_and_calendar_registers_and_loads(
    runner: CliRunner, fbe_home: Path, tmp_path: Path
) -> None:
    good = _write(tmp_path / "good.csv", GOOD_CSV)

    result = runner.invoke(
        app,
        [*NEW_XNYS, str(good), "--tick-size", "0.01", "--lot-size", "1"],
    )

    assert result.exit_code == 0, result.output
    assert _flat("registered new instrument NEWSYM") in _flat(result.output)
    doc = yaml.safe_load((fbe_home / "instruments.yaml").read_text())
    [entry] = doc["instruments"]
    assert entry["symbol"] == "NEWSYM"
    assert entry["calendar"] == "XNYS"
    assert entry["tz"] == "America/New_York"
    assert entry["tick_size"] == 0.01
    keys = [e.key for e in LocalRawStore(fbe_home / "raw").manifest()]
    assert len(keys) == 1
    assert keys[0].startswith("ticks/NEWSYM/2013/10/07/")

    # Now known: loading again needs no --calendar.
    again = runner.invoke(app, ["load", "csv", str(good), "--symbol", "NEWSYM"])
    assert again.exit_code == 0, again.output
    assert _flat("1 already stored") in _flat(again.output)


def test_a_new_symbol_takes_tick_and_lot_size_from_the_data_and_currency_as_told(
    runner: CliRunner, fbe_home: Path, sample_data: Path
) -> None:
    """Issue 14 item 7: real Binance trades (ticks of 0.01, quantities of 0.001) registered
    as a new 24/7 symbol quoted in USDT, not with a guessed tick of 0.01 and USD."""
    trades = sample_data / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
    new_btc = ["load", "tardis-trades", str(trades), "--symbol", "BTCNEW", "--calendar", "24/7"]
    refused = runner.invoke(app, new_btc)
    assert refused.exit_code == 2
    assert "--currency" in refused.output
    assert not (fbe_home / "instruments.yaml").exists()

    result = runner.invoke(
        app,
        [*new_btc, "--currency", "USDT"],
    )
    assert result.exit_code == 0, result.output
    [entry] = yaml.safe_load((fbe_home / "instruments.yaml").read_text())["instruments"]
    assert (entry["tick_size"], entry["lot_size"], entry["currency"]) == (0.01, 0.001, "USDT")


def test_a_new_symbol_with_too_few_prices_to_infer_a_tick_exits_2(
    runner: CliRunner, fbe_home: Path, tmp_path: Path
) -> None:
    good = _write(tmp_path / "good.csv", GOOD_CSV)
    result = runner.invoke(
        app, ["load", "csv", str(good), "--symbol", "NEWSYM", "--calendar", "XNYS"]
    )
    assert result.exit_code == 2
    assert "--tick-size" in result.output
    assert not (fbe_home / "instruments.yaml").exists()
    assert not (fbe_home / "raw" / "manifest.jsonl").exists()


def test_load_with_unknown_symbol_without_calendar_exits_2_mentioning_calendar(
    runner: CliRunner, fbe_home: Path, tmp_path: Path
) -> None:
    good = _write(tmp_path / "good.csv", GOOD_CSV)
    result = runner.invoke(app, ["load", "csv", str(good), "--symbol", "NEWSYM"])
    assert result.exit_code == 2
    assert "NEWSYM" in result.output
    assert "--calendar" in result.output
    assert not (fbe_home / "instruments.yaml").exists()
    assert not (fbe_home / "raw" / "manifest.jsonl").exists()


def test_load_with_invalid_new_instrument_exits_2_and_registers_nothing(
    runner: CliRunner, fbe_home: Path, tmp_path: Path
) -> None:
    good = _write(tmp_path / "good.csv", GOOD_CSV)
    result = runner.invoke(
        app,
        [*NEW_XNYS, str(good), "--tick-size", "0", "--lot-size", "1"],
    )
    assert result.exit_code == 2
    assert _flat("tick_size must be > 0") in _flat(result.output)
    assert not (fbe_home / "instruments.yaml").exists()


def test_load_with_unknown_calendar_exits_2_with_clear_message(
    runner: CliRunner, fbe_home: Path, tmp_path: Path
) -> None:
    good = _write(tmp_path / "good.csv", GOOD_CSV)
    result = runner.invoke(
        app, ["load", "csv", str(good), "--symbol", "NEWSYM", "--calendar", "NOPE"]
    )
    assert result.exit_code == 2
    assert "NOPE" in result.output


@pytest.mark.parametrize("make_dir", [False, True], ids=["missing-dir", "empty-dir"])
def test_load_sample_without_sample_data_exits_2_naming_fbe_sample_data(
    runner: CliRunner,
    fbe_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_dir: bool,
) -> None:
    data = tmp_path / "no_data_here"
    if make_dir:
        data.mkdir()
    monkeypatch.setenv("FBE_SAMPLE_DATA", str(data))

    result = runner.invoke(app, ["load-sample"])

    assert result.exit_code == 2
    assert "FBE_SAMPLE_DATA" in result.output
    assert _flat(str(data)) in _flat(result.output)
    assert not (fbe_home / "raw" / "manifest.jsonl").exists()


def test_summary_before_any_materialization_exits_1_with_hint(
    runner: CliRunner, fbe_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # summary sets DAGSTER_HOME in os.environ; let monkeypatch restore it afterwards.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_placeholder"))
    result = runner.invoke(app, ["summary"])
    assert result.exit_code == 1
    assert _flat("nothing materialized yet: run `fbe materialize`") in _flat(result.output)


def test_materialize_skips_a_day_without_session_with_a_message(
    runner: CliRunner, fbe_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_placeholder"))
    saturday = _write(tmp_path / "sat.csv", "timestamp,price,size\n2013-10-12T14:00:00Z,167.0,5\n")
    assert runner.invoke(app, ["load", "csv", str(saturday), "--symbol", "SPY"]).exit_code == 0
    result = runner.invoke(app, ["materialize"])
    assert result.exit_code == 0, result.output
    assert _flat("skipped SPY 2013-10-12: no SPY session that day") in _flat(result.output)


def test_load_with_a_calendar_conflicting_with_a_known_symbol_exits_2(
    runner: CliRunner, fbe_home: Path, tmp_path: Path
) -> None:
    good = _write(tmp_path / "good.csv", GOOD_CSV)
    result = runner.invoke(app, ["load", "csv", str(good), "--symbol", "SPY", "--calendar", "CMES"])
    assert result.exit_code == 2
    assert _flat("SPY is configured with calendar XNYS, not CMES") in _flat(result.output)
    assert not (fbe_home / "raw" / "manifest.jsonl").exists()


def test_materialize_with_an_empty_store_exits_1_with_a_hint(
    runner: CliRunner, fbe_home: Path
) -> None:
    result = runner.invoke(app, ["materialize"])
    assert result.exit_code == 1
    assert _flat("no raw ticks or candles in the store: load data first") in _flat(result.output)


def test_load_vendor_candles_stores_them_write_once(
    runner: CliRunner, fbe_home: Path, tmp_path: Path, sample_data: Path
) -> None:
    from datetime import date

    import pandas as pd

    from fbe_pipeline.market.sources.lean import read_lean_minute_bars

    real = read_lean_minute_bars(
        sample_data / "lean/spy/minute/20131007_trade.zip", "SPY", "America/New_York", 10_000.0
    )
    local = pd.to_datetime(real["ts"], utc=True).dt.tz_convert("America/New_York")
    # A broker's export: separate date and time columns, naive local time, close-labelled.
    vendor = pd.DataFrame(
        {
            "Date": (local + pd.Timedelta(minutes=1)).dt.strftime("%Y%m%d"),
            "Time": (local + pd.Timedelta(minutes=1)).dt.strftime("%H:%M"),
            "Open": real["open"],
            "High": real["high"],
            "Low": real["low"],
            "Close": real["close"],
            "Volume": real["volume"],
        }
    )
    path = tmp_path / "spy_1min.csv"
    vendor.to_csv(path, index=False)

    args = ["load", "bars-csv", str(path), "--symbol", "SPY", "--label", "close"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"{len(real)}rows,1newobjects" in _flat(first.output)
    store = LocalRawStore(fbe_home / "raw")
    assert store.partitions("candles") == [("SPY", date(2013, 10, 7))]
    stored = store.read_partition("candles", "SPY", date(2013, 10, 7))
    assert stored is not None
    assert stored["ts"].tolist() == real["ts"].tolist()
    assert stored["close"].tolist() == real["close"].tolist()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1alreadystored" in _flat(again.output)

    bad = runner.invoke(app, [*args[:-1], "middle"])
    assert bad.exit_code == 2 and "label" in bad.output
