"""HealthPolicy benchmark: one operator process, N policies x 4 checks every 10 s.

Run: ``.venv/bin/python -m benchmarks.health [--policies 100,1000] [--duration 120]``
(``--scenario storm``: every target slow for a minute, then healthy: benchmarks/health_storm.py)

Targets (all real, on 127.0.0.1): the demo web app (``stronghold_testbed.webapp``)
with its real dependencies (its ``/health/`` connects to PostgreSQL, Memcached and RabbitMQ
on every request), a benchmark PostgreSQL role and database, a RabbitMQ queue (both created
here and removed at the end) and the shared Memcached.

For each N: N HealthPolicies in a fresh namespace, each with four checks (http ``/health/``
with its health document, postgres, memcached, rabbitmq queue) at ``interval: 10s``
(``--interval``); ONE
operator (``stronghold run --standalone -n <ns>``, a host process under the operator's
ServiceAccount, not verbose); wait until 2N rounds have started plus one interval, then
measure over a window: operator CPU seconds (/proc), RSS, probes (rounds x checks; answered
probes by type from the operator's /metrics) and round lateness
(``stronghold_round_lateness_seconds{kind="HealthPolicy"}``, window delta).
The operator coalesces identical probes in flight (the same check in many policies): the
table shows the requests that reached the targets next to the probes the policies got.
Then the same with HTTP-only policies (N http checks per 10 s of the app's static page
``/``, the page and rate blackbox and the curl loop get),
with coalescing off (``STRONGHOLD_PROBE_COALESCE=0``) so every probe is a real request,
and the peers of benchmarks/health_peers.py at the same endpoints and rate, one after the
other (never concurrently, so no side steals CPU from the other).

API traffic (issue 26): the API server's own ``apiserver_request_total`` (its /metrics, read
with the admin kubeconfig before and after the window) by verb and code for HealthPolicies
and Events (Events of the whole cluster: other clients post them too), every 429 it sent to
anyone, and the operator's write budget (runtime/budget.py): writes by priority, refusals,
the time writes waited for the budget, Events posted and dropped (runtime/events.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pika
import psycopg
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from tests.integration import kit

from benchmarks import common
from benchmarks import health_peers as peers
from benchmarks.common import Window, rss_mib, start, stop, table
from benchmarks.policy_watch import Conditions
from stronghold_testbed import packages, paths

INTERVAL = 10.0
MEMCACHED = "127.0.0.1:11211"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
TYPES = ("http", "postgres", "memcached", "rabbitmq")
OPERATOR_ENV: dict[str, str] = {}  # extra environment of the operator (--env)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"})
OUR_RESOURCES = frozenset({"healthpolicies", "events", "incidents"})


# --- targets ---------------------------------------------------------------------------------


@dataclass
class Targets:
    """What the checks point at; created here, removed at the end."""

    tag: str
    app_url: str = ""
    static_url: str = ""  # HTTP-only policies' target when not the app (--http-target nginx)
    password: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def role(self) -> str:
        return f"bench_health_{self.tag}"

    @property
    def queue(self) -> str:
        return f"bench-health-{self.tag}"

    def dsn(self) -> str:
        return (
            f"host=127.0.0.1 port=5432 user={self.role} dbname={self.role} password={self.password}"
        )

    def pg_url(self) -> str:
        return (
            f"postgresql://{self.role}:{self.password}@127.0.0.1:5432/{self.role}?sslmode=disable"
        )


def create_pg(t: Targets) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {t.role} LOGIN PASSWORD '{t.password}'")
        conn.execute(f"GRANT pg_monitor TO {t.role}")
        conn.execute(f"CREATE DATABASE {t.role} OWNER {t.role}")


def drop_pg(t: Targets) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {t.role} WITH (FORCE)")
        conn.execute(f"DROP ROLE IF EXISTS {t.role}")


def queue(t: Targets, delete: bool = False) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    try:
        ch = conn.channel()
        if delete:
            ch.queue_delete(queue=t.queue)
        else:
            ch.queue_declare(queue=t.queue, durable=False)
    finally:
        conn.close()


@contextmanager
def webapp(t: Targets, workdir: Path) -> Iterator[str]:
    port = kit.free_port()
    argv = [
        str(kit.VENV_BIN / "python"),
        "-m",
        "stronghold_testbed.webapp",
        f"--port={port}",
        f"--pg-dsn={t.dsn()}",
        f"--memcached={MEMCACHED}",
        f"--amqp={AMQP}",
    ]
    proc = start(argv, workdir / "webapp.log")
    try:
        url = f"http://127.0.0.1:{port}"
        peers._wait_http(f"{url}/health/")
        yield url
    finally:
        stop(proc)


NGINX_CONF = """daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-tmp;
    proxy_temp_path {dir}/nginx-tmp;
    fastcgi_temp_path {dir}/nginx-tmp;
    uwsgi_temp_path {dir}/nginx-tmp;
    scgi_temp_path {dir}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        location = / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""


