"""Restores on the real cluster with the real PostgreSQL.

The restore test runs in a throwaway server inside its Job: a role that owns its database
but has no CREATEDB passes, the row counts equal the backup's, and production's
pg_stat_activity (polled while the Job runs) never shows a session of the restore test.
``stronghold backup restore`` restores into an empty database with equal row counts,
refuses a non-empty one without --force (nothing changed), and --dry-run changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from stronghold_testbed import images, paths
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
ROWS = {"public.accounts": 1234, "ledger.Entries": 5000, "public.empty_t": 0}
IMAGE = "stronghold/base:bookworm"
NEVER = "0 3 1 1 *"  # the tests ask for every run on demand


@dataclass
class Seeded:
    db: str
    user: str
    password: str


def admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed: {exc}", pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def base_image(testbed: Path) -> None:
    """The Job image of this checkout's recipe (with the PostgreSQL server): the cluster is
    shared, and a checkout of another recipe may have re-tagged it (cached: seconds)."""
    images.ensure([images.BASE])


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    """A database owned by a role WITHOUT CREATEDB (the normal case), with a reader role
    granted SELECT (so the dump names a role the throwaway server does not have)."""
    tag = uuid.uuid4().hex[:8]
    s = Seeded(f"rst_d_{tag}", f"rst_r_{tag}", f"pw:{uuid.uuid4().hex}")
    with admin() as a:
        a.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB PASSWORD {}").format(
                sql.Identifier(s.user), sql.Literal(s.password)
            )
        )
        a.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(s.user + "_reader")))
        a.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(*map(sql.Identifier, [s.db, s.user]))
        )
    with psycopg.connect(host="127.0.0.1", user=s.user, dbname=s.db, password=s.password) as c:
        c.execute("CREATE TABLE accounts(id int PRIMARY KEY, name text)")
        c.execute("INSERT INTO accounts SELECT g, 'acct' || g FROM generate_series(1, 1234) g")
        c.execute("CREATE SCHEMA ledger")
        c.execute('CREATE TABLE ledger."Entries"(id bigserial PRIMARY KEY, amount numeric)')
        c.execute('INSERT INTO ledger."Entries"(amount) SELECT g FROM generate_series(1, 5000) g')
        c.execute("CREATE TABLE empty_t(x int)")
        c.execute(
            sql.SQL("GRANT SELECT ON accounts TO {}").format(sql.Identifier(s.user + "_reader"))
        )
    yield s
    with admin() as a:
        for (name,) in a.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (s.db + "%",)
        ).fetchall():
            a.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        for role in (s.user + "_reader", s.user):
            a.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@dataclass
class Site:
    ns: str
    path: Path
    seeded: Seeded
    op: kit.OperatorProcess


@pytest.fixture
def site(
    namespace: str, seeded: Seeded, run_operator: Callable[..., kit.OperatorProcess]
) -> Iterator[Site]:
    """A namespace with the backup claim, the password Secret, one BackupSchedule whose
    restore test has no target (auto: the throwaway server of the default image), the
    operator, and one verified backup taken on demand."""
    root = Path(f"/tmp/stronghold-rst-{namespace}")
    (root / "db").mkdir(parents=True)
    (root / "db").chmod(0o777)  # the Job runs as uid 999
    with kit.hostpath_volume(namespace, root):
        kit.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "db", "namespace": namespace},
                "stringData": {"password": seeded.password},
            }
        )
        op = run_operator(namespace)
        kit.apply(schedule(namespace, seeded))
        value = f"b-{uuid.uuid4().hex[:6]}"
        kit.kubectl(
            "annotate", "bks", "s", "-n", namespace, f"ops.stronghold.io/backup-now={value}"
        )
        kit.wait_until(
            "a verified backup",
            lambda: [
                b
                for b in status(namespace).get("backups") or []
                if b.get("trigger") == value and b.get("verified")
            ],
            timeout=180,
            interval=2,
        )
        yield Site(namespace, root / "db", seeded, op)


def schedule(namespace: str, s: Seeded) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"name": "s", "namespace": namespace},
        "spec": {
            "schedule": NEVER,
            "database": {
                "host": "127.0.0.1",
                "name": s.db,
                "user": s.user,
                "password": {"secretKeyRef": {"name": "db", "key": "password"}},
            },
            "storage": {"persistentVolumeClaim": "backups", "path": "db"},
            "verify": {"restoreTest": {"schedule": NEVER}},
            "jobTemplate": {"image": IMAGE, "imagePullPolicy": "Never", "hostNetwork": True},
        },
    }


def status(namespace: str) -> dict[str, Any]:
    obj = kit.kubectl_json("get", "backupschedule", "s", "-n", namespace)
    st: dict[str, Any] = obj.get("status") or {}
    return st


def condition(st: dict[str, Any], type_: str) -> tuple[str | None, str | None]:
    for c in st.get("conditions") or []:
        if c["type"] == type_:
            return c["status"], c.get("reason")
    return None, None


def counts(db: str) -> dict[str, int]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=db) as c:
        return {
            t: int(c.execute(sql.SQL("SELECT count(*) FROM {}").format(q)).fetchone()[0])  # type: ignore[index]
            for t, q in (
                ("public.accounts", sql.Identifier("public", "accounts")),
                ("ledger.Entries", sql.Identifier("ledger", "Entries")),
                ("public.empty_t", sql.Identifier("public", "empty_t")),
            )
        }


def tables(db: str) -> list[str]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=db) as c:
        rows = c.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


@dataclass
class Watch:
    """Production's pg_stat_activity and pg_database, polled in a thread."""

    user: str
    db: str
    samples: list[float] = field(default_factory=list)
    seen: list[tuple[Any, ...]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with psycopg.connect(PG + " application_name=rst-watch", autocommit=True) as c:
            while not self.stop.is_set():
                rows = c.execute(
                    "SELECT pid, usename, datname, application_name FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND (usename = %s OR datname LIKE %s "
                    "OR application_name LIKE 'stronghold-restore%%')",
                    (self.user, self.db + "%"),
                ).fetchall()
                rows += c.execute(
                    "SELECT 0, '', datname, 'pg_database' FROM pg_database WHERE datname LIKE %s",
                    (self.db + "_restoretest_%",),
                ).fetchall()
                self.seen += [tuple(r) for r in rows]
                self.samples.append(time.time())
                time.sleep(0.02)


def job_result(namespace: str, kind: str) -> dict[str, Any]:
    """The termination message (JSON) of the schedule's one ``kind`` Job's container."""
    pods = kit.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"ops.stronghold.io/job-kind={kind}"
    )["items"]
    assert len(pods) == 1, pods
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    data: dict[str, Any] = json.loads(term["message"])
    return data


