"""The ``fbe`` command line: load raw data, materialize the pipeline, summarize results."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from fbe_pipeline.execution.credentials import take_broker_credentials
from fbe_pipeline.live.supervisor import Child
from fbe_pipeline.market.ingest import FORMATS, load_file
from fbe_pipeline.market.instruments import (
    Instrument,
    InstrumentError,
    get_instrument,
    load_instruments,
    register_instrument,
)
from fbe_pipeline.settings import SESSIONS_PER_RUN, paths, prepare_dagster_home
from fbe_pipeline.storage.store import LocalRawStore, RawStore, RawStoreError

app = typer.Typer(add_completion=False, help="FBE, the False Breakout Engine.")
# Wide enough for the summary table when output goes to a file or CI log.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)
_BROKER_CREDENTIALS: dict[str, str] = {}


def _store() -> RawStore:
    from resources.fbe import raw_store_from_env

    return raw_store_from_env(deferred=False).get_store()


# Quote currency of a new instrument when --currency is not given, by exchange calendar.
CALENDAR_CURRENCIES = {
    "XNYS": "USD",
    "XNAS": "USD",
    "CMES": "USD",
    "CBOT": "USD",
    "COMEX": "USD",
    "NYMEX": "USD",
    "XNSE": "INR",
    "XBOM": "INR",
    "XLON": "GBP",
    "XETR": "EUR",
    "XPAR": "EUR",
    "XTKS": "JPY",
    "XHKG": "HKD",
    "XASX": "AUD",
    "XTSE": "CAD",
    "XSWX": "CHF",
}


def _instrument(
    symbol: str,
    calendar: str | None,
    steps: Callable[[Instrument], tuple[float, float]],
    currency: str | None = None,
) -> Instrument:
    """The known instrument ``symbol``, or a new one registered on ``calendar`` with the tick
    and lot sizes ``steps(provisional instrument)`` gives and ``currency`` (default: the
    calendar's, see :data:`CALENDAR_CURRENCIES`). Raises ``InstrumentError`` (and ``ValueError``
    from ``steps``) without registering anything."""
    try:
        known = get_instrument(symbol)
    except InstrumentError:
        if calendar is None:
            raise
    else:
        if calendar is not None and calendar != known.calendar:
            raise InstrumentError(
                f"{symbol} is configured with calendar {known.calendar}, not {calendar}; "
                "drop --calendar or use another symbol"
            )
        return known
    import exchange_calendars as xcals

    if calendar not in xcals.get_calendar_names(include_aliases=True):
        raise InstrumentError(
            f"unknown exchange calendar {calendar!r} for new symbol {symbol} "
            "(see exchange_calendars.get_calendar_names())"
        )
    currency = currency or CALENDAR_CURRENCIES.get(calendar)
    if currency is None:
        raise InstrumentError(
            f"new symbol {symbol} on calendar {calendar}: pass --currency (its quote currency)"
        )
    tz = str(xcals.get_calendar(calendar).tz)
    provisional = Instrument(symbol=symbol, calendar=calendar, tz=tz, tick_size=1.0)
    tick_size, lot_size = steps(provisional)
    instrument = Instrument(
        symbol=symbol,
        calendar=calendar,
        tz=tz,
        tick_size=tick_size,
        lot_size=lot_size,
        currency=currency,
    )
    register_instrument(instrument)
    err.print(
        f"registered new instrument {symbol} ({calendar}, {tz}, tick {tick_size:g}, "
        f"lot {lot_size:g}, {currency})"
    )
    return instrument


def _steps_from_files(
    fmt: str,
    files: list[Path],
    tick_size: float | None,
    lot_size: float | None,
    reader: Callable[[str, Path, Instrument], dict[str, pd.DataFrame]],
) -> Callable[[Instrument], tuple[float, float]]:
    """Tick and lot sizes of a new instrument: the given ones, else inferred from the prices
    and sizes in ``files`` (trades, quotes' bid and ask, or candles' OHLC: candles carry no
    trade sizes, so their lot size must be given)."""

    def steps(provisional: Instrument) -> tuple[float, float]:
        if tick_size is not None and lot_size is not None:
            return tick_size, lot_size
        from fbe_pipeline.market.tick_size import infer_lot_size, infer_tick_size

        prices, sizes = [], []
        for path in files:
            for kind, frame in reader(fmt, path, provisional).items():
                if kind == "ticks":
                    prices.append(frame["price"].to_numpy())
                    sizes.append(frame["size"].to_numpy())
                elif kind == "quotes":
                    prices += [frame["bid_px"].to_numpy(), frame["ask_px"].to_numpy()]
                    sizes += [frame["bid_sz"].to_numpy(), frame["ask_sz"].to_numpy()]
                elif kind == "candles":
                    prices += [frame[c].to_numpy() for c in ("open", "high", "low", "close")]
        empty = np.array([], dtype=np.float64)
        if tick_size is None:
            tick = infer_tick_size(np.concatenate(prices) if prices else empty)
        if lot_size is None:
            lot = infer_lot_size(np.concatenate(sizes) if sizes else empty)
        return tick if tick_size is None else tick_size, lot if lot_size is None else lot_size

    return steps


@app.command()
def load(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help=f"one of {', '.join(FORMATS)}")],
    files: Annotated[list[Path], typer.Argument(metavar="PATH...", help="vendor files")],
    symbol: Annotated[str, typer.Option(help="FBE symbol")],
    calendar: Annotated[
        str | None, typer.Option(help="exchange calendar; registers SYMBOL when unknown")
    ] = None,
    tick_size: Annotated[
        float | None,
        typer.Option(help="tick size of a new instrument (default: inferred from the files)"),
    ] = None,
    lot_size: Annotated[
        float | None,
        typer.Option(help="lot size of a new instrument (default: inferred from the files)"),
    ] = None,
    currency: Annotated[
        str | None,
        typer.Option(help="quote currency of a new instrument (default: the calendar's)"),
    ] = None,
    naive_tz: Annotated[
        str,
        typer.Option(
            help="candles (bars-csv, bars-parquet): zone of times without one, 'local' (the "
            "instrument's) or 'utc'"
        ),
    ] = "local",
    label: Annotated[
        str,
        typer.Option(help="candles: each bar is labelled by its 'open' or its 'close' time"),
    ] = "open",
) -> None:
    """Load vendor files into the immutable raw store (idempotent).

    A new SYMBOL needs --calendar; its tick and lot sizes are inferred from the files' prices
    and sizes unless given, and its currency is the calendar's unless given (exit 2 when they
    cannot be inferred). Vendor 1-minute candles (bars-csv, bars-parquet: one timestamp column,
    or date and time columns; volume and open interest optional) are stored as ``candles``.
    """
    from functools import partial

    from fbe_pipeline.market.ingest import read_source
    from fbe_pipeline.market.sources.candles import CandleLayout

    if fmt not in FORMATS:
        err.print(f"[red]unknown format {fmt!r}[/red]; expected one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    try:
        reader = partial(read_source, layout=CandleLayout(naive_tz=naive_tz, label=label))
        steps = _steps_from_files(fmt, files, tick_size, lot_size, reader)
        instrument = _instrument(symbol, calendar, steps, currency)
    except (InstrumentError, ValueError, FileNotFoundError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    store = _store()
    failed = 0
    for path in files:
        try:
            report = load_file(store, fmt, path, instrument, reader=reader)
        except (ValueError, FileNotFoundError, RawStoreError) as exc:
            failed += 1
            # Reader messages start with the file name; show the full path once instead.
            message = str(exc).removeprefix(f"{path.name}: ")
            err.print(f"[red]{path}: {message}[/red]")
            continue
        console.print(
            f"{path.name}: {report.rows} rows, {len(report.written)} new objects, "
            f"{len(report.skipped)} already stored"
        )
    if failed:
        err.print(f"[red]{failed} of {len(files)} files were not loaded[/red]")
        raise typer.Exit(1)


@app.command("load-sample")
def load_sample() -> None:
    """Load every file of the real sample data set (``FBE_SAMPLE_DATA``)."""
    from fbe_pipeline.market.sample import SampleDataMissingError, sample_files

    try:
        files = sample_files()
    except SampleDataMissingError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    store = _store()
    for item in files:
        report = load_file(store, item.fmt, item.path, get_instrument(item.symbol))
        console.print(
            f"{item.symbol:8} {item.fmt:14} {item.path.name}: {report.rows} rows, "
            f"{len(report.written)} new, {len(report.skipped)} already stored"
        )


@app.command()
def materialize(
    symbol: Annotated[list[str] | None, typer.Option(help="limit to these symbols")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="first trading date")] = None,
    to: Annotated[str | None, typer.Option(help="last trading date")] = None,
    batch: Annotated[
        int,
        typer.Option(
            min=1, help="most consecutive sessions of one symbol per run (1: one per run)"
        ),
    ] = SESSIONS_PER_RUN,
    through: Annotated[
        str | None,
        typer.Option(
            help="materialize only this asset (e.g. backtest_summary) and what it depends on"
        ),
    ] = None,
    parallel: Annotated[
        int, typer.Option(min=1, help="most instruments materialized at once, one process each")
    ] = 1,
) -> None:
    """Materialize every partition that has raw data, in date order, through Dagster."""
    from fbe_pipeline.definitions import NothingToMaterializeError, materialize_partitions

    known = sorted(load_instruments())
    unknown = [s for s in symbol or [] if s not in known]
    if unknown:
        err.print(
            f"[red]unknown symbol {', '.join(map(repr, unknown))}[/red]; known symbols: "
            f"{', '.join(known)} (register one with `fbe load ... --calendar`)"
        )
        raise typer.Exit(2)
    try:
        start = date.fromisoformat(from_) if from_ else None
        end = date.fromisoformat(to) if to else None
    except ValueError as exc:
        err.print(f"[red]bad date: {exc}[/red]; use YYYY-MM-DD")
        raise typer.Exit(2) from exc
    store = _store()
    from fbe_pipeline.pipeline import loaded_sessions

    if not loaded_sessions(store):
        err.print(
            "no raw ticks or candles in the store: load data first (`fbe load` or "
            "`fbe load-sample`)"
        )
        raise typer.Exit(1)
    prepare_dagster_home()
    try:
        failures = materialize_partitions(
            store,
            symbols=symbol,
            start=start,
            end=end,
            console=console,
            batch=batch,
            through=through,
            parallel=parallel,
        )
    except NothingToMaterializeError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if failures:
        err.print(f"[red]{failures} partition runs failed[/red]")
        raise typer.Exit(1)


@app.command()
def summary() -> None:
    """Print ticks, bars, features, pokes, signals, trades, PnL (in R, bps and price units)
    and failed checks per symbol and day."""
    from fbe_pipeline.definitions import failed_checks
    from fbe_pipeline.storage.warehouse import partition_summary, warehouse_from_env

    prepare_dagster_home()
    rows = partition_summary()
    checks = failed_checks(_store())
    # A partition refused before it ever materialized has no rows; it must still show.
    shown = {(str(r["symbol"]), str(r["date"])) for r in rows}
    rows += [
        {"symbol": sym, "date": day, "ticks": None}
        for sym, day in sorted(checks)
        if (sym, day) not in shown and checks[(sym, day)]
    ]
    rows.sort(key=lambda r: (str(r["symbol"]), str(r["date"])))
    if not rows:
        err.print("nothing materialized yet: run `fbe materialize`")
        raise typer.Exit(1)
    table = Table(title=f"FBE summary ({warehouse_from_env().describe()})")
    columns = ("symbol", "date", "ticks", "bars", "features", "pokes", "signals", "trades")
    # PnL in R and bps survives any price level (a pair at 0.0014 would show -0.0001 in
    # price units); the price-currency sum stays for reference, to 4 significant digits.
    for col in (*columns, "PnL (R)", "PnL (bps)", "PnL (price)", "failed checks"):
        table.add_column(
            col, justify="left" if col in ("symbol", "date", "failed checks") else "right"
        )
    for r in rows:
        counts = (
            [f"{r[c]:,}" for c in columns[2:]]
            + [f"{r['pnl_r']:+.2f}", f"{r['pnl_bps']:+,.1f}", f"{r['pnl']:+.4g}"]
            if r["ticks"] is not None
            else ["-"] * (len(columns) + 1)
        )
        table.add_row(
            str(r["symbol"]),
            str(r["date"]),
            *counts,
            ", ".join(checks.get((str(r["symbol"]), str(r["date"])), [])) or "-",
        )
    console.print(table)


storage_app = typer.Typer(help="Raw store administration.")
app.add_typer(storage_app, name="storage")


@storage_app.command("init")
def storage_init(
    retention_days: Annotated[
        int, typer.Option(help="default COMPLIANCE retention of each object version, days")
    ] = 365,
) -> None:
    """Prepare the raw store: for S3, a bucket with versioning and object lock (re-runnable)."""
    from fbe_pipeline.storage.store_s3 import init_bucket
    from resources.fbe import raw_store_from_env

    resource = raw_store_from_env(deferred=False)
    if isinstance(resource.get_store(), LocalRawStore):
        paths().raw.mkdir(parents=True, exist_ok=True)
        console.print(f"local raw store ready at {paths().raw}")
        return
    bucket = str(resource.s3_bucket)
    try:
        status = init_bucket(resource.s3_client(), bucket, retention_days)
    except (RawStoreError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(
        f"bucket {bucket} {status}: versioning on, object lock COMPLIANCE {retention_days} days"
    )


@app.command()
def integrity() -> None:
    """Verify every raw object against the manifest; exit 1 naming each offending object."""
    from fbe_pipeline.definitions import run_integrity

    prepare_dagster_home()
    passed, findings = run_integrity()
    for row in findings.itertuples(index=False):
        err.print(f"[red]{row.problem}: {row.key}[/red]")
    if not passed:
        err.print(f"[red]integrity check failed: {len(findings)} findings[/red]")
        raise typer.Exit(1)
    checked = len(_store().manifest())
    console.print(f"raw store intact: all {checked} manifest entries match their objects")


@app.command("reap-runs", hidden=True)
def reap_runs() -> None:
    """Record as failed the UI-launched runs whose worker died with the UI (scripts/ui.sh)."""
    from fbe_pipeline.definitions import fail_orphaned_runs

    prepare_dagster_home()
    for run_id in fail_orphaned_runs():
        err.print(f"run {run_id}: its worker stopped with the UI; recorded as failed")


@app.command()
def demo() -> None:
    """Load the sample data, materialize everything and print the summary."""
    load_sample()
    materialize(symbol=None, from_=None, to=None, batch=SESSIONS_PER_RUN)
    summary()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8001,
) -> None:
    """Run the live tick ingest service (TradingView webhook, signed /v1/ticks, /metrics).

    Needs FBE_WEBHOOK_PASSPHRASE and FBE_INGEST_HMAC_KEY (exit 2 when unset); lands accepted
    ticks in $FBE_HOME/landing.
    """
    import uvicorn

    from fbe_pipeline.live.app import create_app
    from fbe_pipeline.live.settings import IngestSettings, SettingsError

    try:
        settings = IngestSettings.from_env()
    except SettingsError as exc:
        err.print(f"[red]cannot start the ingest service:[/red] {exc}")
        raise typer.Exit(2) from None
    import dataclasses

    from fbe_pipeline.governance.runtime import config_store, split
    from fbe_pipeline.live.app import live_options
    from fbe_pipeline.live.process import LiveProcessSpec

    prepare_dagster_home()
    try:
        # The detector scores with the config version in effect when the service starts.
        scoring, _ = split(config_store(settings.home).active()[1])
    except ValueError as exc:
        err.print(f"[red]cannot start the ingest service:[/red] {exc}")
        raise typer.Exit(2) from None
    settings = dataclasses.replace(settings, scoring_json=scoring.to_json())
    spec = LiveProcessSpec(
        home=settings.home,
        options=live_options(settings),
        scoring_json=settings.scoring_json,
        store_factory="fbe_pipeline.cli:live_store",
        reporter_factory="fbe_pipeline.cli:live_reporter",
        versioned_config=True,
    )
    try:
        service = create_app(settings, live_process=spec)
    except ValueError as exc:
        err.print(f"[red]cannot start the ingest service:[/red] {exc}")
        raise typer.Exit(2) from None
    uvicorn.run(service, host=host, port=port, log_level="warning")


def live_store() -> RawStore:
    """The raw store of the environment, for the live detector's process."""
    return _store()


