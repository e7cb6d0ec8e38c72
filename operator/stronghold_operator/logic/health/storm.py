"""One finding per shared target when many policies fail (or recover) on it together.

A shared dependency that degrades makes every policy probing it change at once. Each policy
reports its own transition (its status, its own Events, which the EventCorrelator
aggregates and the operator-wide cap bounds: logic/events.py); what none of them says is
that it is *one* cause. :class:`Storms` counts, per target and direction, the policies whose
check on it turned bad (or healthy again) within a window, and says when to post one summary
naming the target and the count: once when the count reaches ``min_policies``, and once
more when the window ends if more policies joined after that, or if their own Events were
folded into it.

Folding: once a storm on a target is announced, a policy that reported its own transition
on that target in the window posts no Events of its own for the rounds whose news is that
target (:func:`folded_into`): they are counted, and the closing Event carries the count.
The policies' status is untouched (each one still tells its own story); only Events fold,
so a storm of N identical transitions costs a handful of Events whatever N is: the first
``min_policies - 1`` policies' own (they went before the storm was known), the
announcement and the closing count, per direction.

Targets are named by what the spec says in clear (a URL's scheme, host and port; a
host:port); never by a Secret's value: a RabbitMQ check without a management URL (its AMQP
URL is a Secret) and resources checks (a workload of the policy's own namespace) are not
aggregated here. Pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from stronghold_operator.models.health import Check, HealthPolicySpec

Direction = Literal["failing", "recovered"]
REASONS: dict[Direction, str] = {"failing": "TargetFailing", "recovered": "TargetRecovered"}
MIN_POLICIES = 3  # fewer is two policies sharing a target, not a storm
WINDOW_S = 60.0  # one storm's announcement and its closing count this far apart at most
_BAD = ("Warning", "Critical")


def _origin(url: str) -> str | None:
    """scheme://host:port of ``url`` (no user info, path or query: they may carry tokens)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def target_of(check: Check) -> str | None:
    """What ``check`` probes, as its spec names it in clear; None when only a Secret does."""
    if check.http is not None:
        first = check.http.url or next(iter(check.http.urls), None)
        return _origin(first) if first else None
    if check.postgres is not None:
        return f"postgres {check.postgres.host}:{check.postgres.port}"
    if check.memcached is not None:
        return f"memcached {check.memcached.address}"
    if check.prometheus is not None:
        origin = _origin(check.prometheus.url)
        return f"prometheus {origin}" if origin else None
    if check.rabbitmq is not None and check.rabbitmq.management is not None:
        origin = _origin(check.rabbitmq.management.url)
        return f"rabbitmq {origin}" if origin else None
    return None


def transitions(
    policy: HealthPolicySpec,
    before: Mapping[str, Any],
    after: Sequence[Mapping[str, Any]],
) -> list[tuple[str, Direction]]:
    """The targets whose check turned bad (``failing``) or healthy from bad (``recovered``)
    this round: ``before`` is the previous status, ``after`` the round's ``checks``."""
    old = {
        c.get("name"): c.get("state") for c in before.get("checks") or () if isinstance(c, Mapping)
    }
    new = {c.get("name"): c.get("state") for c in after}
    out: list[tuple[str, Direction]] = []
    for check in policy.checks:
        was, now = old.get(check.name), new.get(check.name)
        direction: Direction | None = None
        if now in _BAD and was not in _BAD:
            direction = "failing"
        elif now == "Healthy" and was in _BAD:
            direction = "recovered"
        target = target_of(check) if direction else None
        if target is not None and direction is not None and (target, direction) not in out:
            out.append((target, direction))
    return out


# (target, direction) -> whether an announced storm window that counted this policy's own
# transition on that target is open now (bound to the policy and the clock by the caller).
Covered = Callable[[str, Direction], bool]


def _states(checks: Sequence[Any]) -> dict[Any, Any]:
    return {c.get("name"): c.get("state") for c in checks if isinstance(c, Mapping)}


def folded_into(
    policy: HealthPolicySpec,
    before: Mapping[str, Any],
    after: Sequence[Mapping[str, Any]],
    covered: Covered,
) -> tuple[str, Direction] | None:
    """The announced storm this round's own Events are about, or None: they go as usual.

    The round's news is its checks that changed state (or, when none did, its bad checks:
    an incident opening or escalating rounds after the change; when nothing is bad either,
    a resolution that follows a recovery). It is the storm's when every one of them is on
    a target whose storm counted this policy, in the direction of the change: one check
    about something else (another target, a ``resources`` check, a state ``Unknown``) and
    every Event of the round goes.
    """
    old, new = _states(before.get("checks") or ()), _states(after)
    targets = {c.name: target_of(c) for c in policy.checks}

    def storm_of(name: str, state: Any) -> tuple[str, Direction] | None:
        target = targets.get(name)
        direction: Direction | None = None
        if state in _BAD:
            direction = "failing"
        elif state == "Healthy":
            direction = "recovered"
        if target is None or direction is None or not covered(target, direction):
            return None
        return target, direction

    news = [(n, s) for n, s in new.items() if s != old.get(n)]
    news = news or [(n, s) for n, s in new.items() if s in _BAD]
    if news:
        found = [storm_of(n, s) for n, s in news]
        return None if any(f is None for f in found) else found[0]
    for name, state in new.items():
        if state == "Healthy" and (f := storm_of(name, state)) is not None:
            return f
    return None


