"""ScalingPolicy against a real Docker Engine: a Compose-labelled service really scales.

The service's containers run a shell loop that burns CPU while the file ``burn`` exists in a
bind-mounted directory the test controls. Each container is limited to 0.1 CPU and 32 MiB, so
burning means ~100 % of its limit. The test drives the same observe/decide/act pass the
operator's passes run (``services.scaling.evaluate``) with the real Engine behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stronghold_operator.conditions import utcnow
from stronghold_operator.logic import scaling as engine
from stronghold_operator.models.base import parse
from stronghold_operator.models.scaling import MissingBasis, ScalingPolicySpec
from stronghold_operator.platforms import compose
from stronghold_operator.services.scaling import Memory, evaluate
from tests.integration import kit
from tests.integration.conftest import DOCKER_SOCKET as SOCKET
from tests.support.policies import scaling_spec
from tests.support.workloads import start_compose_container

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def client(docker_client: Any) -> Any:
    return docker_client


def policy(project: str, **extra: Any) -> ScalingPolicySpec:
    # Faster than on the cluster: the test drives the passes itself, with no cooldowns.
    raw = scaling_spec(
        {"kind": "ComposeService", "project": project, "service": "web"},
        interval="2s",
        scaleUp={"maxStep": {"pods": 1}, "cooldown": "0s"},
        scaleDown={"sustainedFor": "8s", "cooldown": "0s"},
        metrics={"maxAge": "30s"},
    )
    raw.update(extra)
    return parse(ScalingPolicySpec, raw)


def numbers(client: Any, project: str, *, running: bool) -> list[int]:
    target = compose.ComposeTarget(project, "web", SOCKET)
    return [compose._number(c) for c in compose.containers(client, target, running=running)]


async def drive(
    p: ScalingPolicySpec, memory: Memory, until: Any, within: float
) -> list[engine.Decision]:
    """Run passes every interval until ``until(decision)`` or the timeout."""
    target = compose.ComposeService(
        compose.ComposeTarget(p.target_ref.project or "", "web", SOCKET)
    )
    seen: list[engine.Decision] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        outcome = await evaluate(p, target, memory, utcnow())
        seen.append(outcome.decision)
        if until(outcome.decision):
            return seen
        await asyncio.sleep(p.interval.total_seconds())
    raise AssertionError(f"timed out; last decisions: {[d.message for d in seen[-5:]]}")


async def test_compose_service_scales_up_and_down(
    client: Any, compose_project: tuple[str, Path]
) -> None:
    name, switch = compose_project
    template = start_compose_container(client, name, switch)
    p = policy(name)
    memory = Memory()

    # Idle: within the bands or below them, never a scale action.
    idle = await drive(p, memory, lambda d: d.metrics_available, 30)
    assert idle[-1].action == "Hold" and (idle[-1].cpu_percent or 0) < 40

    # Load on: CPU of every container at its 0.1-CPU limit -> scale up, one step at a time.
    (switch / "burn").touch()
    up = await drive(p, memory, lambda d: d.acts and d.to_replicas == 3, 120)
    ups = [d for d in up if d.acts]
    assert [(d.from_replicas, d.to_replicas) for d in ups] == [(1, 2), (2, 3)]
    assert all(d.reason == engine.CPU_ABOVE for d in ups)
    assert not any(d.action == "ScaleDown" for d in up)
    assert numbers(client, name, running=True) == [1, 2, 3]
    template.reload()
    for n in (2, 3):
        c = client.containers.get(f"{name}-web-{n}")
        assert c.status == "running"
        assert c.attrs["HostConfig"]["NanoCpus"] == template.attrs["HostConfig"]["NanoCpus"]
        assert c.attrs["HostConfig"]["Memory"] == template.attrs["HostConfig"]["Memory"]
        assert c.attrs["HostConfig"]["NetworkMode"] == "host"
        assert c.labels[compose.PROJECT] == name and c.labels[compose.NUMBER] == str(n)
        # "running" comes a moment before the command does: top() may still show runc init.
        kit.wait_until(f"{c.name} to run its command", _runs_sh(c), timeout=15, interval=0.2)
    # At max and still hot: held, and the status would say why.
    capped = await drive(p, memory, lambda d: d.reason == engine.CAPPED_BY_MAX, 30)
    assert capped[-1].limited == engine.CAPPED_BY_MAX

    # Load off: scale down only after 8 s below both bands, highest numbers first.
    (switch / "burn").unlink()
    down = await drive(p, memory, lambda d: d.acts and d.to_replicas == 1, 120)
    downs = [d for d in down if d.acts]
    assert [(d.from_replicas, d.to_replicas) for d in downs] == [(3, 2), (2, 1)]
    assert all(d.reason == engine.SUSTAINED_BELOW for d in downs)
    first = downs[0]
    assert first.below_since is not None
    assert (first.time - first.below_since).total_seconds() >= 8
    assert numbers(client, name, running=False) == [1]


async def test_dry_run_creates_nothing(client: Any, compose_project: tuple[str, Path]) -> None:
    name, switch = compose_project
    start_compose_container(client, name, switch)
    (switch / "burn").touch()
    p = policy(name, dryRun=True)
    seen = await drive(p, Memory(), lambda d: d.reason == engine.DRY_RUN, 60)
    assert seen[-1].action == "ScaleUp" and not seen[-1].acts
    assert seen[-1].message.startswith("dry run: would scale up 1 -> 2")
    assert numbers(client, name, running=False) == [1]


async def test_service_without_limits_is_refused(
    client: Any, compose_project: tuple[str, Path]
) -> None:
    name, switch = compose_project
    start_compose_container(client, name, switch, limits=False)
    target = compose.ComposeService(compose.ComposeTarget(name, "web", SOCKET))
    with pytest.raises(MissingBasis, match="no CPU limit"):
        await evaluate(policy(name), target, Memory(), utcnow())
    assert numbers(client, name, running=False) == [1]


def _runs_sh(container: Any) -> Callable[[], bool]:
    def probe() -> bool:
        return "sh" in " ".join(p for row in container.top()["Processes"] for p in row)

    return probe
