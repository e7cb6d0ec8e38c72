"""Restores: the throwaway server's role scan, the restore Job, the CLI's choices (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from stronghold_operator.builders.jobs import throwaway_pg
from stronghold_operator.builders.restore_job import (
    LABEL_RESTORE_OF,
    restore_job,
    restore_job_name,
    restore_program,
)
from stronghold_operator.cli.backup_restore import parse_target, pick_archive
from stronghold_operator.models.backup import (
    LABEL_SCHEDULE,
    BackupScheduleSpec,
    DatabaseSpec,
    RestoreTestSpec,
)
from stronghold_operator.models.base import InvalidSpec, parse

SPEC = {
    "schedule": "@daily",
    "database": {
        "host": "db.prod",
        "name": "app",
        "user": "backup",
        "password": {"secretKeyRef": {"name": "db", "key": "password"}},
    },
    "storage": {"persistentVolumeClaim": "backups", "path": "db"},
    "verify": {"restoreTest": {}},
}
OWNER = {
    "apiVersion": "ops.stronghold.io/v1alpha1",
    "kind": "BackupSchedule",
    "metadata": {"name": "nightly", "namespace": "prod", "uid": "0b5e-uid"},
}
WHEN = datetime(2026, 12, 6, 3, 4, 5, tzinfo=UTC)


def test_roles_named_by_a_dump() -> None:
    lines = [
        "ALTER TABLE public.accounts OWNER TO app_owner;",
        'ALTER SCHEMA "Ledger" OWNER TO "Mixed ""Case""";',
        "GRANT SELECT ON TABLE public.accounts TO reader, PUBLIC;",
        "GRANT ALL ON SCHEMA public TO pg_database_owner;",
        "REVOKE ALL ON FUNCTION public.f(a integer) FROM old_role;",
        "GRANT USAGE ON SCHEMA s TO writer WITH GRANT OPTION;",
        "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA s GRANT SELECT ON TABLES TO reader;",
        "ALTER TABLE ONLY public.a ALTER COLUMN id SET DEFAULT 1;",
    ]
    assert throwaway_pg.roles_in(lines) == sorted(
        ["app_owner", 'Mixed "Case"', "reader", "old_role", "writer"]
    )


def test_restore_test_target_defaults_to_auto_and_is_checked() -> None:
    assert RestoreTestSpec().target == "auto"
    assert parse(RestoreTestSpec, {"target": "throwaway"}).target == "throwaway"
    with pytest.raises(InvalidSpec) as exc:
        parse(RestoreTestSpec, {"target": "production"})
    assert exc.value.field == "target"


def spec() -> BackupScheduleSpec:
    return parse(BackupScheduleSpec, SPEC)


def test_parse_target_name_uri_and_no_password() -> None:
    default = spec().database
    fields, err = parse_target("app_copy", default)
    assert err is None and fields["name"] == "app_copy" and fields["host"] == "db.prod"
    fields, err = parse_target("postgresql://other@10.0.0.5:6543/copy", default)
    assert err is None
    assert (fields["user"], fields["host"], fields["port"], fields["name"]) == (
        "other",
        "10.0.0.5",
        6543,
        "copy",
    )
    _, err = parse_target("postgresql://other:hunter2@10.0.0.5/copy", default)
    assert err is not None and "password" in err and "hunter2" not in err


def test_pick_archive_by_job_file_or_latest_verified() -> None:
    status: dict[str, Any] = {
        "backups": [
            {"name": "n-3", "file": "db_backup_20261206_030000.sql.gz", "result": "Failed"},
            {
                "name": "n-2",
                "file": "db_backup_20261205_030000.sql.gz",
                "result": "Succeeded",
                "verified": True,
            },
            {
                "name": "n-1",
                "file": "db_backup_20261204_030000.sql.gz",
                "result": "Succeeded",
                "verified": False,
                "verifyReason": "ChecksumMismatch",
            },
        ]
    }
    assert pick_archive(status, "latest")[0] == "db_backup_20261205_030000.sql.gz"
    assert pick_archive(status, "n-2")[0] == "db_backup_20261205_030000.sql.gz"
    refused, why = pick_archive(status, "n-1")
    assert refused is None and "ChecksumMismatch" in why
    assert pick_archive(status, "db_backup_20250101_000000.dump")[0] == (
        "db_backup_20250101_000000.dump"
    )
    assert pick_archive(status, "nope")[0] is None
    assert pick_archive({}, "latest")[0] is None


