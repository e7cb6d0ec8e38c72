"""``stronghold status``: how the platform is, one screen per namespace.

Every HealthPolicy (state, severity, the open incident with its root cause and age, worst
latency), BackupSchedule (last backup, last verified, last restore test, next run, stale),
ScalingPolicy (replicas, desired, the last decision and why) and MaintenanceWindow (active or
next start, last result), read through the API as you (your kubeconfig, your RBAC).
Problems first. Exit codes: 0 nothing is a problem, 1 something is (Critical, Warning or
Unknown), 2 an error (no access, the CRDs not installed, ...).

The namespace is -n, else the kubeconfig context's namespace, else "default"; -A shows all.
The JSON of -o json follows the schema in stronghold_operator/logic/status.schema.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from stronghold_operator.cli import add_command

EXIT_ERROR = 2
PLURALS = {
    "HealthPolicy": "healthpolicies",
    "BackupSchedule": "backupschedules",
    "ScalingPolicy": "scalingpolicies",
    "MaintenanceWindow": "maintenancewindows",
}
STYLE = {
    "Critical": "bold red",
    "Warning": "yellow",
    "Unknown": "magenta",
    "Active": "cyan",
    "OK": "green",
}


def register(sub: Any) -> None:
    p = add_command(
        sub, "status", "one screen: how every policy is, problems first (exit 0/1/2)", __doc__
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)"
    )
    where.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("-w", "--watch", action="store_true", help="redraw until Ctrl-C")
    p.add_argument(
        "--interval", type=float, default=5.0, help="seconds between redraws (default 5)"
    )
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return _last_code[0]


_last_code = [EXIT_ERROR]  # what --watch returns on Ctrl-C: the last screen's code


async def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from stronghold_operator.platforms.kube import Kube

    err = Console(stderr=True, soft_wrap=True)  # one line per message, whatever the width
    try:
        kube = Kube.connect()
    except Exception as exc:  # no kubeconfig, an unknown --context, a broken file
        err.print(f"[red]cannot reach Kubernetes:[/] {exc}", markup=True, highlight=False)
        return EXIT_ERROR
    namespace = None if args.all_namespaces else (args.namespace or kube.namespace)
    try:
        if not args.watch:
            return await _once(kube, namespace, args.output)
        return await _watch(kube, namespace, args)
    finally:
        await kube.aclose()


async def _collect(kube: Any, namespace: str | None) -> Any:
    """The report, or an error message (str) saying what could not be read and why."""
    from stronghold_operator.conditions import utcnow
    from stronghold_operator.logic import status as logic
    from stronghold_operator.platforms.kube import ApiError, ApiUnreachable, ours

    async def listed(kind: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = await kube.list(ours(PLURALS[kind]), namespace)
        return items

    try:
        lists = await asyncio.gather(*(listed(k) for k in logic.KINDS))
    except ApiError as exc:
        where = f"namespace {namespace}" if namespace else "all namespaces"
        if exc.status == 404:
            return "the Stronghold CRDs are not installed (kubectl apply --server-side -f crds/)"
        if exc.status == 403:
            return f"forbidden: you may not list Stronghold objects in {where} ({exc})"
        return f"the API server refused the list in {where}: {exc}"
    except ApiUnreachable as exc:
        return f"cannot reach the API server: {exc}"
    scope = {"allNamespaces": True} if namespace is None else {"namespace": namespace}
    return logic.report(
        dict(zip(logic.KINDS, lists, strict=True)),
        utcnow(),
        namespaces=[namespace] if namespace else [],
        scope=scope,
    )


async def _once(kube: Any, namespace: str | None, output: str) -> int:
    from rich.console import Console

    report = await _collect(kube, namespace)
    if isinstance(report, str):
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {report}", highlight=False)
        return EXIT_ERROR
    if output == "table":
        console = _console()
        console.print(render(report))
    else:
        sys.stdout.write(dump(report.to_json(), output))
    code: int = report.exit_code
    return code


async def _watch(kube: Any, namespace: str | None, args: argparse.Namespace) -> int:
    from rich.live import Live
    from rich.text import Text

    console = _console()
    live_screen = args.output == "table" and console.is_terminal
    live = Live(console=console, auto_refresh=False, screen=False) if live_screen else None
    try:
        if live is not None:
            live.start()
        while True:
            started = time.monotonic()
            report = await _collect(kube, namespace)
            if isinstance(report, str):
                _last_code[0] = EXIT_ERROR
                view: Any = Text(f"error: {report} (retrying)", style="red")
            else:
                _last_code[0] = report.exit_code
                view = render(report) if args.output == "table" else None
            if live is not None:
                live.update(view, refresh=True)
            elif args.output == "table" or view is not None:
                console.print(view)
                console.print()
            else:
                sys.stdout.write(dump(report.to_json(), args.output, stream=True))
            sys.stdout.flush()
            await asyncio.sleep(max(0.5, args.interval - (time.monotonic() - started)))
    finally:
        if live is not None:
            live.stop()


def _console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Piped: no colour (rich's default off a TTY) and no squeezing to 80 columns.
        console = Console(width=200)
    return console


def dump(doc: dict[str, Any], output: str, *, stream: bool = False) -> str:
    """The report as JSON or YAML; ``stream``: one document per redraw (JSON lines, ---)."""
    if output == "json":
        return (
            json.dumps(doc, separators=(",", ":")) + "\n"
            if stream
            else json.dumps(doc, indent=2) + "\n"
        )
    import yaml

    text = yaml.safe_dump(doc, sort_keys=False)
    return f"---\n{text}" if stream else text


def render(report: Any) -> Any:
    """The report as rich renderables: a heading and one table per kind, per namespace."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from stronghold_operator.logic import status as logic

    parts: list[Any] = []
    now = report.now.strftime("%Y-%m-%d %H:%M:%SZ")
    code = report.exit_code
    verdict = (
        Text(f"{report.problems} problem(s)", style="bold red")
        if code
        else Text("all fine", style="bold green")
    )
    parts.append(Text.assemble(f"Stronghold status at {now}: {report.objects} objects, ", verdict))
    if not report.namespaces:
        parts.append(Text("no Stronghold objects in any namespace"))
    for ns in report.namespaces:
        heading = Text.assemble(
            ("\nnamespace ", "bold"),
            (ns.name, "bold"),
            " ",
            (f"{ns.problems} problem(s)", STYLE["Critical"]) if ns.problems else ("ok", "green"),
        )
        parts.append(heading)
        if not ns.rows:
            parts.append(Text("  no Stronghold objects here"))
        for kind in logic.KINDS:
            rows = ns.of(kind)
            if not rows:
                continue
            parts.append(Text(kind, style="bold"))
            table = Table(box=None, expand=False, pad_edge=False, header_style="bold")
            for col in ("NAME", "STATE", *logic.COLUMNS[kind], "PROBLEMS"):
                table.add_column(col, overflow="fold")
            for r in rows:
                style = STYLE[r.level]
                table.add_row(
                    r.name,
                    Text(r.state, style=style),
                    *r.cells,
                    Text("; ".join(r.problems) or "-", style=style if r.problems else ""),
                )
            parts.append(table)
    return Group(*parts)
