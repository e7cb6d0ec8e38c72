"""An apiserver frozen for two minutes does not restart the operator (issue 17 defect 11).

The test SIGSTOPs the kube-apiserver the testbed started (its pid file, checked against the
binary) and always SIGCONTs it. While it is frozen, the operator's liveness endpoint must
keep answering 200 within the kubelet's probe timeout and the process must keep running;
after SIGCONT the HealthPolicy's status must move again within one interval.

It freezes the shared apiserver: run it alone, never beside other integration tests.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from stronghold_testbed import procs
from tests.integration import health_kit as hk
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(420)]

OUTAGE_S = 120.0
INTERVAL_S = 15
KUBELET_TIMEOUT_S = 10.0  # manifests/base/deployment.yaml: livenessProbe.timeoutSeconds


class LivenessWatcher(threading.Thread):
    """Asks the operator's liveness endpoint every 2 s, as the kubelet would."""

    def __init__(self, op: kit.OperatorProcess) -> None:
        super().__init__(daemon=True)
        self.op = op
        self.stop = threading.Event()
        self.answers: list[tuple[float, int | str, float]] = []  # (at, status, seconds)

    def run(self) -> None:
        url = f"http://127.0.0.1:{self.op.liveness_port}/healthz"
        while not self.stop.is_set():
            t0 = time.monotonic()
            status: int | str
            try:
                with urllib.request.urlopen(url, timeout=KUBELET_TIMEOUT_S) as resp:
                    status = int(resp.status)
            except urllib.error.HTTPError as exc:
                status = int(exc.code)
            except OSError as exc:  # refused, or no answer within the kubelet's timeout
                status = type(exc).__name__
            self.answers.append((t0, status, time.monotonic() - t0))
            if self.op.proc.poll() is not None:
                self.answers.append((time.monotonic(), f"exited {self.op.proc.returncode}", 0))
                return
            self.stop.wait(2.0)

    def failures(self) -> list[tuple[float, int | str, float]]:
        return [a for a in self.answers if a[1] != 200 or a[2] > KUBELET_TIMEOUT_S]


def last_probe(namespace: str, name: str) -> datetime | None:
    obj: dict[str, Any] = kit.kubectl_json("get", "healthpolicy", name, "-n", namespace)
    value = (obj.get("status") or {}).get("lastProbeTime")
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def test_frozen_apiserver_does_not_restart_the_operator(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    hk.require("PostgreSQL", 5432)
    pid = procs.owned_pid("kube-apiserver")  # the testbed's own, checked against its binary
    assert pid is not None, "the testbed's kube-apiserver is not running"
    kit.apply(
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "HealthPolicy",
            "metadata": {"name": "outage", "namespace": namespace},
            "spec": {
                "interval": f"{INTERVAL_S}s",
                "checks": [
                    {"name": "db", "postgres": {"host": "127.0.0.1", "database": "postgres"}}
                ],
            },
        }
    )
    # Every round writes lastProbeTime (its refresh period below the interval), so a write
    # after the outage shows that rounds go on; a short watch grace makes a lag clock kept
    # across it show.
    op = run_operator(
        namespace,
        env={"STRONGHOLD_HEALTH_PROBE_TIME_REFRESH": "5", "STRONGHOLD_WATCH_GRACE": "60"},
    )
    kit.wait_until("a first status", lambda: last_probe(namespace, "outage"), timeout=60)
    watcher = LivenessWatcher(op)
    watcher.start()
    frozen_at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        while time.monotonic() - frozen_at < OUTAGE_S:
            assert op.proc.poll() is None, f"operator exited:\n{op.logs()[-3000:]}"
            time.sleep(1.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = datetime.now(UTC)
    resumed_at = time.monotonic()
    try:
        # One interval, plus a few seconds for the apiserver's own first answers.
        updated = kit.wait_until(
            "a status write after the apiserver came back",
            lambda: (t := last_probe(namespace, "outage")) is not None and t > resumed,
            timeout=INTERVAL_S + 10,
        )
        assert updated
        # The liveness endpoint through the outage and a little after it.
        while time.monotonic() - resumed_at < 15:
            time.sleep(1.0)
    finally:
        watcher.stop.set()
        watcher.join(timeout=KUBELET_TIMEOUT_S + 5)
    assert op.proc.poll() is None, f"operator exited:\n{op.logs()[-3000:]}"
    during = [a for a in watcher.answers if a[0] >= frozen_at]
    assert len(during) >= 10, watcher.answers  # asked all along, not just once
    assert not watcher.failures(), (watcher.failures(), op.logs()[-3000:])
