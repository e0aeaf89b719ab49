"""Users who act on paper execution, with a TOTP secret each (issue 9; the governance issue
adds passwords and role checks on every action).

Owns :func:`add_user` and :data:`ROLES`.
"""

from __future__ import annotations

import time

import pyotp
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fbe_pipeline.ops import models as m

ROLES = ("viewer", "operator", "approver", "admin")


class UserError(ValueError):
    """A refused user change (unknown role, existing name)."""


def add_user(engine: Engine, name: str, role: str, secret: str | None = None) -> str:
    """Create a user with a TOTP secret (random base32 unless given) and audit it.

    Returns
    -------
    str
        The ``otpauth://`` provisioning URI (issuer ``FBE``) for an authenticator app.

    Raises
    ------
    UserError
        On an unknown role, an empty name or a name already taken.
    """
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not name or len(name) > 64:
        raise UserError("a user name has 1-64 characters")
    secret = secret or pyotp.random_base32()
    now = time.time_ns()
    try:
        with Session(engine) as s, s.begin():
            s.add(m.User(name=name, role=role, totp_secret=secret, disabled=0, created_ns=now))
            s.add(
                m.AuditEntry(
                    at_ns=now,
                    actor="cli",
                    action="user_add",
                    target=name,
                    outcome="ok",
                    detail=role,
                )
            )
    except IntegrityError:
        raise UserError(f"user {name!r} exists") from None
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="FBE")
