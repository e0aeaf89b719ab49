"""``fbe replay`` against the real ingest service: a uvicorn server on a free loopback port and
a temporary FBE_HOME, fed the real Tardis BTCUSDT trades file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn

from fbe_pipeline.live.app import create_app, verify_signature
from fbe_pipeline.live.landing import read_landing_file
from fbe_pipeline.live.models import TickIn
from fbe_pipeline.live.replay import (
    ReplayError,
    read_ticks,
    replay_files,
    replay_frame,
    watermarks,
)
from fbe_pipeline.live.settings import IngestSettings
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.settings import REPO_ROOT
from tests.processes import cli_env

KEY = b"replay-test-key"
FMT = "tardis-trades"
TARDIS = Path("tardis") / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
# The file's last trade is at 02:05:47 UTC: the watermark closes the 02:05 bar.
LAST_BAR_END = pd.Timestamp("2020-02-22T02:06:00Z").value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """The ingest service on a loopback port, started and stopped in a background thread."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        settings = IngestSettings(home=self.home, webhook_passphrase="unused", hmac_key=KEY)
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="error"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    def landed(self) -> list[dict[str, object]]:
        files = sorted((self.home / "landing" / "BTCUSDT").glob("*.jsonl"))
        return [t.model_dump() for path in files for t in read_landing_file(path)]


@pytest.fixture
def tardis(sample_data: Path) -> Path:
    return sample_data / TARDIS


