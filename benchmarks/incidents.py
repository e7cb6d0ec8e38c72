"""Incident creation at scale (issue 18): N HealthPolicies, a tenth failing at once.

Run: ``python -m benchmarks.incidents [--policies 1000] [--failing 0.1] [--interval 10]``

N HTTP-only HealthPolicies (``failureThreshold: 1``) in one namespace, one operator
(``stronghold run -n <ns>``, as benchmarks/health.py starts it). Nine in ten probe a page that
always answers 200; one in ten probe a page of the benchmark's own server on 127.0.0.1 that
answers 200 until the benchmark turns it to 503 — every failing policy at the same instant.

Measured from that instant: seconds until each failing policy's Incident object exists with
its evidence gathered (polled by a LIST of Incidents every second: within a second), the
operator's CPU seconds and the API requests the operator's side spent meanwhile, from the
API server's own ``apiserver_request_total`` by resource and verb (Incidents, their status,
and what evidence reads: ReplicaSets, ControllerRevisions, pods, Events; HealthPolicy status
writes).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.integration import kit

from benchmarks import common
from benchmarks import health as bench
from benchmarks.common import cpu_seconds, rss_mib, stop, table
from benchmarks.health_storm import healthy

RESOURCES = frozenset(
    {"incidents", "healthpolicies", "replicasets", "controllerrevisions", "pods", "events"}
)


class Switch:
    """A page on 127.0.0.1: 200 until :attr:`failing` is set, then 503."""

    def __init__(self) -> None:
        self.failing = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = 503 if outer.failing else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def switch() -> Iterator[Switch]:
    s = Switch()
    try:
        yield s
    finally:
        s.close()


def policy(name: str, url: str, interval: float) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": name},
        "spec": {
            "interval": f"{interval:g}s",
            "failureThreshold": 1,
            # Only the status code decides: latency on a loaded machine is not the question.
            "checks": [
                {
                    "name": "web",
                    "http": {
                        "url": url,
                        "latency": {"target": "2s", "warning": "4s", "critical": "8s"},
                    },
                }
            ],
        },
    }


def requests() -> dict[tuple[str, str], float]:
    """``apiserver_request_total`` summed by (resource[/subresource], verb) for RESOURCES."""
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(kit.kubectl("get", "--raw", "/metrics")):
        if fam.name != "apiserver_request" or fam.type != "counter":
            continue
        for s in fam.samples:
            res = s.labels.get("resource", "")
            if not s.name.endswith("_total") or res not in RESOURCES:
                continue
            if s.labels.get("subresource"):
                res += "/" + s.labels["subresource"]
            key = (res, s.labels.get("verb", ""))
            out[key] = out.get(key, 0.0) + s.value
    return out


def incidents_with_evidence(ns: str) -> dict[str, bool]:
    items = kit.kubectl_json("get", "incidents", "-n", ns)["items"]
    return {i["metadata"]["name"]: bool((i.get("status") or {}).get("evidence")) for i in items}


def run(n: int, failing: int, interval: float, sa: Path, workdir: Path, keep: bool) -> None:
    ns = f"bench-incidents-{uuid.uuid4().hex[:6]}"
    kit.kubectl("create", "namespace", ns)
    op: bench.Operator | None = None
    try:
        with switch() as good, switch() as flaky:
            items = [
                policy(f"p{i:04d}", flaky.url if i < failing else good.url, interval)
                for i in range(n)
            ]
            for lo in range(0, n, 250):
                doc = {"apiVersion": "v1", "kind": "List", "items": items[lo : lo + 250]}
                kit.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(doc))
            op = bench.start_operator(sa, ns, workdir / "operator.log", {})
            print(f"[{time.strftime('%H:%M:%S')}] {n} policies; waiting for Healthy", flush=True)
            poll = max(2.0, n / 1000)
            kit.wait_until(
                f"all {n} policies Healthy",
                lambda: sum(s == "True" for s in healthy(ns).values()) >= n,
                timeout=900,
                interval=poll,
            )
            before, cpu0 = requests(), cpu_seconds(op.proc.pid)
            flaky.failing = True
            t0 = time.monotonic()
            print(f"[{time.strftime('%H:%M:%S')}] {failing} targets failing", flush=True)
            seen: dict[str, float] = {}
            deadline = t0 + 10 * interval + 300
            while len(seen) < failing and time.monotonic() < deadline:
                for name, ready in incidents_with_evidence(ns).items():
                    if ready and name not in seen:
                        seen[name] = time.monotonic() - t0
                time.sleep(1.0)
            cpu = cpu_seconds(op.proc.pid) - cpu0
            after, rss = requests(), rss_mib(op.proc.pid)
        spent = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}
        times = sorted(seen.values())
        table(
            f"incident creation: {n} policies, {failing} failing at once (interval {interval:g} s)",
            ["incidents with evidence", "p50 s", "p99 s", "last s", "operator CPU s", "RSS MiB"],
            [
                (
                    f"{len(times)}/{failing}",
                    statistics.median(times) if times else "-",
                    times[min(len(times) - 1, int(0.99 * len(times)))] if times else "-",
                    times[-1] if times else "-",
                    cpu,
                    rss,
                )
            ],
        )
        table(
            "API requests meanwhile (apiserver_request_total, every client)",
            ["resource", "verb", "requests"],
            [(r, v, int(c)) for (r, v), c in sorted(spent.items())],
        )
    finally:
        if op is not None:
            stop(op.proc)
        if not keep:
            bench.remove(ns)


def main(argv: Sequence[str] | None = None) -> None:
    ap = common.parser("incidents", __doc__)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--failing", type=float, default=0.1, help="share failing at once")
    ap.add_argument("--interval", type=float, default=10.0)
    args = ap.parse_args(argv)
    common.check_cluster("open incidents of its own in the benchmark's namespace")
    workdir = Path(tempfile.mkdtemp(prefix="stronghold-incidents-"))
    sa = common.operator_kubeconfig(workdir)
    failing = max(1, round(args.policies * args.failing))
    run(args.policies, failing, args.interval, sa, workdir, args.keep)


if __name__ == "__main__":
    main()
