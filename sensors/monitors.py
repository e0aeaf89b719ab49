"""The monitors in Dagster (issue 10): an asset ``monitors`` with one asset check per monitor of
:data:`fbe_pipeline.governance.monitors.MONITORS` (severity WARN or ERROR), evaluated by the
``monitors`` sensor every minute (and runnable from the UI), so the UI's check history is the
monitors' history. Inputs: batch and live signals, the operational store's fills, the landing
log's live ticks, and the instance's latest check results."""

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSpec,
    DagsterInstance,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    multi_asset_check,
    sensor,
)

from assets.common import OWNERS
from fbe_pipeline.governance import monitors as mon
from fbe_pipeline.governance.alerts import ERROR, channels_from_env, enqueue_alert
from fbe_pipeline.governance.runtime import config_store, split, thresholds
from fbe_pipeline.live.signal_store import LiveSignalStore, signals_path
from fbe_pipeline.market.instruments import load_instruments
from fbe_pipeline.ops.fills import entry_fills
from fbe_pipeline.settings import paths
from fbe_pipeline.storage.warehouse import batch_signals

MONITORS_KEY = AssetKey(["monitors"])
LANDING_TAIL_BYTES = 4 << 20

monitors_asset = AssetSpec(
    MONITORS_KEY,
    group_name="monitors",
    description="The live automation's monitors (fbe monitors): one asset check each, with "
    "its severity; evaluated every minute by the monitors sensor.",
    kinds={"python"},
    owners=OWNERS,
)
CHECK_SPECS = [
    AssetCheckSpec(m_.name, asset=MONITORS_KEY, description=f"{m_.severity}: {m_.description}")
    for m_ in mon.MONITORS
]


def _recent_drift(home: Path, symbol: str, n: int) -> list[float]:
    """``drift_ms`` of the last ``n`` ticks of ``symbol``'s newest landing file."""
    files = sorted((home / "landing" / symbol).glob("*.jsonl"))
    if not files:
        return []
    with files[-1].open("rb") as fh:
        fh.seek(max(0, files[-1].stat().st_size - LANDING_TAIL_BYTES))
        lines = fh.read().splitlines()[1:]
    out = []
    for raw in lines[-n:]:
        try:
            out.append(float(json.loads(raw)["drift_ms"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line
    return out


def _signals(home: Path) -> pd.DataFrame:
    frames = [batch_signals(source=home)[["signal_id", "symbol", "ts"]]]
    if signals_path(home).exists():
        store = LiveSignalStore(signals_path(home))
        try:
            live = store.signals()
        finally:
            store.close()
        if len(live):
            frames.append(live[["signal_id", "symbol", "ts"]])
    present = [f for f in frames if len(f)]
    both = pd.concat(present, ignore_index=True) if present else frames[0]
    return both.drop_duplicates("signal_id")


def _failed(instance: DagsterInstance, keys: Iterable[AssetCheckKey]) -> list[str]:
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    failed = []
    for info in instance.event_log_storage.get_asset_check_partition_info(list(keys)):
        if info.latest_execution_status == AssetCheckExecutionRecordStatus.FAILED:
            where = f"[{info.partition_key}]" if info.partition_key else ""
            failed.append(
                f"{info.check_key.asset_key.to_user_string()}:{info.check_key.name}{where}"
            )
    return sorted(failed)


def evaluate(
    home: Path, instance: DagsterInstance, blocking: Iterable[AssetCheckKey]
) -> list[mon.MonitorResult]:
    """Every monitor's results on ``home`` (see the module docstring)."""
    store = config_store(home)
    _, values = store.active()
    limits = split(values)[1]
    levels = thresholds(values)
    instruments = load_instruments(home / "instruments.yaml")
    results = []
    signals = _signals(home)
    for instrument in instruments.values():
        if (signals["symbol"] == instrument.symbol).any():
            results.append(mon.low_liquidity_share(signals, instrument, levels))
        drift = _recent_drift(home, instrument.symbol, levels.drift_ticks)
        if drift:
            results.append(mon.clock_drift(drift, instrument.symbol, levels))
    fills = entry_fills(store.engine)
    for automation, group in fills.groupby("automation"):
        results.append(
            mon.slippage_ratio(
                group, str(automation), limits.slippage_ratio_limit, limits.slippage_window
            )
        )
    blocking = list(blocking)
    integrity_keys = [k for k in blocking if k.asset_key.path[-1] == "raw_integrity"]
    others = [k for k in blocking if k.asset_key.path[-1] != "raw_integrity"]
    integrity_failed = _failed(instance, integrity_keys)
    results.append(
        mon.integrity(pd.DataFrame({"problem": integrity_failed, "key": integrity_failed}))
    )
    results.append(mon.failed_blocking_checks(_failed(instance, others)))
    return results


def check_results(results: list[mon.MonitorResult]) -> Iterator[AssetCheckResult]:
    """One check result per monitor: failed (with the monitor's severity) when any subject
    fired; metadata: each subject's value and detail."""
    for monitor in mon.MONITORS:
        mine = [r for r in results if r.monitor == monitor.name]
        fired = [r for r in mine if r.fired]
        yield AssetCheckResult(
            asset_key=MONITORS_KEY,
            check_name=monitor.name,
            passed=not fired,
            severity=AssetCheckSeverity.ERROR
            if monitor.severity == mon.ERROR
            else AssetCheckSeverity.WARN,
            metadata={
                "fired": len(fired),
                **{
                    r.subject: f"{r.severity} {r.value if r.value is not None else '-'}: {r.detail}"
                    for r in mine
                },
            },
        )


def _blocking_keys(
    context: SensorEvaluationContext | AssetCheckExecutionContext,
) -> list[AssetCheckKey]:
    repository = context.repository_def
    assert repository is not None
    return [n.key for n in repository.asset_graph.asset_check_nodes if n.blocking]


@multi_asset_check(specs=CHECK_SPECS, description="Evaluate every monitor now.")
def monitors_check(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
    """The monitors, run from the UI or a job."""
    yield from check_results(evaluate(paths().home, context.instance, _blocking_keys(context)))


def _alert_errors(results: list[mon.MonitorResult]) -> None:
    """Queue an alert for each monitor that fired at ERROR, once per subject and hour."""
    channels = channels_from_env()
    if not channels:
        return
    store = config_store(paths().home)
    hour = time.time_ns() // 3_600_000_000_000
    for r in results:
        if r.severity == mon.ERROR:
            enqueue_alert(
                store.engine,
                channels,
                ERROR,
                f"monitor {r.monitor}: {r.subject}",
                f"{r.detail} (value {r.value}, threshold {r.threshold})",
                f"monitor:{r.monitor}:{r.subject}:{hour}",
            )


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Evaluates the monitors (fbe monitors) into the checks of the monitors asset "
    "whenever a result changes.",
)
def monitors_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    """Cursor: the last reported outcome of each monitor (JSON)."""
    results = evaluate(paths().home, context.instance, _blocking_keys(context))
    last = json.loads(context.cursor or "{}")
    events = []
    for result in check_results(results):
        state = [result.passed, sorted(str(v) for v in (result.metadata or {}).values())]
        if last.get(result.check_name) == state:
            continue
        last[str(result.check_name)] = state
        events.append(
            AssetCheckEvaluation(
                asset_key=MONITORS_KEY,
                check_name=str(result.check_name),
                passed=result.passed,
                metadata=result.metadata or {},
                severity=result.severity,
            )
        )
    _alert_errors(results)
    if not events:
        return SkipReason("no monitor changed")
    return SensorResult(asset_events=events, cursor=json.dumps(last))
