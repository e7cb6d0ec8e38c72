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
turned slow, and its recovery after it turned fast (p50 and the last policy; polled, so
within the poll period), the status writes and Events spent from the API server's own
``apiserver_request_total`` (by resource, verb and code; Events are the whole cluster's),
every 429 it sent, the operator's write budget (writes, refusals, Events posted and dropped),
the Event objects left in the namespace (and the ``TargetFailing``/``TargetRecovered``
summaries among them), and the operator's own overload signal.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.integration import kit

from benchmarks import health as bench
from benchmarks.common import stop, table
from benchmarks.slow_proxy import SlowProxy


@dataclass
class StormRun:
    n: int
    interval: float
    timeout: float
    delay: float
    slow_s: float
    poll_s: float
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


def healthy(ns: str) -> dict[str, str]:
    """Each policy's ``Healthy`` condition status (``Unknown`` before its first round)."""
    items = kit.kubectl_json("get", "healthpolicies", "-n", ns).get("items", [])
    out: dict[str, str] = {}
    for item in items:
        conds = (item.get("status") or {}).get("conditions") or []
        found = next((c for c in conds if c.get("type") == "Healthy"), None)
        out[item["metadata"]["name"]] = str((found or {}).get("status", "Unknown"))
    return out


def watch_until(
    ns: str, n: int, want: str, start: float, end: float, poll: float, seen: dict[str, float]
) -> None:
    """Poll until ``end`` or until all ``n`` policies show ``want``; record when each did."""
    while time.monotonic() < end:
        now = time.monotonic()
        for name, status in healthy(ns).items():
            if status == want and name not in seen:
                seen[name] = now - start
        if len(seen) >= n:
            return
        time.sleep(max(0.0, min(poll, end - time.monotonic())))


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
    poll = max(2.0, n / 1000)  # a LIST of every policy: heavier with N
    run = StormRun(n, interval, timeout, delay, float(args.storm_seconds), poll)
    ns = f"bench-health-{t.tag}-storm-{n}"
    app = urlsplit(t.app_url)
    print(f"[{time.strftime('%H:%M:%S')}] {ns}: creating {n} policies", flush=True)
    kit.kubectl("create", "namespace", ns)
    op: bench.Operator | None = None
    try:
        with SlowProxy(app.hostname or "127.0.0.1", app.port or 80) as proxy:
            for lo in range(0, n, 250):
                items = [
                    storm_policy(f"p{i:04d}", proxy.url, interval, timeout)
                    for i in range(lo, min(n, lo + 250))
                ]
                doc = {"apiVersion": "v1", "kind": "List", "items": items}
                kit.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(doc))
            op = bench.start_operator(sa, ns, workdir / f"operator-storm-{n}.log", {})
            kit.wait_until(
                f"all {n} policies Healthy",
                lambda: sum(s == "True" for s in healthy(ns).values()) >= n,
                timeout=600,
                interval=poll,
            )
            time.sleep(interval)  # one more round each: the steady state
            before = bench.scrape(op.metrics_url)
            print(f"[{time.strftime('%H:%M:%S')}] steady; proxy slow ({delay:g}s)", flush=True)
            proxy.delay = delay
            slow_at = time.monotonic()
            outage: dict[str, float] = {}
            # The storm lasts its full time (2n: never "all seen" early); outages recorded.
            watch_until(ns, 2 * n, "False", slow_at, slow_at + run.slow_s, poll, outage)
            proxy.delay = 0.0
            fast_at = time.monotonic()
            print(f"[{time.strftime('%H:%M:%S')}] proxy fast again", flush=True)
            recovered: dict[str, float] = {}
            deadline = fast_at + 5 * interval + 120
            watch_until(ns, n, "True", fast_at, deadline, poll, recovered)
            time.sleep(2 * bench.INTERVAL)  # Events posted after the last transitions
            after = bench.scrape(op.metrics_url)
            run.overloaded, run.discounted = _overload(httpx.get(op.metrics_url, timeout=60).text)
            run.proxied = proxy.connections
        run.outage, run.recovery = sorted(outage.values()), sorted(recovered.values())
        run.api = {k: v - before.api.get(k, 0.0) for k, v in after.api.items()}
        run.budget = {
            k: v - before.budget.get(k, 0.0) if k != "queue" else v for k, v in after.budget.items()
        }
        run.writes = {k: v - before.writes.get(k, 0.0) for k, v in after.writes.items()}
        run.events_in_ns, run.events_counted, run.summaries = events_in(ns)
        return run
    finally:
        if op is not None:
            stop(op.proc)
        if not args.keep:
            bench.remove(ns)


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
                f"{r.poll_s:g}s",
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
            "poll",
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
        shared = [r.summaries.get(k, 0) for k in ("TargetFailing", "TargetRecovered")]
        summaries = f"{shared[0]} / {shared[1]}"
        spent.append(
            [
                r.n,
                f"{status:g}",
                f"{r.writes.get('change', 0.0):g} / {r.writes.get('refresh', 0.0):g}",
                f"{events:g}",
                f"{r.events_in_ns} ({r.events_counted})",
                summaries,
                _by(r, "stronghold_events_posted"),
                _by(r, "stronghold_events_dropped"),
                f"{refused:g}",
                _by(r, "stronghold_api_writes_refused"),
                f"{r.discounted:g} / {r.overloaded:g}",
            ]
        )
    table(
        "Storm: what it cost the API server (from steady state to settled recovery)",
        [
            "N",
            "apiserver status writes",
            "operator writes change / refresh",
            "apiserver Event writes (cluster)",
            "Events in ns (their count)",
            "TargetFailing / TargetRecovered",
            "Events posted",
            "Events dropped",
            "429s (any client)",
            "writes refused",
            "discounted / overloaded",
        ],
        spent,
    )
    by_verb = [
        [r.n, res, verb, code, f"{v:g}"]
        for r in runs
        for (res, verb, code), v in sorted(r.api.items())
        if v > 0 and verb != "WATCH"
    ]
    table(
        "Storm: API server requests by verb and code (healthpolicies, events; * = all)",
        ["N", "resource", "verb", "code", "requests"],
        by_verb,
    )
