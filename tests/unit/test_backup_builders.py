"""Backup Job manifests: golden files, the security baseline, and the in-container helper."""

from __future__ import annotations

import ast
import gzip
import hashlib
import itertools
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stronghold_operator.builders import backup_program
from stronghold_operator.builders.backup_job import backup_job
from stronghold_operator.builders.jobs import stronghold_job as helper
from stronghold_operator.logic import backup as lb
from stronghold_operator.models.backup import BackupScheduleSpec
from stronghold_operator.models.base import parse

GOLDEN = Path(__file__).parent / "golden"
SLOT = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
OWNER = {
    "apiVersion": "ops.stronghold.io/v1alpha1",
    "kind": "BackupSchedule",
    "metadata": {"name": "nightly", "namespace": "prod", "uid": "0b5e-uid"},
}
MINIMAL: dict[str, Any] = {
    "schedule": "0 2 * * *",
    "database": {"host": "127.0.0.1", "name": "django_app_prod", "user": "django_user"},
    "storage": {"persistentVolumeClaim": "backups"},
}
FULL: dict[str, Any] = MINIMAL | {
    "timeZone": "Europe/Berlin",
    "format": "custom",
    "compression": {"level": 9},
    "database": MINIMAL["database"]
    | {"password": {"secretKeyRef": {"name": "db", "key": "password"}}, "sslmode": "disable"},
    "storage": {"persistentVolumeClaim": "backups", "path": "/prod/db/"},
    "retention": {"days": 14, "minKeep": 5},
    "verify": {"restoreTest": {"tables": ["accounts", "ledger.entries"]}},
    "jobTemplate": {
        "image": "stronghold/base:bookworm",
        "imagePullPolicy": "Never",
        "hostNetwork": True,
        "runAsUser": 70,
        "fsGroup": 70,
        "resources": {"limits": {"memory": "512Mi"}},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "backup", "operator": "Exists"}],
        "securityContext": {"readOnlyRootFilesystem": True},
    },
}

OFFSITE: dict[str, Any] = MINIMAL | {
    "offsite": {
        "endpoint": "https://s3.example.net",
        "bucket": "stronghold-backups",
        "prefix": "prod/nightly",
        "accessKeyId": {"secretKeyRef": {"name": "s3", "key": "access-key"}},
        "secretAccessKey": {"secretKeyRef": {"name": "s3", "key": "secret-key"}},
    }
}

CASES = {
    "backup-minimal": (MINIMAL, "backup", None),
    "backup-offsite": (OFFSITE, "backup", None),
    "backup-full": (FULL, "backup", None),
    "verify-full": (FULL, "verify", None),
    "restoretest-full": (FULL, "restore-test", "db_backup_20260430_020000.dump"),
}


def build(spec: dict[str, Any], kind: Any, restore: str | None) -> dict[str, Any]:
    model = parse(BackupScheduleSpec, spec)
    return backup_job(
        owner=OWNER,
        job_name=lb.job_name("nightly", SLOT, kind),
        kind=kind,
        spec=model,
        slot=SLOT,
        trigger="scheduled",
        protected=["db_backup_20260430_020000.dump"],
        restore_file=restore,
    )


def without_script(job: dict[str, Any]) -> dict[str, Any]:
    """The program's hash changes with every edit of it: golden files show the rest."""
    annotations = job["metadata"]["annotations"]
    assert annotations[backup_program.ANNOTATION_PROGRAM] == backup_program.program_hash()
    annotations[backup_program.ANNOTATION_PROGRAM] = "<program_hash>"
    return job


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    got = yaml.safe_dump(without_script(build(*CASES[case])), sort_keys=True)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(got)
    assert got == path.read_text(), f"regenerate with UPDATE_GOLDEN=1 if intended ({path})"


@pytest.mark.parametrize("case", sorted(CASES))
def test_restricted_pod_security_and_no_secrets(case: str) -> None:
    job = build(*CASES[case])
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert job["spec"]["backoffLimit"] == 0
    assert job["metadata"]["ownerReferences"][0]["uid"] == "0b5e-uid"
    names = {e["name"] for e in c["env"]}
    assert not any("PASSWORD" in n for n in names)
    assert all("valueFrom" not in e for e in c["env"])
    assert "PGPASSFILE" not in names  # set by the script, pointing at its 0600 copy


