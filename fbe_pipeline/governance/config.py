"""Versioned configuration (issue 10): every change of the scoring and execution settings is a
new version in the operational store, with who asked, when, why, the diff from the version it
replaces, and its approval.

One version holds every setting as one flat JSON object; the keys belong to *sections*, each
with the function that validates it (``scoring``: :class:`~fbe_pipeline.research.config.
ScoringConfig`; ``execution``: the paper gateway's limits, wired by the CLI so that this module
imports nothing from execution). Rules:

- A change requested while an instrument in scope is in session (its exchange calendar) takes
  effect at the next bar (the next minute boundary). A change requested outside market hours
  waits in ``pending_approval`` until a second, different user with the ``approver`` or
  ``admin`` role approves it; it then takes effect at the next bar after the approval.
- Values are validated before anything is stored: types of the section's fields, the
  section's own checks, and governance's: weights >= 0 summing to 100, ``trigger_score`` within
  0-100, thresholds finite and >= 0.
- The first version is seeded from the environment (``FBE_SCORING_CONFIG`` and
  ``FBE_EXECUTION_CONFIG``) the first time anyone reads the active version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fbe_pipeline.ops import models as m
from fbe_pipeline.ops.audit import record_audit
from fbe_pipeline.research.config import ScoringConfig

NS_PER_MINUTE = 60_000_000_000
WEIGHTS = ("weight_wick", "weight_vol", "weight_poke", "weight_book_churn", "weight_delta")
THRESHOLDS = ("wick_ratio_threshold", "vol_ratio_threshold", "poke_max_atr", "churn_threshold")
SYSTEM = "system"


class ConfigError(ValueError):
    """A refused configuration change: invalid values, unknown keys or versions, or an
    approval by someone who may not give it."""


@dataclass(frozen=True)
class Section:
    """A group of settings and its validator.

    Attributes
    ----------
    name : str
    defaults : dataclass instance
        Its fields are the section's keys, their types the expected types.
    build : callable
        ``dict -> object``; raises ``ValueError`` on an invalid combination.
    """

    name: str
    defaults: Any
    build: Callable[[dict[str, Any]], Any]

    @property
    def keys(self) -> dict[str, type]:
        """Key -> its declared type (``float``, ``int``, ``bool`` or ``str``)."""
        hints = typing.get_type_hints(type(self.defaults))
        return {f.name: hints[f.name] for f in dataclasses.fields(self.defaults)}


SCORING = Section("scoring", ScoringConfig(), ScoringConfig.from_dict)


def parse_value(key: str, text: str, kind: type) -> Any:
    """``text`` (from ``KEY=VALUE``) as ``kind``: bool accepts true/false/1/0/yes/no.

    Raises
    ------
    ConfigError
        When it is not a value of that type.
    """
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        return str(text)
    except ValueError:
        raise ConfigError(f"{key} must be a {kind.__name__}, got {text!r}") from None


def _check_scoring(values: Mapping[str, Any]) -> list[str]:
    problems = []
    weights = [float(values[k]) for k in WEIGHTS if k in values]
    if any(w < 0 for w in weights):
        problems.append("weights must be >= 0")
    if len(weights) == len(WEIGHTS) and not math.isclose(sum(weights), 100.0, abs_tol=1e-9):
        problems.append(f"weights must sum to 100, they sum to {sum(weights):g}")
    trigger = values.get("trigger_score")
    if trigger is not None and not 0 <= float(trigger) <= 100:
        problems.append(f"trigger_score must lie within 0-100, got {trigger}")
    for key in THRESHOLDS:
        if key in values and not float(values[key]) >= 0:
            problems.append(f"{key} must be >= 0, got {values[key]}")
    return problems


def digest(values: Mapping[str, Any]) -> str:
    """SHA-256 (hex, 64) of the canonical JSON of ``values``."""
    blob = json.dumps(dict(values), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``key -> [old, new]`` for every key whose value differs (None where absent)."""
    return {
        k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    }


