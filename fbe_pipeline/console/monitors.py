"""The monitors' latest results for the console's health page.

``fbe monitors`` needs the Dagster instance (failed blocking checks, the integrity job), and the
console must not import Dagster, so the console runs that very command in a child process
(``python -m fbe_pipeline.cli monitors --format json``) in a background thread and keeps its
last answer: the page never waits for it, and the figures are the CLI's own.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbe_pipeline.settings import REPO_ROOT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSnapshot:
    """One run of ``fbe monitors``.

    Attributes
    ----------
    rows : list of dict
        The command's JSON records (``monitor, severity, subject, value, threshold,
        threshold_keys, detail``).
    finished_ns : int
        When the run ended, ns UTC (0: never ran).
    error : str
        Why there are no rows (the command's last stderr lines), empty on success.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    finished_ns: int = 0
    error: str = ""


class MonitorCache:
    """Runs ``fbe monitors`` for ``home`` at most every ``max_age_s`` seconds, one run at a
    time, and keeps the latest :class:`MonitorSnapshot`.

    Parameters
    ----------
    home : Path
        The ``FBE_HOME`` the child process reads.
    max_age_s : float
        A snapshot older than this is refreshed in the background when asked for.
    timeout_s : float
        A run taking longer is killed and reported as an error.
    """

    def __init__(self, home: Path, max_age_s: float = 60.0, timeout_s: float = 180.0) -> None:
        self.home = home
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._snapshot = MonitorSnapshot()
        self._running = False
        self._closed = False
        self._child: subprocess.Popen[str] | None = None

    def latest(self) -> tuple[MonitorSnapshot, bool]:
        """The latest snapshot and whether a refresh is under way (one is started when the
        snapshot is older than ``max_age_s``)."""
        with self._lock:
            age_s = (time.time_ns() - self._snapshot.finished_ns) / 1e9
            if not self._running and not self._closed and age_s > self.max_age_s:
                self._running = True
                # Daemon: stopping the console must not wait for a slow evaluation.
                threading.Thread(
                    target=self._refresh, name="fbe-console-monitors", daemon=True
                ).start()
            return self._snapshot, self._running

    def _refresh(self) -> None:
        try:
            snapshot = self._run()
        finally:
            with self._lock:
                self._running = False
        with self._lock:
            self._snapshot = snapshot

    def close(self) -> None:
        """Start no more runs and kill the one under way (the console is stopping)."""
        with self._lock:
            self._closed = True
            child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def _run(self) -> MonitorSnapshot:
        env = {**os.environ, "FBE_HOME": str(self.home)}
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "fbe_pipeline.cli", "monitors", "--format", "json"],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            log.warning("fbe monitors did not start: %s", exc)
            return MonitorSnapshot(finished_ns=time.time_ns(), error=str(exc))
        with self._lock:
            self._child = child
        try:
            stdout, stderr = child.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            log.warning("fbe monitors took more than %s s", self.timeout_s)
            return MonitorSnapshot(
                finished_ns=time.time_ns(), error=f"no answer within {self.timeout_s:g} s"
            )
        finally:
            with self._lock:
                self._child = None
        # Exit 1 only means a monitor fired; the JSON is complete either way.
        if child.returncode in (0, 1):
            try:
                rows = json.loads(stdout)
            except json.JSONDecodeError:
                rows = None
            if isinstance(rows, list):
                return MonitorSnapshot(rows=rows, finished_ns=time.time_ns())
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        log.warning("fbe monitors exited %s: %s", child.returncode, tail)
        return MonitorSnapshot(finished_ns=time.time_ns(), error=f"exit {child.returncode}: {tail}")
