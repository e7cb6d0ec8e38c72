"""Small helpers for integration tests: kubectl, polling, Events. Real components only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from stronghold_testbed import cluster
from stronghold_testbed.kubectl import run as kubectl_run
from tests.support import workloads

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NS = "stronghold-system"
OPERATOR_SA = "stronghold-operator"
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
T = TypeVar("T")

BURN = workloads.BURN


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    """kubectl as the cluster admin; raises with kubectl's stderr on failure."""
    code, out, err = kubectl_run(*args, input=input)
    if check and code != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {err}")
    return out if code == 0 else err


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json"))


def apply(manifest: dict[str, Any] | str, *, server_side: bool = False) -> str:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    extra = ["--server-side"] if server_side else []
    return kubectl("apply", *extra, "-f", "-", input=text)


def apply_in(namespace: str, obj: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def get(namespace: str, kind: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kubectl_json("get", kind, name, "-n", namespace)
    return body


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float = 60, interval: float = 0.5
) -> T:
    """Poll until ``probe`` returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except AssertionError as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def events_for(namespace: str, name: str) -> list[dict[str, Any]]:
    body = kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    items: list[dict[str, Any]] = body["items"]
    return items


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return dict(c)
    return None


@contextmanager
def hostpath_volume(namespace: str, path: Path, claim: str = "backups") -> Iterator[str]:
    """A PVC ``claim`` bound to a PersistentVolume on ``path``, a directory of this machine any
    user may write to (backup Jobs run as uid 999); the volume and the directory go after."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    objects = workloads.hostpath_claim(namespace, claim, path)
    apply({"apiVersion": "v1", "kind": "List", "items": objects})
    try:
        yield claim
    finally:
        kubectl("delete", "pv", objects[0]["metadata"]["name"], "--wait=false", check=False)
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_containers(label: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


@dataclass
class OperatorProcess:
    """The real operator (``stronghold run``) as a child process under its ServiceAccount."""

    proc: subprocess.Popen[bytes]
    log: Path
    liveness_port: int
    metrics_port: int
    namespaces: tuple[str, ...] = ()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def liveness(self) -> int:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=15
            ) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the operator (by default abruptly, as a crash would)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_operator(
    kubeconfig: Path,
    namespaces: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
) -> OperatorProcess:
    liveness, metrics = free_port(), free_port()
    argv = [
        str(VENV_BIN / "stronghold"),
        "run",
        "--standalone",
        "--verbose",
        f"--liveness=http://127.0.0.1:{liveness}/healthz",
        f"--metrics-port={metrics}",
        "--metrics-address=127.0.0.1",
        "--outbound-allow=loopback,private",  # the test targets listen on 127.0.0.1
    ]
    for ns in namespaces:
        argv += ["-n", ns]
    argv += args
    # The testbed has no pod network: backup Jobs need hostNetwork, which only the
    # operator's own setting allows (docs/security.md). A test's ``env`` may override it.
    testbed = {"STRONGHOLD_ALLOW_PRIVILEGED_JOBS": "hostNetwork"}
    full_env = dict(os.environ, KUBECONFIG=str(kubeconfig), **(testbed | (env or {})))
    out = log.open("ab")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    out.close()
    op = OperatorProcess(proc, log, liveness, metrics, tuple(namespaces))

    def started() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"operator exited with {proc.returncode}:\n{op.logs()[-3000:]}")
        try:
            return op.liveness() == 200
        except OSError:
            return False

    try:
        wait_until("the operator's liveness endpoint", started, timeout=60)
    except BaseException:
        op.kill()  # never leave an operator running behind a failed start
        raise
    return op


def apply_crds() -> list[str]:
    """Apply every CRD in crds/ (the very files users apply) and wait until Established."""
    files = sorted((REPO / "crds").glob("*.yaml"))
    if not files:
        raise AssertionError("no CRDs in crds/")
    names = []
    for f in files:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
        names.append(kubectl("get", "-f", str(f), "-o", "name").strip())
    for name in names:
        kubectl("wait", "--for=condition=Established", "--timeout=60s", name)
    return names


def operator_kubeconfig(out: Path) -> Path:
    """A kubeconfig for the operator's ServiceAccount, bound to the ClusterRole in manifests/."""
    for part in ("base/namespace.yaml", "base/serviceaccount.yaml"):
        kubectl("apply", "-f", str(REPO / "manifests" / part))
    kubectl("apply", "-k", str(REPO / "manifests/rbac/cluster"))
    wait_until(
        "the operator ServiceAccount",
        lambda: kubectl("get", "sa", OPERATOR_SA, "-n", OPERATOR_NS, check=False).startswith(
            "NAME"
        ),
        timeout=30,
    )
    return cluster.sa_kubeconfig(OPERATOR_NS, OPERATOR_SA, out)


def delete_incluster_operator(timeout: str = "90s") -> None:
    """Remove the in-cluster operator's Deployment and wait until its pods are gone."""
    kubectl(
        "delete",
        "deployment",
        "stronghold-operator",
        "-n",
        OPERATOR_NS,
        "--ignore-not-found",
        "--cascade=foreground",
        "--wait=true",
        f"--timeout={timeout}",
        check=False,
    )
