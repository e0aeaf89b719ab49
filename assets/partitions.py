"""Partitions that are sessions: per instrument, one partition per trading day of its exchange
calendar, and look-backs counted in sessions (never a later partition).

Each instrument's assets carry their own ``TimeWindowPartitionsDefinition``: daily keys
``YYYY-MM-DD`` (the exchange-local trading date of SPEC §1), with every day on which the
calendar has no session excluded, from the first to the last trading date holding raw ticks.
So the UI's "missing" means "a session with raw data and no results", and an offset of ``-k``
in a ``TimeWindowPartitionMapping`` reaches exactly the ``k`` previous sessions.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
from dagster import TimeWindowPartitionMapping, TimeWindowPartitionsDefinition

from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.market.sessions import session_table

# Look-backs in sessions: features warm up on the previous session; the regime percentile and
# the walk-forward summary's in-sample period use the trailing 20 sessions (SPEC §3).
WARMUP_SESSIONS = 1
REGIME_SESSIONS = 20
SUMMARY_SESSIONS = 20

PARTITION_FMT = "%Y-%m-%d"


def session_partitions(
    instrument: Instrument, first: date, last: date, live: bool = False
) -> TimeWindowPartitionsDefinition:
    """Daily partitions of ``instrument``'s sessions with trading dates in ``[first, last]``.

    Parameters
    ----------
    instrument : Instrument
        Its exchange calendar decides which days are sessions.
    first, last : datetime.date
        First and last trading date (inclusive), e.g. of the raw ticks in the store.
    live : bool
        The instrument is traded live (it has a landing log): the partitions have no end and
        include the current day (``end_offset=1``), so today's session exists while it runs
        and every later one appears without reloading the code location; closed days are
        excluded up to a year ahead.

    Returns
    -------
    TimeWindowPartitionsDefinition
        Keys ``YYYY-MM-DD``; weekdays (and weekends) without a session are exclusions.

    Raises
    ------
    ValueError
        If ``last`` is before ``first``.
    """
    if last < first:
        raise ValueError(f"{instrument.symbol}: last trading date {last} before first {first}")
    horizon = max(last, datetime.now(ZoneInfo(instrument.tz)).date() + timedelta(days=366))
    until = horizon if live else last
    sessions = set(session_table(instrument, first, until)["trading_date"].dt.date)
    days = pd.date_range(first, until, freq="D").date
    closed = [d for d in days if d not in sessions]
    weekend_sessions = any(d.weekday() >= 5 for d in sessions)
    exclusions: list[str | datetime] = [] if weekend_sessions else ["0 0 * * 6", "0 0 * * 0"]
    zone = ZoneInfo(instrument.tz)
    exclusions += [
        datetime(d.year, d.month, d.day, tzinfo=zone)
        for d in closed
        if weekend_sessions or d.weekday() < 5
    ]
    return TimeWindowPartitionsDefinition(
        start=first.strftime(PARTITION_FMT),
        end=None if live else (last + timedelta(days=1)).strftime(PARTITION_FMT),
        end_offset=1 if live else 0,
        fmt=PARTITION_FMT,
        cron_schedule="0 0 * * *",
        timezone=instrument.tz,
        exclusions=exclusions or None,
    )


def lookback(sessions: int) -> TimeWindowPartitionMapping:
    """This session and the ``sessions`` sessions before it: the current and earlier
    partitions only (``end_offset=0``)."""
    return TimeWindowPartitionMapping(
        start_offset=-sessions, end_offset=0, allow_nonexistent_upstream_partitions=True
    )


def partition_key(trading_date: date) -> str:
    """The partition key of a trading date (``YYYY-MM-DD``)."""
    return trading_date.isoformat()
