"""BackupSchedule end to end: real cluster, real Jobs in Docker, real PostgreSQL, real files.

Each test gets a fresh namespace, a hostPath PersistentVolume on a directory of this machine
(so the test can read and tamper with the archives), and the real operator.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from stronghold_operator.models.backup import schedule_label
from stronghold_testbed import paths
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
ROWS = {"public.accounts": 1234, "ledger.Entries": 5000, "public.empty_t": 0}
IMAGE = "stronghold/base:bookworm"


@dataclass
class Seeded:
    db: str
    user: str
    password: str


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    """A database with tables of known row counts, owned by a role with a password."""
    tag = uuid.uuid4().hex[:8]
    s = Seeded(f"bks_d_{tag}", f"bks_r_{tag}", f"pw:{uuid.uuid4().hex}\\x")
    try:
        admin = psycopg.connect(PG, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed: {exc}", pytrace=False)
    with admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(s.user), sql.Literal(s.password)
            )
        )
        admin.execute(f"CREATE DATABASE {s.db} OWNER {s.user}")
    with psycopg.connect(host="127.0.0.1", user=s.user, dbname=s.db, password=s.password) as c:
        c.execute("CREATE TABLE accounts(id int PRIMARY KEY, name text)")
        c.execute("INSERT INTO accounts SELECT g, 'acct' || g FROM generate_series(1, 1234) g")
        c.execute("CREATE SCHEMA ledger")
        c.execute('CREATE TABLE ledger."Entries"(id bigserial PRIMARY KEY, amount numeric)')
        c.execute('INSERT INTO ledger."Entries"(amount) SELECT g FROM generate_series(1, 5000) g')
        c.execute("CREATE TABLE empty_t(x int)")
    yield s
    with psycopg.connect(PG, autocommit=True) as admin:
        for (name,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (s.db + "%",)
        ).fetchall():
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {s.user}")


@dataclass
class Site:
    """What each test works in: a fresh namespace whose claim "backups" is a directory of this
    machine (so the test can read and tamper with the archives), the seeded database, and the
    operator, started once the test has prepared what it needs."""

    ns: str
    path: Path  # where the schedules write (storage.path "db" inside the volume)
    seeded: Seeded
    run_operator: Callable[..., kit.OperatorProcess]

    def start(self, db: Seeded | None = None) -> kit.OperatorProcess:
        """The Secret with the password of ``db`` (default: the seeded database), then the
        operator."""
        secret(self.ns, db or self.seeded)
        return self.run_operator(self.ns)


@pytest.fixture
def site(
    namespace: str, seeded: Seeded, run_operator: Callable[..., kit.OperatorProcess]
) -> Iterator[Site]:
    root = Path(f"/tmp/stronghold-bks-{namespace}")
    (root / "db").mkdir(parents=True)
    (root / "db").chmod(0o777)  # the Job runs as uid 999
    with kit.hostpath_volume(namespace, root):
        yield Site(namespace, root / "db", seeded, run_operator)


def secret(namespace: str, s: Seeded) -> None:
    kit.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": namespace},
            "stringData": {"password": s.password},
        }
    )


def schedule(name: str, namespace: str, s: Seeded, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schedule": "* * * * *",
        "timeZone": "Europe/Berlin",
        "database": {
            "host": "127.0.0.1",
            "name": s.db,
            "user": s.user,
            "password": {"secretKeyRef": {"name": "db", "key": "password"}},
        },
        "storage": {"persistentVolumeClaim": "backups", "path": "db"},
        "jobTemplate": {"image": IMAGE, "imagePullPolicy": "Never", "hostNetwork": True},
    }
    body.update(spec)
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def get(namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kit.kubectl_json("get", "backupschedule", name, "-n", namespace)
    return obj


def status(namespace: str, name: str) -> dict[str, Any]:
    return get(namespace, name).get("status") or {}


def wait_status(
    namespace: str, name: str, what: str, pred: Callable[[dict[str, Any]], Any], timeout: float
) -> Any:
    return kit.wait_until(what, lambda: pred(status(namespace, name)), timeout=timeout, interval=2)


def wait_reason(
    namespace: str, name: str, type_: str, reason: str, timeout: float = 150
) -> dict[str, Any]:
    """The status once condition ``type_`` has reason ``reason``."""
    st: dict[str, Any] = wait_status(
        namespace, name, reason, lambda s: s if cond(s, type_)[1] == reason else None, timeout
    )
    return st


def cond(st: dict[str, Any], type_: str) -> tuple[str | None, str | None, str]:
    for c in st.get("conditions") or []:
        if c["type"] == type_:
            return c["status"], c.get("reason"), c.get("message", "")
    return None, None, ""


def succeeded(st: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in st.get("backups") or [] if b.get("result") == "Succeeded"]


def by_trigger(trigger: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """The succeeded backups of one trigger (an on-demand request's value)."""
    return lambda st: [b for b in succeeded(st) if b.get("trigger") == trigger]


def backup_now(namespace: str, name: str, value: str) -> None:
    kit.kubectl(
        "annotate", "backupschedule", name, "-n", namespace, f"ops.stronghold.io/backup-now={value}"
    )


def jobs(namespace: str, name: str) -> list[dict[str, Any]]:
    body = kit.kubectl_json(
        "get",
        "jobs",
        "-n",
        namespace,
        "-l",
        f"ops.stronghold.io/backupschedule={schedule_label(name)}",
    )
    items: list[dict[str, Any]] = body["items"]
    return items


def archives(path: Path) -> list[str]:
    return sorted(
        p.name
        for p in path.iterdir()
        if p.name.startswith("db_backup_") and not p.name.endswith(".manifest.json")
    )


def corrupt(archive: Path) -> None:
    """Flip the bits of the middle byte."""
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))


def cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kit.VENV_BIN / "stronghold"), "backup", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": str(paths.admin_kubeconfig())},
        check=False,
    )


def assert_no_password(namespace: str, password: str, operator_logs: str) -> None:
    everything = [
        kit.kubectl("get", "jobs,pods,backupschedules", "-n", namespace, "-o", "json"),
        kit.kubectl("get", "events", "-n", namespace, "-o", "json"),
        operator_logs,
    ]
    for text in everything:
        assert password not in text
        assert json.dumps(password)[1:-1] not in text


@contextmanager
def accounts_locked(s: Seeded) -> Iterator[psycopg.Connection[Any]]:
    """The seeded table locked, so a backup's pg_dump waits; ``rollback()`` lets it go."""
    lock = psycopg.connect(f"host=127.0.0.1 user=postgres dbname={s.db}")
    try:
        lock.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        yield lock
    finally:
        lock.close()


def make_archive(s: Seeded, path: Path, when: datetime, verified: bool) -> str:
    """A real archive of the seeded database under a backdated name, with its manifest."""
    name = f"db_backup_{when:%Y%m%d_%H%M%S}.sql.gz"
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", s.db], capture_output=True, check=True
    ).stdout
    data = gzip.compress(dump)
    (path / name).write_bytes(data)
    manifest = {
        "file": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "sizeBytes": len(data),
        "verified": verified,
        "rowCounts": ROWS,
        "tableCount": 3,
    }
    (path / f"{name}.manifest.json").write_text(json.dumps(manifest))
    return name


# -- tests --------------------------------------------------------------------------------


