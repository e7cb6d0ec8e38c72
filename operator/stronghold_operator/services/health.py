"""HealthPolicy service: one round of one policy.

observe (Secrets, probes, maintenance: the ports) -> decide
(:func:`stronghold_operator.logic.health.evaluate`, pure) -> act (Events and webhooks: the
ports) -> :class:`Round` (the status fields and conditions to write, and when to come back).
A failing service is data: nothing here raises for it. I/O happens only through the ports
below (platforms/health.py and probes/runner.py implement them); unit tests use in-memory
fakes (tests/unit/test_health_service.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from stronghold_operator import conditions as cond
from stronghold_operator.logic import health as logic
from stronghold_operator.logic import incident as incidents
from stronghold_operator.logic import remediation as remedies
from stronghold_operator.logic.health import storm
from stronghold_operator.models.common import SecretKeySelector
from stronghold_operator.models.health import HealthPolicySpec, RemediationAction, Webhook
from stronghold_operator.models.outbound import Destination, secret_refusal
from stronghold_operator.probes.base import ProbeResult

# --- Ports ---------------------------------------------------------------------------------


class SecretValue(Protocol):
    """One key of a Secret and where the Secret allows it to be sent."""

    @property
    def value(self) -> str: ...
    @property
    def destinations(self) -> frozenset[Destination]: ...


class Secrets(Protocol):
    """Secret keys of the policy's namespace; ``LookupError`` names a missing one."""

    async def entry(self, namespace: str, name: str, key: str) -> SecretValue: ...


class Prober(Protocol):
    """Runs a policy's checks; a failing target is a result, not an exception."""

    async def run(
        self,
        policy: HealthPolicySpec,
        secrets: Mapping[str, Mapping[str, str]],
        namespace: str = "default",
        refused: Mapping[str, str] | None = None,
        cursors: Mapping[str, float] | None = None,
    ) -> Mapping[str, ProbeResult]: ...


