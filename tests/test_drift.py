"""Clock-drift statistics on the real Tardis BTCUSDT trades (real receive timestamps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbe_pipeline.market.sources.tardis import read_tardis_trades
from fbe_pipeline.quality.checks import clock_drift


def test_btcusdt_drift_figures(sample_data: Path) -> None:
    path = next((sample_data / "tardis").glob("*BTCUSDT_trades*.csv"))
    ticks = read_tardis_trades(path, "BTCUSDT")
    ticks["drift_ms"] = (ticks["ts_recv"].astype("int64") - ticks["ts_event"]) / 1e6
    outcome = clock_drift(ticks)
    meta = outcome.metadata
    assert meta["ticks_with_recv"] == 9999
    assert meta["p50_ms"] == pytest.approx(127.941, abs=1e-3)
    assert meta["p99_ms"] == pytest.approx(428.343, abs=1e-3)
    assert meta["max_ms"] == pytest.approx(436.862, abs=1e-3)
    # Every trade arrived more than 100 ms after the exchange stamped it: flagged, not fixed.
    assert meta["over_threshold"] == 9999
    assert not outcome.passed
    assert (ticks["ts_event"] < ticks["ts_recv"].astype("int64")).all()


def test_drift_without_receive_times_reports_no_figures() -> None:
    ticks = pd.DataFrame({"drift_ms": [np.nan, np.nan]})
    outcome = clock_drift(ticks)
    assert outcome.passed
    assert outcome.metadata == {"ticks_with_recv": 0, "note": "no ts_recv"}


def test_negative_drift_beyond_threshold_is_flagged() -> None:
    outcome = clock_drift(pd.DataFrame({"drift_ms": [5.0, -150.0, 20.0]}))
    assert not outcome.passed
    assert outcome.metadata["over_threshold"] == 1
    assert outcome.metadata["max_ms"] == 20.0
