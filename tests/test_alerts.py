"""Alert delivery (issue 10 item 4) on SQLite and PostgreSQL, against real HTTP servers on
loopback standing in for Telegram's Bot API and a Slack-style webhook: exactly-once delivery
despite duplicate enqueues and racing dispatchers, retries with growing delays until
``failed``, a 429's ``retry_after`` honoured, a slow endpoint costing only its own channel's
timeout, a cheap enqueue, and no secret in the audit log, the outbox or the logs."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from fbe_pipeline.governance.alerts import (
    DELIVERED,
    ERROR,
    FAILED,
    INFO,
    LEASE_MIN_S,
    NS_PER_S,
    PENDING,
    SENDING,
    WARN,
    AlertDispatcher,
    TelegramChannel,
    WebhookChannel,
    channels_from_env,
    enqueue_alert,
)
from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.db import engine_for, upgrade
from tests.channels import FAIL, OK, RATE_LIMITED, SLOW, ChannelServer

TOKEN = "7700112233:AAH-test-token-never-shown"
CHAT_ID = "-1001234567890"
HOOK_SECRET = "/services/T0001/B0002/s3cretHookPath"
T0 = 1_764_000_000 * NS_PER_S


@pytest.fixture
def url(ops_database_url: str) -> str:
    """An operational store at the latest schema."""
    engine = engine_for(ops_database_url)
    upgrade(engine)
    engine.dispose()
    return ops_database_url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = engine_for(url)
    yield engine
    engine.dispose()


def _rows(engine: Engine) -> list[m.AlertOutbox]:
    with Session(engine) as s:
        return list(s.scalars(select(m.AlertOutbox).order_by(m.AlertOutbox.id)))


def _audit(engine: Engine) -> list[m.AuditEntry]:
    with Session(engine) as s:
        return list(
            s.scalars(
                select(m.AuditEntry)
                .where(m.AuditEntry.action.like("alert_%"))
                .order_by(m.AuditEntry.id)
            )
        )


def test_error_alert_reaches_telegram_once_despite_duplicates_and_racing_dispatchers(
    url: str, engine: Engine
) -> None:
    with ChannelServer(OK) as telegram:
        channel = TelegramChannel(TOKEN, CHAT_ID, api_base=telegram.url)
        added = [
            enqueue_alert(engine, [channel], ERROR, "STOP file", "all trading halted", "stop:1")
            for _ in range(2)
        ]
        for i in range(9):  # more rows, so the two dispatchers really compete
            enqueue_alert(engine, [channel], WARN, f"approval {i}", "order waits", f"approve:{i}")
        engines = [engine_for(url) for _ in range(2)]
        dispatchers = [AlertDispatcher(e, [channel]) for e in engines]
        start = threading.Barrier(2)

        def race(dispatcher: AlertDispatcher) -> None:
            start.wait()
            for _ in range(3):
                dispatcher.deliver_due()

        threads = [threading.Thread(target=race, args=(d,)) for d in dispatchers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        for e in engines:
            e.dispose()

    assert added == [1, 0]
    texts = [r.payload["text"] for r in telegram.received]
    assert len(texts) == 10 == len(set(texts))
    [stop] = [r for r in telegram.received if "STOP file" in r.payload["text"]]
    assert stop.path == f"/bot{TOKEN}/sendMessage"
    assert stop.payload == {
        "chat_id": CHAT_ID,
        "text": "[ERROR] STOP file\nall trading halted",
        "disable_web_page_preview": True,
    }
    rows = _rows(engine)
    assert [(r.state, r.attempts) for r in rows] == [(DELIVERED, 1)] * 10
    assert all(r.delivered_ns is not None for r in rows)
    audit = _audit(engine)
    assert sorted((a.action, a.target, a.outcome) for a in audit) == sorted(
        ("alert_delivered", f"telegram:{r.id}", "ok") for r in rows
    )


def test_concurrent_enqueues_of_one_key_add_one_row(url: str, engine: Engine) -> None:
    channel = WebhookChannel("http://127.0.0.1:9/hook")
    engines = [engine_for(url) for _ in range(4)]
    start = threading.Barrier(len(engines))
    added: list[int] = []

    def enqueue(e: Engine) -> None:
        start.wait()
        added.append(enqueue_alert(e, [channel], ERROR, "breaker", "tripped", "breaker:BTC"))

    threads = [threading.Thread(target=enqueue, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    for e in engines:
        e.dispose()
    assert sorted(added) == [0, 0, 0, 1]
    assert [(r.channel, r.dedup_key, r.state) for r in _rows(engine)] == [
        ("webhook", "breaker:BTC", PENDING)
    ]


def test_failing_channel_is_retried_with_growing_delays_then_failed(engine: Engine) -> None:
    with ChannelServer(FAIL) as hook:
        channel = WebhookChannel(hook.url + HOOK_SECRET)
        dispatcher = AlertDispatcher(engine, [channel], backoff_first_s=1, max_attempts=4)
        enqueue_alert(engine, [channel], ERROR, "breaker", "tripped", "breaker:1", now_ns=T0)
        now, outcomes, delays = T0, [], []
        for _ in range(4):
            assert dispatcher.deliver_due(now - 1) == []  # not due yet: nothing sent
            [outcome] = dispatcher.deliver_due(now)
            outcomes.append(outcome)
            if outcome.next_attempt_ns is not None:
                delays.append((outcome.next_attempt_ns - now) / NS_PER_S)
                now = outcome.next_attempt_ns
        assert dispatcher.deliver_due(now + 3600 * NS_PER_S) == []  # failed is final
        received = list(hook.received)

    assert [(o.state, o.attempts) for o in outcomes] == [
        (PENDING, 1),
        (PENDING, 2),
        (PENDING, 3),
        (FAILED, 4),
    ]
    # Equal jitter: attempt n waits within [d/2, d], d = 1 s * 2**(n-1), so delays grow.
    for n, delay in enumerate(delays, start=1):
        assert 2 ** (n - 1) / 2 <= delay <= 2 ** (n - 1)
    assert delays[0] < delays[1] < delays[2]
    assert len(received) == 4
    assert received[0].path == HOOK_SECRET
    assert received[0].payload == {
        "text": "[ERROR] breaker\ntripped",
        "severity": "ERROR",
        "title": "breaker",
        "body": "tripped",
    }
    [row] = _rows(engine)
    assert (row.state, row.attempts, row.delivered_ns) == (FAILED, 4, None)
    assert row.last_error.startswith("HTTP 500")
    audit = _audit(engine)
    assert [(a.action, a.target, a.outcome) for a in audit] == [
        ("alert_retry", f"webhook:{row.id}", "retry"),
        ("alert_retry", f"webhook:{row.id}", "retry"),
        ("alert_retry", f"webhook:{row.id}", "retry"),
        ("alert_failed", f"webhook:{row.id}", "failed"),
    ]
    assert [a.at_ns for a in audit] == [o.at_ns for o in outcomes]
    for n, entry in enumerate(audit, start=1):
        assert f"attempt {n}/4" in entry.detail
        assert "HTTP 500" in entry.detail
        assert "s3cret" not in entry.detail


def test_telegram_429_retry_after_sets_the_next_attempt(engine: Engine) -> None:
    with ChannelServer(RATE_LIMITED, retry_after=7) as telegram:
        channel = TelegramChannel(TOKEN, CHAT_ID, api_base=telegram.url)
        dispatcher = AlertDispatcher(engine, [channel])
        enqueue_alert(engine, [channel], ERROR, "limit hit", "daily loss", "limit:1", now_ns=T0)
        [first] = dispatcher.deliver_due(T0)
        assert (first.state, first.next_attempt_ns) == (PENDING, T0 + 7 * NS_PER_S)
        assert first.error.startswith("HTTP 429 Too Many Requests")
        assert dispatcher.deliver_due(T0 + 7 * NS_PER_S - 1) == []
        telegram.mode = OK
        [second] = dispatcher.deliver_due(T0 + 7 * NS_PER_S)
        assert (second.state, second.attempts) == (DELIVERED, 2)
        assert len(telegram.received) == 2


def test_slow_channel_does_not_delay_the_other_channel(engine: Engine) -> None:
    with ChannelServer(SLOW, delay_s=4) as slow, ChannelServer(OK) as fast:
        hook = WebhookChannel(slow.url + HOOK_SECRET, timeout_s=1.0)
        telegram = TelegramChannel(TOKEN, CHAT_ID, api_base=fast.url, timeout_s=1.0)
        for i in range(2):
            enqueue_alert(engine, [hook, telegram], ERROR, f"auto-pause {i}", "paused", f"p:{i}")
        dispatcher = AlertDispatcher(engine, [hook, telegram])  # the slow one first
        began = time.time_ns()
        outcomes = dispatcher.deliver_due()
        took_s = (time.time_ns() - began) / NS_PER_S
        slow_requests, fast_requests = list(slow.received), list(fast.received)

    delivered = [o for o in outcomes if o.channel == "telegram"]
    assert [o.state for o in delivered] == [DELIVERED, DELIVERED]
    # Both Telegram messages were out and recorded well before the webhook's 1 s timeout.
    assert max(o.at_ns - began for o in delivered) < 0.5 * NS_PER_S
    assert max(r.at_ns - began for r in fast_requests) < 0.5 * NS_PER_S
    [timed_out] = [o for o in outcomes if o.channel == "webhook"]
    assert (timed_out.state, timed_out.error) == (PENDING, "timeout after 1 s")
    # One webhook attempt per pass: a dead endpoint costs one timeout, not one per alert.
    assert len(slow_requests) == 1
    assert 1.0 <= took_s < 3.0


def test_enqueue_with_a_dead_channel_returns_in_milliseconds(engine: Engine) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    dead = TelegramChannel(TOKEN, CHAT_ID, api_base=f"http://127.0.0.1:{dead_port}", timeout_s=5)
    enqueue_alert(engine, [dead], INFO, "warm-up", "", "warm-up")  # opens the pool
    began = time.perf_counter()
    added = enqueue_alert(engine, [dead], ERROR, "monitor slippage_ratio", "1.9 > 1.5", "mon:1")
    took_s = time.perf_counter() - began
    assert added == 1
    assert took_s < 0.25
    assert [r.state for r in _rows(engine)] == [PENDING, PENDING]


def test_no_secret_in_audit_outbox_or_logs(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with ChannelServer(FAIL) as failing, ChannelServer(OK) as ok:
        telegram = TelegramChannel(TOKEN, CHAT_ID, api_base=failing.url)
        hook = WebhookChannel(ok.url + HOOK_SECRET)
        dispatcher = AlertDispatcher(engine, [telegram, hook], max_attempts=2)
        enqueue_alert(engine, [telegram, hook], ERROR, "breaker", "tripped", "b:1", now_ns=T0)
        first = dispatcher.deliver_due(T0)
        second = dispatcher.deliver_due(T0 + 3600 * NS_PER_S)
        assert failing.received[0].path == f"/bot{TOKEN}/sendMessage"  # the token is used

    assert [(o.channel, o.state) for o in first + second] == [
        ("telegram", PENDING),
        ("webhook", DELIVERED),
        ("telegram", FAILED),
    ]
    assert "HTTP Request: POST" in caplog.text  # httpx did log its requests, redacted
    assert "<redacted>" in caplog.text
    secrets = (TOKEN, TOKEN.split(":")[1], "s3cretHookPath")
    audit = _audit(engine)
    assert len(audit) == 3
    stored = [" ".join((a.actor, a.action, a.target, a.outcome, a.detail)) for a in audit] + [
        r.last_error for r in _rows(engine)
    ]
    for secret in secrets:
        assert secret not in caplog.text
        assert not [s for s in stored if secret in s]
        assert secret not in repr([telegram, hook])


def test_a_claim_of_a_dead_dispatcher_is_taken_again_after_its_lease(engine: Engine) -> None:
    with ChannelServer(OK) as telegram:
        channel = TelegramChannel(TOKEN, CHAT_ID, api_base=telegram.url)
        enqueue_alert(engine, [channel], ERROR, "STOP file", "", "stop:2", now_ns=T0)
        lease_end = T0 + int(LEASE_MIN_S * NS_PER_S)
        with engine.begin() as connection:  # claimed by a dispatcher that then died
            connection.execute(
                update(m.AlertOutbox).values(state=SENDING, attempts=1, next_attempt_ns=lease_end)
            )
        dispatcher = AlertDispatcher(engine, [channel])
        assert dispatcher.deliver_due(lease_end - 1) == []
        [outcome] = dispatcher.deliver_due(lease_end)
    assert (outcome.state, outcome.attempts) == (DELIVERED, 2)
    assert len(telegram.received) == 1


def test_run_forever_delivers_until_stopped(engine: Engine) -> None:
    with ChannelServer(OK) as telegram:
        channel = TelegramChannel(TOKEN, CHAT_ID, api_base=telegram.url)
        stop = threading.Event()
        worker = threading.Thread(
            target=AlertDispatcher(engine, [channel]).run_forever, args=(stop, 0.05)
        )
        worker.start()
        enqueue_alert(engine, [channel], ERROR, "approval", "order waits", "approve:x")
        deadline = time.monotonic() + 5
        while not telegram.received and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        worker.join(timeout=5)
    assert not worker.is_alive()
    assert [r.payload["text"] for r in telegram.received] == ["[ERROR] approval\norder waits"]


def test_enqueue_refuses_bad_input_and_needs_no_channel(engine: Engine) -> None:
    channel = WebhookChannel("https://hooks.example.com/x/y")
    with pytest.raises(ValueError, match="severity"):
        enqueue_alert(engine, [channel], "CRITICAL", "t", "b", "k")
    with pytest.raises(ValueError, match="dedup_key"):
        enqueue_alert(engine, [channel], ERROR, "t", "b", "k" * 201)
    assert enqueue_alert(engine, [], ERROR, "t", "b", "k") == 0
    assert _rows(engine) == []


def test_channels_from_env() -> None:
    assert channels_from_env({}) == []
    channels = channels_from_env(
        {
            "FBE_ALERT_TELEGRAM_TOKEN": TOKEN,
            "FBE_ALERT_TELEGRAM_CHAT_ID": CHAT_ID,
            "FBE_ALERT_TELEGRAM_API": "http://127.0.0.1:8081",
            "FBE_ALERT_WEBHOOK_URL": "https://hooks.slack.com" + HOOK_SECRET,
        }
    )
    assert [c.name for c in channels] == ["telegram", "webhook"]
    assert repr(channels) == (
        f"[TelegramChannel(http://127.0.0.1:8081, chat_id={CHAT_ID!r}), "
        "WebhookChannel(https://hooks.slack.com)]"
    )
    with pytest.raises(ValueError, match="FBE_ALERT_TELEGRAM_CHAT_ID"):
        channels_from_env({"FBE_ALERT_TELEGRAM_TOKEN": TOKEN})
    with pytest.raises(ValueError, match="http"):
        channels_from_env({"FBE_ALERT_WEBHOOK_URL": "ftp://hooks.example.com/x"})
