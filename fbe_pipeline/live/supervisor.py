"""The processes of ``fbe live``: started in process groups of their own, watched, restarted
when they may be (market-data feeds), and stopped together.

A process marked ``essential`` (the ingest service) ends the whole supervision when it exits;
a restartable one (a feed) is started again after a delay that doubles from 1 s to 60 s while
it keeps dying within a minute of its start; an exit status of 2 (bad settings) is never
retried, since a restart would fail the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0
HEALTHY_AFTER_S = 60.0
EXIT_BAD_SETTINGS = 2


@dataclass
class Child:
    """One supervised process.

    Attributes
    ----------
    name : str
        For logs (e.g. ``feed binance``).
    command : list of str
    env : dict of str to str
        Its whole environment.
    essential : bool
        Its exit ends the supervision.
    restart : bool
        Start it again when it exits (not with status 2).
    """

    name: str
    command: list[str]
    env: dict[str, str]
    essential: bool = False
    restart: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    delay_s: float = RESTART_FIRST_S
    due_at: float | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        """Start the process in a new session (its own process group)."""
        self.proc = subprocess.Popen(self.command, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()
        self.due_at = None


class Supervisor:
    """Start, watch and stop :class:`Child` processes (see the module docstring)."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, child: Child) -> Child:
        """Start ``child`` now and supervise it."""
        child.start()
        self.children.append(child)
        return child

    def step(self, now: float | None = None) -> int | None:
        """Look at every child once: restart what is due, schedule restarts of what died.

        Returns
        -------
        int or None
            The exit status of an essential child that ended (supervision is over), else None.
        """
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.proc is None:
                if child.due_at is not None and now >= child.due_at:
                    log.warning("restarting %s (restart %d)", child.name, child.restarts + 1)
                    child.restarts += 1
                    child.start()
                continue
            code = child.proc.poll()
            if code is None:
                continue
            if child.essential:
                return code
            child.proc = None
            if not child.restart or code == EXIT_BAD_SETTINGS:
                log.error("%s exited with status %d; not restarting it", child.name, code)
                continue
            if now - child.started_at >= HEALTHY_AFTER_S:
                child.delay_s = RESTART_FIRST_S
            log.error(
                "%s exited with status %d; restarting in %.0f s", child.name, code, child.delay_s
            )
            child.due_at = now + child.delay_s
            child.delay_s = min(child.delay_s * 2, RESTART_MAX_S)
        return None

    def run(self, poll_s: float = 0.5) -> int:
        """Supervise until an essential child exits; returns its status."""
        while True:
            code = self.step()
            if code is not None:
                return code
            time.sleep(poll_s)

    def stop(self, grace_s: float = 7.0) -> None:
        """SIGTERM every child's process group, then SIGKILL what is left after ``grace_s``."""
        running = [c.proc for c in self.children if c.proc is not None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
