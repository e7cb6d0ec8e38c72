"""``stronghold window start|skip``: a MaintenanceWindow now, or not the next time.

``start NAME [--for 1h]`` sets ``ops.stronghold.io/start-now`` to a new request value (and
``ops.stronghold.io/start-now-duration``): the operator begins an on-demand window now, runs
the spec's pre-checks, and opens it when they pass (``onPreCheckFailure`` decides otherwise),
for ``--for`` or the schedule's duration. ``skip NAME [--at START]`` sets
``ops.stronghold.io/skip`` to the start of the next scheduled window (``status.nextWindow``):
that one window does not take place and is recorded in history as ``Skipped``.

With ``--wait`` the command returns once the operator's status shows the outcome: for
``start``, the window open (or its result, when it ended before it could open); for ``skip``,
the window marked as skipped. Exit codes: 0 done, 1 ignored or failed (see the window's
Events), 2 forbidden, not found, no window to skip, timed out.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

from stronghold_operator.cli import add_command
from stronghold_operator.cli import verbs as v

PLURAL, KIND = "maintenancewindows", "MaintenanceWindow"


def register(sub: Any) -> None:
    p = add_command(sub, "window", "MaintenanceWindow: start one now, skip the next", __doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start a window now (after its pre-checks)")
    skip = actions.add_parser("skip", help="skip the next scheduled window")
    for a in (start, skip):
        a.add_argument("name", help="MaintenanceWindow name")
        a.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
        a.add_argument("--wait", action="store_true", help="wait until the operator shows it")
        a.set_defaults(func=_run)
    start.add_argument("--for", dest="duration", help="length (default: the schedule's)")
    start.add_argument("--timeout", type=float, default=900, help="seconds (default 900)")
    skip.add_argument("--at", help="the start of the window to skip (default: the next one)")
    skip.add_argument("--timeout", type=float, default=120, help="seconds (default 120)")


def _run(args: argparse.Namespace) -> int:
    return v.run(_request(args))


def request_value(now: datetime) -> str:
    """A new start-now value: readable, unique, usable in object names once slugged."""
    return f"{now.strftime('%Y%m%dt%H%M%Sz')}-{uuid.uuid4().hex[:6]}"


async def _request(args: argparse.Namespace) -> int:
    from stronghold_operator.models.base import parse_duration
    from stronghold_operator.models.maintenance import (
        MAX_DURATION,
        MIN_DURATION,
        SKIP_ANNOTATION,
        START_NOW_ANNOTATION,
        START_NOW_DURATION_ANNOTATION,
    )
    from stronghold_operator.platforms.kube import ours

    if args.action == "start" and args.duration is not None:
        try:
            length = parse_duration(args.duration)
        except ValueError as exc:
            raise v.VerbError(f"--for: {exc}") from None
        if not MIN_DURATION <= length <= MAX_DURATION:
            raise v.VerbError("--for: a window lasts 1m to 744h")
    kube = v.connect()
    ns, name, kind = v.namespace_of(kube, args.namespace), args.name, ours(PLURAL)

    async def read() -> dict[str, Any]:
        got = await v.call(kube.get(kind, name, ns), "get", PLURAL, KIND, ns, name)
        return got.get("status") or {}

    try:
        status = await read()
        if args.action == "start":
            value = request_value(datetime.now(UTC))
            annotations = {
                START_NOW_ANNOTATION: value,
                START_NOW_DURATION_ANNOTATION: args.duration,
            }
            outcome = _started
            told = f"requested a window now on {ns}/{name}: {START_NOW_ANNOTATION}={value}"
        else:
            value = _skip_target(args.at, status)
            annotations = {SKIP_ANNOTATION: value}
            outcome = _skipped
            told = f"skipping the window of {ns}/{name} starting {value}: {SKIP_ANNOTATION}={value}"
        patch = {"metadata": {"annotations": annotations}}
        await v.call(kube.patch(kind, name, ns, patch), "patch", PLURAL, KIND, ns, name)
        print(told)
        if not args.wait:
            return v.EXIT_OK
        return await v.wait_for(read, lambda st: outcome(st, value), args.timeout)
    finally:
        await kube.aclose()


def _skip_target(at: str | None, status: dict[str, Any]) -> str:
    """The start to skip: ``--at`` as the operator writes times, else the next window's."""
    if at is not None:
        when = v.parse_time(at)
        if when is None:
            raise v.VerbError(f"--at: {at!r} is not an RFC 3339 time with an offset")
        return v.timestamp(when)
    start = (status.get("nextWindow") or {}).get("start")
    if not start:
        raise v.VerbError("no upcoming window to skip (status.nextWindow is empty)")
    return str(start)


def _started(status: dict[str, Any], value: str) -> tuple[int, str] | None:
    """The on-demand window ``value`` open, finished, or the request ignored."""
    if status.get("handledStartNow") != value:
        return None
    current = status.get("currentWindow") or {}
    if current.get("trigger") == value:
        active = v.condition(status, "Active")
        if active.get("status") == "True":
            return v.EXIT_OK, f"open: {active.get('message')}"
        return None  # pre-checks running
    for entry in status.get("history") or []:
        if entry.get("trigger") == value:
            ok = entry.get("result") == "Succeeded"
            text = f"window {entry.get('id')}: {entry.get('result')} {entry.get('message') or ''}"
            return (v.EXIT_OK if ok else v.EXIT_FAILED), text.strip()
    return v.EXIT_FAILED, "the operator ignored the request (Event StartNowIgnored says why)"


def _skipped(status: dict[str, Any], value: str) -> tuple[int, str] | None:
    """The window starting at ``value`` marked as skipped, or the request ignored."""
    if status.get("handledSkip") != value:
        return None
    at = v.parse_time(value)
    skipping = status.get("skipping") or {}
    if at is not None and v.parse_time(skipping.get("start")) == at:
        nxt = (status.get("nextWindow") or {}).get("startLocal", "none")
        return v.EXIT_OK, f"window {skipping.get('id')} will be skipped; next window: {nxt}"
    for entry in status.get("history") or []:
        skipped = entry.get("result") == "Skipped"
        if skipped and at is not None and v.parse_time(entry.get("start")) == at:
            return v.EXIT_OK, f"window {entry.get('id')}: Skipped"
    return v.EXIT_FAILED, "the operator ignored the request (Event SkipIgnored says why)"
