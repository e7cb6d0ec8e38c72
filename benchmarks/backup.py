"""BackupSchedule benchmark: Stronghold's backup Job vs the guide's ``pg_dump | gzip``.

One run, the same ~1 GB pgbench database (``pgbench -i -s 70``, made once and reused),
``--repeat`` rounds (default 3) interleaved so a slow minute hits every side alike:

- guide: ``pg_dump -h 127.0.0.1 -U postgres DB | gzip > file`` (the guide's pipeline, run on
  the host), wall time; and the same pipeline with ``pigz`` (the compressor the Job uses when
  its image has it), to show what the compressor alone is worth;
- stronghold: an on-demand backup (annotation ``ops.stronghold.io/backup-now``) of a
  BackupSchedule reconciled by the real operator; the Job runs on the local cluster (host
  network, hostPath PersistentVolume): pg_dump | pigz | the helper that writes the temporary
  file while checking it (sha256, full decompression, trailer), row counts in the dump's
  snapshot at the same time, fsync, a re-hash of the file on disk, atomic rename. Measured
  two ways: the Job's own duration (its manifest, from the script's first line) and end to
  end (annotation -> the new backup in status, which adds Job scheduling and the operator
  noticing the finished Job);
- restore test: ``ops.stronghold.io/restore-test-now`` -> status.lastRestoreTest, in a
  throwaway server inside the Job (``verify.restoreTest.target: throwaway``: initdb, restore,
  count, delete) and in a scratch database on the production server (``scratchDatabase``),
  against the hand-made way, ``createdb`` + ``pg_dump DB | psql scratch`` on the host, on the
  same data in the same run (``--repeat`` rounds, interleaved).

    .venv/bin/python -m benchmarks.backup [--scale 70] [--repeat 3] [--database NAME]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.integration import kit
from tests.support.workloads import hostpath_claim

from benchmarks.common import table
from stronghold_testbed import cluster, packages

DB = "bench_pgbench"
CRD = kit.REPO / "crds" / "backupschedule.yaml"
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qtA", "-v", "ON_ERROR_STOP=1"]


def ensure_database(scale: int) -> int:
    """The pgbench database at ``scale`` (reused when it already has that many branches)."""
    have = subprocess.run(
        [*PSQL, "-d", DB, "-c", "SELECT count(*) FROM pgbench_branches"],
        capture_output=True,
        text=True,
        check=False,
    )
    if have.returncode != 0 or have.stdout.strip() != str(scale):
        subprocess.run([*PSQL, "-c", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"], check=True)
        subprocess.run([*PSQL, "-c", f"CREATE DATABASE {DB}"], check=True)
        print(f"pgbench -i -s {scale} (once; reused by later runs) ...", flush=True)
        subprocess.run(
            ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-i", "-q", "-s", str(scale), DB],
            check=True,
            capture_output=True,
        )
    size = subprocess.run(
        [*PSQL, "-c", f"SELECT pg_database_size('{DB}')"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(size.stdout.strip())


def guide(out: Path, compressor: str = "gzip") -> tuple[float, int]:
    """The guide's pipeline (``pigz``: the same with the compressor the Job uses)."""
    t0 = time.monotonic()
    subprocess.run(
        ["bash", "-c", f"pg_dump -h 127.0.0.1 -U postgres {DB} | {compressor} > {out}"],
        check=True,
    )
    return time.monotonic() - t0, out.stat().st_size


def _status(ns: str) -> dict[str, Any]:
    obj: dict[str, Any] = kit.kubectl_json("get", "backupschedule", "bench", "-n", ns)
    return obj


def setup(ns: str, storage: Path) -> None:
    storage.mkdir(parents=True, exist_ok=True)
    storage.chmod(0o777)  # the Job runs as uid 999
    kit.apply(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "db", "namespace": ns},
                    "stringData": {"password": "unused-trust-auth"},
                },
                *hostpath_claim(ns, "backups", storage, "20Gi"),
                {
                    "apiVersion": "ops.stronghold.io/v1alpha1",
                    "kind": "BackupSchedule",
                    "metadata": {"name": "bench", "namespace": ns},
                    "spec": {
                        "schedule": "0 2 * * *",
                        "database": {
                            "host": "127.0.0.1",
                            "name": DB,
                            "user": "postgres",
                            "password": {"secretKeyRef": {"name": "db", "key": "password"}},
                        },
                        "storage": {"persistentVolumeClaim": "backups"},
                        "verify": {"restoreTest": {"schedule": "0 3 1 * *"}},
                        "jobTemplate": {
                            "image": "stronghold/base:bookworm",
                            "imagePullPolicy": "Never",
                            "hostNetwork": True,
                        },
                    },
                },
            ],
        }
    )
    kit.wait_until(
        "BackupSchedule Ready",
        lambda: (kit.condition(_status(ns), "Ready") or {}).get("status") == "True",
        120,
    )


