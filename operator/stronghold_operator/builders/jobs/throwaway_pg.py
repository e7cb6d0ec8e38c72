"""A throwaway PostgreSQL server inside the restore-test Job, and the roles a dump needs.

The restore test restores into a server of its own: ``initdb`` into the Job's emptyDir, a
Unix socket only (no TCP listener, so nothing outside the pod can reach it, even on the host
network), durability off (the data is deleted minutes later), stopped and deleted at the end.
Production is never connected to: no privilege on it, no load on it.

Standard library only, Python 3.7 syntax: the helper runs it with the Job image's Python.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import time
from typing import Any

SUPERUSER = "postgres"
PORT = "5432"  # only names the socket file: listen_addresses is empty
# Nothing of this server outlives the Job: durability and background work only cost time.
SETTINGS = (
    "listen_addresses=",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "wal_level=minimal",
    "max_wal_senders=0",
    "max_wal_size=4GB",
    "checkpoint_timeout=1h",
    "autovacuum=off",
    "dynamic_shared_memory_type=mmap",
    "max_connections=10",
)
# Roles every server has, and words that are not role names in GRANT/REVOKE/OWNER TO.
_NOT_ROLES = {"public", "current_user", "session_user", "current_role"}


def bindir() -> str | None:
    """The newest PostgreSQL server's bin directory in the image, or None (no server)."""
    explicit = os.environ.get("STRONGHOLD_PG_BINDIR")
    if explicit:
        return explicit if os.path.exists(os.path.join(explicit, "initdb")) else None
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def major(path: str) -> int:
        m = re.search(r"/postgresql/(\d+)/", path)
        return int(m.group(1)) if m else 0

    return os.path.dirname(max(found, key=major)) if found else None


class ServerError(RuntimeError):
    """The throwaway server could not be created or started (the message says why)."""


