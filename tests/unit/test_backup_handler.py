"""The pure parts of the BackupSchedule handler: reading Jobs, knowing what is recorded."""

from __future__ import annotations

from stronghold_operator.handlers.backup import JobView, _is_recorded


def job(conditions: list[dict[str, str]], **meta: object) -> dict[str, object]:
    return {
        "metadata": {
            "name": "nightly-202605010200",
            "labels": {"ops.stronghold.io/job-kind": "backup"},
            "annotations": {
                "ops.stronghold.io/slot": "2026-05-01T02:00:00Z",
                "ops.stronghold.io/trigger": "scheduled",
                "ops.stronghold.io/request": "mw-1",
            },
            **meta,
        },
        "status": {"conditions": conditions},
    }


def test_job_view_reads_outcome_and_request() -> None:
    running = JobView.of(job([]))
    assert not running.finished and running.request == "mw-1" and running.kind == "backup"
    done = JobView.of(job([{"type": "Complete", "status": "True"}]))
    assert done.finished and done.succeeded
    failed = JobView.of(
        job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "x"}])
    )
    assert failed.finished and not failed.succeeded
    assert failed.failure == ("DeadlineExceeded", "x")
    assert JobView.of(job([], deletionTimestamp="2026-05-01T02:01:00Z")).deleting


def test_recorded_by_history_and_by_time_ordered_names() -> None:
    status = {
        "backups": [{"name": "s-202605010300"}, {"name": "s-202605010200"}],
        "lastRestoreTest": {"job": "s-restoretest-202605010300"},
    }
    assert _is_recorded("s-202605010200", "backup", status, limit=10)
    assert not _is_recorded("s-202605010100", "backup", status, limit=10)
    assert _is_recorded("s-202605010100", "backup", status, limit=2)  # older than a full history
    assert _is_recorded("s-restoretest-202605010100", "restore-test", status, limit=10)
    assert not _is_recorded("s-restoretest-202605010400", "restore-test", status, limit=10)
    assert not _is_recorded("s-verify-202605010100", "verify", status, limit=10)
