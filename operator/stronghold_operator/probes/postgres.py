"""PostgreSQL probes with psycopg 3 async: a few catalogue queries, connections reused.

Per target (host, port, database, user) the probe keeps at most ``per_target`` open
connections and hands them out one probe at a time, so a database with a small
max_connections is never flooded however many policies point at it. ``pg_blocking_pids()``
takes a lock-manager lock: it runs only when some session waits on a lock, and at most once
per ``blockingCheckInterval`` per target.

Seen with a non-superuser role, other roles' sessions show no state or query; grant
``pg_monitor`` to the probing role for complete numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection

from stronghold_operator.models.health import PostgresCheck
from stronghold_operator.probes.base import Blocker, LongQuery, ProbeResult, SlowStatement

APPLICATION_NAME = "stronghold-operator"

# Everything a probe measures, in one round trip: each query is a few hundred microseconds of
# the operator's CPU, and a thousand policies probe a hundred times a second.
_STATS = """
WITH a AS (
  SELECT state, wait_event_type, query_start, usename, pid FROM pg_stat_activity
  WHERE backend_type = 'client backend'
)
SELECT
  (SELECT setting::int FROM pg_settings WHERE name = 'max_connections'),
  (SELECT count(*) FROM a),
  (SELECT count(*) FROM a WHERE wait_event_type = 'Lock'),
  pg_database_size(current_database()),
  (SELECT coalesce(json_object_agg(s, n), '{}') FROM
     (SELECT coalesce(state, 'unknown') AS s, count(*) AS n FROM a GROUP BY 1) g),
  (SELECT coalesce(json_agg(json_build_array(pid, u, secs)), '[]') FROM
     (SELECT pid, coalesce(usename, '') AS u,
             extract(epoch FROM now() - query_start)::float8 AS secs
      FROM a WHERE state = 'active' AND pid <> pg_backend_pid()
        AND query_start < now() - make_interval(secs => %s)
      ORDER BY query_start LIMIT 20) l),
  EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')
