"""Shared fixtures: the real sample data directory and its BTCUSDT trades, an isolated
``FBE_HOME``, and an S3 endpoint (moto's server on 127.0.0.1) with an environment pointing the
raw store at it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from moto.server import ThreadedMotoServer

from tests.pg import ops_database_url, postgres_server  # noqa: F401  (fixtures)
from tests.venues.binance import load_tardis_trades


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The real sample data directory (``FBE_SAMPLE_DATA``, default ``../shared/data``)."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(os.environ.get("FBE_SAMPLE_DATA", str(default))).expanduser()
    if not root.is_dir():
        pytest.skip(f"sample data not found at {root}; set FBE_SAMPLE_DATA to shared/data")
    return root


@pytest.fixture(scope="session")
def trades(sample_data: Path) -> pd.DataFrame:
    """The real BTCUSDT trades of 2020-02-22 in the local Binance venue's layout."""
    return load_tardis_trades(
        sample_data / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
    )


@pytest.fixture
def fbe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``FBE_HOME`` under ``tmp_path`` for this test only."""
    home = tmp_path / "fbe_home"
    monkeypatch.setenv("FBE_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """Base URL of a moto S3 server on loopback, one per test module."""
    # The server's request log would otherwise go to whatever stream a CliRunner had swapped
    # in when its first request arrived, and fail once that stream is closed.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, request: pytest.FixtureRequest
) -> dict[str, str]:
    """S3 backend settings and test credentials for a bucket named after the test."""
    bucket = "fbe-" + request.node.name.replace("_", "-")[:40].lower().strip("-")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FBE_RAW_BACKEND": "s3",
        "FBE_S3_BUCKET": bucket,
        "FBE_S3_ENDPOINT_URL": endpoint,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
