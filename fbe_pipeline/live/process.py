"""The live detector and sealer in a process of their own, beside the ingest service.

``fbe serve`` runs :class:`~.service.LiveService` in a child process (``spawn``) through
:class:`LiveProcess`, which has the service's interface (``start``, ``stop``, ``notify``,
``advance_watermark``): the ingest's request handlers and the detector then each have a core
instead of sharing one interpreter lock (measured on 2 cores: 13,300 ticks/s with the detector
in a thread, 28,000 ticks/s for the ingest alone). The two processes already share everything
durable through ``$FBE_HOME`` (the landing log and its SQLite index); the child hears of new
lines and watermarks through a queue, sends each :class:`~.detector.BarsClosed` back for the
ingest's ``/metrics``, and dies with its parent (``PR_SET_PDEATHSIG``), so a killed service
never leaves a second sealer running beside its successor.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbe_pipeline.governance.runtime import config_store, split
from fbe_pipeline.live.detector import BarsClosed
from fbe_pipeline.live.service import LiveOptions, LiveService
from fbe_pipeline.market.instruments import load_instruments
from fbe_pipeline.research.config import ScoringConfig

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LiveProcessSpec:
    """What the child needs to build its :class:`~.service.LiveService` (picklable).

    Attributes
    ----------
    home : Path
        ``$FBE_HOME``.
    options : LiveOptions
    scoring_json : str
        The scoring config (JSON overrides of SPEC §8).
    store_factory : str
        ``"module:function"`` returning the raw store (the child builds its own).
    reporter_factory : str or None
        ``"module:function"`` returning an ``on_bars_closed`` callable run in the child
        (the CLI's Dagster reporter), or None.
    versioned_config : bool
        Follow the versioned configuration of ``home``'s operational store: a version that
        takes effect while the service runs scores the bars from its effective time on.
    """

    home: Path
    options: LiveOptions
    scoring_json: str
    store_factory: str
    reporter_factory: str | None = None
    versioned_config: bool = False


def _load(path: str) -> Callable[[], Any]:
    module, _, name = path.partition(":")
    factory: Callable[[], Any] = getattr(importlib.import_module(module), name)
    return factory


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; elsewhere rely on the
    parent-pid check of the loop."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _config_source(home: Path) -> Callable[[], tuple[ScoringConfig, int]]:
    """``() -> (scoring config, effective ns)`` of the version in effect in ``home``."""
    store = config_store(home)

    def source() -> tuple[ScoringConfig, int]:
        version, values = store.active()
        return split(values)[0], int(store.get(version).effective_ns or 0)

    return source


def _child(
    spec: LiveProcessSpec,
    parent: int,
    inbox: Any,
    outbox: Any,
    wake: Any,
    ready: Any,
) -> None:
    """The child's main: build and start the service, then relay wake-ups and watermarks."""
    _die_with_parent(parent)
    # Stopping comes from the parent (a stop message, or death): a SIGTERM or Ctrl-C sent to
    # the whole process group must not cut a seal short here while the parent shuts down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    reporter = _load(spec.reporter_factory)() if spec.reporter_factory else None

    def closed(item: BarsClosed) -> None:
        outbox.put(item)
        if reporter is not None:
            reporter(item)

    service = LiveService(
        spec.home,
        load_instruments(spec.home / "instruments.yaml"),
        _load(spec.store_factory)(),
        ScoringConfig.from_dict(json.loads(spec.scoring_json or "{}")),
        spec.options,
        on_bars_closed=closed,
        config_source=_config_source(spec.home) if spec.versioned_config else None,
    )
    service.start()
    ready.set()
    try:
        while os.getppid() == parent:
            if wake.wait(spec.options.poll_s):
                wake.clear()
                service.notify()
            while True:
                try:
                    message = inbox.get_nowait()
                except queue.Empty:
                    break
                if message[0] == "stop":
                    return
                service.advance_watermark(message[1], message[2])
    finally:
        service.stop()
        outbox.put(None)


class LiveProcess:
    """:class:`~.service.LiveService` in a child process (see the module docstring).

    Parameters
    ----------
    spec : LiveProcessSpec
    on_bars_closed : callable, optional
        Called in this process, from a thread of its own, with each evaluation the child
        reports (the ingest's metrics).
    """

    def __init__(
        self, spec: LiveProcessSpec, on_bars_closed: Callable[[BarsClosed], None] | None = None
    ) -> None:
        self.spec = spec
        self.on_bars_closed = on_bars_closed
        context = mp.get_context("spawn")
        self._inbox = context.Queue()
        self._outbox = context.Queue()
        self._wake = context.Event()
        self._ready = context.Event()
        self._process = context.Process(
            target=_child,
            args=(spec, os.getpid(), self._inbox, self._outbox, self._wake, self._ready),
            name="fbe-live-detector",
        )
        self._relay: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid once started."""
        return self._process.pid

    def start(self) -> None:
        """Start the child and wait until it has recovered and runs.

        Raises
        ------
        RuntimeError
            When the child exits while starting or is not ready in 10 minutes.
        """
        self._process.start()
        self._relay = threading.Thread(target=self._relay_closed, name="fbe-live-relay")
        self._relay.daemon = True
        self._relay.start()
        waited = 0.0
        while not self._ready.wait(0.5):
            waited += 0.5
            if not self._process.is_alive():
                raise RuntimeError(
                    f"the live detector exited while starting (status {self._process.exitcode})"
                )
            if waited > START_TIMEOUT_S:
                raise RuntimeError("the live detector did not start in 10 minutes")

    def _relay_closed(self) -> None:
        while True:
            try:
                item = self._outbox.get(timeout=1.0)
            except queue.Empty:
                if not self._process.is_alive():
                    return
                continue
            if item is None:
                return
            if self.on_bars_closed is not None:
                try:
                    self.on_bars_closed(item)
                except Exception:
                    log.exception("relaying closed bars of %s failed", item.symbol)

    def notify(self) -> None:
        """New landing lines: wake the child's loop."""
        self._wake.set()

    def advance_watermark(self, symbol: str, watermark_ns: int) -> None:
        """Pass a sender's watermark to the child and wake it."""
        self._inbox.put(("watermark", symbol, watermark_ns))
        self._wake.set()

    def stop(self) -> None:
        """Ask the child to finish its step and stop; kill it after 60 s."""
        if self._process.pid is None:
            return
        self._inbox.put(("stop",))
        self._wake.set()
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            log.warning("the live detector did not stop in %.0f s; killing it", STOP_TIMEOUT_S)
            self._process.kill()
            self._process.join()
        if self._relay is not None:
            self._relay.join(timeout=10)
