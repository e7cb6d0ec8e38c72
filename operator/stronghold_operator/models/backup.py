"""BackupSchedule spec: scheduled, verified, pruned and test-restored PostgreSQL dumps."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from stronghold_operator.models.backup_sources import LastRun, SourcesSpec
from stronghold_operator.models.base import Duration, InvalidSpec, SpecModel
from stronghold_operator.models.common import SecretKeySelector, plain_volume_path
from stronghold_operator.models.status import Condition, StatusModel, Timestamp

__all__ = [
    "ActiveJob",
    "BackupRecord",
    "BackupScheduleSpec",
    "BackupScheduleStatus",
    "CompressionSpec",
    "ContainerSecurityContext",
    "DatabaseSpec",
    "JobTemplateSpec",
    "LastRestoreTest",
    "LastVerification",
    "OffsiteCopy",
    "OffsiteSpec",
    "OnDemand",
    "PodSecurityContext",
    "RestoreTestSpec",
    "RetentionSpec",
    "StorageSpec",
    "VerifySpec",
    "check_restricted",
    "parse_allowance",
    "schedule_label",
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
# Where `stronghold run --allow-privileged-jobs` puts its value (see check_restricted).
ALLOW_PRIVILEGED_ENV = "STRONGHOLD_ALLOW_PRIVILEGED_JOBS"
# PostgreSQL identifiers as pg_dump/psql accept them on a command line without quoting games.
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$.\-]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-:]{0,252})$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$")


def schedule_label(name: str) -> str:
    """The :data:`LABEL_SCHEDULE` value for a BackupSchedule name (up to 253 characters).

    Label values are limited to 63 characters: a longer name becomes its first 52
    characters, ``-`` and 10 hex digits of its sha256, the same every time.
    """
    if len(name) <= 63:
        return name
    return f"{name[:52]}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


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
        return plain_volume_path(v)


class RetentionSpec(SpecModel):
    days: int = Field(default=30, ge=0, le=36500)
    min_keep: int = Field(default=3, alias="minKeep", ge=1, le=1000)


class RestoreTestSpec(SpecModel):
    """Restore the newest verified backup and compare row counts with the manifest.

    ``target``: ``throwaway`` starts a PostgreSQL server inside the Job (no privilege on
    production, no load on it); ``scratchDatabase`` creates ``<db>_restoretest_<ts>`` on the
    production server (the role needs CREATEDB); ``auto`` is the throwaway server when the
    Job image has one, else the scratch database (what specs without the field did).
    """

    schedule: str = Field(default="0 3 1 * *", min_length=1, max_length=200)
    suspend: bool = False
    tables: list[str] = Field(default_factory=list, max_length=500)
    target: Literal["auto", "throwaway", "scratchDatabase"] = "auto"

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: list[str]) -> list[str]:
        for t in v:
            if not _TABLE.match(t):
                raise ValueError(f"{t!r} is not a table name (schema.table or table)")
        return [t if "." in t else f"public.{t}" for t in v]


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_ENDPOINT = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?(/[A-Za-z0-9._~\-/]*)?$")


class OffsiteSpec(SpecModel):
    """An S3-compatible bucket every verified backup is copied to (path-style requests).

    The credentials are Secret key references only: the Job gets them as environment
    variables from ``secretKeyRef``, never as values in the Job or the spec.
    """

    endpoint: str = Field(min_length=1, max_length=512)
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field(default="", max_length=512)
    region: str = Field(default="us-east-1", min_length=1, max_length=64)
    access_key_id: SecretKeySelector = Field(alias="accessKeyId")
    secret_access_key: SecretKeySelector = Field(alias="secretAccessKey")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not _ENDPOINT.match(v):
            raise ValueError(f"{v!r} is not an http(s) URL (scheme://host[:port][/path])")
        return v.rstrip("/")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not _BUCKET.match(v) or ".." in v:
            raise ValueError(f"{v!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        parts = [p for p in v.split("/") if p]
        if any(p in (".", "..") for p in parts) or not re.fullmatch(r"[A-Za-z0-9_./\-]*", v):
            raise ValueError("must be a plain key prefix (letters, digits, _ . - /; no '..')")
        return "".join(p + "/" for p in parts)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9\-]+", v):
            raise ValueError(f"{v!r} is not a region name")
        return v


class VerifySpec(SpecModel):
    schedule: str | None = Field(default=None, max_length=200)
    restore_test: RestoreTestSpec | None = Field(default=None, alias="restoreTest")


_ID = Field(default=None, ge=0, le=2**31 - 1)
_LABEL = Field(default=None, max_length=253)


class SELinuxOptions(SpecModel):
    level: str | None = _LABEL
    role: str | None = _LABEL
    type: str | None = _LABEL
    user: str | None = _LABEL


class SeccompProfile(SpecModel):
    type: Literal["RuntimeDefault", "Localhost", "Unconfined"]
    localhost_profile: str | None = Field(
        default=None, alias="localhostProfile", min_length=1, max_length=253
    )

    @model_validator(mode="after")
    def _localhost(self) -> SeccompProfile:
        # The apiserver refuses either mismatch when it validates the Job: say so up front.
        if (self.type == "Localhost") != (self.localhost_profile is not None):
            raise ValueError("localhostProfile is required with type Localhost, and only then")
        return self


class WindowsOptions(SpecModel):
    gmsa_credential_spec: str | None = Field(
        default=None, alias="gmsaCredentialSpec", max_length=65536
    )
    gmsa_credential_spec_name: str | None = Field(
        default=None, alias="gmsaCredentialSpecName", max_length=253
    )
    host_process: bool | None = Field(default=None, alias="hostProcess")
    run_as_user_name: str | None = Field(default=None, alias="runAsUserName", max_length=253)


class Capabilities(SpecModel):
    add: list[str] | None = Field(default=None, max_length=64)
    drop: list[str] | None = Field(default=None, max_length=64)


class _SecurityBase(SpecModel):
    """Fields a container's and a pod's securityContext share (Kubernetes 1.20 names)."""

    run_as_user: int | None = Field(default=None, alias="runAsUser", ge=0, le=2**31 - 1)
    run_as_group: int | None = Field(default=None, alias="runAsGroup", ge=0, le=2**31 - 1)
    run_as_non_root: bool | None = Field(default=None, alias="runAsNonRoot")
    se_linux_options: SELinuxOptions | None = Field(default=None, alias="seLinuxOptions")
    seccomp_profile: SeccompProfile | None = Field(default=None, alias="seccompProfile")
    windows_options: WindowsOptions | None = Field(default=None, alias="windowsOptions")

    def manifest(self) -> dict[str, Any]:
        """The fields as they go into the pod (camelCase, unset ones left out)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class ContainerSecurityContext(_SecurityBase):
    allow_privilege_escalation: bool | None = Field(default=None, alias="allowPrivilegeEscalation")
    privileged: bool | None = None
    read_only_root_filesystem: bool | None = Field(default=None, alias="readOnlyRootFilesystem")
    proc_mount: Literal["Default", "Unmasked"] | None = Field(default=None, alias="procMount")
    capabilities: Capabilities | None = None


