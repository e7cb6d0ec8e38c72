"""PostgreSQL probes with psycopg 3 async: a few catalogue queries, connections reused.

Per server (host, port) the probe keeps at most ``per_server`` open connections, whatever
databases, users and passwords the policies name, and hands them out one probe at a time,
so a server with a small max_connections is never flooded however many policies and
databases point at it. A connection unused for ``idle_s`` is closed, and so are those opened
with a password that has since rotated: a server nobody probes any more holds none of ours.
``pg_blocking_pids()`` takes a lock-manager lock: it runs only when some session waits on a
lock, and at most once per ``blockingCheckInterval`` per database and user. Connections are
counted server-wide (``max_connections`` is the server's); blocked sessions and long-running
queries only in the probed database (a lock wait elsewhere on a shared server is not this
application's incident).

Seen with a non-superuser role, other roles' sessions show no state or query; grant
``pg_monitor`` to the probing role for complete numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql

from stronghold_operator.models.health import GrowthQuery, PostgresCheck, PostgresInsights
from stronghold_operator.probes.base import (
    Blocker,
    DatabaseInsights,
    GrowthValue,
    IndexStat,
    LongQuery,
    ProbeResult,
    SlowStatement,
    StatementsState,
    StatementStat,
    TableScans,
)

APPLICATION_NAME = "stronghold-operator"

# Everything a probe measures, in one round trip: each query is a few hundred microseconds of
# the operator's CPU, and a thousand policies probe a hundred times a second.
_STATS = """
WITH /* stronghold-operator */ a AS (
  SELECT state, wait_event_type, query_start, usename, pid, datname = current_database() AS here
  FROM pg_stat_activity WHERE backend_type = 'client backend'
)
SELECT
  (SELECT setting::int FROM pg_settings WHERE name = 'max_connections'),
  (SELECT count(*) FROM a),
  (SELECT count(*) FROM a WHERE wait_event_type = 'Lock' AND here),
  pg_database_size(current_database()),
  (SELECT coalesce(json_object_agg(s, n), '{}') FROM
     (SELECT coalesce(state, 'unknown') AS s, count(*) AS n FROM a GROUP BY 1) g),
  (SELECT coalesce(json_agg(json_build_array(pid, u, secs)), '[]') FROM
     (SELECT pid, coalesce(usename, '') AS u,
             extract(epoch FROM now() - query_start)::float8 AS secs
      FROM a WHERE state = 'active' AND here AND pid <> pg_backend_pid()
        AND query_start < now() - make_interval(secs => %s)
      ORDER BY query_start LIMIT 20) l),
  EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')
"""
_BLOCKING = """
SELECT /* stronghold-operator */ w.pid, pg_blocking_pids(w.pid) FROM pg_stat_activity w
WHERE w.wait_event_type = 'Lock' AND w.datname = current_database()
"""
_WHO = """
SELECT /* stronghold-operator */ pid, coalesce(usename, ''), coalesce(application_name, '')
FROM pg_stat_activity WHERE pid = ANY(%s)
"""
_PGSS = """
SELECT /* stronghold-operator */
  queryid::text, mean_exec_time, calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 160)
FROM pg_stat_statements
WHERE mean_exec_time > %s AND query NOT LIKE %s
  AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY mean_exec_time DESC LIMIT %s
"""

# Insights (docs/healthpolicy.md#database-insights). Every statement of ours carries MARKER, so
# the statement lists leave the operator's own catalogue queries out.
MARKER = "/* stronghold-operator */"
_STATEMENTS = """
SELECT /* stronghold-operator */ id, calls, total, mean, rows, query FROM (
  SELECT *, row_number() OVER (ORDER BY mean DESC) AS by_mean,
            row_number() OVER (ORDER BY calls DESC) AS by_calls,
            row_number() OVER (ORDER BY rows::float8 / calls DESC) AS by_rows
  FROM (SELECT queryid::text AS id, calls, total_exec_time AS total, mean_exec_time AS mean,
               rows, left(query, 2000) AS query
        FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND calls > 0 AND query NOT LIKE %(marker)s) s
) r WHERE by_mean <= %(n)s OR by_calls <= %(n)s OR by_rows <= %(n)s
"""
# Unique, primary-key and exclusion indexes enforce a constraint: never scanned is not unused.
_UNUSED_INDEXES = """
SELECT /* stronghold-operator */ s.schemaname, s.relname, s.indexrelname,
       pg_relation_size(s.indexrelid)
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND NOT i.indisexclusion
  AND pg_relation_size(s.indexrelid) >= %(min)s
