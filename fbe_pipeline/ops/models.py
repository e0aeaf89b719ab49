"""Tables of the operational store (SQLAlchemy 2): automations, paper accounts, orders, fills,
positions, approvals, users, used TOTP codes, risk events and the append-only audit log.

Owns :data:`Base` (its ``metadata`` is what the Alembic migrations in ``migrations/`` create)
and the order states. Times are int64 ns UTC; prices in the instrument's price currency;
quantities in the instrument's units (shares, contracts, coins). Imported by the execution
package and the CLI; nothing in detection imports it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The order state machine (SPEC §5, issue 9).
PENDING_APPROVAL = "pending_approval"
APPROVED = "approved"
SUBMITTED = "submitted"
FILLED = "filled"
REJECTED = "rejected"
CANCELLED = "cancelled"
EXPIRED = "expired"
ORDER_STATES = (PENDING_APPROVAL, APPROVED, SUBMITTED, FILLED, REJECTED, CANCELLED, EXPIRED)
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING_APPROVAL: frozenset({APPROVED, REJECTED, CANCELLED, EXPIRED}),
    APPROVED: frozenset({SUBMITTED, CANCELLED, EXPIRED, REJECTED}),
    SUBMITTED: frozenset({FILLED, REJECTED, CANCELLED, EXPIRED}),
    FILLED: frozenset(),
    REJECTED: frozenset(),
    CANCELLED: frozenset(),
    EXPIRED: frozenset(),
}

# Automation status (SPEC §5 risk controls).
ACTIVE = "active"
PAUSED = "paused"
PAUSED_SLIPPAGE = "paused_slippage"
STOPPED = "stopped"
AUTOMATION_STATES = (ACTIVE, PAUSED, PAUSED_SLIPPAGE, STOPPED)


class Base(DeclarativeBase):
    """Declarative base of the operational store."""


class Automation(Base):
    """One automation: a symbol traded by the strategy, its status, its first-trades gate
    (``gate_remaining`` orders still need a human approval) and its circuit breaker
    (``consecutive_errors`` of the broker since the last success)."""

    __tablename__ = "automations"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default=ACTIVE)
    gate_remaining: Mapped[int] = mapped_column(Integer)
    consecutive_errors: Mapped[int] = mapped_column(Integer, default=0)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    updated_ns: Mapped[int] = mapped_column(BigInteger)


class Account(Base):
    """The paper account of an automation, in the instrument's price currency: starting
    equity, realized PnL, the marked equity, its peak, and the day's opening equity (for the
    daily drawdown limit, in currency and in percent)."""

    __tablename__ = "accounts"
    automation: Mapped[str] = mapped_column(ForeignKey("automations.name"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(8))
    starting_equity: Mapped[float] = mapped_column(Float)
    realized_pnl: Mapped[float] = mapped_column(Float, default=0.0)
    equity: Mapped[float] = mapped_column(Float)
    peak_equity: Mapped[float] = mapped_column(Float)
    day: Mapped[str] = mapped_column(String(10))
    day_start_equity: Mapped[float] = mapped_column(Float)
    updated_ns: Mapped[int] = mapped_column(BigInteger)


class Order(Base):
    """One order per (automation, signal): the UNIQUE constraint makes a second order for the
    same signal impossible, whatever re-runs, duplicate sensor ticks or concurrent workers do."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("automation", "signal_id", name="one_order_per_signal"),
        Index("orders_state", "state"),
    )
    order_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    automation: Mapped[str] = mapped_column(ForeignKey("automations.name"))
    signal_id: Mapped[str] = mapped_column(String(128))
    trading_date: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(16))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[int] = mapped_column(Integer)
    qty: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(32))
    reference_price: Mapped[float] = mapped_column(Float)
    stop: Mapped[float] = mapped_column(Float)
    target: Mapped[float] = mapped_column(Float)
    vol_ratio: Mapped[float] = mapped_column(Float)
    decision_ns: Mapped[int] = mapped_column(BigInteger)
    valid_until_ns: Mapped[int] = mapped_column(BigInteger)
    config_version: Mapped[str] = mapped_column(String(32))
    created_ns: Mapped[int] = mapped_column(BigInteger)
    updated_ns: Mapped[int] = mapped_column(BigInteger)
    fill_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    fill_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    estimated_slippage: Mapped[float | None] = mapped_column(Float, nullable=True)
    realized_slippage: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class Fill(Base):
    """An entry or exit fill with its estimated and realized slippage (price currency)."""

    __tablename__ = "fills"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.order_id"))
    kind: Mapped[str] = mapped_column(String(8))
    ts_ns: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[float] = mapped_column(Float)
    qty: Mapped[float] = mapped_column(Float)
    reference_price: Mapped[float] = mapped_column(Float)
    estimated_slippage: Mapped[float] = mapped_column(Float)
    realized_slippage: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("order_id", "kind", name="one_fill_per_leg"),)


