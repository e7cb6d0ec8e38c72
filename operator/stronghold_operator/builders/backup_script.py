"""The program the backup Jobs run, as text (the operator never executes it).

``SCRIPT`` is bash (``set -euo pipefail``): it writes ``HELPER`` (Python 3, stdlib only) next to
the ``.pgpass`` in an emptyDir and uses it for what bash does badly (JSON, manifests,
retention). The dump pipeline itself is bash, so a failure anywhere in it fails the Job.

Why the row counts are exact and consistent with the dump: the script opens one psql session,
starts a ``REPEATABLE READ READ ONLY`` transaction and exports its snapshot; pg_dump dumps with
``--snapshot`` (the same snapshot). A plain dump's rows are counted in the stream as it passes
(each ``COPY ... FROM stdin;`` section holds one line per row): they are the rows pg_dump read
in that snapshot, and counting them costs the database nothing. Before, a ``count(*)`` of every
table in the exporting transaction scanned the whole database a second time while the dump
ran, on the same cores. A custom dump is written by pg_dump
itself, so its counts are still taken in the exporting transaction. Either way the counts are
what the snapshot holds, even while the application keeps writing.
"""

from __future__ import annotations

HELPER = r'''
import hashlib, json, os, re, subprocess, sys, time, zlib
from datetime import datetime, timedelta, timezone

E = os.environ
DEST = E.get("BACKUP_DIR", "/backups")
WORK = E.get("STRONGHOLD_WORK", "/var/run/stronghold/work")
SECRET = E.get("STRONGHOLD_SECRET", "/var/run/stronghold/secret/password")
TERM = E.get("TERMINATION_LOG", "/dev/termination-log")
PATTERN = re.compile(r"^db_backup_(\d{8})_(\d{6})\.(sql\.gz|dump)$")
TRAILER = b"-- PostgreSQL database dump complete"
MAX_MSG = 3800  # the kubelet keeps at most 4096 bytes of a termination message


def now():
    return datetime.now(timezone.utc)


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def file_time(name):
    m = PATTERN.match(name)
    if not m:
        return None
    return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)


def plan(archives, at, days, min_keep, protected):
    """archives: [(file, taken, verified)] -> (keep, delete); same rules as logic.backup."""
    items = sorted(archives, key=lambda a: (a[1], a[0]), reverse=True)
    verified = [a for a in items if a[2]]
    why = {}
    for a in items:
        if a[0] in protected:
            why.setdefault(a[0], "protected")
    if verified:
        why.setdefault(verified[0][0], "newest verified")
    for a in verified[:min_keep]:
        why.setdefault(a[0], "minKeep")
    cutoff = at - timedelta(days=days)
    for a in items:
        if a[1] >= cutoff:
            why.setdefault(a[0], "younger than retention.days")
    return [a[0] for a in items if a[0] in why], [a[0] for a in items if a[0] not in why]


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data):
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(os.path.dirname(path) or ".")


def manifest_path(name):
    return os.path.join(DEST, name + ".manifest.json")


def load_manifest(name):
    try:
        with open(manifest_path(name)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def archives():
    out = []
    for name in sorted(os.listdir(DEST)):
        taken = file_time(name)
        if taken is not None and os.path.isfile(os.path.join(DEST, name)):
            out.append((name, taken))
    return out


class Reader:
    """One pass over an archive's bytes: sha256 and, for gzip, a full decompression (zlib
    checks the CRC-32 and length in the gzip trailer) keeping the dump's last bytes."""

    def __init__(self, inflate, rows=None):
        self.sha = hashlib.sha256()
        self.size = 0
        self.inflate = zlib.decompressobj(31) if inflate else None
        self.tail = b""
        self.error = None
        self.rows = rows  # a RowCounter fed with the decompressed dump, or None

    def feed(self, chunk):
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
                self.error = "gzip stream is corrupt: %s" % exc
                return
            if out:
                self.tail = (self.tail + out[-4096:])[-4096:]
                if self.rows is not None:
                    self.rows.feed(out)
            buf = d.unconsumed_tail or d.unused_data

    def finish(self):
        """None if the bytes were a complete gzip of a complete plain dump, else why not."""
        d = self.inflate
        if d is None or self.error:
            return self.error
        try:
            rest = d.flush()
        except zlib.error as exc:
            return "gzip stream is corrupt: %s" % exc
        self.tail = (self.tail + rest[-4096:])[-4096:]
        if rest and self.rows is not None:
            self.rows.feed(rest)
        if not d.eof:
            return "gzip stream is truncated"
        return None if TRAILER in self.tail else "dump is incomplete: trailer line missing"


def copy_table(header):
    """``schema.table`` (unquoted, as the count query spells it) of a ``COPY`` line, or None.

    pg_dump writes ``COPY schema.table (col, ...) FROM stdin;`` and double-quotes a name
    when it must, doubling any quote inside it.
    """
    text = header.decode("utf-8", "replace")
    i, names = 5, []
    for _ in range(2):
        if text.startswith('"', i):
            j, name = i + 1, ""
            while True:
                k = text.find('"', j)
                if k < 0:
                    return None
                if text.startswith('"', k + 1):
                    name, j = name + text[j:k + 1], k + 2
                    continue
                name, i = name + text[j:k], k + 1
                break
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
    return "%s.%s" % tuple(names)


class RowCounter:
    """Rows per table of a plain dump, counted in the decompressed stream as it passes.

    A data section is a ``COPY ... FROM stdin;`` line, one line per row (a newline inside a
    value is written as ``\\n``), and a ``\\.`` line. Only line boundaries are searched
    (``bytes.find``/``count``, C speed); ``buf[0]`` is always the byte before the unread ones,
    so a marker split across two chunks is still found.
    """

    def __init__(self):
        self.counts = {}
        self.table = None
        self.bad = []  # COPY lines whose table name could not be read
        self.buf = b"\n"

    def feed(self, data):
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
                header = buf[i + 1:j]
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


def scan(path, inflate):
    r = Reader(inflate)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            r.feed(block)
    return r


def check(name, full):
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
        return False, "ChecksumMismatch", "sha256 %s, manifest says %s" % (actual[:16], said)
    if gz:
        err = r.finish()
        if err:
            return False, "IntegrityCheckFailed", err
    elif full:
        p = subprocess.run(["pg_restore", "--list", path], capture_output=True)
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace")[-300:]
            return False, "IntegrityCheckFailed", "pg_restore --list: " + err
    return True, "Verified", ""


def cmd_sink(path, result):
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
                view = view[os.write(fd, view):]
            r.feed(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    err = r.finish()
    if err:
        sys.exit(err)
    if rows.table is not None or rows.bad:
        sys.exit("dump is malformed: %s" % (
            "unreadable COPY line %r" % rows.bad[0] if rows.bad else "a COPY section never ends"))
    with open(result, "w") as f:
        f.write("%s %d\n" % (r.sha.hexdigest(), r.size))
    with open(os.path.join(WORK, "counts.txt"), "w") as f:
        f.writelines("%s|%d\n" % item for item in sorted(rows.counts.items()))


def mark(name, ok, reason, message):
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


def prune():
    """Delete what retention allows; re-check every archive a deletion relies on first."""
    days, min_keep = int(E.get("RETENTION_DAYS", "30")), int(E.get("MIN_KEEP", "3"))
    protected = set(E.get("PROTECTED", "").split())
    found = archives()
    flags = {}
    for name, _ in found:
        man = load_manifest(name)
        flags[name] = bool(man and man.get("verified"))
    rechecked = set()
    failed = []
    while True:
        keep, delete = plan([(n, t, flags[n]) for n, t in found], now(), days, min_keep, protected)
        if not delete:
            break
        # Deleting is justified by the verified archives we keep: prove they still are.
        doubtful = [n for n in keep if flags[n] and n not in rechecked]
        if not doubtful:
            break
        for n in doubtful:
            rechecked.add(n)
            ok, reason, msg = check(n, full=False)
            if not ok:
                flags[n] = False
                mark(n, False, reason, msg)
                failed.append({"file": n, "reason": reason, "message": msg[:200]})
    for n in delete:
        for path in (os.path.join(DEST, n), manifest_path(n)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    # Leftovers of killed runs: partial files nobody has written to for an hour.
    for n in os.listdir(DEST):
        p = os.path.join(DEST, n)
        if n.endswith(".partial") and time.time() - os.path.getmtime(p) > 3600:
            os.unlink(p)
    if delete:
        fsync_path(DEST)
    return delete, failed, keep


def terminate(data):
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
    print(text[:MAX_MSG])


def scrub(text):
    # The password never reaches stderr through libpq, but be certain.
    try:
        with open(SECRET) as f:
            secret = f.read().rstrip("\r\n")
        if secret:
            text = text.replace(secret, "******")
    except OSError:
        pass
    return text


def cmd_pgpass():
    try:
        with open(SECRET) as f:
            secret = f.read()
    except FileNotFoundError:
        return
    except PermissionError:
        sys.exit("cannot read the mounted password Secret %s as uid %d: permission denied"
                 % (SECRET, os.getuid()))
    secret = secret[:-1] if secret.endswith("\n") else secret
    secret = secret[:-1] if secret.endswith("\r") else secret
    esc = secret.replace("\\", "\\\\").replace(":", "\\:")
    path = os.path.join(WORK, ".pgpass")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("*:*:*:*:" + esc + "\n")
    os.chmod(path, 0o600)


def read_counts(path):
    counts = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "|" in line:
                key, _, value = line.rpartition("|")
                counts[key] = int(value)
    return counts


def elapsed(t_start, done):
    try:
        return time.time() - float(E.get("STRONGHOLD_T0", ""))
    except ValueError:
        return (done - t_start).total_seconds()


def timings():
    """Seconds per phase: setup, dump (with the checks on the stream), the rest of the row
    counts after the dump, the on-disk verification."""
    try:
        t = [float(x) for x in E.get("STRONGHOLD_TIMES", "").split()]
    except ValueError:
        return {}
    if len(t) != 5:
        return {}
    names = ("setupSeconds", "dumpSeconds", "countsWaitSeconds", "verifySeconds")
    return {n: round(b - a, 3) for n, a, b in zip(names, t, t[1:])}


def cmd_fail(stage, errfile):
    try:
        with open(errfile, errors="replace") as f:
            err = f.read()[-4000:]
    except OSError:
        err = ""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    msg = scrub(" | ".join(lines[-4:]))[-700:] or "failed in stage " + stage
    terminate({"ok": False, "kind": E.get("STRONGHOLD_MODE", ""), "stage": stage, "error": msg,
               "job": E.get("JOB_NAME", "")})


def cmd_backup(final, tmp, started, dumped, verified_at, sha, size, snapshot):
    counts = read_counts(os.path.join(WORK, "counts.txt"))
    version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True)
    version = version.stdout.strip()
    server = ""
    try:
        with open(os.path.join(WORK, "server_version")) as f:
            server = f.read().strip()
    except OSError:
        pass
    t_start = datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    done = now()
    man = {
        "file": final, "sha256": sha, "sizeBytes": int(size), "format": E.get("BACKUP_FORMAT"),
        "compression": "gzip", "compressionLevel": int(E.get("GZIP_LEVEL", "6")),
        "compressor": "pg_dump" if E.get("BACKUP_FORMAT") == "custom" else E.get("COMPRESSOR"),
        "database": E.get("PGDATABASE"), "host": E.get("PGHOST"), "user": E.get("PGUSER"),
        "startedAt": started, "dumpedAt": dumped, "verifiedAt": verified_at,
        "completedAt": iso(done), "durationSeconds": round(elapsed(t_start, done), 3),
        "pgDumpVersion": version, "serverVersion": server, "snapshot": snapshot,
        "job": E.get("JOB_NAME"), "slot": E.get("SLOT"), "verified": True,
        "tableCount": len(counts), "rowCounts": counts, "timings": timings(),
    }
    write_atomic(os.path.join(WORK, "manifest.json"), json.dumps(man, indent=2, sort_keys=True))
    return man


def cmd_publish(final, tmp):
    """Give the archive its final name, then its manifest; fsync the directory."""
    os.replace(tmp, os.path.join(DEST, final))
    fsync_path(DEST)
    with open(os.path.join(WORK, "manifest.json")) as f:
        data = f.read()
    write_atomic(manifest_path(final), data)


def cmd_report_backup(final):
    man = load_manifest(final) or {}
    try:
        pruned, failed, _ = prune()
        prune_error = None
    except OSError as exc:  # the backup itself is safe; report the prune problem with it
        pruned, failed, prune_error = [], [], "prune: " + str(exc)
    terminate({"ok": True, "kind": "backup", "file": final, "size": man.get("sizeBytes"),
               "sha256": man.get("sha256"), "started": man.get("startedAt"),
               "completed": man.get("completedAt"), "durationSeconds": man.get("durationSeconds"),
               "verified": True, "tables": man.get("tableCount"),
               "rows": sum((man.get("rowCounts") or {}).values()),
               "pgDump": man.get("pgDumpVersion"), "pruned": pruned, "failed": failed,
               "pruneError": prune_error,
               "job": E.get("JOB_NAME", "")})


def cmd_verify(_count_sql=""):
    passed, failed = [], []
    for name, _ in archives():
        ok, reason, msg = check(name, full=True)
        mark(name, ok, reason, msg)
        if ok:
            passed.append(name)
        else:
            failed.append({"file": name, "reason": reason, "message": msg[:200]})
    try:
        pruned, pfailed, _ = prune()
        prune_error = None
    except OSError as exc:
        pruned, pfailed, prune_error = [], [], "prune: " + str(exc)
    newest = [n for n, _ in sorted(archives(), key=lambda a: a[1], reverse=True)
              if (load_manifest(n) or {}).get("verified")]
    terminate({"ok": True, "kind": "verify", "checked": len(passed) + len(failed),
               "passed": sorted(passed, reverse=True), "failed": failed + pfailed,
               "pruned": pruned, "newestVerified": newest[0] if newest else None,
               "pruneError": prune_error, "job": E.get("JOB_NAME", "")})
    return 0


def psql(db, sql):
    return subprocess.run(["psql", "-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db],
                          input=sql, capture_output=True, text=True)


def cmd_restore_test(count_sql):
    start = time.monotonic()
    chosen = E.get("RESTORE_FILE") or ""
    if not chosen:
        cands = [n for n, _ in sorted(archives(), key=lambda a: a[1], reverse=True)
                 if (load_manifest(n) or {}).get("verified")]
        chosen = cands[0] if cands else ""
    if not chosen or not os.path.exists(os.path.join(DEST, chosen)):
        terminate({"ok": False, "kind": "restore-test", "stage": "select",
                   "reason": "NoVerifiedBackup",
                   "error": "no verified backup to restore: " + (chosen or "none found")})
        return 2
    ok, reason, msg = check(chosen, full=False)
    if not ok:
        mark(chosen, False, reason, msg)
        terminate({"ok": False, "kind": "restore-test", "stage": "checksum", "backup": chosen,
                   "reason": reason, "error": msg})
        return 2
    man = load_manifest(chosen) or {}
    expected = man.get("rowCounts") or {}
    db = E["PGDATABASE"]
    suffix = "_restoretest_" + now().strftime("%Y%m%d%H%M%S")
    scratch = db[: 63 - len(suffix)] + suffix
    path = os.path.join(DEST, chosen)
    result = {"kind": "restore-test", "backup": chosen, "scratchDatabase": scratch}
    created = False
    try:
        r = subprocess.run(["createdb", "-w", "--maintenance-db=postgres", scratch],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("createdb: " + r.stderr.strip())
        created = True
        t0 = time.monotonic()
        if chosen.endswith(".dump"):
            r = subprocess.run(
                ["pg_restore", "-w", "--no-owner", "--exit-on-error", "-d", scratch, path],
                capture_output=True, text=True)
            err = r.stderr
        else:
            gz = subprocess.Popen(["gzip", "-dc", path], stdout=subprocess.PIPE)
            r = subprocess.run(["psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-d", scratch],
                               stdin=gz.stdout, capture_output=True, text=True)
            gz.stdout.close()
            if gz.wait() != 0 and r.returncode == 0:
                raise RuntimeError("gzip -dc failed")
            err = r.stderr
        if r.returncode != 0:
            raise RuntimeError("restore: " + err.strip()[-400:])
        result["restoreSeconds"] = round(time.monotonic() - t0, 3)
        r = psql(scratch, count_sql)
        if r.returncode != 0:
            raise RuntimeError("counting rows: " + r.stderr.strip()[-300:])
        actual = {}
        for line in r.stdout.splitlines():
            if "|" in line:
                key, _, value = line.rpartition("|")
                actual[key] = int(value)
        tables = [t for t in E.get("RESTORE_TABLES", "").split(",") if t] or sorted(expected)
        mismatches = []
        for t in tables:
            if t not in expected:
                mismatches.append({"table": t, "expected": None, "actual": actual.get(t)})
            elif actual.get(t) != expected[t]:
                mismatches.append({"table": t, "expected": expected[t], "actual": actual.get(t)})
        # The table count: every table the backup holds must be back. A restore may hold
        # more (an extension's own tables, created by CREATE EXTENSION, are not dump data).
        restored = sum(1 for t in expected if t in actual)
        if restored != len(expected):
            mismatches.append(
                {"table": "(table count)", "expected": len(expected), "actual": restored})
        result.update({
            "ok": not mismatches, "tablesCompared": len(tables),
            "rowsCompared": sum(actual.get(t, 0) for t in tables),
            "tableCount": len(actual), "expectedTableCount": len(expected),
            "mismatches": mismatches[:10],
        })
        if mismatches:
            first = json.dumps(mismatches[0])
            result.update({"reason": "RowCountMismatch",
                           "error": "%d mismatch(es), first: %s" % (len(mismatches), first)})
    except RuntimeError as exc:
        result.update({"ok": False, "stage": "restore", "error": scrub(str(exc))[-600:]})
    finally:
        if created:
            d = subprocess.run(
                ["dropdb", "-w", "--maintenance-db=postgres", "--if-exists", scratch],
                capture_output=True, text=True)
            result["scratchDropped"] = d.returncode == 0
        result["durationSeconds"] = round(time.monotonic() - start, 3)
        result["completed"] = iso(now())
    terminate(result)
    return 0 if result.get("ok") else 2


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "pgpass":
        cmd_pgpass()
    elif cmd == "fail":
        cmd_fail(*args)
    elif cmd == "sink":
        cmd_sink(*args)
    elif cmd == "finish":
        cmd_backup(*args)
        cmd_publish(args[0], args[1])
        cmd_report_backup(args[0])
    elif cmd == "verify":
        sys.exit(cmd_verify(*args))
    elif cmd == "restore-test":
        sys.exit(cmd_restore_test(args[0]))
    else:
        sys.exit("unknown helper command " + cmd)
'''.lstrip()

