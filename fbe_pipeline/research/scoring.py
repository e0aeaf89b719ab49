"""False-breakout score and signals (SPEC §3).

A poke bar scores the sum of the weights of the components that fire: wick (rejection wick),
volume (a breakout nobody joined), poke (a shallow poke), book churn and delta against the
poke. Other bars score 0. A signal fades the poke when the score reaches the trigger.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fbe_pipeline.research.config import ScoringConfig

NS_PER_MS = 1_000_000
BAR_NS = 60_000_000_000

SCORE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "trading_date",
    "ts",
    "poke",
    "score",
    "c_wick",
    "c_vol",
    "c_poke",
    "c_book_churn",
    "c_delta",
    "unavailable",
    "config_version",
)

SIGNAL_COLUMNS: tuple[str, ...] = (
    "signal_id",
    "symbol",
    "trading_date",
    "ts",
    "bar_close",
    "decision_time",
    "direction",
    "poke",
    "score",
    "components",
    "config_version",
)


def compute_scores(features: pd.DataFrame, config: ScoringConfig) -> pd.DataFrame:
    """Score every bar.

    Parameters
    ----------
    features : pandas.DataFrame
        Output of :func:`fbe_pipeline.research.features.compute_features`.
    config : ScoringConfig
        Thresholds and weights.

    Returns
    -------
    pandas.DataFrame
        :data:`SCORE_COLUMNS`, one row per feature row. ``score`` float64 in [0, 100];
        ``c_*`` bool, whether each component fired (all ``False`` off poke bars). A NaN input
        (warm-up, or no L2 for book churn) never fires its component; ``unavailable`` (str)
        names, comma-separated, the components that could not fire on that bar because their
        input is unknown: ``vol`` (no volume, or fewer than 20 prior bars), ``book_churn`` (no
        L2 book), ``delta`` (no aggressor side, e.g. a session built from vendor candles), so a
        score from candles is never silently compared with one from ticks.
    """
    poke = features["poke"].to_numpy()
    on_poke = poke != "none"
    wick = on_poke & (features["wick_ratio"].to_numpy(np.float64) >= config.wick_ratio_threshold)
    vol = on_poke & (features["vol_ratio"].to_numpy(np.float64) <= config.vol_ratio_threshold)
    pa = features["poke_atr"].to_numpy(np.float64)
    shallow = on_poke & (pa > 0) & (pa <= config.poke_max_atr)
    churn = on_poke & (features["book_churn"].to_numpy(np.float64) >= config.churn_threshold)
    delta = on_poke & features["delta_against"].to_numpy(bool)
    unknown = {
        "vol": np.isnan(features["vol_ratio"].to_numpy(np.float64)),
        "book_churn": ~features["has_l2"].to_numpy(bool),
        "delta": np.isnan(features["delta_ratio"].to_numpy(np.float64)),
    }
    unavailable = [
        ",".join(name for name, flags in unknown.items() if flags[i]) for i in range(len(poke))
    ]
    score = (
        wick * config.weight_wick
        + vol * config.weight_vol
        + shallow * config.weight_poke
        + churn * config.weight_book_churn
        + delta * config.weight_delta
    ).astype(np.float64)
    return pd.DataFrame(
        {
            "symbol": features["symbol"].to_numpy(),
            "trading_date": features["trading_date"].to_numpy(),
            "ts": pd.DatetimeIndex(features["ts"]),
            "poke": poke,
            "score": score,
            "c_wick": wick,
            "c_vol": vol,
            "c_poke": shallow,
            "c_book_churn": churn,
            "c_delta": delta,
            "unavailable": unavailable,
            "config_version": config.version,
        },
        columns=list(SCORE_COLUMNS),
    )


def signal_id(symbol: str, bar_ts: pd.Timestamp, config_version: str) -> str:
    """Deterministic signal id ``SYMBOL:YYYYmmddTHHMMZ:config_version`` (bar open, UTC)."""
    return f"{symbol}:{pd.Timestamp(bar_ts).tz_convert('UTC'):%Y%m%dT%H%MZ}:{config_version}"


def generate_signals(scores: pd.DataFrame, config: ScoringConfig) -> pd.DataFrame:
    """Turn scores into signals that fade the poke.

    Parameters
    ----------
    scores : pandas.DataFrame
        Output of :func:`compute_scores`.
    config : ScoringConfig
        Supplies ``trigger_score`` and ``decision_latency_ms``.

    Returns
    -------
    pandas.DataFrame
        :data:`SIGNAL_COLUMNS`, one row per bar with ``score >= trigger_score``: ``direction``
        ``short`` for an up poke and ``long`` for a down poke; ``bar_close = ts + 60 s``;
        ``decision_time = bar_close + decision_latency_ms`` (never before the close);
        ``components`` the comma-separated names of the fired components.
    """
    fired = scores[scores["score"] >= config.trigger_score]
    ts = pd.DatetimeIndex(fired["ts"])
    bar_close = ts + pd.Timedelta(BAR_NS, "ns")
    decision = bar_close + pd.Timedelta(config.decision_latency_ms, "ms")
    names = ("wick", "vol", "poke", "book_churn", "delta")
    comp = fired[[f"c_{n}" for n in names]].to_numpy(bool)
    components = [",".join(n for n, on in zip(names, row, strict=True) if on) for row in comp]
    return pd.DataFrame(
        {
            "signal_id": [
                signal_id(s, t, v)
                for s, t, v in zip(fired["symbol"], ts, fired["config_version"], strict=True)
            ],
            "symbol": fired["symbol"].to_numpy(),
            "trading_date": fired["trading_date"].to_numpy(),
            "ts": ts,
            "bar_close": bar_close,
            "decision_time": decision,
            "direction": np.where(fired["poke"].to_numpy() == "up", "short", "long"),
            "poke": fired["poke"].to_numpy(),
            "score": fired["score"].to_numpy(np.float64),
            "components": components,
            "config_version": fired["config_version"].to_numpy(),
        },
        columns=list(SIGNAL_COLUMNS),
    ).reset_index(drop=True)
