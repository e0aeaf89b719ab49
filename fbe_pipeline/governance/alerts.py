"""Alert delivery (issue 10): monitors at ERROR, risk events and orders waiting for approval are
pushed to the operators' phones through Telegram and a generic (Slack-compatible) JSON webhook.

Delivery never blocks detection or execution. :func:`enqueue_alert` only writes rows to the
durable outbox (table ``alert_outbox`` of the operational store, one row per channel, duplicates
of a ``(channel, dedup_key)`` ignored); an :class:`AlertDispatcher` (its own thread or process)
claims the due rows, sends them, one thread per channel so that a slow or dead endpoint only
costs its own timeout, and records each outcome with an audit entry: ``delivered``, a retry
with exponential backoff and jitter (``pending`` again), or ``failed`` after ``max_attempts``.

Row states: ``pending`` (waiting for ``next_attempt_ns``) -> ``sending`` (claimed; the claim is
a lease: a dispatcher that dies mid-send leaves the row to be claimed again once the lease
expires) -> ``delivered`` | ``pending`` | ``failed``.

Secrets: the Telegram token and the webhook URL's path are never written to the outbox, the
audit log or the logs; channels show their host only, and a filter on ``httpx``'s logger (which
logs every request's full URL at INFO) redacts them.

Configuration (:func:`channels_from_env`): ``FBE_ALERT_TELEGRAM_TOKEN`` and
``FBE_ALERT_TELEGRAM_CHAT_ID`` (optional ``FBE_ALERT_TELEGRAM_API``, default
``https://api.telegram.org``), ``FBE_ALERT_WEBHOOK_URL``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import aliased

from fbe_pipeline.ops import models as m

log = logging.getLogger(__name__)

INFO, WARN, ERROR = "INFO", "WARN", "ERROR"
SEVERITIES = (INFO, WARN, ERROR)
PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
SYSTEM = "system"
DEFAULT_TIMEOUT_S = 5.0
TELEGRAM_API = "https://api.telegram.org"
TELEGRAM_MAX_TEXT = 4096  # characters; Telegram refuses longer messages
NS_PER_S = 1_000_000_000
# A claim outlives any send by a wide margin, so a live dispatcher's row is never taken over;
# only a dispatcher that died mid-send leaves its row to be claimed again.
LEASE_MIN_S = 60.0
BATCH = 100  # rows per channel and pass, so one pass always ends

_TITLE_MAX = 200  # column sizes of alert_outbox
_DEDUP_MAX = 200
_ERROR_MAX = 300  # characters of an endpoint's answer kept in last_error and the audit
_REDACTED = "<redacted>"
_INSERTS: dict[str, Callable[..., Any]] = {"sqlite": sqlite_insert, "postgresql": pg_insert}


class _RedactSecrets(logging.Filter):
    """Replaces registered secrets in the records of the logger it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, secret: str, replacement: str) -> None:
        with self._lock:
            self._secrets = {**self._secrets, secret: replacement}

    def redact(self, text: str) -> str:
        for secret, replacement in self._secrets.items():
            text = text.replace(secret, replacement)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            redacted = self.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_SECRETS = _RedactSecrets()
# httpx logs "HTTP Request: POST <full URL> ..." at INFO; the URL holds the Telegram token.
logging.getLogger("httpx").addFilter(_SECRETS)


@dataclass(frozen=True)
class Alert:
    """What a channel sends.

    Attributes
    ----------
    severity : str
        ``INFO``, ``WARN`` or ``ERROR``.
    title : str
        One line.
    body : str
        Free text, may be several lines.
    """

    severity: str
    title: str
    body: str

    @property
    def text(self) -> str:
        """The alert as one plain-text message: ``[SEVERITY] title`` then the body."""
        head = f"[{self.severity}] {self.title}"
        return f"{head}\n{self.body}" if self.body else head


@dataclass(frozen=True)
class SendResult:
    """The outcome of one send.

    Attributes
    ----------
    ok : bool
        The endpoint accepted the alert.
    error : str
        Why not (no secrets), empty when ``ok``.
    retry_after_s : float or None
        The wait the endpoint asked for (HTTP 429), s; ``None`` to use the backoff.
    """

    ok: bool
    error: str = ""
    retry_after_s: float | None = None


class Channel(Protocol):
    """A destination of alerts. ``send`` must not raise on network or endpoint errors (it
    returns a failed :class:`SendResult`) and must return within about ``timeout_s``."""

    name: str
    timeout_s: float

    def send(self, alert: Alert) -> SendResult:
        """Deliver ``alert`` once."""
        ...


