"""The backup Job's program: run as the Job runs it, and kept in its ConfigMap.

Real bash, real pg_dump/psql and real files in a temporary directory laid out as the
ConfigMap mounts them: the helper imports the operator's retention module from the mount,
and retention keeps every archive when none is verified any more. Then the ConfigMap itself
on the real API server: created, adopted, brought up to date.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stronghold_operator.builders import backup_program
from stronghold_operator.platforms.configmaps import ensure_configmap
from stronghold_operator.platforms.kube import Kube
from tests.integration import health_kit as hk
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    schema = "CREATE TABLE t(id int); INSERT INTO t SELECT generate_series(1, 321)"
    with hk.scratch_database("bkprog", schema) as db:
        yield db


def lay_out(root: Path) -> Path:
    """The program directory as the pod sees it (the volume's items, read-only files)."""
    program = root / "program"
    volume = backup_program.program_volume("s")["configMap"]
    files = backup_program.program_files()
    for item in volume["items"]:
        path = program / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[item["key"]])
        path.chmod(volume["defaultMode"])
    return program


def run(root: Path, db: str, mode: str, **env: str) -> dict[str, object]:
    (root / "work").mkdir(exist_ok=True)
    term = root / "termination-log"
    term.unlink(missing_ok=True)
    full = {
        "PATH": os.environ["PATH"],
        "STRONGHOLD_MODE": mode,
        "JOB_NAME": f"s-{mode}",
        "BACKUP_DIR": str(root / "backups"),
        "BACKUP_FORMAT": "plain",
        "GZIP_LEVEL": "1",
        "RETENTION_DAYS": "30",
        "MIN_KEEP": "2",
        "PGHOST": "127.0.0.1",
        "PGPORT": "5432",
        "PGDATABASE": db,
        "PGUSER": "postgres",
        "STRONGHOLD_WORK": str(root / "work"),
        "STRONGHOLD_SECRET": str(root / "no-secret"),
        "TERMINATION_LOG": str(term),
        **env,
    }
    proc = subprocess.run(
        ["bash", str(lay_out(root) / "backup.sh")],
        env=full,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert term.exists(), proc.stderr
    result: dict[str, object] = json.loads(term.read_text())
    return result


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
