"""Build the operator image offline: wheels on the host, base image from Debian packages.

Inside containers TLS to the package index fails here (the machine trusts an extra CA the
image lacks), so the image build installs only from a wheelhouse built on the host
(``pip install --no-index``) and needs no network at all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from stronghold_operator.testbed import images, procs
from stronghold_operator.testbed.procs import TestbedError

TAG = "stronghold/operator:0.1.0"
REPO = Path(__file__).resolve().parents[3]


def wheelhouse(repo: Path = REPO) -> Path:
    """Wheels of the project and its pinned dependencies in build/wheels."""
    out = repo / "build" / "wheels"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(out)]
    procs.run([*pip, "--no-deps", str(repo)])
    procs.run([*pip, "-r", str(repo / "requirements.lock")])
    return out


def build(tag: str = TAG, repo: Path = REPO) -> str:
    """docker build with BASE_IMAGE=stronghold/base:bookworm; returns the image id."""
    images.ensure([images.BASE])
    wheelhouse(repo)
    # The classic builder is in every Docker Engine; BuildKit may be missing offline.
    proc = subprocess.run(
        [
            "docker",
            "build",
            "--network=host",
            "--build-arg",
            f"BASE_IMAGE={images.BASE}",
            "-t",
            tag,
            str(repo),
        ],
        capture_output=True,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=False,
    )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
        raise TestbedError(f"docker build of {tag} failed:\n{out}")
    return procs.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag]).strip()


if __name__ == "__main__":
    print(build())  # noqa: T201
