"""The live service loop: landing log -> streaming detector -> live signals, and sealing.

Owns :class:`LiveService`, one background thread inside the ingest service process. Each step
reads the new landing lines (:class:`~.tail.LandingTail`), feeds them to the
:class:`~.detector.StreamingDetector` and the :class:`~.sealer.Sealer`, evaluates the minutes
that closed, records new signals (:class:`~.signal_store.LiveSignalStore`) and the progress,
queues each closed bar for ``on_bars_closed`` (the CLI wires it to Dagster; a second thread
delivers them) and, every ``seal_interval_s``, seals closed minutes into the raw store. The
request handlers only wake the loop, so acknowledging a tick never waits for detection.

Restart: the landing files of every day with unsealed ticks and of each symbol's two latest
trading dates are read from the start, pending seals are finished, and the detector recomputes
the closed minutes: signals already recorded are not recorded again, missing ones are.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from fbe_pipeline.live.detector import DEFAULT_GRACE_MS, BarsClosed, StreamingDetector
from fbe_pipeline.live.feeds.status import down_symbols_reader
from fbe_pipeline.live.sealer import Seal, Sealer
from fbe_pipeline.live.signal_store import LiveSignalStore, signals_path
from fbe_pipeline.live.tail import LandingTail
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.storage.store import RawStore

log = logging.getLogger(__name__)

# The batch pipeline re-materializes a live session when its raw objects change, so the
# sealing cadence is that of the intraday batch runs (issue 8: every 15 minutes).
DEFAULT_SEAL_INTERVAL_S = 900.0


CONFIG_POLL_S = 5.0


@dataclass(frozen=True)
class LiveOptions:
    """Tuning of the live loop.

    Attributes
    ----------
    grace_ms : int
        Event-time grace for late ticks before a minute closes, ms (``FBE_LIVE_GRACE_MS``).
    seal_interval_s : float
        Seconds between two sealing passes (``FBE_LIVE_SEAL_INTERVAL_S``, default 900); a
        session is also sealed as soon as its last bar closes.
    poll_s : float
        Longest sleep of the loop when nothing wakes it, s.
    min_step_s : float
        Shortest time between two steps, s (wake-ups in between are coalesced; it adds at
        most this much to the bar close -> signal latency).
    """

    grace_ms: int = DEFAULT_GRACE_MS
    seal_interval_s: float = DEFAULT_SEAL_INTERVAL_S
    poll_s: float = 0.25
    min_step_s: float = 0.1


class LiveService:
    """Background detection and sealing over one ``$FBE_HOME``.

    Parameters
    ----------
    home : Path
        ``$FBE_HOME``; reads ``landing/``, writes ``live/signals.sqlite``.
    instruments : dict of str to Instrument
    store : RawStore
        The raw store of the batch pipeline.
    config : ScoringConfig
    options : LiveOptions
    on_bars_closed : callable, optional
        Called with each :class:`~.detector.BarsClosed` from a reporting thread of its own, in
        order, so a slow receiver (Dagster's event log) never delays detection; exceptions are
        logged. Reports still queued 30 s after :meth:`stop` are dropped with a warning.
    config_source : callable, optional
        ``() -> (ScoringConfig, effective_ns)``: the config version in effect and when it took
        effect, asked at most every ``CONFIG_POLL_S`` seconds; a new version scores the bars
        from its effective time on (issue 10).
    """

    def __init__(
        self,
        home: Path,
        instruments: dict[str, Instrument],
        store: RawStore,
        config: ScoringConfig,
        options: LiveOptions | None = None,
        on_bars_closed: Callable[[BarsClosed], None] | None = None,
        config_source: Callable[[], tuple[ScoringConfig, int]] | None = None,
    ) -> None:
        self.options = options or LiveOptions()
        self.config_source = config_source
        self._config_asked = float("-inf")
        self.landing_dir = home / "landing"
        self.landing_dir.mkdir(parents=True, exist_ok=True)
        self.signals = LiveSignalStore(signals_path(home))
        self.tail = LandingTail(self.landing_dir)
        self.sealer = Sealer(self.landing_dir / "idempotency.sqlite", store)
        self.detector = StreamingDetector(
            instruments,
            store,
            config,
            record=lambda s, through: self.signals.record(s, time.time_ns(), through),
            grace_ms=self.options.grace_ms,
            feeds_down=down_symbols_reader(home),
        )
        self.on_bars_closed = on_bars_closed
        # Recent history for tests, metrics and the benchmark.
        self.closed: deque[BarsClosed] = deque(maxlen=100_000)
        self.sealed: deque[Seal] = deque(maxlen=100_000)
        self._watermarks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reports: queue.Queue[BarsClosed | None] = queue.Queue()
        self._reporter: threading.Thread | None = None
        self._last_seal = 0.0
        self.error: BaseException | None = None

    def recover(self) -> None:
        """Rebuild state after a (re)start: see the module docstring."""
        wanted = set(self.sealer.unsealed_days())
        latest: dict[str, list[date]] = {}
        for symbol, day, _ in self.tail.files():
            latest.setdefault(symbol, []).append(day)
        for symbol, days in latest.items():
            wanted.update((symbol, d) for d in sorted(days)[-2:])
        for symbol, day, path in self.tail.files():
            if (symbol, day) not in wanted:
                self.tail.skip(path)
        with sqlite3.connect(self.landing_dir / "idempotency.sqlite") as db:
            for symbol, mark in db.execute("SELECT symbol, watermark_ns FROM watermarks"):
                self.detector.advance_watermark(symbol, int(mark))
        self._ingest()
        self.sealed.extend(self.sealer.recover())

    def start(self) -> None:
        """Recover, then run the loop (and the reporting thread) as daemon threads."""
        self.recover()
        self._thread = threading.Thread(target=self._run, name="fbe-live", daemon=True)
        self._thread.start()
        if self.on_bars_closed is not None:
            self._reporter = threading.Thread(target=self._report, name="fbe-live-report")
            self._reporter.daemon = True
            self._reporter.start()

    def stop(self) -> None:
        """Finish the current step, stop the loop, flush the reports (landed ticks stay in the
        landing log; a restart goes on from there)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if self._reporter is not None:
            self._reports.put(None)
            self._reporter.join(timeout=30)
            if self._reporter.is_alive():
                log.warning("dropping %d unsent bar reports at shutdown", self._reports.qsize())
        self.sealer.close()
        self.signals.close()

    def _report(self) -> None:
        assert self.on_bars_closed is not None
        while (item := self._reports.get()) is not None:
            try:
                self.on_bars_closed(item)
            except Exception:  # reporting is best effort; detection goes on
                log.exception("reporting closed bars of %s failed", item.symbol)

    def notify(self) -> None:
        """Wake the loop (new landing lines)."""
        self._wake.set()

    def advance_watermark(self, symbol: str, watermark_ns: int) -> None:
        """Queue a sender's watermark for the loop and wake it."""
        with self._lock:
            self._watermarks[symbol] = max(self._watermarks.get(symbol, 0), watermark_ns)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._wake.wait(self.options.poll_s)
            # Coalesce wake-ups: a step per accepted request would take the GIL from the
            # request handlers hundreds of times a second for a few ticks each.
            pause = self.options.min_step_s - (time.monotonic() - started)
            if pause > 0 and not self._stop.is_set():
                time.sleep(pause)
            self._wake.clear()
            try:
                self.step()
            except Exception as exc:  # the loop must outlive one bad step; it retries
                self.error = exc
                log.exception("live step failed")
                time.sleep(self.options.poll_s)

    def _ingest(self) -> None:
        for (symbol, day), frame in self.tail.poll().items():
            self.detector.add(symbol, day, frame)
            self.sealer.add(symbol, day, frame)

    def step(self, now_ns: int | None = None, force_seal: bool = False) -> list[BarsClosed]:
        """Read new lines, evaluate closed minutes, report them, and seal when due.

        Returns
        -------
        list of BarsClosed
            The sessions evaluated by this step.
        """
        self._ingest()
        if (
            self.config_source is not None
            and time.monotonic() - self._config_asked >= CONFIG_POLL_S
        ):
            self._config_asked = time.monotonic()
            try:
                config, since = self.config_source()
            except Exception:  # the versioned store unreachable: keep scoring as before
                log.exception("could not read the config version in effect")
            else:
                if self.detector.set_config(config, since):
                    log.warning("scoring with config %s from %d on", config.version, since)
        with self._lock:
            marks, self._watermarks = self._watermarks, {}
        for symbol, mark in marks.items():
            self.detector.advance_watermark(symbol, mark)
        closed = self.detector.advance(now_ns)
        for item in closed:
            self.closed.append(item)
            self.signals.mark_progress(
                item.symbol, item.trading_date, item.closed_through, item.bars, time.time_ns()
            )
            if self.on_bars_closed is not None:
                self._reports.put(item)
        due = time.monotonic() - self._last_seal >= self.options.seal_interval_s
        # A finished session goes to the raw store at once, so the batch re-run after the
        # close sees all of it.
        if force_seal or due or any(item.session_closed for item in closed):
            cutoffs = {(s, d): self.detector.cutoff(s, d) for s, d in self.sealer.days()}
            self.sealed.extend(self.sealer.seal(cutoffs))
            self._last_seal = time.monotonic()
        return closed
