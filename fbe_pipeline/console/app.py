"""The operator console's web app (FastAPI, server-rendered Jinja2, no JavaScript).

Pages (all behind a login): live signals and orders waiting for approval, automations with
their positions, orders and fills, the versioned config, the review reports, system health, and
security and risk. Every action calls the same core function as the CLI command it mirrors
(``fbe approve|reject`` → :meth:`ExecutionGateway.decide`, ``fbe pause|resume|stop`` →
:meth:`ExecutionGateway.set_status`, ``fbe config set|approve`` → :class:`ConfigStore`), so
it is validated and audited there.

Every POST is checked in this order: a signed-in, unexpired session; the session's CSRF token;
the user's role read from the operational store now (a disabled user is refused at once).
A refusal answers 403 and is audited (action ``denied``, outcome ``refused``). The session is a
signed cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` with
``FBE_CONSOLE_SECURE_COOKIE=1``) that expires :data:`~.auth.SESSION_HOURS` hours after sign-in.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware

from fbe_pipeline.console import views
from fbe_pipeline.console.auth import (
    SESSION_HOURS,
    active_user,
    console_secret,
    csrf_matches,
    new_csrf_token,
    refuse,
    require_role,
    session_expired,
)
from fbe_pipeline.console.monitors import MonitorCache
from fbe_pipeline.execution.gateway import ExecutionError
from fbe_pipeline.execution.reports import orders_frame, positions_frame
from fbe_pipeline.execution.runtime import gateway_from_env
from fbe_pipeline.governance.config import ConfigError
from fbe_pipeline.governance.monitors import MONITORS
from fbe_pipeline.governance.runtime import EXECUTION, config_store
from fbe_pipeline.governance.users import RANK, PermissionDenied, authenticate, list_users
from fbe_pipeline.market.instruments import load_instruments
from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.audit import record_audit
from fbe_pipeline.reports.charts import CHARTS
from fbe_pipeline.reports.page import chart_title
from fbe_pipeline.reports.period import NoSessionsError, period_review
from fbe_pipeline.reports.review import key_figures, title

MAX_FORM_BYTES = 16 * 1024
STATUSES = {"paused": "pause", "active": "resume", "stopped": "stop"}
NAV = (
    ("live", "Live"),
    ("automations", "Automations"),
    ("config", "Config"),
    ("analytics", "Analytics"),
    ("health", "Health"),
    ("security", "Security & risk"),
)
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# Review pages are static HTML with inline styles and PNGs beside them; no script may run.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"


class _LoginRequired(Exception):
    """A page asked for without a valid session."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Console:
    """What the routes share: ``FBE_HOME``, its config store and operational store, the
    monitors' cache and the Dagster UI's address.

    Parameters
    ----------
    home : Path
        ``FBE_HOME``.
    env : Mapping, optional
        Environment (``FBE_DAGSTER_UI_URL``); default ``os.environ``.

    Raises
    ------
    ValueError
        On a malformed config seed (``FBE_SCORING_CONFIG``, ``FBE_EXECUTION_CONFIG``).
    """

    def __init__(self, home: Path, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.home = home
        self.store = config_store(home)
        self.engine = self.store.engine
        self.monitors = MonitorCache(home)
        self.dagster_url = env.get("FBE_DAGSTER_UI_URL") or "http://127.0.0.1:3000"

    # -- pages ---------------------------------------------------------------------------------

    def live(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Latest live and batch signals, orders waiting for approval."""
        live, batch, problems = views.latest_signals(self.home)
        return {
            "live_signals": live,
            "batch_signals": batch,
            "problems": problems,
            "pending": views.pending_orders(self.engine),
        }

    def automations(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Automations with their status, positions, orders and fills."""
        return {
            "automations": views.automations(self.engine),
            "positions": views.table(positions_frame(self.engine)),
            "orders": views.table(orders_frame(self.engine).iloc[::-1]),
            "fills": views.fills(self.engine),
            "statuses": STATUSES,
        }

    def config(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Active version and values, history, held versions and the diff asked for."""
        version, values = self.store.active()
        history = self.store.history()
        change: dict[str, list[Any]] | None = None
        diff_error = ""
        old, new = query.get("old", ""), query.get("new", "")
        if old or new:
            try:
                change = self.store.compare(int(old), int(new))
            except (ValueError, ConfigError) as exc:
                diff_error = str(exc)
        return {
            "version": version,
            "values": [
                (key, self.store.keys[key][0].name, value) for key, value in sorted(values.items())
            ],
            "history": views.config_history(history),
            "held": views.pending_versions(history),
            "keys": sorted(self.store.keys),
            "old": old,
            "new": new,
            "change": change,
            "diff_error": diff_error,
        }

    def analytics(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Review reports filtered by symbol and date range; with a symbol and both dates, the
        review of exactly that range (figures and charts, rendered under ``reports/range``)."""
        problem = ""
        try:
            start = date.fromisoformat(query["from"]) if query.get("from") else None
            end = date.fromisoformat(query["to"]) if query.get("to") else None
        except ValueError as exc:
            problem, start, end = f"bad date ({exc}); use YYYY-MM-DD", None, None
        symbol = query.get("symbol", "").strip().upper()
        review = None
        if symbol and start and end and not problem:
            # The review of exactly this range, computed from the tables (like a weekly one).
            instrument = load_instruments(self.home / "instruments.yaml").get(symbol)
            if instrument is None:
                problem = f"unknown symbol {symbol!r}"
            else:
                try:
                    found, page = period_review(self.home, self.engine, instrument, start, end)
                except (NoSessionsError, ValueError) as exc:
                    problem = str(exc)
                else:
                    review = {
                        "title": title(found),
                        "figures": key_figures(found),
                        "path": page.relative_to(self.home / "reports").as_posix(),
                        "charts": [
                            (chart_title(name), f"{page.stem}/{name}.png") for name in CHARTS
                        ],
                        "folder": page.parent.relative_to(self.home / "reports").as_posix(),
                    }
        return {
            "reports": views.reports(self.home, symbol or None, start, end),
            "review": review,
            "symbol": symbol,
            "from": query.get("from", ""),
            "to": query.get("to", ""),
            "problems": [problem] if problem else [],
        }

    def health(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Monitors, automation and breaker status, the STOP file, feeds, Dagster UI link."""
        snapshot, refreshing = self.monitors.latest()
        _, values = self.store.active()
        stop_file = Path(values["stop_file"]) if values.get("stop_file") else self.home / "STOP"
        return {
            "monitors": MONITORS,
            "snapshot": snapshot,
            "snapshot_time": views.cell("finished_ns", snapshot.finished_ns),
            "refreshing": refreshing,
            "automations": views.automations(self.engine),
            "breaker_errors": values.get("breaker_errors"),
            "stop_file": stop_file,
            "halted": stop_file.exists(),
            "feeds": views.feeds(self.home),
            "dagster_url": self.dagster_url,
        }

    def security(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Users and roles, the processes holding broker credentials, credential access, risk
        limits, risk events, breaker history."""
        version, values = self.store.active()
        return {
            "users": views.table(list_users(self.engine), ["name", "role", "disabled"]),
            "credential_audit": views.audit_rows(self.engine, credential=True),
            "holders": views.credential_holders(),
            "version": version,
            "limits": [(key, values.get(key)) for key in EXECUTION.keys],
            "risk_events": views.risk_events(self.engine),
            "status_history": views.audit_rows(self.engine, credential=False),
        }

    # -- actions (each the CLI's core function) ------------------------------------------------

    def decide(self, ref: str, user: str, code: str, approve: bool) -> m.Order:
        """``fbe approve|reject``: :meth:`ExecutionGateway.decide` (TOTP-checked, audited)."""
        gateway = gateway_from_env(self.home)
        try:
            return gateway.decide(ref, user, code, approve)
        finally:
            gateway.engine.dispose()

    def set_status(self, symbol: str, status: str, user: str) -> m.Automation:
        """``fbe pause|resume|stop``: :meth:`ExecutionGateway.set_status` (audited)."""
        gateway = gateway_from_env(self.home)
        try:
            return gateway.set_status(symbol, status, user)
        finally:
            gateway.engine.dispose()

    def audit(self, actor: str, action: str, target: str, outcome: str, detail: str = "") -> None:
        """One audit entry in its own transaction."""
        with Session(self.engine) as s, s.begin():
            record_audit(s, time.time_ns(), actor, action, target, outcome, detail)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fbe_pipeline.console", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    return Jinja2Templates(env=env)


async def _form(request: Request) -> dict[str, str]:
    """The URL-encoded form of a POST (first value of each field), at most
    :data:`MAX_FORM_BYTES`; empty for any other content type.

    Raises
    ------
    HTTPException
        413 when the body is larger.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


def _session_name(request: Request) -> str | None:
    """The signed-in user's name from an unexpired session, else None."""
    if session_expired(request.session.get("login_ns")):
        return None
    name = request.session.get("user")
    return name if isinstance(name, str) else None


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a local path only (no ``//host`` or scheme)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/live"


def create_app(home: Path) -> FastAPI:
    """The console for ``home`` (``FBE_HOME``); see the module docstring.

    Parameters
    ----------
    home : Path
        ``FBE_HOME``: operational store (or ``FBE_DATABASE_URL``), live signals, warehouse,
        feeds' status and ``reports/``.

    Returns
    -------
    FastAPI
        The ASGI app; serve it with :func:`fbe_pipeline.console.server.serve`.

    Raises
    ------
    ValueError
        On a malformed config seed.
    OSError
        When the session secret can be neither read nor created.
    """
    console = Console(home)
    templates = _templates()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        console.monitors.close()

    app = FastAPI(
        title="FBE console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=console_secret(home),
        session_cookie="fbe_console",
        max_age=SESSION_HOURS * 3600,
        same_site="strict",
        https_only=os.environ.get("FBE_CONSOLE_SECURE_COOKIE") == "1",
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        response: Response = await call_next(request)
        is_report = request.url.path.startswith("/reports/")
        response.headers["Content-Security-Policy"] = REPORT_CSP if is_report else PAGE_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(_LoginRequired)
    async def to_login(request: Request, exc: _LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.path)}", status_code=303)

    @app.exception_handler(HTTPException)
    async def error_page(request: Request, exc: HTTPException) -> Response:
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": exc.status_code, "detail": exc.detail, "user": None},
            status_code=exc.status_code,
        )

    def viewer(request: Request) -> m.User:
        """The signed-in, enabled user of a GET, else a redirect to the login page."""
        user = active_user(console.engine, _session_name(request))
        if user is None:
            request.session.clear()
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise _LoginRequired(path)
        return user

    def render(
        request: Request, user: m.User, page: str, status: int = 200, error: str = ""
    ) -> Response:
        builder: Callable[[Mapping[str, str]], dict[str, Any]] = getattr(console, page)
        flash = request.session.pop("flash", None)
        context = {
            **builder(dict(request.query_params)),
            "page": page,
            "nav": NAV,
            "user": user,
            "can": {
                "operate": RANK[user.role] >= RANK["operator"],
                "approve": RANK[user.role] >= RANK["approver"],
            },
            "csrf": request.session.get("csrf", ""),
            "flash": flash,
            "error": error,
        }
        return templates.TemplateResponse(request, f"{page}.html", context, status_code=status)

    async def authorize(
        request: Request, form: Mapping[str, str], needs: str, action: str
    ) -> m.User:
        """The user allowed to take ``action`` after the session, CSRF (the ``csrf`` field of
        ``form``) and role checks; 403, audited, otherwise."""
        name = _session_name(request)
        if name is None:
            raise HTTPException(403, "sign in first")
        if not csrf_matches(request.session.get("csrf"), form.get("csrf")):
            await run_in_threadpool(
                refuse, console.engine, name, action, "console: missing or wrong CSRF token"
            )
            raise HTTPException(403, "missing or wrong CSRF token")
        try:
            user = await run_in_threadpool(require_role, console.engine, name, needs, action)
        except PermissionDenied as exc:
            raise HTTPException(403, str(exc)) from None
        return user

    def done(request: Request, page: str, message: str) -> Response:
        request.session["flash"] = message
        return RedirectResponse(f"/{page}", status_code=303)

    # -- sign in and out -----------------------------------------------------------------------

    @app.get("/")
    def index() -> Response:
        return RedirectResponse("/live", status_code=303)

    @app.get("/login")
    def login_form(request: Request, next: str = "/live") -> Response:
        # An anonymous session still carries a CSRF token, so the login form is protected too.
        if not isinstance(request.session.get("csrf"), str):
            request.session["csrf"] = new_csrf_token()
        return templates.TemplateResponse(
            request,
            "login.html",
            {"csrf": request.session["csrf"], "next": _safe_next(next), "error": "", "user": None},
        )

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        if not csrf_matches(request.session.get("csrf"), form.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token; reload the sign-in page")
        name = form.get("name", "")
        try:
            # No user name is longer (users.add_user); the audit log's actor column holds 64.
            if not 1 <= len(name) <= 64:
                raise PermissionDenied("no such user name")
            user = await run_in_threadpool(
                authenticate, console.engine, name, form.get("password", ""), "viewer", "console"
            )
        except PermissionDenied:
            # authenticate audited the reason; the page does not tell which part was wrong.
            return templates.TemplateResponse(
                request,
                "login.html",
                {
                    "csrf": request.session["csrf"],
                    "next": _safe_next(form.get("next")),
                    "error": "wrong name or password",
                    "user": None,
                },
                status_code=401,
            )
        request.session.clear()
        request.session.update(user=user.name, csrf=new_csrf_token(), login_ns=time.time_ns())
        await run_in_threadpool(console.audit, user.name, "console_login", "console", "ok")
        return RedirectResponse(_safe_next(form.get("next")), status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        user = await authorize(request, await _form(request), "viewer", "console_logout")
        request.session.clear()
        await run_in_threadpool(console.audit, user.name, "console_logout", "console", "ok")
        return RedirectResponse("/login", status_code=303)

    # -- pages ---------------------------------------------------------------------------------

    def page_route(page: str) -> None:
        def show(request: Request) -> Response:
            return render(request, viewer(request), page)

        app.add_api_route(f"/{page}", show, methods=["GET"], name=page)

    for page, _ in NAV:
        page_route(page)

    @app.get("/reports/{relative:path}")
    def report(request: Request, relative: str) -> Response:
        user = viewer(request)
        try:
            path = views.report_file(console.home, relative)
        except PermissionError:
            refuse(console.engine, user.name, "report_read", f"console: path {relative!r}")
            raise HTTPException(403, "outside the reports directory") from None
        except FileNotFoundError:
            raise HTTPException(404, "no such report") from None
        return FileResponse(path)

    # -- actions -------------------------------------------------------------------------------

    @app.post("/orders/decide")
    async def decide(request: Request) -> Response:
        form = await _form(request)
        if form.get("decision") not in ("approve", "reject"):
            raise HTTPException(400, "decision must be approve or reject")
        approve = form["decision"] == "approve"
        user = await authorize(request, form, "approver", form["decision"])
        ref = form.get("ref", "")
        try:
            order = await run_in_threadpool(
                console.decide, ref, user.name, form.get("totp", "").strip(), approve
            )
        except ExecutionError as exc:
            return await run_in_threadpool(render, request, user, "live", 400, f"refused: {exc}")
        return done(request, "live", f"{order.order_id}: {order.state}")

    @app.post("/automations/status")
    async def set_status(request: Request) -> Response:
        form = await _form(request)
        status = form.get("status", "")
        if status not in STATUSES:
            raise HTTPException(400, f"status must be one of {', '.join(STATUSES)}")
        user = await authorize(request, form, "operator", f"status_{status}")
        try:
            auto = await run_in_threadpool(
                console.set_status, form.get("symbol", ""), status, user.name
            )
        except ExecutionError as exc:
            return await run_in_threadpool(
                render, request, user, "automations", 400, f"refused: {exc}"
            )
        return done(request, "automations", f"{auto.name}: {auto.status}")

    @app.post("/config/propose")
    async def propose(request: Request) -> Response:
        form = await _form(request)
        user = await authorize(request, form, "operator", "config_request")
        key, value = form.get("key", "").strip(), form.get("value", "").strip()
        try:
            # A proposal from the console always waits for a second, different approver.
            row = await run_in_threadpool(
                console.store.request, {key: value}, form.get("reason", ""), user.name, True
            )
        except ConfigError as exc:
            return await run_in_threadpool(render, request, user, "config", 400, f"refused: {exc}")
        return done(
            request, "config", f"version {row.version} waits for a second approver: {row.diff_json}"
        )

    @app.post("/config/approve")
    async def approve_config(request: Request) -> Response:
        form = await _form(request)
        user = await authorize(request, form, "approver", "config_approve")
        try:
            version = int(form.get("version", ""))
            row = await run_in_threadpool(console.store.approve, version, user.name, user.role)
        except (ValueError, ConfigError) as exc:
            return await run_in_threadpool(render, request, user, "config", 400, f"refused: {exc}")
        effective = views.cell("effective_ns", row.effective_ns)
        return done(request, "config", f"version {row.version}: active from {effective}")

    return app
