"""Remediation actions against real services (platforms/remediation.py, controllers/remediation.py):
long-running queries on the shared PostgreSQL (in the test's own scratch database, so no
other test's session is ever a candidate), and the test's own Memcached."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pymemcache.client.base import Client

from stronghold_operator.controllers.remediation import Remedies
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec, MemcachedCheck, PostgresCheck
from stronghold_operator.platforms import remediation as act
from tests.integration import health_kit as hk
from tests.integration import kit
from tests.integration.conftest import DOCKER_SOCKET
from tests.integration.health_kit import Sleeper
from tests.support.workloads import start_compose_container

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def active_for(pid: int, database: str) -> float:
    """Seconds the session's current query has been active (0 if not active)."""
    with psycopg.connect(hk.PG_DSN, autocommit=True) as c:
        row = c.execute(
            "SELECT extract(epoch FROM clock_timestamp() - query_start) FROM pg_stat_activity"
            " WHERE pid = %s AND datname = %s AND state = 'active'",
            (pid, database),
        ).fetchone()
    return float(row[0]) if row else 0.0


@pytest.fixture
def scratch() -> Iterator[str]:
    with hk.scratch_database("remedy", "SELECT 1") as name:
        yield name


@pytest.fixture
def sleepers() -> Iterator[list[Sleeper]]:
    made: list[Sleeper] = []
    yield made
    for s in made:
        s.stop()


def policy_with(check: dict[str, Any], action: dict[str, Any]) -> HealthPolicySpec:
    return parse(
        HealthPolicySpec,
        {
            "interval": "10s",
            "checks": [{"name": "target", **check}],
            "remediation": {"actions": [{"name": "fix", "when": {"checks": ["target"]}, **action}]},
        },
    )


async def test_a_long_running_query_is_terminated_but_not_the_operators_own(
    scratch: str, sleepers: list[Sleeper]
) -> None:
    victim = Sleeper(scratch, "app")
    ours = Sleeper(scratch, "stronghold-probe")  # the operator's own sessions are spared
    sleepers += [victim, ours]
    kit.wait_until(
        "both queries active for 2s",
        lambda: min(active_for(victim.pid, scratch), active_for(ours.pid, scratch)) >= 2,
        timeout=30,
    )
    policy = policy_with(
        {"postgres": {"host": "127.0.0.1", "database": scratch}},
        {"terminateQueries": {"check": "target", "olderThan": "1s"}},
    )
    ok, detail = await Remedies(kube=None)(policy, policy.remediation.actions[0], "ns", {}, False)  # type: ignore[arg-type, union-attr]
    assert ok, detail
    assert detail == f"terminated 1 session(s) (pids {victim.pid})"
    victim.thread.join(timeout=10)
    assert isinstance(victim.error, psycopg.errors.AdminShutdown)
    assert active_for(ours.pid, scratch) > 0 and ours.error is None


async def test_young_queries_are_left_alone(scratch: str, sleepers: list[Sleeper]) -> None:
    young = Sleeper(scratch, "app")
    sleepers.append(young)
    kit.wait_until("the query active", lambda: active_for(young.pid, scratch) > 0, timeout=30)
    spec = PostgresCheck(host="127.0.0.1", database=scratch)
    done = await act.terminate_queries(spec, "", 300, 5)
    assert done.terminated == [] and active_for(young.pid, scratch) > 0


