"""Paper execution in Dagster: the ``paper_orders`` job and the ``paper_execution`` sensor
(issue 9). The sensor turns each new live signal into a run keyed by the signal id (so a signal
is offered by one run however often the sensor ticks), and asks for a processing run whenever
the live detector has moved on or an open order changed (keyed by that stamp)."""

import os
import sqlite3

from dagster import (
    Config,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    job,
    op,
    sensor,
)
from pydantic import Field

from fbe_pipeline.execution.market import offers_from_live
from fbe_pipeline.execution.runtime import gateway_from_env, paper_step
from fbe_pipeline.live.signal_store import LiveSignalStore, signals_path
from fbe_pipeline.settings import paths
from resources.broker import BrokerResource
from resources.fbe import RawStoreResource


class PaperOrdersConfig(Config):
    """The live signals to offer (empty: only process open orders and positions)."""

    signal_ids: list[str] = Field(default_factory=list)


@op(description="Offer live signals to the paper execution gateway, then process open orders.")
def paper_orders(
    context: OpExecutionContext,
    config: PaperOrdersConfig,
    raw_store: RawStoreResource,
    broker: BrokerResource,
) -> None:
    """One paper step (:func:`fbe_pipeline.execution.runtime.paper_step`)."""
    home = paths().home
    offers = []
    if config.signal_ids:
        store = LiveSignalStore(signals_path(home))
        try:
            frame = store.signals()
        finally:
            store.close()
        offers = offers_from_live(frame[frame["signal_id"].isin(config.signal_ids)])
    gateway = gateway_from_env(home, broker=broker.get_broker)
    # Every read of a broker credential is audited: which, by which process and run, never
    # the value (issue 10).
    for name in broker.credential_names():
        gateway.audit(
            "fbe_execution",
            "credential_read",
            name,
            "ok",
            f"pid {os.getpid()} run {context.run_id}",
        )
    counts = paper_step(gateway, raw_store.get_store(), home / "landing", offers)
    context.log.info(f"paper step: {counts}")


@job(description="Paper execution: orders from signals, fills, exits, marks (SPEC §5).")
def paper_orders_job() -> None:
    """The paper execution job."""
    paper_orders()


def _work_stamp() -> int:
    """Changes whenever processing could change something: the live detector moved on, or an
    open order changed (an approval, say). 0 when nothing is open."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from fbe_pipeline.ops import models as m
    from fbe_pipeline.ops.db import database_url, engine_for

    home = paths().home
    engine = engine_for(database_url(home))
    try:
        with Session(engine) as s:
            orders = s.scalar(
                select(func.max(m.Order.updated_ns)).where(
                    m.Order.state.in_([m.PENDING_APPROVAL, m.APPROVED, m.SUBMITTED])
                )
            )
            positions = s.scalar(
                select(func.count()).select_from(m.Position).where(m.Position.status == "open")
            )
    except Exception:  # no operational store yet: nothing is open
        return 0
    finally:
        engine.dispose()
    if not orders and not positions:
        return 0
    with sqlite3.connect(signals_path(home)) as db:
        row = db.execute("SELECT max(updated_at) FROM live_progress").fetchone()
    return max(int(row[0] or 0), int(orders or 0))


@sensor(
    job=paper_orders_job,
    minimum_interval_seconds=2,
    default_status=DefaultSensorStatus.RUNNING,
    description="New live signals become paper_orders runs (run key: the signal id); open "
    "orders and positions are processed when the live detector moves on or an order changes.",
)
def paper_execution(context: SensorEvaluationContext):  # type: ignore[no-untyped-def]
    """Cursor: ``<last live signal rowid>:<last progress stamp processed>``."""
    path = signals_path(paths().home)
    if not path.exists():
        return SkipReason("no live signals yet")
    last_row, last_stamp = (int(x) for x in (context.cursor or "0:0").split(":"))
    store = LiveSignalStore(path)
    try:
        fresh, row = store.since(last_row)
    finally:
        store.close()
    for signal_id in fresh["signal_id"]:
        yield RunRequest(
            run_key=f"signal:{signal_id}",
            run_config={"ops": {"paper_orders": {"config": {"signal_ids": [signal_id]}}}},
            # Ahead of automation's materializations in the queue: an order must not wait
            # behind a backfill of past sessions.
            tags={"fbe/signal_id": signal_id, "dagster/priority": "10"},
        )
    stamp = _work_stamp()
    if stamp > last_stamp and len(fresh) == 0:
        yield RunRequest(run_key=f"process:{stamp}", tags={"dagster/priority": "10"})
    context.update_cursor(f"{row}:{max(stamp, last_stamp)}")
