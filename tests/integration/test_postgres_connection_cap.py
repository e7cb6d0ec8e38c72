"""The PostgreSQL probe's connection cap holds per server, across databases, users and
password rotations, and idle connections are closed (real PostgreSQL, issue 17 defect 5)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import psycopg
import pytest

from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec, PostgresCheck
from stronghold_operator.probes.postgres import PostgresProbe
from tests.integration import health_kit as hk

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DATABASES = 60
USERS = 3
CAP = 4


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, list[str]]]:
    """Roles and databases of our own (unique names), dropped afterwards."""
    hk.require("PostgreSQL", 5432)
    suffix = uuid.uuid4().hex[:8]
    roles = [f"cap_{suffix}_u{i}" for i in range(USERS)]
    dbs = [f"cap_{suffix}_d{i}" for i in range(DATABASES)]
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        for role in roles:
            conn.execute(f"CREATE ROLE {role} LOGIN")
        for db in dbs:
            conn.execute(f"CREATE DATABASE {db} OWNER {roles[0]}")
    try:
        yield {"roles": roles, "dbs": dbs}
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                (roles,),
            )
            for db in dbs:
                conn.execute(f"DROP DATABASE IF EXISTS {db}")
            for role in roles:
                conn.execute(f"DROP ROLE IF EXISTS {role}")


def check(db: str, user: str) -> PostgresCheck:
    spec = {"host": "127.0.0.1", "database": db, "user": user, "slowStatementTop": 0}
    policy = parse(HealthPolicySpec, {"checks": [{"name": "db", "postgres": spec}]})
    assert policy.checks[0].postgres is not None
    return policy.checks[0].postgres


class Sampler:
    """Counts our roles' sessions in pg_stat_activity every few milliseconds.

    ``peak`` is the highest count seen in two samples in a row: a backend whose client has
    closed it takes a few milliseconds to leave the view, while a pooled one stays.
    """

    def __init__(self, roles: list[str]) -> None:
        self.roles = roles
        self.peak = 0
        self.raw_peak = 0
        self.samples = 0

    async def count(self, conn: psycopg.AsyncConnection[tuple[int]]) -> int:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY(%s)", (self.roles,)
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(ADMIN, autocommit=True) as conn:
            last = 0
            while True:
                # Autocommit: a fresh snapshot each time (the view is cached per transaction).
                now = await self.count(conn)  # type: ignore[arg-type]
                self.peak = max(self.peak, min(last, now))
                self.raw_peak = max(self.raw_peak, now)
                last = now
                self.samples += 1
                await asyncio.sleep(0.02)


@pytest.fixture
async def sampler(server: dict[str, list[str]]) -> AsyncIterator[Sampler]:
    s = Sampler(server["roles"])
    task = asyncio.create_task(s.run())
    yield s
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


MakeProbe = Callable[..., PostgresProbe]


@pytest.fixture
async def make_probe() -> AsyncIterator[MakeProbe]:
    """``PostgresProbe(per_server=CAP, **options)``; every probe made is closed after the test."""
    made: list[PostgresProbe] = []

    def make(**options: float) -> PostgresProbe:
        made.append(PostgresProbe(per_server=CAP, **options))
        return made[-1]

    yield make
    for probe in made:
        await probe.close()


async def test_cap_per_server_across_databases_users_and_rotations(
    server: dict[str, list[str]], sampler: Sampler, make_probe: MakeProbe
) -> None:
    probe = make_probe(idle_s=300)
    roles, dbs = server["roles"], server["dbs"]
    # Two rounds over 60 databases, each probed by one of several users, all at once.
    for _ in range(2):
        results = await asyncio.gather(
            *(
                probe.probe(check(db, roles[i % USERS]), timeout_s=30, secrets={"password": "p"})
                for i, db in enumerate(dbs)
            )
        )
        failed = [r.message for r in results if r.failure is not None]
        assert not failed, failed[:3]
        assert probe.open_connections() <= CAP
    # 30 rotations of one user's password (trust auth: every one still logs in).
    target = check(dbs[0], roles[1])
    for n in range(30):
        r = await probe.probe(target, timeout_s=30, secrets={"password": f"rotated-{n}"})
        assert r.failure is None, r.message
        assert probe.open_connections() <= CAP
    await asyncio.sleep(0.5)  # let closed sessions leave pg_stat_activity
    assert sampler.samples > 10
    assert 0 < sampler.peak <= CAP, (sampler.peak, sampler.raw_peak)


async def test_idle_connections_are_evicted(
    server: dict[str, list[str]], sampler: Sampler, make_probe: MakeProbe
) -> None:
    probe = make_probe(idle_s=1.0)
    roles, dbs = server["roles"], server["dbs"]
    async with await psycopg.AsyncConnection.connect(ADMIN, autocommit=True) as conn:
        for i in range(CAP):
            r = await probe.probe(check(dbs[i], roles[0]), timeout_s=30, secrets={})
            assert r.failure is None, r.message
        assert await sampler.count(conn) == CAP  # type: ignore[arg-type]
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            if probe.open_connections() == 0 and await sampler.count(conn) == 0:  # type: ignore[arg-type]
                break
            await asyncio.sleep(0.2)
        assert probe.open_connections() == 0
        assert await sampler.count(conn) == 0  # type: ignore[arg-type]
        assert not probe._servers  # the server's entry is gone with its connections


async def test_released_policy_closes_its_connections(
    server: dict[str, list[str]], sampler: Sampler, make_probe: MakeProbe
) -> None:
    probe = make_probe(idle_s=300)
    roles, dbs = server["roles"], server["dbs"]
    spec = check(dbs[5], roles[2])
    assert (await probe.probe(spec, timeout_s=30, secrets={})).failure is None
    assert probe.open_connections() == 1
    probe.release(spec)
    for _ in range(50):
        if not probe._servers:
            break
        await asyncio.sleep(0.05)
    assert probe.open_connections() == 0 and not probe._servers