class ConfigStore:
    """The versions in the operational store (see the module docstring).

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The operational store, migrated.
    sections : list of Section
        The settings this desk versions (the CLI adds the execution limits).
    in_market_hours : callable
        ``now_ns -> bool``: whether an instrument in scope is in session (decides whether a
        change needs a second approver).
    seed : mapping, optional
        Values of the first version (from the environment), over the sections' defaults.
    clock : callable
        Wall clock, ns UTC.
    """

    def __init__(
        self,
        engine: Engine,
        sections: list[Section],
        in_market_hours: Callable[[int], bool],
        seed: Mapping[str, Any] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = engine
        self.sections = sections
        self.in_market_hours = in_market_hours
        self.seed = dict(seed or {})
        self.clock = clock
        self.keys: dict[str, tuple[Section, type]] = {}
        for section in sections:
            for key, kind in section.keys.items():
                if key in self.keys:
                    raise ValueError(f"{key} is in two sections")
                self.keys[key] = (section, kind)

    # -- validation --------------------------------------------------------------------------

    def defaults(self) -> dict[str, Any]:
        """Every key with its section's default value."""
        return {
            f.name: getattr(s.defaults, f.name)
            for s in self.sections
            for f in dataclasses.fields(s.defaults)
        }

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The complete, validated settings (defaults filled in).

        Raises
        ------
        ConfigError
            Listing every problem: unknown keys, wrong types, section and governance checks.
        """
        unknown = sorted(set(values) - set(self.keys))
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        full = {**self.defaults(), **values}
        problems = []
        for key, value in full.items():
            kind = self.keys[key][1]
            ok = isinstance(value, kind) or (kind is float and type(value) is int)
            if not ok or (kind is not bool and isinstance(value, bool)):
                problems.append(f"{key} must be a {kind.__name__}, got {value!r}")
        if not problems:
            full = {k: float(v) if self.keys[k][1] is float else v for k, v in full.items()}
            problems += _check_scoring(full)
            for section in self.sections:
                try:
                    section.build({k: full[k] for k in section.keys})
                except (ValueError, TypeError) as exc:
                    problems.append(f"{section.name}: {exc}")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))
        return full

    # -- reading -----------------------------------------------------------------------------

    def _audit(
        self, s: Session, actor: str, action: str, target: str, outcome: str, detail: str = ""
    ) -> None:
        record_audit(s, self.clock(), actor, action, target, outcome, detail)

    def _seeded(self, s: Session) -> None:
        if s.scalar(select(func.count()).select_from(m.ConfigVersion)):
            return
        values = self.validate(self.seed)
        now = self.clock()
        s.add(
            m.ConfigVersion(
                version=1,
                config_json=json.dumps(values, sort_keys=True),
                diff_json=json.dumps(diff(self.defaults(), values)),
                reason="seeded from the environment",
                requested_by=SYSTEM,
                requested_ns=now,
                out_of_hours=False,
                state=m.CONFIG_ACTIVE,
                approved_by=SYSTEM,
                approved_ns=now,
                effective_ns=now,
                digest=digest(values),
            )
        )
        self._audit(s, SYSTEM, "config_seed", "v1", "ok", json.dumps(values, sort_keys=True))

    def active(self, now_ns: int | None = None) -> tuple[int, dict[str, Any]]:
        """``(version, settings)`` in effect at ``now_ns`` (default now), seeding version 1
        when there is none."""
        now = self.clock() if now_ns is None else now_ns
        try:
            with Session(self.engine) as s, s.begin():
                self._seeded(s)
        except IntegrityError:  # another process seeded it first
            pass
        with Session(self.engine) as s:
            row = s.scalars(
                select(m.ConfigVersion)
                .where(m.ConfigVersion.state == m.CONFIG_ACTIVE)
                .where(m.ConfigVersion.effective_ns <= now)
                # The newest version in effect rules, whatever the order the effects began in.
                .order_by(m.ConfigVersion.version.desc())
            ).first()
            if row is None:  # only versions effective at the next bar: the seed rules now
                row = s.get(m.ConfigVersion, 1)
            assert row is not None
            return row.version, json.loads(row.config_json)

    def get(self, version: int) -> m.ConfigVersion:
        """One version (detached). Raises :class:`ConfigError` when it does not exist."""
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.get(m.ConfigVersion, version)
            if row is None:
                raise ConfigError(f"no config version {version}")
            s.expunge(row)
            return row

    def history(self) -> pd.DataFrame:
        """Every version, oldest first: version, state, requested_by, requested_ns, reason,
        out_of_hours, approved_by, approved_ns, effective_ns, diff (JSON)."""
        self.active()
        with Session(self.engine) as s:
            rows = s.scalars(select(m.ConfigVersion).order_by(m.ConfigVersion.version)).all()
            return pd.DataFrame(
                [
                    {
                        "version": r.version,
                        "state": r.state,
                        "requested_by": r.requested_by,
                        "requested_ns": r.requested_ns,
                        "reason": r.reason,
                        "out_of_hours": bool(r.out_of_hours),
                        "approved_by": r.approved_by,
                        "approved_ns": r.approved_ns,
                        "effective_ns": r.effective_ns,
                        "diff": r.diff_json,
                    }
                    for r in rows
                ]
            )

    def compare(self, old: int, new: int) -> dict[str, list[Any]]:
        """:func:`diff` of two versions' settings."""
        return diff(json.loads(self.get(old).config_json), json.loads(self.get(new).config_json))

    # -- changing ----------------------------------------------------------------------------

    def request(
        self, changes: Mapping[str, str], reason: str, user: str, hold: bool = False
    ) -> m.ConfigVersion:
        """A new version: the active settings with ``changes`` (``KEY -> text value``).

        In market hours it is active from the next bar; out of hours, or with ``hold`` (a
        proposal, e.g. from the walk-forward), it waits for a second approver. Audited,
        refusals included.

        Raises
        ------
        ConfigError
            On an empty reason or change, an unknown key, a bad value, or a change that
            changes nothing.
        """
        try:
            if not reason.strip():
                raise ConfigError("a config change needs a reason (--reason)")
            if not changes:
                raise ConfigError("no KEY=VALUE given")
            base_version, base = self.active()
            parsed = {}
            for key, text in changes.items():
                if key not in self.keys:
                    raise ConfigError(f"unknown config key {key!r}")
                parsed[key] = parse_value(key, text, self.keys[key][1])
            values = self.validate({**base, **parsed})
            change = diff(base, values)
            if not change:
                raise ConfigError(f"the change leaves version {base_version} as it is")
        except ConfigError as exc:
            with Session(self.engine) as s, s.begin():
                self._audit(s, user, "config_request", "config", "refused", str(exc))
            raise
        now = self.clock()
        out_of_hours = hold or not self.in_market_hours(now)
        for _ in range(5):  # two requests at once: the second takes the next number
            try:
                with Session(self.engine, expire_on_commit=False) as s, s.begin():
                    version = int(s.scalar(select(func.max(m.ConfigVersion.version))) or 0) + 1
                    row = m.ConfigVersion(
                        version=version,
                        config_json=json.dumps(values, sort_keys=True),
                        diff_json=json.dumps(change),
                        reason=reason,
                        requested_by=user,
                        requested_ns=now,
                        out_of_hours=out_of_hours,
                        state=m.CONFIG_PENDING if out_of_hours else m.CONFIG_ACTIVE,
                        approved_by=None if out_of_hours else user,
                        approved_ns=None if out_of_hours else now,
                        effective_ns=None if out_of_hours else next_bar(now),
                        digest=digest(values),
                    )
                    s.add(row)
                    self._audit(
                        s,
                        user,
                        "config_request",
                        f"v{version}",
                        "pending" if out_of_hours else "ok",
                        json.dumps(change),
                    )
                return row
            except IntegrityError:
                continue
        raise ConfigError("could not number the new version; try again")

    def approve(self, version: int, user: str, role: str) -> m.ConfigVersion:
        """Approve a pending out-of-hours version; it takes effect at the next bar.

        Raises
        ------
        ConfigError
            When the version is not pending, the user requested it, or the role is neither
            ``approver`` nor ``admin``. Audited either way.
        """
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            row = s.get(m.ConfigVersion, version)
            problem = None
            if row is None:
                problem = f"no config version {version}"
            elif row.state != m.CONFIG_PENDING:
                problem = f"version {version} is {row.state}, not waiting for approval"
            elif row.requested_by == user:
                problem = (
                    f"{user} requested version {version}: a second, different approver is needed"
                )
            elif role not in ("approver", "admin"):
                problem = f"approving a config needs the approver or admin role; {user} is {role}"
            if problem is not None:
                self._audit(s, user, "config_approve", f"v{version}", "refused", problem)
            else:
                assert row is not None
                now = self.clock()
                row.state, row.approved_by, row.approved_ns = m.CONFIG_ACTIVE, user, now
                row.effective_ns = next_bar(now)
                self._audit(s, user, "config_approve", f"v{version}", "ok", row.diff_json)
        if problem is not None:
            raise ConfigError(problem)
        assert row is not None
        return row


def next_bar(now_ns: int) -> int:
    """The next minute boundary strictly after ``now_ns`` (ns UTC): a change takes effect for
    bars that open from then on."""
    return (now_ns // NS_PER_MINUTE + 1) * NS_PER_MINUTE