def phases(storage: Path, file: str) -> dict[str, float]:
    """The Job's own phase timings, from the manifest it wrote beside the archive."""
    try:
        man = json.loads((storage / f"{file}.manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in (man.get("timings") or {}).items()}


def request(ns: str, what: str) -> None:
    """An on-demand run: annotation ops.stronghold.io/<what> with a fresh value."""
    value = uuid.uuid4().hex[:8]
    kit.kubectl(
        "annotate",
        "backupschedule",
        "bench",
        "-n",
        ns,
        "--overwrite",
        f"ops.stronghold.io/{what}={value}",
    )


def backup_once(ns: str, storage: Path) -> dict[str, float]:
    """One on-demand backup: the Job's own duration and annotation -> status."""
    before = ((_status(ns).get("status", {}).get("backups") or [{}])[0]).get("file")
    t0 = time.monotonic()
    request(ns, "backup-now")

    def succeeded() -> dict[str, Any] | None:
        backups = _status(ns).get("status", {}).get("backups") or []
        if backups and backups[0].get("file") != before:
            if backups[0].get("result") != "Succeeded":
                raise SystemExit(f"backup failed: {backups[0]}")
            return dict(backups[0])
        return None

    entry = kit.wait_until("the backup", succeeded, timeout=3600, interval=0.5)
    return {
        **phases(storage, str(entry.get("file"))),
        "job": float(entry.get("durationSeconds") or 0),
        "end_to_end": time.monotonic() - t0,
        "size": float(entry.get("sizeBytes") or 0),
    }


def restore_test(ns: str) -> dict[str, Any]:
    t1 = time.monotonic()
    before = (_status(ns).get("status", {}).get("lastRestoreTest") or {}).get("time")
    request(ns, "restore-test-now")

    def restored() -> dict[str, Any] | None:
        rt = _status(ns).get("status", {}).get("lastRestoreTest") or {}
        return rt if rt.get("time") and rt.get("time") != before else None

    rt = kit.wait_until("the restore test", restored, timeout=3600, interval=0.5)
    return {
        "seconds": float(rt.get("durationSeconds") or 0),
        "end_to_end": time.monotonic() - t1,
        "result": rt.get("result", "?"),
    }


def dump_into_scratch() -> float:
    """The hand-made restore test: createdb, ``pg_dump DB | psql scratch``, dropdb (wall time
    of the pipe)."""
    scratch = f"{DB}_scratch_{uuid.uuid4().hex[:6]}"
    subprocess.run([*PSQL, "-c", f"CREATE DATABASE {scratch}"], check=True)
    try:
        t0 = time.monotonic()
        subprocess.run(
            [
                "bash",
                "-c",
                f"set -o pipefail; pg_dump -h 127.0.0.1 -U postgres {DB} | "
                f"psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d {scratch}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.monotonic() - t0
    finally:
        subprocess.run([*PSQL, "-c", f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"], check=True)


def restore_test_with(ns: str, target: str) -> dict[str, Any]:
    """One restore test with ``verify.restoreTest.target`` set to ``target``.

    What ran is read from the Job's own result (its termination message): on a shared
    cluster another checkout's CRD may prune a new field from the object meanwhile.
    """
    kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    patch = {"spec": {"verify": {"restoreTest": {"target": target}}}}
    kit.kubectl(
        "patch", "backupschedule", "bench", "-n", ns, "--type", "merge", "-p", json.dumps(patch)
    )
    rt = restore_test(ns)
    job = (_status(ns).get("status", {}).get("lastRestoreTest") or {}).get("job")
    pods = kit.kubectl_json("get", "pods", "-n", ns, "-l", f"job-name={job}")["items"]
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    result = json.loads(term["message"])
    if not result.get("ok") or result.get("target") != target:
        raise SystemExit(f"restore test ({target}) did not pass as asked: {result}")
    return {**rt, "restore": float(result.get("restoreSeconds") or 0)}


def restore_rounds(ns: str, repeat: int) -> list[dict[str, float]]:
    """Interleaved rounds: throwaway, scratch database, ``pg_dump | psql``."""
    out = []
    for i in range(repeat):
        t = restore_test_with(ns, "throwaway")
        sd = restore_test_with(ns, "scratchDatabase")
        out.append(
            {
                "throwaway": t["seconds"],
                "throwaway_restore": t["restore"],
                "throwaway_e2e": t["end_to_end"],
                "scratch": sd["seconds"],
                "scratch_restore": sd["restore"],
                "dump_psql": dump_into_scratch(),
            }
        )
        print(f"restore round {i + 1}: {out[-1]}", flush=True)
    return out


def restore_table(rounds: list[dict[str, float]], guide_dump: float, title: str) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def spread(key: str) -> str:
        return " ".join(f"{r[key]:.2f}" for r in rounds)

    base = med("dump_psql")
    measured = [
        ("pg_dump | psql into a scratch database (host)", "dump_psql", True),
        ("restore test, throwaway server: Job duration", "throwaway", True),
        ("  of which the restore (psql/pg_restore)", "throwaway_restore", False),
        ("  annotation -> status", "throwaway_e2e", True),
        ("restore test, scratch database on production: Job", "scratch", True),
        ("  of which the restore", "scratch_restore", False),
    ]
    rows = [[what, med(k), spread(k) if runs else "", med(k) / base] for what, k, runs in measured]
    table(
        f"Restore test: throwaway server vs pg_dump | psql ({title}; guide's dump "
        f"{guide_dump:.2f}s: throwaway Job / dump = {med('throwaway') / guide_dump:.2f})",
        ["what", "seconds (median)", "runs", "ratio to pg_dump | psql"],
        rows,
    )


def main() -> None:
    global DB  # noqa: PLW0603 (--database names the benchmark's database for every step)
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=int, default=70, help="pgbench scale (70 = about 1 GB)")
    p.add_argument("--repeat", type=int, default=3, help="backups (and guide runs) to take")
    p.add_argument("--database", default=DB, help=f"database to create and reuse (default {DB})")
    args = p.parse_args()
    DB = args.database
    if not cluster.is_up():
        raise SystemExit("the local cluster is not up: run `stronghold-testbed cluster up`")
    packages.ensure(["pigz"])  # the guide's pipeline with the Job's compressor
    db_bytes = ensure_database(args.scale)
    from tests.integration.conftest import OPERATOR_NS, OPERATOR_SA

    for part in ("base/namespace.yaml", "base/serviceaccount.yaml"):
        kit.kubectl("apply", "-f", str(kit.REPO / "manifests" / part))
    kit.kubectl("apply", "-k", str(kit.REPO / "manifests/rbac/cluster"))
    kit.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(kit.REPO / "crds"),  # all four: the operator serves every kind
    )
    ns = f"bench-backup-{uuid.uuid4().hex[:6]}"
    kit.kubectl("create", "namespace", ns)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        tmp = Path(d)
        kubeconfig = cluster.sa_kubeconfig(OPERATOR_NS, OPERATOR_SA, tmp / "sa.kubeconfig")
        op = kit.start_operator(kubeconfig, [ns], tmp / "operator.log")
        runs: list[dict[str, float]] = []
        try:
            setup(ns, tmp / "storage")
            # Interleaved, so a slow minute on the machine hits every side alike.
            for i in range(args.repeat):
                g, g_size = guide(tmp / "guide.sql.gz")
                gp, gp_size = guide(tmp / "guide-pigz.sql.gz", "pigz")
                job = backup_once(ns, tmp / "storage")
                runs.append({"guide": g, "guide_pigz": gp, **job})
                print(f"run {i + 1}: {runs[-1]}", flush=True)
            rt = restore_test(ns)
            restores = restore_rounds(ns, args.repeat)
        finally:
            op.kill(sig=15)
            kit.kubectl("delete", "namespace", ns, "--wait=false", check=False)
            kit.kubectl("delete", "pv", f"backups-{ns}", "--wait=false", check=False)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    def spread(key: str) -> str:
        return " ".join(f"{r[key]:.2f}" for r in runs)

    g = med("guide")
    table(
        f"BackupSchedule vs the guide's pipeline (pgbench scale {args.scale}, "
        f"database {db_bytes / 2**30:.2f} GiB, median of {args.repeat})",
        ["what", "seconds (median)", "runs", "archive MiB", "ratio to guide"],
        [
            ["guide: pg_dump | gzip (host)", g, spread("guide"), g_size / 2**20, 1.0],
            [
                "guide with pigz: pg_dump | pigz (host)",
                med("guide_pigz"),
                spread("guide_pigz"),
                gp_size / 2**20,
                med("guide_pigz") / g,
            ],
            [
                "stronghold: backup Job (its own duration)",
                med("job"),
                spread("job"),
                med("size") / 2**20,
                med("job") / g,
            ],
            [
                "stronghold: annotation -> backup in status",
                med("end_to_end"),
                spread("end_to_end"),
                "",
                med("end_to_end") / g,
            ],
            [f"restore test ({rt['result']}), Job duration", rt["seconds"], "", "", ""],
            ["restore test, annotation -> status", rt["end_to_end"], "", "", ""],
        ],
    )
    restore_table(restores, g, f"pgbench scale {args.scale}, median of {args.repeat}")
    print(
        json.dumps(
            {"runs": runs, "restore_test": rt, "restores": restores, "ratio": med("job") / g}
        )
    )


if __name__ == "__main__":
    main()
