"""The pure trading logic of paper execution (SPEC §3, §5): sizing, tick rounding, paper fills on
real Tardis BTCUSDT trades, and exit management that reproduces the backtest trade for trade.

Fill expectations are derived from the raw CSV with the ``csv`` module (not through
:class:`~fbe_pipeline.execution.broker.FrameMarketData`); exit expectations come from
:func:`fbe_pipeline.research.backtest.run_backtest` on 1-minute bars built by the pipeline.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbe_pipeline.execution.broker import (
    Fill,
    FrameMarketData,
    OrderIntent,
    PaperBroker,
    Rejection,
    expected_slippage,
)
from fbe_pipeline.execution.exits import (
    BAR_NS,
    OpenPosition,
    advance,
    mark_to_market,
    on_bar_close,
)
from fbe_pipeline.execution.sizing import order_quantity, round_to_tick
from fbe_pipeline.market.instruments import Instrument, get_instrument
from fbe_pipeline.market.sources.tardis import read_tardis_trades
from fbe_pipeline.pipeline import (
    session_backtest,
    session_bars,
    session_features,
    session_regimes,
    session_scores,
    session_signals,
    session_ticks,
)
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.slippage import seeded_uniform, slippage

SYMBOL = "BTCUSDT"
DAY = date(2020, 2, 22)
TRADES_CSV = "tardis/tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
MS = 1_000_000


def on_grid(price: float, tick: float) -> bool:
    """``price`` is the float nearest to an integer multiple of ``tick`` (decimal arithmetic)."""
    k = round(price / tick)
    return price == float(Decimal(k) * Decimal(repr(tick)))


# --- sizing ----------------------------------------------------------------------------------


def qty(**overrides: object) -> float:
    """:func:`order_quantity` with defaults: fixed risk 1 % of 10,000, entry 100, stop 98."""
    args: dict[str, object] = {
        "method": "fixed_risk",
        "fixed_qty": 0.0,
        "risk_fraction": 0.01,
        "equity": 10_000.0,
        "entry": 100.0,
        "stop": 98.0,
        "lot_size": 1.0,
        "max_notional": math.inf,
    }
    args.update(overrides)
    return order_quantity(**args)  # type: ignore[arg-type]


def test_fixed_qty_is_rounded_down_to_the_lot() -> None:
    assert qty(method="fixed_qty", fixed_qty=7.0) == 7.0
    assert qty(method="fixed_qty", fixed_qty=2.5) == 2.0
    assert qty(method="fixed_qty", fixed_qty=25.0, lot_size=10.0) == 20.0
    # 0.3 / 0.1 is 2.9999999999999996 in floats: still three lots, and exactly 0.3.
    assert qty(method="fixed_qty", fixed_qty=0.3, lot_size=0.1) == 0.3
    assert qty(method="fixed_qty", fixed_qty=0.1 + 0.2, lot_size=0.1) == 0.3
    # fixed_qty ignores the stop: entry == stop is fine.
    assert qty(method="fixed_qty", fixed_qty=3.0, stop=100.0) == 3.0


def test_fixed_risk_risks_the_fraction_of_equity_at_the_stop() -> None:
    # 10,000 * 1 % / |100 - 98| = 50 units: a stop-out loses 100 = 1 % of equity.
    assert qty() == 50.0
    assert qty(stop=102.0) == 50.0  # a short: stop above the entry, same distance
    # 100 / 3 = 33.33 -> 33 lots of 1, 3 lots of 10 (always down: never more than the budget).
    assert qty(stop=97.0) == 33.0
    assert qty(stop=97.0, lot_size=10.0) == 30.0
    # BTCUSDT-like: 10,000 * 0.5 % / 11.93 = 4.1911... -> 4.191 with a 0.001 lot.
    got = qty(risk_fraction=0.005, entry=9700.0, stop=9711.93, lot_size=0.001)
    assert got == 4.191
    assert got * abs(9700.0 - 9711.93) <= 50.0
    assert qty(equity=0.0) == 0.0


def test_notional_cap_rounds_down_to_the_lot() -> None:
    # 50 units * 100 = 5,000 > 1,234 -> 12 units (1,200 <= 1,234).
    assert qty(max_notional=1234.0) == 12.0
    assert qty(max_notional=1234.0, lot_size=5.0) == 10.0
    assert qty(max_notional=5000.0) == 50.0  # exactly at the cap: allowed
    assert qty(max_notional=1e9) == 50.0  # cap not binding
    got = qty(method="fixed_qty", fixed_qty=1.0, entry=9700.0, max_notional=5000.0, lot_size=0.001)
    assert got == 0.515 and got * 9700.0 <= 5000.0


def test_size_zero_when_below_one_lot() -> None:
    assert qty(method="fixed_qty", fixed_qty=0.5) == 0.0
    assert qty(lot_size=100.0) == 0.0  # 50 units of budget, lots of 100
    assert qty(max_notional=99.0) == 0.0  # one unit at 100 is over the cap


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"method": "kelly"}, "method"),
        ({"equity": -1.0}, "equity"),
        ({"equity": math.nan}, "equity"),
        ({"lot_size": 0.0}, "lot_size"),
        ({"lot_size": -1.0}, "lot_size"),
        ({"entry": 0.0}, "entry"),
        ({"max_notional": 0.0}, "max_notional"),
        ({"max_notional": math.nan}, "max_notional"),
        ({"stop": 100.0}, "entry != stop"),
        ({"stop": math.nan}, "stop"),
        ({"risk_fraction": 0.0}, "risk_fraction"),
        ({"risk_fraction": 1.5}, "risk_fraction"),
        ({"method": "fixed_qty", "fixed_qty": -1.0}, "fixed_qty"),
        ({"method": "fixed_qty", "fixed_qty": math.inf}, "fixed_qty"),
    ],
)
def test_invalid_sizing_inputs_raise(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        qty(**overrides)


# --- tick rounding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "kind", "want"),
    [
        (1, "entry", 100.01),  # a long buys: pays up
        (-1, "entry", 100.0),  # a short sells: gets less
        (1, "exit", 100.0),  # closing a long sells: gets less
        (-1, "exit", 100.01),  # closing a short buys: pays up
        (1, "stop", 100.0),  # long stop: away from the entry, below
        (-1, "stop", 100.01),  # short stop: away from the entry, above
        (1, "target", 100.0),  # long target: toward the entry, never a better limit
        (-1, "target", 100.01),
    ],
)
def test_tick_rounding_direction(side: int, kind: str, want: float) -> None:
    assert round_to_tick(100.003, 0.01, side, kind) == want
    assert round_to_tick(100.007, 0.01, side, kind) == want
    # On the grid: never moved, whatever the side and kind.
    assert round_to_tick(100.01, 0.01, side, kind) == 100.01
    assert round_to_tick(9682.0, 0.01, side, kind) == 9682.0


@pytest.mark.parametrize("side", [1, -1])
@pytest.mark.parametrize("kind", ["entry", "exit", "stop", "target"])
def test_tick_rounding_ignores_float_artifacts(side: int, kind: str) -> None:
    assert round_to_tick(0.1 + 0.2, 0.1, side, kind) == 0.3  # 0.30000000000000004
    assert round_to_tick(0.3, 0.1, side, kind) == 0.3  # 0.3 / 0.1 = 2.9999999999999996
    assert round_to_tick(0.7, 0.1, side, kind) == 0.7
    assert round_to_tick(1.1 * 3, 1.1, side, kind) == 3.3  # 3.3000000000000003
    assert round_to_tick(4700.25, 0.25, side, kind) == 4700.25
    assert round_to_tick(22000.05, 0.05, side, kind) == 22000.05
    assert round_to_tick(9999.99, 0.01, side, kind) == 9999.99
    assert round_to_tick(-37.63, 0.01, side, kind) == -37.63  # negative prices (WTI 2020)


def test_tick_rounding_on_real_tick_sizes_is_adverse_and_within_a_tick() -> None:
    rng = np.random.default_rng(20200222)
    for tick in (0.01, 0.05, 0.1, 0.25):
        for price in rng.uniform(1.0, 50_000.0, 200):
            for side in (1, -1):
                for kind in ("entry", "exit", "stop", "target"):
                    got = round_to_tick(float(price), tick, side, kind)
                    assert on_grid(got, tick), (price, tick, got)
                    up = (side > 0) == (kind == "entry")
                    moved = got - price if up else price - got
                    assert -1e-9 <= moved < tick, (price, tick, side, kind, got)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((math.nan, 0.01, 1, "entry"), "price"),
        ((100.0, 0.0, 1, "entry"), "tick"),
        ((100.0, -0.01, 1, "entry"), "tick"),
        ((100.0, math.inf, 1, "entry"), "tick"),
        ((100.0, 0.01, 0, "entry"), "side"),
        ((100.0, 0.01, 1, "limit"), "kind"),
    ],
)
def test_invalid_tick_rounding_inputs_raise(
    args: tuple[float, float, int, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        round_to_tick(*args)


# --- the real session ------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """The BTCUSDT 2020-02-22 sample: raw trades, the pipeline's frames, the instrument."""

    instrument: Instrument
    raw: pd.DataFrame
    csv_trades: list[tuple[int, float]]
    bars: pd.DataFrame
    features: pd.DataFrame
    regimes: pd.DataFrame


