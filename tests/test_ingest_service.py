"""The live ingest service over real HTTP (SPEC §6): a real uvicorn server on a free loopback
port against a temporary FBE_HOME, fed real Binance futures trades from the Tardis sample."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import uvicorn

from fbe_pipeline.live.app import create_app
from fbe_pipeline.live.landing import read_landing_file
from fbe_pipeline.live.settings import IngestSettings
from fbe_pipeline.market.sources.tardis import read_tardis_trades
from fbe_pipeline.settings import REPO_ROOT, sample_data_dir

KEY = b"test-hmac-key"
PASSPHRASE = "correct horse battery staple"
TARDIS = sample_data_dir() / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"


class Server:
    """A running ingest service and helpers to call it."""

    def __init__(self, base: str, home: Path) -> None:
        self.base = base
        self.home = home

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self.base + path, data=body, method="POST", headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return response.status, response.read().decode()

    def signed(self, body: bytes, t: int | None = None, key: bytes = KEY) -> dict[str, str]:
        stamp = int(time.time()) if t is None else t
        sig = hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        return {"FBE-Signature": f"t={stamp},v1={sig}", "Content-Type": "application/json"}

    def landed_lines(self) -> int:
        return sum(
            len(p.read_text().splitlines()) for p in (self.home / "landing").rglob("*.jsonl")
        )

    def dead_letters(self) -> list[tuple[str, str, bytes]]:
        with sqlite3.connect(self.home / "landing" / "idempotency.sqlite") as db:
            return db.execute(
                "SELECT endpoint, reason, body FROM dead_letters ORDER BY id"
            ).fetchall()

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.get("/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (
                not labels and line.startswith(name + " ")
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("fbe_home")
    settings = IngestSettings(
        home=home, webhook_passphrase=PASSPHRASE, hmac_key=KEY, max_body_bytes=256 * 1024
    )
    port = _free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield Server(f"http://127.0.0.1:{port}", home)
    uv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def trades() -> pd.DataFrame:
    return read_tardis_trades(TARDIS, "BTCUSDT").head(200)


def _batch(trades: pd.DataFrame) -> bytes:
    rows = [
        {
            "symbol": "BTCUSDT",
            "price": float(r.price),
            "size": float(r.size),
            "timestamp": int(r.ts_event),
            "side": r.side,
            "trade_id": int(r.seq),
            "source": "binance-futures",
        }
        for r in trades.itertuples()
    ]
    return json.dumps(rows).encode()


def test_healthz(server: Server) -> None:
    assert server.get("/healthz") == (200, '{"status":"ok"}')


def test_signed_real_ticks_land_once_and_redelivery_is_acknowledged(
    server: Server, trades: pd.DataFrame
) -> None:
    body = _batch(trades)
    status, reply = server.post("/v1/ticks", body, server.signed(body))
    assert (status, reply) == (200, {"accepted": 200, "duplicates": 0})
    # Durable before the 200: the file holds every tick right after the answer.
    path = server.home / "landing" / "BTCUSDT" / "2020-02-22.jsonl"
    landed = read_landing_file(path)
    assert len(landed) == 200
    assert [t.price for t in landed] == trades["price"].tolist()
    assert [t.size for t in landed] == trades["size"].tolist()
    assert [t.ts_event for t in landed] == trades["ts_event"].tolist()
    assert [t.trade_id for t in landed] == [str(s) for s in trades["seq"]]
    assert len({t.key for t in landed}) == 200
    assert all(t.ts_recv > t.ts_event and t.drift_ms > 0 for t in landed)

    status, reply = server.post("/v1/ticks", body, server.signed(body))
    assert (status, reply) == (200, {"accepted": 0, "duplicates": 200})
    assert len(read_landing_file(path)) == 200

    # NDJSON of the same ticks, also redeliveries.
    nd = b"\n".join(json.dumps(x).encode() for x in json.loads(body)[:5])
    headers = {**server.signed(nd), "Content-Type": "application/x-ndjson"}
    assert server.post("/v1/ticks", nd, headers) == (200, {"accepted": 0, "duplicates": 5})
    assert server.metric("fbe_ingest_accepted_total", endpoint="/v1/ticks") == 200
    assert server.metric("fbe_ingest_duplicates_total", endpoint="/v1/ticks") == 205


def test_bad_signature_and_stale_timestamp_are_refused_and_dead_lettered(
    server: Server, trades: pd.DataFrame
) -> None:
    body = _batch(trades.tail(3))  # a signature over another body
    fresh = json.dumps(
        [{"symbol": "BTCUSDT", "price": 9700.5, "size": 1, "timestamp": "2020-02-22T10:00:00Z"}]
    ).encode()
    before, letters = server.landed_lines(), len(server.dead_letters())
    status, reply = server.post("/v1/ticks", fresh, server.signed(fresh, key=b"wrong"))
    assert status == 401 and reply["detail"] == "signature does not match"
    status, reply = server.post("/v1/ticks", fresh, server.signed(fresh, t=int(time.time()) - 301))
    assert status == 401 and reply["detail"] == "timestamp outside tolerance"
    status, reply = server.post("/v1/ticks", fresh, {"Content-Type": "application/json"})
    assert status == 401
    tampered = server.signed(body)
    status, _ = server.post("/v1/ticks", fresh, tampered)
    assert status == 401
    assert server.landed_lines() == before
    reasons = [r for _, r, _ in server.dead_letters()[letters:]]
    assert reasons == ["bad_signature", "stale_timestamp", "missing_signature", "bad_signature"]
    assert (
        server.metric("fbe_ingest_rejected_total", endpoint="/v1/ticks", reason="stale_timestamp")
        == 1
    )


def test_invalid_tick_refuses_the_whole_batch_naming_index_and_field(server: Server) -> None:
    good = {"symbol": "BTCUSDT", "price": 9700.0, "size": 1.0, "timestamp": "2020-02-22T11:00:00Z"}
    before, letters = server.landed_lines(), len(server.dead_letters())
    for bad, field in [
        ({**good, "price": float("nan")}, "price"),
        ({**good, "price": -1}, "price"),
        ({**good, "size": -0.5}, "size"),
        ({**good, "symbol": "NOPE"}, "symbol"),
        ({**good, "timestamp": "2020-02-22T11:00:00"}, "timestamp"),
    ]:
        body = json.dumps([good, bad]).encode()  # json.dumps writes NaN as the JS literal
        status, reply = server.post("/v1/ticks", body, server.signed(body))
        assert status == 422, reply
        assert reply["errors"][0]["index"] == 1 and reply["errors"][0]["field"] == field
        assert str(reply["detail"]).startswith(f"tick 1: {field}: ")
    assert server.landed_lines() == before
    assert [r for _, r, _ in server.dead_letters()[letters:]] == ["invalid"] * 5


def _alert(**fields: object) -> dict[str, object]:
    alert: dict[str, object] = {
        "symbol": "BTCUSDT",
        "price": 9690.25,
        "volume": 0.5,
        "timestamp": "2020-02-22T12:00:00.123456789+00:00",
        "passphrase": PASSPHRASE,
    }
    alert.update(fields)
    return alert


def test_tradingview_text_plain_alert_is_accepted_once(server: Server) -> None:
    body = json.dumps(_alert(trade_id="tv-1")).encode()
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    assert server.post("/webhook/tradingview", body, headers) == (
        200,
        {"accepted": 1, "duplicates": 0},
    )
    landed = read_landing_file(server.home / "landing" / "BTCUSDT" / "2020-02-22.jsonl")
    tick = next(t for t in landed if t.trade_id == "tv-1")
    assert tick.ts_event == 1582372800123456789 and tick.size == 0.5
    assert tick.source == "tradingview" and "passphrase" not in tick.model_dump()
    assert server.post("/webhook/tradingview", body, headers) == (
        200,
        {"accepted": 0, "duplicates": 1},
    )
    # A list without trade ids: idempotent on the tick's content.
    alerts = json.dumps([_alert(price=9691), _alert(price=9692)]).encode()
    json_headers = {"Content-Type": "application/json"}
    assert server.post("/webhook/tradingview", alerts, json_headers)[1] == {
        "accepted": 2,
        "duplicates": 0,
    }
    assert server.post("/webhook/tradingview", alerts, json_headers)[1] == {
        "accepted": 0,
        "duplicates": 2,
    }


def test_tradingview_refusals(server: Server) -> None:
    headers = {"Content-Type": "application/json"}
    before, letters = server.landed_lines(), len(server.dead_letters())
    status, reply = server.post(
        "/webhook/tradingview", json.dumps(_alert(passphrase="guess")).encode(), headers
    )
    assert status == 401
    no_secret = _alert()
    del no_secret["passphrase"]
    assert server.post("/webhook/tradingview", json.dumps(no_secret).encode(), headers)[0] == 401
    for bad, field in [
        (_alert(price=float("nan")), "price"),
        (_alert(price=0), "price"),
        (_alert(price="Infinity"), "price"),
        (_alert(volume=-1), "volume"),
        (_alert(symbol="XYZ"), "symbol"),
        (_alert(timestamp="2020-02-22 12:00:00"), "timestamp"),
        (_alert(timestamp="yesterday"), "timestamp"),
    ]:
        status, reply = server.post("/webhook/tradingview", json.dumps(bad).encode(), headers)
        assert status == 422, (bad, reply)
        assert field in str(reply["detail"]), reply
    status, reply = server.post("/webhook/tradingview", b"{not json", headers)
    assert status == 400
    huge = json.dumps([_alert(trade_id=str(i)) for i in range(3000)]).encode()
    assert len(huge) > 256 * 1024
    status, reply = server.post("/webhook/tradingview", huge, headers)
    assert status == 413 and "exceeds" in str(reply["detail"])
    assert server.landed_lines() == before
    rows = server.dead_letters()[letters:]
    assert [r for _, r, _ in rows] == ["unauthorized"] * 2 + ["invalid"] * 7 + [
        "malformed",
        "too_large",
    ]
    # The secret never reaches the dead-letter store, the guess neither.
    assert not any(PASSPHRASE.encode() in b or b"guess" in b for _, _, b in rows)
    assert (
        server.metric(
            "fbe_ingest_rejected_total", endpoint="/webhook/tradingview", reason="unauthorized"
        )
        == 2
    )
    assert server.metric("fbe_ingest_dead_lettered_total", endpoint="/webhook/tradingview") == 11


def test_metrics_exposition(server: Server) -> None:
    status, text = server.get("/metrics")
    assert status == 200
    for name in (
        "fbe_ingest_accepted_total",
        "fbe_ingest_duplicates_total",
        "fbe_ingest_rejected_total",
        "fbe_ingest_dead_lettered_total",
        "fbe_ingest_request_seconds_bucket",
        "fbe_ingest_drift_ms_bucket",
        "fbe_ingest_last_drift_ms",
    ):
        assert name in text
    assert server.metric("fbe_ingest_drift_ms_count", source="binance-futures") == 200


def test_allowlist_refuses_other_addresses(tmp_path: Path) -> None:
    settings = IngestSettings.from_env(
        {
            "FBE_HOME": str(tmp_path),
            "FBE_WEBHOOK_PASSPHRASE": PASSPHRASE,
            "FBE_INGEST_HMAC_KEY": "k",
            "FBE_WEBHOOK_ALLOW_IPS": "10.0.0.0/8, 192.168.1.7",
        }
    )
    assert settings.ip_allowed("10.1.2.3") and settings.ip_allowed("192.168.1.7")
    assert not settings.ip_allowed("127.0.0.1") and not settings.ip_allowed(None)


def test_fbe_serve_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FBE_")}
    env["FBE_HOME"] = str(tmp_path)
    env["FBE_WEBHOOK_PASSPHRASE"] = "set"
    result = subprocess.run(
        [sys.executable, "-m", "fbe_pipeline.cli", "serve", "--port", str(_free_port())],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "FBE_INGEST_HMAC_KEY" in result.stderr


def test_fbe_serve_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FBE_")}
    env.update(FBE_HOME=str(tmp_path), FBE_WEBHOOK_PASSPHRASE=PASSPHRASE, FBE_INGEST_HMAC_KEY="k")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fbe_pipeline.cli", "serve", "--port", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "fbe serve did not start"
                time.sleep(0.1)
        proc.terminate()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
