"""The storm scenario of the HealthPolicy benchmark (issue 26): every target slow, then healthy.

Run: ``python -m benchmarks.health --scenario storm --policies 200 [--interval 10]
[--timeout 5] [--storm-seconds 60] [--storm-delay 7]``

For each N: N HTTP-only HealthPolicies (``failureThreshold: 1``, ``successThreshold: 1``, so
the times below are the operator's, not a threshold's) probing the demo app's static page
through :class:`benchmarks.slow_proxy.SlowProxy` on 127.0.0.1; one operator (as the steady
benchmark starts it: coalescing on unless ``--env STRONGHOLD_PROBE_COALESCE=0``). Phases:

1. steady state: wait until every policy is ``Healthy=True``, then one more interval;
2. storm: the proxy holds every answer ``--storm-delay`` seconds (default: the timeout + 2 s,
   beyond the probe's timeout) for ``--storm-seconds`` (60);
3. recovery: the proxy relays at once again; wait until every policy is ``Healthy=True``.

Reported: when each policy first showed the outage (``Healthy=False``) after the proxy
turned slow, and its recovery after it turned fast (p50 and the last policy; from one
``kubectl get --watch-only`` kept for the run, timed as each change arrives), the status writes
and Events spent from the API server's own ``apiserver_request_total`` (by resource, verb
and code; Events are the whole cluster's), every 429 it sent, the operator's write budget
(writes, refusals, Events posted and dropped), the Event objects left in the namespace (and
the ``TargetFailing``/``TargetRecovered`` summaries among them), the operator's own overload
signal, and the CPU of the API server, etcd, the operator, this process (with the proxy) and
the machine from the storm to settled, and a timeline in 5 s buckets of each phase's first
45 s: each of those processes' CPU and the policies that showed the change in the bucket.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.integration import kit

from benchmarks import apiserver
from benchmarks import health as bench
from benchmarks.common import CLK_TCK, cpu_seconds, stop, table
from benchmarks.policy_watch import Conditions
from benchmarks.slow_proxy import SlowProxy


@dataclass
class StormRun:
    n: int
    interval: float
    timeout: float
    delay: float
    slow_s: float
    outage: list[float] = field(default_factory=list)  # per policy: seconds until shown
    recovery: list[float] = field(default_factory=list)
    api: dict[tuple[str, str, str], float] = field(default_factory=dict)
    budget: dict[str, float] = field(default_factory=dict)
    writes: dict[str, float] = field(default_factory=dict)  # the operator's status writes
    events_in_ns: int = 0  # Event objects in the namespace at the end
    events_counted: int = 0  # the sum of their ``count``
    summaries: dict[str, int] = field(default_factory=dict)  # TargetFailing/Recovered
    discounted: float = 0.0
    overloaded: float = 0.0  # the gauge at the end
    proxied: int = 0  # connections the proxy accepted
    watch_restarts: int = 0  # the benchmark's watch closed by the API server and reopened
    cpu: dict[str, float] = field(default_factory=dict)  # seconds, from the storm to settled
    # p50 / p99 seconds, from the storm to settled: a write's wait for the budget, a status
    # patch's answer, a round's lateness (the operator's own loop)
    waits: tuple[float, float] = (math.nan, math.nan)
    answers: tuple[float, float] = (math.nan, math.nan)
    late: tuple[float, float] = (math.nan, math.nan)
    cpu_wall: float = 0.0
    gc: str = "n/a"  # the operator's garbage-collector pauses, from the storm to settled
    # rows of the timeline: (phase, seconds from its start, CPU % of a core by process over
    # the bucket, policies that showed the phase's state in it)
    timeline: list[tuple[str, float, dict[str, float], int]] = field(default_factory=list)


class CpuSampler:
    """The CPU counters of :func:`_cpu` once a second, in a thread, for the storm's timeline:
    the run's averages hide which process was the bottleneck while the writes queued."""

    def __init__(self, operator: int, every: float = 1.0) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._operator, self._every = operator, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), _cpu(self._operator)))
            self._stop.wait(self._every)

    def close(self) -> None:
        """Stop, with a last sample now (once)."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self.samples.append((time.monotonic(), _cpu(self._operator)))

    def spent(self) -> tuple[dict[str, float], float]:
        """CPU seconds of each process from the first sample to the last, and the wall
        seconds between them."""
        (t0, a), (t1, b) = self.samples[0], self.samples[-1]
        return {k: v - a.get(k, 0.0) for k, v in b.items()}, t1 - t0

    def share(self, lo: float, hi: float) -> dict[str, float]:
        """CPU % of a core of each process between the samples nearest ``lo`` and ``hi``."""
        inside = [s for s in self.samples if lo - 0.5 <= s[0] <= hi + 0.5]
        if len(inside) < 2:
            return {}
        (t0, a), (t1, b) = inside[0], inside[-1]
        return {k: 100 * (b[k] - a.get(k, 0.0)) / (t1 - t0) for k in b}


def timeline(
    cpu: CpuSampler, phases: list[tuple[str, float, dict[str, float]]]
) -> list[tuple[str, float, dict[str, float], int]]:
    """Per 5 s bucket of each phase's first 45 s: CPU shares and the policies that first
    showed the phase's state in that bucket (``phases``: name, start, and per policy the
    seconds from the start, as :meth:`Conditions.first` gives them)."""
    rows = []
    for phase, start, first in phases:
        for lo in range(0, 45, 5):
            shown = sum(1 for v in first.values() if lo <= v < lo + 5)
            rows.append((phase, float(lo), cpu.share(start + lo, start + lo + 5), shown))
    return rows


def storm_policy(name: str, url: str, interval: float, timeout: float) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": name},
        "spec": {
            "interval": f"{interval:g}s",
            "timeout": f"{timeout:g}s",
            "failureThreshold": 1,
            "successThreshold": 1,
            "checks": [{"name": "web", "http": {"url": f"{url}/"}}],
        },
    }


def events_in(ns: str) -> tuple[int, int, dict[str, int]]:
    items = kit.kubectl_json("get", "events", "-n", ns).get("items", [])
    reasons: dict[str, int] = {}
    for e in items:
        if e.get("reason") in ("TargetFailing", "TargetRecovered"):
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + int(e.get("count") or 1)
    return len(items), sum(int(e.get("count") or 1) for e in items), reasons


def run_storm(
    n: int,
    args: Any,
    t: bench.Targets,
    sa: Path,
    workdir: Path,
) -> StormRun:
    interval, timeout = float(args.interval), float(args.timeout)
    delay = float(args.storm_delay) if args.storm_delay else timeout + 2.0
    poll = 0.5  # how often the phases look at the watch's record (it costs nothing)
    run = StormRun(n, interval, timeout, delay, float(args.storm_seconds))
    ns = f"bench-health-{t.tag}-storm-{n}"
    app = urlsplit(t.app_url)
    print(f"[{time.strftime('%H:%M:%S')}] {ns}: creating {n} policies", flush=True)
    kit.kubectl("create", "namespace", ns)
    op: bench.Operator | None = None
    seen: Conditions | None = None
    sampler: CpuSampler | None = None
    try:
        with SlowProxy(app.hostname or "127.0.0.1", app.port or 80) as proxy:
            for lo in range(0, n, 250):
                items = [
                    storm_policy(f"p{i:04d}", proxy.url, interval, timeout)
                    for i in range(lo, min(n, lo + 250))
                ]
                doc = {"apiVersion": "v1", "kind": "List", "items": items}
                kit.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(doc))
            seen = Conditions(ns)
            # ``--env`` from the options: run as ``-m benchmarks.health``, that module is
            # ``__main__`` and ``bench`` is a second copy of it, whose OPERATOR_ENV is empty
            # (storm runs before session 15 never had the environment they asked for).
            env = bench.operator_env(args)
            op = bench.start_operator(sa, ns, workdir / f"operator-storm-{n}.log", env)
            kit.wait_until(
                f"all {n} policies Healthy",
                lambda: seen is not None and seen.count("True") >= n,
                timeout=600,
                interval=poll,
            )
            time.sleep(interval)  # one more round each: the steady state
            before = bench.scrape(op.metrics_url)
            sampler = CpuSampler(op.proc.pid)
            print(f"[{time.strftime('%H:%M:%S')}] steady; proxy slow ({delay:g}s)", flush=True)
            proxy.delay = delay
            slow_at = time.monotonic()
            time.sleep(run.slow_s)  # the storm lasts its full time; the watch records it
            proxy.delay = 0.0
            fast_at = time.monotonic()
            print(f"[{time.strftime('%H:%M:%S')}] proxy fast again", flush=True)
            deadline = fast_at + 5 * interval + 120
            while time.monotonic() < deadline and len(seen.first("True", fast_at)) < n:
                time.sleep(poll)
            time.sleep(2 * bench.INTERVAL)  # Events posted after the last transitions
            sampler.close()
            run.cpu, run.cpu_wall = sampler.spent()
            after = bench.scrape(op.metrics_url)
            run.overloaded, run.discounted = _overload(httpx.get(op.metrics_url, timeout=60).text)
            run.proxied = proxy.connections
        run.watch_restarts = seen.restarts
        (workdir / f"storm-{n}-changes.json").write_text(
            json.dumps(
                {"slow_at": slow_at, "fast_at": fast_at, "changes": seen.changes}, indent=None
            )
        )  # each policy's Healthy changes as the watch told them: for a closer look
        # A probe sent in the storm's last moment times out after it: still the storm's.
        outage = seen.first("False", slow_at, fast_at + timeout + 1.0)
        recovered = seen.first("True", fast_at)
        run.outage, run.recovery = sorted(outage.values()), sorted(recovered.values())
        run.timeline = timeline(
            sampler, [("outage", slow_at, outage), ("recovery", fast_at, recovered)]
        )
        run.api = {k: v - before.api.get(k, 0.0) for k, v in after.api.items()}
        run.budget = {
            k: v - before.budget.get(k, 0.0) if k != "queue" else v for k, v in after.budget.items()
        }
        run.writes = {k: v - before.writes.get(k, 0.0) for k, v in after.writes.items()}
        run.gc = bench.gc_pauses(before, after)
        for name, a, b in (
            ("waits", before.wait, after.wait),
            ("answers", before.latency, after.latency),
            ("late", before.lateness, after.lateness),
        ):
            d = bench.delta_buckets(a, b)
            setattr(run, name, (bench.quantile(0.5, d), bench.quantile(0.99, d)))
        run.events_in_ns, run.events_counted, run.summaries = events_in(ns)
        return run
    finally:
        if sampler is not None:
            sampler.close()
        if seen is not None:
            seen.close()
        if op is not None:
            stop(op.proc)
        if not args.keep:
            bench.remove(ns)


def _cpu(operator: int) -> dict[str, float]:
    """CPU seconds so far of the control plane, the operator, this process and the machine."""
    out = apiserver.control_plane_cpu(("kube-apiserver", "etcd"))
    out["operator"] = cpu_seconds(operator)
    out["benchmark"] = cpu_seconds(os.getpid())  # with the slow proxy and the watch reader
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])
    out["machine"] = (sum(int(f) for f in fields[:8]) - idle) / CLK_TCK
    return out


def _cpu_share(r: StormRun) -> str:
    keys = ("kube-apiserver", "etcd", "operator", "benchmark", "machine")
    if not r.cpu_wall:
        return "n/a"
    return " / ".join(f"{100 * r.cpu.get(k, 0.0) / r.cpu_wall:.0f}" for k in keys)


def _overload(text: str) -> tuple[float, float]:
    gauge = discounted = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name == "stronghold_operator_overloaded" and fam.samples:
            gauge = fam.samples[0].value
        elif fam.name == "stronghold_health_checks_discounted":
            discounted = sum(s.value for s in fam.samples if s.name.endswith("_total"))
    return gauge, discounted


def _when(values: list[float], n: int) -> tuple[str, str]:
    """(p50, all) of per-policy times; "not all: k/n" when some never showed it."""
    if not values:
        return "n/a", f"none of {n}"
    p50 = f"{statistics.median(values):.1f}s"
    last = f"{values[-1]:.1f}s" if len(values) >= n else f"not all: {len(values)}/{n}"
    return p50, last


def _by(run: StormRun, family: str) -> str:
    parts = [
        f"{k.split(':', 1)[1]}={v:g}"
        for k, v in sorted(run.budget.items())
        if k.startswith(f"{family}:") and v
    ]
    return " ".join(parts) or "0"


def report_storms(runs: list[StormRun]) -> None:
    rows = []
    for r in runs:
        out50, out_all = _when(r.outage, r.n)
        rec50, rec_all = _when(r.recovery, r.n)
        rows.append(
            [
                r.n,
                f"{r.interval:g}s / {r.timeout:g}s / {r.delay:g}s x {r.slow_s:g}s",
                out50,
                out_all,
                rec50,
                rec_all,
                _cpu_share(r),
                r.gc,
                r.watch_restarts,
            ]
        )
    table(
        "Storm: every target slow, then healthy (interval / timeout / added delay x duration)",
        [
            "N",
            "storm",
            "outage shown p50",
            "outage shown: all",
            "recovery p50",
            "recovery: all",
            "CPU % of a core: apiserver / etcd / operator / benchmark / machine",
            "operator's GC pauses: count / seconds",
            "benchmark's watch reopened",
        ],
        rows,
    )
    spent = []
    for r in runs:
        status = sum(
            v
            for (res, verb, _), v in r.api.items()
            if res == "healthpolicies/status" and verb in bench.MUTATING
        )
        events = sum(
            v for (res, verb, _), v in r.api.items() if res == "events" and verb in bench.MUTATING
        )
        refused = sum(v for (res, _, code), v in r.api.items() if res == "*" and code == "429")
        incidents = [
            sum(v for (res, verb, _), v in r.api.items() if res == kind and verb in bench.MUTATING)
            for kind in ("incidents", "incidents/status")
        ]
        shared = [r.summaries.get(k, 0) for k in ("TargetFailing", "TargetRecovered")]
        summaries = f"{shared[0]} / {shared[1]}"
        spent.append(
            [
                r.n,
                f"{status:g}",
                f"{r.writes.get('change', 0.0):g} / {r.writes.get('refresh', 0.0):g}",
                f"{events:g}",
                f"{incidents[0]:g} / {incidents[1]:g}",
                f"{r.events_in_ns} ({r.events_counted})",
                summaries,
                _by(r, "stronghold_events_posted"),
                _by(r, "stronghold_events_dropped"),
                f"{refused:g}",
                _by(r, "stronghold_api_writes_refused"),
                f"{r.discounted:g} / {r.overloaded:g}",
                " / ".join(f"{a:.2f} s, {b:.2f} s" for a, b in (r.waits, r.answers, r.late)),
            ]
        )
    table(
        "Storm: what it cost the API server (from steady state to settled recovery)",
        [
            "N",
            "apiserver status writes",
            "operator writes change / refresh",
            "apiserver Event writes (cluster)",
            "apiserver Incident writes / status writes",
            "Events in ns (their count)",
            "TargetFailing / TargetRecovered",
            "Events posted",
            "Events dropped",
            "429s (any client)",
            "writes refused",
            "discounted / overloaded",
            "p50, p99: budget wait / PATCH answer / round lateness",
        ],
        spent,
    )
    keys = ("kube-apiserver", "etcd", "operator", "benchmark", "machine")
    table(
        "Storm: timeline, 5 s buckets from the proxy turning slow (outage) and fast (recovery)",
        ["N", "phase", "seconds", *(f"CPU % {k}" for k in keys), "policies shown"],
        [
            [r.n, phase, f"{lo:g}-{lo + 5:g}", *(f"{cpu.get(k, 0.0):.0f}" for k in keys), shown]
            for r in runs
            for phase, lo, cpu, shown in r.timeline
        ],
    )
    by_verb = [
        [r.n, res, verb, code, f"{v:g}"]
        for r in runs
        for (res, verb, code), v in sorted(r.api.items())
        if v > 0  # WATCH: watches (re)opened, the operator's and this benchmark's
    ]
    table(
        "Storm: API server requests by verb and code (healthpolicies, events, incidents; * = all)",
        ["N", "resource", "verb", "code", "requests"],
        by_verb,
    )
