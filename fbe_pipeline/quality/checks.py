"""Correctness checks as plain functions returning ``CheckOutcome`` (SPEC §3-4).

The Dagster layer turns each outcome into an asset check result; tests call them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from fbe_pipeline.market.bars import find_gaps
from fbe_pipeline.storage.integrity import Finding


@dataclass(frozen=True)
class CheckOutcome:
    """Result of one check.

    Attributes
    ----------
    passed : bool
        Whether the property holds.
    metadata : dict
        Counts, shares and the first offending rows (as text) explaining the result.
    """

    passed: bool
    metadata: dict[str, object] = field(default_factory=dict)


def _head(frame: pd.DataFrame, n: int = 5) -> str:
    return frame.head(n).to_string(index=False) if len(frame) else ""


def check_ohlc_invariants(bars: pd.DataFrame) -> CheckOutcome:
    """``low <= min(open, close)``, ``max(open, close) <= high``, prices > 0, volume >= 0,
    ``buy + sell <= volume`` and ``low <= vwap <= high`` on every bar."""
    o, h, lo, c = (bars[k].to_numpy(np.float64) for k in ("open", "high", "low", "close"))
    tol = 1e-9 * np.maximum(np.abs(h), 1.0)
    bad = (
        (lo > np.minimum(o, c) + tol)
        | (h < np.maximum(o, c) - tol)
        | ~(lo > 0)
        | ~(bars["volume"].to_numpy() >= 0)
        | (
            bars["buy_volume"].to_numpy() + bars["sell_volume"].to_numpy()
            > bars["volume"].to_numpy() * (1 + 1e-12) + 1e-9
        )
        | (bars["vwap"].to_numpy() < lo - tol)
        | (bars["vwap"].to_numpy() > h + tol)
    )
    return CheckOutcome(
        passed=not bad.any(),
        metadata={"bars": len(bars), "violations": int(bad.sum()), "first": _head(bars[bad])},
    )


def check_bar_times(bars: pd.DataFrame, open_ns: int, close_ns: int) -> CheckOutcome:
    """Bar times strictly increasing (hence unique), whole minutes from the session open, and
    inside ``[open_ns, close_ns)``."""
    ts = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8
    steps = np.diff(ts)
    not_increasing = int((steps <= 0).sum())
    misaligned = int(((ts - open_ns) % 60_000_000_000 != 0).sum())
    outside = int(((ts < open_ns) | (ts >= close_ns)).sum())
    return CheckOutcome(
        passed=not (not_increasing or misaligned or outside),
        metadata={
            "bars": len(ts),
            "not_strictly_increasing": not_increasing,
            "misaligned": misaligned,
            "outside_session": outside,
        },
    )


def check_ticks_in_session(ticks: pd.DataFrame, open_ns: int, close_ns: int) -> CheckOutcome:
    """Every tick's ``ts_event`` lies in the session ``[open_ns, close_ns)``."""
    ts = ticks["ts_event"].to_numpy(np.int64)
    outside = (ts < open_ns) | (ts >= close_ns)
    return CheckOutcome(
        passed=not outside.any(),
        metadata={"ticks": len(ts), "outside_session": int(outside.sum())},
    )


