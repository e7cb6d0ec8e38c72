"""The one status writer: diff, observedGeneration, patch, transition Events.

:class:`StatusWriter` is one object's writer: at most one write in flight, later changes
merged into the next write (latest wins), writes in the background so a slow API server
never delays a pass, a failed write restored and retried with back-off, an optional cheap
signature skip for kinds whose passes mostly move numbers (no heartbeat: numbers go out
with the next significant change; only named ``refresh`` fields are written alone, rarely).
Every patch goes through :meth:`StatusWriter._send`, within the process's write budget
(:mod:`stronghold_operator.runtime.budget`); every Event through
:mod:`stronghold_operator.runtime.events`. :func:`write_status` is the one-shot form
(write now, raise on failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import ChainMap
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Mapping
from datetime import datetime
from typing import Any, cast

import kopf

from stronghold_operator import conditions as cond
from stronghold_operator.logic import lifecycle, ratelimit
from stronghold_operator.models import scaling
from stronghold_operator.models.status import StatusModel
from stronghold_operator.platforms.kube import ApiError, Kube, is_not_found, patch_status
from stronghold_operator.runtime import events
from stronghold_operator.runtime.budget import budget, retryable

log = logging.getLogger("stronghold.status")
# write_status tries a write this often when the API server is overloaded or unreachable.
ONE_SHOT_ATTEMPTS = 3

# What sends one merge patch of an object's status: (kube, plural, namespace, name, delta).
PatchFn = Callable[[Kube, str, str, str, dict[str, Any]], Awaitable[None]]

# Condition types that are bad when True (the rest are bad when False). Kinds with a typed
# vocabulary contribute theirs; the others are listed until they move to one.
_BAD_WHEN_TRUE = {
    "Degraded",
    "IncidentOpen",
    "BackupStale",
    lifecycle.STALLED,
} | scaling.VOCABULARY.bad_when_true


def is_bad(t: cond.Transition) -> bool:
    if t.type in _BAD_WHEN_TRUE:
        return t.new == "True"
    return t.new == "False"


def compute_status(
    body: Mapping[str, Any],
    status: Mapping[str, Any],
    desired: Mapping[str, Any],
    updates: Iterable[cond.Condition],
    now: datetime,
) -> tuple[dict[str, Any], list[cond.Transition]]:
    """Merge conditions and set observedGeneration; return (changed fields, transitions).

    The changed-fields dict is empty when nothing changed, so callers skip the write.
    """
    generation = body.get("metadata", {}).get("generation")
    before = list(status.get("conditions") or [])
    updates = lifecycle.complete(
        body.get("kind"), before, updates, ChainMap(dict(desired), dict(status))
    )
    merged = cond.upsert(before, updates, generation, now)
    full = dict(desired)
    full["conditions"] = merged
    full["observedGeneration"] = generation
    return cond.status_delta(status, full), cond.transitions(before, merged)


def told(moved: Iterable[cond.Transition]) -> list[cond.Transition]:
    """The transitions :func:`announce` makes Events of. Reconciling and Stalled restate
    other conditions (logic/lifecycle): their transitions are told by those. A condition's
    first value (from nothing) is not news; Unknown -> X after that is."""
    return [t for t in moved if t.old is not None and t.type not in lifecycle.DERIVED]


def announce(body: Mapping[str, Any], moved: Iterable[cond.Transition]) -> None:
    """One Event per condition transition a human cares about (aggregated and rate-limited
    by runtime/events)."""
    for t in told(moved):
        kind = "Warning" if is_bad(t) else "Normal"
        events.post(body, type=kind, reason=t.reason, message=f"{t.type}={t.new}: {t.message}")


async def write_status(
    kube: Kube,
    plural: str,
    body: kopf.Body,
    status: StatusModel,
    now: datetime,
    current: Mapping[str, Any] | None = None,
    events_for: Collection[str] | None = None,
) -> dict[str, Any]:
    """Write a typed status of one of our objects; returns the status as the apiserver now has it.

    The fields the model set are diffed against ``current`` (default: the body's status)
    with the conditions merged by type (``lastTransitionTime`` kept while unchanged) and
    ``observedGeneration`` set; nothing is patched when nothing changed. Condition
    transitions become Events. Callers that write twice in one pass pass the returned
    status as ``current`` the second time. ``events_for`` limits the Events to those
    condition types (a kind that reports its other steps with Events of its own).
    """
    before: Mapping[str, Any] = (body.get("status") or {}) if current is None else current
    fields = status.to_status()
    fields.pop("observedGeneration", None)
    wanted = [
        cond.Condition(c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
        for c in fields.pop("conditions", None) or ()
    ]
    newsworthy = None if events_for is None else (lambda t: t.type in events_for)
    writer = StatusWriter(kube, plural, body, before, newsworthy=newsworthy)
    return await writer.write(fields, wanted, now)


async def acknowledge(
    kube: Kube, plural: str, body: kopf.Body, current: Mapping[str, Any], now: datetime
) -> dict[str, Any] | None:
    """A pass's first write when the spec generation is new to the status (and the status
    has conditions: a first status sets it anyway): ``observedGeneration`` and
    ``Reconciling=True``, so GitOps tools read InProgress while the pass runs, not the
    previous generation's verdict. Returns the new status, or None when there was nothing
    to acknowledge."""
    meta = body.get("metadata") or {}
    if not current.get("conditions") or not lifecycle.unobserved(
        {"metadata": meta, "status": current}
    ):
        return None
    writer = StatusWriter(kube, plural, body, current, newsworthy=lambda _t: False)
    return await writer.write({}, lifecycle.acknowledge(meta.get("generation")), now)


class StatusWriter:
    """One object's status writer (see the module docstring).

    ``body`` is the object as the kind keeps it (at least ``metadata`` with namespace, name
    and generation; read at each write, so a kind may update it in place); ``status`` what
    the API has. ``newsworthy`` filters the transitions announced as Events. ``signature``
    is what a reader acts on: a change that keeps it is not written (it goes out with the
    next change that moves it). ``refresh`` names top-level fields written alone at most
    every ``refresh_every`` seconds when only they and the unsigned numbers moved (a "last
    probe" time; the first such write at a random point of the period). ``replaced`` names
    list fields a merge patch replaces whole: the writer keeps only their latest value, not
    the written one (memory). ``on_gone`` runs when the object is not found (deleted, and
    the watch has not said so yet); ``on_write`` is told each write's cause (``change`` or
    ``refresh``). ``retry_after`` is the first back-off after a failed write (it doubles).
    """

    __slots__ = (
        "_attempt",
        "_dirty",
        "_last_refresh",
        "_phase",
        "_soon",
        "_urgent",
        "_written_sig",
        "body",
        "current",
        "kube",
        "newsworthy",
        "on_gone",
        "on_write",
        "patch",
        "plural",
        "refresh",
        "refresh_every",
        "replaced",
        "retry_after",
        "signature",
        "writing",
        "written",
    )

    def __init__(
        self,
        kube: Kube,
        plural: str,
        body: Mapping[str, Any],
        status: Mapping[str, Any],
        *,
        newsworthy: Callable[[cond.Transition], bool] | None = None,
        signature: Callable[[Mapping[str, Any]], Hashable] | None = None,
        refresh: Collection[str] = (),
        refresh_every: float = 0.0,
        replaced: Collection[str] = (),
        on_gone: Callable[[], None] | None = None,
        on_write: Callable[[str], None] | None = None,
        retry_after: float = 2.0,
        patch: PatchFn | None = None,
    ) -> None:
        self.kube, self.plural, self.body, self.patch = kube, plural, body, patch
        self.newsworthy, self.signature = newsworthy, signature
        self.refresh, self.refresh_every = tuple(refresh), refresh_every
        self.replaced, self.on_gone, self.on_write = frozenset(replaced), on_gone, on_write
        self.retry_after = retry_after
        self.current: dict[str, Any] = dict(status)  # what passes continue from
        self.written: dict[str, Any] = {}  # what the API has or is being sent, but ``replaced``
        self._written_sig: int = 0
        self._remember_written()
        self._last_refresh: float | None = None  # monotonic; None: no write yet
        self._soon = (0.0, 0.0)  # (until, every): a shorter refresh period for a while
        self._phase = random.uniform(0, refresh_every) if refresh and refresh_every > 0 else 0.0
        self._dirty = False  # a change waits for the write in flight
        self._urgent = False  # ... and it is significant (it goes first)
        self._attempt = 0  # failed writes in a row (the back-off grows with them)
        self.writing: asyncio.Task[None] | None = None

    # --- the pass's side ----------------------------------------------------------------

    def update(
        self,
        desired: Mapping[str, Any],
        updates: Iterable[cond.Condition],
        now: datetime | None = None,
        *,
        folded: Callable[[int], None] | None = None,
    ) -> None:
        """Merge a pass's status fields and conditions; write in the background when
        something changed (with a ``signature``: when it moved). Transitions are announced
        now, once; with ``folded``, not posted but counted to it (a shared target's Event
        tells them: runtime/storms.py)."""
        updates = self._complete(desired, updates)
        if self.signature is not None and self._skip(desired, updates):
            self._refresh_if_due()
            return
        first = not self.written
        delta, moved = self._merge(desired, updates, now or cond.utcnow())
        if not delta:
            pass
        elif self.signature is None or self._sig(self.current) != self._written_sig:
            urgent = self.signature is not None or ratelimit.is_significant(
                delta, len(moved), first
            )
            self._start(delta, urgent)
        else:
            self._refresh_if_due()
        self._announce(moved, folded)

    def _start(self, delta: dict[str, Any], urgent: bool) -> None:
        if self.writing is None:
            before = self._begin(delta, "change")
            self.writing = asyncio.create_task(self._write_behind(delta, before, urgent))
        else:
            self._dirty = True  # latest wins: it goes with the next write
            self._urgent = self._urgent or urgent

    def refresh_soon(self, every: float, within: float) -> None:
        """For the next ``within`` seconds, the ``refresh`` fields are written every
        ``every`` seconds (a reader waits for a fresh one: a window's post-checks)."""
        self._soon = (time.monotonic() + within, every)

    def _refresh_if_due(self) -> None:
        """Write the ``refresh`` fields alone when their period is up (nothing else)."""
        if not self.refresh or self.refresh_every <= 0 or self.writing is not None:
            return
        now = time.monotonic()
        until, every = self._soon
        period = every if now < until else self.refresh_every
        if self._last_refresh is not None and now - self._last_refresh < period:
            return
        delta = {
            k: self.current[k]
            for k in self.refresh
            if k in self.current and self.current[k] != self.written.get(k)
        }
        if not delta:
            return
        before = self.written, self._written_sig
        self.written = {**self.written, **delta}
        self._last_refresh = now  # refreshes are spread already: keep their spacing
        if self.on_write is not None:
            self.on_write("refresh")
        self.writing = asyncio.create_task(self._write_behind(delta, before, False))

    async def write(
        self,
        desired: Mapping[str, Any],
        updates: Iterable[cond.Condition],
        now: datetime,
    ) -> dict[str, Any]:
        """Write now and wait for it (errors raise; 429, 5xx and no answer are retried
        twice first, with back-off); returns the status the API now has."""
        while self.writing is not None:  # one write in flight: merge patches arrive in order
            await asyncio.wait({self.writing})
        first = not self.written
        delta, moved = self._merge(desired, self._complete(desired, updates), now)
        before = self.written, self._written_sig
        self._remember_written()
        priority = ratelimit.SIGNIFICANT
        if not ratelimit.is_significant(delta, len(moved), first):
            priority = ratelimit.ROUTINE
        try:
            for attempt in range(ONE_SHOT_ATTEMPTS):
                try:
                    await self._send(delta, priority)
                    break
                except Exception as exc:
                    if attempt + 1 == ONE_SHOT_ATTEMPTS or not retryable(exc):
                        raise
                    await asyncio.sleep(budget().retry_delay(exc, attempt, self.retry_after))
        except BaseException:
            self.written, self._written_sig = before
            raise
        self._announce(moved)
        return self.current

    async def settle(self, within: float = 5.0) -> None:
        """Let the write in flight land (the operator is stopping)."""
        if self.writing is not None and not self.writing.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.writing), within)

    def close(self) -> None:
        """The object is gone: drop the write in flight and its Event windows."""
        if self.writing is not None:
            self.writing.cancel()
            self.writing = None
        events.forget(self.body)

    # --- diff and merge -----------------------------------------------------------------

    def _complete(
        self, desired: Mapping[str, Any], updates: Iterable[cond.Condition]
    ) -> list[cond.Condition]:
        """The pass's conditions plus Reconciling and Stalled (logic/lifecycle), read from
        the conditions and fields as this write leaves them."""
        return lifecycle.complete(
            self.body.get("kind"),
            self.current.get("conditions"),
            updates,
            ChainMap(cast(dict[str, Any], desired), self.current),
        )

    def _sig(self, status: Mapping[str, Any]) -> int:
        # 64 bits of the signature: a collision only puts a change off to the next one.
        return 0 if self.signature is None else hash(self.signature(status))

    def _remember_written(self) -> None:
        self.written = {k: v for k, v in self.current.items() if k not in self.replaced}
        self._written_sig = self._sig(self.current)

    def _skip(self, desired: Mapping[str, Any], updates: list[cond.Condition]) -> bool:
        """The cheap path: when what this pass would write has the written signature,
        nothing is written or announced, and the full diff is skipped. The pass's numbers
        are kept; conditions keep their written form until the next write."""
        generation = self.body["metadata"].get("generation")
        candidate = {**self.current, **desired, "observedGeneration": generation}
        written_conditions = self.written.get("conditions")
        candidate["conditions"] = signature_conditions(written_conditions, updates)
        if self._sig(candidate) != self._written_sig or self._dirty:
            return False
        candidate["conditions"] = written_conditions or []
        self.current = candidate
        return True

    def _merge(
        self, desired: Mapping[str, Any], updates: list[cond.Condition], now: datetime
    ) -> tuple[dict[str, Any], list[cond.Transition]]:
        """Fold the pass into ``current``; returns the patch from ``written`` to it and
        the transitions since the last pass (not since the last write: none is told twice).
        Conditions merge into the latest ones, so a transition keeps its time while its
        write waits."""
        generation = self.body["metadata"].get("generation")
        before = self.current.get("conditions")
        merged = cond.upsert(before, updates, generation, now)
        full = dict(desired)
        full["conditions"] = merged
        full["observedGeneration"] = generation
        delta = cond.status_delta(self.written, full)
        base = self.written
        kept = {k: self.current[k] for k in self.replaced if k in self.current}
        if kept:  # the latest lists, unless this write replaces them
            base = {**base, **kept}
        self.current = cond.merge_patch(base, delta)
        return delta, cond.transitions(before, merged)

    def _announce(
        self, moved: list[cond.Transition], folded: Callable[[int], None] | None = None
    ) -> None:
        news = moved if self.newsworthy is None else [t for t in moved if self.newsworthy(t)]
        if news and folded is not None:
            folded(len(told(news)))
        elif news:
            announce(self.body, news)

    # --- writing ------------------------------------------------------------------------

    def _stamp_refresh(self, now: float) -> None:
        """A full write carries the refresh fields: the next refresh is due a period
        later, less this object's own phase. Objects that write together (applied
        together, or a storm) would otherwise refresh together, every period, for ever."""
        self._last_refresh = now - self._phase

    def _begin(self, delta: dict[str, Any], cause: str) -> tuple[dict[str, Any], int]:
        """``written`` moves when a write starts, so passes meanwhile diff (and announce)
        against what is on its way; returns what to put back if the write fails."""
        before = self.written, self._written_sig
        self._remember_written()
        self._stamp_refresh(time.monotonic())  # a full write carries the refresh fields
        if self.on_write is not None:
            self.on_write(cause)
        return before

    async def _write_behind(
        self, delta: dict[str, Any], before: tuple[dict[str, Any], int], urgent: bool
    ) -> None:
        """Send ``delta``, then whatever changed meanwhile, until nothing is left; one write
        at a time (merge patches must arrive in order). A failed write is put back and,
        with all that changed since, retried after a back-off that doubles with each
        failure in a row (a Retry-After is a floor)."""
        try:
            while delta:
                priority = ratelimit.SIGNIFICANT if urgent else ratelimit.ROUTINE
                try:
                    latest = functools.partial(self._latest, delta, before)
                    await self._send(delta, priority, latest)
                    self._attempt = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if is_not_found(exc):
                        if self.on_gone is not None:
                            self.on_gone()
                        return
                    self.written, self._written_sig = before
                    self._warn(exc)
                    delay = budget().retry_delay(exc, self._attempt, self.retry_after)
                    self._attempt += 1
                    await asyncio.sleep(delay)
                    self._dirty = True
                if not self._dirty:
                    return
                self._dirty, urgent = False, self._urgent or urgent
                self._urgent = False
                delta = cond.status_delta(self.written, self.current)
                if delta:
                    before = self._begin(delta, "change")
        finally:
            if self.writing is asyncio.current_task():
                self.writing = None

    def _latest(self, delta: dict[str, Any], before: tuple[dict[str, Any], int]) -> dict[str, Any]:
        """What a write that waited for its turn sends: ``delta``, or, when passes changed
        the status meanwhile, everything from what the API has (``before``) to now in one
        patch (latest wins, also while queued: 10,000 new policies' placeholder and first
        results were two writes each; a storm's outage and recovery, none)."""
        if not self._dirty:
            return delta
        self._dirty, self._urgent = False, False
        merged = cond.status_delta(before[0], self.current)
        self._remember_written()
        return merged

    async def _send(
        self,
        delta: dict[str, Any],
        priority: int = ratelimit.SIGNIFICANT,
        latest: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """The one place a status patch leaves the process: within the write budget;
        ``latest`` gives the patch when the budget lets it go (nothing to send: no request)."""
        if not delta:
            return
        meta = self.body["metadata"]
        send = self.patch or patch_status

        async def call() -> None:
            patch = delta if latest is None else latest()
            if patch:
                await send(self.kube, self.plural, meta["namespace"], meta["name"], patch)

        await budget().send(priority, call)

    def _warn(self, exc: BaseException) -> None:
        # The type and the API's own message (it names the field); status is redacted.
        detail = str(exc)[:300] if isinstance(exc, ApiError) else ""
        meta = self.body["metadata"]
        log.warning(
            "%s/%s: status write failed: %s %s",
            meta.get("namespace"),
            meta.get("name"),
            type(exc).__name__,
            detail,
        )


def signature_conditions(
    written: list[dict[str, Any]] | None, updates: list[cond.Condition]
) -> list[dict[str, Any]]:
    """Type, status and reason of the conditions after ``updates`` (as ``cond.upsert``
    orders them): what a signature reads of conditions, without the full merge."""
    by_type = {u.type: u for u in updates}
    out = []
    for c in written or ():
        u = by_type.pop(str(c.get("type")), None)
        out.append(c if u is None else {"type": u.type, "status": u.status, "reason": u.reason})
    out += [{"type": u.type, "status": u.status, "reason": u.reason} for u in by_type.values()]
    return out
