"""PostgreSQL probes against the real server: healthy, degraded for real, down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from stronghold_operator.logic import health as h
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.probes.postgres import PostgresProbe
from tests.integration import health_kit as hk

pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(120)]

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture(scope="module")
def database() -> Iterator[dict[str, str]]:
    """A fresh role with a password and its own database, dropped afterwards."""
    hk.require("PostgreSQL", 5432)
    suffix = uuid.uuid4().hex[:8]
    role, db, password = f"hp_{suffix}", f"hp_{suffix}", f"pw-{uuid.uuid4().hex}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE pg_monitor")
        conn.execute(f"CREATE DATABASE {db} OWNER {role}")
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={db}", autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int primary key, balance int)")
        conn.execute(f"ALTER TABLE accounts OWNER TO {role}")
        conn.execute("INSERT INTO accounts VALUES (1, 100)")
        # Installed but not preloaded here: querying it fails, which must read "unavailable".
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    yield {"role": role, "db": db, "password": password}
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,)
        )
        conn.execute(f"DROP DATABASE IF EXISTS {db}")
        conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
async def probe() -> AsyncIterator[PostgresProbe]:
    p = PostgresProbe()
    yield p
    await p.close()


def policy(database: dict[str, str], **pg: Any) -> HealthPolicySpec:
    spec = {
        "host": "127.0.0.1",
        "database": database["db"],
        "user": database["role"],
        "password": {"secretKeyRef": {"name": "db", "key": "password"}},
        **pg,
    }
    return parse(HealthPolicySpec, {"checks": [{"name": "db", "postgres": spec}]})


async def run(
    p: PostgresProbe, spec: HealthPolicySpec, password: str, prev: Any = None
) -> tuple[h.Assessment, Any]:
    c = spec.checks[0]
    assert c.postgres is not None
    result = await p.probe(c.postgres, timeout_s=5, secrets={"password": password})
    return h.assess(c, result, prev), result


async def test_healthy_with_measurements(probe: PostgresProbe, database: dict[str, str]) -> None:
    a, r = await run(probe, policy(database), database["password"])
    assert a.state == "Healthy", a.message
    m = a.measurements
    assert m["maxConnections"] >= 10 and 0 < m["connectionsPercent"] < 70
    assert m["sessionsByState"].get("active", 0) >= 1
    assert m["slowStatements"] == "unavailable"  # information, not a failure
    assert m["dbSizeBytes"] > 1_000_000
    assert "connectMs" in r.numbers
    # Second probe reuses the connection and reports growth since the first.
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={database['db']}") as conn:
        conn.execute(
            "CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad "
            "FROM generate_series(1, 20000) g"
        )
    a2, r2 = await run(probe, policy(database), database["password"], {"measurements": m})
    assert "connectMs" not in r2.numbers
    assert a2.measurements["dbGrowthBytes"] > 5_000_000


async def test_connections_past_a_band(probe: PostgresProbe, database: dict[str, str]) -> None:
    """Real extra sessions push connections over a band set just above the baseline."""
    a, _ = await run(probe, policy(database), database["password"])
    base = a.measurements["connectionsPercent"]
    bands = {"warning": base + 2, "critical": base + 4}
    extra = [
        await psycopg.AsyncConnection.connect(ADMIN + f" dbname={database['db']}") for _ in range(6)
    ]
    try:
        a, _ = await run(probe, policy(database, connections=bands), database["password"])
    finally:
        for conn in extra:
            await conn.close()
    assert a.state == "Critical" and a.reason == "ConnectionsCritical", a.message
    assert a.measurements["connectionsUsed"] >= 7


async def test_blocked_session_names_its_blocker(
    probe: PostgresProbe, database: dict[str, str]
) -> None:
    dsn = f"host=127.0.0.1 user=postgres dbname={database['db']} application_name=holder"
    holder = await psycopg.AsyncConnection.connect(dsn)
    waiter = await psycopg.AsyncConnection.connect(dsn.replace("holder", "waiter"))
    holder_pid, waiter_pid = holder.info.backend_pid, waiter.info.backend_pid
    try:
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        blocked = asyncio.create_task(waiter.execute("SELECT * FROM accounts"))
        await asyncio.sleep(1.5)
        spec = policy(database, longRunningAfter="1s")
        a, r = await run(probe, spec, database["password"])
        await holder.execute("ROLLBACK")
        await asyncio.wait_for(blocked, 10)
    finally:
        await holder.close()
        await waiter.close()
    codes = {f.code for f in a.findings}
    assert "BlockedSessions" in codes and "LongRunningQueries" in codes
    assert a.state == "Critical"
    assert r.blockers[0].pid == holder_pid and r.blockers[0].application == "holder"
    assert r.blockers[0].blocked_pids == (waiter_pid,)
    assert f"pid {holder_pid}" in a.message
    found = h.classify(spec, [h.CheckVerdict("db", "postgres", a.state, a.findings, a.message)])
    assert found is not None and found.severity == "P2"


async def test_down_wrong_port(probe: PostgresProbe, database: dict[str, str]) -> None:
    a, _ = await run(probe, policy(database, port=hk.closed_port()), database["password"])
    assert (a.state, a.reason) == ("Critical", "Unreachable")
    found = h.classify(
        policy(database), [h.CheckVerdict("db", "postgres", a.state, a.findings, a.message)]
    )
    assert found is not None and found.severity == "P1"


async def test_wrong_password_message_has_no_password(
    probe: PostgresProbe, database: dict[str, str]
) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex
    a, _ = await run(probe, policy(database), wrong)
    # trust auth on 127.0.0.1 may accept any password; either way nothing leaks.
    assert wrong not in a.message and database["password"] not in a.message
    assert wrong not in repr(a.measurements)