@contextmanager
def nginx(workdir: Path) -> Iterator[str]:
    """A static page from nginx (one worker): an HTTP target that keeps up with 5,000
    HTTP-only policies' 500 requests a second, which the Python app does not (issue 26),
    so what is measured is the operator, not the target."""
    packages.ensure(["nginx-light"])
    port = kit.free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port))
    proc = start(["/usr/sbin/nginx", "-c", str(conf), "-p", str(workdir)], workdir / "nginx.log")
    try:
        url = f"http://127.0.0.1:{port}"
        peers._wait_http(f"{url}/")
        yield url
    finally:
        stop(proc)


# --- cluster and operator --------------------------------------------------------------------


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    metrics_url: str
    log: Path


def operator_env(args: Any) -> dict[str, str]:
    """The operator's extra environment from ``--env KEY=VALUE`` options."""
    return {k: v for k, _, v in (item.partition("=") for item in args.env)}


def start_operator(sa: Path, ns: str, log: Path, env: dict[str, str]) -> Operator:
    """``stronghold run`` at its default log level (not --verbose: logging is not measured)."""
    liveness, metrics = kit.free_port(), kit.free_port()
    argv = [
        str(kit.VENV_BIN / "stronghold"),
        "run",
        "--standalone",
        f"--liveness=http://127.0.0.1:{liveness}/healthz",
        f"--metrics-port={metrics}",
        "--metrics-address=127.0.0.1",
        "--outbound-allow=loopback,private",  # every target listens on 127.0.0.1
        "-n",
        ns,
    ]
    proc = start(argv, log, env={"KUBECONFIG": str(sa), **OPERATOR_ENV, **env})

    def alive() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"operator exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{liveness}/healthz", timeout=15).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        kit.wait_until("the operator's liveness endpoint", alive, timeout=60)
    except BaseException:
        stop(proc)  # a slow start must not leave it probing after the benchmark gives up
        raise
    return Operator(proc, f"http://127.0.0.1:{metrics}/metrics", log)


# --- policies --------------------------------------------------------------------------------


def policy(name: str, t: Targets, http_only: bool, interval: str = "10s") -> dict[str, Any]:
    # HTTP-only policies probe the app's static page, as blackbox and the curl loop do: the
    # per-request comparison needs a target that keeps up with 100 requests/s (``/health/``
    # opens PostgreSQL, Memcached and AMQP connections on every request).
    web = (
        {"url": f"{t.static_url or t.app_url}/"}
        if http_only
        else {
            "url": f"{t.app_url}/health/",
            "healthDocument": {},
        }
    )
    checks: list[dict[str, Any]] = [{"name": "web", "http": web}]
    if not http_only:
        checks += [
            {
                "name": "db",
                "postgres": {
                    "host": "127.0.0.1",
                    "database": t.role,
                    "user": t.role,
                    "password": {"secretKeyRef": {"name": "bench", "key": "password"}},
                },
            },
            {"name": "cache", "memcached": {"address": MEMCACHED}},
            {
                "name": "queue",
                "rabbitmq": {
                    "url": {"secretKeyRef": {"name": "bench", "key": "amqp"}},
                    "queues": [{"name": t.queue}],
                },
            },
        ]
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": name},
        "spec": {"interval": interval, "timeout": "5s", "checks": checks},
    }


def create_policies(ns: str, n: int, t: Targets, http_only: bool, interval: str = "10s") -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "bench",
            # The password may go to this PostgreSQL only (docs/security.md).
            "annotations": {"ops.stronghold.io/allowed-destinations": "127.0.0.1:5432"},
        },
        "stringData": {"password": t.password, "amqp": AMQP},
    }
    kit.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(secret))
    for lo in range(0, n, 250):
        items = [policy(f"p{i:04d}", t, http_only, interval) for i in range(lo, min(n, lo + 250))]
        doc = {"apiVersion": "v1", "kind": "List", "items": items}
        kit.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(doc))