def pod_times(namespace: str, kind: str) -> tuple[float, float]:
    """(started, finished) of the container of the schedule's ``kind`` Job (1 s resolution)."""
    pods = kit.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"ops.stronghold.io/job-kind={kind}"
    )["items"]
    assert len(pods) == 1, pods
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]

    def ts(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()

    return ts(term["startedAt"]), ts(term["finishedAt"])


def answered(namespace: str, value: str) -> dict[str, Any] | None:
    """The status once the restore-test request ``value`` has its result."""
    st = status(namespace)
    done = (st.get("onDemand") or {}).get("restoreTest") == value and st.get("lastRestoreTest")
    return st if done else None


def cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stronghold_operator.cli", "backup", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": str(paths.admin_kubeconfig())},
        check=False,
    )


# -- tests --------------------------------------------------------------------------------


def test_restore_test_in_a_throwaway_server_without_createdb(site: Site) -> None:
    s = site.seeded
    with admin() as a:
        row = a.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s", (s.user,)).fetchone()
    assert row == (False,)  # the role may not create databases on production

    watch = Watch(s.user, s.db)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        kit.kubectl(
            "annotate", "bks", "s", "-n", site.ns, "ops.stronghold.io/restore-test-now=rt-1"
        )
        st = kit.wait_until(
            "the restore test's result", lambda: answered(site.ns, "rt-1"), timeout=300, interval=2
        )
    finally:
        watch.stop.set()
        thread.join(10)

    last = st["lastRestoreTest"]
    assert last["result"] == "Passed", last
    job = job_result(site.ns, "restore-test")  # what the Job itself reported
    assert job["target"] == "throwaway" and job["rolesCreated"] >= 1, job
    assert job["scratchDropped"] is True and job["serverStartSeconds"] > 0
    # status.lastRestoreTest.target/.server are not read back here: other checkouts' test
    # sessions re-apply their own CRDs to the shared cluster every few seconds, and the
    # apiserver prunes fields their schema lacks (the model/CRD agreement is a unit test).
    # The operator's Event is built from the same recorded entry.
    assert last["tablesCompared"] == 3 and last["rowsCompared"] == sum(ROWS.values())
    assert last["scratchDatabase"].startswith(f"{s.db}_restoretest_")
    assert condition(st, "RestoreTestPassed") == ("True", "RowCountsMatch")
    events = [e for e in kit.events_for(site.ns, "s") if e["reason"] == "RestoreTestPassed"]
    assert events and "on a throwaway server" in events[-1]["message"], events
    assert "throwaway server deleted" in events[-1]["message"]

    # Production was watched for the whole life of the restore test's container: no session
    # of the role, of its database or of the restore test, and no scratch database.
    started, finished = pod_times(site.ns, "restore-test")
    during = [t for t in watch.samples if started <= t <= finished + 1]
    assert len(during) >= 20, (len(during), started, finished)
    assert watch.seen == []


