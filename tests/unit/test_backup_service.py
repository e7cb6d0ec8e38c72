"""The BackupSchedule pass on in-memory fakes of its ports: Jobs, pods, program, preflight."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from stronghold_operator.controllers.backup import BUSY, IDLE_MAX, next_delay
from stronghold_operator.logic.backup_results import JobView, is_recorded
from stronghold_operator.services import backup as service

ROOT = Path(__file__).resolve().parents[2]
UID = "sched-uid"
T0 = datetime(2026, 5, 1, 2, 0, 5, tzinfo=UTC)  # five seconds after the 02:00 slot
SLOT_JOB = "nightly-202605010200"
GOOD = (
    '{"ok": true, "kind": "backup", "file": "db_backup_20260501_020000.sql.gz", "size": 2048,'
    ' "sha256": "0123456789abcdef", "started": "2026-05-01T02:00:06Z",'
    ' "completed": "2026-05-01T02:00:40Z", "durationSeconds": 34, "verified": true,'
    ' "tables": 3, "rows": 6234}'
)


def spec(**extra: Any) -> dict[str, Any]:
    """The minimal example (nightly at 02:00), with ``extra`` fields."""
    example = yaml.safe_load((ROOT / "examples/backupschedule-minimal.yaml").read_text())
    return {**example["spec"], **extra}


def meta(**annotations: str) -> dict[str, Any]:
    return {
        "name": "nightly",
        "namespace": "ns",
        "uid": UID,
        "creationTimestamp": "2026-05-01T01:00:00Z",
        "annotations": annotations,
    }


@dataclass
class Cluster:
    """The schedule's Jobs and pods, and what the pass did to them."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[tuple[str, bool]] = field(default_factory=list)
    problem: tuple[str, str] | None = None
    program: str = "kept"

    # Jobs
    async def list(self) -> list[Mapping[str, Any]]:
        return list(self.jobs.values())

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        name = manifest["metadata"]["name"]
        if name in self.jobs:
            return False
        job = {"metadata": dict(manifest["metadata"]), "status": {}}
        job["metadata"].update(uid=f"uid-{name}", creationTimestamp="2026-05-01T02:00:05Z")
        self.jobs[name] = job
        self.created.append(name)
        return True

    async def read(self, name: str) -> Mapping[str, Any]:
        return self.jobs[name]

    async def delete(self, name: str, *, foreground: bool = False) -> None:
        self.deleted.append((name, foreground))
        self.jobs.pop(name, None)

    # Program and Preflight
    async def ensure(self, manifest: Mapping[str, Any], version_key: str) -> str:
        assert version_key in manifest["metadata"]["annotations"]
        return self.program

    async def problem_for(self) -> tuple[str, str] | None:
        return self.problem

    def finish(self, name: str, phase: str = "Succeeded", message: str | None = GOOD) -> None:
        """The Job's pod terminated (the Job controller has not caught up yet)."""
        terminated = {"message": message} if message else {}
        self.pods.append(
            {
                "metadata": {"ownerReferences": [{"controller": True, "uid": f"uid-{name}"}]},
                "status": {
                    "phase": phase,
                    "containerStatuses": [{"state": {"terminated": terminated}}],
                },
            }
        )

    def add_job(self, name: str, owner: str = UID, **annotations: str) -> None:
        self.jobs[name] = {
            "metadata": {
                "name": name,
                "uid": f"uid-{name}",
                "creationTimestamp": "2026-05-01T01:00:00Z",
                "labels": {"ops.stronghold.io/job-kind": "backup"},
                "annotations": annotations,
                "ownerReferences": [{"controller": True, "uid": owner}],
            },
            "status": {},
        }


class Pods:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def list(self) -> list[Mapping[str, Any]]:
        return list(self.cluster.pods)


class Preflight:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def problem(self, spec: Any) -> tuple[str, str] | None:
        return await self.cluster.problem_for()


def run(
    cluster: Cluster,
    status: Mapping[str, Any] | None = None,
    now: datetime = T0,
    raw: dict[str, Any] | None = None,
    hold: str | None = None,
    **annotations: str,
) -> service.Pass:
    ports = service.Ports(
        jobs=cluster,
        pods=Pods(cluster),
        program=cluster,
        preflight=Preflight(cluster),
        clock=lambda: now,
        maintenance=lambda: hold,
    )
    compiled = service.compile_spec(raw or spec(), frozenset())
    return asyncio.run(service.reconcile(compiled, meta(**annotations), ports, status or {}))


def written(result: service.Pass) -> dict[str, Any]:
    return result.status.to_status()


def conditions(result: service.Pass) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.status.conditions}


def reasons(result: service.Pass) -> list[str]:
    return [e.reason for e in result.events]


