"""Docker Compose services through the Docker Engine API (the ``docker`` SDK).

A Compose service is the set of containers carrying the labels ``com.docker.compose.project``,
``com.docker.compose.service`` and ``com.docker.compose.container-number`` (what ``docker
compose up --scale`` creates). Scaling up creates containers from the configuration of the
service's existing lowest-numbered container with the next free numbers; scaling down stops
(SIGTERM, then the container's stop timeout) and removes the highest numbers first.

The SDK is synchronous: every public coroutine runs its work in a thread of the Docker pool
(``executors.DOCKER``), and every Engine call has a timeout (``DOCKER_TIMEOUT_S``).
Access to the Docker socket is root-equivalent on the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import docker
from docker.errors import DockerException, NotFound

from stronghold_operator.models.scaling import MissingBasis, ReplicaUsage, TargetNotFound
from stronghold_operator.platforms import fence
from stronghold_operator.platforms.executors import DOCKER, run_in

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
ONEOFF = "com.docker.compose.oneoff"

DEFAULT_STOP_TIMEOUT = 10
# Seconds any one Engine API call may take (a stop adds the container's stop timeout):
# a hung Engine then gives its thread back instead of holding it for a minute.
DOCKER_TIMEOUT_S = 20

T = TypeVar("T")


@dataclass(frozen=True)
class ComposeTarget:
    project: str
    service: str
    host: str = "unix:///var/run/docker.sock"


def connect(host: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=host, version="auto", timeout=DOCKER_TIMEOUT_S)


def _number(container: Any) -> int:
    try:
        return int(container.labels.get(NUMBER, "0"))
    except ValueError:
        return 0


def containers(client: docker.DockerClient, target: ComposeTarget, *, running: bool) -> list[Any]:
    """The service's containers, lowest number first (one-off `run` containers excluded)."""
    # ignore_removed: a container removed between docker-py's list and its inspect (a
    # scale-down under way) is gone, not an error (seen as a 404 in CI).
    found = client.containers.list(
        all=not running,
        filters={"label": [f"{PROJECT}={target.project}", f"{SERVICE}={target.service}"]},
        ignore_removed=True,
    )
    found = [c for c in found if c.labels.get(ONEOFF, "False") != "True"]
    return sorted(found, key=_number)


def replicas(client: docker.DockerClient, target: ComposeTarget) -> int:
    """Running containers of the service; raises TargetNotFound when it has none at all."""
    if not containers(client, target, running=False):
        raise TargetNotFound(
            f"no containers labelled {PROJECT}={target.project}, {SERVICE}={target.service}"
        )
    return len(containers(client, target, running=True))


def _limits(attrs: Mapping[str, Any]) -> tuple[float, float]:
    """(CPU cores, memory bytes) the container is limited to; 0 where unlimited."""
    hc = attrs.get("HostConfig") or {}
    cpu = 0.0
    if hc.get("NanoCpus"):
        cpu = hc["NanoCpus"] / 1e9
    elif hc.get("CpuQuota") and hc.get("CpuQuota", 0) > 0:
        cpu = hc["CpuQuota"] / (hc.get("CpuPeriod") or 100_000)
    return cpu, float(hc.get("Memory") or 0)


