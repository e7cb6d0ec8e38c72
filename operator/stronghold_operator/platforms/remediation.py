"""Remediation actions' I/O: rollout restart, terminating long-running PostgreSQL queries,
flushing a Memcached. Each raises on failure; controllers/remediation.py turns that into data.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg
from psycopg import AsyncConnection, sql

from stronghold_operator.models.health import MemcachedCheck, PostgresCheck
from stronghold_operator.platforms import fence
from stronghold_operator.platforms.kube import Kube, workload

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets
APPLICATION_NAME = "stronghold-remediation"

# Sessions of the check's database whose current query has been active longer than the
# limit; never this session, the operator's own (probes: application_name stronghold*),
# nor anything but client backends (walsenders of replication, autovacuum, ...).
_LONG_RUNNING = sql.SQL(
    "SELECT pid, coalesce(usename, '') FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_type = 'client backend'"
    " AND state = 'active' AND pid <> pg_backend_pid()"
    " AND coalesce(application_name, '') NOT LIKE 'stronghold%%'"
    " AND query_start < clock_timestamp() - make_interval(secs => %s)"
    " ORDER BY query_start LIMIT 100"
)
# Sessions of other roles whose state this role may not read (without pg_read_all_stats
# their query, state and start are NULL): candidates it cannot judge.
_HIDDEN = sql.SQL(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND state IS NULL AND pid <> pg_backend_pid()"
)


async def rollout_restart(kube: Kube, namespace: str, kind: str, name: str, at: str) -> None:
    """``kubectl rollout restart``: a new pod-template annotation; the workload's rolling
    update strategy replaces the pods (one batch at a time, readiness-gated)."""
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}
    await kube.patch(workload(kind), name, namespace, body)


@dataclass(frozen=True)
class Terminated:
    terminated: list[int]
    refused: list[int]  # not ours to signal: needs pg_signal_backend or the same role
    gone: list[int]  # ended by themselves meanwhile
    hidden: int = 0  # other roles' sessions this role cannot see (needs pg_read_all_stats)


async def terminate_queries(
    spec: PostgresCheck, password: str, older_than_s: float, timeout_s: float
) -> Terminated:
    """``pg_terminate_backend`` for each long-running query, one by one (a refusal of one
    session stops none of the others)."""
    fence.check("terminate queries")  # a deposed leader must not repeat it (docs/install.md)
    kwargs = spec.connect_kwargs(password, timeout_s, APPLICATION_NAME)
    out = Terminated([], [], [])
    hidden = 0
    async with asyncio.timeout(timeout_s * 3):
        conn = await AsyncConnection.connect(**kwargs)
        try:
            rows = await (await conn.execute(_LONG_RUNNING, (older_than_s,))).fetchall()
            for pid, _user in rows:
                try:
                    cur = await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    row = await cur.fetchone()
                except psycopg.errors.InsufficientPrivilege:
                    out.refused.append(int(pid))
                    continue
                (out.terminated if row and row[0] else out.gone).append(int(pid))
            counted = await (await conn.execute(_HIDDEN)).fetchone()
            hidden = int(counted[0]) if counted else 0
        finally:
            await conn.close()
    return Terminated(out.terminated, out.refused, out.gone, hidden)


async def flush_memcached(spec: MemcachedCheck, timeout_s: float) -> None:
    """``flush_all`` (every item invalidated; the cache refills from the database)."""
    fence.check("flush Memcached")  # a deposed leader must not repeat it (docs/install.md)
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(spec.host, spec.port)
        try:
            writer.write(b"flush_all\r\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
    if line.strip() != b"OK":
        raise ConnectionError(f"flush_all answered {line.strip()[:80]!r}")