def test_a_due_slot_starts_its_job_and_the_next_pass_does_not_start_it_again() -> None:
    cluster = Cluster(program="updated")
    first = run(cluster)
    assert cluster.created == [SLOT_JOB]
    assert reasons(first) == ["ProgramUpdated", "BackupStarted"]
    st = written(first)
    assert st["active"] == [
        {"name": SLOT_JOB, "kind": "backup", "slot": "2026-05-01T02:00:00Z", "trigger": "scheduled"}
    ]
    assert st["lastScheduleTime"] == "2026-05-01T02:00:00Z"
    assert st["nextScheduleTime"] == "2026-05-02T02:00:00Z"
    assert first.busy and next_delay(first) == BUSY
    again = run(cluster, st, now=T0 + timedelta(seconds=10))
    assert cluster.created == [SLOT_JOB] and again.events == [] and again.busy


def test_a_finished_job_is_recorded_once_with_events_and_metrics() -> None:
    cluster = Cluster()
    st = written(run(cluster))
    cluster.finish(SLOT_JOB)
    done = run(cluster, st, now=T0 + timedelta(minutes=1))
    assert reasons(done) == ["BackupSucceeded", "BackupVerified"]
    fields = written(done)
    assert fields["backups"][0]["name"] == SLOT_JOB and fields["backups"][0]["verified"]
    assert fields["lastSuccessfulTime"] == "2026-05-01T02:00:40Z"
    assert fields["active"] == []
    assert conditions(done)["LastBackupSucceeded"] == ("True", "BackupCompleted")
    [finished] = done.finished
    assert (finished.kind, finished.outcome, finished.duration, finished.size) == (
        "backup",
        "Succeeded",
        34.0,
        2048.0,
    )
    later = run(cluster, fields, now=T0 + timedelta(minutes=2))
    assert later.events == [] and later.finished == [] and not later.busy


def test_a_failed_pod_is_the_jobs_result_before_the_job_says_so() -> None:
    cluster = Cluster()
    st = written(run(cluster))
    cluster.finish(SLOT_JOB, phase="Failed", message=None)
    done = run(cluster, st, now=T0 + timedelta(minutes=1))
    entry = written(done)["backups"][0]
    assert (entry["result"], entry["reason"]) == ("Failed", "PodFailed")
    assert conditions(done)["Ready"] == ("False", "PodFailed")


def test_jobs_and_pods_of_others_are_not_ours() -> None:
    cluster = Cluster()
    cluster.add_job("nightly-202605010100", owner="someone-else")
    cluster.finish("nightly-202605010100")
    result = run(cluster)
    assert "backups" not in written(result)
    assert [a["name"] for a in written(result)["active"]] == [SLOT_JOB]


def test_a_blocked_start_is_recorded_failed_once_and_not_retried() -> None:
    cluster = Cluster(problem=("SecretMissing", "Secret ns/db not found"))
    first = run(cluster)
    assert cluster.created == []
    assert reasons(first) == ["SecretMissing"]
    st = written(first)
    assert conditions(first)["LastBackupSucceeded"] == ("False", "SecretMissing")
    assert st["backups"][0]["name"] == SLOT_JOB
    again = run(cluster, st, now=T0 + timedelta(seconds=10))
    assert again.events == [] and cluster.created == []


def test_a_name_taken_by_another_owner_skips_the_run_and_our_own_is_adopted() -> None:
    cluster = Cluster()
    cluster.add_job(SLOT_JOB, owner="someone-else")
    taken = run(cluster)
    assert reasons(taken) == ["JobNameTaken"] and cluster.created == []
    assert written(taken)["backups"][0]["reason"] == "JobNameTaken"
    # Ours, but not listed (the list raced the create): adopted, not reported.
    mine = Cluster()
    mine.add_job(SLOT_JOB)
    listed = mine.list

    async def nothing() -> list[Mapping[str, Any]]:
        return []

    mine.list = nothing  # type: ignore[method-assign]
    adopted = run(mine)
    mine.list = listed  # type: ignore[method-assign]
    assert adopted.events == [] and [a["name"] for a in written(adopted)["active"]] == [SLOT_JOB]


def test_a_job_that_vanished_is_never_left_running() -> None:
    st = {"active": [{"name": "nightly-202604300200", "kind": "backup", "slot": "", "trigger": ""}]}
    result = run(Cluster(), {**st, "lastScheduleTime": "2026-05-01T02:00:00Z"})
    assert written(result)["backups"][0]["reason"] == "JobVanished"
    assert written(result)["active"] == []


def test_replace_deletes_the_running_job_first_and_starts_on_a_later_pass() -> None:
    cluster = Cluster()
    cluster.add_job("nightly-202604300200")
    previous = {"lastScheduleTime": "2026-04-30T02:00:00Z"}
    result = run(cluster, previous, raw=spec(concurrencyPolicy="Replace"))
    assert cluster.deleted == [("nightly-202604300200", True)] and cluster.created == []
    assert written(result)["backups"][0]["reason"] == "Replaced"
    assert result.busy


