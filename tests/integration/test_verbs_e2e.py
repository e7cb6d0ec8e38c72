"""The daily verbs against the real operator on the local cluster.

``stronghold scaling pause --for`` holds a ScalingPolicy whose pods burn CPU (and ``resume``
lets it scale again; a short pause ends by itself); ``stronghold window start`` opens a
window now after its snapshot pre-check, and ``window skip`` cancels exactly the next
occurrence of a frequent schedule, which then stops mattering. A ServiceAccount that may only
read gets a one-line ``forbidden`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stronghold_testbed import cluster
from tests.integration import kit
from tests.support.policies import scaling_policy
from tests.support.workloads import burning_deployment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PAUSED_UNTIL = "ops.stronghold.io/paused-until"
MAINTENANCE = "ops.stronghold.io/maintenance"
# The CLI as the package's console script runs it, from this interpreter (no install needed).
MAIN = "import sys; from stronghold_operator.cli import main; sys.exit(main())"


def stronghold(*args: str, kubeconfig: Path | None = None, timeout: float = 300) -> Any:
    """Run ``stronghold ARGS`` as a user would; the finished process (never raises)."""
    env = None if kubeconfig is None else dict(os.environ, KUBECONFIG=str(kubeconfig))
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def status(ns: str, kind: str, name: str) -> dict[str, Any]:
    return kit.get(ns, kind, name).get("status") or {}


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def annotation(ns: str, kind: str, name: str, key: str) -> str | None:
    return (kit.get(ns, kind, name)["metadata"].get("annotations") or {}).get(key)


def replicas(ns: str) -> int:
    return int(kit.get(ns, "deployment", "web")["spec"]["replicas"])


def running(ns: str) -> int:
    pods = kit.kubectl_json("get", "pods", "-n", ns, "-l", "app=web")["items"]
    return sum(
        1
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    )


def reasons(ns: str, name: str) -> list[str]:
    return [e["reason"] for e in kit.events_for(ns, name)]


def always(what: str, probe: Callable[[], bool], until: datetime) -> None:
    """``probe`` holds at every check, once a second, until ``until`` (a bounded poll)."""
    while True:
        assert probe(), f"no longer true: {what}"
        if datetime.now(UTC) >= until:
            return
        time.sleep(1)


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_scaling_pause_holds_under_load_and_resume_lets_it_scale(
    namespace: str,
    switch: Path,
    metrics_api: None,
    run_operator: Callable[..., Any],
) -> None:
    ns = namespace
    kit.apply_in(ns, burning_deployment("web", switch))
    kit.wait_until("the web pod", lambda: running(ns) == 1, timeout=90)
    run_operator(ns)
    kit.apply_in(ns, scaling_policy("web", "web"))
    kit.wait_until(
        "utilisation from metrics.k8s.io",
        lambda: (
            cond(status(ns, "scalingpolicy", "web"), "MetricsAvailable").get("status") == "True"
        ),
        timeout=120,
    )

    done = stronghold("scaling", "pause", "web", "-n", ns, "--for", "10m", "--wait")
    assert done.returncode == 0, done.stderr
    assert "Paused" in done.stdout and "Traceback" not in done.stderr
    st = status(ns, "scalingpolicy", "web")
    until = when(st["pausedUntil"])
    assert timedelta(minutes=9) < until - datetime.now(UTC) <= timedelta(minutes=10)
    assert annotation(ns, "scalingpolicy", "web", PAUSED_UNTIL) == st["pausedUntil"]
    assert (cond(st, "ScalingActive")["status"], cond(st, "ScalingActive")["reason"]) == (
        "False",
        "Paused",
    )

    # Load that would scale it: held, decision after decision.
    (switch / "burn").touch()

    def held_under_load() -> bool:
        s = status(ns, "scalingpolicy", "web")
        return (
            s.get("lastDecision", {}).get("reason") == "Paused"
            and (s.get("currentCpuUtilizationPercent") or 0) > 80
        )

    kit.wait_until("the policy paused under load", held_under_load, timeout=120)
    first = status(ns, "scalingpolicy", "web")["lastObservedTime"]
    kit.wait_until(
        "another decision under load",
        lambda: (
            held_under_load() and status(ns, "scalingpolicy", "web")["lastObservedTime"] != first
        ),
        timeout=60,
    )
    assert replicas(ns) == 1 and "ScaledUp" not in reasons(ns, "web")
    assert "paused-until" in status(ns, "scalingpolicy", "web")["lastDecision"]["message"]

    # Resume: it scales up.
    done = stronghold("scaling", "resume", "web", "-n", ns, "--wait")
    assert done.returncode == 0, done.stderr + done.stdout
    assert annotation(ns, "scalingpolicy", "web", PAUSED_UNTIL) is None
    kit.wait_until("a scale-up after resume", lambda: replicas(ns) >= 2, timeout=120)
    assert "pausedUntil" not in status(ns, "scalingpolicy", "web")

    # A short pause ends by itself: the next scale-up comes only after it.
    kit.wait_until("2 replicas", lambda: replicas(ns) == 2, timeout=60)
    done = stronghold("scaling", "pause", "web", "-n", ns, "--for", "25s", "--wait")
    assert done.returncode == 0, done.stderr
    until = when(status(ns, "scalingpolicy", "web")["pausedUntil"])
    kit.wait_until("a scale-up once the pause is over", lambda: replicas(ns) == 3, timeout=120)
    scaled = when(status(ns, "scalingpolicy", "web")["lastScaleUpTime"])
    assert scaled >= until - timedelta(seconds=1), (scaled, until)


def window(name: str, schedule: dict[str, Any], target: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "MaintenanceWindow",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "timeZone": "Europe/Berlin",
            "targets": {"scalingPolicies": {"names": [target]}},
            **spec,
        },
    }


def wait_window(
    ns: str, name: str, probe: Callable[[dict[str, Any]], bool], what: str, timeout: float = 120
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = status(ns, "maintenancewindow", name)
        if probe(st):
            return st
        raise AssertionError(json.dumps({k: st.get(k) for k in ("conditions", "currentWindow")}))

    return kit.wait_until(f"{name}: {what}", check, timeout=timeout, interval=1)


def test_window_start_opens_now_after_pre_checks_and_skip_cancels_one_window(
    namespace: str, run_operator: Callable[..., Any]
) -> None:
    ns = namespace
    kit.apply_in(ns, scaling_policy("web", "web"))
    kit.apply_in(ns, scaling_policy("other", "other"))
    run_operator(ns)

    # start: a weekly window, opened now for a minute, after its snapshot pre-check. Its
    # schedule is one whose window is not open today (so only the request opens it).
    day = (datetime.now(UTC).isoweekday() + 3) % 7  # cron weekday, 3 days from today
    weekly = window(
        "weekly",
        {"cron": f"0 2 * * {day}", "duration": "2h"},
        "web",
        preChecks={"leadTime": "30m", "snapshot": True},
        postChecks={"healthyWithin": "30s"},
    )
    kit.apply_in(ns, weekly)
    wait_window(ns, "weekly", lambda s: cond(s, "Scheduled").get("status") == "True", "Scheduled")
    assert annotation(ns, "scalingpolicy", "web", MAINTENANCE) is None
    done = stronghold("window", "start", "weekly", "-n", ns, "--for", "1m", "--wait")
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.splitlines()[-1].startswith("open: window now-")
    st = status(ns, "maintenancewindow", "weekly")
    value = kit.get(ns, "maintenancewindow", "weekly")["metadata"]["annotations"][
        "ops.stronghold.io/start-now"
    ]
    current = st["currentWindow"]
    assert current["trigger"] == value == st["handledStartNow"]
    assert current["preChecks"]["state"] == "Passed"
    assert kit.get(ns, "configmap", current["snapshotConfigMap"])["data"]["before.json"]
    assert annotation(ns, "scalingpolicy", "web", MAINTENANCE) == "weekly"
    assert st["frozenTargets"] == ["ScalingPolicy/web"]
    # Gated like a scheduled start: opened once the snapshot pre-check had passed.
    assert when(current["openedAt"]) >= when(current["preChecks"]["startedAt"])
    seen = reasons(ns, "weekly")
    for reason in ("StartNowRequested", "PreChecksStarted", "SnapshotTaken", "WindowOpened"):
        assert reason in seen, (reason, seen)
    # The schedule goes on; after the minute the window is released and recorded.
    assert when(st["nextWindow"]["start"]) - datetime.now(UTC) > timedelta(minutes=2)
    st = wait_window(
        ns, "weekly", lambda s: s.get("lastResult") is not None, "the on-demand window's end", 150
    )
    (entry,) = st["history"]
    assert (entry["trigger"], entry["result"], entry["endReason"]) == (
        value,
        "Succeeded",
        "Scheduled",
    )
    assert annotation(ns, "scalingpolicy", "web", MAINTENANCE) is None

    # skip: a window every 2 minutes (open 1 minute); the next one does not take place.
    often = window("often", {"cron": "*/2 * * * *", "duration": "1m"}, "other")
    often["spec"]["preChecks"] = {"snapshot": False}
    kit.apply_in(ns, often)
    st = wait_window(
        ns,
        "often",
        lambda s: (
            bool(s.get("nextWindow"))
            and when(s["nextWindow"]["start"]) - datetime.now(UTC) > timedelta(seconds=20)
        ),
        "a next window at least 20 s ahead",
        150,
    )
    skipped = st["nextWindow"]["start"]
    done = stronghold("window", "skip", "often", "-n", ns, "--wait")
    assert done.returncode == 0, done.stderr + done.stdout
    st = status(ns, "maintenancewindow", "often")
    assert st["skipping"]["start"] == skipped and st["handledSkip"] == skipped
    assert when(st["nextWindow"]["start"]) == when(skipped) + timedelta(minutes=2)
    assert "by request" in cond(st, "Scheduled")["message"]
    assert "SkipRequested" in reasons(ns, "often")

    # At its start it goes into history as Skipped; through its minute nothing is frozen.
    st = wait_window(
        ns,
        "often",
        lambda s: any(h["start"] == skipped for h in s.get("history", [])),
        "the skipped window in history",
        150,
    )
    entry = next(h for h in st["history"] if h["start"] == skipped)
    assert (entry["result"], entry["endReason"]) == ("Skipped", "SkipRequested")
    assert "skipping" not in st
    assert "WindowSkipped" in reasons(ns, "often")
    always(
        "ScalingPolicy other not frozen while the skipped window would be open",
        lambda: annotation(ns, "scalingpolicy", "other", MAINTENANCE) is None,
        until=when(skipped) + timedelta(seconds=55),
    )
    # The annotation no longer matters: the next occurrence opens as scheduled.
    following = when(skipped) + timedelta(minutes=2)
    wait_window(
        ns,
        "often",
        lambda s: (
            cond(s, "Active").get("status") == "True"
            and when(s["currentWindow"]["start"]) == following
        ),
        "the following window open",
        150,
    )
    assert annotation(ns, "scalingpolicy", "other", MAINTENANCE) == "often"
    assert annotation(ns, "maintenancewindow", "often", "ops.stronghold.io/skip") == skipped


def test_a_user_without_patch_rights_gets_a_clear_forbidden(
    namespace: str, apply_crds: list[str], tmp_path: Path
) -> None:
    ns = namespace
    kit.apply_in(ns, scaling_policy("web", "web"))
    kit.apply_in(ns, window("weekly", {"cron": "0 2 * * 0", "duration": "2h"}, "web"))
    kit.kubectl("create", "serviceaccount", "viewer", "-n", ns)
    kit.apply_in(
        ns,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "viewer"},
            "rules": [
                {
                    "apiGroups": ["ops.stronghold.io"],
                    "resources": ["scalingpolicies", "maintenancewindows"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
    )
    kit.kubectl(
        "create", "rolebinding", "viewer", "-n", ns, "--role=viewer",
        f"--serviceaccount={ns}:viewer",
    )  # fmt: skip
    config = cluster.sa_kubeconfig(ns, "viewer", tmp_path / "viewer.kubeconfig", hours=1)

    user = f'"system:serviceaccount:{ns}:viewer"'
    for args, plural in (
        (("scaling", "pause", "web", "-n", ns, "--for", "1h"), "scalingpolicies"),
        (("scaling", "resume", "web", "-n", ns), "scalingpolicies"),
        (("window", "start", "weekly", "-n", ns, "--wait"), "maintenancewindows"),
        (
            ("window", "skip", "weekly", "-n", ns, "--at", "2030-01-06T01:00:00Z"),
            "maintenancewindows",
        ),
    ):
        done = stronghold(*args, kubeconfig=config, timeout=60)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f'forbidden: User {user} cannot patch resource "{plural}"')
        assert f'in the namespace "{ns}"' in lines[0]
        assert "Traceback" not in done.stderr + done.stdout
    assert annotation(ns, "scalingpolicy", "web", PAUSED_UNTIL) is None
    meta = kit.get(ns, "maintenancewindow", "weekly")["metadata"]
    assert not any(k.startswith("ops.stronghold.io/") for k in meta.get("annotations") or {})

    # Not found: one line, exit 2, whoever asks.
    done = stronghold("scaling", "pause", "nope", "-n", ns, "--for", "1h", kubeconfig=config)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: ScalingPolicy {ns}/nope not found"
    done = stronghold("window", "skip", "nope", "-n", ns)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: MaintenanceWindow {ns}/nope not found"
    assert "Traceback" not in done.stderr
