"""``stronghold status`` against real objects, and ``kubectl stronghold`` found by a real kubectl.

The objects are created in two namespaces of their own, each kind in the states the command
must tell apart (healthy; incident open, backup stale, scaling at max, window active), with
the status written through the status subresource as the operator would (no operator runs:
what is tested is the reading). Then the real command, and the real kubectl with the plugin
on PATH, with -n, -A, --context, --kubeconfig, the context's namespace, -o json (validated
against the committed schema) and -o yaml.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes
import pytest
import yaml

from tests.integration import kit
from tests.support import status_objects as so

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GROUP, VERSION = "ops.stronghold.io", "v1alpha1"
PLURALS = {
    "HealthPolicy": "healthpolicies",
    "BackupSchedule": "backupschedules",
    "ScalingPolicy": "scalingpolicies",
    "MaintenanceWindow": "maintenancewindows",
}
Builder = Callable[[str, datetime], tuple[dict[str, Any], dict[str, Any]]]
FINE: dict[str, Builder] = {
    "web": so.health_healthy,
    "nightly": so.backup_fresh,
    "web-scaler": so.scaling_steady,
    "weekly": so.window_scheduled,
}
TROUBLE: dict[str, Builder] = {
    "web-down": so.health_incident,
    "nightly-old": so.backup_stale,
    "web-max": so.scaling_at_max,
    "now": so.window_active,
}
# Problems first (Critical, Warning, then the active window), kinds in their order.
TROUBLE_ORDER = [
    ("web-down", "Critical", "Critical"),
    ("nightly-old", "Critical", "Stale"),
    ("web-max", "Warning", "AtMax"),
    ("now", "Active", "Active"),
]


def _create(api: kubernetes.client.ApiClient, namespace: str, builders: dict[str, Builder]) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    now = datetime.now(UTC)
    for name, build in builders.items():
        obj, status = build(name, now)
        kit.apply_in(namespace, obj)
        plural = PLURALS[obj["kind"]]
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": status}
        )


@pytest.fixture(scope="module")
def spaces(
    apply_crds: list[str], kube_api: kubernetes.client.ApiClient
) -> Iterator[tuple[str, str]]:
    """(fine, trouble): two namespaces of our own with objects in every state."""
    # An operator would rewrite the statuses we write: none may serve these namespaces (the
    # run_operator fixture does the same before starting its own).
    kit.delete_incluster_operator()
    suffix = uuid.uuid4().hex[:8]
    fine, trouble = f"t-status-ok-{suffix}", f"t-status-bad-{suffix}"
    for ns in (fine, trouble):
        kit.kubectl("create", "namespace", ns)
    try:
        _create(kube_api, fine, FINE)
        _create(kube_api, trouble, TROUBLE)
        yield fine, trouble
    finally:
        for ns in (fine, trouble):
            kit.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stronghold_operator.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def schema() -> dict[str, Any]:
    text = resources.files("stronghold_operator.logic").joinpath("status.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validated(stdout: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(stdout)
    jsonschema.Draft202012Validator(
        schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(doc)
    return doc


def rows(ns_doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, level, state) of a namespace's rows, problems first across kinds."""
    from stronghold_operator.logic.status import KIND_KEYS, LEVELS

    out = [
        (r["name"], r["level"], r["state"], i)
        for i, key in enumerate(KIND_KEYS.values())
        for r in ns_doc[key]
    ]
    out.sort(key=lambda r: (LEVELS.index(r[1]), r[3]))
    return [r[:3] for r in out]