def test_backup_every_minute_verified_restore_test_cli_and_metrics(site: Site) -> None:
    op = site.start()
    kit.apply(
        schedule(
            "nightly",
            site.ns,
            site.seeded,
            verify={
                "restoreTest": {"schedule": "0 3 1 1 *", "tables": ["accounts", "ledger.Entries"]}
            },
        )
    )

    st = wait_status(
        site.ns,
        "nightly",
        "a verified scheduled backup",
        lambda s: [b for b in succeeded(s) if b.get("verified")],
        timeout=150,
    )
    first = st[0]
    path = site.path / first["file"]
    data = path.read_bytes()
    manifest = json.loads((site.path / f"{first['file']}.manifest.json").read_text())
    assert hashlib.sha256(data).hexdigest() == first["sha256"] == manifest["sha256"]
    assert len(data) == first["sizeBytes"] == manifest["sizeBytes"]
    text = gzip.decompress(data).decode()
    assert "-- PostgreSQL database dump complete" in text
    assert manifest["rowCounts"] == ROWS and manifest["pgDumpVersion"].startswith("pg_dump")
    assert first["name"].startswith("nightly-") and first["trigger"] in ("scheduled", "catch-up")
    assert not [p for p in site.path.iterdir() if p.name.endswith(".partial")]

    s = wait_status(
        site.ns,
        "nightly",
        "Ready=True",
        lambda s: s if cond(s, "Ready")[0] == "True" else None,
        timeout=60,
    )
    assert cond(s, "LastBackupSucceeded")[:2] == ("True", "BackupCompleted")
    assert cond(s, "BackupVerified")[:2] == ("True", "Verified")
    assert cond(s, "BackupStale")[0] == "False"
    assert s["lastSuccessfulTime"] and s["lastVerifiedTime"] and s["nextScheduleTime"]
    reasons = {e["reason"] for e in kit.events_for(site.ns, "nightly")}
    assert {"BackupStarted", "BackupSucceeded", "BackupVerified"} <= reasons

    # On demand through the CLI (the annotation), waiting for the recorded, verified result.
    now = cli("now", "nightly", "-n", site.ns, "--wait", "--timeout", "200")
    assert now.returncode == 0, now.stdout + now.stderr
    value = now.stdout.split("backup-now=")[1].split()[0]
    s = status(site.ns, "nightly")
    mine = [b for b in s["backups"] if b.get("trigger") == value]
    assert len(mine) == 1 and mine[0]["verified"] is True
    assert s["onDemand"]["backup"] == value

    # Restore test through the CLI: scratch database, counts compared, scratch dropped.
    rt = cli("restore-test", "nightly", "-n", site.ns, "--wait", "--timeout", "300")
    assert rt.returncode == 0, rt.stdout + rt.stderr
    s = status(site.ns, "nightly")
    last = s["lastRestoreTest"]
    assert last["result"] == "Passed" and last["tablesCompared"] == 2
    assert last["rowsCompared"] == 1234 + 5000
    assert last["scratchDatabase"].startswith(f"{site.seeded.db}_restoretest_")
    assert last["durationSeconds"] > 0
    assert cond(s, "RestoreTestPassed")[:2] == ("True", "RowCountsMatch")
    with psycopg.connect(PG) as c:
        left = c.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s",
            (f"{site.seeded.db}_restoretest_%",),
        ).fetchone()
    assert left == (0,)
    assert "RestoreTestPassed" in {e["reason"] for e in kit.events_for(site.ns, "nightly")}

    listed = cli("list", "nightly", "-n", site.ns)
    assert listed.returncode == 0 and first["name"] in listed.stdout
    as_json = json.loads(cli("list", "nightly", "-n", site.ns, "--json").stdout)
    assert first["name"] in {b["name"] for b in as_json["backups"]}

    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert f'stronghold_backup_last_success_timestamp_seconds{{namespace="{site.ns}"' in metrics
    assert "stronghold_backup_results_total" in metrics
    assert_no_password(site.ns, site.seeded.password, op.logs())


