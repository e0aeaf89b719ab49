"""Local HTTP servers standing in for alert channels' endpoints (Telegram's Bot API, a Slack-style
webhook), on loopback, each in its own thread: one that answers like the real endpoint and
records every request, one slow (answers after ``delay_s``), one failing (HTTP 500) and one
rate limiting (HTTP 429 with Telegram's ``parameters.retry_after``)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

OK, SLOW, FAIL, RATE_LIMITED = "ok", "slow", "fail", "rate_limited"


@dataclass(frozen=True)
class Received:
    """One request as the stand-in saw it; ``at_ns`` is when it arrived (``time.time_ns``)."""

    path: str
    payload: Any
    at_ns: int


class ChannelServer:
    """A stand-in endpoint; use as a context manager. ``url`` is its base URL; ``received``
    lists the requests in arrival order.

    Parameters
    ----------
    mode : str
        ``ok`` (200 ``{"ok": true, "result": {...}}``), ``slow`` (the same after ``delay_s``),
        ``fail`` (500) or ``rate_limited`` (429 with ``retry_after``).
    delay_s : float
        How long the slow mode waits before answering, s.
    retry_after : int
        The wait a 429 asks for, s.
    """

    def __init__(self, mode: str = OK, delay_s: float = 3.0, retry_after: int = 7) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.retry_after = retry_after
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads ``received`` instead."""

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"null")
                with stand_in._lock:
                    stand_in.received.append(Received(self.path, payload, time.time_ns()))
                if stand_in.mode == SLOW:
                    stand_in._closing.wait(stand_in.delay_s)
                if stand_in.mode == FAIL:
                    self._answer(500, {"ok": False, "description": "Internal Server Error"})
                elif stand_in.mode == RATE_LIMITED:
                    self._answer(
                        429,
                        {
                            "ok": False,
                            "error_code": 429,
                            "description": "Too Many Requests: retry later",
                            "parameters": {"retry_after": stand_in.retry_after},
                        },
                    )
                else:
                    message = {"message_id": len(stand_in.received), "text": "sent"}
                    self._answer(200, {"ok": True, "result": message})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left (slow mode)

        return Handler

    def __enter__(self) -> ChannelServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
