"""Off-site copies: the Job's SigV4 signing and sync decisions, the spec, status recording."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stronghold_operator.builders.jobs import offsite
from stronghold_operator.logic import backup as lb
from stronghold_operator.logic.backup_offsite import apply_offsite, offsite_condition
from stronghold_operator.logic.backup_results import JobView, Report, record
from stronghold_operator.models.backup import BackupScheduleSpec
from stronghold_operator.models.base import InvalidSpec, parse

NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def test_signature_v4_matches_the_aws_documented_example() -> None:
    # "GET Object" of the S3 SigV4 documentation (header-based authentication).
    headers = offsite.sign(
        "GET",
        "/test.txt",
        {},
        {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9"},
        offsite.EMPTY_SHA256,
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        when=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert "wJalr" not in json.dumps(headers)


class FakeStore:
    """An in-memory bucket with the Store methods sync() calls; ``down`` makes every call
    fail as an unreachable server does."""

    def __init__(self) -> None:
        self.bucket = "b"
        self.objects: dict[str, str] = {}  # key -> sha256
        self.down = False
        self.puts: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise offsite.OffsiteError("OffsiteUnreachable", "127.0.0.1:9: refused")

    def stored_sha256(self, key: str) -> str | None:
        self._check()
        return self.objects.get(key)

    def put_file(self, key: str, path: str, sha: str, content_type: str) -> None:
        self._check()
        self.puts.append(key)
        self.objects[key] = offsite.sha256_file(path)

    def list(self, prefix: str, page: int = 1000) -> list[tuple[str, int]]:
        self._check()
        return [(k, 0) for k in sorted(self.objects) if k.startswith(prefix)]

    def delete(self, key: str) -> None:
        self._check()
        self.objects.pop(key, None)


def _archive(d: Path, when: datetime) -> tuple[str, str]:
    name = f"db_backup_{when:%Y%m%d_%H%M%S}.sql.gz"
    (d / name).write_bytes(name.encode())
    (d / (name + ".manifest.json")).write_text("{}")
    return name, offsite.sha256_file(str(d / name))


def _sync(d: Path, store: FakeStore, verified: dict[str, str]) -> dict[str, Any]:
    return offsite.sync(str(d), verified, store, "p/", 30, 1, NOW)  # type: ignore[arg-type]


def test_sync_copies_what_is_missing_and_prunes_the_bucket_like_local(tmp_path: Path) -> None:
    store = FakeStore()
    old = "db_backup_20261001_000000.sql.gz"  # an earlier run's copy, 66 days old
    store.objects |= {"p/" + old: "x", "p/" + old + ".manifest.json": "y"}
    a, sha_a = _archive(tmp_path, NOW - timedelta(days=1))
    report = _sync(tmp_path, store, {a: sha_a})
    assert set(report["copies"]) == {a} and report["missing"] == []
    assert report["pruned"] == [old] and "reason" not in report
    assert set(store.objects) == {"p/" + a, "p/" + a + ".manifest.json"}
    # A second run uploads nothing that is there with the same checksum.
    store.puts.clear()
    assert set(_sync(tmp_path, store, {a: sha_a})["copies"]) == {a}
    assert store.puts == []


def test_sync_with_the_store_down_reports_every_archive_missing(tmp_path: Path) -> None:
    store = FakeStore()
    a, sha_a = _archive(tmp_path, NOW - timedelta(days=1))
    b, sha_b = _archive(tmp_path, NOW)
    store.down = True
    report = _sync(tmp_path, store, {a: sha_a, b: sha_b})
    assert report["copies"] == {} and report["missing"] == [b, a]
    assert report["reason"] == "OffsiteUnreachable"
    store.down = False
    assert set(_sync(tmp_path, store, {a: sha_a, b: sha_b})["copies"]) == {a, b}


def test_a_changed_file_is_never_reported_copied(tmp_path: Path) -> None:
    store = FakeStore()
    a, _ = _archive(tmp_path, NOW)
    report = _sync(tmp_path, store, {a: "0" * 64})  # the manifest's sha256 no longer matches
    assert report["copies"] == {} and report["missing"] == [a]
    assert report["reason"] == "OffsiteChecksumMismatch"


OFFSITE = {
    "endpoint": "https://s3.example.net/",
    "bucket": "stronghold-backups",
    "prefix": "/prod//db",
    "accessKeyId": {"secretKeyRef": {"name": "s3", "key": "id"}},
    "secretAccessKey": {"secretKeyRef": {"name": "s3", "key": "secret"}},
}
BASE = {
    "schedule": "0 2 * * *",
    "database": {"host": "127.0.0.1", "name": "app", "user": "app"},
    "storage": {"persistentVolumeClaim": "backups"},
}


def test_spec_normalises_and_names_bad_fields() -> None:
    spec = parse(BackupScheduleSpec, BASE | {"offsite": OFFSITE})
    assert spec.offsite is not None
    assert spec.offsite.endpoint == "https://s3.example.net"
    assert spec.offsite.prefix == "prod/db/"
    for field, value in (
        ("endpoint", "ftp://x"),
        ("bucket", "Bad_Bucket"),
        ("prefix", "a/../b"),
    ):
        with pytest.raises(InvalidSpec) as exc:
            parse(BackupScheduleSpec, BASE | {"offsite": OFFSITE | {field: value}})
        assert f"offsite.{field}" in str(exc.value)
    with pytest.raises(InvalidSpec, match="secretAccessKey"):
        parse(BackupScheduleSpec, BASE | {"offsite": {**OFFSITE, "secretAccessKey": "plain"}})


def _backups() -> list[dict[str, Any]]:
    return [
        {"name": "j3", "result": "Succeeded", "file": "f3", "verified": True},
        {"name": "j2", "result": "Succeeded", "file": "f2", "verified": True},
        {
            "name": "j1",
            "result": "Succeeded",
            "file": "f1",
            "offsite": {"copied": True, "bucket": "b", "key": "p/f1", "verifiedAt": "t0"},
        },
    ]


def test_apply_offsite_records_copies_and_failures_but_keeps_proved_copies() -> None:
    down = {"bucket": "b", "prefix": "p/", "copies": {}, "missing": ["f3", "f1"]}
    down |= {"reason": "OffsiteUnreachable", "message": "refused"}
    out = apply_offsite(_backups(), down)
    assert out[0]["offsite"] == {
        "copied": False,
        "bucket": "b",
        "reason": "OffsiteUnreachable",
        "message": "refused",
    }
    assert "offsite" not in out[1]
    assert out[2]["offsite"]["copied"] is True  # proved earlier; an outage does not undo it
    c = offsite_condition(out)
    assert (c.status, c.reason) == ("False", "OffsiteUnreachable")
    retry = {"bucket": "b", "prefix": "p/", "copies": {"f3": "t1", "f2": "t1"}, "missing": []}
    out = apply_offsite(out, retry)
    assert out[0]["offsite"] == {"copied": True, "bucket": "b", "key": "p/f3", "verifiedAt": "t1"}
    c = offsite_condition(out)
    assert (c.status, c.reason) == ("True", "Copied")
    assert offsite_condition([]).status == "Unknown"


def test_a_backup_result_with_an_offsite_failure_stays_a_good_backup() -> None:
    report = Report({"backups": []}, NOW)
    data = {
        "ok": True,
        "kind": "backup",
        "file": "db_backup_20261206_040000.sql.gz",
        "sha256": "ab" * 32,
        "verified": True,
        "offsite": {
            "bucket": "b",
            "prefix": "",
            "copies": {},
            "missing": ["db_backup_20261206_040000.sql.gz"],
            "reason": "OffsiteUnreachable",
            "message": "127.0.0.1:9000: refused",
        },
    }
    job = JobView("s-202612060400", "backup", finished=True, succeeded=True)
    record(report, 10, job, lb.parse_result(json.dumps(data)))
    entry = report.status["backups"][0]
    assert entry["result"] == "Succeeded" and entry["verified"] is True
    assert entry["offsite"]["copied"] is False
    reasons = [e.reason for e in report.events]
    assert "BackupSucceeded" in reasons and "OffsiteCopyFailed" in reasons
