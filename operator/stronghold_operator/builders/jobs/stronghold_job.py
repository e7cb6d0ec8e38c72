"""The backup Job's helper: what bash does badly (JSON, manifests, checksums, retention).

backup.sh runs it as ``python3 stronghold_job.py <command> ...`` from the program ConfigMap,
with the Python of the user-chosen PostgreSQL client image: standard library only (a unit
test checks the imports) and Python 3.7 syntax. ``stronghold_operator.logic.retention`` is
the operator's own module, shipped beside this file; without ``__init__.py`` files in the
mount its directories are namespace packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:  # in the Job: the file beside this one (an installed package must not shadow it)
    import throwaway_pg  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # in the operator's package
    from stronghold_operator.builders.jobs import throwaway_pg
from stronghold_operator.builders.jobs import offsite
from stronghold_operator.logic.retention import Archive, file_time, plan_retention

if __package__:  # imported by the operator's tests
    from stronghold_operator.builders.jobs import stronghold_runs as runs
else:  # the Job: a script beside it, never an installed copy of the operator
    import stronghold_runs as runs  # type: ignore[no-redef,import-not-found]

E = os.environ
DEST = E.get("BACKUP_DIR", "/backups")
WORK = E.get("STRONGHOLD_WORK", "/var/run/stronghold/work")
SECRET = E.get("STRONGHOLD_SECRET", "/var/run/stronghold/secret/password")
TERM = E.get("TERMINATION_LOG", "/dev/termination-log")
TRAILER = b"-- PostgreSQL database dump complete"
MAX_MSG = 3800  # the kubelet keeps at most 4096 bytes of a termination message


def now() -> datetime:
    return datetime.now(timezone.utc)  # noqa: UP017 (datetime.UTC needs Python 3.11)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: str) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(os.path.dirname(path) or ".")


def manifest_path(name: str) -> str:
    return os.path.join(DEST, name + ".manifest.json")


def load_manifest(name: str) -> dict[str, Any] | None:
    try:
        with open(manifest_path(name)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def archives() -> list[tuple[str, datetime]]:
    out = []
    for name in sorted(os.listdir(DEST)):
        taken = file_time(name)
        if taken is not None and os.path.isfile(os.path.join(DEST, name)):
            out.append((name, taken))
    return out


class RowCounter:
    """Rows per table of a plain dump, counted in the decompressed stream as it passes.

    A data section is a ``COPY ... FROM stdin;`` line, one line per row (a newline inside a
    value is written as ``\\n``), and a ``\\.`` line. Only line boundaries are searched
    (``bytes.find``/``count``, C speed); ``buf[0]`` is always the byte before the unread ones,
    so a marker split across two chunks is still found.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.table: str | None = None
        self.bad: list[str] = []  # COPY lines whose table name could not be read
        self.buf = b"\n"

    def feed(self, data: bytes) -> None:
        buf, pos = self.buf + data, 1
        n = len(buf)
        while True:
            if self.table is None:
                i = buf.find(b"\nCOPY ", pos - 1)
                if i < 0:
                    keep = max(pos - 1, n - 5)  # a "\nCOPY " may have begun there
                    break
                j = buf.find(b"\n", i + 1)
                if j < 0:
                    keep = i  # the header line is not complete yet
                    break
                header = buf[i + 1 : j]
                if not header.endswith(b" FROM stdin;"):
                    pos = j + 1  # a line of a function body, say: not a data section
                    continue
                name = copy_table(header)
                if name is None:
                    self.bad.append(header[:200].decode("utf-8", "replace"))
                    name = header[:200].decode("utf-8", "replace")
                self.table = name
                self.counts.setdefault(name, 0)
                pos = j + 1
            else:
                i = buf.find(b"\n\\.\n", pos - 1)
                if i < 0:
                    q = max(pos, n - 3)  # a marker may begin in the last three bytes
                    self.counts[self.table] += buf.count(b"\n", pos, q)
                    keep = q - 1
                    break
                self.counts[self.table] += buf.count(b"\n", pos, i + 1)
                self.table = None
                pos = i + 4
        self.buf = buf[keep:]


