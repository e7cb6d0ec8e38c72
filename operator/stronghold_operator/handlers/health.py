"""HealthPolicy handlers: one schedule runs every policy's rounds (probe, evaluate, report,
alert); a watch-event handler keeps it current.

The decisions are :func:`stronghold_operator.logic.health.evaluate` (pure); the probes are
:class:`stronghold_operator.probes.runner.Prober` (one per process, shared clients and
per-target caps). A failing service is data: nothing here raises for it, so kopf never
retries a handler because a database is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import kopf
from prometheus_client import Counter, Histogram

from stronghold_operator import conditions as cond
from stronghold_operator.controllers.common import (
    GROUP,
    VERSION,
    Services,
    announce,
    compute_status,
    invalid_conditions,
    is_bad,
    maintenance_hold,
    services,
    track_watch,
)
from stronghold_operator.handlers.health_metrics import HealthCollector
from stronghold_operator.logic import health as logic
from stronghold_operator.logic.schedule import Schedule
from stronghold_operator.metrics import registry
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.common import (
    MAINTENANCE_ANNOTATION,
    MAINTENANCE_WINDOWS_ANNOTATION,
    SecretKeySelector,
)
from stronghold_operator.models.health import HealthPolicySpec, Webhook
from stronghold_operator.models.outbound import secret_refusal
from stronghold_operator.models.scaling import ReplicaUsage, TargetRef
from stronghold_operator.platforms.kube import (
    SecretEntry,
    is_not_found,
    patch_status,
    read_secret_entry,
)
from stronghold_operator.platforms.usage import read_usage
from stronghold_operator.platforms.webhook import post_json
from stronghold_operator.probes.resources import ResourcesProbe
from stronghold_operator.probes.runner import Prober

PLURAL = "healthpolicies"
SECRET_TTL_S = 60.0  # Secrets are re-read (get) at most this often per key
# An invalid spec's status is re-asserted this often (a fix wakes the policy at once).
INVALID_RECHECK_S = 300.0
JITTER = 0.1  # +-10% of the interval, so a thousand policies do not probe in lockstep
# Status writes that only refresh numbers and messages happen at most this often.
STATUS_HEARTBEAT_S = float(os.environ.get("STRONGHOLD_HEALTH_STATUS_HEARTBEAT", "60"))

track_watch(PLURAL)
log = logging.getLogger("stronghold.health")

# Per-policy series are assembled at scrape time from each policy's last round.
SERIES = HealthCollector()
registry.register(SERIES)
STATUS_WRITES = Counter(
    "stronghold_health_status_writes_total",
    "HealthPolicy status patches: a significant change, or the heartbeat of the numbers",
    ["cause"],
    registry=registry,
)
_WRITE_CHANGE = STATUS_WRITES.labels("change")
_WRITE_HEARTBEAT = STATUS_WRITES.labels("heartbeat")
LATENESS = Histogram(
    "stronghold_health_round_lateness_seconds",
    "How late a policy's probe round started compared with its schedule",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10),
    registry=registry,
)


@dataclass
class HealthRuntime:
    """Process-wide state of the HealthPolicy handlers (in memo): every policy's loop and
    the one schedule that runs them."""

    prober: Prober = field(default_factory=Prober)
    secrets: dict[tuple[str, str, str], tuple[float, SecretEntry]] = field(default_factory=dict)
    # One read per expired key: without it, every policy sharing a Secret re-read it at once.
    secret_locks: dict[tuple[str, str, str], asyncio.Lock] = field(default_factory=dict)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    policies: dict[str, PolicyLoop] = field(default_factory=dict)  # by uid
    schedule: Schedule = field(default_factory=Schedule)
    tick: asyncio.Event = field(default_factory=asyncio.Event)  # the schedule moved earlier
    runner: asyncio.Task[None] | None = None

    def plan(self, uid: str, when: float, *, earliest: bool = False) -> None:
        """Run ``uid``'s next round at ``when`` (``earliest``: unless it is due sooner)."""
        head = self.schedule.next_at()
        if earliest:
            self.schedule.sooner(uid, when)
        else:
            self.schedule.at(uid, when)
        if head is None or when < head:
            self.tick.set()

    def prune_secrets(self, now: float) -> None:
        """Drop expired Secret values and their idle locks: those of deleted policies (and
        deleted Secrets) were kept for the life of the process."""
        for key in [k for k, (expires, _) in self.secrets.items() if expires <= now]:
            del self.secrets[key]
        for key in [
            k
            for k, lock in self.secret_locks.items()
            if k not in self.secrets and not lock.locked()
        ]:
            del self.secret_locks[key]

    def forget(self, uid: str) -> None:
        """The policy is gone: stop its round, its status write and its series."""
        loop = self.policies.pop(uid, None)
        self.schedule.drop(uid)
        SERIES.forget(uid)
        self.prune_secrets(time.monotonic())
        if loop is not None:
            loop.svc.unfollow(uid)
            if loop.spec is not None:
                self.prober.forget(loop.spec)
            for task in (loop.task, loop.writing):
                if task is not None:
                    task.cancel()


