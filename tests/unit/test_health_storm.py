"""Storm across policies: one Event per shared target (logic/health/storm.py,
runtime/storms.py), past the operator-wide cap that drops the policies' own Events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stronghold_operator.logic import health as h
from stronghold_operator.logic.events import Limits
from stronghold_operator.logic.health import storm
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.probes.base import ProbeResult, UrlResult
from stronghold_operator.runtime import events, storms

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WEB = "https://web.example:8443/health/?token=abc"


def policy() -> HealthPolicySpec:
    return parse(
        HealthPolicySpec,
        {
            "failureThreshold": 1,
            "checks": [
                {"name": "web", "http": {"url": WEB}},
                {"name": "db", "postgres": {"host": "db"}},
                {"name": "mq", "rabbitmq": {"url": {"secretKeyRef": {"name": "s", "key": "k"}}}},
            ],
        },
    )


def status(web: str, db: str, mq: str = "Healthy") -> dict[str, Any]:
    return {
        "checks": [
            {"name": "web", "state": web},
            {"name": "db", "state": db},
            {"name": "mq", "state": mq},
        ]
    }


def test_a_target_is_named_by_what_the_spec_says_in_clear() -> None:
    p = policy()
    assert [storm.target_of(c) for c in p.checks] == [
        "https://web.example:8443",  # no path or query (they may carry tokens)
        "postgres db:5432",
        None,  # only a Secret names the broker
    ]


def test_transitions_are_a_check_turning_bad_or_healthy_from_bad() -> None:
    p = policy()
    before = status("Healthy", "Critical", "Healthy")
    after = status("Critical", "Healthy", "Critical")["checks"]
    assert storm.transitions(p, before, after) == [
        ("https://web.example:8443", "failing"),
        ("postgres db:5432", "recovered"),
    ]  # mq has no target in clear
    assert storm.transitions(p, before, status("Critical", "Critical")["checks"])[1:] == []
    # Warning -> Critical is not a new failure; Unknown -> Healthy is not a recovery.
    assert (
        storm.transitions(p, status("Warning", "Unknown"), status("Critical", "Healthy")["checks"])
        == []
    )


def test_one_summary_at_the_threshold_and_one_closing_count() -> None:
    s = storm.Storms(min_policies=3, window=60)
    out = [s.report("pg", "failing", f"u{i}", f"ns/p{i}", {"i": i}, float(i)) for i in range(10)]
    posted = [o for o in out if o is not None]
    assert len(posted) == 1 and posted[0].count == 3 and posted[0].ref == {"i": 0}
    assert "pg: failing for 3 HealthPolicies so far (ns/p0, ns/p1, ns/p2" in posted[0].message
    assert s.flush(59.0) == []
    closing = s.flush(60.0)
    assert [(c.count, c.closing) for c in closing] == [(10, True)]
    assert "within 60s" in closing[0].message and len(s) == 0


def test_two_policies_are_not_a_storm_and_a_recovery_ends_a_failure() -> None:
    s = storm.Storms(min_policies=3, window=60)
    assert s.report("pg", "failing", "a", "ns/a", None, 0) is None
    assert s.report("pg", "failing", "b", "ns/b", None, 1) is None
    assert s.report("pg", "recovered", "a", "ns/a", None, 2) is None  # a is no longer failing
    assert s.report("pg", "failing", "c", "ns/c", None, 3) is None  # two failing, not three
    s.forget("b")
    assert s.report("pg", "failing", "d", "ns/d", None, 4) is None
    assert s.flush(100) == []  # never announced: no closing count either


@settings(max_examples=50, deadline=None)
@given(
    reports=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 200), st.floats(0, 600)),
        max_size=300,
    )
)
def test_summaries_are_bounded_by_targets_and_windows(
    reports: list[tuple[str, int, float]],
) -> None:
    """Property: at most two Events per target and window, whatever the number of policies."""
    s = storm.Storms(min_policies=3, window=60)
    posted = 0
    for target, policy_no, now in sorted(reports, key=lambda r: r[2]):
        posted += (
            s.report(target, "failing", str(policy_no), f"ns/{policy_no}", None, now) is not None
        )
        posted += len(s.flush(now))
    posted += len(s.flush(10_000))
    windows = 3 * (600 // 60 + 1)
    assert posted <= 2 * windows


def test_the_summary_goes_past_the_operator_wide_cap() -> None:
    sent: list[tuple[str, str, str, str]] = []

    def send(body: Any, type_: str, reason: str, message: str) -> None:
        sent.append((body["metadata"]["name"], type_, reason, message))

    events.configure(Limits(qps=0.001, burst=1), send=send)
    gate = storms.StormGate(storm.Storms(min_policies=3, window=60), clock=lambda: 0.0)
    try:
        for i in range(50):
            body = {"kind": "HealthPolicy", "metadata": {"namespace": "ns", "name": f"p{i}"}}
            events.post(body, type="Warning", reason="IncidentOpened", message="db down")
            gate.report(body, "postgres db:5432", "failing")
    finally:
        events._ONE.pop("gate", None)
    opened = [s for s in sent if s[2] == "IncidentOpened"]
    shared = [s for s in sent if s[2] == "TargetFailing"]
    assert len(opened) == 1  # the cap dropped the other 49
    assert shared == [
        (
            "p0",
            "Warning",
            "TargetFailing",
            "postgres db:5432: failing for 3 HealthPolicies so far (ns/p0, ns/p1, ns/p2):"
            " one shared cause; their own Events about it are folded into this one's closing"
            " count (each policy's status tells its own story)",
        )
    ]


def test_a_round_reports_its_shared_targets() -> None:
    p = policy()
    ok = ProbeResult(latency_ms=5, numbers={"connectionsUsed": 1, "maxConnections": 100})
    web_ok = ProbeResult(latency_ms=5, urls=(UrlResult(WEB, 200, 5.0),))
    first = h.evaluate(p, "p", {}, {"web": web_ok, "db": ok}, None, T0)
    down = ProbeResult.failed("Unreachable", "connection refused")
    second = h.evaluate(p, "p", first.status, {"web": web_ok, "db": down}, None, T0)
    assert storm.transitions(p, first.status, second.status["checks"]) == [
        ("postgres db:5432", "failing")
    ]


def test_the_closing_count_goes_out_when_the_window_ends() -> None:
    sent: list[tuple[str, str, str]] = []

    def send(body: Any, type_: str, reason: str, message: str) -> None:
        sent.append((body["metadata"]["name"], reason, message))

    events.configure(Limits(), send=send)
    now = [0.0]
    gate = storms.StormGate(storm.Storms(min_policies=3, window=60), clock=lambda: now[0])
    try:
        for i in range(7):
            body = {"kind": "HealthPolicy", "metadata": {"namespace": "ns", "name": f"p{i}"}}
            gate.report(body, "memcached cache:11211", "recovered")
        gate.forget({"metadata": {"namespace": "ns", "name": "p6"}})  # deleted meanwhile
        assert gate.flush() == 0
        now[0] = 60.0
        assert gate.flush() == 1
    finally:
        events._ONE.pop("gate", None)
    assert [(name, reason) for name, reason, _ in sent] == [
        ("p0", "TargetRecovered"),
        ("p0", "TargetRecovered"),
    ]
    assert sent[1][2].startswith("memcached cache:11211: recovered for 6 HealthPolicies within 60s")


# --- Folding: the policies' own Events about an announced storm -----------------------------

PG = "postgres db:5432"
WEB_T = "https://web.example:8443"


def covering(*storms_: tuple[str, storm.Direction]) -> Callable[[str, storm.Direction], bool]:
    return lambda target, direction: (target, direction) in storms_


def test_a_round_folds_when_all_its_news_is_the_announced_storms() -> None:
    p = policy()
    into = storm.folded_into
    # The db turned bad and its target's storm counted this policy: folded.
    down = status("Healthy", "Critical")["checks"]
    assert into(p, status("Healthy", "Healthy"), down, covering((PG, "failing"))) == (
        PG,
        "failing",
    )
    # Not announced (the first two policies), or not this direction: posted.
    assert into(p, status("Healthy", "Healthy"), down, covering()) is None
    assert into(p, status("Healthy", "Healthy"), down, covering((PG, "recovered"))) is None
    # Another check changed too (web, or mq: no target in clear): its news goes.
    both = status("Warning", "Critical")["checks"]
    assert into(p, status("Healthy", "Healthy"), both, covering((PG, "failing"))) is None
    mq = status("Healthy", "Critical", "Critical")["checks"]
    assert into(p, status("Healthy", "Healthy"), mq, covering((PG, "failing"))) is None
    # Unknown is not the storm's news either.
    unknown = status("Healthy", "Unknown")["checks"]
    assert into(p, status("Healthy", "Critical"), unknown, covering((PG, "recovered"))) is None
    # Nothing changed: the bad checks say (an incident opening or escalating later).
    assert into(p, status("Healthy", "Critical"), down, covering((PG, "failing"))) == (
        PG,
        "failing",
    )
    still = status("Critical", "Critical")
    assert into(p, still, still["checks"], covering((PG, "failing"))) is None  # web's own
    # Recovery, symmetric; and the resolution rounds after it (nothing bad, nothing moved).
    up = status("Healthy", "Healthy")["checks"]
    assert into(p, status("Healthy", "Critical"), up, covering((PG, "recovered"))) == (
        PG,
        "recovered",
    )
    calm = status("Healthy", "Healthy")
    assert into(p, calm, calm["checks"], covering((PG, "recovered"))) == (PG, "recovered")
    assert into(p, calm, calm["checks"], covering()) is None


def test_covered_needs_the_announcement_this_policy_and_an_open_window() -> None:
    s = storm.Storms(min_policies=3, window=60)
    s.report(PG, "failing", "a", "ns/a", None, 0)
    s.report(PG, "failing", "b", "ns/b", None, 1)
    assert not s.covered(PG, "failing", "a", 1)  # not a storm yet
    s.report(PG, "failing", "c", "ns/c", None, 2)
    assert s.covered(PG, "failing", "a", 2) and s.covered(PG, "failing", "c", 2)
    assert not s.covered(PG, "failing", "z", 2)  # its transition was not this storm's
    assert not s.covered(PG, "recovered", "a", 2)
    assert not s.covered(PG, "failing", "a", 60)  # the window ended
    s.report(PG, "recovered", "a", "ns/a", None, 3)
    assert not s.covered(PG, "failing", "a", 3)  # a recovered: no longer failing


def test_the_closing_count_carries_the_folded_events() -> None:
    s = storm.Storms(min_policies=3, window=60)
    for i in range(3):
        s.report(PG, "failing", f"u{i}", f"ns/p{i}", {"i": i}, float(i))
    s.fold(PG, "failing", 4)
    s.report(PG, "recovered", "u0", "ns/p0", None, 10)  # it was in the storm all the same
    (closing,) = s.flush(60)
    assert (closing.count, closing.folded, closing.closing) == (3, 4, True)
    assert closing.message == (
        "postgres db:5432: failing for 3 HealthPolicies within 60s (ns/p0, ns/p1, ns/p2):"
        " one shared cause; 4 of their own Events folded into this one"
        " (each policy's status tells its own story)"
    )


def simulate(
    n: int, per_round: int, times: list[float], offset: float
) -> tuple[int, list[storm.Summary], int]:
    """N policies with one check on one target fail (then recover) at ``times``; each
    transition round has ``per_round`` Events of its own. Returns the policies' Events
    posted, the shared-target Events and the Events folded."""
    p = parse(HealthPolicySpec, {"checks": [{"name": "db", "postgres": {"host": "db"}}]})
    s = storm.Storms(min_policies=3, window=60)
    posted, summaries, folded = 0, [], 0
    for before, after, direction in (
        ("Healthy", "Critical", "failing"),
        ("Critical", "Healthy", "recovered"),
    ):
        for i, t in enumerate(times[:n]):
            now = t + (offset if direction == "recovered" else 0)
            old = {"checks": [{"name": "db", "state": before}]}
            new = [{"name": "db", "state": after}]
            for target, d in storm.transitions(p, old, new):
                if (summary := s.report(target, d, f"u{i}", f"ns/p{i}", None, now)) is not None:
                    summaries.append(summary)
            fold = storm.folded_into(
                p, old, new, lambda tg, d, i=i, now=now: s.covered(tg, d, f"u{i}", now)
            )
            if fold is None:
                posted += per_round
            else:
                s.fold(*fold, per_round)
                folded += per_round
            summaries += s.flush(now)
        summaries += s.flush(offset + 10_000 if direction == "recovered" else offset - 1)
    return posted, summaries, folded


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 400),
    per_round=st.integers(1, 6),
    times=st.lists(st.floats(0, 59.9), min_size=400, max_size=400),
)
def test_a_storm_costs_a_handful_of_events_whatever_its_size(
    n: int, per_round: int, times: list[float]
) -> None:
    """Property: N >= 3 policies failing and recovering on one target within a window
    post their first two policies' Events and two shared-target Events per direction; the
    closing Events carry every other policy's Events, counted."""
    posted, summaries, folded = simulate(n, per_round, sorted(times), offset=120)
    assert posted == 2 * 2 * per_round  # the first two policies, both directions
    assert len(summaries) == 4  # announcement and closing count, both directions
    assert folded == 2 * (n - 2) * per_round
    closing = [x for x in summaries if x.closing]
    assert sorted(x.folded for x in closing) == [(n - 2) * per_round] * 2
    assert all(x.count == n for x in closing)


