"""Failover of two operator replicas with ``--leader-elect`` (docs/install.md, High availability).

Run: ``python -m benchmarks.failover [--rounds 5]``

Each round starts a follower beside the current leader, lets the leader go one of three ways,
and measures the seconds without a leader: from the signal until the follower's
``stronghold_leader`` gauge reads 1 (polled every 0.2 s).

- ``kill -9``: a crash or a lost node; the follower waits out the 15 s Lease on its own clock.
- ``freeze``: SIGSTOP (a stalled node); the same wait, and the woken leader must exit (code 1)
  without acting — counted in the "woken leader exited" column.
- ``stop``: SIGTERM (a rollout or a drain); the leader releases the Lease.

Duplicate side effects across a kill during a backup slot and an open incident (must be 0)
are asserted by ``tests/integration/test_failover.py`` on every CI run, not here.
"""

from __future__ import annotations

import functools
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.integration import kit

from benchmarks import common

LEASE_NS = "stronghold-system"
MODES = {"kill -9": signal.SIGKILL, "freeze": signal.SIGSTOP, "stop": signal.SIGTERM}


def leading(op: kit.OperatorProcess) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=2) as r:
            return b"\nstronghold_leader 1.0\n" in r.read()
    except OSError:
        return False


def wait(pred: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``pred()`` holds (polled every 0.2 s); raises after ``timeout``."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"no takeover within {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - t0


def main(argv: Sequence[str] | None = None) -> None:
    ap = common.parser("failover", __doc__)
    ap.add_argument("--rounds", type=int, default=5, help="rounds per way of losing the leader")
    args = ap.parse_args(argv)
    common.check_cluster("take the Lease's namespace's objects as its own")
    workdir = Path(tempfile.mkdtemp(prefix="stronghold-failover-"))
    sa = common.operator_kubeconfig(workdir)
    ns = f"bench-fo-{uuid.uuid4().hex[:6]}"
    lease = f"bench-{ns}"
    kit.kubectl("create", "namespace", ns)
    flags = [
        "--leader-elect",
        f"--leader-elect-namespace={LEASE_NS}",
        f"--leader-elect-lease={lease}",
    ]
    started: list[kit.OperatorProcess] = []

    def replica() -> kit.OperatorProcess:
        op = kit.start_operator(sa, [ns], workdir / f"op-{len(started)}.log", args=flags)
        started.append(op)
        return op

    gaps: dict[str, list[float]] = {m: [] for m in MODES}
    exited = 0
    try:
        leader = replica()
        wait(functools.partial(leading, leader), 30)
        for mode, sig in MODES.items():
            for _ in range(args.rounds):
                follower = replica()
                follower_ready = time.monotonic()
                while leading(follower) and time.monotonic() - follower_ready < 5:
                    time.sleep(0.2)
                leader.proc.send_signal(sig)
                gaps[mode].append(wait(functools.partial(leading, follower), 45))
                if sig == signal.SIGSTOP:
                    leader.proc.send_signal(signal.SIGCONT)
                    leader.proc.wait(timeout=30)
                    exited += leader.proc.returncode == 1
                elif sig == signal.SIGTERM:
                    leader.proc.wait(timeout=30)
                else:
                    leader.proc.wait(timeout=10)
                leader = follower
    finally:
        for op in started:
            op.kill(signal.SIGTERM)
        kit.kubectl("delete", "lease", lease, "-n", LEASE_NS, "--ignore-not-found", check=False)
        if not args.keep:
            kit.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    rows = [
        (
            mode,
            len(g),
            statistics.median(g),
            max(g),
            f"{exited}/{len(g)}" if MODES[mode] == signal.SIGSTOP else "-",
        )
        for mode, g in gaps.items()
    ]
    common.table(
        "seconds without a leader (Lease 15 s, renew deadline 10 s, retry 2 s)",
        ["leader lost by", "rounds", "p50 s", "max s", "woken leader exited"],
        rows,
    )


if __name__ == "__main__":
    main()
