"""BackupSchedule under injected faults: real apiserver, kubelet, PostgreSQL and files.

Faults: the status write fails (the operator's ServiceAccount loses ``patch`` on
backupschedules/status), a Job with the slot's name already exists (409 on create), the
operator dies between creating a Job and recording it, the Job's pod is deleted mid-run, and
the PVC (a real small tmpfs) is full. Fixtures and helpers come from test_backup_e2e.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from stronghold_operator.logic import backup as lb
from stronghold_operator.logic.cron import CronSchedule
from stronghold_testbed import cluster
from tests.integration import kit
from tests.integration import test_backup_e2e as e2e

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

# The e2e module's fixtures, registered here too.
seeded = e2e.seeded
site = e2e.site

NOW = "ops.stronghold.io/backup-now"
SA = "stronghold-op"  # a test-specific ServiceAccount in the test's namespace
STATUS_RULE = "backupschedules/status"


def _manifest(path: str, kind: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((kit.REPO / path).read_text())
    found: dict[str, Any] = next(d for d in docs if d["kind"] == kind)
    return found


class OwnOperator:
    """The real operator under a ServiceAccount of this test, with the namespaced Role of
    manifests/rbac/namespaced split in two: ``patch`` on backupschedules/status lives in its
    own RoleBinding, so the test can take it away and give it back."""

    def __init__(self, namespace: str, tmp: Path) -> None:
        self.namespace, self.tmp = namespace, tmp
        self.started: list[kit.OperatorProcess] = []
        role = _manifest("manifests/rbac/namespaced/role.yaml", "Role")
        rules = []
        for rule in role["rules"]:
            res = [r for r in rule["resources"] if r != STATUS_RULE]
            if res:
                rules.append({**rule, "resources": res})
        # The Incident kind's rules are their own Role (manifests/rbac/namespaced/incidents.yaml);
        # without them kopf's watch of incidents is forbidden and the operator stops.
        rules += _manifest("manifests/rbac/namespaced/incidents.yaml", "Role")["rules"]
        kit.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self._meta(SA)})
        self._role(SA, rules)
        self._role(
            f"{SA}-status",
            [
                {
                    "apiGroups": ["ops.stronghold.io"],
                    "resources": [STATUS_RULE],
                    "verbs": ["get", "patch", "update"],
                }
            ],
        )
        # kopf still lists CRDs and namespaces at the cluster scope (the ClusterRole's first rules).
        cluster_rules = _manifest("manifests/rbac/cluster/clusterrole.yaml", "ClusterRole")
        self.cluster_name = f"{SA}-{namespace}"
        kit.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": self.cluster_name},
                "rules": [
                    r
                    for r in cluster_rules["rules"]
                    if {"customresourcedefinitions", "namespaces"} & set(r["resources"])
                ],
            }
        )
        kit.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": self.cluster_name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": self.cluster_name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": namespace}],
            }
        )
        self.grant_status()
        self.kubeconfig = cluster.sa_kubeconfig(namespace, SA, tmp / "sa.kubeconfig")

    def remove_cluster_role(self) -> None:
        for kind in ("clusterrolebinding", "clusterrole"):
            kit.kubectl("delete", kind, self.cluster_name, "--ignore-not-found", check=False)

    def _meta(self, name: str) -> dict[str, str]:
        return {"name": name, "namespace": self.namespace}

    def _role(self, name: str, rules: list[dict[str, Any]]) -> None:
        kit.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": self._meta(name),
                "rules": rules,
            }
        )
        if name == SA:
            self._bind(name)

    def _bind(self, name: str) -> None:
        kit.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": self._meta(name),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": self.namespace}],
            }
        )

    def _can_patch_status(self) -> bool:
        out = kit.kubectl(
            "auth",
            "can-i",
            "patch",
            "backupschedules.ops.stronghold.io",
            "--subresource=status",
            "-n",
            self.namespace,
            f"--as=system:serviceaccount:{self.namespace}:{SA}",
            check=False,
        )
        return out.strip() == "yes"

    def grant_status(self) -> None:
        self._bind(f"{SA}-status")
        kit.wait_until("patch on the status granted", self._can_patch_status, timeout=30)

    def revoke_status(self) -> None:
        kit.kubectl("delete", "rolebinding", f"{SA}-status", "-n", self.namespace)
        kit.wait_until(
            "patch on the status revoked", lambda: not self._can_patch_status(), timeout=30
        )

    def start(self) -> kit.OperatorProcess:
        log = self.tmp / f"own-operator-{len(self.started)}.log"
        op = kit.start_operator(self.kubeconfig, [self.namespace], log)
        self.started.append(op)
        return op


@pytest.fixture
def own_operator(
    namespace: str,
    tmp_path: Path,
    run_operator: Callable[..., kit.OperatorProcess],  # CRDs applied, no in-cluster operator
) -> Iterator[OwnOperator]:
    own = OwnOperator(namespace, tmp_path)
    try:
        yield own
    finally:
        _stop(own, namespace)


def _stop(own: OwnOperator, namespace: str) -> None:
    if not own._can_patch_status():
        own.grant_status()
    # kopf's finalizers: delete the schedules while an operator still runs.
    running = [op for op in own.started if op.proc.poll() is None]
    if running:
        kit.kubectl(
            "delete", "backupschedules", "--all", "-n", namespace, "--wait=true", "--timeout=90s"
        )
    for op in own.started:
        op.kill(sig=15)
    own.remove_cluster_role()


def annotate(namespace: str, name: str, value: str) -> None:
    kit.kubectl(
        "annotate", "--overwrite", "backupschedule", name, "-n", namespace, f"{NOW}={value}"
    )


def job_names(namespace: str, name: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in e2e.jobs(namespace, name))


def initialised(namespace: str, name: str) -> dict[str, Any]:
    return e2e.wait_status(
        namespace, name, "the first status", lambda s: s if s.get("conditions") else None, 30
    )


def entries(st: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return [b for b in st.get("backups") or [] if b.get("name") == job]


def job_succeeded(job: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """The status once it records ``job`` as succeeded."""
    return lambda s: s if [b for b in entries(s, job) if b["result"] == "Succeeded"] else None


def test_status_patch_forbidden_no_duplicate_and_converges(
    namespace: str, site: e2e.Site, own_operator: OwnOperator
) -> None:
    e2e.secret(namespace, site.seeded)
    op = own_operator.start()
    kit.apply(e2e.schedule("nopatch", namespace, site.seeded, suspend=True))
    initialised(namespace, "nopatch")
    own_operator.revoke_status()
    revoked = time.monotonic()
    annotate(namespace, "nopatch", "r1")
    job = kit.wait_until("the on-demand Job", lambda: job_names(namespace, "nopatch"), 60)[0]
    # The Job finishes while status cannot be written: several ticks fail to record it.
    kit.wait_until(
        "the Job to complete",
        lambda: [j for j in e2e.jobs(namespace, "nopatch") if j["status"].get("succeeded")],
        timeout=120,
        interval=2,
    )
    # The outage outlasts kopf's own retries of a request (1+1+2+...+21 = 54 s): that is
    # when a write made by kopf after the handler gave up and ended the object's timer.
    kit.wait_until(
        "a status outage of 70 s",
        lambda: time.monotonic() - revoked >= 70,
        timeout=90,
        interval=2,
    )
    logs = op.logs()
    assert "backupschedules/status" in logs or "status write refused" in logs
    assert not entries(e2e.status(namespace, "nopatch"), job)
    assert job_names(namespace, "nopatch") == [job]

    own_operator.grant_status()
    st = e2e.wait_status(
        namespace,
        "nopatch",
        "the result once writes work again",
        job_succeeded(job),
        timeout=60,
    )
    assert len(st["backups"]) == 1 and st["onDemand"]["backup"] == "r1"
    assert not st.get("active")
    assert job_names(namespace, "nopatch") == [job]
    assert op.proc.poll() is None
    e2e.assert_no_password(namespace, site.seeded.password, op.logs())


def test_job_name_taken_by_a_foreign_job(site: e2e.Site) -> None:
    """409 on create for a Job this schedule does not own: named in status, never adopted."""
    e2e.secret(site.ns, site.seeded)
    kit.apply(e2e.schedule("taken", site.ns, site.seeded, retention={"days": 30, "minKeep": 1}))
    meta = e2e.get(site.ns, "taken")["metadata"]
    created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
    slot = CronSchedule.parse("* * * * *", "UTC").next_after(created)
    name = lb.job_name("taken", slot)
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": site.ns, "labels": {"app": "someone-else"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "c",
                            "image": e2e.IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "echo not-a-backup > /dev/termination-log"],
                        }
                    ],
                }
            },
        },
    }
    kit.apply(foreign)
    op = site.run_operator(site.ns)
    st = e2e.wait_status(
        site.ns,
        "taken",
        "the taken slot in status",
        lambda s: s if entries(s, name) else None,
        timeout=150,
    )
    entry = entries(st, name)[0]
    assert entry["result"] == "Failed"
    assert entry["reason"] == "JobNameTaken", entry
    assert name in entry["message"] and "not" in entry["message"]
    # The next slot runs as usual; the foreign Job is left alone and never adopted.
    e2e.wait_status(site.ns, "taken", "the next slot's backup", e2e.succeeded, timeout=150)
    assert kit.kubectl_json("get", "job", name, "-n", site.ns)["metadata"]["labels"] == {
        "app": "someone-else"
    }
    st = e2e.status(site.ns, "taken")
    assert [b["name"] for b in st["backups"]].count(name) == 1
    assert op.proc.poll() is None


def test_operator_killed_between_create_and_status_write(
    namespace: str, site: e2e.Site, own_operator: OwnOperator
) -> None:
    e2e.secret(namespace, site.seeded)
    with e2e.accounts_locked(site.seeded) as lock:
        op = own_operator.start()
        kit.apply(e2e.schedule("crash", namespace, site.seeded, suspend=True))
        initialised(namespace, "crash")
        # Status cannot record the Job: the kill certainly falls between create and write.
        own_operator.revoke_status()
        annotate(namespace, "crash", "r1")
        job = kit.wait_until("the on-demand Job", lambda: job_names(namespace, "crash"), 60)[0]
        op.kill()  # SIGKILL
        assert not e2e.status(namespace, "crash").get("active")
        own_operator.grant_status()
        op2 = own_operator.start()
        e2e.wait_status(
            namespace,
            "crash",
            "the running Job adopted",
            lambda s: [a for a in s.get("active") or [] if a["name"] == job],
            timeout=60,
        )
        lock.rollback()
        st = e2e.wait_status(
            namespace,
            "crash",
            "the adopted Job's result",
            job_succeeded(job),
            timeout=120,
        )
        assert len(entries(st, job)) == 1 and len(st["backups"]) == 1
        assert job_names(namespace, "crash") == [job]
        manifests = [json.loads(p.read_text()) for p in site.path.glob("*.manifest.json")]
        assert [m["job"] for m in manifests] == [job]
        e2e.assert_no_password(namespace, site.seeded.password, op.logs() + op2.logs())


def test_pod_deleted_mid_run(site: e2e.Site) -> None:
    with e2e.accounts_locked(site.seeded) as lock:
        site.start()
        kit.apply(e2e.schedule("podgone", site.ns, site.seeded, suspend=True))
        initialised(site.ns, "podgone")
        annotate(site.ns, "podgone", "r1")
        job = kit.wait_until("the on-demand Job", lambda: job_names(site.ns, "podgone"), 60)[0]

        def running_pod() -> str | None:
            pods = kit.kubectl_json("get", "pods", "-n", site.ns, "-l", f"job-name={job}")
            for p in pods["items"]:
                if p["status"].get("phase") == "Running":
                    return str(p["metadata"]["name"])
            return None

        pod = kit.wait_until("the backup pod running", running_pod, timeout=90, interval=1)
        kit.kubectl("delete", "pod", pod, "-n", site.ns, "--wait=true", "--timeout=90s")
        lock.rollback()  # whatever runs now may finish
        st = e2e.wait_status(
            site.ns,
            "podgone",
            "the Job's outcome in status",
            lambda s: s if entries(s, job) and not s.get("active") else None,
            timeout=120,
        )
        # Kubernetes 1.20 does not count a deleted pod as a failed attempt: the Job's
        # replacement pod runs the backup (backoffLimit 0 still holds for real failures).
        entry = entries(st, job)[0]
        if entry["result"] == "Succeeded":
            assert entry["verified"] is True
            assert e2e.archives(site.path) == [entry["file"]]
        else:
            assert entry["reason"] not in ("JobFailed", "PodFailed") and entry["message"], entry
            assert e2e.archives(site.path) == []
        assert job_names(site.ns, "podgone") == [job]
        assert [b["name"] for b in st["backups"]] == [job]


def test_pvc_full_recovers_without_verify_schedule(site: e2e.Site) -> None:
    """A tmpfs of 2 MiB behind the hostPath PV, full of old archives and a filler file.

    The backup fails with StorageFull and leaves nothing half-written; retention (which
    only a successful backup used to run) frees the expired archives, so a later run
    succeeds without verify.schedule; deleting the filler frees the rest.
    """
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0777", "tmpfs", str(site.path)],
        check=True,
    )
    try:
        now = datetime.now(UTC)
        old = {
            d: e2e.make_archive(site.seeded, site.path, now.replace(year=now.year - 1, day=d), True)
            for d in (1, 2, 3)
        }
        size = (site.path / old[1]).stat().st_size
        filler = site.path / "filler"
        with filler.open("wb", buffering=0) as f:  # fill up to a few KiB: no archive fits
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        filler.write_bytes(b"\0" * (filler.stat().st_size - 8192))
        assert 2 * size > 8192  # two expired archives freed make room for one new
        site.start()
        kit.apply(
            e2e.schedule(
                "full", site.ns, site.seeded, suspend=True, retention={"days": 30, "minKeep": 1}
            )
        )
        initialised(site.ns, "full")
        annotate(site.ns, "full", "full-1")
        st = e2e.wait_status(
            site.ns,
            "full",
            "the failed backup",
            lambda s: s if [b for b in s.get("backups") or [] if b["result"] == "Failed"] else None,
            timeout=150,
        )
        failed = st["backups"][0]
        assert failed["reason"] == "StorageFull", failed
        assert "No space left on device" in failed["message"]
        assert e2e.cond(st, "LastBackupSucceeded")[:2] == ("False", "StorageFull")
        left = {p.name for p in site.path.iterdir()}
        assert not [n for n in left if n.endswith(".partial")]
        # Retention runs for the failed backup (the operator's storage-full verify Job): the
        # expired archives beyond minKeep go, without verify.schedule.
        kit.wait_until(
            "the expired archives pruned",
            lambda: e2e.archives(site.path) == [old[3]],
            timeout=120,
            interval=2,
        )
        annotate(site.ns, "full", "full-2")
        st = e2e.wait_status(
            site.ns,
            "full",
            "a backup after retention freed space",
            lambda s: s if [b for b in e2e.succeeded(s) if b["trigger"] == "full-2"] else None,
            timeout=150,
        )
        new = e2e.succeeded(st)[0]
        assert new["verified"] is True
        assert (site.path / new["file"]).stat().st_size == new["sizeBytes"]
        assert not [p for p in site.path.iterdir() if p.name.endswith(".partial")]
        # Freed by hand: the next run succeeds as well.
        filler.unlink()
        annotate(site.ns, "full", "full-3")
        e2e.wait_status(
            site.ns,
            "full",
            "a backup after the filler was removed",
            lambda s: [b for b in e2e.succeeded(s) if b["trigger"] == "full-3"],
            timeout=150,
        )
    finally:
        subprocess.run(["umount", "-l", str(site.path)], check=False)
