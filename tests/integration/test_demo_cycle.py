"""``stronghold-testbed demo up`` -> down -> up, as a user runs it: the demo ends settled (every
example object has its first real result), the printed "try this next" commands work as
printed, and ``down`` leaves no namespace Terminating.

Serial and heavy (two image builds, a real backup, ~1 min for an incident): the demo deploys
the in-cluster operator with --all-namespaces, which would act on other tests' objects, and
``down`` removes the operator's ServiceAccount and RBAC (manifests/overlays/local), which the
session's ``operator_kubeconfig`` is bound to; the teardown puts both back and rewrites that
kubeconfig with a fresh token, so later serial tests run as before.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stronghold_testbed import demo, demo_state
from stronghold_testbed.kubectl import run as kubectl_run
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(2400)]

ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def _run(command: str, timeout: float) -> str:
    """A command as a user types it (a shell), no terminal: plain progress lines."""
    proc = subprocess.run(
        ["bash", "-c", command],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _longest_gap(out: str) -> int:
    """Seconds of the longest silence between progress lines (plain ``HH:MM:SS`` lines)."""
    stamps = [
        int(h) * 3600 + int(m) * 60 + int(s)
        for h, m, s in re.findall(r"^(\d\d):(\d\d):(\d\d) ", out, flags=re.MULTILINE)
    ]
    # Modulo a day: a run may pass midnight.
    return max(((b - a) % 86400 for a, b in itertools.pairwise(stamps)), default=0)


def _health() -> dict[str, Any]:
    return dict(kit.kubectl_json("get", "healthpolicy", "platform", "-n", demo.DEMO_NS))


def _terminating() -> list[str]:
    return [
        n["metadata"]["name"]
        for n in kit.kubectl_json("get", "namespaces")["items"]
        if n["status"].get("phase") == "Terminating"
    ]


def _assert_settled(out: str) -> None:
    items = kit.kubectl_json("get", demo.KINDS, "-n", demo.DEMO_NS)["items"]
    assert demo_state.pending(items) is None
    assert "Try this next:" in out
    # The one-screen status, as printed: every example object, nothing wrong (exit 0).
    assert f"This screen again: {demo.STATUS_COMMAND}\n" in out
    status = _run(demo.STATUS_COMMAND, timeout=60)
    assert "platform" in status and "nightly" in status, status
    for command, _ in demo.TRY_NEXT:
        assert f"  {command}\n" in out


@pytest.fixture
def restore_shared(operator_kubeconfig: Path) -> Iterator[None]:
    yield
    _run("stronghold-testbed demo down", timeout=600)
    kit.operator_kubeconfig(operator_kubeconfig)  # the SA was recreated: a new token


def test_demo_up_down_up_settles_and_leaves_nothing_terminating(
    apply_crds: list[str], restore_shared: None, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    out = _run("stronghold-testbed demo up", timeout=1200)
    took = time.monotonic() - started
    _assert_settled(out)
    gap = _longest_gap(out)
    with capsys.disabled():  # the figures the first-hour issue asks for, in CI's log
        print(f"\ndemo up: {took:.0f} s, longest silence between progress lines {gap} s")
    assert gap <= 10, out

    # The "try this next" commands, exactly as printed.
    (break_cache, heal_cache, backup_now, window_start) = (c for c, _ in demo.TRY_NEXT)
    _run(break_cache, timeout=60)
    incident = kit.wait_until(
        "an incident with root cause cache",
        lambda: (_health()["status"].get("incident") or {}).get("rootCause"),
        timeout=180,
        interval=3,
    )
    assert "cache" in json.dumps(incident)
    _run(heal_cache, timeout=60)
    kit.wait_until(
        "the HealthPolicy Healthy again",
        lambda: demo_state.rows([_health()])[0].state == "Healthy",
        timeout=240,
        interval=3,
    )
    _run(backup_now, timeout=900)
    _run(window_start, timeout=900)
    window = kit.kubectl_json("get", "maintenancewindow", "weekly", "-n", demo.DEMO_NS)
    assert window["status"]["currentWindow"]["trigger"], window["status"]

    _run("stronghold-testbed demo down", timeout=600)
    assert _terminating() == []
    code, _, _ = kubectl_run("get", "namespace", demo.DEMO_NS)
    assert code != 0

    out = _run("stronghold-testbed demo up", timeout=1200)
    _assert_settled(out)
    assert _terminating() == []
