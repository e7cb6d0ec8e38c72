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
  same data in the same run (``--repeat`` rounds, interleaved);
- the whole backup (issue 20): ``--media-mib`` of media files (random "photos" and
  compressible text, made once per size under /var/tmp and reused) on a hostPath
  PersistentVolume. The guide's script on the host (``pg_dump | gzip``, ``tar -czf media/``,
  ``tar -czf`` of the configuration, the system state) against an on-demand run of a second
  BackupSchedule with ``spec.sources`` database + volumes (the media claim) + configuration
  + systemState: the Job's own duration and annotation -> the run verified in status. In the
  same rounds as the database-only sides, interleaved.

    .venv/bin/python -m benchmarks.backup [--scale 70] [--repeat 3] [--database NAME]
        [--media-mib 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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


def ensure_media(mib: int) -> tuple[Path, int, int]:
    """``mib`` MiB of media files, made once per size and reused: ~70% incompressible
    "photos" (random bytes, 256 KiB-4 MiB), ~30% text (4-64 KiB, compresses like prose).

    Returns the directory (the PV's hostPath), its file count and bytes.
    """
    root = Path(f"/var/tmp/stronghold-bench-media-{mib}")
    media = root / "media"
    done = root / "complete"  # beside the media, not in it: never archived
    if not done.exists():
        print(f"making {mib} MiB of media files (once; reused by later runs) ...", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        rng = random.Random(mib)
        total, photos = mib * 2**20, int(mib * 2**20 * 0.7)
        words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))]
        words += [
            "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
            for _ in range(3000)
        ]
        prose = " ".join(rng.choices(words, k=400_000)).encode()
        written = i = 0
        while written < total:
            if written < photos:
                size = min(rng.randint(256 * 2**10, 4 * 2**20), photos - written)
                path = media / "photos" / f"{i // 100:03d}" / f"img_{i:05d}.jpg"
                data = os.urandom(size)
            else:
                size = min(rng.randint(4 * 2**10, 64 * 2**10), total - written)
                path = media / "documents" / f"{i // 200:03d}" / f"doc_{i:05d}.txt"
                start = rng.randrange(len(prose) - size)
                data = prose[start : start + size]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written += len(data)
            i += 1
        for d in (root, *(p for p in media.rglob("*") if p.is_dir()), media):
            d.chmod(0o755)  # the Job runs as uid 999 and reads them
        done.write_text(f"{i} {written}\n")
    files, size = (int(x) for x in done.read_text().split())
    return media, files, size


def guide_script(out: Path, media: Path, config: Path) -> dict[str, float]:
    """The guide's backup script on the host, step by step (its lines, our paths)."""
    out.mkdir(parents=True, exist_ok=True)
    steps = {
        "guide_all_db": f"pg_dump -h 127.0.0.1 -U postgres {DB} | gzip > {out}/db_backup.sql.gz",
        "guide_all_media": f"tar -czf {out}/media_backup.tar.gz -C {media.parent} {media.name}",
        "guide_all_config": f"tar -czf {out}/config_backup.tar.gz -C {config.parent} {config.name}",
        "guide_all_state": (
            f'{{ echo "# Git commit: $(git -C {kit.REPO} rev-parse HEAD)"; '
            'docker images --format "table {{.Repository}}\t{{.Tag}}\t{{.ID}}"; '
            'docker ps --format "table {{.Names}}\t{{.Image}}\t{{.Status}}"; '
            f"}} > {out}/system_state.txt"
        ),
    }
    took: dict[str, float] = {}
    t0 = time.monotonic()
    for key, line in steps.items():
        t = time.monotonic()
        subprocess.run(["bash", "-c", f"set -euo pipefail; {line}"], check=True)
        took[key] = time.monotonic() - t
    took["guide_all"] = time.monotonic() - t0
    took["guide_all_size"] = float(sum(f.stat().st_size for f in out.iterdir()))
    return took


def guide_config(root: Path) -> Path:
    """What the guide's script tars as configuration: compose file, nginx/, .env."""
    config = root / "config"
    (config / "nginx").mkdir(parents=True, exist_ok=True)
    (config / "docker-compose.production.yml").write_text(
        "services:\n  web:\n    image: web:latest\n  db:\n    image: postgres:15\n"
    )
    (config / "nginx" / "default.conf").write_text("server { listen 80; }\n" * 20)
    (config / ".env.production").write_text("DJANGO_SETTINGS_MODULE=site.production\n")
    return config


