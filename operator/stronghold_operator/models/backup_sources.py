"""BackupSchedule ``spec.sources`` and ``status.lastRun``: what a run saves besides the database.

A run is the unit of backup: one database archive plus, when sources are configured, a run
directory with the volume archives, the configuration, the system state and one manifest
that lists every artifact with its size and sha256 (docs/backupschedule.md, "Runs").
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from stronghold_operator.models.base import SpecModel
from stronghold_operator.models.common import SecretKeySelector, plain_volume_path
from stronghold_operator.models.status import StatusModel

__all__ = [
    "ConfigurationSource",
    "EncryptionSpec",
    "LastRun",
    "RunArtifact",
    "SourcesSpec",
    "SystemStateSource",
    "VolumeSource",
]

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
# Globs: relative, no '..' segment, no NUL; '*' stays inside a path segment, '**' crosses them.
_GLOB = re.compile(r"^[^\x00]{1,256}$")
MAX_ARTIFACTS = 16  # bound of status.lastRun.artifacts (one per volume + 4)


class VolumeSource(SpecModel):
    """A PVC's files, archived as ``volume-<name>.tar.gz`` (the Job mounts it read-only)."""

    name: str = Field(min_length=1, max_length=40)
    claim_name: str = Field(alias="persistentVolumeClaim", min_length=1, max_length=253)
    path: str = Field(default="/", max_length=1024)
    include: list[str] = Field(default_factory=list, max_length=64)
    exclude: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} must be a DNS label (it names the archive)")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return plain_volume_path(v)

    @field_validator("include", "exclude")
    @classmethod
    def _globs(cls, v: list[str]) -> list[str]:
        for g in v:
            if not _GLOB.match(g) or g.startswith("/") or ".." in g.split("/"):
                raise ValueError(f"{g!r} must be a relative glob without '..'")
        return v


class EncryptionSpec(SpecModel):
    """age recipients (public keys ``age1…``, one per line) in a Secret key."""

    age_recipients: SecretKeySelector = Field(alias="ageRecipients")


class ConfigurationSource(SpecModel):
    """The namespace's ConfigMaps, Deployments, StatefulSets and Services as clean YAML;
    the listed Secrets, encrypted, and only those."""

    secrets: list[str] = Field(default_factory=list, max_length=64)
    encryption: EncryptionSpec | None = None

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str]) -> list[str]:
        for s in v:
            if not _DNS_NAME.match(s):
                raise ValueError(f"{s!r} is not a Secret name")
        return sorted(set(v))

    @model_validator(mode="after")
    def _encrypted(self) -> ConfigurationSource:
        if self.secrets and self.encryption is None:
            raise ValueError("secrets are only backed up encrypted: set encryption.ageRecipients")
        return self


class SystemStateSource(SpecModel):
    """Images with digests, rollout revisions, the git revision, nodes and versions."""

    git_revision_annotation: str = Field(
        default="ops.stronghold.io/git-revision", alias="gitRevisionAnnotation", max_length=253
    )


class SourcesSpec(SpecModel):
    """What a run saves. The database (``spec.database``) is always the first source."""

    # Reserved: a run without the database is not offered yet (the CRD allows only true).
    database: Literal[True] = True
    volumes: list[VolumeSource] = Field(default_factory=list, max_length=8)
    configuration: ConfigurationSource | None = None
    system_state: SystemStateSource | None = Field(default=None, alias="systemState")

    @field_validator("volumes")
    @classmethod
    def _unique(cls, v: list[VolumeSource]) -> list[VolumeSource]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"volume names must be unique: {', '.join(dup)}")
        return v

    @property
    def extra(self) -> bool:
        """Anything besides the database: the run gets a run directory and manifest."""
        return bool(self.volumes or self.configuration or self.system_state)

    @property
    def captured(self) -> bool:
        """Anything the operator reads from the API for the Job (configuration, state)."""
        return self.configuration is not None or self.system_state is not None


class _Status(StatusModel):
    model_config = ConfigDict(alias_generator=to_camel)


class RunArtifact(_Status):
    """One artifact of the last run, as its manifest and the last verification say."""

    name: str
    kind: str = ""
    size_bytes: int = 0
    sha256: str = ""
    verified: bool = False
    verify_reason: str = ""


class LastRun(_Status):
    """``status.lastRun``: the newest run's artifacts (bounded) and their verification."""

    run: str = ""
    job: str = ""
    manifest: str = ""
    verified: bool = False
    verified_at: str = ""
    artifacts: list[RunArtifact] = Field(default_factory=list, max_length=MAX_ARTIFACTS)