def test_secret_is_mounted_as_volume_only() -> None:
    pod = build(*CASES["backup-full"])["spec"]["template"]["spec"]
    secret = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    assert secret["secretName"] == "db"
    assert secret["items"] == [{"key": "password", "path": "password", "mode": 0o440}]
    assert pod["securityContext"]["fsGroup"] == 70 and pod["hostNetwork"] is True


def test_script_is_strict_bash_and_never_names_the_password_in_env() -> None:
    s = backup_program.program_files()["backup.sh"]
    assert s.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in s
    assert "PGPASSWORD" not in s and "--password" not in s
    assert 'export PGPASSFILE="$W/.pgpass"' in s
    assert "--snapshot=" in s and "REPEATABLE READ" in s
    assert "pg_restore --list" in s
    py = backup_program.program_files()["stronghold_job.py"]
    assert "PGPASSWORD" not in py and "-- PostgreSQL database dump complete" in py


# The Job runs the helper and the retention module with the Python of a user-chosen image.
JOB_MODULES = [
    "stronghold_job.py",
    "retention.py",
    "throwaway_pg.py",
    "stronghold_runs.py",
    "offsite.py",
]
OWN = {
    "stronghold_operator.logic.retention",
    "stronghold_operator.builders.jobs",
    "throwaway_pg",
    "stronghold_runs",
}  # shipped beside the helper in the ConfigMap


@pytest.mark.parametrize("key", JOB_MODULES)
def test_job_python_imports_only_the_standard_library(key: str) -> None:
    # Python 3.7 grammar (best effort: catches walrus, match, parenthesised context managers).
    tree = ast.parse(backup_program.program_files()[key], feature_version=(3, 7))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert name in OWN or top in sys.stdlib_module_names, f"{key} imports {name}"


