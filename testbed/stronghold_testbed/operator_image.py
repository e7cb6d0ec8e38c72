"""Build the operator image (and the demo's web app image) offline: wheels on the host, base
image from Debian packages.

Inside containers TLS to the package index fails here (the machine trusts an extra CA the
image lacks), so the image build installs only from a wheelhouse built on the host
(``pip install --no-index``) and needs no network at all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from stronghold_testbed import images, procs
from stronghold_testbed.procs import TestbedError

TAG = "stronghold/operator:0.1.0"
WEBAPP_TAG = "stronghold/webapp:0.1.0"
REPO = Path(__file__).resolve().parents[2]


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
    return _docker_build(tag, repo)


def build_webapp(tag: str = WEBAPP_TAG, repo: Path = REPO) -> str:
    """The demo web app's image (webapp.Dockerfile) from its own wheelhouse; returns the id."""
    images.ensure([images.BASE])
    context = repo / "build" / "webapp"
    shutil.rmtree(context, ignore_errors=True)
    wheels = context / "wheels"
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels)]
    procs.run([*pip, "--no-deps", str(repo / "testbed")])
    lock = str(repo / "requirements.lock")
    procs.run([*pip, "-c", lock, "psycopg[binary]", "pika", "pymemcache>=4.0"])
    shutil.copy(Path(__file__).with_name("webapp.Dockerfile"), context / "Dockerfile")
    return _docker_build(tag, context)


def _docker_build(tag: str, context: Path) -> str:
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
            str(context),
        ],
        capture_output=True,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=False,
    )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
        raise TestbedError(f"docker build of {tag} failed:\n{out}")
    return procs.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag]).strip()
