"""kubectl as the testbed's cluster admin: the one wrapper the demo and the tests share."""

from __future__ import annotations

import subprocess

from stronghold_testbed import paths


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); stderr without kubectl's version-skew warnings."""
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={paths.admin_kubeconfig()}", *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
    )
    # kubectl 1.32 against a 1.20 apiserver warns about version skew on every call.
    err = "\n".join(x for x in proc.stderr.splitlines() if "version difference" not in x)
    return proc.returncode, proc.stdout, err
