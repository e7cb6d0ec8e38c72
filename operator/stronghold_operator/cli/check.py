"""``stronghold check``: the guide's morning health check as one command, without a cluster.

Runs the checks of HealthPolicy manifests (or of flags) once with the operator's own probes
and logic, prints a table, and exits 0 healthy, 1 warning (or unknown), 2 critical,
3 when the input is invalid.

Resources checks of a Compose service need only the Docker Engine; those of a Deployment or
StatefulSet read metrics.k8s.io through the kubeconfig ($KUBECONFIG or ~/.kube/config), in
the policy's metadata.namespace, else --namespace. Logs checks read the last window of
their Compose service (Docker Engine) or pods (pods/log through the kubeconfig).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stronghold_operator.cli import add_command

EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_INVALID = 0, 1, 2, 3


def register(sub: Any) -> None:
    p = add_command(
        sub, "check", "run HealthPolicy checks once, print a table (exit 0/1/2)", __doc__
    )
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        help="YAML with HealthPolicy objects (and Secrets they reference); repeatable",
    )
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME/KEY=VALUE",
        help="a Secret key the policies reference (instead of a Secret in the file)",
    )
    p.add_argument("--url", action="append", default=[], help="probe this URL (repeatable)")
    p.add_argument(
        "--health-document", action="store_true", help="parse --url answers as the guide's JSON"
    )
    p.add_argument("--postgres", metavar="HOST[:PORT][/DB]", help="probe this PostgreSQL")
    p.add_argument("--pg-user", default="postgres", help="PostgreSQL user (default postgres)")
    p.add_argument("--memcached", metavar="HOST:PORT", help="probe this Memcached")
    p.add_argument("--amqp", metavar="URL", help="probe this RabbitMQ (amqp://user:pass@host/)")
    p.add_argument("--queue", action="append", default=[], help="RabbitMQ queue to check")
    p.add_argument(
        "--workload",
        metavar="KIND/NAME",
        help="CPU/memory of this Deployment or StatefulSet (metrics.k8s.io, kubeconfig)",
    )
    p.add_argument(
        "--compose",
        metavar="PROJECT/SERVICE",
        help="CPU/memory of this Compose service (Docker Engine stats)",
    )
    p.add_argument(
        "--docker-host",
        default="unix:///var/run/docker.sock",
        help="Docker Engine for --compose (default unix:///var/run/docker.sock)",
    )
    p.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace of workloads for policies without metadata.namespace (default default)",
    )
    p.add_argument("--timeout", default="5s", help="timeout per check (default 5s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run)


def _load(paths: Sequence[str]) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    import yaml

    policies: list[dict[str, Any]] = []
    secrets: dict[tuple[str, str], str] = {}
    for path in paths:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        for doc in yaml.safe_load_all(text):
            if not isinstance(doc, dict):
                continue
            kind = doc.get("kind")
            if kind == "HealthPolicy":
                policies.append(doc)
            elif kind == "Secret":
                name = str(doc.get("metadata", {}).get("name", ""))
                for key, value in (doc.get("data") or {}).items():
                    secrets[(name, key)] = base64.b64decode(value).decode()
                for key, value in (doc.get("stringData") or {}).items():
                    secrets[(name, key)] = str(value)
            elif kind == "List":
                policies += [i for i in doc.get("items", []) if i.get("kind") == "HealthPolicy"]
    return policies, secrets


def _from_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    checks: list[dict[str, Any]] = []
    if args.url:
        http: dict[str, Any] = {"urls": list(args.url)}
        if args.health_document:
            http["healthDocument"] = {}
        checks.append({"name": "web", "http": http})
    if args.postgres:
        hostport, _, db = args.postgres.partition("/")
        host, _, port = hostport.partition(":")
        pg: dict[str, Any] = {"host": host, "user": args.pg_user, "database": db or "postgres"}
        if port:
            pg["port"] = int(port)
        checks.append({"name": "db", "postgres": pg})
    if args.memcached:
        checks.append({"name": "cache", "memcached": {"address": args.memcached}})
    if args.amqp:
        checks.append(
            {
                "name": "queue",
                "rabbitmq": {
                    "url": {"secretKeyRef": {"name": "cli", "key": "amqp"}},
                    "queues": [{"name": q} for q in args.queue],
                },
            }
        )
    if args.workload:
        kind, _, name = args.workload.partition("/")
        ref: dict[str, Any] = {"kind": kind, "name": name}
        checks.append({"name": "workload", "resources": {"targetRef": ref}})
    if args.compose:
        project, _, service = args.compose.partition("/")
        ref = {
            "kind": "ComposeService",
            "project": project,
            "service": service,
            "dockerHost": args.docker_host,
        }
        checks.append({"name": "compose", "resources": {"targetRef": ref}})
    if not checks:
        return None
    return {
        "kind": "HealthPolicy",
        "metadata": {"name": "cli"},
        "spec": {"timeout": args.timeout, "checks": checks},
    }


def _secrets_for(policy: Any, known: Mapping[tuple[str, str], str]) -> dict[str, dict[str, str]]:
    def get(sel: Any) -> str:
        key = (sel.secret_key_ref.name, sel.secret_key_ref.key)
        if key not in known:
            raise LookupError(f"Secret {key[0]} has no key {key[1]!r} (give it with --secret)")
        return known[key]

    out: dict[str, dict[str, str]] = {}
    for c in policy.checks:
        roles: dict[str, str] = {}
        if c.postgres is not None and c.postgres.password is not None:
            roles["password"] = get(c.postgres.password)
        if c.rabbitmq is not None:
            roles["url"] = get(c.rabbitmq.url)
            if c.rabbitmq.management is not None:
                roles["management-password"] = get(c.rabbitmq.management.password)
        out[c.name] = roles
    return out


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from stronghold_operator.models.base import InvalidSpec, parse
    from stronghold_operator.models.health import HealthPolicySpec
    from stronghold_operator.models.outbound import ENV

    err = Console(stderr=True)
    # Run by a person with their own network access (no deputy to confuse): loopback and
    # private targets are theirs to probe unless they set the variable. The always-refused
    # ranges (metadata, link-local, ...) stay refused.
    os.environ.setdefault(ENV, "loopback,private")
    try:
        docs, known = _load(args.filename)
    except (OSError, ValueError) as exc:
        err.print(f"[red]cannot read input:[/] {exc}")
        return EXIT_INVALID
    for item in args.secret:
        ref, eq, value = item.partition("=")
        name, slash, key = ref.partition("/")
        if not (eq and slash and name and key):
            err.print(f"[red]--secret must be NAME/KEY=VALUE[/], got {ref!r}")
            return EXIT_INVALID
        known[(name, key)] = value
    flags = _from_flags(args)
    if flags is not None:
        docs.append(flags)
        if args.amqp:
            known[("cli", "amqp")] = args.amqp
    if not docs:
        err.print("[red]nothing to check:[/] give -f policy.yaml or --url/--postgres/...")
        return EXIT_INVALID
    jobs: list[tuple[str, str, Any, dict[str, dict[str, str]]]] = []
    for doc in docs:
        name = str(doc.get("metadata", {}).get("name", "policy"))
        namespace = str(doc.get("metadata", {}).get("namespace") or args.namespace)
        spec = dict(doc.get("spec") or {})
        spec["failureThreshold"] = 1  # one shot: every result counts at once
        spec["successThreshold"] = 1
        try:
            policy = parse(HealthPolicySpec, spec)
            secrets = _secrets_for(policy, known)
        except (InvalidSpec, LookupError) as exc:
            err.print(f"[red]{name}:[/] {exc}")
            return EXIT_INVALID
        jobs.append((name, namespace, policy, secrets))
    reports = asyncio.run(_check_all(jobs))
    if args.json:
        sys.stdout.write(json.dumps(reports, indent=2) + "\n")
    else:
        _print(reports)
    return max((r["exitCode"] for r in reports), default=EXIT_OK)


def _readers() -> tuple[Any, Any, Any]:
    """Readers for resources and logs checks that connect to Kubernetes only when one
    needs it, and a function closing that connection."""
    from stronghold_operator.models.health import LogRead, LogsCheck
    from stronghold_operator.models.scaling import MetricsUnavailableError, ReplicaUsage, TargetRef
    from stronghold_operator.platforms.kube import Kube
    from stronghold_operator.platforms.logs import read_logs
    from stronghold_operator.platforms.usage import read_usage

    kube: list[Kube] = []
    lock = asyncio.Lock()

    async def connect() -> Kube:
        async with lock:
            if not kube:
                try:
                    kube.append(await asyncio.to_thread(Kube.connect))
                except Exception as exc:  # no kubeconfig, a broken one, ...
                    raise MetricsUnavailableError(f"no Kubernetes access: {exc}") from None
        return kube[0]

    async def read(ref: TargetRef, namespace: str) -> list[ReplicaUsage]:
        client = None if ref.is_compose else await connect()
        return await read_usage(client, namespace, ref)

    async def read_log(spec: LogsCheck, namespace: str, since_s: float, cap: int) -> LogRead:
        # One shot: the last window, as the guide's `logs --since=1h`.
        client = None if spec.compose is not None else await connect()
        return await read_logs(client, namespace, spec, since_s, cap)

    async def close() -> None:
        for k in kube:
            await k.aclose()

    return read, read_log, close


async def _check_all(
    jobs: list[tuple[str, str, Any, dict[str, dict[str, str]]]],
) -> list[dict[str, Any]]:
    from stronghold_operator.conditions import utcnow
    from stronghold_operator.logic import health as logic
    from stronghold_operator.probes.logs import LogsProbe
    from stronghold_operator.probes.resources import ResourcesProbe
    from stronghold_operator.probes.runner import Prober

    reader, log_reader, close_kube = _readers()
    prober = Prober(resources=ResourcesProbe(reader), logs=LogsProbe(log_reader))
    reports: list[dict[str, Any]] = []
    try:
        for name, namespace, policy, secrets in jobs:
            results = await prober.run(policy, secrets, namespace)
            known = [v for roles in secrets.values() for v in roles.values()]
            ev = logic.evaluate(policy, name, {}, results, None, utcnow(), known, one_shot=True)
            checks = ev.status["checks"]
            states = {c["state"] for c in checks}
            code = (
                EXIT_CRITICAL
                if "Critical" in states
                else EXIT_WARNING
                if states & {"Warning", "Unknown"}
                else EXIT_OK
            )
            incident = ev.status["incident"]
            reports.append(
                {
                    "policy": name,
                    "checks": checks,
                    "severity": ev.severity,
                    "rootCause": incident["rootCause"] if incident else None,
                    "summary": logic.redact(incident["summary"], known) if incident else None,
                    "exitCode": code,
                }
            )
    finally:
        await prober.close()
        await close_kube()
    return reports


_STYLE = {"Healthy": "green", "Warning": "yellow", "Critical": "bold red", "Unknown": "magenta"}


def _print(reports: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from stronghold_operator.logic.health import format_latency

    console = Console()
    for report in reports:
        table = Table(title=f"HealthPolicy {report['policy']}", title_justify="left")
        for col in ("CHECK", "TYPE", "STATE", "LATENCY", "MESSAGE"):
            table.add_column(col, overflow="fold")
        for c in report["checks"]:
            style = _STYLE.get(c["state"], "")
            table.add_row(
                c["name"],
                c["type"],
                f"[{style}]{c['state']}[/]",
                format_latency(c.get("latencyMs")),
                c["message"],
            )
        console.print(table)
        if report["severity"] != "None":
            console.print(f"[bold red]{report['severity']}[/] root cause {report['summary']}")
        else:
            console.print("[green]no incident[/]")
