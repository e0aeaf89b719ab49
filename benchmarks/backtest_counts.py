"""Backtest trade counts and total PnL per symbol on the real sample data.

Loads every sample file (``$FBE_SAMPLE_DATA``, default ``../shared/data``) into a temporary raw
store, builds each partition's bars, features, regime tags (domain functions of
:mod:`fbe_pipeline.pipeline`, no Dagster) in date order, then for each trigger score builds the
scores and signals and runs :func:`fbe_pipeline.pipeline.session_backtest`. Prints, per trigger
and symbol, the number of trades, the total PnL (price currency per unit, after slippage and
costs) and the trades by exit reason.

Run from the repository root with the project's virtualenv (about a minute)::

    python benchmarks/backtest_counts.py [--trigger 30 --trigger 70]

Exit status: 0 on success, 2 when the sample data is missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.market.sample import SampleDataMissingError, sample_files
from fbe_pipeline.pipeline import (
    NoSessionError,
    data_version,
    prepare_raw_ticks,
    session_backtest,
    session_bars,
    session_features,
    session_regimes,
    session_scores,
    session_signals,
)
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.storage.store import LocalRawStore


@dataclass(frozen=True)
class Session:
    """The config-independent inputs of one partition's backtest."""

    symbol: str
    day: date
    bars: pd.DataFrame
    features: pd.DataFrame
    regimes: pd.DataFrame
    data_version: str


def build_sessions(root: Path | None, scratch: Path) -> list[Session]:
    """Load the sample files into a raw store under ``scratch`` and build every partition."""
    store = LocalRawStore(scratch / "raw")
    for f in sample_files(root):
        load_file(store, f.fmt, f.path, get_instrument(f.symbol))
    out: list[Session] = []
    bars_seen: dict[str, list[pd.DataFrame]] = {}
    feats_seen: dict[str, list[pd.DataFrame]] = {}
    for symbol, day in sorted(store.partitions("ticks"), key=lambda p: (p[0], p[1])):
        instrument = get_instrument(symbol)
        try:
            ticks, _ = prepare_raw_ticks(store, instrument, day)
        except NoSessionError:
            continue
        bars = session_bars(ticks, instrument, day)
        bars_seen.setdefault(symbol, []).append(bars)
        window = pd.concat([b for b in bars_seen[symbol] if len(b)], ignore_index=True)
        feats = session_features(window, day, store.read_partition("books", symbol, day))
        feats_seen.setdefault(symbol, []).append(feats)
        feats_window = pd.concat([f for f in feats_seen[symbol] if len(f)], ignore_index=True)
        regimes = session_regimes(feats_window, instrument, day)
        out.append(Session(symbol, day, bars, feats, regimes, data_version(store, symbol, day)))
    return out


def session_trades(session: Session, config: ScoringConfig) -> pd.DataFrame:
    """Scores, signals and backtest trades of one built session under ``config``."""
    signals = session_signals(session_scores(session.features, config), config)
    return session_backtest(
        session.bars, session.features, signals, session.regimes, config, session.data_version
    )


def main() -> int:
    """Print the per-symbol table; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trigger", type=float, action="append", help="trigger score(s)")
    args = parser.parse_args()
    triggers = args.trigger or [30.0, 70.0]
    with tempfile.TemporaryDirectory(prefix="fbe-bt-") as scratch:
        try:
            sessions = build_sessions(None, Path(scratch))
        except SampleDataMissingError as exc:
            print(f"sample data missing: {exc}", file=sys.stderr)
            return 2
    print(f"{'trigger':>7} {'symbol':8} {'trades':>6} {'pnl':>12}  exit reasons")
    for trigger in triggers:
        config = ScoringConfig(trigger_score=trigger)
        per_symbol: dict[str, list[pd.DataFrame]] = {}
        for s in sessions:
            per_symbol.setdefault(s.symbol, []).append(session_trades(s, config))
        for symbol, frames in sorted(per_symbol.items()):
            trades = pd.concat(frames, ignore_index=True)
            reasons = Counter(trades["exit_reason"])
            detail = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            print(
                f"{trigger:>7g} {symbol:8} {len(trades):>6} {trades['pnl'].sum():>12.4f}  {detail}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
