"""A throwaway PostgreSQL server for the test suite, and the fixtures that use it.

``PostgresServer`` runs ``initdb`` and ``pg_ctl`` on a fresh data directory under ``/tmp``,
listening on a free loopback port (TCP, trust auth for user ``postgres``) and on a unix socket
inside that directory, with durability switched off for speed. PostgreSQL refuses to run as
root, so when the tests run as root (as in CI) every server command runs as the ``postgres``
OS user through ``runuser``; otherwise the commands run as the current user.

Fixtures: ``postgres_server`` (one server per test session, started only when a test needs
it) and ``ops_database_url`` (a SQLAlchemy URL, once for SQLite and once for a fresh database
on that server).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

OS_USER = "postgres"
DB_USER = "postgres"
HOST = "127.0.0.1"
START_TIMEOUT = 60  # seconds, for ``pg_ctl start -w`` and ``pg_ctl stop -w``

_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")
_RUNUSER_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PORT_TAKEN = "Address already in use"


class PostgresError(RuntimeError):
    """The throwaway PostgreSQL server could not be set up, started or stopped."""


class PostgresUnavailable(PostgresError):
    """This machine cannot run the server (binaries, ``runuser`` or OS user missing)."""


def _find(name: str, dirs: tuple[str, ...]) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return text[-limit:]


class PostgresServer:
    """A PostgreSQL server on a temporary data directory; use as a context manager.

    ``port`` picks the first port to try (default: a free one); if the server cannot bind it,
    ``start`` retries once on another free port.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port: int | None = port
        self.root: Path | None = None
        self.startup_seconds: float | None = None
        self._pid: int | None = None
        self._started = False

    # -- paths ----------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if self.root is None:
            raise PostgresError("the server has no temporary directory (not started)")
        return self.root / name

    @property
    def data_dir(self) -> Path:
        return self._path("data")

    @property
    def socket_dir(self) -> Path:
        return self._path("sock")

    @property
    def log_file(self) -> Path:
        return self._path("server.log")

    # -- commands -------------------------------------------------------------------------

    def _check_machine(self) -> None:
        """Find the binaries and the way to run them; creates nothing."""
        missing = [n for n in ("initdb", "pg_ctl") if _find(n, _BIN_DIRS) is None]
        if missing:
            raise PostgresUnavailable(
                f"PostgreSQL binaries not found: {', '.join(missing)} "
                f"(looked on PATH and in {', '.join(_BIN_DIRS)})"
            )
        self._initdb = _find("initdb", _BIN_DIRS) or "initdb"
        self._pg_ctl = _find("pg_ctl", _BIN_DIRS) or "pg_ctl"
        self._prefix: list[str] = []
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() != 0:
            return  # PostgreSQL runs as any non-root user: run it as ourselves.
        try:
            self._owner = pwd.getpwnam(OS_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root, and PostgreSQL refuses to run as root, but there is no "
                f"{OS_USER!r} OS user to run it as; create it (e.g. `useradd --system "
                f"{OS_USER}`) or run the tests as a non-root user"
            ) from None
        runuser = _find("runuser", _RUNUSER_DIRS)
        if runuser is None:
            raise PostgresUnavailable(
                f"running as root, and PostgreSQL refuses to run as root, but `runuser` (to run "
                f"it as {OS_USER!r}) was not found (looked on PATH and in "
                f"{', '.join(_RUNUSER_DIRS)})"
            )
        self._prefix = [runuser, "-u", OS_USER, "--"]

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        # PG* variables (PGDATA, PGPORT, ...) of the caller must not steer these commands.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return subprocess.run(
            [*self._prefix, *args],
            cwd=self.root,  # readable by the server's user, unlike the caller's cwd maybe
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _make_dir(self, path: Path, mode: int) -> None:
        path.mkdir(mode=mode, exist_ok=True)
        path.chmod(mode)  # mkdir's mode is masked by the umask
        if self._owner is not None:
            shutil.chown(path, user=self._owner.pw_uid, group=self._owner.pw_gid)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """``initdb`` a temporary data directory and start the server on it (``pg_ctl -w``)."""
        if self._started:
            return self
        self._check_machine()
        began = time.perf_counter()
        self.root = Path(tempfile.mkdtemp(prefix="fbe-pg-", dir="/tmp"))
        try:
            self._make_dir(self.root, 0o755)
            self._make_dir(self.data_dir, 0o700)
            self._make_dir(self.socket_dir, 0o755)
            initdb = self._run(
                [
                    self._initdb,
                    "-D",
                    str(self.data_dir),
                    "-U",
                    DB_USER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                timeout=START_TIMEOUT,
            )
            if initdb.returncode != 0:
                raise PostgresError(
                    f"initdb failed (exit {initdb.returncode}):\n{initdb.stdout}{initdb.stderr}"
                )
            port = self.port or _free_port()
            for attempt in (1, 2):  # once more on another port if this one got taken meanwhile
                if self._pg_ctl_start(port):
                    break
                if attempt == 2 or _PORT_TAKEN not in _tail(self.log_file):
                    raise PostgresError(
                        f"PostgreSQL failed to start on {HOST}:{port} (pg_ctl start -w, "
                        f"timeout {START_TIMEOUT} s); server log:\n"
                        f"{_tail(self.log_file)}"
                    )
                port = _free_port()
            self._started = True
            self._pid = self._read_pid()
            self.startup_seconds = time.perf_counter() - began
        except BaseException:
            self._remove_root()
            raise
        return self

    def _pg_ctl_start(self, port: int) -> bool:
        self.port = port
        # A fresh log per attempt, so an error is never read from an earlier attempt.
        self.log_file.unlink(missing_ok=True)
        options = (
            f"-p {port} -k {self.socket_dir} -c listen_addresses={HOST} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        try:
            result = self._run(
                [
                    self._pg_ctl,
                    "start",
                    "-w",
                    "-t",
                    str(START_TIMEOUT),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    options,
                ],
                timeout=START_TIMEOUT + 30,
            )
        except subprocess.TimeoutExpired:
            self._stop_quietly()
            return False
        if result.returncode != 0:
            self._stop_quietly()  # pg_ctl may time out while the postmaster still runs
            return False
        return True

    def _read_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def _pg_ctl_stop(self, mode: str) -> bool:
        try:
            result = self._run(
                [
                    self._pg_ctl,
                    "stop",
                    "-w",
                    "-t",
                    str(START_TIMEOUT),
                    "-m",
                    mode,
                    "-D",
                    str(self.data_dir),
                ],
                timeout=START_TIMEOUT + 30,
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def _stop_quietly(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl_stop("immediate")

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and remove the temporary directory."""
        stopped = True
        try:
            if self._started:
                stopped = self._pg_ctl_stop("fast") or self._pg_ctl_stop("immediate")
                if not stopped and self._pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self._pid, signal.SIGKILL)
        finally:
            self._started = False
            self._pid = None
            self._remove_root()
        if not stopped:
            raise PostgresError("pg_ctl stop failed; the postmaster was killed")

    def _remove_root(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases ------------------------------------------------------------------------

    def url(self, name: str) -> str:
        """The SQLAlchemy (psycopg 3) URL of database ``name`` on this server."""
        if not self._started:
            raise PostgresError("the server is not running")
        return f"postgresql+psycopg://{DB_USER}@{HOST}:{self.port}/{name}"

    def _admin(self, statement: str, name: str) -> None:
        import psycopg
        from psycopg import sql

        if not _DB_NAME.fullmatch(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")
        if not self._started:
            raise PostgresError("the server is not running")
        with psycopg.connect(
            host=HOST,
            port=self.port,
            user=DB_USER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(name)))

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        self._admin("CREATE DATABASE {}", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, ending any connection still open to it."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 server for the whole session, started on first use."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresError as exc:
        pytest.fail(f"cannot start the test PostgreSQL server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ops_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty operational database: a SQLite file under ``tmp_path``,
    then a fresh database on the session's PostgreSQL server (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ops.sqlite"
        return
    # Requested here, not as a parameter, so the SQLite runs never start the server.
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"fbe_test_{uuid.uuid4().hex[:16]}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)
