"""``stronghold scaling pause|resume``: a time-limited pause of a ScalingPolicy.

``pause NAME --for 1h`` sets the annotation ``ops.stronghold.io/paused-until`` to the end of
the pause (RFC 3339); the operator holds the policy until then (reason ``Paused``, and
``status.pausedUntil``) and scales again by itself afterwards. ``resume NAME`` removes the
annotation. An annotation and not ``spec.pausedUntil``: GitOps tools (Argo CD, Flux) revert a
spec that differs from Git, and a pause must not be undone by the next sync
(docs/scalingpolicy.md). ``spec.paused``/``spec.pausedUntil`` still pause as before: change
those in Git.

With ``--wait`` the command returns once the operator's status shows the pause (or its end).
Exit codes: 0 done, 1 still paused by spec after resume, 2 forbidden, not found, timed out.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from stronghold_operator.cli import add_command
from stronghold_operator.cli import verbs as v

PLURAL, KIND = "scalingpolicies", "ScalingPolicy"


def register(sub: Any) -> None:
    p = add_command(sub, "scaling", "ScalingPolicy: pause for a while, resume", __doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    pause = actions.add_parser("pause", help="hold the policy's replicas until a time")
    resume = actions.add_parser("resume", help="lift a pause set with 'pause'")
    for a in (pause, resume):
        a.add_argument("name", help="ScalingPolicy name")
        a.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
        a.add_argument("--wait", action="store_true", help="wait until the operator shows it")
        a.add_argument("--timeout", type=float, default=120, help="seconds (default 120)")
        a.set_defaults(func=_run)
    how = pause.add_mutually_exclusive_group(required=True)
    how.add_argument("--for", dest="duration", help="how long: 30m, 1h, 2h30m")
    how.add_argument("--until", help="until this RFC 3339 time (2026-03-01T14:00:00Z)")


def _run(args: argparse.Namespace) -> int:
    return v.run(_request(args))


def pause_end(args: argparse.Namespace, now: datetime) -> datetime:
    """The end of the pause asked for (``VerbError`` for a bad value)."""
    from stronghold_operator.models.base import parse_duration

    if args.duration is not None:
        try:
            length = parse_duration(args.duration)
        except ValueError as exc:
            raise v.VerbError(f"--for: {exc}") from None
        if length.total_seconds() < 1:
            raise v.VerbError("--for: must be at least 1s")
        return (now + length).replace(microsecond=0)
    until = v.parse_time(args.until)
    if until is None:
        raise v.VerbError(f"--until: {args.until!r} is not an RFC 3339 time with an offset")
    if until <= now:
        raise v.VerbError(f"--until: {args.until} is in the past")
    return until


async def _request(args: argparse.Namespace) -> int:
    from stronghold_operator.models.scaling import PAUSED_UNTIL_ANNOTATION
    from stronghold_operator.platforms.kube import ours

    until = pause_end(args, datetime.now(UTC)) if args.action == "pause" else None
    kube = v.connect()
    ns, name, kind = v.namespace_of(kube, args.namespace), args.name, ours(PLURAL)
    try:
        obj = await v.call(kube.get(kind, name, ns), "get", PLURAL, KIND, ns, name)
        value = v.timestamp(until) if until is not None else None
        patch = {"metadata": {"annotations": {PAUSED_UNTIL_ANNOTATION: value}}}
        await v.call(kube.patch(kind, name, ns, patch), "patch", PLURAL, KIND, ns, name)
        spec_pause = _spec_pause(obj.get("spec") or {})
        if until is not None:
            print(f"{KIND} {ns}/{name} paused until {value} ({PAUSED_UNTIL_ANNOTATION})")
        else:
            print(f"{KIND} {ns}/{name}: pause annotation removed")
            if spec_pause:
                print(f"still paused by {spec_pause}: change it where the policy is kept (Git)")
                return v.EXIT_FAILED
        if not args.wait:
            return v.EXIT_OK

        async def read() -> dict[str, Any]:
            got = await v.call(kube.get(kind, name, ns), "get", PLURAL, KIND, ns, name)
            return got.get("status") or {}

        return await v.wait_for(read, lambda st: _outcome(st, until), args.timeout)
    finally:
        await kube.aclose()


def _spec_pause(spec: dict[str, Any]) -> str | None:
    """What in the spec pauses the policy now (which the verbs do not change)."""
    if spec.get("paused"):
        return "spec.paused"
    until = v.parse_time(spec.get("pausedUntil"))
    if until is not None and until > datetime.now(UTC):
        return f"spec.pausedUntil {spec['pausedUntil']}"
    return None


def _outcome(status: dict[str, Any], until: datetime | None) -> tuple[int, str] | None:
    """Whether the operator's status shows the pause (``until``) or its end (None)."""
    shown = v.parse_time(status.get("pausedUntil"))
    decision = status.get("lastDecision") or {}
    line = f"{decision.get('reason')}: {decision.get('message')}"
    if until is not None:
        return (v.EXIT_OK, line) if shown is not None and shown >= until else None
    if shown is None and decision.get("reason") not in (None, "Paused"):
        return v.EXIT_OK, line
    return None
