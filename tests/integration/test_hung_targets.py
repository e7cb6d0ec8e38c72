"""Hung Docker Engine and metrics reads do not delay Kubernetes calls (issue 17 defect 6).

The hung endpoints are a TCP server of the test's own on 127.0.0.1 that accepts and never
answers: what a wedged Docker Engine or aggregated API server looks like to a client. The
Kubernetes call goes to the real local apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import lightkube
import pytest
from lightkube.config.models import Cluster, User

from stronghold_operator.platforms.compose import ComposeService, ComposeTarget
from stronghold_operator.platforms.kube import METRICS_TIMEOUT, NAMESPACES, Kube, ours
from stronghold_operator.platforms.metrics_api import pod_metrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HUNG = 40


class Silent:
    """Accepts connections and reads whatever comes, never answering."""

    def __init__(self, enough: int) -> None:
        self.accepted = 0
        self.enough = enough
        self.busy = asyncio.Event()  # ``enough`` connections are held
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.accepted >= self.enough:
            self.busy.set()
        self.writers.append(writer)
        while await reader.read(65536):
            pass


async def test_kube_call_not_delayed_by_hung_docker_and_metrics_reads(
    testbed: Path, apply_crds: list[str]
) -> None:
    # 8 Docker threads and 4 metrics connections: the old shared pool had 6 in all on 2 cores.
    silent = Silent(enough=12)
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    kube = Kube(lightkube.KubeConfig.from_file(testbed))
    # The same Kube's metrics API client, pointed at the silent server: an aggregated API
    # server that accepts and never answers.
    hung = lightkube.KubeConfig.from_one(
        cluster=Cluster(server=f"http://127.0.0.1:{port}"), user=User(token="t")
    )
    kube.metrics_client = lightkube.AsyncClient(hung, timeout=METRICS_TIMEOUT, trust_env=False)
    docker = ComposeService(ComposeTarget("web", "app", f"tcp://127.0.0.1:{port}"))
    reads = [asyncio.create_task(docker.read_usage()) for _ in range(HUNG)]
    reads += [asyncio.create_task(pod_metrics(kube, "default", {})) for _ in range(HUNG)]
    try:
        # Every thread and connection the hung reads can get is stuck before the calls.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(silent.busy.wait(), 5)
        await asyncio.sleep(0.3)
        assert silent.accepted >= 6, silent.accepted
        assert not any(t.done() for t in reads)
        t0 = time.monotonic()
        namespaces = await kube.list(NAMESPACES)
        policies = await kube.list(ours("healthpolicies"), "default")
        elapsed = time.monotonic() - t0
        assert namespaces and isinstance(policies, list)
        assert elapsed < 2.0, f"Kubernetes calls took {elapsed:.1f}s behind hung reads"
        assert not any(t.done() for t in reads)  # still hung: the calls did not wait them out
    finally:
        for t in reads:
            t.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        # Closing our end ends the threads' reads at once (the pools are shared).
        server.close()
        for w in silent.writers:
            w.close()
        await server.wait_closed()
        await kube.aclose()
