"""The real sample data set (``FBE_SAMPLE_DATA``): which file loads with which format and symbol."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fbe_pipeline.settings import sample_data_dir


class SampleDataMissingError(FileNotFoundError):
    """The sample data directory is missing or holds none of the expected files."""


@dataclass(frozen=True)
class SampleFile:
    """One vendor file of the sample set with its loader format and FBE symbol."""

    fmt: str
    path: Path
    symbol: str


# (glob under the data directory, format, symbol), in load order: quotes before trades is not
# needed (sides are resolved at materialization), reference bars last.
_LAYOUT: tuple[tuple[str, str, str], ...] = (
    ("lean/spy/tick/*_trade.zip", "lean-trades", "SPY"),
    ("lean/bac/tick/*_trade.zip", "lean-trades", "BAC"),
    ("lean/bac/tick/*_quote.zip", "lean-quotes", "BAC"),
    ("lean/gc/tick/*_trade.zip", "lean-trades", "GC"),
    ("tardis/*BTCUSDT_trades*.csv", "tardis-trades", "BTCUSDT"),
    ("tardis/*BTCUSDT_quotes*.csv", "tardis-quotes", "BTCUSDT"),
    ("databento/*.mbo.dbn.zst", "databento-mbo", "ES"),
    ("lean/spy/minute/*_trade.zip", "lean-minute", "SPY"),
    ("lean/bac/minute/*_trade.zip", "lean-minute", "BAC"),
)


def sample_files(root: Path | None = None) -> list[SampleFile]:
    """List the sample files present, in load order.

    Raises
    ------
    SampleDataMissingError
        If the directory does not exist or contains none of the expected files; the message
        says how to point ``FBE_SAMPLE_DATA`` at it.
    """
    root = Path(root) if root is not None else sample_data_dir()
    if not root.is_dir():
        raise SampleDataMissingError(
            f"sample data directory not found: {root}. Put the shared data beside the project "
            "(../shared/data) or set FBE_SAMPLE_DATA to its path."
        )
    found = [
        SampleFile(fmt, path, symbol)
        for pattern, fmt, symbol in _LAYOUT
        for path in sorted(root.glob(pattern))
    ]
    if not found:
        raise SampleDataMissingError(
            f"no sample files under {root} (expected lean/, tardis/, databento/ folders); "
            "set FBE_SAMPLE_DATA to the shared data directory."
        )
    return found