def runtime(memo: kopf.Memo) -> HealthRuntime:
    rt = memo.get("health")
    if not isinstance(rt, HealthRuntime):
        rt = memo["health"] = HealthRuntime(prober=Prober(resources=resources_probe(memo)))
    return rt


def resources_probe(memo: kopf.Memo) -> ResourcesProbe:
    """Resources checks read usage with the operator's API client (looked up per probe)."""

    async def read(ref: TargetRef, namespace: str) -> list[ReplicaUsage]:
        return await read_usage(services(memo).kube, namespace, ref)

    return ResourcesProbe(read)


@kopf.on.startup(id="health-startup")
async def start_probes(memo: kopf.Memo, **_: Any) -> None:
    """Create the probes once per process, before any policy is seen.

    kopf gives every object a shallow copy of this memo: a runtime created lazily in a
    per-object handler was per policy (its own HTTP client, database and broker
    connections), which a thousand policies turned into a thousand of each.
    """
    runtime(memo)


@kopf.on.cleanup(id="health-cleanup")
async def close_probes(memo: kopf.Memo, **_: Any) -> None:
    """Stop the schedule, let the last status writes land, close the shared clients."""
    rt = memo.get("health")
    if not isinstance(rt, HealthRuntime):
        return
    if rt.runner is not None:
        rt.runner.cancel()
    loops = list(rt.policies.values())
    for loop in loops:
        if loop.task is not None:
            loop.task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*(lp.settle() for lp in loops)), 10)
    await rt.prober.close()