def live_reporter() -> Callable[[Any], None]:
    """The Dagster bar reporter of ``$FBE_HOME/dagster``, for the live detector's process."""
    from fbe_pipeline.definitions import dagster_instance
    from sensors.live_events import DagsterBarReporter

    prepare_dagster_home()
    return DagsterBarReporter(dagster_instance())


@app.command()
def live(
    host: Annotated[str, typer.Option(help="Address of the ingest service.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the ingest service.")] = 8001,
    ui_port: Annotated[int, typer.Option(help="TCP port of the Dagster UI.")] = 3000,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Do not start the Dagster UI.")] = False,
    feeds_file: Annotated[
        Path | None,
        typer.Option("--feeds", help="market-data feeds to run (default $FBE_HOME/feeds.yaml)"),
    ] = None,
) -> None:
    """Run the live path, each part a process of its own on the same FBE_HOME: the ingest
    service with its detector (`fbe serve`), the market-data feeds of feeds.yaml (`fbe feed`,
    restarted when one dies), a code server for each Dagster code location, the Dagster daemon
    (sensors, automation, schedules) and the Dagster UI.

    Broker credentials (FBE_BROKER_*) go to the execution location's code server only, which
    starts the paper runs; the detector, the feeds, the detection location and its runs, the
    daemon and the UI run without them. Exits 2 when the ingest settings or the feeds file are
    invalid, and with the ingest service's status when it ends. Ctrl-C or SIGTERM stops all of
    them: each child gets SIGTERM in its own process group, and whatever is left after 7 s is
    killed.
    """
    from fbe_pipeline.definitions import dagster_instance
    from fbe_pipeline.execution_definitions import LOCATION_NAME
    from fbe_pipeline.live.feeds.config import load_feed_configs
    from fbe_pipeline.live.settings import IngestSettings, SettingsError
    from fbe_pipeline.live.supervisor import Supervisor

    home = paths().home
    try:
        IngestSettings.from_env()
        feeds = load_feed_configs(feeds_file or home / "feeds.yaml")
        if feeds_file is not None and not feeds_file.exists():
            raise ValueError(f"{feeds_file} does not exist")
    except (SettingsError, ValueError) as exc:
        err.print(f"[red]cannot start the live path:[/red] {exc}")
        raise typer.Exit(2) from None
    _register_feed_symbols(feeds)
    dagster_home = prepare_dagster_home()
    # The instance's tables are created once, here: the code servers and the daemon would
    # otherwise race to create them (two alembic heads).
    dagster_instance().dispose()
    bin_dir = Path(sys.executable).parent
    detection_env = dict(os.environ)
    execution_env = {**detection_env, **_BROKER_CREDENTIALS}
    locations = [
        ("fbe", "fbe_pipeline.definitions", _free_port(), detection_env),
        (LOCATION_NAME, "fbe_pipeline.execution_definitions", _free_port(), execution_env),
    ]
    workspace = dagster_home / "live-workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        + "".join(
            f"  - grpc_server: {{host: 127.0.0.1, port: {p}, location_name: {name}}}\n"
            for name, _, p, _ in locations
        )
    )
    supervisor = Supervisor()
    try:
        for name, module, p, env in locations:
            server = [str(bin_dir / "dagster"), "code-server", "start", "-m", module]
            args = ["--location-name", name, "-h", "127.0.0.1", "-p", str(p)]
            supervisor.start(Child(f"code server {name}", [*server, *args], env))
        _wait_for_code_servers([p for _, _, p, _ in locations], supervisor.children)
        daemon = [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)]
        supervisor.start(Child("Dagster daemon", daemon, detection_env))
        if not no_ui:
            webserver = [str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", host]
            ui = Child("Dagster UI", [*webserver, "-p", str(ui_port)], detection_env)
            supervisor.start(ui)
        cli = [sys.executable, "-m", "fbe_pipeline.cli"]
        ingest_url = f"http://{host}:{port}"
        for feed_config in feeds:
            command = [*cli, "feed", feed_config.venue, "--name", feed_config.feed_name]
            command += [arg for s in feed_config.symbols for arg in ("--symbol", s)]
            command += ["--url", ingest_url]
            urls = (("--ws-url", feed_config.ws_url), ("--rest-url", feed_config.rest_url))
            command += [arg for option, url in urls if url for arg in (option, url)]
            supervisor.start(
                Child(f"feed {feed_config.feed_name}", command, detection_env, restart=True)
            )
        if any(os.environ.get(k) for k in ("FBE_ALERT_TELEGRAM_TOKEN", "FBE_ALERT_WEBHOOK_URL")):
            dispatch = [*cli, "alerts", "dispatch"]
            supervisor.start(Child("alert dispatcher", dispatch, detection_env, restart=True))
        ingest = [*cli, "serve", "--host", host, "--port", str(port)]
        supervisor.start(Child("ingest service", ingest, detection_env, essential=True))
        # This process only supervises: it ends when the ingest service does, or on a signal.
        code = supervisor.run()
        if code:
            err.print(f"[red]the ingest service exited with status {code}[/red]")
            raise typer.Exit(code)
    finally:
        supervisor.stop()


def _register_feed_symbols(feeds: list[Any]) -> None:
    """Register the feeds' unknown symbols from their venues before the ingest service loads
    the instruments; a venue that cannot be asked now leaves its feed to try at its start."""
    import asyncio

    import httpx

    from fbe_pipeline.live.feeds.base import FeedError
    from fbe_pipeline.live.feeds.runner import make_feed, register_unknown

    for feed_config in feeds:
        try:
            venue = make_feed(feed_config.venue, feed_config.ws_url, feed_config.rest_url)
            added = asyncio.run(
                register_unknown(venue, feed_config.symbols, paths().home / "instruments.yaml")
            )
        except (FeedError, ValueError, InstrumentError, httpx.HTTPError) as exc:
            err.print(f"[yellow]feed {feed_config.feed_name}: symbols not registered: {exc}")
            continue
        for instrument in added:
            err.print(f"registered {instrument.symbol} from {feed_config.venue}")


def _free_port() -> int:
    """A TCP port on the loopback interface that is free now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_code_servers(ports: list[int], children: list[Child], timeout_s: float = 120) -> None:
    """Block until every code server answers on its port, so that the daemon and the UI find
    their locations loaded; raises ``typer.Exit(1)`` when one exits or the time runs out."""
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    waiting = list(ports)
    while waiting:
        if any(c.proc is None or c.proc.poll() is not None for c in children):
            err.print("[red]a Dagster code server exited while starting[/red]")
            raise typer.Exit(1)
        if time.monotonic() > deadline:
            err.print(f"[red]Dagster code servers on ports {waiting} did not start[/red]")
            raise typer.Exit(1)
        try:
            socket.create_connection(("127.0.0.1", waiting[0]), timeout=1).close()
            waiting.pop(0)
        except OSError:
            time.sleep(0.2)


@app.command()
def signals(
    source: Annotated[str, typer.Option(help="batch (the signals asset) or live")] = "batch",
    symbol: Annotated[str | None, typer.Option(help="only this symbol")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="first trading date")] = None,
    to: Annotated[str | None, typer.Option(help="last trading date")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> None:
    """List signals with the columns of the `signals` asset; live ones add `recorded_at`.

    A live signal and the batch signal of the same bar have the same `signal_id`.
    """
    if source not in ("batch", "live") or fmt not in ("table", "csv", "json"):
        err.print("[red]--source must be batch or live, --format table, csv or json[/red]")
        raise typer.Exit(2)
    try:
        start = date.fromisoformat(from_) if from_ else None
        end = date.fromisoformat(to) if to else None
    except ValueError as exc:
        err.print(f"[red]bad date: {exc}[/red]; use YYYY-MM-DD")
        raise typer.Exit(2) from exc
    if source == "live":
        from fbe_pipeline.live.signal_store import LiveSignalStore, signals_path

        path = signals_path(paths().home)
        if not path.exists():
            err.print(f"no live signals yet ({path} does not exist): run `fbe live`")
            raise typer.Exit(1)
        store = LiveSignalStore(path)
        try:
            frame = store.signals(symbol, start, end).drop(columns=["closed_through", "context"])
        finally:
            store.close()
    else:
        from fbe_pipeline.storage.warehouse import batch_signals

        frame = batch_signals(symbol, start, end)
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
            frame[col] = frame[col].map(lambda t: t.isoformat())
    frame["trading_date"] = pd.to_datetime(frame["trading_date"]).dt.strftime("%Y-%m-%d")
    if fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")
    elif fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    else:
        table = Table(title=f"{source} signals ({len(frame)})")
        for col in frame.columns:
            table.add_column(col)
        for row in frame.itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        console.print(table)


@app.command()
def replay(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help=f"one of {', '.join(FORMATS)}")],
    files: Annotated[list[Path], typer.Argument(metavar="PATH...", help="vendor trade files")],
    symbol: Annotated[str, typer.Option(help="FBE symbol (a configured instrument)")],
    speed: Annotated[
        float, typer.Option(min=0.0, help="pace x SPEED of the original; 0 = as fast as possible")
    ] = 0.0,
    url: Annotated[str, typer.Option(help="base URL of the ingest service")] = (
        "http://127.0.0.1:8001"
    ),
    batch_size: Annotated[int, typer.Option(min=1, help="most ticks per request")] = 5000,
    retry_for: Annotated[
        float, typer.Option(min=0.0, help="seconds to retry a request the service does not ack")
    ] = 120.0,
) -> None:
    """Send vendor trade files to the live ingest service (signed /v1/ticks), paced.

    Needs FBE_INGEST_HMAC_KEY. Exit 0 once every tick is acknowledged, 1 when the service
    refuses a batch or retries run out, 2 on bad input (nothing sent).
    """
    from rich.markup import escape

    from fbe_pipeline.live.replay import ReplayError, read_ticks, replay_frame

    if fmt not in FORMATS:
        err.print(f"[red]unknown format {fmt!r}[/red]; expected one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    try:
        instrument = get_instrument(symbol)
    except InstrumentError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    key = os.environ.get("FBE_INGEST_HMAC_KEY", "")
    if not key:
        err.print("[red]FBE_INGEST_HMAC_KEY is not set:[/red] it must be the service's key")
        raise typer.Exit(2)
    try:
        ticks = read_ticks(fmt, files, instrument)
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    try:
        report = replay_frame(
            ticks, url, key, speed=speed, batch_size=batch_size, retry_for=retry_for
        )
    except ReplayError as exc:
        err.print(f"[red]replay failed:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from exc
    console.print(
        f"replayed {report.sent:,} ticks: {report.accepted:,} accepted, "
        f"{report.duplicates:,} duplicates, {report.retries} retries, "
        f"{report.elapsed_s:.2f} s, {report.ticks_per_s:,.0f} ticks/s",
        highlight=False,
    )


def _gateway():  # type: ignore[no-untyped-def]
    from fbe_pipeline.execution.runtime import gateway_from_env

    try:
        return gateway_from_env(paths().home)
    except ValueError as exc:
        err.print(f"[red]bad execution config:[/red] {exc}")
        raise typer.Exit(2) from exc


def _decide(ref: str, user: str, totp: str, approve: bool) -> None:
    from fbe_pipeline.execution.gateway import ExecutionError

    try:
        order = _gateway().decide(ref, user, totp, approve)
    except ExecutionError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{order.order_id}: {order.state}")


@app.command()
def approve(
    ref: Annotated[str, typer.Argument(metavar="ORDER_OR_SIGNAL")],
    user: Annotated[str, typer.Option(help="an approver")],
    totp: Annotated[str, typer.Option(help="the approver's current TOTP code")],
) -> None:
    """Release an order waiting for approval (TOTP second factor, each code once); audited."""
    _decide(ref, user, totp, approve=True)


@app.command()
def reject(
    ref: Annotated[str, typer.Argument(metavar="ORDER_OR_SIGNAL")],
    user: Annotated[str, typer.Option(help="an approver")],
    totp: Annotated[str, typer.Option(help="the approver's current TOTP code")],
) -> None:
    """Reject an order waiting for approval (TOTP second factor); audited."""
    _decide(ref, user, totp, approve=False)


def _status(symbol: str, status: str, user: str) -> None:
    from fbe_pipeline.execution.gateway import ExecutionError

    gateway = _gateway()
    _sign_in(gateway.engine, user, "operator", f"status_{status}")
    try:
        auto = gateway.set_status(symbol, status, user)
    except ExecutionError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{auto.name}: {auto.status}")


@app.command()
def pause(
    symbol: Annotated[str, typer.Option(help="the automation's symbol")],
    user: Annotated[str, typer.Option(help="who pauses (an operator; password: FBE_PASSWORD)")],
) -> None:
    """Pause a symbol's paper automation (no new orders); needs the operator role; audited."""
    _status(symbol, "paused", user)


@app.command()
def resume(
    symbol: Annotated[str, typer.Option(help="the automation's symbol")],
    user: Annotated[str, typer.Option(help="who resumes (an operator; password: FBE_PASSWORD)")],
) -> None:
    """Resume a paused (or breaker-stopped) automation; needs the operator role; audited."""
    _status(symbol, "active", user)


@app.command()
def stop(
    symbol: Annotated[str, typer.Option(help="the automation's symbol")],
    user: Annotated[str, typer.Option(help="who stops (an operator; password: FBE_PASSWORD)")],
) -> None:
    """Stop a symbol's automation until resumed; needs the operator role; audited."""
    _status(symbol, "stopped", user)


def _rows(frame: pd.DataFrame, fmt: str, title: str) -> None:
    if fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")
        return
    table = Table(title=f"{title} ({len(frame)})")
    for col in frame.columns:
        table.add_column(col)
    for row in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    console.print(table)


@app.command()
def orders(
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Paper orders: id, signal, symbol, side, state, prices, slippage and times (UTC)."""
    from fbe_pipeline.execution.reports import orders_frame

    _rows(orders_frame(_gateway().engine), fmt, "orders")


@app.command()
def positions(
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Paper positions, open and closed, with marks, exits and PnL (price currency)."""
    from fbe_pipeline.execution.reports import positions_frame

    _rows(positions_frame(_gateway().engine), fmt, "positions")


@app.command("console")
def console_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
) -> None:
    """The operator console (web): live signals and approvals, automations, config, reports,
    health, security; every action audited. Sign in with `fbe user add` credentials.
    FBE_CONSOLE_SECRET signs the session cookie (default: $FBE_HOME/console_secret, 0600);
    FBE_CONSOLE_SECURE_COOKIE=1 marks it Secure (behind TLS); FBE_DAGSTER_UI_URL is the
    Dagster UI link. Exit 2 on a malformed config seed."""
    from fbe_pipeline.console.server import serve

    try:
        serve(host, port, paths().home)
    except ValueError as exc:
        err.print(f"[red]bad configuration:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def feed(
    venue: Annotated[str, typer.Argument(help="binance or alpaca")],
    symbols: Annotated[list[str], typer.Option("--symbol", help="symbol (repeat for several)")],
    ws_url: Annotated[str | None, typer.Option(help="the venue's stream base URL")] = None,
    rest_url: Annotated[str | None, typer.Option(help="the venue's REST base URL")] = None,
    url: Annotated[str, typer.Option(help="the ingest service")] = "http://127.0.0.1:8001",
    name: Annotated[str | None, typer.Option(help="feed name (default: the venue)")] = None,
) -> None:
    """Subscribe to a venue's trade stream and forward every trade to the ingest service.

    Needs FBE_INGEST_HMAC_KEY. Unknown symbols are registered from the venue's exchange
    information. Reconnects with backoff, backfills missed trade ids from the venue's history
    (or records a gap), and goes to safe mode after 10 failed connections (see `fbe feeds`).
    SIGTERM or Ctrl-C stops it once the queued trades are acknowledged. Exit 2 on bad
    settings, 1 when the ingest service refuses a batch or the venue does not list a symbol.
    """
    from fbe_pipeline.live.feeds.base import FeedError
    from fbe_pipeline.live.feeds.runner import make_feed, run_feed, settings_from_env

    try:
        venue_feed = make_feed(venue, ws_url, rest_url)
        settings = settings_from_env(url)
    except ValueError as exc:
        err.print(f"[red]cannot start the feed:[/red] {exc}")
        raise typer.Exit(2) from None
    import httpx

    try:
        run_feed(paths().home, name or venue, venue_feed, [s.upper() for s in symbols], settings)
    except (FeedError, InstrumentError, httpx.HTTPError) as exc:
        err.print(f"[red]feed {name or venue} stopped:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def feeds(
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Each feed and symbol: state, trades received, backfilled, dropped as duplicates,
    reconnects, last trade id, lag, and the gaps the venue could not fill."""
    from fbe_pipeline.live.feeds.status import FeedStatusStore, feeds_path

    store = FeedStatusStore(feeds_path(paths().home))
    try:
        rows, gaps = store.symbols(), store.gaps()
    finally:
        store.close()
    if fmt == "json":
        records = rows.to_dict(orient="records")
        for record in records:
            mine = gaps[(gaps["feed"] == record["feed"]) & (gaps["symbol"] == record["symbol"])]
            record["gap_list"] = mine.drop(columns=["feed", "symbol"]).to_dict(orient="records")
        sys.stdout.write(json.dumps(records, indent=1, default=str) + "\n")
        return
    shown = ["feed", "symbol", "state", "received", "backfilled", "duplicates", "forwarded"]
    _rows(
        rows[[*shown, "reconnects", "last_trade_id", "lag_trades", "lag_ms", "gaps"]], fmt, "feeds"
    )
    if len(gaps):
        _rows(gaps.drop(columns=["gap_id"]), fmt, "gaps")


user_app = typer.Typer(help="People who approve orders.")
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="viewer, operator, approver or admin")] = "approver",
    as_user: Annotated[
        str | None, typer.Option("--as", help="the admin adding the user (not for the first)")
    ] = None,
    qr: Annotated[Path | None, typer.Option(help="write the TOTP QR code PNG here")] = None,
) -> None:
    """Add a user with a password (FBE_NEW_PASSWORD, or asked) and a fresh TOTP secret; prints
    the provisioning URI. The first user of an FBE_HOME must be an admin; after that an admin
    adds users (--as, password FBE_PASSWORD)."""
    from fbe_pipeline.governance.users import UserError, add_user, count_users, write_qr

    engine = _ops_engine()
    if count_users(engine):
        if as_user is None:
            err.print("[red]adding a user needs an admin: pass --as ADMIN[/red]")
            raise typer.Exit(2)
        _sign_in(engine, as_user, "admin", "user_add")
    elif role != "admin":
        err.print("[red]the first user must be an admin (--role admin)[/red]")
        raise typer.Exit(2)
    password = os.environ.get("FBE_NEW_PASSWORD") or typer.prompt(
        f"password for {name}", hide_input=True, confirmation_prompt=True
    )
    try:
        uri = add_user(engine, name, role, password=password, actor=as_user or name)
    except UserError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if qr is not None:
        write_qr(uri, qr)
    console.print(uri, soft_wrap=True, highlight=False)


@user_app.command("list")
def user_list(
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Users: name, role, disabled, whether a password is set (never secrets)."""
    from fbe_pipeline.governance.users import list_users

    _rows(list_users(_ops_engine()), fmt, "users")


@user_app.command("disable")
def user_disable(
    name: Annotated[str, typer.Argument()],
    as_user: Annotated[str, typer.Option("--as", help="an admin (password FBE_PASSWORD)")],
) -> None:
    """Disable a user: no more sign-in or approvals; needs the admin role; audited."""
    from fbe_pipeline.governance.users import UserError, disable_user

    engine = _ops_engine()
    _sign_in(engine, as_user, "admin", "user_disable")
    try:
        disable_user(engine, name, as_user)
    except UserError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"{name}: disabled")


@user_app.command("reset-totp")
def user_reset_totp(
    name: Annotated[str, typer.Argument()],
    as_user: Annotated[str, typer.Option("--as", help="an admin (password FBE_PASSWORD)")],
    qr: Annotated[Path | None, typer.Option(help="write the TOTP QR code PNG here")] = None,
) -> None:
    """Give a user a new TOTP secret (prints the provisioning URI); needs admin; audited."""
    from fbe_pipeline.governance.users import UserError, reset_totp, write_qr

    engine = _ops_engine()
    _sign_in(engine, as_user, "admin", "user_reset_totp")
    try:
        uri = reset_totp(engine, name, as_user)
    except UserError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if qr is not None:
        write_qr(uri, qr)
    console.print(uri, soft_wrap=True, highlight=False)


def _ops_engine():  # type: ignore[no-untyped-def]
    from fbe_pipeline.ops.db import database_url, engine_for, upgrade

    engine = engine_for(database_url(paths().home))
    upgrade(engine)
    return engine


def _sign_in(engine: Any, user: str, needs: str, action: str) -> Any:
    """The signed-in ``user`` (password from FBE_PASSWORD, or asked) with at least the role
    ``needs``; exit 1 with the reason (audited) otherwise."""
    from fbe_pipeline.governance.users import PermissionDenied, authenticate

    password = os.environ.get("FBE_PASSWORD") or typer.prompt(
        f"password for {user}", hide_input=True
    )
    try:
        return authenticate(engine, user, password, needs, action)
    except PermissionDenied as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def monitors(fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table") -> None:
    """Every monitor (severity, threshold keys) and its results now: low-liquidity share,
    slippage ratio, clock drift, integrity, failed blocking checks. Exit 1 when one fired."""
    from fbe_pipeline.definitions import build_definitions, build_lanes, dagster_instance
    from sensors.monitors import evaluate

    prepare_dagster_home()
    instance = dagster_instance()
    from fbe_pipeline.pipeline import loaded_sessions

    graph = build_definitions(build_lanes(loaded_sessions(_store()))).resolve_asset_graph()
    blocking = [n.key for n in graph.asset_check_nodes if n.blocking]
    results = evaluate(paths().home, instance, blocking)
    from fbe_pipeline.governance.monitors import MONITORS

    listed = {x.name: x for x in MONITORS}
    frame = pd.DataFrame(
        [
            {
                "monitor": r.monitor,
                "severity": r.severity,
                "subject": r.subject,
                "value": r.value,
                "threshold": r.threshold,
                "threshold_keys": listed[r.monitor].threshold,
                "detail": r.detail,
            }
            for r in results
        ]
    )
    _rows(frame, fmt, "monitors")
    if any(r.fired for r in results):
        raise typer.Exit(1)


alerts_app = typer.Typer(help="Alert delivery to the desk's phones.")
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("dispatch")
def alerts_dispatch(
    once: Annotated[bool, typer.Option("--once", help="deliver what is due, then exit")] = False,
) -> None:
    """Deliver the alert outbox to the configured channels (FBE_ALERT_TELEGRAM_TOKEN and
    FBE_ALERT_TELEGRAM_CHAT_ID, FBE_ALERT_WEBHOOK_URL), retrying with backoff; runs until
    SIGTERM (fbe live runs it). Exit 2 when the channels are misconfigured."""
    import threading

    from fbe_pipeline.governance.alerts import AlertDispatcher, channels_from_env

    try:
        channels = channels_from_env()
    except ValueError as exc:
        err.print(f"[red]bad alert channels:[/red] {exc}")
        raise typer.Exit(2) from None
    dispatcher = AlertDispatcher(_ops_engine(), channels)
    if once:
        for outcome in dispatcher.deliver_due():
            console.print(f"{outcome.channel}:{outcome.id} {outcome.state}")
        return
    stop = threading.Event()
    try:
        dispatcher.run_forever(stop)
    except KeyboardInterrupt:
        stop.set()


config_app = typer.Typer(help="The versioned scoring and execution configuration.")
app.add_typer(config_app, name="config")


def _config_store():  # type: ignore[no-untyped-def]
    from fbe_pipeline.governance.runtime import config_store

    try:
        return config_store(paths().home)
    except ValueError as exc:
        err.print(f"[red]bad configuration:[/red] {exc}")
        raise typer.Exit(2) from exc


@config_app.command("show")
def config_show(
    version: Annotated[int | None, typer.Option(help="a version (default: the active one)")] = None,
) -> None:
    """Print a version's settings as JSON (default: the one in effect now)."""
    from fbe_pipeline.governance.config import ConfigError

    store = _config_store()
    try:
        if version is None:
            version, values = store.active()
        else:
            values = json.loads(store.get(version).config_json)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    sys.stdout.write(json.dumps({"version": version, "config": values}, indent=1) + "\n")


@config_app.command("set")
def config_set(
    changes: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...")],
    reason: Annotated[str, typer.Option(help="why (recorded with the version)")],
    user: Annotated[str, typer.Option(help="an operator (password FBE_PASSWORD)")],
) -> None:
    """Request a new version: active from the next bar in market hours, else held until a
    second approver approves it; needs the operator role; audited."""
    from fbe_pipeline.governance.config import ConfigError

    store = _config_store()
    _sign_in(store.engine, user, "operator", "config_request")
    pairs = {}
    for item in changes:
        key, sep, value = item.partition("=")
        if not sep:
            err.print(f"[red]{item!r} is not KEY=VALUE[/red]")
            raise typer.Exit(2)
        pairs[key.strip()] = value.strip()
    try:
        row = store.request(pairs, reason, user)
    except ConfigError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    when = (
        "waits for a second approver (out of market hours)"
        if row.out_of_hours
        else (f"takes effect at {pd.Timestamp(row.effective_ns, unit='ns', tz='UTC')}")
    )
    console.print(f"version {row.version}: {row.diff_json} {when}")


@config_app.command("history")
def config_history(
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Every version: state, who asked and why, approval, effect time, diff."""
    _rows(_config_store().history(), fmt, "config versions")


@config_app.command("diff")
def config_diff(
    old: Annotated[int, typer.Argument()], new: Annotated[int, typer.Argument()]
) -> None:
    """The settings that differ between two versions, as JSON ``{key: [old, new]}``."""
    from fbe_pipeline.governance.config import ConfigError

    try:
        change = _config_store().compare(old, new)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    sys.stdout.write(json.dumps(change, indent=1) + "\n")


@config_app.command("approve")
def config_approve(
    version: Annotated[int, typer.Argument()],
    user: Annotated[str, typer.Option(help="an approver other than the requester")],
) -> None:
    """Approve a version held out of market hours; it takes effect at the next bar."""
    from fbe_pipeline.governance.config import ConfigError

    store = _config_store()
    signed = _sign_in(store.engine, user, "approver", "config_approve")
    try:
        row = store.approve(version, user, signed.role)
    except ConfigError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"version {row.version}: active from {pd.Timestamp(row.effective_ns, unit='ns', tz='UTC')}"
    )


@app.command("walk-forward")
def walk_forward_command(
    symbol: Annotated[str, typer.Option(help="a configured instrument")],
    in_sample: Annotated[
        int | None, typer.Option(min=1, help="in-sample sessions per window [default: 3]")
    ] = None,
    out_of_sample: Annotated[
        int | None,
        typer.Option(min=1, help="out-of-sample sessions per window and step [default: 1]"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    propose: Annotated[
        str | None,
        typer.Option(
            help="request the last window's choice as a config version held for "
            "approval, as this operator (password FBE_PASSWORD)"
        ),
    ] = None,
) -> None:
    """Walk-forward search of the score thresholds and trigger over SYMBOL's sessions in the
    raw store: chosen on each in-sample window (most total R with enough trades), evaluated on
    the next out-of-sample window, by regime and session tag. With --propose the last choice
    becomes a new config version waiting for a second approver; otherwise nothing changes."""
    from fbe_pipeline.governance.config import ConfigError
    from fbe_pipeline.governance.runtime import split
    from fbe_pipeline.research.walk_forward import (
        DEFAULT_IN_SAMPLE,
        DEFAULT_OUT_OF_SAMPLE,
        METRICS,
        load_sessions,
        proposal_command,
        report_json,
        report_table,
        stored_sessions,
        walk_forward,
        window_count,
    )

    if fmt not in ("table", "json"):
        err.print("[red]--format must be table or json[/red]")
        raise typer.Exit(2)
    n = DEFAULT_IN_SAMPLE if in_sample is None else in_sample
    m = DEFAULT_OUT_OF_SAMPLE if out_of_sample is None else out_of_sample
    try:
        instrument = get_instrument(symbol)
    except InstrumentError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    store = _store()
    days = stored_sessions(store, instrument)
    try:
        window_count(symbol, len(days), n, m)  # before any tick is read
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    configs = _config_store()
    _, values = configs.active()
    sessions = load_sessions(store, instrument, days)
    report = walk_forward(sessions, split(values)[0], in_sample=n, out_of_sample=m)
    if fmt == "json":
        sys.stdout.write(json.dumps(report_json(report), indent=1) + "\n")
    else:
        for w in report.windows:
            chosen = ", ".join(f"{k}={v:g}" for k, v in report.changes(w.chosen).items())
            console.print(
                f"window {w.index}: in-sample {w.is_dates[0]}..{w.is_dates[-1]}, out-of-sample "
                f"{w.oos_dates[0]}..{w.oos_dates[-1]}, chosen {chosen or 'the active config'}"
                + ("" if w.qualified else f" (no candidate with {report.min_trades} trades)")
            )
        table = report_table(report)[["window", "period", "group_by", "group", *METRICS]]
        _rows(table.round(3), "table", f"walk-forward {symbol}")
        command = proposal_command(report)
        console.print(
            "proposal: keep the active config" if command is None else f"proposal: {command}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    changes = report.changes(report.proposal)
    if propose is None or not changes:
        return
    _sign_in(configs.engine, propose, "operator", "config_request")
    reason = f"walk-forward {symbol} {n} IS / {m} OOS sessions, window {len(report.windows) - 1}"
    try:
        row = configs.request({k: str(v) for k, v in changes.items()}, reason, propose, hold=True)
    except ConfigError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    err.print(
        f"version {row.version} proposed; a second approver runs: fbe config approve {row.version}"
    )


def main() -> None:
    """Entry point with logging configured, Dagster's beta-API warnings silenced, and SIGTERM
    and SIGINT (Ctrl-C) stopping the whole command.

    SIGTERM raises ``KeyboardInterrupt`` like Ctrl-C, so cleanup runs. While Dagster executes a
    run in process it takes both signals over and only fails that run
    (``DagsterExecutionInterruptedError``); ``fbe materialize`` would then go on with the next
    partition. The signal still reaches the wakeup fd, so a watcher thread delivers it to the
    main thread again as soon as Dagster has handed the handler back, and repeats that every
    2 s until the process ends (an interrupt that lands in a GC callback is dropped by Python).
    """
    import _thread
    import signal
    import threading
    import time

    logging.basicConfig(level=os.environ.get("FBE_LOG_LEVEL", "WARNING"))
    # MultiPartitionMapping and dagster-pandera are marked beta; the warnings are not actionable
    # for a CLI user and would bury the progress display.
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)

    last_raise = [float("-inf")]

    def interrupt(signum: int, frame: object) -> None:
        # A re-delivery racing the first interrupt is dropped; a later Ctrl-C interrupts again.
        if time.monotonic() - last_raise[0] < 1.0:
            return
        last_raise[0] = time.monotonic()
        raise KeyboardInterrupt

    def watch(read_fd: int) -> None:
        while not {signal.SIGINT, signal.SIGTERM} & set(os.read(read_fd, 64)):
            pass
        while True:
            if (
                signal.getsignal(signal.SIGINT) is interrupt
                and time.monotonic() - last_raise[0] > 2.0
            ):
                _thread.interrupt_main(signal.SIGINT)
            # Between two partition runs the handler is ours for a few ms only.
            time.sleep(0.002)

    # Only `fbe live` hands broker credentials on, to the execution code server; no other
    # command (and nothing it imports) may read them from this process's environment.
    _BROKER_CREDENTIALS.update(take_broker_credentials(os.environ))
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=watch, args=(read_fd,), name="fbe-signals", daemon=True).start()
    app()


if __name__ == "__main__":
    main()
