"""Runs with every source: database, a volume's files, configuration (a Secret encrypted),
system state. One manifest per run; verification and retention treat a run as a unit.

First the Job's program as the Job runs it (real bash, pg_dump, tar, files in a temporary
directory), then the whole path on the real cluster: the operator captures the namespace,
the Job mounts the media claim read-only, and the tests read and tamper with the volume.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml

from stronghold_operator.logic import backup_capture as lc
from tests.integration import health_kit as hk
from tests.integration import job_program, kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

IMAGE = "stronghold/base:bookworm"
PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
MEDIA = {
    "avatars/a.png": b"\x89PNG" + os.urandom(3000),
    "avatars/b.png": b"\x89PNG" + os.urandom(2000),
    "docs/statement 2026.pdf": b"%PDF" + os.urandom(5000),
    "cache/thumb.bin": os.urandom(100),  # excluded: its directory is
    "upload.tmp": b"partial",  # excluded by name
}
KEPT = sorted(k for k in MEDIA if not k.startswith("cache/") and not k.endswith(".tmp"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tar_names(path: Path) -> list[str]:
    with tarfile.open(path) as t:
        return sorted(m.name for m in t.getmembers() if not m.isdir())


def corrupt(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


# --- the program, as the Job runs it ------------------------------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with hk.scratch_database("bksrc", "CREATE TABLE t(id int); INSERT INTO t SELECT 1") as db:
        yield db


def run(root: Path, db: str, mode: str, **env: str) -> dict[str, Any]:
    return job_program.run(root, db, mode, **{"MIN_KEEP": "1", **env})


def capture_dir(root: Path, recipient: pyrage.x25519.Recipient) -> Path:
    """A capture as the operator makes it (the same functions), as the ConfigMap mounts it."""
    cap = lc.Capture()
    objects = [
        lc.clean_object({"metadata": {"name": "app"}, "data": {"A": "1"}}, "ConfigMap", "v1")
    ]
    cap.add("configuration.tar.gz", lc.configuration_bundle(objects), objects=len(objects))
    secret = lc.clean_object({"metadata": {"name": "s"}, "data": {"k": "c2VjcmV0"}}, "Secret", "v1")
    cap.add("secrets.tar.gz.age", lc.encrypt([secret], [recipient]), objects=1)
    cap.add("system-state.json", lc.state_json({"namespace": "x"}))
    cap.files["capture.json"] = cap.index()
    path = root / "capture"
    path.mkdir()
    for name, data in cap.files.items():
        (path / name).write_bytes(data)
    return path


def media_dir(root: Path) -> Path:
    base = root / "media"
    for rel, data in MEDIA.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return base


def sources_env(root: Path, recipient: pyrage.x25519.Recipient) -> str:
    return json.dumps(
        {
            "volumes": [
                {
                    "name": "media",
                    "claim": "media",
                    "dir": str(media_dir(root)),
                    "include": [],
                    "exclude": ["cache", "*.tmp"],
                }
            ],
            "capture": str(capture_dir(root, recipient)),
        }
    )


def test_program_run_with_every_source_verify_and_retention_by_run(
    database: str, tmp_path: Path
) -> None:
    identity = pyrage.x25519.Identity.generate()
    env = sources_env(tmp_path, identity.to_public())
    first = run(tmp_path, database, "backup", STRONGHOLD_SOURCES=env)
    assert first["ok"] is True, first
    second = run(tmp_path, database, "backup", STRONGHOLD_SOURCES=env)
    assert second["ok"] is True, second
    backups = tmp_path / "backups"
    run1 = backups / f"run_{first['run']['run']}"
    man = json.loads((run1 / "manifest.json").read_text())
    kinds = [a["kind"] for a in man["artifacts"]]
    assert kinds == ["database", "volume", "configuration", "secrets", "systemState"]
    for a in man["artifacts"]:
        path = backups / a["name"] if a["kind"] == "database" else run1 / a["name"]
        assert a["sha256"] == sha256(path) and a["sizeBytes"] == path.stat().st_size, a
        assert a["verified"] is True
    assert tar_names(run1 / "volume-media.tar.gz") == KEPT
    assert man["artifacts"][1]["files"] == len(KEPT)
    assert pyrage.decrypt((run1 / "secrets.tar.gz.age").read_bytes(), [identity])
    assert first["run"]["verified"] is True and len(first["run"]["artifacts"]) == 5

    # The media archive of the first run corrupted: that run fails verification, not the other.
    corrupt(run1 / "volume-media.tar.gz")
    report = run(tmp_path, database, "verify")
    assert report["ok"] is True and report["checked"] == 2, report
    failed = {f["file"]: f for f in report["failed"]}
    assert list(failed) == [first["file"]], report
    assert "volume-media.tar.gz" in failed[first["file"]]["message"]
    assert report["passed"] == [second["file"]]
    man = json.loads((run1 / "manifest.json").read_text())
    bad = {a["name"]: a for a in man["artifacts"]}["volume-media.tar.gz"]
    assert man["verified"] is False and bad["verifyReason"] == "ChecksumMismatch"

    # Retention by run: two copies of the second run, 40 and 50 days old; with minKeep 1 and
    # 30 days both go whole (archive, manifest, run directory), the two recent runs stay.
    old = []
    for days in (40, 50):
        ts = f"{datetime.now(UTC) - timedelta(days=days):%Y%m%d_%H%M%S}"
        name = f"db_backup_{ts}.sql.gz"
        shutil.copy(backups / second["file"], backups / name)
        m = json.loads((backups / f"{second['file']}.manifest.json").read_text())
        (backups / f"{name}.manifest.json").write_text(json.dumps(m | {"file": name}))
        shutil.copytree(backups / f"run_{second['run']['run']}", backups / f"run_{ts}")
        old.append(ts)
    report = run(tmp_path, database, "verify")
    assert sorted(report["pruned"]) == sorted(f"db_backup_{ts}.sql.gz" for ts in old), report
    left = sorted(p.name for p in backups.iterdir())
    assert not [n for n in left if any(ts in n for ts in old)], left
    assert f"run_{first['run']['run']}" in left and f"run_{second['run']['run']}" in left


def test_program_run_fails_whole_when_a_volume_cannot_be_read(
    database: str, tmp_path: Path
) -> None:
    env = json.dumps(
        {
            "volumes": [
                {"name": "gone", "dir": str(tmp_path / "nothing"), "include": [], "exclude": []}
            ]
        }
    )
    result = run(tmp_path, database, "backup", STRONGHOLD_SOURCES=env)
    assert result["ok"] is False and result["stage"] == "sources", result
    # Nothing published: no archive, no run directory, no partial left behind.
    assert [p.name for p in (tmp_path / "backups").iterdir()] == []


# --- the real cluster ---------------------------------------------------------------------


@pytest.fixture
def media_db() -> Iterator[str]:
    with hk.scratch_database("bksrc_e2e", "CREATE TABLE t(id int); INSERT INTO t SELECT 7") as db:
        yield db


def app_objects(ns: str, plaintext: str, recipient: str) -> list[dict[str, Any]]:
    """The application's namespace: config, a listed Secret, a Deployment and its Service."""
    labels = {"app": "web"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web-config", "namespace": ns},
            "data": {"DJANGO_SETTINGS_MODULE": "stronghold.settings.production"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "web-env", "namespace": ns},
            "stringData": {"SECRET_KEY": plaintext},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "backup-age", "namespace": ns},
            "stringData": {"recipients": f"# the ops team\n{recipient}\n"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": ns,
                "annotations": {"ops.stronghold.io/git-revision": "4f2c1e9"},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "hostNetwork": True,
                        "containers": [
                            {
                                "name": "web",
                                "image": IMAGE,
                                "imagePullPolicy": "Never",
                                "command": ["sleep", "3600"],
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": labels, "ports": [{"port": 8000}]},
        },
    ]


def bks(ns: str, db: str) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"name": "site", "namespace": ns},
        "spec": {
            "schedule": "0 0 1 1 *",
            "database": {"host": "127.0.0.1", "name": db, "user": "postgres"},
            "storage": {"persistentVolumeClaim": "backups", "path": "db"},
            "retention": {"days": 30, "minKeep": 1},
            "jobTemplate": {"image": IMAGE, "imagePullPolicy": "Never", "hostNetwork": True},
            "sources": {
                "volumes": [
                    {
                        "name": "media",
                        "persistentVolumeClaim": "media",
                        "exclude": ["cache", "*.tmp"],
                    }
                ],
                "configuration": {
                    "secrets": ["web-env"],
                    "encryption": {
                        "ageRecipients": {
                            "secretKeyRef": {"name": "backup-age", "key": "recipients"}
                        }
                    },
                },
                "systemState": {},
            },
        },
    }