async def test_a_folded_round_posts_no_event_but_keeps_its_status_and_webhook() -> None:
    from dataclasses import replace

    from stronghold_operator.services import health as service
    from tests.unit.test_health_service import CACHE_OK, HOOK, WHERE, World
    from tests.unit.test_health_service import policy as cache_policy

    spec = cache_policy(alerting={"webhook": {"url": HOOK}})
    target = "memcached cache:11211"
    for covered, posted in ((False, True), (True, False)):
        w = World()
        reported: list[tuple[str, str]] = []
        folded: list[tuple[str, str, int]] = []
        ports = replace(
            w.ports(),
            shared=lambda t, d, seen=reported: seen.append((t, d)),
            covered=lambda t, d, on=covered: on and (t, d) == (target, "failing"),
            fold=lambda t, d, n, seen=folded: seen.append((t, d, n)),
        )
        w.prober.results = {"cache": CACHE_OK}
        calm = await service.run_round(spec, {}, WHERE, ports)
        assert calm.fold is None
        w.prober.results = {"cache": ProbeResult.failed("Unreachable", "refused")}
        r = await service.run_round(spec, calm.fields, WHERE, ports)
        await w.background()
        assert reported == [(target, "failing")]
        assert r.fields["incident"] and r.fields["checks"][0]["state"] == "Critical"
        assert len(w.webhooks.posts) == 1  # alerting is not an Event: it still goes
        opened = [e for e in w.events if e[1] == "IncidentOpened"]
        assert bool(opened) is posted
        assert r.fold == ((target, "failing") if covered else None)
        assert folded == ([(target, "failing", 1)] if covered else [])  # IncidentOpened