def _http_url(url: str, what: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{what} is not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{what} must be an http(s) URL with a host")
    return parsed


def _origin(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def _retry_after(response: httpx.Response, payload: Any) -> float | None:
    """Seconds to wait from a 429: Telegram's ``parameters.retry_after``, else the HTTP
    ``Retry-After`` header (seconds form)."""
    if isinstance(payload, dict):
        parameters = payload.get("parameters")
        if isinstance(parameters, dict) and isinstance(parameters.get("retry_after"), int | float):
            return max(0.0, float(parameters["retry_after"]))
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _post(url: str, payload: dict[str, Any], timeout_s: float) -> httpx.Response | str:
    """POST ``payload`` as JSON; the response, or the transport error as text (no URL)."""
    try:
        return httpx.post(url, json=payload, timeout=timeout_s)
    except httpx.TimeoutException:
        return f"timeout after {timeout_s:g} s"
    except httpx.HTTPError as exc:
        # httpx's messages name the error, not the URL; redact anyway in case one ever does.
        return _SECRETS.redact(f"{type(exc).__name__}: {exc}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


class TelegramChannel:
    """Telegram's Bot API: ``POST {api_base}/bot{token}/sendMessage`` with a plain-text message.

    Parameters
    ----------
    token : str
        The bot's token (secret: never shown, logged or audited).
    chat_id : str
        The chat (user, group or channel id) to post to.
    api_base : str
        The Bot API's base URL (a local stand-in in tests).
    timeout_s : float
        Connect, write and read timeout of one send, s.

    Raises
    ------
    ValueError
        On an empty token or chat id, or an ``api_base`` that is not an http(s) URL.
    """

    def __init__(
        self,
        token: str,
        chat_id: str,
        api_base: str = TELEGRAM_API,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not token or not chat_id:
            raise ValueError("a Telegram channel needs a bot token and a chat id")
        base = _http_url(api_base, "the Telegram API base URL")
        _SECRETS.register(token, _REDACTED)
        self.name = "telegram"
        self.timeout_s = timeout_s
        self.chat_id = chat_id
        self._url = f"{str(base).rstrip('/')}/bot{token}/sendMessage"
        self._origin = _origin(base)

    def __repr__(self) -> str:
        return f"TelegramChannel({self._origin}, chat_id={self.chat_id!r})"

    def send(self, alert: Alert) -> SendResult:
        """Post ``alert``; delivered when Telegram answers 2xx with ``"ok": true``."""
        payload = {
            "chat_id": self.chat_id,
            "text": alert.text[:TELEGRAM_MAX_TEXT],
            "disable_web_page_preview": True,
        }
        response = _post(self._url, payload, self.timeout_s)
        if isinstance(response, str):
            return SendResult(False, response)
        body = _json(response)
        if response.is_success and isinstance(body, dict) and body.get("ok") is True:
            return SendResult(True)
        description = body.get("description", "") if isinstance(body, dict) else ""
        error = _SECRETS.redact(f"HTTP {response.status_code} {description}".strip())
        retry = _retry_after(response, body) if response.status_code == 429 else None
        return SendResult(False, error[:_ERROR_MAX], retry)


class WebhookChannel:
    """A generic JSON webhook, Slack-compatible: ``POST url`` with ``{"text", "severity",
    "title", "body"}`` (Slack incoming webhooks read ``text``); any 2xx is a delivery.

    Parameters
    ----------
    url : str
        The webhook's URL; its path and query are treated as a secret (only the host is shown).
    timeout_s : float
        Connect, write and read timeout of one send, s.

    Raises
    ------
    ValueError
        When ``url`` is not an http(s) URL.
    """

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        parsed = _http_url(url, "the webhook URL")
        secret = parsed.raw_path.decode("ascii")
        if len(secret) > 1:
            _SECRETS.register(secret, "/" + _REDACTED)
        self.name = "webhook"
        self.timeout_s = timeout_s
        self._url = url
        self._origin = _origin(parsed)

    def __repr__(self) -> str:
        return f"WebhookChannel({self._origin})"

    def send(self, alert: Alert) -> SendResult:
        """Post ``alert``; delivered on any 2xx answer."""
        payload = {
            "text": alert.text,
            "severity": alert.severity,
            "title": alert.title,
            "body": alert.body,
        }
        response = _post(self._url, payload, self.timeout_s)
        if isinstance(response, str):
            return SendResult(False, response)
        if response.is_success:
            return SendResult(True)
        error = _SECRETS.redact(f"HTTP {response.status_code} {response.text[:_ERROR_MAX]}")
        retry = _retry_after(response, None) if response.status_code == 429 else None
        return SendResult(False, error.strip()[:_ERROR_MAX], retry)


def channels_from_env(env: Mapping[str, str] | None = None) -> list[Channel]:
    """The channels configured in ``env`` (default ``os.environ``): Telegram when
    ``FBE_ALERT_TELEGRAM_TOKEN`` and ``FBE_ALERT_TELEGRAM_CHAT_ID`` are set (API base
    ``FBE_ALERT_TELEGRAM_API``), the webhook when ``FBE_ALERT_WEBHOOK_URL`` is set; empty when
    none is.

    Raises
    ------
    ValueError
        When only one of the Telegram token and chat id is set (alerts would silently go
        nowhere), or a URL is not an http(s) URL.
    """
    env = os.environ if env is None else env
    channels: list[Channel] = []
    token = env.get("FBE_ALERT_TELEGRAM_TOKEN", "")
    chat_id = env.get("FBE_ALERT_TELEGRAM_CHAT_ID", "")
    if bool(token) != bool(chat_id):
        missing = "FBE_ALERT_TELEGRAM_CHAT_ID" if token else "FBE_ALERT_TELEGRAM_TOKEN"
        raise ValueError(f"Telegram alerts are half configured: {missing} is not set")
    if token:
        api = env.get("FBE_ALERT_TELEGRAM_API") or TELEGRAM_API
        channels.append(TelegramChannel(token, chat_id, api_base=api))
    if env.get("FBE_ALERT_WEBHOOK_URL"):
        channels.append(WebhookChannel(env["FBE_ALERT_WEBHOOK_URL"]))
    return channels


def enqueue_alert(
    engine: Engine | Connection,
    channels: Iterable[Channel],
    severity: str,
    title: str,
    body: str,
    dedup_key: str,
    now_ns: int | None = None,
) -> int:
    """Queue an alert for each channel: one ``pending`` outbox row per channel, due at once.
    A row that already exists for the same channel and ``dedup_key`` (in any state) wins, so
    enqueueing again, from any process, sends nothing more. No network I/O: cheap enough to
    call inline from detection and execution.

    Parameters
    ----------
    engine : Engine or Connection
        The operational store. A ``Connection`` (e.g. ``session.connection()``) enqueues in
        the caller's transaction, so the alert is committed with the event it reports; pass
        one when already inside a write transaction, since on SQLite a second connection
        would wait for the caller's own lock.
    channels : iterable of Channel
        Where to send it (only their ``name`` is used here).
    severity : str
        ``INFO``, ``WARN`` or ``ERROR``.
    title : str
        One line; cut to 200 characters.
    body : str
        The message.
    dedup_key : str
        Identity of the event (e.g. ``risk:<automation>:stop_file:<day>``), 1-200 characters.
    now_ns : int, optional
        Creation time, ns UTC (default: now).

    Returns
    -------
    int
        How many rows were added (0 when every channel already had this key).

    Raises
    ------
    ValueError
        On an unknown severity, an empty or too long ``dedup_key``, or a database other than
        SQLite or PostgreSQL.
    sqlalchemy.exc.SQLAlchemyError
        When the store cannot be written.
    """
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    if not 0 < len(dedup_key) <= _DEDUP_MAX:
        raise ValueError(f"dedup_key must have 1-{_DEDUP_MAX} characters")
    names = sorted({c.name for c in channels})
    if not names:
        return 0
    now = time.time_ns() if now_ns is None else now_ns
    if len(title) > _TITLE_MAX:
        title = title[: _TITLE_MAX - 1] + "…"
    rows = [
        {
            "channel": name,
            "dedup_key": dedup_key,
            "severity": severity,
            "title": title,
            "body": body,
            "created_ns": now,
            "next_attempt_ns": now,
            "attempts": 0,
            "state": PENDING,
            "last_error": "",
        }
        for name in names
    ]
    dialect = engine.dialect.name
    if dialect not in _INSERTS:
        raise ValueError(f"the alert outbox needs SQLite or PostgreSQL, not {dialect}")
    # ON CONFLICT DO NOTHING makes a concurrent duplicate a no-op instead of an error: the
    # database, not a read-then-write here, decides which of two enqueuers wins.
    statement = (
        _INSERTS[dialect](m.AlertOutbox)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["channel", "dedup_key"])
        # The added rows' ids, counted: rowcount is -1 for this statement on psycopg.
        .returning(m.AlertOutbox.id)
    )
    if isinstance(engine, Connection):
        return len(engine.execute(statement).all())
    with engine.begin() as connection:
        return len(connection.execute(statement).all())


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt did to one outbox row.

    Attributes
    ----------
    id : int
        The outbox row.
    channel : str
    state : str
        ``delivered``, ``pending`` (retry scheduled) or ``failed`` (gave up).
    attempts : int
        Attempts so far, this one included.
    error : str
        Why the attempt failed (no secrets), empty when delivered.
    at_ns : int
        When the outcome was recorded, ns UTC.
    next_attempt_ns : int or None
        When the retry is due, ns UTC (``pending`` only).
    """

    id: int
    channel: str
    state: str
    attempts: int
    error: str
    at_ns: int
    next_attempt_ns: int | None


@dataclass(frozen=True)
class _Claim:
    id: int
    dedup_key: str
    attempts: int
    alert: Alert


class AlertDispatcher:
    """Sends the outbox's due alerts; several dispatchers (threads or processes) may run on one
    store: each row is claimed by exactly one of them.

    Parameters
    ----------
    engine : Engine
        The operational store.
    channels : sequence of Channel
        The channels to serve, distinct names; rows of other channels are left alone.
    clock : callable
        Current time, ns UTC.
    backoff_first_s : float
        Delay before the first retry, s; it doubles with every failed attempt.
    backoff_max_s : float
        Largest delay between attempts, s.
    max_attempts : int
        Attempts (>= 1) after which a row is ``failed``.

    Raises
    ------
    ValueError
        On duplicate channel names or a non-positive backoff or attempt count.

    Notes
    -----
    The delay after attempt ``n`` is drawn uniformly in ``[d / 2, d]`` with ``d =
    min(backoff_max_s, backoff_first_s * 2 ** (n - 1))`` ("equal jitter": dispatchers that
    failed together do not retry together, and below the cap a delay is never shorter than the
    previous one). A 429 answer's wait replaces the backoff.
    """

    def __init__(
        self,
        engine: Engine,
        channels: Sequence[Channel],
        clock: Callable[[], int] = time.time_ns,
        backoff_first_s: float = 1,
        backoff_max_s: float = 300,
        max_attempts: int = 10,
    ) -> None:
        if len({c.name for c in channels}) != len(channels):
            raise ValueError("alert channels must have distinct names")
        if backoff_first_s <= 0 or backoff_max_s < backoff_first_s or max_attempts < 1:
            raise ValueError(
                "need backoff_first_s > 0, backoff_max_s >= backoff_first_s, max_attempts >= 1"
            )
        self.engine = engine
        self.channels = list(channels)
        self.clock = clock
        self.backoff_first_s = backoff_first_s
        self.backoff_max_s = backoff_max_s
        self.max_attempts = max_attempts

    def backoff_s(self, attempts: int) -> float:
        """The jittered delay after ``attempts`` failed attempts, s (see Notes)."""
        ceiling = min(self.backoff_max_s, self.backoff_first_s * 2 ** (attempts - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def deliver_due(self, now_ns: int | None = None) -> list[Outcome]:
        """Send every alert due at ``now_ns``, all channels concurrently, and record each
        outcome (row state and an audit entry). Returns when every channel is done: a slow
        endpoint delays the return by its timeout, not the other channels' deliveries.

        Parameters
        ----------
        now_ns : int, optional
            The time of this pass, ns UTC: rows with ``next_attempt_ns <= now_ns`` are due and
            outcomes are stamped with it. Default: the clock, read afresh for every row.

        Returns
        -------
        list of Outcome
            One per attempt made, by row id. A channel stops at its first failure in a pass,
            so a dead endpoint costs one timeout per pass, not one per queued alert.

        Raises
        ------
        sqlalchemy.exc.SQLAlchemyError
            When the store cannot be read or written (claimed rows are retried after their
            lease expires).
        """
        if not self.channels:
            return []
        with ThreadPoolExecutor(len(self.channels), thread_name_prefix="fbe-alerts") as pool:
            futures = [pool.submit(self._drain, c, now_ns) for c in self.channels]
            outcomes = [o for future in futures for o in future.result()]
        return sorted(outcomes, key=lambda o: o.id)

    def run_forever(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Deliver due alerts every ``poll_s`` seconds until ``stop`` is set. A pass that fails
        on the database is logged and tried again at the next poll."""
        while not stop.is_set():
            try:
                self.deliver_due()
            except SQLAlchemyError:
                log.warning("alert delivery pass failed; next in %g s", poll_s, exc_info=True)
            stop.wait(poll_s)

    def _drain(self, channel: Channel, now_ns: int | None) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for _ in range(BATCH):
            claim = self._claim(channel, self.clock() if now_ns is None else now_ns)
            if claim is None:
                break
            result = self._send(channel, claim)
            outcome = self._record(
                channel, claim, result, self.clock() if now_ns is None else now_ns
            )
            if outcome is not None:
                outcomes.append(outcome)
            if not result.ok:
                break
        return outcomes

    def _claim(self, channel: Channel, now: int) -> _Claim | None:
        """Take the channel's oldest due row: state ``sending``, one more attempt, and a lease
        in ``next_attempt_ns``. One statement, so two dispatchers never take the same row:
        PostgreSQL skips rows another one has locked and re-checks the outer condition after a
        lock wait; SQLite runs writers one at a time."""
        t = m.AlertOutbox
        due = t.state.in_((PENDING, SENDING))
        # An alias, or the subquery would be correlated with the updated row.
        c = aliased(m.AlertOutbox, name="candidate")
        oldest = (
            select(c.id)
            .where(c.channel == channel.name, c.state.in_((PENDING, SENDING)))
            .where(c.next_attempt_ns <= now)
            .order_by(c.next_attempt_ns, c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        lease_ns = int(max(LEASE_MIN_S, 4 * channel.timeout_s) * NS_PER_S)
        statement = (
            update(t)
            .where(t.id == oldest, due, t.next_attempt_ns <= now)
            .values(state=SENDING, attempts=t.attempts + 1, next_attempt_ns=now + lease_ns)
            .returning(t.id, t.dedup_key, t.attempts, t.severity, t.title, t.body)
        )
        with self.engine.begin() as connection:
            row = connection.execute(statement).first()
        if row is None:
            return None
        return _Claim(row.id, row.dedup_key, row.attempts, Alert(row.severity, row.title, row.body))

    @staticmethod
    def _send(channel: Channel, claim: _Claim) -> SendResult:
        try:
            return channel.send(claim.alert)
        except Exception as exc:
            # A channel is a protocol: one that breaks its promise not to raise must not leave
            # the row claimed until its lease expires nor stop the other rows. No traceback in
            # the log: its frames' text is not redacted.
            error = _SECRETS.redact(f"{type(exc).__name__}: {exc}")[:_ERROR_MAX]
            log.error("alert channel %s raised %s", channel.name, error)
            return SendResult(False, error)

    def _record(
        self, channel: Channel, claim: _Claim, result: SendResult, now: int
    ) -> Outcome | None:
        """Store the attempt's outcome and its audit entry in one transaction; ``None`` when
        the row is no longer this claim's (its lease expired and another dispatcher took it)."""
        t = m.AlertOutbox
        next_ns: int | None = None
        if result.ok:
            state, action, audit_outcome = DELIVERED, "alert_delivered", "ok"
            values: dict[str, Any] = {"state": DELIVERED, "delivered_ns": now, "last_error": ""}
        elif claim.attempts >= self.max_attempts:
            state, action, audit_outcome = FAILED, "alert_failed", "failed"
            values = {"state": FAILED, "last_error": result.error}
        else:
            wait_s = (
                self.backoff_s(claim.attempts)
                if result.retry_after_s is None
                else result.retry_after_s
            )
            next_ns = now + int(wait_s * NS_PER_S)
            state, action, audit_outcome = PENDING, "alert_retry", "retry"
            values = {"state": PENDING, "next_attempt_ns": next_ns, "last_error": result.error}
        detail = f"attempt {claim.attempts}/{self.max_attempts}; dedup_key {claim.dedup_key}"
        detail += f"; severity {claim.alert.severity}"
        if next_ns is not None:
            detail += f"; retry in {(next_ns - now) / NS_PER_S:.3f} s"
        if result.error:
            detail += f"; error: {result.error}"
        with self.engine.begin() as connection:
            updated = connection.execute(
                update(t)
                .where(t.id == claim.id, t.state == SENDING, t.attempts == claim.attempts)
                .values(**values)
            )
            if updated.rowcount != 1:
                log.warning("alert %s:%d: claim lost before its outcome", channel.name, claim.id)
                return None
            connection.execute(
                insert(m.AuditEntry).values(
                    at_ns=now,
                    actor=SYSTEM,
                    action=action,
                    target=f"{channel.name}:{claim.id}",
                    outcome=audit_outcome,
                    detail=detail,
                )
            )
        return Outcome(claim.id, channel.name, state, claim.attempts, result.error, now, next_ns)
