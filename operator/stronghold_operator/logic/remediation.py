"""Remediation: which opt-in action of a policy is due on its open incident. Pure.

The budget an action spent (attempts, the last one's time) lives in the policy's
``status.incident.remediation``, so the guard rails (``maxAttempts``, ``cooldown``) survive
an operator restart: the round reads them back from the status it continues from.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stronghold_operator import conditions as cond
from stronghold_operator.models.health import Remediation, RemediationAction


@dataclass(frozen=True)
class Decision:
    """One action to take (or, dry, to describe) now."""

    action: RemediationAction
    dry_run: bool
    attempt: int  # 1-based, of action.max_attempts

    @property
    def what(self) -> str:
        """What the action does, in words (timeline, Events)."""
        a = self.action
        if a.rollout_restart is not None:
            r = a.rollout_restart
            return f"rollout restart of {r.kind} {r.name}"
        if a.terminate_queries is not None:
            t = a.terminate_queries
            secs = int(t.older_than.total_seconds())
            return f"terminate queries of check {t.check} active longer than {secs}s"
        if a.compose_restart is not None:
            c = a.compose_restart
            return f"restart of Compose service {c.project}/{c.service}"
        assert a.flush_memcached is not None
        return f"flush of the Memcached of check {a.flush_memcached.check}"


def spent_of(incident: Mapping[str, Any], name: str) -> tuple[int, datetime | None]:
    """(attempts, time of the last one) of action ``name`` on ``incident``."""
    for entry in incident.get("remediation") or ():
        if isinstance(entry, Mapping) and entry.get("action") == name:
            return int(entry.get("attempts") or 0), cond.parse_rfc3339(entry.get("lastAt"))
    return 0, None


def bound(action: RemediationAction, incident: Mapping[str, Any], failing: Collection[str]) -> bool:
    """Whether the incident's findings are the ones ``action`` is bound to."""
    when = action.when
    if when.checks and any(c in failing for c in when.checks):
        return True
    return bool(when.root_causes) and incident.get("rootCause") in (when.root_causes or ())


def due(
    spec: Remediation | None,
    incident: Mapping[str, Any] | None,
    failing: Collection[str],
    maintenance: str | None,
    now: datetime,
) -> Decision | None:
    """The first action (in spec order) due on the open ``incident``; one per round, as the
    guide's one-at-a-time loop. None while its checks are recovering (flap damping holds
    it open): the failure that bound the action has gone."""
    if spec is None or not incident or incident.get("recoveringSince"):
        return None
    started = cond.parse_rfc3339(incident.get("startedAt")) or now
    age = now - started
    for action in spec.actions:
        if not bound(action, incident, failing):
            continue
        if maintenance is not None and not action.during_maintenance:
            continue
        if age < action.after:
            continue
        attempts, last = spent_of(incident, action.name)
        if attempts >= action.max_attempts:
            continue
        if last is not None and now - last < action.cooldown:
            continue
        dry = spec.dry_run if action.dry_run is None else action.dry_run
        return Decision(action, dry, attempts + 1)
    return None


def spend(incident: Mapping[str, Any], decision: Decision, now: datetime) -> list[dict[str, Any]]:
    """``incident``'s remediation budget with ``decision`` taken (bounded by the spec's
    actions: one entry per action name)."""
    out: list[dict[str, Any]] = []
    found = False
    for entry in incident.get("remediation") or ():
        if not isinstance(entry, Mapping):
            continue
        e = dict(entry)
        if e.get("action") == decision.action.name:
            e = {"action": decision.action.name, "attempts": decision.attempt}
            e["lastAt"] = cond.rfc3339(now)
            found = True
        out.append(e)
    if not found:
        out.append(
            {
                "action": decision.action.name,
                "attempts": decision.attempt,
                "lastAt": cond.rfc3339(now),
            }
        )
    return out[-10:]


def message(decision: Decision, incident_id: str, result: str) -> str:
    """The timeline entry and Event of one action (or dry run) and its result."""
    a = decision.action
    head = f"remediation {a.name} ({decision.attempt}/{a.max_attempts})"
    if decision.dry_run:
        return f"{head}: dry run, would do a {decision.what} for incident {incident_id}"
    return f"{head}: {decision.what} for incident {incident_id}: {result}"


def failing(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of the checks a round judged Warning or Critical."""
    return [str(c.get("name")) for c in checks if c.get("state") in ("Warning", "Critical")]
