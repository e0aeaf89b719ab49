"""Every control of the execution gateway acting on real signal offers, on SQLite and PostgreSQL.

The offers are the 7 signals (``trigger_score=30``) of the real Tardis BTCUSDT trades of
2020-02-22, computed with the batch pipeline's own functions; the market is those trades
(:class:`~fbe_pipeline.execution.broker.FrameMarketData`), its clock a chosen trade time. Each
test runs once on a SQLite file and once on a fresh database of a throwaway PostgreSQL 15
server (``ops_database_url``), and checks the orders' values and states and the audit and
risk-event rows the control leaves behind, refusals included.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyotp
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from fbe_pipeline.execution.broker import (
    FrameMarketData,
    MarketData,
    OrderIntent,
    PaperBroker,
    expected_slippage,
)
from fbe_pipeline.execution.gateway import ExecutionError, ExecutionGateway, SignalOffer
from fbe_pipeline.execution.sizing import round_to_tick
from fbe_pipeline.governance.alerts import AlertDispatcher, TelegramChannel
from fbe_pipeline.governance.limits import ExecutionConfig
from fbe_pipeline.governance.users import add_user
from fbe_pipeline.live.replay import read_ticks
from fbe_pipeline.market.instruments import get_instrument, load_instruments
from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.db import engine_for, upgrade
from fbe_pipeline.pipeline import (
    session_bars,
    session_bounds,
    session_features,
    session_scores,
    session_signals,
    session_ticks,
    signal_context,
)
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.slippage import slippage
from fbe_pipeline.research.trade_rules import entry_fill
from tests.channels import ChannelServer

SYMBOL = "BTCUSDT"
AUTO = "BTCUSDT-paper"
DAY = date(2020, 2, 22)
TRADES_CSV = "tardis/tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
SCORING = ScoringConfig(trigger_score=30)
MINUTE = 60_000_000_000
LATENCY_NS = SCORING.execution_latency_ms * 1_000_000
T0_S = 1_700_000_010  # the fake wall clock starts 10 s into a 30 s TOTP step


@dataclass(frozen=True)
class Day:
    """The real session: its trades, 1-minute bars and the signal offers built from them."""

    ticks: pd.DataFrame
    bars: pd.DataFrame
    offers: list[SignalOffer]
    close_ns: int

    @property
    def last_tick_ns(self) -> int:
        return int(self.ticks["ts_event"].max())

    def first_trade(self, after_ns: int) -> tuple[int, float]:
        """The first trade at or after ``after_ns`` by a plain scan of the session's ticks."""
        later = self.ticks.loc[self.ticks["ts_event"] >= after_ns]
        row = later.iloc[0]
        return int(row["ts_event"]), float(row["price"])

    def bar_records(self) -> list[dict[str, Any]]:
        """The bars as :meth:`ExecutionGateway.mark` takes them (``ts`` the bar open, int ns)."""
        ts = pd.DatetimeIndex(self.bars["ts"]).as_unit("ns").asi8
        return self.bars.assign(ts=ts).to_dict("records")


@pytest.fixture(scope="module")
def day(sample_data: Path) -> Day:
    instrument = get_instrument(SYMBOL)
    raw = read_ticks("tardis-trades", [sample_data / TRADES_CSV], instrument)
    ticks, _ = session_ticks(raw, None, instrument, DAY)
    ticks = ticks.loc[ticks["ohlc_eligible"].astype(bool)]
    ticks = ticks.sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)
    bars = session_bars(ticks, instrument, DAY)
    features = session_features(bars, DAY, None)
    signals = session_signals(session_scores(features, SCORING), SCORING)
    context = signal_context(signals, features, bars).set_index("signal_id")
    offers = [
        SignalOffer(
            signal_id=str(r.signal_id),
            symbol=str(r.symbol),
            trading_date=pd.Timestamp(r.trading_date).date().isoformat(),
            direction=str(r.direction),
            bar_close_ns=pd.Timestamp(r.bar_close).value,
            decision_ns=pd.Timestamp(r.decision_time).value,
            config_version=str(r.config_version),
            source="live",
            context={k: float(v) for k, v in context.loc[r.signal_id].items()},
        )
        for r in signals.itertuples(index=False)
    ]
    assert len(offers) == 7
    _, close_ns = session_bounds(instrument, DAY)
    return Day(ticks=ticks, bars=bars, offers=offers, close_ns=close_ns)


class Clock:
    """The gateway's wall clock (ns), moved by hand: TOTP codes are judged against it."""

    def __init__(self, seconds: int = T0_S) -> None:
        self.ns = seconds * 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    @property
    def seconds(self) -> int:
        return self.ns // 1_000_000_000