@pytest.fixture(scope="module")
def btc(sample_data: Path) -> Session:
    """Trades and bars/features/regimes of the session, built by the pipeline's functions."""
    path = sample_data / TRADES_CSV
    if not path.exists():
        pytest.skip(f"{path} not found")
    instrument = get_instrument(SYMBOL)
    raw = read_tardis_trades(path, SYMBOL)
    with path.open(newline="") as fh:
        rows = [(int(r["timestamp"]), int(r["id"]), float(r["price"])) for r in csv.DictReader(fh)]
    # Tardis timestamps are µs; trades in (time, exchange trade id) order.
    csv_trades = [(us * 1000, price) for us, _, price in sorted(rows)]
    ticks, _ = session_ticks(raw, None, instrument, DAY)
    bars = session_bars(ticks, instrument, DAY)
    features = session_features(bars, DAY, None)
    regimes = session_regimes(features, instrument, DAY)
    return Session(instrument, raw, csv_trades, bars, features, regimes)


def signals_of(s: Session, cfg: ScoringConfig) -> pd.DataFrame:
    return session_signals(session_scores(s.features, cfg), cfg)


def intent_for(s: Session, sig: pd.Series, valid_for_ns: int = 60_000 * MS) -> OrderIntent:
    """The entry order of a signal: qty 0.5, decided at ``decision_time``, the bar's close."""
    ts = pd.Timestamp(sig["ts"])
    feat = s.features.set_index("ts").loc[ts]
    close = float(s.bars.set_index("ts").loc[ts, "close"])
    decision = pd.Timestamp(sig["decision_time"]).value
    return OrderIntent(
        order_id=f"O:{sig['signal_id']}",
        signal_id=str(sig["signal_id"]),
        symbol=SYMBOL,
        side=1 if sig["direction"] == "long" else -1,
        qty=0.5,
        decision_ns=decision,
        valid_until_ns=decision + valid_for_ns,
        reference_price=close,
        vol_ratio=float(feat["vol_ratio"]),
        stop=close - 10.0,
        target=close + 10.0,
    )


