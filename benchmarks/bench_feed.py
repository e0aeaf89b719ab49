"""Websocket feed -> landed (issue 14): sustained throughput and trade -> acknowledged latency
of ``fbe feed binance`` forwarding to ``fbe serve``, against the local Binance venue of
``tests/venues/binance.py`` playing the real BTCUSDT trades of 2020-02-22.

What is measured
----------------
Three processes on one machine, as in production: the venue (in this process, its own event
loop thread), ``fbe feed binance`` (a subprocess, default settings: batches of up to 5,000
trades, one request in flight) and ``fbe serve`` (a subprocess with its detector and sealer,
:class:`bench_live.Server`), each on a fresh temporary ``FBE_HOME``.

1. **Throughput** (``throughput``). The recorded day (9,999 trades, 2.1 h) is played
   ``--loops`` times back to back (default 10, ~100k trades; each copy shifted by the day's
   span so the ids and times go on increasing within one UTC day) as fast as the feed reads
   (venue ``rate=0``: the venue waits while the feed's socket is full, so the feed sets the
   pace). Trades/s = trades / (time from the venue's first publication to the ingest's
   receipt of the last trade, the landing log's ``ts_recv``; the 2xx follows the commit), and
   the ingest-side rate from the landing log's first and last ``ts_recv``. Loss check:
   every trade id once in the landing log. Baseline in the same run: the same trades as ticks
   sent by :func:`fbe_pipeline.live.replay.replay_frame` (``fbe replay``, batches of 5,000) into
   a fresh ``fbe serve``: the ingest's own ceiling; the ratio feed / replay shows what the feed
   costs on top.
2. **Latency** (``latency``). ``--latency-trades`` (default 20,000) trades published at
   ``--rate`` trades/s (default 2,000, a busy BTCUSDT minute is ~1,000): per trade, the
   landing log's ``ts_recv`` (the ingest's receive clock; the 2xx follows the group commit)
   minus the venue's publication time. Where the time goes: the ingest's request time
   (``fbe_ingest_request_seconds`` of ``/v1/ticks``: mean per request) and the mean batch
   size (trades per request) from ``/metrics``; the rest is the venue's send, the feed's
   parse, queue and batching, and HTTP.

Target (printed, never asserted): >= 20,000 trades/s sustained on the 2-core machine.

Run from the repository root (about 2 minutes)::

    .venv/bin/python benchmarks/bench_feed.py [--loops 10] [--rate 2000]
        [--latency-trades 20000] [--json PATH]

Exit status: 0 when no trade was lost, 1 on a loss or a failed part, 2 without sample data.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from bench_live import KEY, REPO, Samples, Server, fmt_q, hist, python, quantiles, sample

from fbe_pipeline.live.replay import read_ticks, replay_frame
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.settings import sample_data_dir

sys.path.insert(0, str(REPO))
from tests.venues.binance import BinanceVenue, load_tardis_trades

TARDIS = "tardis/tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
TARGET_TPS = 20_000.0
NS_PER_MS = 1_000_000


def looped(trades: pd.DataFrame, loops: int) -> pd.DataFrame:
    """``loops`` copies of the recording, ids and times shifted past the previous copy."""
    span_ms = int(trades["time_ms"].iloc[-1] - trades["time_ms"].iloc[0]) + 1000
    n = int(trades["id"].iloc[-1] - trades["id"].iloc[0]) + 1
    return pd.concat(
        [
            trades.assign(id=trades["id"] + k * n, time_ms=trades["time_ms"] + k * span_ms)
            for k in range(loops)
        ],
        ignore_index=True,
    )


def landed(home: Path) -> pd.DataFrame:
    """``trade_id`` (int) and ``ts_recv`` (ns) of every line of the BTCUSDT landing log."""
    frames = [
        pd.read_json(path, lines=True, dtype={"trade_id": str})[["trade_id", "ts_recv"]]
        for path in sorted((home / "landing" / "BTCUSDT").glob("*.jsonl"))
    ]
    out = pd.concat(frames, ignore_index=True)
    return out.assign(trade_id=out["trade_id"].astype("int64"))


def last_forwarded(home: Path) -> int:
    """The feed's last acknowledged trade id (-1 before the first)."""
    path = home / "live" / "feeds.sqlite"
    if not path.exists():
        return -1
    try:
        with sqlite3.connect(path, timeout=5) as db:
            row = db.execute("SELECT max(last_trade_id) FROM feed_symbols").fetchone()
    except sqlite3.OperationalError:  # the feed has not created its tables yet
        return -1
    return int(row[0]) if row and row[0] is not None else -1