def status(ns: str) -> dict[str, Any]:
    own_crd()  # while we wait too: a peer's CRD would prune status.lastRun when it is written
    st: dict[str, Any] = (
        kit.kubectl_json("get", "backupschedule", "site", "-n", ns).get("status") or {}
    )
    return st


def own_crd() -> None:
    """Peers testing at the same time re-apply their CRDs; a write under one without
    spec.sources would prune it: ours again before every write of the schedule."""
    crd = str(kit.REPO / "crds/backupschedule.yaml")
    kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", crd)


def apply_schedule(body: dict[str, Any]) -> None:
    # The apiserver's published OpenAPI lags a CRD update by seconds: kubectl's client-side
    # check would refuse spec.sources meanwhile; the apiserver validates it with the CRD.
    kit.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(body))


def request(ns: str, what: str, value: str, body: dict[str, Any]) -> None:
    own_crd()
    # Peers' fixtures re-apply their own RBAC too: ours (services, nodes) must be in place.
    kit.kubectl("apply", "-k", str(kit.REPO / "manifests/rbac/cluster"))
    apply_schedule(body)  # spec.sources back, should a peer's CRD have pruned it on a write
    kit.kubectl(
        "annotate",
        "backupschedule",
        "site",
        "-n",
        ns,
        f"ops.stronghold.io/{what}={value}",
        "--overwrite",
    )


