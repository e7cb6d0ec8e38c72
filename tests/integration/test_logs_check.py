"""HealthPolicy ``logs`` checks against a real Compose service on the real Docker Engine.

The service is a Compose-labelled container (the testbed's ``stronghold/base`` image) whose
Python web server writes a real combined access log to stdout, as nginx or gunicorn would,
and, like a careless app, a line quoting the session cookie of every failed login. The test
sends real requests to it on 127.0.0.1; the real operator (its own process, under its
ServiceAccount) reads the container's log through the Docker Engine logs API every 2 s.
The story itself is in logs_kit.py; test_logs_pods.py tells it through the pods/log API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stronghold_operator.platforms import compose
from tests.integration import kit
from tests.integration.logs_kit import IMAGE, SERVER, answers, security_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


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


def test_security_events_from_a_compose_services_access_log(
    namespace: str,
    docker_client: Any,
    compose_project: tuple[str, Path],
    tmp_path: Path,
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    project, _ = compose_project
    app = tmp_path / "app"
    app.mkdir()
    port = kit.free_port()
    start_web(docker_client, project, app, port)
    kit.wait_until("the web server answering", lambda: answers(port), timeout=60)
    source = {"compose": {"project": project, "service": "web"}}
    security_scenario(namespace, port, source, run_operator)


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