def gap_report(
    bars: pd.DataFrame, open_ns: int, close_ns: int, feed_gaps: pd.DataFrame | None = None
) -> CheckOutcome:
    """Session minutes without a bar (gaps longer than the fill limit, or at the edges), and
    the trades a live feed knows it missed (issue 14).

    Parameters
    ----------
    bars : pandas.DataFrame
        ``bars_1m`` of the session.
    open_ns, close_ns : int
        Session bounds, ns UTC.
    feed_gaps : pandas.DataFrame, optional
        Gaps recorded by market-data feeds in the session (``first_id``, ``last_id``,
        ``start_ns``, ``end_ns``, ``reason``; see
        :func:`fbe_pipeline.live.feeds.status.feed_gaps`).

    Fails (a warning in the pipeline) when any gap of either kind exists, listing the longest
    bar gaps and every feed gap.
    """
    feed = feed_gaps if feed_gaps is not None else pd.DataFrame()
    gaps = find_gaps(bars, open_ns, close_ns)
    session_minutes = (close_ns - open_ns) // 60_000_000_000
    missing = int(gaps["minutes"].sum()) if len(gaps) else 0
    longest = gaps.sort_values("minutes", ascending=False)
    by_id = feed.dropna(subset=["first_id", "last_id"]) if len(feed) else feed
    # Trades known missing by id; a gap of a venue without ids is a time range only.
    missed_ids = int((by_id["last_id"] - by_id["first_id"] + 1).sum()) if len(by_id) else 0
    return CheckOutcome(
        passed=gaps.empty and feed.empty,
        metadata={
            "gaps": len(gaps),
            "missing_minutes": missing,
            "session_minutes": int(session_minutes),
            "coverage_pct": round(100.0 * (1 - missing / session_minutes), 3),
            "longest": _head(longest),
            "feed_gaps": len(feed),
            "feed_missing_trades": missed_ids,
            "feed_gap_list": _head(
                feed[["feed", "first_id", "last_id", "start_ns", "end_ns", "reason"]]
                if len(feed)
                else feed
            ),
        },
    )


def vendor_match(
    bars: pd.DataFrame,
    reference: pd.DataFrame,
    open_ns: int,
    close_ns: int,
    min_volume_share: float = 0.99,
    min_ohlc_share: float = 0.98,
) -> CheckOutcome:
    """Share of vendor reference bars matched by our bars (same open time).

    Volume matches when equal; OHLC when all four prices are equal after rounding to 1e-6.
    Reference bars outside our session, and our filled bars, are not compared.

    Parameters
    ----------
    bars : pandas.DataFrame
        Our bars of one session.
    reference : pandas.DataFrame
        Vendor bars (:data:`fbe_pipeline.market.frames.REFERENCE_BAR_COLUMNS`, ``ts`` int64 ns).
    open_ns, close_ns : int
        Session bounds, ns UTC; only reference bars inside are compared.
    min_volume_share, min_ohlc_share : float
        Pass thresholds.
    """
    ref_ts = reference["ts"].to_numpy(np.int64)
    reference = reference.loc[(ref_ts >= open_ns) & (ref_ts < close_ns)]
    ours = bars.loc[~bars["is_filled"]].copy()
    ours["key"] = pd.DatetimeIndex(ours["ts"]).as_unit("ns").asi8
    merged = reference.merge(ours, left_on="ts", right_on="key", how="left", suffixes=("_ref", ""))
    if merged.empty:
        return CheckOutcome(passed=True, metadata={"reference_bars": 0})
    vol = np.isclose(merged["volume"], merged["volume_ref"], rtol=0, atol=1e-9)
    ohlc = np.ones(len(merged), dtype=bool)
    for k in ("open", "high", "low", "close"):
        ohlc &= np.round(merged[k].to_numpy(np.float64), 6) == np.round(
            merged[f"{k}_ref"].to_numpy(np.float64), 6
        )
    vol_share = float(vol.mean())
    ohlc_share = float(ohlc.mean())
    return CheckOutcome(
        passed=vol_share >= min_volume_share and ohlc_share >= min_ohlc_share,
        metadata={
            "reference_bars": len(merged),
            "missing_in_ours": int(merged["key"].isna().sum()),
            "volume_match_pct": round(100 * vol_share, 3),
            "ohlc_match_pct": round(100 * ohlc_share, 3),
            "first_mismatches": _head(merged.loc[~(vol & ohlc)]),
        },
    )


def frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Equality for recomputed outputs: same columns and values, NaN equal to NaN."""
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    if len(a) == 0:
        return True
    for col in a.columns:
        x, y = a[col].reset_index(drop=True), b[col].reset_index(drop=True)
        if pd.api.types.is_float_dtype(x) and pd.api.types.is_float_dtype(y):
            if not np.allclose(x.to_numpy(), y.to_numpy(), rtol=1e-12, atol=0, equal_nan=True):
                return False
        elif not x.equals(y):
            return False
    return True


def sample_cut_times(ts: pd.Series, samples: int = 8, seed: int = 0) -> list[pd.Timestamp]:
    """Deterministic sample of bar times to truncate at (first, last and random in between)."""
    unique = pd.DatetimeIndex(ts).unique().sort_values()
    if len(unique) == 0:
        return []
    rng = np.random.default_rng(seed)
    picks = {0, len(unique) - 1} | set(rng.integers(0, len(unique), size=samples).tolist())
    return [unique[i] for i in sorted(picks)]


def check_prefix_invariance(
    inputs: pd.DataFrame,
    compute: Callable[[pd.DataFrame], pd.DataFrame],
    cut_times: list[pd.Timestamp],
    full: pd.DataFrame | None = None,
) -> CheckOutcome:
    """SPEC §4.2: outputs computed on inputs truncated at bar ``t`` equal those on all inputs.

    Parameters
    ----------
    inputs : pandas.DataFrame
        Rows with a ``ts`` column (bar open time), in time order.
    compute : callable
        The step under test: inputs -> outputs with a ``ts`` column.
    cut_times : list of pandas.Timestamp
        Bars to truncate at (inclusive).
    full : pandas.DataFrame, optional
        ``compute(inputs)``, if already known.
    """
    full = compute(inputs) if full is None else full
    in_ts = pd.DatetimeIndex(inputs["ts"])
    out_ts = pd.DatetimeIndex(full["ts"]) if len(full) else pd.DatetimeIndex([], tz="UTC")
    failures: list[str] = []
    for t in cut_times:
        prefix = compute(inputs.loc[in_ts <= t].reset_index(drop=True))
        expected = full.loc[out_ts <= t].reset_index(drop=True)
        if not frames_equal(prefix.reset_index(drop=True), expected):
            failures.append(str(t))
    return CheckOutcome(
        passed=not failures,
        metadata={"cuts": len(cut_times), "failed_cuts": len(failures), "first": failures[:5]},
    )


def check_signal_timing(signals: pd.DataFrame) -> CheckOutcome:
    """SPEC §4.4: every signal's ``decision_time`` >= its bar close (``ts + 60 s``)."""
    close = pd.DatetimeIndex(signals["ts"]) + pd.Timedelta(60, "s")
    bad = pd.DatetimeIndex(signals["decision_time"]) < close
    return CheckOutcome(
        passed=not bad.any(),
        metadata={
            "signals": len(signals),
            "before_close": int(bad.sum()),
            "first": _head(signals.loc[bad]),
        },
    )


def check_entry_timing(trades: pd.DataFrame) -> CheckOutcome:
    """SPEC §4.4: every backtest entry is strictly after its decision, and the decision is at
    or after the signal bar's close."""
    entry = pd.DatetimeIndex(trades["entry_time"])
    decision = pd.DatetimeIndex(trades["decision_time"])
    close = pd.DatetimeIndex(trades["signal_ts"]) + pd.Timedelta(60, "s")
    bad = (entry <= decision) | (decision < close)
    return CheckOutcome(
        passed=not bad.any(),
        metadata={
            "trades": len(trades),
            "violations": int(bad.sum()),
            "first": _head(trades.loc[bad]),
        },
    )


