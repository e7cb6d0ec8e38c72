"""``make demo``: deploy Stronghold like a user would, on the local cluster.

Builds the operator image and the demo web app's image locally, applies crds/ and the local
overlay of manifests/, waits for the operator Pod, sets up the demo platform (database, queue,
its own Memcached, web app), applies the complete example set in
examples/financial-stronghold/, waits until every example object has its first real result,
and prints their state and what to try next. ``down`` deletes the objects while the operator
still runs, then the operator.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from stronghold_testbed import (
    demo_state,
    operator_image,
    paths,
    procs,
    progress,
    prometheus,
    services,
)
from stronghold_testbed.kubectl import run as kubectl_run
from stronghold_testbed.procs import TestbedError

REPO = operator_image.REPO
DEMO_NS = "stronghold-demo"
OPERATOR_NS = "stronghold-system"
EXAMPLES = REPO / "examples" / "financial-stronghold"
BACKUPS = Path("/var/lib/stronghold-demo/backups")
# The demo's own Memcached (examples/financial-stronghold): `break-cache` stops it without
# touching the one on 11211 that tests share.
# examples/financial-stronghold/backups-and-maintenance.yaml: hostPath, Retain.
BACKUP_PV = "stronghold-demo-backups"
CACHE_PORT = 11212
CACHE_PROC = "demo-memcached"
KINDS = "healthpolicies,backupschedules,scalingpolicies,maintenancewindows"
SETTLE_TIMEOUT = 420.0
# manifests/overlays/local: the operator's /metrics on the host network, which the testbed's
# Prometheus scrapes (file_sd target file "demo").
DEMO_METRICS = "127.0.0.1:19090"


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    code, out, err = kubectl_run(*args, input=input)
    if check and code != 0:
        raise TestbedError(f"kubectl {' '.join(args)}: {err}")
    return out


def _psql(*args: str, db: str = "postgres") -> str:
    argv = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1"]
    return procs.run([*argv, *args])


def _sql(statement: str) -> None:
    _psql("-q", "-c", statement)


def _seed_database() -> None:
    """The demo's application database, with a password-protected role (Secret in the demo)."""
    exists = _psql("-tAc", "SELECT 1 FROM pg_database WHERE datname='stronghold_demo'")
    if exists.strip() != "1":
        _sql("CREATE DATABASE stronghold_demo")
    _sql(
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='stronghold_demo') THEN "
        "CREATE ROLE stronghold_demo LOGIN PASSWORD 'demo-password'; END IF; END$$;"
    )
    _sql("GRANT ALL ON DATABASE stronghold_demo TO stronghold_demo")
    seed = Path(__file__).with_name("demo_seed.sql")
    _psql("-q", "-f", str(seed), db="stronghold_demo")


def _declare_queue() -> None:
    """The guide's Celery queue, which the demo HealthPolicy watches."""
    import pika

    params = pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F")
    conn = pika.BlockingConnection(params)
    try:
        conn.channel().queue_declare("celery", durable=True)
    finally:
        conn.close()


def _items() -> list[dict[str, Any]]:
    out = kubectl("get", KINDS, "-n", DEMO_NS, "-o", "json", check=False)
    try:
        items: list[dict[str, Any]] = json.loads(out)["items"]
    except (ValueError, KeyError):
        return []
    return items


def _deploy_operator(p: progress.Progress) -> None:
    with p.step("operator image", log=operator_image.build_log(operator_image.TAG)):
        operator_image.build()
    with p.step("demo web app image", log=operator_image.build_log(operator_image.WEBAPP_TAG)):
        operator_image.build_webapp()
    with p.step("CRDs (server-side apply)"):
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        for crd in sorted((REPO / "crds").glob("*.yaml")):
            kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd))
    with p.step("operator Deployment (manifests/overlays/local)") as s:
        # A new image under the same tag: start from no Deployment, so the one pod runs this
        # build (a rollout restart started the new hostNetwork pod while the old one still
        # held its ports; tests/integration/test_incluster.py does the same).
        s.note("removing a previous operator Deployment")
        kubectl(
            "delete",
            "deployment/stronghold-operator",
            "-n",
            OPERATOR_NS,
            "--ignore-not-found",
            "--cascade=foreground",
            "--wait=true",
            "--timeout=120s",
            check=False,
        )
        kubectl("apply", "-k", str(REPO / "manifests/overlays/local"))
        s.note("waiting for the rollout")
        kubectl(
            "rollout",
            "status",
            "deployment/stronghold-operator",
            "-n",
            OPERATOR_NS,
            "--timeout=180s",
        )
    prometheus.write_targets("demo", [DEMO_METRICS])


def _platform() -> None:
    _seed_database()
    _declare_queue()
    # The demo's backup volume (hostPath): owned by the Jobs' unprivileged user (uid 999).
    BACKUPS.mkdir(parents=True, exist_ok=True)
    os.chown(BACKUPS, 999, 999)
    BACKUPS.chmod(0o750)
    heal_cache()


def _drop_released_volume() -> None:
    """Delete the demo's backup PV once its claim is gone (Released): a Released volume never
    binds a new claim, so the next demo's first backup would wait for ever. The files stay on
    the node (hostPath, reclaim policy Retain); `apply -k` creates the PV again."""
    phase = kubectl("get", "pv", BACKUP_PV, "-o", "jsonpath={.status.phase}", check=False)
    if phase.strip() == "Released":
        kubectl("delete", "pv", BACKUP_PV, "--ignore-not-found", "--wait=true", "--timeout=60s")