def first_trade_at_or_after(trades: list[tuple[int, float]], t: int) -> tuple[int, float] | None:
    for ts, price in trades:  # linear scan: independent of searchsorted
        if ts >= t:
            return ts, price
    return None


# --- paper broker on real trades ---------------------------------------------------------------


def test_paper_fill_is_the_first_real_trade_after_the_latency_plus_model_slippage(
    btc: Session,
) -> None:
    cfg = ScoringConfig(trigger_score=30)
    signals = signals_of(btc, cfg)
    assert len(signals) >= 4  # not vacuous
    broker = PaperBroker(cfg, {SYMBOL: btc.instrument})
    market = FrameMarketData(btc.raw)
    tick = btc.instrument.tick_size
    sides = set()
    for _, sig in signals.iterrows():
        intent = intent_for(btc, sig)
        fill_from = intent.decision_ns + cfg.execution_latency_ms * MS
        want = first_trade_at_or_after(btc.csv_trades, fill_from)
        assert want is not None
        got = broker.submit(intent, market, now_ns=intent.valid_until_ns)
        assert isinstance(got, Fill), got
        trade_ts, trade_px = want
        assert got.ts_ns == trade_ts >= fill_from  # SPEC §4: fill >= decision + latency
        assert got.order_id == intent.order_id and got.qty == 0.5
        # The SPEC §3 model, re-derived: price * base * (1 + coeff * vr) * U(signal id).
        u = seeded_uniform(intent.signal_id)
        slip = trade_px * cfg.slippage_base * (1 + cfg.slippage_vol_coeff * intent.vol_ratio) * u
        assert slip == pytest.approx(slippage(trade_px, intent.vol_ratio, intent.signal_id, cfg))
        # Adverse: a long pays more, a short gets less, by the model's slip rounded to a worse
        # tick (never better, less than one tick more).
        assert on_grid(got.price, tick)
        extra = intent.side * (got.price - trade_px) - slip
        assert -1e-9 <= extra < tick
        assert intent.side * (got.price - trade_px) > 0
        # Estimated (model at U = 1, at the signal bar's close) vs realized (vs that close).
        est = intent.reference_price * cfg.slippage_base * (1 + intent.vol_ratio)
        assert got.estimated_slippage == pytest.approx(est, rel=1e-12)
        assert got.estimated_slippage == pytest.approx(
            slippage(intent.reference_price, intent.vol_ratio, intent.signal_id, cfg) / u
        )
        assert got.reference_price == intent.reference_price
        assert got.realized_slippage == pytest.approx(
            intent.side * (got.price - intent.reference_price), abs=1e-9
        )
        sides.add(intent.side)
        # Re-submitting gives the same fill (deterministic: seeded draw, same trade).
        assert broker.submit(intent, market, now_ns=intent.valid_until_ns + 1) == got
    assert sides == {1, -1}  # both directions exercised


