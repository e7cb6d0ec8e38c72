"""Docker Engine for the kubelet: reuse a running one, or start dockerd on loopback only."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from stronghold_testbed import paths, procs
from stronghold_testbed.procs import TestbedError

SOCKET = "/var/run/docker.sock"
RUNTIME = "stronghold-runc"

# This machine forbids lowering oom_score_adj, and kubelet asks for -998 on pod sandboxes,
# so runc fails ("can't get final child's PID from pipe"). The wrapper clamps a negative
# process.oomScoreAdj in the bundle's config.json to 0, then execs runc.
_WRAPPER = """#!/bin/sh
# Written by stronghold's testbed. See docker_engine.py for why.
bundle=""
prev=""
cmd=""
for a in "$@"; do
  case "$prev" in --bundle|-b) bundle="$a" ;; esac
  case "$a" in
    --bundle=*) bundle="${a#--bundle=}" ;;
    create|run) [ -z "$cmd" ] && cmd="$a" ;;
  esac
  prev="$a"
done
if [ -n "$cmd" ]; then
  [ -z "$bundle" ] && bundle="$PWD"
  if [ -f "$bundle/config.json" ]; then
    sed -i -E 's/"oomScoreAdj":-[0-9]+/"oomScoreAdj":0/' "$bundle/config.json"
  fi
fi
exec RUNC "$@"
"""


def _ping() -> bool:
    if not os.path.exists(SOCKET):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(SOCKET)
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"200 OK" in s.recv(256)
    except OSError:
        return False


def _info() -> dict[str, object]:
    out = procs.run(["docker", "-H", f"unix://{SOCKET}", "info", "--format", "{{json .}}"])
    data = json.loads(out)
    if not isinstance(data, dict):
        raise TestbedError("docker info returned no object")
    return data


def wrapper_path() -> Path:
    return paths.bin_dir() / RUNTIME


def _write_wrapper() -> Path:
    runc = shutil.which("runc") or "/usr/sbin/runc"
    path = wrapper_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _WRAPPER.replace("RUNC", runc)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
        path.chmod(0o755)
    return path


def ensure() -> str:
    """Make sure a usable dockerd answers on the default socket. Returns 'reused' or 'started'."""
    if _ping():
        runtimes = _info().get("Runtimes")
        if isinstance(runtimes, dict) and RUNTIME in runtimes:
            return "running (started by stronghold)" if owned() else "reused"
        raise TestbedError(
            f"a dockerd not started by stronghold runs on {SOCKET} without the {RUNTIME!r} "
            "runtime that pods need on this machine; stop it or start it with "
            f"--add-runtime {RUNTIME}={wrapper_path()} --default-runtime={RUNTIME}"
        )
    if shutil.which("dockerd") is None:
        raise TestbedError("dockerd is not installed (Debian package docker.io)")
    wrapper = _write_wrapper()
    procs.start(
        "dockerd",
        [
            shutil.which("dockerd") or "dockerd",
            "-H",
            f"unix://{SOCKET}",
            # Loopback only: no bridge, no NAT rules; pods and containers use the host network.
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--add-runtime",
            f"{RUNTIME}={wrapper}",
            f"--default-runtime={RUNTIME}",
        ],
    )
    procs.wait_for("dockerd", _ping, timeout=60, log="dockerd")
    return "started"


def running() -> bool:
    return _ping()


def owned() -> bool:
    return procs.owned_pid("dockerd") is not None
