"""Remediation with the real operator on the local cluster (docs/incidents.md#remediation).

Deployments whose pods serve a health endpoint that fails (busybox httpd without the
page: HTTP 404), each watched by its own HealthPolicy: one remediated by rollout restarts
(at most maxAttempts, each on the Incident's timeline and as an Event), one in dry run
(recorded, nothing touched), one held by an active MaintenanceWindow (nothing runs). And a
real long-running query (`SELECT pg_sleep(600)` on a test-owned connection) terminated.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from stronghold_operator import conditions as cond
from tests.integration import health_kit as hk
from tests.integration import kit
from tests.integration.health_kit import Sleeper
from tests.integration.test_incident_e2e import incidents, probes_of
from tests.support.workloads import busybox_deployment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
CRD = kit.REPO / "crds/healthpolicy.yaml"


@pytest.fixture(autouse=True)
def kinds_and_rbac(apply_crds: list[str]) -> Iterator[None]:
    """This checkout's CRDs and RBAC, and the optional remediation RBAC component."""
    kit.apply_crds()
    kit.kubectl("apply", "-k", str(kit.REPO / "manifests/rbac/cluster"))
    kit.kubectl("apply", "-k", str(kit.REPO / "manifests/rbac/remediation"))
    yield
    kit.kubectl("delete", "-k", str(kit.REPO / "manifests/rbac/remediation"), check=False)


def apply_policy(
    namespace: str,
    obj: dict[str, Any],
    present: Callable[[dict[str, Any]], bool] = lambda spec: "remediation" in spec,
) -> None:
    """Apply a policy whose spec uses a field of this checkout's CRD: other checkouts
    sharing the cluster replace the CRD every few seconds (and the API server prunes a field
    its current CRD lacks, silently). This CRD again, the object (no client-side validation:
    kubectl's OpenAPI copy trails a CRD change), then read back until ``present(spec)``.
    The operator must already run: it takes the spec from the watch event at once."""
    name = obj["metadata"]["name"]

    def applied() -> bool:
        kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        text = json.dumps(obj)
        kit.kubectl("apply", "--validate=false", "-n", namespace, "-f", "-", input=text)
        return present(kit.get(namespace, "healthpolicy", name)["spec"])

    kit.wait_until(f"{name} applied with this checkout's CRD", applied, timeout=120, interval=1)


def applied_until(
    namespace: str, obj: dict[str, Any], used: Callable[[], bool], within: float = 25
) -> None:
    """``apply_policy``, until ``used()`` shows the operator acts on the field: the watch
    event it parsed may have been pruned by another checkout's CRD. Then the spec is
    applied again with its interval spelt differently (same value, a new generation: the
    operator parses it again)."""
    spellings = ["2s", "2000ms"]
    for attempt in range(4):
        obj["spec"]["interval"] = spellings[attempt % 2]
        apply_policy(namespace, obj)
        try:
            kit.wait_until(f"{obj['metadata']['name']} used", used, timeout=within)
            return
        except AssertionError:
            continue
    raise AssertionError(f"the operator never acted on {obj['metadata']['name']}'s remediation")


def _quiet(probe: Callable[[str], Any], namespace: str) -> bool:
    try:
        return bool(probe(namespace))
    except AssertionError:
        return False


def witnessed(namespace: str) -> bool:
    inc = the_incident(namespace, "held")
    return bool(inc and any("remediation witness" in m for m in remediation_entries(inc)))


def policy_status(namespace: str, name: str) -> dict[str, Any]:
    """The policy's status as this checkout's CRD serves it (a replaced CRD without our
    fields prunes them from what the API server returns)."""
    kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    status: dict[str, Any] = kit.get(namespace, "healthpolicy", name)["status"]
    return status


def failing_web(name: str, port: int) -> dict[str, Any]:
    """Pods that serve HTTP on 127.0.0.1:``port`` without a /healthz page (404)."""
    d = busybox_deployment(name, f"mkdir -p /www && exec httpd -f -p 127.0.0.1:{port} -h /www")
    d["spec"]["strategy"] = {"type": "Recreate"}  # one host port: never two pods at once
    return d