def test_folding_is_a_metric_and_the_closing_count() -> None:
    sent: list[tuple[str, str, str]] = []

    def send(body: Any, type_: str, reason: str, message: str) -> None:
        sent.append((body["metadata"]["name"], reason, message))

    events.configure(Limits(), send=send)
    now = [0.0]
    gate = storms.StormGate(storm.Storms(min_policies=3, window=60), clock=lambda: now[0])
    before = events.DROPPED.labels("shared")._value.get()
    try:
        bodies = [
            {"kind": "HealthPolicy", "metadata": {"namespace": "ns", "name": f"p{i}"}}
            for i in range(5)
        ]
        for b in bodies:
            gate.report(b, PG, "failing")
        assert [gate.covered(b, PG, "failing") for b in bodies] == [True] * 5
        gate.fold(PG, "failing", 6)
        gate.fold(PG, "failing", 0)  # nothing to fold: nothing counted
        now[0] = 60.0
        assert not gate.covered(bodies[0], PG, "failing")
        assert gate.flush() == 1
    finally:
        events._ONE.pop("gate", None)
    assert events.DROPPED.labels("shared")._value.get() == before + 6
    assert [reason for _, reason, _ in sent] == ["TargetFailing", "TargetFailing"]
    assert "failing for 5 HealthPolicies within 60s" in sent[1][2]
    assert "6 of their own Events folded into this one" in sent[1][2]
