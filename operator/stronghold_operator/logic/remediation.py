"""Remediation: which opt-in action of a policy is due on its open incident. Pure.

The budget an action spent (attempts, the last one's time) lives in the policy's
``status.incident.remediation``, so the guard rails (``maxAttempts``, ``cooldown``) survive
an operator restart: the round reads them back from the status it continues from. So does
a pending verification (``verifyAt`` on the action's entry): the round that comes after an
action that ran judges whether it helped (:func:`verify`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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


def spend(
    incident: Mapping[str, Any],
    decision: Decision,
    now: datetime,
    verify_after: timedelta | None = None,
) -> list[dict[str, Any]]:
    """``incident``'s remediation budget with ``decision`` taken (bounded by the spec's
    actions: one entry per action name); with ``verify_after``, an action that runs (not a
    dry run) is to be verified that long after (``verifyAt``; its completion may push it)."""
    taken: dict[str, Any] = {
        "action": decision.action.name,
        "attempts": decision.attempt,
        "lastAt": cond.rfc3339(now),
    }
    if verify_after is not None and not decision.dry_run:
        taken["verifyAt"] = cond.rfc3339(now + verify_after)
    out: list[dict[str, Any]] = []
    found = False
    for entry in incident.get("remediation") or ():
        if not isinstance(entry, Mapping):
            continue
        e = dict(entry)
        if e.get("action") == decision.action.name:
            e = taken
            found = True
        out.append(e)
    if not found:
        out.append(taken)
    return out[-10:]


# --- verification after an action ----------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What this process knows of an action it started: running (``done`` False), or done
    at ``at`` with ``ok``. Nothing known (an operator restart): judged at its ``verifyAt``."""

    done: bool = False
    ok: bool = False
    at: datetime | None = None


def key(incident_id: str, action: str, attempt: int) -> str:
    """One attempt of one action on one incident (the in-memory outcomes' key)."""
    return f"{incident_id}/{action}/{attempt}"


@dataclass(frozen=True)
class Verdict:
    """The verifying round's word on one action: its checks all healthy, or not."""

    action: str
    attempt: int
    still_failing: tuple[str, ...]

    @property
    def verified(self) -> bool:
        return not self.still_failing

    @property
    def reason(self) -> str:
        return "RemediationVerified" if self.verified else "RemediationStillFailing"

    def message(self, incident_id: str) -> str:
        """The timeline entry and Event of the verdict."""
        head = f"remediation {self.action} (attempt {self.attempt}) for incident {incident_id}"
        if self.verified:
            return f"{head}: Verified: every check healthy in the round after it"
        bad = ", ".join(self.still_failing[:20])
        return f"{head}: StillFailing: {bad} still failing in the round after it"


@dataclass
class Verification:
    """What :func:`verify` decided: the remediation entries to keep (``verifyAt`` moved
    or cleared), the verdicts to record, and the outcomes it is done with."""

    remediation: list[dict[str, Any]]
    verdicts: list[Verdict] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)


def verify(
    incident: Mapping[str, Any],
    bad: Sequence[str],
    outcomes: Mapping[str, Outcome],
    verify_after: timedelta,
    now: datetime,
    *,
    closing: bool = False,
) -> Verification:
    """Judge the incident's pending verifications with this round's checks (``bad``: the
    names of those this round's probes found Warning or Critical).

    A verification is due at its ``verifyAt``, or ``verify_after`` after the action
    finished when that is later (a slow action). Not judged while its action still runs
    (its completion wakes the policy); dropped when the action failed (its failure is on
    the timeline already). ``closing``: the incident resolves this round; what is pending is
    judged now (the resolution itself says the fix held)."""
    out = Verification([])
    for entry in incident.get("remediation") or ():
        if not isinstance(entry, Mapping):
            continue
        e = dict(entry)
        out.remediation.append(e)
        due = cond.parse_rfc3339(e.get("verifyAt"))
        if due is None:
            e.pop("verifyAt", None)
            continue
        attempt = int(e.get("attempts") or 0)
        k = key(str(incident.get("id")), str(e.get("action")), attempt)
        known = outcomes.get(k)
        if known is not None and not known.done:
            continue  # still running
        if known is not None and not known.ok:
            del e["verifyAt"]
            out.settled.append(k)
            continue
        if known is not None and known.at is not None:
            due = max(due, known.at + verify_after)
        if now < due and not closing:
            e["verifyAt"] = cond.rfc3339(due)
            continue
        del e["verifyAt"]
        out.settled.append(k)
        out.verdicts.append(Verdict(str(e.get("action")), attempt, tuple(bad)))
    return out


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


def failing_now(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of the checks this round's own probes found Warning or Critical (their
    ``observedState``, before the failure and success thresholds): what a verification
    after a fix judges."""
    bad = ("Warning", "Critical")
    return [str(c.get("name")) for c in checks if c.get("observedState", c.get("state")) in bad]


def next_due(
    incident: Mapping[str, Any] | None, outcomes: Mapping[str, Outcome], now: datetime
) -> float | None:
    """Seconds until the incident's next verification is due (None: none pending, or only
    ones whose action still runs: its completion wakes the policy)."""
    waits: list[float] = []
    for e in (incident or {}).get("remediation") or ():
        due = cond.parse_rfc3339(e.get("verifyAt")) if isinstance(e, Mapping) else None
        if due is None:
            continue
        k = key(
            str(incident.get("id") if incident else ""),
            str(e.get("action")),
            int(e.get("attempts") or 0),
        )
        known = outcomes.get(k)
        if known is not None and not known.done:
            continue
        waits.append(max(0.0, (due - now).total_seconds()))
    return min(waits, default=None)