# --- the operator's /metrics -----------------------------------------------------------------


@dataclass
class Scrape:
    probes: dict[str, float]  # probe count by check type
    lateness: list[tuple[float, float]]  # cumulative (le, count)
    unhealthy: int  # checks whose last probe was not Healthy
    rounds: float  # policy rounds started (the lateness histogram's count)
    sent: float = 0.0  # probes sent to a target
    coalesced: float = 0.0  # probes answered by an identical probe in flight
    writes: dict[str, float] = field(default_factory=dict)  # status writes by cause
    events: float = 0.0  # HealthPolicy watch events sent by the API server (all watchers)
    watchers: float = 0.0  # HealthPolicy watchers registered at the API server
    budget: dict[str, float] = field(default_factory=dict)  # the write budget's counters
    wait: list[tuple[float, float]] = field(default_factory=list)  # budget wait (le, count)
    latency: list[tuple[float, float]] = field(default_factory=list)  # patch latency
    api: dict[tuple[str, str, str], float] = field(default_factory=dict)  # apiserver requests
    unhealthy_by: dict[str, int] = field(default_factory=dict)  # "web Unknown" -> checks
    gc: dict[str, float] = field(default_factory=dict)  # "0:count", "0:seconds" ... by generation


def not_healthy(samples: Sequence[Any]) -> dict[str, int]:
    """Checks whose last probe was not Healthy, by check name and what it said."""
    out: dict[str, int] = {}
    for s in samples:
        if s.value != 1:
            why = f"{s.labels['check']} {'Unknown' if s.value < 0 else 'Warning/Critical'}"
            out[why] = out.get(why, 0) + 1
    return out


def scrape(url: str) -> Scrape:
    text = httpx.get(url, timeout=60).text
    probes = dict.fromkeys(TYPES, 0.0)
    lateness: list[tuple[float, float]] = []
    unhealthy = 0
    unhealthy_by: dict[str, int] = {}
    sent = coalesced = 0.0
    writes: dict[str, float] = {}
    families = list(text_string_to_metric_families(text))
    for fam in families:
        if fam.name == "stronghold_health_probe_duration_seconds":
            for s in fam.samples:
                if s.name.endswith("_count") and s.value > 0:
                    probes[s.labels["type"]] = probes.get(s.labels["type"], 0.0) + s.value
        elif fam.name == "stronghold_round_lateness_seconds":
            lateness = [
                (float(s.labels["le"]), s.value)
                for s in fam.samples
                if s.name.endswith("_bucket") and s.labels.get("kind") == "HealthPolicy"
            ]
        elif fam.name == "stronghold_health_probe_success":
            unhealthy_by = not_healthy(fam.samples)
            unhealthy = sum(unhealthy_by.values())
        elif fam.name == "stronghold_health_probe_requests":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    if s.labels["coalesced"] == "true":
                        coalesced += s.value
                    else:
                        sent += s.value
        elif fam.name == "stronghold_health_status_writes":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    writes[s.labels["cause"]] = s.value
    rounds = max((c for le, c in lateness if math.isinf(le)), default=0.0)
    events, watchers, api = apiserver()
    budget, wait, latency = write_budget(families)
    return Scrape(
        probes,
        sorted(lateness),
        unhealthy,
        rounds,
        sent,
        coalesced,
        writes,
        events,
        watchers,
        budget,
        wait,
        latency,
        api,
        unhealthy_by,
        gc_counters(families),
    )


def gc_counters(families: Sequence[Metric]) -> dict[str, float]:
    """The operator's garbage-collector pauses: "0:count", "0:seconds", ... by generation."""
    out: dict[str, float] = {}
    for fam in families:
        if fam.name == "stronghold_gc_pause_seconds":
            for s in fam.samples:
                for suffix, what in (("_count", "count"), ("_sum", "seconds")):
                    if s.name.endswith(suffix):
                        out[f"{s.labels['generation']}:{what}"] = s.value
    return out


# The budget's counters: metric family -> the label that tells its series apart.
_BUDGET = {
    "stronghold_api_writes": "priority",
    "stronghold_api_writes_refused": "code",
    "stronghold_api_writes_retried": "code",
    "stronghold_events_posted": "kind",
    "stronghold_events_dropped": "why",
}


