"""Progress of a testbed command: what runs now, for how long, step N of M; never silent.

On a terminal a rich status line (spinner, elapsed seconds, the last line of the step's log)
redraws every second; without one (CI logs) each step prints timestamped start and end lines
and a heartbeat line at least every ``heartbeat`` seconds (8 by default: a reader of the log
never waits more than 10 s for a sign of life). A failed step prints which step, why, and the
log file to read. Every long step of ``cluster up``, ``services up``, ``image`` and ``demo``
goes through :class:`Progress`; nothing else prints progress.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from stronghold_testbed import paths
from stronghold_testbed.procs import TestbedError

HEARTBEAT = 8.0
# Colours and cursor moves that build tools write to their logs.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def last_line(log: Path) -> str:
    """The last non-empty line of a log (its tail only: logs can be large)."""
    try:
        with log.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            text = _ANSI.sub("", f.read().decode(errors="replace"))
    except OSError:
        return ""
    lines = [x.strip() for x in text.replace("\r", "\n").splitlines()]
    text = next((x for x in reversed(lines) if x), "")
    return text if len(text) <= 100 else text[:97] + "..."


class Step:
    """One running step: its number, name, start, and what it waits for right now."""

    def __init__(self, number: int, total: int, name: str, log: Path | None) -> None:
        self.number, self.total, self.name, self.log = number, total, name, log
        self.started = time.monotonic()
        self.detail = ""

    def note(self, detail: str) -> None:
        """What the step is doing now (shown by the next redraw or heartbeat)."""
        self.detail = detail

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def label(self) -> str:
        return f"[{self.number}/{self.total}] {self.name}"

    def now(self) -> str:
        """The live part: elapsed time, the note, the log's last line."""
        parts = [f"{self.elapsed():.0f}s"]
        if self.detail:
            parts.append(self.detail)
        if self.log is not None:
            tail = last_line(self.log)
            if tail:
                parts.append(tail)
        return " · ".join(parts)


class Progress:
    """Steps of one command. ``with progress.step("building X", log=path) as s: ...``."""

    def __init__(
        self,
        command: str,
        total: int,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.command, self.total, self.heartbeat = command, total, heartbeat
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.console = Console(file=self.stream, force_terminal=self.tty, highlight=False)
        self.count = 0
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        # The command's own log: every line printed here, and a failed step's traceback.
        self.log = paths.log_dir() / f"{command.replace(' ', '-')}.log"

    def _record(self, text: str) -> None:
        try:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with self.log.open("a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")
        except OSError:
            pass  # the log is a convenience; never fail a step over it

    def line(self, text: str) -> None:
        """A plain line: timestamped without a terminal, as is on one."""
        with self._lock:
            self._record(text)
            if self.tty:
                self.console.print(text, markup=False)
            else:
                self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
                self.stream.flush()

    @contextmanager
    def step(self, name: str, *, log: Path | None = None) -> Iterator[Step]:
        self.count += 1
        s = Step(self.count, max(self.total, self.count), name, log)
        stop = threading.Event()
        if self.tty:
            ticker = self._tty_ticker(s, stop)
        else:
            self.line(f"{s.label()} ...")
            ticker = threading.Thread(target=self._heartbeats, args=(s, stop), daemon=True)
            ticker.start()
        try:
            yield s
        except BaseException as exc:
            stop.set()
            ticker.join()
            self._failed(s, exc)
            raise
        stop.set()
        ticker.join()
        mark = "✓ " if self.tty else ""
        self.line(f"{mark}{s.label()}: done in {s.elapsed():.1f}s")

    def _tty_ticker(self, s: Step, stop: threading.Event) -> threading.Thread:
        def run() -> None:
            # A log line is text, not rich markup ("[1/3]", "[notice]" would be parsed).
            with self.console.status(escape(f"{s.label()} · {s.now()}")) as status:
                while not stop.wait(1.0):
                    status.update(escape(f"{s.label()} · {s.now()}"))

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def _heartbeats(self, s: Step, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            self.line(f"{s.label()}: {s.now()}")

    def _failed(self, s: Step, exc: BaseException) -> None:
        self._record("".join(traceback.format_exception(exc)))
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = s.log if s.log is not None else self.log
        mark = "✗ " if self.tty else ""
        self.line(f"{mark}{s.label()}: FAILED after {s.elapsed():.1f}s: {why} (log: {where})")

    def done(self) -> None:
        self.line(f"{self.command}: {self.count} steps in {time.monotonic() - self.t0:.1f}s")


def run_logged(
    argv: Sequence[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    what: str = "",
    append: bool = False,
) -> None:
    """Run a long command with its output in ``log`` (the step's heartbeat shows its last
    line); on failure raise with the log's tail and path."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab" if append else "wb") as out:
        proc = subprocess.run(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        name = what or " ".join(argv[:2])
        raise TestbedError(f"{name} failed (exit {proc.returncode}; log: {log}):\n{tail}")


def wait_until(
    s: Step, what: str, check: Callable[[], str | None], timeout: float, every: float = 2.0
) -> None:
    """Poll ``check`` (None when settled, else what it still waits for, shown in the
    step's line) until settled; on timeout fail naming what did not settle."""
    deadline = time.monotonic() + timeout
    pending: str | None = "not checked yet"
    while time.monotonic() < deadline:
        pending = check()
        if pending is None:
            return
        s.note(f"waiting for {pending}")
        time.sleep(every)
    raise TestbedError(f"{what}: not settled after {timeout:.0f}s: {pending}")
