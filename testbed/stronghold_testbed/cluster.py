"""A real single-node Kubernetes 1.20 on this machine: etcd, apiserver, controller-manager,
scheduler and kubelet (dockershim) on 127.0.0.1, started and stopped by pid.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from stronghold_testbed import (
    docker_engine,
    images,
    node_net,
    packages,
    paths,
    pki,
    procs,
    progress,
)
from stronghold_testbed.procs import TestbedError

BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
# Start order; down stops in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
PORTS = {"etcd": 2379, "kube-apiserver": 6443, "kubelet": 10250}
KUBELET_ROOT = "kubelet"  # under run/


def _bin(name: str) -> str:
    return str(paths.bin_dir() / name)


def build() -> None:
    """Build the Kubernetes binaries unless cached (first run: about 5-7 minutes on 2 cores)."""
    if all((paths.bin_dir() / b).exists() for b in BINARIES):
        return
    script = paths.SCRIPTS / "build-kubernetes.sh"
    env = {"STRONGHOLD_CACHE": str(paths.cache_dir())}
    progress.run_logged(["bash", str(script)], build_log(), env=env, what="building Kubernetes")


def build_log() -> Path:
    return paths.cache_dir() / "build-kubernetes.log"


def _admin_token() -> str:
    cfg = yaml.safe_load(paths.admin_kubeconfig().read_text())
    return str(cfg["users"][0]["user"]["token"])


def _api_get(path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(paths.pki_dir() / "ca.crt"))
    req = urllib.request.Request(
        pki.APISERVER_URL + path, headers={"Authorization": f"Bearer {_admin_token()}"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _apiserver_ready() -> bool:
    return _api_get("/readyz")[0] == 200


def _node_ready() -> bool:
    status, body = _api_get(f"/api/v1/nodes/{pki.NODE_NAME}")
    if status != 200:
        return False
    conds = json.loads(body).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _forget_other_nodes() -> None:
    """Delete Node objects other than ours: a cluster kept from an older testbed (a node
    named otherwise) would leave a NotReady node the scheduler and tests would see."""
    out = procs.run(
        ["kubectl", f"--kubeconfig={paths.admin_kubeconfig()}", "get", "nodes", "-o", "name"]
    )
    stale = [n for n in out.split() if n != f"node/{pki.NODE_NAME}"]
    if stale:
        procs.run(["kubectl", f"--kubeconfig={paths.admin_kubeconfig()}", "delete", *stale])


def _default_sa_ready() -> bool:
    return _api_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200


def _start_etcd() -> None:
    data = paths.run_dir() / "etcd"
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    procs.start(
        "etcd",
        [
            shutil.which("etcd") or "etcd",
            "--name=stronghold",
            f"--data-dir={data}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=stronghold=http://127.0.0.1:2380",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ],
        # Debian's etcd 3.4 refuses to start on some architectures without this; harmless here.
        env={"ETCD_UNSUPPORTED_ARCH": "amd64"},
    )
    procs.wait_for("etcd", lambda: procs.port_open(2379), 30, log="etcd")


def _start_apiserver() -> None:
    d = paths.pki_dir()
    procs.start(
        "kube-apiserver",
        [
            _bin("kube-apiserver"),
            "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--secure-port=6443",
            "--insecure-port=0",
            f"--tls-cert-file={d / 'apiserver.crt'}",
            f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=false",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--api-audiences=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            # Aggregation layer (metrics.k8s.io is served by the testbed's metrics server).
            f"--requestheader-client-ca-file={d / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={d / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={d / 'front-proxy-client.key'}",
            "--enable-aggregator-routing=false",
            # The kubelet on the node's address (node_net), verified by the cluster CA.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={d / 'ca.crt'}",
            f"--kubelet-client-certificate={d / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={d / 'apiserver-kubelet-client.key'}",
            "--profiling=false",
            "--v=1",
        ],
    )
    procs.wait_for("kube-apiserver", _apiserver_ready, 90, log="kube-apiserver")


def _start_local_component(name: str, *flags: str) -> None:
    """kube-controller-manager or kube-scheduler: one instance, no leader election, no
    insecure port, its own kubeconfig (``pki`` writes ``<name without kube->.kubeconfig``)."""
    kubeconfig = paths.pki_dir() / f"{name.removeprefix('kube-')}.kubeconfig"
    procs.start(
        name,
        [
            _bin(name),
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--port=0",
            *flags,
            "--profiling=false",
            "--v=1",
        ],
    )


def _start_controller_manager() -> None:
    d = paths.pki_dir()
    _start_local_component(
        "kube-controller-manager",
        f"--service-account-private-key-file={d / 'sa.key'}",
        f"--root-ca-file={d / 'ca.crt'}",
        "--use-service-account-credentials=true",
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service,-route",
        "--horizontal-pod-autoscaler-sync-period=15s",
    )


def _start_scheduler() -> None:
    _start_local_component("kube-scheduler")


def _kubelet_config() -> Path:
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            # The apiserver's client certificate (pki: apiserver-kubelet-client).
            "x509": {"clientCAFile": str(paths.pki_dir() / "ca.crt")},
        },
        "tlsCertFile": str(paths.pki_dir() / "kubelet-server.crt"),
        "tlsPrivateKeyFile": str(paths.pki_dir() / "kubelet-server.key"),
        "authorization": {"mode": "AlwaysAllow"},
        # This machine: cgroup v1, no systemd, no QoS cgroup hierarchy.
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        # Images exist only locally (no registry): never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
        "maxPods": 200,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
    }
    path = paths.run_dir() / "kubelet-config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start_kubelet() -> None:
    root = paths.run_dir() / KUBELET_ROOT
    root.mkdir(parents=True, exist_ok=True)
    procs.start(
        "kubelet",
        [
            _bin("kubelet"),
            f"--kubeconfig={paths.pki_dir() / 'kubelet.kubeconfig'}",
            f"--config={_kubelet_config()}",
            f"--root-dir={root}",
            f"--cert-dir={root / 'pki'}",
            f"--hostname-override={pki.NODE_NAME}",
            "--container-runtime=docker",
            f"--docker-endpoint=unix://{docker_engine.SOCKET}",
            f"--pod-infra-container-image={images.PAUSE}",
            "--v=1",
        ],
    )
    procs.wait_for("node Ready", _node_ready, 120, log="kubelet")


METRICS_PORT = 4443


def _metrics_api_objects() -> str:
    """APIService + ExternalName Service: the apiserver proxies metrics.k8s.io to localhost."""
    ca = base64.b64encode((paths.pki_dir() / "ca.crt").read_bytes()).decode()
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "metrics-server", "namespace": "kube-system"},
        "spec": {
            "type": "ExternalName",
            "externalName": "localhost",
            "ports": [{"name": "https", "port": METRICS_PORT, "protocol": "TCP"}],
        },
    }
    apiservice = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1beta1.metrics.k8s.io"},
        "spec": {
            "group": "metrics.k8s.io",
            "version": "v1beta1",
            "service": {"name": "metrics-server", "namespace": "kube-system", "port": METRICS_PORT},
            "caBundle": ca,
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [service, apiservice]})


def _metrics_available() -> bool:
    # The APIService turns Available before the aggregator routes to it: ask for data.
    return _api_get("/apis/metrics.k8s.io/v1beta1/nodes")[0] == 200


def _start_metrics_server() -> None:
    """The testbed's stand-in for metrics-server: pod usage from Docker stats (see
    testbed/metrics_server.py), served through the aggregation layer like the real one."""
    d = paths.pki_dir()
    procs.start(
        "metrics-server",
        [
            sys.executable,
            "-m",
            "stronghold_testbed.metrics_server",
            f"--port={METRICS_PORT}",
            "--address=127.0.0.1",
            f"--cert={d / 'metrics-server.crt'}",
            f"--key={d / 'metrics-server.key'}",
            f"--requestheader-client-ca={d / 'front-proxy-ca.crt'}",
            f"--node-name={pki.NODE_NAME}",
            "--period=5",
        ],
    )
    procs.wait_for(
        "metrics server", lambda: procs.port_open(METRICS_PORT), 30, log="metrics-server"
    )


# Docker's parent cgroup of every container (cgroupfs driver, cgroup v1).
DOCKER_CPU_CGROUP = Path("/sys/fs/cgroup/cpu/docker")


def _weigh_pods() -> None:
    """Give the pods' cgroup the CPU weight a kubelet gives its ``kubepods`` cgroup.

    A real kubelet (cgroupsPerQOS) puts all pods under ``kubepods`` with cpu.shares equal to
    the node's allocatable millicores: 2048 on two cores. This machine has no QoS hierarchy,
    so the pods sit under Docker's ``/docker`` with the default 1024, the weight of ONE busy
    host process: a backup Job's pg_dump, pigz and helper together got what the PostgreSQL
    backend feeding them got alone, which no real node does to its pods.
    """
    if not DOCKER_CPU_CGROUP.parent.is_dir():
        return  # not cgroup v1 with a cpu controller: nothing to emulate
    shares = 1024 * (os.cpu_count() or 1)
    try:
        DOCKER_CPU_CGROUP.mkdir(exist_ok=True)  # Docker creates it with the first container
        (DOCKER_CPU_CGROUP / "cpu.shares").write_text(f"{shares}\n")
    except OSError as exc:
        raise TestbedError(
            f"cannot set the pods' CPU weight in {DOCKER_CPU_CGROUP}: {exc}"
        ) from exc


# What a running cluster must have been started with for `up` to keep it (run/layout).
LAYOUT = f"node {pki.NODE_NAME}; kubelet relayed from {node_net.NODE_ADDR}; CA-verified kubelet\n"


def _layout() -> str:
    try:
        return (paths.run_dir() / "layout").read_text()
    except OSError:
        return ""


@dataclass
class UpReport:
    seconds: float
    docker: str
    images: dict[str, str]
    started: list[str]


# long: the steps of `cluster up` in order, each under its progress line.
def up(*, with_images: bool = True, out: progress.Progress | None = None) -> UpReport:
    """Install, build, and start whatever is not running yet. Idempotent."""
    p = out or progress.Progress("cluster up", 7)
    t0 = time.monotonic()
    with p.step("Debian packages (apt-get install what is missing)"):
        packages.ensure()
    with p.step("Kubernetes 1.20 binaries (first run: builds from source)", log=build_log()):
        build()
    with p.step("Docker Engine"):
        docker_state = docker_engine.ensure()
    with p.step("workload images (pause, busybox, Debian base)"):
        imgs = images.ensure() if with_images else images.ensure([images.PAUSE])
    with p.step("certificates and kubeconfigs"):
        pki.ensure()
    paths.run_dir().mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    with p.step("control plane and kubelet") as s:
        if procs.owned_pid("etcd") is not None and _layout() != LAYOUT:
            # Started by a testbed of another layout (an older node name, other flags): its
            # kubelet would never become the node `up` waits for.
            s.note("the running cluster has another layout: restarting it")
            for name in ("metrics-server", *reversed(COMPONENTS)):
                procs.stop(name)
        if procs.owned_pid("etcd") is None:
            # A cluster whose etcd is not running was stopped or killed: start from a clean
            # slate, or leftover pods (an old operator among them) would come back and act on
            # new tests.
            s.note("clearing a stopped cluster's state")
            _clear_state()
        s.note(f"node address {node_net.NODE_ADDR} (network namespace {node_net.NETNS})")
        node_net.ensure()
        started += _start_components(s)
        started += node_net.start_relay()
        (paths.run_dir() / "layout").write_text(LAYOUT)
        _weigh_pods()
        s.note("waiting for the node to be Ready")
        procs.wait_for("node Ready", _node_ready, 120, log="kubelet")
        _forget_other_nodes()
        s.note("waiting for the default ServiceAccount")
        procs.wait_for(
            "default ServiceAccount", _default_sa_ready, 60, log="kube-controller-manager"
        )
    with p.step("metrics server (metrics.k8s.io)"):
        if procs.owned_pid("metrics-server") is None:
            _start_metrics_server()
            started.append("metrics-server")
        procs.run(
            ["kubectl", f"--kubeconfig={paths.admin_kubeconfig()}", "apply", "-f", "-"],
            input=_metrics_api_objects().encode(),
        )
        procs.wait_for("metrics.k8s.io APIService", _metrics_available, 60, log="metrics-server")
    return UpReport(time.monotonic() - t0, docker_state, imgs, started)


def _start_components(s: progress.Step) -> list[str]:
    """Start each component that is not running, in order; the names started."""
    started: list[str] = []
    starters = {
        "etcd": _start_etcd,
        "kube-apiserver": _start_apiserver,
        "kube-controller-manager": _start_controller_manager,
        "kube-scheduler": _start_scheduler,
        "kubelet": _start_kubelet,
    }
    for name in COMPONENTS:
        if procs.owned_pid(name) is not None:
            continue
        port = PORTS.get(name)
        if port is not None and procs.port_open(port):
            raise TestbedError(
                f"port {port} is taken by a process stronghold did not start; "
                f"cannot start {name} (is another cluster running?)"
            )
        s.note(f"starting {name} (log: {paths.log_dir() / name}.log)")
        starters[name]()
        started.append(name)
    return started


def _remove_pod_containers() -> int:
    """Containers the kubelet created outlive it; remove them (and only them)."""
    if not docker_engine.running():
        return 0
    ids = procs.run(
        ["docker", "ps", "-aq", "--filter", "label=io.kubernetes.docker.type"], check=False
    ).split()
    if ids:
        procs.run(["docker", "rm", "-f", *ids], check=False)
    return len(ids)


def _unmount_under(root: Path) -> None:
    """Unmount the kubelet's volume mounts (tmpfs for Secrets) before deleting its root."""
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            target = line.split()[1]
            if target.startswith(str(root) + "/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def _clear_state() -> int:
    """Remove pod containers, the kubelet's mounts and root, and etcd's data."""
    for name in ("kubelet", "kube-apiserver", "etcd"):
        if procs.owned_pid(name) is not None:
            raise TestbedError(f"{name} is still running; stop the cluster first")
    removed = _remove_pod_containers()
    root = paths.run_dir()
    _unmount_under(root)
    for sub in ("etcd", KUBELET_ROOT):
        shutil.rmtree(root / sub, ignore_errors=True)
    return removed


def down(*, docker: bool = True) -> list[str]:
    """Stop what ``up`` started (by pid), remove pod containers, keep the cache."""
    stopped = [name for name in ("metrics-server", *reversed(COMPONENTS)) if procs.stop(name)]
    stopped += node_net.stop_relay()
    node_net.remove()
    removed = _clear_state()
    if removed:
        stopped.append(f"{removed} pod container(s)")
    if docker and procs.stop("dockerd", timeout=30):
        stopped.append("dockerd")
    return stopped


def status() -> dict[str, str]:
    """What runs: each component with its pid, or why it is not ours."""
    out: dict[str, str] = {}
    out["dockerd"] = (
        f"running (pid {procs.owned_pid('dockerd')})"
        if docker_engine.owned()
        else ("running (not started by stronghold)" if docker_engine.running() else "stopped")
    )
    for name in (*COMPONENTS, *node_net.RELAYS, "metrics-server"):
        pid = procs.owned_pid(name)
        out[name] = f"running (pid {pid})" if pid else "stopped"
    if procs.owned_pid("kube-apiserver"):
        try:
            out["node"] = "Ready" if _node_ready() else "NotReady"
        except OSError as exc:
            out["node"] = f"unreachable ({exc})"
    return out


def is_up() -> bool:
    try:
        return procs.owned_pid("kube-apiserver") is not None and _node_ready()
    except OSError:
        return False


def sa_kubeconfig(namespace: str, name: str, path: Path, hours: int = 24) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (token from the TokenRequest API).

    Tests run the operator with it so its real least-privilege RBAC is what is exercised.
    """
    admin = str(paths.admin_kubeconfig())
    raw = procs.run(
        [
            "kubectl",
            f"--kubeconfig={admin}",
            "create",
            "--raw",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            "-f",
            "-",
        ],
        input=json.dumps(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": hours * 3600},
            }
        ).encode(),
    )
    token = json.loads(raw)["status"]["token"]
    return pki.write_kubeconfig(
        path, pki.kubeconfig(token, f"system:serviceaccount:{namespace}:{name}")
    )