def backed_up(ns: str, value: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        for b in status(ns).get("backups") or []:
            if b.get("trigger") == value:
                return b  # type: ignore[no-any-return]
        return None

    entry: dict[str, Any] = kit.wait_until(f"backup {value}", done, timeout=240, interval=2)
    return entry


def backup_run(ns: str, value: str, body: dict[str, Any], backups: Path) -> dict[str, Any]:
    """A successful backup that ran with spec.sources (its run directory exists).

    Peers test on this cluster at the same time and apply their own CRD and ClusterRole: a
    write of the schedule under a CRD without spec.sources prunes it (that backup runs
    database-only), a ClusterRole without services fails the capture (CaptureForbidden,
    recorded once). Such an attempt is not this code's failure: asked again (four at most).
    """
    for attempt in range(4):
        request(ns, "backup-now", f"{value}-{attempt}", body)
        entry = backed_up(ns, f"{value}-{attempt}")
        if entry.get("reason") == "CaptureForbidden":
            continue
        assert entry["result"] == "Succeeded", entry
        ts = str(entry["file"])[len("db_backup_") :].split(".")[0]
        if (backups / f"run_{ts}").is_dir():
            return entry
    raise AssertionError("four backups in a row ran without spec.sources or RBAC (churn)")


def verified(ns: str, job_prefix: str, after: str = "") -> dict[str, Any]:
    """The last verification by a Job named ``job_prefix…`` other than ``after``."""

    def done() -> dict[str, Any] | None:
        last = status(ns).get("lastVerification") or {}
        job = str(last.get("job", ""))
        return last if job.startswith(job_prefix) and job != after and last.get("result") else None

    return kit.wait_until("verification", done, timeout=240, interval=2)  # type: ignore[no-any-return]


def test_cluster_run_with_all_sources_corrupt_media_and_secrets_stay_encrypted(
    namespace: str, media_db: str, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    ns = namespace
    root = Path(f"/tmp/stronghold-bksrc-{ns}")
    media_root = Path(f"/tmp/stronghold-bksrc-media-{ns}")
    plaintext = f"PLAINTEXT-{uuid.uuid4().hex}"
    identity = pyrage.x25519.Identity.generate()
    with kit.hostpath_volume(ns, root), kit.hostpath_volume(ns, media_root, claim="media"):
        (root / "db").mkdir()
        (root / "db").chmod(0o777)
        for rel, data in MEDIA.items():
            (media_root / rel).parent.mkdir(parents=True, exist_ok=True)
            (media_root / rel).write_bytes(data)
        for p in media_root.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)  # the Job runs as uid 999
        kit.apply(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": app_objects(ns, plaintext, str(identity.to_public())),
            }
        )
        kit.wait_until(
            "the web pod running",
            lambda: (
                "Running"
                in kit.kubectl(
                    "get",
                    "pods",
                    "-n",
                    ns,
                    "-l",
                    "app=web",
                    "-o",
                    "jsonpath={.items[*].status.phase}",
                )
            ),
            timeout=120,
            interval=2,
        )
        # Peers' fixtures re-apply their own RBAC: ours (services, nodes) must be in place.
        kit.kubectl("apply", "-k", str(kit.REPO / "manifests/rbac/cluster"))
        op = run_operator(ns)
        body = bks(ns, media_db)
        own_crd()
        apply_schedule(body)
        backups = root / "db"
        first = backup_run(ns, "one", body, backups)
        second = backup_run(ns, "two", body, backups)
        runs = sorted(p for p in backups.iterdir() if p.name.startswith("run_"))
        assert len(runs) == 2, sorted(p.name for p in backups.iterdir())
        st = status(ns)
        assert "lastRun" in st, (st, _termination_messages(ns))  # what the Jobs reported
        last = st["lastRun"]
        # Each artifact's flag (a list: written whole); the run's own flag may be missing here
        # when a peer's CRD pruned status.lastRun between two writes (only changes are sent).
        assert last["run"] == runs[1].name[4:], last
        assert all(a["verified"] for a in last["artifacts"]) and last.get("verified", True), last
        assert [a["kind"] for a in last["artifacts"]] == [
            "database",
            "volume",
            "configuration",
            "secrets",
            "systemState",
        ]
        for run_path in runs:
            man = json.loads((run_path / "manifest.json").read_text())
            for a in man["artifacts"]:
                path = backups / a["name"] if a["kind"] == "database" else run_path / a["name"]
                assert sha256(path) == a["sha256"] and a["verified"] is True, a
        run2 = runs[1]
        assert tar_names(run2 / "volume-media.tar.gz") == KEPT
        with tarfile.open(run2 / "configuration.tar.gz") as t:
            names = t.getnames()
            deployment = yaml.safe_load(t.extractfile("deployments/web.yaml").read())  # type: ignore[union-attr]
        assert {"configmaps/web-config.yaml", "deployments/web.yaml", "services/web.yaml"} <= set(
            names
        )
        assert not [n for n in names if n.startswith("secrets/")]
        assert "status" not in deployment and "managedFields" not in deployment["metadata"]
        assert (
            "resourceVersion" not in deployment["metadata"] and "uid" not in deployment["metadata"]
        )
        state = json.loads((run2 / "system-state.json").read_text())
        web = [i for i in state["images"] if i["container"] == "web"]
        assert web and web[0]["imageID"], state["images"]
        assert state["gitRevisions"] == ["4f2c1e9"]
        assert state["workloads"][0]["revision"] == "1"
        assert state["kubernetesVersions"] and state["nodes"][0]["kubeletVersion"]
        # The listed Secret: encrypted (decrypts with the identity), its plaintext nowhere.
        secrets = pyrage.decrypt((run2 / "secrets.tar.gz.age").read_bytes(), [identity])
        doc = yaml.safe_load(_member(secrets, "secrets/web-env.yaml"))
        assert base64.b64decode(doc["data"]["SECRET_KEY"]).decode() == plaintext
        for p in backups.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                assert plaintext.encode() not in data, p
                assert base64.b64encode(plaintext.encode()) not in data, p
        # The media archive of the first run corrupted: only that run fails verification.
        corrupt(runs[0] / "volume-media.tar.gz")
        request(ns, "verify-now", "v1", body)
        report = verified(ns, "site-verify")
        first_file, second_file = first["file"], second["file"]
        assert report["result"] == "Failed" and report["failed"] == [
            f"{first_file}: ChecksumMismatch"
        ], report
        entries = {b.get("file"): b for b in status(ns)["backups"] if b.get("file")}
        assert entries[first_file]["verified"] is False and entries[second_file]["verified"] is True
        assert "volume-media.tar.gz" in entries[first_file]["verifyMessage"]
        newest = status(ns)["lastRun"]  # the newest run is intact
        assert newest["run"] == runs[1].name[4:] and all(a["verified"] for a in newest["artifacts"])

        # Retention keeps or prunes whole runs: two copies of the second run, 40 and 50 days
        # old, go with their run directories; the two recent runs stay whole.
        old = []
        for days in (40, 50):
            ts = f"{datetime.now(UTC) - timedelta(days=days):%Y%m%d_%H%M%S}"
            name = f"db_backup_{ts}.sql.gz"
            shutil.copy(backups / second_file, backups / name)
            m = json.loads((backups / f"{second_file}.manifest.json").read_text())
            (backups / f"{name}.manifest.json").write_text(json.dumps(m | {"file": name}))
            shutil.copytree(runs[1], backups / f"run_{ts}")
            old.append(ts)
        for p in backups.iterdir():  # the copies are the Job's (uid 999) like the originals
            for q in [p, *(p.rglob("*") if p.is_dir() else [])]:
                os.chown(q, 999, 999)
        request(ns, "verify-now", "v2", body)
        pruned = verified(ns, "site-verify", after=report["job"])
        assert pruned["result"] == "Failed", pruned  # the first run is still corrupt
        left = sorted(p.name for p in backups.iterdir())
        assert not [n for n in left if any(ts in n for ts in old)], left
        assert runs[0].name in left and runs[1].name in left
        assert first_file in left and second_file in left
        everything = [
            kit.kubectl("get", "jobs,pods,backupschedules,configmaps", "-n", ns, "-o", "json"),
            kit.kubectl("get", "events", "-n", ns, "-o", "json"),
            op.logs(),
            "".join(
                kit.kubectl("logs", "-n", ns, name, check=False)
                for name in kit.kubectl("get", "pods", "-n", ns, "-o", "name").split()
                if "site-" in name
            ),
        ]
        secret_b64 = base64.b64encode(plaintext.encode()).decode()
        for text in everything:
            assert plaintext not in text and secret_b64 not in text
        kit.kubectl(
            "delete",
            "backupschedule",
            "site",
            "-n",
            ns,
            "--wait=true",
            "--timeout=90s",
            check=False,
        )


def _termination_messages(ns: str) -> list[str]:
    pods = kit.kubectl_json("get", "pods", "-n", ns)["items"]
    return [
        str(((c.get("state") or {}).get("terminated") or {}).get("message"))
        for p in pods
        for c in (p.get("status") or {}).get("containerStatuses") or []
        if (c.get("state") or {}).get("terminated")
    ]


def _member(tar_gz: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_gz)) as t:
        f = t.extractfile(name)
        assert f is not None
        return f.read()