def cpu_cores(stats: Mapping[str, Any]) -> float:
    """CPU in cores from one Engine stats reading (its own previous sample is one second old)."""
    cur, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    used = cur.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get(
        "total_usage", 0
    )
    system = cur.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cur.get("online_cpus") or len(cur.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    if used <= 0 or system <= 0:
        return 0.0
    return float(used) / float(system) * float(online)


def memory_bytes(stats: Mapping[str, Any]) -> float:
    """Working set as `docker stats` shows it: usage minus inactive page cache."""
    mem = stats.get("memory_stats") or {}
    usage = float(mem.get("usage", 0))
    detail = mem.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return max(0.0, usage - float(cache))


def _usage_one(container: Any) -> ReplicaUsage:
    container.reload()
    cpu_limit, mem_limit = _limits(container.attrs)
    if cpu_limit <= 0 or mem_limit <= 0:
        missing = "CPU" if cpu_limit <= 0 else "memory"
        raise MissingBasis(
            f"container {container.name} has no {missing} limit; utilisation is measured "
            "against limits for Docker targets"
        )
    stats = container.stats(stream=False)
    return ReplicaUsage(
        name=container.name,
        cpu_cores=cpu_cores(stats),
        memory_bytes=memory_bytes(stats),
        cpu_basis_cores=cpu_limit,
        memory_basis_bytes=mem_limit,
        timestamp=datetime.now(UTC),
    )


def usage(client: docker.DockerClient, target: ComposeTarget) -> list[ReplicaUsage]:
    """Usage of every running container relative to its limits (stats read in parallel)."""
    running = containers(client, target, running=True)
    if not running:
        return []
    # Each stats call waits about a second for its CPU sample: read them side by side.
    with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
        return list(pool.map(_usage_one, running))


def _next_name(template: Any, number: int, target: ComposeTarget) -> str:
    """Compose v2 names containers project-service-N (v1: project_service_N): keep the style."""
    old = template.name
    m = re.match(rf"^(.*[-_]){_number(template)}$", old)
    if m:
        return f"{m.group(1)}{number}"
    return f"{target.project}-{target.service}-{number}"


def _create_like(client: docker.DockerClient, template: Any, number: int, name: str) -> Any:
    cfg = template.attrs.get("Config") or {}
    labels = dict(cfg.get("Labels") or {})
    labels[NUMBER] = str(number)
    api = client.api
    created = api.create_container(
        image=cfg.get("Image") or template.attrs.get("Image"),
        command=cfg.get("Cmd"),
        entrypoint=cfg.get("Entrypoint"),
        environment=cfg.get("Env"),
        labels=labels,
        name=name,
        user=cfg.get("User") or None,
        working_dir=cfg.get("WorkingDir") or None,
        tty=bool(cfg.get("Tty")),
        stdin_open=bool(cfg.get("OpenStdin")),
        stop_signal=cfg.get("StopSignal"),
        stop_timeout=cfg.get("StopTimeout"),
        healthcheck=cfg.get("Healthcheck"),
        # The inspected HostConfig is the create API's HostConfig: limits, mounts, network
        # mode, restart policy and all carry over unchanged.
        host_config=template.attrs.get("HostConfig"),
    )
    api.start(created["Id"])
    return client.containers.get(created["Id"])


def _stop_remove(container: Any) -> None:
    timeout = (container.attrs.get("Config") or {}).get("StopTimeout") or DEFAULT_STOP_TIMEOUT
    try:
        container.stop(timeout=int(timeout))
        container.remove()
    except NotFound:
        pass  # already gone: the goal is reached


def scale_to(client: docker.DockerClient, target: ComposeTarget, wanted: int) -> list[str]:
    """Create or remove containers until ``wanted`` run; returns the names touched."""
    running = containers(client, target, running=True)
    everyone = containers(client, target, running=False)
    if not everyone:
        raise TargetNotFound(f"compose service {target.project}/{target.service} has no containers")
    touched: list[str] = []
    if wanted > len(running):
        template = (running or everyone)[0]
        template.reload()
        number = max(_number(c) for c in everyone)
        for _ in range(wanted - len(running)):
            number += 1
            name = _next_name(template, number, target)
            touched.append(_create_like(client, template, number, name).name)
    elif wanted < len(running):
        doomed = sorted(running, key=_number, reverse=True)[: len(running) - wanted]
        with ThreadPoolExecutor(max_workers=len(doomed)) as pool:
            list(pool.map(_stop_remove, doomed))
        touched = [c.name for c in doomed]
    return touched


def restart(client: docker.DockerClient, target: ComposeTarget) -> list[str]:
    """``docker compose restart SERVICE``, one container at a time (the guide's loop): each
    stopped with its own stop timeout and started again before the next. Raises
    :class:`TargetNotFound` when the service has no running container."""
    running = containers(client, target, running=True)
    if not running:
        raise TargetNotFound(f"compose service {target.project}/{target.service}: no container")
    done = []
    for c in running:
        stop = c.attrs.get("Config", {}).get("StopTimeout") or DEFAULT_STOP_TIMEOUT
        c.restart(timeout=stop)
        done.append(str(c.name))
    return done


# --- async façade used by the handler ---------------------------------------------------


@dataclass(frozen=True)
class ComposeService:
    """A Compose service as a scaling target; blocking SDK calls run in worker threads."""

    target: ComposeTarget

    async def read_replicas(self) -> int:
        return await run_in(DOCKER, _with_client, self.target, replicas)

    async def read_usage(self) -> list[ReplicaUsage]:
        return await run_in(DOCKER, _with_client, self.target, usage)

    async def scale(self, wanted: int) -> list[str]:
        fence.check("scale")
        return await run_in(DOCKER, _with_client, self.target, lambda c, t: scale_to(c, t, wanted))

    async def restart(self) -> list[str]:
        fence.check("restart")
        return await run_in(DOCKER, _with_client, self.target, restart)


def _with_client(target: ComposeTarget, fn: Callable[[Any, ComposeTarget], T]) -> T:
    try:
        client = connect(target.host)
    except DockerException as exc:
        raise ConnectionError(f"Docker Engine at {target.host}: {exc}") from None
    try:
        return fn(client, target)
    finally:
        client.close()
