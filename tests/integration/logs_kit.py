"""The security story of HealthPolicy ``logs`` checks, shared by the Compose source
(test_logs_check.py) and the pods source (test_logs_pods.py): the web server that writes a
real combined access log, the requests, the policy and the assertions."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.integration import health_kit as hk
from tests.integration import kit

IMAGE = "stronghold/base:bookworm"  # built locally by the testbed; never pulled
PASSWORD = "hunter2"  # a test value that must never leave the log
SESSION = "s3ss10nZq9x"

SERVER = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/login"):
            sys.stderr.write("login failed, Cookie: %s\n" % self.headers.get("Cookie", ""))
            sys.stderr.flush()
            self.reply(401, b"denied")
        elif self.path == "/" or self.path.startswith("/shop"):
            self.reply(200, b"ok")
        else:
            self.reply(404, b"no")

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        agent = self.headers.get("User-Agent", "-")
        referer = self.headers.get("Referer", "-")
        sys.stdout.write('%s - - [%s] "%s" %s - "%s" "%s"\n' % (
            self.client_address[0], when, self.requestline, code, referer, agent))
        sys.stdout.flush()

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def get(port: int, path: str, agent: str = "Mozilla/5.0 (X11; Linux)", **headers: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"User-Agent": agent, **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def policy(source: dict[str, Any], ns: str, webhook: str) -> dict[str, Any]:
    """A security policy on ``source`` (``{"compose": ...}`` or ``{"pods": ...}``) that
    sends its incidents to ``webhook``."""
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": "security", "namespace": ns},
        "spec": {
            "interval": "2s",
            "failureThreshold": 1,
            "alerting": {"webhook": {"url": webhook, "timeout": "2s"}},
            "checks": [
                {
                    "name": "web-logs",
                    "logs": {
                        **source,
                        "rules": [
                            # The app's own failure line: counted, never above its band,
                            # so its (redacted) samples are kept as evidence.
                            {
                                "name": "app-login-failures",
                                "regex": "login failed",
                                "above": 1000,
                                "severity": "P4",
                            }
                        ],
                    },
                }
            ],
        },
    }


def status(ns: str) -> dict[str, Any]:
    obj = kit.kubectl_json("get", "healthpolicy", "security", "-n", ns)
    return dict(obj.get("status") or {})


def logs_check(st: dict[str, Any]) -> dict[str, Any]:
    for c in st.get("checks") or ():
        if c.get("name") == "web-logs":
            return dict(c)
    return {}


def counts(st: dict[str, Any]) -> dict[str, int]:
    rules = (logs_check(st).get("measurements") or {}).get("rules") or {}
    return {name: int(r.get("count", -1)) for name, r in rules.items()}


def wait_status(
    ns: str, ok: Callable[[dict[str, Any]], bool], what: str, timeout: float = 90
) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal last
        last = status(ns)
        return last if ok(last) else None

    try:
        return kit.wait_until(what, probe, timeout=timeout, interval=1)
    except AssertionError as exc:
        check = logs_check(last)
        raise AssertionError(
            f"{exc}; counts {counts(last)}, check {check.get('state')} {check.get('message')},"
            f" incident {last.get('incident')}"
        ) from None


def logs_rounds(op: kit.OperatorProcess) -> float:
    """Logs probes the operator has sent (its /metrics): rounds, not seconds, to wait for."""
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    pattern = r'stronghold_health_probe_requests_total\{coalesced="false",type="logs"\} (\S+)'
    m = re.search(pattern, text)
    return float(m.group(1)) if m else 0.0


def answers(port: int) -> bool:
    try:
        return get(port, "/") == 200
    except OSError:
        return False


def security_scenario(
    ns: str, port: int, source: dict[str, Any], run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    """The whole story on a web server that logs to ``source``: normal traffic fires nothing;
    30 failed logins are counted exactly; the operator is killed, 25 more arrive, a new one
    resumes at exactly 55 (P2); scanners fire P3; the evidence is bounded and redacted; the
    password and session cookie appear nowhere a reader could see, webhooks included."""
    receiver = hk.Receiver()
    try:
        _story(ns, port, source, run_operator, receiver)
    finally:
        receiver.close()


def _story(
    ns: str,
    port: int,
    source: dict[str, Any],
    run_operator: Callable[..., kit.OperatorProcess],
    receiver: hk.Receiver,
) -> None:
    # Normal traffic, before the policy exists: its first read goes back one window.
    for i in range(20):
        assert get(port, f"/shop/item/{i}?page=2") == 200
    op = run_operator(ns)
    assert "created" in kit.apply(policy(source, ns, receiver.url))
    st = wait_status(
        ns,
        lambda s: (
            logs_check(s).get("state") == "Healthy"
            and (logs_check(s).get("measurements") or {}).get("linesRead", 0) >= 21
        ),
        "normal traffic read and healthy",
    )
    assert set(counts(st).values()) == {0}, counts(st)
    assert not st.get("incident")
    assert st.get("severity") == "None"

    # 30 real failed logins carrying a password and a session cookie: counted, under 50.
    cookie = f"sessionid={SESSION}; csrftoken=abc"
    for i in range(30):
        assert get(port, f"/login?user=u{i}&password={PASSWORD}", Cookie=cookie) == 401
    st = wait_status(ns, lambda s: counts(s).get("failed-logins") == 30, "30 failed logins counted")
    assert logs_check(st)["state"] == "Healthy" and not st.get("incident")
    assert counts(st)["app-login-failures"] == 30

    # The operator dies mid-window; 25 more arrive while it is down; a new one resumes.
    op.kill(signal.SIGKILL)
    for i in range(25):
        assert get(port, f"/login?user=v{i}&password={PASSWORD}", Cookie=cookie) == 401
    op2 = run_operator(ns)
    st = wait_status(
        ns,
        lambda s: (s.get("incident") or {}).get("severity") == "P2",
        "a P2 incident for 55 failed logins in an hour",
    )
    assert counts(st)["failed-logins"] == 55, counts(st)
    assert st["incident"]["rootCause"] == "web-logs/failed-logins"
    check = logs_check(st)
    assert check["state"] == "Critical"
    finding = next(f for f in check["findings"] if f.get("component") == "failed-logins")
    assert finding["code"] == "SecurityEvent" and "55 in 1h > 50 (P2)" in finding["message"]

    # Several more rounds read the same lines again (since has second precision): still 55.
    before = logs_rounds(op2)
    kit.wait_until("three more logs rounds", lambda: logs_rounds(op2) >= before + 3, timeout=60)
    again = status(ns)
    assert counts(again)["failed-logins"] == 55
    assert counts(again)["app-login-failures"] == 55
    total = logs_check(again)["measurements"]["rules"]["failed-logins"]["total"]
    assert total == 55

    # Scanners: the scanner rule fires (P3); the incident stays the worse P2.
    for agent in ("sqlmap/1.7.2#stable (https://sqlmap.org)", "Mozilla/5.00 (Nikto/2.5.0)"):
        assert get(port, "/wp-login.php", agent) == 404
    st = wait_status(
        ns,
        lambda s: any(
            f.get("component") == "scanner-user-agent" for f in logs_check(s).get("findings") or ()
        ),
        "the scanner rule firing",
    )
    assert counts(st)["scanner-user-agent"] == 2
    assert counts(st)["failed-logins"] == 55
    assert st["incident"]["severity"] == "P2"
    scan = next(f for f in logs_check(st)["findings"] if f["component"] == "scanner-user-agent")
    assert scan["level"] == "warning" and "(P3)" in scan["message"]

    # Evidence: bounded, redacted sample lines.
    rules = logs_check(st)["measurements"]["rules"]
    fl, app_lines = rules["failed-logins"]["samples"], rules["app-login-failures"]["samples"]
    assert 0 < len(fl) <= 5 and 0 < len(app_lines) <= 5
    assert all("password=***" in s and "/login?user=v" in s for s in fl[-1:])
    assert all("Cookie: ***" in s for s in app_lines)
    assert any("sqlmap" in s for s in rules["scanner-user-agent"]["samples"])

    # Neither the password nor the session cookie anywhere a reader could see.
    body = kit.kubectl("get", "healthpolicy", "security", "-n", ns, "-o", "json")
    events = json.dumps(kit.events_for(ns, "security"))
    assert events != "[]"
    kit.wait_until("the incident's webhook", lambda: "Opened" in receiver.events("security"), 60)
    for where, text in (
        ("status", body),
        ("events", events),
        ("webhook bodies", json.dumps([r["raw"] for r in receiver.received])),
        ("first operator's log", op.logs()),
        ("second operator's log", op2.logs()),
    ):
        assert PASSWORD not in text, where
        assert SESSION not in text, where