def full_schedule(ns: str) -> dict[str, Any]:
    """The second schedule: every source, its own directory on the backups claim."""
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"name": "full", "namespace": ns},
        "spec": {
            "schedule": "0 2 * * *",
            "database": {"host": "127.0.0.1", "name": DB, "user": "postgres"},
            "storage": {"persistentVolumeClaim": "backups", "path": "full"},
            "sources": {
                "database": True,
                "volumes": [{"name": "media", "persistentVolumeClaim": "media"}],
                "configuration": {},
                "systemState": {},
            },
            "jobTemplate": {
                "image": "stronghold/base:bookworm",
                "imagePullPolicy": "Never",
                "hostNetwork": True,
            },
        },
    }


def setup_full(ns: str, storage: Path, media: Path) -> None:
    (storage / "full").mkdir(parents=True, exist_ok=True)
    (storage / "full").chmod(0o777)
    kit.apply(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                *hostpath_claim(ns, "media", media, "20Gi"),
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "web-config", "namespace": ns},
                    "data": {"DJANGO_SETTINGS_MODULE": "site.production"},
                },
            ],
        }
    )
    kit.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(full_schedule(ns)))
    kit.wait_until(
        "BackupSchedule full Ready",
        lambda: (kit.condition(_status(ns, "full"), "Ready") or {}).get("status") == "True",
        120,
    )


def full_once(ns: str, storage: Path) -> dict[str, float]:
    """One on-demand run with every source: the Job's duration and annotation -> the run
    verified in status. Peers on this cluster re-apply their CRD and ClusterRole: ours
    (spec.sources, services/nodes) again before each request; a run that still went
    without its sources is asked again (three times at most)."""
    for _ in range(3):
        kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        kit.kubectl("apply", "-k", str(kit.REPO / "manifests/rbac/cluster"))
        kit.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(full_schedule(ns)))
        t0 = time.monotonic()
        value = request(ns, "backup-now", "full")

        def verified(value: str = value, t0: float = t0) -> dict[str, Any] | None:
            st = _status(ns, "full").get("status", {})
            entry = next((b for b in st.get("backups") or [] if b.get("trigger") == value), None)
            if entry is None:
                return None
            if entry.get("result") != "Succeeded":
                return dict(entry)  # decided below (retry or fail)
            run = str(entry.get("file", ""))[len("db_backup_") :].split(".")[0]
            last = st.get("lastRun") or {}
            if entry.get("verified") and last.get("run") == run and last.get("verified"):
                return {**entry, "lastRun": last, "e2e": time.monotonic() - t0}
            return None

        entry = kit.wait_until("the full run verified", verified, timeout=3600, interval=0.5)
        if entry.get("reason") == "CaptureForbidden":
            continue
        if entry.get("result") != "Succeeded":
            raise SystemExit(f"full backup failed: {entry}")
        arts = entry["lastRun"].get("artifacts") or []
        if not any(a.get("kind") == "volume" for a in arts):
            continue  # a peer's CRD pruned spec.sources: a database-only run
        run = str(entry.get("file", ""))[len("db_backup_") :].split(".")[0]
        man = json.loads((storage / "full" / f"run_{run}" / "manifest.json").read_text())
        vol = next(a for a in man["artifacts"] if a.get("kind") == "volume")
        return {
            "full_media_archive": float(vol["seconds"]["archive"]),  # walk, tar | pigz, fsync
            "full_media_verify": float(vol["seconds"]["verify"]),  # tar -t of the archive
            "full_job": float(entry.get("durationSeconds") or 0),
            "full_e2e": float(entry["e2e"]),
            "full_size": float(sum(int(a.get("sizeBytes") or 0) for a in arts)),
        }
    raise SystemExit("three runs in a row went without spec.sources or RBAC (peers' churn)")


def _status(ns: str, name: str = "bench") -> dict[str, Any]:
    obj: dict[str, Any] = kit.kubectl_json("get", "backupschedule", name, "-n", ns)
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


def request(ns: str, what: str, name: str = "bench") -> str:
    """An on-demand run: annotation ops.stronghold.io/<what> with a fresh value (returned)."""
    value = uuid.uuid4().hex[:8]
    kit.kubectl(
        "annotate",
        "backupschedule",
        name,
        "-n",
        ns,
        "--overwrite",
        f"ops.stronghold.io/{what}={value}",
    )
    return value


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