def test_a_fine_namespace_exits_zero(spaces: tuple[str, str]) -> None:
    fine, _ = spaces
    done = run("status", "-n", fine)
    assert done.returncode == 0, done.stderr
    assert f"namespace {fine} ok" in done.stdout
    assert "all fine" in done.stdout
    for name in FINE:
        assert name in done.stdout
    assert "\x1b[" not in done.stdout  # no colour off a TTY

    doc = validated(run("status", "-n", fine, "-o", "json").stdout)
    assert doc["scope"] == {"namespace": fine}
    assert doc["summary"] == {"objects": 4, "problems": 0, "exitCode": 0}
    (ns,) = doc["namespaces"]
    assert rows(ns) == [
        ("web", "OK", "Healthy"),
        ("nightly", "OK", "OK"),
        ("web-scaler", "OK", "Steady"),
        ("weekly", "OK", "Scheduled"),
    ]


def test_every_problem_state_in_order_exits_one(spaces: tuple[str, str]) -> None:
    _, trouble = spaces
    done = run("status", "-n", trouble, "-o", "json")
    assert done.returncode == 1, done.stderr
    doc = validated(done.stdout)
    (ns,) = doc["namespaces"]
    assert (ns["level"], ns["problems"]) == ("Critical", 3)
    assert rows(ns) == TROUBLE_ORDER
    (incident_policy,) = ns["healthPolicies"]
    incident = incident_policy["incident"]
    assert (incident["severity"], incident["rootCause"]) == ("P1", "web")
    assert 400 <= incident["ageSeconds"] <= 600  # opened 7 minutes before the test wrote it
    (backup,) = ns["backupSchedules"]
    assert backup["stale"] is True and backup["problems"][0].startswith("backup stale: ")
    (scaler,) = ns["scalingPolicies"]
    assert (scaler["replicas"], scaler["maxReplicas"]) == (4, 4)
    assert scaler["lastDecision"]["reason"] == "CappedByMax"
    (window,) = ns["maintenanceWindows"]
    assert window["active"] is True and window["problem"] is False

    table = run("status", "-n", trouble)
    assert table.returncode == 1
    text = table.stdout
    assert "3 problem(s)" in text
    # The table lists problems first within each kind and says why.
    assert re.search(r"P1 web [78]m ago", text)
    assert "incident P1 open, root cause web" in text
    assert "backup stale: newest verified backup is 3d0h old" in text
    assert "at maxReplicas 4" in text
    assert "active until" in text

    as_yaml = run("status", "-n", trouble, "-o", "yaml")
    assert as_yaml.returncode == 1
    from_yaml = yaml.safe_load(as_yaml.stdout)
    assert from_yaml["namespaces"][0]["problems"] == 3
    assert rows(from_yaml["namespaces"][0]) == TROUBLE_ORDER


def test_all_namespaces_problems_first(spaces: tuple[str, str]) -> None:
    fine, trouble = spaces
    done = run("status", "-A", "-o", "json")
    assert done.returncode == 1, done.stderr  # ours has problems, whatever else is there
    doc = validated(done.stdout)
    assert doc["scope"] == {"allNamespaces": True}
    names = [n["namespace"] for n in doc["namespaces"]]
    assert names.index(trouble) < names.index(fine)
    flags = [n["problems"] > 0 for n in doc["namespaces"]]
    assert flags == sorted(flags, reverse=True)  # every namespace with problems comes first


