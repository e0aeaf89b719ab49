"""Column layouts of the raw frames every source reader produces (SPEC §2).

Raw ticks (one row per trade print)
-----------------------------------
``symbol``           str      instrument symbol as configured
``ts_event``         int64    source (exchange) timestamp, ns since the Unix epoch, UTC
``ts_recv``          Int64    our/vendor receive timestamp, ns UTC; <NA> where the source has none
``price``            float64  trade price in the instrument's price currency, > 0 and finite
``size``             float64  traded quantity (shares, contracts or coins), >= 0
``side``             str      aggressor side as given by the source: ``buy``/``sell``/``unknown``
``source``           str      reader name, e.g. ``lean``, ``tardis``, ``databento``, ``csv``
``seq``              int64    per-source sequence number; with ``source`` the idempotency key and,
                              after ``ts_event``, the tie-break that orders ticks
``exchange``         str      venue/exchange code of the print, ``""`` when unknown
``condition``        str      the vendor's raw sale-condition code, ``""`` when none
``ohlc_eligible``    bool     the print may set open/high/low/close of a bar
``volume_eligible``  bool     the print counts towards bar volume

L1 quotes (top of book, used for Lee-Ready)
-------------------------------------------
``symbol``, ``ts_event``, ``ts_recv``, ``bid_px``, ``bid_sz``, ``ask_px``, ``ask_sz`` (float64,
NaN where the row does not carry that side), ``source``, ``seq``, ``exchange``.

L2 book snapshots (top-5)
-------------------------
``symbol``, ``ts_event``, ``ts_recv``, ``bid_px_1`` .. ``bid_px_5``, ``bid_sz_1`` .. ``bid_sz_5``,
``ask_px_1`` .. ``ask_px_5``, ``ask_sz_1`` .. ``ask_sz_5`` (float64, level 1 = best, NaN for an
empty level), ``source``, ``seq``.

Vendor reference bars (e.g. Lean minute bars)
---------------------------------------------
``symbol``, ``ts`` (int64 ns UTC, bar open time; the bar covers [ts, ts + 60 s)), ``open``,
``high``, ``low``, ``close``, ``volume`` (float64).
"""

from __future__ import annotations

BOOK_LEVELS = 5

TICK_COLUMNS: tuple[str, ...] = (
    "symbol",
    "ts_event",
    "ts_recv",
    "price",
    "size",
    "side",
    "source",
    "seq",
    "exchange",
    "condition",
    "ohlc_eligible",
    "volume_eligible",
)

QUOTE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "ts_event",
    "ts_recv",
    "bid_px",
    "bid_sz",
    "ask_px",
    "ask_sz",
    "source",
    "seq",
    "exchange",
)

BOOK_COLUMNS: tuple[str, ...] = (
    "symbol",
    "ts_event",
    "ts_recv",
    *(f"bid_px_{i}" for i in range(1, BOOK_LEVELS + 1)),
    *(f"bid_sz_{i}" for i in range(1, BOOK_LEVELS + 1)),
    *(f"ask_px_{i}" for i in range(1, BOOK_LEVELS + 1)),
    *(f"ask_sz_{i}" for i in range(1, BOOK_LEVELS + 1)),
    "source",
    "seq",
)

REFERENCE_BAR_COLUMNS: tuple[str, ...] = (
    "symbol",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
)

SIDES: tuple[str, ...] = ("buy", "sell", "unknown")