async def test_a_role_without_the_privileges_says_so_and_terminates_nothing(
    scratch: str, sleepers: list[Sleeper]
) -> None:
    """Without pg_read_all_stats another role's query is invisible; with it but without
    pg_signal_backend, pg_terminate_backend refuses: both said, the session left alone."""
    role = f"remedy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(hk.PG_DSN, autocommit=True) as c:
        c.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        victim = Sleeper(scratch, "app")  # a superuser's session
        sleepers.append(victim)
        kit.wait_until("active 2s", lambda: active_for(victim.pid, scratch) >= 2, timeout=30)
        policy = policy_with(
            {"postgres": {"host": "127.0.0.1", "database": scratch, "user": role}},
            {"terminateQueries": {"check": "target", "olderThan": "1s"}},
        )
        action = policy.remediation.actions[0]  # type: ignore[union-attr]
        remedies = Remedies(kube=None)  # type: ignore[arg-type]
        ok, detail = await remedies(policy, action, "ns", {}, False)
        assert ok and detail.startswith("terminated 0 session(s)")
        assert "1 session(s) of other roles not visible (the role needs pg_read_all_stats" in detail
        assert active_for(victim.pid, scratch) > 0
        with psycopg.connect(hk.PG_DSN, autocommit=True) as c:
            c.execute(f'GRANT pg_read_all_stats TO "{role}"')
        ok, detail = await remedies(policy, action, "ns", {}, False)
        assert not ok
        assert "1 refused (the role needs pg_signal_backend" in detail
        assert active_for(victim.pid, scratch) > 0 and victim.error is None
    finally:
        with psycopg.connect(hk.PG_DSN, autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            c.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def memcached() -> Iterator[int]:
    """The test's own Memcached (flushing the shared one would disturb other tests)."""
    binary = shutil.which("memcached")
    assert binary is not None, "the memcached binary is not installed"
    port = kit.free_port()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "8", "-u", "nobody"]
    proc = subprocess.Popen(argv)
    try:
        kit.wait_until("our memcached", lambda: _version(port), timeout=15)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _version(port: int) -> bool:
    try:
        Client(("127.0.0.1", port), connect_timeout=1).version()
        return True
    except OSError:
        return False


async def test_flush_memcached_empties_the_tests_own_cache(memcached: int) -> None:
    client = Client(("127.0.0.1", memcached), connect_timeout=2)
    client.set("k", b"v")
    assert client.get("k") == b"v"
    await act.flush_memcached(MemcachedCheck(address=f"127.0.0.1:{memcached}"), 5)
    # flush_all takes effect at the next second boundary at the latest: poll.
    kit.wait_until("the item gone", lambda: client.get("k") is None, timeout=5)


async def test_an_unreachable_target_is_a_failed_result_not_an_exception() -> None:
    port = hk.closed_port()
    policy = policy_with(
        {"memcached": {"address": f"127.0.0.1:{port}"}},
        {"flushMemcached": {"check": "target"}},
    )
    action = policy.remediation.actions[0]  # type: ignore[union-attr]
    ok, detail = await Remedies(kube=None)(policy, action, "ns", {}, False)  # type: ignore[arg-type]
    assert not ok and "ConnectionRefusedError" in detail


async def test_a_compose_service_is_restarted_container_by_container(
    docker_client: Any, compose_project: tuple[str, Any]
) -> None:
    name, switch = compose_project
    first = start_compose_container(docker_client, name, switch, limits=False)
    first.reload()
    started_before = first.attrs["State"]["StartedAt"]
    policy = policy_with(
        {"http": {"url": "http://127.0.0.1:1/"}},
        {"composeRestart": {"project": name, "service": "web", "dockerHost": DOCKER_SOCKET}},
    )
    action = policy.remediation.actions[0]  # type: ignore[union-attr]
    ok, detail = await Remedies(kube=None)(policy, action, "ns", {}, False)  # type: ignore[arg-type]
    assert ok, detail
    assert detail == f"restarted 1 container(s): {name}-web-1"
    first.reload()
    assert first.status == "running" and first.attrs["State"]["StartedAt"] != started_before

    missing = policy_with(
        {"http": {"url": "http://127.0.0.1:1/"}},
        {"composeRestart": {"project": f"{name}-none", "service": "web"}},
    )
    action = missing.remediation.actions[0]  # type: ignore[union-attr]
    ok, detail = await Remedies(kube=None)(missing, action, "ns", {}, False)  # type: ignore[arg-type]
    assert not ok and "no container" in detail