class Sysctl(SpecModel):
    name: str = Field(min_length=1, max_length=253)
    value: str = Field(max_length=1024)


class PodSecurityContext(_SecurityBase):
    fs_group: int | None = Field(default=None, alias="fsGroup", ge=0, le=2**31 - 1)
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = Field(
        default=None, alias="fsGroupChangePolicy"
    )
    supplemental_groups: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] | None = Field(
        default=None, alias="supplementalGroups", max_length=32
    )
    sysctls: list[Sysctl] | None = Field(default=None, max_length=16)


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
    pod_security_context: PodSecurityContext | None = Field(
        default=None, alias="podSecurityContext"
    )
    security_context: ContainerSecurityContext | None = Field(default=None, alias="securityContext")
    active_deadline_seconds: int = Field(
        default=6 * 3600, alias="activeDeadlineSeconds", ge=60, le=7 * 86400
    )
    labels: dict[str, str] | None = None

    def restricted_violations(self) -> list[tuple[str, str]]:
        """(field, why) for every value that takes the pod out of the restricted profile.

        The builder's defaults comply; only these fields can loosen them. ``field`` is the
        path inside ``jobTemplate``; its first part is what an admin's allowance names.
        """
        out: list[tuple[str, str]] = []
        if self.host_network:
            out.append(("hostNetwork", "the host network"))
        for name, ctx in (
            ("podSecurityContext", self.pod_security_context),
            ("securityContext", self.security_context),
        ):
            if ctx is not None:
                out += [(f"{name}.{f}", why) for f, why in _context_violations(ctx)]
        return out


