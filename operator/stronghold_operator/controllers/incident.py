"""Incident objects: created when a HealthPolicy opens an incident, kept current from its
rounds' news, acknowledged or resolved by hand through annotations, pruned by retention.

One :class:`IncidentKeeper` per process (in the HealthPolicy runtime). Work on one Incident
runs in order in the background (a chain per object), so a round never waits for the API
server. API cost: a create, five LISTs of the namespace (the evidence, once; PodMetrics one
of them) and one status patch when an incident opens; a status patch per change after that
(severity, escalation, acknowledgement, resolution); deletes for retention, decided from
memory (the Incidents' watch and this process's own writes: no LIST). Nothing per round: a
policy whose incident stays as it is costs nothing here. Every write goes through the write
budget (status patches through the one
:class:`~stronghold_operator.runtime.status.StatusWriter`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram

from stronghold_operator import conditions as cond
from stronghold_operator.logic import incident as logic
from stronghold_operator.logic import ratelimit
from stronghold_operator.logic.health.redaction import redactable, scrubbed
from stronghold_operator.metrics import registry
from stronghold_operator.models.errors import ApiError
from stronghold_operator.models.health import IncidentHistory
from stronghold_operator.models.incident import (
    ACK_ANNOTATION,
    KIND,
    PLURAL,
    RESOLVE_ANNOTATION,
)
from stronghold_operator.platforms import incidents as api
from stronghold_operator.platforms.kube import GROUP, VERSION, Kube, is_not_found, ours
from stronghold_operator.runtime import events
from stronghold_operator.runtime.budget import budget, retryable
from stronghold_operator.runtime.status import StatusWriter

log = logging.getLogger("stronghold.incident")

# Evidence LISTs of this many incidents at once (a shared target down opens many at once).
GATHER_AT_ONCE = 4
# Incidents opening in one namespace this close together share its evidence listings.
EVIDENCE_REUSE_S = 10.0
# A policy's resolved Incidents are checked against its maxAge at most this often.
TIDY_EVERY_S = 300.0
# A remediation's verification (services/health.verify): its own timeline entry types.
VERDICTS = {"RemediationVerified": "Verified", "RemediationStillFailing": "StillFailing"}
_BUCKETS = (10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)

OPENED = Counter(
    "stronghold_incidents_opened_total",
    "Incident objects created, by severity and the root cause's check type",
    ["severity", "root_cause"],
    registry=registry,
)
TTA = Histogram(
    "stronghold_incident_time_to_acknowledge_seconds",
    "From an incident's start to its acknowledgement (MTTA: _sum / _count)",
    ["severity"],
    buckets=_BUCKETS,
    registry=registry,
)
TTR = Histogram(
    "stronghold_incident_time_to_resolve_seconds",
    "From an incident's start to its resolution (MTTR: _sum / _count), by who resolved it",
    ["severity", "by"],
    buckets=_BUCKETS,
    registry=registry,
)

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Policy:
    """The HealthPolicy a round's news comes from."""

    namespace: str
    name: str
    uid: str
    history: IncidentHistory
    # The workloads (kind, name) it names: first in the usage evidence.
    workloads: tuple[tuple[str, str], ...] = ()


def _ref(namespace: str, name: str, uid: str | None = None) -> dict[str, Any]:
    meta = {"namespace": namespace, "name": name, "generation": 1}
    if uid:
        meta["uid"] = uid
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta}