def clock_drift(ticks: pd.DataFrame, threshold_ms: float = 100.0) -> CheckOutcome:
    """Clock drift ``ts_recv - ts_event`` of a partition's ticks (SPEC §2, §7).

    Drift is monitored, never corrected: the check fails (a warning in the pipeline) when any
    tick's ``|drift|`` exceeds ``threshold_ms``. Ticks without a receive time are not counted.

    Parameters
    ----------
    ticks : pandas.DataFrame
        Raw ticks with ``drift_ms`` (float64 ms, NaN without ``ts_recv``).
    threshold_ms : float
        Flag limit, ms.

    Returns
    -------
    CheckOutcome
        Metadata ``ticks_with_recv``, ``p50_ms``, ``p99_ms``, ``max_ms`` (of the signed drift)
        and ``over_threshold`` (count with ``|drift| > threshold_ms``).
    """
    drift = ticks["drift_ms"].dropna().to_numpy(np.float64)
    if len(drift) == 0:
        return CheckOutcome(passed=True, metadata={"ticks_with_recv": 0, "note": "no ts_recv"})
    over = int((np.abs(drift) > threshold_ms).sum())
    return CheckOutcome(
        passed=over == 0,
        metadata={
            "ticks_with_recv": len(drift),
            "p50_ms": round(float(np.percentile(drift, 50)), 3),
            "p99_ms": round(float(np.percentile(drift, 99)), 3),
            "max_ms": round(float(drift.max()), 3),
            "over_threshold": over,
            "threshold_ms": threshold_ms,
        },
    )


def check_raw_objects(findings: list[Finding], symbol: str, trading_date: date) -> CheckOutcome:
    """The ``raw_objects_verified`` check of a partition from the findings of
    :func:`fbe_pipeline.storage.integrity.verify_partition`: passed when there are none; metadata
    names
    each offending key with the expected and actual SHA-256 and size (bytes)."""
    rows = [asdict(f) for f in findings[:50]]
    summary = "; ".join(f"{f.problem}: {f.key}" for f in findings[:5])
    return CheckOutcome(
        passed=not findings,
        metadata={
            "partition": f"{trading_date.isoformat()}|{symbol}",
            "findings": len(findings),
            "objects": rows,
            **({"summary": summary} if findings else {}),
        },
    )


def check_live_parity(
    batch: pd.DataFrame, live: pd.DataFrame, closed_through: pd.Timestamp | None
) -> CheckOutcome:
    """The live detector's signals of a session equal the batch ones (issue 8, SPEC §4).

    Parameters
    ----------
    batch : pandas.DataFrame
        The ``signals`` asset's rows of the session (``signal_id``, ``ts``, ``bar_close``,
        ``direction``, ``score``).
    live : pandas.DataFrame
        The live signals of the session (same columns, from the live signal store).
    closed_through : pandas.Timestamp or None
        How far (UTC) the live detector closed bars of the session; ``None`` when the session
        was not live (the check passes with ``live`` = false).

    Returns
    -------
    CheckOutcome
        Passes when every live signal has a batch signal with the same ``signal_id``,
        direction and score (so the same bar: a live signal is never earlier than the batch
        one), and every batch signal whose bar closed by ``closed_through`` is live. Metadata:
        counts, ``missing_live`` and ``not_in_batch`` ids, ``different`` (same id, other
        direction or score).
    """
    if closed_through is None:
        return CheckOutcome(True, {"live": False, "batch_signals": len(batch)})
    # An empty frame's id column may have any dtype; ids are text.
    batch = batch.assign(signal_id=batch["signal_id"].astype(str))
    live = live.assign(signal_id=live["signal_id"].astype(str))
    covered = batch[pd.DatetimeIndex(batch["bar_close"]) <= closed_through]
    live_ids = set(live["signal_id"])
    batch_ids = set(batch["signal_id"])
    missing = sorted(set(covered["signal_id"]) - live_ids)
    extra = sorted(live_ids - batch_ids)
    both = batch.merge(live, on="signal_id", suffixes=("_batch", "_live"))
    differ = both[
        (both["direction_batch"] != both["direction_live"])
        | ((both["score_batch"] - both["score_live"]).abs() > 1e-9)
    ]
    return CheckOutcome(
        not missing and not extra and differ.empty,
        {
            "live": True,
            "closed_through": str(closed_through),
            "batch_signals": len(batch),
            "batch_signals_live_covered": len(covered),
            "live_signals": len(live),
            "missing_live": ", ".join(missing[:10]),
            "not_in_batch": ", ".join(extra[:10]),
            "different": ", ".join(differ["signal_id"].head(10)),
        },
    )
