"""The mandatory slippage model of backtests and paper trading (SPEC §3).

``slip = price * slippage_base * (1 + slippage_vol_coeff * vol_ratio) * U(0.5, 1.5)``, with the
uniform draw seeded by the signal id so every run reproduces it.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from fbe_pipeline.research.config import ScoringConfig


def seeded_uniform(key: str, low: float = 0.5, high: float = 1.5) -> float:
    """A uniform draw in ``[low, high)`` determined by ``key`` (SHA-256 seeds NumPy's PCG64)."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return float(np.random.Generator(np.random.PCG64(seed)).uniform(low, high))


def slippage(price: float, vol_ratio: float, key: str, config: ScoringConfig) -> float:
    """Expected adverse price move of one fill.

    Parameters
    ----------
    price : float
        Reference fill price, price currency.
    vol_ratio : float
        The signal bar's volume ratio; NaN counts as 1 (average volume).
    key : str
        Seed key: the signal id (entry) or ``signal id + ":exit"``.
    config : ScoringConfig
        ``slippage_base`` (fraction of price) and ``slippage_vol_coeff``.

    Returns
    -------
    float
        Slippage in price currency, >= 0.
    """
    vr = 1.0 if math.isnan(vol_ratio) else max(vol_ratio, 0.0)
    return (
        price * config.slippage_base * (1.0 + config.slippage_vol_coeff * vr) * seeded_uniform(key)
    )
