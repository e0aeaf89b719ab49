"""Shared helpers of the operator console's tests: a real uvicorn server on a free loopback
port, users of every role, a pending order from a real signal of the sample data, and a signed-in
HTTP client."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

import httpx
import pyotp
import uvicorn
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from fbe_pipeline.console.app import create_app
from fbe_pipeline.execution.gateway import SignalOffer
from fbe_pipeline.execution.market import offers_from_live
from fbe_pipeline.execution.runtime import gateway_from_env
from fbe_pipeline.governance.users import add_user
from fbe_pipeline.live.replay import read_ticks
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.ops import models as m
from fbe_pipeline.pipeline import (
    session_bars,
    session_features,
    session_scores,
    session_signals,
    session_ticks,
    signal_context,
)
from fbe_pipeline.research.config import ScoringConfig

PASSWORD = "console-test-password"
ROLES = {"admin": "admin", "ann": "approver", "otto": "operator", "vic": "viewer"}
TRADES_CSV = "tardis/tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_console(home: Path) -> Iterator[str]:
    """The console of ``home`` served by uvicorn in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(home), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the console did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@cache
def first_offer(sample_data: Path) -> SignalOffer:
    """The first signal (``trigger_score=30``) of the real BTCUSDT trades of 2020-02-22, as
    ``tests/test_execution_gateway.py`` computes it with the batch pipeline's functions."""
    day = date(2020, 2, 22)
    scoring = ScoringConfig(trigger_score=30)
    instrument = get_instrument("BTCUSDT")
    raw = read_ticks("tardis-trades", [sample_data / TRADES_CSV], instrument)
    ticks, _ = session_ticks(raw, None, instrument, day)
    ticks = ticks.loc[ticks["ohlc_eligible"].astype(bool)]
    ticks = ticks.sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)
    bars = session_bars(ticks, instrument, day)
    features = session_features(bars, day, None)
    signals = session_signals(session_scores(features, scoring), scoring)
    context = signal_context(signals, features, bars).set_index("signal_id")
    # As the live signal store hands them to the gateway: the bar context as JSON.
    first = signals.head(1)
    bar = context.loc[first["signal_id"].iloc[0]]
    first = first.assign(context=[json.dumps({k: float(v) for k, v in bar.items()})])
    return offers_from_live(first)[0]


@dataclass
class Desk:
    """A fresh ``FBE_HOME`` with one user per role (password :data:`PASSWORD`), a pending
    order and the console serving it."""

    home: Path
    url: str
    engine: Engine
    secrets: dict[str, str]
    order_id: str

    def totp(self, user: str, step_offset: int = 0) -> str:
        """``user``'s TOTP code of the current 30 s step plus ``step_offset`` (the gateway
        accepts ±1 step, each code once)."""
        totp = pyotp.TOTP(self.secrets[user])
        return totp.at(time.time() + step_offset * totp.interval)

    def order_state(self) -> str:
        with Session(self.engine) as s:
            order = s.get(m.Order, self.order_id)
            assert order is not None
            return order.state

    def audit(self, actor: str) -> list[tuple[str, str, str, str]]:
        """``(action, target, outcome, detail)`` of ``actor``'s audit entries, in order."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(
                    m.AuditEntry.action,
                    m.AuditEntry.target,
                    m.AuditEntry.outcome,
                    m.AuditEntry.detail,
                )
                .where(m.AuditEntry.actor == actor)
                .order_by(m.AuditEntry.id)
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]

    def config_state(self, version: int) -> str:
        with Session(self.engine) as s:
            row = s.get(m.ConfigVersion, version)
            assert row is not None
            return row.state


@contextmanager
def desk(home: Path, sample_data: Path) -> Iterator[Desk]:
    """Users (the admin first, as ``fbe user add`` requires), the first real signal offered to
    the gateway (the automation's first order waits for approval), and the console."""
    gateway = gateway_from_env(home)
    secrets = {}
    for name, role in ROLES.items():
        secrets[name] = pyotp.random_base32()
        add_user(gateway.engine, name, role, secret=secrets[name], password=PASSWORD, actor="admin")
    order = gateway.offer(first_offer(sample_data))
    assert order.state == m.PENDING_APPROVAL, order.reason
    try:
        with running_console(home) as url:
            yield Desk(home, url, gateway.engine, secrets, order.order_id)
    finally:
        gateway.engine.dispose()


def csrf_token(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def signed_in(url: str, name: str, password: str = PASSWORD) -> httpx.Client:
    """An HTTP client signed in to the console as ``name``."""
    client = httpx.Client(base_url=url, timeout=30)
    token = csrf_token(client.get("/login").text)
    response = client.post("/login", data={"csrf": token, "name": name, "password": password})
    assert response.status_code == 303, response.text
    return client
