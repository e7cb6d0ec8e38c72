"""Runs: the backup Job's sources beyond the database, and one manifest per run.

A run is the database archive ``db_backup_<ts>.<ext>`` plus, when ``spec.sources`` adds
anything, the directory ``run_<ts>/`` beside it: ``volume-<name>.tar.gz`` per volume,
``configuration.tar.gz``, ``secrets.tar.gz.age`` and ``system-state.json`` (both prepared
by the operator, which alone reads the API, and mounted from the run's capture ConfigMap),
and ``manifest.json`` listing every artifact, the database archive included, with its size
and sha256. Verification and retention treat the run as one unit.

Standard library only, Python 3.7 syntax (the Job runs it with the Python of a
user-chosen image). backup.sh runs ``python3 stronghold_runs.py collect ...``;
stronghold_job.py imports it for verification, retention and its reports.
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
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

E = os.environ
RUN_PREFIX = "run_"
MANIFEST = "manifest.json"
AGE_HEADER = b"age-encryption.org/v1\n"
ORPHAN_SECONDS = 3600  # a run directory without its archive, untouched this long, goes
SUMMARY_ARTIFACTS = 12  # bound of the artifacts in a termination message (4 KiB in all)
_ARCHIVE = re.compile(r"^db_backup_(\d{8}_\d{6})\.(sql\.gz|dump)$")
_RUN = re.compile(r"^run_(\d{8}_\d{6})$")
_PARTIAL = re.compile(r"^\.run_\d{8}_\d{6}\..*\.partial$")
# Files the operator's capture may hold, in the order they are listed (kind, file).
CAPTURED = (
    ("configuration", "configuration.tar.gz"),
    ("secrets", "secrets.tar.gz.age"),
    ("systemState", "system-state.json"),
)


# --- pure ------------------------------------------------------------------------------


def run_id(archive: str) -> str | None:
    """``YYYYMMDD_HHMMSS`` of a database archive's name, or None if it is not one."""
    m = _ARCHIVE.match(archive)
    return m.group(1) if m else None


def run_dir(archive: str) -> str | None:
    """The run directory's name of a database archive (``run_<ts>``), or None."""
    rid = run_id(archive)
    return RUN_PREFIX + rid if rid else None


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A compiled glob: ``*`` and ``?`` stay inside a path segment, ``**`` crosses them,
    ``[...]`` is a character class. A pattern without ``/`` matches a name at any depth."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    body = "".join(out)
    if "/" not in pattern.rstrip("/"):
        body = "(?:.*/)?" + body
    return re.compile("^" + body.rstrip("/") + "$", re.DOTALL)


def selected(
    path: str, include: Sequence[re.Pattern[str]], exclude: Sequence[re.Pattern[str]]
) -> bool:
    """Whether a file (its path relative to the volume source) goes into the archive.

    Included when ``include`` is empty or one matches the path; excluded when one of
    ``exclude`` matches the path or a directory above it (``cache/`` excludes its tree).
    """
    if include and not any(g.match(path) for g in include):
        return False
    parts = path.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    return not any(g.match(p) for g in exclude for p in prefixes)


