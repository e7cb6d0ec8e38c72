"""Retention: which backup archives to delete. Pure, and the standard library only.

The operator imports this module and the backup Job runs the very same file (the program
ConfigMap ships it beside the Job's helper), so the rules exist once. The Job runs it with
the Python of a user-chosen image: keep it to Python 3.7 syntax and library.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

FILE_PATTERN = re.compile(r"^db_backup_(\d{8})_(\d{6})\.(sql\.gz|dump)$")

# RetentionPlan.held: why nothing was deleted although the age rule would have deleted some.
HELD_NO_VERIFIED = "NoVerifiedArchive"


@dataclass(frozen=True)
class Archive:
    """One backup file as retention sees it."""

    file: str
    taken: datetime
    verified: bool


@dataclass(frozen=True)
class RetentionPlan:
    keep: tuple[str, ...]
    delete: tuple[str, ...]
    why: Mapping[str, str] = field(default_factory=dict)  # file -> reason it is kept
    held: str | None = None  # a reason (CamelCase) when retention kept everything
    message: str = ""  # what a human needs to know about ``held``


def plan_retention(
    archives: Iterable[Archive],
    now: datetime,
    days: int,
    min_keep: int,
    protected: Collection[str] = (),
) -> RetentionPlan:
    """Which archives to delete: older than ``days`` and not needed to keep the guarantees.

    Kept always: ``protected`` files (the operator's list), the newest verified archive,
    the newest ``min_keep`` verified archives (unverified ones never count towards it) and
    everything not older than ``days``. With no verified archive at all (every one corrupt,
    or their manifests lost) nothing is deleted: an unverifiable archive may still be the
    only copy that restores, and the plan says so in ``held``.
    """
    items = sorted(archives, key=lambda a: (a.taken, a.file), reverse=True)
    verified = [a for a in items if a.verified]
    why: dict[str, str] = {}
    for a in items:
        if a.file in protected:
            why.setdefault(a.file, "protected")
    if verified:
        why.setdefault(verified[0].file, "newest verified")
    for a in verified[:min_keep]:
        why.setdefault(a.file, "minKeep")
    cutoff = now - timedelta(days=days)
    for a in items:
        if a.taken >= cutoff:
            why.setdefault(a.file, "younger than retention.days")
    delete = tuple(a.file for a in items if a.file not in why)
    if delete and not verified:
        for f in delete:
            why[f] = "no verified archive remains"
        return RetentionPlan(
            tuple(a.file for a in items),
            (),
            why,
            HELD_NO_VERIFIED,
            f"retention deleted nothing: no archive is verified (all corrupt or their "
            f"manifests lost), so the {len(delete)} older than {days} days are kept",
        )
    keep = tuple(a.file for a in items if a.file in why)
    return RetentionPlan(keep, delete, why)


def file_time(file: str) -> datetime | None:
    """The UTC time in a backup file's name (``db_backup_YYYYMMDD_HHMMSS``)."""
    m = FILE_PATTERN.match(file)
    if not m:
        return None
    taken = datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")
    return taken.replace(tzinfo=timezone.utc)  # noqa: UP017 (datetime.UTC needs Python 3.11)
