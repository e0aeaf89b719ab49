"""Wiring of paper execution for one ``$FBE_HOME``: the gateway from the environment, and one
paper step (offer new signals, then submit, fill, expire and mark what is open).

Owns :func:`gateway_from_env` and :func:`paper_step`; the Dagster op of the ``paper_orders``
job and the CLI call them. Broker credentials reach it only inside the execution code location,
through the broker factory of ``resources/broker.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from fbe_pipeline.execution.broker import Broker, PaperBroker
from fbe_pipeline.execution.gateway import ExecutionGateway, SignalOffer
from fbe_pipeline.execution.market import SessionMarket
from fbe_pipeline.governance.alerts import channels_from_env
from fbe_pipeline.governance.runtime import config_store, split
from fbe_pipeline.live.feeds.status import FeedStatusStore, feeds_path
from fbe_pipeline.market.instruments import Instrument, load_instruments
from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.db import database_url, engine_for, upgrade
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.storage.store import RawStore


def gateway_from_env(
    home: Path,
    env: Mapping[str, str] | None = None,
    broker: Callable[[ScoringConfig, Mapping[str, Instrument]], Broker] | None = None,
) -> ExecutionGateway:
    """The gateway of ``home``: the operational store (``FBE_DATABASE_URL`` or
    ``$FBE_HOME/ops.sqlite``, migrated), the limits and scoring of the config version in effect
    (seeded from ``FBE_EXECUTION_CONFIG`` and ``FBE_SCORING_CONFIG``),
    the registered instruments, the STOP file and the market-data feeds' safe mode.

    ``broker`` makes the broker from the scoring config and the instruments (the execution
    location's ``BrokerResource.get_broker``, which holds the credentials); by default the
    paper broker, which needs none (CLI approvals and reports never submit).

    Raises
    ------
    ValueError
        On a malformed execution or scoring config.
    """
    env = os.environ if env is None else env
    engine = engine_for(database_url(home, env))
    upgrade(engine)
    # The version in effect of the versioned config (seeded from the environment).
    scoring, config = split(config_store(home, env).active()[1])
    instruments = load_instruments(home / "instruments.yaml")
    stop_file = Path(config.stop_file) if config.stop_file else home / "STOP"
    venue = (broker or PaperBroker)(scoring, instruments)
    return ExecutionGateway(
        engine,
        config,
        scoring,
        instruments,
        venue,
        stop_file,
        feeds_down=lambda: feeds_in_safe_mode(home),
        alert_channels=channels_from_env(env),
    )


def feeds_in_safe_mode(home: Path) -> set[str]:
    """Symbols that a market-data feed of ``home`` has in safe mode (none without feeds)."""
    path = feeds_path(home)
    if not path.exists():
        return set()
    store = FeedStatusStore(path)
    try:
        return store.safe_mode_symbols()
    finally:
        store.close()


def paper_step(
    gateway: ExecutionGateway, store: RawStore, landing_dir: Path, offers: list[SignalOffer]
) -> dict[str, int]:
    """Offer the signals, then process every session with open orders or positions.

    Returns
    -------
    dict
        ``offered`` signals, ``changed`` orders (expired, submitted, filled, rejected) and
        ``closed`` positions.
    """
    for offer in offers:
        gateway.offer(offer)
    with Session(gateway.engine) as s:
        open_orders = s.execute(
            select(m.Order.symbol, m.Order.trading_date).where(
                m.Order.state.in_([m.PENDING_APPROVAL, m.APPROVED, m.SUBMITTED])
            )
        ).all()
        open_positions = s.execute(
            select(m.Order.symbol, m.Order.trading_date)
            .join(m.Position, m.Position.order_id == m.Order.order_id)
            .where(m.Position.status == "open")
        ).all()
    sessions = sorted({(sym, day) for sym, day in [*open_orders, *open_positions]})
    changed = closed = 0
    for symbol, day in sessions:
        instrument = gateway.instruments[symbol]
        market = SessionMarket(store, landing_dir, instrument, date.fromisoformat(day))
        changed += len(gateway.process(market, market.clock_ns))
        bars = market.bars.to_dict("records")
        closed += len(gateway.mark(symbol, bars, market.close_ns, day))
    return {"offered": len(offers), "changed": changed, "closed": closed}
