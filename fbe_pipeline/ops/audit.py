"""The append-only audit log of the operational store (table ``audit``; triggers refuse
UPDATE and DELETE), written by the gateway, governance and the alert outbox."""

from __future__ import annotations

from sqlalchemy.orm import Session

from fbe_pipeline.ops import models as m


def record_audit(
    s: Session, at_ns: int, actor: str, action: str, target: str, outcome: str, detail: str = ""
) -> None:
    """Add one audit entry to ``s``'s transaction.

    Parameters
    ----------
    at_ns : int
        When, ns UTC.
    actor, action, target, outcome : str
        Who (a user or ``system``), what (<= 32 characters), on what (<= 160) and the result
        (``ok``, ``refused``, ...; <= 16 characters).
    detail : str
        Free text; never a secret.
    """
    s.add(
        m.AuditEntry(
            at_ns=at_ns, actor=actor, action=action, target=target, outcome=outcome, detail=detail
        )
    )
