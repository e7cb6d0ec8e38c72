"""GitOps health on the real cluster: kstatus' reading of what the real operator writes.

A watch records every version of every Stronghold object in the test's namespace (each
status write is one), and the kstatus rules (tests/support/kstatus.py) read each version:
a fresh valid object goes InProgress then Current, an invalid one Failed (Stalled, the
message naming the field), a spec change reads InProgress until observedGeneration and the
pass catch up. The time from a new generation (or a creation) to the status that observes
it is measured on the watch's clock and must be at most 1 s.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.integration import kit
from tests.support import kstatus
from tests.support.gitops import argo_health, flux_states
from tests.support.policies import scaling_policy
from tests.support.workloads import busybox_deployment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GROUP, VERSION = "ops.stronghold.io", "v1alpha1"
PLURALS = {
    "HealthPolicy": "healthpolicies",
    "ScalingPolicy": "scalingpolicies",
    "BackupSchedule": "backupschedules",
    "MaintenanceWindow": "maintenancewindows",
}
ACK_WITHIN_S = 1.0  # issue 22: observedGeneration written within 1 s of a spec change


@dataclass
class Seen:
    at: float  # time.monotonic() when the watch delivered it
    kind: str
    obj: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def generation(self) -> int:
        return int(self.obj["metadata"]["generation"])

    @property
    def observed(self) -> int | None:
        return (self.obj.get("status") or {}).get("observedGeneration")

    @property
    def kstatus(self) -> str:
        return kstatus.compute(self.obj).status


@dataclass
class Recorder:
    """Every version of every object of the four kinds in one namespace, as watched."""

    api: kubernetes.client.ApiClient
    namespace: str
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    watches: list[kubernetes.watch.Watch] = field(default_factory=list)
    resumed: int = 0
    relisted: int = 0
    dropped: str = ""  # the last dropped watch's error
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        for kind, plural in PLURALS.items():
            ready = threading.Event()
            threading.Thread(target=self._watch, args=(kind, plural, ready), daemon=True).start()
            assert ready.wait(10), f"the {plural} watch did not start"

    def _watch(self, kind: str, plural: str, ready: threading.Event) -> None:
        """Watch from the LIST's version, with bookmarks keeping the version fresh; a watch
        the server ends or drops is resumed from the last version seen, so no version is
        missed. A version too old to resume from (410: other tests' objects moved the
        apiserver's watch window on) is listed again: the current versions are recorded
        and the relist counted (a version between the two may be missed then)."""
        custom = kubernetes.client.CustomObjectsApi(self.api)
        version = self._list(custom, kind, plural)
        ready.set()
        while not self.stopping.is_set():
            w = kubernetes.watch.Watch()
            self.watches.append(w)
            try:
                for event in w.stream(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    plural,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=60,
                ):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        with self.lock:
                            self.seen.append(Seen(time.monotonic(), kind, obj))
            except Exception as exc:
                if self.stopping.is_set():
                    return
                self.dropped = f"{type(exc).__name__}: {exc}"[:300]
                if getattr(exc, "status", None) == 410:
                    self.relisted += 1
                    version = self._list(custom, kind, plural)
                else:
                    self.resumed += 1
                    self.stopping.wait(0.1)

    def _list(self, custom: kubernetes.client.CustomObjectsApi, kind: str, plural: str) -> str:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)
        with self.lock:
            self.seen += [Seen(time.monotonic(), kind, obj) for obj in listed["items"]]
        return str(listed["metadata"]["resourceVersion"])

    def stop(self) -> None:
        self.stopping.set()
        for w in self.watches:
            w.stop()

    def of(self, kind: str, name: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.kind == kind and s.name == name]

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
        return kit.wait_until(what, probe, timeout=timeout, interval=0.1)

    def settled(
        self, kind: str, name: str, status: str, timeout: float = 60, generation: int = 1
    ) -> Seen:
        """The first version of ``generation`` reading ``status`` with it observed."""

        def probe() -> Seen | None:
            for s in self.of(kind, name):
                if s.observed == s.generation == generation and s.kstatus == status:
                    return s
            return None

        try:
            found: Seen = self.wait(f"{kind}/{name} {status}", probe, timeout)
        except AssertionError as exc:
            states = [(s.generation, s.observed, s.kstatus) for s in self.of(kind, name)]
            last = [s.obj.get("status") for s in self.of(kind, name)[-1:]]
            raise AssertionError(
                f"{exc} (generation {generation}); versions {states}; last status {last}; "
                f"watches resumed {self.resumed}, relisted {self.relisted} ({self.dropped})"
            ) from None
        return found


@pytest.fixture
def recorder(kube_api: kubernetes.client.ApiClient, namespace: str) -> Iterator[Recorder]:
    r = Recorder(kube_api, namespace)
    r.start()
    yield r
    r.stop()


def objects(ns: str, port: int) -> dict[str, dict[str, Any]]:
    """One valid object of each kind (kind -> object), cheap to reconcile."""
    health = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HealthPolicy",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "interval": "10s",
            # Nothing listens there: the policy works (Ready) and reports the service down.
            "checks": [{"name": "web", "http": {"url": f"http://127.0.0.1:{port}/health/"}}],
        },
    }
    scaling = scaling_policy("web", "web")
    scaling["metadata"]["namespace"] = ns
    backup = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BackupSchedule",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {
            "schedule": "0 3 * * *",
            "timeZone": "UTC",
            "database": {
                "host": "127.0.0.1",
                "name": "shop",
                "user": "shop",
                "password": {"secretKeyRef": {"name": "db", "key": "password"}},
            },
            "storage": {"persistentVolumeClaim": "backups"},
        },
    }
    window = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MaintenanceWindow",
        "metadata": {"name": "weekly", "namespace": ns},
        # Wednesdays at noon: never open while the test runs (it would be Reconciling).
        "spec": {"schedule": {"cron": "0 12 * * 3", "duration": "1h"}, "timeZone": "UTC"},
    }
    return {
        "HealthPolicy": health,
        "ScalingPolicy": scaling,
        "BackupSchedule": backup,
        "MaintenanceWindow": window,
    }


# A spec change per kind that keeps the object valid.
CHANGES: dict[str, dict[str, Any]] = {
    "HealthPolicy": {"spec": {"interval": "15s"}},
    "ScalingPolicy": {"spec": {"maxReplicas": 4}},
    "BackupSchedule": {"spec": {"schedule": "0 4 * * *"}},
    "MaintenanceWindow": {"spec": {"schedule": {"cron": "0 13 * * 3", "duration": "1h"}}},
}


def the_states(history: list[Seen]) -> list[str]:
    """kstatus of each version, consecutive repeats folded."""
    out: list[str] = []
    for s in history:
        if not out or out[-1] != s.kstatus:
            out.append(s.kstatus)
    return out


def first_observing(history: list[Seen], generation: int) -> Seen:
    for s in history:
        if s.observed == generation:
            return s
    raise AssertionError(f"no version observed generation {generation}")


def assert_argo_and_flux_agree(recorder: Recorder) -> int:
    """Every version the watch saw, read by Argo CD's health.lua (Lua 5.4) and the Flux
    expressions (CEL), agrees with kstatus, except that neither fails open: an object
    without status is Progressing / inProgress. Returns how many versions were read."""
    with recorder.lock:
        versions = {s.obj["metadata"]["resourceVersion"]: s for s in recorder.seen}
    for s in versions.values():
        argo, message = argo_health(s.obj)
        flux = flux_states(s.kind, s.obj)
        where = (s.kind, s.name, s.kstatus, argo, message, flux)
        ready = kit.condition(s.obj, "Ready") or {}
        if not s.obj.get("status"):
            assert (argo, flux) == ("Progressing", {"inProgress"}), where
        elif s.kstatus == kstatus.CURRENT:
            assert (argo, flux) == ("Healthy", {"current"}), where
        elif s.kstatus == kstatus.FAILED:
            assert (argo, flux) == ("Degraded", {"failed"}), where
        else:
            expected = "Degraded" if ready.get("status") == "False" else "Progressing"
            assert (argo, flux) == (expected, {"inProgress"}), where
    return len(versions)


def test_fresh_objects_go_in_progress_then_current_and_changes_are_seen_within_1s(
    namespace: str,
    recorder: Recorder,
    run_operator: Callable[..., kit.OperatorProcess],
    tmp_path: Path,
) -> None:
    ns = namespace
    kit.apply_in(
        ns,
        busybox_deployment("web", resources={"requests": {"cpu": "10m", "memory": "8Mi"}}),
    )
    kit.kubectl("create", "secret", "generic", "db", "-n", ns, "--from-literal=password=x")
    run_operator(ns)
    with kit.hostpath_volume(ns, tmp_path / "backups"):
        made = objects(ns, kit.free_port())
        for obj in made.values():
            kit.apply(obj)
        figures: dict[str, tuple[float, float]] = {}
        for kind, obj in made.items():
            name = obj["metadata"]["name"]
            current = recorder.settled(kind, name, kstatus.CURRENT)
            history = [s for s in recorder.of(kind, name) if s.at <= current.at]
            states = the_states(history)
            # Before any status kstatus "fails open" (Current): that window is what must be
            # short. Then InProgress (Reconciling, or an unobserved generation), then Current.
            created, first = history[0], first_observing(history, 1)
            assert states[-2:] == [kstatus.IN_PROGRESS, kstatus.CURRENT], (kind, states)
            assert first.kstatus == kstatus.IN_PROGRESS, (kind, first.obj["status"])
            fresh = first.at - created.at
            assert fresh <= ACK_WITHIN_S, f"{kind}: first status after {fresh:.3f}s"

            # A spec change: InProgress from the new generation until the pass is done, and
            # observedGeneration written within a second.
            patch = json.dumps(CHANGES[kind])
            kit.kubectl("patch", PLURALS[kind], name, "-n", ns, "--type=merge", "-p", patch)
            changed = recorder.wait(
                f"{kind} generation 2",
                lambda k=kind, n=name: next(
                    (s for s in recorder.of(k, n) if s.generation == 2), None
                ),
            )
            done = recorder.settled(kind, name, kstatus.CURRENT, generation=2)
            after = [s for s in recorder.of(kind, name) if changed.at <= s.at < done.at]
            assert after and all(s.kstatus == kstatus.IN_PROGRESS for s in after), [
                (s.observed, s.kstatus) for s in after
            ]
            acked = first_observing(after, 2)
            lag = acked.at - changed.at
            assert lag <= ACK_WITHIN_S, f"{kind}: observedGeneration 2 after {lag:.3f}s"
            reconciling = kit.condition(acked.obj, "Reconciling") or {}
            assert reconciling.get("status") == "True", (kind, acked.obj["status"])
            figures[kind] = (fresh, lag)
    # The figures, for docs/gitops.md (pytest -s shows them).
    for kind, (fresh, lag) in figures.items():
        print(f"{kind}: first status {fresh * 1000:.0f} ms, new generation {lag * 1000:.0f} ms")
    print(f"watches resumed {recorder.resumed}, relisted {recorder.relisted}")
    print(f"Argo CD and Flux agree with kstatus on {assert_argo_and_flux_agree(recorder)} versions")


def test_unusable_specs_read_failed_with_the_field_named(
    namespace: str, recorder: Recorder, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    ns = namespace
    run_operator(ns)
    made = objects(ns, kit.free_port())
    bad_health = made["HealthPolicy"]
    bad_health["metadata"]["name"] = "bands"
    bad_health["spec"]["checks"][0]["http"]["latency"] = {"warning": "1s", "critical": "100ms"}
    ghost = scaling_policy("ghost", "nothing-here")
    inverted = scaling_policy("inverted", "nothing-here", minReplicas=3, maxReplicas=2)
    bad_cron = made["BackupSchedule"]
    bad_cron["metadata"]["name"] = "badcron"
    bad_cron["spec"]["schedule"] = "61 * * * *"
    bad_zone = made["MaintenanceWindow"]
    bad_zone["metadata"]["name"] = "zone"
    bad_zone["spec"]["timeZone"] = "Mars/Olympus"
    expected = [
        ("HealthPolicy", "bands", "InvalidSpec", "spec.checks[0].http.latency"),
        ("ScalingPolicy", "ghost", "TargetNotFound", "nothing-here"),
        ("ScalingPolicy", "inverted", "InvalidSpec", "maxReplicas"),
        ("BackupSchedule", "badcron", "InvalidSpec", "spec.schedule"),
        ("MaintenanceWindow", "zone", "InvalidSpec", "timeZone"),
    ]
    for obj in (bad_health, ghost, inverted, bad_cron, bad_zone):
        kit.apply_in(ns, obj)
    for kind, name, reason, words in expected:
        failed = recorder.settled(kind, name, kstatus.FAILED)
        result = kstatus.compute(failed.obj)
        assert result.reason == reason and words in result.message, (kind, result)
        reconciling = kit.condition(failed.obj, "Reconciling") or {}
        assert reconciling.get("status") == "False"  # never both True
        # It stays Failed: no later version of this generation reads otherwise.
        later = [s for s in recorder.of(kind, name) if s.at > failed.at]
        assert all(s.kstatus == kstatus.FAILED for s in later), kind
    assert assert_argo_and_flux_agree(recorder) >= 3 * len(expected)
