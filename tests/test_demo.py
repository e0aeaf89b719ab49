"""`fbe demo`, the README's main job, on the whole real sample data set: every session is
materialized and leaves its daily review (page, five charts, Markdown on the materialization),
and `fbe summary` shows PnL in R and bps."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from fbe_pipeline.cli import app
from fbe_pipeline.reports.charts import CHARTS
from fbe_pipeline.storage.store import LocalRawStore

SESSIONS = 16  # the sample sessions of BAC, BTCUSDT, ES, GC and SPY


def test_demo_leaves_a_daily_review_for_every_sample_session(
    fbe_home: Path, sample_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

    monkeypatch.setenv("FBE_SAMPLE_DATA", str(sample_data))
    monkeypatch.setenv("FBE_SCORING_CONFIG", '{"trigger_score": 30}')
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    try:
        result = CliRunner().invoke(app, ["demo"])
        assert result.exit_code == 0, result.output
        sessions = LocalRawStore(fbe_home / "raw").partitions("ticks")
        assert len(sessions) == SESSIONS
        flat = "".join(result.output.split())
        assert "PnL(R)" in flat and "PnL(bps)" in flat
        instance = DagsterInstance.get()
        for symbol, day in sessions:
            page = fbe_home / "reports" / "daily" / symbol / f"{day}.html"
            assert f"{symbol} daily review, {day}" in page.read_text(), page
            for chart in CHARTS:
                pixels = imread(io.BytesIO((page.with_suffix("") / f"{chart}.png").read_bytes()))
                colours = np.unique(pixels.reshape(-1, pixels.shape[2]).round(2), axis=0)
                assert len(colours) > 20, (symbol, day, chart)
            [record] = instance.fetch_materializations(
                AssetRecordsFilter(
                    asset_key=AssetKey([symbol, "daily_review"]), asset_partitions=[str(day)]
                ),
                limit=1,
            ).records
            metadata = record.asset_materialization.metadata  # type: ignore[union-attr]
            assert metadata["review"].value.startswith(f"# {symbol} daily review, {day}")
    finally:
        os.environ.pop("DAGSTER_HOME", None)
