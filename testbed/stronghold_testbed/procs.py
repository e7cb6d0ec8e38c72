"""Start daemons we own, remember them by pid file, stop only those."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stronghold_testbed import paths


class TestbedError(RuntimeError):
    """Something the testbed needs could not be set up; the message says what and why."""


def _pidfile(name: str) -> Path:
    return paths.pid_dir() / f"{name}.pid"


def owned_pid(name: str) -> int | None:
    """The pid of a daemon we started, if it is still that process."""
    f = _pidfile(name)
    try:
        pid_text, _, exe = f.read_text().partition("\n")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return None
    # Guard against pid reuse: the process must still be the binary we started.
    if exe.strip() and os.path.basename(cmdline) != os.path.basename(exe.strip()):
        return None
    return pid


def start(
    name: str, argv: Sequence[str], env: dict[str, str] | None = None, runs_as: str | None = None
) -> int:
    """Start ``argv`` detached, logging to run/logs/<name>.log; record its pid.

    ``runs_as``: the program the process becomes when ``argv[0]`` is a launcher that execs
    it (``ip netns exec ... socat``), so the pid-reuse guard checks the right name."""
    paths.pid_dir().mkdir(parents=True, exist_ok=True)
    paths.log_dir().mkdir(parents=True, exist_ok=True)
    log = open(paths.log_dir() / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=full_env,
    )
    log.close()
    _pidfile(name).write_text(f"{proc.pid}\n{runs_as or argv[0]}\n")
    return proc.pid


def adopt(name: str, pid: int, exe: str) -> None:
    """Record a daemon we started through a launcher that forked it (e.g. pg_ctl)."""
    paths.pid_dir().mkdir(parents=True, exist_ok=True)
    _pidfile(name).write_text(f"{pid}\n{exe}\n")


def stop(name: str, timeout: float = 20.0) -> bool:
    """SIGTERM (then SIGKILL) a daemon we started. Returns whether one was running."""
    pid = owned_pid(name)
    _pidfile(name).unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: str | None = None) -> None:
    """Poll ``check`` until true; on timeout fail loudly with the tail of the daemon's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    tail = ""
    if log:
        f = paths.log_dir() / f"{log}.log"
        with contextlib.suppress(OSError):
            tail = "\n".join(f.read_text(errors="replace").splitlines()[-25:])
    raise TestbedError(
        f"{what} not ready after {timeout:.0f}s" + (f"; log tail:\n{tail}" if tail else "")
    )


def run(argv: Sequence[str], *, input: bytes | None = None, check: bool = True) -> str:
    """Run a command to completion; on failure raise with its output."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, check=False)
    if check and proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace")[-2000:]
        raise TestbedError(f"{' '.join(argv[:3])} failed (exit {proc.returncode}):\n{out}")
    return proc.stdout.decode(errors="replace")