class Position(Base):
    """A filled entry and its exits (stop and target one-cancels-other, time stop, session
    end), marked to market at every bar close until it is closed."""

    __tablename__ = "positions"
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.order_id"), primary_key=True)
    automation: Mapped[str] = mapped_column(ForeignKey("automations.name"))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[int] = mapped_column(Integer)
    qty: Mapped[float] = mapped_column(Float)
    entry_price: Mapped[float] = mapped_column(Float)
    entry_ns: Mapped[int] = mapped_column(BigInteger)
    stop: Mapped[float] = mapped_column(Float)
    target: Mapped[float] = mapped_column(Float)
    bars_held: Mapped[int] = mapped_column(Integer, default=0)
    last_bar_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(8))
    mark_price: Mapped[float] = mapped_column(Float)
    unrealized_pnl: Mapped[float] = mapped_column(Float, default=0.0)
    exit_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    exit_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pnl: Mapped[float | None] = mapped_column(Float, nullable=True)


class User(Base):
    """A person who may approve orders, with the TOTP secret enrolled for them."""

    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    totp_secret: Mapped[str] = mapped_column(String(64))
    disabled: Mapped[int] = mapped_column(Integer, default=0)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    # argon2id (argon2-cffi's PasswordHasher); never the password itself.
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)


class UsedTotp(Base):
    """A TOTP time step already accepted for a user: a code is accepted once only."""

    __tablename__ = "used_totp"
    user: Mapped[str] = mapped_column(ForeignKey("users.name"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    used_ns: Mapped[int] = mapped_column(BigInteger)


class Approval(Base):
    """A human decision on a gated order."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.order_id"))
    user: Mapped[str] = mapped_column(ForeignKey("users.name"))
    decision: Mapped[str] = mapped_column(String(16))
    at_ns: Mapped[int] = mapped_column(BigInteger)


class RiskEvent(Base):
    """The outcome of one risk control for one order or automation (pass, block or trip)."""

    __tablename__ = "risk_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at_ns: Mapped[int] = mapped_column(BigInteger)
    automation: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    control: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


class AuditEntry(Base):
    """One action of a person or of the system, refusals included. Append-only: the
    migration installs triggers that refuse UPDATE and DELETE."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at_ns: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(160))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


# Config version states (issue 10): a change in market hours is active at once (from the next
# bar); out of hours it is pending until a second approver makes it active. The version in
# effect is the newest active one whose effective time has come.
CONFIG_PENDING = "pending_approval"
CONFIG_ACTIVE = "active"


class ConfigVersion(Base):
    """One version of the scoring and execution configuration: who asked for it, why, the
    diff from the version it replaced, and its approval."""

    __tablename__ = "config_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    config_json: Mapped[str] = mapped_column(Text)
    diff_json: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_ns: Mapped[int] = mapped_column(BigInteger)
    out_of_hours: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(32))
    approved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approved_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    effective_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    digest: Mapped[str] = mapped_column(String(64))


class AlertOutbox(Base):
    """An alert waiting for (or done with) delivery to one channel; the outbox makes delivery
    durable and never in the way of detection or execution."""

    __tablename__ = "alert_outbox"
    __table_args__ = (
        UniqueConstraint("channel", "dedup_key", name="uq_alert_dedup"),
        Index("alert_outbox_due", "state", "next_attempt_ns"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(8))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    next_attempt_ns: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
