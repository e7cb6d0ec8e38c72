"""BackupSchedule off-site copies: a Job's ``offsite`` report into status, the condition.

Pure. A backup or verify Job copies every verified archive missing from the bucket
(builders/jobs/offsite.py) and reports which copies it proved (server checksum equal to the
local sha256) and which it could not make. A failed copy never fails the backup: the record
stays Succeeded and verified, ``offsite.copied`` is false with the reason, and the next Job
copies it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stronghold_operator import conditions as cond

__all__ = ["OFFSITE_COPIED", "apply_offsite", "offsite_condition", "offsite_events"]

OFFSITE_COPIED = "OffsiteCopied"


def apply_offsite(
    backups: Sequence[Mapping[str, Any]], report: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``status.backups`` with each entry's ``offsite`` updated from one Job's report.

    A copy proved now is recorded with its bucket, key and time; an entry the Job could not
    copy is marked not copied, unless an earlier Job already proved its copy (that copy is
    still there: a store that is down now does not undo it).
    """
    bucket = str(report.get("bucket") or "")
    prefix = str(report.get("prefix") or "")
    copies = report.get("copies") or {}
    missing = {str(m) for m in report.get("missing") or []}
    reason = str(report.get("reason") or "OffsiteCopyFailed")
    message = str(report.get("message") or "")
    out: list[dict[str, Any]] = []
    for b in backups:
        e = dict(b)
        f = str(e.get("file") or "")
        if f and f in copies:
            e["offsite"] = {
                "copied": True,
                "bucket": bucket,
                "key": prefix + f,
                "verifiedAt": str(copies[f]),
            }
        elif f and f in missing and not (e.get("offsite") or {}).get("copied"):
            e["offsite"] = {"copied": False, "bucket": bucket, "reason": reason, "message": message}
        out.append(e)
    return out


def offsite_events(report: Mapping[str, Any], job: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) Events for one Job's off-site report."""
    out: list[tuple[str, str, str]] = []
    bucket = report.get("bucket")
    count = int(report.get("copiedCount") or len(report.get("copies") or {}))
    if report.get("reason"):
        missing = len(report.get("missing") or [])
        out.append(
            (
                "Warning",
                "OffsiteCopyFailed",
                f"{missing} archive(s) not copied to bucket {bucket} (Job {job}): "
                f"{report.get('reason')}: {report.get('message', '')}; the next Job retries",
            )
        )
    if count:
        out.append(
            ("Normal", "OffsiteCopied", f"{count} archive(s) in bucket {bucket}, checksums equal")
        )
    pruned = int(report.get("prunedCount") or 0)
    if pruned:
        out.append(("Normal", "OffsitePruned", f"{pruned} archive(s) removed from {bucket}"))
    return out


def offsite_condition(backups: Sequence[Mapping[str, Any]]) -> cond.Condition:
    """OffsiteCopied: is the newest successful backup's copy proved in the bucket?"""
    good = [b for b in backups if b.get("result") == "Succeeded" and b.get("file")]
    if not good:
        return cond.Condition(OFFSITE_COPIED, "Unknown", "NoBackupYet", "no backup to copy")
    b = good[0]
    o = b.get("offsite") or {}
    if o.get("copied"):
        return cond.Condition(
            OFFSITE_COPIED,
            "True",
            "Copied",
            f"{b['file']} in {o.get('bucket')}/{o.get('key')}, sha256 compared at "
            f"{o.get('verifiedAt')}",
        )
    if not o:
        return cond.Condition(
            OFFSITE_COPIED, "Unknown", "NotCopiedYet", f"{b['file']}: no off-site copy reported"
        )
    return cond.Condition(
        OFFSITE_COPIED,
        "False",
        str(o.get("reason") or "OffsiteCopyFailed"),
        f"{b['file']} not copied (the local backup is good; the next Job retries): "
        f"{o.get('message', '')}"[:1000],
    )
