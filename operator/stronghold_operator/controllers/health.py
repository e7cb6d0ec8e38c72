"""HealthPolicy controller: one :class:`PolicyLoop` per policy on the kind's one scheduler.

The handlers (handlers/health.py) feed every watch event to :func:`track`; the scheduler
(:mod:`stronghold_operator.runtime.scheduler`) runs each policy's rounds; a round is
:func:`stronghold_operator.services.health.run_round`; its status goes out through the
policy's :class:`~stronghold_operator.runtime.status.StatusWriter`.

Why not a kopf daemon per policy: a daemon holds kopf's full copy of the object (its
managed fields, annotations and status: about 27 KB of Python objects) and a dozen tasks,
coroutines and contexts, which was most of the operator's memory with a thousand policies,
and it needs a finalizer, which keeps a namespace Terminating while the operator is down.
A policy here is its parsed spec, its status and its slot in one schedule.

Why no kopf change handler either (the other kinds' ``validate``): for each of its objects
kopf then keeps the handled spec in an annotation, runs its change machinery on every watch
event and, at every operator start, runs the handler for every object again. The round
reports an invalid spec itself. kopf still takes off the finalizer that earlier versions put
on HealthPolicies: no handler of this kind needs it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import Counter

from stronghold_operator import conditions as cond
from stronghold_operator.controllers.common import (
    GROUP,
    VERSION,
    Services,
    feed,
    invalid_conditions,
    is_bad,
    maintenance_hold,
    services,
    track_watch,
)
from stronghold_operator.controllers.health_metrics import HealthSeries
from stronghold_operator.controllers.incident import IncidentKeeper
from stronghold_operator.controllers.incident import Policy as IncidentPolicy
from stronghold_operator.controllers.remediation import Remedies
from stronghold_operator.logic import health as logic
from stronghold_operator.logic import lifecycle
from stronghold_operator.logic import remediation as remedies
from stronghold_operator.metrics import registry, text_source
from stronghold_operator.models.base import Interner, InvalidSpec, parse
from stronghold_operator.models.common import (
    MAINTENANCE_ANNOTATION,
    MAINTENANCE_WINDOWS_ANNOTATION,
)
from stronghold_operator.models.health import HealthPolicySpec, LogRead, LogsCheck
from stronghold_operator.models.scaling import ReplicaUsage, TargetRef
from stronghold_operator.platforms.health import SecretCache
from stronghold_operator.platforms.logs import read_logs
from stronghold_operator.platforms.usage import read_usage
from stronghold_operator.platforms.webhook import post_json
from stronghold_operator.probes.logs import LogsProbe
from stronghold_operator.probes.resources import ResourcesProbe
from stronghold_operator.probes.runner import Prober
from stronghold_operator.runtime import events, storms, turns
from stronghold_operator.runtime import load as operator_load
from stronghold_operator.runtime.scheduler import Scheduler
from stronghold_operator.runtime.status import StatusWriter
from stronghold_operator.services import health as service

PLURAL = "healthpolicies"
# An invalid spec's status is re-asserted this often (a fix wakes the policy at once).
INVALID_RECHECK_S = 300.0
JITTER = 0.1  # +-10% of the interval, so a thousand policies do not probe in lockstep
# A policy's second round comes up to half an interval early: policies started together
# spread over the interval at once (runtime/scheduler.py says why).
SPREAD_SECOND = 0.5
# ``lastProbeTime`` alone is written at most this often when nothing else a reader acts on
# changed (docs/healthpolicy.md: why 30 minutes); numbers wait for a significant change.
PROBE_TIME_REFRESH_S = float(os.environ.get("STRONGHOLD_HEALTH_PROBE_TIME_REFRESH", "1800"))
# After a maintenance hold starts or ends, lastProbeTime is written every HOLD_REFRESH_S for
# HOLD_FOLLOW_S: a window's post-checks want a healthy probe made after they started (a
# window pass or two after the release), and a healthy policy has nothing else to write.
HOLD_REFRESH_S, HOLD_FOLLOW_S = 10.0, 30.0

# Policies' equal specs and equal parts of specs are one object each (models/base.py).
SPECS = Interner()

track_watch(PLURAL)
log = logging.getLogger("stronghold.health")

# Per-policy series are assembled at scrape time from each policy's last round.
SERIES = HealthSeries()
text_source(SERIES)
STATUS_WRITES = Counter(
    "stronghold_health_status_writes_total",
    "HealthPolicy status patches: a significant change, or the rare lastProbeTime refresh",
    ["cause"],
    registry=registry,
)
_WRITES = {"change": STATUS_WRITES.labels("change"), "refresh": STATUS_WRITES.labels("refresh")}


def _count_write(cause: str) -> None:
    _WRITES[cause].inc()


_UNSEEN = object()  # no watch event seen yet


def _newsworthy(t: cond.Transition) -> bool:
    return service.newsworthy(t, is_bad)


@dataclass
class HealthRuntime:
    """Process-wide state of the HealthPolicy controller (in memo): the probes, the Secret
    cache, the webhooks in flight and the one schedule that runs every policy's rounds."""

    scheduler: Scheduler[PolicyLoop]  # the kind's one schedule (kept in Services)
    prober: Prober = field(default_factory=Prober)
    secrets: SecretCache | None = None  # created with the first policy (it needs the client)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    keeper: IncidentKeeper | None = None  # the Incident objects (created with the first use)
    remedies: Remedies | None = None  # remediation actions (created with the first use)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background (kept referenced until it ends)."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def secret_cache(self, svc: Services) -> SecretCache:
        if self.secrets is None:
            self.secrets = SecretCache(svc.kube)
        return self.secrets

    def incidents(self, svc: Services) -> IncidentKeeper:
        if self.keeper is None:
            self.keeper = IncidentKeeper(svc.kube)
        return self.keeper

    def remedy(self, svc: Services) -> Remedies:
        if self.remedies is None:
            self.remedies = Remedies(svc.kube)
        return self.remedies

    def prune_secrets(self, now: float) -> None:
        if self.secrets is not None:
            self.secrets.prune(now)