def policy(name: str, port: int, action: dict[str, Any], **remediation: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": name},
        "spec": {
            "interval": "2s",
            "timeout": "1s",
            "failureThreshold": 1,
            "checks": [{"name": "web", "http": {"url": f"http://127.0.0.1:{port}/healthz"}}],
            "remediation": {"actions": [action], **remediation},
        },
    }


def restart(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "restart-web",
        "when": {"checks": ["web"]},
        "rolloutRestart": {"name": name},
        **extra,
    }


def the_incident(namespace: str, policy_name: str) -> dict[str, Any] | None:
    mine = [i for i in incidents(namespace) if i["spec"]["healthPolicy"] == policy_name]
    return mine[0] if len(mine) == 1 else None


def remediation_entries(incident: dict[str, Any], type_: str = "Remediation") -> list[str]:
    timeline = incident.get("status", {}).get("timeline") or []
    return [e["message"] for e in timeline if e["type"] == type_]


def timeline_types(incident: dict[str, Any]) -> list[str]:
    return [e["type"] for e in incident.get("status", {}).get("timeline") or []]


def generation(namespace: str, name: str) -> int:
    return int(kit.get(namespace, "deployment", name)["metadata"]["generation"])


def pods(namespace: str, app: str) -> list[str]:
    """The app's running pods (not terminating)."""
    out = kit.kubectl_json("get", "pods", "-n", namespace, "-l", f"app={app}")
    return [
        p["metadata"]["name"]
        for p in out["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def restarted_at(namespace: str, name: str) -> str | None:
    d = kit.get(namespace, "deployment", name)
    annotations = d["spec"]["template"]["metadata"].get("annotations") or {}
    return annotations.get(RESTARTED_AT)


def test_rollout_restart_at_most_max_attempts_dry_run_and_maintenance(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    ns = namespace
    ports = {name: kit.free_port() for name in ("web", "dry", "held")}
    for name, port in ports.items():
        kit.apply_in(ns, failing_web(name, port))
    kit.wait_until(
        "the pods serving (HTTP 404)",
        lambda: all(_status(p) == 404 for p in ports.values()),
        timeout=120,
    )
    # Serving is not yet Running in the API: the kubelet reports the phase a moment later.
    originals = kit.wait_until(
        "each Deployment's pod Running",
        lambda: (
            (found := {name: pods(ns, name) for name in ports})
            and all(len(v) == 1 for v in found.values())
            and found
        ),
        timeout=60,
    )
    # An active MaintenanceWindow holding the "held" policy, before that policy exists.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    kit.apply_in(
        ns,
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "MaintenanceWindow",
            "metadata": {"name": "mw"},
            "spec": {
                "schedule": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": "20m"},
                "targets": {"healthPolicies": {"names": ["held"]}},
            },
        },
    )
    op = run_operator(ns)
    kit.wait_until(
        "the window active",
        lambda: (
            (kit.condition(kit.get(ns, "maintenancewindow", "mw"), "Active") or {}).get("status")
            == "True"
        ),
        timeout=90,
    )
    # The held policy's action waits until its incident is 8s old: the window's annotation
    # lands well before that, so only the window can be why nothing ran.
    held_policy = policy("held", ports["held"], restart("held", after="8s"))
    # The witness: a dry run allowed during maintenance, so the timeline shows the operator
    # has this policy's remediation while the restart, not allowed, never runs.
    witness = {
        "name": "witness",
        "when": {"checks": ["web"]},
        "rolloutRestart": {"name": "held"},
        "dryRun": True,
        "duringMaintenance": True,
    }
    held_policy["spec"]["remediation"]["actions"].append(witness)
    applied_until(ns, held_policy, lambda: witnessed(ns))
    kit.wait_until(
        "the window's hold on the policy",
        lambda: (
            (kit.get(ns, "healthpolicy", "held")["metadata"].get("annotations") or {}).get(
                "ops.stronghold.io/maintenance"
            )
            == "mw"
        ),
        timeout=60,
    )
    applied_until(
        ns,
        policy("web", ports["web"], restart("web", maxAttempts=2, cooldown="4s")),
        lambda: bool((i := the_incident(ns, "web")) and remediation_entries(i)),
    )
    applied_until(
        ns,
        policy("dry", ports["dry"], restart("dry", maxAttempts=2, cooldown="2s"), dryRun=True),
        lambda: bool((i := the_incident(ns, "dry")) and remediation_entries(i)),
    )

    # Two restarts, each on the timeline with its result, four seconds apart at least.
    inc = kit.wait_until(
        "two remediation entries",
        lambda: (i := the_incident(ns, "web")) and len(remediation_entries(i)) >= 2 and i,
        timeout=120,
    )
    first, second = remediation_entries(inc)
    assert "restart-web (1/2): rollout restart of Deployment web" in first
    assert "restart-web (2/2)" in second and "restarted" in second
    assert restarted_at(ns, "web") is not None
    times = [
        cond.parse_rfc3339(e["time"])
        for e in inc["status"]["timeline"]
        if e["type"] == "Remediation"
    ]
    assert times[1] - times[0] >= timedelta(seconds=3)  # cooldown 4s (timeline has seconds)
    reasons = [e["reason"] for e in kit.events_for(ns, inc["metadata"]["name"])]
    assert reasons.count("Remediated") >= 1
    # Two patches of the pod template: generation 1 -> 3 (with Recreate, a restart that
    # lands while the previous one is still stopping pods shares its new ReplicaSet).
    assert generation(ns, "web") == 3
    kit.wait_until(
        "the original pods replaced by running ones",
        lambda: (names := pods(ns, "web")) and not set(names) & set(originals["web"]),
        timeout=120,
    )

    # Each restart that ran is verified by a round soon after it (verifyAfter, capped by
    # the 2 s interval): the new pods serve 404 as well, so StillFailing, naming the check.
    inc = kit.wait_until(
        "two StillFailing verdicts",
        lambda: (
            (i := the_incident(ns, "web"))
            and len(remediation_entries(i, "StillFailing")) >= 2
            and i
        ),
        timeout=60,
    )
    for verdict in remediation_entries(inc, "StillFailing"):
        assert "remediation restart-web" in verdict and "StillFailing: web still failing" in verdict
    kinds = [t for t in timeline_types(inc) if t in ("Remediation", "StillFailing")]
    assert kinds == ["Remediation", "StillFailing", "Remediation", "StillFailing"], kinds
    assert "Verified" not in timeline_types(inc)
    reasons = [e["reason"] for e in kit.events_for(ns, inc["metadata"]["name"])]
    assert "RemediationStillFailing" in reasons

    # And no more: the budget is spent (and kept in the policy's status).
    budget = kit.wait_until(
        "the budget in the policy's status",
        lambda: policy_status(ns, "web")["incident"].get("remediation"),
        timeout=30,
    )
    assert budget[0]["action"] == "restart-web" and budget[0]["attempts"] == 2
    assert "verifyAt" not in budget[0]  # judged: nothing pending
    seen = probes_of(op, ns, "web")
    kit.wait_until("five more rounds", lambda: probes_of(op, ns, "web") >= seen + 5, 60)
    inc = the_incident(ns, "web")
    assert inc is not None and len(remediation_entries(inc)) == 2
    assert generation(ns, "web") == 3

    # Dry run: recorded twice (its maxAttempts), nothing touched.
    dry = kit.wait_until(
        "two dry-run entries",
        lambda: (i := the_incident(ns, "dry")) and len(remediation_entries(i)) >= 2 and i,
        timeout=60,
    )
    for entry in remediation_entries(dry):
        assert "dry run, would do a rollout restart of Deployment dry" in entry
    assert restarted_at(ns, "dry") is None and generation(ns, "dry") == 1
    assert set(pods(ns, "dry")) == set(originals["dry"])
    dry_reasons = {e["reason"] for e in kit.events_for(ns, dry["metadata"]["name"])}
    assert "RemediationDryRun" in dry_reasons and "Remediated" not in dry_reasons
    assert not {"Verified", "StillFailing"} & set(timeline_types(dry))  # nothing ran

    # Held by the window: its incident is older than its action's `after`, and
    # several rounds later nothing has run.
    held = kit.wait_until("the held policy's Incident", lambda: the_incident(ns, "held"))
    started = cond.parse_rfc3339(held["status"]["startedAt"])
    assert started is not None
    assert policy_status(ns, "held")["incident"].get("maintenanceWindow") == "mw"
    kit.wait_until(
        "the held incident 12s old",
        lambda: datetime.now(UTC) - started > timedelta(seconds=12),
        timeout=60,
    )
    seen = probes_of(op, ns, "held")
    kit.wait_until("three more rounds", lambda: probes_of(op, ns, "held") >= seen + 3, 60)
    held = the_incident(ns, "held")
    assert held is not None
    (only,) = remediation_entries(held)  # the witness; the restart never ran
    assert "remediation witness (1/1): dry run, would do a rollout restart" in only
    assert restarted_at(ns, "held") is None and generation(ns, "held") == 1
    assert set(pods(ns, "held")) == set(originals["held"])
    spent = policy_status(ns, "held")["incident"].get("remediation") or []
    assert [e["action"] for e in spent] == ["witness"]


def _status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def terminated(namespace: str) -> dict[str, Any] | None:
    """The Incident once it has a Remediation entry; otherwise says what there is."""
    inc = the_incident(namespace, "db")
    if inc is not None and remediation_entries(inc):
        return inc
    status = kit.get(namespace, "healthpolicy", "db").get("status", {})
    checks = [(c.get("name"), c.get("state"), c.get("reason")) for c in status.get("checks", [])]
    timeline = (inc or {}).get("status", {}).get("timeline")
    raise AssertionError(f"checks {checks}, incident {status.get('incident')}, {timeline}")


def test_a_long_running_query_is_terminated_and_recorded(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    ns = namespace
    with hk.scratch_database("remedy_e2e", "SELECT 1") as database:
        sleeper = Sleeper(database, "report-job")
        try:
            run_operator(ns)  # first: it takes the spec from the watch event at once
            applied_until(
                ns,
                {
                    "apiVersion": "ops.stronghold.io/v1alpha1",
                    "kind": "HealthPolicy",
                    "metadata": {"name": "db"},
                    "spec": {
                        "interval": "2s",
                        "timeout": "1s",
                        "failureThreshold": 1,
                        "checks": [
                            {
                                "name": "db",
                                "postgres": {
                                    "host": "127.0.0.1",
                                    "database": database,
                                    "longRunningAfter": "3s",
                                    "maxBlockedSessions": 1000,  # other tests' lock waits
                                },
                            }
                        ],
                        "remediation": {
                            "actions": [
                                {
                                    "name": "kill-long-queries",
                                    "when": {"checks": ["db"]},
                                    "terminateQueries": {"check": "db", "olderThan": "3s"},
                                }
                            ]
                        },
                    },
                },
                lambda: _quiet(terminated, ns),
                within=40,
            )
            inc = kit.wait_until(
                "the termination on the timeline", lambda: terminated(ns), timeout=30
            )
            (entry,) = remediation_entries(inc)
            assert f"terminated 1 session(s) (pids {sleeper.pid})" in entry
            sleeper.thread.join(timeout=10)
            assert isinstance(sleeper.error, psycopg.errors.AdminShutdown)
            assert inc["status"]["rootCause"] == "db"
            reasons = {e["reason"] for e in kit.events_for(ns, inc["metadata"]["name"])}
            assert "Remediated" in reasons
            # The query gone, the check recovers and the incident resolves; the round
            # verifying the termination says so on the timeline first.
            done = kit.wait_until(
                "the incident resolved",
                lambda: (
                    (i := the_incident(ns, "db"))
                    and i.get("status", {}).get("state") == "Resolved"
                    and i
                ),
                timeout=90,
            )
            (verdict,) = remediation_entries(done, "Verified")
            assert "remediation kill-long-queries (attempt 1)" in verdict
            assert "Verified: every check healthy" in verdict
            kinds = timeline_types(done)
            assert kinds.index("Remediation") < kinds.index("Verified") < kinds.index("Resolved")
            assert "StillFailing" not in kinds
            reasons = {e["reason"] for e in kit.events_for(ns, done["metadata"]["name"])}
            assert "RemediationVerified" in reasons
        finally:
            sleeper.stop()
