"""What the console's pages show, read from the same stores and with the same functions as the
CLI's listings (``fbe signals``, ``fbe orders``, ``fbe positions``, ``fbe feeds``,
``fbe config history``, ``fbe user list``). Read-only: nothing here changes state."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, Engine, or_, select
from sqlalchemy.orm import Session

from fbe_pipeline.execution.credentials import BROKER_ENV_PREFIX
from fbe_pipeline.live.feeds.status import FeedStatusStore, feeds_path
from fbe_pipeline.live.signal_store import LiveSignalStore, signals_path
from fbe_pipeline.ops import models as m
from fbe_pipeline.storage.warehouse import batch_signals

SIGNAL_COLUMNS = ["signal_id", "symbol", "trading_date", "direction", "score", "ts"]
REPORT_SUFFIXES = frozenset({".html", ".png", ".svg", ".md", ".json", ".csv"})


@dataclass(frozen=True)
class Table:
    """A frame as the templates show it: column names and rows of display strings."""

    columns: list[str]
    rows: list[list[str]]


def cell(column: str, value: Any) -> str:
    """``value`` of ``column`` for display: empty for None and NaN, ISO-8601 UTC for
    Timestamps and ``*_ns`` integers, 6 significant digits for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    # Operational-store times are int ns UTC (float in a column with gaps); people read
    # ISO-8601.
    if column.endswith("_ns") and isinstance(value, int | float | np.number) and value > 0:
        return pd.Timestamp(int(value), unit="ns", tz="UTC").isoformat()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def table(frame: pd.DataFrame, columns: Iterable[str] | None = None) -> Table:
    """``frame`` (optionally only ``columns`` that exist in it) as a :class:`Table`."""
    cols = [c for c in (columns or frame.columns) if c in frame.columns]
    rows = [
        [cell(c, v) for c, v in zip(cols, record, strict=True)]
        for record in frame[cols].itertuples(index=False, name=None)
    ]
    return Table(cols, rows)


def latest_signals(home: Path, limit: int = 50) -> tuple[Table, Table, list[str]]:
    """The newest ``limit`` live and batch signals (newest first) and the problems met
    reading them (an unreadable warehouse file, say)."""
    problems = []
    live = pd.DataFrame(columns=SIGNAL_COLUMNS)
    if signals_path(home).exists():
        store = LiveSignalStore(signals_path(home))
        try:
            live = store.signals()
        finally:
            store.close()
    try:
        batch = batch_signals(source=home)
    except (duckdb.Error, OSError, ValueError) as exc:
        problems.append(f"batch signals unavailable: {exc}")
        batch = pd.DataFrame(columns=SIGNAL_COLUMNS)
    shown = [*SIGNAL_COLUMNS, "recorded_at"]
    return (
        table(live.iloc[::-1].head(limit), shown),
        table(batch.iloc[::-1].head(limit), shown),
        problems,
    )


def pending_orders(engine: Engine) -> list[dict[str, Any]]:
    """Orders waiting for approval, oldest first, with what an approver weighs."""
    with Session(engine) as s:
        rows = s.scalars(
            select(m.Order)
            .where(m.Order.state == m.PENDING_APPROVAL)
            .order_by(m.Order.created_ns, m.Order.order_id)
        ).all()
        return [
            {
                "order_id": o.order_id,
                "signal_id": o.signal_id,
                "symbol": o.symbol,
                "side": "buy" if o.side > 0 else "sell",
                "qty": cell("qty", o.qty),
                "reference_price": cell("price", o.reference_price),
                "stop": cell("stop", o.stop),
                "target": cell("target", o.target),
                "decision_time": cell("decision_ns", o.decision_ns),
            }
            for o in rows
        ]


def automations(engine: Engine) -> list[dict[str, Any]]:
    """Every automation with its status, approval gate, broker error count and account."""
    with Session(engine) as s:
        rows = s.execute(
            select(m.Automation, m.Account)
            .join(m.Account, m.Account.automation == m.Automation.name, isouter=True)
            .order_by(m.Automation.name)
        ).all()
        return [
            {
                "name": a.name,
                "symbol": a.symbol,
                "status": a.status,
                "gate_remaining": a.gate_remaining,
                "consecutive_errors": a.consecutive_errors,
                "equity": "" if acc is None else cell("equity", acc.equity),
                "updated": cell("updated_ns", a.updated_ns),
            }
            for a, acc in rows
        ]


def fills(engine: Engine, limit: int = 200) -> Table:
    """The newest ``limit`` fills (entries and exits) with their order's symbol and side."""
    with Session(engine) as s:
        rows = s.execute(
            select(m.Fill, m.Order.symbol, m.Order.side)
            .join(m.Order, m.Order.order_id == m.Fill.order_id)
            .order_by(m.Fill.ts_ns.desc(), m.Fill.id.desc())
            .limit(limit)
        ).all()
        frame = pd.DataFrame(
            [
                {
                    "order_id": f.order_id,
                    "symbol": symbol,
                    "side": "buy" if side > 0 else "sell",
                    "kind": f.kind,
                    "ts_ns": f.ts_ns,
                    "price": f.price,
                    "qty": f.qty,
                    "reference_price": f.reference_price,
                    "estimated_slippage": f.estimated_slippage,
                    "realized_slippage": f.realized_slippage,
                }
                for f, symbol, side in rows
            ]
        )
    return table(frame) if len(frame) else Table([], [])