class Server:
    """One throwaway cluster under ``root`` (an emptyDir): data, socket and log."""

    def __init__(self, root: str, bin_dir: str) -> None:
        self.root = root
        self.bin = bin_dir
        self.data = os.path.join(root, "data")
        self.sock = os.path.join(root, "sock")
        self.log = os.path.join(root, "server.log")
        self.started = False

    def _run(self, argv: list[str], what: str) -> str:
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise ServerError(f"{what}: {(p.stderr or p.stdout).strip()[-400:]}{self._log()}")
        return p.stdout

    def _log(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                tail = f.read()[-300:].strip()
        except OSError:
            return ""
        return " | server log: " + tail if tail else ""

    def start(self) -> float:
        """initdb and start; returns the seconds it took."""
        t0 = time.monotonic()
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.sock, mode=0o700)
        self._run(
            [
                os.path.join(self.bin, "initdb"),
                "-D",
                self.data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        opts = " ".join(f"-c {s}" for s in SETTINGS) + f" -k {self.sock} -p {PORT}"
        # listen_addresses= is empty: the shell pg_ctl starts the server with sees no value.
        self._run(
            [
                os.path.join(self.bin, "pg_ctl"),
                "-D",
                self.data,
                "-l",
                self.log,
                "-o",
                opts,
                "-w",
                "-t",
                "120",
                "start",
            ],
            "starting the throwaway server",
        )
        self.started = True
        return time.monotonic() - t0

    def env(self) -> dict[str, str]:
        """libpq settings that reach this server (and nothing else) as its superuser."""
        return {
            "PGHOST": self.sock,
            "PGPORT": PORT,
            "PGUSER": SUPERUSER,
            "PGSSLMODE": "disable",
            "PGAPPNAME": "stronghold-restore-test",
        }

    def version(self) -> str:
        p = subprocess.run(
            [os.path.join(self.bin, "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
        return p.stdout.strip()

    def stop(self) -> None:
        """Stop at once (nothing to keep) and delete every file."""
        if self.started:
            subprocess.run(
                [
                    os.path.join(self.bin, "pg_ctl"),
                    "-D",
                    self.data,
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                check=False,
            )
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)


def quoted_identifier(text: str, i: int) -> tuple[str, int] | None:
    """The SQL identifier quoted at ``text[i]`` (a ``"``), its doubled quotes undone, and the
    index after its closing quote; None when it never closes."""
    j, name = i + 1, ""
    while True:
        k = text.find('"', j)
        if k < 0:
            return None
        if text.startswith('"', k + 1):
            name, j = name + text[j : k + 1], k + 2
            continue
        return name + text[j:k], k + 1


def _split_roles(text: str) -> list[str]:
    """``a, "B c", PUBLIC`` -> role names (quotes removed, doubled quotes undone)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        while i < len(text) and text[i] in " ,":
            i += 1
        if i >= len(text):
            break
        if text[i] == '"':
            quoted = quoted_identifier(text, i)
            if quoted is None:
                return out
            name, i = quoted
            out.append(name)
        else:
            m = re.match(r"[^\s,;]+", text[i:])
            if not m:
                break
            word = m.group(0)
            i += m.end()
            if word.upper() in ("WITH", "GRANTED", "CASCADE", "RESTRICT"):
                break
            out.append(word.lower())
    return out


def roles_in(lines: list[str]) -> list[str]:
    """Roles an SQL dump's OWNER TO / GRANT / REVOKE / DEFAULT PRIVILEGES lines name."""
    found: set[str] = set()
    for line in lines:
        line = line.rstrip("\n").rstrip(";")  # noqa: PLW2901
        m = re.search(r" OWNER TO (.+)$", line)
        if m:
            found.update(_split_roles(m.group(1)))
        m = re.search(r"^ALTER DEFAULT PRIVILEGES FOR ROLE ((?:\"[^\"]*\"|[^\s\"])+)", line)
        if m:
            found.update(_split_roles(m.group(1)))
        if re.search(r"(^| )GRANT ", line) and " TO " in line:
            found.update(_split_roles(line.rsplit(" TO ", 1)[1]))
        if re.search(r"(^| )REVOKE ", line) and " FROM " in line:
            found.update(_split_roles(line.rsplit(" FROM ", 1)[1]))
    return sorted(r for r in found if r.lower() not in _NOT_ROLES and not r.startswith("pg_"))


def dump_sql_lines(path: str) -> list[str]:
    """The dump's lines that can name a role (OWNER TO, GRANT, REVOKE): one streamed pass.

    A plain archive is decompressed through grep; a custom one's schema is printed by
    ``pg_restore --schema-only`` (no data is read). A row of data that merely looks like such
    a line only creates an unused role in the throwaway server.
    """
    pattern = r"OWNER TO |^GRANT |^REVOKE |^ALTER DEFAULT PRIVILEGES "
    if path.endswith(".dump"):
        source = ["pg_restore", "--schema-only", "-f", "-", path]
    else:
        source = ["pigz" if shutil.which("pigz") else "gzip", "-dc", path]
    src = subprocess.Popen(source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    grep = subprocess.run(
        ["grep", "-aE", pattern], stdin=src.stdout, capture_output=True, check=False
    )
    if src.stdout is not None:
        src.stdout.close()
    err = src.stderr.read().decode(errors="replace") if src.stderr is not None else ""
    if src.wait() != 0:
        raise ServerError(f"reading the archive's roles: {err.strip()[-300:]}")
    if grep.returncode not in (0, 1):  # 1: no line matched
        raise ServerError("reading the archive's roles: grep failed")
    return grep.stdout.decode("utf-8", "replace").splitlines()


def create_roles(names: list[str], env: dict[str, Any]) -> list[str]:
    """Create the roles the dump names (NOLOGIN) in the throwaway server; returns them."""
    if not names:
        return []
    quoted = ", ".join("'" + n.replace("'", "''") + "'" for n in names)
    stmt = (
        "SELECT format('CREATE ROLE %I NOLOGIN', n) FROM unnest(ARRAY["
        + quoted
        + "]::text[]) AS n WHERE n NOT IN (SELECT rolname FROM pg_roles) \\gexec"
    )
    p = subprocess.run(
        ["psql", "-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", "postgres"],
        input=stmt,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if p.returncode != 0:
        raise ServerError("creating the dump's roles: " + p.stderr.strip()[-300:])
    return names
