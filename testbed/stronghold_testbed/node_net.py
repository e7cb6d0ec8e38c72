"""The node's address: a network namespace of the testbed's own, so the apiserver can reach
the kubelet (``kubectl logs``, ``exec``, ``port-forward``) without anything listening off
loopback in the host's namespace.

A kubelet refuses a loopback node address, and the host has no other address the testbed may
use. So the testbed makes a namespace ``stronghold-node`` joined to the host by a veth pair,
and the node's address lives inside it. The kubelet itself stays in the host namespace (it
must share it with the host-network pods whose probes it runs on 127.0.0.1); a relay in the
namespace carries connections to the node address's kubelet port to the kubelet on
127.0.0.1, through a Unix socket, which crosses namespaces as a file.
"""

from __future__ import annotations

import subprocess

from stronghold_testbed import paths, procs

NETNS = "stronghold-node"
HOST_IF = "sh-node0"  # the host's end of the veth pair
NODE_IF = "eth0"  # the namespace's end
HOST_ADDR = "10.203.0.1"
NODE_ADDR = "10.203.0.2"  # the node's InternalIP (and its name: see cluster._start_kubelet)
PREFIX = 30  # two addresses: the pair and nothing else
KUBELET_PORT = 10250
RELAYS = ("kubelet-relay-host", "kubelet-relay-node")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(["ip", *args], capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise procs.TestbedError(
            f"ip {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


def _ns(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return _ip("netns", "exec", NETNS, "ip", *args, check=check)


def exists() -> bool:
    out = _ip("netns", "list", check=False).stdout.decode()
    return any(line.split()[0] == NETNS for line in out.splitlines() if line.strip())


def ready() -> bool:
    """The namespace exists and the node address answers from the host's side."""
    if not exists():
        return False
    addrs = _ns("-o", "-4", "addr", "show", "dev", NODE_IF, check=False).stdout.decode()
    return f"{NODE_ADDR}/{PREFIX}" in addrs


def ensure() -> None:
    """Create the namespace and veth pair unless they are there (idempotent)."""
    if ready():
        return
    remove()  # a half-made one from an interrupted run
    _ip("netns", "add", NETNS)
    _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NODE_IF, "netns", NETNS)
    _ip("addr", "add", f"{HOST_ADDR}/{PREFIX}", "dev", HOST_IF)
    _ip("link", "set", HOST_IF, "up")
    _ns("addr", "add", f"{NODE_ADDR}/{PREFIX}", "dev", NODE_IF)
    _ns("link", "set", NODE_IF, "up")
    _ns("link", "set", "lo", "up")


def remove() -> None:
    """Delete the namespace (its end of the pair goes with it, and so does ours)."""
    if exists():
        _ip("netns", "del", NETNS, check=False)
    _ip("link", "del", HOST_IF, check=False)


def _relay_socket() -> str:
    return str(paths.run_dir() / "kubelet-relay.sock")


def start_relay() -> list[str]:
    """The kubelet port on the node address, relayed to the kubelet on 127.0.0.1."""
    started: list[str] = []
    sock = _relay_socket()
    if procs.owned_pid("kubelet-relay-host") is None:
        procs.start(
            "kubelet-relay-host",
            [
                "socat",
                f"UNIX-LISTEN:{sock},fork,unlink-early,mode=600",
                f"TCP:127.0.0.1:{KUBELET_PORT}",
            ],
        )
        started.append("kubelet-relay-host")
    if procs.owned_pid("kubelet-relay-node") is None:
        procs.start(
            "kubelet-relay-node",
            [
                "ip",
                "netns",
                "exec",
                NETNS,
                "socat",
                f"TCP-LISTEN:{KUBELET_PORT},bind={NODE_ADDR},fork,reuseaddr",
                f"UNIX-CONNECT:{sock}",
            ],
            runs_as="socat",
        )
        started.append("kubelet-relay-node")
    procs.wait_for(
        "kubelet relay on the node address",
        lambda: procs.port_open(KUBELET_PORT, host=NODE_ADDR),
        15,
        log="kubelet-relay-node",
    )
    return started


def stop_relay() -> list[str]:
    return [name for name in RELAYS if procs.stop(name)]