def up() -> int:
    p = progress.Progress("demo up", 7)
    _deploy_operator(p)
    with p.step("demo platform (database, queue, Memcached on 11212)"):
        _platform()
    with p.step(f"applying {EXAMPLES.relative_to(REPO)}"):
        _drop_released_volume()  # left by a demo deleted before this fix, or by hand
        kubectl("apply", "-k", str(EXAMPLES))
    with p.step("first results (health, backup + verification, scaling from metrics)") as s:
        progress.wait_until(
            s, "the demo", lambda: demo_state.pending(_items()), SETTLE_TIMEOUT, every=3.0
        )
    p.done()
    summary()
    return 0


STATUS_COMMAND = f"kubectl stronghold status -n {DEMO_NS}"


def summary(console: Console | None = None) -> None:
    """The one-screen status of the demo namespace (``stronghold status``), and what to try."""
    from stronghold_operator import cli

    console = console or Console()
    cli.main(["status", "-n", DEMO_NS, "--kubeconfig", str(paths.admin_kubeconfig())])
    console.print(f"export KUBECONFIG={paths.admin_kubeconfig()}", markup=False)
    console.print(
        f"export PATH={Path(sys.executable).parent}:$PATH   # kubectl finds the plugin there",
        markup=False,
    )
    console.print(f"This screen again: {STATUS_COMMAND}", markup=False, highlight=False)
    console.print("Try this next:", markup=False)
    for cmd, why in TRY_NEXT:
        console.print(f"  {cmd}\n      {why}", markup=False, highlight=False, soft_wrap=True)


# Each is run as printed by tests/integration/test_demo_cycle.py.
TRY_NEXT = (
    (
        "stronghold-testbed demo break-cache",
        "stop the demo's Memcached: within ~1 min the HealthPolicy opens one incident, root "
        f"cause cache (kubectl get hpol -n {DEMO_NS} -w)",
    ),
    (
        "stronghold-testbed demo heal-cache",
        "start it again: the incident closes on the next healthy rounds",
    ),
    (
        f"stronghold backup now nightly -n {DEMO_NS} --wait",
        "take a verified backup now and wait for its result",
    ),
    (
        f"stronghold window start weekly -n {DEMO_NS} --for 10m --wait",
        "open the maintenance window now: pre-checks (a fresh verified backup, a snapshot), "
        "then incidents, scaling and the nightly backup are held for 10 minutes",
    ),
)


def break_cache() -> int:
    """Stop the demo's Memcached (the HealthPolicy's cache check and web's /health/ fail)."""
    stopped = procs.stop(CACHE_PROC)
    print("demo Memcached stopped" if stopped else "demo Memcached was not running")  # noqa: T201
    return 0


def heal_cache() -> int:
    """Start the demo's Memcached unless it runs."""
    if procs.owned_pid(CACHE_PROC) is None:
        services.start_memcached(CACHE_PROC, CACHE_PORT, megabytes=16)
        print(f"demo Memcached started on 127.0.0.1:{CACHE_PORT}")  # noqa: T201
    else:
        print("demo Memcached is already running")  # noqa: T201
    return 0


def _remaining() -> str | None:
    items = _items()
    if not items:
        return None
    return ", ".join(
        f"{i['kind']}/{i['metadata']['name']} (finalizers: "
        + (",".join(i["metadata"].get("finalizers") or []) or "none")
        + ")"
        for i in items
    )


def _operator_running() -> bool:
    out = kubectl(
        "get",
        "deployment/stronghold-operator",
        "-n",
        OPERATOR_NS,
        "-o",
        "jsonpath={.status.availableReplicas}",
        check=False,
    )
    return out.strip() not in ("", "0")


def _strip_finalizers() -> None:
    """The uninstall path without an operator (docs/install.md): nothing else will remove
    ops.stronghold.io/finalizer, so take it off by hand."""
    for i in _items():
        if i["metadata"].get("finalizers"):
            kind = i["kind"].lower()
            kubectl(
                "patch",
                kind,
                i["metadata"]["name"],
                "-n",
                DEMO_NS,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )


def _namespace_present() -> str | None:
    code, _, _ = kubectl_run("get", "namespace", DEMO_NS)
    return f"namespace {DEMO_NS} to go" if code == 0 else None


def down() -> int:
    p = progress.Progress("demo down", 4)
    with p.step("deleting the demo's objects while the operator still runs") as s:
        # The operator removes its finalizers; deleted after it, they would keep the
        # namespace Terminating for ever (docs/install.md, "Uninstall").
        kubectl("delete", KINDS, "--all", "-n", DEMO_NS, "--wait=false", check=False)
        if not _operator_running():
            s.note("no operator runs: removing its finalizers by hand")
            _strip_finalizers()
        progress.wait_until(s, "deleting the demo's objects", _remaining, 120)
    with p.step(f"deleting namespace {DEMO_NS}") as s:
        kubectl("delete", "namespace", DEMO_NS, "--ignore-not-found", "--wait=false")
        progress.wait_until(s, "deleting the namespace", _namespace_present, 180)
        _drop_released_volume()
    with p.step("removing the operator"):
        overlay = str(REPO / "manifests/overlays/local")
        kubectl("delete", "-k", overlay, "--ignore-not-found", "--wait=true", "--timeout=120s")
    with p.step("stopping the demo's Memcached"):
        procs.stop(CACHE_PROC)
        prometheus.remove_targets("demo")  # its history stays in Prometheus
    p.done()
    return 0
