"""The Job of ``stronghold backup restore``: one archive into a database a person names (pure).

It is the schedule's restore-test Job with three differences: it connects to the target (the
password only from a Secret mounted as a file, never in the Job), it mounts the backups
read-only, and it does not carry the schedule's label, so the operator never records it as
one of the schedule's runs. Its program is a ConfigMap of its own (``<job>-program``, owned
by the Job): the restore runs the CLI's program whatever release the operator runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stronghold_operator.builders.backup_job import backup_job
from stronghold_operator.builders.backup_program import program_configmap
from stronghold_operator.models.backup import (
    LABEL_KIND,
    LABEL_SCHEDULE,
    BackupScheduleSpec,
    DatabaseSpec,
    schedule_label,
)

__all__ = ["LABEL_RESTORE_OF", "restore_job", "restore_job_name", "restore_program"]

LABEL_RESTORE_OF = "ops.stronghold.io/restore-of"


def restore_job_name(schedule: str, when: datetime, token: str) -> str:
    """``<schedule>-restore-<YYYYMMDDHHMMSS>-<token>``, shortened with a hash to 63 characters."""
    tail = f"-restore-{when:%Y%m%d%H%M%S}-{token}"
    if len(schedule) + len(tail) <= 63:
        return schedule + tail
    digest = hashlib.sha256(schedule.encode()).hexdigest()[:6]
    head = schedule[: 63 - len(tail) - 7].rstrip("-.")
    return f"{head}-{digest}{tail}"


def restore_job(
    *,
    owner: Mapping[str, Any],
    job_name: str,
    spec: BackupScheduleSpec,
    target: DatabaseSpec,
    archive: str,
    when: datetime,
    force: bool,
    dry_run: bool,
) -> dict[str, Any]:
    """The restore Job (same inputs, same manifest)."""
    schedule = owner["metadata"]["name"]
    scoped = spec.model_copy(update={"database": target})
    job = backup_job(
        owner=owner,
        job_name=job_name,
        kind="restore-test",
        spec=scoped,
        slot=when,
        trigger="restore" + (" (dry run)" if dry_run else ""),
        restore_file=archive,
    )
    labels = job["metadata"]["labels"]
    del labels[LABEL_SCHEDULE]
    labels.update(
        {
            LABEL_KIND: "restore",
            "app.kubernetes.io/component": "restore",
            LABEL_RESTORE_OF: schedule_label(schedule),
        }
    )
    pod_meta = job["spec"]["template"]["metadata"]
    pod_meta["labels"] = {**{k: v for k, v in pod_meta["labels"].items() if k != LABEL_SCHEDULE}}
    pod_meta["labels"].update({LABEL_KIND: "restore", "app.kubernetes.io/component": "restore"})
    pod_meta["labels"][LABEL_RESTORE_OF] = schedule_label(schedule)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["name"] = "restore"
    keep = {"RESTORE_TABLES", "RESTORE_TARGET", "RESTORE_SCRATCH", "JOB_IMAGE"}
    env = [e for e in container["env"] if e["name"] not in keep]
    for e in env:
        if e["name"] == "STRONGHOLD_MODE":
            e["value"] = "restore"
        if e["name"] == "PGAPPNAME":
            e["value"] = "stronghold-restore"
    env.append({"name": "RESTORE_FORCE", "value": "1" if force else "0"})
    env.append({"name": "RESTORE_DRY_RUN", "value": "1" if dry_run else "0"})
    container["env"] = env
    container["volumeMounts"] = [
        {**m, "readOnly": True} if m["name"] == "backups" else m
        for m in container["volumeMounts"]
        if m["name"] != "scratch"
    ]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "scratch"]
    for v in pod["volumes"]:
        if v["name"] == "program":
            v["configMap"]["name"] = f"{job_name}-program"
    return job


def restore_program(job: Mapping[str, Any]) -> dict[str, Any]:
    """The program ConfigMap of one restore Job (``job`` as created: it needs its uid)."""
    cm = program_configmap(job)
    cm["metadata"]["name"] = f"{job['metadata']['name']}-program"
    cm["metadata"]["labels"]["app.kubernetes.io/component"] = "restore-program"
    # Owned by the Job, not as its controller: deleting the Job deletes its program.
    cm["metadata"]["ownerReferences"][0]["controller"] = False
    return cm