ORDER BY 4 DESC, 1, 3 LIMIT %(n)s
"""
_TABLES = """
SELECT /* stronghold-operator */ schemaname, relname, seq_scan, idx_scan, seq_tup_read,
       pg_relation_size(relid)
FROM pg_stat_user_tables
WHERE seq_scan >= %(min_seq)s AND pg_relation_size(relid) >= %(min_bytes)s
ORDER BY seq_scan::float8 / greatest(coalesce(idx_scan, 0), 1) DESC, seq_tup_read DESC
LIMIT %(n)s
"""
_HAS_PGSS = """
SELECT /* stronghold-operator */
  EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'),
  (SELECT extract(epoch FROM stats_reset)::float8 FROM pg_stat_database
   WHERE datname = current_database())
"""


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


# Connections unused this long are closed (the reaper looks twice per period).
IDLE_S = 60.0

# (database, user, sslmode, password digest): what a pooled connection can serve.
Key = tuple[str, str, str, str]


@dataclass
class _Idle:
    conn: AsyncConnection[Any]
    key: Key
    used_at: float


@dataclass
class _Server:
    """One (host, port): every pooled connection to it, whatever database or user."""

    sem: asyncio.Semaphore  # probes at work on this server
    idle: list[_Idle] = field(default_factory=list)
    open: int = 0  # connections open or being opened: in use, idle, or being closed
    users: int = 0  # probes holding this entry: it is not dropped under them
    freed: asyncio.Event = field(default_factory=asyncio.Event)  # a connection was closed
    blockers: dict[Key, tuple[float, tuple[Blocker, ...]]] = field(default_factory=dict)
    # Insights by (key, insights spec): when read and what (probes/postgres.py#insights).
    insights: dict[tuple[Key, str], tuple[float, DatabaseInsights]] = field(default_factory=dict)
    # One insights read at a time per server: a slow growth query holds one connection of
    # ``per_server``, never all of them (probes keep the rest).
    reading: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))


class PostgresProbe:
    """Probes :class:`PostgresCheck` targets; one instance per operator process."""

    def __init__(self, per_server: int = 4, idle_s: float = IDLE_S) -> None:
        self.per_server = per_server
        self.idle_s = idle_s
        self._servers: dict[tuple[str, int], _Server] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._gathering: dict[tuple[str, int, Key, str], asyncio.Task[None]] = {}

    def open_connections(self) -> int:
        """Connections this probe holds open (in use or idle), over every server."""
        return sum(s.open for s in self._servers.values())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        gathering, self._gathering = list(self._gathering.values()), {}
        for task in gathering:
            task.cancel()
        if gathering:
            await asyncio.gather(*gathering, return_exceptions=True)
        for server in list(self._servers.values()):  # closing may drop entries
            idle, server.idle = server.idle, []
            for item in idle:
                await _discard(item.conn)
                server.open -= 1
        self._servers.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def release(self, spec: PostgresCheck) -> None:
        """A policy probing ``spec`` went away: close the idle connections to its database
        and user (another policy's next probe reconnects), and drop an empty server entry."""
        server = self._servers.get((spec.host, spec.port))
        if server is None:
            return
        lineage = (spec.database, spec.user, spec.sslmode)
        self._close_idle(server, lambda i: i.key[:3] == lineage)

    def _close_idle(self, server: _Server, doomed: Callable[[_Idle], bool]) -> None:
        """Take the idle connections ``doomed`` picks out of the pool and close them in the
        background; each counts against the cap until it is closed."""
        gone = [i for i in server.idle if doomed(i)]
        if not gone:
            return
        server.idle = [i for i in server.idle if not doomed(i)]
        for item in gone:
            server.blockers.pop(item.key, None)
            task = asyncio.ensure_future(self._close_one(server, item.conn))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_one(self, server: _Server, conn: AsyncConnection[Any]) -> None:
        try:
            await _discard(conn)
        finally:
            server.open -= 1
            server.freed.set()
            self._drop_if_empty(server)

    def _drop_if_empty(self, server: _Server) -> None:
        if server.open or server.users or server.idle or server.blockers or server.insights:
            return
        for where, s in list(self._servers.items()):
            if s is server:
                del self._servers[where]

    def _sweep(self, now: float) -> None:
        """Close every connection idle for longer than ``idle_s``; forget empty servers."""
        for server in list(self._servers.values()):
            self._close_idle(server, lambda i: now - i.used_at >= self.idle_s)
            # A blocker reading of a database nobody probes any more is not worth keeping.
            for key in [k for k, (at, _) in server.blockers.items() if now - at >= self.idle_s]:
                del server.blockers[key]
            # Insights nobody asked for in two of their intervals (the policy went away).
            wall = time.time()
            for ikey in [
                k for k, (every, v) in server.insights.items() if wall - v.collected_at >= 2 * every
            ]:
                del server.insights[ikey]
            self._drop_if_empty(server)

    async def _reap(self) -> None:
        """Sweep while anything is pooled; end when nothing is (the next probe restarts it)."""
        try:
            while self._servers:
                await asyncio.sleep(max(0.05, self.idle_s / 2))
                self._sweep(time.monotonic())
        finally:
            if self._reaper is asyncio.current_task():
                self._reaper = None

    def _server(self, spec: PostgresCheck) -> _Server:
        where = (spec.host, spec.port)
        server = self._servers.get(where)
        if server is None:
            server = self._servers[where] = _Server(asyncio.Semaphore(self.per_server))
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap())
        return server

    async def _checkout(
        self, spec: PostgresCheck, server: _Server, key: Key, password: str, timeout_s: float
    ) -> tuple[AsyncConnection[Any], float | None]:
        """A connection for ``key`` (pooled, or new: ``connect_ms`` set) within the cap."""
        now = time.monotonic()
        # Opened with a password that has rotated since, or unused too long: close them.
        self._close_idle(
            server,
            lambda i: (
                (i.key[:3] == key[:3] and i.key[3] != key[3]) or now - i.used_at >= self.idle_s
            ),
        )
        for n in range(len(server.idle) - 1, -1, -1):  # the most recently used first
            if server.idle[n].key == key:
                item = server.idle.pop(n)
                if not item.conn.closed:
                    return item.conn, None
                server.open -= 1  # closed by the server meanwhile
                break
        while server.open >= self.per_server:
            # The semaphore keeps the others' in-use connections below the cap, so the rest
            # are idle ones of other databases or users (close the least recently used) or
            # ones being closed (wait for them).
            if not server.idle:
                server.freed.clear()
                await server.freed.wait()
                continue
            oldest = min(server.idle, key=lambda i: i.used_at)
            server.idle.remove(oldest)
            server.blockers.pop(oldest.key, None)
            try:
                await _discard(oldest.conn)
            finally:
                server.open -= 1
        server.open += 1
        try:
            t0 = time.perf_counter()
            conn = await self._connect(spec, password, timeout_s)
        except BaseException:
            server.open -= 1
            raise
        return conn, (time.perf_counter() - t0) * 1000.0

    async def probe(
        self, spec: PostgresCheck, *, timeout_s: float, secrets: Mapping[str, str]
    ) -> ProbeResult:
        password = secrets.get("password", "")
        # The password's digest is part of the key, so a rotated Secret gets new connections.
        digest = hashlib.sha256(password.encode()).hexdigest()[:16]
        key: Key = (spec.database, spec.user, spec.sslmode, digest)
        server = self._server(spec)
        server.users += 1
        conn: AsyncConnection[Any] | None = None
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                async with server.sem:
                    conn, connect_ms = await self._checkout(spec, server, key, password, timeout_s)
                    result = await self._measure(spec, server, key, conn, connect_ms)
                    server.idle.append(_Idle(conn, key, time.monotonic()))
                    conn = None
            if spec.insights is not None:
                result = self._with_insights(spec, server, key, password, result, timeout_s)
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
            server.users -= 1
            if conn is not None:  # interrupted mid-probe: its state is unknown, drop it
                try:
                    await _discard(conn)
                finally:
                    server.open -= 1
                    server.freed.set()

    def _with_insights(
        self,
        spec: PostgresCheck,
        server: _Server,
        key: Key,
        password: str,
        result: ProbeResult,
        timeout_s: float,
    ) -> ProbeResult:
        """``result`` with the last insights read; a read is started in the background when
        they are older than their interval, so insights never delay or fail a probe."""
        ins = spec.insights
        assert ins is not None
        spec_json = ins.model_dump_json()
        cached = server.insights.get((key, spec_json))
        every = ins.interval.total_seconds()
        if cached is None or time.time() - cached[1].collected_at >= every:
            gkey = (spec.host, spec.port, key, spec_json)
            if gkey not in self._gathering:
                task = asyncio.create_task(
                    self._gather(spec, ins, server, key, spec_json, password, timeout_s)
                )
                self._gathering[gkey] = task
                task.add_done_callback(lambda _: self._gathering.pop(gkey, None))
        return replace(result, insights=cached[1]) if cached is not None else result

    async def _gather(
        self,
        spec: PostgresCheck,
        ins: PostgresInsights,
        server: _Server,
        key: Key,
        spec_json: str,
        password: str,
        timeout_s: float,
    ) -> None:
        """Read the insights on a pooled connection (within the server's cap)."""
        server.users += 1
        conn: AsyncConnection[Any] | None = None
        budget = 4 * timeout_s + sum(g.timeout.total_seconds() for g in ins.growth)
        try:
            async with server.reading, asyncio.timeout(budget), server.sem:
                conn, _ = await self._checkout(spec, server, key, password, timeout_s)
                found = await read_insights(conn, ins)
                server.idle.append(_Idle(conn, key, time.monotonic()))
                conn = None
        except TimeoutError:
            found = DatabaseInsights(time.time(), "Unread", f"not read within {budget:g}s")
        except psycopg.Error as exc:
            found = DatabaseInsights(time.time(), "Unread", _first_line(exc))
        finally:
            server.users -= 1
            if conn is not None:  # interrupted mid-read: its state is unknown, drop it
                try:
                    await _discard(conn)
                finally:
                    server.open -= 1
                    server.freed.set()
        server.insights[(key, spec_json)] = (ins.interval.total_seconds(), found)

    async def _connect(
        self, spec: PostgresCheck, password: str, timeout_s: float
    ) -> AsyncConnection[Any]:
        kwargs = spec.connect_kwargs(password, timeout_s, APPLICATION_NAME)
        return await AsyncConnection.connect(**kwargs)

    async def _measure(
        self,
        spec: PostgresCheck,
        server: _Server,
        key: Key,
        conn: AsyncConnection[Any],
        connect_ms: float | None,
    ) -> ProbeResult:
        t0 = time.perf_counter()
        await conn.execute("SELECT /* stronghold-operator */ 1")
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
            blockers = await self._blockers(spec, server, key, conn)
        return ProbeResult(
            latency_ms=latency,
            numbers=numbers,
            sessions_by_state=sessions,
            blockers=blockers,
            long_queries=long_queries,
            slow_statements=await self._slow(spec, conn) if has_pgss else None,
        )

    async def _blockers(
        self, spec: PostgresCheck, server: _Server, key: Key, conn: AsyncConnection[Any]
    ) -> tuple[Blocker, ...]:
        now = time.monotonic()
        at, last = server.blockers.get(key, (-1e9, ()))
        if now - at < spec.blocking_check_interval.total_seconds():
            return last
        cur = await conn.execute(_BLOCKING)
        blocked_by: dict[int, list[int]] = {}
        for pid, blocking in await cur.fetchall():
            for b in blocking or ():
                blocked_by.setdefault(int(b), []).append(int(pid))
        if not blocked_by:
            server.blockers[key] = (now, ())
            return ()
        cur = await conn.execute(_WHO, (list(blocked_by),))
        who = {int(pid): (str(u), str(a)) for pid, u, a in await cur.fetchall()}
        found = tuple(
            Blocker(pid, *who.get(pid, ("", "")), tuple(sorted(pids)))
            for pid, pids in sorted(blocked_by.items(), key=lambda kv: -len(kv[1]))
        )
        server.blockers[key] = (now, found)
        return found

    async def _slow(
        self, spec: PostgresCheck, conn: AsyncConnection[Any]
    ) -> tuple[SlowStatement, ...] | None:
        """Top slow statements, or None when pg_stat_statements is not usable here."""
        if spec.slow_statement_top == 0:
            return None
        try:
            mean_ms = spec.slow_statement_mean.total_seconds() * 1000
            cur = await conn.execute(_PGSS, (mean_ms, f"%{MARKER}%", spec.slow_statement_top))
            rows = await cur.fetchall()
        except psycopg.Error:
            # Installed but not preloaded (shared_preload_libraries), or not readable.
            return None
        return tuple(
            SlowStatement(str(qid), float(mean), int(calls), str(q)) for qid, mean, calls, q in rows
        )