class IncidentKeeper:
    """The process's Incident objects (see the module docstring)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.writers: dict[Key, StatusWriter] = {}  # open Incidents only
        self.hands: dict[Key, logic.Hand] = {}  # annotated ones, until deleted
        self._chains: dict[Key, asyncio.Task[None]] = {}
        self._gather = asyncio.Semaphore(GATHER_AT_ONCE)
        self._listed: dict[str, tuple[float, api.Raw]] = {}  # namespace -> (when, listings)
        # (namespace, policy) -> Incident name -> (state, when: resolvedAt or creation), from
        # the watch and our own writes: retention needs no LIST.
        self.history: dict[Key, dict[str, tuple[str, str]]] = {}
        self._tidied: dict[Key, float] = {}  # (namespace, policy) -> monotonic of the last tidy
        self._consumed: dict[Key, str] = {}  # a resolve annotation already acted on
        # A shared target's storm: (namespace, target) -> the open Incident that leads it,
        # and each lead's grouped policies (namespace/name, in order; logic.grouped).
        self.leads: dict[Key, str] = {}
        self.groups: dict[Key, dict[str, None]] = {}
        self._base: dict[Key, int] = {}  # members counted before this process (a restart)

    async def settle(self, within: float = 5.0) -> None:
        """The operator is stopping: let the work in progress and the last writes land."""
        pending = [t for t in self._chains.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=within)
        for writer in list(self.writers.values()):
            await writer.settle(within)

    # --- the policy's side (services/health.Incidents) ------------------------------------

    def port(self, policy: Policy) -> PolicyIncidents:
        return PolicyIncidents(self, policy)

    def _chain(self, key: Key, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` after the work already queued for ``key`` (in order, background)."""
        before = self._chains.get(key)

        async def run() -> None:
            if before is not None and not before.done():
                await asyncio.wait({before})
            try:
                await work
            except Exception:
                log.exception("%s/%s: incident bookkeeping failed", *key)

        task = asyncio.get_running_loop().create_task(run())
        self._chains[key] = task
        task.add_done_callback(lambda t: self._done(key, t))

    def _done(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._chains.get(key) is task:
            del self._chains[key]

    def lead(self, namespace: str, target: str) -> str | None:
        """The open Incident of ``namespace`` that leads ``target``'s storm, if any."""
        return self.leads.get((namespace, target))

    def record(
        self,
        policy: Policy,
        news: logic.News,
        checks: Sequence[Mapping[str, Any]],
        affected: Sequence[str],
        secrets: Sequence[str],
    ) -> None:
        if news.incident.get("grouped"):
            self._grouped(policy, news)
            return
        key = (policy.namespace, logic.object_name(str(news.incident.get("id", ""))))
        now = cond.utcnow()
        if news.kind == "Opened" and news.target and not news.incident.get("reopened"):
            self.leads.setdefault((policy.namespace, news.target), key[1])
        hand = self.hands.get(key)
        if news.kind == "Opened" and news.incident.get("reopened") and hand and hand.resolved_by:
            # Re-opened after a resolution by hand: that resolution is spent (its annotation
            # is removed), or the next round would resolve it again, and again.
            self._consumed[key] = hand.resolved_by
            self.hands[key] = logic.Hand(hand.acknowledged_by)
        if news.kind == "Opened" and key not in self.writers and key not in self._chains:
            self._chain(key, self._open(policy, key, news, checks, affected, secrets, now))
        else:
            self._chain(key, self._update(policy, key, news, checks, affected, secrets, now))

    def _grouped(self, policy: Policy, news: logic.News) -> None:
        """News of an incident recorded on a storm's lead: its opening joins the lead's
        group (one status patch for many, the writer merging them); the rest is the
        policy's own status's to tell (no request)."""
        if news.folded is not None:
            news.folded()
        lead = (policy.namespace, str(news.incident.get("incidentName") or ""))
        if news.kind != "Opened" or not lead[1] or not news.target:
            return
        self.groups.setdefault(lead, {})[f"{policy.namespace}/{policy.name}"] = None
        self._chain(lead, self._join(lead, news.target))

    async def _join(self, lead: Key, target: str) -> None:
        writer = self.writers.get(lead)
        if writer is None:  # this process did not open it (a restart): read it once
            obj, _ = await self._read(lead)
            writer = None if obj is None else self._writer_of(obj)
        if writer is None:
            return
        if lead not in self._base:  # first join this process saw: carry on from the status
            prior = writer.current.get("grouped") or {}
            names = [n for n in prior.get("policies") or () if isinstance(n, str)]
            self._base[lead] = max(0, int(prior.get("count") or 0) - len(names))
            self.groups[lead] = {**dict.fromkeys(names), **self.groups.get(lead, {})}
        members = self.groups.get(lead, {})
        group = logic.grouped(target, self._base[lead] + len(members), members)
        writer.update({"grouped": group}, [], cond.utcnow())

    async def _open(
        self,
        policy: Policy,
        key: Key,
        news: logic.News,
        checks: Sequence[Mapping[str, Any]],
        affected: Sequence[str],
        secrets: Sequence[str],
        now: datetime,
    ) -> None:
        ns, name = key
        body = api.incident_body(ns, name, policy.name, policy.uid, str(news.incident["id"]))
        try:
            created = await self._create(body)
        except (ApiError, ConnectionError) as exc:
            if not isinstance(exc, ApiError) or exc.status != 409:
                # Created at the incident's next news (escalation, resolution) instead.
                log.warning("%s/%s: cannot create the Incident: %s", ns, name, exc)
                self._unlead(key)
                return
            # 409: it exists (the operator restarted; a maintenance window ended).
            await self._update(policy, key, news, checks, affected, secrets, now, create=False)
            return
        uid = str((created.get("metadata") or {}).get("uid") or "")
        self._remember(policy, name, "Open", cond.rfc3339(now))
        writer = self.writers[key] = StatusWriter(self.kube, PLURAL, _ref(ns, name, uid), {})
        root_type = next(
            (str(c.get("type")) for c in checks if c.get("name") == news.incident.get("rootCause")),
            "unknown",
        )
        OPENED.labels(str(news.incident.get("severity")), root_type).inc()
        raw = await self._raw(ns)
        evidence = logic.evidence(
            replicasets=raw.replicasets,
            revisions=raw.revisions,
            pods=raw.pods,
            events=raw.events,
            checks=checks,
            errors=raw.errors,
            now=cond.utcnow(),
            secrets=secrets,
            metrics=raw.metrics,
            resources=api.resources(raw.pods),
            named=policy.workloads,
        )
        status = logic.opened(news, affected, now, evidence)
        writer.update(scrubbed(status, redactable(secrets)), [], now)
        expected = bool(news.incident.get("expected"))  # during maintenance: not alarming
        self._event(writer, "Normal" if expected else "Warning", "IncidentOpened", news)
        await self._prune(policy)

    def note(self, namespace: str, name: str, type_: str, reason: str, message: str) -> None:
        """A remediation step and its result, or its verification's verdict: a timeline
        entry (Remediation, Verified, StillFailing) and an Event on the Incident (after the
        work already queued for it, so after its creation)."""
        self._chain((namespace, name), self._note((namespace, name), type_, reason, message))

    async def _note(self, key: Key, type_: str, reason: str, message: str) -> None:
        writer = self.writers.get(key)
        if writer is None:
            obj, _ = await self._read(key)
            writer = None if obj is None else self._writer_of(obj)
        if writer is None:  # resolved meanwhile, or unreadable: the policy's Event tells it
            return
        now = cond.utcnow()
        entry = VERDICTS.get(reason, "Remediation")
        timeline = logic.add(writer.current.get("timeline") or [], entry, message, now)
        writer.update({"timeline": timeline}, [], now)
        self._event(writer, type_, reason, message)

    async def _raw(self, namespace: str) -> api.Raw:
        """The namespace's evidence listings; incidents opening in one namespace within
        :data:`EVIDENCE_REUSE_S` share one read (one shared target down opens many)."""
        async with self._gather:
            at, raw = self._listed.get(namespace, (0.0, None))
            if raw is None or time.monotonic() - at > EVIDENCE_REUSE_S:
                raw = await api.gather(self.kube, namespace)
                self._listed[namespace] = (time.monotonic(), raw)
            for ns, (when, _) in list(self._listed.items()):
                if time.monotonic() - when > EVIDENCE_REUSE_S:
                    del self._listed[ns]
            return raw

    async def _create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create within the budget; tried three times when the API server is overloaded
        or does not answer."""
        for attempt in range(3):
            try:
                return await budget().send(
                    ratelimit.SIGNIFICANT,
                    functools.partial(api.create, self.kube, body),
                    answers=(409,),  # it exists: the caller updates it
                )
            except (ApiError, ConnectionError) as exc:
                if attempt == 2 or not retryable(exc):
                    raise
                await asyncio.sleep(budget().retry_delay(exc, attempt, 1.0))
        raise AssertionError("unreachable")

    async def _update(
        self,
        policy: Policy,
        key: Key,
        news: logic.News,
        checks: Sequence[Mapping[str, Any]],
        affected: Sequence[str],
        secrets: Sequence[str],
        now: datetime,
        *,
        create: bool = True,
    ) -> None:
        writer = self.writers.get(key)
        if writer is None:
            obj, missing = await self._read(key)
            if missing and create and news.kind != "Resolved":
                # Its creation failed earlier (RBAC, an outage) or someone deleted it.
                await self._open(policy, key, news, checks, affected, secrets, now)
                return
            if obj is not None and news.kind == "Opened" and news.incident.get("reopened"):
                await self._reopen(policy, key, obj, news, affected, now)
                return
            writer = None if obj is None else self._writer_of(obj)
        if writer is not None:
            fields = logic.updated(writer.current, news, affected, now)
            if fields:
                writer.update(scrubbed(fields, redactable(secrets)), [], now)
                kind = "Normal" if news.kind == "Resolved" else "Warning"
                self._event(writer, kind, f"Incident{news.kind}", news)
            if fields.get("state") == "Resolved":
                self._resolved(key, writer)
                self._remember(policy, key[1], "Resolved", str(fields["resolvedAt"]))
        if news.kind == "Resolved":
            await self._prune(policy)

    async def _read(self, key: Key) -> tuple[dict[str, Any] | None, bool]:
        """An Incident this process holds no writer for (a restart, a resolved one): None
        if it cannot be read; and whether it does not exist."""
        ns, name = key
        try:
            return await api.get(self.kube, ns, name), False
        except (ApiError, ConnectionError) as exc:
            if is_not_found(exc):
                return None, True
            log.warning("%s/%s: cannot read the Incident: %s", ns, name, exc)
            return None, False

    async def _reopen(
        self,
        policy: Policy,
        key: Key,
        obj: Mapping[str, Any],
        news: logic.News,
        affected: Sequence[str],
        now: datetime,
    ) -> None:
        """The policy re-opened a resolved incident (flap damping): so does its Incident."""
        ns, name = key
        meta = obj.get("metadata") or {}
        ref = _ref(ns, name, str(meta.get("uid") or ""))
        writer = self.writers[key] = StatusWriter(self.kube, PLURAL, ref, obj.get("status") or {})
        writer.update(logic.reopened(writer.current, news, affected, now), [], now)
        self._event(writer, "Warning", "IncidentReopened", news)
        self._remember(policy, name, "Open", cond.rfc3339(now))
        if RESOLVE_ANNOTATION in (meta.get("annotations") or {}):
            spent = {"metadata": {"annotations": {RESOLVE_ANNOTATION: None}}}
            try:
                await budget().send(
                    ratelimit.ROUTINE,
                    functools.partial(self.kube.patch, ours(PLURAL), name, ns, spent),
                )
            except (ApiError, ConnectionError) as exc:
                log.warning("%s/%s: cannot remove the spent resolve annotation: %s", ns, name, exc)

    def _writer_of(self, obj: Mapping[str, Any]) -> StatusWriter | None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        status = obj.get("status") or {}
        if status.get("state") == "Resolved":
            return None
        found = self.writers.get(key)
        if found is None:
            ref = _ref(key[0], key[1], str(meta.get("uid") or ""))
            found = self.writers[key] = StatusWriter(self.kube, PLURAL, ref, status)
        return found

    def _resolved(self, key: Key, writer: StatusWriter) -> None:
        """Resolved: its time to resolve is measured; the writer goes once its write lands."""
        status = writer.current
        seconds = logic.seconds_between(status, "resolvedAt")
        if seconds is not None:
            by = "operator" if status.get("resolvedBy") == "operator" else "hand"
            TTR.labels(str(status.get("maxSeverity") or status.get("severity")), by).observe(
                seconds
            )
        self.writers.pop(key, None)
        self._unlead(key)
        self._chain(key, writer.settle(30.0))

    def _unlead(self, key: Key) -> None:
        """``key`` leads no storm any more (resolved, gone or never created)."""
        for where in [w for w, name in self.leads.items() if (w[0], name) == key]:
            del self.leads[where]
        self.groups.pop(key, None)
        self._base.pop(key, None)

    def _remember(self, policy: Policy, name: str, state: str, when: str) -> None:
        self.history.setdefault((policy.namespace, policy.name), {})[name] = (state, when)

    def tidy(self, policy: Policy) -> None:
        """Retention by age while nothing happens (a policy's round calls this; it acts at
        most every :data:`TIDY_EVERY_S` per policy, from memory: no request unless something
        is due)."""
        key = (policy.namespace, policy.name)
        now = time.monotonic()
        if now - self._tidied.get(key, 0.0) < TIDY_EVERY_S or key not in self.history:
            return
        self._tidied[key] = now
        if self._due(policy):
            self._chain((policy.namespace, f"policy/{policy.name}"), self._prune(policy))

    def _due(self, policy: Policy) -> list[str]:
        entries = self.history.get((policy.namespace, policy.name)) or {}
        listed = [
            {"metadata": {"name": n}, "status": {"state": state, "resolvedAt": when}}
            for n, (state, when) in entries.items()
        ]
        history = policy.history
        return logic.to_prune(listed, history.count, history.max_age, cond.utcnow())

    async def _prune(self, policy: Policy) -> None:
        """Retention (``spec.incidentHistory``): resolved Incidents beyond the count or age
        (known from the watch and this process's own writes)."""
        for name in self._due(policy):
            try:
                await budget().send(
                    ratelimit.ROUTINE,
                    functools.partial(api.delete, self.kube, policy.namespace, name),
                    answers=(404,),  # already gone
                )
            except (ApiError, ConnectionError) as exc:
                if not is_not_found(exc):  # kept: tried again at the next prune
                    log.warning("%s/%s: cannot delete: %s", policy.namespace, name, exc)
                    continue
            self.history.get((policy.namespace, policy.name), {}).pop(name, None)

    def _event(
        self, writer: StatusWriter, type_: str, reason: str, message: str | logic.News
    ) -> None:
        if isinstance(message, logic.News):
            if message.folded is not None:  # a shared target's storm tells it
                message.folded()
                return
            message = message.message
        try:
            events.post(writer.body, type=type_, reason=reason, message=message[:1000])
        except Exception:  # an Event is a courtesy: never at the cost of the status
            log.exception("%s: cannot post the %s Event", writer.body["metadata"]["name"], reason)

    # --- the Incidents' side (watch events) ------------------------------------------------

    def observe(self, event: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        """A watch event of an Incident: remember what people asked (the policy's round
        reads it) and apply an acknowledgement or resolution by hand to its status."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        self._index(event, body, key)
        if event.get("type") == "DELETED":
            self.hands.pop(key, None)
            self._consumed.pop(key, None)
            writer = self.writers.pop(key, None)
            if writer is not None:
                writer.close()
            self._unlead(key)
            return
        hand = logic.hand_of(meta.get("annotations"), ACK_ANNOTATION, RESOLVE_ANNOTATION)
        if hand.resolved_by is None:
            self._consumed.pop(key, None)
        elif self._consumed.get(key) == hand.resolved_by:
            hand = logic.Hand(hand.acknowledged_by)  # spent (re-opened since): removal pending
        if hand.acknowledged_by is None and hand.resolved_by is None:
            self.hands.pop(key, None)
            return
        self.hands[key] = hand
        if (body.get("status") or {}).get("state") in ("Open", "Acknowledged"):
            self._chain(key, self._by_hand(key, body, hand))

    def _index(self, event: Mapping[str, Any], body: Mapping[str, Any], key: Key) -> None:
        """Keep :attr:`history` current from the watch (its first LIST at start included)."""
        policy = (body.get("spec") or {}).get("healthPolicy")
        if not policy:
            return
        where = (key[0], str(policy))
        if event.get("type") == "DELETED":
            entries = self.history.get(where)
            if entries is not None:
                entries.pop(key[1], None)
                if not entries:  # the policy's last Incident (the policy deleted, say)
                    del self.history[where]
                    self._tidied.pop(where, None)
            return
        status = body.get("status") or {}
        state = str(status.get("state") or "Open")
        created = str((body.get("metadata") or {}).get("creationTimestamp") or "")
        when = str(status.get("resolvedAt") or created) if state == "Resolved" else created
        known = self.history.get(where, {}).get(key[1])
        if known is not None and known[0] == "Resolved" and state != "Resolved":
            return  # the watch is behind our own resolution
        self.history.setdefault(where, {})[key[1]] = (state, when)

    async def _by_hand(self, key: Key, body: Mapping[str, Any], hand: logic.Hand) -> None:
        writer = self.writers.get(key) or self._writer_of(body)
        if writer is None:
            return
        now = cond.utcnow()
        fields = logic.by_hand(writer.current, hand, now)
        if not fields:
            return
        writer.update(fields, [], now)
        if fields.get("acknowledgedAt"):
            who = f"acknowledged by {hand.acknowledged_by}"
            self._event(writer, "Normal", "IncidentAcknowledged", who)
            seconds = logic.seconds_between(writer.current, "acknowledgedAt")
            if seconds is not None:
                TTA.labels(str(writer.current.get("maxSeverity"))).observe(seconds)
        if fields.get("state") == "Resolved":
            who = f"resolved by hand by {hand.resolved_by}"
            self._event(writer, "Normal", "IncidentResolved", who)
            self._resolved(key, writer)


class PolicyIncidents:
    """One policy's view of the keeper: the ``Incidents`` port of its rounds."""

    __slots__ = ("keeper", "policy")

    def __init__(self, keeper: IncidentKeeper, policy: Policy) -> None:
        self.keeper, self.policy = keeper, policy

    def hand(self, name: str) -> logic.Hand | None:
        return self.keeper.hands.get((self.policy.namespace, name))

    def lead(self, target: str) -> str | None:
        return self.keeper.lead(self.policy.namespace, target)

    def record(
        self,
        news: logic.News,
        checks: Sequence[Mapping[str, Any]],
        affected: Sequence[str],
        secrets: Sequence[str],
    ) -> None:
        self.keeper.record(self.policy, news, checks, affected, secrets)

    def note(self, name: str, type_: str, reason: str, message: str) -> None:
        self.keeper.note(self.policy.namespace, name, type_, reason, message)