@kopf.on.event(GROUP, VERSION, PLURAL, id="track")
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep the schedule's view of each policy current; a change wakes its round now.

    Why not a kopf daemon per policy: a daemon holds kopf's full copy of the object (its
    managed fields, annotations and status: about 27 KB of Python objects) and a dozen
    tasks, coroutines and contexts, which was most of the operator's memory with a
    thousand policies, and it needs a finalizer, which keeps a namespace Terminating
    while the operator is down. A policy here is its parsed spec, its status and its slot
    in one schedule.

    Why no kopf change handler either (the other kinds' ``validate``): for each of its
    objects kopf then keeps the handled spec in an annotation, runs its change machinery on
    every watch event and, at every operator start, runs the handler for every object again. The
    round reports an invalid spec itself. kopf still takes off the finalizer that earlier
    versions put on HealthPolicies: no handler of this kind needs it.
    """
    rt = runtime(memo)
    meta = body["metadata"]
    uid = str(meta["uid"])
    if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
        rt.forget(uid)
        return
    svc = services(memo)
    svc.remember_windows(kwargs)
    if rt.runner is None:
        # Started from here, not at startup: its tasks inherit this context, where kopf
        # has set up what kopf.event() posts through (startup handlers lack it).
        rt.runner = asyncio.create_task(run_schedule(rt))
    loop = rt.policies.get(uid)
    if loop is None:
        loop = rt.policies[uid] = PolicyLoop(svc, rt, body, dict(body.get("status") or {}))
        # Spread over the first seconds: a restart must not probe every policy at once.
        rt.plan(uid, time.monotonic() + random.uniform(0, 2))
    elif loop.observe(body):
        rt.plan(uid, time.monotonic(), earliest=True)
    svc.seen(uid, str(meta.get("resourceVersion", "")))


async def run_schedule(rt: HealthRuntime) -> None:
    """Start every round that is due; sleep until the next one or a change of plan.

    Every policy's rounds hang on this one task: an unexpected error is logged and the loop
    goes on a second later, instead of silently ending all probing.
    """
    while True:
        try:
            await _run_due(rt)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("health schedule: unexpected error; continuing in 1 s")
            await asyncio.sleep(1.0)


async def _run_due(rt: HealthRuntime) -> None:
    """Start the rounds that are due, then wait for the next due time or a change of plan."""
    now = time.monotonic()
    for uid, due in rt.schedule.pop_due(now):
        loop = rt.policies.get(uid)
        if loop is None:
            continue
        if loop.task is not None and not loop.task.done():
            loop.again = True  # woken mid-round: the round that follows starts at once
            continue
        LATENESS.observe(max(0.0, now - due))
        loop.task = asyncio.create_task(run_round(rt, loop, now))
    head = rt.schedule.next_at()
    rt.tick.clear()
    timeout = None if head is None else max(0.0, head - time.monotonic())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(rt.tick.wait(), timeout)


async def run_round(rt: HealthRuntime, loop: PolicyLoop, started: float) -> None:
    """One round of one policy, then its next slot (``spec.interval``, jittered)."""
    try:
        delay = await loop.round()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # an API hiccup must not stop the policy: retry later
        # The type and the API's own message (it names the field); status is redacted.
        detail = str(getattr(exc, "body", "") or "")[:500]
        log.warning("%s: health round failed: %s %s", loop.ref, type(exc).__name__, detail)
        delay = 15.0
    loop.task = None  # a finished task keeps its result and context alive
    if rt.policies.get(loop.uid) is not loop:
        return  # deleted meanwhile
    if loop.again:
        loop.again = False
        rt.plan(loop.uid, time.monotonic())
    else:
        rt.plan(loop.uid, started + delay * (1 + random.uniform(-JITTER, JITTER)))


class PolicyLoop:
    """One policy between rounds: what the watch last said of it and its status as written.

    It keeps a slim copy of the object (no spec, status or managed fields): the spec is
    parsed once per generation, and the status is ours.
    """

    __slots__ = (
        "_generation",
        "_written_sig",
        "again",
        "body",
        "current",
        "invalid",
        "last_write",
        "ref",
        "rt",
        "secret_misses",
        "series",
        "spec",
        "started",
        "svc",
        "task",
        "uid",
        "writing",
        "written",
    )

    def __init__(
        self, svc: Services, rt: HealthRuntime, body: Mapping[str, Any], status: dict[str, Any]
    ) -> None:
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
        self.current = status  # what the logic continues from (may be ahead of the API)
        # What the API has, but for ``checks``: a merge patch replaces that list whole, so
        # only its signature is kept (the old list was a third of a policy's memory).
        self.written, self._written_sig = _as_written(status)
        self.last_write = -1e9
        self.writing: asyncio.Task[None] | None = None
        self.task: asyncio.Task[None] | None = None  # the round in progress
        self.again = False  # a change arrived during the round
        self.started = False
        self.secret_misses = 0
        self.series = SERIES.series(self.uid, meta["namespace"], meta["name"])  # for /metrics
        self.spec: HealthPolicySpec | None = None  # None: invalid, and ``invalid`` says why
        self.invalid = ""
        self._generation: object = object()
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
        changed = generation != self._generation or maintenance != self.maintenance
        if generation != self._generation or generation is None:
            self._generation = generation
            try:
                self.spec, self.invalid = parse(HealthPolicySpec, body.get("spec") or {}), ""
            except InvalidSpec as exc:
                self.spec, self.invalid = None, str(exc)
        slim["generation"] = generation
        if maintenance is None:
            slim.pop("annotations", None)
        else:
            slim["annotations"] = {MAINTENANCE_ANNOTATION: maintenance}
            if placed is not None:  # which holders are windows (see maintenance_hold)
                slim["annotations"][MAINTENANCE_WINDOWS_ANNOTATION] = placed
        return changed

    @property
    def obj(self) -> kopf.Body:
        """The slim copy as kopf's Events want it."""
        return kopf.Body(cast(kopf.RawBody, self.body))

    @property
    def maintenance(self) -> str | None:
        value = (self.meta.get("annotations") or {}).get(MAINTENANCE_ANNOTATION)
        return None if value is None else str(value)

    @property
    def meta(self) -> Mapping[str, Any]:
        meta: Mapping[str, Any] = self.body["metadata"]
        return meta

    async def write(self, desired: Mapping[str, Any], updates: list[cond.Condition]) -> None:
        """Merge into the local status; patch the API when something significant changed.

        Latencies, counters and lastProbeTime change every round; writing them every round
        would be one status write per policy per interval. They are kept locally (the
        logic needs them) and written with the next significant change or heartbeat.
        """
        due = time.monotonic() - self.last_write >= STATUS_HEARTBEAT_S
        generation = self.meta.get("generation")
        if not due:
            # Most rounds change only numbers and words: when the signature of what this
            # round would write equals the written one, there is nothing to write and no
            # transition to announce, so the full diff is skipped. The logic continues from
            # the new numbers; conditions keep their written form until the next write.
            candidate = {**self.current, **desired, "observedGeneration": generation}
            candidate["conditions"] = _merged_signature_conditions(
                self.written.get("conditions"), updates
            )
            if hash(_signature(candidate)) == self._written_sig:
                candidate["conditions"] = self.written.get("conditions") or []
                self.current = candidate
                return
        now = cond.utcnow()
        delta, moved = compute_status(self.body, self.written, desired, updates, now)
        base = self.written
        if "checks" in self.current:  # the latest list, unless this write replaces it
            base = {**base, "checks": self.current["checks"]}
        self.current = cond.merge_patch(base, delta)
        busy = self.writing is not None and not self.writing.done()
        significant = bool(delta) and hash(_signature(self.current)) != self._written_sig
        if delta and not busy and (due or significant):
            (_WRITE_CHANGE if significant else _WRITE_HEARTBEAT).inc()
            # In the background: a slow API server must not make the next round late.
            # ``written`` moves now, so the next round diffs (and announces transitions)
            # against what is on its way; a failed write puts it back and is retried. One
            # write at a time per policy: merge patches must arrive in order.
            before = self.written, self._written_sig
            self.written, self._written_sig = _as_written(self.current)
            # A policy's first heartbeat comes at a random point of the period: policies
            # applied together would otherwise write together, every period, for ever.
            first = self.last_write < 0
            spread = random.uniform(0, STATUS_HEARTBEAT_S) if first else 0.0
            self.last_write = time.monotonic() - spread
            self.writing = asyncio.create_task(self.patch(delta, before))
        # Incident transitions have their own, richer Events (IncidentOpened, ...). The first
        # evaluation's good news is not news (a thousand new policies made four thousand
        # Events, which the API server answered with 429s); bad news always is.
        announce(
            self.obj,
            [
                t
                for t in moved
                if t.type != logic.INCIDENT_OPEN
                and not (t.old_reason == cond.REASON_INITIALIZING and not is_bad(t))
            ],
        )

    async def patch(self, delta: dict[str, Any], before: tuple[dict[str, Any], int]) -> None:
        try:
            await patch_status(
                self.svc.kube, PLURAL, self.meta["namespace"], self.meta["name"], delta
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_not_found(exc):  # deleted, and the watch has not said so yet
                self.rt.forget(self.uid)
                return
            (self.written, self._written_sig), self.last_write = before, -1e9
            detail = str(getattr(exc, "body", "") or "")[:300]
            log.warning("%s: status write failed: %s %s", self.ref, type(exc).__name__, detail)
        finally:
            self.writing = None

    async def settle(self) -> None:
        """Let the last status write land (the operator is stopping)."""
        if self.writing is not None and not self.writing.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writing, 5)

    async def first_sight(self) -> None:
        if self.current.get("conditions") or self.spec is None:
            return  # an invalid spec: the round reports it, not Unknown before it
        await self.write({}, cond.unknown_all(logic.CONDITION_TYPES))

    async def round(self) -> float:
        """One evaluation; returns the seconds until the next one."""
        if not self.started:
            self.started = True
            await self.first_sight()
        policy = self.spec
        if policy is None:
            # The message names the field. Nothing to probe: a spec change wakes us.
            await self.write({}, invalid_conditions(self.invalid, logic.CONDITION_TYPES))
            return INVALID_RECHECK_S
        interval = policy.interval.total_seconds()
        if policy.suspend:
            await self.write(
                {},
                [
                    cond.Condition(cond.READY, "False", cond.REASON_SUSPENDED, "spec.suspend"),
                    *cond.unknown_all(logic.CONDITION_TYPES[1:], cond.REASON_SUSPENDED),
                ],
            )
            return interval
        try:
            secrets, refused = await self.resolve_secrets(policy)
        except LookupError as exc:
            self.secret_misses += 1
            message = f"{exc}; retrying with backoff"
            await self.write(
                {}, [cond.Condition(cond.READY, "False", cond.REASON_SECRET_MISSING, message)]
            )
            return logic.missing_secret_backoff(self.secret_misses - 1, policy.interval)
        self.secret_misses = 0
        now = cond.utcnow()
        results = await self.rt.prober.run(policy, secrets, self.meta["namespace"], refused)
        maintenance = maintenance_hold(self.svc, self.meta)  # gone windows hold no more
        known = [v for per_check in secrets.values() for v in per_check.values()]
        ev = logic.evaluate(
            policy, self.meta["name"], self.current, results, maintenance, now, known
        )
        status = ev.status
        conditions = [
            cond.Condition(c.type, c.status, c.reason, logic.redact(c.message, known))
            for c in ev.conditions
        ]
        await self.write(status, conditions)
        self.series.record(policy.checks, results, ev.status["checks"], ev.severity)
        for note in ev.notifications:
            self.notify(policy, note, ev, known)
        return interval

    async def secret(self, ref: SecretKeySelector) -> str:
        return (await self.secret_entry(ref)).value

    async def secret_to(
        self,
        ref: SecretKeySelector,
        field: str,
        url_or_host: str,
        port: int | None = None,
        shown: str | None = None,
    ) -> str:
        """A Secret value that is about to be sent to ``url_or_host`` (``host`` with ``port``,
        or a URL): only when the Secret's allowed-destinations annotation names it."""
        entry = await self.secret_entry(ref)
        if port is None:
            parts = urlsplit(url_or_host)
            try:
                host = parts.hostname or ""
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise SecretNotAllowed(f"{field}: the destination is not a valid URL") from None
        else:
            host = url_or_host
        name = f"{self.meta['namespace']}/{ref.secret_key_ref.name}"
        why = secret_refusal(field, name, entry.destinations, host, port, shown)
        if why:
            raise SecretNotAllowed(why)
        return entry.value

    async def secret_entry(self, ref: SecretKeySelector) -> SecretEntry:
        ns = self.meta["namespace"]
        key = (ns, ref.secret_key_ref.name, ref.secret_key_ref.key)
        hit = self.rt.secrets.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        async with self.rt.secret_locks.setdefault(key, asyncio.Lock()):
            hit = self.rt.secrets.get(key)  # read meanwhile by another policy's round
            if hit and hit[0] > time.monotonic():
                return hit[1]
            entry = await read_secret_entry(self.svc.kube, *key)
            self.rt.secrets[key] = (time.monotonic() + SECRET_TTL_S, entry)
            return entry

    async def resolve_secrets(
        self, policy: HealthPolicySpec
    ) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """Secret values by check name and role (``password``, ``url``, ...), and why a
        check may not be sent its Secret (by check name: it is then not probed at all)."""
        out: dict[str, dict[str, str]] = {}
        refused: dict[str, str] = {}
        for i, c in enumerate(policy.checks):
            roles: dict[str, str] = {}
            at = f"spec.checks[{i}]"
            try:
                if c.postgres is not None and c.postgres.password is not None:
                    roles["password"] = await self.secret_to(
                        c.postgres.password,
                        f"{at}.postgres.password",
                        c.postgres.host,
                        c.postgres.port,
                    )
                if c.rabbitmq is not None:
                    # The AMQP URL goes only to the broker it names: its writer chose that.
                    roles["url"] = await self.secret(c.rabbitmq.url)
                    if c.rabbitmq.management is not None:
                        roles["management-password"] = await self.secret_to(
                            c.rabbitmq.management.password,
                            f"{at}.rabbitmq.management.password",
                            c.rabbitmq.management.url,
                        )
            except SecretNotAllowed as exc:
                refused[c.name] = str(exc)
                roles = {}
            out[c.name] = roles
        hooks = [policy.alerting.webhook] + [s.webhook for s in policy.alerting.escalation]
        webhook_roles: dict[str, str] = {}
        for i, hook in enumerate(h for h in hooks if h is not None):
            if hook.url_from is not None:
                webhook_roles[f"url-{i}"] = await self.secret(hook.url_from)
            if hook.authorization is not None:
                webhook_roles[f"authorization-{i}"] = await self.secret(hook.authorization)
        out[" webhooks"] = webhook_roles  # a name no check can have (read for redaction only)
        return out, refused

    def notify(
        self,
        policy: HealthPolicySpec,
        note: logic.Notification,
        ev: logic.Evaluation,
        known: list[str],
    ) -> None:
        """An Event always; webhooks (unless expected) in the background."""
        expected = " [expected: maintenance in progress, no webhook sent]" if note.expected else ""
        kind = "Normal" if note.kind == "Resolved" or note.expected else "Warning"
        message = logic.redact(note.message, known) + expected
        kopf.event(self.obj, type=kind, reason=note.reason, message=message[:1000])
        hooks = [policy.alerting.webhook] + [s.webhook for s in policy.alerting.escalation]
        index = {id(h): i for i, h in enumerate(x for x in hooks if x is not None)}
        for hook in note.webhooks:
            task = asyncio.create_task(self.send(hook, index.get(id(hook), 0), note, ev, known))
            self.rt.background.add(task)
            task.add_done_callback(self.rt.background.discard)

    async def send(
        self,
        hook: Webhook,
        index: int,
        note: logic.Notification,
        ev: logic.Evaluation,
        known: list[str],
    ) -> None:
        ns, name = self.meta["namespace"], self.meta["name"]
        body = logic.webhook_body(note, hook, ns, name, ev.verdicts, cond.utcnow())
        body = json.loads(logic.redact(json.dumps(body), _escaped(known)))
        try:
            url = hook.url or await self.secret(hook.url_from)  # type: ignore[arg-type]
            auth = None
            if hook.authorization is not None:
                auth = await self.secret_to(
                    hook.authorization,
                    f"{_hook_field(self.spec, hook)}.authorization",
                    url,
                    shown="the urlFrom destination" if hook.url_from else None,
                )
        except (LookupError, SecretNotAllowed) as exc:
            kopf.event(self.obj, type="Warning", reason="WebhookFailed", message=str(exc))
            return
        delivery = await post_json(
            self.rt.prober.http.client,
            url,
            body,
            timeout_s=hook.timeout.total_seconds(),
            delays=logic.retry_delays(hook.retries),
            authorization=auth,
        )
        where = "urlFrom Secret" if hook.url_from else hook.url
        if delivery.ok:
            log.info(
                "%s: webhook %s for %s sent (%s)",
                self.ref,
                note.kind,
                note.incident.get("id"),
                where,
            )
        else:
            kopf.event(
                self.obj,
                type="Warning",
                reason="WebhookFailed",
                message=f"{note.kind} webhook to {where} failed after {delivery.attempts}"
                f" attempt(s): {delivery.detail}",
            )


class SecretNotAllowed(Exception):
    """A Secret's allowed-destinations annotation does not name where it would be sent."""


def _hook_field(policy: HealthPolicySpec | None, hook: Webhook) -> str:
    """Where ``hook`` is in the spec (for messages that name the field)."""
    if policy is not None:
        for j, step in enumerate(policy.alerting.escalation):
            if step.webhook is hook:
                return f"spec.alerting.escalation[{j}].webhook"
    return "spec.alerting.webhook"


def _as_written(status: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """The status as :class:`PolicyLoop` keeps what the API has: without the checks (a merge
    patch replaces that list whole), and the hash of its :func:`_signature` (64 bits: a
    collision would only put a change off until the next heartbeat)."""
    return {k: v for k, v in status.items() if k != "checks"}, hash(_signature(status))


def _merged_signature_conditions(
    written: list[dict[str, Any]] | None, updates: list[cond.Condition]
) -> list[dict[str, Any]]:
    """Type, status and reason of the conditions after ``updates`` (as ``cond.upsert``
    orders them): all :func:`_signature` reads of them."""
    by_type = {u.type: u for u in updates}
    out = []
    for c in written or ():
        u = by_type.pop(str(c.get("type")), None)
        out.append(c if u is None else {"type": u.type, "status": u.status, "reason": u.reason})
    out += [{"type": u.type, "status": u.status, "reason": u.reason} for u in by_type.values()]
    return out


def _signature(status: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a reader acts on, not the numbers and words that move every round.

    Latencies, measurements, counters, the last probe's raw state and the messages (which
    quote latencies) move every round; writing them every round was most of the operator's
    and the API server's CPU with a thousand policies. They go out with the next
    significant change or heartbeat.
    """
    conditions = tuple(
        (c.get("type"), c.get("status"), c.get("reason"))
        for c in status.get("conditions") or ()
        if isinstance(c, dict)
    )
    checks = tuple(
        (
            c.get("name"),
            c.get("type"),
            c.get("state"),
            c.get("reason"),
            tuple(
                (f.get("code"), f.get("level"), f.get("component"))
                for f in c.get("findings") or ()
                if isinstance(f, dict)
            ),
        )
        for c in status.get("checks") or ()
        if isinstance(c, dict)
    )
    incident = status.get("incident") or {}
    open_incident = (
        tuple(sorted((k, str(v)) for k, v in incident.items() if k != "summary"))
        if isinstance(incident, dict)
        else ()
    )
    rest = tuple(
        sorted(
            (k, json.dumps(v, sort_keys=True))
            for k, v in status.items()
            if k not in _SIGNED and k not in _VOLATILE_TOP
        )
    )
    return conditions, checks, open_incident, rest


_SIGNED = {"conditions", "checks", "incident"}
_VOLATILE_TOP = {"lastProbeTime", "worstLatency", "worstLatencyMs"}


def _escaped(secrets: list[str]) -> list[str]:
    # A secret inside a JSON string may appear escaped; redact both spellings.
    return [*secrets, *(json.dumps(s)[1:-1] for s in secrets)]
