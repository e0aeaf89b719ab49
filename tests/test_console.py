"""The operator console (issue 11) served by uvicorn on a free loopback port over a fresh
``FBE_HOME``: sign-in, CSRF, role checks from the operational store with audited refusals,
TOTP-checked order approvals through the execution gateway, config proposals held for a second
approver, and the read-only reports directory."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from fbe_pipeline.console.auth import SECRET_FILE
from fbe_pipeline.governance.users import disable_user
from fbe_pipeline.ops import models as m
from tests.console_util import Desk, csrf_token, desk, signed_in


@pytest.fixture
def d(fbe_home: Path, sample_data: Path) -> Iterator[Desk]:
    """Users of every role, one order pending approval and the console, on a fresh home."""
    with desk(fbe_home, sample_data) as running:
        yield running


def _form_token(client: httpx.Client, page: str) -> str:
    response = client.get(page)
    assert response.status_code == 200, response.text
    return csrf_token(response.text)


def _automation_status(d: Desk) -> str:
    with Session(d.engine) as s:
        auto = s.get(m.Automation, "BTCUSDT-paper")
        assert auto is not None
        return auto.status


def test_pages_need_a_login_and_a_wrong_password_is_refused(d: Desk) -> None:
    anonymous = httpx.Client(base_url=d.url)
    for page in ("/live", "/automations", "/config", "/analytics", "/health", "/security"):
        response = anonymous.get(page)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={page}"
    assert anonymous.get("/reports/daily/BTCUSDT/2020-02-22.html").status_code == 303

    token = csrf_token(anonymous.get("/login").text)
    refused = anonymous.post("/login", data={"csrf": token, "name": "ann", "password": "nope"})
    assert refused.status_code == 401
    assert "wrong name or password" in refused.text
    assert anonymous.get("/live").status_code == 303  # still signed out
    token = csrf_token(anonymous.get("/login").text)  # the redirect ended that session
    long_name = {"csrf": token, "name": "x" * 65, "password": "nope"}
    assert anonymous.post("/login", data=long_name).status_code == 401
    assert d.audit("ann")[-1][:3] == ("denied", "console", "refused")

    client = signed_in(d.url, "ann")
    assert [c.name for c in client.cookies.jar] == ["fbe_console"]
    live = client.get("/live")
    assert live.status_code == 200 and d.order_id in live.text
    assert "script-src" not in live.headers["content-security-policy"]  # no script allowed
    assert d.audit("ann")[-1][:3] == ("console_login", "console", "ok")
    secret = d.home / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_session_cookie_is_httponly_and_samesite_strict(d: Desk) -> None:
    client = httpx.Client(base_url=d.url)
    response = client.get("/login")
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=strict" in header and "secure" not in header
    token = csrf_token(response.text)
    signed = client.post("/login", data={"csrf": token, "name": "vic", "password": "x" * 21})
    assert signed.status_code == 401
    logout = signed_in(d.url, "vic")
    token = _form_token(logout, "/live")
    assert logout.post("/logout", data={"csrf": token}).status_code == 303
    assert logout.get("/live").status_code == 303


def test_a_post_without_the_csrf_token_is_refused_and_audited(d: Desk) -> None:
    client = signed_in(d.url, "ann")
    form = {"ref": d.order_id, "totp": d.totp("ann"), "decision": "approve"}
    response = client.post("/orders/decide", data=form)
    assert response.status_code == 403
    wrong = client.post("/orders/decide", data={**form, "csrf": "forged"})
    assert wrong.status_code == 403
    assert d.order_state() == m.PENDING_APPROVAL
    refusals = [r for r in d.audit("ann") if r[0] == "denied"]
    assert [r[1:3] for r in refusals] == [("approve", "refused")] * 2
    assert "CSRF" in refusals[0][3]
    # The sign-in form is protected the same way.
    anonymous = httpx.Client(base_url=d.url)
    no_token = {"name": "ann", "password": "console-test-password"}
    assert anonymous.post("/login", data=no_token).status_code == 403


def test_a_viewer_sees_no_action_and_is_refused_with_an_audit_entry(d: Desk) -> None:
    client = signed_in(d.url, "vic")
    for page in ("/live", "/automations", "/config"):
        html = client.get(page).text
        for action in ("/orders/decide", "/automations/status", "/config/propose"):
            assert action not in html, (page, action)
    token = _form_token(client, "/live")
    approve = {"csrf": token, "ref": d.order_id, "totp": d.totp("vic"), "decision": "approve"}
    response = client.post("/orders/decide", data=approve)
    assert response.status_code == 403
    assert "approver" in response.text
    pause = client.post(
        "/automations/status", data={"csrf": token, "symbol": "BTCUSDT", "status": "paused"}
    )
    assert pause.status_code == 403
    assert d.order_state() == m.PENDING_APPROVAL
    assert _automation_status(d) == m.ACTIVE
    refusals = [(a, t, o) for a, t, o, _ in d.audit("vic") if a == "denied"]
    assert refusals == [("denied", "approve", "refused"), ("denied", "status_paused", "refused")]


def test_an_approver_approves_with_a_valid_totp_only(d: Desk) -> None:
    client = signed_in(d.url, "ann")
    token = _form_token(client, "/live")
    form = {"csrf": token, "ref": d.order_id, "decision": "approve"}
    wrong = client.post("/orders/decide", data={**form, "totp": "000000"})
    assert wrong.status_code == 400
    assert "wrong TOTP code" in wrong.text
    assert d.order_state() == m.PENDING_APPROVAL
    assert d.audit("ann")[-1][:3] == ("approve", d.order_id, "refused")

    approved = client.post("/orders/decide", data={**form, "totp": d.totp("ann")})
    assert approved.status_code == 303
    assert d.order_state() == m.APPROVED
    assert d.audit("ann")[-1][:3] == ("approve", d.order_id, "ok")
    page = client.get("/live").text
    assert f"{d.order_id}: approved" in page
    assert "No order waits for approval" in page


def test_an_operator_pauses_and_a_disabled_user_is_refused_at_once(d: Desk) -> None:
    client = signed_in(d.url, "otto")
    token = _form_token(client, "/automations")
    paused = client.post(
        "/automations/status", data={"csrf": token, "symbol": "BTCUSDT", "status": "paused"}
    )
    assert paused.status_code == 303
    assert _automation_status(d) == m.PAUSED
    assert d.audit("otto")[-1][:3] == ("status_paused", "BTCUSDT-paper", "ok")

    disable_user(d.engine, "otto", "admin")
    resumed = client.post(
        "/automations/status", data={"csrf": token, "symbol": "BTCUSDT", "status": "active"}
    )
    assert resumed.status_code == 403
    assert _automation_status(d) == m.PAUSED
    assert d.audit("otto")[-1][:3] == ("denied", "status_active", "refused")
    assert client.get("/automations").status_code == 303


def test_a_config_proposal_waits_for_a_second_approver(d: Desk) -> None:
    operator = signed_in(d.url, "otto")
    token = _form_token(operator, "/config")
    proposal = {"csrf": token, "key": "trigger_score", "value": "55", "reason": "fewer signals"}
    response = operator.post("/config/propose", data=proposal)
    assert response.status_code == 303
    assert d.config_state(2) == m.CONFIG_PENDING
    page = operator.get("/config").text
    assert "version 2 waits for a second approver" in page
    assert 'id="active-version">1<' in page
    assert "/config/approve" not in page  # an operator cannot approve
    refused = operator.post("/config/approve", data={"csrf": token, "version": "2"})
    assert refused.status_code == 403
    bad = operator.post("/config/propose", data={**proposal, "value": "500"})
    assert bad.status_code == 400 and "trigger_score must lie within 0-100" in bad.text

    approver = signed_in(d.url, "ann")
    token = _form_token(approver, "/config")
    approved = approver.post("/config/approve", data={"csrf": token, "version": "2"})
    assert approved.status_code == 303
    assert d.config_state(2) == m.CONFIG_ACTIVE
    assert d.audit("ann")[-1][:3] == ("config_approve", "v2", "ok")
    diff = approver.get("/config", params={"old": "1", "new": "2"}).text
    assert "trigger_score" in diff and 'id="diff"' in diff

    # The requester of a version cannot be its second approver.
    token = _form_token(approver, "/config")
    own = {"csrf": token, "key": "trigger_score", "value": "60", "reason": "own"}
    assert approver.post("/config/propose", data=own).status_code == 303
    self_approval = approver.post("/config/approve", data={"csrf": token, "version": "3"})
    assert self_approval.status_code == 400
    assert "second, different approver" in self_approval.text
    assert d.config_state(3) == m.CONFIG_PENDING


def test_reports_are_served_read_only_and_path_traversal_is_refused(d: Desk) -> None:
    daily = d.home / "reports" / "daily" / "BTCUSDT"
    (daily / "2020-02-22").mkdir(parents=True)
    (daily / "2020-02-22.html").write_text("<h1>BTCUSDT 2020-02-22</h1>")
    (daily / "2020-02-22" / "equity.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    weekly = d.home / "reports" / "weekly" / "BTCUSDT"
    weekly.mkdir(parents=True)
    (weekly / "2020-02-17_2020-02-23.html").write_text("<h1>week</h1>")
    client = signed_in(d.url, "vic")

    listed = client.get("/analytics", params={"symbol": "btcusdt", "from": "2020-02-22"}).text
    assert "daily/BTCUSDT/2020-02-22.html" in listed
    assert "weekly/BTCUSDT/2020-02-17_2020-02-23.html" in listed
    later = client.get("/analytics", params={"from": "2020-03-01"}).text
    assert "2020-02-22.html" not in later
    page = client.get("/reports/daily/BTCUSDT/2020-02-22.html")
    assert page.status_code == 200 and "BTCUSDT 2020-02-22" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert client.get("/reports/daily/BTCUSDT/2020-02-22/equity.png").status_code == 200
    assert client.get("/reports/daily/BTCUSDT/missing.html").status_code == 404
    assert client.post("/reports/daily/BTCUSDT/2020-02-22.html").status_code == 405

    for probe in ("%2e%2e/ops.sqlite", "daily/..%2f..%2fconsole_secret", "%2fetc%2fpasswd"):
        response = client.get(f"/reports/{probe}")
        assert response.status_code == 403, probe
        assert "SQLite" not in response.text
    assert [r[1:3] for r in d.audit("vic") if r[0] == "denied"] == [("report_read", "refused")] * 3


def test_health_and_security_pages_show_the_desk(d: Desk) -> None:
    client = signed_in(d.url, "admin")
    health = client.get("/health").text
    assert 'href="http://127.0.0.1:3000"' in health
    assert "BTCUSDT-paper" in health
    # The first visit starts `fbe monitors` in the background; its results appear once done.
    deadline = time.monotonic() + 120
    while 'id="monitors"' not in health and "fbe monitors failed" not in health:
        assert time.monotonic() < deadline, "fbe monitors gave no result"
        time.sleep(1)
        health = client.get("/health").text
    assert "fbe monitors failed" not in health
    for monitor in ("integrity", "failed_blocking_checks"):
        assert f'<td>{monitor}</td><td class="OK">OK</td>' in health
    security = client.get("/security").text
    for name, role in (("ann", "approver"), ("otto", "operator"), ("vic", "viewer")):
        assert f"<td>{name}</td><td>{role}</td>" in security
    assert "max_daily_drawdown" in security
    assert "no credential access recorded" in security


def test_the_console_does_not_import_dagster() -> None:
    code = (
        "import sys, fbe_pipeline.console.server; "
        "sys.exit(any(m.split('.')[0] == 'dagster' for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_security_page_shows_which_processes_hold_broker_credentials(d: Desk) -> None:
    import os

    from fbe_pipeline.console.views import credential_holders

    secret = "not-for-the-console-7f3a"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FBE_BROKER_")}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**env, "FBE_BROKER_API_KEY": secret, "FBE_BROKER_API_SECRET": secret},
    )
    try:
        table = credential_holders()
        [row] = [r for r in table.rows if r[0] == str(holder.pid)]
        assert row[1] == str(os.getpid())
        assert row[3] == "FBE_BROKER_API_KEY, FBE_BROKER_API_SECRET"
        page = signed_in(d.url, "vic").get("/security").text
        assert f"<td>{holder.pid}</td>" in page and "FBE_BROKER_API_SECRET" in page
        assert secret not in page
    finally:
        holder.kill()
        holder.wait()
