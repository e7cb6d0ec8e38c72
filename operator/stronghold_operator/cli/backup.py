"""``stronghold backup now|list|verify|restore-test|restore``: BackupSchedule from the CLI.

``now``, ``verify`` and ``restore-test`` set the BackupSchedule's request annotation to a new
value (what a MaintenanceWindow does too) and, with ``--wait``, wait until the operator has
recorded the outcome in status. Exit codes: 0 success, 1 the run failed, 2 timed out or the
object was not found.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from stronghold_operator.cli import add_command

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
PLURAL = "backupschedules"


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "backup",
        "BackupSchedule: run a backup, verification or restore test now; list backups",
        __doc__,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("now", "take a backup now (annotation ops.stronghold.io/backup-now)"),
        ("verify", "re-verify every archive now, then prune (ops.stronghold.io/verify-now)"),
        ("restore-test", "restore the newest verified backup into a scratch database now"),
        ("list", "list recent backups and the last verification and restore test"),
    ):
        a = actions.add_parser(action, help=text)
        a.add_argument("name", help="BackupSchedule name")
        a.add_argument("-n", "--namespace", help="default: the kubeconfig context's, else default")
        a.add_argument("--json", action="store_true", help="print JSON")
        if action != "list":
            a.add_argument("--wait", action="store_true", help="wait for the result")
            a.add_argument("--timeout", type=float, default=900, help="seconds (default 900)")
        a.set_defaults(func=_run)
    from stronghold_operator.cli import backup_restore

    backup_restore.register(actions)


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_request(args))


async def _request(args: argparse.Namespace) -> int:
    from stronghold_operator.models.backup import BACKUP_NOW, RESTORE_TEST_NOW, VERIFY_NOW
    from stronghold_operator.platforms.kube import ApiError, Kube, is_not_found, ours

    kube = Kube.connect()
    args.namespace = args.namespace or kube.namespace  # as kubectl: the context's namespace
    kind = ours(PLURAL)
    try:
        try:
            obj = await kube.get(kind, args.name, args.namespace)
        except ApiError as exc:
            if is_not_found(exc):
                print(f"BackupSchedule {args.namespace}/{args.name} not found")
                return EXIT_ERROR
            raise
        if args.action == "list":
            return _list(obj, args.json)
        annotation = {"now": BACKUP_NOW, "verify": VERIFY_NOW, "restore-test": RESTORE_TEST_NOW}[
            args.action
        ]
        value = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
        before = obj.get("status") or {}
        patch = {"metadata": {"annotations": {annotation: value}}}
        await kube.patch(kind, args.name, args.namespace, patch)
        print(f"requested {args.action} on {args.namespace}/{args.name}: {annotation}={value}")
        if not args.wait:
            return EXIT_OK
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            status = (await kube.get(kind, args.name, args.namespace)).get("status") or {}
            outcome = _outcome(args.action, value, before, status)
            if outcome is not None:
                ok, text = outcome
                print(json.dumps(text, indent=2) if args.json else _line(text))
                return EXIT_OK if ok else EXIT_FAILED
            await asyncio.sleep(2)
        print(f"timed out after {args.timeout:.0f}s waiting for the result")
        return EXIT_ERROR
    finally:
        await kube.aclose()


def _outcome(
    action: str, value: str, before: dict[str, Any], status: dict[str, Any]
) -> tuple[bool, dict[str, Any]] | None:
    """The recorded result of our request, once the operator has written it."""
    if action == "now":
        for b in status.get("backups") or []:
            if b.get("trigger") == value:
                return b.get("result") == "Succeeded" and bool(b.get("verified")), b
        return None
    key = "lastVerification" if action == "verify" else "lastRestoreTest"
    handled = (status.get("onDemand") or {}).get("verify" if action == "verify" else "restoreTest")
    record = status.get(key) or {}
    if handled != value or not record or record == (before.get(key) or {}):
        return None
    return record.get("result") == "Passed", record


def _line(record: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in record.items() if not isinstance(v, list | dict))


def _list(obj: dict[str, Any], as_json: bool) -> int:
    status = obj.get("status") or {}
    if as_json:
        keys = ("backups", "lastVerification", "lastRestoreTest", "conditions", "active")
        print(json.dumps({k: status.get(k) for k in keys}, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"BackupSchedule {obj['metadata']['name']}")
    for col in ("JOB", "FILE", "COMPLETED", "SIZE", "SHA256", "VERIFIED", "RESULT", "TRIGGER"):
        table.add_column(col)
    for b in status.get("backups") or []:
        verified = "yes" if b.get("verified") else f"no {b.get('verifyReason') or ''}".strip()
        result = str(b.get("result", ""))
        if b.get("reason"):
            result += f" ({b['reason']})"
        if b.get("pruned"):
            result += " pruned"
        table.add_row(
            str(b.get("name", "")),
            str(b.get("file", "")),
            str(b.get("completedAt", "")),
            str(b.get("sizeBytes", "")),
            str(b.get("sha256", ""))[:12],
            verified,
            result,
            str(b.get("trigger", "")),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped: do not squeeze names to 80 columns
    console.print(table)
    for key in ("lastVerification", "lastRestoreTest"):
        if status.get(key):
            console.print(f"{key}: {_line(status[key])}")
    for c in status.get("conditions") or []:
        console.print(f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}")
    return EXIT_OK