# The restricted Pod Security Standard, as of Kubernetes 1.30 (a superset of 1.20's rules).
RESTRICTED_ADD_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
    }
)


def _context_violations(ctx: _SecurityBase) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if ctx.run_as_non_root is False:
        out.append(("runAsNonRoot", "running as root may be allowed"))
    if ctx.run_as_user == 0:
        out.append(("runAsUser", "uid 0 (root)"))
    if ctx.seccomp_profile is not None and ctx.seccomp_profile.type == "Unconfined":
        out.append(("seccompProfile.type", "an Unconfined seccomp profile"))
    se = ctx.se_linux_options
    if se is not None:
        if (se.type or "") not in _SELINUX_TYPES:
            out.append(("seLinuxOptions.type", f"SELinux type {se.type!r}"))
        if se.user or se.role:
            out.append(("seLinuxOptions", "a custom SELinux user or role"))
    if ctx.windows_options is not None and ctx.windows_options.host_process:
        out.append(("windowsOptions.hostProcess", "a Windows host process"))
    if isinstance(ctx, ContainerSecurityContext):
        out += _container_violations(ctx)
    if isinstance(ctx, PodSecurityContext):
        unsafe = sorted({s.name for s in ctx.sysctls or []} - _SAFE_SYSCTLS)
        if unsafe:
            out.append(("sysctls", f"unsafe sysctls {', '.join(unsafe)}"))
    return out


def _container_violations(ctx: ContainerSecurityContext) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if ctx.privileged:
        out.append(("privileged", "a privileged container"))
    if ctx.allow_privilege_escalation is True:
        out.append(("allowPrivilegeEscalation", "privilege escalation"))
    if ctx.proc_mount == "Unmasked":
        out.append(("procMount", "an unmasked /proc"))
    caps = ctx.capabilities
    # A given drop list replaces the default [ALL] (merge replaces lists).
    if caps is not None and caps.drop is not None and "ALL" not in caps.drop:
        out.append(("capabilities.drop", "keeping capabilities (drop must include ALL)"))
    extra = sorted(set(caps.add or []) - RESTRICTED_ADD_CAPABILITIES) if caps else []
    if extra:
        out.append(("capabilities.add", f"adding capabilities {', '.join(extra)}"))
    return out


# jobTemplate fields a cluster admin can allow to loosen the restricted profile.
PRIVILEGED_FIELDS = ("hostNetwork", "podSecurityContext", "securityContext")


