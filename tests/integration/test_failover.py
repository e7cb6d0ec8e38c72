"""Two real operators with ``--leader-elect`` on one Lease (runtime/leader.py): one acts; a
killed, frozen or stopped leader is replaced within 30 s; a frozen leader that wakes up after
losing the Lease ends itself instead of acting.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.integration import health_kit as hk
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

LEASE_NS = "stronghold-system"
TAKEOVER_S = 30  # the bound; the Lease's 15 s plus a renew round is what to expect


def lease(name: str) -> dict[str, Any]:
    return dict(kit.kubectl_json("get", "lease", name, "-n", LEASE_NS)["spec"])


def leading(op: kit.OperatorProcess) -> float | None:
    """The operator's ``stronghold_leader`` gauge (None before it is served)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^stronghold_leader (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def holder_pid(name: str) -> int:
    """Outside a pod the identity is ``<host>-<pid>``."""
    return int(lease(name)["holderIdentity"].rpartition("-")[2])


def last_probe(ns: str) -> datetime | None:
    obj = kit.kubectl_json("get", "healthpolicy", "web", "-n", ns)
    value = (obj.get("status") or {}).get("lastProbeTime")
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def probing_after(ns: str, when: datetime) -> bool:
    seen = last_probe(ns)
    return seen is not None and seen > when


@pytest.fixture
def pair(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess]
) -> Iterator[Callable[[], kit.OperatorProcess]]:
    lease_name = f"lease-{namespace}"
    args = [
        "--leader-elect",
        f"--leader-elect-namespace={LEASE_NS}",
        f"--leader-elect-lease={lease_name}",
    ]

    def start() -> kit.OperatorProcess:
        return run_operator(namespace, args=args)

    yield start
    kit.kubectl("delete", "lease", lease_name, "-n", LEASE_NS, "--ignore-not-found", check=False)


def test_one_leader_and_takeover_after_kill_freeze_and_stop(
    namespace: str, pair: Callable[[], kit.OperatorProcess]
) -> None:
    ns, name = namespace, f"lease-{namespace}"
    first = pair()
    kit.wait_until("the first replica leading", lambda: leading(first) == 1, timeout=30)
    second = pair()  # started after: a follower, alive (its liveness answered 200)
    kit.wait_until("the second replica following", lambda: leading(second) == 0, timeout=30)
    assert holder_pid(name) == first.proc.pid
    assert lease(name)["leaseDurationSeconds"] == 15

    started = datetime.now(UTC)
    url = f"http://127.0.0.1:{hk.closed_port()}/"
    kit.apply(
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "HealthPolicy",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"interval": "2s", "checks": [{"name": "w", "http": {"url": url}}]},
        }
    )
    kit.wait_until("the leader probing", lambda: probing_after(ns, started), timeout=60)
    # The follower has not even started kopf: no watch, no handler.
    assert "Handler 'track'" in first.logs()
    assert "following: the Lease" in second.logs()
    assert "Starting Kopf" not in second.logs()

    # 1. kill -9: the follower takes over once the Lease expires.
    first.kill(signal.SIGKILL)
    killed = time.monotonic()
    kit.wait_until("the second replica leading", lambda: leading(second) == 1, timeout=TAKEOVER_S)
    took = time.monotonic() - killed
    assert holder_pid(name) == second.proc.pid
    resumed = datetime.now(UTC)
    kit.wait_until("the new leader probing", lambda: probing_after(ns, resumed), timeout=30)
    transitions = lease(name)["leaseTransitions"]
    print(f"takeover after kill -9: {took:.1f} s")

    # 2. A third replica follows; the leader is frozen (SIGSTOP) past its Lease.
    third = pair()
    kit.wait_until("the third replica following", lambda: leading(third) == 0, timeout=30)
    second.proc.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        kit.wait_until("the third replica leading", lambda: leading(third) == 1, timeout=TAKEOVER_S)
        print(f"takeover from a frozen leader: {time.monotonic() - frozen:.1f} s")
        assert holder_pid(name) == third.proc.pid
        assert lease(name)["leaseTransitions"] == transitions + 1
    finally:
        second.proc.send_signal(signal.SIGCONT)
    # Woken, the old leader finds its fence closed and the Lease gone: it exits.
    kit.wait_until("the woken leader exiting", lambda: second.proc.poll() is not None, timeout=30)
    assert second.proc.returncode == 1
    assert "lost the Lease" in second.logs()
    assert holder_pid(name) == third.proc.pid

    # 3. A clean stop releases the Lease: the next replica need not wait it out.
    fourth = pair()
    kit.wait_until("the fourth replica following", lambda: leading(fourth) == 0, timeout=30)
    third.kill(signal.SIGTERM)
    stopped = time.monotonic()
    assert third.proc.returncode == 0, third.logs()[-2000:]
    kit.wait_until("the fourth replica leading", lambda: leading(fourth) == 1, timeout=15)
    print(f"takeover after a clean stop: {time.monotonic() - stopped:.1f} s")
    after = datetime.now(UTC)
    kit.wait_until("the last leader probing", lambda: probing_after(ns, after), timeout=30)
