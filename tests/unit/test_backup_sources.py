"""spec.sources and runs: models, the operator's capture, the Job's pure run logic, status."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import tarfile
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pyrage
import pytest
import yaml

from stronghold_operator.builders.backup_job import backup_job
from stronghold_operator.builders.backup_sources import capture_configmap, with_sources
from stronghold_operator.builders.jobs import stronghold_runs as runs
from stronghold_operator.logic import backup_capture as lc
from stronghold_operator.logic.backup_runs import last_run
from stronghold_operator.models.backup import BackupScheduleSpec
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.services import backup as service
from stronghold_operator.services import backup_sources as svc
from tests.unit import test_backup_service as tbs

BASE: dict[str, Any] = {
    "schedule": "@daily",
    "database": {"host": "db", "name": "app", "user": "backup"},
    "storage": {"persistentVolumeClaim": "backups"},
}
RECIPIENT_KEY = pyrage.x25519.Identity.generate()
ENCRYPTION = {"ageRecipients": {"secretKeyRef": {"name": "age", "key": "recipients"}}}


def model(**sources: Any) -> BackupScheduleSpec:
    return parse(BackupScheduleSpec, {**BASE, "sources": sources})


# --- models --------------------------------------------------------------------------------


def test_existing_specs_keep_working_with_the_database_only() -> None:
    spec = parse(BackupScheduleSpec, BASE)
    assert spec.sources.database is True and not spec.sources.extra


@pytest.mark.parametrize(
    ("sources", "field"),
    [
        ({"configuration": {"secrets": ["web-env"]}}, "sources.configuration"),
        ({"database": False}, "sources.database"),
        (
            {"volumes": [{"name": "m", "persistentVolumeClaim": "a"}] * 2},
            "sources.volumes",
        ),
        ({"volumes": [{"name": "m", "persistentVolumeClaim": "a", "path": "../x"}]}, "path"),
        (
            {"volumes": [{"name": "m", "persistentVolumeClaim": "a", "exclude": ["/etc"]}]},
            "exclude",
        ),
        ({"volumes": [{"name": "Media", "persistentVolumeClaim": "a"}]}, "name"),
    ],
)
def test_invalid_sources_are_refused_naming_the_field(sources: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        model(**sources)
    assert field in str(err.value)


# --- the Job's pure run logic -------------------------------------------------------------

FILES = [
    "a.png",
    "avatars/b.png",
    "avatars/2026/c.JPG",
    "cache/x.bin",
    "avatars/cache/y.png",
    "upload.tmp",
    "docs/report.pdf",
]


@pytest.mark.parametrize(
    ("include", "exclude", "want"),
    [
        ([], [], sorted(FILES)),
        ([], ["cache"], sorted(set(FILES) - {"cache/x.bin", "avatars/cache/y.png"})),
        (
            [],
            ["cache/", "*.tmp"],
            sorted(set(FILES) - {"cache/x.bin", "avatars/cache/y.png", "upload.tmp"}),
        ),
        (["*.png"], [], ["a.png", "avatars/b.png", "avatars/cache/y.png"]),
        (["avatars/*"], [], ["avatars/b.png"]),
        (["avatars/**"], ["**/cache/**"], ["avatars/2026/c.JPG", "avatars/b.png"]),
        (["*.[Jj][Pp][Gg]"], [], ["avatars/2026/c.JPG"]),
        (["docs/report.pdf"], [], ["docs/report.pdf"]),
    ],
)
def test_glob_filtering(include: list[str], exclude: list[str], want: list[str]) -> None:
    assert runs.filter_files(FILES, include, exclude) == want


def test_manifest_lists_every_artifact_and_is_verified_only_if_all_are() -> None:
    arts = [
        {
            "name": "db_backup_20261206_040000.sql.gz",
            "kind": "database",
            "sizeBytes": 10,
            "verified": True,
        },
        {"name": "volume-media.tar.gz", "kind": "volume", "sizeBytes": 32, "verified": True},
    ]
    man = runs.build_manifest("20261206_040000", {"job": "j"}, arts)
    assert man["artifactCount"] == 2 and man["sizeBytes"] == 42 and man["verified"] is True
    assert man["job"] == "j" and man["run"] == "20261206_040000"
    arts[1]["verified"] = False
    assert runs.build_manifest("r", {}, arts)["verified"] is False


def test_summary_is_bounded_and_shortens_the_checksums() -> None:
    arts = [
        {"name": f"volume-v{i}.tar.gz", "kind": "volume", "sha256": "ab" * 32} for i in range(30)
    ]
    man = runs.build_manifest("20261206_040000", {"job": "j"}, arts)
    s = runs.summarize(man)
    assert len(s["artifacts"]) == runs.SUMMARY_ARTIFACTS and s["artifactCount"] == 30
    assert s["artifacts"][0]["sha256"] == "ab" * 8
    assert s["manifest"] == "run_20261206_040000/manifest.json"
    assert len(json.dumps(s)) < 2000  # room for the rest of a 4 KiB termination message


def test_retention_removes_runs_whole_and_leftovers_only_when_stale() -> None:
    now = 1_000_000.0
    entries = {
        "run_20260101_020000": now,  # its archive was deleted by retention
        "run_20261201_020000": now - 10,  # live
        "run_20261101_020000": now - 7200,  # orphan: its archive is gone, untouched 2 h
        "run_20261102_020000": now - 60,  # orphan but fresh: a run being published
        ".run_20261203_020000.job.partial": now - 7200,  # a killed run's leftovers
        ".run_20261204_020000.job.partial": now - 5,  # a running Job's
    }
    gone = runs.runs_to_remove(
        ["db_backup_20260101_020000.sql.gz"],
        ["db_backup_20260101_020000.sql.gz", "db_backup_20261201_020000.sql.gz"],
        entries,
        now,
    )
    assert gone == [
        ".run_20261203_020000.job.partial",
        "run_20260101_020000",
        "run_20261101_020000",
    ]


def test_a_run_fails_verification_with_its_first_failing_artifact() -> None:
    ok = (True, "Verified", "")
    assert runs.combine(ok, []) == ok
    bad_db = (False, "ChecksumMismatch", "db")
    assert runs.combine(bad_db, [("volume-m.tar.gz", "X", "y")]) == bad_db
    got = runs.combine(ok, [("volume-m.tar.gz", "ChecksumMismatch", "sha"), ("c", "X", "y")])
    assert got == (False, "ChecksumMismatch", "run artifact volume-m.tar.gz: sha (+1 more)")


def test_run_names_follow_the_archive() -> None:
    assert runs.run_dir("db_backup_20261206_040000.dump") == "run_20261206_040000"
    assert runs.run_dir("notes.txt") is None


# --- the operator's capture ---------------------------------------------------------------

DEPLOYMENT = {
    "metadata": {
        "name": "web",
        "namespace": "prod",
        "uid": "u",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl"}],
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "deployment.kubernetes.io/revision": "7",
            "ops.stronghold.io/git-revision": "4f2c1e9",
        },
        "labels": {"app": "web"},
    },
    "spec": {
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "web", "image": "web:1.4"}]}},
    },
    "status": {"readyReplicas": 2},
}


def test_yaml_cleaning_keeps_what_one_reapplies() -> None:
    clean = lc.clean_object(DEPLOYMENT, "Deployment", "apps/v1")
    assert clean["apiVersion"] == "apps/v1" and clean["kind"] == "Deployment"
    assert "status" not in clean
    assert clean["metadata"] == {
        "name": "web",
        "namespace": "prod",
        "labels": {"app": "web"},
        "annotations": {"ops.stronghold.io/git-revision": "4f2c1e9"},
    }
    assert clean["spec"] == DEPLOYMENT["spec"]
    svc_obj = {
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]},
    }
    assert lc.clean_object(svc_obj, "Service", "v1")["spec"] == {"ports": [{"port": 80}]}


def test_configuration_bundle_is_deterministic_yaml_per_object() -> None:
    objs = [lc.clean_object(DEPLOYMENT, "Deployment", "apps/v1")]
    one, two = lc.configuration_bundle(objs), lc.configuration_bundle(objs)
    assert one == two
    with tarfile.open(fileobj=io.BytesIO(one)) as t:
        assert t.getnames() == ["deployments/web.yaml"]
        f = t.extractfile("deployments/web.yaml")
        assert f is not None and yaml.safe_load(f.read())["spec"]["replicas"] == 2


def test_secrets_are_encrypted_for_the_recipients_only() -> None:
    plain = "PLAINTEXT-value-xyz"
    secret = {
        "metadata": {"name": "web-env"},
        "data": {"K": base64.b64encode(plain.encode()).decode()},
    }
    recipients = lc.parse_recipients(f"# ops\n\n{RECIPIENT_KEY.to_public()}\n")
    data = lc.encrypt([lc.clean_object(secret, "Secret", "v1")], recipients)
    assert data.startswith(runs.AGE_HEADER)
    assert plain.encode() not in data and secret["data"]["K"].encode() not in data
    inner = gzip.decompress(pyrage.decrypt(data, [RECIPIENT_KEY]))
    assert secret["data"]["K"].encode() in inner


def test_bad_recipients_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="line 2") as err:
        lc.parse_recipients("# comment\nnot-a-key-SECRETISH\n")
    assert "SECRETISH" not in str(err.value)
    with pytest.raises(ValueError, match="no age recipient"):
        lc.parse_recipients("# only a comment\n")


def test_system_state_images_revisions_and_nodes() -> None:
    running = {
        "metadata": {"name": "web-1"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "web",
                    "image": "web:1.4",
                    "imageID": "docker-pullable://web@sha256:ab",
                    "ready": True,
                }
            ],
        },
    }
    pending = {"metadata": {"name": "web-2"}, "status": {"phase": "Pending"}}
    sts = {
        "metadata": {"name": "db"},
        "spec": {},
        "status": {"currentRevision": "db-5", "updateRevision": "db-6"},
    }
    node = {"metadata": {"name": "n1"}, "status": {"nodeInfo": {"kubeletVersion": "v1.20.2"}}}
    state = lc.system_state(
        namespace="prod",
        captured_at="2026-12-06T04:00:00Z",
        pods=[running, pending],
        deployments=[DEPLOYMENT],
        statefulsets=[sts],
        nodes=[node],
        git_annotation="ops.stronghold.io/git-revision",
    )
    assert [i["imageID"] for i in state["images"]] == ["docker-pullable://web@sha256:ab"]
    web, db = state["workloads"]
    assert (
        web["revision"] == "7" and web["gitRevision"] == "4f2c1e9" and web["images"] == ["web:1.4"]
    )
    assert db["currentRevision"] == "db-5" and db["updateRevision"] == "db-6"
    assert state["gitRevisions"] == ["4f2c1e9"] and state["kubernetesVersions"] == ["v1.20.2"]
    unreadable = lc.system_state(
        namespace="p",
        captured_at="t",
        pods=[],
        deployments=[],
        statefulsets=[],
        nodes=None,
        git_annotation="x",
    )
    assert str(unreadable["nodes"]).startswith("unavailable")


# --- Job manifest, capture ConfigMap, service ---------------------------------------------


def test_job_gets_read_only_volumes_and_the_capture_but_no_secret_data() -> None:
    spec = model(
        volumes=[
            {
                "name": "media",
                "persistentVolumeClaim": "media",
                "path": "/uploads/",
                "exclude": ["*.tmp"],
            }
        ],
        configuration={"secrets": ["web-env"], "encryption": ENCRYPTION},
    )
    job = backup_job(
        owner={"kind": "BackupSchedule", "metadata": tbs.meta()},
        job_name="nightly-202612060400",
        kind="backup",
        spec=spec,
        slot=datetime(2026, 12, 6, 4, tzinfo=UTC),
        trigger="scheduled",
    )
    out = with_sources(job, spec)
    pod = out["spec"]["template"]["spec"]
    c = pod["containers"][0]
    vol = next(v for v in pod["volumes"] if v["name"] == "src-media")
    assert vol["persistentVolumeClaim"] == {"claimName": "media", "readOnly": True}
    assert {
        "name": "src-media",
        "mountPath": "/var/run/stronghold/volumes/media",
        "readOnly": True,
    } in c["volumeMounts"]
    cap = next(v for v in pod["volumes"] if v["name"] == "capture")
    assert cap["configMap"]["name"] == "nightly-202612060400-capture"
    env = {e["name"]: e["value"] for e in c["env"]}
    described = json.loads(env["STRONGHOLD_SOURCES"])
    assert described["volumes"][0]["dir"] == "/var/run/stronghold/volumes/media/uploads"
    assert described["volumes"][0]["exclude"] == ["*.tmp"]
    assert "web-env" not in json.dumps(out)  # the Secret's name is the operator's business
    assert with_sources(job, parse(BackupScheduleSpec, BASE)) == job


def test_capture_configmap_is_owned_by_the_job() -> None:
    job = {"metadata": {"name": "j", "namespace": "ns", "uid": "job-uid"}}
    cm = capture_configmap(job, {"system-state.json": b"{}"})
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "job-uid"
    assert cm["binaryData"] == {"system-state.json": base64.b64encode(b"{}").decode()}


class FakeSources:
    def __init__(
        self, objects: Mapping[str, list[dict[str, Any]]], secrets: Mapping[str, dict[str, Any]]
    ) -> None:
        self.by_kind = objects
        self.secrets = secrets
        self.put: list[Mapping[str, Any]] = []

    async def objects(self, kind: str) -> list[Mapping[str, Any]]:
        return list(self.by_kind.get(kind, []))

    async def nodes(self) -> list[Mapping[str, Any]] | None:
        return None

    async def secret(self, name: str) -> Mapping[str, Any] | None:
        return self.secrets.get(name)

    async def put_capture(self, manifest: Mapping[str, Any]) -> None:
        self.put.append(manifest)


def age_secret() -> dict[str, Any]:
    key = base64.b64encode(str(RECIPIENT_KEY.to_public()).encode()).decode()
    return {"metadata": {"name": "age"}, "data": {"recipients": key}}


def test_capture_skips_our_own_configmaps_and_refuses_a_missing_secret() -> None:
    spec = model(configuration={"secrets": ["web-env"], "encryption": ENCRYPTION}, systemState={})
    ours = {
        "metadata": {
            "name": "x-backup-program",
            "labels": {"app.kubernetes.io/managed-by": "stronghold-operator"},
        }
    }
    objects = {
        "ConfigMap": [
            {"metadata": {"name": "app"}},
            {"metadata": {"name": "kube-root-ca.crt"}},
            ours,
        ],
        "Deployment": [DEPLOYMENT],
    }
    now = datetime(2026, 12, 6, tzinfo=UTC)
    missing = asyncio.run(svc.capture(spec, "ns", FakeSources(objects, {"age": age_secret()}), now))
    assert missing == (
        "SecretMissing",
        "spec.sources.configuration.secrets: Secret web-env not found",
    )
    secret = {"metadata": {"name": "web-env"}, "data": {"K": "UExBSU4="}}
    got = asyncio.run(
        svc.capture(spec, "ns", FakeSources(objects, {"age": age_secret(), "web-env": secret}), now)
    )
    assert isinstance(got, lc.Capture)
    assert sorted(got.files) == [
        "capture.json",
        "configuration.tar.gz",
        "secrets.tar.gz.age",
        "system-state.json",
    ]
    with tarfile.open(fileobj=io.BytesIO(got.files["configuration.tar.gz"])) as t:
        assert t.getnames() == ["configmaps/app.yaml", "deployments/web.yaml"]
    index = json.loads(got.files["capture.json"])["artifacts"]
    assert (
        index["configuration.tar.gz"]["objects"] == 2
        and index["secrets.tar.gz.age"]["objects"] == 1
    )
    assert b"UExBSU4=" not in b"".join(got.files.values())


def test_a_backup_with_a_missing_listed_secret_is_recorded_failed_and_no_job_starts() -> None:
    cluster = tbs.Cluster()
    ports = service.Ports(
        jobs=cluster,
        pods=tbs.Pods(cluster),
        program=cluster,
        preflight=tbs.Preflight(cluster),
        clock=lambda: tbs.T0,
        maintenance=lambda: None,
        sources=FakeSources({}, {"age": age_secret()}),
    )
    raw = {
        **tbs.spec(),
        "sources": {"configuration": {"secrets": ["gone"], "encryption": ENCRYPTION}},
    }
    compiled = service.compile_spec(raw, frozenset())
    result = asyncio.run(service.reconcile(compiled, tbs.meta(), ports, {}))
    assert cluster.created == []
    entry = result.status.to_status()["backups"][0]
    assert entry["result"] == "Failed" and entry["reason"] == "SecretMissing"


def test_a_backup_with_sources_creates_its_capture_owned_by_the_job() -> None:
    cluster = tbs.Cluster()
    fake = FakeSources({"ConfigMap": [{"metadata": {"name": "app"}}]}, {})
    ports = service.Ports(
        jobs=cluster,
        pods=tbs.Pods(cluster),
        program=cluster,
        preflight=tbs.Preflight(cluster),
        clock=lambda: tbs.T0,
        maintenance=lambda: None,
        sources=fake,
    )
    raw = {**tbs.spec(), "sources": {"configuration": {}}}
    asyncio.run(service.reconcile(service.compile_spec(raw, frozenset()), tbs.meta(), ports, {}))
    assert cluster.created == [tbs.SLOT_JOB]
    (cm,) = fake.put
    assert cm["metadata"]["name"] == f"{tbs.SLOT_JOB}-capture"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == f"uid-{tbs.SLOT_JOB}"


# --- status ------------------------------------------------------------------------------


def test_last_run_follows_the_newest_run() -> None:
    reported = {
        "run": "20261206_040000",
        "job": "j",
        "manifest": "run_20261206_040000/manifest.json",
        "verified": False,
        "artifacts": [
            {
                "name": "volume-m.tar.gz",
                "kind": "volume",
                "sizeBytes": 3,
                "sha256": "ab",
                "verified": False,
                "verifyReason": "ChecksumMismatch",
            }
        ],
    }
    got = last_run(None, reported)
    assert got is not None and got["artifacts"][0]["verifyReason"] == "ChecksumMismatch"
    assert last_run({"run": "20261207_040000"}, reported) is None  # an older run: keep
    assert last_run(got, {"run": ""}) is None


class ForbiddenSources(FakeSources):
    async def objects(self, kind: str) -> list[Mapping[str, Any]]:
        raise PermissionError(f"the operator may not list {kind.lower()}s in ns")


def test_a_capture_rbac_refuses_is_a_recorded_failure_not_a_retry_loop() -> None:
    spec = model(configuration={})
    got = asyncio.run(
        svc.capture(spec, "ns", ForbiddenSources({}, {}), datetime(2026, 1, 1, tzinfo=UTC))
    )
    assert isinstance(got, tuple) and got[0] == "CaptureForbidden" and "configmaps" in got[1]


class FailingPut(FakeSources):
    async def put_capture(self, manifest: Mapping[str, Any]) -> None:
        raise OSError("apiserver unavailable")


def test_a_job_whose_capture_cannot_be_created_is_deleted_and_started_again() -> None:
    cluster = tbs.Cluster()

    def ports(src: FakeSources) -> service.Ports:
        return service.Ports(
            jobs=cluster,
            pods=tbs.Pods(cluster),
            program=cluster,
            preflight=tbs.Preflight(cluster),
            clock=lambda: tbs.T0,
            maintenance=lambda: None,
            sources=src,
        )

    compiled = service.compile_spec({**tbs.spec(), "sources": {"systemState": {}}}, frozenset())
    with pytest.raises(OSError, match="unavailable"):
        asyncio.run(service.reconcile(compiled, tbs.meta(), ports(FailingPut({}, {})), {}))
    assert cluster.created == [tbs.SLOT_JOB] and cluster.jobs == {}  # no Job left waiting
    good = FakeSources({}, {})
    asyncio.run(service.reconcile(compiled, tbs.meta(), ports(good), {}))
    assert cluster.created == [tbs.SLOT_JOB, tbs.SLOT_JOB] and len(good.put) == 1
