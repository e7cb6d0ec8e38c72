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
from typing import TYPE_CHECKING, Any

from stronghold_operator.cli import add_command

if TYPE_CHECKING:  # imported when run: a command loads only what it needs
    from stronghold_operator.logic.status import Report
    from stronghold_operator.platforms.kube import Kube

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
    last = [EXIT_ERROR]  # --watch: the code of the last screen, returned on Ctrl-C
    try:
        return asyncio.run(_main(args, last))
    except KeyboardInterrupt:
        return last[0]


async def _main(args: argparse.Namespace, last: list[int]) -> int:
    from stronghold_operator.platforms.kube import Kube

    try:
        kube = Kube.connect()
    except Exception as exc:  # no kubeconfig, an unknown --context, a broken file
        _error(f"cannot reach Kubernetes: {exc}")
        return EXIT_ERROR
    namespace = None if args.all_namespaces else (args.namespace or kube.namespace)
    try:
        if not args.watch:
            return await _once(kube, namespace, args.output)
        return await _watch(kube, namespace, args, last)
    finally:
        await kube.aclose()


def _error(message: str) -> None:
    from rich.console import Console

    # soft_wrap: one line per message, whatever the terminal's width.
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {message}", highlight=False)


async def _collect(kube: Kube, namespace: str | None) -> Report | str:
    """The report, or an error message saying what could not be read and why."""
    from stronghold_operator.conditions import utcnow
    from stronghold_operator.logic import status as logic
    from stronghold_operator.platforms.kube import ApiError, ApiUnreachable, ours

    async def listed(kind: str) -> list[dict[str, Any]]:
        return await kube.list(ours(PLURALS[kind]), namespace)

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


async def _once(kube: Kube, namespace: str | None, output: str) -> int:
    report = await _collect(kube, namespace)
    if isinstance(report, str):
        _error(report)
        return EXIT_ERROR
    if output == "table":
        _console().print(render(report))
    else:
        sys.stdout.write(dump(report.to_json(), output))
    return report.exit_code


async def _watch(
    kube: Kube, namespace: str | None, args: argparse.Namespace, last: list[int]
) -> int:
    """Redraw every ``args.interval`` seconds until Ctrl-C (KeyboardInterrupt ends it)."""
    from rich.live import Live
    from rich.text import Text

    console = _console()
    table = args.output == "table"
    # In place on a terminal; off one, a screen (or a JSON line, a YAML document) per round.
    live = Live(console=console, auto_refresh=False) if table and console.is_terminal else None
    if live is not None:
        live.start()
    try:
        while True:
            started = time.monotonic()
            report = await _collect(kube, namespace)
            last[0] = EXIT_ERROR if isinstance(report, str) else report.exit_code
            if isinstance(report, str):
                if live is not None:
                    live.update(Text(f"error: {report} (retrying)", style="red"), refresh=True)
                else:
                    _error(f"{report} (retrying)")
            elif live is not None:
                live.update(render(report), refresh=True)
            elif table:
                console.print(render(report))
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


def render(report: Report) -> Any:
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