def test_forbid_waits_for_the_running_job() -> None:
    cluster = Cluster()
    cluster.add_job("nightly-202604300200")
    result = run(cluster, {"lastScheduleTime": "2026-04-30T02:00:00Z"})
    assert cluster.created == [] and result.busy
    assert written(result)["lastScheduleTime"] == "2026-04-30T02:00:00Z"  # still pending


def test_old_finished_jobs_are_tidied_beyond_the_newest_few() -> None:
    cluster = Cluster()
    names = [f"nightly-2026042{d}0200" for d in range(1, 6)]
    for name in names:
        cluster.add_job(name)
        cluster.jobs[name]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    status = {
        "backups": [{"name": n, "result": "Succeeded"} for n in reversed(names)],
        "lastScheduleTime": "2026-05-01T02:00:00Z",
    }
    run(cluster, status)
    assert sorted(n for n, _ in cluster.deleted) == names[:2]


def test_an_on_demand_request_runs_once_and_is_remembered() -> None:
    cluster = Cluster()
    status = {"lastScheduleTime": "2026-05-01T02:00:00Z"}
    result = run(cluster, status, **{"ops.stronghold.io/backup-now": "r1"})
    [name] = cluster.created
    assert cluster.jobs[name]["metadata"]["annotations"]["ops.stronghold.io/request"] == "r1"
    on_demand = written(result)["onDemand"]
    assert on_demand == {"backup": "r1", "backupJob": name}
    again = run(cluster, written(result), **{"ops.stronghold.io/backup-now": "r1"})
    assert len(cluster.created) == 1 and again.events == []


def test_a_maintenance_hold_defers_the_slot() -> None:
    cluster = Cluster()
    result = run(cluster, hold="mw-1")
    assert cluster.created == [] and "lastScheduleTime" not in written(result)


def test_the_next_pass_is_just_after_the_next_slot_and_never_far() -> None:
    raw = spec(schedule="* * * * *")
    cluster = Cluster()
    st = written(run(cluster, raw=raw))
    cluster.finish(cluster.created[0])
    idle = run(cluster, st, now=T0 + timedelta(seconds=20), raw=raw)
    assert idle.next_slot == datetime(2026, 5, 1, 2, 1, tzinfo=UTC)
    assert next_delay(idle) == 35.5  # 02:00:25 -> 02:01:00, plus the margin
    daily = run(Cluster(), {"lastScheduleTime": "2026-05-01T02:00:00Z"})
    assert next_delay(daily) == IDLE_MAX


def test_job_view_reads_outcome_and_request() -> None:
    def job(conditions: list[dict[str, str]], **extra: object) -> dict[str, object]:
        return {
            "metadata": {
                "name": SLOT_JOB,
                "labels": {"ops.stronghold.io/job-kind": "backup"},
                "annotations": {
                    "ops.stronghold.io/slot": "2026-05-01T02:00:00Z",
                    "ops.stronghold.io/trigger": "scheduled",
                    "ops.stronghold.io/request": "mw-1",
                },
                **extra,
            },
            "status": {"conditions": conditions},
        }

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
    assert is_recorded("s-202605010200", "backup", status, limit=10)
    assert not is_recorded("s-202605010100", "backup", status, limit=10)
    assert is_recorded("s-202605010100", "backup", status, limit=2)  # older than a full history
    assert is_recorded("s-restoretest-202605010100", "restore-test", status, limit=10)
    assert not is_recorded("s-restoretest-202605010400", "restore-test", status, limit=10)
    assert not is_recorded("s-verify-202605010100", "verify", status, limit=10)


def test_two_on_demand_jobs_of_one_minute_are_ordered_by_creation_not_by_hash() -> None:
    # Seen in benchmarks/backup.py: the second restore test of a minute hashed lower than
    # the first, was taken for recorded, and its result never reached status.
    first, second = "s-restoretest-202605010300-7fd97", "s-restoretest-202605010300-117f7"
    status = {"lastRestoreTest": {"job": first}}
    created = {first: "2026-05-01T03:00:05Z", second: "2026-05-01T03:00:40Z"}
    assert is_recorded(first, "restore-test", status, 10, created)
    assert not is_recorded(second, "restore-test", status, 10, created)
    # Once the second is recorded, the first is not taken for new again (no flip-flop).
    status = {"lastRestoreTest": {"job": second}}
    assert is_recorded(first, "restore-test", status, 10, created)
    assert is_recorded(second, "restore-test", status, 10, created)
    # The recorded Job gone: the other one of its minute is recorded rather than lost.
    assert not is_recorded(first, "restore-test", status, 10, {first: created[first]})
    # Different minutes still order by name.
    assert is_recorded("s-restoretest-202605010259-fffff", "restore-test", status, 10, created)