def runtime(memo: kopf.Memo) -> HealthRuntime:
    """The process's runtime: created once (at startup), before any policy is seen.

    kopf gives every object a shallow copy of this memo: a runtime created lazily in a
    per-object handler was per policy (its own HTTP client, database and broker
    connections), which a thousand policies turned into a thousand of each.
    """
    rt = memo.get("health")
    if not isinstance(rt, HealthRuntime):
        schedule = services(memo).scheduler("HealthPolicy", new_scheduler)
        prober = Prober(resources=resources_probe(memo), logs=logs_probe(memo))
        rt = memo["health"] = HealthRuntime(schedule, prober)
    return rt


def new_scheduler() -> Scheduler[PolicyLoop]:
    """The kind's one scheduler (kept in :class:`Services`, stopped at operator cleanup)."""
    return Scheduler("HealthPolicy", jitter=JITTER, retry_after=15.0, spread_second=SPREAD_SECOND)


def resources_probe(memo: kopf.Memo) -> ResourcesProbe:
    """Resources checks read usage with the operator's API client (looked up per probe)."""

    async def read(ref: TargetRef, namespace: str) -> list[ReplicaUsage]:
        return await read_usage(services(memo).kube, namespace, ref)

    return ResourcesProbe(read)


def logs_probe(memo: kopf.Memo) -> LogsProbe:
    """Logs checks read through the Docker Engine or the operator's API client (pods/log)."""

    async def read(spec: LogsCheck, namespace: str, since_s: float, max_bytes: int) -> LogRead:
        return await read_logs(services(memo).kube, namespace, spec, since_s, max_bytes)

    return LogsProbe(read)


def track(memo: kopf.Memo, event: Mapping[str, Any], body: kopf.Body, kwargs: Any) -> None:
    """One watch event: a new policy gets a loop, a change wakes its round, a delete ends it."""
    rt, svc = runtime(memo), services(memo)
    svc.remember_windows(kwargs)
    feed(rt.scheduler, svc, event, body, lambda: PolicyLoop(svc, rt, body))


async def stop(memo: kopf.Memo) -> None:
    """Close the shared clients (the schedule stops with every kind's, in settings.close)."""
    rt = memo.get("health")
    if isinstance(rt, HealthRuntime):
        await rt.scheduler.stop()  # before its probes' clients close; stopping twice is harmless
        if rt.keeper is not None:
            await rt.keeper.settle()  # the Incidents' last writes, before the API client closes
        await rt.prober.close()
    await operator_load.monitor().stop()  # the lag timer and the shared-target flusher
    await storms.gate().close()