def test_retention_backdated_and_corrupted_archive(site: Site) -> None:
    now = datetime.now(UTC)
    old = {
        d: make_archive(site.seeded, site.path, now - timedelta(days=d), verified=d != 45)
        for d in (40, 45, 50, 60, 70)
    }
    op = site.start()
    # Suspended, so exactly one backup (on demand) runs: the retention outcome is exact.
    kit.apply(
        schedule("keep", site.ns, site.seeded, suspend=True, retention={"days": 30, "minKeep": 3})
    )
    backup_now(site.ns, "keep", "one")
    st = wait_status(site.ns, "keep", "the first backup", succeeded, timeout=150)
    new = st[0]["file"]
    # Kept: the new backup (young), and as minKeep the two newest verified old ones (40, 50);
    # 45 is unverified (never counts) and old, 60 and 70 are beyond what minKeep needs.
    kit.wait_until(
        "retention to prune",
        lambda: new in archives(site.path) and old[60] not in archives(site.path),
        timeout=30,
    )
    assert set(archives(site.path)) >= {new, old[40], old[50]}
    assert not {old[45], old[60], old[70]} & set(archives(site.path))
    pruned = [e for e in kit.events_for(site.ns, "keep") if e["reason"] == "Pruned"]
    assert pruned and old[70] in pruned[0]["message"]

    # Flip bytes in the newest archive and re-verify everything on disk.
    newest = succeeded(status(site.ns, "keep"))[0]["file"]
    corrupt(site.path / newest)
    res = cli("verify", "keep", "-n", site.ns, "--wait", "--timeout", "200")
    assert res.returncode == 1, res.stdout + res.stderr  # some archive failed
    s = status(site.ns, "keep")
    assert cond(s, "BackupVerified")[:2] == ("False", "ChecksumMismatch")
    assert cond(s, "Ready")[0] == "False"
    assert f"{newest}: ChecksumMismatch" in s["lastVerification"]["failed"]
    events = kit.events_for(site.ns, "keep")
    assert any(e["reason"] == "VerificationFailed" and newest in e["message"] for e in events)
    # Older verified archives are kept: the corrupted one does not count towards minKeep.
    assert {old[40], old[50]} <= set(archives(site.path))
    man = json.loads((site.path / f"{newest}.manifest.json").read_text())
    assert man["verified"] is False and man["verifyReason"] == "ChecksumMismatch"
    assert_no_password(site.ns, site.seeded.password, op.logs())


def test_operator_killed_mid_backup_forbid_then_replace(site: Site) -> None:
    secret(site.ns, site.seeded)
    # pg_dump waits for this lock: the backup runs "forever" until we let it go.
    with accounts_locked(site.seeded) as lock:
        op = site.run_operator(site.ns)
        kit.apply(schedule("slow", site.ns, site.seeded))
        running = wait_status(
            site.ns, "slow", "a running backup Job", lambda s: s.get("active"), timeout=130
        )
        slot_job = running[0]["name"]
        op.kill()  # SIGKILL, mid-backup
        time.sleep(5)
        op2 = site.run_operator(site.ns)
        # Across the next minute boundary: Forbid keeps it to one Job; the restarted
        # operator adopts the running one instead of creating another.
        boundary = 61 - datetime.now(UTC).second
        time.sleep(boundary + 15)
        names = [j["metadata"]["name"] for j in jobs(site.ns, "slow")]
        assert names == [slot_job], names
        assert [a["name"] for a in status(site.ns, "slow")["active"]] == [slot_job]
        lock.rollback()  # release: the backup completes
        s = wait_status(
            site.ns,
            "slow",
            "the adopted backup's result",
            lambda s: [b for b in succeeded(s) if b["name"] == slot_job],
            timeout=90,
        )
        assert len(s) == 1
        st = status(site.ns, "slow")
        assert [b["name"] for b in st["backups"]].count(slot_job) == 1
        files = [json.loads(p.read_text())["job"] for p in site.path.glob("*.manifest.json")]
        assert files.count(slot_job) == 1

        # Replace: a slow backup is deleted when the next slot comes, and recorded as such.
        kit.kubectl(
            "patch",
            "backupschedule",
            "slow",
            "-n",
            site.ns,
            "--type=merge",
            "-p",
            '{"spec": {"concurrencyPolicy": "Replace"}}',
        )
        lock.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        locked_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # A Job whose slot is after the lock was taken is certainly stuck behind it.
        first = wait_status(
            site.ns,
            "slow",
            "a backup stuck behind the lock",
            lambda s: [a["name"] for a in s.get("active") or [] if a["slot"] > locked_at],
            timeout=130,
        )[0]
        replaced = wait_status(
            site.ns,
            "slow",
            "the slow backup to be replaced",
            lambda s: [
                b
                for b in s.get("backups") or []
                if b["name"] == first and b.get("reason") == "Replaced"
            ],
            timeout=130,
        )
        assert replaced
        # The replacing Job starts only once the replaced Job's pod is gone (issue 17 #11):
        # never two dumps at once. Non-terminal pods, by Job, sampled every second.
        overlaps: list[set[str]] = []

        def replacement() -> str | None:
            pods = kit.kubectl_json(
                "get", "pods", "-n", site.ns, "-l", "ops.stronghold.io/backupschedule=slow"
            )["items"]
            live = {
                p["metadata"]["labels"].get("job-name", "")
                for p in pods
                if p["status"].get("phase") not in ("Succeeded", "Failed")
            }
            if len(live) > 1:
                overlaps.append(live)
            act = [a["name"] for a in status(site.ns, "slow").get("active") or []]
            return act[0] if act and act[0] != first else None

        second = kit.wait_until("the replacing backup", replacement, timeout=120, interval=1)
        assert overlaps == []
        lock.rollback()
        wait_status(
            site.ns,
            "slow",
            "the replacing backup to finish",
            lambda s: [b for b in succeeded(s) if b["name"] == second],
            timeout=90,
        )
        assert_no_password(site.ns, site.seeded.password, op.logs() + op2.logs())


