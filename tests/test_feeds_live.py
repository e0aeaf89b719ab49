"""Feeds under ``fbe live`` (issue 14): the feeds of ``feeds.yaml`` run beside the ingest
service, and a feed that dies is restarted and carries on from its last acknowledged trade.
Also the supervisor's restart rules and the feeds file's validation.

Expected: with the feed process killed mid-stream, every real BTCUSDT trade still lands in the
raw store exactly once (the restarted feed backfills from the venue's history); a child that
keeps dying is restarted with a doubling delay, one that exits with status 2 is not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fbe_pipeline.live.feeds.config import load_feed_configs
from fbe_pipeline.live.supervisor import Child, Supervisor
from fbe_pipeline.settings import REPO_ROOT, sample_data_dir
from tests.processes import cli_env
from tests.test_feeds import (
    FAST,
    KEY,
    Ingest,
    _assert_landed_once,
    _forwarded_through,
    _landed,
    _status,
    _wait,
)
from tests.test_live import free_port
from tests.test_live_crash import _descendants, _wait_healthy
from tests.venues.binance import BinanceVenue


def _feed_pids(live_pid: int) -> list[int]:
    found = []
    for pid in _descendants(live_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"fbe_pipeline.cli feed" in cmdline:
            found.append(pid)
    return found


def test_fbe_live_runs_the_configured_feed_and_restarts_it_when_killed(
    tmp_path: Path, trades: pd.DataFrame
) -> None:
    last = int(trades["id"].iloc[-1])
    port = free_port()
    env = cli_env(
        tmp_path,
        sample_data_dir(),
        FBE_WEBHOOK_PASSPHRASE="p",
        FBE_INGEST_HMAC_KEY=KEY,
        FBE_LIVE_SEAL_INTERVAL_S="0.3",
        FBE_FEED_SETTINGS=json.dumps(FAST),
    )
    with BinanceVenue({"BTCUSDT": trades}, rate=1000, ping_interval_s=0.5) as venue:
        (tmp_path / "feeds.yaml").write_text(
            "feeds:\n"
            "  - venue: binance\n"
            "    name: spot\n"
            "    symbols: [btcusdt]\n"
            f"    ws_url: {venue.ws_url}\n"
            f"    rest_url: {venue.rest_url}\n"
        )
        live = subprocess.Popen(
            [sys.executable, "-m", "fbe_pipeline.cli", "live", "--no-ui", "--port", str(port)],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_healthy(port, live, timeout_s=120)
            assert venue.wait_connected(1, timeout=60)
            venue.start_publishing()
            _wait(
                "trades forwarded",
                lambda: (_status(tmp_path)[0].get("forwarded") or 0) > 3000,
                timeout_s=60,
            )
            [feed] = _feed_pids(live.pid)
            os.kill(feed, signal.SIGKILL)
            _wait("the restarted feed", lambda: _feed_pids(live.pid) not in ([], [feed]), 30)
            assert venue.wait_published(timeout=60)
            _wait("every trade forwarded", _forwarded_through(tmp_path, last), timeout_s=60)
            landed = _landed(Ingest(tmp_path, f"http://127.0.0.1:{port}", env), trades)
        finally:
            live.send_signal(signal.SIGTERM)
            live.wait(timeout=60)
        assert venue.connections == 2
    _assert_landed_once(landed, trades, set())
    row, gaps, _ = _status(tmp_path)
    assert row["feed"] == "spot" and gaps.empty
    assert row["backfilled"] > 0  # what was published while the feed was dead


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_supervisor_restarts_with_a_doubling_delay_but_not_bad_settings() -> None:
    supervisor = Supervisor()
    flaky = supervisor.start(
        Child("flaky", _python("raise SystemExit(1)"), dict(os.environ), restart=True)
    )
    misconfigured = supervisor.start(
        Child("misconfigured", _python("raise SystemExit(2)"), dict(os.environ), restart=True)
    )
    essential = supervisor.start(
        Child("essential", _python("import time; time.sleep(60)"), dict(os.environ), essential=True)
    )
    try:
        for proc in (flaky.proc, misconfigured.proc):
            assert proc is not None
            proc.wait(timeout=30)
        now = time.monotonic()
        assert supervisor.step(now) is None
        assert flaky.due_at == pytest.approx(now + 1.0) and misconfigured.due_at is None
        assert supervisor.step(now + 1.0) is None
        assert flaky.restarts == 1 and flaky.proc is not None
        flaky.proc.wait(timeout=30)
        assert supervisor.step(now + 1.5) is None
        assert flaky.due_at == pytest.approx(now + 1.5 + 2.0)  # doubled
        assert misconfigured.proc is None and misconfigured.restarts == 0
        assert essential.proc is not None
        essential.proc.terminate()
        essential.proc.wait(timeout=30)
        assert supervisor.step() == -signal.SIGTERM
    finally:
        supervisor.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("feeds:\n  - venue: kraken\n    symbols: [XBTUSD]\n", "unknown venue 'kraken'"),
        ("feeds:\n  - venue: binance\n    symbols: []\n", "feeds.0.symbols"),
        ("feeds:\n  - venue: binance\n    symbols: [A]\n    colour: red\n", "feeds.0.colour"),
        (
            "feeds:\n  - {venue: binance, symbols: [A]}\n  - {venue: binance, symbols: [B]}\n",
            "feeds named ['binance'] more than once",
        ),
        ("feeds: [\n", "not valid YAML"),
    ],
)
def test_a_bad_feeds_file_is_refused_with_the_entry_named(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_feed_configs(path)
    assert load_feed_configs(tmp_path / "missing.yaml") == []