class Delivered(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def attempts(self) -> int: ...
    @property
    def detail(self) -> str: ...


class Post(Protocol):
    """POSTs a JSON body, retrying after each of ``delays`` (platforms/webhook.post_json
    with the probes' HTTP client)."""

    async def __call__(
        self,
        url: str,
        body: Any,
        *,
        timeout_s: float,
        delays: Sequence[float],
        authorization: str | None = None,
    ) -> Delivered: ...


class Incidents(Protocol):
    """The policy's Incident objects (controllers/incident.py): what people asked of one
    (annotations), and news of the policy's incident to record on it."""

    def hand(self, name: str) -> incidents.Hand | None: ...

    def lead(self, target: str) -> str | None: ...

    def record(
        self,
        news: incidents.News,
        checks: Sequence[Mapping[str, Any]],
        affected: Sequence[str],
        secrets: Sequence[str],
    ) -> None: ...


class Remedy(Protocol):
    """Carries out one remediation action (controllers/remediation.py): (ok, what happened);
    a failure is data, never an exception. ``secrets``: the Secret values of the check the
    action works on (its password)."""

    async def __call__(
        self,
        policy: HealthPolicySpec,
        action: RemediationAction,
        namespace: str,
        secrets: Mapping[str, str],
        dry_run: bool,
    ) -> tuple[bool, str]: ...


@dataclass(frozen=True)
class Ports:
    secrets: Secrets
    prober: Prober
    post: Post  # webhooks
    event: Callable[[str, str, str], None]  # (type, reason, message) on the policy
    spawn: Callable[[Coroutine[Any, Any, None]], None]  # in the background (webhooks)
    clock: Callable[[], datetime]
    maintenance: Callable[[], str | None]  # the windows (or humans) holding the policy now
    log: Callable[[str], None] = lambda _: None  # a line for the operator's log
    incidents: Incidents | None = None  # None: no Incident objects (stronghold check)
    # The operator's own lateness and loop stall during this round, read after its probes
    # (a slow result they explain is not counted against the target: logic/health/overload).
    load: Callable[[], logic.Load] | None = None
    # A check on a shared target turned bad or healthy again: (target, direction), counted
    # across policies for one summary Event (logic/health/storm.py, runtime/storms.py).
    shared: Callable[[str, storm.Direction], None] | None = None
    # Whether an announced storm on (target, direction) counted this policy: the round's
    # own Events about it fold into that storm's Event (logic/health/storm.folded_into).
    covered: storm.Covered | None = None
    # ``n`` of the policy's own Events were not posted: that storm's closing Event counts them.
    fold: Callable[[str, storm.Direction, int], None] | None = None
    # Remediation (spec.remediation): the actions, and a timeline entry with an Event on the
    # Incident object: (incident object name, Event type, reason, message). None: none run.
    remedy: Remedy | None = None
    note: Callable[[str, str, str, str], None] | None = None
    # Verification after an action that ran (logic/remediation.verify): what this process
    # knows of the actions it started (the policy loop's memory), and a wake-up of the
    # policy in that many seconds (its completion: the verifying round is due).
    outcomes: dict[str, remedies.Outcome] | None = None
    wake: Callable[[float], None] | None = None
    # The round's turn to be evaluated once its probes answered (runtime/turns.py: one
    # shared answer wakes thousands of rounds; the loop reads its sockets between them).
    turn: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Where:
    namespace: str
    name: str


# --- Results -------------------------------------------------------------------------------


@dataclass
class Round:
    """What one round decided: status fields and conditions to write, when to come back."""

    fields: dict[str, Any]
    conditions: list[cond.Condition]
    delay: float
    secret_missing: bool = False
    evaluation: logic.Evaluation | None = None  # None: nothing was probed
    results: Mapping[str, ProbeResult] = field(default_factory=dict)
    # The shared target's storm this round's own Events fold into (None: they are posted;
    # the incident Events are folded here, the caller folds the condition transitions).
    fold: tuple[str, storm.Direction] | None = None


def without_overload(
    current: Mapping[str, Any], r: Round
) -> tuple[dict[str, Any], list[cond.Condition]]:
    """The round's fields and conditions, with the operator's overload left out when it is
    the round's only news: some results were discounted, and every check keeps its state
    and the incident its identity and severity. Then the discounted checks keep their
    written reason and message and Ready its written form, so the status writer sees no
    change and writes nothing (the round's counters are still kept).

    Each such round flipped the reasons to OperatorOverloaded and the next one back: two
    writes of nothing a reader acts on. At 5,000 policies on a busy machine that was 28
    writes/s, the whole write budget, delaying real changes by a minute. The overload is
    the operator's state: ``stronghold_operator_overloaded`` and
    ``stronghold_health_checks_discounted_total`` say it once, not once per policy.
    """
    if r.evaluation is None or not r.evaluation.discounted or not current.get("checks"):
        return r.fields, r.conditions

    def judged(status: Mapping[str, Any]) -> tuple[Any, ...]:
        incident = status.get("incident") or {}
        return (
            tuple((c.get("name"), c.get("state")) for c in status.get("checks") or ()),
            incident.get("id"),
            incident.get("severity"),
        )

    if judged(current) != judged(r.fields):
        return r.fields, r.conditions
    before = {c.get("name"): c for c in current["checks"]}
    overloaded, gone = logic.REASON_OVERLOADED, set(r.evaluation.discounted)
    checks = [
        c
        if c.get("name") not in gone
        else {**c, **{k: (before.get(c.get("name")) or {}).get(k) for k in ("reason", "message")}}
        for c in r.fields["checks"]
    ]
    conditions = [c for c in r.conditions if not (c.type == cond.READY and c.reason == overloaded)]
    return {**r.fields, "checks": checks}, conditions


class SecretNotAllowed(Exception):
    """A Secret's allowed-destinations annotation does not name where it would be sent."""


# --- The round -----------------------------------------------------------------------------


async def run_round(
    policy: HealthPolicySpec,
    current: Mapping[str, Any],
    where: Where,
    ports: Ports,
    secret_misses: int = 0,
) -> Round:
    """One evaluation of a valid spec; ``secret_misses``: rounds in a row that found a
    Secret missing (the backoff grows with them)."""
    interval = policy.interval.total_seconds()
    if policy.suspend:
        return Round({}, suspended(), interval)
    try:
        secrets, refused = await resolve_secrets(policy, where.namespace, ports.secrets)
    except LookupError as exc:
        message = f"{exc}; retrying with backoff"
        missing = cond.Condition(cond.READY, "False", cond.REASON_SECRET_MISSING, message)
        delay = logic.missing_secret_backoff(secret_misses, policy.interval)
        return Round({}, [missing], delay, secret_missing=True)
    now = ports.clock()
    cursors = logic.log_cursors(policy, current)
    results = await ports.prober.run(policy, secrets, where.namespace, refused, cursors)
    if ports.turn is not None:
        await ports.turn()
    known = [v for per_check in secrets.values() for v in per_check.values()]
    maintenance = ports.maintenance()
    current, by_hand = honour_hand(policy, where.name, current, ports.incidents, maintenance, now)
    load = ports.load() if ports.load is not None else None
    ev = logic.evaluate(policy, where.name, current, results, maintenance, now, known, load=load)
    incident = ev.status.get("incident")
    conditions = [
        cond.Condition(c.type, c.status, c.reason, logic.redact(c.message, known))
        for c in ev.conditions
    ]
    if ports.shared is not None:
        for target, direction in storm.transitions(policy, current, ev.status["checks"]):
            ports.shared(target, direction)
    fold = None
    if ports.covered is not None and ports.fold is not None:
        fold = storm.folded_into(policy, current, ev.status["checks"], ports.covered)
    if incident and not incident.get("incidentName"):
        name_incident(policy, incident, fold, ports.incidents)
    notice = Notice(policy, ev, known, where, ports)
    verify(notice, current.get("incident"), incident, now)
    remediate(notice, incident, secrets, maintenance, now)
    for note in by_hand:  # what people did is their news, never a target's
        notify(notice, note)
        record(notice, note)
    for note in ev.notifications:
        notify(notice, note, fold)
        record(notice, note, fold)
    delay = interval
    soon = remedies.next_due(incident, ports.outcomes or {}, now)
    if soon is not None:  # a verification after a remediation action is due before then
        delay = min(interval, soon)
    return Round(ev.status, conditions, delay, evaluation=ev, results=results, fold=fold)


def verify(
    n: Notice,
    before: Any,
    incident: dict[str, Any] | None,
    now: datetime,
) -> None:
    """Judge the pending verifications of remediation actions (logic/remediation.verify)
    with this round's checks: the verdicts go on the Incident's timeline and as Events.
    ``before``: the incident the round started from (closed by this round when
    ``incident`` is None: what was pending is judged now)."""
    if incident is not None:
        target: Mapping[str, Any] = incident
    elif isinstance(before, Mapping) and before.get("remediation"):
        target = before
    else:
        return
    outcomes = n.ports.outcomes if n.ports.outcomes is not None else {}
    bad = remedies.failing_now(n.ev.status.get("checks") or [])
    after = n.policy.verify_after()
    step = remedies.verify(target, bad, outcomes, after, now, closing=incident is None)
    if incident is not None and incident.get("remediation"):
        incident["remediation"] = step.remediation
    for k in step.settled:
        outcomes.pop(k, None)
    # What this process remembers of other incidents' actions is spent.
    prefix = f"{target.get('id')}/"
    for k in [k for k in outcomes if not k.startswith(prefix)]:
        del outcomes[k]
    incident_id = str(target.get("id"))
    name = str(target.get("incidentName") or incidents.object_name(incident_id))
    for verdict in step.verdicts:
        message = verdict.message(incident_id)
        type_ = "Normal" if verdict.verified else "Warning"
        n.ports.event(type_, verdict.reason, message[:1000])
        if n.ports.note is not None and not target.get("grouped"):  # not the lead's story
            n.ports.note(name, type_, verdict.reason, message)


def remediate(
    n: Notice,
    incident: dict[str, Any] | None,
    secrets: Mapping[str, Mapping[str, str]],
    maintenance: str | None,
    now: datetime,
) -> None:
    """The remediation action due on the open incident, if any (logic/remediation.py): its
    budget is spent in the status this round writes (a restart never repeats it), the
    action runs in the background and tells its result on the Incident and as an Event."""
    if n.ports.remedy is None or incident is None:
        return
    failing = remedies.failing(n.ev.status.get("checks") or [])
    decision = remedies.due(n.policy.remediation, incident, failing, maintenance, now)
    if decision is None:
        return
    incident["remediation"] = remedies.spend(incident, decision, now, n.policy.verify_after())
    if not decision.dry_run and n.ports.outcomes is not None:
        k = remedies.key(str(incident.get("id")), decision.action.name, decision.attempt)
        n.ports.outcomes[k] = remedies.Outcome()  # running: not verified before it ends
    ref = decision.action.check_ref
    n.ports.spawn(_remediate(n, decision, dict(incident), secrets.get(ref, {}) if ref else {}))


async def _remediate(
    n: Notice, decision: remedies.Decision, incident: Mapping[str, Any], secrets: Mapping[str, str]
) -> None:
    ports = n.ports
    ok, detail = True, "dry run"
    if ports.remedy is not None:
        where, dry = n.where.namespace, decision.dry_run
        ok, detail = await ports.remedy(n.policy, decision.action, where, secrets, dry)
    message = logic.redact(remedies.message(decision, str(incident.get("id")), detail), n.known)
    reason = (
        "RemediationDryRun" if decision.dry_run else "Remediated" if ok else "RemediationFailed"
    )
    type_ = "Normal" if ok else "Warning"
    ports.event(type_, reason, message[:1000])
    name = str(incident.get("incidentName") or incidents.object_name(str(incident.get("id"))))
    if ports.note is not None and not incident.get("grouped"):  # not the lead's story
        ports.note(name, type_, reason, message)
    k = remedies.key(str(incident.get("id")), decision.action.name, decision.attempt)
    if not decision.dry_run and ports.outcomes is not None and k in ports.outcomes:
        # The verifying round is due verifyAfter from now (a slow action pushes it).
        ports.outcomes[k] = remedies.Outcome(True, ok, ports.clock())
        if ok and ports.wake is not None:
            ports.wake(n.policy.verify_after().total_seconds())


def honour_hand(
    policy: HealthPolicySpec,
    name: str,
    current: Mapping[str, Any],
    port: Incidents | None,
    maintenance: str | None,
    now: datetime,
) -> tuple[Mapping[str, Any], list[logic.Notification]]:
    """The status a round continues from, with what people asked of the open incident's
    Incident object: acknowledged (escalation stops), or resolved by hand (the incident is
    closed now; if its checks still fail, this round re-opens it (flap damping's
    reopenWithin) or opens a new one)."""
    incident = current.get("incident")
    if port is None or not isinstance(incident, Mapping) or not incident.get("id"):
        return current, []
    hand = port.hand(str(incident.get("incidentName") or incidents.object_name(incident["id"])))
    if hand is None:
        return current, []
    if hand.resolved_by:
        recent = list(current.get("recentIncidents") or ())
        # A person's word is final: no flap damping's quiet rounds before it is resolved.
        now_policy = policy.model_copy(
            update={"flap_damping": policy.flap_damping.model_copy(update={"resolve_after": 1})}
        )
        step = logic.step_incident(now_policy, name, incident, recent, None, maintenance, now)
        notes = [
            dataclasses.replace(n, message=f"{n.message} (resolved by hand by {hand.resolved_by})")
            for n in step.notifications
        ]
        return {**current, "incident": None, "recentIncidents": step.recent}, notes
    if hand.acknowledged_by and incident.get("acknowledgedBy") != hand.acknowledged_by:
        return {**current, "incident": {**incident, "acknowledgedBy": hand.acknowledged_by}}, []
    return current, []


def root_target(policy: HealthPolicySpec, incident: Mapping[str, Any]) -> str | None:
    """What the incident's root cause check probes (logic/health/storm.target_of)."""
    root = next((c for c in policy.checks if c.name == incident.get("rootCause")), None)
    return storm.target_of(root) if root is not None else None


def name_incident(
    policy: HealthPolicySpec,
    incident: dict[str, Any],
    fold: tuple[str, storm.Direction] | None,
    port: Incidents | None,
) -> None:
    """The Incident object that records a new incident: its own; or, when its root cause's
    target is in a storm that counted this policy, the Incident leading that storm (one
    Incident for the shared cause, not one per policy: controllers/incident.py)."""
    target = root_target(policy, incident)
    lead = None
    if port is not None and fold is not None and fold == (target, "failing"):
        lead = port.lead(fold[0])
    if lead is not None:
        incident["incidentName"], incident["grouped"] = lead, True
    else:
        incident["incidentName"] = incidents.object_name(str(incident["id"]))


def record(
    n: Notice, note: logic.Notification, fold: tuple[str, storm.Direction] | None = None
) -> None:
    """Tell the policy's Incident objects (creation, timeline, resolution); with ``fold``,
    the Incident's Event about it is counted to that shared target's storm instead."""
    if n.ports.incidents is None:
        return
    affected = [v.name for v in n.ev.verdicts if v.state in ("Warning", "Critical")]
    message = logic.redact(note.message, n.known)
    folded = None
    if fold is not None and n.ports.fold is not None:
        folded = functools.partial(n.ports.fold, *fold, 1)
    incident, target = note.incident, None
    if note.kind == "Opened":  # the note's copy was made before the round named its Incident
        target = root_target(n.policy, incident)
        named = n.ev.status.get("incident") or {}
        if named.get("id") == incident.get("id"):
            keep = {k: named[k] for k in ("incidentName", "grouped") if k in named}
            incident = {**incident, **keep}
    news = incidents.News(note.kind, incident, message, note.level, folded, target)
    n.ports.incidents.record(news, n.ev.status.get("checks") or [], affected, n.known)


def suspended() -> list[cond.Condition]:
    return [
        cond.Condition(cond.READY, "False", cond.REASON_SUSPENDED, "spec.suspend"),
        *cond.unknown_all(logic.CONDITION_TYPES[1:], cond.REASON_SUSPENDED),
    ]


def newsworthy(t: cond.Transition, bad: Callable[[cond.Transition], bool]) -> bool:
    """Which condition transitions become Events. Incident transitions have their own,
    richer Events (IncidentOpened, ...). The first evaluation's good news is not news (a
    thousand new policies made four thousand Events, which the API server answered with
    429s); bad news always is."""
    if t.type == logic.INCIDENT_OPEN:
        return False
    if logic.REASON_OVERLOADED in (t.reason, t.old_reason):
        return False  # the operator's state, not the policy's: one metric, not N Events
    return not (t.old_reason == cond.REASON_INITIALIZING and not bad(t))


# --- Secrets -------------------------------------------------------------------------------


async def secret_to(
    secrets: Secrets,
    namespace: str,
    ref: SecretKeySelector,
    field: str,
    url_or_host: str,
    port: int | None = None,
    shown: str | None = None,
) -> str:
    """A Secret value that is about to be sent to ``url_or_host`` (``host`` with ``port``,
    or a URL): only when the Secret's allowed-destinations annotation names it."""
    key = ref.secret_key_ref
    entry = await secrets.entry(namespace, key.name, key.key)
    if port is None:
        parts = urlsplit(url_or_host)
        try:
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise SecretNotAllowed(f"{field}: the destination is not a valid URL") from None
    else:
        host = url_or_host
    why = secret_refusal(field, f"{namespace}/{key.name}", entry.destinations, host, port, shown)
    if why:
        raise SecretNotAllowed(why)
    return entry.value


async def secret(secrets: Secrets, namespace: str, ref: SecretKeySelector) -> str:
    key = ref.secret_key_ref
    return (await secrets.entry(namespace, key.name, key.key)).value


async def resolve_secrets(
    policy: HealthPolicySpec, namespace: str, secrets: Secrets
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Secret values by check name and role (``password``, ``url``, ...), and why a check
    may not be sent its Secret (by check name: it is then not probed at all)."""
    out: dict[str, dict[str, str]] = {}
    refused: dict[str, str] = {}
    for i, c in enumerate(policy.checks):
        roles: dict[str, str] = {}
        at = f"spec.checks[{i}]"
        try:
            if c.postgres is not None and c.postgres.password is not None:
                roles["password"] = await secret_to(
                    secrets,
                    namespace,
                    c.postgres.password,
                    f"{at}.postgres.password",
                    c.postgres.host,
                    c.postgres.port,
                )
            if c.rabbitmq is not None:
                # The AMQP URL goes only to the broker it names: its writer chose that.
                roles["url"] = await secret(secrets, namespace, c.rabbitmq.url)
                if c.rabbitmq.management is not None:
                    roles["management-password"] = await secret_to(
                        secrets,
                        namespace,
                        c.rabbitmq.management.password,
                        f"{at}.rabbitmq.management.password",
                        c.rabbitmq.management.url,
                    )
        except SecretNotAllowed as exc:
            refused[c.name] = str(exc)
            roles = {}
        out[c.name] = roles
    webhook_roles: dict[str, str] = {}
    for i, hook in enumerate(_webhooks(policy)):
        if hook.url_from is not None:
            webhook_roles[f"url-{i}"] = await secret(secrets, namespace, hook.url_from)
        if hook.authorization is not None:
            webhook_roles[f"authorization-{i}"] = await secret(
                secrets, namespace, hook.authorization
            )
    out[" webhooks"] = webhook_roles  # a name no check can have (read for redaction only)
    return out, refused


def _webhooks(policy: HealthPolicySpec) -> list[Webhook]:
    """The policy's webhooks, in the order their Secret roles are numbered."""
    hooks = [policy.alerting.webhook] + [s.webhook for s in policy.alerting.escalation]
    return [h for h in hooks if h is not None]


# --- Act: Events and webhooks --------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """What the notifications of one round are made from."""

    policy: HealthPolicySpec
    ev: logic.Evaluation
    known: list[str]  # the Secret values to keep out of messages and bodies
    where: Where
    ports: Ports


def notify(
    n: Notice, note: logic.Notification, fold: tuple[str, storm.Direction] | None = None
) -> None:
    """An Event (with ``fold``: counted to that shared target's storm instead); webhooks
    (unless expected) in the background."""
    if fold is not None and n.ports.fold is not None:
        n.ports.fold(*fold, 1)
    else:
        expected = " [expected: maintenance in progress, no webhook sent]" if note.expected else ""
        kind = "Normal" if note.kind == "Resolved" or note.expected else "Warning"
        message = logic.redact(note.message, n.known) + expected
        n.ports.event(kind, note.reason, message[:1000])
    for hook in note.webhooks:
        n.ports.spawn(send(n, note, hook))


async def send(n: Notice, note: logic.Notification, hook: Webhook) -> None:
    """Deliver one webhook; a failure is a Warning Event (never the URL of a urlFrom)."""
    ns, ports = n.where.namespace, n.ports
    body = logic.webhook_body(note, hook, ns, n.where.name, n.ev.verdicts, ports.clock())
    body = json.loads(logic.redact(json.dumps(body), _escaped(n.known)))
    try:
        url = hook.url or await secret(ports.secrets, ns, hook.url_from)  # type: ignore[arg-type]
        auth = None
        if hook.authorization is not None:
            auth = await secret_to(
                ports.secrets,
                ns,
                hook.authorization,
                f"{_hook_field(n.policy, hook)}.authorization",
                url,
                shown="the urlFrom destination" if hook.url_from else None,
            )
    except (LookupError, SecretNotAllowed) as exc:
        ports.event("Warning", "WebhookFailed", str(exc))
        return
    delivery = await ports.post(
        url,
        body,
        timeout_s=hook.timeout.total_seconds(),
        delays=logic.retry_delays(hook.retries),
        authorization=auth,
    )
    where_to = "urlFrom Secret" if hook.url_from else hook.url
    if delivery.ok:
        ports.log(f"webhook {note.kind} for {note.incident.get('id')} sent ({where_to})")
    else:
        ports.event(
            "Warning",
            "WebhookFailed",
            f"{note.kind} webhook to {where_to} failed after {delivery.attempts}"
            f" attempt(s): {delivery.detail}",
        )


def _hook_field(policy: HealthPolicySpec, hook: Webhook) -> str:
    """Where ``hook`` is in the spec (for messages that name the field)."""
    for j, step in enumerate(policy.alerting.escalation):
        if step.webhook is hook:
            return f"spec.alerting.escalation[{j}].webhook"
    return "spec.alerting.webhook"


def _escaped(secrets: list[str]) -> list[str]:
    # A secret inside a JSON string may appear escaped; redact both spellings.
    return [*secrets, *(json.dumps(s)[1:-1] for s in secrets)]


# --- What a reader acts on -----------------------------------------------------------------


def signature(status: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a reader acts on, not the numbers and words that move every round.

    Latencies, measurements, counters, the last probe's raw state and the messages (which
    quote latencies) move every round; writing them every round was most of the operator's
    and the API server's CPU with a thousand policies. They go out with the next
    significant change (the status writer's ``signature``; no heartbeat: /metrics has them),
    ``lastProbeTime`` alone now and then (controllers/health.py, ``refresh``).
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
            _log_counts(c),
            _insights_read(c),
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


def _log_counts(check: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A logs check's rule totals: written when they move, with the cursor they go with,
    so a restarted operator resumes from counts and cursor that belong together."""
    if check.get("type") != "logs":
        return ()
    rules = (check.get("measurements") or {}).get("rules") or {}
    return tuple(sorted((name, r.get("total")) for name, r in rules.items() if isinstance(r, dict)))


def _insights_read(check: Mapping[str, Any]) -> Any:
    """When a postgres check's insights were read: a new read is written (at most once per
    ``insights.interval``), or its lists would wait for the next state change."""
    insights = (check.get("measurements") or {}).get("insights")
    return insights.get("collectedAt") if isinstance(insights, dict) else None


_SIGNED = {"conditions", "checks", "incident"}
_VOLATILE_TOP = {"lastProbeTime", "worstLatency", "worstLatencyMs"}
