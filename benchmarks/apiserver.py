"""The API server's ceiling for status writes on this machine (issue 26).

Run: ``.venv/bin/python -m benchmarks.apiserver [--policies 500] [--writes 1000]
[--concurrency 1,10,50,200]``

How many HealthPolicy status PATCHes a second the local API server answers, and what each
costs it and etcd, with nothing else asking: the ceiling the operator's write budget
(runtime/budget.py) and the storm scenario's "every policy shows the outage within two
intervals" run against. A real status first: one operator runs N policies (the health
benchmark's four checks, pointed where nothing answers the web check and neither the
database role nor the queue exists, so the status is a degraded one with its measurements
and an Incident: the size of a storm's write) until every status is written; the operator
stops. Then, per concurrency C, ``--writes`` merge patches of those statuses (each changes
``lastProbeTime`` and the Ready condition's message, so the API server stores a new
version) are sent by C tasks through the operator's own client
(``platforms.kube.patch_status``), with no client-side budget. Reported per C: PATCHes a
second, answer time p50/p99, CPU seconds of kube-apiserver and etcd per PATCH (/proc), the
object's size, and 429s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.integration import kit

from benchmarks import common
from benchmarks.common import cpu_seconds, table
from benchmarks.health import Targets, create_policies, machine_busy, remove, start_operator
from stronghold_operator.platforms.kube import API_CONNECTIONS, ApiError, Kube, patch_status
from stronghold_testbed import paths

PLURAL = "healthpolicies"


def pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], check=False, capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def control_plane_cpu(names: Sequence[str]) -> dict[str, float]:
    return {n: sum(cpu_seconds(p) for p in pids(n)) for n in names}


def real_statuses(ns: str, n: int, sa: Path, workdir: Path) -> dict[str, dict[str, Any]]:
    """Every policy's status as one operator writes it (then the operator stops)."""
    op = start_operator(sa, ns, workdir / "operator.log", {})
    try:

        def written() -> dict[str, dict[str, Any]] | None:
            items = kit.kubectl_json("get", PLURAL, "-n", ns).get("items", [])
            got = {
                i["metadata"]["name"]: i["status"]
                for i in items
                if (i.get("status") or {}).get("lastProbeTime")
            }
            return got if len(got) >= n else None

        return kit.wait_until(f"{n} statuses written", written, timeout=600, interval=5)
    finally:
        common.stop(op.proc)


def varied(status: dict[str, Any], i: int) -> dict[str, Any]:
    """The status with what a new round changes: its time and the Ready message."""
    out = json.loads(json.dumps(status))
    out["lastProbeTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for c in out.get("conditions", []):
        if c.get("type") == "Ready":
            c["message"] = f"{c.get('message', '')[:200]} (write {i})"
    return out


async def burst(
    ns: str, statuses: dict[str, dict[str, Any]], writes: int, concurrency: int, capped: bool
) -> tuple[float, list[float], int]:
    """``writes`` patches by ``concurrency`` tasks: (seconds, answer times, 429s); ``capped``:
    through the client's own connection cap (``API_CONNECTIONS``), else as many as tasks."""
    kube = Kube.connect()
    if not capped:
        kube._limit = asyncio.Semaphore(concurrency)
    names = sorted(statuses)
    latencies: list[float] = []
    refused = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(writes):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal refused
        while not queue.empty():
            i = queue.get_nowait()
            name = names[i % len(names)]
            t0 = time.perf_counter()
            try:
                await patch_status(kube, PLURAL, ns, name, varied(statuses[name], i))
            except ApiError as exc:
                if exc.status == 429:
                    refused += 1
                else:
                    raise
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await kube.aclose()
    return time.perf_counter() - start, latencies, refused


def main(argv: Sequence[str] | None = None) -> None:
    ap = common.parser("apiserver", __doc__)
    ap.add_argument("--policies", type=int, default=500, help="objects patched (round robin)")
    ap.add_argument("--writes", type=int, default=1000, help="patches per concurrency")
    ap.add_argument("--concurrency", default="1,10,50,200", help="comma-separated C values")
    args = ap.parse_args(argv)
    common.check_cluster("write these statuses too")
    os.environ["KUBECONFIG"] = str(paths.admin_kubeconfig())
    workdir = Path(tempfile.mkdtemp(prefix="stronghold-bench-apiserver-"))
    sa = common.operator_kubeconfig(workdir)
    t = Targets(uuid.uuid4().hex[:8], app_url=f"http://127.0.0.1:{kit.free_port()}")
    ns = f"bench-apiserver-{t.tag}"
    kit.kubectl("create", "namespace", ns)
    rows: list[list[object]] = []
    try:
        create_policies(ns, args.policies, t, http_only=False)
        print(f"[{time.strftime('%H:%M:%S')}] {args.policies} policies; real statuses", flush=True)
        statuses = real_statuses(ns, args.policies, sa, workdir)
        some = kit.kubectl_json("get", PLURAL, sorted(statuses)[0], "-n", ns)
        size = len(json.dumps(some))
        os.environ["KUBECONFIG"] = str(sa)  # the operator's identity, as the operator writes
        control = ("kube-apiserver", "etcd")
        values = [int(x) for x in args.concurrency.split(",") if x]
        for c, capped in [(c, False) for c in values] + [(max(values), True)]:
            label = f"{c} (client cap {API_CONNECTIONS})" if capped else str(c)
            print(f"[{time.strftime('%H:%M:%S')}] concurrency {label}", flush=True)
            busy0, cpu0 = machine_busy(), control_plane_cpu(control)
            secs, lat, refused = asyncio.run(burst(ns, statuses, args.writes, c, capped))
            busy1, cpu1 = machine_busy(), control_plane_cpu(control)
            lat.sort()
            rows.append(
                [
                    label,
                    args.writes,
                    f"{args.writes / secs:.1f}",
                    f"{1000 * statistics.median(lat):.0f} ms",
                    f"{1000 * lat[int(0.99 * (len(lat) - 1))]:.0f} ms",
                    f"{1000 * (cpu1['kube-apiserver'] - cpu0['kube-apiserver']) / args.writes:.1f}",
                    f"{1000 * (cpu1['etcd'] - cpu0['etcd']) / args.writes:.1f}",
                    f"{100 * (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]):.0f} %",
                    refused,
                ]
            )
    finally:
        os.environ["KUBECONFIG"] = str(paths.admin_kubeconfig())
        if not args.keep:
            remove(ns)
    table(
        f"HealthPolicy status PATCHes at the API server ({args.policies} objects of"
        f" {size / 1024:.1f} KiB, no client-side budget)",
        [
            "concurrency",
            "writes",
            "PATCH/s",
            "answer p50 (cap wait incl.)",
            "answer p99",
            "apiserver CPU ms/PATCH",
            "etcd CPU ms/PATCH",
            "machine busy",
            "429s",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
