"""Shared fixtures: the real sample data directory and an isolated ``FBE_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The real sample data directory (``FBE_SAMPLE_DATA``, default ``../shared/data``)."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(os.environ.get("FBE_SAMPLE_DATA", str(default))).expanduser()
    if not root.is_dir():
        pytest.skip(f"sample data not found at {root}; set FBE_SAMPLE_DATA to shared/data")
    return root


@pytest.fixture
def fbe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``FBE_HOME`` under ``tmp_path`` for this test only."""
    home = tmp_path / "fbe_home"
    monkeypatch.setenv("FBE_HOME", str(home))
    return home
