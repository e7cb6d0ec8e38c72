"""Storm across policies: one Event per shared target (logic/health/storm.py,
runtime/storms.py), past the operator-wide cap that drops the policies' own Events."""

from __future__ import annotations

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
            " one shared cause; each policy's own Events are aggregated and capped",
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