def feeds(home: Path) -> Table:
    """Every (feed, symbol) with its state and last heartbeat (``fbe feeds``); empty while no
    feed has run."""
    if not feeds_path(home).exists():
        return Table([], [])
    store = FeedStatusStore(feeds_path(home))
    try:
        rows = store.symbols()
    finally:
        store.close()
    shown = ["feed", "symbol", "venue", "state", "last_message_ns", "updated_ns"]
    return table(rows, [*shown, "received", "reconnects", "lag_ms", "gaps"])


def audit_rows(engine: Engine, credential: bool, limit: int = 200) -> Table:
    """The newest ``limit`` audit entries: those about broker credentials (``credential`` in
    the action, e.g. ``credential_read`` by the paper run) or about the circuit breaker and
    automation status changes."""
    where: ColumnElement[bool]
    if credential:
        where = m.AuditEntry.action.like("%credential%")
    else:
        where = or_(m.AuditEntry.action == "breaker_trip", m.AuditEntry.action.like("status_%"))
    with Session(engine) as s:
        rows = s.scalars(
            select(m.AuditEntry).where(where).order_by(m.AuditEntry.id.desc()).limit(limit)
        ).all()
        frame = pd.DataFrame(
            [
                {
                    "at_ns": r.at_ns,
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "outcome": r.outcome,
                    "detail": r.detail,
                }
                for r in rows
            ]
        )
    return table(frame) if len(frame) else Table([], [])


def risk_events(engine: Engine, limit: int = 200) -> Table:
    """The newest ``limit`` risk events that blocked something (controls that passed are
    recorded for every order and would bury them)."""
    with Session(engine) as s:
        rows = s.scalars(
            select(m.RiskEvent)
            .where(m.RiskEvent.outcome != "pass")
            .order_by(m.RiskEvent.id.desc())
            .limit(limit)
        ).all()
        frame = pd.DataFrame(
            [
                {
                    "at_ns": r.at_ns,
                    "automation": r.automation,
                    "order_id": r.order_id,
                    "control": r.control,
                    "outcome": r.outcome,
                    "detail": r.detail,
                }
                for r in rows
            ]
        )
    return table(frame) if len(frame) else Table([], [])


def config_history(history: pd.DataFrame) -> Table:
    """``ConfigStore.history()`` newest first, times as ISO-8601."""
    return table(history.iloc[::-1]) if len(history) else Table([], [])


def pending_versions(history: pd.DataFrame) -> list[dict[str, Any]]:
    """Config versions waiting for a second approver: version, requester, reason, diff."""
    if not len(history):
        return []
    held = history.loc[history["state"] == m.CONFIG_PENDING]
    return [
        {
            "version": int(r.version),
            "requested_by": str(r.requested_by),
            "reason": str(r.reason),
            "diff": json.loads(str(r.diff)),
        }
        for r in held.itertuples(index=False)
    ]


@dataclass(frozen=True)
class Report:
    """A rendered review page under ``$FBE_HOME/reports``."""

    kind: str
    symbol: str
    first: date
    last: date
    path: str


def reports(
    home: Path, symbol: str | None = None, start: date | None = None, end: date | None = None
) -> list[Report]:
    """The daily (``reports/daily/<SYMBOL>/<DATE>.html``), weekly
    (``reports/weekly/<SYMBOL>/<FIRST>_<LAST>.html``) and date-range (``reports/range/...``)
    review pages, newest first, of ``symbol`` (any case) whose dates overlap ``start..end``
    (inclusive)."""
    root = home / "reports"
    found = []
    for kind in ("daily", "weekly", "range"):
        for page in sorted((root / kind).glob("*/*.html")):
            try:
                parts = [date.fromisoformat(x) for x in page.stem.split("_")]
            except ValueError:
                continue  # not a review page
            first, last = parts[0], parts[-1]
            sym = page.parent.name
            if symbol and sym.upper() != symbol.upper():
                continue
            if (start and last < start) or (end and first > end):
                continue
            found.append(Report(kind, sym, first, last, page.relative_to(root).as_posix()))
    return sorted(found, key=lambda r: (r.last, r.kind, r.symbol), reverse=True)


def report_file(home: Path, relative: str) -> Path:
    """The file ``relative`` names under ``$FBE_HOME/reports``, once every link and ``..`` is
    resolved.

    Raises
    ------
    PermissionError
        When the path leads outside that directory (path traversal, an absolute path, a link).
    FileNotFoundError
        When it is not a regular file of a report type (page, chart, data).
    """
    root = (home / "reports").resolve()
    try:
        target = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte
        raise PermissionError(relative) from None
    if not target.is_relative_to(root):
        raise PermissionError(relative)
    if not target.is_file() or target.suffix.lower() not in REPORT_SUFFIXES:
        raise FileNotFoundError(relative)
    return target


def credential_holders(proc: Path = Path("/proc")) -> Table:
    """The isolation boundary as it is right now: every process of this machine whose
    environment holds a broker credential (``FBE_BROKER_*``; names only, never values), with
    its pid, parent pid and command line. By design only the execution code location's server
    and its run workers (and the ``fbe live`` supervisor that hands them over) appear; a
    process that cannot be read (another user's) is left out.

    Returns
    -------
    Table
        Columns ``pid``, ``ppid``, ``command``, ``credentials``; sorted by pid.
    """
    rows = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        names = sorted(
            {
                v.split(b"=", 1)[0].decode(errors="replace")
                for v in environ
                if v.startswith(BROKER_ENV_PREFIX.encode())
            }
        )
        if names:
            # The parent pid is the 4th field after the parenthesised command name.
            ppid = stat.rsplit(")", 1)[-1].split()[1]
            rows.append([entry.name, ppid, command.strip()[:160], ", ".join(names)])
    rows.sort(key=lambda r: int(r[0]))
    return Table(["pid", "ppid", "command", "credentials"], rows)
