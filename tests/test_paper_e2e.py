"""Paper execution end to end (issue 9): real Binance futures trades replayed twice through
``fbe live`` (ingest service, streaming detector, Dagster daemon with the paper sensor on a
temporary ``DAGSTER_HOME``), then approvals with TOTP codes through ``fbe approve``; on the
operational store in SQLite and in a real PostgreSQL server.

Expected: one order per live signal however often the ticks arrive, the first ten of the
automation waiting for approval, approved ones filled with slippage and shown in positions, a
reused code refused and audited.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import create_engine, text

from fbe_pipeline.live.replay import read_ticks, replay_frame
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.settings import REPO_ROOT, sample_data_dir
from tests.processes import cli_env
from tests.test_live import free_port
from tests.test_live_crash import _wait_healthy

KEY = "paper-e2e-key"
TARDIS = sample_data_dir() / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"


def _fbe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fbe_pipeline.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _orders(env: dict[str, str]) -> list[dict[str, object]]:
    result = _fbe(env, "orders", "--format", "json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def _wait_for(what: str, check, timeout_s: float = 180):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def test_replayed_twice_one_order_per_signal_gated_approved_filled(
    tmp_path: Path, ops_database_url: str
) -> None:
    env = cli_env(
        tmp_path,
        sample_data_dir(),
        FBE_WEBHOOK_PASSPHRASE="p",
        FBE_INGEST_HMAC_KEY=KEY,
        FBE_LIVE_SEAL_INTERVAL_S="5",
        # Approvals come minutes after the replayed bars: keep the orders valid.
        FBE_EXECUTION_CONFIG='{"validity_bars": 100000}',
        FBE_DATABASE_URL=ops_database_url,
    )
    port = free_port()
    live = subprocess.Popen(
        [sys.executable, "-m", "fbe_pipeline.cli", "live", "--no-ui", "--port", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_healthy(port, live, timeout_s=120)
        ticks = read_ticks("tardis-trades", [TARDIS], get_instrument("BTCUSDT"))
        first = replay_frame(ticks, f"http://127.0.0.1:{port}", KEY)
        second = replay_frame(ticks, f"http://127.0.0.1:{port}", KEY)
        assert first.accepted == 9999 and second.duplicates == 9999 and second.accepted == 0

        def live_signals() -> list[str]:
            with sqlite3.connect(tmp_path / "live" / "signals.sqlite") as db:
                found = sorted(r[0] for r in db.execute("SELECT signal_id FROM live_signals"))
            return found if len(found) == 7 else []

        signal_ids = _wait_for("the live signals", live_signals)

        orders = _wait_for("an order per signal", lambda: len(_orders(env)) == 7 and _orders(env))
        assert sorted(str(o["signal_id"]) for o in orders) == signal_ids
        # The automation's first ten trades wait for a person.
        assert {o["state"] for o in orders} == {"pending_approval"}

        secrets = {}
        people = {
            **env,
            "FBE_NEW_PASSWORD": "a long pass phrase",
            "FBE_PASSWORD": "a long pass phrase",
        }
        assert _fbe(people, "user", "add", "root", "--role", "admin").returncode == 0
        for name in ("alice", "bob"):
            added = _fbe(people, "user", "add", name, "--role", "approver", "--as", "root")
            assert added.returncode == 0, added.stderr
            secrets[name] = pyotp.parse_uri(added.stdout.strip()).secret
        code = pyotp.TOTP(secrets["alice"]).now()
        ok = _fbe(env, "approve", signal_ids[3], "--user", "alice", "--totp", code)
        assert ok.returncode == 0, ok.stderr
        reused = _fbe(env, "approve", signal_ids[4], "--user", "alice", "--totp", code)
        assert reused.returncode == 1 and "already used" in reused.stderr
        wrong = _fbe(env, "approve", signal_ids[4], "--user", "bob", "--totp", "000000")
        assert wrong.returncode == 1 and "wrong TOTP" in wrong.stderr
        bob = pyotp.TOTP(secrets["bob"]).now()
        assert _fbe(env, "approve", signal_ids[4], "--user", "bob", "--totp", bob).returncode == 0

        def filled() -> list[dict[str, object]]:
            done = [o for o in _orders(env) if o["state"] == "filled"]
            return done if len(done) == 2 else []

        done = _wait_for("the approved orders to fill", filled)
        assert {str(o["signal_id"]) for o in done} == {signal_ids[3], signal_ids[4]}
        for order in done:
            assert float(order["realized_slippage"]) != 0  # type: ignore[arg-type]
            assert float(order["estimated_slippage"]) > 0  # type: ignore[arg-type]
            assert str(order["fill_time"]) >= str(order["decision_time"])
        pending = [o for o in _orders(env) if o["state"] == "pending_approval"]
        assert len(pending) == 5
        result = _fbe(env, "positions", "--format", "json")
        assert result.returncode == 0, result.stderr
        positions = json.loads(result.stdout)
        assert sorted(p["order_id"] for p in positions) == sorted(o["order_id"] for o in done)
        engine = create_engine(ops_database_url)
        with engine.connect() as db:
            audit = [tuple(r) for r in db.execute(text("SELECT actor, action, outcome FROM audit"))]
        engine.dispose()
        assert ("alice", "approve", "ok") in audit and ("alice", "approve", "refused") in audit
        assert ("bob", "approve", "refused") in audit and ("bob", "approve", "ok") in audit
    finally:
        live.send_signal(signal.SIGTERM)
        try:
            live.wait(timeout=60)
        except subprocess.TimeoutExpired:
            live.kill()
            live.wait()
    if live.returncode not in (0, 130, 143, -signal.SIGTERM):
        pytest.fail(live.stderr.read().decode() if live.stderr else "fbe live failed")
