"""Governance (issue 10): versioned config with diff, next-bar effect and an out-of-hours second
approver; users with argon2 passwords and roles; refusals audited; on SQLite and PostgreSQL.
Plus the config version in effect reaching a real run: a change is used by the next signals of a
real BAC session."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from fbe_pipeline.governance.config import ConfigError, ConfigStore, next_bar
from fbe_pipeline.governance.runtime import EXECUTION, SCORING, config_store, split
from fbe_pipeline.governance.users import PermissionDenied, add_user, authenticate
from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.db import engine_for, upgrade
from fbe_pipeline.settings import REPO_ROOT
from fbe_pipeline.storage.warehouse import open_tables
from tests.processes import cli_env

MINUTE = 60_000_000_000
T0 = 1_759_999_980 * 1_000_000_000 + 17 * 10**9  # 17 s into a minute (UTC)
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self, ns: int = T0) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def _store(url: str, in_hours: bool, clock: Clock) -> ConfigStore:
    engine = engine_for(url)
    upgrade(engine)
    return ConfigStore(
        engine,
        [SCORING, EXECUTION],
        lambda now: in_hours,
        seed={"trigger_score": 30},
        clock=clock,
    )


def _audit(store: ConfigStore, action: str) -> list[tuple[str, str, str, str]]:
    with Session(store.engine) as s:
        rows = s.execute(
            select(
                m.AuditEntry.actor, m.AuditEntry.target, m.AuditEntry.outcome, m.AuditEntry.detail
            )
            .where(m.AuditEntry.action == action)
            .order_by(m.AuditEntry.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_change_in_market_hours_takes_effect_at_the_next_bar(ops_database_url: str) -> None:
    clock = Clock()
    store = _store(ops_database_url, True, clock)
    assert store.active() == (1, {**store.defaults(), "trigger_score": 30.0})
    row = store.request({"trigger_score": "45", "max_daily_trades": "5"}, "fewer, better", "ann")
    assert (row.version, row.state, row.out_of_hours) == (2, m.CONFIG_ACTIVE, False)
    assert json.loads(row.diff_json) == {"max_daily_trades": [20, 5], "trigger_score": [30.0, 45.0]}
    assert row.effective_ns == next_bar(T0) == T0 - 17 * 10**9 + MINUTE
    assert store.active(T0)[0] == 1  # the bar in progress keeps its config
    version, values = store.active(next_bar(T0))
    scoring, limits = split(values)
    assert (version, scoring.trigger_score, limits.max_daily_trades) == (2, 45.0, 5)
    assert store.compare(1, 2) == json.loads(row.diff_json)
    history = store.history()
    assert list(history["version"]) == [1, 2]
    assert list(history["requested_by"]) == ["system", "ann"]
    assert history["reason"].iloc[1] == "fewer, better"
    assert [a[:3] for a in _audit(store, "config_request")] == [("ann", "v2", "ok")]


def test_an_out_of_hours_change_waits_for_a_second_different_approver(
    ops_database_url: str,
) -> None:
    clock = Clock()
    store = _store(ops_database_url, False, clock)
    row = store.request({"weight_wick": "40", "weight_vol": "10"}, "wicks matter more", "ann")
    assert (row.state, row.out_of_hours, row.effective_ns) == (m.CONFIG_PENDING, True, None)
    clock.ns += 10 * MINUTE
    assert store.active()[0] == 1  # held
    with pytest.raises(ConfigError, match="second, different approver"):
        store.approve(row.version, "ann", "admin")
    with pytest.raises(ConfigError, match="approver or admin role"):
        store.approve(row.version, "ops", "operator")
    approved = store.approve(row.version, "bob", "approver")
    assert (approved.state, approved.approved_by) == (m.CONFIG_ACTIVE, "bob")
    assert approved.effective_ns == next_bar(clock.ns)
    assert store.active(next_bar(clock.ns))[0] == 2
    with pytest.raises(ConfigError, match="is active, not waiting"):
        store.approve(row.version, "carl", "approver")
    outcomes = [(a[0], a[2]) for a in _audit(store, "config_approve")]
    assert outcomes == [
        ("ann", "refused"),
        ("ops", "refused"),
        ("bob", "ok"),
        ("carl", "refused"),
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weight_wick": "50"}, "weights must sum to 100, they sum to 120"),
        ({"trigger_score": "150"}, "trigger_score must lie within 0-100"),
        ({"trigger_score": "high"}, "trigger_score must be a float"),
        ({"max_daily_trades": "0"}, "max_daily_trades must be >= 1"),
        ({"max_daily_drawdown": "-5"}, "max_daily_drawdown must be > 0"),
        ({"wick_ratio_threshold": "nan"}, "wick_ratio_threshold must be a float"),
        ({"colour": "red"}, "unknown config key 'colour'"),
        ({"trigger_score": "30"}, "leaves version 1 as it is"),
    ],
)
def test_an_invalid_change_is_refused_with_a_clear_error_and_nothing_stored(
    tmp_path: Path, changes: dict[str, str], message: str
) -> None:
    store = _store(f"sqlite:///{tmp_path / 'ops.sqlite'}", True, Clock())
    with pytest.raises(ConfigError, match=message):
        store.request(changes, "try", "ann")
    assert list(store.history()["version"]) == [1]
    assert _audit(store, "config_request")[-1][2] == "refused"


def test_passwords_are_hashed_and_roles_are_enforced(ops_database_url: str) -> None:
    engine = engine_for(ops_database_url)
    upgrade(engine)
    add_user(engine, "vera", "viewer", password=PASSWORD)
    add_user(engine, "olga", "operator", password=PASSWORD)
    assert authenticate(engine, "olga", PASSWORD, "operator", "status_paused").name == "olga"
    with pytest.raises(
        PermissionDenied, match="status_paused needs the operator role or above; vera is viewer"
    ):
        authenticate(engine, "vera", PASSWORD, "operator", "status_paused")
    with pytest.raises(PermissionDenied, match="wrong password"):
        authenticate(engine, "olga", PASSWORD + "!", "operator", "status_paused")
    with engine.connect() as c:
        stored = c.execute(text("SELECT password_hash FROM users")).scalars().all()
        dump = " ".join(
            str(v)
            for table in ("users", "audit")
            for row in c.execute(text(f"SELECT * FROM {table}")).all()
            for v in row
        )
    assert all(h.startswith("$argon2id$") for h in stored)
    assert PASSWORD not in dump
    with Session(engine) as s:
        denied = s.execute(
            select(m.AuditEntry.actor, m.AuditEntry.outcome).where(m.AuditEntry.action == "denied")
        ).all()
    assert [tuple(d) for d in denied] == [("vera", "refused"), ("olga", "refused")]
    engine.dispose()


def _fbe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fbe_pipeline.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_users_roles_and_config_commands(tmp_path: Path, sample_data: Path) -> None:
    env = cli_env(tmp_path, sample_data, FBE_NEW_PASSWORD=PASSWORD, FBE_PASSWORD=PASSWORD)
    assert _fbe(env, "user", "add", "vera", "--role", "viewer").returncode == 2  # first: admin
    admin = _fbe(env, "user", "add", "root", "--role", "admin", "--qr", str(tmp_path / "qr.png"))
    assert admin.returncode == 0, admin.stderr
    assert admin.stdout.startswith("otpauth://totp/FBE:root?secret=")
    assert (tmp_path / "qr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _fbe(env, "user", "add", "vera", "--role", "viewer").returncode == 2  # needs --as
    for name, role in (("vera", "viewer"), ("olga", "operator"), ("abe", "approver")):
        added = _fbe(env, "user", "add", name, "--role", role, "--as", "root")
        assert added.returncode == 0, added.stderr
    refused = _fbe(env, "pause", "--symbol", "SPY", "--user", "vera")
    assert refused.returncode == 1
    assert "needs the operator role or above; vera is viewer" in refused.stderr
    listed = json.loads(_fbe(env, "user", "list", "--format", "json").stdout)
    assert [(u["name"], u["role"], u["has_password"]) for u in listed] == [
        ("abe", "approver", True),
        ("olga", "operator", True),
        ("root", "admin", True),
        ("vera", "viewer", True),
    ]
    change = _fbe(env, "config", "set", "trigger_score=45", "--reason", "test", "--user", "olga")
    assert change.returncode == 0, change.stderr
    assert (
        _fbe(env, "config", "set", "trigger_score=45", "--reason", "x", "--user", "vera").returncode
        == 1
    )
    history = json.loads(_fbe(env, "config", "history", "--format", "json").stdout)
    assert [h["version"] for h in history] == [1, 2]
    assert json.loads(history[1]["diff"]) == {"trigger_score": [30.0, 45.0]}
    shown = json.loads(_fbe(env, "config", "diff", "1", "2").stdout)
    assert shown == {"trigger_score": [30.0, 45.0]}
    log = "".join(
        _fbe(env, *args).stdout + _fbe(env, *args).stderr
        for args in (("user", "list"), ("config", "show"))
    )
    assert PASSWORD not in log
    assert PASSWORD.encode() not in (tmp_path / "ops.sqlite").read_bytes()


def test_a_config_change_is_used_by_the_next_signals_of_a_real_session(
    fbe_home: Path, sample_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fbe_pipeline.definitions import materialize_partitions
    from fbe_pipeline.market.ingest import load_file
    from fbe_pipeline.market.instruments import get_instrument
    from fbe_pipeline.settings import prepare_dagster_home
    from fbe_pipeline.storage.store import LocalRawStore

    monkeypatch.setenv("FBE_SCORING_CONFIG", '{"trigger_score": 30}')
    prepare_dagster_home()
    store = LocalRawStore(fbe_home / "raw")
    for day in ("20131007", "20131008"):
        path = sample_data / "lean" / "bac" / "tick" / f"{day}_trade.zip"
        load_file(store, "lean-trades", path, get_instrument("BAC"))

    def signals() -> pd.DataFrame:

        with open_tables(fbe_home) as db:
            return db.execute("SELECT signal_id, config_version FROM signals").df()

    day = date(2013, 10, 8)
    assert materialize_partitions(store, symbols=["BAC"], start=day, end=day) == 0
    before = signals()
    configs = config_store(fbe_home)
    configs.clock = lambda: time.time_ns() - 2 * MINUTE  # effective already (next bar passed)
    configs.request({"trigger_score": "20"}, "more signals", "ann")
    assert materialize_partitions(store, symbols=["BAC"], start=day, end=day) == 0
    after = signals()
    scoring, _ = split(configs.active(time.time_ns())[1])
    assert set(before["config_version"]) != set(after["config_version"])
    assert set(after["config_version"]) == {scoring.version}
    assert len(after) >= len(before)  # a lower trigger keeps every signal and may add some
