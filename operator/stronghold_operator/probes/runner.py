"""Run all checks of a policy concurrently, each with a hard timeout; results are data.

One :class:`Prober` per process holds the probe instances and with them the shared clients
and connection caches, so thousands of policies reuse the same few connections per target.

Identical probes are coalesced: when a policy asks for exactly what another policy's probe
is already measuring (same check definition, timeout, Secret values and namespace), it waits
for that probe's answer instead of sending another request — or takes an answer that arrived
at most ``STRONGHOLD_PROBE_REUSE_S`` (1 s) ago, and never older than a tenth of its own
interval: the schedule's jitter already moves a round that much, so such an answer is as
fresh as the round's own timing. What it saves is ten thousand policies sending a thousand
identical ``stats`` commands or catalogue queries a second at the same Memcached or
PostgreSQL (the target's load, and most of the operator's CPU at that scale).
Counter deltas (a cache's hit ratio over the interval) stay per policy, each from its own
previous probe (logic/health/samples.py says why).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Mapping
from typing import get_args

from prometheus_client import Counter

from stronghold_operator.metrics import registry
from stronghold_operator.models.health import Check, CheckType, HealthPolicySpec
from stronghold_operator.probes.base import ProbeResult
from stronghold_operator.probes.http import HttpProbe
from stronghold_operator.probes.logs import LogsProbe
from stronghold_operator.probes.memcached import MemcachedProbe
from stronghold_operator.probes.postgres import PostgresProbe
from stronghold_operator.probes.prometheus import PrometheusProbe
from stronghold_operator.probes.rabbitmq import RabbitmqProbe
from stronghold_operator.probes.resources import ResourcesProbe

# A probe gets its own timeout; this much more and the runner stops waiting for it.
GRACE_S = 1.0
COALESCE = os.environ.get("STRONGHOLD_PROBE_COALESCE", "1") != "0"
REUSE_S = float(os.environ.get("STRONGHOLD_PROBE_REUSE_S", "1.0"))
# Of the asking policy's interval: the scheduler's jitter (controllers/health.JITTER).
REUSE_FRACTION = 0.1
REQUESTS = Counter(
    "stronghold_health_probe_requests_total",
    "Probes by check type: sent to the target, or coalesced with an identical one in flight "
    "or just answered",
    ["type", "coalesced"],
    registry=registry,
)
_SENT = {t: REQUESTS.labels(t, "false") for t in get_args(CheckType)}
_COALESCED = {t: REQUESTS.labels(t, "true") for t in get_args(CheckType)}


class Prober:
    """The probes of one process (shared clients, per-target caps)."""

    def __init__(
        self,
        http_per_target: int = 10,
        postgres_per_server: int = 4,
        resources: ResourcesProbe | None = None,
        logs: LogsProbe | None = None,
    ) -> None:
        self.http = HttpProbe(per_target=http_per_target)
        self.postgres = PostgresProbe(per_server=postgres_per_server)
        self.memcached = MemcachedProbe()
        self.rabbitmq = RabbitmqProbe(client=self.http.client)
        self.prometheus = PrometheusProbe(self.http)
        # Without a reader (no platform access given), resources checks are Unknown.
        self.resources = resources or ResourcesProbe()
        self.logs = logs or LogsProbe()
        self.coalesce = COALESCE
        self.reuse_s = REUSE_S
        # In flight (None), or answered at that loop time and kept for reuse_s.
        self._inflight: dict[tuple[object, ...], tuple[asyncio.Future[ProbeResult], float | None]]
        self._inflight = {}
        self._specs: dict[int, tuple[Check, bytes]] = {}  # id(check) -> (check, digest)

    async def close(self) -> None:
        await self.postgres.close()
        await self.memcached.close()
        await self.rabbitmq.close()  # its connections; the HTTP client is shared
        await self.http.close()

    def forget(self, policy: HealthPolicySpec) -> None:
        """A policy went away: let go of what its checks alone held open."""
        for check in policy.checks:
            if check.postgres is not None:
                self.postgres.release(check.postgres)

    async def run_check(
        self,
        check: Check,
        timeout_s: float,
        secrets: Mapping[str, str],
        namespace: str = "default",
        since_s: float | None = None,
    ) -> ProbeResult:
        """One check; never raises (an unexpected error is an ``Error`` result).

        ``namespace`` is the policy's: where a resources check's workload lives.
        ``since_s``: where a logs check's reading starts (its cursor; None: its window ago).
        """
        # shield: one waiter stopping (its policy deleted) must not cancel the others' probe.
        return await asyncio.shield(self.start(check, timeout_s, secrets, namespace, since_s))

    def start(
        self,
        check: Check,
        timeout_s: float,
        secrets: Mapping[str, str],
        namespace: str,
        since_s: float | None = None,
        reuse_s: float = 0.0,
    ) -> asyncio.Future[ProbeResult]:
        """The probe of ``check`` as a future: a new one, the identical one in flight, or
        its answer if that arrived at most ``reuse_s`` (capped at the prober's) ago."""
        # Only logs checks read from a point in time.
        since_s = _since(check, since_s) if check.logs is not None else None
        run = (check, timeout_s, secrets, namespace, since_s)
        if not self.coalesce:
            _SENT[check.type].inc()
            return asyncio.ensure_future(self._run_check(*run))
        key = (
            self._spec_digest(check),
            timeout_s,
            namespace,
            tuple(sorted(secrets.items())),
            since_s,
        )
        hit = self._inflight.get(key)
        loop = asyncio.get_running_loop()
        if hit is not None and (hit[1] is None or loop.time() - hit[1] <= reuse_s):
            _COALESCED[check.type].inc()
            return hit[0]
        _SENT[check.type].inc()
        shared = asyncio.ensure_future(self._run_check(*run))
        self._inflight[key] = (shared, None)
        shared.add_done_callback(lambda done: self._answered(key, done))
        return shared

    def _answered(self, key: tuple[object, ...], done: asyncio.Future[ProbeResult]) -> None:
        hit = self._inflight.get(key)
        if hit is None or hit[0] is not done:
            return
        if self.reuse_s <= 0 or done.cancelled():
            del self._inflight[key]
            return
        loop = asyncio.get_running_loop()
        self._inflight[key] = (done, loop.time())
        loop.call_later(self.reuse_s, self._forget, key, done)

    def _forget(self, key: tuple[object, ...], done: asyncio.Future[ProbeResult]) -> None:
        hit = self._inflight.get(key)
        if hit is not None and hit[0] is done:
            del self._inflight[key]

    def _spec_digest(self, check: Check) -> bytes:
        """The check's definition without its name, as a digest (the JSON of four thousand
        checks was 2 MiB; specs are re-parsed only on change, so this is computed once)."""
        hit = self._specs.get(id(check))
        if hit is None or hit[0] is not check:
            if len(self._specs) > 50_000:  # ids of specs replaced long ago
                self._specs.clear()
            spec = check.model_dump_json(exclude={"name"}).encode()
            hit = (check, hashlib.blake2b(spec, digest_size=16).digest())
            self._specs[id(check)] = hit
        return hit[1]

    async def _run_check(
        self,
        check: Check,
        timeout_s: float,
        secrets: Mapping[str, str],
        namespace: str,
        since_s: float | None,
    ) -> ProbeResult:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s + GRACE_S):
                if check.http is not None:
                    return await self.http.probe(check.http, timeout_s=timeout_s, secrets=secrets)
                if check.postgres is not None:
                    return await self.postgres.probe(
                        check.postgres, timeout_s=timeout_s, secrets=secrets
                    )
                if check.memcached is not None:
                    return await self.memcached.probe(
                        check.memcached, timeout_s=timeout_s, secrets=secrets
                    )
                if check.prometheus is not None:
                    return await self.prometheus.probe(
                        check.prometheus, timeout_s=timeout_s, secrets=secrets
                    )
                if check.resources is not None:
                    return await self.resources.probe(
                        check.resources, timeout_s=timeout_s, secrets=secrets, namespace=namespace
                    )
                if check.logs is not None:
                    return await self.logs.probe(
                        check.logs,
                        timeout_s=timeout_s,
                        secrets=secrets,
                        namespace=namespace,
                        since_s=since_s or 0.0,
                    )
                assert check.rabbitmq is not None
                return await self.rabbitmq.probe(
                    check.rabbitmq, timeout_s=timeout_s, secrets=secrets
                )
        except TimeoutError:
            return ProbeResult.failed("Timeout", f"no answer within {timeout_s:g}s")
        except Exception as exc:  # a probe bug must not stop the other checks or policies
            elapsed = (time.perf_counter() - start) * 1000.0
            return ProbeResult.failed("Error", f"probe error: {type(exc).__name__}", elapsed)

    async def run(
        self,
        policy: HealthPolicySpec,
        secrets: Mapping[str, Mapping[str, str]],
        namespace: str = "default",
        refused: Mapping[str, str] | None = None,
        cursors: Mapping[str, float] | None = None,
    ) -> dict[str, ProbeResult]:
        """Every check of ``policy`` at once; ``secrets`` by check name, then by role;
        ``cursors``: where each logs check's reading starts (by check name).

        A check in ``refused`` (its Secret may not go to its target: the message says why)
        is not probed: nothing is sent, and its result is ``Refused``.
        """
        checks = list(policy.checks)
        reuse_s = min(self.reuse_s, policy.interval.total_seconds() * REUSE_FRACTION)
        futures = [
            _done(ProbeResult(None, "Refused", why, reason="SecretNotAllowed"))
            if (why := (refused or {}).get(c.name))
            else self.start(
                c,
                policy.timeout_of(c).total_seconds(),
                secrets.get(c.name, {}),
                namespace,
                (cursors or {}).get(c.name),
                reuse_s,
            )
            for c in checks
        ]
        # wait(), unlike gather(), leaves the futures running if this round is cancelled:
        # other policies may be waiting for the same probes. Answers reused are done already.
        if not all(f.done() for f in futures):
            await asyncio.wait(futures)
        return {c.name: f.result() for c, f in zip(checks, futures, strict=True)}


def _since(check: Check, cursor: float | None) -> float:
    """From the cursor, but never further back than the longest rule window (a first read,
    or a cursor older than any window, starts one window ago)."""
    assert check.logs is not None
    windows = [r.window.total_seconds() for r in check.logs.effective_rules() if r.window]
    oldest = time.time() - max(windows, default=3600.0)
    return oldest if cursor is None else max(cursor, oldest)


def _done(result: ProbeResult) -> asyncio.Future[ProbeResult]:
    future: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()
    future.set_result(result)
    return future