def test_restore_job_reads_backups_only_and_is_not_a_scheduled_run() -> None:
    target = DatabaseSpec.model_validate(
        {"host": "db.prod", "name": "app_copy", "user": "backup", "password": None}
    ).model_copy(update={"password": spec().database.password})
    name = restore_job_name("nightly", WHEN, "ab12c")
    job = restore_job(
        owner=OWNER,
        job_name=name,
        spec=spec(),
        target=target,
        archive="db_backup_20261205_030000.sql.gz",
        when=WHEN,
        force=False,
        dry_run=True,
    )
    assert name == "nightly-restore-20261206030405-ab12c"
    labels = job["metadata"]["labels"]
    assert LABEL_SCHEDULE not in labels and labels[LABEL_RESTORE_OF] == "nightly"
    pod = job["spec"]["template"]["spec"]
    assert LABEL_SCHEDULE not in job["spec"]["template"]["metadata"]["labels"]
    c = pod["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["STRONGHOLD_MODE"] == "restore" and env["PGDATABASE"] == "app_copy"
    assert env["RESTORE_DRY_RUN"] == "1" and env["RESTORE_FORCE"] == "0"
    assert env["RESTORE_FILE"] == "db_backup_20261205_030000.sql.gz"
    assert not any("PASSWORD" in k for k in env) and all("valueFrom" not in e for e in c["env"])
    assert "RESTORE_TARGET" not in env
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["backups"]["readOnly"] is True and "scratch" not in mounts
    program = next(v for v in pod["volumes"] if v["name"] == "program")
    assert program["configMap"]["name"] == f"{name}-program"
    secret = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    assert secret["secretName"] == "db"
    created = {**job, "metadata": {**job["metadata"], "uid": "job-uid"}}
    cm = restore_program(created)
    assert cm["metadata"]["name"] == f"{name}-program"
    ref = cm["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("Job", "job-uid", False)


def test_long_schedule_names_fit_a_job_name() -> None:
    name = restore_job_name("x" * 80, WHEN, "ab12c")
    assert len(name) <= 63 and name.endswith("-restore-20261206030405-ab12c")


def test_restore_target_auto_falls_back_only_without_a_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from stronghold_operator.builders.jobs import stronghold_job as helper

    server = tmp_path / "bin"
    server.mkdir()
    (server / "initdb").write_text("")
    monkeypatch.setattr(helper, "E", {"RESTORE_TARGET": "auto", "JOB_IMAGE": "pg:client"})
    monkeypatch.setenv("STRONGHOLD_PG_BINDIR", str(server))
    assert helper._restore_target() == ("throwaway", "")
    helper.E["RESTORE_TARGET"] = "scratchDatabase"
    assert helper._restore_target() == ("scratchDatabase", "")
    monkeypatch.setenv("STRONGHOLD_PG_BINDIR", str(tmp_path / "none"))
    helper.E["RESTORE_TARGET"] = "auto"
    target, note = helper._restore_target()
    assert target == "scratchDatabase" and "no PostgreSQL server" in note
    helper.E["RESTORE_TARGET"] = "throwaway"
    target, why = helper._restore_target()
    assert target is None and "spec.verify.restoreTest.target" in why and "pg:client" in why


def test_restore_plan_refuses_a_non_empty_target_unless_forced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stronghold_operator.builders.jobs import stronghold_job as helper

    monkeypatch.setattr(helper, "E", {"PGUSER": "app"})
    man = {"sha256": "ab" * 32, "tableCount": 3}
    objects = [f"table public.t{i}" for i in range(7)]
    refusal, plan = helper._restore_plan("f.sql.gz", man, "database x", objects, force=False)
    assert "is not empty (7 objects: table public.t0" in refusal and "…" in refusal
    assert "nothing was changed" in refusal and "--force" in refusal
    refusal, plan = helper._restore_plan("f.sql.gz", man, "database x", objects, force=True)
    assert refusal == "" and "first dropping what app owns there" in plan
    refusal, plan = helper._restore_plan("f.sql.gz", man, "database x", [], force=False)
    assert refusal == "" and "dropping" not in plan and "one transaction" in plan
    assert helper._version("15.20 (Debian 15.20-0+deb12u1)") == (15, 20)
    assert helper._version("postgres (PostgreSQL) 15.18") < helper._version("15.20")
