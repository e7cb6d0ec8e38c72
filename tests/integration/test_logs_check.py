"""HealthPolicy ``logs`` checks against a real Compose service on the real Docker Engine.

The service is a Compose-labelled container (the testbed's ``stronghold/base`` image) whose
Python web server writes a real combined access log to stdout, as nginx or gunicorn would,
and, like a careless app, a line quoting the session cookie of every failed login. The test
sends real requests to it on 127.0.0.1; the real operator (its own process, under its
ServiceAccount) reads the container's log through the Docker Engine logs API every 2 s.

The pods source (pods/log) has no test here: the local cluster cannot serve pod logs yet.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stronghold_operator.platforms import compose
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

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


def start_web(client: Any, project: str, app: Path, port: int) -> Any:
    """What `docker compose up` would create for service ``web``: the server on the host
    network (the testbed's Docker has no bridge), listening on 127.0.0.1 only."""
    (app / "server.py").write_text(SERVER)
    return client.containers.run(
        IMAGE,
        ["python3", "-u", "/app/server.py", str(port)],
        name=f"{project}-web-1",
        detach=True,
        network_mode="host",
        volumes={str(app): {"bind": "/app", "mode": "ro"}},
        labels={
            compose.PROJECT: project,
            compose.SERVICE: "web",
            compose.NUMBER: "1",
            compose.ONEOFF: "False",
        },
        stop_signal="SIGKILL",
    )


def get(port: int, path: str, agent: str = "Mozilla/5.0 (X11; Linux)", **headers: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"User-Agent": agent, **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def policy(project: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": "security", "namespace": ns},
        "spec": {
            "interval": "2s",
            "failureThreshold": 1,
            "checks": [
                {
                    "name": "web-logs",
                    "logs": {
                        "compose": {"project": project, "service": "web"},
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


def test_security_events_from_a_compose_services_access_log(
    namespace: str,
    docker_client: Any,
    compose_project: tuple[str, Path],
    tmp_path: Path,
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    ns = namespace
    project, _ = compose_project
    app = tmp_path / "app"
    app.mkdir()
    port = kit.free_port()
    start_web(docker_client, project, app, port)
    kit.wait_until("the web server answering", lambda: _answers(port), timeout=60)

    # Normal traffic, before the policy exists: its first read goes back one window.
    for i in range(20):
        assert get(port, f"/shop/item/{i}?page=2") == 200
    op = run_operator(ns)
    assert "created" in kit.apply(policy(project, ns))
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
    for where, text in (
        ("status", body),
        ("events", events),
        ("first operator's log", op.logs()),
        ("second operator's log", op2.logs()),
    ):
        assert PASSWORD not in text, where
        assert SESSION not in text, where


def _answers(port: int) -> bool:
    try:
        return get(port, "/") == 200
    except OSError:
        return False


LINES = 300
EMIT = (
    'i=0; while [ $i -lt {n} ]; do echo "127.0.0.1 - - [06/Dec/2026:01:00:00 +0000]'
    ' \\"GET /login?n=$i HTTP/1.1\\" 401 - \\"-\\" \\"curl/8\\""; i=$((i+1)); done; sleep 3600'
)


async def test_a_log_larger_than_the_byte_cap_is_read_in_bounded_rounds_counted_once(
    docker_client: Any, compose_project: tuple[str, Path]
) -> None:
    """The operator's probe and rounds' logic, driven here round by round: a container that
    logged 300 failed logins (~36 KB) read with a 4 KiB cap catches up in bounded rounds,
    drops only the line cut at each cap (counted in /metrics) and counts each line once."""
    from stronghold_operator.logic.health import assess, log_cursors
    from stronghold_operator.models.base import parse
    from stronghold_operator.models.health import HealthPolicySpec
    from stronghold_operator.platforms.logs import read_compose_logs
    from stronghold_operator.probes.logs import DROPPED, LogsProbe
    from stronghold_operator.probes.runner import Prober
    from tests.support.workloads import BUSYBOX

    project, _ = compose_project
    docker_client.containers.run(
        BUSYBOX,
        ["sh", "-c", EMIT.format(n=LINES)],
        name=f"{project}-nginx-1",
        detach=True,
        network_mode="none",
        labels={
            compose.PROJECT: project,
            compose.SERVICE: "nginx",
            compose.NUMBER: "1",
            compose.ONEOFF: "False",
        },
        stop_signal="SIGKILL",
    )
    container = docker_client.containers.get(f"{project}-nginx-1")
    kit.wait_until(
        f"{LINES} lines logged",
        lambda: container.logs().count(b"\n") >= LINES,
        timeout=60,
    )
    spec = parse(
        HealthPolicySpec,
        {
            "interval": "2s",
            "checks": [
                {
                    "name": "nginx-logs",
                    "logs": {"compose": {"project": project, "service": "nginx"}, "maxBytes": 4096},
                }
            ],
        },
    )
    check = spec.checks[0]

    async def reader(c: Any, ns: str, since_s: float, max_bytes: int) -> Any:
        return await read_compose_logs(c.compose, since_s, max_bytes)

    prober = Prober(logs=LogsProbe(reader))
    dropped_before = DROPPED.labels("compose")._value.get()
    entry: dict[str, Any] = {}
    rounds, dropped, bytes_read = 0, 0, []
    for rounds in range(1, 40):  # noqa: B007 - the number of rounds it took is asserted
        status = {"checks": [entry]} if entry else {}
        results = await prober.run(spec, {}, "default", None, log_cursors(spec, status))
        result = results["nginx-logs"]
        assert result.failure is None, result.message
        a = assess(check, result, entry or None)
        entry = {"name": "nginx-logs", "measurements": a.measurements}
        bytes_read.append(a.measurements["bytesRead"])
        dropped += a.measurements["linesDropped"]
        if a.measurements["rules"]["failed-logins"]["total"] == LINES:
            break
    m = entry["measurements"]
    assert m["rules"]["failed-logins"]["count"] == LINES
    assert max(bytes_read) <= 4096
    assert rounds >= 36 * 1024 // 4096  # it really was read in pieces
    assert dropped >= rounds - 1  # the line cut at each cap
    assert DROPPED.labels("compose")._value.get() - dropped_before == dropped
    assert a.state == "Critical" and a.findings[0].component == "failed-logins"
    # Read again from the cursor: nothing new, nothing counted twice.
    results = await prober.run(spec, {}, "default", None, log_cursors(spec, {"checks": [entry]}))
    again = assess(check, results["nginx-logs"], entry)
    assert again.measurements["rules"]["failed-logins"]["total"] == LINES


def test_stronghold_check_reads_the_last_hour_of_a_compose_service(
    docker_client: Any, compose_project: tuple[str, Path], tmp_path: Path
) -> None:
    """The guide's `logs --since=1h | grep` as one command: a scanner line in a real
    container's log is a Warning (exit 1), its token redacted in the evidence."""
    import subprocess

    from tests.support.workloads import BUSYBOX

    project, _ = compose_project
    line = (
        '10.0.0.1 - - [06/Dec/2026:01:00:00 +0000] "GET /?token=tok3nZq9 HTTP/1.1" 404 -'
        ' "-" "sqlmap/1.7"'
    )
    docker_client.containers.run(
        BUSYBOX,
        ["sh", "-c", f"echo '{line}'; sleep 3600"],
        name=f"{project}-web-1",
        detach=True,
        network_mode="none",
        labels={
            compose.PROJECT: project,
            compose.SERVICE: "web",
            compose.NUMBER: "1",
            compose.ONEOFF: "False",
        },
        stop_signal="SIGKILL",
    )
    container = docker_client.containers.get(f"{project}-web-1")
    kit.wait_until("the line logged", lambda: b"sqlmap" in container.logs(), timeout=60)
    source = {"compose": {"project": project, "service": "web"}}
    manifest = tmp_path / "policy.json"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "ops.stronghold.io/v1alpha1",
                "kind": "HealthPolicy",
                "metadata": {"name": "scan"},
                "spec": {"checks": [{"name": "web-logs", "logs": source}]},
            }
        )
    )
    out = subprocess.run(
        [str(kit.VENV_BIN / "stronghold"), "check", "--json", "-f", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "tok3nZq9" not in out.stdout + out.stderr
    check = json.loads(out.stdout)[0]["checks"][0]
    assert check["state"] == "Warning" and check["reason"] == "SecurityEvent"
    rules = check["measurements"]["rules"]
    assert rules["scanner-user-agent"]["count"] == 1
    assert rules["scanner-user-agent"]["samples"] == [line.replace("tok3nZq9", "***")]
