"""Fixtures for integration tests: the real local cluster and real services.

Nothing here is mocked. If the cluster or a service cannot be started, the session fails
with the testbed's message saying what and why (integration tests never skip).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import kubernetes
import pytest
from docker.errors import DockerException, ImageNotFound

from stronghold_operator.models.outbound import ENV as OUTBOUND_ENV
from stronghold_testbed import cluster, paths, services
from stronghold_testbed.procs import TestbedError
from tests.integration import kit
from tests.support.workloads import BUSYBOX

REPO = kit.REPO
OPERATOR_NS = kit.OPERATOR_NS
OPERATOR_SA = kit.OPERATOR_SA
KINDS = "healthpolicies,scalingpolicies,backupschedules,maintenancewindows"
DOCKER_SOCKET = "unix:///var/run/docker.sock"

# Every test target listens on 127.0.0.1: the testbed allows loopback explicitly, as an admin
# does with --outbound-allow (docs/security.md); probes, CLIs and operators started here inherit it.
os.environ.setdefault(OUTBOUND_ENV, "loopback,private")


@pytest.fixture(scope="session")
def testbed() -> Path:
    """Start (or reuse) the services and the local cluster; the admin kubeconfig path."""
    try:
        services.up()
        if not cluster.is_up():
            cluster.up()
    except TestbedError as exc:
        pytest.fail(f"the local testbed could not start: {exc}", pytrace=False)
    os.environ["KUBECONFIG"] = str(paths.admin_kubeconfig())
    return paths.admin_kubeconfig()


@pytest.fixture(scope="session")
def kube_api(testbed: Path) -> Iterator[kubernetes.client.ApiClient]:
    """A kubernetes ApiClient authenticated as the cluster admin."""
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(testbed), client_configuration=cfg)
    api = kubernetes.client.ApiClient(cfg)
    yield api
    api.close()


@pytest.fixture(scope="session")
def apply_crds(testbed: Path) -> list[str]:
    """Apply every CRD in crds/ (the very files users apply) and wait until Established."""
    try:
        return kit.apply_crds()
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def operator_kubeconfig(testbed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig for the operator's ServiceAccount, bound to the ClusterRole in manifests/."""
    return kit.operator_kubeconfig(tmp_path_factory.mktemp("sa") / "operator.kubeconfig")


@pytest.fixture
def namespace(testbed: Path) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kit.kubectl("create", "namespace", name)
    yield name
    kit.kubectl("delete", "namespace", name, "--wait=false", check=False)
    # An operator still serving it removes its finalizers itself; once it is gone (the
    # in-cluster test removes its Deployment), a finalizer left on our objects would keep
    # the namespace Terminating for ever. Stripped after the delete: kopf adds no finalizer
    # to an object that is being deleted.
    for obj in kit.kubectl("get", KINDS, "-n", name, "-o", "name", check=False).split():
        if ".ops.stronghold.io/" in obj:
            kit.kubectl(
                "patch",
                obj,
                "-n",
                name,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )


OPERATOR_LOGS = pytest.StashKey[list[Path]]()
LOG_TAIL_LINES = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report carries the last lines its operators logged (not DEBUG, not
    each API request): a CI failure then says what the operator saw, not only the test."""
    report = yield
    if report.failed and call.when == "call":
        for log in item.stash.get(OPERATOR_LOGS, []):
            text = log.read_text(errors="replace").splitlines()
            lines = [x for x in text if "[DEBUG" not in x and "HTTP Request:" not in x]
            report.sections.append((f"{log.name} (last lines)", "\n".join(lines[-LOG_TAIL_LINES:])))
    return report


@pytest.fixture
def run_operator(
    request: pytest.FixtureRequest,
    apply_crds: list[str],
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> Iterator[Callable[..., kit.OperatorProcess]]:
    """Start the real operator under its ServiceAccount, watching the given namespaces.

    Returns a factory: ``op = run_operator(namespace)``; every started operator is stopped
    at teardown. ``op.logs()`` has everything it logged (for asserting what it must not log).
    """
    # Two operators acting on the same objects make every result meaningless: remove an
    # in-cluster operator a demo may have left (the in-cluster test deploys its own).
    kit.delete_incluster_operator()
    started: list[kit.OperatorProcess] = []

    def factory(
        *namespaces: str, env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> kit.OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        op = kit.start_operator(operator_kubeconfig, namespaces, log, env, args)
        started.append(op)
        request.node.stash.setdefault(OPERATOR_LOGS, []).append(log)
        return op

    yield factory
    # kopf puts a finalizer on every object a daemon or timer serves: delete our objects while
    # the operator still runs (as users must), or their namespaces never finish terminating.
    for op in started:
        for ns in op.namespaces:
            kit.kubectl(
                "delete", KINDS, "--all", "-n", ns, "--wait=true", "--timeout=90s", check=False
            )
        op.kill(sig=15)


@pytest.fixture
def metrics_api(testbed: Path) -> None:
    """The resource metrics API must be served, or "load would scale it" proves nothing."""
    out = kit.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes", check=False)
    if '"NodeMetricsList"' not in out:
        pytest.fail(
            f"metrics.k8s.io/v1beta1 is not served by the cluster ({out.strip()[:200]}); "
            "start the testbed's metrics server (stronghold_testbed.metrics_server)",
            pytrace=False,
        )


@pytest.fixture
def switch(namespace: str) -> Iterator[Path]:
    """A host directory for the test's pods (hostPath); ``burn`` in it turns their load on."""
    path = Path("/tmp/stronghold-switch") / namespace
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def docker_client() -> Iterator[Any]:
    """The testbed's Docker Engine, with the busybox image the tests run."""
    try:
        c = docker.DockerClient(base_url=DOCKER_SOCKET, version="auto")
        c.ping()
    except DockerException as exc:
        pytest.fail(f"Docker Engine is not reachable at {DOCKER_SOCKET}: {exc}")
    try:
        c.images.get(BUSYBOX)
    except ImageNotFound:
        pytest.fail(f"image {BUSYBOX} is missing: build it with the testbed first")
    yield c
    c.close()


@pytest.fixture
def compose_project(docker_client: Any, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh Compose project name and its load-switch directory; its containers go after."""
    from stronghold_operator.platforms import compose

    name = f"sh{uuid.uuid4().hex[:10]}"
    switch = tmp_path / "switch"
    switch.mkdir()
    yield name, switch
    label = f"{compose.PROJECT}={name}"
    for c in docker_client.containers.list(all=True, filters={"label": label}):
        c.remove(force=True)