@dataclass
class Ops:
    """A migrated operational store and a way to build gateways over it."""

    engine: Engine
    stop_file: Path
    clock: Clock

    def gateway(
        self, broker: Any = None, feeds_down: set[str] | None = None, **limits: Any
    ) -> ExecutionGateway:
        instruments = load_instruments()
        down = set() if feeds_down is None else feeds_down
        return ExecutionGateway(
            self.engine,
            ExecutionConfig(**limits),
            SCORING,
            instruments,
            broker or PaperBroker(SCORING, instruments),
            stop_file=self.stop_file,
            clock=self.clock,
            feeds_down=lambda: set(down),
        )

    def order(self, order_id: str) -> m.Order:
        with Session(self.engine) as s:
            found = s.get(m.Order, order_id)
            assert found is not None
            s.expunge(found)
            return found

    def orders(self) -> list[m.Order]:
        with Session(self.engine) as s:
            rows = list(s.scalars(select(m.Order).order_by(m.Order.decision_ns)))
            s.expunge_all()
            return rows

    def automation(self) -> m.Automation:
        with Session(self.engine) as s:
            found = s.get(m.Automation, AUTO)
            assert found is not None
            s.expunge(found)
            return found

    def risk(self, order_id: str | None = None, control: str | None = None) -> list[tuple]:
        """``(order_id, control, outcome, detail)`` of the risk events, in insertion order."""
        query = select(
            m.RiskEvent.order_id, m.RiskEvent.control, m.RiskEvent.outcome, m.RiskEvent.detail
        ).order_by(m.RiskEvent.id)
        if order_id is not None:
            query = query.where(m.RiskEvent.order_id == order_id)
        if control is not None:
            query = query.where(m.RiskEvent.control == control)
        with Session(self.engine) as s:
            return [tuple(r) for r in s.execute(query)]

    def audit(self, action: str | None = None) -> list[tuple]:
        """``(actor, action, target, outcome, detail)`` of the audit log, in insertion order."""
        query = select(
            m.AuditEntry.actor,
            m.AuditEntry.action,
            m.AuditEntry.target,
            m.AuditEntry.outcome,
            m.AuditEntry.detail,
        ).order_by(m.AuditEntry.id)
        if action is not None:
            query = query.where(m.AuditEntry.action == action)
        with Session(self.engine) as s:
            return [tuple(r) for r in s.execute(query)]

    def count(self, model: type[m.Base]) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def ops(ops_database_url: str, tmp_path: Path) -> Iterator[Ops]:
    engine = engine_for(ops_database_url)
    upgrade(engine)
    try:
        yield Ops(engine=engine, stop_file=tmp_path / "STOP", clock=Clock())
    finally:
        engine.dispose()


PASSED = [
    ("stop_file", "pass"),
    ("data_feed_down", "pass"),
    ("status", "pass"),
    ("max_daily_trades", "pass"),
    ("max_daily_drawdown", "pass"),
]


def controls(ops: Ops, order_id: str) -> list[tuple[str, str]]:
    return [(c, o) for _, c, o, _ in ops.risk(order_id)]


def order_id_of(offer: SignalOffer) -> str:
    return f"{AUTO}:{offer.signal_id}"


def expected_entry(day: Day, offer: SignalOffer) -> tuple[int, float, float]:
    """``(fill time, fill price, market price)`` of the paper entry of ``offer``: the first real
    trade at or after the decision plus the latency, moved against the order by the seeded
    slippage draw and rounded to the tick in the adverse direction."""
    side = 1 if offer.direction == "long" else -1
    ts, price = day.first_trade(offer.decision_ns + LATENCY_NS)
    slip = slippage(price, offer.context["vol_ratio"], offer.signal_id, SCORING)
    fill = round_to_tick(entry_fill(side, price, slip), 0.01, side, "entry")
    return ts, fill, price


def wrong_code(secret: str, at_s: int) -> str:
    """A six-digit code that is none of the codes valid at ``at_s`` (±1 step)."""
    totp = pyotp.TOTP(secret)
    valid = {totp.at(at_s + k * 30) for k in (-1, 0, 1)}
    code = int(totp.at(at_s))
    while f"{code:06d}" in valid:
        code = (code + 1) % 1_000_000
    return f"{code:06d}"


# --- 1. one order per signal -----------------------------------------------------------------


def test_one_order_per_signal_even_with_concurrent_workers(ops: Ops, day: Day) -> None:
    gateway = ops.gateway(approval_gate_trades=3)
    first = gateway.offer(day.offers[0])
    again = gateway.offer(day.offers[0])
    assert again.order_id == first.order_id == order_id_of(day.offers[0])
    assert (again.state, again.created_ns) == (first.state, first.created_ns)
    assert ops.count(m.Order) == 1
    assert len(ops.audit("order_created")) == 1
    assert controls(ops, first.order_id) == PASSED  # the second offer ran no control

    # Two workers (each its own gateway, as two sensor runs) offer the same 7 signals at once.
    barrier = threading.Barrier(2)
    results: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        worker_gateway = ops.gateway(approval_gate_trades=3)
        try:
            barrier.wait(timeout=30)
            for offer in day.offers:
                results[i].append(worker_gateway.offer(offer).order_id)
        except BaseException as exc:  # any leak fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    want = [order_id_of(o) for o in day.offers]
    assert results == [want, want]
    orders = ops.orders()
    assert [o.order_id for o in orders] == want
    # One order each, created once: the gate counted 3 orders, not 3 per worker.
    assert [o.state for o in orders] == [m.PENDING_APPROVAL] * 3 + [m.APPROVED] * 4
    assert ops.automation().gate_remaining == 0
    created = ops.audit("order_created")
    assert sorted(target for _, _, target, _, _ in created) == sorted(want)
    for order in orders:
        assert controls(ops, order.order_id) == PASSED


