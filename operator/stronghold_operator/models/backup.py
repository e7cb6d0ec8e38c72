"""BackupSchedule spec: scheduled, verified, pruned and test-restored PostgreSQL dumps."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from stronghold_operator.models.base import Duration, SpecModel
from stronghold_operator.models.common import SecretKeySelector

__all__ = [
    "BackupScheduleSpec",
    "CompressionSpec",
    "DatabaseSpec",
    "JobTemplateSpec",
    "RestoreTestSpec",
    "RetentionSpec",
    "StorageSpec",
    "VerifySpec",
]

DEFAULT_IMAGE = "stronghold/base:bookworm"

# Annotations a human, the CLI or a MaintenanceWindow sets on a BackupSchedule to ask for
# work now; any new value (e.g. a timestamp) is one request.
BACKUP_NOW = "ops.stronghold.io/backup-now"
VERIFY_NOW = "ops.stronghold.io/verify-now"
RESTORE_TEST_NOW = "ops.stronghold.io/restore-test-now"
# Labels/annotations on the Jobs the operator creates (shared by logic and builders).
LABEL_SCHEDULE = "ops.stronghold.io/backupschedule"
LABEL_KIND = "ops.stronghold.io/job-kind"
ANNOTATION_SLOT = "ops.stronghold.io/slot"
ANNOTATION_TRIGGER = "ops.stronghold.io/trigger"
# PostgreSQL identifiers as pg_dump/psql accept them on a command line without quoting games.
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$.\-]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-:]{0,252})$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$")


class DatabaseSpec(SpecModel):
    """Where to connect; the password only by reference to a Secret key."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=5432, ge=1, le=65535)
    name: str = Field(min_length=1, max_length=63)
    user: str = Field(min_length=1, max_length=63)
    password: SecretKeySelector | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not _HOST.match(v):
            raise ValueError(f"{v!r} is not a host name or IP address")
        return v

    @field_validator("name", "user")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(f"{v!r} must be a plain PostgreSQL identifier")
        return v


class CompressionSpec(SpecModel):
    algorithm: Literal["gzip"] = "gzip"
    level: int = Field(default=6, ge=1, le=9)


class StorageSpec(SpecModel):
    """A PersistentVolumeClaim and a directory inside it."""

    claim_name: str = Field(alias="persistentVolumeClaim", min_length=1, max_length=253)
    path: str = Field(default="/", max_length=1024)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        parts = [p for p in v.split("/") if p]
        if any(p in (".", "..") for p in parts) or not re.fullmatch(r"[A-Za-z0-9_./\-]*", v):
            raise ValueError("must be a plain directory path inside the volume (no '..')")
        return "/".join(parts)


class RetentionSpec(SpecModel):
    days: int = Field(default=30, ge=0, le=36500)
    min_keep: int = Field(default=3, alias="minKeep", ge=1, le=1000)


class RestoreTestSpec(SpecModel):
    """Restore the newest verified backup into a scratch database and compare row counts."""

    schedule: str = Field(default="0 3 1 * *", min_length=1, max_length=200)
    suspend: bool = False
    tables: list[str] = Field(default_factory=list, max_length=500)

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: list[str]) -> list[str]:
        for t in v:
            if not _TABLE.match(t):
                raise ValueError(f"{t!r} is not a table name (schema.table or table)")
        return [t if "." in t else f"public.{t}" for t in v]


class VerifySpec(SpecModel):
    schedule: str | None = Field(default=None, max_length=200)
    restore_test: RestoreTestSpec | None = Field(default=None, alias="restoreTest")


class JobTemplateSpec(SpecModel):
    """What the operator lets users change about the backup Jobs' pods."""

    image: str = Field(default=DEFAULT_IMAGE, min_length=1, max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", alias="imagePullPolicy"
    )
    resources: dict[str, Any] | None = None
    node_selector: dict[str, str] | None = Field(default=None, alias="nodeSelector")
    tolerations: list[dict[str, Any]] | None = None
    service_account_name: str | None = Field(default=None, alias="serviceAccountName")
    host_network: bool = Field(default=False, alias="hostNetwork")
    run_as_user: int = Field(default=999, alias="runAsUser", ge=1)
    run_as_group: int = Field(default=999, alias="runAsGroup", ge=0)
    fs_group: int | None = Field(default=None, alias="fsGroup", ge=0)
    pod_security_context: dict[str, Any] | None = Field(default=None, alias="podSecurityContext")
    security_context: dict[str, Any] | None = Field(default=None, alias="securityContext")
    active_deadline_seconds: int = Field(
        default=6 * 3600, alias="activeDeadlineSeconds", ge=60, le=7 * 86400
    )
    labels: dict[str, str] | None = None


class BackupScheduleSpec(SpecModel):
    """The whole spec. Cron expressions and the zone are checked by logic.backup.compile()."""

    schedule: str = Field(min_length=1, max_length=200)
    time_zone: str = Field(default="UTC", alias="timeZone", min_length=1, max_length=64)
    suspend: bool = False
    starting_deadline_seconds: int | None = Field(
        default=None, alias="startingDeadlineSeconds", ge=1, le=31 * 86400
    )
    concurrency_policy: Literal["Forbid", "Replace"] = Field(
        default="Forbid", alias="concurrencyPolicy"
    )
    database: DatabaseSpec
    format: Literal["plain", "custom"] = "plain"
    compression: CompressionSpec = Field(default_factory=CompressionSpec)
    storage: StorageSpec
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    verify: VerifySpec = Field(default_factory=VerifySpec)
    stale_after: Duration = Field(default=timedelta(hours=26), alias="staleAfter")
    history_limit: int = Field(default=10, alias="historyLimit", ge=1, le=100)
    during_maintenance: Literal["Defer", "Run"] = Field(default="Defer", alias="duringMaintenance")
    job_template: JobTemplateSpec = Field(default_factory=JobTemplateSpec, alias="jobTemplate")

    @property
    def deadline(self) -> timedelta | None:
        s = self.starting_deadline_seconds
        return None if s is None else timedelta(seconds=s)