def write_budget(
    families: Sequence[Metric],
) -> tuple[dict[str, float], list[tuple[float, float]], list[tuple[float, float]]]:
    """The operator's write budget: counters ("family:label" -> value, and the queue depth),
    and the wait and patch-latency histograms (cumulative buckets)."""
    out: dict[str, float] = {}
    wait: dict[float, float] = {}
    latency: list[tuple[float, float]] = []
    for fam in families:
        if fam.name in _BUDGET:
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[f"{fam.name}:{s.labels[_BUDGET[fam.name]]}"] = s.value
        elif fam.name == "stronghold_api_write_queue_depth":
            out["queue"] = fam.samples[0].value if fam.samples else 0.0
        elif fam.name == "stronghold_api_write_wait_seconds":
            for s in fam.samples:  # summed over priorities
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    wait[le] = wait.get(le, 0.0) + s.value
        elif fam.name == "stronghold_api_write_duration_seconds":
            latency = [
                (float(s.labels["le"]), s.value) for s in fam.samples if s.name.endswith("_bucket")
            ]
    return out, sorted(wait.items()), sorted(latency)


def apiserver() -> tuple[float, float, dict[tuple[str, str, str], float]]:
    """From the API server's own /metrics: HealthPolicy watch events (all watchers), its
    HealthPolicy watchers, and ``apiserver_request_total`` as (resource, verb, code) ->
    count for HealthPolicies, Events and Incidents, plus ("*", verb, "429") for every refusal."""
    text = kit.kubectl("get", "--raw", "/metrics")
    events = watchers = 0.0
    requests: dict[tuple[str, str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "apiserver_request" and fam.type == "counter":
            for s in fam.samples:
                if not s.name.endswith("_total"):
                    continue
                verb, code, res = s.labels.get("verb", ""), s.labels.get("code", ""), ""
                if s.labels.get("resource") in OUR_RESOURCES:
                    res = s.labels["resource"]
                    if s.labels.get("subresource"):
                        res += "/" + s.labels["subresource"]
                    requests[(res, verb, code)] = requests.get((res, verb, code), 0.0) + s.value
                if code == "429":
                    requests[("*", verb, code)] = requests.get(("*", verb, code), 0.0) + s.value
            continue
        for s in fam.samples:
            if s.labels.get("kind") != "HealthPolicy":
                continue
            if fam.name == "apiserver_watch_events" and s.name.endswith("_total"):
                events += s.value
            elif fam.name == "apiserver_registered_watchers":
                watchers += s.value
    return events, watchers, requests


GENERATIONS = ("young", "middle", "full")


def gc_pauses(before: Scrape, after: Scrape) -> str:
    """The garbage collector's pauses between two scrapes: "young 13 / 2.5 s, ..."."""
    parts = []
    for g, name in enumerate(GENERATIONS):
        n = after.gc.get(f"{g}:count", 0.0) - before.gc.get(f"{g}:count", 0.0)
        sec = after.gc.get(f"{g}:seconds", 0.0) - before.gc.get(f"{g}:seconds", 0.0)
        parts.append(f"{name} {n:g} / {sec:.1f} s")
    return ", ".join(parts) if after.gc else "n/a"


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """histogram_quantile: linear interpolation inside the bucket (as Prometheus does)."""
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 1.0)
        prev_le, prev_count = le, count
    return prev_le


def delta_buckets(
    a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    before = dict(a)
    return [(le, c - before.get(le, 0.0)) for le, c in b]


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    n: int
    http_only: bool
    interval: float
    cpu: float
    wall: float
    rss_max: float
    rss_peak: float
    probes: dict[str, float]
    lateness_p50: float
    lateness_p99: float
    lateness_max_bucket: str
    rounds: float
    checks: int
    unhealthy: int
    warmup_s: float
    machine: float  # % of the whole machine (all cores) busy during the window
    load: float  # 1-minute load average at the end of the window
    sent: float = 0.0  # requests sent to targets in the window
    coalesced: float = 0.0  # probes answered by an identical one in flight
    writes: dict[str, float] = field(default_factory=dict)  # status writes in the window
    events: float = 0.0  # watch events in the window, all watchers
    watchers: float = 1.0  # HealthPolicy watchers at the end of the window
    budget: dict[str, float] = field(default_factory=dict)  # budget counters in the window
    wait_p99: float = math.nan  # seconds a write waited for the budget
    latency_p99: float = math.nan  # seconds a status patch took
    # Seconds from the operator's launch until each policy's status first showed Healthy=True
    # (a watch's arrival times): the start's "steady state" as a reader of status sees it.
    healthy_after: list[float] = field(default_factory=list)
    api: dict[tuple[str, str, str], float] = field(default_factory=dict)  # apiserver requests
    unhealthy_by: dict[str, int] = field(default_factory=dict)  # the last probes not Healthy
    gc: str = "n/a"  # the operator's garbage-collector pauses in the window

    def api_total(self, resource: str | None = None, mutating: bool = False) -> float:
        return sum(
            v
            for (res, verb, _), v in self.api.items()
            if res != "*"
            and (resource is None or res.split("/")[0] == resource)
            and (not mutating or verb in MUTATING)
        )

    def refused_429(self) -> float:
        return sum(v for (res, _, code), v in self.api.items() if res == "*" and code == "429")

    @property
    def total_probes(self) -> float:
        """Probes attempted: rounds x checks (a timed-out probe has no duration sample)."""
        return self.rounds * self.checks


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)


def statuses_written(ns: str, n: int) -> bool:
    """Every one of the ``n`` policies has had its status written by a round (a LIST: for
    a few policies; the large runs count them from their watch)."""
    items = kit.kubectl_json("get", "healthpolicies", "-n", ns).get("items", [])
    done = sum(1 for item in items if (item.get("status") or {}).get("lastProbeTime"))
    return done >= n


ROUNDS_STARTED = 'stronghold_round_lateness_seconds_count{kind="HealthPolicy"}'


def rounds_started(url: str) -> float:
    """HealthPolicy rounds started (the lateness histogram's count), from its one line: the
    warm-up polls this every 5 s, and parsing the whole exposition (40,000 check series at
    10,000 policies) would take the benchmark's CPU from the start being measured."""
    for line in httpx.get(url, timeout=60).text.splitlines():
        if line.startswith(ROUNDS_STARTED):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_operator(
    n: int,
    http_only: bool,
    duration: float,
    t: Targets,
    sa: Path,
    workdir: Path,
    keep: bool,
    interval: float = INTERVAL,
) -> Run:
    kind = "http" if http_only else "mixed"
    ns = f"bench-health-{t.tag}-{kind}-{n}"
    print(f"[{time.strftime('%H:%M:%S')}] {ns}: creating {n} policies", flush=True)
    kit.kubectl("create", "namespace", ns)
    op: Operator | None = None
    seen: Conditions | None = None
    try:
        create_policies(ns, n, t, http_only, f"{interval:g}s")
        # HTTP-only runs are the per-request comparison with blackbox_exporter: every probe
        # a real request, so identical probes in flight are not coalesced there.
        env = {"STRONGHOLD_PROBE_COALESCE": "0"} if http_only else {}
        seen = Conditions(ns)
        launched = time.monotonic()  # "Healthy after start" counts the operator's own start
        op = start_operator(sa, ns, workdir / f"operator-{kind}-{n}.log", env)
        t0 = time.monotonic()
        checks = 1 if http_only else 4

        def warm() -> bool:
            # 2N rounds started: every policy past its first round (on average).
            return seen.reported() >= n and rounds_started(op.metrics_url) >= 2 * n

        kit.wait_until(f"all {n} policies probed, statuses written", warm, timeout=600, interval=5)
        # One more interval: the first round of every policy writes its status (a burst
        # that happens once); the window measures the steady state after it.
        time.sleep(interval + 2)
        warmup = time.monotonic() - t0
        print(f"[{time.strftime('%H:%M:%S')}] warm after {warmup:.0f}s; measuring", flush=True)
        before = scrape(op.metrics_url)
        rss_max = 0.0
        busy0 = machine_busy()
        with Window(op.proc.pid) as w:
            end = time.monotonic() + duration
            while time.monotonic() < end:
                rss_max = max(rss_max, rss_mib(op.proc.pid))
                time.sleep(min(2.0, max(0.0, end - time.monotonic())))
        rss_max = max(rss_max, rss_mib(op.proc.pid))
        rss_peak = rss_mib(op.proc.pid, "VmHWM")  # the start included
        busy1 = machine_busy()
        load = os.getloadavg()[0]
        after = scrape(op.metrics_url)
        lat = delta_buckets(before.lateness, after.lateness)
        total = lat[-1][1] if lat else 0.0
        worst = next((le for le, c in lat if c >= total), math.inf)
        if "Traceback" in op.log.read_text(errors="replace"):
            print(f"note: the operator logged a traceback, see {op.log}")
        healthy_after = sorted(seen.first("True", launched).values())
        return Run(
            n=n,
            http_only=http_only,
            interval=interval,
            cpu=w.cpu,
            wall=w.wall,
            rss_max=rss_max,
            rss_peak=rss_peak,
            probes={k: after.probes.get(k, 0) - before.probes.get(k, 0) for k in TYPES},
            lateness_p50=quantile(0.5, lat),
            lateness_p99=quantile(0.99, lat),
            lateness_max_bucket=f"<= {worst:g} s",
            rounds=after.rounds - before.rounds,
            checks=checks,
            unhealthy=after.unhealthy,
            unhealthy_by=after.unhealthy_by,
            warmup_s=warmup,
            machine=100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
            load=load,
            sent=after.sent - before.sent,
            coalesced=after.coalesced - before.coalesced,
            writes={k: v - before.writes.get(k, 0.0) for k, v in after.writes.items()},
            events=after.events - before.events,
            watchers=max(1.0, after.watchers),
            budget={
                k: v - before.budget.get(k, 0.0) if k != "queue" else v
                for k, v in after.budget.items()
            },
            wait_p99=quantile(0.99, delta_buckets(before.wait, after.wait)),
            latency_p99=quantile(0.99, delta_buckets(before.latency, after.latency)),
            api={k: v - before.api.get(k, 0.0) for k, v in after.api.items()},
            healthy_after=healthy_after,
            gc=gc_pauses(before, after),
        )
    finally:
        if seen is not None:
            seen.close()
        if op is not None:
            stop(op.proc)
        if not keep:
            remove(ns)


def remove(ns: str) -> None:
    """Delete the namespace; any finalizer left on a policy is removed through the API.

    (HealthPolicies carry none since the operator stopped running a daemon per policy;
    this still clears what an older operator, or an aborted run, left behind.)
    """
    kit.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(paths.admin_kubeconfig()), client_configuration=cfg
    )
    with kubernetes.client.ApiClient(cfg) as api:
        co = kubernetes.client.CustomObjectsApi(api)
        listed: Any = co.list_namespaced_custom_object(
            "ops.stronghold.io", "v1alpha1", ns, "healthpolicies"
        )
        items = listed["items"]
        for item in items:
            with contextlib.suppress(kubernetes.client.ApiException):
                co.patch_namespaced_custom_object(
                    "ops.stronghold.io",
                    "v1alpha1",
                    ns,
                    "healthpolicies",
                    item["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )
    kit.wait_until(
        f"namespace {ns} to be gone",
        lambda: "NotFound" in kit.kubectl("get", "namespace", ns, check=False),
        timeout=180,
        interval=2,
    )


# --- report ----------------------------------------------------------------------------------


def ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _not_healthy(r: Run) -> str:
    """How many, then by check and what the last probe said (a shared answer shows on every
    policy that took it)."""
    by = ", ".join(f"{why} {n}" for why, n in sorted(r.unhealthy_by.items()))
    return f"{r.unhealthy} ({by})" if by else str(r.unhealthy)


def _healthy_after(r: Run) -> str:
    got = r.healthy_after
    if not got:
        return "n/a"
    last = f"{got[-1]:.1f}s" if len(got) >= r.n else f"only {len(got)} of {r.n}"
    return f"{got[len(got) // 2]:.1f}s / {last}"


def report_runs(runs: Sequence[Run]) -> None:
    rows = []
    for r in runs:
        rows.append(
            [
                r.n,
                f"{'http only' if r.http_only else '4 checks'}, every {r.interval:g}s",
                f"{int(r.total_probes)} in {r.wall:.0f}s",
                f"{r.total_probes / r.wall:.1f}",
                f"{100 * r.cpu / r.wall:.1f}",
                ms(1000 * r.cpu / max(r.total_probes, 1)),
                f"{r.sent / r.wall:.1f}",
                ms(1000 * r.cpu / max(r.sent, 1)),
                f"{r.rss_max:.0f} / {r.rss_peak:.0f}",
                f"{1000 * r.lateness_p50:.0f}",
                f"{1000 * r.lateness_p99:.0f}",
                r.lateness_max_bucket,
                _not_healthy(r),
                _healthy_after(r),
                f"{r.warmup_s:.0f}s",
                f"{r.machine:.0f}% / {r.load:.1f}",
            ]
        )
    table(
        "Stronghold operator (one process)",
        [
            "N",
            "policies",
            "probes",
            "probes/s",
            "CPU % of a core",
            "ms CPU/probe",
            "requests/s to targets",
            "ms CPU/request",
            "RSS MiB: window max / peak",
            "lateness p50 ms",
            "lateness p99 ms",
            "worst lateness",
            "not Healthy",
            "Healthy after start: p50 / last",
            "warm-up",
            "machine busy / load",
        ],
        rows,
    )
    by_type = [
        [
            r.n,
            "http only" if r.http_only else "4 checks",
            *(int(r.probes[k]) for k in TYPES),
            r.gc,
        ]
        for r in runs
    ]
    table(
        "Probes answered in the window, by type (timeouts not included); the operator's GC",
        ["N", "policies", *TYPES, "GC pauses: count / seconds"],
        by_type,
    )
    traffic = [
        [
            r.n,
            "http only" if r.http_only else "4 checks",
            f"{r.writes.get('change', 0.0) / r.wall:.2f}",
            f"{r.writes.get('refresh', 0.0) / r.wall:.2f}",
            f"{r.api_total('healthpolicies', mutating=True) / r.wall:.2f}",
            f"{r.api_total('events', mutating=True) / r.wall:.2f}",
            f"{r.api_total(mutating=True) / r.wall:.2f}",
            f"{r.refused_429():g}",
            f"{r.events / r.watchers / r.wall:.1f} ({r.watchers:g} watchers)",
        ]
        for r in runs
    ]
    table(
        "API traffic in the window, per second (apiserver: its own apiserver_request_total)",
        [
            "N",
            "policies",
            "status writes: change",
            "status writes: lastProbeTime refresh",
            "apiserver mutating: healthpolicies",
            "apiserver mutating: events (cluster)",
            "apiserver mutating: both",
            "429s (any client)",
            "watch events per watcher",
        ],
        traffic,
    )
    by_verb = [
        [r.n, "http only" if r.http_only else "4 checks", res, verb, code, f"{v:g}"]
        for r in runs
        for (res, verb, code), v in sorted(r.api.items())
        if v > 0 and verb != "WATCH"
    ]
    table(
        "API server requests in the window by verb and code (healthpolicies, events; * = all)",
        ["N", "policies", "resource", "verb", "code", "requests"],
        by_verb,
    )
    budget = [
        [
            r.n,
            "http only" if r.http_only else "4 checks",
            _series(r, "stronghold_api_writes"),
            _series(r, "stronghold_api_writes_refused"),
            _series(r, "stronghold_api_writes_retried"),
            f"{r.budget.get('queue', 0.0):g}",
            f"{1000 * r.wait_p99:.1f}" if not math.isnan(r.wait_p99) else "n/a",
            f"{1000 * r.latency_p99:.1f}" if not math.isnan(r.latency_p99) else "n/a",
            _series(r, "stronghold_events_posted"),
            _series(r, "stronghold_events_dropped"),
        ]
        for r in runs
    ]
    table(
        "The operator's write budget in the window (runtime/budget.py, runtime/events.py)",
        [
            "N",
            "policies",
            "writes by priority",
            "refused by code",
            "retried by code",
            "queue at end",
            "budget wait p99 ms",
            "patch latency p99 ms",
            "Events posted",
            "Events dropped",
        ],
        budget,
    )


def _series(r: Run, family: str) -> str:
    """One budget counter's series in the window, e.g. ``429=3 503=1`` (0: none)."""
    parts = [
        f"{k.split(':', 1)[1]}={v:g}"
        for k, v in sorted(r.budget.items())
        if k.startswith(f"{family}:") and v
    ]
    return " ".join(parts) or "0"


def report_peers(results: Sequence[tuple[int, peers.PeerResult]]) -> None:
    rows = [
        [
            n,
            p.name,
            f"{p.probes} in {p.wall_seconds:.0f}s",
            f"{p.probes / p.wall_seconds:.1f}",
            f"{100 * p.cpu_seconds / p.wall_seconds:.1f}",
            ms(p.cpu_ms_per_probe),
            f"{p.rss_mib:.0f}" if p.rss_mib else "n/a (short-lived)",
            p.note,
        ]
        for n, p in results
    ]
    table(
        "Peers, same endpoints, same rate (N probes per interval)",
        ["N", "peer", "probes", "probes/s", "CPU % of a core", "ms CPU/probe", "RSS MiB", "note"],
        rows,
    )


# --- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    ap = common.parser("health", __doc__)
    ap.add_argument("--policies", default="100,1000", help="comma-separated N values")
    ap.add_argument("--duration", type=float, default=120, help="operator window, seconds")
    ap.add_argument("--peer-duration", type=float, default=60, help="each peer, seconds")
    ap.add_argument("--no-http-only", action="store_true", help="skip the HTTP-only runs")
    ap.add_argument("--no-mixed", action="store_true", help="skip the 4-check runs")
    ap.add_argument("--no-peers", action="store_true", help="skip the peers")
    ap.add_argument(
        "--http-target",
        choices=("webapp", "nginx"),
        default="webapp",
        help="HTTP-only policies and peers: the app's static page, or nginx's (500 requests/s)",
    )
    ap.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="operator environment"
    )
    ap.add_argument(
        "--scenario",
        choices=("steady", "storm"),
        default="steady",
        help="steady: the window above; storm: every target slow, then healthy"
        " (benchmarks/health_storm.py)",
    )
    ap.add_argument(
        "--interval", type=float, default=INTERVAL, help="the policies' (and the peers') interval"
    )
    ap.add_argument("--timeout", type=float, default=5, help="storm: the probes' timeout")
    ap.add_argument("--storm-seconds", type=float, default=60, help="storm: how long it lasts")
    ap.add_argument(
        "--storm-delay", type=float, default=0, help="storm: added delay (default timeout + 2 s)"
    )
    args = ap.parse_args(argv)
    OPERATOR_ENV.update(operator_env(args))
    ns_values = [int(x) for x in args.policies.split(",") if x]

    common.check_cluster("probe the policies too")
    storm = args.scenario == "storm"
    if not args.no_peers and not storm:
        packages.ensure(list(packages.BENCH))
    os.environ["KUBECONFIG"] = str(paths.admin_kubeconfig())
    workdir = Path(tempfile.mkdtemp(prefix="stronghold-bench-health-"))
    t = Targets(uuid.uuid4().hex[:8])
    print(
        f"logs in {workdir}; interval {args.interval:g}s; window {args.duration:g}s;"
        f" operator env {OPERATOR_ENV or 'default'}",
        flush=True,
    )
    sa = common.operator_kubeconfig(workdir)
    create_pg(t)
    queue(t)
    runs: list[Run] = []
    peer_results: list[tuple[int, peers.PeerResult]] = []
    try:
        with webapp(t, workdir) as url, contextlib.ExitStack() as extra:
            t.app_url = url
            if args.http_target == "nginx" and not storm:
                t.static_url = extra.enter_context(nginx(workdir))
            if storm:
                from benchmarks import health_storm  # it imports this module

                storms: list[health_storm.StormRun] = []
                for n in ns_values:
                    storms.append(health_storm.run_storm(n, args, t, sa, workdir))
                    health_storm.report_storms(storms)
                return
            for n in ns_values:
                if not args.no_mixed:
                    runs.append(
                        run_operator(
                            n, False, args.duration, t, sa, workdir, args.keep, args.interval
                        )
                    )
                    report_runs(runs)
                if not args.no_http_only:
                    runs.append(
                        run_operator(
                            n, True, args.duration, t, sa, workdir, args.keep, args.interval
                        )
                    )
                    report_runs(runs)
                if not args.no_peers:
                    targets = [f"{t.static_url or url}/"] * n
                    d = args.peer_duration
                    print(f"[{time.strftime('%H:%M:%S')}] peers at N={n}", flush=True)
                    every = args.interval
                    peer_results.append((n, peers.guide_curl_loop(targets, every, d)))
                    peer_results.append((n, peers.blackbox(targets, every, d)))
                    peer_results.append((n, peers.postgres_exporter(t.pg_url(), n, every, d)))
                    report_peers(peer_results)
    finally:
        drop_pg(t)
        queue(t, delete=True)
    print()
    report_runs(runs)
    if peer_results:
        report_peers(peer_results)


if __name__ == "__main__":
    main()