def filter_files(paths: Iterable[str], include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """The sorted paths the globs select (see :func:`selected`)."""
    inc = [glob_regex(g) for g in include]
    exc = [glob_regex(g) for g in exclude]
    return sorted(p for p in paths if selected(p, inc, exc))


def build_manifest(
    run: str, meta: Mapping[str, Any], artifacts: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The run manifest: the run's id, ``meta`` (job, slot, times) and every artifact."""
    items = [dict(a) for a in artifacts]
    return {
        "run": run,
        **dict(meta),
        "artifactCount": len(items),
        "sizeBytes": sum(int(a.get("sizeBytes") or 0) for a in items),
        "artifacts": items,
        "verified": all(a.get("verified") for a in items),
    }


def summarize(man: Mapping[str, Any], limit: int = SUMMARY_ARTIFACTS) -> dict[str, Any]:
    """A run manifest for a termination message and status: bounded, sha256 shortened to
    16 hex digits (the manifest on the volume has all 64)."""
    arts = []
    for a in list(man.get("artifacts") or [])[:limit]:
        item = {
            "name": a.get("name"),
            "kind": a.get("kind"),
            "sizeBytes": a.get("sizeBytes"),
            "sha256": str(a.get("sha256") or "")[:16],
            "verified": bool(a.get("verified")),
        }
        if a.get("verifyReason"):
            item["verifyReason"] = a.get("verifyReason")
        arts.append(item)
    return {
        "run": man.get("run"),
        "job": man.get("job"),
        "manifest": RUN_PREFIX + str(man.get("run")) + "/" + MANIFEST,
        "verified": bool(man.get("verified")),
        "verifiedAt": man.get("verifiedAt") or man.get("completedAt"),
        "artifacts": arts,
        "artifactCount": len(man.get("artifacts") or []),
    }


def runs_to_remove(
    deleted: Iterable[str],
    archives: Iterable[str],
    entries: Mapping[str, float],
    now: float,
) -> list[str]:
    """Run directories to delete: those of archives retention deleted, and leftovers.

    ``entries`` maps the names in the backup directory that look like runs (``run_<ts>``,
    ``.run_<ts>.<job>.partial``) to their mtime. A run goes whole with its archive; a run
    directory whose archive is gone (a run that failed after publishing it) or a partial
    one goes once untouched for an hour (a running Job's partial directory is fresh).
    """
    gone = {run_dir(a) for a in deleted} - {None}
    live = {run_dir(a) for a in archives} - {None} - gone
    out = []
    for name, mtime in sorted(entries.items()):
        if name in gone or (
            ((_RUN.match(name) and name not in live) or _PARTIAL.match(name))
            and (now - mtime > ORPHAN_SECONDS)
        ):
            out.append(name)
    return out


def combine(
    db: tuple[bool, str, str], failures: Sequence[tuple[str, str, str]]
) -> tuple[bool, str, str]:
    """The run's verdict: the archive's own, else the first artifact that failed."""
    if not db[0] or not failures:
        return db
    name, reason, msg = failures[0]
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return False, reason, f"run artifact {name}: {msg}{more}"


# --- I/O -------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017 (3.7)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(dest: str, archive: str) -> dict[str, Any] | None:
    """The run manifest of a database archive, None when it has no run directory."""
    name = run_dir(archive)
    if not name:
        return None
    try:
        with open(os.path.join(dest, name, MANIFEST)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def walk(base: str) -> list[str]:
    """Regular files and symlinks under ``base`` (relative, '/'-separated); symlinks are
    archived as links, never followed."""
    out = []
    for root, dirs, files in os.walk(base):
        rel = os.path.relpath(root, base)
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                files.append(d)  # a link to a directory is archived as the link
                dirs.remove(d)
        for name in files:
            out.append(name if rel == "." else rel + "/" + name)
    return out


class _Lines(threading.Thread):
    """Counts the lines a process writes (``tar -t``: one per member), concurrently."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream, self.count = stream, 0

    def run(self) -> None:
        for block in iter(lambda: self.stream.read(1 << 16), b""):
            self.count += block.count(b"\n")


def tar_members(path: str, sha: Any = None) -> tuple[int, str]:
    """(members, error) of a gzip tar read once; ``sha`` (a hashlib object) sees the bytes."""
    p = subprocess.Popen(
        ["tar", "-tzf", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    lines = _Lines(p.stdout)
    lines.start()
    err = ""
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                if sha is not None:
                    sha.update(block)
                if p.stdin is not None and not err:
                    try:
                        p.stdin.write(block)
                    except BrokenPipeError:
                        err = "tar stopped reading"
    finally:
        if p.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                p.stdin.close()
    rc = p.wait()
    lines.join()
    tail = p.stderr.read().decode(errors="replace").strip()[-300:] if p.stderr else ""
    if rc != 0:
        return lines.count, "tar -t: " + (tail or err or f"exit {rc}")
    return lines.count, ""


def _sha_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tar_gz(
    base: str, listing: str, out: str, compressor: str, level: str
) -> tuple[int, str, int, int, str]:
    """tar | compressor into ``out`` (fsynced), hashed as it is written: (size, sha256,
    tar's exit code, the compressor's, tar's last stderr)."""
    errfile = listing + ".err"
    with open(errfile, "wb") as err:
        tar = subprocess.Popen(
            ["tar", "--create", "--no-recursion", "--null", "-C", base, "--files-from", listing],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    comp = subprocess.Popen([compressor, "-" + level], stdin=tar.stdout, stdout=subprocess.PIPE)
    if tar.stdout is not None:
        tar.stdout.close()
    h = hashlib.sha256()
    size = 0
    stream = comp.stdout
    assert stream is not None
    with open(out, "wb") as f:
        for block in iter(lambda: stream.read(1 << 20), b""):
            h.update(block)
            size += len(block)
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    tar_rc, comp_rc = tar.wait(), comp.wait()
    with open(errfile, "rb") as e:
        tar_err = e.read()[-400:].decode(errors="replace").strip()
    os.unlink(errfile)
    return size, h.hexdigest(), tar_rc, comp_rc, tar_err


def archive_volume(
    vol: Mapping[str, Any], out_dir: str, compressor: str, level: str
) -> dict[str, Any]:
    """``volume-<name>.tar.gz`` of the selected files of one mounted volume, checked."""
    base = str(vol["dir"])
    if not os.path.isdir(base):
        raise RuntimeError(f"volume {vol['name']}: {base} is not a directory in the volume")
    t0 = time.time()
    files = filter_files(walk(base), vol.get("include") or [], vol.get("exclude") or [])
    name = f"volume-{vol['name']}.tar.gz"
    out = os.path.join(out_dir, name)
    listing = os.path.join(out_dir, f".{name}.files")
    with open(listing, "wb") as f:
        f.write(b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in files))
    total = 0
    for p in files:
        with contextlib.suppress(OSError):
            total += os.lstat(os.path.join(base, p)).st_size
    size, sha, tar_rc, comp_rc, tar_err = _tar_gz(base, listing, out, compressor, level)
    os.unlink(listing)
    # GNU tar: 1 = a file changed while it was read (a live volume), 2 = a real error.
    if tar_rc not in (0, 1) or comp_rc != 0:
        raise RuntimeError(f"volume {vol['name']}: tar exit {tar_rc}: {tar_err}")
    archived = time.time()
    members, err = tar_members(out)
    if err or members != len(files):
        raise RuntimeError(
            f"volume {vol['name']}: verification failed: {err or ''} "
            f"{members} members, {len(files)} files selected"
        )
    entry = {
        "name": name,
        "kind": "volume",
        "source": vol["name"],
        "persistentVolumeClaim": vol.get("claim"),
        "sizeBytes": size,
        "sha256": sha,
        "files": len(files),
        "bytes": total,
        "compression": "gzip",
        "compressor": compressor,
        "verified": True,
        "verifiedAt": _now(),
        "check": "tar -t",
        "seconds": {"archive": round(archived - t0, 3), "verify": round(time.time() - archived, 3)},
    }
    if tar_rc == 1:
        entry["warning"] = "files changed while they were archived: " + tar_err[-200:]
    return entry


def copy_captured(capture: str, out_dir: str) -> list[dict[str, Any]]:
    """The operator's capture (mounted ConfigMap) into the run, each file checked."""
    out = []
    meta: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError), open(os.path.join(capture, "capture.json")) as f:
        meta = json.load(f)
    for kind, name in CAPTURED:
        src = os.path.join(capture, name)
        if not os.path.exists(src):
            continue
        dst = os.path.join(out_dir, name)
        shutil.copyfile(src, dst)
        with open(dst, "rb") as f:
            os.fsync(f.fileno())
        entry: dict[str, Any] = {"name": name, "kind": kind, "sizeBytes": os.path.getsize(dst)}
        entry.update((meta.get("artifacts") or {}).get(name) or {})
        ok, reason, msg, sha = check_artifact(out_dir, entry, full=True)
        if not ok:
            raise RuntimeError(f"{name}: {reason}: {msg}")
        if entry.get("sha256") and entry["sha256"] != sha:
            raise RuntimeError(f"{name}: differs from what the operator captured")
        entry.update({"sha256": sha, "verified": True, "verifiedAt": _now()})
        out.append(entry)
    return out


def check_artifact(run_path: str, a: Mapping[str, Any], full: bool) -> tuple[bool, str, str, str]:
    """(ok, reason, message, sha256) of one non-database artifact of a run directory."""
    path = os.path.join(run_path, str(a.get("name")))
    if not os.path.isfile(path):
        return False, "ArtifactMissing", "file not found", ""
    kind = a.get("kind")
    h = hashlib.sha256()
    if full and str(a.get("name", "")).endswith(".tar.gz"):
        members, err = tar_members(path, h)
        want = a.get("files") if kind == "volume" else a.get("objects")
        if not err and want is not None and members != int(want):
            err = f"tar -t lists {members} members, the manifest {want}"
        sha = h.hexdigest()
        if a.get("sha256") and sha != a.get("sha256"):
            return False, "ChecksumMismatch", _mismatch(sha, a), sha
        return (False, "IntegrityCheckFailed", err, sha) if err else (True, "Verified", "", sha)
    sha = _sha_file(path)
    if a.get("sha256") and sha != a.get("sha256"):
        return False, "ChecksumMismatch", _mismatch(sha, a), sha
    if full and kind == "secrets":
        with open(path, "rb") as f:
            if f.read(len(AGE_HEADER)) != AGE_HEADER:
                return False, "IntegrityCheckFailed", "not an age-encrypted file", sha
    if full and kind == "systemState":
        try:
            with open(path) as f:
                json.load(f)
        except ValueError as exc:
            return False, "IntegrityCheckFailed", f"not JSON: {exc}", sha
    return True, "Verified", "", sha


def _mismatch(sha: str, a: Mapping[str, Any]) -> str:
    return f"sha256 {sha[:16]}, manifest says {str(a.get('sha256'))[:16]}"


def check_run(
    dest: str, archive: str, full: bool, db: tuple[bool, str, str]
) -> tuple[bool, str, str]:
    """Verify a run as a unit: ``db`` is the archive's own check; every artifact of its run
    directory is checked too and the outcome recorded per artifact in the run manifest."""
    man = load(dest, archive)
    if man is None:
        if run_dir(archive) and os.path.isdir(os.path.join(dest, str(run_dir(archive)))):
            return combine(
                db, [(MANIFEST, "NoManifest", "the run manifest is missing or unreadable")]
            )
        return db
    run_path = os.path.join(dest, str(run_dir(archive)))
    failures = []
    at = _now()
    for a in man.get("artifacts") or []:
        if a.get("kind") == "database":
            ok, reason, msg = db
        else:
            ok, reason, msg, _ = check_artifact(run_path, a, full)
        a["verified"] = ok
        a["verifiedAt"] = at
        if ok:
            a.pop("verifyReason", None)
            a.pop("verifyMessage", None)
        else:
            a["verifyReason"], a["verifyMessage"] = reason, msg[:300]
            if a.get("kind") != "database":
                failures.append((str(a.get("name")), reason, msg))
    man["verified"] = all(a.get("verified") for a in man.get("artifacts") or [])
    man["verifiedAt"] = at
    with contextlib.suppress(OSError):
        _write_json(os.path.join(run_path, MANIFEST), man)
    return combine(db, failures)


def summary(dest: str, archive: str) -> dict[str, Any] | None:
    man = load(dest, archive)
    return summarize(man) if man is not None else None


def newest_summary(dest: str) -> dict[str, Any] | None:
    """The newest run's summary (the newest archive that has a run directory)."""
    for name in sorted(os.listdir(dest), reverse=True):
        if _ARCHIVE.match(name) and os.path.isdir(os.path.join(dest, str(run_dir(name)))):
            return summary(dest, name)
    return None


def prune_runs(dest: str, deleted: Iterable[str]) -> list[str]:
    """Delete the run directories of deleted archives and leftovers (:func:`runs_to_remove`)."""
    entries: dict[str, float] = {}
    archives = []
    for name in os.listdir(dest):
        path = os.path.join(dest, name)
        if _ARCHIVE.match(name):
            archives.append(name)
        elif (_RUN.match(name) or _PARTIAL.match(name)) and os.path.isdir(path):
            entries[name] = os.path.getmtime(path)
    gone = runs_to_remove(deleted, archives, entries, time.time())
    for name in gone:
        shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
    return gone


def cmd_collect(final: str, run_tmp: str, db_sha: str, db_size: str) -> None:
    """Every source of this run into ``run_tmp``, the manifest, then the final name."""
    dest = E["BACKUP_DIR"]
    sources = json.loads(E.get("STRONGHOLD_SOURCES") or "{}")
    started = _now()
    os.makedirs(run_tmp, exist_ok=True)
    artifacts: list[dict[str, Any]] = [
        {
            "name": final,
            "kind": "database",
            "path": "../" + final,
            "sizeBytes": int(db_size),
            "sha256": db_sha,
            "format": E.get("BACKUP_FORMAT"),
            "verified": True,
            "verifiedAt": started,
        }
    ]
    compressor = E.get("COMPRESSOR") or "gzip"
    for vol in sources.get("volumes") or []:
        artifacts.append(archive_volume(vol, run_tmp, compressor, E.get("GZIP_LEVEL", "6")))
    if sources.get("capture"):
        artifacts += copy_captured(str(sources["capture"]), run_tmp)
    rid = run_id(final) or final
    meta = {
        "job": E.get("JOB_NAME"),
        "slot": E.get("SLOT"),
        "startedAt": started,
        "completedAt": _now(),
        "verifiedAt": _now(),
    }
    _write_json(os.path.join(run_tmp, MANIFEST), build_manifest(rid, meta, artifacts))
    _fsync(run_tmp)
    os.replace(run_tmp, os.path.join(dest, RUN_PREFIX + rid))
    _fsync(dest)


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "collect":
        cmd_collect(*argv[1:])
        return 0
    sys.exit("usage: stronghold_runs.py collect FINAL RUN_TMP SHA256 SIZE")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
