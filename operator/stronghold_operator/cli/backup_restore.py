"""``stronghold backup restore NAME --run RUN --to TARGET``: a backup back into a database.

The restore runs as a Job in the cluster (the archives live on the schedule's volume there),
in the schedule's Job image and pod settings, with the backups mounted read-only. It:

1. re-checks the archive's sha256 against its manifest;
2. lists the target database's own objects: a database that holds any is refused unless
   ``--force`` (then what the target user owns there is dropped first);
3. restores in ONE transaction (``psql --single-transaction``; a custom archive through
   ``pg_restore -f -``): a failure rolls back and leaves the database as it was;
4. counts the rows of every table and compares them with the manifest.

``--dry-run`` runs steps 1 and 2 only and prints the plan: nothing is changed. The password
comes from a Secret (``--password-secret NAME[/KEY]``, default the schedule's own when the
target user is the schedule's), mounted into the Job as a file: never on the command line,
in the Job or in its arguments. Exit codes: 0 done (or dry run), 1 refused or failed, 2 error
or timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
_ARCHIVE = re.compile(r"^db_backup_\d{8}_\d{6}\.(sql\.gz|dump)$")


def register(actions: Any) -> None:
    a = actions.add_parser(
        "restore",
        help="restore one backup into a database (a Job in the cluster), with --dry-run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("name", help="BackupSchedule name")
    a.add_argument("-n", "--namespace", help="default: the kubeconfig context's, else default")
    a.add_argument(
        "--run",
        required=True,
        help="the backup: its Job name or file (stronghold backup list), or 'latest' "
        "(the newest verified)",
    )
    a.add_argument(
        "--to",
        required=True,
        metavar="TARGET",
        help="a database name on the schedule's server, or postgresql://USER@HOST:PORT/DB "
        "(no password: use --password-secret)",
    )
    a.add_argument(
        "--password-secret",
        metavar="NAME[/KEY]",
        help="Secret with the target user's password (key default 'password')",
    )
    a.add_argument("--dry-run", action="store_true", help="check and print the plan only")
    a.add_argument(
        "--force",
        action="store_true",
        help="restore into a database that is not empty: drop what the user owns there first",
    )
    a.add_argument("--timeout", type=float, default=3600, help="seconds (default 3600)")
    a.add_argument("--json", action="store_true", help="print the Job's result as JSON")
    a.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_restore(args))


def parse_target(text: str, default: Any) -> tuple[dict[str, Any], str | None]:
    """(database fields, error): ``db`` uses the schedule's server; a URI may not hold a
    password."""
    fields = {
        "host": default.host,
        "port": default.port,
        "name": text,
        "user": default.user,
        "sslmode": default.sslmode,
    }
    if "://" not in text:
        return fields, None
    u = urlsplit(text)
    if u.scheme not in ("postgresql", "postgres"):
        return fields, f"--to {text!r}: only postgresql:// URIs"
    if u.password is not None:
        return fields, (
            "--to must not hold a password (it would stay in shell history and process "
            "lists): name a Secret with --password-secret"
        )
    fields["host"] = u.hostname or default.host
    fields["port"] = u.port or 5432
    fields["user"] = unquote(u.username) if u.username else default.user
    fields["name"] = unquote(u.path.lstrip("/")) or default.name
    return fields, None


def pick_archive(status: dict[str, Any], run: str) -> tuple[str | None, str]:
    """(file, what): the archive of ``run`` from status.backups, or a file name as given."""
    backups = [b for b in status.get("backups") or [] if b.get("file") and not b.get("pruned")]
    if run == "latest":
        for b in backups:
            if b.get("result") == "Succeeded" and b.get("verified"):
                return str(b["file"]), f"newest verified backup (Job {b.get('name')})"
        return None, "no verified backup in status.backups"
    for b in backups:
        if run in (b.get("name"), b.get("file")):
            if not b.get("verified"):
                return None, f"{run}: not verified ({b.get('verifyReason') or b.get('reason')})"
            return str(b["file"]), f"Job {b.get('name')}"
    if _ARCHIVE.match(run):
        return run, "file named on the command line (not in status.backups)"
    return None, f"{run}: no such backup in status.backups (stronghold backup list)"


class Refused(Exception):
    """The restore cannot start: the message says why (exit code 2)."""


async def _restore(args: argparse.Namespace) -> int:
    from stronghold_operator.builders.restore_job import (
        restore_job,
        restore_job_name,
        restore_program,
    )
    from stronghold_operator.platforms.kube import CONFIGMAPS, JOBS, Kube

    kube = Kube.connect()
    ns = args.namespace = args.namespace or kube.namespace
    try:
        try:
            obj, spec = await _schedule(kube, ns, args.name)
            archive, what = pick_archive(obj.get("status") or {}, args.run)
            if archive is None:
                raise Refused(f"nothing to restore: {what}")
            target = _target(args, spec)
            await _check_secret(kube, ns, target.password)
        except Refused as exc:
            print(exc)
            return EXIT_ERROR
        when = datetime.now(UTC)
        job_name = restore_job_name(args.name, when, uuid.uuid4().hex[:5])
        _print_plan(args, ns, archive, what, target, job_name, spec.job_template.image)
        job = restore_job(
            owner=obj,
            job_name=job_name,
            spec=spec,
            target=target,
            archive=archive,
            when=when,
            force=args.force,
            dry_run=args.dry_run,
        )
        created = await kube.create(JOBS, ns, job)
        await kube.create(CONFIGMAPS, ns, restore_program(created))
        result = await _wait(kube, ns, job_name, args.timeout)
    finally:
        await kube.aclose()
    if result is None:
        print(f"no result from Job {ns}/{job_name} after {args.timeout:.0f}s (kubectl logs)")
        return EXIT_ERROR
    return _report(result, args.json)


async def _schedule(kube: Any, ns: str, name: str) -> tuple[dict[str, Any], Any]:
    """The BackupSchedule and its parsed spec."""
    from stronghold_operator.models.backup import BackupScheduleSpec
    from stronghold_operator.models.base import InvalidSpec, parse
    from stronghold_operator.platforms.kube import ApiError, is_not_found, ours

    try:
        obj: dict[str, Any] = await kube.get(ours("backupschedules"), name, ns)
    except ApiError as exc:
        if is_not_found(exc):
            raise Refused(f"BackupSchedule {ns}/{name} not found") from None
        raise
    try:
        return obj, parse(BackupScheduleSpec, obj.get("spec") or {})
    except InvalidSpec as exc:
        raise Refused(f"BackupSchedule {ns}/{name} has an invalid spec: {exc}") from None


def _target(args: argparse.Namespace, spec: Any) -> Any:
    """The target DatabaseSpec, its password by reference to a Secret (or none)."""
    from stronghold_operator.models.backup import DatabaseSpec
    from stronghold_operator.models.base import InvalidSpec, parse
    from stronghold_operator.models.common import SecretKeySelector

    fields, error = parse_target(args.to, spec.database)
    if error:
        raise Refused(error)
    secret = None
    if args.password_secret:
        name, _, key = args.password_secret.partition("/")
        secret = SecretKeySelector.model_validate(
            {"secretKeyRef": {"name": name, "key": key or "password"}}
        )
    elif fields["user"] == spec.database.user:
        secret = spec.database.password
    try:
        target = parse(DatabaseSpec, {**fields, "password": None})
    except InvalidSpec as exc:
        raise Refused(f"--to: {exc}") from None
    return target.model_copy(update={"password": secret})


async def _check_secret(kube: Any, ns: str, secret: Any) -> None:
    """The Secret and its key exist (the value itself is never read)."""
    from stronghold_operator.platforms.kube import SECRETS, ApiError, is_not_found

    if secret is None:
        return
    ref = secret.secret_key_ref
    try:
        data = (await kube.get(SECRETS, ref.name, ns)).get("data") or {}
    except ApiError as exc:
        if is_not_found(exc):
            raise Refused(f"Secret {ns}/{ref.name} not found") from None
        raise
    if ref.key not in data:
        raise Refused(f"Secret {ns}/{ref.name} has no key {ref.key!r}")


def _print_plan(
    args: argparse.Namespace,
    ns: str,
    archive: str,
    what: str,
    target: Any,
    job_name: str,
    image: str,
) -> None:
    ref = target.password.secret_key_ref if target.password else None
    auth = (
        f"password from Secret {ns}/{ref.name}/{ref.key}"
        if ref
        else "no password (trust or certificate)"
    )
    where = f"database {target.name} on {target.host}:{target.port} as {target.user}"
    print(f"{'dry run: ' if args.dry_run else ''}restore {archive} ({what})")
    print(f"  into {where}, {auth}")
    print(f"  by Job {ns}/{job_name} (image {image}, backups read-only)")
    if args.dry_run:
        print("  the Job checks the archive's sha256 and the target; it changes nothing")
    elif args.force:
        print("  --force: a non-empty target loses what its user owns there first")


async def _wait(kube: Any, ns: str, job: str, limit: float) -> dict[str, Any] | None:
    """The Job's result (its container's termination message) once it has finished."""
    from stronghold_operator.logic.backup import parse_result
    from stronghold_operator.platforms.kube import JOBS, PODS

    deadline = time.monotonic() + limit
    finished: float | None = None
    while time.monotonic() < deadline:
        status = (await kube.get(JOBS, job, ns)).get("status") or {}
        if status.get("succeeded") or status.get("failed"):
            finished = finished or time.monotonic()
            for pod in await kube.list(PODS, ns, labels={"job-name": job}):
                for c in (pod.get("status") or {}).get("containerStatuses") or []:
                    term = (c.get("state") or {}).get("terminated") or {}
                    parsed = parse_result(term.get("message"))
                    if parsed is not None:
                        return dict(parsed.data)
            if time.monotonic() - finished > 30:  # the pod is gone or wrote nothing
                why = "; ".join(str(c.get("message")) for c in status.get("conditions") or [])
                return {"ok": False, "reason": "NoResult", "error": f"the Job ended: {why}"}
        await asyncio.sleep(1)
    return None


def _report(result: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif result.get("dryRun") and result.get("ok"):
        verdict = "would be REFUSED" if result.get("wouldRefuse") else "would run"
        print(f"dry run: the restore {verdict}: {result.get('plan')}")
    elif result.get("ok"):
        print(
            f"restored {result.get('backup')} into {result.get('target')} in "
            f"{result.get('restoreSeconds')}s: {result.get('tablesCompared')} tables, "
            f"{result.get('rowsCompared')} rows, row counts equal to the backup's manifest"
        )
    else:
        print(f"restore {result.get('reason') or 'failed'}: {result.get('error')}")
    return EXIT_OK if result.get("ok") else EXIT_FAILED
