"""MaintenanceWindow with the real operator on the local cluster.

A window a minute ahead takes its snapshot, freezes a ScalingPolicy whose pods burn CPU and
quiets a HealthPolicy whose web service (a real demo web app behind a TCP forwarder) is
stopped during the window: the incident is recorded as expected and no webhook is sent. An
operator killed mid-window changes nothing. At the end everything is released and the
post-checks (health, an HTTP page, the snapshot comparison) pass. A backup pre-check runs a
real backup Job against real PostgreSQL and waits until it is verified. A failing pre-check
skips a window; overlapping windows share a target; deleting a window releases what it held;
precheck-now rehearses the next window; bad input is refused or reported.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration import health_kit as hk
from tests.integration import kit
from tests.support import policies
from tests.support.workloads import burning_deployment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MAINTENANCE = "ops.stronghold.io/maintenance"


# -- fixtures and builders ---------------------------------------------------------------------


@pytest.fixture
def web() -> Iterator[tuple[str, hk.TcpProxy]]:
    """The demo web app, and a forwarder in front of it we can stop (the service going down)."""
    with hk.webapp() as url:
        proxy = hk.TcpProxy(int(url.rsplit(":", 1)[1]))
        proxy.start()
        try:
            yield url, proxy
        finally:
            proxy.stop()


@pytest.fixture
def receiver() -> Iterator[hk.Receiver]:
    r = hk.Receiver()
    yield r
    r.close()


def scaling_policy(name: str, target: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    # Never scales down within a test: only the window's freeze changes what it may do.
    return policies.scaling_policy(
        name, target, labels=labels or {"app": "stack"}, scaleDown={"sustainedFor": "10m"}
    )


def health_policy(name: str, url: str, hook: str) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": name, "labels": {"app": "stack"}},
        "spec": {
            "interval": "2s",
            "timeout": "1s",
            "failureThreshold": 1,
            "successThreshold": 1,
            "checks": [{"name": "web", "http": {"url": url}}],
            "alerting": {"webhook": {"url": hook, "timeout": "2s"}},
        },
    }


def window(name: str, start: datetime, duration: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "MaintenanceWindow",
        "metadata": {"name": name},
        "spec": {
            "schedule": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": duration},
            "timeZone": "Europe/Berlin",
        },
    }
    body["spec"].update(spec)
    return body


def annotation(ns: str, kind: str, name: str) -> str | None:
    return (kit.get(ns, kind, name)["metadata"].get("annotations") or {}).get(MAINTENANCE)


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return kit.condition(obj, type_) or {}


def wait_window(
    ns: str, name: str, probe: Callable[[dict[str, Any]], bool], what: str, timeout: float = 120
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kit.get(ns, "maintenancewindow", name)
        if probe(obj):
            return obj
        # Raised, not returned: wait_until reports the last state if it times out.
        st = obj.get("status", {})
        conds = {c["type"]: f"{c['status']}/{c.get('reason')}" for c in st.get("conditions", [])}
        raise AssertionError(f"conditions={conds} currentWindow={st.get('currentWindow')}")

    return kit.wait_until(f"{name}: {what}", check, timeout=timeout, interval=1)


def active(op: kit.OperatorProcess, ns: str) -> bool:
    """Whether the operator has run a pass of window ``mw`` and found it active (/metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return f'stronghold_maintenance_active{{namespace="{ns}",window="mw"}} 1.0' in text


def reasons(ns: str, name: str) -> list[str]:
    return [e["reason"] for e in kit.events_for(ns, name)]


def count(ns: str, name: str, reason: str) -> int:
    return sum(int(e.get("count") or 1) for e in kit.events_for(ns, name) if e["reason"] == reason)


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database with a small seeded table, dropped afterwards."""
    schema = """
        CREATE TABLE accounts (id serial PRIMARY KEY, owner text);
        INSERT INTO accounts (owner) SELECT 'o' || g FROM generate_series(1, 50) g;
    """
    with hk.scratch_database("mw", schema) as name:
        yield name


@pytest.fixture
def backup_volume(namespace: str) -> Iterator[tuple[str, Path]]:
    """A hostPath PersistentVolume bound to a claim in the namespace (no provisioner needed)."""
    path = Path("/tmp/stronghold-mw-backups") / namespace
    with kit.hostpath_volume(namespace, path) as claim:
        yield claim, path


def backup_schedule(name: str, database: str, claim: str) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 0 1 1 *",  # yearly: only the window's on-demand run happens
            "timeZone": "Europe/Berlin",
            "database": {
                "host": "127.0.0.1",
                "port": 5432,
                "name": database,
                "user": "postgres",
                "sslmode": "disable",
            },
            "storage": {"persistentVolumeClaim": claim, "path": "db"},
            "jobTemplate": {"hostNetwork": True, "imagePullPolicy": "Never"},
        },
    }


# -- the tests ---------------------------------------------------------------------------------


def test_backup_pre_check_waits_for_a_verified_backup(
    namespace: str,
    database: str,
    backup_volume: tuple[str, Path],
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    ns = namespace
    claim, path = backup_volume
    kit.apply_in(ns, backup_schedule("db", database, claim))
    run_operator(ns)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=75)
    kit.apply_in(
        ns,
        window(
            "mw",
            start,
            "1m",
            targets={"backupSchedules": {"names": ["db"]}},
            preChecks={"leadTime": "70s", "backup": {"backupSchedule": "db", "timeout": "3m"}},
            postChecks={"healthyWithin": "30s"},
        ),
    )
    request = "mw-" + start.strftime("%Y%m%d%H%M")
    obj = wait_window(
        ns,
        "mw",
        lambda o: cond(o, "PreChecksPassed").get("status") in ("True", "False"),
        "pre-checks",
        timeout=200,
    )
    assert cond(obj, "PreChecksPassed")["status"] == "True", cond(obj, "PreChecksPassed")
    assert datetime.now(UTC) < start + timedelta(seconds=5)
    used = obj["status"]["currentWindow"]["preChecks"]["backup"]
    bs = kit.get(ns, "backupschedule", "db")
    assert bs["metadata"]["annotations"]["ops.stronghold.io/backup-now"] == request
    (entry,) = [b for b in bs["status"]["backups"] if b["name"] == used]
    assert entry["verified"] is True and entry["trigger"] == request
    assert (path / "db" / entry["file"]).is_file() or any(path.rglob(entry["file"]))
    assert reasons(ns, "mw").count("BackupRequested") == 1

    # During the window the BackupSchedule carries the annotation (runs are deferred).
    wait_window(ns, "mw", lambda o: cond(o, "Active").get("status") == "True", "Active", 90)
    assert annotation(ns, "backupschedule", "db") == "mw"
    obj = wait_window(
        ns, "mw", lambda o: o["status"].get("lastResult") is not None, "finished", 150
    )
    assert obj["status"]["lastResult"] == "Succeeded", obj["status"]
    assert obj["status"]["history"][0]["backup"] == used
    assert annotation(ns, "backupschedule", "db") is None
    # Exactly one on-demand backup for the window.
    backups = kit.get(ns, "backupschedule", "db")["status"]["backups"]
    assert [b["trigger"] for b in backups].count(request) == 1


@pytest.mark.timeout(900)
def test_window_snapshots_freezes_quiets_survives_a_restart_and_releases(
    namespace: str,
    switch: Path,
    metrics_api: None,
    web: tuple[str, hk.TcpProxy],
    receiver: hk.Receiver,
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    ns = namespace
    url, proxy = web
    kit.apply_in(ns, burning_deployment("web", switch))
    kit.apply_in(ns, scaling_policy("web", "web"))
    kit.apply_in(ns, health_policy("stack", f"http://127.0.0.1:{proxy.port}/health/", receiver.url))
    op = run_operator(ns)
    kit.wait_until(
        "the HealthPolicy to be healthy",
        lambda: cond(kit.get(ns, "healthpolicy", "stack"), "Healthy").get("status") == "True",
        timeout=90,
    )

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=50)
    kit.apply_in(
        ns,
        window(
            "mw",
            start,
            "240s",
            targets={
                "healthPolicies": {"selector": {"matchLabels": {"app": "stack"}}},
                "scalingPolicies": {"names": ["web"]},
            },
            preChecks={"leadTime": "30s", "snapshot": True},
            postChecks={
                "healthyWithin": "60s",
                "http": [{"name": "health", "url": f"{url}/health/", "latencyBudget": "2s"}],
            },
        ),
    )
    # Scheduled, with the next window in UTC and in Berlin time.
    obj = wait_window(ns, "mw", lambda o: cond(o, "Scheduled").get("status") == "True", "Scheduled")
    assert obj["status"]["nextWindow"]["start"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert obj["status"]["nextWindow"]["startLocal"].endswith("+01:00")
    assert cond(obj, "Ready")["status"] == "True"
    assert annotation(ns, "scalingpolicy", "web") is None

    # Pre-checks at the lead time: the snapshot ConfigMap, owned by the window.
    obj = wait_window(
        ns, "mw", lambda o: cond(o, "PreChecksPassed").get("status") == "True", "pre-checks"
    )
    assert datetime.now(UTC) < start
    cm_name = obj["status"]["currentWindow"]["snapshotConfigMap"]
    cm = kit.get(ns, "configmap", cm_name)
    owner = cm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("MaintenanceWindow", "mw")
    before = json.loads(cm["data"]["before.json"])
    assert before["workloads"]["Deployment/web"]["replicas"] == 1
    assert before["workloads"]["Deployment/web"]["images"] == {"web": "stronghold/busybox:1"}
    assert before["health"] == {"stack": "None"}
    assert annotation(ns, "scalingpolicy", "web") is None  # not frozen before the start

    # Open: both covered policies carry the window's name.
    obj = wait_window(ns, "mw", lambda o: cond(o, "Active").get("status") == "True", "Active")
    assert datetime.now(UTC) >= start - timedelta(seconds=1)
    assert annotation(ns, "scalingpolicy", "web") == "mw"
    assert annotation(ns, "healthpolicy", "stack") == "mw"
    assert sorted(obj["status"]["frozenTargets"]) == ["HealthPolicy/stack", "ScalingPolicy/web"]
    # Webhooks before the window are not its business: with failureThreshold 1, one slow
    # first answer of the web app on a busy machine is a real incident, opened and resolved.
    hooks_before = receiver.events("stack")

    # Load that would scale it, and the web service going down: frozen and quiet.
    (switch / "burn").touch()
    proxy.stop()

    def frozen_under_load() -> bool:
        st = kit.get(ns, "scalingpolicy", "web").get("status", {})
        return bool(
            st.get("lastDecision", {}).get("reason") == "MaintenanceWindow"
            and (st.get("currentCpuUtilizationPercent") or 0) > 80  # it would scale up
        )

    kit.wait_until("the ScalingPolicy frozen under load", frozen_under_load, timeout=90)
    hp = kit.wait_until(
        "the incident recorded as expected",
        lambda: (
            o
            if (o := kit.get(ns, "healthpolicy", "stack"))
            and cond(o, "IncidentOpen").get("reason") == "MaintenanceInProgress"
            else None
        ),
        timeout=60,
    )
    assert hp["status"]["incident"]["expected"] is True

    # The operator dies mid-window (SIGKILL) and comes back: nothing changes.
    opened_before = count(ns, "mw", "WindowOpened")
    op.kill()
    assert annotation(ns, "scalingpolicy", "web") == "mw"
    op = run_operator(ns)
    kit.wait_until("the restarted operator's first pass of the window", lambda: active(op, ns), 30)
    time.sleep(12)  # a few passes of the window (every 5 s while a window is handled)
    obj = kit.get(ns, "maintenancewindow", "mw")
    assert cond(obj, "Active")["status"] == "True"
    assert annotation(ns, "scalingpolicy", "web") == "mw"
    assert count(ns, "mw", "WindowOpened") == opened_before == 1
    assert count(ns, "mw", "PreChecksStarted") == 1
    assert count(ns, "mw", "SnapshotTaken") == 1
    assert obj["status"]["currentWindow"]["preChecks"]["attempt"] == 1

    # Load stays frozen; nothing scaled; no webhook while the window was open.
    assert kit.get(ns, "deployment", "web")["spec"]["replicas"] == 1
    assert receiver.events("stack") == hooks_before

    # The service comes back and the load stops before the end.
    proxy.start()
    (switch / "burn").unlink()

    # The end: released, post-checks pass, history recorded.
    obj = wait_window(
        ns,
        "mw",
        lambda o: o.get("status", {}).get("lastResult") is not None,
        "the window to finish",
        # What is left of the 240 s window, plus healthyWithin (60 s), plus a margin: the
        # steps above take a variable share of the window on a loaded machine.
        timeout=(start + timedelta(seconds=240) - datetime.now(UTC)).total_seconds() + 150,
    )
    st = obj["status"]
    assert st["lastResult"] == "Succeeded", st
    assert cond(obj, "PostChecksPassed")["status"] == "True"
    assert cond(obj, "Active")["status"] == "False"
    assert annotation(ns, "scalingpolicy", "web") is None
    assert annotation(ns, "healthpolicy", "stack") is None
    assert st["frozenTargets"] == []
    checks = {(c["type"], c["name"]): c for c in st["checks"]}
    assert set(checks) == {
        ("Health", "HealthPolicies"),
        ("Http", "health"),
        ("Compare", "Snapshot"),
    }
    assert all(c["passed"] for c in checks.values()), checks
    assert checks["Http", "health"]["latencyMs"] < 2000
    assert "after.json" in kit.get(ns, "configmap", cm_name)["data"]
    (entry,) = st["history"]
    assert entry["result"] == "Succeeded" and entry["endReason"] == "Scheduled"
    assert entry["preChecks"] == "Passed" and entry["postChecks"] == "Passed"
    assert "currentWindow" not in st
    assert cond(obj, "Scheduled")["reason"] == "NoUpcomingWindow"  # a one-off window
    seen = reasons(ns, "mw")
    for reason in ("WindowScheduled", "PreChecksPassed", "WindowOpened", "Frozen",
                   "WindowEnded", "Released", "PostChecksPassed", "WindowSucceeded"):  # fmt: skip
        assert reason in seen, (reason, seen)
    assert count(ns, "mw", "PostChecksStarted") == 1


def test_failed_pre_check_skips_overlaps_share_and_delete_releases(
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    ns = namespace
    kit.apply_in(ns, scaling_policy("web", "web"))
    kit.apply_in(ns, scaling_policy("other", "other", labels={"app": "other"}))
    run_operator(ns)
    now = datetime.now(UTC).replace(microsecond=0)

    # A backup pre-check on a BackupSchedule that does not exist: the window is skipped.
    kit.apply_in(
        ns,
        window(
            "skipped",
            now + timedelta(seconds=25),
            "1m",
            targets={"scalingPolicies": {"names": ["web"]}},
            preChecks={"leadTime": "20s", "backup": {"backupSchedule": "absent"}},
        ),
    )
    obj = wait_window(
        ns, "skipped", lambda o: cond(o, "PreChecksPassed").get("status") == "False", "failed"
    )
    assert "BackupSchedule absent not found" in cond(obj, "PreChecksPassed")["message"]
    obj = wait_window(
        ns, "skipped", lambda o: cond(o, "Active").get("reason") == "Skipped", "skipped", 60
    )
    assert annotation(ns, "scalingpolicy", "web") is None
    assert "WindowSkipped" in reasons(ns, "skipped")
    obj = wait_window(
        ns, "skipped", lambda o: o["status"].get("lastResult") == "Skipped", "finished", 90
    )
    assert obj["status"]["history"][0]["postChecks"] == "NotRun"
    assert annotation(ns, "scalingpolicy", "web") is None

    # Two overlapping windows (no pre-checks: they open at once) share a target.
    long_open = {"preChecks": {"snapshot": False}}
    kit.apply_in(
        ns, window("a", now, "30m", targets={"scalingPolicies": {"names": ["web"]}}, **long_open)
    )
    kit.wait_until("a holds web", lambda: annotation(ns, "scalingpolicy", "web") == "a", 60)
    kit.apply_in(
        ns,
        window(
            "b",
            now,
            "30m",
            targets={"scalingPolicies": {"selector": {"matchLabels": {"app": "stack"}}}},
            **long_open,
        ),
    )
    kit.wait_until("a and b hold web", lambda: annotation(ns, "scalingpolicy", "web") == "a,b", 60)
    assert annotation(ns, "scalingpolicy", "other") is None

    # Deleting a (finalizer) releases only its own hold.
    kit.kubectl("delete", "maintenancewindow", "a", "-n", ns, "--timeout=60s")
    assert annotation(ns, "scalingpolicy", "web") == "b"

    # A target that leaves b's selector is released; one that enters it is frozen.
    kit.kubectl("label", "scalingpolicy", "web", "-n", ns, "app=gone", "--overwrite")
    kit.kubectl("label", "scalingpolicy", "other", "-n", ns, "app=stack", "--overwrite")
    kit.wait_until("web released", lambda: annotation(ns, "scalingpolicy", "web") is None, 60)
    kit.wait_until("other frozen", lambda: annotation(ns, "scalingpolicy", "other") == "b", 60)

    # end-now ends b early; post-checks run; nothing is left behind.
    kit.kubectl("annotate", "maintenancewindow", "b", "-n", ns, "ops.stronghold.io/end-now=1")
    obj = wait_window(ns, "b", lambda o: o["status"].get("lastResult") is not None, "ended", 90)
    assert obj["status"]["history"][0]["endReason"] == "EndNow"
    assert annotation(ns, "scalingpolicy", "other") is None
    assert "EndNowRequested" in reasons(ns, "b")

    # Deleting a window that holds nothing completes too.
    kit.kubectl("delete", "maintenancewindow", "b", "skipped", "-n", ns, "--timeout=60s")


def test_bad_input_is_refused_or_reported(
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    ns = namespace
    # The apiserver refuses what its schema can check.
    bad = window("bad", datetime.now(UTC), "0h")
    bad["spec"]["schedule"] = {"cron": "0 2 * * 0"}  # no duration
    out = kit.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(bad), check=False)
    assert "duration" in out and "created" not in out
    run_operator(ns)
    # The operator reports what only it can check, naming the field.
    cases = {
        "zone": ({"cron": "0 2 * * 0", "duration": "2h"}, "Mars/Olympus", "timeZone"),
        "never": (
            {"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "duration": "1h"},
            "Europe/Berlin",
            "never fires",
        ),
        "zero": ({"cron": "0 2 * * 0", "duration": "0s"}, "Europe/Berlin", "duration"),
        "reversed": (
            {"start": "2026-12-25T02:00:00", "end": "2026-12-24T22:00:00"},
            "Europe/Berlin",
            "end must be after start",
        ),
    }
    for name, (schedule, zone, _) in cases.items():
        body = window(name, datetime.now(UTC), "1h")
        body["spec"]["schedule"] = schedule
        body["spec"]["timeZone"] = zone
        kit.apply_in(ns, body)
    for name, (_, _, words) in cases.items():
        obj = wait_window(
            ns, name, lambda o: cond(o, "Ready").get("reason") == "InvalidSpec", "InvalidSpec", 60
        )
        assert cond(obj, "Ready")["status"] == "False"
        assert words in cond(obj, "Ready")["message"], cond(obj, "Ready")


def test_precheck_now_rehearses_the_next_window(
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    ns = namespace
    kit.apply_in(ns, scaling_policy("web", "web"))
    run_operator(ns)
    body = window(
        "weekly", datetime.now(UTC), "1h", targets={"scalingPolicies": {"names": ["web"]}}
    )
    # Weekly at 02:00 on the weekday three days ahead: never open while the test runs (a fixed
    # Sunday 02:00 Berlin was open when CI ran on a Sunday night).
    day = (datetime.now(UTC) + timedelta(days=3)).isoweekday() % 7  # cron: Sunday is 0
    body["spec"]["schedule"] = {"cron": f"0 2 * * {day}", "duration": "2h"}
    kit.apply_in(ns, body)
    obj = wait_window(ns, "weekly", lambda o: cond(o, "Scheduled").get("status") == "True", "ok")
    assert "currentWindow" not in obj["status"]
    kit.kubectl("annotate", "mw", "weekly", "-n", ns, "ops.stronghold.io/precheck-now=1")
    obj = wait_window(
        ns, "weekly", lambda o: cond(o, "PreChecksPassed").get("status") == "True", "rehearsal"
    )
    current = obj["status"]["currentWindow"]
    assert current["start"] == obj["status"]["nextWindow"]["start"]
    assert current["preChecks"]["manual"] is True
    assert kit.kubectl_json("get", "configmap", current["snapshotConfigMap"], "-n", ns)
    assert obj["status"]["handledPrecheckNow"] == "1"
    assert cond(obj, "Active")["status"] == "False"
    assert annotation(ns, "scalingpolicy", "web") is None  # a rehearsal freezes nothing
    assert "PreChecksRequested" in reasons(ns, "weekly")
    # The same value again is not a new request.
    time.sleep(20)
    assert count(ns, "weekly", "PreChecksStarted") == 1


def test_force_deleted_window_stops_holding(
    namespace: str,
    switch: Path,
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    """A window deleted with its finalizer stripped while no operator runs never releases;
    its freeze ends anyway, judged from the windows that exist (issue 17 defect 11b)."""
    ns = namespace
    kit.apply_in(ns, burning_deployment("web", switch))
    kit.apply_in(ns, scaling_policy("web", "web"))
    op = run_operator(ns)
    now = datetime.now(UTC).replace(microsecond=0)
    kit.apply_in(
        ns,
        window(
            "gone",
            now,
            "30m",
            targets={"scalingPolicies": {"names": ["web"]}},
            preChecks={"snapshot": False},
        ),
    )

    def reason() -> str | None:
        st = kit.get(ns, "scalingpolicy", "web").get("status", {})
        return str(st.get("lastDecision", {}).get("reason") or "") or None

    kit.wait_until("web held", lambda: reason() == "MaintenanceWindow", 90)
    op.kill(sig=15)
    kit.kubectl("delete", "maintenancewindow", "gone", "-n", ns, "--wait=false")
    kit.kubectl(
        "patch",
        "maintenancewindow",
        "gone",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )
    kit.wait_until(
        "the window gone",
        lambda: not kit.kubectl("get", "maintenancewindow", "-n", ns, "-o", "name").strip(),
        30,
    )
    assert annotation(ns, "scalingpolicy", "web") == "gone"  # its release never ran
    run_operator(ns)
    kit.wait_until("web no longer held", lambda: reason() not in (None, "MaintenanceWindow"), 60)
