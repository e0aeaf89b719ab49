"""Tests of instrument lot size / currency metadata and of tick and lot size inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fbe_pipeline.live.replay import read_ticks
from fbe_pipeline.market.ingest import read_source
from fbe_pipeline.market.instruments import (
    Instrument,
    InstrumentError,
    get_instrument,
    load_instruments,
    register_instrument,
)
from fbe_pipeline.market.tick_size import MIN_DISTINCT, infer_lot_size, infer_tick_size

TARDIS_TRADES = "tardis/tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
TARDIS_QUOTES = "tardis/tardis_binance-futures_BTCUSDT_quotes_2020-02-22.csv"
BASE: dict[str, object] = {
    "symbol": "TEST",
    "calendar": "XNYS",
    "tz": "America/New_York",
    "tick_size": 0.01,
}


def _lean_trades(root: Path, symbol: str) -> pd.DataFrame:
    """All sample days of a Lean trade-tick symbol, through the readers of ``fbe load``."""
    files = sorted((root / "lean" / symbol.lower() / "tick").glob("*_trade.zip"))
    assert files, f"no Lean trade files for {symbol} under {root}"
    return read_ticks("lean-trades", files, get_instrument(symbol))


# --- Instrument: lot size and currency ---------------------------------------------------------


def test_lot_size_defaults_to_one_and_shipped_instruments_load_without_it(fbe_home: Path) -> None:
    assert Instrument(**BASE).lot_size == 1.0  # type: ignore[arg-type]
    shipped = load_instruments()
    assert {i.lot_size for i in shipped.values()} == {1.0}
    assert shipped["BTCUSDT"].currency == "USDT"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lot_size": 0.0}, "lot_size must be > 0 and finite"),
        ({"lot_size": -1.0}, "lot_size must be > 0 and finite"),
        ({"lot_size": float("nan")}, "lot_size must be > 0 and finite"),
        ({"lot_size": float("inf")}, "lot_size must be > 0 and finite"),
        ({"tick_size": float("inf")}, "tick_size must be > 0 and finite"),
        ({"currency": "usd"}, "invalid currency 'usd'"),
        ({"currency": ""}, "invalid currency ''"),
        ({"currency": "US-D"}, "invalid currency 'US-D'"),
        ({"currency": "ABCDEFGHI"}, "invalid currency 'ABCDEFGHI'"),
    ],
    ids=[
        "zero-lot",
        "negative-lot",
        "nan-lot",
        "inf-lot",
        "inf-tick",
        "lower-case-currency",
        "empty-currency",
        "punctuated-currency",
        "13-char-currency",
    ],
)
def test_invalid_lot_size_or_currency_raises_instrument_error(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InstrumentError, match=message):
        Instrument(**{**BASE, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["USD", "USDT", "INR", "FDUSD", "ABCDEFGH"])
def test_quote_currency_codes_up_to_eight_characters_are_accepted(currency: str) -> None:
    assert Instrument(**{**BASE, "currency": currency}).currency == currency  # type: ignore[arg-type]


def test_lot_size_and_currency_round_trip_through_the_registry(fbe_home: Path) -> None:
    inst = Instrument(
        symbol="XRPETH",
        calendar="24/7",
        tz="UTC",
        tick_size=0.0001,
        lot_size=0.001,
        currency="ETH",
        description="XRP quoted in ETH",
    )

    register_instrument(inst)

    doc = yaml.safe_load((fbe_home / "instruments.yaml").read_text())
    assert doc["instruments"] == [inst.to_yaml_dict()]
    assert list(doc["instruments"][0])[:6] == [
        "symbol",
        "calendar",
        "tz",
        "tick_size",
        "lot_size",
        "currency",
    ]
    assert (doc["instruments"][0]["lot_size"], doc["instruments"][0]["currency"]) == (0.001, "ETH")
    assert get_instrument("XRPETH") == inst


def test_default_lot_size_is_written_like_the_default_currency(tmp_path: Path) -> None:
    # Defaults are written out (currency USD always was); only empty values are omitted.
    local = tmp_path / "instruments.yaml"
    inst = Instrument(**BASE)  # type: ignore[arg-type]
    register_instrument(inst, local_file=local)
    entry = yaml.safe_load(local.read_text())["instruments"][0]
    assert (entry["lot_size"], entry["currency"]) == (1.0, "USD")
    assert load_instruments(local)["TEST"] == inst


def test_registry_entry_without_lot_size_loads_with_the_default(tmp_path: Path) -> None:
    local = tmp_path / "instruments.yaml"
    local.write_text(yaml.safe_dump({"instruments": [{**BASE, "currency": "INR"}]}))
    loaded = load_instruments(local)["TEST"]
    assert (loaded.lot_size, loaded.currency) == (1.0, "INR")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"lot_size": "ten"}, "TEST: lot_size must be a number, got 'ten'"),
        ({"lot_size": None}, "TEST: lot_size must be a number, got None"),
        ({"lot_size": 0}, "TEST: lot_size must be > 0"),
        ({"tick_size": "a cent"}, "TEST: tick_size must be a number"),
        ({"currency": "usdt"}, "invalid currency 'usdt'"),
    ],
    ids=["text-lot", "null-lot", "zero-lot", "text-tick", "lower-case-currency"],
)
def test_bad_lot_size_or_currency_in_registry_file_raises_on_load(
    tmp_path: Path, entry: dict[str, object], message: str
) -> None:
    local = tmp_path / "instruments.yaml"
    local.write_text(yaml.safe_dump({"instruments": [{**BASE, **entry}]}))
    with pytest.raises(InstrumentError, match=message):
        load_instruments(local)


# --- tick / lot size inference: hand-made cases ------------------------------------------------


# Float literals are the nearest float64 to the decimal, as a CSV reader would produce.
XRP_ETH = np.array(
    [
        [0.0014, 0.0015, 0.0021, 0.0017, 0.0016, 0.0018, 0.0019, 0.0020, 0.0022],
        [0.0013, 0.0012, 0.0023, 0.0024, 0.0011, 0.0025, 0.0026, 0.0014, 0.0015],
    ]
).ravel()


def test_low_priced_cross_infers_its_fine_tick() -> None:
    assert infer_tick_size(XRP_ETH) == 0.0001
    assert infer_tick_size(pd.Series(XRP_ETH)) == 0.0001


def test_float_noise_does_not_make_the_tick_finer() -> None:
    # Running sums of 0.1 carry float64 noise (0.1 + 0.2 == 0.30000000000000004).
    noisy = 100.0 + np.cumsum(np.full(40, 0.1))
    assert not np.all(noisy == np.round(noisy, 1))
    assert infer_tick_size(noisy) == 0.1
    assert infer_tick_size(np.append(noisy, 0.1 + 0.2)) == 0.1


@pytest.mark.parametrize(
    ("prices", "expected"),
    [
        (np.arange(100.0, 130.0), 1.0),
        (38_000.0 + 5.0 * np.arange(20), 5.0),  # Nikkei 225 futures trade in 5s
        (np.append(38_000.0 + 5.0 * np.arange(20), 38_001.0), 1.0),
        (4_800.0 + 0.25 * np.arange(20), 0.25),  # E-mini S&P 500
        (100.0 + 0.02 * np.arange(20), 0.02),  # MiFID II tick table
        (22_000.0 + 0.05 * np.arange(20), 0.05),  # NSE index futures
    ],
    ids=["integers", "fives", "fives-and-one-odd", "quarters", "two-cents", "nickels"],
)
def test_tick_is_the_largest_candidate_dividing_every_price(
    prices: np.ndarray, expected: float
) -> None:
    assert infer_tick_size(prices) == expected


def test_one_off_grid_print_among_a_million_makes_the_tick_finer() -> None:
    rng = np.random.default_rng(7)
    prices = 9_000.0 + rng.integers(0, 200_000, 1_000_000) * 0.01
    assert infer_tick_size(prices) == 0.01
    prices[123_456] = 9_000.005  # a half-penny print
    assert infer_tick_size(prices) == 0.005


def test_nan_inf_and_non_positive_values_are_ignored() -> None:
    dirty = np.concatenate([XRP_ETH, [np.nan, np.inf, -np.inf, 0.0, -0.0013, 0.123456789]])
    assert infer_tick_size(dirty[:-1]) == 0.0001
    assert infer_tick_size(dirty) == 1e-9  # but a positive finite value always counts


def test_too_few_distinct_prices_raise_and_say_to_pass_tick_size() -> None:
    prices = 100.0 + 0.01 * np.arange(MIN_DISTINCT - 1)
    repeated = np.tile(prices, 1_000)
    with pytest.raises(ValueError, match=r"only 15 distinct price\(s\).*pass --tick-size"):
        infer_tick_size(repeated)
    assert infer_tick_size(repeated, min_distinct=MIN_DISTINCT - 1) == 0.01


def test_noisy_duplicates_do_not_count_as_distinct_prices() -> None:
    prices = 100.0 + 0.1 * np.arange(10)
    with pytest.raises(ValueError, match="only 10 distinct"):
        infer_tick_size(np.concatenate([prices, prices + 1e-13]))


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        (np.array([np.nan, np.inf, -1.0, 0.0]), "no finite positive prices.*--tick-size"),
        (np.array([], dtype=np.float64), "no finite positive prices"),
        (100.0 + np.arange(20) / 3.0, "on no decimal grid.*--tick-size"),
    ],
    ids=["nothing-usable", "empty", "computed-thirds"],
)
def test_unusable_prices_raise_value_error(prices: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        infer_tick_size(prices)


def test_lot_size_of_fractional_coin_amounts() -> None:
    sizes = np.array(
        [
            [0.132, 0.412, 0.001, 0.5, 1.25, 2.0, 0.07, 0.333],
            [3.141, 0.02, 0.9, 0.011, 5.0, 0.2, 7.0, 0.6],
        ]
    ).ravel()
    assert infer_lot_size(sizes) == 0.001
    with pytest.raises(ValueError, match="pass --lot-size"):
        infer_lot_size(sizes[:5])


# --- tick / lot size inference: real data ------------------------------------------------------


def test_binance_futures_btcusdt_trades_are_on_the_cent_and_millibitcoin_grid(
    sample_data: Path,
) -> None:
    trades = pd.read_csv(sample_data / TARDIS_TRADES)
    # Not a coarser grid in disguise: odd cents are common in the prices (about 47 %).
    assert (np.rint(trades["price"] * 100) % 2 == 1).mean() > 0.4
    assert infer_tick_size(trades["price"]) == 0.01  # Binance's BTCUSDT tick in 2020
    assert infer_lot_size(trades["amount"]) == 0.001  # and its quantity step
    ticks = read_ticks("tardis-trades", [sample_data / TARDIS_TRADES], get_instrument("BTCUSDT"))
    assert infer_tick_size(ticks["price"]) == 0.01


def test_binance_futures_btcusdt_quotes_give_the_same_grid(sample_data: Path) -> None:
    quotes = pd.read_csv(sample_data / TARDIS_QUOTES)
    assert infer_tick_size(quotes[["bid_price", "ask_price"]].to_numpy()) == 0.01
    assert infer_lot_size(quotes[["bid_amount", "ask_amount"]].to_numpy()) == 0.001


@pytest.mark.parametrize(
    ("symbol", "tick"),
    [("SPY", 0.01), ("BAC", 0.01), ("GC", 0.1)],
)
def test_lean_trades_give_the_configured_tick_and_unit_lots(
    sample_data: Path, fbe_home: Path, symbol: str, tick: float
) -> None:
    ticks = _lean_trades(sample_data, symbol)
    assert infer_tick_size(ticks["price"]) == tick == get_instrument(symbol).tick_size
    # Odd-lot share counts (equities) and single contracts (gold; zero sizes are ignored).
    assert infer_lot_size(ticks["size"]) == 1.0


def test_lean_bac_quotes_skip_absent_sides_and_show_round_lots(
    sample_data: Path, fbe_home: Path
) -> None:
    path = sample_data / "lean" / "bac" / "tick" / "20131007_quote.zip"
    quotes = read_source("lean-quotes", path, get_instrument("BAC"))["quotes"]
    prices = quotes[["bid_px", "ask_px"]].to_numpy()
    assert np.isnan(prices).mean() == pytest.approx(0.5, abs=0.01)  # one side per row
    assert infer_tick_size(prices) == 0.01
    # Displayed quote sizes are whole round lots of 100 shares, unlike trade sizes.
    assert infer_lot_size(quotes[["bid_sz", "ask_sz"]].to_numpy()) == 100.0