"""
_BLOCKING = """
SELECT w.pid, pg_blocking_pids(w.pid) FROM pg_stat_activity w
WHERE w.wait_event_type = 'Lock'
"""
_WHO = """
SELECT pid, coalesce(usename, ''), coalesce(application_name, '')
FROM pg_stat_activity WHERE pid = ANY(%s)
"""
_PGSS = """
SELECT queryid::text, mean_exec_time, calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 160)
FROM pg_stat_statements WHERE mean_exec_time > %s ORDER BY mean_exec_time DESC LIMIT %s
"""


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


@dataclass
class _Target:
    sem: asyncio.Semaphore
    idle: list[AsyncConnection[Any]] = field(default_factory=list)
    blockers_at: float = -1e9
    blockers: tuple[Blocker, ...] = ()


class PostgresProbe:
    """Probes :class:`PostgresCheck` targets; one instance per operator process."""

    def __init__(self, per_target: int = 2) -> None:
        self.per_target = per_target
        self._targets: dict[tuple[str, ...], _Target] = {}

    async def close(self) -> None:
        for t in self._targets.values():
            for conn in t.idle:
                await conn.close()
            t.idle.clear()

    def _target(self, spec: PostgresCheck, password: str) -> _Target:
        # The password's digest is part of the key, so a rotated Secret gets new connections.
        digest = hashlib.sha256(password.encode()).hexdigest()[:16]
        key = (spec.host, str(spec.port), spec.database, spec.user, spec.sslmode, digest)
        t = self._targets.get(key)
        if t is None:
            t = self._targets[key] = _Target(asyncio.Semaphore(self.per_target))
        return t

    async def probe(
        self, spec: PostgresCheck, *, timeout_s: float, secrets: Mapping[str, str]
    ) -> ProbeResult:
        password = secrets.get("password", "")
        target = self._target(spec, password)
        conn: AsyncConnection[Any] | None = None
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                async with target.sem:
                    conn = target.idle.pop() if target.idle else None
                    connect_ms: float | None = None
                    if conn is None or conn.closed:
                        t0 = time.perf_counter()
                        conn = await self._connect(spec, password, timeout_s)
                        connect_ms = (time.perf_counter() - t0) * 1000.0
                    result = await self._measure(spec, target, conn, connect_ms)
                    target.idle.append(conn)
                    conn = None
                    return result
        except TimeoutError:
            return ProbeResult.failed(
                "Timeout", f"no answer within {timeout_s:g}s", _elapsed(start)
            )
        except psycopg.OperationalError as exc:
            return ProbeResult.failed("Unreachable", _first_line(exc), _elapsed(start))
        except psycopg.Error as exc:
            return ProbeResult.failed("Error", _first_line(exc), _elapsed(start))
        finally:
            if conn is not None:  # interrupted mid-probe: its state is unknown, drop it
                await _discard(conn)

    async def _connect(
        self, spec: PostgresCheck, password: str, timeout_s: float
    ) -> AsyncConnection[Any]:
        kwargs: dict[str, Any] = {
            "host": spec.host,
            "port": spec.port,
            "dbname": spec.database,
            "user": spec.user,
            "sslmode": spec.sslmode,
            "application_name": APPLICATION_NAME,
            "connect_timeout": max(2, int(timeout_s)),
            "autocommit": True,
            # The server gives up on our catalogue queries too, if ever they hang.
            "options": f"-c statement_timeout={int(timeout_s * 1000)}",
        }
        if password:
            kwargs["password"] = password
        return await AsyncConnection.connect(**kwargs)

    async def _measure(
        self,
        spec: PostgresCheck,
        target: _Target,
        conn: AsyncConnection[Any],
        connect_ms: float | None,
    ) -> ProbeResult:
        t0 = time.perf_counter()
        await conn.execute("SELECT 1")
        query_ms = (time.perf_counter() - t0) * 1000.0
        latency = query_ms + (connect_ms or 0.0)
        cur = await conn.execute(_STATS, (spec.long_running_after.total_seconds(),))
        row = await cur.fetchone()
        assert row is not None
        max_conn, used, waiting, size = (int(v) for v in row[:4])
        numbers: dict[str, float] = {
            "maxConnections": max_conn,
            "connectionsUsed": used,
            "connectionsPercent": 100.0 * used / max_conn if max_conn else 0.0,
            "blockedSessions": waiting,
            "dbSizeBytes": size,
            "queryMs": query_ms,
        }
        if connect_ms is not None:
            numbers["connectMs"] = connect_ms
        sessions = {str(state): int(n) for state, n in row[4].items()}
        long_queries = tuple(
            LongQuery(int(pid), str(user), float(secs)) for pid, user, secs in row[5]
        )
        has_pgss = bool(row[6])
        blockers: tuple[Blocker, ...] = ()
        if waiting:
            blockers = await self._blockers(spec, target, conn)
        return ProbeResult(
            latency_ms=latency,
            numbers=numbers,
            sessions_by_state=sessions,
            blockers=blockers,
            long_queries=long_queries,
            slow_statements=await self._slow(spec, conn) if has_pgss else None,
        )

    async def _blockers(
        self, spec: PostgresCheck, target: _Target, conn: AsyncConnection[Any]
    ) -> tuple[Blocker, ...]:
        now = time.monotonic()
        if now - target.blockers_at < spec.blocking_check_interval.total_seconds():
            return target.blockers
        target.blockers_at = now
        cur = await conn.execute(_BLOCKING)
        blocked_by: dict[int, list[int]] = {}
        for pid, blocking in await cur.fetchall():
            for b in blocking or ():
                blocked_by.setdefault(int(b), []).append(int(pid))
        if not blocked_by:
            target.blockers = ()
            return ()
        cur = await conn.execute(_WHO, (list(blocked_by),))
        who = {int(pid): (str(u), str(a)) for pid, u, a in await cur.fetchall()}
        target.blockers = tuple(
            Blocker(pid, *who.get(pid, ("", "")), tuple(sorted(pids)))
            for pid, pids in sorted(blocked_by.items(), key=lambda kv: -len(kv[1]))
        )
        return target.blockers

    async def _slow(
        self, spec: PostgresCheck, conn: AsyncConnection[Any]
    ) -> tuple[SlowStatement, ...] | None:
        """Top slow statements, or None when pg_stat_statements is not usable here."""
        if spec.slow_statement_top == 0:
            return None
        try:
            cur = await conn.execute(
                _PGSS, (spec.slow_statement_mean.total_seconds() * 1000, spec.slow_statement_top)
            )
            rows = await cur.fetchall()
        except psycopg.Error:
            # Installed but not preloaded (shared_preload_libraries), or not readable.
            return None
        return tuple(
            SlowStatement(str(qid), float(mean), int(calls), str(q)) for qid, mean, calls, q in rows
        )


def _elapsed(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


async def _discard(conn: AsyncConnection[Any]) -> None:
    with contextlib.suppress(TimeoutError, psycopg.Error, OSError):
        await asyncio.wait_for(conn.close(), 2)