def test_cli_restore_empty_refused_dry_run_and_force(site: Site) -> None:
    s = site.seeded
    copy = f"{s.db}_copy"
    with admin() as a:
        a.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(*map(sql.Identifier, [copy, s.user]))
        )

    # --dry-run: the plan, and the database stays empty.
    dry = cli("restore", "s", "-n", site.ns, "--run", "latest", "--to", copy, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run: the restore would run" in dry.stdout and copy in dry.stdout
    assert tables(copy) == []

    # Into the empty database: the row counts of the backup.
    done = cli("restore", "s", "-n", site.ns, "--run", "latest", "--to", copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "row counts equal" in done.stdout
    assert counts(copy) == ROWS

    # Not empty any more: refused, nothing changed (a marker row survives).
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=copy, autocommit=True) as c:
        c.execute("INSERT INTO accounts VALUES (999999, 'marker')")
    before = counts(copy)
    refused = cli("restore", "s", "-n", site.ns, "--run", "latest", "--to", copy)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "TargetNotEmpty" in refused.stdout and "nothing was changed" in refused.stdout
    assert "--force" in refused.stdout
    assert counts(copy) == before == {**ROWS, "public.accounts": ROWS["public.accounts"] + 1}
    dry = cli("restore", "s", "-n", site.ns, "--run", "latest", "--to", copy, "--dry-run")
    assert dry.returncode == 0 and "would be REFUSED" in dry.stdout, dry.stdout
    assert counts(copy) == before

    # --force: what the role owns there is dropped and the backup restored, in one transaction.
    forced = cli("restore", "s", "-n", site.ns, "--run", "latest", "--to", copy, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert counts(copy) == ROWS

    # A password on the command line is refused before anything is created.
    jobs_before = kit.kubectl("get", "jobs", "-n", site.ns, "-o", "name")
    uri = f"postgresql://{s.user}:{s.password}@127.0.0.1:5432/{copy}"
    bad = cli("restore", "s", "-n", site.ns, "--run", "latest", "--to", uri)
    assert bad.returncode == 2 and "--password-secret" in bad.stdout
    assert s.password not in bad.stdout + bad.stderr
    assert kit.kubectl("get", "jobs", "-n", site.ns, "-o", "name") == jobs_before

    # The password is in no Job, pod, ConfigMap, Event or the CLI's output.
    everything = kit.kubectl("get", "jobs,pods,configmaps,events", "-n", site.ns, "-o", "json")
    for text in (everything, dry.stdout, done.stdout, refused.stdout, forced.stdout):
        assert s.password not in text
    # The source database was only read.
    assert counts(s.db) == ROWS