def test_paper_order_expires_when_the_next_trade_is_past_its_validity(btc: Session) -> None:
    cfg = ScoringConfig()
    broker = PaperBroker(cfg, {SYMBOL: btc.instrument})
    market = FrameMarketData(btc.raw)
    latency = cfg.execution_latency_ms * MS
    ts = [t for t, _ in btc.csv_trades]
    gaps = np.diff(np.asarray(ts, dtype=np.int64))
    i = int(np.argmax(gaps))  # the longest quiet spell of the real tape
    before, after = ts[i], ts[i + 1]
    assert after - before > 1000 * MS  # over a second without a trade
    base = OrderIntent(
        order_id="O:gap",
        signal_id="BTCUSDT:gap",
        symbol=SYMBOL,
        side=-1,
        qty=1.0,
        decision_ns=before + 1 - latency,  # fills from just after the last trade before the gap
        valid_until_ns=after - 1,
        reference_price=btc.csv_trades[i][1],
        vol_ratio=0.8,
        stop=1e5,
        target=1.0,
    )
    # The only trade after the decision (+ latency) and within reach comes past the validity.
    got = broker.submit(base, market, now_ns=after + 1)
    assert isinstance(got, Rejection) and got.reason == "expired" and got.order_id == "O:gap"
    assert str(after) in got.detail
    # No trade yet, validity still running: try later.
    assert broker.submit(base, market, now_ns=after - 1) is None
    assert broker.submit(base, market, now_ns=before + 5) is None
    # No trade yet and the validity is over: expired without waiting for the next trade.
    short_lived = OrderIntent(**{**base.__dict__, "valid_until_ns": before + 10})
    got = broker.submit(short_lived, market, now_ns=before + 11)
    assert isinstance(got, Rejection) and got.reason == "expired"
    # Valid up to the trade's exact time: fills on it.
    inclusive = OrderIntent(**{**base.__dict__, "valid_until_ns": after})
    got = broker.submit(inclusive, market, now_ns=after)
    assert isinstance(got, Fill) and got.ts_ns == after
    # The trade exists in the replayed frame but is after now: no look-ahead, no fill.
    assert broker.submit(inclusive, market, now_ns=after - 1) is None