def test_suspend_then_on_demand(site: Site) -> None:
    site.start()
    kit.apply(schedule("paused", site.ns, site.seeded, suspend=True))
    wait_status(
        site.ns, "paused", "a nextScheduleTime", lambda s: s.get("nextScheduleTime"), timeout=30
    )
    time.sleep(61 - datetime.now(UTC).second + 10)  # a slot passes while suspended
    assert jobs(site.ns, "paused") == []
    backup_now(site.ns, "paused", "maintenance-1")
    s = wait_status(
        site.ns, "paused", "the on-demand backup", by_trigger("maintenance-1"), timeout=120
    )
    assert s[0]["verified"] is True
    assert len(jobs(site.ns, "paused")) == 1
    assert archives(site.path) == [s[0]["file"]]


def test_bad_inputs_name_the_problem_and_delete_nothing(site: Site) -> None:
    keep = [
        make_archive(site.seeded, site.path, datetime.now(UTC) - timedelta(days=d), True)
        for d in (90, 100)
    ]
    op = site.start()
    retention = {"days": 1, "minKeep": 1}
    nosecret = schedule("nosecret", site.ns, site.seeded, retention=retention)
    nosecret["spec"]["database"]["password"]["secretKeyRef"]["name"] = "absent"
    nodb = schedule("nodb", site.ns, site.seeded, retention=retention)
    nodb["spec"]["database"]["name"] = "bks_absent_db"
    for obj in (
        nosecret,
        nodb,
        schedule("badcron", site.ns, site.seeded, schedule="61 * * * *"),
        schedule("badzone", site.ns, site.seeded, timeZone="Mars/Olympus"),
    ):
        kit.apply(obj)

    s = wait_reason(site.ns, "nosecret", "LastBackupSucceeded", "SecretMissing")
    assert "absent" in cond(s, "LastBackupSucceeded")[2] and cond(s, "Ready")[0] == "False"
    assert jobs(site.ns, "nosecret") == []
    s = wait_reason(site.ns, "nodb", "LastBackupSucceeded", "DatabaseNotFound")
    assert "bks_absent_db" in cond(s, "LastBackupSucceeded")[2]
    s = status(site.ns, "badcron")
    assert cond(s, "Ready")[:2] == ("False", "InvalidSpec")
    assert "spec.schedule" in cond(s, "Ready")[2] and "61" in cond(s, "Ready")[2]
    s = status(site.ns, "badzone")
    assert cond(s, "Ready")[:2] == ("False", "InvalidSpec")
    assert "spec.timeZone" in cond(s, "Ready")[2] and "Mars/Olympus" in cond(s, "Ready")[2]
    assert jobs(site.ns, "badcron") == [] and jobs(site.ns, "badzone") == []
    reasons = {e["reason"] for e in kit.events_for(site.ns, "nosecret")}
    assert "SecretMissing" in reasons
    assert "DatabaseNotFound" in {e["reason"] for e in kit.events_for(site.ns, "nodb")}
    # Old archives, far beyond retention.days, are untouched: failures never prune.
    assert set(keep) <= set(archives(site.path))
    assert_no_password(site.ns, site.seeded.password, op.logs())


