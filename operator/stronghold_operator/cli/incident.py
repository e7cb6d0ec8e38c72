"""``stronghold incident list|show|ack|resolve|postmortem``: Incident objects from the command line.

``ack`` and ``resolve`` set the annotations the operator honours
(``ops.stronghold.io/ack=<who>``, ``ops.stronghold.io/resolve=<who>``; ``kubectl annotate``
does the same): an acknowledged incident stops escalating; one resolved by hand is closed
(if its checks still fail, the policy re-opens it, or opens a new one). ``postmortem`` prints the
operations guide's post-mortem template in Markdown, filled from the Incident.
Exit codes: 0 done, 2 not found, access denied or the API server unreachable (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from typing import Any

from stronghold_operator.cli import add_command

EXIT_OK, EXIT_ERROR = 0, 2


def register(sub: Any) -> None:
    p = add_command(
        sub, "incident", "Incidents: list, show, acknowledge, resolve, post-mortem", __doc__
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("list", "list Incidents (newest first)"),
        ("show", "show one Incident: state, timeline, evidence"),
        ("ack", "acknowledge (annotation ops.stronghold.io/ack): escalation stops"),
        ("resolve", "resolve by hand (annotation ops.stronghold.io/resolve)"),
        ("postmortem", "print the post-mortem template filled from the Incident (Markdown)"),
    ):
        a = actions.add_parser(action, help=text)
        if action != "list":
            a.add_argument("name", help="Incident name")
        a.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
        if action == "list":
            a.add_argument("-A", "--all-namespaces", action="store_true")
        if action in ("list", "show"):
            a.add_argument("--json", action="store_true", help="print JSON")
        if action in ("ack", "resolve"):
            a.add_argument("--by", default=None, help="who (default: $USER)")
        a.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from stronghold_operator.models.errors import ApiError, ApiUnreachable
    from stronghold_operator.platforms.kube import Kube

    try:
        kube = Kube.connect()
    except Exception as exc:  # no kubeconfig, a broken one: one line, no traceback
        print(f"stronghold incident: cannot reach Kubernetes: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        args.namespace = args.namespace or kube.namespace  # as kubectl: the context's
        return await _act(kube, args)
    except ApiError as exc:
        what = f"Incident {args.namespace}/{getattr(args, 'name', '')}".rstrip("/")
        why = {404: "not found", 403: "access denied"}.get(exc.status, f"{exc.status} {exc.reason}")
        print(f"stronghold incident: {what}: {why}", file=sys.stderr)
        return EXIT_ERROR
    except (ApiUnreachable, ConnectionError, TimeoutError) as exc:
        print(f"stronghold incident: the API server did not answer: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        await kube.aclose()


async def _act(kube: Any, args: argparse.Namespace) -> int:
    from stronghold_operator.logic import postmortem
    from stronghold_operator.models.incident import ACK_ANNOTATION, PLURAL, RESOLVE_ANNOTATION
    from stronghold_operator.platforms.kube import ours

    kind = ours(PLURAL)
    if args.action == "list":
        where = None if args.all_namespaces else args.namespace
        items = await kube.list(kind, where)
        items.sort(key=lambda o: (o.get("status") or {}).get("startedAt") or "", reverse=True)
        print(json.dumps(items, indent=2) if args.json else _table(items, args.all_namespaces))
        return EXIT_OK
    obj = await kube.get(kind, args.name, args.namespace)
    if args.action == "show":
        print(json.dumps(obj, indent=2) if args.json else _show(obj))
        return EXIT_OK
    if args.action == "postmortem":
        print(postmortem.render(obj))
        return EXIT_OK
    who = args.by or os.environ.get("USER") or getpass.getuser() or "someone"
    annotation = ACK_ANNOTATION if args.action == "ack" else RESOLVE_ANNOTATION
    await kube.patch(
        kind, args.name, args.namespace, {"metadata": {"annotations": {annotation: who}}}
    )
    print(f"incident {args.namespace}/{args.name}: {annotation}={who}")
    return EXIT_OK


_COLUMNS = ("NAME", "SEVERITY", "ROOT CAUSE", "STATE", "STARTED", "DURATION", "ACK")


def _table(items: list[dict[str, Any]], namespaces: bool) -> str:
    rows = [("NAMESPACE", *_COLUMNS) if namespaces else _COLUMNS]
    for o in items:
        s = o.get("status") or {}
        row = (
            o["metadata"]["name"],
            str(s.get("maxSeverity") or s.get("severity") or ""),
            str(s.get("rootCause") or ""),
            str(s.get("state") or ""),
            str(s.get("startedAt") or ""),
            str(s.get("duration") or "-"),
            str(s.get("acknowledgedBy") or "-"),
        )
        rows.append((o["metadata"]["namespace"], *row) if namespaces else row)
    if len(rows) == 1:
        return "no incidents"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _show(obj: dict[str, Any]) -> str:
    from stronghold_operator.logic.postmortem import usage_line

    s = obj.get("status") or {}
    meta = obj["metadata"]
    lines = [
        f"Incident {meta['namespace']}/{meta['name']}"
        f" (HealthPolicy {obj.get('spec', {}).get('healthPolicy')})",
        f"  state {s.get('state')}, severity {s.get('severity')} (worst {s.get('maxSeverity')}),"
        f" root cause {s.get('rootCause')}, escalation level {s.get('escalationLevel', 1)}",
        f"  started {s.get('startedAt')}, duration {s.get('duration') or 'open'},"
        f" acknowledged by {s.get('acknowledgedBy') or '-'},"
        f" resolved by {s.get('resolvedBy') or '-'}",
        f"  affected: {', '.join(s.get('affectedChecks') or [])}",
        f"  {s.get('summary', '')}",
    ]
    group = s.get("grouped") or {}
    if group:  # a shared target's storm: the other policies' incidents recorded here
        names = list(group.get("policies") or [])
        more = ", ..." if int(group.get("count") or 0) > len(names) else ""
        lines.append(
            f"  grouped: {group.get('count')} other policies' incidents on"
            f" {group.get('target')} ({', '.join(names)}{more})"
        )
    lines.append("Timeline:")
    lines += [
        f"  {e.get('time')} {e.get('type')}: {e.get('message', '')}"
        for e in s.get("timeline") or []
    ]
    ev = s.get("evidence") or {}
    lines.append(f"Evidence (gathered {ev.get('gatheredAt', '-')}):")
    for r in ev.get("rollouts") or []:
        lines.append(
            f"  rollout {r.get('at')} {r.get('kind')}/{r.get('name')} rev {r.get('revision', '?')}"
        )
    for r in ev.get("restarts") or []:
        lines.append(
            f"  restart {r.get('pod')}/{r.get('container')} x{r.get('restarts')}"
            f" {r.get('lastReason', '')}"
        )
    for e in ev.get("warningEvents") or []:
        lines.append(
            f"  event {e.get('lastSeen')} {e.get('object')} {e.get('reason')}:"
            f" {e.get('message', '')}"
        )
    for c in ev.get("checks") or []:
        lines.append(
            f"  check {c.get('name')} {c.get('state')} {c.get('reason')}: {c.get('message', '')}"
        )
    for u in ev.get("usage") or []:
        lines.append(f"  usage {usage_line(u)}")
    for err in ev.get("errors") or []:
        lines.append(f"  not gathered: {err}")
    return "\n".join(lines)
