"""Real testbed steps print their progress: step N/M lines, timestamped without a terminal, a
live status line and a check mark on one (the long-step cadence is tested at unit level in
tests/unit/test_testbed_progress.py). Both commands only reuse what already runs."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
STEPS = {"services up": 7, "cluster up": 7}


@pytest.mark.parametrize("command", list(STEPS))
def test_a_real_step_prints_progress_with_and_without_a_terminal(
    command: str, testbed: Path
) -> None:
    argv = ["stronghold-testbed", *command.split()]
    plain = subprocess.run(argv, env=ENV, capture_output=True, text=True, check=False)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    n = STEPS[command]
    for i in range(1, n + 1):
        assert re.search(rf"^\d\d:\d\d:\d\d \[{i}/{n}\] .*: done in \d+\.\ds$", plain.stdout, re.M)
    assert "\x1b[" not in plain.stdout

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, env=ENV, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait() == 0
    text = out.decode(errors="replace")
    assert f"✓ [{n}/{n}]" in text and "\x1b[" in text
