"""Measuring processes: CPU seconds and RSS from /proc, tables with rich; what every benchmark
needs before it starts (the command line, the cluster, the operator's kubeconfig)."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (``VmHWM``: its peak since the process started)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children_cpu_seconds() -> float:
    """CPU of every waited-for child process of this one (for shell loops and their curls)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Window:
    """CPU used by a process over a measurement window."""

    pid: int
    start_cpu: float = 0.0
    start_wall: float = 0.0

    def __enter__(self) -> Window:
        self.start_cpu = cpu_seconds(self.pid)
        self.start_wall = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.cpu = cpu_seconds(self.pid) - self.start_cpu
        self.wall = time.monotonic() - self.start_wall

    cpu: float = 0.0
    wall: float = 0.0


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r))
    Console(width=160).print(t)


def start(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    proc = subprocess.Popen(
        list(argv), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    out.close()
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def refuse_incluster_operator(would: str) -> None:
    """Exit if an in-cluster operator runs: ``would`` says what it would do to the run."""
    from tests.integration import kit

    existing = kit.kubectl(
        "get", "deployment", "stronghold-operator", "-n", kit.OPERATOR_NS, check=False
    )
    if existing.startswith("NAME"):
        raise SystemExit(
            f"an in-cluster operator runs (deployment stronghold-operator in {kit.OPERATOR_NS}); "
            f"it would {would} — remove it before benchmarking"
        )


def check_cluster(would: str) -> None:
    """Exit unless the local cluster is up and no in-cluster operator would ``would``."""
    from stronghold_testbed import cluster

    if not cluster.is_up():
        raise SystemExit("the local cluster is not up: run `stronghold-testbed cluster up` first")
    refuse_incluster_operator(would)


def operator_kubeconfig(workdir: Path) -> Path:
    """CRDs, the operator's namespace, ServiceAccount and RBAC (as tests/integration do)."""
    from tests.integration import kit

    kit.apply_crds()
    return kit.operator_kubeconfig(workdir / "operator.kubeconfig")


def parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.<prog>``, with the options all share."""
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{prog}", description=description)
    ap.add_argument("--keep", action="store_true", help="keep the namespaces (for inspection)")
    return ap