@pytest.fixture
def trades(tardis: Path) -> pd.DataFrame:
    return read_ticks(FMT, [tardis], get_instrument("BTCUSDT"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "fbe_home"
    home.mkdir()
    monkeypatch.setenv("FBE_HOME", str(home))
    return home


@pytest.fixture
def service(home: Path) -> Iterator[Service]:
    running = Service(home)
    running.start()
    yield running
    running.stop()


def test_full_replay_lands_every_tick_once_and_a_second_replay_only_duplicates(
    service: Service, tardis: Path, trades: pd.DataFrame
) -> None:
    btc = get_instrument("BTCUSDT")
    assert len(trades) == 9_999
    report = replay_files(FMT, [tardis], btc, service.url, KEY)
    assert (report.sent, report.accepted, report.duplicates) == (9_999, 9_999, 0)
    # 5000 ticks of JSON exceed the service's 1 MiB body limit: batches are cut by size too.
    assert report.batches >= 3
    assert len(report.latencies_s) == report.batches
    assert all(0 < s < report.elapsed_s for s in report.latencies_s)
    assert report.retries == 0
    assert watermarks(trades) == {"BTCUSDT": LAST_BAR_END}
    assert report.watermarks == {"BTCUSDT": LAST_BAR_END}

    landed = service.landed()
    assert len(landed) == 9_999
    landed.sort(key=lambda t: (t["ts_event"], t["seq"]))
    for column in ("ts_event", "price", "size", "side", "seq", "exchange", "condition"):
        assert [t[column] for t in landed] == trades[column].tolist(), column
    assert [t["ts_event"] for t in landed] == [t["ts_event"] for t in service.landed()]
    assert all(t["source"] == "tardis" for t in landed)
    assert [t["trade_id"] for t in landed] == [
        f"{ts}-{seq}" for ts, seq in zip(trades["ts_event"], trades["seq"], strict=True)
    ]

    again = replay_files(FMT, [tardis], btc, service.url, KEY)
    assert (again.sent, again.accepted, again.duplicates) == (9_999, 0, 9_999)
    assert len(service.landed()) == 9_999


def test_paced_replay_keeps_the_original_pace(service: Service, trades: pd.DataFrame) -> None:
    # The quietest 200 trades of the file span 25 s of event time; replayed in ~1 s.
    window = trades.iloc[9081:9281]
    span_s = (int(window["ts_event"].iloc[-1]) - int(window["ts_event"].iloc[0])) / 1e9
    speed = span_s / 1.0
    report = replay_frame(window, service.url, KEY, speed=speed)
    assert report.accepted == 200
    assert report.elapsed_s >= span_s / speed
    assert report.elapsed_s < span_s / speed + 3.0
    # Paced: the ticks go out as they fall due, in many small batches, not as one.
    assert report.batches > 10


def test_refusal_raises_with_the_servers_detail_and_is_not_retried(
    service: Service, trades: pd.DataFrame
) -> None:
    with pytest.raises(ReplayError, match="signature does not match") as caught:
        replay_frame(trades.head(10), service.url, b"wrong key")
    assert caught.value.status == 401
    first = trades.iloc[0]
    assert f"ts_event={first['ts_event']}" in str(caught.value)
    assert f"seq={first['seq']}" in str(caught.value)
    assert service.landed() == []


def test_a_service_that_comes_up_late_still_gets_every_tick(
    home: Path, trades: pd.DataFrame
) -> None:
    late = Service(home)
    timer = threading.Timer(1.0, late.start)
    timer.start()
    try:
        report = replay_frame(trades.head(500), late.url, KEY, retry_for=20.0)
    finally:
        timer.join()
        late.stop()
    assert (report.sent, report.accepted) == (500, 500)
    assert report.retries >= 3
    assert report.elapsed_s >= 0.9
    assert len(late.landed()) == 500


def test_retries_run_out_when_the_service_stays_down(trades: pd.DataFrame) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ReplayError, match="not acknowledged after") as caught:
        replay_frame(trades.head(5), url, KEY, retry_for=0.3)
    assert caught.value.status is None


def test_batches_are_signed_per_attempt_and_watermarks_posted(trades: pd.DataFrame) -> None:
    """Against a stub: a 503 is retried, each attempt carries a valid fresh signature, every
    body is a TickIn array, and the watermark follows the last batch."""
    calls: list[tuple[str, bytes]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = request.read()
        verify_signature(request.headers["FBE-Signature"], body, KEY, 300, time.time())
        calls.append((request.url.path, body))
        if request.url.path == "/v1/watermark":
            return httpx.Response(200, json=json.loads(body))
        if len(calls) == 1:
            return httpx.Response(503, json={"detail": "restarting"})
        return httpx.Response(200, json={"accepted": len(json.loads(body)), "duplicates": 0})

    window = trades.head(250)
    report = replay_frame(
        window, "http://stub", KEY, batch_size=100, transport=httpx.MockTransport(answer)
    )
    assert (report.sent, report.accepted, report.batches, report.retries) == (250, 250, 3, 1)
    assert [path for path, _ in calls] == ["/v1/ticks"] * 4 + ["/v1/watermark"]
    ticks = [TickIn.model_validate(t) for _, body in calls[1:4] for t in json.loads(body)]
    assert [t.timestamp for t in ticks] == window["ts_event"].tolist()
    assert [t.price for t in ticks] == window["price"].tolist()
    assert ticks[0].trade_id == f"{window['ts_event'].iloc[0]}-{window['seq'].iloc[0]}"
    last = int(window["ts_event"].max())
    mark = last - last % 60_000_000_000 + 60_000_000_000
    assert json.loads(calls[-1][1]) == {"symbol": "BTCUSDT", "watermark": mark}
    assert report.watermarks == {"BTCUSDT": mark}


def test_a_service_without_the_watermark_endpoint_is_tolerated(trades: pd.DataFrame) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/watermark":
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(
            200, json={"accepted": len(json.loads(request.read())), "duplicates": 0}
        )

    report = replay_frame(
        trades.head(20), "http://stub", KEY, transport=httpx.MockTransport(answer)
    )
    assert (report.accepted, report.watermarks) == (20, {})


def test_a_format_without_trades_is_refused(sample_data: Path) -> None:
    quotes = sample_data / "tardis" / "tardis_binance-futures_BTCUSDT_quotes_2020-02-22.csv"
    with pytest.raises(ValueError, match="not ticks"):
        read_ticks("tardis-quotes", [quotes], get_instrument("BTCUSDT"))


def _cli(home: Path, sample: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fbe_pipeline.cli", "replay", *args],
        env=cli_env(home, sample, **env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_refuses_bad_input_with_exit_2(home: Path, sample_data: Path, tardis: Path) -> None:
    key = KEY.decode()
    unknown = _cli(home, sample_data, FMT, str(tardis), "--symbol", "NOPE", FBE_INGEST_HMAC_KEY=key)
    assert unknown.returncode == 2, unknown.stderr
    assert "unknown symbol 'NOPE'" in unknown.stderr
    no_key = _cli(home, sample_data, FMT, str(tardis), "--symbol", "BTCUSDT")
    assert no_key.returncode == 2, no_key.stderr
    assert "FBE_INGEST_HMAC_KEY is not set" in no_key.stderr


def test_cli_replays_the_file_and_fails_when_the_service_stays_down(
    service: Service, sample_data: Path, tardis: Path
) -> None:
    key = KEY.decode()
    args = (FMT, str(tardis), "--symbol", "BTCUSDT")
    done = _cli(service.home, sample_data, *args, "--url", service.url, FBE_INGEST_HMAC_KEY=key)
    assert done.returncode == 0, done.stderr
    assert "replayed 9,999 ticks: 9,999 accepted, 0 duplicates, 0 retries" in done.stdout
    down = f"http://127.0.0.1:{_free_port()}"
    failed = _cli(
        service.home,
        sample_data,
        *args,
        "--url",
        down,
        "--retry-for",
        "0.2",
        FBE_INGEST_HMAC_KEY=key,
    )
    assert failed.returncode == 1, failed.stderr
    assert "replay failed" in failed.stderr