def test_paper_order_after_the_last_trade_waits_then_expires(btc: Session) -> None:
    cfg = ScoringConfig()
    broker = PaperBroker(cfg, {SYMBOL: btc.instrument})
    market = FrameMarketData(btc.raw)
    last = btc.csv_trades[-1][0]
    intent = OrderIntent(
        order_id="O:late",
        signal_id="BTCUSDT:late",
        symbol=SYMBOL,
        side=1,
        qty=1.0,
        decision_ns=last,  # + latency: after every trade of the file
        valid_until_ns=last + 60_000 * MS,
        reference_price=btc.csv_trades[-1][1],
        vol_ratio=math.nan,
        stop=1.0,
        target=1e5,
    )
    assert market.next_trade(SYMBOL, last + 1) is None
    assert broker.submit(intent, market, now_ns=last + 30_000 * MS) is None
    got = broker.submit(intent, market, now_ns=last + 60_001 * MS)
    assert isinstance(got, Rejection) and got.reason == "expired"
    unknown = OrderIntent(**{**intent.__dict__, "symbol": "NOPE"})
    got = broker.submit(unknown, market, now_ns=last)
    assert isinstance(got, Rejection) and got.reason == "unknown_symbol"
    assert market.next_trade("NOPE", 0) is None


def test_frame_market_data_matches_a_linear_scan_of_the_csv(btc: Session) -> None:
    market = FrameMarketData(btc.raw.sample(frac=1.0, random_state=7))  # any input order
    first, last = btc.csv_trades[0][0], btc.csv_trades[-1][0]
    probes = [first - 1, first, first + 1, last, *np.linspace(first, last, 25).astype(np.int64)]
    for t in probes:
        want = first_trade_at_or_after(btc.csv_trades, int(t))
        assert market.next_trade(SYMBOL, int(t)) == want