def test_program_configmap_ships_every_file_with_its_hash() -> None:
    cm = backup_program.program_configmap(OWNER)
    assert cm["metadata"]["name"] == "nightly-backup-program"
    assert cm["metadata"]["namespace"] == "prod"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "0b5e-uid"
    assert cm["metadata"]["annotations"] == {
        backup_program.ANNOTATION_PROGRAM: backup_program.program_hash()
    }
    assert set(cm["data"]) == {
        "backup.sh",
        "stronghold_job.py",
        "count-rows.sql",
        "target-objects.sql",
        "retention.py",
        "throwaway_pg.py",
        "stronghold_runs.py",
        "offsite.py",
    }
    pod = build(*CASES["backup-minimal"])["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "program")["configMap"]
    assert volume["name"] == cm["metadata"]["name"]
    assert {i["key"] for i in volume["items"]} == set(cm["data"])
    paths = {i["key"]: i["path"] for i in volume["items"]}
    assert paths["retention.py"] == "stronghold_operator/logic/retention.py"  # its import path
    c = pod["containers"][0]
    assert c["command"] == ["bash", f"{backup_program.PROGRAM_MOUNT}/backup.sh"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "program")
    assert mount == {"name": "program", "mountPath": backup_program.PROGRAM_MOUNT, "readOnly": True}


DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@pytest.mark.parametrize(
    "name", ["a", "x" * 238, "x" * 239, "a." * 126 + "b", "a-" * 126 + "b", "y" * 253]
)
def test_configmap_name_is_a_valid_deterministic_name_for_any_schedule_name(name: str) -> None:
    got = backup_program.configmap_name(name)
    assert len(got) <= 253 and DNS_SUBDOMAIN.fullmatch(got), got
    assert got == backup_program.configmap_name(name)
    assert got != backup_program.configmap_name(name[:-1] + "z")


DUMP = b"".join(b"INSERT INTO t VALUES (%d, '%s');\n" % (i, b"x" * 80) for i in range(20000))
COMPLETE = DUMP + b"--\n-- PostgreSQL database dump complete\n--\n\n"


def _read(data: bytes, chunk: int = 4096) -> str | None:
    r = helper.Reader(True)
    for i in range(0, len(data), chunk):
        r.feed(data[i : i + chunk])
    assert r.size == len(data)
    assert r.sha.hexdigest() == hashlib.sha256(data).hexdigest()
    result: str | None = r.finish()
    return result


@pytest.mark.parametrize("chunk", [1, 4096, 1 << 20])
def test_stream_reader_accepts_a_complete_gzip_dump(chunk: int) -> None:
    assert _read(gzip.compress(COMPLETE), chunk if chunk > 1 else 997) is None


def test_stream_reader_names_each_kind_of_bad_archive() -> None:
    good = gzip.compress(COMPLETE)
    assert _read(gzip.compress(DUMP)) == "dump is incomplete: trailer line missing"
    assert _read(good[: len(good) // 2]) == "gzip stream is truncated"
    assert _read(good + b"garbage") == "data after the end of the gzip stream"
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    assert (_read(bytes(flipped)) or "").startswith("gzip stream is corrupt")
    # A valid deflate body whose CRC-32 in the gzip trailer is wrong.
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0x01
    assert (_read(bytes(bad_crc)) or "").startswith("gzip stream is corrupt")


def test_stream_reader_output_is_bounded_whatever_the_ratio() -> None:
    zeros = gzip.compress(b"\0" * (64 << 20) + b"-- PostgreSQL database dump complete\n")
    assert _read(zeros, 1 << 16) is None


# A plain dump's shape: data sections between function bodies and comments. Row lines may
# hold escaped newlines and backslashes; a value that is a lone "\." is written "\\.".
PLAIN = (
    b"--\n-- PostgreSQL database dump\n--\n\n"
    b"CREATE FUNCTION public.f() RETURNS void LANGUAGE sql AS $$\n"
    b"COPY public.other TO stdout;\n$$;\n\n"
    b"--\n-- Data for Name: accounts; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n"
    b"COPY public.accounts (id, name) FROM stdin;\n"
    b"1\tline one\\nline two\n2\t\\\\.\n3\t\\N\n\\.\n\n\n"
    b'COPY "Ledger.2026"."Entries ""big"" one" (id) FROM stdin;\n'
    + b"".join(b"%d\n" % i for i in range(5000))
    + b"\\.\n\n\n"
    b"COPY public.empty_t (x) FROM stdin;\n\\.\n\n\n"
    b"COPY public.nocols  FROM stdin;\n\n\n\\.\n\n\n"
    b"--\n-- PostgreSQL database dump complete\n--\n\n"
)
PLAIN_COUNTS = {
    "public.accounts": 3,
    'Ledger.2026.Entries "big" one': 5000,
    "public.empty_t": 0,
    "public.nocols": 2,
}


def _count_rows(data: bytes, chunk: int) -> dict[str, int]:
    rows = helper.RowCounter()
    r = helper.Reader(True, rows)
    for i in range(0, len(data), chunk):
        r.feed(data[i : i + chunk])
    assert r.finish() is None
    assert rows.table is None and rows.bad == []
    counts: dict[str, int] = rows.counts
    return counts


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 4096, 1 << 20])
def test_row_counter_counts_every_table_whatever_the_chunking(chunk: int) -> None:
    assert _count_rows(gzip.compress(PLAIN), chunk) == PLAIN_COUNTS


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(PLAIN)), max_size=12))
def test_row_counter_finds_markers_split_anywhere(cuts: list[int]) -> None:
    rows = helper.RowCounter()
    edges = [0, *sorted(cuts), len(PLAIN)]
    for a, b in itertools.pairwise(edges):
        rows.feed(PLAIN[a:b])
    assert rows.counts == PLAIN_COUNTS and rows.table is None


def test_copy_table_reads_quoted_names_and_rejects_garbage() -> None:
    read = helper.copy_table
    assert read(b"COPY public.t (a, b) FROM stdin;") == "public.t"
    assert read(b'COPY "a""b"."c.d" (x) FROM stdin;') == 'a"b.c.d'
    assert read(b"COPY t (a) FROM stdin;") is None  # pg_dump always qualifies
    assert read(b'COPY "unterminated.t (a) FROM stdin;') is None
