"""A loopback TCP proxy that can freeze or cut the connections it carries, to put network
stalls and resets between a client and a venue without touching either."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType

_HOST = "127.0.0.1"
_CHUNK = 65536


class TcpFaultProxy:
    """Forward TCP connections from a free loopback port to ``target_host:target_port``.

    The proxy runs its own event loop in a background thread. Connect the client to
    ``ws://127.0.0.1:<port>`` (or ``http://...``) instead of the target.

    Parameters
    ----------
    target_host, target_port
        Where accepted connections are forwarded to.

    Attributes
    ----------
    port : int
        The listening port, ``0`` before :meth:`start`.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        # time.monotonic() before which no byte is forwarded; a plain float so that the test
        # thread can set it without a round trip to the proxy loop.
        self._frozen_until = 0.0
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Start listening and return the port.

        Raises
        ------
        RuntimeError
            If already started or the listener did not come up within 5 s.
        """
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main(ready)), name="tcp-fault-proxy", daemon=True
        )
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("proxy failed to start")
        return self.port

    def stop(self) -> None:
        """Abort every connection, close the listener and join the thread. Idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if thread.is_alive() and loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def freeze(self, seconds: float) -> None:
        """Stop forwarding bytes in both directions for ``seconds`` from now, keeping the
        connections open; bytes already read are held and delivered afterwards."""
        self._frozen_until = max(self._frozen_until, time.monotonic() + seconds)

    def cut(self) -> None:
        """Abort every current connection (both sides see a reset, no FIN).

        Raises
        ------
        RuntimeError
            If the proxy is not running.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("proxy not started")

        async def abort_all() -> None:
            self._abort_all()

        asyncio.run_coroutine_threadsafe(abort_all(), loop).result(timeout=5)

    def __enter__(self) -> TcpFaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _abort_all(self) -> None:
        for link in self._links:
            for writer in link:
                writer.transport.abort()

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        handlers: set[asyncio.Task[None]] = set()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await self._forward(reader, writer)
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(accept, _HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            self._abort_all()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, link), self._pump(up_reader, writer, link)
            )
        finally:
            self._links.discard(link)
        for side in link:
            side.close()
            with contextlib.suppress(OSError):
                await side.wait_closed()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await src.read(_CHUNK):
                while (wait := self._frozen_until - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except OSError:
            # A reset on one side resets the other, as a broken path would.
            for writer in link:
                writer.transport.abort()