# Exact row counts of every ordinary table, one "schema.table|count" line each (\gexec).
COUNT_SQL = (
    "SELECT format('SELECT %L || ''|'' || count(*) FROM ONLY %I.%I', "
    "n.nspname || '.' || c.relname, n.nspname, c.relname) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' "
    "ORDER BY 1 \\gexec"
)

SCRIPT = (
    r"""set -euo pipefail
umask 077
# The manifest's durationSeconds is measured from here (the timestamps have 1 s resolution).
export STRONGHOLD_T0="$EPOCHREALTIME"
W="${STRONGHOLD_WORK:-/var/run/stronghold/work}"
H="$W/helper.py"
ERR="$W/err.log"
stage=setup
tmp=""
: > "$ERR"
cat > "$H" <<'STRONGHOLD_HELPER'
"""
    + HELPER
    + r"""STRONGHOLD_HELPER
on_error() {
  code=$?
  [ -n "$tmp" ] && rm -f "$tmp" || true
  python3 "$H" fail "$stage" "$ERR" || true
  exit "$code"
}
trap on_error ERR
python3 "$H" pgpass 2>>"$ERR"
if [ -f "$W/.pgpass" ]; then export PGPASSFILE="$W/.pgpass"; fi
export HOME="$W"
stage=storage
mkdir -p "$BACKUP_DIR" 2>>"$ERR"
probe="$BACKUP_DIR/.stronghold-write-test.$$"
: > "$probe" 2>>"$ERR"
rm -f "$probe"
COUNT_SQL=$(cat <<'STRONGHOLD_SQL'
"""
    + COUNT_SQL
    + r"""
STRONGHOLD_SQL
)

case "$STRONGHOLD_MODE" in
verify | restore-test)
  # Exit 2: the helper ran and reported a failure itself; anything else non-zero crashed.
  stage=$STRONGHOLD_MODE
  rc=0
  python3 "$H" "$STRONGHOLD_MODE" "$COUNT_SQL" 2>>"$ERR" || rc=$?
  if [ "$rc" = 2 ]; then exit 1; fi
  if [ "$rc" != 0 ]; then python3 "$H" fail "$stage" "$ERR" || true; exit "$rc"; fi
  exit 0
  ;;
esac

# --- backup ---------------------------------------------------------------------------
ext=sql.gz
[ "$BACKUP_FORMAT" = custom ] && ext=dump
while :; do
  ts=$(date -u +%Y%m%d_%H%M%S)
  final="db_backup_${ts}.${ext}"
  [ -e "$BACKUP_DIR/$final" ] || break
  sleep 1
done
# pigz writes the same gzip format at the same level with every core the pod may use.
COMPRESSOR=gzip
if command -v pigz > /dev/null 2>&1; then COMPRESSOR=pigz; fi
export COMPRESSOR
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
tmp="$BACKUP_DIR/.${final}.${JOB_NAME:-local}.partial"

stage=connect
# One session holds a REPEATABLE READ snapshot: pg_dump uses it, the row counts too.
coproc PSQL { exec psql -X -w -q -At -v ON_ERROR_STOP=1 2>>"$ERR"; }
# bash unsets PSQL_PID the moment the coprocess exits: keep the pid while we know it.
psql_pid=$PSQL_PID
PIN=${PSQL[1]}
POUT=${PSQL[0]}
printf '%s\n' "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;" \
  "SELECT 'ver:' || current_setting('server_version');" \
  "SELECT 'snap:' || pg_export_snapshot();" >&"$PIN"
snap=""
while read -t 120 -r line <&"$POUT"; do
  case "$line" in
    ver:*) printf '%s\n' "${line#ver:}" > "$W/server_version" ;;
    snap:*) snap=${line#snap:}; break ;;
  esac
done
[ -n "$snap" ] || { echo "could not open a snapshot (see above)" >>"$ERR"; false; }

stage=dump
t_dump=$EPOCHREALTIME
# COMMIT waits for pg_dump: an ended transaction's snapshot cannot be imported.
if [ "$BACKUP_FORMAT" = custom ]; then
  # pg_dump writes the archive itself: the row counts run now, in the exporting session,
  # while pg_dump reads the same snapshot in its own.
  printf '%s\n' "$COUNT_SQL" "SELECT 'end:counts';" >&"$PIN"
  pg_dump --no-password --snapshot="$snap" -Fc -Z "$GZIP_LEVEL" -f "$tmp" 2>>"$ERR"
else
  # The helper writes and fsyncs the archive and checks it on the way: sha256, a full
  # decompression, the dump's trailer and the rows of every table (counts.txt), in the
  # pass that writes it.
  printf '%s\n' "SELECT 'end:counts';" >&"$PIN"
  pg_dump --no-password --snapshot="$snap" 2>>"$ERR" | "$COMPRESSOR" "-$GZIP_LEVEL" 2>>"$ERR" \
    | python3 "$H" sink "$tmp" "$W/stream" 2>>"$ERR"
fi
dumped=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_dumped=$EPOCHREALTIME

stage=counts
[ "$BACKUP_FORMAT" = custom ] && : > "$W/counts.txt"
got_end=""
while read -t 3600 -r line <&"$POUT"; do
  [ "$line" = "end:counts" ] && { got_end=1; break; }
  printf '%s\n' "$line" >> "$W/counts.txt"
done
[ -n "$got_end" ] || { echo "row counts did not complete" >>"$ERR"; false; }
printf '%s\n' "COMMIT;" >&"$PIN"
exec {PIN}>&-
# The counts were read back above; psql's own exit status adds nothing.
wait "$psql_pid" 2>/dev/null || true
t_counted=$EPOCHREALTIME

stage=verify
sha=$(sha256sum "$tmp" | cut -d' ' -f1)
if [ "$BACKUP_FORMAT" = custom ]; then
  sync "$tmp"
  pg_restore --list "$tmp" > /dev/null 2>>"$ERR"
else
  # What is on disk must be the bytes that were checked while writing.
  read -r checked _ < "$W/stream"
  [ "$sha" = "$checked" ] || {
    echo "archive on disk (sha256 ${sha:0:16}) differs from the verified stream" >>"$ERR"
    false
  }
fi
verified_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
export STRONGHOLD_TIMES="$STRONGHOLD_T0 $t_dump $t_dumped $t_counted $EPOCHREALTIME"

stage=publish
size=$(stat -c %s "$tmp")
# One helper run: the manifest, the rename to the final name, retention, the result.
python3 "$H" finish "$final" "$tmp" "$started" "$dumped" "$verified_at" "$sha" "$size" \
  "$snap" 2>>"$ERR"
tmp=""
"""
)
