"""Logs checks: access-log parsing, rules over sliding windows, exactly-once counting across
re-reads and restarts, redaction of samples, the model and its CRD schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stronghold_operator.logic.health import logs
from stronghold_operator.logic.health.assessment import assess
from stronghold_operator.logic.health.classification import CheckVerdict, classify
from stronghold_operator.logic.health.redaction import redact_credentials
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.health import HealthPolicySpec, LogRule, LogsCheck
from stronghold_operator.models.logtime import parse_stamp, split_stamp, stamp_of
from stronghold_operator.probes.base import ProbeResult

T0 = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
CRD = Path(__file__).resolve().parents[2] / "crds" / "healthpolicy.yaml"


def access(
    status: int = 200,
    path: str = "/",
    agent: str = "Mozilla/5.0",
    method: str = "GET",
    remote: str = "10.0.0.7",
) -> str:
    return (
        f'{remote} - - [06/Dec/2026:01:00:00 +0000] "{method} {path} HTTP/1.1" {status} 12'
        f' "-" "{agent}"'
    )


def stamped(seconds: float, line: str, nanos: int = 0) -> str:
    ns = int(T0.timestamp() + seconds) * 1_000_000_000 + nanos
    return f"{stamp_of(ns)} {line}"


def compose_check(**extra: Any) -> LogsCheck:
    return LogsCheck.model_validate({"compose": {"project": "shop", "service": "web"}, **extra})


def rules_of(check: LogsCheck) -> list[logs.Rule]:
    return logs.compile_rules(check.effective_rules())


# --- parsing ----------------------------------------------------------------------------


def test_combined_access_lines_are_parsed_with_a_decoded_path() -> None:
    line = access(401, "/login?next=%2Fadmin&q=a+b", "sqlmap/1.7")
    parsed = logs.parse_access(line)
    assert parsed is not None
    assert (parsed.remote, parsed.method, parsed.status) == ("10.0.0.7", "GET", 401)
    assert parsed.path == "/login?next=/admin&q=a b"
    assert parsed.agent == "sqlmap/1.7"


def test_common_format_without_agent_and_plain_lines() -> None:
    common = '127.0.0.1 - bob [06/Dec/2026:01:00:00 +0000] "POST /api HTTP/1.0" 403 -'
    parsed = logs.parse_access(common)
    assert parsed is not None and parsed.status == 403 and parsed.agent == ""
    assert logs.parse_access("[INFO] Booting worker with pid: 7") is None


def test_timestamps_of_docker_and_the_kubelet() -> None:
    # Docker trims trailing zeros of RFC3339Nano; the kubelet may send an offset.
    a = parse_stamp("2026-12-06T01:00:00.5Z")
    b = parse_stamp("2026-12-06T01:00:00.500000000Z")
    c = parse_stamp("2026-12-06T02:00:00.5+01:00")
    assert a == b == c
    assert parse_stamp("yesterday") is None
    assert split_stamp("no stamp here") == (None, "no stamp here")
    ns, text = split_stamp("2026-12-06T01:00:00.000000001Z GET /")
    assert ns is not None and ns % 1_000_000_000 == 1 and text == "GET /"
    assert parse_stamp(stamp_of(ns)) == ns


# --- rules ------------------------------------------------------------------------------


def test_the_guides_rules_by_default() -> None:
    rules = {r.name: r for r in rules_of(compose_check())}
    assert set(rules) == {"failed-logins", "scanner-user-agent", "sql-injection", "privilege-words"}
    fl = rules["failed-logins"]
    assert (fl.above, fl.window_s, fl.severity, fl.status_in) == (50, 3600, "P2", {401, 403})
    assert rules["scanner-user-agent"].severity == "P3"

    def hit(name: str, line: str) -> bool:
        return logs.matches(rules[name], line, logs.parse_access(line))

    assert hit("failed-logins", access(401)) and hit("failed-logins", access(403))
    assert not hit("failed-logins", access(404))
    for agent in ("sqlmap/1.7#stable", "Mozilla/5.00 (Nikto/2.5)", "masscan/1.3", "Nmap NSE"):
        assert hit("scanner-user-agent", access(agent=agent))
    assert not hit("scanner-user-agent", access(agent="curl/8.0"))
    assert hit("sql-injection", access(path="/items?id=1%20UNION%20SELECT%20password"))
    assert hit("sql-injection", access(path="/q?x=';DROP TABLE users;--"))
    assert hit("sql-injection", access(path="/login?u=' OR '1'='1"))
    assert not hit("sql-injection", access(path="/items/delete/7?selection=all"))
    assert hit("privilege-words", access(path="/admin/login/"))
    assert not hit("privilege-words", access(path="/administration-fees"))
    # A field rule never matches a plain line; a regex rule does.
    assert not hit("failed-logins", "401 Unauthorized")


def test_an_override_changes_only_what_it_sets_and_can_disable() -> None:
    check = compose_check(
        rules=[
            {"name": "failed-logins", "above": 5, "window": "10m"},
            {"name": "privilege-words", "enabled": False},
            {"name": "tracebacks", "regex": "Traceback \\(most recent", "severity": "P4"},
        ]
    )
    rules = {r.name: r for r in rules_of(check)}
    assert "privilege-words" not in rules
    fl = rules["failed-logins"]
    assert (fl.above, fl.window_s, fl.status_in, fl.severity) == (5, 600, {401, 403}, "P2")
    tb = rules["tracebacks"]
    assert logs.matches(tb, "Traceback (most recent call last):", None)
    assert not logs.matches(tb, access(), logs.parse_access(access()))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "exactly one of compose, pods"),
        ({"compose": {"project": "p", "service": "s"}, "rules": [{"name": "x"}]}, "set regex"),
        (
            {"compose": {"project": "p", "service": "s"}, "rules": [{"name": "x", "regex": "("}]},
            "not a regular expression",
        ),
        (
            {
                "compose": {"project": "p", "service": "s"},
                "rules": [{"name": "x", "field": "path", "matches": "a"}],
            },
            "set severity",
        ),
        (
            {
                "compose": {"project": "p", "service": "s"},
                "rules": [{"name": "x", "field": "path", "statusIn": [401], "severity": "P2"}],
            },
            "statusIn goes with field status",
        ),
        (
            {
                "pods": {"targetRef": {"kind": "ComposeService", "project": "p", "service": "s"}},
            },
            "use compose for Compose",
        ),
        (
            {"compose": {"project": "p", "service": "s"}, "includeDefaultRules": False},
            "no rule is enabled",
        ),
        (
            {
                "compose": {"project": "p", "service": "s"},
                "rules": [{"name": "failed-logins", "window": "30s"}],
            },
            "window",
        ),
    ],
)
def test_bad_logs_checks_are_refused_naming_the_field(body: dict[str, Any], words: str) -> None:
    spec = {"checks": [{"name": "sec", "logs": body}]}
    with pytest.raises(InvalidSpec) as err:
        parse(HealthPolicySpec, spec)
    assert words in str(err.value)
    assert "logs" in str(err.value)


# --- counting ---------------------------------------------------------------------------


def test_a_burst_above_the_band_and_bounded_redacted_samples() -> None:
    rules = rules_of(compose_check())
    lines = [
        stamped(i, access(401, f"/login?user=u{i}&password=hunter2"), 0) for i in range(60)
    ] + [stamped(61, access(200, "/"))]
    out = logs.step(rules, logs.LogState(), lines, T0.timestamp() + 62, max_samples=5)
    assert out.counts["failed-logins"] == 60 and out.new["failed-logins"] == 60
    assert out.counts["scanner-user-agent"] == 0
    assert out.lines_counted == 61
    samples = out.state.rules["failed-logins"].samples
    assert len(samples) == 5 and all("hunter2" not in s for s in samples)
    assert "password=***" in samples[-1] and "user=u59" in samples[-1]
    # Buckets, not lines: one minute of events is one bucket.
    assert len(out.state.rules["failed-logins"].buckets) <= 2


def test_the_window_slides_and_samples_leave_with_the_events() -> None:
    rules = rules_of(compose_check(rules=[{"name": "failed-logins", "window": "10m"}]))
    first = logs.step(rules, logs.LogState(), [stamped(0, access(401))], T0.timestamp() + 1)
    assert first.counts["failed-logins"] == 1
    later = logs.step(rules, first.state, [], T0.timestamp() + 11 * 60)
    assert later.counts["failed-logins"] == 0
    assert later.state.rules["failed-logins"].samples == []
    assert later.state.rules["failed-logins"].total == 1  # the total stays


def test_untimed_lines_and_lines_past_the_readers_limit_are_not_counted() -> None:
    rules = rules_of(compose_check())
    limit = int((T0.timestamp() + 5) * 1e9)
    raw = ["no stamp 401", stamped(1, access(401)), stamped(9, access(401))]
    out = logs.step(rules, logs.LogState(), raw, T0.timestamp() + 10, limit_ns=limit)
    assert out.untimed == 1 and out.counts["failed-logins"] == 1
    again = logs.step(rules, out.state, raw[1:], T0.timestamp() + 10)  # next round reads on
    assert again.counts["failed-logins"] == 2


def _events(n: int) -> list[str]:
    # Several lines share a timestamp, two are even identical: the hash set tells them apart.
    return [stamped(i // 3, access(401, f"/login?n={i // 2}")) for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=40),
    cuts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=6),
    restart=st.booleans(),
)
def test_overlapping_rereads_count_every_line_exactly_once(
    n: int, cuts: list[tuple[int, int]], restart: bool
) -> None:
    """Reads start at a whole second at or before the cursor (Docker's since and the
    kubelet's sinceTime have second precision), may end anywhere (the byte cap) and overlap
    any earlier read; a restart resumes from the state in status (JSON)."""
    lines = _events(n)
    rules = rules_of(compose_check())
    now = T0.timestamp() + 60
    state = logs.LogState()
    done = 0
    for a, b in cuts:
        start, end = min(a, b, done, n) // 3 * 3, min(max(a, b), n)  # 3 lines a second
        batch = lines[start:end]
        out = logs.step(rules, state, batch, now)
        state = out.state
        done = max(done, end)
        if restart:
            measured = json.loads(json.dumps(logs.to_measurements(state, out.counts)))
            state = logs.state_from(measured)
    final = logs.step(rules, state, lines, now)  # everything again, from the start
    assert final.counts["failed-logins"] == n
    assert final.state.rules["failed-logins"].total == n


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=7200), max_size=80))
def test_memory_is_bounded_by_buckets_not_lines(offsets: list[int]) -> None:
    rules = rules_of(compose_check())
    raw = [stamped(o, access(401)) for o in offsets]
    out = logs.step(rules, logs.LogState(), raw, T0.timestamp() + 7200)
    for rs in out.state.rules.values():
        assert len(rs.buckets) <= logs.MAX_BUCKETS and len(rs.samples) <= 5
    in_window = sum(1 for o in offsets if o >= 3600 - 60)  # a bucket of 60 s slides as one
    assert sum(1 for o in offsets if o > 3600) <= out.counts["failed-logins"] <= in_window


def test_garbage_state_is_ignored() -> None:
    state = logs.state_from(
        {"cursor": 7, "seenAtCursor": "x", "rules": {"a": {"buckets": [["x", 1], [5]]}, "b": 3}}
    )
    assert state.cursor_ns is None and state.rules["a"].buckets == {}


# --- assessment, severity, root cause ---------------------------------------------------


def policy(**logs_extra: Any) -> HealthPolicySpec:
    body = {"compose": {"project": "shop", "service": "web"}, **logs_extra}
    return parse(
        HealthPolicySpec, {"interval": "5s", "checks": [{"name": "web-logs", "logs": body}]}
    )


def result(lines: list[str], seconds: float = 120) -> ProbeResult:
    numbers = {"readAt": T0.timestamp() + seconds, "bytesRead": 10, "linesRead": len(lines)}
    return ProbeResult(latency_ms=3.0, numbers=numbers, lines=tuple(lines))


def test_rules_above_their_band_make_incidents_of_their_severity_rooted_in_the_rule() -> None:
    p = policy()
    check = p.checks[0]
    burst = [stamped(i, access(401, "/login?password=hunter2")) for i in range(51)]
    scan = [stamped(60, access(404, "/", "sqlmap/1.7"))]
    a = assess(check, result(burst + scan), None)
    assert a.state == "Critical"
    by_rule = {f.component: f for f in a.findings}
    assert by_rule["failed-logins"].level == "critical"
    assert by_rule["scanner-user-agent"].level == "warning"
    assert "51 in 1h > 50 (P2)" in by_rule["failed-logins"].message
    assert "hunter2" not in json.dumps(a.measurements) + a.message
    assert a.measurements["rules"]["failed-logins"]["count"] == 51
    found = classify(p, [CheckVerdict("web-logs", "logs", a.state, a.findings, a.message)])
    assert found is not None
    assert found.severity == "P2" and found.root_cause == "web-logs/failed-logins"
    scan_only = assess(check, result(scan), None)
    found = classify(
        p, [CheckVerdict("web-logs", "logs", scan_only.state, scan_only.findings, "scan")]
    )
    assert found is not None
    assert found.severity == "P3" and found.root_cause == "web-logs/scanner-user-agent"


def test_normal_traffic_is_healthy_and_a_failed_read_keeps_the_state() -> None:
    check = policy().checks[0]
    a = assess(check, result([stamped(i, access(200, "/shop")) for i in range(30)]), None)
    assert a.state == "Healthy" and not a.findings
    first = assess(check, result([stamped(1, access(401))]), None)
    down = assess(
        check,
        ProbeResult.unavailable("LogsUnavailable", "Docker Engine unreachable"),
        {"measurements": first.measurements},
    )
    assert down.state == "Unknown" and down.reason == "LogsUnavailable"
    assert down.measurements["rules"] == first.measurements["rules"]
    assert down.measurements["cursor"] == first.measurements["cursor"]


def test_cursors_come_from_status() -> None:
    p = policy()
    first = assess(p.checks[0], result([stamped(5, access(401))]), None)
    status = {"checks": [{"name": "web-logs", "measurements": first.measurements}]}
    assert logs.log_cursors(p, status) == {"web-logs": T0.timestamp() + 5}
    assert logs.log_cursors(p, {}) == {}


def test_crd_declares_the_logs_check_and_its_measurements() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    item = schema["spec"]["properties"]["checks"]["items"]
    assert {"required": ["logs"]} in item["oneOf"]
    rule = item["properties"]["logs"]["properties"]["rules"]["items"]["properties"]
    assert set(rule) == {f.alias or n for n, f in LogRule.model_fields.items()}
    measurements = schema["status"]["properties"]["checks"]["items"]["properties"]["measurements"]
    check = policy().checks[0]
    a = assess(check, result([stamped(1, access(401))]), None)
    assert set(a.measurements) <= set(measurements["properties"])


# --- redaction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (access(401, "/login?user=bob&password=hunter2"), "hunter2"),
        (access(200, "/x?token=abc123def&y=1"), "abc123def"),
        ("Cookie: sessionid=s3ss10nv4lue; csrftoken=zzz", "s3ss10nv4lue"),
        ("request headers: Authorization: Basic Ym9iOmh1bnRlcjI=", "Ym9iOmh1bnRlcjI="),
        ("calling https://bob:hunter2@api.example.com/v1", "hunter2"),
        ('{"event": "login", "password": "hunter2"}', "hunter2"),
        ("GET /x?api_key%3Dk3yk3yk3y", "k3yk3yk3y"),
        ("sessionid=s3ss10nv4lue path=/", "s3ss10nv4lue"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGciOiJIUzI1NiJ9"),
    ],
)
def test_credentials_never_survive_in_samples(line: str, secret: str) -> None:
    out = redact_credentials(line)
    assert secret not in out and "***" in out


def test_redaction_keeps_what_is_evidence() -> None:
    line = access(401, "/login?user=bob", "sqlmap/1.7")
    assert redact_credentials(line) == line


def test_status_timestamps_roundtrip() -> None:
    ns = int((T0 + timedelta(seconds=3)).timestamp()) * 1_000_000_000 + 123
    assert stamp_of(ns).endswith(".000000123Z")


def test_models_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        LogsCheck.model_validate({"compose": {"project": "p", "service": "s"}, "since": "1h"})


def test_credentials_in_log_lines_never_reach_status_conditions_or_webhooks() -> None:
    from stronghold_operator.logic.health import evaluate, webhook_body
    from stronghold_operator.models.health import Webhook

    logs_check = {
        "compose": {"project": "shop", "service": "web"},
        "rules": [{"name": "failed-logins", "above": 2}],
    }
    p = parse(
        HealthPolicySpec,
        {"failureThreshold": 1, "checks": [{"name": "web-logs", "logs": logs_check}]},
    )
    secret_lines = [
        stamped(i, access(401, "/login?password=hunter2&sessionid=c00k1eV4l")) for i in range(5)
    ] + [stamped(9, "login failed Cookie: sessionid=c00k1eV4l; Authorization: Basic aHVudGVyMg==")]
    ev = evaluate(p, "sec", {}, {"web-logs": result(secret_lines)}, None, T0 + timedelta(minutes=2))
    assert ev.severity == "P2" and ev.status["incident"]["rootCause"] == "web-logs/failed-logins"
    hook = Webhook.model_validate({"url": "https://alerts.example.com/hook"})
    bodies = [webhook_body(n, hook, "shop", "sec", ev.verdicts, T0) for n in ev.notifications] + [
        webhook_body(
            n, hook.model_copy(update={"format": "alertmanager"}), "shop", "sec", ev.verdicts, T0
        )
        for n in ev.notifications
    ]
    assert bodies
    seen = json.dumps([ev.status, [c.message for c in ev.conditions], bodies])
    for secret in ("hunter2", "c00k1eV4l", "aHVudGVyMg=="):
        assert secret not in seen
    assert "password=***" in seen
