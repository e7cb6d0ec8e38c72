"""Two real operators with ``--leader-elect`` on one Lease (runtime/leader.py): one acts; a
killed, frozen or stopped leader is replaced within 30 s; a frozen leader that wakes up after
losing the Lease ends itself instead of acting; a leader killed while a backup Job runs and an
incident is open leaves no second Job for the slot, no second Incident and no second webhook.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from stronghold_operator.models.backup import ANNOTATION_SLOT, schedule_label
from tests.integration import health_kit as hk
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

LEASE_NS = "stronghold-system"
PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
IMAGE = "stronghold/base:bookworm"  # built locally by the testbed
TAKEOVER_S = 30  # the issue's bound; the Lease's 15 s plus a renew round is what to expect


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


def probes_sent(op: kit.OperatorProcess) -> float:
    """HTTP probes this operator has sent (its /metrics): only a leader sends any. Status
    alone cannot tell: an unchanged state is not written again (no heartbeat writes)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    pattern = r'^stronghold_health_probe_requests_total\{[^}]*type="http"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


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

    url = f"http://127.0.0.1:{hk.closed_port()}/"
    kit.apply(
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "HealthPolicy",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"interval": "2s", "checks": [{"name": "w", "http": {"url": url}}]},
        }
    )
    kit.wait_until("the leader probing", lambda: probes_sent(first) > 0, timeout=60)
    assert probes_sent(second) == 0  # the follower probes nothing
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
    kit.wait_until("the new leader probing", lambda: probes_sent(second) > 0, timeout=60)
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
    kit.wait_until("the last leader probing", lambda: probes_sent(fourth) > 0, timeout=60)


@pytest.fixture
def small_db() -> Iterator[tuple[str, str, str]]:
    """A database of ten rows owned by a role with a password: (db, user, password)."""
    hk.require("PostgreSQL", 5432)
    tag = uuid.uuid4().hex[:8]
    db, user, password = f"fo_d_{tag}", f"fo_r_{tag}", uuid.uuid4().hex
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(password)
            )
        )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(user))
        )
    with psycopg.connect(host="127.0.0.1", user=user, dbname=db, password=password) as c:
        c.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g")
    yield db, user, password
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


def slots(ns: str) -> list[str]:
    """The slot of every backup Job of the schedule ``nightly`` (one Job per slot, or more)."""
    label = f"ops.stronghold.io/backupschedule={schedule_label('nightly')}"
    items = kit.kubectl_json("get", "jobs", "-n", ns, "-l", label)["items"]
    return [j["metadata"]["annotations"][ANNOTATION_SLOT] for j in items]


def test_no_duplicate_backup_incident_or_webhook_across_a_kill_during_both(
    namespace: str,
    pair: Callable[[], kit.OperatorProcess],
    small_db: tuple[str, str, str],
) -> None:
    ns, (db, user, password) = namespace, small_db
    receiver = hk.Receiver()
    root = Path(f"/tmp/stronghold-fo-{ns}")
    (root / "db").mkdir(parents=True)
    (root / "db").chmod(0o777)  # the Job runs as uid 999
    try:
        with kit.hostpath_volume(ns, root):
            kit.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "db", "namespace": ns},
                    "stringData": {"password": password},
                }
            )
            first = pair()
            kit.wait_until("the first replica leading", lambda: leading(first) == 1, timeout=30)
            second = pair()
            kit.wait_until("the second following", lambda: leading(second) == 0, timeout=30)
            kit.apply(backup_schedule(ns, db, user))
            kit.apply(failing_policy(ns, receiver.url))
            # The leader is killed once both side effects are under way: the incident's
            # webhook sent and a slot's backup Job running.
            kit.wait_until(
                "the incident webhook", lambda: receiver.events("down") == ["Opened"], timeout=90
            )
            kit.wait_until("a slot's backup Job", lambda: len(slots(ns)) == 1, timeout=90)
            first.kill(signal.SIGKILL)
            killed = time.monotonic()
            kit.wait_until(
                "the second replica leading", lambda: leading(second) == 1, timeout=TAKEOVER_S
            )
            print(f"without a leader: {time.monotonic() - killed:.1f} s")
            # The new leader adopts the running Job and finishes the slot; the next slot
            # gets one Job too; the incident stays the one it found.
            kit.wait_until(
                "two slots backed up", lambda: len(succeeded_slots(ns)) >= 2, timeout=180
            )
            assert sorted(slots(ns)) == sorted(set(slots(ns))), slots(ns)
            incidents = kit.kubectl_json("get", "incidents", "-n", ns)["items"]
            assert len(incidents) == 1, [i["metadata"]["name"] for i in incidents]
            assert receiver.events("down") == ["Opened"]
    finally:
        receiver.close()
        shutil.rmtree(root, ignore_errors=True)


def succeeded_slots(ns: str) -> list[str]:
    obj = kit.kubectl_json("get", "backupschedule", "nightly", "-n", ns)
    backups = (obj.get("status") or {}).get("backups") or []
    return [b.get("slot", "") for b in backups if b.get("result") == "Succeeded"]


def backup_schedule(ns: str, db: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"name": "nightly", "namespace": ns},
        "spec": {
            "schedule": "* * * * *",
            "database": {
                "host": "127.0.0.1",
                "name": db,
                "user": user,
                "password": {"secretKeyRef": {"name": "db", "key": "password"}},
            },
            "storage": {"persistentVolumeClaim": "backups", "path": "db"},
            "jobTemplate": {"image": IMAGE, "imagePullPolicy": "Never", "hostNetwork": True},
        },
    }


def failing_policy(ns: str, webhook: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{hk.closed_port()}/"
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": "down", "namespace": ns},
        "spec": {
            "interval": "2s",
            "failureThreshold": 1,
            "checks": [{"name": "w", "http": {"url": url}}],
            "alerting": {"webhook": {"url": webhook, "timeout": "2s"}},
        },
    }
