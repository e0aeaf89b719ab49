"""Users and roles (issues 9 and 10): a TOTP secret each for approvals, a password hashed
with argon2id (argon2-cffi; the password itself is never stored or logged), and the role
check every CLI and service action makes.

Roles rank ``viewer < operator < approver < admin``: an action needs a minimum role (reading:
viewer; pausing, resuming, stopping, requesting a config change: operator; approving orders and
config changes: approver; managing users: admin). A refusal names the role needed and is
audited.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.audit import record_audit

ROLES = ("viewer", "operator", "approver", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
MIN_PASSWORD = 12
# argon2-cffi's defaults follow RFC 9106's second recommended option (argon2id, 64 MiB).
_HASHER = PasswordHasher()


class UserError(ValueError):
    """A refused user change (unknown role, existing name, weak password)."""


class PermissionDenied(PermissionError):
    """An action refused to a user: unknown, disabled, wrong password, or a role below the
    one the action needs (the message names it)."""


def _audit(s: Session, actor: str, action: str, target: str, outcome: str, detail: str) -> None:
    record_audit(s, time.time_ns(), actor, action, target, outcome, detail)


def count_users(engine: Engine) -> int:
    """How many users exist (0: the first one may be created without signing in)."""
    with Session(engine) as s:
        return int(s.scalar(select(func.count()).select_from(m.User)) or 0)


def add_user(
    engine: Engine,
    name: str,
    role: str,
    secret: str | None = None,
    password: str | None = None,
    actor: str = "cli",
) -> str:
    """Create a user with a TOTP secret (random base32 unless given) and, when given, a
    password (stored as its argon2id hash); audited.

    Returns
    -------
    str
        The ``otpauth://`` provisioning URI (issuer ``FBE``) for an authenticator app.

    Raises
    ------
    UserError
        On an unknown role, an empty name, a name already taken, or a password shorter than
        12 characters.
    """
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not name or len(name) > 64:
        raise UserError("a user name has 1-64 characters")
    if password is not None and len(password) < MIN_PASSWORD:
        raise UserError(f"a password has at least {MIN_PASSWORD} characters")
    secret = secret or pyotp.random_base32()
    hashed = _HASHER.hash(password) if password is not None else None
    now = time.time_ns()
    try:
        with Session(engine) as s, s.begin():
            s.add(
                m.User(
                    name=name,
                    role=role,
                    totp_secret=secret,
                    disabled=0,
                    created_ns=now,
                    password_hash=hashed,
                )
            )
            _audit(s, actor, "user_add", name, "ok", role)
    except IntegrityError:
        raise UserError(f"user {name!r} exists") from None
    return provisioning_uri(name, secret)


def provisioning_uri(name: str, secret: str) -> str:
    """The ``otpauth://`` URI of ``name``'s TOTP secret (issuer ``FBE``)."""
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="FBE")


def write_qr(uri: str, path: Path) -> None:
    """The provisioning URI as a QR code PNG (segno) at ``path``, for an authenticator app."""
    segno.make(uri, error="m").save(str(path), kind="png", scale=6)


def authenticate(engine: Engine, name: str, password: str, needs: str, action: str) -> m.User:
    """The user ``name`` if ``password`` is theirs, they are enabled, and their role is at
    least ``needs``; every refusal is audited (never with the password).

    Raises
    ------
    PermissionDenied
        Naming the role needed when the role is too low.
    """
    with Session(engine, expire_on_commit=False) as s, s.begin():
        user = s.get(m.User, name)
        problem = None
        if user is None or user.password_hash is None:
            problem = f"{name!r} cannot sign in (unknown user or no password set)"
        elif user.disabled:
            problem = f"{name!r} is disabled"
        else:
            try:
                _HASHER.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                problem = f"wrong password for {name!r}"
            else:
                if _HASHER.check_needs_rehash(user.password_hash):
                    user.password_hash = _HASHER.hash(password)
                if RANK[user.role] < RANK[needs]:
                    problem = f"{action} needs the {needs} role or above; {name} is {user.role}"
        if problem is not None:
            _audit(s, name, "denied", action, "refused", problem)
        else:
            assert user is not None
            s.expunge(user)
    if problem is not None:
        raise PermissionDenied(problem)
    assert user is not None
    return user


def list_users(engine: Engine) -> pd.DataFrame:
    """``name, role, disabled, has_password, created_ns`` of every user (no secrets)."""
    with Session(engine) as s:
        rows = s.scalars(select(m.User).order_by(m.User.name)).all()
        return pd.DataFrame(
            [
                {
                    "name": u.name,
                    "role": u.role,
                    "disabled": bool(u.disabled),
                    "has_password": u.password_hash is not None,
                    "created_ns": u.created_ns,
                }
                for u in rows
            ],
            columns=["name", "role", "disabled", "has_password", "created_ns"],
        )


def disable_user(engine: Engine, name: str, actor: str) -> None:
    """Disable ``name`` (they can no longer sign in or approve); audited.

    Raises
    ------
    UserError
        When there is no such user.
    """
    with Session(engine) as s, s.begin():
        user = s.get(m.User, name)
        if user is None:
            raise UserError(f"no user {name!r}")
        user.disabled = 1
        _audit(s, actor, "user_disable", name, "ok", "")


def reset_totp(engine: Engine, name: str, actor: str) -> str:
    """Give ``name`` a new TOTP secret (the old codes stop working); audited. Returns the new
    provisioning URI.

    Raises
    ------
    UserError
        When there is no such user.
    """
    secret = pyotp.random_base32()
    with Session(engine) as s, s.begin():
        user = s.get(m.User, name)
        if user is None:
            raise UserError(f"no user {name!r}")
        user.totp_secret = secret
        _audit(s, actor, "user_reset_totp", name, "ok", "")
    return provisioning_uri(name, secret)