def test_order_intent_and_frame_validation() -> None:
    good = {
        "order_id": "O",
        "signal_id": "S",
        "symbol": SYMBOL,
        "side": 1,
        "qty": 1.0,
        "decision_ns": 10,
        "valid_until_ns": 20,
        "reference_price": 100.0,
        "vol_ratio": 1.0,
        "stop": 99.0,
        "target": 101.0,
    }
    OrderIntent(**good)  # type: ignore[arg-type]
    for bad, match in (
        ({"side": 0}, "side"),
        ({"qty": 0.0}, "qty"),
        ({"valid_until_ns": 9}, "valid_until_ns"),
        ({"stop": math.nan}, "stop"),
    ):
        with pytest.raises(ValueError, match=match):
            OrderIntent(**{**good, **bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="price"):
        FrameMarketData(pd.DataFrame({"symbol": ["X"], "ts_event": [1]}))


def test_expected_slippage_is_the_model_at_its_mean_draw() -> None:
    cfg = ScoringConfig(slippage_base=0.0002, slippage_vol_coeff=1.5)
    assert expected_slippage(10_000.0, 0.4, cfg) == pytest.approx(10_000 * 0.0002 * 1.6)
    assert expected_slippage(10_000.0, math.nan, cfg) == pytest.approx(10_000 * 0.0002 * 2.5)
    assert expected_slippage(10_000.0, -3.0, cfg) == pytest.approx(10_000 * 0.0002)
    for key in ("a", "b", "BTCUSDT:20200222T0030Z:a6757793b6a2"):
        model = slippage(9700.0, 0.7, key, cfg)
        assert model == pytest.approx(expected_slippage(9700.0, 0.7, cfg) * seeded_uniform(key))


# --- exits: the same trades as the backtest ----------------------------------------------------


@pytest.mark.parametrize(
    ("time_stop_bars", "truncate"),
    [(10, False), (3, False), (10, True)],
    ids=["default", "time_stop_3", "session_cut_mid_trade"],
)
def test_exits_reproduce_every_backtest_trade_of_the_session(
    btc: Session, time_stop_bars: int, truncate: bool
) -> None:
    cfg = ScoringConfig(trigger_score=30, time_stop_bars=time_stop_bars)
    signals = signals_of(btc, cfg)
    bars_frame, features, regimes = btc.bars, btc.features, btc.regimes
    if truncate:
        # The real tape never leaves a trade open at its last bar: end the session inside the
        # longest trade (at the open of its exit bar) so that trade closes at session end.
        full = session_backtest(bars_frame, features, signals, regimes, cfg, "test")
        longest = full.loc[full["bars_held"].idxmax()]
        assert longest["bars_held"] >= 2
        cut = pd.Timestamp(longest["exit_time"]) - pd.Timedelta(60, "s")
        bars_frame = bars_frame.loc[bars_frame["ts"] < cut].reset_index(drop=True)
        features = features.loc[features["ts"] < cut].reset_index(drop=True)
        regimes = regimes.loc[regimes["ts"] < cut].reset_index(drop=True)
    trades = session_backtest(bars_frame, features, signals, regimes, cfg, "test")
    assert len(trades) >= 3, trades  # not vacuous
    broker = PaperBroker(cfg, {SYMBOL: btc.instrument})
    ts = pd.DatetimeIndex(bars_frame["ts"]).asi8
    bars = bars_frame[["open", "high", "low", "close"]].to_dict("records")
    feats = features.set_index("ts")
    reasons = set()
    for t in trades.to_dict("records"):
        side = 1 if t["direction"] == "long" else -1
        entry_ns = pd.Timestamp(t["entry_time"]).value
        position = OpenPosition(
            order_id=str(t["trade_id"]),
            signal_id=str(t["signal_id"]),
            symbol=SYMBOL,
            side=side,
            qty=0.25,
            entry_price=float(t["entry_price"]),  # the backtest's own entry: compare exits only
            entry_ns=entry_ns,
            stop=float(t["stop_price"]),
            target=float(t["target_price"]),
            bars_held=0,
            vol_ratio=float(feats.loc[pd.Timestamp(t["signal_ts"]), "vol_ratio"]),
        )
        k = int(np.searchsorted(ts, entry_ns, side="right")) - 1  # the bar the entry fills in
        assert ts[k] <= entry_ns < ts[k] + BAR_NS
        decision = None
        for i in range(k, len(ts)):
            bar = {**bars[i], "ts": int(ts[i])}
            decision = on_bar_close(position, bar, i == len(ts) - 1, cfg)
            if decision is not None:
                break
            assert mark_to_market(position, bar["close"]) == pytest.approx(
                0.25 * side * (bar["close"] - position.entry_price)
            )
            position = advance(position)
        assert decision is not None, t["trade_id"]
        where = t["trade_id"]
        assert decision.reason == t["exit_reason"], where
        assert decision.exit_ns == pd.Timestamp(t["exit_time"]).value, where
        assert decision.bars_held == t["bars_held"], where
        # Same functions in the same order: bit-identical floats.
        assert decision.fill_price == t["exit_price"], where
        assert decision.pnl_per_unit == t["pnl"], where
        assert decision.cost_per_unit == t["cost"], where
        assert decision.r_multiple == t["r_multiple"], where
        assert decision.pnl == pytest.approx(0.25 * t["pnl"], rel=1e-15)
        entry_slip = abs(float(t["entry_price"]) - float(bars_frame["open"].iloc[k]))
        assert decision.slippage == pytest.approx(t["slippage_paid"] - entry_slip, rel=1e-9)
        # The broker's exit of the same reference: the same draw, rounded to a worse tick.
        exit_fill = broker.exit(
            order_id=f"X:{where}",
            signal_id=position.signal_id,
            symbol=SYMBOL,
            side=side,
            qty=0.25,
            reference_price=decision.reference_price,
            vol_ratio=position.vol_ratio,
            ts_ns=decision.exit_ns,
        )
        tick = btc.instrument.tick_size
        assert exit_fill.price == round_to_tick(decision.fill_price, tick, side, "exit")
        assert 0 <= side * (decision.fill_price - exit_fill.price) < tick
        assert exit_fill.realized_slippage == pytest.approx(
            side * (decision.reference_price - exit_fill.price)
        )
        assert exit_fill.realized_slippage >= decision.slippage > 0
        reasons.add(decision.reason)
    if truncate:
        assert "session_end" in reasons
    elif time_stop_bars == 3:
        assert {"stop", "target", "time_stop"} <= reasons
    else:
        assert reasons == {"stop", "target"}


# --- exits: each rule on hand-made bars --------------------------------------------------------

T0 = 1_700_000_000_000_000_000 - 1_700_000_000_000_000_000 % BAR_NS
FLAT = ScoringConfig(slippage_base=0.0, cost_bps=0.0, time_stop_bars=3)


def position(side: int = 1, **overrides: object) -> OpenPosition:
    """A long at 100 (stop 98, target 103) or a short at 100 (stop 102, target 97)."""
    fields: dict[str, object] = {
        "order_id": "O:1",
        "signal_id": "S:1",
        "symbol": "TEST",
        "side": side,
        "qty": 2.0,
        "entry_price": 100.0,
        "entry_ns": T0 + 250 * MS,
        "stop": 100.0 - 2.0 * side,
        "target": 100.0 + 3.0 * side,
        "bars_held": 0,
        "vol_ratio": 0.5,
    }
    fields.update(overrides)
    return OpenPosition(**fields)  # type: ignore[arg-type]


def bar(i: int, o: float, h: float, lo: float, c: float) -> dict[str, float]:
    return {"ts": T0 + i * BAR_NS, "open": o, "high": h, "low": lo, "close": c}


def test_bar_touching_stop_and_target_is_one_stop_exit() -> None:
    got = on_bar_close(position(), bar(0, 100.0, 104.0, 97.0, 101.0), False, FLAT)
    assert got is not None and got.reason == "stop" and got.reference_price == 98.0
    assert got.pnl_per_unit == -2.0 and got.pnl == -4.0 and got.r_multiple == -1.0
    assert got.exit_ns == T0 + BAR_NS and got.bars_held == 1


def test_stop_crossed_at_the_open_fills_at_the_open() -> None:
    got = on_bar_close(position(-1, bars_held=1), bar(1, 102.5, 103.0, 99.0, 100.0), False, FLAT)
    assert got is not None and got.reason == "stop" and got.fill_price == 102.5
    assert got.pnl == pytest.approx(-5.0) and got.bars_held == 2


def test_target_never_fills_better_than_its_limit() -> None:
    got = on_bar_close(position(1, bars_held=1), bar(1, 104.0, 105.0, 103.5, 104.5), False, FLAT)
    assert got is not None and got.reason == "target" and got.fill_price == 103.0
    assert got.pnl == 6.0 and got.r_multiple == 1.5


def test_time_stop_and_session_end_exit_at_the_close() -> None:
    quiet = (100.0, 100.5, 99.5, 100.2)
    p = position()
    assert on_bar_close(p, bar(0, *quiet), False, FLAT) is None
    p = advance(p)
    assert on_bar_close(p, bar(1, *quiet), False, FLAT) is None
    p = advance(p)
    got = on_bar_close(p, bar(2, *quiet), True, FLAT)  # time stop wins over session end
    assert got is not None and got.reason == "time_stop" and got.fill_price == 100.2
    got = on_bar_close(position(bars_held=1), bar(1, *quiet), True, FLAT)
    assert got is not None and got.reason == "session_end" and got.exit_ns == T0 + 2 * BAR_NS


def test_exit_slippage_and_costs_are_the_backtests() -> None:
    cfg = ScoringConfig(slippage_base=0.0002, cost_bps=0.5, time_stop_bars=3)
    got = on_bar_close(position(-1), bar(0, 100.0, 100.5, 96.0, 97.5), False, cfg)
    assert got is not None and got.reason == "target"
    slip = slippage(97.0, 0.5, "S:1:exit", cfg)
    assert got.slippage == slip and got.fill_price == 97.0 + slip
    cost = 0.5e-4 * (100.0 + got.fill_price)
    assert got.cost_per_unit == pytest.approx(cost)
    assert got.pnl_per_unit == pytest.approx(100.0 - got.fill_price - cost)
    assert got.pnl == pytest.approx(2.0 * got.pnl_per_unit)


def test_mark_to_market_and_position_validation() -> None:
    assert mark_to_market(position(1), 101.5) == 3.0
    assert mark_to_market(position(-1), 101.5) == -3.0
    with pytest.raises(ValueError, match="closed before the entry"):
        on_bar_close(position(), bar(-1, 100.0, 100.0, 100.0, 100.0), False, FLAT)
    with pytest.raises(ValueError, match="close"):
        on_bar_close(position(), {"ts": T0, "open": 1.0, "high": 1.0, "low": 1.0}, False, FLAT)
    for bad, match in (
        ({"side": 2}, "side"),
        ({"qty": 0.0}, "qty"),
        ({"bars_held": -1}, "bars_held"),
        ({"stop": math.inf}, "stop"),
    ):
        with pytest.raises(ValueError, match=match):
            position(**bad)
