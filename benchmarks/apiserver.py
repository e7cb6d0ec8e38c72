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
object's size, and 429s. One more row sends the same PATCHes at the operator's write slots
(``WRITES_IN_FLIGHT``) through a bare aiohttp session (no library: the cheapest client
Python has, so that row is the API server's own ceiling, not the client's).

Last, the operator as a reader: its CPU per watch event of a status change, with N
HTTP-only policies probing every 5 minutes (so it is at rest) and ``--writes`` PATCHes by
the bare client; kopf hands it every event of every HealthPolicy, its own writes' echoes
included, which in a storm are as many as its writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import yaml
from tests.integration import kit

from benchmarks import common
from benchmarks.common import cpu_seconds, table
from benchmarks.health import (
    Targets,
    create_policies,
    machine_busy,
    remove,
    start_operator,
)
from stronghold_operator.controllers.common import GROUP, VERSION
from stronghold_operator.platforms.kube import API_CONNECTIONS, ApiError, Kube, patch_status
from stronghold_operator.runtime.budget import WRITES_IN_FLIGHT
from stronghold_testbed import paths

PLURAL = "healthpolicies"
CLIENTS = {
    "uncapped": "the operator's client",
    "capped": f"the operator's client, its cap of {API_CONNECTIONS} connections",
    "plain": "bare aiohttp: the floor",
}
ECHO_INTERVAL = "5m"
ECHO_REST_S = 10.0
ECHO_SETTLE_S = 3.0


def pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], check=False, capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def control_plane_cpu(names: Sequence[str]) -> dict[str, float]:
    return {n: sum(cpu_seconds(p) for p in pids(n)) for n in names}


def real_statuses(ns: str, n: int, sa: Path, workdir: Path) -> dict[str, dict[str, Any]]:
    """Every policy's status as one operator writes it (then the operator stops)."""
    op = start_operator(sa, ns, workdir / "operator.log", {})
    try:
        return written_statuses(ns, n)
    finally:
        common.stop(op.proc)


def written_statuses(ns: str, n: int) -> dict[str, dict[str, Any]]:
    def written() -> dict[str, dict[str, Any]] | None:
        items = kit.kubectl_json("get", PLURAL, "-n", ns).get("items", [])
        got = {
            i["metadata"]["name"]: i["status"]
            for i in items
            if (i.get("status") or {}).get("lastProbeTime")
        }
        return got if len(got) >= n else None

    return kit.wait_until(f"{n} statuses written", written, timeout=600, interval=5)


@dataclass
class Echo:
    events: int
    rest: float  # the operator's CPU at rest, share of a core
    per_event_ms: float


def echo_cost(n: int, writes: int, sa: Path, workdir: Path) -> Echo:
    """The operator's CPU per watch event of a status change it did not make: ``n``
    HTTP-only policies probing every 5 minutes (so the operator is at rest), its CPU over a
    burst of ``writes`` PATCHes by a bare client (and the seconds its watch takes to deliver
    them) less its CPU at rest over the same time."""
    t = Targets(uuid.uuid4().hex[:8], app_url=f"http://127.0.0.1:{kit.free_port()}")
    ns = f"bench-apiserver-echo-{t.tag}"
    kit.kubectl("create", "namespace", ns)
    try:
        create_policies(ns, n, t, http_only=True, interval=ECHO_INTERVAL)
        op = start_operator(sa, ns, workdir / "operator-echo.log", {})
        try:
            statuses = written_statuses(ns, n)
            pid = op.proc.pid
            time.sleep(ECHO_REST_S)  # the first writes' own echoes settle
            c0 = cpu_seconds(pid)
            time.sleep(ECHO_REST_S)
            rest = (cpu_seconds(pid) - c0) / ECHO_REST_S
            t0, c0 = time.monotonic(), cpu_seconds(pid)
            asyncio.run(burst(ns, statuses, writes, WRITES_IN_FLIGHT, "plain", load(sa)))
            time.sleep(ECHO_SETTLE_S)  # the watch delivers the last events after their answers
            spent = cpu_seconds(pid) - c0 - rest * (time.monotonic() - t0)
            return Echo(writes, rest, 1000 * spent / writes)
        finally:
            common.stop(op.proc)
    finally:
        remove(ns)


def varied(status: dict[str, Any], i: int) -> dict[str, Any]:
    """The status with what a new round changes: its time and the Ready message."""
    out = json.loads(json.dumps(status))
    out["lastProbeTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for c in out.get("conditions", []):
        if c.get("type") == "Ready":
            c["message"] = f"{c.get('message', '')[:200]} (write {i})"
    return out


def load(kubeconfig: Path) -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(kubeconfig.read_text()))


Send = Callable[[str, dict[str, Any]], Awaitable[int]]


