"""Model pieces shared by several kinds."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from stronghold_operator.models.base import SpecModel

# Set by a MaintenanceWindow on the policies it covers: a sorted, comma-separated list of the
# windows holding the object (frozen scaling, expected incidents, deferred backups).
MAINTENANCE_ANNOTATION = "ops.stronghold.io/maintenance"
# Which of those names a MaintenanceWindow put there (the rest are a human's holds): a name in
# it holds only while its window exists, so a window deleted with its finalizer stripped
# (its release never ran) does not freeze the object for ever.
MAINTENANCE_WINDOWS_ANNOTATION = "ops.stronghold.io/maintenance-windows"


class SecretKeyRef(SpecModel):
    """A key of a Secret in the policy's namespace; the value is read with ``get`` only."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class SecretKeySelector(SpecModel):
    """``{secretKeyRef: {...}}`` as in a container's env, so the YAML reads familiar."""

    secret_key_ref: SecretKeyRef = Field(alias="secretKeyRef")


def zone(name: str) -> ZoneInfo:
    """An IANA time zone by name; ``ValueError`` naming it otherwise (no paths)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def plain_volume_path(v: str) -> str:
    """A directory inside a volume, normalised (``a//b/`` -> ``a/b``); no ``..``, no oddities."""
    parts = [p for p in v.split("/") if p]
    if any(p in (".", "..") for p in parts) or not re.fullmatch(r"[A-Za-z0-9_./\-]*", v):
        raise ValueError("must be a plain directory path inside the volume (no '..')")
    return "/".join(parts)
