"""The backup Jobs' program as a ConfigMap, one per BackupSchedule (pure).

The Jobs run in a user-chosen PostgreSQL client image, so the program cannot be baked into
an image of ours: the operator keeps it in a ConfigMap owned by the schedule and mounts it
read-only. The files are this package's own (``builders/jobs/`` and ``logic/retention.py``,
the retention rules the operator uses too); their sha256 is annotated on the ConfigMap, so a
new operator release replaces an old program, and on every Job, which records what it ran.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from importlib import resources
from typing import Any

__all__ = [
    "ANNOTATION_PROGRAM",
    "PROGRAM_MOUNT",
    "configmap_name",
    "program_configmap",
    "program_files",
    "program_hash",
    "program_volume",
]

PROGRAM_MOUNT = "/var/run/stronghold/program"
ANNOTATION_PROGRAM = "ops.stronghold.io/program-sha256"
_NAME_MAX = 253  # a ConfigMap name is a DNS-1123 subdomain
_SUFFIX = "-backup-program"

# ConfigMap key -> (path in the mount, package, resource). retention.py keeps its import
# path under the mount: the helper imports the very module the operator's tests import.
_FILES = {
    "backup.sh": ("backup.sh", "stronghold_operator.builders.jobs", "backup.sh"),
    "stronghold_job.py": (
        "stronghold_job.py",
        "stronghold_operator.builders.jobs",
        "stronghold_job.py",
    ),
    "count-rows.sql": ("count-rows.sql", "stronghold_operator.builders.jobs", "count-rows.sql"),
    "target-objects.sql": (
        "target-objects.sql",
        "stronghold_operator.builders.jobs",
        "target-objects.sql",
    ),
    "throwaway_pg.py": (
        "throwaway_pg.py",
        "stronghold_operator.builders.jobs",
        "throwaway_pg.py",
    ),
    "offsite.py": (
        "stronghold_operator/builders/jobs/offsite.py",
        "stronghold_operator.builders.jobs",
        "offsite.py",
    ),
    "retention.py": (
        "stronghold_operator/logic/retention.py",
        "stronghold_operator.logic",
        "retention.py",
    ),
    # Runs (spec.sources): beside the helper, which imports it.
    "stronghold_runs.py": (
        "stronghold_runs.py",
        "stronghold_operator.builders.jobs",
        "stronghold_runs.py",
    ),
}


@functools.cache
def program_files() -> dict[str, str]:
    """ConfigMap key -> text of every file of the program (read once from the package)."""
    return {
        key: resources.files(package).joinpath(name).read_text(encoding="utf-8")
        for key, (_, package, name) in _FILES.items()
    }


def mount_paths() -> dict[str, str]:
    """ConfigMap key -> path under :data:`PROGRAM_MOUNT`."""
    return {key: path for key, (path, _, _) in _FILES.items()}


@functools.cache
def program_hash() -> str:
    """sha256 over every key and file: it changes whenever any byte of the program does."""
    h = hashlib.sha256()
    for key, text in sorted(program_files().items()):
        h.update(key.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def configmap_name(schedule: str) -> str:
    """``<schedule>-backup-program``, shortened with a hash to fit 253 characters."""
    if len(schedule) + len(_SUFFIX) <= _NAME_MAX:
        return schedule + _SUFFIX
    digest = hashlib.sha256(schedule.encode()).hexdigest()[:8]
    head = schedule[: _NAME_MAX - len(_SUFFIX) - 9].rstrip("-.")
    return f"{head}-{digest}{_SUFFIX}"


def program_volume(schedule: str) -> dict[str, Any]:
    """The pod volume that mounts the program, files read-only (bash and python read them)."""
    return {
        "name": "program",
        "configMap": {
            "name": configmap_name(schedule),
            "defaultMode": 0o444,
            "items": [{"key": k, "path": p} for k, p in sorted(mount_paths().items())],
        },
    }


def program_configmap(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap of one BackupSchedule (``owner``, the object's body)."""
    # Imported here: backup_job imports this module for the volume and the hash.
    from stronghold_operator.builders.backup_job import owner_reference

    meta = owner["metadata"]
    metadata: dict[str, Any] = {
        "name": configmap_name(meta["name"]),
        "labels": {
            "app.kubernetes.io/name": "stronghold-backup",
            "app.kubernetes.io/component": "program",
            "app.kubernetes.io/managed-by": "stronghold-operator",
        },
        "annotations": {ANNOTATION_PROGRAM: program_hash()},
        "ownerReferences": [owner_reference(owner)],
    }
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": program_files()}