def test_errors_exit_two(spaces: tuple[str, str], tmp_path: Path) -> None:
    done = run("status", "--context", "no-such-context")
    assert done.returncode == 2
    assert "no-such-context" in done.stderr and "Traceback" not in done.stderr
    done = run("status", "--kubeconfig", str(tmp_path / "missing"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    done = run("status", "--context")
    assert (done.returncode, done.stderr.strip()) == (2, "stronghold: --context needs a value")


@pytest.fixture
def plugin_path(tmp_path: Path) -> dict[str, str]:
    """PATH with a ``kubectl-stronghold`` that runs this checkout's CLI (as the console
    script of an installed package would)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubectl-stronghold"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m stronghold_operator.cli "$@"\n')
    script.chmod(0o755)
    # The console script kubectl 1.26+ asks for `kubectl stronghold <TAB>`.
    complete = bin_dir / "kubectl_complete-stronghold"
    code = "import sys; from stronghold_operator.cli.completion import kubectl_complete as c; "
    complete.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "{code}sys.exit(c())" "$@"\n')
    complete.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def kubectl_plugin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "stronghold", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def second_context(tmp_path: Path, namespace: str) -> tuple[Path, str]:
    """A copy of the admin kubeconfig with another context (same cluster and user) whose
    namespace is ``namespace``, made the current one."""
    source = Path(os.environ["KUBECONFIG"])
    config = yaml.safe_load(source.read_text())
    base = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    name = f"status-{uuid.uuid4().hex[:6]}"
    config["contexts"].append(
        {"name": name, "context": {**base["context"], "namespace": namespace}}
    )
    config["current-context"] = name
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path, name


def test_kubectl_finds_the_plugin_and_passes_namespace(
    spaces: tuple[str, str], plugin_path: dict[str, str]
) -> None:
    fine, trouble = spaces
    listed = subprocess.run(
        ["kubectl", "plugin", "list"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **plugin_path},
    )
    assert "kubectl-stronghold" in listed.stdout
    done = kubectl_plugin(plugin_path, "status", "-n", trouble)
    assert done.returncode == 1, done.stderr  # kubectl hands the plugin's exit code back
    assert f"namespace {trouble}" in done.stdout
    assert "incident P1 open, root cause web" in done.stdout
    done = kubectl_plugin(plugin_path, "status", "-n", fine)
    assert done.returncode == 0, done.stderr
    assert "all fine" in done.stdout
    # -n before the verb, as kubectl users type `kubectl -n NS get`.
    done = kubectl_plugin(plugin_path, "-n", fine, "status")
    assert done.returncode == 0, done.stderr
    assert f"namespace {fine} ok" in done.stdout


def test_kubectl_plugin_honours_context_and_kubeconfig(
    spaces: tuple[str, str], plugin_path: dict[str, str], tmp_path: Path
) -> None:
    fine, trouble = spaces
    config, context = second_context(tmp_path, trouble)
    # The context exists only in the copy: --kubeconfig must reach the client.
    done = kubectl_plugin(
        plugin_path, "status", "--kubeconfig", str(config), "--context", context, "-n", fine
    )
    assert done.returncode == 0, done.stderr
    assert f"namespace {fine} ok" in done.stdout
    # The flags anywhere on the line, and -n defaulting to the context's namespace.
    done = kubectl_plugin(
        plugin_path, "status", "-o", "json", f"--context={context}", f"--kubeconfig={config}"
    )
    assert done.returncode == 1, done.stderr
    assert validated(done.stdout)["scope"] == {"namespace": trouble}
    # KUBECONFIG naming the copy, its current context's namespace.
    done = kubectl_plugin({**plugin_path, "KUBECONFIG": str(config)}, "status")
    assert done.returncode == 1, done.stderr
    assert f"namespace {trouble}" in done.stdout
    # Without the copy the context is unknown: a clear error, exit 2.
    done = kubectl_plugin(plugin_path, "status", "--context", context)
    assert done.returncode == 2
    assert context in done.stderr and "Traceback" not in done.stderr


def test_watch_redraws_until_interrupted(spaces: tuple[str, str]) -> None:
    """Without a TTY: one plain screen per interval; Ctrl-C ends it with the last code."""
    _, trouble = spaces
    argv = ["status", "-n", trouble, "--watch", "--interval", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stronghold_operator.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 3 and time.monotonic() < deadline:
            if "Stronghold status at" in proc.stdout.readline():
                seen += 1
        assert seen == 3, "three screens within 30 s at a 1 s interval"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert "\x1b[" not in rest


def on_a_terminal(*args: str, until: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run the command with a pseudo-terminal as its stdout, reading while it runs (a full
    terminal buffer would block it); with ``until``, interrupt it (Ctrl-C) once that text
    came three times. (exit code, terminal output, stderr)"""
    import select

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stronghold_operator.cli", *args],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        | {"TERM": "xterm-256color", "COLUMNS": "200", "LINES": "60"},
    )
    os.close(follower)
    out = b""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if until is not None and out.count(until) >= 3:
                proc.send_signal(signal.SIGINT)
                until = None
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child's side is closed and drained
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(leader)
    return proc.returncode, out, err


def test_colour_only_on_a_terminal(spaces: tuple[str, str]) -> None:
    _, trouble = spaces
    code, out, _ = on_a_terminal("status", "-n", trouble)
    assert code == 1
    assert b"\x1b[1;31m" in out  # the problems in bold red
    assert b"web-down" in out


def test_rbac_is_the_users_own(spaces: tuple[str, str], tmp_path: Path) -> None:
    """A ServiceAccount that may list our kinds in one namespace: that one works, the other
    namespace and -A are a clear "forbidden" (exit 2), never a traceback."""
    from stronghold_testbed import cluster

    fine, trouble = spaces
    name = "status-reader"
    kit.kubectl("create", "serviceaccount", name, "-n", fine)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [GROUP], "resources": list(PLURALS.values()), "verbs": ["list"]}],
    }
    kit.apply_in(fine, role)
    kit.kubectl(
        "create", "rolebinding", name, "-n", fine, f"--role={name}",
        f"--serviceaccount={fine}:{name}",
    )  # fmt: skip
    config = str(cluster.sa_kubeconfig(fine, name, tmp_path / "sa.kubeconfig"))
    done = kit.wait_until(
        "the RoleBinding to take effect",
        lambda: (d := run("status", "-n", fine, "--kubeconfig", config)).returncode == 0 and d,
        timeout=30,
    )
    assert "all fine" in done.stdout
    for where in (["-n", trouble], ["-A"]):
        denied = run("status", *where, "--kubeconfig", config)
        assert denied.returncode == 2, denied.stdout
        assert "forbidden" in denied.stderr
        assert "Traceback" not in denied.stderr


