"""The backup Job's program: run as the Job runs it, and kept in its ConfigMap.

Real bash, real pg_dump/psql and real files in a temporary directory laid out as the
ConfigMap mounts them: the helper imports the operator's retention module from the mount,
and retention keeps every archive when none is verified any more. Then the ConfigMap itself
on the real API server: created, adopted, brought up to date.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stronghold_operator.builders import backup_program
from stronghold_operator.platforms.configmaps import ensure_configmap
from stronghold_operator.platforms.kube import Kube
from tests.integration import health_kit as hk
from tests.integration import kit
from tests.integration.job_program import run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    schema = "CREATE TABLE t(id int); INSERT INTO t SELECT generate_series(1, 321)"
    with hk.scratch_database("bkprog", schema) as db:
        yield db


def test_backup_then_every_archive_corrupt_keeps_everything(database: str, tmp_path: Path) -> None:
    first = run(tmp_path, database, "backup")
    assert first["ok"] is True and first["rows"] == 321, first
    backups = tmp_path / "backups"
    # Make it and two more copies old (beyond retention.days), then corrupt every one.
    old = []
    for days in (40, 50, 60):
        name = f"db_backup_{datetime.now(UTC) - timedelta(days=days):%Y%m%d_%H%M%S}.sql.gz"
        (backups / name).write_bytes((backups / str(first["file"])).read_bytes()[:100])
        manifest = json.loads((backups / f"{first['file']}.manifest.json").read_text())
        (backups / f"{name}.manifest.json").write_text(json.dumps(manifest | {"file": name}))
        old.append(name)
    (backups / str(first["file"])).unlink()
    (backups / f"{first['file']}.manifest.json").unlink()

    report = run(tmp_path, database, "verify")
    assert report["ok"] is True and report["checked"] == 3, report
    assert report["pruned"] == []
    held = report["retentionHeld"]
    assert isinstance(held, dict) and held["reason"] == "NoVerifiedArchive", report
    assert sorted(p.name for p in backups.glob("db_backup_*.sql.gz")) == sorted(old)


async def test_program_configmap_is_created_adopted_and_repaired(namespace: str) -> None:
    # An owner that exists (garbage collection deletes what a missing owner owned), with
    # the longest name there is: the program's name is shortened with a hash.
    long_name = "s" * 253
    kit.kubectl("create", "configmap", long_name, "-n", namespace)
    uid = kit.kubectl(
        "get", "configmap", long_name, "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    )
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": long_name, "namespace": namespace, "uid": uid},
    }
    manifest = backup_program.program_configmap(owner)
    name = manifest["metadata"]["name"]
    key = backup_program.ANNOTATION_PROGRAM
    kube = Kube.connect()
    try:
        assert await ensure_configmap(kube, manifest, key) == "created"
        assert await ensure_configmap(kube, manifest, key) == "kept"
        # An edited program (same annotation) and an old release's hash are both replaced.
        kit.kubectl("patch", "configmap", name, "-n", namespace, "-p", '{"data":{"backup.sh":"x"}}')
        assert await ensure_configmap(kube, manifest, key) == "updated"
        kit.kubectl("annotate", "configmap", name, "-n", namespace, f"{key}=old", "--overwrite")
        assert await ensure_configmap(kube, manifest, key) == "updated"
        got = kit.kubectl_json("get", "configmap", name, "-n", namespace)
        assert got["data"] == backup_program.program_files()
        assert got["metadata"]["annotations"][key] == backup_program.program_hash()
        assert got["metadata"]["ownerReferences"][0]["uid"] == uid
    finally:
        await kube.aclose()
