"""Install the Debian packages the testbed needs, only the missing ones (as root)."""

from __future__ import annotations

import os
import shutil
import subprocess

from stronghold_testbed.procs import TestbedError

# What the testbed uses, and why.
NEEDED = {
    "etcd-server": "etcd for the local apiserver",
    "docker.io": "Docker Engine: the kubelet's container runtime and Compose targets",
    "runc": "the OCI runtime dockerd calls (through our oom_score_adj wrapper)",
    "memcached": "the cache the platform uses",
    "golang-go": "Go, to build Kubernetes 1.20.2 from Debian's source",
    "golang-github-modern-go-reflect2-dev": "reflect2 1.0.2 replacing the vendored 1.0.1",
    "dpkg-dev": "apt-get source",
    "rsync": "the Kubernetes build",
    "debootstrap": "the Debian base image for Jobs and the demo web app",
    "busybox-static": "a 4 MB image for generic pods",
    "openssl": "the cluster's certificates",
    "iproute2": "the node's network namespace and veth pair (node_net)",
    "socat": "the kubelet relay on the node address; kubectl port-forward (dockershim runs it)",
    "gcc": "the static pause binary",
    "libc6-dev": "the static pause binary",
    "postgresql-client": "pg_dump/psql on the host (backup benchmark, tests)",
    "prometheus": "the Prometheus that prometheus checks query (tests start their own)",
    "prometheus-node-exporter": "the exporter that Prometheus scrapes in the tests",
}
# Only the benchmarks' peers (``make bench``).
BENCH = {
    "prometheus-blackbox-exporter": "the HTTP peer of the HealthPolicy benchmark",
    "prometheus-postgres-exporter": "the PostgreSQL peer of the HealthPolicy benchmark",
    "pigz": "the guide's pipeline with the Job's compressor (BackupSchedule benchmark)",
    "nginx-light": "a static HTTP target for 5,000 HTTP-only policies (--http-target nginx)",
}
# dpkg would start packaged daemons (Prometheus on 0.0.0.0:9090); the testbed starts its own.
NO_START = (
    b"#!/bin/sh\n# stronghold testbed: packaged services are not started on install\nexit 101\n"
)
POLICY_RC = "/usr/sbin/policy-rc.d"


def missing(names: list[str]) -> list[str]:
    out = []
    for name in names:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, check=False
        )
        if b"install ok installed" not in proc.stdout:
            out.append(name)
    return out


def ensure(names: list[str] | None = None) -> list[str]:
    """apt-get install what is missing; returns what was installed."""
    todo = missing(names or list(NEEDED))
    if names is None and shutil.which("kubectl") is None:
        todo.append("kubernetes-client")  # Debian's kubectl; any kubectl >= 1.20 will do
    if not todo:
        return []
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise TestbedError(
            "missing Debian packages "
            + ", ".join(todo)
            + ": run as root on Debian 12 (apt-get) or install them by hand"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    ours = not os.path.exists(POLICY_RC)
    if ours:
        with open(POLICY_RC, "wb") as f:
            f.write(NO_START)
        os.chmod(POLICY_RC, 0o755)
    try:
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *todo]):
            proc = subprocess.run(argv, capture_output=True, env=env, check=False)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).decode(errors="replace")[-1500:]
                raise TestbedError(f"{' '.join(argv[:3])} failed:\n{tail}")
    finally:
        if ours:
            os.unlink(POLICY_RC)
    return todo