def run_feed(server: Server, venue: BinanceVenue) -> subprocess.Popen[bytes]:
    """``fbe feed binance --symbol BTCUSDT`` against ``venue`` and ``server``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FBE_", "DAGSTER_"))}
    env.update(FBE_HOME=str(server.home), FBE_INGEST_HMAC_KEY=KEY)
    log = (server.home.parent / f"{server.home.name}-feed.log").open("wb")
    return subprocess.Popen(
        [
            python(),
            "-m",
            "fbe_pipeline.cli",
            "feed",
            "binance",
            "--symbol",
            "BTCUSDT",
            "--ws-url",
            venue.ws_url,
            "--rest-url",
            venue.rest_url,
            "--url",
            server.url,
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def feed_run(
    root: Path, name: str, trades: pd.DataFrame, rate: float
) -> tuple[Server, dict[int, int], float, Samples]:
    """Play ``trades`` through a feed into a fresh service; returns the (stopped) server,
    the publication times, the seconds from the first publication to the last ack, and the
    service's metrics at the end."""
    server = Server(root / name, grace_ms=2000)
    server.start()
    last = int(trades["id"].iloc[-1])
    try:
        with BinanceVenue({"BTCUSDT": trades}, rate=rate) as venue:
            feed = run_feed(server, venue)
            try:
                if not venue.wait_connected(1, timeout=120):
                    raise RuntimeError("the feed did not connect")
                started = time.perf_counter()
                venue.start_publishing()
                deadline = time.monotonic() + 600
                while last_forwarded(server.home) != last:
                    if feed.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"feed stopped or too slow ({feed.returncode})")
                    time.sleep(0.02)
                seconds = time.perf_counter() - started
                published = venue.publication_times("BTCUSDT")
            finally:
                feed.terminate()
                feed.wait(60)
        metrics = server.metrics()
    finally:
        server.stop()
    return server, published, seconds, metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--latency-trades", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    path = sample_data_dir() / TARDIS
    if not path.exists():
        print(f"sample data missing: {path}")
        return 2
    trades = load_tardis_trades(path)
    report: dict[str, Any] = {}
    lost = False
    with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp:
        root = Path(tmp)

        # 1. throughput, and the replay baseline
        many = looped(trades, args.loops)
        server, published, _, _ = feed_run(root, "throughput", many, rate=0)
        lines = landed(server.home)
        lost |= sorted(lines["trade_id"]) != many["id"].tolist()
        # From the venue's first publication to the ingest's receipt of the last trade (its
        # 2xx follows the commit within milliseconds).
        seconds = (lines["ts_recv"].max() - min(published.values())) / 1e9
        tps = len(many) / seconds
        ingest_span = (lines["ts_recv"].max() - lines["ts_recv"].min()) / 1e9
        ticks = read_ticks("tardis-trades", [path], get_instrument("BTCUSDT"))
        span_ns = int(ticks["ts_event"].iloc[-1] - ticks["ts_event"].iloc[0]) + 10**9
        n = len(ticks)
        copies = pd.concat(
            [
                ticks.assign(ts_event=ticks["ts_event"] + k * span_ns, seq=ticks["seq"] + k * n)
                for k in range(args.loops)
            ],
            ignore_index=True,
        )
        base = Server(root / "baseline", grace_ms=2000)
        base.start()
        try:
            replayed = replay_frame(copies, base.url, KEY)
        finally:
            base.stop()
        lost |= replayed.accepted != len(copies)
        print(
            f"throughput: {len(many):,} trades in {seconds:.2f} s = {tps:,.0f} trades/s "
            f"(target >= {TARGET_TPS:,.0f}); ingest-side {len(lines) / ingest_span:,.0f}/s"
        )
        print(
            f"  baseline fbe replay of the same ticks: {replayed.ticks_per_s:,.0f} ticks/s; "
            f"feed / replay = {tps / replayed.ticks_per_s:.2f}"
        )
        report["throughput"] = {
            "trades": len(many),
            "seconds": seconds,
            "trades_per_s": tps,
            "ingest_side_per_s": len(lines) / ingest_span,
            "replay_ticks_per_s": replayed.ticks_per_s,
            "ratio": tps / replayed.ticks_per_s,
            "target": TARGET_TPS,
        }

        # 2. latency at a paced rate
        k = max(1, -(-args.latency_trades // len(trades)))
        paced = looped(trades, k).head(args.latency_trades)
        server, published, seconds, metrics = feed_run(root, "latency", paced, rate=args.rate)
        lines = landed(server.home)
        lost |= sorted(lines["trade_id"]) != paced["id"].tolist()
        sent = lines["trade_id"].map(published)
        latency = (lines["ts_recv"] - sent).to_numpy() / 1e9
        q = quantiles(latency, (50, 99))
        total, requests = hist(metrics, "fbe_ingest_request_seconds", endpoint="/v1/ticks")
        accepted = sample(metrics, "fbe_ingest_accepted_total", endpoint="/v1/ticks")
        print(
            f"latency at {args.rate:,.0f} trades/s ({len(paced):,} trades): venue publication "
            f"-> ingest receive {fmt_q(q)}"
        )
        print(
            f"  where the time goes: {requests:,} requests, {accepted / max(requests, 1):,.1f} "
            f"trades per request, ingest handling {1e3 * total / max(requests, 1):,.2f} ms "
            "per request; the rest is venue send, feed parse/queue/batch and HTTP"
        )
        report["latency"] = {
            "rate": args.rate,
            "trades": len(paced),
            "seconds": seconds,
            **q,
            "requests": requests,
            "trades_per_request": accepted / max(requests, 1),
            "ingest_ms_per_request": 1e3 * total / max(requests, 1),
        }
    report["lost"] = lost
    print("no trade lost" if not lost else "LOSS: landed trade ids differ from the published")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
