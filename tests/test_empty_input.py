"""Empty input is refused by name with "no rows" and stores nothing (issue 6, reliability).

Every loader format gets a file without a single data row, built from the real sample files
where the format has a header or metadata (Tardis header line, DBN metadata).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import zstandard
from typer.testing import CliRunner

from fbe_pipeline.cli import app
from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.market.sources.databento import _zstd_decompress
from fbe_pipeline.storage.integrity import verify_store
from fbe_pipeline.storage.store import LocalRawStore

TARDIS = "tardis/tardis_binance-futures_BTCUSDT_{kind}_2020-02-22.csv"
DBN = "databento/esh4-glbx-mdp3-20231225.mbo.dbn.zst"


@pytest.fixture(autouse=True)
def _isolated_home(fbe_home: Path) -> Path:
    return fbe_home


@pytest.fixture
def store(tmp_path: Path) -> LocalRawStore:
    return LocalRawStore(tmp_path / "raw")


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"sample file missing: {path}")
    return path


def _lean_zip(path: Path, content: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(path.stem + ".csv", content)
    return path


def _dbn_metadata_only(sample_data: Path, path: Path, compress: bool) -> Path:
    raw = _zstd_decompress(_need(sample_data / DBN).read_bytes(), path)
    meta_end = 8 + int.from_bytes(raw[4:8], "little")
    meta = raw[:meta_end]
    path.write_bytes(zstandard.ZstdCompressor().compress(meta) if compress else meta)
    return path


def _empty_files(tmp_path: Path, sample_data: Path) -> dict[str, tuple[str, Path, str]]:
    """case id -> (format, file, symbol)."""
    tardis_header = {
        kind: _need(sample_data / TARDIS.format(kind=kind)).read_text().splitlines()[0] + "\n"
        for kind in ("trades", "quotes")
    }
    parquet = tmp_path / "empty.parquet"
    pd.DataFrame(
        {
            "timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
            "price": pd.Series([], dtype="float64"),
            "size": pd.Series([], dtype="float64"),
        }
    ).to_parquet(parquet)
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("timestamp,price,size,side\n")
    zero_bytes = tmp_path / "zero_bytes.csv"
    zero_bytes.write_bytes(b"")
    return {
        "csv-header-only": ("csv", header_only, "SPY"),
        "csv-zero-bytes": ("csv", zero_bytes, "SPY"),
        "parquet-no-rows": ("parquet", parquet, "SPY"),
        "lean-trades-empty-entry": (
            "lean-trades",
            _lean_zip(tmp_path / "20131007_trade.zip", ""),
            "SPY",
        ),
        "lean-quotes-blank-entry": (
            "lean-quotes",
            _lean_zip(tmp_path / "20131007_quote.zip", "\n\n"),
            "SPY",
        ),
        "lean-minute-empty-entry": (
            "lean-minute",
            _lean_zip(tmp_path / "20131008_trade.zip", ""),
            "SPY",
        ),
        "tardis-trades-header-only": (
            "tardis-trades",
            _write(tmp_path / "trades_header.csv", tardis_header["trades"]),
            "BTCUSDT",
        ),
        "tardis-quotes-header-only": (
            "tardis-quotes",
            _write(tmp_path / "quotes_header.csv", tardis_header["quotes"]),
            "BTCUSDT",
        ),
        "dbn-zst-no-records": (
            "databento-mbo",
            _dbn_metadata_only(sample_data, tmp_path / "norecords.mbo.dbn.zst", compress=True),
            "ES",
        ),
        "dbn-plain-no-records": (
            "databento-mbo",
            _dbn_metadata_only(sample_data, tmp_path / "norecords.mbo.dbn", compress=False),
            "ES",
        ),
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CASES = [
    "csv-header-only",
    "csv-zero-bytes",
    "parquet-no-rows",
    "lean-trades-empty-entry",
    "lean-quotes-blank-entry",
    "lean-minute-empty-entry",
    "tardis-trades-header-only",
    "tardis-quotes-header-only",
    "dbn-zst-no-records",
    "dbn-plain-no-records",
]


@pytest.mark.parametrize("case", CASES)
def test_file_without_rows_is_refused_by_name_and_stores_nothing(
    case: str, store: LocalRawStore, tmp_path: Path, sample_data: Path
) -> None:
    fmt, path, symbol = _empty_files(tmp_path, sample_data)[case]

    with pytest.raises(ValueError, match="no rows") as info:
        load_file(store, fmt, path, get_instrument(symbol))

    assert str(info.value).startswith((path.name, str(path)))
    assert store.manifest() == []
    assert verify_store(store).ok


@pytest.mark.parametrize(
    "case", ["csv-header-only", "lean-trades-empty-entry", "dbn-zst-no-records"]
)
def test_fbe_load_of_a_file_without_rows_exits_1_naming_it(
    case: str, fbe_home: Path, tmp_path: Path, sample_data: Path
) -> None:
    fmt, path, symbol = _empty_files(tmp_path, sample_data)[case]

    result = CliRunner().invoke(app, ["load", fmt, str(path), "--symbol", symbol])

    assert result.exit_code == 1, result.output
    flat = re.sub(r"\s+", "", result.output)
    assert re.sub(r"\s+", "", str(path)) in flat
    assert "norows" in flat
    assert "1of1fileswerenotloaded" in flat
    assert LocalRawStore(fbe_home / "raw").manifest() == []


def test_lean_quote_file_whose_rows_are_all_suspicious_is_refused_too(
    store: LocalRawStore, tmp_path: Path
) -> None:
    # Rows exist but none survives the reader (suspicious quotes are dropped): nothing to store.
    path = _lean_zip(tmp_path / "20131007_quote.zip", "34200000,1674100,100,0,0,P,0,1\n")
    with pytest.raises(ValueError, match=r"20131007_quote\.zip: no rows"):
        load_file(store, "lean-quotes", path, get_instrument("SPY"))
    assert store.manifest() == []
