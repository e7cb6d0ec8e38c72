"""Build the operator image (and the demo's web app image) offline: wheels on the host, base
image from Debian packages.

Inside containers TLS to the package index fails here (the machine trusts an extra CA the
image lacks), so the image build installs only from a wheelhouse built on the host
(``pip install --no-index``) and needs no network at all.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from stronghold_testbed import images, paths, procs, progress

TAG = "stronghold/operator:0.1.0"
WEBAPP_TAG = "stronghold/webapp:0.1.0"
REPO = Path(__file__).resolve().parents[2]


def build_log(tag: str) -> Path:
    """Where the build of ``tag`` logs (pip wheel, then docker build); progress shows its tail."""
    return paths.log_dir() / f"build-{tag.split(':', maxsplit=1)[0].replace('/', '-')}.log"


def _pip_wheel(log: Path, wheels: Path, *args: str) -> None:
    pip = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(wheels)]
    progress.run_logged([*pip, *args], log, what="pip wheel", append=True)


def wheelhouse(repo: Path = REPO, log: Path | None = None) -> Path:
    """Wheels of the project and its pinned dependencies in build/wheels."""
    log = log or build_log(TAG)
    out = repo / "build" / "wheels"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _pip_wheel(log, out, "--no-deps", str(repo))
    _pip_wheel(log, out, "-r", str(repo / "requirements.lock"))
    return out


def build(tag: str = TAG, repo: Path = REPO) -> str:
    """docker build with BASE_IMAGE=stronghold/base:bookworm; returns the image id."""
    log = _fresh_log(tag)
    images.ensure([images.BASE])
    wheelhouse(repo, log)
    return _docker_build(tag, repo, log)


def build_webapp(tag: str = WEBAPP_TAG, repo: Path = REPO) -> str:
    """The demo web app's image (webapp.Dockerfile) from its own wheelhouse; returns the id."""
    log = _fresh_log(tag)
    images.ensure([images.BASE])
    context = repo / "build" / "webapp"
    shutil.rmtree(context, ignore_errors=True)
    wheels = context / "wheels"
    wheels.mkdir(parents=True)
    _pip_wheel(log, wheels, "--no-deps", str(repo / "testbed"))
    lock = str(repo / "requirements.lock")
    _pip_wheel(log, wheels, "-c", lock, "psycopg[binary]", "pika", "pymemcache>=4.0")
    shutil.copy(Path(__file__).with_name("webapp.Dockerfile"), context / "Dockerfile")
    return _docker_build(tag, context, log)


def _fresh_log(tag: str) -> Path:
    log = build_log(tag)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"building {tag}\n")
    return log


def _docker_build(tag: str, context: Path, log: Path) -> str:
    # The classic builder is in every Docker Engine; BuildKit may be missing offline.
    progress.run_logged(
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
        log,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        what=f"docker build of {tag}",
        append=True,
    )
    return procs.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag]).strip()
