"""Wall time of the raw store integrity verification per 1,000 objects (best of 3 runs).

Writes N objects (default 1,000, each a Parquet frame of 1,000 synthetic ticks, ~15 KB) to a
local raw store and to an S3 store served by moto's HTTP server on 127.0.0.1 (versioning and
object lock on), then times :func:`fbe_pipeline.storage.integrity.verify_store`, which lists every
version, reads every object and hashes it. Prints seconds per run and per 1,000 objects.

Usage: ``python benchmarks/bench_integrity.py [N]``
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fbe_pipeline.storage.integrity import verify_store
from fbe_pipeline.storage.store import LocalRawStore, RawStore, frame_to_parquet


def _objects(n: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        frame = pd.DataFrame(
            {
                "ts_event": np.arange(1000, dtype=np.int64) + i * 1000,
                "price": 100 + rng.standard_normal(1000).cumsum() * 0.01,
                "size": rng.integers(1, 500, 1000).astype(np.float64),
            }
        )
        day = 1 + i % 28
        out.append((f"ticks/BENCH/2013/10/{day:02d}/obj-{i:05d}.parquet", frame_to_parquet(frame)))
    return out


def _fill(store: RawStore, objects: list[tuple[str, bytes]]) -> None:
    for key, data in objects:
        store.put(key, data, rows=1000, source_file=key, source_sha256="bench")


def _time(make_store: Callable[[], RawStore], n: int) -> tuple[float, int]:
    # A fresh store object per run: a scheduled run starts without any cached manifest.
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        report = verify_store(make_store())
        best = min(best, time.perf_counter() - start)
        assert report.ok and report.checked == n, report.findings()[:5]
    return best, report.checked


def main() -> None:
    """Run the benchmark and print the figures."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    objects = _objects(n)
    size = sum(len(d) for _, d in objects)
    print(f"{n} objects, {size / 1e6:.1f} MB in all")
    with tempfile.TemporaryDirectory() as tmp:
        local = LocalRawStore(Path(tmp) / "raw")
        _fill(local, objects)
        seconds, checked = _time(lambda: LocalRawStore(Path(tmp) / "raw"), n)
        print(
            f"local : {seconds:7.3f} s for {checked} objects = {seconds * 1000 / n:.3f} s / 1,000"
        )

    from moto.server import ThreadedMotoServer

    from fbe_pipeline.storage.store_s3 import S3RawStore, init_bucket

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        import boto3

        host, port = server.get_host_and_port()
        client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
        init_bucket(client, "fbe-bench")
        s3 = S3RawStore(client, "fbe-bench")
        _fill(s3, objects)
        seconds, checked = _time(lambda: S3RawStore(client, "fbe-bench"), n)
        print(
            f"s3    : {seconds:7.3f} s for {checked} objects = {seconds * 1000 / n:.3f} s / 1,000"
            " (moto server on loopback)"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