class Reader:
    """One pass over an archive's bytes: sha256 and, for gzip, a full decompression (zlib
    checks the CRC-32 and length in the gzip trailer) keeping the dump's last bytes."""

    def __init__(self, inflate: bool, rows: RowCounter | None = None) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.inflate = zlib.decompressobj(31) if inflate else None
        self.tail = b""
        self.error: str | None = None
        self.rows = rows  # fed with the decompressed dump, or None

    def feed(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.size += len(chunk)
        d = self.inflate
        if d is None or self.error:
            return
        buf = chunk
        while buf:
            if d.eof:
                self.error = "data after the end of the gzip stream"
                return
            try:
                out = d.decompress(buf, 1 << 22)  # bounded memory whatever the ratio
            except zlib.error as exc:
                self.error = f"gzip stream is corrupt: {exc}"
                return
            if out:
                self.tail = (self.tail + out[-4096:])[-4096:]
                if self.rows is not None:
                    self.rows.feed(out)
            buf = d.unconsumed_tail or d.unused_data

    def finish(self) -> str | None:
        """None if the bytes were a complete gzip of a complete plain dump, else why not."""
        d = self.inflate
        if d is None or self.error:
            return self.error
        try:
            rest = d.flush()
        except zlib.error as exc:
            return f"gzip stream is corrupt: {exc}"
        self.tail = (self.tail + rest[-4096:])[-4096:]
        if rest and self.rows is not None:
            self.rows.feed(rest)
        if not d.eof:
            return "gzip stream is truncated"
        return None if TRAILER in self.tail else "dump is incomplete: trailer line missing"


def copy_table(header: bytes) -> str | None:
    """``schema.table`` (unquoted, as the count query spells it) of a ``COPY`` line, or None.

    pg_dump writes ``COPY schema.table (col, ...) FROM stdin;`` and double-quotes a name
    when it must, doubling any quote inside it.
    """
    text = header.decode("utf-8", "replace")
    i, names = 5, []
    for _ in range(2):
        if text.startswith('"', i):
            quoted = throwaway_pg.quoted_identifier(text, i)
            if quoted is None:
                return None
            name, i = quoted
        else:
            m = re.match(r'[^."\s(]+', text[i:])
            if not m:
                return None
            name, i = m.group(0), i + m.end()
        names.append(name)
        if len(names) == 1:
            if not text.startswith(".", i):
                return None
            i += 1
    return f"{names[0]}.{names[1]}"


def scan(path: str, inflate: bool) -> Reader:
    r = Reader(inflate)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            r.feed(block)
    return r


def check(name: str, full: bool) -> tuple[bool, str, str]:
    """:func:`check_archive`, and the rest of its run: a run is verified as a unit."""
    return runs.check_run(DEST, name, full, check_archive(name, full))


def check_archive(name: str, full: bool) -> tuple[bool, str, str]:
    """(ok, reason, message): checksum against the manifest, and integrity if ``full``.

    A full check of a .sql.gz is one read: the checksum and the decompression share it.
    """
    man = load_manifest(name)
    if man is None:
        return False, "NoManifest", "no readable manifest"
    path = os.path.join(DEST, name)
    gz = full and not name.endswith(".dump")
    r = scan(path, gz)
    actual = r.sha.hexdigest()
    if actual != man.get("sha256"):
        said = str(man.get("sha256"))[:16]
        return False, "ChecksumMismatch", f"sha256 {actual[:16]}, manifest says {said}"
    if gz:
        err = r.finish()
        if err:
            return False, "IntegrityCheckFailed", err
    elif full:
        p = subprocess.run(["pg_restore", "--list", path], capture_output=True, check=False)
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace")[-300:]
            return False, "IntegrityCheckFailed", "pg_restore --list: " + err
    return True, "Verified", ""


def cmd_sink(path: str, result: str) -> None:
    """Write the gzip stream on stdin to ``path`` and fsync it, checking it as it passes.

    The guide's pipeline writes first and reads back twice (gzip -t, then the trailer);
    here the checksum, the decompression, the trailer and the row counts come from the one
    pass that writes. What is on disk is then tied to these bytes by re-hashing the file.
    """
    rows = RowCounter()
    r = Reader(True, rows)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            r.feed(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    err = r.finish()
    if err:
        sys.exit(err)
    if rows.table is not None or rows.bad:
        what = f"unreadable COPY line {rows.bad[0]!r}" if rows.bad else "a COPY section never ends"
        sys.exit("dump is malformed: " + what)
    with open(result, "w") as f:
        f.write(f"{r.sha.hexdigest()} {r.size}\n")
    with open(os.path.join(WORK, "counts.txt"), "w") as f:
        f.writelines(f"{t}|{c}\n" for t, c in sorted(rows.counts.items()))


def mark(name: str, ok: bool, reason: str, message: str) -> None:
    man = load_manifest(name)
    if man is None:
        return
    man["verified"] = ok
    man["verifiedAt"] = iso(now())
    if ok:
        man.pop("verifyReason", None)
        man.pop("verifyMessage", None)
    else:
        man["verifyReason"], man["verifyMessage"] = reason, message[:300]
    write_atomic(manifest_path(name), json.dumps(man, indent=2, sort_keys=True))


def prune() -> dict[str, Any]:
    """Delete what retention allows; re-check every archive a deletion relies on first.

    Returns the report's ``pruned`` and ``failed`` lists, and ``retentionHeld`` (reason and
    message) when retention kept everything because no archive is verified any more.
    """
    days, min_keep = int(E.get("RETENTION_DAYS", "30")), int(E.get("MIN_KEEP", "3"))
    protected = set(E.get("PROTECTED", "").split())
    found = archives()
    flags = {}
    for name, _ in found:
        man = load_manifest(name)
        flags[name] = bool(man and man.get("verified"))
    rechecked: set[str] = set()
    failed = []
    while True:
        plan = plan_retention(
            [Archive(n, t, flags[n]) for n, t in found], now(), days, min_keep, protected
        )
        if not plan.delete:
            break
        # Deleting is justified by the verified archives we keep: prove they still are.
        doubtful = [n for n in plan.keep if flags[n] and n not in rechecked]
        if not doubtful:
            break
        for n in doubtful:
            rechecked.add(n)
            ok, reason, msg = check(n, full=False)
            if not ok:
                flags[n] = False
                mark(n, False, reason, msg)
                failed.append({"file": n, "reason": reason, "message": msg[:200]})
    for n in plan.delete:
        for path in (os.path.join(DEST, n), manifest_path(n)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    runs.prune_runs(DEST, plan.delete)  # a run goes whole with its archive
    # Leftovers of killed runs: partial files nobody has written to for an hour.
    for n in os.listdir(DEST):
        p = os.path.join(DEST, n)
        if n.endswith(".partial") and time.time() - os.path.getmtime(p) > 3600:
            os.unlink(p)
    if plan.delete:
        fsync_path(DEST)
    report: dict[str, Any] = {"pruned": list(plan.delete), "failed": failed}
    if plan.held:
        report["retentionHeld"] = {"reason": plan.held, "message": plan.message}
    return report


def prune_report() -> dict[str, Any]:
    """:func:`prune` for a result: an I/O error is reported with it, never raised."""
    try:
        report = prune()
        report["pruneError"] = None
    except OSError as exc:  # the backup itself is safe; report the prune problem with it
        report = {"pruned": [], "failed": [], "pruneError": f"prune: {exc}"}
    return report


def offsite_report() -> dict[str, Any]:
    """The off-site copy of every verified archive (offsite.py), when spec.offsite is set.

    After the local prune: what retention deleted here is not copied, and the bucket gets
    the same rules. A failure is reported with the result, never raised: the local backup
    stands, and the next Job copies what is missing.
    """
    if not offsite.configured():
        return {}
    verified = {}
    for name, _ in archives():
        man = load_manifest(name)
        if man and man.get("verified") and man.get("sha256"):
            verified[name] = str(man["sha256"])
    return {"offsite": offsite.run(DEST, verified)}


def terminate(data: dict[str, Any]) -> None:
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    for key in ("passed", "pruned", "failed", "mismatches"):
        if len(text.encode()) <= MAX_MSG:
            break
        if isinstance(data.get(key), list):
            data[key + "Count"] = len(data[key])
            data[key] = data[key][:3]
            text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    with open(TERM, "w") as f:
        f.write(text[:MAX_MSG])
    print(text[:MAX_MSG])  # noqa: T201 (the pod's log)


def scrub(text: str) -> str:
    # The password never reaches stderr through libpq, but be certain.
    try:
        with open(SECRET) as f:
            secret = f.read().rstrip("\r\n")
        if secret:
            text = text.replace(secret, "******")
    except OSError:
        pass
    return text


def cmd_pgpass() -> None:
    try:
        with open(SECRET) as f:
            secret = f.read()
    except FileNotFoundError:
        return
    except PermissionError:
        sys.exit(
            f"cannot read the mounted password Secret {SECRET} as uid {os.getuid()}: "
            "permission denied"
        )
    secret = secret[:-1] if secret.endswith("\n") else secret
    secret = secret[:-1] if secret.endswith("\r") else secret
    esc = secret.replace("\\", "\\\\").replace(":", "\\:")
    path = os.path.join(WORK, ".pgpass")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("*:*:*:*:" + esc + "\n")
    os.chmod(path, 0o600)


def read_counts(path: str) -> dict[str, int]:
    counts = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")  # noqa: PLW2901
            if "|" in line:
                key, _, value = line.rpartition("|")
                counts[key] = int(value)
    return counts


def elapsed(t_start: datetime, done: datetime) -> float:
    try:
        return time.time() - float(E.get("STRONGHOLD_T0", ""))
    except ValueError:
        return (done - t_start).total_seconds()


def timings() -> dict[str, float]:
    """Seconds per phase: setup, dump (with the checks on the stream), the rest of the row
    counts after the dump, the on-disk verification."""
    try:
        t = [float(x) for x in E.get("STRONGHOLD_TIMES", "").split()]
    except ValueError:
        return {}
    if len(t) != 5:
        return {}
    names = ("setupSeconds", "dumpSeconds", "countsWaitSeconds", "verifySeconds")
    return {n: round(b - a, 3) for n, a, b in zip(names, t, t[1:])}  # noqa: B905 (3.7)


def cmd_fail(stage: str, errfile: str) -> None:
    try:
        with open(errfile, errors="replace") as f:
            err = f.read()[-4000:]
    except OSError:
        err = ""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    msg = scrub(" | ".join(lines[-4:]))[-700:] or "failed in stage " + stage
    terminate(
        {
            "ok": False,
            "kind": E.get("STRONGHOLD_MODE", ""),
            "stage": stage,
            "error": msg,
            "job": E.get("JOB_NAME", ""),
        }
    )


def cmd_backup(
    final: str,
    tmp: str,
    started: str,
    dumped: str,
    verified_at: str,
    sha: str,
    size: str,
    snapshot: str,
) -> dict[str, Any]:
    counts = read_counts(os.path.join(WORK, "counts.txt"))
    pg_dump = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True, check=False)
    version = pg_dump.stdout.strip()
    server = ""
    try:
        with open(os.path.join(WORK, "server_version")) as f:
            server = f.read().strip()
    except OSError:
        pass
    t_start = datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)  # noqa: UP017
    done = now()
    man = {
        "file": final,
        "sha256": sha,
        "sizeBytes": int(size),
        "format": E.get("BACKUP_FORMAT"),
        "compression": "gzip",
        "compressionLevel": int(E.get("GZIP_LEVEL", "6")),
        "compressor": "pg_dump" if E.get("BACKUP_FORMAT") == "custom" else E.get("COMPRESSOR"),
        "database": E.get("PGDATABASE"),
        "host": E.get("PGHOST"),
        "user": E.get("PGUSER"),
        "startedAt": started,
        "dumpedAt": dumped,
        "verifiedAt": verified_at,
        "completedAt": iso(done),
        "durationSeconds": round(elapsed(t_start, done), 3),
        "pgDumpVersion": version,
        "serverVersion": server,
        "snapshot": snapshot,
        "job": E.get("JOB_NAME"),
        "slot": E.get("SLOT"),
        "verified": True,
        "tableCount": len(counts),
        "rowCounts": counts,
        "timings": timings(),
    }
    write_atomic(os.path.join(WORK, "manifest.json"), json.dumps(man, indent=2, sort_keys=True))
    return man


def cmd_publish(final: str, tmp: str) -> None:
    """Give the archive its final name, then its manifest; fsync the directory."""
    os.replace(tmp, os.path.join(DEST, final))
    fsync_path(DEST)
    with open(os.path.join(WORK, "manifest.json")) as f:
        data = f.read()
    write_atomic(manifest_path(final), data)


def cmd_report_backup(final: str) -> None:
    man = load_manifest(final) or {}
    terminate(
        {
            "ok": True,
            "kind": "backup",
            "file": final,
            "size": man.get("sizeBytes"),
            "sha256": man.get("sha256"),
            "started": man.get("startedAt"),
            "completed": man.get("completedAt"),
            "durationSeconds": man.get("durationSeconds"),
            "verified": True,
            "tables": man.get("tableCount"),
            "rows": sum((man.get("rowCounts") or {}).values()),
            "pgDump": man.get("pgDumpVersion"),
            "job": E.get("JOB_NAME", ""),
            "run": runs.summary(DEST, final),
            **prune_report(),
            **offsite_report(),
        }
    )


def cmd_verify(_count_sql: str = "") -> int:
    passed, failed = [], []
    for name, _ in archives():
        ok, reason, msg = check(name, full=True)
        mark(name, ok, reason, msg)
        if ok:
            passed.append(name)
        else:
            failed.append({"file": name, "reason": reason, "message": msg[:200]})
    report = prune_report()
    newest = [
        n
        for n, _ in sorted(archives(), key=lambda a: a[1], reverse=True)
        if (load_manifest(n) or {}).get("verified")
    ]
    terminate(
        {
            "ok": True,
            "kind": "verify",
            "checked": len(passed) + len(failed),
            "passed": sorted(passed, reverse=True),
            "newestVerified": newest[0] if newest else None,
            "job": E.get("JOB_NAME", ""),
            "run": runs.newest_summary(DEST),
            **report,
            "failed": failed + report["failed"],
            **offsite_report(),
        }
    )
    return 0


def psql(db: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
    )


def restore(path: str, scratch: str) -> None:
    """Restore one archive into the scratch database; RuntimeError says what failed."""
    if path.endswith(".dump"):
        r = subprocess.run(
            ["pg_restore", "-w", "--no-owner", "--exit-on-error", "-d", scratch, path],
            capture_output=True,
            text=True,
            check=False,
        )
    else:
        gz = subprocess.Popen(["gzip", "-dc", path], stdout=subprocess.PIPE)
        r = subprocess.run(
            ["psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-d", scratch],
            stdin=gz.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        if gz.stdout is not None:
            gz.stdout.close()
        if gz.wait() != 0 and r.returncode == 0:
            raise RuntimeError("gzip -dc failed")
    if r.returncode != 0:
        raise RuntimeError("restore: " + r.stderr.strip()[-400:])


def compare(
    expected: dict[str, int], actual: dict[str, int], tables: list[str]
) -> list[dict[str, Any]]:
    mismatches: list[dict[str, Any]] = []
    for t in tables:
        if t not in expected:
            mismatches.append({"table": t, "expected": None, "actual": actual.get(t)})
        elif actual.get(t) != expected[t]:
            mismatches.append({"table": t, "expected": expected[t], "actual": actual.get(t)})
    # The table count: every table the backup holds must be back. A restore may hold
    # more (an extension's own tables, created by CREATE EXTENSION, are not dump data).
    restored = sum(1 for t in expected if t in actual)
    if restored != len(expected):
        mismatches.append({"table": "(table count)", "expected": len(expected), "actual": restored})
    return mismatches


def _newest_verified() -> str:
    """The newest archive whose manifest says it was verified ("" when there is none)."""
    for name, _ in sorted(archives(), key=lambda a: a[1], reverse=True):
        if (load_manifest(name) or {}).get("verified"):
            return name
    return ""


def _count_rows(database: str, count_sql: str) -> dict[str, int]:
    """Exact row counts per table of ``database`` (count-rows.sql prints ``table|count``)."""
    r = psql(database, count_sql)
    if r.returncode != 0:
        raise RuntimeError("counting rows: " + r.stderr.strip()[-300:])
    actual = {}
    for line in r.stdout.splitlines():
        if "|" in line:
            key, _, value = line.rpartition("|")
            actual[key] = int(value)
    return actual


def _compared(expected: dict[str, Any], actual: dict[str, int]) -> dict[str, Any]:
    """The restore test's verdict: the restored counts against the backup's manifest."""
    tables = [t for t in E.get("RESTORE_TABLES", "").split(",") if t] or sorted(expected)
    mismatches = compare(expected, actual, tables)
    out: dict[str, Any] = {
        "ok": not mismatches,
        "tablesCompared": len(tables),
        "rowsCompared": sum(actual.get(t, 0) for t in tables),
        "tableCount": len(actual),
        "expectedTableCount": len(expected),
        "mismatches": mismatches[:10],
    }
    if mismatches:
        first = json.dumps(mismatches[0])
        out["reason"] = "RowCountMismatch"
        out["error"] = f"{len(mismatches)} mismatch(es), first: {first}"
    return out


def _restore_refused(stage: str, reason: str, error: str, backup: str | None = None) -> int:
    """The restore test ends before a restore: the result names the stage and why."""
    result = {"ok": False, "kind": "restore-test", "stage": stage, "reason": reason}
    if backup is not None:
        result["backup"] = backup
    terminate({**result, "error": error})
    return 2


def cmd_restore_test(count_sql: str) -> int:
    start = time.monotonic()
    chosen = E.get("RESTORE_FILE") or _newest_verified()
    if not chosen or not os.path.exists(os.path.join(DEST, chosen)):
        missing = "no verified backup to restore: " + (chosen or "none found")
        return _restore_refused("select", "NoVerifiedBackup", missing)
    ok, reason, msg = check(chosen, full=False)
    if not ok:
        mark(chosen, False, reason, msg)
        return _restore_refused("checksum", reason, msg, backup=chosen)
    man = load_manifest(chosen) or {}
    expected = man.get("rowCounts") or {}
    db = E["PGDATABASE"]
    suffix = "_restoretest_" + now().strftime("%Y%m%d%H%M%S")
    scratch = db[: 63 - len(suffix)] + suffix
    result: dict[str, Any] = {"kind": "restore-test", "backup": chosen, "scratchDatabase": scratch}
    target, why = _restore_target()
    if target is None:
        return _restore_refused("setup", "ServerMissing", why, backup=chosen)
    result["target"] = target
    if why:
        result["note"] = why
    server = None
    created = False
    try:
        if target == "throwaway":
            server = _throwaway(os.path.join(DEST, chosen), result, man.get("serverVersion"))
        r = subprocess.run(
            ["createdb", "-w", "--maintenance-db=postgres", scratch],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError("createdb: " + r.stderr.strip())
        created = True
        t0 = time.monotonic()
        restore(os.path.join(DEST, chosen), scratch)
        result["restoreSeconds"] = round(time.monotonic() - t0, 3)
        result.update(_compared(expected, _count_rows(scratch, count_sql)))
    except RuntimeError as exc:
        _restore_failed(result, exc)
    finally:
        if created:
            d = subprocess.run(
                ["dropdb", "-w", "--maintenance-db=postgres", "--if-exists", scratch],
                capture_output=True,
                text=True,
                check=False,
            )
            result["scratchDropped"] = d.returncode == 0
        if server is not None:
            server.stop()
            result["scratchDropped"] = True  # with the whole throwaway server
        result["durationSeconds"] = round(time.monotonic() - start, 3)
        result["completed"] = iso(now())
    terminate(result)
    return 0 if result.get("ok") else 2


def _restore_failed(result: dict[str, Any], exc: RuntimeError) -> None:
    result.update({"ok": False, "stage": "restore", "error": scrub(str(exc))[-600:]})
    if result.get("note"):
        result["error"] = f"{result['error'][-300:]} ({result['note']})"
    if isinstance(exc, throwaway_pg.ServerError):
        result["reason"] = "ThrowawayServerFailed"


def _restore_target() -> tuple[str | None, str]:
    """(target, note): where the restore test restores; target None when it cannot.

    ``auto`` (the default) is the throwaway server when the image has one, else the scratch
    database on the production server (what specs written before ``target`` existed did).
    """
    wanted = E.get("RESTORE_TARGET") or "auto"
    if wanted == "scratchDatabase":
        return "scratchDatabase", ""
    if throwaway_pg.bindir() is not None:
        return "throwaway", ""
    if wanted == "throwaway":
        return None, (
            "spec.verify.restoreTest.target is throwaway but the Job image "
            f"{E.get('JOB_IMAGE', '')} has no PostgreSQL server (initdb): use an image with "
            "the server package (stronghold/base:bookworm has it) or target scratchDatabase"
        )
    return "scratchDatabase", (
        "the Job image has no PostgreSQL server: restored into a scratch database on the "
        "production server (set jobTemplate.image to one with the server for a throwaway one)"
    )


def _version(text: Any) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)", str(text or ""))
    return (int(m.group(1)), int(m.group(2))) if m else ()


def _throwaway(archive: str, result: dict[str, Any], production: Any) -> throwaway_pg.Server:
    """Start the throwaway server, point libpq at it, create the roles the dump names.

    From here on this process talks to the throwaway server only: PGHOST is its socket.
    """
    bin_dir = throwaway_pg.bindir() or ""
    root = os.path.join(E.get("RESTORE_SCRATCH", "/var/run/stronghold/scratch"), "pg")
    server = throwaway_pg.Server(root, bin_dir)
    for key in ("PGPASSFILE", "PGSERVICE", "PGSSLROOTCERT", "PGHOSTADDR"):
        E.pop(key, None)
    try:
        result["serverStartSeconds"] = round(server.start(), 3)
        E.update(server.env())
        result["server"] = server.version()
        older = _version(result["server"]) < _version(production)
        if older and _version(result["server"]):
            # A newer server's dump may use what an older one refuses: say so up front.
            result["note"] = (
                f"the throwaway server ({result['server']}) is older than the server the "
                f"backup came from ({production}): use a Job image at least as new"
            )
        t0 = time.monotonic()
        roles = throwaway_pg.create_roles(
            throwaway_pg.roles_in(throwaway_pg.dump_sql_lines(archive)), dict(E)
        )
        result["rolesCreated"] = len(roles)
        result["rolesSeconds"] = round(time.monotonic() - t0, 3)
    except BaseException:
        server.stop()
        raise
    return server


def _target_objects(db: str) -> list[str]:
    """Relations, schemas and functions of ``db``'s own (target-objects.sql)."""
    r = psql(db, (Path(__file__).parent / "target-objects.sql").read_text())
    if r.returncode != 0:
        raise RuntimeError("reading the target database: " + r.stderr.strip()[-300:])
    return [ln for ln in r.stdout.splitlines() if ln.strip()]


def _restore_into(path: str, db: str, force: bool) -> None:
    """The archive into ``db`` in ONE transaction: a failure leaves the database as it was.

    With ``force``, ``DROP OWNED BY CURRENT_USER`` runs first in the same transaction. A
    custom archive is turned into SQL by pg_restore on the way, so both formats share it.
    """
    if path.endswith(".dump"):
        source = ["pg_restore", "-f", "-", path]
    else:
        source = ["pigz" if shutil.which("pigz") else "gzip", "-dc", path]
    argv = ["psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
    if force:
        argv += ["-c", "DROP OWNED BY CURRENT_USER"]
    src = subprocess.Popen(source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    r = subprocess.run(
        [*argv, "-f", "-", "-d", db],
        stdin=src.stdout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if src.stdout is not None:
        src.stdout.close()
    err = src.stderr.read().decode(errors="replace") if src.stderr is not None else ""
    if src.wait() != 0:
        # psql commits at the end of its input: a reader that failed half-way must not pass.
        raise RuntimeError(f"{source[0]} failed: {err.strip()[-300:]}")
    if r.returncode != 0:
        raise RuntimeError("restore (rolled back, nothing changed): " + r.stderr.strip()[-400:])


def _restore_plan(
    chosen: str, man: dict[str, Any], where: str, objects: list[str], force: bool
) -> tuple[str, str]:
    """(refusal, plan): why a restore into this target is refused ("" if it is not), and
    what it will do."""
    shown = ", ".join(objects[:5]) + (" …" if len(objects) > 5 else "")
    user = E.get("PGUSER")
    refusal = ""
    if objects and not force:
        refusal = (
            f"{where} is not empty ({len(objects)} objects: {shown}): nothing was changed; "
            f"restore into an empty database, or pass --force to drop what {user} owns there "
            "and restore in one transaction"
        )
    plan = (
        f"restore {chosen} (sha256 {str(man.get('sha256'))[:12]}…, verified, "
        f"{man.get('tableCount')} tables) into {where} in one transaction"
        + (f", first dropping what {user} owns there ({shown})" if objects else "")
        + ", then compare the row counts with the manifest"
    )
    return refusal, plan


def cmd_restore(count_sql: str) -> int:
    """``stronghold backup restore``: one archive into a database a person names.

    Refuses a database that holds objects unless RESTORE_FORCE=1; RESTORE_DRY_RUN=1 checks
    the archive and the target and changes nothing. The archive is only read.
    """
    start = time.monotonic()
    chosen = E.get("RESTORE_FILE", "")
    db = E.get("PGDATABASE", "")
    force, dry = E.get("RESTORE_FORCE") == "1", E.get("RESTORE_DRY_RUN") == "1"
    where = f"database {db} on {E.get('PGHOST')}:{E.get('PGPORT')} as {E.get('PGUSER')}"
    base: dict[str, Any] = {"kind": "restore", "backup": chosen, "target": where, "dryRun": dry}
    if not chosen or not os.path.exists(os.path.join(DEST, chosen)):
        terminate({**base, "ok": False, "reason": "BackupNotFound", "error": f"no {chosen}"})
        return 2
    ok, reason, msg = check(chosen, full=False)
    if not ok:
        terminate({**base, "ok": False, "reason": reason, "error": f"{chosen}: {msg}"})
        return 2
    man = load_manifest(chosen) or {}
    try:
        objects = _target_objects(db)
    except RuntimeError as exc:
        terminate({**base, "ok": False, "reason": "TargetUnreachable", "error": scrub(str(exc))})
        return 2
    base.update({"sha256": man.get("sha256"), "targetObjects": len(objects)})
    refusal, plan = _restore_plan(chosen, man, where, objects, force)
    if dry:
        terminate({**base, "ok": True, "wouldRefuse": bool(refusal), "plan": refusal or plan})
        return 0
    if refusal:
        terminate({**base, "ok": False, "reason": "TargetNotEmpty", "error": refusal})
        return 2
    t0 = time.monotonic()
    try:
        _restore_into(os.path.join(DEST, chosen), db, force and bool(objects))
        restored = round(time.monotonic() - t0, 3)
        verdict = _compared(man.get("rowCounts") or {}, _count_rows(db, count_sql))
    except RuntimeError as exc:
        terminate({**base, "ok": False, "reason": "RestoreFailed", "error": scrub(str(exc))})
        return 2
    terminate(
        {
            **base,
            **verdict,
            "restoreSeconds": restored,
            "durationSeconds": round(time.monotonic() - start, 3),
            "completed": iso(now()),
        }
    )
    return 0 if verdict["ok"] else 2


def cmd_finish(*args: str) -> None:
    """One helper run after the dump: the manifest, the rename, retention, the result."""
    final, tmp, started, dumped, verified_at, sha, size, snapshot = args
    cmd_backup(final, tmp, started, dumped, verified_at, sha, size, snapshot)
    cmd_publish(final, tmp)
    cmd_report_backup(final)


COMMANDS: dict[str, Callable[..., int | None]] = {
    "pgpass": cmd_pgpass,
    "fail": cmd_fail,
    "sink": cmd_sink,
    "finish": cmd_finish,
    "verify": cmd_verify,
    "restore-test": cmd_restore_test,
    "restore": cmd_restore,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        sys.exit("unknown helper command " + (argv[0] if argv else "(none)"))
    return COMMANDS[argv[0]](*argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