@dataclass
class ScramServer:
    port: int
    good: str  # the role's real password


@pytest.fixture
def scram_server() -> Iterator[ScramServer]:
    """A PostgreSQL this test starts on a free port with scram-sha-256 authentication.

    The shared server trusts 127.0.0.1, so a wrong password cannot be noticed there; this one
    checks passwords. Started and stopped here only (never the shared one).
    """
    # Not under pytest's tmp dir: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="stronghold-bks-pg-"))
    data = root / "data"
    admin_pw = uuid.uuid4().hex
    good = f"gd:{uuid.uuid4().hex}\\"
    (root / "pw").write_text(admin_pw)
    shutil.chown(root, "postgres")
    shutil.chown(root / "pw", "postgres")
    root.chmod(0o700)
    bin_ = Path("/usr/lib/postgresql/15/bin")
    as_pg = ["runuser", "-u", "postgres", "--"]
    port = kit.free_port()
    init = subprocess.run(
        [
            *as_pg,
            str(bin_ / "initdb"),
            "-D",
            str(data),
            "-A",
            "scram-sha-256",
            "-U",
            "postgres",
            f"--pwfile={root / 'pw'}",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        pytest.fail(f"initdb for a scram PostgreSQL failed: {init.stderr}", pytrace=False)
    started = subprocess.run(
        [
            *as_pg,
            str(bin_ / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(root / "log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
            "start",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if started.returncode != 0:
        pytest.fail(f"could not start a scram PostgreSQL: {started.stderr}", pytrace=False)
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            password=admin_pw,
            dbname="postgres",
            autocommit=True,
        ) as c:
            c.execute(sql.SQL("CREATE ROLE app LOGIN PASSWORD {}").format(sql.Literal(good)))
            c.execute("CREATE DATABASE appdb OWNER app")
        with psycopg.connect(
            host="127.0.0.1", port=port, user="app", password=good, dbname="appdb"
        ) as c:
            c.execute("CREATE TABLE t AS SELECT generate_series(1, 42) AS i")
        yield ScramServer(port, good)
    finally:
        subprocess.run(
            [*as_pg, str(bin_ / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_wrong_password_is_named_then_the_right_one_works(
    site: Site, scram_server: ScramServer
) -> None:
    keep = make_archive(site.seeded, site.path, datetime.now(UTC) - timedelta(days=90), True)
    wrong = f"wr:{uuid.uuid4().hex}"
    fake = Seeded("appdb", "app", wrong)
    op = site.start(fake)
    obj = schedule("scram", site.ns, fake, retention={"days": 1, "minKeep": 1})
    obj["spec"]["database"]["port"] = scram_server.port
    kit.apply(obj)
    s = wait_reason(site.ns, "scram", "LastBackupSucceeded", "AuthFailed")
    assert "password authentication failed" in cond(s, "LastBackupSucceeded")[2]
    assert cond(s, "Ready")[0] == "False"
    assert "AuthFailed" in {e["reason"] for e in kit.events_for(site.ns, "scram")}
    assert archives(site.path) == [keep]  # nothing deleted, nothing half-written kept

    # The right password, through the same Secret: the next slot succeeds with scram auth,
    # which proves the .pgpass copy reaches libpq.
    secret(site.ns, Seeded("appdb", "app", scram_server.good))
    done = wait_status(site.ns, "scram", "a backup with the right password", succeeded, timeout=150)
    assert done[0]["verified"] is True and done[0]["rows"] == 42
    logs = op.logs()
    assert_no_password(site.ns, wrong, logs)
    assert_no_password(site.ns, scram_server.good, logs)


def test_every_archive_corrupt_or_without_manifest_keeps_everything(site: Site) -> None:
    """Retention never leaves zero archives (defect: it deleted every one of these)."""
    now = datetime.now(UTC)
    old = [
        make_archive(site.seeded, site.path, now - timedelta(days=d), True) for d in (40, 50, 60)
    ]
    for name in old[:2]:  # two corrupt
        corrupt(site.path / name)
    (site.path / f"{old[2]}.manifest.json").unlink()  # one intact, its manifest lost
    site.start()
    kit.apply(
        schedule("held", site.ns, site.seeded, suspend=True, retention={"days": 30, "minKeep": 1})
    )
    res = cli("verify", "held", "-n", site.ns, "--wait", "--timeout", "200")
    assert res.returncode == 1, res.stdout + res.stderr  # every archive failed
    assert archives(site.path) == sorted(old)
    kit.wait_until(
        "the RetentionHeld Event",
        lambda: any(e["reason"] == "RetentionHeld" for e in kit.events_for(site.ns, "held")),
        timeout=30,
    )
    held = [e for e in kit.events_for(site.ns, "held") if e["reason"] == "RetentionHeld"]
    assert "NoVerifiedArchive" in held[0]["message"] and "the 3 older" in held[0]["message"]
    # The Job ran the program of the schedule's ConfigMap, which the schedule owns.
    cm = kit.kubectl_json("get", "configmap", "held-backup-program", "-n", site.ns)
    program = cm["metadata"]["annotations"]["ops.stronghold.io/program-sha256"]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == get(site.ns, "held")["metadata"]["uid"]
    jobs = kit.kubectl_json("get", "jobs", "-n", site.ns)["items"]
    assert jobs and all(
        j["metadata"]["annotations"]["ops.stronghold.io/program-sha256"] == program for j in jobs
    )


def test_253_character_name_backs_up_and_a_privileged_template_is_refused(site: Site) -> None:
    """Issue 17 #4 (a name used raw as a label value) and #3 (jobTemplate as a deputy)."""
    op = site.start()
    name = ("nightly-backup-" * 17)[:252] + "z"
    assert len(name) == 253
    long = schedule(name, site.ns, site.seeded, suspend=True)
    long["metadata"]["annotations"] = {"ops.stronghold.io/backup-now": "long-1"}
    priv = schedule("priv", site.ns, site.seeded)
    priv["spec"]["jobTemplate"]["securityContext"] = {"privileged": True}
    kit.apply(long)
    kit.apply(priv)
    done = wait_status(
        site.ns, name, "the on-demand backup of a 253-character schedule", by_trigger("long-1"), 150
    )
    assert done[0]["verified"] is True and len(done[0]["name"]) <= 63
    (job,) = jobs(site.ns, name)
    assert job["metadata"]["labels"]["ops.stronghold.io/backupschedule"] == schedule_label(name)
    assert archives(site.path) == [done[0]["file"]]
    s = wait_reason(site.ns, "priv", "Ready", "InvalidSpec", timeout=60)  # privileged template
    assert cond(s, "Ready")[0] == "False"
    assert "spec.jobTemplate.securityContext.privileged" in cond(s, "Ready")[2]
    assert jobs(site.ns, "priv") == []
    assert_no_password(site.ns, site.seeded.password, op.logs())
