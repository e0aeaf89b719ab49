"""The execution gateway: the one path from a signal to a paper order, a fill and a position.

Owns :class:`ExecutionGateway` and :class:`SignalOffer`. Every step is a short transaction on
the operational store (:mod:`.models`), so the paper sensor's runs, the CLI's approvals and
several workers may act at once: a second order for the same signal is impossible (UNIQUE
``(automation, signal_id)``), state changes follow :data:`.models.TRANSITIONS`, and every
decision lands in the audit log or the risk events, refusals included.

Flow (SPEC §5)
    :meth:`ExecutionGateway.offer` sizes the order and runs the risk controls (STOP file,
    automation status, daily trades, daily drawdown); a blocked signal still gets its one order,
    ``rejected`` with the control's name. The automation's first ``approval_gate_trades``
    orders wait in ``pending_approval`` for :meth:`approve` (TOTP, one use per code);
    :meth:`process` submits approved orders to the broker once the controls pass again, fills
    or expires them (an order not filled by the close of the bar after its signal bar expires),
    runs the circuit breaker and the slippage monitor; :meth:`mark` manages open positions bar
    by bar with the backtest's exit rules and marks the paper account to market.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyotp
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fbe_pipeline.execution.broker import (
    Broker,
    Fill,
    MarketData,
    OrderIntent,
    Rejection,
    expected_slippage,
)
from fbe_pipeline.execution.exits import OpenPosition, mark_to_market, on_bar_close
from fbe_pipeline.execution.sizing import order_quantity, round_to_tick
from fbe_pipeline.governance.alerts import ERROR, WARN, Channel, enqueue_alert
from fbe_pipeline.governance.limits import ExecutionConfig
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.audit import record_audit
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.trade_rules import bracket_levels, entry_decision, side_of

log = logging.getLogger(__name__)

NS_PER_MINUTE = 60_000_000_000
NS_PER_DAY = 86_400 * 1_000_000_000
# Controls whose refusal of a signal is a risk event worth an operator's phone (a paused or
# stopped automation refusing more signals is not news: its pause was).
RISK_CONTROLS = ("stop_file", "data_feed_down", "max_daily_trades", "max_daily_drawdown")
SYSTEM = "system"


class ExecutionError(RuntimeError):
    """A refused operation (unknown order, wrong state, bad TOTP, missing role); the message
    says why, and the refusal is audited."""


@dataclass(frozen=True)
class SignalOffer:
    """A signal offered to execution (live or batch).

    Attributes
    ----------
    signal_id, symbol, direction, config_version : str
    trading_date : str
        ``YYYY-MM-DD``.
    bar_close_ns, decision_ns : int
        The signal bar's close and the decision time, ns UTC.
    source : str
        ``live`` or ``batch``.
    context : Mapping
        The signal bar's ``close``, ``high``, ``low``, ``atr14``, ``range_high``,
        ``range_low``, ``vol_ratio`` (:func:`fbe_pipeline.pipeline.signal_context`).
    """

    signal_id: str
    symbol: str
    trading_date: str
    direction: str
    bar_close_ns: int
    decision_ns: int
    config_version: str
    source: str
    context: Mapping[str, float]


def automation_name(symbol: str) -> str:
    """The paper automation of a symbol: ``<SYMBOL>-paper``."""
    return f"{symbol}-paper"


class ExecutionGateway:
    """Paper execution over the operational store.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The operational store, migrated (:func:`.db.upgrade`).
    config : ExecutionConfig
    scoring : ScoringConfig
        Bracket and slippage parameters shared with the backtest.
    instruments : Mapping of str to Instrument
    broker : Broker
    stop_file : Path
        Its presence halts all execution at once.
    clock : callable
        Wall clock, ns UTC (tests inject one).
    feeds_down : callable, optional
        Symbols whose market-data feed is in safe mode now (circuit open, issue 14): their
        automation is paused with reason ``data_feed_down`` and they get no new order.
    alert_channels : sequence of Channel, optional
        Where risk events (a control that blocks, a breaker trip, an automatic pause) and
        orders waiting for approval are pushed, through the alert outbox in the same
        transaction (:mod:`fbe_pipeline.governance.alerts`); none by default.
    """

    def __init__(
        self,
        engine: Engine,
        config: ExecutionConfig,
        scoring: ScoringConfig,
        instruments: Mapping[str, Instrument],
        broker: Broker,
        stop_file: Path,
        clock: Callable[[], int] = time.time_ns,
        feeds_down: Callable[[], set[str]] = set,
        alert_channels: Sequence[Channel] = (),
    ) -> None:
        self.engine = engine
        self.feeds_down = feeds_down
        self.alert_channels = list(alert_channels)
        self.config = config
        self.scoring = scoring
        self.instruments = instruments
        self.broker = broker
        self.stop_file = stop_file
        self.clock = clock

    # -- bookkeeping -------------------------------------------------------------------------

    def _audit(
        self, s: Session, actor: str, action: str, target: str, outcome: str, detail: str = ""
    ) -> None:
        record_audit(s, self.clock(), actor, action, target, outcome, detail)

    def audit(self, actor: str, action: str, target: str, outcome: str, detail: str = "") -> None:
        """Append one entry to the audit log in its own transaction."""
        with Session(self.engine) as s, s.begin():
            self._audit(s, actor, action, target, outcome, detail)

    def _alert(self, s: Session, severity: str, title: str, body: str, key: str) -> None:
        """Queue an alert in this transaction (delivery never waits on it)."""
        if self.alert_channels:
            enqueue_alert(
                s.connection(), self.alert_channels, severity, title, body, key, now_ns=self.clock()
            )

    def _risk(
        self, s: Session, automation: str, order_id: str | None, control: str, ok: bool, why: str
    ) -> None:
        s.add(
            m.RiskEvent(
                at_ns=self.clock(),
                automation=automation,
                order_id=order_id,
                control=control,
                outcome="pass" if ok else "block",
                detail=why,
            )
        )

    def _automation(self, s: Session, symbol: str, day: str) -> tuple[m.Automation, m.Account]:
        name = automation_name(symbol)
        # Lock before reading: a no-op UPDATE takes the row lock on PostgreSQL and the write
        # lock on SQLite, so concurrent offers see each other's gate count and orders of the
        # day instead of both deciding on the same stale values.
        s.execute(
            update(m.Automation)
            .where(m.Automation.name == name)
            .values(updated_ns=m.Automation.updated_ns)
        )
        auto = s.get(m.Automation, name)
        now = self.clock()
        if auto is None:
            auto = m.Automation(
                name=name,
                symbol=symbol,
                status=m.ACTIVE,
                gate_remaining=self.config.approval_gate_trades,
                consecutive_errors=0,
                created_ns=now,
                updated_ns=now,
            )
            s.add(auto)
            s.flush()
        account = s.get(m.Account, name)
        if account is None:
            equity = self.config.starting_equity
            account = m.Account(
                automation=name,
                currency=self.instruments[symbol].currency,
                starting_equity=equity,
                realized_pnl=0.0,
                equity=equity,
                peak_equity=equity,
                day=day,
                day_start_equity=equity,
                updated_ns=now,
            )
            s.add(account)
            s.flush()
        if account.day < day:  # a new trading day opens at the marked equity
            account.day = day
            account.day_start_equity = account.equity
        return auto, account

    def _daily_drawdown(self, account: m.Account) -> tuple[float, float]:
        """``(loss, limit)`` in the price currency: the loss from the day's opening equity and
        the stricter of ``max_daily_drawdown`` and ``max_daily_drawdown_pct`` of that equity."""
        limit = min(
            self.config.max_daily_drawdown,
            account.day_start_equity * self.config.max_daily_drawdown_pct / 100.0,
        )
        return account.day_start_equity - account.equity, limit

    def _feed_down(self, s: Session, auto: m.Automation, order_id: str) -> bool:
        """Whether ``auto``'s market-data feed is in safe mode; if so an active automation is
        paused with reason ``data_feed_down`` (resuming is the operator's call)."""
        down = auto.symbol in self.feeds_down()
        self._risk(s, auto.name, order_id, "data_feed_down", not down, auto.symbol)
        if down and auto.status == m.ACTIVE:
            auto.status = m.PAUSED
            auto.updated_ns = self.clock()
            self._audit(s, SYSTEM, "status_paused", auto.name, "ok", "data_feed_down")
            self._alert(
                s,
                ERROR,
                f"{auto.name}: paused, market data feed down",
                f"the feed of {auto.symbol} is in safe mode; resume with fbe resume",
                f"data_feed_down:{auto.name}:{self.clock() // NS_PER_DAY}",
            )
        return down

    def _controls(
        self, s: Session, auto: m.Automation, account: m.Account, order_id: str, day: str
    ) -> str | None:
        """Run the pre-trade controls; returns the first blocking control's name."""
        halted = self.stop_file.exists()
        self._risk(s, auto.name, order_id, "stop_file", not halted, str(self.stop_file))
        if halted:
            return "stop_file"
        if self._feed_down(s, auto, order_id):
            return "data_feed_down"
        active = auto.status == m.ACTIVE
        self._risk(s, auto.name, order_id, "status", active, auto.status)
        if not active:
            return f"status_{auto.status}"
        trades = s.scalar(
            select(func.count())
            .select_from(m.Order)
            .where(m.Order.automation == auto.name, m.Order.trading_date == day)
            .where(m.Order.state.in_([m.PENDING_APPROVAL, m.APPROVED, m.SUBMITTED, m.FILLED]))
        )
        under = (trades or 0) < self.config.max_daily_trades
        self._risk(s, auto.name, order_id, "max_daily_trades", under, f"{trades} today")
        if not under:
            return "max_daily_trades"
        loss, limit = self._daily_drawdown(account)
        within = loss < limit
        self._risk(s, auto.name, order_id, "max_daily_drawdown", within, f"{loss:.2f} of {limit}")
        if not within:
            return "max_daily_drawdown"
        return None

    # -- signals to orders ---------------------------------------------------------------------

    def offer(self, offer: SignalOffer) -> m.Order:
        """Create the one order of a signal (or return the existing one).

        Returns
        -------
        Order
            Detached copy: ``pending_approval`` (gated), ``approved`` (gate passed) or
            ``rejected`` (``reason``: a control, ``no_levels`` or ``size_zero``).

        Raises
        ------
        KeyError
            If the symbol is not a registered instrument.
        """
        instrument = self.instruments[offer.symbol]
        name = automation_name(offer.symbol)
        order_id = f"{name}:{offer.signal_id}"
        # Two attempts: a worker offering another signal of a new automation may create the
        # automation first (its primary key refuses ours); the second attempt then finds it.
        for attempt in (1, 2):
            try:
                with Session(self.engine, expire_on_commit=False) as s, s.begin():
                    existing = s.get(m.Order, order_id)
                    if existing is not None:
                        return existing
                    return self._new_order(s, offer, instrument, order_id)
            except IntegrityError:  # another worker created it first: the constraint decided
                with Session(self.engine, expire_on_commit=False) as s:
                    found = s.get(m.Order, order_id)
                if found is not None:
                    return found
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _new_order(
        self, s: Session, offer: SignalOffer, instrument: Instrument, order_id: str
    ) -> m.Order:
        auto, account = self._automation(s, offer.symbol, offer.trading_date)
        side = side_of(offer.direction)
        ctx = offer.context
        extreme = ctx.get("high") if side < 0 else ctx.get("low")
        levels = bracket_levels(
            side,
            float("nan") if extreme is None else float(extreme),
            float(ctx.get("atr14", float("nan"))),
            float(ctx.get("range_high", float("nan"))),
            float(ctx.get("range_low", float("nan"))),
            self.scoring.stop_atr_buffer,
        )
        reference = float(ctx.get("close", float("nan")))
        now = self.clock()
        reason = None
        stop = target = qty = float("nan")
        if levels is None:
            reason = "no_levels"
        else:
            tick = instrument.tick_size
            stop = round_to_tick(levels[0], tick, side, "stop")
            target = round_to_tick(levels[1], tick, side, "target")
            qty = order_quantity(
                method=self.config.sizing,
                fixed_qty=self.config.fixed_qty,
                risk_fraction=self.config.risk_fraction,
                equity=account.equity,
                entry=reference,
                stop=stop,
                lot_size=self.config.lot_size,
                max_notional=self.config.max_notional,
            )
            if qty <= 0:
                reason = "size_zero"
        if reason is None:
            reason = self._controls(s, auto, account, order_id, offer.trading_date)
        gated = reason is None and auto.gate_remaining > 0
        state = m.REJECTED if reason else (m.PENDING_APPROVAL if gated else m.APPROVED)
        if gated:
            auto.gate_remaining -= 1
            auto.updated_ns = now
        order = m.Order(
            order_id=order_id,
            automation=auto.name,
            signal_id=offer.signal_id,
            trading_date=offer.trading_date,
            source=offer.source,
            symbol=offer.symbol,
            side=side,
            qty=0.0 if qty != qty else qty,
            state=state,
            reference_price=reference,
            stop=stop,
            target=target,
            vol_ratio=float(ctx.get("vol_ratio", float("nan"))),
            decision_ns=offer.decision_ns,
            valid_until_ns=offer.bar_close_ns + self.config.validity_bars * NS_PER_MINUTE,
            config_version=offer.config_version,
            created_ns=now,
            updated_ns=now,
            reason=reason,
        )
        s.add(order)
        s.flush()
        # The reason goes in the detail: audit.outcome is VARCHAR(16) and PostgreSQL refuses
        # longer values such as "status_paused_slippage" (SQLite would silently accept them).
        detail = json.dumps(
            {"state": state, "qty": order.qty, "source": offer.source, "reason": reason}
        )
        self._audit(s, SYSTEM, "order_created", order_id, "rejected" if reason else "ok", detail)
        if reason in RISK_CONTROLS:
            self._alert(
                s,
                ERROR,
                f"{auto.name}: {reason}",
                f"signal {offer.signal_id} refused by {reason}",
                f"risk:{auto.name}:{reason}:{offer.trading_date}",
            )
        elif state == m.PENDING_APPROVAL:
            self._alert(
                s,
                WARN,
                f"{auto.name}: order waiting for approval",
                f"{order_id} ({offer.direction}, {order.qty:g} {offer.symbol}); "
                f"fbe approve {offer.signal_id} --user U --totp CODE",
                f"approval:{order_id}",
            )
        return order

    # -- people --------------------------------------------------------------------------------

    def _order_by_ref(self, s: Session, ref: str) -> m.Order:
        order = s.get(m.Order, ref)
        if order is None:
            order = s.scalars(select(m.Order).where(m.Order.signal_id == ref)).first()
        if order is None:
            raise ExecutionError(f"no order or signal {ref!r}")
        return order

    def _check_totp(self, s: Session, user: str, code: str, role: str) -> None:
        person = s.get(m.User, user)
        if person is None or person.disabled:
            raise ExecutionError(f"unknown or disabled user {user!r}")
        if person.role not in (role, "admin"):
            raise ExecutionError(f"user {user!r} has role {person.role}; this needs {role}")
        totp = pyotp.TOTP(person.totp_secret)
        now_s = self.clock() / 1e9
        step = int(now_s // totp.interval)
        matched = [
            k
            for k in (step - 1, step, step + 1)
            if code.isdigit() and pyotp.utils.strings_equal(totp.at(k * totp.interval), code)
        ]
        if not matched:
            raise ExecutionError("wrong TOTP code")
        # No SAVEPOINT here: under pysqlite a SAVEPOINT opened before any write starts its own
        # transaction, and its RELEASE commits the code as used even when the decision is then
        # refused and rolled back. A plain insert stays in the decision's transaction; the
        # primary key still refuses a concurrent second use (IntegrityError at the flush).
        if s.get(m.UsedTotp, (user, matched[0])) is not None:
            raise ExecutionError("TOTP code already used")
        s.add(m.UsedTotp(user=user, step=matched[0], used_ns=self.clock()))
        try:
            s.flush()
        except IntegrityError:
            raise ExecutionError("TOTP code already used") from None

    def decide(self, ref: str, user: str, code: str, approve: bool) -> m.Order:
        """Approve or reject a ``pending_approval`` order with the user's TOTP code.

        Parameters
        ----------
        ref : str
            Order id or signal id.
        user : str
            A user with role ``approver`` (or ``admin``).
        code : str
            The user's current TOTP code (±1 step of 30 s); each code is accepted once.

        Raises
        ------
        ExecutionError
            Unknown order/user, wrong role, wrong or reused code, order not pending; the
            refusal is audited.
        """
        action = "approve" if approve else "reject"
        try:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                order = self._order_by_ref(s, ref)
                # Take the write lock (the row lock on PostgreSQL) before reading the state, so
                # two concurrent decisions on one order cannot both pass the pending check.
                s.execute(
                    update(m.Order)
                    .where(m.Order.order_id == order.order_id)
                    .values(updated_ns=m.Order.updated_ns)
                )
                s.refresh(order)
                self._check_totp(s, user, code, "approver")
                if order.state != m.PENDING_APPROVAL:
                    raise ExecutionError(f"order {order.order_id} is {order.state}, not pending")
                order.state = m.APPROVED if approve else m.REJECTED
                order.reason = None if approve else f"rejected by {user}"
                order.updated_ns = self.clock()
                s.add(
                    m.Approval(
                        order_id=order.order_id,
                        user=user,
                        decision=order.state,
                        at_ns=self.clock(),
                    )
                )
                self._audit(s, user, action, order.order_id, "ok")
                return order
        except ExecutionError as exc:
            self.audit(user, action, ref, "refused", str(exc))
            raise

    def set_status(self, symbol: str, status: str, actor: str) -> m.Automation:
        """Pause, resume (``active``) or stop an automation; audited.

        Raises
        ------
        ExecutionError
            On an unknown status or automation (audited).
        """
        name = automation_name(symbol)
        try:
            if status not in m.AUTOMATION_STATES:
                raise ExecutionError(f"unknown status {status!r}")
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                auto = s.get(m.Automation, name)
                if auto is None:
                    raise ExecutionError(f"no automation {name!r} yet (it starts with a signal)")
                old = auto.status
                auto.status = status
                if status == m.ACTIVE:
                    auto.consecutive_errors = 0
                auto.updated_ns = self.clock()
                self._audit(s, actor, f"status_{status}", name, "ok", f"{old} -> {status}")
                return auto
        except ExecutionError as exc:
            self.audit(actor, f"status_{status}", name, "refused", str(exc))
            raise

    # -- orders to fills -----------------------------------------------------------------------

    def process(self, market: MarketData, now_ns: int) -> list[m.Order]:
        """Expire, submit and fill the open orders.

        Parameters
        ----------
        market : MarketData
            Trades for fills.
        now_ns : int
            The market's clock, ns UTC (the latest event time seen, which is the wall clock
            live and the replayed time in a replay): orders whose validity has passed expire.

        Returns
        -------
        list of Order
            Orders whose state changed.
        """
        changed = []
        with Session(self.engine, expire_on_commit=False) as s:
            ids = s.scalars(
                select(m.Order.order_id).where(
                    m.Order.state.in_([m.PENDING_APPROVAL, m.APPROVED, m.SUBMITTED])
                )
            ).all()
        for order_id in ids:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                order = s.get(m.Order, order_id, with_for_update=True)
                if order is None or order.state not in (
                    m.PENDING_APPROVAL,
                    m.APPROVED,
                    m.SUBMITTED,
                ):
                    continue
                if self._step(s, order, market, now_ns):
                    changed.append(order)
        return changed

    def _step(self, s: Session, order: m.Order, market: MarketData, now_ns: int) -> bool:
        auto = s.get(m.Automation, order.automation)
        assert auto is not None
        if order.state == m.PENDING_APPROVAL:
            if now_ns > order.valid_until_ns:
                self._move(s, order, m.EXPIRED, "not approved before its validity")
                return True
            return False
        sent_now = order.state == m.APPROVED  # else it was submitted by an earlier step
        # The STOP file and the status hold a submitted order too: nothing reaches the broker
        # while execution is halted.
        halted = self.stop_file.exists()
        self._risk(s, auto.name, order.order_id, "stop_file", not halted, "before submit")
        halted = self._feed_down(s, auto, order.order_id) or halted
        if halted or auto.status != m.ACTIVE:
            if now_ns > order.valid_until_ns:
                self._move(s, order, m.EXPIRED, "held by a control past its validity")
                return True
            return False
        if order.state == m.APPROVED:
            self._move(s, order, m.SUBMITTED, self.broker.name)
        intent = OrderIntent(
            order_id=order.order_id,
            signal_id=order.signal_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            decision_ns=order.decision_ns,
            valid_until_ns=order.valid_until_ns,
            reference_price=order.reference_price,
            vol_ratio=order.vol_ratio,
            stop=order.stop,
            target=order.target,
        )
        entry_after = order.decision_ns + self.scoring.execution_latency_ms * 1_000_000
        trade = market.next_trade(order.symbol, entry_after)
        # The backtest's entry rule: enter only when the price the order meets lies strictly
        # between the stop and the target (decided before any slippage). A first trade after
        # the validity is not a price the order meets: the broker expires the order.
        if (
            trade is not None
            and trade[0] <= min(now_ns, order.valid_until_ns)
            and not entry_decision(order.side, trade[1], order.stop, order.target)
        ):
            self._move(s, order, m.REJECTED, f"entry_outside_bracket: {trade[1]}")
            return True
        try:
            outcome = self.broker.submit(intent, market, now_ns)
        except Exception as exc:  # any broker failure counts toward the breaker
            auto.consecutive_errors += 1
            tripped = auto.consecutive_errors >= self.config.breaker_errors
            self._risk(s, auto.name, order.order_id, "breaker", not tripped, repr(exc))
            if tripped and auto.status != m.STOPPED:
                auto.status = m.STOPPED
                self._audit(s, SYSTEM, "breaker_trip", auto.name, "stopped", repr(exc))
                self._alert(
                    s,
                    ERROR,
                    f"{auto.name}: circuit breaker tripped",
                    f"stopped after {auto.consecutive_errors} broker errors: {exc!r}",
                    f"breaker:{auto.name}:{order.trading_date}",
                )
            return True
        if outcome is None:  # no price yet: changed only if it was just submitted
            return sent_now
        auto.consecutive_errors = 0
        if isinstance(outcome, Rejection):
            state = m.EXPIRED if outcome.reason == "expired" else m.REJECTED
            self._move(s, order, state, f"{outcome.reason}: {outcome.detail}")
            return True
        self._fill(s, order, outcome)
        self._slippage_monitor(s, auto)
        return True

    def _move(self, s: Session, order: m.Order, state: str, why: str) -> None:
        if state not in m.TRANSITIONS[order.state]:
            raise ExecutionError(f"order {order.order_id}: {order.state} -> {state} not allowed")
        old, order.state = order.state, state
        order.updated_ns = self.clock()
        if state in (m.REJECTED, m.EXPIRED, m.CANCELLED):
            order.reason = why
        self._audit(s, SYSTEM, f"order_{state}", order.order_id, "ok", f"{old} -> {state}: {why}")

    def _fill(self, s: Session, order: m.Order, fill: Fill) -> None:
        self._move(s, order, m.FILLED, f"at {fill.price}")
        order.fill_ns = fill.ts_ns
        order.fill_price = fill.price
        order.estimated_slippage = fill.estimated_slippage
        order.realized_slippage = fill.realized_slippage
        s.add(
            m.Fill(
                order_id=order.order_id,
                kind="entry",
                ts_ns=fill.ts_ns,
                price=fill.price,
                qty=fill.qty,
                reference_price=fill.reference_price,
                estimated_slippage=fill.estimated_slippage,
                realized_slippage=fill.realized_slippage,
            )
        )
        s.add(
            m.Position(
                order_id=order.order_id,
                automation=order.automation,
                symbol=order.symbol,
                side=order.side,
                qty=fill.qty,
                entry_price=fill.price,
                entry_ns=fill.ts_ns,
                stop=order.stop,
                target=order.target,
                bars_held=0,
                last_bar_ns=0,
                status="open",
                mark_price=fill.price,
                unrealized_pnl=0.0,
            )
        )

    def _slippage_monitor(self, s: Session, auto: m.Automation) -> None:
        k = self.config.slippage_window
        rows = s.execute(
            select(m.Fill.realized_slippage, m.Fill.estimated_slippage)
            .join(m.Order, m.Order.order_id == m.Fill.order_id)
            .where(m.Order.automation == auto.name, m.Fill.kind == "entry")
            .order_by(m.Fill.id.desc())
            .limit(k)
        ).all()
        if len(rows) < k:
            return
        estimated = sum(r[1] for r in rows)
        ratio = sum(r[0] for r in rows) / estimated if estimated > 0 else 0.0
        ok = ratio <= self.config.slippage_ratio_limit
        self._risk(s, auto.name, None, "slippage_monitor", ok, f"ratio {ratio:.3f} over {k}")
        if not ok and auto.status == m.ACTIVE:
            auto.status = m.PAUSED_SLIPPAGE
            self._audit(s, SYSTEM, "status_paused_slippage", auto.name, "ok", f"ratio {ratio:.3f}")
            self._alert(
                s,
                ERROR,
                f"{auto.name}: paused for slippage",
                f"mean realized / estimated slippage {ratio:.2f} over the latest fills",
                f"paused_slippage:{auto.name}:{self.clock() // NS_PER_DAY}",
            )

    # -- positions -----------------------------------------------------------------------------

    def mark(
        self,
        symbol: str,
        bars: Iterable[Mapping[str, float]],
        session_close_ns: int,
        trading_date: str,
    ) -> list[m.Position]:
        """Manage the symbol's open positions over closed bars and mark the account.

        Parameters
        ----------
        bars : iterable of Mapping
            Closed 1-minute bars in time order: ``ts`` (bar open, ns UTC), ``open``, ``high``,
            ``low``, ``close``; bars at or before a position's last processed bar are skipped.
        session_close_ns : int
            The session's close, ns UTC (the bar ending there is the last session bar).
        trading_date : str
            ``YYYY-MM-DD``; the daily drawdown is measured from this day's opening equity.

        Returns
        -------
        list of Position
            Positions closed by these bars.
        """
        closed = []
        bars = list(bars)
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            auto, account = self._automation(s, symbol, trading_date)
            positions = s.scalars(
                select(m.Position).where(m.Position.symbol == symbol, m.Position.status == "open")
            ).all()
            for pos in positions:
                entry_order = s.get(m.Order, pos.order_id)
                assert entry_order is not None
                for bar in bars:
                    ts = int(bar["ts"])
                    if ts <= pos.last_bar_ns or ts < pos.entry_ns - pos.entry_ns % NS_PER_MINUTE:
                        continue
                    open_pos = OpenPosition(
                        order_id=pos.order_id,
                        signal_id=pos.order_id.split(":", 1)[1],
                        symbol=symbol,
                        side=pos.side,
                        qty=pos.qty,
                        entry_price=pos.entry_price,
                        entry_ns=pos.entry_ns,
                        stop=pos.stop,
                        target=pos.target,
                        bars_held=pos.bars_held,
                        vol_ratio=entry_order.vol_ratio,
                    )
                    last = ts + NS_PER_MINUTE >= session_close_ns
                    decision = on_bar_close(open_pos, bar, last, self.scoring)
                    pos.bars_held += 1
                    pos.last_bar_ns = ts
                    pos.mark_price = float(bar["close"])
                    if decision is None:
                        pos.unrealized_pnl = mark_to_market(open_pos, float(bar["close"]))
                        continue
                    pos.status = "closed"
                    pos.exit_ns = decision.exit_ns
                    pos.exit_price = decision.fill_price
                    pos.exit_reason = decision.reason
                    pos.pnl = decision.pnl
                    pos.unrealized_pnl = 0.0
                    account.realized_pnl += decision.pnl
                    s.add(
                        m.Fill(
                            order_id=pos.order_id,
                            kind="exit",
                            ts_ns=decision.exit_ns,
                            price=decision.fill_price,
                            qty=pos.qty,
                            reference_price=decision.reference_price,
                            estimated_slippage=expected_slippage(
                                decision.reference_price, entry_order.vol_ratio, self.scoring
                            ),
                            realized_slippage=decision.slippage,
                        )
                    )
                    self._audit(s, SYSTEM, "position_closed", pos.order_id, decision.reason)
                    closed.append(pos)
                    break
            open_pnl = s.scalar(
                select(func.coalesce(func.sum(m.Position.unrealized_pnl), 0.0)).where(
                    m.Position.automation == auto.name, m.Position.status == "open"
                )
            )
            account.equity = account.starting_equity + account.realized_pnl + float(open_pnl or 0)
            account.peak_equity = max(account.peak_equity, account.equity)
            account.updated_ns = self.clock()
            loss, limit = self._daily_drawdown(account)
            if loss >= limit and auto.status == m.ACTIVE:
                auto.status = m.PAUSED
                self._risk(s, auto.name, None, "max_daily_drawdown", False, f"{loss:.2f}")
                self._audit(s, SYSTEM, "status_paused", auto.name, "ok", "daily drawdown limit")
                self._alert(
                    s,
                    ERROR,
                    f"{auto.name}: paused at the daily drawdown limit",
                    f"loss {loss:.2f} {account.currency} of a {limit:.2f} limit",
                    f"drawdown:{auto.name}:{account.day}",
                )
        return closed
