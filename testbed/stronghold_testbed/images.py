"""Workload images built locally (there is no registry): pause, busybox, a Debian base.

Each image's root filesystem is cached as a tarball under the cache directory, so a fresh
dockerd gets them back with ``docker import`` in seconds.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from stronghold_testbed import paths, procs
from stronghold_testbed.procs import TestbedError

PAUSE = "stronghold/pause:3.2"
BUSYBOX = "stronghold/busybox:1"
BASE = "stronghold/base:bookworm"

# The base image serves backup/restore Jobs (postgresql-client 15) and the demo web app
# (python3). It runs as an unprivileged user by default (restricted Pod Security profile).
# pigz: the backup Job compresses with all cores in the same gzip format (gzip otherwise).
# postgresql-15 (the server): the restore test starts a throwaway server inside its own Job.
BASE_PACKAGES = (
    "python3,python3-venv,postgresql-client,ca-certificates,gzip,pigz,zstd,bash,coreutils,"
    "postgresql-15"
)
UNPRIVILEGED_UID = 999
# Debian's security suite on top of the release: the restore test's throwaway server must be
# as new as the production server (a 15.20 server's dump does not load into 15.18), and a
# PostgreSQL image without security updates is no image to recommend.
BASE_UPDATES = "bookworm-security"


def images_dir() -> Path:
    return paths.cache_dir() / "images"


def recipe_id(tag: str) -> str:
    """Changes when what goes into an image changes, so a stale image or tarball is rebuilt."""
    name, _, changes = _RECIPES[tag]
    content = f"{BASE_PACKAGES} {BASE_UPDATES}" if tag == BASE else ""
    return hashlib.sha256(repr((name, changes, content)).encode()).hexdigest()[:12]


def exists(tag: str) -> bool:
    """The image is in Docker and was built from the current recipe."""
    proc = subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            "--format",
            '{{index .Config.Labels "stronghold.recipe"}}',
            tag,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0 and proc.stdout.strip() == recipe_id(tag)


def _import(tar: Path, tag: str, changes: list[str]) -> None:
    argv = ["docker", "import", "--change", f"LABEL stronghold.recipe={recipe_id(tag)}"]
    for c in changes:
        argv += ["--change", c]
    procs.run([*argv, str(tar), tag])


def _tar_dir(root: Path, out: Path) -> None:
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tf:
        for child in sorted(root.iterdir()):
            tf.add(child, arcname=child.name)
    tmp.rename(out)  # a partial tarball never carries the final name


def _kubernetes_tree() -> Path:
    src = paths.cache_dir() / "src"
    trees = sorted(src.glob("kubernetes-1.20.*/"))
    if not trees:
        raise TestbedError(f"no Kubernetes source under {src}: build the binaries first")
    return trees[0]


def _build_pause(tar: Path) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        source = _kubernetes_tree() / "build/pause/linux/pause.c"
        procs.run(["gcc", "-Os", "-static", "-o", str(root / "pause"), str(source)])
        procs.run(["strip", str(root / "pause")])
        _tar_dir(root, tar)


def _build_busybox(tar: Path) -> None:
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise TestbedError("/bin/busybox missing (Debian package busybox-static)")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin/busybox")
        for applet in procs.run([str(busybox), "--list"]).split():
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        (root / "etc").mkdir()
        (root / "etc/passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        )
        (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (root / "tmp").mkdir(mode=0o1777)
        (root / "tmp").chmod(0o1777)
        _tar_dir(root, tar)


def _build_base(tar: Path) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "rootfs"
        procs.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(root),
                "http://deb.debian.org/debian",
            ]
        )
        _upgrade(root)
        with (root / "etc/passwd").open("a") as f:
            f.write(f"stronghold:x:{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}::/tmp:/bin/bash\n")
        with (root / "etc/group").open("a") as f:
            f.write(f"stronghold:x:{UNPRIVILEGED_UID}:\n")
        # Trust what the host trusts (the machine may add its own CA to the bundle).
        host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if host_bundle.exists():
            shutil.copy2(host_bundle, root / "etc/ssl/certs/ca-certificates.crt")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
        procs.run(["tar", "-C", str(root), "-cf", str(tar.with_suffix(".tmp")), "."])
        tar.with_suffix(".tmp").rename(tar)


def _upgrade(root: Path) -> None:
    """Apply the updates of :data:`BASE_UPDATES` inside the new root (chroot apt-get)."""
    (root / "etc/apt/sources.list.d/updates.list").write_text(
        f"deb http://deb.debian.org/debian-security {BASE_UPDATES} main\n"
    )
    env = ["env", "DEBIAN_FRONTEND=noninteractive", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    procs.run(["chroot", str(root), *env, "apt-get", "update", "-q"])
    procs.run(["chroot", str(root), *env, "apt-get", "upgrade", "-y", "-q"])
    procs.run(["chroot", str(root), *env, "apt-get", "clean"])


_RECIPES: dict[str, tuple[str, Callable[[Path], None], list[str]]] = {
    PAUSE: ("pause.tar", _build_pause, ['ENTRYPOINT ["/pause"]']),
    BUSYBOX: ("busybox.tar", _build_busybox, ['CMD ["sh"]', "ENV PATH=/bin"]),
    BASE: (
        "base-bookworm.tar",
        _build_base,
        [
            'CMD ["bash"]',
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"USER {UNPRIVILEGED_UID}",
        ],
    ),
}


def ensure(tags: list[str] | None = None) -> dict[str, str]:
    """Make each image present in Docker: 'present', 'imported' (from cache) or 'built'."""
    out: dict[str, str] = {}
    images_dir().mkdir(parents=True, exist_ok=True)
    for tag in tags or list(_RECIPES):
        name, build, changes = _RECIPES[tag]
        if exists(tag):
            out[tag] = "present"
            continue
        tar = images_dir() / f"{Path(name).stem}-{recipe_id(tag)}.tar"
        state = "imported"
        if not tar.exists():
            build(tar)
            state = "built"
        _import(tar, tag, changes)
        out[tag] = state
    return out