def test_watch_on_a_terminal_redraws_in_place(spaces: tuple[str, str]) -> None:
    """On a TTY: the screen is redrawn (cursor moves up), in colour; Ctrl-C exits cleanly."""
    _, trouble = spaces
    marker = b"Stronghold status at"
    code, out, err = on_a_terminal(
        "status", "-n", trouble, "--watch", "--interval", "1", until=marker
    )
    assert out.count(marker) >= 3, out[-2000:]
    assert b"\x1b[2K" in out or b"\x1b[1A" in out  # rich's Live erases and redraws
    assert b"\x1b[1;31m" in out
    assert code == 1
    assert b"Traceback" not in err


def test_every_verb_gets_the_context_and_its_namespace(
    spaces: tuple[str, str], plugin_path: dict[str, str], tmp_path: Path
) -> None:
    """The flags are taken centrally: `backup list` (another verb) honours them too."""
    _, trouble = spaces
    config, context = second_context(tmp_path, trouble)
    done = kubectl_plugin(
        plugin_path, "backup", "list", "nightly-old", "--json", "--kubeconfig", str(config),
        "--context", context,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert listed["backups"][0]["name"].startswith("nightly-old-")
    # Without the context the namespace is the admin context's, where there is no such object.
    done = kubectl_plugin(plugin_path, "backup", "list", "nightly-old")
    assert done.returncode == 2
    assert "not found" in done.stdout


def test_kubectl_completes_the_plugin(plugin_path: dict[str, str]) -> None:
    """kubectl's own completion (`kubectl __complete`, what its bash/zsh scripts call)."""

    def complete(*words: str) -> list[str]:
        done = subprocess.run(
            ["kubectl", "__complete", "stronghold", *words],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, **plugin_path},
        )
        return done.stdout.splitlines()

    assert complete("st") == ["status", ":4"]
    assert complete("status", "-o", "") == ["table", "json", "yaml", ":4"]
    assert complete("backup", "") == ["now", "verify", "restore-test", "list", "restore", ":4"]
