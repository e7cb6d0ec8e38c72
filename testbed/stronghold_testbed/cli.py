"""``stronghold-testbed``: the local cluster, its services, the demo and the operator image.

A developer's tool, apart from the product's ``stronghold`` command (run, check, backup).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stronghold-testbed", description="The local testbed of the Stronghold operator"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c: argparse.ArgumentParser = sub.add_parser(
        "cluster", help="the local single-node Kubernetes (testbed)"
    )
    cs = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = cs.add_parser("up", help="install, build (first time), and start the cluster")
    up.add_argument("--no-images", action="store_true", help="only the pause image")
    up.set_defaults(func=_up)
    down = cs.add_parser("down", help="stop what `up` started; keep the cache")
    down.add_argument("--keep-docker", action="store_true", help="leave dockerd running")
    down.set_defaults(func=_down)
    cs.add_parser("status", help="what runs").set_defaults(func=_status)
    kc = cs.add_parser("kubeconfig", help="print the admin kubeconfig path (or a SA's)")
    kc.add_argument(
        "--service-account", metavar="NS/NAME", help="write a kubeconfig for this ServiceAccount"
    )
    kc.add_argument("-o", "--output", type=Path, help="where to write the SA kubeconfig")
    kc.set_defaults(func=_kubeconfig)

    s: argparse.ArgumentParser = sub.add_parser(
        "services", help="PostgreSQL, RabbitMQ, Memcached, Docker, Prometheus on 127.0.0.1"
    )
    ss = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    ss.add_parser("up", help="start what is absent, reuse what runs").set_defaults(func=_svc_up)
    ss.add_parser("status", help="what answers").set_defaults(func=_svc_status)
    ss.add_parser("down", help="stop only what `services up` started").set_defaults(func=_svc_down)

    d: argparse.ArgumentParser = sub.add_parser(
        "demo", help="deploy the operator and the example set on the local cluster"
    )
    ds = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    ds.add_parser(
        "up", help="build the images, deploy, wait for the first results, print the state"
    ).set_defaults(func=_demo_up)
    ds.add_parser(
        "down", help="delete the demo's objects (operator still running), then the operator"
    ).set_defaults(func=_demo_down)
    ds.add_parser("status", help="the example objects' state and what to try next").set_defaults(
        func=_demo_status
    )
    ds.add_parser("break-cache", help="stop the demo's Memcached (an incident opens)").set_defaults(
        func=_demo_cache, heal=False
    )
    ds.add_parser(
        "heal-cache", help="start the demo's Memcached again (the incident closes)"
    ).set_defaults(func=_demo_cache, heal=True)

    m: argparse.ArgumentParser = sub.add_parser(
        "monitoring", help="manifests/monitoring: generated files (the PrometheusRule)"
    )
    ms = m.add_subparsers(dest="action", required=True, metavar="ACTION")
    render = ms.add_parser(
        "render", help="write prometheusrule.yaml from prometheus/stronghold.rules.yml"
    )
    render.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the file is stale"
    )
    render.set_defaults(func=_monitoring_render)

    sub.add_parser(
        "image", help="build stronghold/operator:0.1.0 offline (host wheelhouse, local base)"
    ).set_defaults(func=_image)
    return parser


def _table(title: str, rows: dict[str, str]) -> None:
    t = Table(title=title)
    t.add_column("component")
    t.add_column("state")
    for k, v in rows.items():
        t.add_row(k, v)
    Console().print(t)


def _fail(exc: Exception) -> int:
    Console(stderr=True).print(f"[bold red]error:[/] {exc}")
    return 1


def _up(args: argparse.Namespace) -> int:
    from stronghold_testbed import cluster, paths
    from stronghold_testbed.procs import TestbedError

    try:
        report = cluster.up(with_images=not args.no_images)
    except TestbedError as exc:
        return _fail(exc)
    rows = {"docker": report.docker} | report.images
    rows["started"] = ", ".join(report.started) or "nothing (already running)"
    rows["took"] = f"{report.seconds:.1f}s"
    _table("cluster up", rows)
    print(f"export KUBECONFIG={paths.admin_kubeconfig()}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from stronghold_testbed import cluster

    stopped = cluster.down(docker=not args.keep_docker)
    print("stopped: " + (", ".join(stopped) or "nothing was running"))
    return 0


def _status(_: argparse.Namespace) -> int:
    from stronghold_testbed import cluster

    rows = cluster.status()
    _table("cluster", rows)
    return 0 if rows.get("node") == "Ready" else 3


def _kubeconfig(args: argparse.Namespace) -> int:
    from stronghold_testbed import cluster, paths
    from stronghold_testbed.procs import TestbedError

    if not args.service_account:
        print(paths.admin_kubeconfig())
        return 0
    ns, _, name = args.service_account.partition("/")
    if not name:
        return _fail(ValueError("--service-account takes NAMESPACE/NAME"))
    out = args.output or paths.cache_dir() / f"sa-{ns}-{name}.kubeconfig"
    try:
        print(cluster.sa_kubeconfig(ns, name, out))
    except TestbedError as exc:
        return _fail(exc)
    return 0


def _svc_up(_: argparse.Namespace) -> int:
    from stronghold_testbed import services
    from stronghold_testbed.procs import TestbedError

    try:
        _table("services up", services.up())
    except TestbedError as exc:
        return _fail(exc)
    return 0


def _svc_status(_: argparse.Namespace) -> int:
    from stronghold_testbed import services

    rows = services.status()
    _table("services", rows)
    return 0 if all(v.startswith("up") for v in rows.values()) else 3


def _svc_down(_: argparse.Namespace) -> int:
    from stronghold_testbed import services

    stopped = services.down()
    print("stopped: " + (", ".join(stopped) or "nothing started by stronghold"))
    return 0


def _demo_up(_: argparse.Namespace) -> int:
    from stronghold_testbed import demo
    from stronghold_testbed.procs import TestbedError

    try:
        return demo.up()
    except TestbedError as exc:
        return _fail(exc)


def _demo_down(_: argparse.Namespace) -> int:
    from stronghold_testbed import demo
    from stronghold_testbed.procs import TestbedError

    try:
        return demo.down()
    except TestbedError as exc:
        return _fail(exc)


def _demo_status(_: argparse.Namespace) -> int:
    from stronghold_testbed import demo

    demo.summary()
    return 0


def _demo_cache(args: argparse.Namespace) -> int:
    from stronghold_testbed import demo
    from stronghold_testbed.procs import TestbedError

    try:
        return demo.heal_cache() if args.heal else demo.break_cache()
    except TestbedError as exc:
        return _fail(exc)


def _monitoring_render(args: argparse.Namespace) -> int:
    from stronghold_testbed import prometheus

    text = prometheus.prometheus_rule_text()
    path = prometheus.PROMETHEUS_RULE
    current = path.read_text() if path.exists() else ""
    if args.check:
        if current != text:
            print(f"{path} is stale: run `stronghold-testbed monitoring render`")
            return 1
        return 0
    if current != text:
        path.write_text(text)
        print(f"wrote {path}")
    return 0


def _image(_: argparse.Namespace) -> int:
    from stronghold_testbed import operator_image, progress
    from stronghold_testbed.procs import TestbedError

    p = progress.Progress("image", 1)
    try:
        with p.step(
            f"building {operator_image.TAG}", log=operator_image.build_log(operator_image.TAG)
        ):
            image = operator_image.build()
    except TestbedError as exc:
        return _fail(exc)
    print(image)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