async def read_insights(conn: AsyncConnection[Any], ins: PostgresInsights) -> DatabaseInsights:
    """One insights read on an autocommit connection: a failing part is data, not an error
    (a missing extension leaves the index and table lists and the growth values)."""
    cur = await conn.execute(_HAS_PGSS)
    row = await cur.fetchone()
    assert row is not None
    has_pgss, stats_reset = bool(row[0]), row[1]
    state: StatementsState = "Available"
    message = ""
    statements: tuple[StatementStat, ...] = ()
    if not has_pgss:
        state = "PgStatStatementsMissing"
        message = (
            "the pg_stat_statements extension is not created in this database"
            " (CREATE EXTENSION pg_stat_statements; it also needs shared_preload_libraries)"
        )
    else:
        try:
            cur = await conn.execute(_STATEMENTS, {"marker": f"%{MARKER}%", "n": ins.limit})
            statements = tuple(
                StatementStat(str(i), int(c), float(t), float(m), int(r), str(q))
                for i, c, t, m, r, q in await cur.fetchall()
            )
        except psycopg.errors.ObjectNotInPrerequisiteState:
            state = "PgStatStatementsNotLoaded"
            message = (
                "pg_stat_statements is created but not loaded: add it to"
                " shared_preload_libraries and restart PostgreSQL"
            )
        except psycopg.Error as exc:
            state = "PgStatStatementsError"
            message = f"pg_stat_statements not readable: {_first_line(exc)}"
    cur = await conn.execute(_UNUSED_INDEXES, {"min": ins.unused_index_min_bytes, "n": ins.limit})
    indexes = tuple(
        IndexStat(str(sc), str(t), str(i), int(b)) for sc, t, i, b in await cur.fetchall()
    )
    rule = ins.seq_scans
    cur = await conn.execute(
        _TABLES,
        {"min_seq": rule.min_seq_scans, "min_bytes": rule.min_table_bytes, "n": ins.limit},
    )
    tables = tuple(
        TableScans(str(sc), str(t), int(seq), None if idx is None else int(idx), int(rd), int(b))
        for sc, t, seq, idx, rd, b in await cur.fetchall()
    )
    growth = tuple([await _growth(conn, g) for g in ins.growth])
    return DatabaseInsights(
        collected_at=time.time(),
        statements_state=state,
        statements_message=message,
        statements=statements,
        unused_indexes=indexes,
        tables=tables,
        growth=growth,
        stats_reset=None if stats_reset is None else float(stats_reset),
    )


