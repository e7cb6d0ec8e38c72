"""``make demo``: deploy Stronghold like a user would, on the local cluster.

Builds the operator image and the demo web app's image locally, applies crds/ and the local
overlay of manifests/, waits for the operator Pod, sets up the demo platform (database, queue,
web app), applies the complete example set in examples/financial-stronghold/, and prints
``kubectl get stronghold``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from stronghold_testbed import operator_image, paths, procs
from stronghold_testbed.kubectl import run as kubectl_run
from stronghold_testbed.procs import TestbedError

REPO = operator_image.REPO
DEMO_NS = "stronghold-demo"
OPERATOR_NS = "stronghold-system"
EXAMPLES = REPO / "examples" / "financial-stronghold"
BACKUPS = Path("/var/lib/stronghold-demo/backups")


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    code, out, err = kubectl_run(*args, input=input)
    if check and code != 0:
        raise TestbedError(f"kubectl {' '.join(args)}: {err}")
    return out


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)  # noqa: T201


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


def _wait(what: str, fn: object, timeout: float) -> None:
    assert callable(fn)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(1)
    raise TestbedError(f"timed out waiting for {what}")


def _all_reconciled() -> bool:
    items = json.loads(kubectl("get", "stronghold", "-n", DEMO_NS, "-o", "json"))["items"]
    return bool(items) and all(
        any(
            c.get("type") == "Ready" and c.get("status") != "Unknown"
            for c in (i.get("status") or {}).get("conditions") or []
        )
        for i in items
    )


def up() -> int:
    _step("building the operator image (offline, from a host wheelhouse)")
    operator_image.build()
    _step("building the demo web app's image")
    operator_image.build_webapp()
    _step("applying crds/ (server-side)")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd))
    _step("applying manifests/overlays/local (kubectl apply -k)")
    kubectl("apply", "-k", str(REPO / "manifests/overlays/local"))
    # A new image under the same tag: roll the pod so it runs this build, and wait for it.
    kubectl("rollout", "restart", "deployment/stronghold-operator", "-n", OPERATOR_NS)
    kubectl(
        "rollout", "status", "deployment/stronghold-operator", "-n", OPERATOR_NS, "--timeout=180s"
    )
    _step("seeding the demo database")
    _seed_database()
    _declare_queue()
    # The demo's backup volume (hostPath): owned by the Jobs' unprivileged user (uid 999).
    BACKUPS.mkdir(parents=True, exist_ok=True)
    os.chown(BACKUPS, 999, 999)
    BACKUPS.chmod(0o750)
    if EXAMPLES.exists():
        _step(f"applying {EXAMPLES.relative_to(REPO)}")
        kubectl("apply", "-k", str(EXAMPLES))
        _wait("every policy to report Ready", _all_reconciled, 180)
    _step("kubectl get stronghold -A")
    print(kubectl("get", "stronghold", "-A"))  # noqa: T201
    print(f"export KUBECONFIG={paths.admin_kubeconfig()}")  # noqa: T201
    return 0


def down() -> int:
    # The demo's objects go first, while the operator still runs to remove its finalizers;
    # deleted after the operator, they would keep the namespace Terminating for ever.
    kubectl(
        "delete", "stronghold", "--all", "-n", DEMO_NS, "--wait=true", "--timeout=120s", check=False
    )
    kubectl("delete", "namespace", DEMO_NS, "--ignore-not-found", "--wait=false", check=False)
    kubectl(
        "delete",
        "-k",
        str(REPO / "manifests/overlays/local"),
        "--ignore-not-found",
        "--wait=false",
        check=False,
    )
    return 0