@contextlib.asynccontextmanager
async def sender(
    ns: str, concurrency: int, client: str, kubeconfig: dict[str, Any]
) -> AsyncIterator[Send]:
    """``send(name, status)`` -> the answer's HTTP code. ``client``: ``capped`` (the
    operator's client and its connection cap, ``API_CONNECTIONS``), ``uncapped`` (the same
    with as many connections as tasks) or ``plain`` (a bare aiohttp session)."""
    if client == "plain":
        cluster = kubeconfig["clusters"][0]["cluster"]
        user = kubeconfig["users"][0]["user"]
        ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
        url = f"{cluster['server']}/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {user['token']}"},
            connector=aiohttp.TCPConnector(ssl=ctx, limit=concurrency),
        ) as session:

            async def plain(name: str, status: dict[str, Any]) -> int:
                body = json.dumps({"status": status})
                headers = {"Content-Type": "application/merge-patch+json"}
                async with session.patch(f"{url}/{name}/status", data=body, headers=headers) as r:
                    await r.read()
                    return r.status

            yield plain
        return
    kube = Kube.connect()
    if client == "uncapped":
        kube._limit = asyncio.Semaphore(concurrency)

    async def ours(name: str, status: dict[str, Any]) -> int:
        try:
            await patch_status(kube, PLURAL, ns, name, status)
        except ApiError as exc:
            return exc.status
        return 200

    try:
        yield ours
    finally:
        await kube.aclose()


async def burst(
    ns: str,
    statuses: dict[str, dict[str, Any]],
    writes: int,
    concurrency: int,
    client: str,
    kubeconfig: dict[str, Any],
) -> tuple[float, list[float], int]:
    """``writes`` patches by ``concurrency`` tasks through ``client`` (see :func:`sender`):
    (seconds, answer times, 429s)."""
    names = sorted(statuses)
    latencies: list[float] = []
    refused = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(writes):
        queue.put_nowait(i)

    async with sender(ns, concurrency, client, kubeconfig) as send:

        async def worker() -> None:
            nonlocal refused
            while not queue.empty():
                i = queue.get_nowait()
                name = names[i % len(names)]
                t0 = time.perf_counter()
                code = await send(name, varied(statuses[name], i))
                if code == 429:
                    refused += 1
                elif code >= 300:
                    raise SystemExit(f"PATCH {name}: HTTP {code}")
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies, refused


def measure(
    ns: str, statuses: dict[str, dict[str, Any]], writes: int, c: int, client: str, sa: Path
) -> list[object]:
    """One row: ``writes`` PATCHes by ``c`` tasks through ``client``."""
    control = ("kube-apiserver", "etcd")
    busy0, cpu0 = machine_busy(), control_plane_cpu(control)
    secs, lat, refused = asyncio.run(burst(ns, statuses, writes, c, client, load(sa)))
    busy1, cpu1 = machine_busy(), control_plane_cpu(control)
    lat.sort()
    return [
        f"{c} ({CLIENTS[client]})",
        writes,
        f"{writes / secs:.1f}",
        f"{1000 * statistics.median(lat):.0f} ms",
        f"{1000 * lat[int(0.99 * (len(lat) - 1))]:.0f} ms",
        f"{1000 * (cpu1['kube-apiserver'] - cpu0['kube-apiserver']) / writes:.1f}",
        f"{1000 * (cpu1['etcd'] - cpu0['etcd']) / writes:.1f}",
        f"{100 * (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]):.0f} %",
        refused,
    ]


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
    values = [int(x) for x in args.concurrency.split(",") if x]
    runs = [(c, "uncapped") for c in values]
    runs += [(max(values), "capped"), (WRITES_IN_FLIGHT, "plain")]
    try:
        create_policies(ns, args.policies, t, http_only=False)
        print(f"[{time.strftime('%H:%M:%S')}] {args.policies} policies; real statuses", flush=True)
        statuses = real_statuses(ns, args.policies, sa, workdir)
        some = kit.kubectl_json("get", PLURAL, sorted(statuses)[0], "-n", ns)
        size = len(json.dumps(some))
        os.environ["KUBECONFIG"] = str(sa)  # the operator's identity, as the operator writes
        for c, client in runs:
            print(f"[{time.strftime('%H:%M:%S')}] concurrency {c}, {client}", flush=True)
            rows.append(measure(ns, statuses, args.writes, c, client, sa))
    finally:
        os.environ["KUBECONFIG"] = str(paths.admin_kubeconfig())
        if not args.keep:
            remove(ns)
    print(f"[{time.strftime('%H:%M:%S')}] the operator as a reader", flush=True)
    echo = echo_cost(args.policies, args.writes, sa, workdir)
    table(
        f"HealthPolicy status PATCHes at the API server ({args.policies} objects of"
        f" {size / 1024:.1f} KiB, no client-side budget)",
        [
            "concurrency (client)",
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
    table(
        "The operator as a reader: its CPU per watch event of a status change",
        ["events (PATCHes by a bare client)", "operator at rest, % of a core", "CPU ms/event"],
        [[echo.events, f"{100 * echo.rest:.1f}", f"{echo.per_event_ms:.2f}"]],
    )


if __name__ == "__main__":
    main()
