"""Sessions, CSRF tokens and role checks of the operator console.

The session itself is a cookie signed by Starlette's ``SessionMiddleware`` with the secret of
:func:`console_secret`; what it holds (the user's name, the CSRF token, the sign-in time) is
trusted only as far as the signature goes. Roles are never taken from the cookie: every request
reads the user from the operational store, so a disabled user or a lowered role takes effect at
the next click.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from fbe_pipeline.governance.users import RANK, PermissionDenied
from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.audit import record_audit

SESSION_HOURS = 8
SESSION_NS = SESSION_HOURS * 3_600 * 1_000_000_000
SECRET_FILE = "console_secret"


def console_secret(home: Path, env: Mapping[str, str] | None = None) -> str:
    """The key that signs session cookies: ``FBE_CONSOLE_SECRET`` when set, else the content of
    ``$FBE_HOME/console_secret``, created once (random, mode 0600) so sessions survive a
    restart of the console.

    Raises
    ------
    OSError
        When the file can be neither created nor read.
    """
    env = os.environ if env is None else env
    if env.get("FBE_CONSOLE_SECRET"):
        return env["FBE_CONSOLE_SECRET"]
    path = home / SECRET_FILE
    home.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two consoles starting at once must not each write their own secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def new_csrf_token() -> str:
    """A fresh random token for one session's forms."""
    return secrets.token_urlsafe(32)


def csrf_matches(expected: object, submitted: str | None) -> bool:
    """Whether a form's token equals the session's (constant-time; False when either is
    missing)."""
    if not isinstance(expected, str) or not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


def session_expired(login_ns: object, now_ns: int | None = None) -> bool:
    """Whether a session signed in at ``login_ns`` is older than :data:`SESSION_HOURS` (or has
    no valid sign-in time)."""
    now = time.time_ns() if now_ns is None else now_ns
    return not isinstance(login_ns, int) or not 0 <= now - login_ns <= SESSION_NS


def active_user(engine: Engine, name: object) -> m.User | None:
    """The user ``name`` (detached) when they exist and are enabled, else None."""
    if not isinstance(name, str) or not name:
        return None
    with Session(engine) as s:
        user = s.get(m.User, name)
        if user is None or user.disabled:
            return None
        s.expunge(user)
        return user


def refuse(engine: Engine, actor: str, action: str, problem: str) -> None:
    """Audit a refusal the way :func:`~fbe_pipeline.governance.users.authenticate` does
    (action ``denied``, the refused action as target, outcome ``refused``)."""
    with Session(engine) as s, s.begin():
        record_audit(s, time.time_ns(), actor, "denied", action, "refused", problem)


def require_role(engine: Engine, name: str, needs: str, action: str) -> m.User:
    """The enabled user ``name`` if their role (read from the store now) is at least ``needs``.

    Raises
    ------
    PermissionDenied
        When the user is unknown, disabled or below ``needs``; the refusal is audited.
    """
    user = active_user(engine, name)
    problem = None
    if user is None:
        problem = f"{name!r} is unknown or disabled"
    elif RANK[user.role] < RANK[needs]:
        problem = f"{action} needs the {needs} role or above; {name} is {user.role}"
    if problem is not None:
        refuse(engine, name, action, f"console: {problem}")
        raise PermissionDenied(problem)
    assert user is not None
    return user
