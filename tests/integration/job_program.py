"""The backup Job's program run on this machine as the Job runs it: real bash, pg_dump, psql
and files in a temporary directory laid out as its ConfigMap mounts them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from stronghold_operator.builders import backup_program


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


def run(root: Path, db: str, mode: str, **env: str) -> dict[str, Any]:
    """backup.sh in ``mode`` against database ``db``; its termination message (the report)."""
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
        timeout=120,
        check=False,
    )
    assert term.exists(), proc.stderr
    result: dict[str, Any] = json.loads(term.read_text())
    return result
