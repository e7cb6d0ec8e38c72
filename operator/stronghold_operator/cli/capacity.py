"""``stronghold capacity report``: when does each resource run out?

Reads the history of each resource from Prometheus (range queries over --range), fits a
linear trend and a growth rate (numpy least squares), and projects when the series crosses
its critical band: the database volume 95 % full, connections at 95 % of max_connections,
web CPU 90 % / memory 95 % of requests, replicas at the ScalingPolicy's maxReplicas, queue
depth at its limit. Prints a Markdown summary; --html writes a self-contained page with a
plot per series, --json the numbers.

The queries use raw metric names (postgres_exporter, kubelet, the operator's /metrics,
RabbitMQ's prometheus plugin); --config FILE (YAML, a list of resources) changes or adds
them, --limit NAME=VALUE sets a limit (100Gi, 500). $STRONGHOLD_PROMETHEUS_TOKEN, when set,
is sent as a bearer token.

Exit codes: 0 nothing crosses its band within --horizon, 1 something does (or is over it
already), 2 the report is not to be trusted: Prometheus unreachable, a query refused, bad
options, or no history for any resource. As a CronJob: examples/capacity-report-cronjob.yaml.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stronghold_operator.cli import add_command

if TYPE_CHECKING:  # imported when run: a command loads only what it needs
    from stronghold_operator.logic.capacity import Assessment, Report, Resource
    from stronghold_operator.platforms.prometheus import Prometheus, RangeSeries

EXIT_OK, EXIT_AT_RISK, EXIT_ERROR = 0, 1, 2
ENV_URL = "STRONGHOLD_PROMETHEUS_URL"
# A bearer token for a Prometheus behind an auth proxy: from the environment (a Secret in the
# CronJob), never an argument, which would show in the Job's spec and `ps`.
ENV_TOKEN = "STRONGHOLD_PROMETHEUS_TOKEN"
MAX_POINTS = 2000  # per series: Prometheus refuses more than 11,000; 2,000 fit well enough


class UsageError(Exception):
    pass


def register(sub: Any) -> None:
    p = add_command(sub, "capacity", "capacity trends and projections (report)", __doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = actions.add_parser(
        "report",
        help="project when each resource crosses its critical band (exit 0/1/2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--prometheus",
        default=os.environ.get(ENV_URL),
        help=f"Prometheus base URL (default: ${ENV_URL})",
    )
    r.add_argument("--range", dest="history", default="30d", help="history to fit (default 30d)")
    r.add_argument("--step", help="seconds or a duration between points (default: range/720)")
    r.add_argument("--horizon", default="30d", help="how far ahead to judge (default 30d)")
    r.add_argument(
        "--model",
        choices=("linear", "growth", "earliest"),
        default="linear",
        help="which projection decides: linear trend, growth rate, or the earlier (default linear)",
    )
    r.add_argument("--config", help="YAML list of resources: override defaults by name, add new")
    r.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a resource's limit (100Gi, 500); repeatable",
    )
    r.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="only these resources"
    )
    r.add_argument(
        "--no-kubernetes",
        action="store_true",
        help="do not read ScalingPolicies for maxReplicas (replicas: trend only)",
    )
    r.add_argument("--html", help="write the HTML report here")
    r.add_argument("--markdown", help="write the Markdown summary here (it is printed anyway)")
    r.add_argument(
        "--json",
        dest="json_path",
        help="write the numbers as JSON here ('-': stdout, instead of the summary)",
    )
    r.add_argument("--timeout", type=float, default=30.0, help="seconds per query (default 30)")
    r.set_defaults(func=_run)


def _error(message: str) -> None:
    print(f"stronghold capacity: {message}", file=sys.stderr)


def resources(args: argparse.Namespace) -> list[Resource]:
    """The default resources, changed by --config, --limit and --only."""
    from stronghold_operator.logic.capacity import DEFAULT_RESOURCES
    from stronghold_operator.platforms.quantity import parse_quantity

    chosen = {r.name: r for r in DEFAULT_RESOURCES}
    if args.config:
        chosen = _from_config(Path(args.config), chosen)
    for spec in args.limit:
        name, sep, value = spec.partition("=")
        if not sep or name not in chosen:
            raise UsageError(f"--limit {spec}: expected NAME=VALUE, NAME one of {sorted(chosen)}")
        try:
            limit = parse_quantity(value)
        except ValueError as exc:
            raise UsageError(f"--limit {spec}: {exc}") from None
        chosen[name] = dataclasses.replace(
            chosen[name], limit=limit, limit_query=None, limit_from=None
        )
    for r in chosen.values():
        # From YAML, a field may hold anything: check the type as well as the range.
        critical: object = r.critical
        top: object = r.limit
        if not isinstance(critical, int | float) or not 0 < critical <= 1:
            raise UsageError(f"{r.name}: critical is a fraction of the limit, in (0, 1]")
        if top is not None and not (isinstance(top, int | float) and top > 0):
            raise UsageError(f"{r.name}: the limit must be positive")
    for name in args.only:
        if name not in chosen:
            raise UsageError(f"--only {name}: not one of {sorted(chosen)}")
    return [r for n, r in chosen.items() if not args.only or n in args.only]


def _from_config(path: Path, chosen: dict[str, Resource]) -> dict[str, Resource]:
    """``chosen`` changed and extended by a YAML list of resources (fields as Resource's)."""
    import yaml

    from stronghold_operator.logic.capacity import Resource
    from stronghold_operator.platforms.quantity import parse_quantity

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--config: {exc}") from None
    if not isinstance(doc, list):
        raise UsageError("--config: expected a YAML list of resources")
    fields = {f.name for f in dataclasses.fields(Resource)}
    out = dict(chosen)
    for i, item in enumerate(doc):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise UsageError(f"--config: item {i} needs a name")
        unknown = set(item) - fields
        if unknown:
            raise UsageError(f"--config: {item['name']}: unknown field(s) {sorted(unknown)}")
        base = out.get(item["name"])
        merged = {**(dataclasses.asdict(base) if base else {}), **item}
        if "query" not in merged:
            raise UsageError(f"--config: {item['name']}: a new resource needs a query")
        merged.setdefault("title", item["name"])
        try:
            if item.get("limit") is not None:
                merged["limit"] = parse_quantity(item["limit"])
            out[item["name"]] = Resource(**merged)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--config: {item['name']}: {exc}") from None
    return out


def _run(args: argparse.Namespace) -> int:
    try:
        from stronghold_operator.logic.capacity import parse_duration

        if args.html:
            import matplotlib  # noqa: F401  (the plots; fail before querying, not after)
    except ImportError as exc:  # numpy or matplotlib missing: an extra, not a main dependency
        _error(f"{exc.name} is not installed: pip install 'stronghold-operator[capacity]'")
        return EXIT_ERROR
    if not args.prometheus:
        _error(f"no Prometheus: pass --prometheus URL or set ${ENV_URL}")
        return EXIT_ERROR
    try:
        history = parse_duration(args.history)
        horizon = parse_duration(args.horizon)
        step = parse_duration(args.step).total_seconds() if args.step else None
        chosen = resources(args)
    except (ValueError, UsageError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    now = time.time()
    start = now - history.total_seconds()
    if step is None:
        step = max(60.0, history.total_seconds() / 720)
    if history.total_seconds() / step > MAX_POINTS:
        _error(f"--step {step:g}s gives more than {MAX_POINTS} points per series: raise it")
        return EXIT_ERROR
    report = asyncio.run(collect(args, chosen, start=start, now=now, step=step, horizon=horizon))
    return emit(report, args)


def emit(report: Report, args: argparse.Namespace) -> int:
    """Write the outputs; the exit code."""
    import json

    from stronghold_operator.logic import capacity_render as render

    summary = render.markdown(report)
    if args.json_path != "-":  # with --json -, stdout is the JSON alone (for jq)
        sys.stdout.write(summary)
    try:
        if args.markdown:
            Path(args.markdown).write_text(summary)
        if args.html:
            Path(args.html).write_text(render.html_report(report))
        if args.json_path == "-":
            sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
        elif args.json_path:
            Path(args.json_path).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    except OSError as exc:
        _error(f"cannot write the report: {exc}")
        return EXIT_ERROR
    for e in report.errors:
        _error(e)
    if report.at_risk:
        return EXIT_AT_RISK
    if report.errors or not report.has_history:
        if not report.has_history:
            _error("no history found for any resource (is Prometheus scraping?)")
        return EXIT_ERROR
    return EXIT_OK


async def collect(
    args: argparse.Namespace,
    chosen: Sequence[Resource],
    *,
    start: float,
    now: float,
    step: float,
    horizon: Any,
) -> Report:
    """Query every resource and its limit, then assess each series."""
    from stronghold_operator.logic.capacity import Report
    from stronghold_operator.platforms.prometheus import Prometheus

    errors: list[str] = []
    assessments: list[Assessment] = []
    token = os.environ.get(ENV_TOKEN)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with Prometheus(args.prometheus, timeout_s=args.timeout, headers=headers) as prom:
        results = await asyncio.gather(
            *(_one(prom, r, args, start, now, step, horizon) for r in chosen),
            return_exceptions=True,
        )
    for res, out in zip(chosen, results, strict=True):
        if isinstance(out, BaseException):
            errors.append(f"{res.name}: {out}")
        else:
            assessments.extend(out)
    return Report(
        now=now,
        start=start,
        horizon=horizon,
        model=args.model,
        assessments=tuple(assessments),
        errors=tuple(errors),
    )


async def _one(
    prom: Prometheus,
    res: Resource,
    args: argparse.Namespace,
    start: float,
    now: float,
    step: float,
    horizon: Any,
) -> list[Assessment]:
    from stronghold_operator.logic.capacity import assess, match_limit

    series: list[RangeSeries] = await prom.query_range(res.query, start, now, step)
    if not series:
        return [
            assess(
                res,
                {},
                (),
                (),
                None,
                now=now,
                horizon=horizon,
                model=args.model,
                note=f"no samples for {res.query}",
            )
        ]
    limits: list[tuple[dict[str, str], float]] = []
    note = ""
    if res.limit is not None:
        limits = [({}, res.limit)]
    elif res.limit_query:
        limits = [(dict(s.labels), s.value) for s in await prom.query(res.limit_query, now)]
        if not limits:
            note = f"no limit: {res.limit_query} returned nothing (set --limit {res.name}=...)"
    elif res.limit_from == "scalingpolicy":
        limits, note = await _max_replicas(series, args.no_kubernetes)
    out = []
    for s in series:
        limit = match_limit(s.labels, limits) if limits else None
        out.append(
            assess(
                res,
                s.labels,
                s.times,
                s.values,
                limit,
                now=now,
                horizon=horizon,
                model=args.model,
                note=note if limit is None else "",
            )
        )
    return out


async def _max_replicas(
    series: Sequence[RangeSeries], skip: bool
) -> tuple[list[tuple[dict[str, str], float]], str]:
    """maxReplicas of each series' ScalingPolicy (labels namespace, policy), read as you."""
    if skip:
        return [], "maxReplicas not read (--no-kubernetes)"
    from stronghold_operator.platforms.kube import Kube, ours

    wanted = {(s.labels.get("namespace", ""), s.labels.get("policy", "")) for s in series}
    try:
        kube = Kube.connect()
    except Exception as exc:  # no kubeconfig, a broken file: the trend is still worth showing
        return [], f"maxReplicas unknown: cannot reach Kubernetes ({exc})"
    limits: list[tuple[dict[str, str], float]] = []
    try:
        for ns in sorted({n for n, _ in wanted if n}):
            for obj in await kube.list(ours("scalingpolicies"), ns):
                name = obj.get("metadata", {}).get("name", "")
                top = obj.get("spec", {}).get("maxReplicas")
                if (ns, name) in wanted and isinstance(top, int | float):
                    limits.append(({"namespace": ns, "policy": name}, float(top)))
    except Exception as exc:  # forbidden, CRDs missing: say so beside the trend
        return limits, f"maxReplicas unknown: {exc}"[:300]
    finally:
        await kube.aclose()
    return limits, "" if limits else "maxReplicas unknown: no such ScalingPolicy"
