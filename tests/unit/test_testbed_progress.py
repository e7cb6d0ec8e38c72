"""The testbed's progress lines: never silent for more than 10 s, on a terminal and in a log."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from stronghold_testbed import procs, progress

STAMP = re.compile(r"^\d\d:\d\d:\d\d \[\d+/\d+\] ")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STRONGHOLD_CACHE", str(tmp_path))
    return tmp_path


def test_plain_lines_are_timestamped_with_heartbeats_and_the_log_tail(tmp_path: Path) -> None:
    out = io.StringIO()
    p = progress.Progress("unit", 2, stream=out, tty=False, heartbeat=0.3)
    log = tmp_path / "build.log"
    with p.step("fake build", log=log):
        progress.run_logged(["sh", "-c", "echo compiling foo; sleep 1.2"], log)
    with p.step("quick"):
        pass
    lines = out.getvalue().splitlines()
    assert all(STAMP.match(x) for x in lines), lines
    assert lines[0].endswith("[1/2] fake build ...")
    beats = [x for x in lines if "[1/2] fake build: " in x and "done" not in x]
    assert len(beats) >= 2, lines
    assert any("compiling foo" in x for x in beats), beats
    assert re.search(r"\[1/2\] fake build: done in 1\.\ds$", lines[len(beats) + 1])
    assert lines[-1].endswith("[2/2] quick: done in 0.0s")


def test_a_failed_step_says_which_why_and_the_log(tmp_path: Path) -> None:
    out = io.StringIO()
    p = progress.Progress("unit", 3, stream=out, tty=False)
    log = tmp_path / "step.log"
    with pytest.raises(procs.TestbedError), p.step("compiling", log=log):
        progress.run_logged(["sh", "-c", "echo boom >&2; exit 3"], log, what="compile")
    last = out.getvalue().splitlines()[-1]
    assert "[1/3] compiling: FAILED after" in last
    assert "compile failed (exit 3" in last and f"(log: {log})" in last
    # Without a log of its own, a step points at the command's log, which has the traceback.
    with pytest.raises(ValueError), p.step("parsing"):
        raise ValueError("bad input")
    last = out.getvalue().splitlines()[-1]
    assert "[2/3] parsing: FAILED" in last and "bad input" in last and str(p.log) in last
    assert "Traceback" in p.log.read_text()


def test_the_log_tail_has_no_terminal_codes(tmp_path: Path) -> None:
    log = tmp_path / "docker.log"
    log.write_bytes(b"Step 1/9\n\x1b[0m\x1b[91mSuccessfully built\x1b[0m\r\n\n")
    assert progress.last_line(log) == "Successfully built"
    assert progress.last_line(tmp_path / "missing.log") == ""


def test_wait_until_names_what_did_not_settle() -> None:
    p = progress.Progress("unit", 1, stream=io.StringIO(), tty=False)
    with (
        pytest.raises(procs.TestbedError, match="the demo: not settled after 0s: HealthPolicy/x"),
        p.step("settle") as s,
    ):
        progress.wait_until(s, "the demo", lambda: "HealthPolicy/x", 0.2, every=0.05)


SLOW = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from stronghold_testbed import progress
    p = progress.Progress("slow", 1)
    log = Path(sys.argv[1])
    with p.step("a slow build", log=log):
        progress.run_logged(["sh", "-c", "echo [notice] step-one; sleep 11; echo step-two"], log)
    p.done()
    """
)


def _gaps(fd: int, proc: subprocess.Popen[bytes]) -> tuple[bytes, float]:
    """Read everything from ``fd`` until its end; the longest silence between reads."""
    data, last, gap = b"", time.monotonic(), 0.0
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                return data, gap
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the pty's other end closed
            chunk = b""
        if not chunk:
            return data, gap
        now = time.monotonic()
        gap, last, data = max(gap, now - last), now, data + chunk


def test_a_slow_step_is_never_silent_for_10s_with_and_without_a_terminal(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), COLUMNS="120")
    argv = [sys.executable, "-c", SLOW]
    master, slave = pty.openpty()
    on_tty = subprocess.Popen([*argv, str(tmp_path / "a.log")], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    plain = subprocess.Popen(
        [*argv, str(tmp_path / "b.log")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    assert plain.stdout is not None
    results: dict[str, tuple[bytes, float]] = {}
    reader = threading.Thread(
        target=lambda: results.update(plain=_gaps(plain.stdout.fileno(), plain))  # type: ignore[union-attr]
    )
    reader.start()
    tty_out, tty_gap = _gaps(master, on_tty)
    reader.join()
    os.close(master)
    plain_out, plain_gap = results["plain"]
    assert on_tty.wait() == 0 and plain.wait() == 0

    tty_text = tty_out.decode(errors="replace")
    assert tty_gap < 10, tty_gap
    # The status line, with the log's line as text (not parsed as rich markup).
    assert "[1/1] a slow build" in tty_text and "[notice] step-one" in tty_text
    assert "\x1b[" in tty_text  # redrawn in place
    assert "✓ [1/1] a slow build: done in 11." in tty_text

    lines = plain_out.decode().splitlines()
    assert plain_gap < 10, (plain_gap, lines)
    assert "\x1b[" not in plain_out.decode()
    assert all(re.match(r"^\d\d:\d\d:\d\d ", x) for x in lines), lines
    beat = re.compile(r"\[1/1\] a slow build: \d+s · \[notice\] step-one$")
    assert any(beat.search(x) for x in lines), lines
    assert re.search(r"\[1/1\] a slow build: done in 11\.\ds$", lines[-2])
    assert re.search(r"slow: 1 steps in 11\.\ds$", lines[-1])