async def _growth(conn: AsyncConnection[Any], g: GrowthQuery) -> GrowthValue:
    """One growth query: read-only transaction, its own statement timeout, at most two rows
    fetched (it is wrapped as a subquery, so it must be a query, never a write)."""
    wrapped = f"SELECT {MARKER} * FROM (\n{g.query}\n) AS growth LIMIT 2"
    ms = int(g.timeout.total_seconds() * 1000)
    try:
        async with conn.transaction():
            await conn.execute("SET TRANSACTION READ ONLY")
            await conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(ms)))
            cur = await conn.execute(wrapped.encode())
            rows = await cur.fetchall()
    except psycopg.errors.QueryCanceled:
        return GrowthValue(g.name, None, f"cancelled after its timeout ({ms} ms)")
    except psycopg.errors.ReadOnlySqlTransaction:
        return GrowthValue(g.name, None, "the query tried to write (it runs read-only)")
    except psycopg.Error as exc:
        if (exc.sqlstate or "").startswith("22"):
            # A data exception quotes the offending value (a row's data): name the kind only.
            return GrowthValue(g.name, None, f"data exception {exc.sqlstate}: {type(exc).__name__}")
        return GrowthValue(g.name, None, _first_line(exc))
    if len(rows) != 1 or len(rows[0]) != 1:
        width = len(rows[0]) if rows else 0
        return GrowthValue(
            g.name, None, f"expected one row of one column, got {len(rows)} row(s) of {width}"
        )
    value = rows[0][0]
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return GrowthValue(g.name, None, f"not a number ({type(value).__name__})")
    return GrowthValue(g.name, float(value))


def _elapsed(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


async def _discard(conn: AsyncConnection[Any]) -> None:
    with contextlib.suppress(TimeoutError, psycopg.Error, OSError):
        await asyncio.wait_for(conn.close(), 2)