@dataclass
class _Storm:
    since: float
    ref: Any  # the first policy's (the summary is posted on it)
    policies: dict[str, str] = field(default_factory=dict)  # key -> "namespace/name"
    # Every policy counted in the window, also those that turned back since (the closing
    # count: how many this storm touched; ``policies`` is how many are in it now).
    seen: dict[str, str] = field(default_factory=dict)
    announced: int = 0  # the count the last summary gave
    folded: int = 0  # the policies' own Events folded into this storm's closing Event


@dataclass(frozen=True)
class Summary:
    """One Event on the shared cause: ``count`` policies, ``target`` in ``direction``."""

    target: str
    direction: Direction
    count: int
    names: tuple[str, ...]  # a few of the policies, for the message
    ref: Any
    closing: bool  # the window's final count (not the first announcement)
    folded: int = 0  # the policies' own Events not posted: this one tells them

    @property
    def reason(self) -> str:
        return REASONS[self.direction]

    @property
    def message(self) -> str:
        shown = ", ".join(self.names[:3]) + (", ..." if self.count > 3 else "")
        verb = "failing" if self.direction == "failing" else "recovered"
        when = f"within {WINDOW_S:g}s" if self.closing else "so far"
        if self.closing:
            tail = f"{self.folded} of their own Events folded into this one"
        else:
            tail = "their own Events about it are folded into this one's closing count"
        return (
            f"{self.target}: {verb} for {self.count} HealthPolicies {when} ({shown}):"
            f" one shared cause; {tail} (each policy's status tells its own story)"
        )[:1000]


class Storms:
    """Per target and direction: the policies that changed together (module docstring)."""

    def __init__(self, min_policies: int = MIN_POLICIES, window: float = WINDOW_S) -> None:
        self.min_policies = min_policies
        self.window = window
        self._open: dict[tuple[str, Direction], _Storm] = {}

    def report(
        self, target: str, direction: Direction, key: str, name: str, ref: Any, now: float
    ) -> Summary | None:
        """One policy's check on ``target`` changed; a summary to post now, or None."""
        opposite: Direction = "recovered" if direction == "failing" else "failing"
        self._open.get((target, opposite), _Storm(0, None)).policies.pop(key, None)
        s = self._open.get((target, direction))
        if s is None or now - s.since >= self.window:
            s = self._open[(target, direction)] = _Storm(since=now, ref=ref)
        s.policies[key] = s.seen[key] = name
        if s.announced or len(s.policies) < self.min_policies:
            return None
        s.announced = len(s.policies)
        return self._summary(target, direction, s, closing=False)

    def flush(self, now: float) -> list[Summary]:
        """Closing counts of the windows that ended with more policies than announced."""
        out: list[Summary] = []
        for (target, direction), s in list(self._open.items()):
            if now - s.since < self.window:
                continue
            del self._open[(target, direction)]
            if s.announced and (len(s.seen) > s.announced or s.folded):
                out.append(self._summary(target, direction, s, closing=True))
        return out

    def covered(self, target: str, direction: Direction, key: str, now: float) -> bool:
        """An announced storm on ``target`` in ``direction`` counted policy ``key`` and its
        window is still open: that policy's Events about it fold (:func:`folded_into`)."""
        s = self._open.get((target, direction))
        return (
            s is not None
            and bool(s.announced)
            and now - s.since < self.window
            and key in s.policies
        )

    def fold(self, target: str, direction: Direction, events: int) -> None:
        """``events`` of a policy's own Events were not posted: the closing count tells them."""
        s = self._open.get((target, direction))
        if s is not None:
            s.folded += events

    def forget(self, key: str) -> None:
        """A policy is gone: it no longer counts."""
        for s in self._open.values():
            s.policies.pop(key, None)
            s.seen.pop(key, None)

    def _summary(self, target: str, direction: Direction, s: _Storm, closing: bool) -> Summary:
        counted = s.seen if closing else s.policies
        names = tuple(sorted(counted.values())[:3])
        return Summary(target, direction, len(counted), names, s.ref, closing, s.folded)

    def __len__(self) -> int:
        return len(self._open)
