"""Hung Docker Engine and metrics reads do not delay Kubernetes calls (issue 17 defect 6).

The hung endpoints are a TCP server of the test's own on 127.0.0.1 that accepts and never
answers: what a wedged Docker Engine or aggregated API server looks like to a client. The
Kubernetes call goes to the real local apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import kubernetes
import pytest

from stronghold_operator.platforms.compose import ComposeService, ComposeTarget
from stronghold_operator.platforms.kube import Kube, call, call_json
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
    kube_api: kubernetes.client.ApiClient, apply_crds: list[str]
) -> None:
    # 8 Docker threads and 4 metrics threads: the old shared pool had 6 in all on 2 cores.
    silent = Silent(enough=12)
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # A fresh configuration: a copy of the admin's kept sending to the real apiserver.
    hung_cfg = kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}")
    hung_kube = Kube(kubernetes.client.ApiClient(hung_cfg))
    docker = ComposeService(ComposeTarget("web", "app", f"tcp://127.0.0.1:{port}"))
    hung = [asyncio.create_task(docker.read_usage()) for _ in range(HUNG)]
    hung += [asyncio.create_task(pod_metrics(hung_kube, "default", "")) for _ in range(HUNG)]
    kube = Kube(kube_api)
    try:
        # Every thread the hung reads can get is stuck in a read before the Kubernetes call.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(silent.busy.wait(), 5)
        await asyncio.sleep(0.3)
        assert silent.accepted >= 6, silent.accepted
        assert not any(t.done() for t in hung)
        t0 = time.monotonic()
        namespaces = await call(kube.core.list_namespace, limit=1)
        crds = await call_json(
            kube.custom.list_cluster_custom_object,
            "ops.stronghold.io",
            "v1alpha1",
            "healthpolicies",
            limit=1,
        )
        elapsed = time.monotonic() - t0
        assert namespaces.items and "items" in crds
        assert elapsed < 2.0, f"Kubernetes calls took {elapsed:.1f}s behind hung reads"
        assert not any(t.done() for t in hung)  # still hung: the calls did not wait them out
    finally:
        for t in hung:
            t.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
        # Closing our end ends the threads' reads at once (the pools are shared).
        server.close()
        for w in silent.writers:
            w.close()
        await server.wait_closed()
        hung_kube.api.close()  # type: ignore[no-untyped-call]