def full_table(
    runs: list[dict[str, float]], media: tuple[Path, int, int], scale: int, db_bytes: int
) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    def spread(key: str) -> str:
        return " ".join(f"{r[key]:.2f}" for r in runs)

    base = med("guide_all")
    rows: list[list[Any]] = [
        [
            "guide's script, whole (host)",
            base,
            spread("guide_all"),
            med("guide_all_size") / 2**20,
            1.0,
        ],
        ["  pg_dump | gzip", med("guide_all_db"), spread("guide_all_db"), "", ""],
        ["  tar -czf media/", med("guide_all_media"), spread("guide_all_media"), "", ""],
        [
            "  tar -czf config + system state",
            med("guide_all_config") + med("guide_all_state"),
            "",
            "",
            "",
        ],
        [
            "stronghold: run Job, all sources (its duration)",
            med("full_job"),
            spread("full_job"),
            med("full_size") / 2**20,
            med("full_job") / base,
        ],
        [
            "  media: walk, tar | pigz, hash, fsync",
            med("full_media_archive"),
            spread("full_media_archive"),
            "",
            "",
        ],
        ["  media: tar -t check", med("full_media_verify"), spread("full_media_verify"), "", ""],
        [
            "stronghold: annotation -> run verified in status",
            med("full_e2e"),
            spread("full_e2e"),
            "",
            med("full_e2e") / base,
        ],
    ]
    table(
        f"Whole backup: BackupSchedule with spec.sources vs the guide's script (pgbench scale "
        f"{scale}, database {db_bytes / 2**30:.2f} GiB, media {media[2] / 2**20:.0f} MiB in "
        f"{media[1]} files, median of {len(runs)})",
        ["what", "seconds (median)", "runs", "archives MiB", "ratio to guide"],
        rows,
    )


def main() -> None:
    global DB  # noqa: PLW0603 (--database names the benchmark's database for every step)
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=int, default=70, help="pgbench scale (70 = about 1 GB)")
    p.add_argument("--repeat", type=int, default=3, help="backups (and guide runs) to take")
    p.add_argument("--database", default=DB, help=f"database to create and reuse (default {DB})")
    p.add_argument(
        "--media-mib", type=int, default=1024, help="media files for the whole backup (0: none)"
    )
    args = p.parse_args()
    DB = args.database
    if not cluster.is_up():
        raise SystemExit("the local cluster is not up: run `stronghold-testbed cluster up`")
    packages.ensure(["pigz"])  # the guide's pipeline with the Job's compressor
    db_bytes = ensure_database(args.scale)
    media = ensure_media(args.media_mib) if args.media_mib > 0 else None
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
            if media is not None:
                setup_full(ns, tmp / "storage", media[0])
                config = guide_config(tmp)
            # Interleaved, so a slow minute on the machine hits every side alike.
            for i in range(args.repeat):
                g, g_size = guide(tmp / "guide.sql.gz")
                gp, gp_size = guide(tmp / "guide-pigz.sql.gz", "pigz")
                job = backup_once(ns, tmp / "storage")
                runs.append({"guide": g, "guide_pigz": gp, **job})
                if media is not None:
                    shutil.rmtree(tmp / "guide-all", ignore_errors=True)
                    runs[-1].update(guide_script(tmp / "guide-all", media[0], config))
                    runs[-1].update(full_once(ns, tmp / "storage"))
                print(f"run {i + 1}: {runs[-1]}", flush=True)
            rt = restore_test(ns)
            restores = restore_rounds(ns, args.repeat)
        finally:
            op.kill(sig=15)
            kit.kubectl("delete", "namespace", ns, "--wait=false", check=False)
            kit.kubectl("delete", "pv", f"backups-{ns}", "--wait=false", check=False)
            kit.kubectl("delete", "pv", f"media-{ns}", "--wait=false", check=False)

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
    if media is not None:
        full_table(runs, media, args.scale, db_bytes)
    restore_table(restores, g, f"pgbench scale {args.scale}, median of {args.repeat}")
    print(
        json.dumps(
            {"runs": runs, "restore_test": rt, "restores": restores, "ratio": med("job") / g}
        )
    )


if __name__ == "__main__":
    main()