def test_concurrent_workers_on_different_signals_share_the_gate_and_daily_limit(
    ops: Ops, day: Day
) -> None:
    # Two workers offer disjoint signals of a new automation at once: both race to create the
    # automation, then to take the gate's places and the day's trades.
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(offers: list[SignalOffer]) -> None:
        gateway = ops.gateway(approval_gate_trades=3, max_daily_trades=5)
        try:
            barrier.wait(timeout=30)
            for offer in offers:
                gateway.offer(offer)
        except BaseException as exc:  # any leak fails the test below
            errors.append(exc)

    halves = [day.offers[0::2], day.offers[1::2]]
    threads = [threading.Thread(target=worker, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    orders = ops.orders()
    assert len(orders) == 7
    states = sorted((o.state, o.reason or "") for o in orders)
    assert states == sorted(
        [(m.PENDING_APPROVAL, "")] * 3
        + [(m.APPROVED, "")] * 2
        + [(m.REJECTED, "max_daily_trades")] * 2
    )
    assert ops.automation().gate_remaining == 0
    # The daily count each order saw: 0..4 for the accepted ones, 5 for the two refused.
    seen = sorted(int(d.split()[0]) for *_, d in ops.risk(control="max_daily_trades"))
    assert seen == [0, 1, 2, 3, 4, 5, 5]


# --- 2. first-trades gate --------------------------------------------------------------------


def test_first_trades_wait_for_approval_then_fill_with_slippage(ops: Ops, day: Day) -> None:
    secret = pyotp.random_base32()
    add_user(ops.engine, "alice", "approver", secret=secret)
    gateway = ops.gateway(approval_gate_trades=3)
    orders = [gateway.offer(o) for o in day.offers]
    assert [o.state for o in orders] == [m.PENDING_APPROVAL] * 3 + [m.APPROVED] * 4
    for order, offer in zip(orders, day.offers, strict=True):
        assert order.reason is None
        assert order.qty == 1.0
        assert order.side == (1 if offer.direction == "long" else -1)
        assert order.reference_price == offer.context["close"]
        assert order.valid_until_ns == offer.bar_close_ns + MINUTE
        assert controls(ops, order.order_id) == PASSED
    created = ops.audit("order_created")
    assert [(t, o) for _, _, t, o, _ in created] == [(o.order_id, "ok") for o in orders]
    assert [json.loads(d)["state"] for *_, d in created] == [o.state for o in orders]
    assert ops.automation().gate_remaining == 0

    approved = gateway.decide(
        orders[0].order_id, "alice", pyotp.TOTP(secret).at(ops.clock.seconds), True
    )
    assert (approved.state, approved.reason) == (m.APPROVED, None)
    ops.clock.ns += 30_000_000_000  # the next code
    rejected = gateway.decide(
        day.offers[1].signal_id, "alice", pyotp.TOTP(secret).at(ops.clock.seconds), False
    )
    assert (rejected.state, rejected.reason) == (m.REJECTED, "rejected by alice")
    assert [a[:4] for a in ops.audit("approve") + ops.audit("reject")] == [
        ("alice", "approve", orders[0].order_id, "ok"),
        ("alice", "reject", orders[1].order_id, "ok"),
    ]
    with Session(ops.engine) as s:
        decisions = s.execute(select(m.Approval.order_id, m.Approval.decision)).all()
    assert sorted(decisions) == sorted(
        [(orders[0].order_id, m.APPROVED), (orders[1].order_id, m.REJECTED)]
    )

    # The market clock: the first trade after the first signal's decision plus the latency.
    offer = day.offers[0]
    fill_ts, fill_price, market_price = expected_entry(day, offer)
    changed = gateway.process(FrameMarketData(day.ticks), fill_ts)
    # The ungated orders of later signals go to the broker but cannot fill on trades that
    # have not happened yet at the market's clock.
    assert {o.order_id for o in changed} == {o.order_id for o in [orders[0], *orders[3:]]}
    assert [ops.order(o.order_id).state for o in orders[3:]] == [m.SUBMITTED] * 4
    filled = ops.order(orders[0].order_id)
    assert filled.state == m.FILLED
    assert (filled.fill_ns, filled.fill_price) == (fill_ts, fill_price)
    side = filled.side
    assert side * (fill_price - market_price) >= 0  # slippage is paid, never earned
    assert filled.estimated_slippage == pytest.approx(
        expected_slippage(offer.context["close"], offer.context["vol_ratio"], SCORING)
    )
    assert filled.realized_slippage == pytest.approx(side * (fill_price - offer.context["close"]))
    with Session(ops.engine) as s:
        fill = s.scalars(select(m.Fill)).one()
        position = s.get(m.Position, filled.order_id)
        assert position is not None
        assert (fill.kind, fill.ts_ns, fill.price, fill.qty) == ("entry", fill_ts, fill_price, 1.0)
        assert fill.realized_slippage == filled.realized_slippage
        assert (position.status, position.side, position.qty) == ("open", side, 1.0)
        assert (position.entry_price, position.entry_ns) == (fill_price, fill_ts)
        assert (position.stop, position.target) == (filled.stop, filled.target)
    actions = [(a[1], a[2]) for a in ops.audit() if a[2] == filled.order_id]
    assert actions == [
        ("order_created", filled.order_id),
        ("approve", filled.order_id),
        ("order_submitted", filled.order_id),
        ("order_filled", filled.order_id),
    ]
    # The rejected order is never sent; the third gated order is still waiting.
    assert ops.order(orders[1].order_id).state == m.REJECTED
    assert ops.order(orders[2].order_id).state == m.PENDING_APPROVAL

    # At the session's last trade every ungated order has filled and the unapproved one expired.
    gateway.process(FrameMarketData(day.ticks), day.last_tick_ns)
    states = [ops.order(o.order_id).state for o in orders]
    assert states == [m.FILLED, m.REJECTED, m.EXPIRED] + [m.FILLED] * 4
    assert ops.count(m.Position) == 5


# --- 3. TOTP ---------------------------------------------------------------------------------


def test_totp_wrong_reused_adjacent_step_and_role(ops: Ops, day: Day) -> None:
    alice, bob = pyotp.random_base32(), pyotp.random_base32()
    add_user(ops.engine, "alice", "approver", secret=alice)
    add_user(ops.engine, "bob", "viewer", secret=bob)
    gateway = ops.gateway(approval_gate_trades=3)
    ids = [gateway.offer(o).order_id for o in day.offers[:3]]
    now = ops.clock.seconds
    totp = pyotp.TOTP(alice)

    def refused(ref: str, user: str, code: str, match: str, approve: bool = True) -> None:
        before = len(ops.audit())
        with pytest.raises(ExecutionError, match=match):
            gateway.decide(ref, user, code, approve)
        action = "approve" if approve else "reject"
        entries = ops.audit()
        assert len(entries) == before + 1
        assert entries[-1][:4] == (user, action, ref, "refused")
        assert match in entries[-1][4]

    refused(ids[0], "alice", wrong_code(alice, now), "wrong TOTP code")
    refused(ids[0], "alice", "12ab56", "wrong TOTP code")
    refused(ids[0], "alice", totp.at(now + 60), "wrong TOTP code")  # two steps ahead
    refused(ids[0], "alice", totp.at(now - 60), "wrong TOTP code")  # two steps behind
    assert ops.order(ids[0]).state == m.PENDING_APPROVAL

    code = totp.at(now)
    assert gateway.decide(ids[0], "alice", code, True).state == m.APPROVED
    refused(ids[1], "alice", code, "already used")
    ops.clock.ns += 5_000_000_000  # still the same step: the same code is still refused
    refused(ids[1], "alice", code, "already used", approve=False)
    assert ops.order(ids[1]).state == m.PENDING_APPROVAL

    # One step either side of the clock is accepted (once).
    assert gateway.decide(ids[1], "alice", totp.at(now - 30), True).state == m.APPROVED
    assert gateway.decide(ids[2], "alice", totp.at(now + 30), False).state == m.REJECTED
    refused(ids[2], "alice", totp.at(now + 30), "already used", approve=False)

    # A viewer's valid code is refused for its role, and consumes nothing.
    refused(ids[2], "bob", pyotp.TOTP(bob).at(now), "has role viewer")
    refused(ids[2], "carol", totp.at(now), "unknown or disabled user")
    # A valid, unused code on an order no longer pending is refused, and is not consumed.
    ops.clock.ns += 60_000_000_000
    fresh = totp.at(ops.clock.seconds)
    refused(ids[2], "alice", fresh, "not pending")
    refused("no-such-signal", "alice", fresh, "no order or signal")

    with Session(ops.engine) as s:
        used = s.execute(select(m.UsedTotp.user, m.UsedTotp.step)).all()
        approvals = s.execute(select(m.Approval.order_id, m.Approval.decision)).all()
    step = now // 30
    assert sorted(used) == [("alice", step - 1), ("alice", step), ("alice", step + 1)]
    assert sorted(approvals) == sorted(
        [(ids[0], m.APPROVED), (ids[1], m.APPROVED), (ids[2], m.REJECTED)]
    )
    ok = [a[:4] for a in ops.audit() if a[3] == "ok" and a[1] in ("approve", "reject")]
    assert ok == [
        ("alice", "approve", ids[0], "ok"),
        ("alice", "approve", ids[1], "ok"),
        ("alice", "reject", ids[2], "ok"),
    ]


# --- 4. STOP file ----------------------------------------------------------------------------


def test_stop_file_blocks_offers_and_holds_approved_orders(ops: Ops, day: Day) -> None:
    gateway = ops.gateway(approval_gate_trades=0)
    ops.stop_file.write_text("halt\n")
    blocked = gateway.offer(day.offers[0])
    assert (blocked.state, blocked.reason) == (m.REJECTED, "stop_file")
    assert ops.risk(blocked.order_id) == [
        (blocked.order_id, "stop_file", "block", str(ops.stop_file))
    ]
    [created] = ops.audit("order_created")
    assert created[1:4] == ("order_created", blocked.order_id, "rejected")
    assert json.loads(created[4])["reason"] == "stop_file"

    ops.stop_file.unlink()
    offer = day.offers[1]
    order = gateway.offer(offer)
    assert order.state == m.APPROVED
    ops.stop_file.write_text("halt\n")
    market = FrameMarketData(day.ticks)
    fill_ts, _, _ = expected_entry(day, offer)
    # The order's trade has happened and it is still valid, but nothing goes to the broker.
    for now in (fill_ts, order.valid_until_ns):
        assert gateway.process(market, now) == []
        assert ops.order(order.order_id).state == m.APPROVED
    assert ops.count(m.Fill) == 0
    holds = ops.risk(order.order_id, "stop_file")
    assert holds == [
        (order.order_id, "stop_file", "pass", str(ops.stop_file)),  # at the offer
        (order.order_id, "stop_file", "block", "before submit"),
        (order.order_id, "stop_file", "block", "before submit"),
    ]
    assert ops.audit("order_submitted") == []

    [expired] = gateway.process(market, order.valid_until_ns + 1)
    assert expired.state == m.EXPIRED
    assert expired.reason == "held by a control past its validity"
    assert ops.order(order.order_id).state == m.EXPIRED
    assert ops.audit("order_expired")[-1][2:4] == (order.order_id, "ok")
    assert ops.count(m.Fill) == 0 and ops.count(m.Position) == 0


def test_feed_safe_mode_pauses_the_automation_and_holds_orders(ops: Ops, day: Day) -> None:
    """Issue 14: a feed whose circuit opened puts its symbols in safe mode: the automation is
    paused with reason ``data_feed_down``, an approved order is held, a new signal is refused,
    and recovery of the feed does not resume trading (the operator does)."""
    down: set[str] = set()
    gateway = ops.gateway(approval_gate_trades=0, feeds_down=down)
    first = gateway.offer(day.offers[0])
    assert first.state == m.APPROVED
    down.add(SYMBOL)
    fill_ts, _, _ = expected_entry(day, day.offers[0])
    assert gateway.process(FrameMarketData(day.ticks), fill_ts) == []
    assert ops.order(first.order_id).state == m.APPROVED
    assert ops.automation().status == m.PAUSED
    assert ops.audit("status_paused") == [("system", "status_paused", AUTO, "ok", "data_feed_down")]
    assert ops.risk(first.order_id, "data_feed_down")[-1] == (
        first.order_id,
        "data_feed_down",
        "block",
        SYMBOL,
    )
    refused = gateway.offer(day.offers[1])
    assert (refused.state, refused.reason) == (m.REJECTED, "data_feed_down")

    down.clear()
    still = gateway.offer(day.offers[2])
    assert (still.state, still.reason) == (m.REJECTED, "status_paused")
    gateway.set_status(SYMBOL, m.ACTIVE, "operator")
    assert gateway.offer(day.offers[3]).state == m.APPROVED
    assert ops.count(m.Fill) == 0


# --- 5. circuit breaker ----------------------------------------------------------------------


class BrokenBroker:
    """A broker whose venue is down: every submit raises."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def submit(self, intent: OrderIntent, market: MarketData, now_ns: int) -> None:
        self.calls += 1
        raise ConnectionError(f"venue down ({intent.order_id})")


def test_circuit_breaker_stops_after_consecutive_errors_and_resumes(ops: Ops, day: Day) -> None:
    broken = BrokenBroker()
    gateway = ops.gateway(broken, approval_gate_trades=0, breaker_errors=3)
    ids = [gateway.offer(o).order_id for o in day.offers[:3]]
    market = FrameMarketData(day.ticks)
    gateway.process(market, day.last_tick_ns)
    assert broken.calls == 3
    auto = ops.automation()
    assert (auto.status, auto.consecutive_errors) == (m.STOPPED, 3)
    breaker = ops.risk(control="breaker")
    assert [(o, c) for o, _, c, _ in breaker] == [
        (ids[0], "pass"),
        (ids[1], "pass"),
        (ids[2], "block"),
    ]
    assert all("ConnectionError('venue down" in d for *_, d in breaker)
    trips = ops.audit("breaker_trip")
    assert len(trips) == 1
    assert trips[0][:4] == ("system", "breaker_trip", AUTO, "stopped")
    assert [ops.order(i).state for i in ids] == [m.SUBMITTED] * 3

    # Stopped: a new signal is refused by the status control.
    refused = gateway.offer(day.offers[3])
    assert (refused.state, refused.reason) == (m.REJECTED, "status_stopped")
    assert controls(ops, refused.order_id) == [
        ("stop_file", "pass"),
        ("data_feed_down", "pass"),
        ("status", "block"),
    ]

    # An operator resumes; with the venue back the submitted orders fill.
    resumed = gateway.set_status(SYMBOL, "active", "alice")
    assert (resumed.status, resumed.consecutive_errors) == (m.ACTIVE, 0)
    assert ops.audit("status_active") == [
        ("alice", "status_active", AUTO, "ok", "stopped -> active")
    ]
    with pytest.raises(ExecutionError, match="unknown status"):
        gateway.set_status(SYMBOL, "running", "alice")
    assert ops.audit("status_running")[0][3] == "refused"
    healthy = ops.gateway(approval_gate_trades=0, breaker_errors=3)
    healthy.process(market, day.last_tick_ns)
    for i, offer in zip(ids, day.offers[:3], strict=True):
        order = ops.order(i)
        assert order.state == m.FILLED
        assert (order.fill_ns, order.fill_price) == expected_entry(day, offer)[:2]
    assert ops.automation().consecutive_errors == 0
    assert ops.count(m.Position) == 3


# --- 6. slippage monitor ---------------------------------------------------------------------


def test_slippage_monitor_pauses_after_k_fills(ops: Ops, day: Day) -> None:
    gateway = ops.gateway(approval_gate_trades=0, slippage_window=2, slippage_ratio_limit=0.01)
    first, second = (gateway.offer(o) for o in day.offers[:2])
    market = FrameMarketData(day.ticks)
    first_ts, _, _ = expected_entry(day, day.offers[0])
    gateway.process(market, first_ts)  # one fill: fewer than K, nothing to judge yet
    assert ops.order(first.order_id).state == m.FILLED
    assert ops.order(second.order_id).state == m.SUBMITTED  # its trade is still to come
    assert ops.risk(control="slippage_monitor") == []
    assert ops.automation().status == m.ACTIVE

    gateway.process(market, day.last_tick_ns)
    assert ops.order(second.order_id).state == m.FILLED
    with Session(ops.engine) as s:
        fills = s.execute(select(m.Fill.realized_slippage, m.Fill.estimated_slippage)).all()
    assert len(fills) == 2
    ratio = sum(r for r, _ in fills) / sum(e for _, e in fills)
    assert ratio > 0.01
    assert ops.risk(control="slippage_monitor") == [
        (None, "slippage_monitor", "block", f"ratio {ratio:.3f} over 2")
    ]
    assert ops.automation().status == m.PAUSED_SLIPPAGE
    assert ops.audit("status_paused_slippage") == [
        ("system", "status_paused_slippage", AUTO, "ok", f"ratio {ratio:.3f}")
    ]

    refused = gateway.offer(day.offers[2])
    assert (refused.state, refused.reason) == (m.REJECTED, "status_paused_slippage")
    assert ops.risk(refused.order_id)[-1][1:3] == ("status", "block")


# --- 7. daily trades -------------------------------------------------------------------------


def test_max_daily_trades(ops: Ops, day: Day) -> None:
    gateway = ops.gateway(approval_gate_trades=0, max_daily_trades=2)
    orders = [gateway.offer(o) for o in day.offers[:4]]
    assert [(o.state, o.reason) for o in orders] == [
        (m.APPROVED, None),
        (m.APPROVED, None),
        (m.REJECTED, "max_daily_trades"),
        (m.REJECTED, "max_daily_trades"),  # rejected orders do not count as trades
    ]
    counted = ops.risk(control="max_daily_trades")
    assert [(o, c, d) for o, _, c, d in counted] == [
        (orders[0].order_id, "pass", "0 today"),
        (orders[1].order_id, "pass", "1 today"),
        (orders[2].order_id, "block", "2 today"),
        (orders[3].order_id, "block", "2 today"),
    ]
    assert controls(ops, orders[2].order_id) == [*PASSED[:3], ("max_daily_trades", "block")]
    created = ops.audit("order_created")
    assert [(a[3], json.loads(a[4])["reason"]) for a in created] == [
        ("ok", None),
        ("ok", None),
        ("rejected", "max_daily_trades"),
        ("rejected", "max_daily_trades"),
    ]


# --- 8. daily drawdown -----------------------------------------------------------------------


def test_daily_drawdown_pauses_the_automation(ops: Ops, day: Day) -> None:
    gateway = ops.gateway(approval_gate_trades=0, max_daily_drawdown=5.0)
    # The 00:53 long: filled, then stopped out on the session's real bars.
    offer = day.offers[2]
    assert offer.direction == "long"
    order = gateway.offer(offer)
    gateway.process(FrameMarketData(day.ticks), day.last_tick_ns)
    assert ops.order(order.order_id).state == m.FILLED
    closed = gateway.mark(SYMBOL, day.bar_records(), day.close_ns, DAY.isoformat())
    assert [p.order_id for p in closed] == [order.order_id]
    pos = closed[0]
    assert pos.status == "closed" and pos.exit_reason == "stop"
    assert pos.pnl is not None and pos.pnl < -5.0
    with Session(ops.engine) as s:
        account = s.get(m.Account, AUTO)
        assert account is not None
        assert account.realized_pnl == pytest.approx(pos.pnl)
        assert account.equity == pytest.approx(100_000.0 + pos.pnl)
        assert account.day_start_equity == 100_000.0
        exit_fill = s.scalars(select(m.Fill).where(m.Fill.kind == "exit")).one()
        assert exit_fill.price == pos.exit_price
    assert ops.automation().status == m.PAUSED
    assert ops.risk(control="max_daily_drawdown")[-1] == (
        None,
        "max_daily_drawdown",
        "block",
        f"{-pos.pnl:.2f}",
    )
    assert ops.audit("status_paused") == [
        ("system", "status_paused", AUTO, "ok", "daily drawdown limit")
    ]
    assert ops.audit("position_closed")[0][2:4] == (order.order_id, "stop")

    paused = gateway.offer(day.offers[3])
    assert (paused.state, paused.reason) == (m.REJECTED, "status_paused")
    # Resumed by hand, the day's loss still blocks new orders at the drawdown control.
    gateway.set_status(SYMBOL, "active", "alice")
    blocked = gateway.offer(day.offers[4])
    assert (blocked.state, blocked.reason) == (m.REJECTED, "max_daily_drawdown")
    assert controls(ops, blocked.order_id) == [*PASSED[:4], ("max_daily_drawdown", "block")]
    assert ops.risk(blocked.order_id)[-1][3] == f"{-pos.pnl:.2f} of 5.0"


# --- 9. expiry -------------------------------------------------------------------------------


def test_pending_order_expires_at_its_validity(ops: Ops, day: Day) -> None:
    gateway = ops.gateway(approval_gate_trades=1)
    order = gateway.offer(day.offers[0])
    assert order.state == m.PENDING_APPROVAL
    market = FrameMarketData(day.ticks)
    assert gateway.process(market, order.valid_until_ns) == []  # the last valid instant
    assert ops.order(order.order_id).state == m.PENDING_APPROVAL
    [expired] = gateway.process(market, order.valid_until_ns + 1)
    assert (expired.state, expired.reason) == (m.EXPIRED, "not approved before its validity")
    assert ops.audit("order_expired") == [
        (
            "system",
            "order_expired",
            order.order_id,
            "ok",
            "pending_approval -> expired: not approved before its validity",
        )
    ]
    assert ops.count(m.Fill) == 0


def gap(day: Day, start_ns: int, end_ns: int) -> FrameMarketData:
    """The session's trades with none in ``[start_ns, end_ns)`` (a feed gap)."""
    ts = day.ticks["ts_event"]
    return FrameMarketData(day.ticks.loc[(ts < start_ns) | (ts >= end_ns)])


@pytest.mark.parametrize("resume", ["inside_bracket", "outside_bracket"])
def test_approved_order_expires_when_its_first_trade_is_too_late(
    ops: Ops, day: Day, resume: str
) -> None:
    gateway = ops.gateway(approval_gate_trades=0)
    offer = day.offers[0]
    order = gateway.offer(offer)
    assert order.state == m.APPROVED
    entry_after = offer.decision_ns + LATENCY_NS
    later = day.ticks.loc[day.ticks["ts_event"] > order.valid_until_ns]
    if resume == "inside_bracket":
        # Trading resumes right after the validity, at a price the order would have taken.
        resume_ts, resume_price = int(later.iloc[0]["ts_event"]), float(later.iloc[0]["price"])
        assert order.target < resume_price < order.stop  # a short
    else:
        # Trading resumes only once the price has left the bracket: still too late, so the
        # order expires (it never met that price within its validity).
        first = later.drop_duplicates("ts_event")  # the first trade of each time
        prices = first["price"]
        outside = first.loc[(prices <= order.target) | (prices >= order.stop)]
        resume_ts, resume_price = int(outside.iloc[0]["ts_event"]), float(outside.iloc[0]["price"])
    market = gap(day, entry_after, resume_ts)
    assert market.next_trade(SYMBOL, entry_after) == (resume_ts, resume_price)

    # At the end of its validity the order is sent, but no trade has come yet: it waits.
    [submitted] = gateway.process(market, order.valid_until_ns)
    assert submitted.state == m.SUBMITTED
    assert gateway.process(market, order.valid_until_ns) == []
    [expired] = gateway.process(market, day.last_tick_ns)
    assert expired.state == m.EXPIRED
    assert expired.reason is not None and expired.reason.startswith("expired: first trade")
    assert str(resume_ts) in expired.reason
    assert [a[4].split(":")[0] for a in ops.audit() if a[2] == order.order_id] == [
        '{"state"',
        "approved -> submitted",
        "submitted -> expired",
    ]
    assert ops.count(m.Fill) == 0


# --- 10. append-only audit -------------------------------------------------------------------


def test_audit_log_refuses_update_and_delete(ops: Ops, day: Day) -> None:
    gateway = ops.gateway(approval_gate_trades=0)
    gateway.offer(day.offers[0])
    before = ops.audit()
    assert before
    for statement in (
        "UPDATE audit SET outcome = 'forged', detail = 'rewritten'",
        "UPDATE audit SET at_ns = 0 WHERE action = 'order_created'",
        "DELETE FROM audit",
        "DELETE FROM audit WHERE action = 'order_created'",
    ):
        with pytest.raises(DBAPIError, match="append-only"), ops.engine.begin() as connection:
            connection.execute(text(statement))
        assert ops.audit() == before
    # Appending still works.
    gateway.audit("alice", "note", AUTO, "ok", "after the refused edits")
    assert ops.audit()[:-1] == before and ops.audit()[-1][1] == "note"


# --- 11. sizing refusals ---------------------------------------------------------------------


def test_fixed_risk_below_one_lot_is_rejected_size_zero(ops: Ops, day: Day) -> None:
    offer = day.offers[0]
    tiny = ops.gateway(approval_gate_trades=2, sizing="fixed_risk", risk_fraction=1e-6)
    order = tiny.offer(offer)
    # 100,000 x 1e-6 = 0.1 at risk over |entry - stop| > 1 per unit: less than one lot.
    assert abs(order.reference_price - order.stop) > 0.1
    assert (order.state, order.reason, order.qty) == (m.REJECTED, "size_zero", 0.0)
    assert ops.risk(order.order_id) == []  # refused before any control ran
    created = ops.audit("order_created")
    assert [(a[2], a[3]) for a in created] == [(order.order_id, "rejected")]
    assert json.loads(created[0][4]) == {
        "state": m.REJECTED,
        "qty": 0.0,
        "source": "live",
        "reason": "size_zero",
    }
    assert ops.automation().gate_remaining == 2  # a refused order does not use the gate

    sized = ops.gateway(approval_gate_trades=2, sizing="fixed_risk", risk_fraction=1e-4)
    ok = sized.offer(day.offers[1])
    risk_per_unit = abs(ok.reference_price - ok.stop)
    assert ok.state == m.PENDING_APPROVAL
    assert ok.qty == float(int(100_000 * 1e-4 / risk_per_unit)) > 0


# --- alerts (issue 10) -----------------------------------------------------------------------

TOKEN = "123456:test-token"


def _outbox(ops: Ops) -> list[tuple[str, str, str]]:
    with Session(ops.engine) as s:
        rows = s.execute(
            select(m.AlertOutbox.severity, m.AlertOutbox.title, m.AlertOutbox.state).order_by(
                m.AlertOutbox.id
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_risk_events_and_approvals_reach_the_channel_once(ops: Ops, day: Day) -> None:
    with ChannelServer() as telegram:
        channel = TelegramChannel(TOKEN, "-1001", api_base=telegram.url)
        gateway = ops.gateway(approval_gate_trades=1)
        gateway.alert_channels = [channel]
        gated = gateway.offer(day.offers[0])
        assert gated.state == m.PENDING_APPROVAL
        ops.stop_file.write_text("halt\n")
        for offer in day.offers[1:4]:  # one risk event per control and day, however many
            assert gateway.offer(offer).reason == "stop_file"
        assert _outbox(ops) == [
            ("WARN", "BTCUSDT-paper: order waiting for approval", "pending"),
            ("ERROR", "BTCUSDT-paper: stop_file", "pending"),
        ]
        outcomes = AlertDispatcher(ops.engine, [channel]).deliver_due()
        assert [o.state for o in outcomes] == ["delivered", "delivered"]
        texts = [r.payload["text"] for r in telegram.received]
        assert len(texts) == 2 and texts[1].startswith("[ERROR] BTCUSDT-paper: stop_file")
        assert all(r.path == f"/bot{TOKEN}/sendMessage" for r in telegram.received)
        assert AlertDispatcher(ops.engine, [channel]).deliver_due() == []  # nothing twice


def test_a_dead_channel_delays_no_offer_and_keeps_the_alert(ops: Ops, day: Day) -> None:
    dead = TelegramChannel(TOKEN, "-1001", api_base="http://127.0.0.1:9", timeout_s=1.0)
    gateway = ops.gateway(approval_gate_trades=0)
    gateway.alert_channels = [dead]
    ops.stop_file.write_text("halt\n")
    started = time.perf_counter()
    assert gateway.offer(day.offers[0]).reason == "stop_file"
    assert time.perf_counter() - started < 0.5  # the outbox, not the network
    [outcome] = AlertDispatcher(ops.engine, [dead]).deliver_due()
    assert outcome.state == "pending" and outcome.attempts == 1  # retried later
    assert _outbox(ops)[0][:2] == ("ERROR", "BTCUSDT-paper: stop_file")