def parse_allowance(text: str) -> frozenset[str]:
    """``all`` or a comma-separated list of :data:`PRIVILEGED_FIELDS` (others ignored)."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names & {"all", "*"}:
        return frozenset(PRIVILEGED_FIELDS)
    return frozenset(names & set(PRIVILEGED_FIELDS))


def check_restricted(tpl: JobTemplateSpec, allowed: Collection[str]) -> None:
    """:class:`InvalidSpec` naming the first field that breaks the restricted profile.

    A namespace user must not get through the operator a pod their own RBAC (and the
    namespace's Pod Security level) would not give them; only the operator's own
    configuration, which a cluster admin owns, can allow more.
    """
    for path, why in tpl.restricted_violations():
        top = path.split(".")[0]
        if top not in allowed:
            raise InvalidSpec(
                f"jobTemplate.{path}",
                f"{why} breaks the restricted Pod Security profile; refused unless a cluster "
                f"admin starts the operator with --allow-privileged-jobs={top} "
                "(docs/security.md)",
            )


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
    offsite: OffsiteSpec | None = None
    stale_after: Duration = Field(default=timedelta(hours=26), alias="staleAfter")
    history_limit: int = Field(default=10, alias="historyLimit", ge=1, le=100)
    during_maintenance: Literal["Defer", "Run"] = Field(default="Defer", alias="duringMaintenance")
    job_template: JobTemplateSpec = Field(default_factory=JobTemplateSpec, alias="jobTemplate")
    sources: SourcesSpec = Field(default_factory=SourcesSpec)

    @property
    def deadline(self) -> timedelta | None:
        s = self.starting_deadline_seconds
        return None if s is None else timedelta(seconds=s)


# --- Status: what the operator writes (crds/backupschedule.yaml, status) -------------------

Number = int | float  # kept as the Job reported it (3 stays 3, 2.5 stays 2.5)


class _Status(StatusModel):
    """Status pieces: camelCase names in status, snake_case in Python. A field defaults to
    its empty value: absent and empty mean the same to a reader (and only the fields a pass
    set are written)."""

    model_config = ConfigDict(alias_generator=to_camel)


class OffsiteCopy(_Status):
    """``status.backups[].offsite``: where the off-site copy lives, or why there is none."""

    copied: bool = False
    bucket: str = ""
    key: str = ""
    verified_at: str = ""
    reason: str = ""
    message: str = ""


class BackupRecord(_Status):
    """One item of ``status.backups`` (newest first): a finished backup Job."""

    name: str
    trigger: str = ""
    file: str = ""
    started_at: str = ""
    completed_at: str = ""
    duration_seconds: Number = 0
    size_bytes: int = 0
    sha256: str = ""
    tables: int = 0
    rows: int = 0
    verified: bool = False
    verify_reason: str = ""
    verify_message: str = ""
    pruned: bool = False
    result: str = ""
    reason: str = ""
    message: str = ""
    offsite: OffsiteCopy | None = None


class ActiveJob(_Status):
    """One item of ``status.active``: a Job of this schedule that is running."""

    name: str
    kind: str = ""
    slot: str = ""
    trigger: str = ""


class OnDemand(_Status):
    """``status.onDemand``: the request values already answered, per kind."""

    backup: str = ""
    backup_job: str = ""
    verify: str = ""
    restore_test: str = ""
    storage_full: str = ""


class LastVerification(_Status):
    """``status.lastVerification``: the last verify Job's outcome."""

    time: Timestamp | None = None
    job: str = ""
    checked: int = 0
    failed: list[str] = Field(default_factory=list)
    result: str = ""
    message: str = ""


class LastRestoreTest(_Status):
    """``status.lastRestoreTest``: the last restore test's outcome."""

    time: Timestamp | None = None
    job: str = ""
    backup: str = ""
    scratch_database: str = ""
    target: str = ""
    server: str = ""
    duration_seconds: Number = 0
    restore_seconds: Number = 0
    tables_compared: int = 0
    rows_compared: int = 0
    result: str = ""
    reason: str = ""
    message: str = ""


class BackupScheduleStatus(_Status):
    """Everything the operator writes to a BackupSchedule's status."""

    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    # The backup schedule: its cursor, next slot, slots missed, Jobs running, requests.
    last_schedule_time: Timestamp | None = None
    next_schedule_time: Timestamp | None = None
    missed_runs: int = 0
    active: list[ActiveJob] | None = None
    on_demand: OnDemand | None = None
    # Results.
    last_successful_time: Timestamp | None = None
    last_verified_time: Timestamp | None = None
    backups: list[BackupRecord] | None = None
    # Verification and restore tests.
    last_verify_schedule_time: Timestamp | None = None
    last_verification: LastVerification | None = None
    last_restore_test_schedule_time: Timestamp | None = None
    last_restore_test: LastRestoreTest | None = None
    # The newest run's artifacts when spec.sources adds any (models/backup_sources.py).
    last_run: LastRun | None = None
