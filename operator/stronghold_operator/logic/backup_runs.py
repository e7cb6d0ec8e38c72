"""``status.lastRun`` from the run summaries the backup and verify Jobs report (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stronghold_operator.models.backup_sources import MAX_ARTIFACTS

__all__ = ["last_run"]

_ARTIFACT_FIELDS = ("name", "kind", "sizeBytes", "sha256", "verified", "verifyReason")


def last_run(
    current: Mapping[str, Any] | None, reported: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The new ``status.lastRun``: ``reported`` unless ``current`` describes a newer run
    (a verify Job reports the newest run on the volume, which may predate a backup just
    recorded). None: keep ``current``."""
    run = str(reported.get("run") or "")
    if not run:
        return None
    if current and str(current.get("run") or "") > run:
        return None
    arts = []
    for a in list(reported.get("artifacts") or [])[:MAX_ARTIFACTS]:
        if isinstance(a, Mapping):
            arts.append({k: a[k] for k in _ARTIFACT_FIELDS if a.get(k) not in (None, "")})
    for a in arts:
        a["verified"] = bool(a.get("verified"))
    return {
        "run": run,
        "job": str(reported.get("job") or ""),
        "manifest": str(reported.get("manifest") or ""),
        "verified": bool(reported.get("verified")),
        "verifiedAt": str(reported.get("verifiedAt") or ""),
        "artifacts": arts,
    }