class PolicyLoop:
    """One policy between rounds (a :class:`~stronghold_operator.runtime.scheduler.Loop`).

    It keeps a slim copy of the object (no spec, status or managed fields): the spec is
    parsed once per generation, and the status is the writer's.
    """

    __slots__ = (
        "_generation",
        "_incident",
        "_ports",
        "body",
        "invalid",
        "outcomes",
        "ref",
        "rt",
        "secret_misses",
        "series",
        "spec",
        "started",
        "svc",
        "uid",
        "wake_at",
        "writer",
    )

    def __init__(self, svc: Services, rt: HealthRuntime, body: Mapping[str, Any]) -> None:
        self.svc, self.rt = svc, rt
        meta = body["metadata"]
        self.uid = str(meta["uid"])
        self.ref = f"{meta['namespace']}/{meta['name']}"
        # What kopf.event needs to name the object, plus generation and annotations.
        self.body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "HealthPolicy",
            "metadata": {"namespace": meta["namespace"], "name": meta["name"], "uid": self.uid},
        }
        # ``checks`` is replaced whole by a merge patch: the writer keeps only the latest
        # list, not the written one (the old list was a third of a policy's memory).
        self.writer = StatusWriter(
            svc.kube,
            PLURAL,
            self.body,
            dict(body.get("status") or {}),
            newsworthy=_newsworthy,
            signature=service.signature,
            refresh=("lastProbeTime",),
            refresh_every=PROBE_TIME_REFRESH_S,
            replaced=("checks",),
            on_gone=lambda: rt.scheduler.forget(self.uid),
            on_write=_count_write,
        )
        self.started = False
        self.secret_misses = 0
        self.series = SERIES.series(self.uid, meta["namespace"], meta["name"])  # for /metrics
        self.spec: HealthPolicySpec | None = None  # None: invalid, and ``invalid`` says why
        # Remediation actions this process started, until their verification (in status:
        # verifyAt, which a restart continues from without them).
        self.outcomes: dict[str, remedies.Outcome] = {}
        self.wake_at: float | None = None  # monotonic: a verifying round asked for then
        self.invalid = ""
        self._generation: object = _UNSEEN
        # Built once per parsed spec, not every round (a tenth of a round's CPU at 10,000).
        self._ports: tuple[HealthPolicySpec | None, service.Ports] | None = None
        self._incident: tuple[HealthPolicySpec | None, IncidentPolicy | None] | None = None
        self.observe(body)

    def observe(self, body: Mapping[str, Any]) -> bool:
        """Take in a watch event; True when the change deserves a round now.

        The spec is parsed again only when ``metadata.generation`` moves: validating it was
        the largest CPU cost per round with a thousand policies, and a spec change always
        bumps the generation.
        """
        meta = body["metadata"]
        generation = meta.get("generation")
        annotations = meta.get("annotations") or {}
        maintenance = annotations.get(MAINTENANCE_ANNOTATION)
        placed = annotations.get(MAINTENANCE_WINDOWS_ANNOTATION)
        slim = self.body["metadata"]
        renewed = generation != self._generation and self._generation is not _UNSEEN
        changed = generation != self._generation or maintenance != self.maintenance
        if maintenance != self.maintenance and self._generation is not _UNSEEN:
            self.writer.refresh_soon(HOLD_REFRESH_S, HOLD_FOLLOW_S)
        if generation != self._generation or generation is None:
            self._generation = generation
            try:
                self.spec, self.invalid = SPECS(parse(HealthPolicySpec, body.get("spec") or {})), ""
            except InvalidSpec as exc:
                self.spec, self.invalid = None, str(exc)
        slim["generation"] = generation
        if maintenance is None:
            slim.pop("annotations", None)
        else:
            slim["annotations"] = {MAINTENANCE_ANNOTATION: maintenance}
            if placed is not None:  # which holders are windows (see maintenance_hold)
                slim["annotations"][MAINTENANCE_WINDOWS_ANNOTATION] = placed
        if renewed and self.writer.current.get("conditions"):
            # observedGeneration now, not after a round that may be probing for seconds.
            self.writer.update({}, lifecycle.acknowledge(generation))
        return changed

    @property
    def maintenance(self) -> str | None:
        value = (self.meta.get("annotations") or {}).get(MAINTENANCE_ANNOTATION)
        return None if value is None else str(value)

    @property
    def meta(self) -> Mapping[str, Any]:
        meta: Mapping[str, Any] = self.body["metadata"]
        return meta

    async def run(self) -> float:
        """One round; returns the seconds until the next one."""
        policy = self.spec
        if policy is None:
            # The message names the field. Nothing to probe: a spec change wakes us.
            self.writer.update({}, invalid_conditions(self.invalid, logic.CONDITION_TYPES))
            return INVALID_RECHECK_S
        if not self.started:
            self.started = True
            if not self.writer.current.get("conditions"):
                self.writer.update({}, cond.unknown_all(logic.CONDITION_TYPES))
        where = service.Where(self.meta["namespace"], self.meta["name"])
        generation = self._generation
        # --- operator overload (storm): the round's lateness and loop stall, read after
        # its probes; a slow result they explain is not the target's (runtime/load.py).
        load = operator_load.RoundLoad()
        ports = self.ports(load)
        r = await service.run_round(policy, self.writer.current, where, ports, self.secret_misses)
        discounted = len(r.evaluation.discounted) if r.evaluation is not None else 0
        operator_load.note_round(load.seen, policy.interval.total_seconds(), discounted)
        # --- end operator overload
        self.secret_misses = self.secret_misses + 1 if r.secret_missing else 0
        fields, conditions = service.without_overload(self.writer.current, r)
        if self._generation != generation:  # the spec changed meantime: the next round tells
            conditions = [*conditions, *lifecycle.acknowledge(self._generation)]
        if r.fold is None:
            self.writer.update(fields, conditions)
        else:  # a shared target's storm tells this round's Events (runtime/storms.py)
            fold = functools.partial(storms.fold, *r.fold)
            self.writer.update(fields, conditions, folded=fold)
        if r.evaluation is not None:
            ev = r.evaluation
            self.series.record(policy.checks, r.results, ev.status["checks"], ev.severity)
        if (mine := self.incident_policy()) is not None:
            self.rt.incidents(self.svc).tidy(mine)  # retention by age, from memory
        return self._sooner(r.delay)

    def wake(self, seconds: float) -> None:
        """A remediation action finished: its verifying round in ``seconds``."""
        self.wake_at = time.monotonic() + seconds
        if self.rt.scheduler.loops.get(self.uid) is self:
            self.rt.scheduler.plan(self.uid, self.wake_at, earliest=True)

    def _sooner(self, delay: float) -> float:
        """``delay``, or less when a wake-up asked during this round is due sooner (the
        scheduler plans the next round from the round's own delay)."""
        if self.wake_at is None:
            return delay
        left = self.wake_at - time.monotonic()
        if left <= 0:
            self.wake_at = None
            return delay
        return min(delay, left)

    def ports(self, load: Callable[[], logic.Load] | None = None) -> service.Ports:
        """The round's ports: the spec's (built when it changes) with this round's ``load``."""
        cached = self._ports
        if cached is None or cached[0] is not self.spec:
            cached = self._ports = (self.spec, self._spec_ports())
        return dataclasses.replace(cached[1], load=load)

    def _spec_ports(self) -> service.Ports:
        return service.Ports(
            secrets=self.rt.secret_cache(self.svc),
            prober=self.rt.prober,
            post=functools.partial(post_json, self.rt.prober.http.client),
            event=self.event,
            spawn=self.rt.spawn,
            clock=cond.utcnow,
            maintenance=lambda: maintenance_hold(self.svc, self.meta),  # gone windows hold no more
            log=lambda line: log.info("%s: %s", self.ref, line),
            incidents=self.incident_port(),
            shared=functools.partial(storms.report, self.body),  # one Event per shared target
            covered=functools.partial(storms.covered, self.body),  # ... which folds the policies'
            fold=storms.fold,  # own Events about it (counted into its closing Event)
            remedy=self.rt.remedy(self.svc) if self.spec and self.spec.remediation else None,
            note=self.incident_note,
            outcomes=self.outcomes,
            wake=self.wake,
            turn=turns.gate().take,
        )

    def incident_note(self, name: str, type_: str, reason: str, message: str) -> None:
        keeper = self.rt.incidents(self.svc)
        keeper.note(str(self.meta["namespace"]), name, type_, reason, message)

    def incident_policy(self) -> IncidentPolicy | None:
        cached = self._incident
        if cached is not None and cached[0] is self.spec:
            return cached[1]
        policy = None
        if self.spec is not None:
            meta = self.meta
            policy = IncidentPolicy(
                str(meta["namespace"]),
                str(meta["name"]),
                self.uid,
                self.spec.incident_history,
                tuple(self.spec.workloads()),
            )
        self._incident = (self.spec, policy)
        return policy

    def incident_port(self) -> service.Incidents | None:
        policy = self.incident_policy()
        return None if policy is None else self.rt.incidents(self.svc).port(policy)

    def event(self, kind: str, reason: str, message: str) -> None:
        events.post(self.body, type=kind, reason=reason, message=message)

    def close(self) -> None:
        """The policy is gone (or the operator stops): its writes, series and caches go."""
        self.writer.close()
        storms.forget(self.body)
        self.svc.unfollow(self.uid)
        SERIES.forget(self.uid)
        if self.spec is not None:
            self.rt.prober.forget(self.spec)
        self.rt.prune_secrets(time.monotonic())

    async def settle(self) -> None:
        """Let the last status write land (the operator is stopping)."""
        await self.writer.settle()


def track_incident(memo: kopf.Memo, event: Mapping[str, Any], body: kopf.Body) -> None:
    """One watch event of an Incident: acknowledgement and resolution by hand
    (controllers/incident.py)."""
    rt, svc = runtime(memo), services(memo)
    rt.incidents(svc).observe(event, body)
