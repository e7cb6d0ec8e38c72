"""Where the testbed keeps its cache (binaries, images, PKI) and its run state (pids, logs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$STRONGHOLD_CACHE`` or ``$XDG_CACHE_HOME/stronghold`` (default ~/.cache/stronghold)."""
    explicit = os.environ.get("STRONGHOLD_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stronghold"


def bin_dir() -> Path:
    return cache_dir() / "bin"


def pki_dir() -> Path:
    return cache_dir() / "pki"


def run_dir() -> Path:
    """Per-cluster state: pid files, logs, etcd data, kubelet root. ``down`` clears it."""
    return cache_dir() / "run"


def pid_dir() -> Path:
    return run_dir() / "pids"


def log_dir() -> Path:
    return run_dir() / "logs"


def admin_kubeconfig() -> Path:
    return cache_dir() / "admin.kubeconfig"


SCRIPTS = Path(__file__).parent / "scripts"
