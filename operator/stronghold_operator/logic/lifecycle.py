"""What each kind's conditions mean to GitOps tools: ``Reconciling`` and ``Stalled``.

kstatus (Flux, kubectl wait, cli-utils) and the Argo CD health scripts in
``manifests/gitops/`` read an object as: deletionTimestamp -> Terminating;
``status.observedGeneration`` != ``metadata.generation`` -> InProgress; ``Reconciling=True``
-> InProgress; ``Stalled=True`` -> Failed; ``Ready=True`` -> Current, else InProgress.
The two "abnormal-true" conditions are derived here, in one place, from the conditions a
pass wrote (and a few status fields); the status writer adds them to every write, so no
pass can forget them and they never contradict ``Ready``. Never both True: a stalled object
is not reconciling. docs/gitops.md has the table per kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stronghold_operator import conditions as cond

RECONCILING = "Reconciling"
STALLED = "Stalled"
DERIVED = frozenset({RECONCILING, STALLED})

# Reasons of the derived conditions (the True reasons of Stalled are Ready's own reason).
REASON_IDLE = "Idle"  # Reconciling=False: no work in flight
REASON_AS_EXPECTED = "AsExpected"  # Stalled=False: the spec can progress
REASON_NEW_GENERATION = "NewGeneration"  # a spec change seen, not evaluated yet
REASON_STALLED = "Stalled"  # Reconciling=False because Stalled=True
REASON_SCALING = "ScaleStepInProgress"
REASON_JOBS_RUNNING = "JobsRunning"
REASON_PRE_CHECKS = "PreChecksRunning"
REASON_WINDOW_OPEN = "WindowOpen"
REASON_POST_CHECKS = "PostChecksRunning"


@dataclass(frozen=True)
class Seen:
    """One condition as the derivation reads it."""

    status: str
    reason: str
    message: str


View = Mapping[str, Seen]  # condition type -> what it says now
Busy = Callable[[View, Mapping[str, Any]], tuple[str, str] | None]


@dataclass(frozen=True)
class Rules:
    """A kind's reading: which ``Ready=False`` reasons mean the spec cannot progress
    (Stalled), and which work in flight means Reconciling (besides "not evaluated yet")."""

    stalled: frozenset[str]
    busy: Busy | None = None
    reads: frozenset[str] = frozenset({cond.READY})  # the condition types ``busy`` reads


def _never(view: View, fields: Mapping[str, Any]) -> tuple[str, str] | None:
    return None


def _scaling_busy(view: View, fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """The last pass changed the replica count (not a dry run): the new replicas are
    starting and the next pass judges the step. One interval long."""
    last = fields.get("lastDecision") or {}
    active = view.get("ScalingActive")
    if last.get("action") in ("ScaleUp", "ScaleDown") and active and active.status == "True":
        return REASON_SCALING, f"scaled {last.get('from')} -> {last.get('to')}"
    return None


def _backup_busy(view: View, fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """A backup, verify or restore-test Job of this schedule is running."""
    active = fields.get("active") or []
    names = [str(j.get("name")) for j in active if isinstance(j, Mapping)]
    if names:
        return REASON_JOBS_RUNNING, f"Job(s) running: {', '.join(names)}"[:1000]
    return None


def _window_busy(view: View, fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """Pre-checks running, the window open (its objects frozen), post-checks running."""
    pre, active, post = (
        view.get("PreChecksPassed"),
        view.get("Active"),
        view.get("PostChecksPassed"),
    )
    if pre is not None and pre.status == "Unknown" and pre.reason == "Running":
        return REASON_PRE_CHECKS, pre.message
    if active is not None and active.status == "True":
        return REASON_WINDOW_OPEN, active.message
    if post is not None and post.status == "Unknown" and post.reason == "Running":
        return REASON_POST_CHECKS, post.message
    return None


# Keyed by the object's ``kind``. InvalidSpec is Stalled for every kind.
RULES: dict[str, Rules] = {
    "HealthPolicy": Rules(
        frozenset({cond.REASON_INVALID_SPEC, cond.REASON_SECRET_MISSING}), _never
    ),
    "ScalingPolicy": Rules(
        frozenset(
            {
                cond.REASON_INVALID_SPEC,
                "TargetNotFound",
                "MissingRequests",
                "MissingLimits",
                "ConflictingAutoscaler",
            }
        ),
        _scaling_busy,
        frozenset({cond.READY, "ScalingActive"}),
    ),
    "BackupSchedule": Rules(
        frozenset({cond.REASON_INVALID_SPEC, cond.REASON_SECRET_MISSING, "StorageMissing"}),
        _backup_busy,
    ),
    "MaintenanceWindow": Rules(
        frozenset({cond.REASON_INVALID_SPEC}),
        _window_busy,
        frozenset({cond.READY, "PreChecksPassed", "Active", "PostChecksPassed"}),
    ),
}


# The usual answers, made once (conditions are values): derive runs every round.
_IDLE = cond.Condition(RECONCILING, "False", REASON_IDLE, "no work in flight")
_NOT_STALLED = cond.Condition(STALLED, "False", REASON_AS_EXPECTED, "the spec can progress")
_NOT_RECONCILING_STALLED = cond.Condition(
    RECONCILING, "False", REASON_STALLED, "stalled: see Stalled"
)


def derive(kind: str, view: View, fields: Mapping[str, Any]) -> list[cond.Condition]:
    """``Reconciling`` and ``Stalled`` for an object whose conditions read ``view``.

    Stalled=True when Ready is False for a reason of the kind's ``stalled`` set (its
    message, which names the field or the missing object); else Reconciling=True while
    Ready is Unknown (not evaluated yet) or the kind's work is in flight. Empty for a kind
    without rules.
    """
    rules = RULES.get(kind)
    if rules is None:
        return []
    ready = view.get(cond.READY)
    if ready is not None and ready.status == "False" and ready.reason in rules.stalled:
        return [
            _NOT_RECONCILING_STALLED,
            cond.Condition(STALLED, "True", ready.reason, ready.message),
        ]
    busy: tuple[str, str] | None = None
    if ready is None or ready.status == "Unknown":
        reason = ready.reason if ready is not None and ready.reason else cond.REASON_INITIALIZING
        busy = reason, "not evaluated yet"
    elif rules.busy is not None:
        busy = rules.busy(view, fields)
    if busy is None:
        return [_IDLE, _NOT_STALLED]
    return [cond.Condition(RECONCILING, "True", busy[0], busy[1] or busy[0]), _NOT_STALLED]


def acknowledge(generation: Any) -> list[cond.Condition]:
    """What a pass writes first when it sees a spec generation it has not evaluated: with
    ``observedGeneration`` moved to it, GitOps tools read InProgress, not the old verdict."""
    message = f"generation {generation} seen, not evaluated yet"
    return [
        cond.Condition(RECONCILING, "True", REASON_NEW_GENERATION, message),
        cond.Condition(STALLED, "Unknown", REASON_NEW_GENERATION, message),
    ]


def complete(
    kind: str | None,
    before: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[cond.Condition],
    fields: Mapping[str, Any],
) -> list[cond.Condition]:
    """``updates`` plus the derived conditions they do not set themselves, read from the
    conditions as they will be (``before`` with ``updates`` applied) and ``fields`` (the
    status fields as they will be). An explicit Reconciling/Stalled (:func:`acknowledge`)
    wins for that write."""
    out = list(updates)
    rules = RULES.get(str(kind))
    if rules is None:
        return out
    given = {u.type for u in out}
    if given >= DERIVED:
        return out
    # Only the types the kind reads (HealthPolicy: Ready): this runs for every round of
    # every policy.
    reads = rules.reads
    view: dict[str, Seen] = {}
    for c in before or ():
        t = c.get("type")
        if t in reads:
            view[str(t)] = Seen(str(c.get("status")), c.get("reason") or "", c.get("message") or "")
    for u in out:
        if u.type in reads:
            view[u.type] = Seen(u.status, u.reason, u.message)
    out += [d for d in derive(str(kind), view, fields) if d.type not in given]
    return out


def unobserved(body: Mapping[str, Any]) -> bool:
    """The object's spec generation is not yet in ``status.observedGeneration`` (or it has
    no status yet): what a pass acknowledges first."""
    generation = (body.get("metadata") or {}).get("generation")
    observed = (body.get("status") or {}).get("observedGeneration")
    return generation is not None and observed != generation
