"""Run the operator console with uvicorn (``fbe console``)."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from fbe_pipeline.console.app import create_app

log = logging.getLogger(__name__)


def serve(host: str, port: int, home: Path) -> None:
    """Serve the console of ``home`` on ``host:port`` until interrupted (Ctrl-C, SIGTERM).

    Parameters
    ----------
    host : str
        Address to listen on; ``127.0.0.1`` keeps it off the network (put a TLS proxy in
        front and set ``FBE_CONSOLE_SECURE_COOKIE=1`` to expose it).
    port : int
        TCP port.
    home : Path
        ``FBE_HOME``.

    Raises
    ------
    ValueError
        On a malformed config seed.
    OSError
        When the session secret cannot be read or created.
    """
    app = create_app(home)
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("the console listens on %s: serve it behind TLS only", host)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)
