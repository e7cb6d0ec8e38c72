"""Logs checks benchmark (issue 21): pods writing access logs, HealthPolicy ``logs`` checks.

Run: ``python -m benchmarks.logs [--pods 100] [--rate 200] [--checks 10] [--interval 10]
[--window 120] [--injections 12] [--burst 30] [--baseline 30] [--no-guide | --guide-sample K]``

Setup, in a fresh namespace: ``--checks`` Deployments (``logs-0`` ...) sharing ``--pods``
replicas between them, each pod a Python loop (the testbed's ``stronghold/base`` image, host
network: the testbed has no pod network) writing ``--rate`` nginx "combined" access-log lines
a second to stdout — mostly 200s, some 304/302/404/500, no line any default rule matches. Each
pod counts the lines and bytes it wrote into a file of a hostPath directory every second: the
written side is the pods' own count, not an estimate. One HealthPolicy per Deployment with one
``logs`` check on its pods (``pods: {targetRef: Deployment}``), ``interval`` ``--interval``,
``failureThreshold: 1``, ``maxBytes`` sized for the volume (``--max-bytes``; by default 4x
the bytes a check's pods write per interval, 1-16 MiB), the guide's rules with
``failed-logins`` overridden to fire above ``--burst - 10`` in ``1m``. ONE operator process
(``stronghold run --standalone -n <ns>``, as the other benchmarks start it).

Measured:

1. baseline (``--baseline`` s, pods writing, nothing reading): the CPU of the cluster's log
   path (kube-apiserver, kubelet, dockerd, containerd; from /proc) — the writing's own cost;
2. steady window (``--window`` s, after the operator caught up with the pods' history):
   operator CPU (/proc/<pid>/stat) per 1,000 lines read, RSS, the lines and bytes it read
   (its /metrics: ``stronghold_health_log_{lines,bytes}_read_total``,
   ``..._lines_dropped_total``) against the lines and bytes the pods wrote, the same
   cluster-side CPU;
3. detection delay: ``--injections`` bursts of ``--burst`` failed logins (401 lines), each
   written by one pod of one check (round-robin over the checks, a random pod, a random phase
   of the round) when the benchmark drops a file into the pod's control directory; the delay
   is from the pod's write to the HealthPolicy's status showing the ``failed-logins`` finding
   (a watch on the policies); p50/p99;
4. the guide's way (Security Operations → Log Analysis for Security Events), with the operator
   stopped: its five ``logs | grep`` pipelines per pod as ``kubectl logs --since=15m <pod>``
   (``--since=1h`` for the failed-login count), one pass over every pod: wall time, CPU of its
   processes (bash, kubectl, grep), the cluster side above the pods-only baseline; scaled to
   15 minutes of every pod's log (the pods are younger than 15 minutes; ``--guide-sample K``
   passes over K pods only). Its detection delay is up to its period (15 minutes, cron) plus
   a pass.

Everything created (namespace, pods, the hostPath directory) is removed at the end, also after
a failure or Ctrl-C (``--keep`` keeps the namespace).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kubernetes
from prometheus_client.parser import text_string_to_metric_families
from tests.integration import kit

from benchmarks import common
from benchmarks import health as bench
from benchmarks.common import Window, children_cpu_seconds, rss_mib, stop, table
from stronghold_testbed import paths
from stronghold_testbed.kubectl import run as kubectl_run

IMAGE = "stronghold/base:bookworm"  # built locally by the testbed; never pulled
GROUP, VERSION = "ops.stronghold.io", "v1alpha1"
CHECK = "access-logs"
RULE = "failed-logins"
STAMP_BYTES = 31  # "2026-12-06T04:00:00.123456789Z " the kubelet puts before each line
# The processes of the cluster's log path: writing (dockerd, containerd) and serving reads
# (kubelet, kube-apiserver). containerd-shim copies stdout and is the writing's alone.
SERVER_SIDE = ("kube-apiserver", "kubelet", "dockerd", "containerd")
GUIDE_PERIOD_S = 15 * 60  # the guide's cron: */15

# The pod: writes RATE combined lines a second in ticks of 0.1 s; a file /bench/ctl/<pod>
# holding "SEQ N" makes it write N failed logins at once and note when in /bench/done/;
# /bench/stat/<pod>.json holds its own count of what it wrote (lines, bytes), every second.
POD_PROGRAM = r"""
import json, os, random, sys, time
rate = float(sys.argv[1]); me = os.environ["POD_NAME"]
ctl, done, stat = "/bench/ctl/" + me, "/bench/done/", "/bench/stat/" + me + ".json"
rnd = random.Random(me)
paths = ["/", "/shop/", "/shop/item/%d/", "/static/app.%d.css", "/api/v1/orders/%d",
         "/accounts/profile/", "/search/?q=shoes&page=%d", "/cart/", "/media/img/%d.jpg"]
agents = ["Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
          " Chrome/120.0 Safari/537.36",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15"]
codes = [200] * 90 + [304] * 4 + [302] * 3 + [404] * 2 + [500]
pool = []
for _ in range(512):
    path = rnd.choice(paths)
    path = path % rnd.randint(1, 99999) if "%d" in path else path
    code = rnd.choice(codes)
    size = 0 if code == 304 else rnd.randint(200, 40000)
    pre = "10.%d.%d.%d - - [" % (rnd.randint(0, 255), rnd.randint(0, 255), rnd.randint(1, 254))
    post = '] "GET %s HTTP/1.1" %d %d "https://shop.example/" "%s"\n' % (
        path, code, size, rnd.choice(agents))
    pool.append((pre, post))
out = sys.stdout.buffer
lines = nbytes = 0
bursts = []
t0 = time.time(); last_stat = 0.0; tick = 0.1; k = 0
nxt = t0
while True:
    now = time.time()
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
    due = int((now - t0) * rate) - lines
    if due > 0:
        parts = []
        for _ in range(due):
            pre, post = pool[k % 512]; k += 1
            parts.append(pre + when + post)
        data = "".join(parts).encode()
        out.write(data); out.flush()
        lines += due; nbytes += len(data)
    if os.path.exists(ctl):
        seq, n = open(ctl).read().split()
        os.remove(ctl)
        data = "".join(
            '10.66.%d.%d - - [%s] "POST /accounts/login/ HTTP/1.1" 401 23 "-" "%s"\n'
            % (i // 250, i % 250 + 1, when, agents[0]) for i in range(int(n))).encode()
        out.write(data); out.flush()
        at = time.time()
        lines += int(n); nbytes += len(data); bursts.append([at, int(n)])
        with open(done + me + "." + seq + ".tmp", "w") as f:
            f.write(repr(at))
        os.replace(done + me + "." + seq + ".tmp", done + me + "." + seq)
    if now - last_stat >= 1.0:
        last_stat = now
        with open(stat + ".tmp", "w") as f:
            json.dump({"lines": lines, "bytes": nbytes, "started": t0, "at": now,
                       "bursts": bursts}, f)
        os.replace(stat + ".tmp", stat)
    nxt += tick
    time.sleep(max(0.0, nxt - time.time()))
"""

# The guide's security_monitor.sh for one pod, its `docker compose logs` as `kubectl logs`.
GUIDE_SCRIPT = r"""
LOG_FILE="$1"; shift
for pod in "$@"; do
  kubectl logs --since=15m "$pod" | grep "401\|403" | tail -10 >> "$LOG_FILE"
  kubectl logs --since=15m "$pod" | grep -i "union\|select\|insert\|drop\|delete" \
    | tail -10 >> "$LOG_FILE"
  kubectl logs --since=15m "$pod" | grep -E "(sqlmap|nikto|nmap|masscan)" >> "$LOG_FILE"
  FAILED_LOGINS=$(kubectl logs --since=1h "$pod" | grep "401" | wc -l)
  if [ "$FAILED_LOGINS" -gt 50 ]; then
    echo "$(date): SECURITY ALERT - Excessive failed logins: $FAILED_LOGINS ($pod)" >> "$LOG_FILE"
  fi
  kubectl logs --since=15m "$pod" | grep -i "admin\|superuser\|root" | tail -5 >> "$LOG_FILE"
done
"""


# --- the pods ---------------------------------------------------------------------------------


def deployment(name: str, replicas: int, rate: float, hostdir: Path) -> dict[str, Any]:
    labels = {"app": name, "stronghold-bench": "logs"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,  # the testbed has no pod network; nothing listens
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "web",
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-u", "-c", POD_PROGRAM, f"{rate:g}"],
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                }
                            ],
                            "volumeMounts": [{"name": "bench", "mountPath": "/bench"}],
                        }
                    ],
                    "volumes": [
                        {"name": "bench", "hostPath": {"path": str(hostdir), "type": "Directory"}}
                    ],
                },
            },
        },
    }


def split(total: int, parts: int) -> list[int]:
    """``total`` pods over ``parts`` Deployments, as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass
class Written:
    """The pods' own count of what they wrote (their stat files)."""

    lines: int = 0
    bytes: int = 0
    pods: int = 0
    per_pod: dict[str, dict[str, Any]] = field(default_factory=dict)


def written(hostdir: Path) -> Written:
    out = Written()
    for f in (hostdir / "stat").glob("*.json"):
        try:
            s = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # replaced under us: read again next time
        out.lines += int(s["lines"])
        out.bytes += int(s["bytes"])
        out.pods += 1
        out.per_pod[f.name.removesuffix(".json")] = s
    return out


def running_pods(ns: str, deploy: str | None = None) -> list[str]:
    sel = f"app={deploy}" if deploy else "stronghold-bench=logs"
    items = kit.kubectl_json("get", "pods", "-n", ns, "-l", sel).get("items", [])
    return sorted(
        p["metadata"]["name"]
        for p in items
        if (p.get("status") or {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    )


# --- policies and the operator ----------------------------------------------------------------


def policy(name: str, deploy: str, interval: float, max_bytes: int, burst: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HealthPolicy",
        "metadata": {"name": name},
        "spec": {
            "interval": f"{interval:g}s",
            "timeout": f"{interval:g}s",  # a round may read up to maxBytes from every pod
            "failureThreshold": 1,  # the delay measured is the operator's, not a threshold's
            "checks": [
                {
                    "name": CHECK,
                    "logs": {
                        "pods": {"targetRef": {"kind": "Deployment", "name": deploy}},
                        "maxBytes": max_bytes,
                        "rules": [{"name": RULE, "above": max(0, burst - 10), "window": "1m"}],
                    },
                }
            ],
        },
    }


def auto_max_bytes(pods_per_check: int, rate: float, line_bytes: float, interval: float) -> int:
    """4x what a check's pods write per interval (as served, with timestamps), 1-16 MiB."""
    want = 4 * pods_per_check * rate * (line_bytes + STAMP_BYTES) * interval
    return int(min(16 * 1024 * 1024, max(1024 * 1024, want)))


@dataclass
class Metrics:
    lines: float = 0.0
    bytes: float = 0.0
    dropped: float = 0.0
    rounds: float = 0.0


def scrape(url: str) -> Metrics:
    m = Metrics()
    for fam in text_string_to_metric_families(httpx.get(url, timeout=60).text):
        for s in fam.samples:
            if not s.name.endswith("_total"):
                continue
            if fam.name == "stronghold_health_log_lines_read":
                m.lines += s.value
            elif fam.name == "stronghold_health_log_bytes_read":
                m.bytes += s.value
            elif fam.name == "stronghold_health_log_lines_dropped":
                m.dropped += s.value
            elif fam.name == "stronghold_health_probe_requests" and s.labels["type"] == "logs":
                m.rounds += s.value
    return m


def server_pids() -> dict[str, list[int]]:
    """Pids of the cluster's log-path processes by name (read from /proc, never signalled)."""
    out: dict[str, list[int]] = {n: [] for n in SERVER_SIDE}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        if comm in out:
            out[comm].append(int(d.name))
    return out


def server_cpu(pids: dict[str, list[int]]) -> float:
    total = 0.0
    for group in pids.values():
        for pid in group:
            try:
                total += common.cpu_seconds(pid)
            except (OSError, IndexError):
                continue
    return total


# --- detection --------------------------------------------------------------------------------


def shows_finding(obj: dict[str, Any]) -> bool:
    for c in (obj.get("status") or {}).get("checks") or ():
        if c.get("name") == CHECK:
            return any(f.get("component") == RULE for f in c.get("findings") or ())
    return False


class FindingWatch(threading.Thread):
    """Watches the namespace's HealthPolicies; records when each one's status starts or stops
    showing the finding (the time the event arrived: an upper bound, no polling period)."""

    def __init__(self, ns: str) -> None:
        super().__init__(daemon=True)
        self.ns = ns
        self.lock = threading.Lock()
        self.showing: dict[str, bool] = {}
        self.changes: list[tuple[float, str, bool]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(paths.admin_kubeconfig()), client_configuration=cfg
        )
        with kubernetes.client.ApiClient(cfg) as api:
            co = kubernetes.client.CustomObjectsApi(api)
            while not self.stopping.is_set():
                w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
                try:
                    for ev in w.stream(  # type: ignore[no-untyped-call]
                        co.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.ns,
                        "healthpolicies",
                        timeout_seconds=300,
                    ):
                        self._seen(time.time(), ev["object"])
                        if self.stopping.is_set():
                            w.stop()  # type: ignore[no-untyped-call]
                except Exception:  # a broken watch: start another
                    time.sleep(1)

    def _seen(self, at: float, obj: dict[str, Any]) -> None:
        name, now = obj["metadata"]["name"], shows_finding(obj)
        with self.lock:
            if self.showing.get(name) != now:
                self.showing[name] = now
                self.changes.append((at, name, now))

    def shown_after(self, name: str, since: float) -> float | None:
        with self.lock:
            return next(
                (t for t, n, on in self.changes if n == name and on and t >= since),
                None,
            )

    def clear(self, name: str) -> bool:
        with self.lock:
            return self.showing.get(name) is False


@dataclass
class Injection:
    policy: str
    pod: str
    at: float  # when the pod wrote the burst (its clock: this machine's)
    delay: float | None  # until the status showed the finding; None: never within the wait


def inject(
    ns: str,
    hostdir: Path,
    watch: FindingWatch,
    checks: int,
    count: int,
    burst: int,
    interval: float,
) -> list[Injection]:
    out: list[Injection] = []
    rnd = random.Random(7)
    for i in range(count):
        c = i % checks
        name, deploy = f"logs-{c}", f"logs-{c}"
        kit.wait_until(
            f"{name} not showing the finding (its window of 1m ended)",
            lambda: watch.clear(name),  # noqa: B023 (called at once, in this iteration)
            timeout=300,
            interval=1,
        )
        pod = rnd.choice(running_pods(ns, deploy))
        time.sleep(rnd.uniform(0, interval))  # a random phase of the round
        seq = f"{i:03d}"
        tmp = hostdir / "ctl" / f".{pod}.tmp"
        tmp.write_text(f"{seq} {burst}")
        tmp.chmod(0o666)
        tmp.replace(hostdir / "ctl" / pod)
        done = hostdir / "done" / f"{pod}.{seq}"
        kit.wait_until(f"{pod} writing the burst", done.exists, timeout=30, interval=0.05)
        at = float(done.read_text())
        deadline = time.monotonic() + 3 * interval + 60
        seen = None
        while time.monotonic() < deadline and seen is None:
            seen = watch.shown_after(name, at)
            time.sleep(0.05)
        delay = None if seen is None else seen - at
        out.append(Injection(name, pod, at, delay))
        shown = "not shown" if delay is None else f"{delay:.2f}s"
        print(f"[{time.strftime('%H:%M:%S')}] burst {i + 1}/{count} in {pod}: {shown}", flush=True)
    return out


# --- the guide's way --------------------------------------------------------------------------


@dataclass
class GuidePass:
    pods: int  # the pods the pass went over
    all_pods: int
    wall: float
    cpu: float  # bash, kubectl, grep
    server_cpu: float  # the cluster's log path during the pass, the pods' writing included
    lines_covered: int  # lines in those pods' last 15 minutes (their own counts)
    alerts: int  # "SECURITY ALERT" lines the script wrote
    stderr: str


def guide_pass(
    ns: str, hostdir: Path, workdir: Path, pids: dict[str, list[int]], sample: int
) -> GuidePass:
    """One run of the guide's script over every pod (or ``sample`` of them)."""
    every = running_pods(ns)
    pods = sorted(random.Random(11).sample(every, sample)) if 0 < sample < len(every) else every
    log = workdir / "security_events.log"
    stats = written(hostdir).per_pod
    covered = 0
    for pod in pods:
        s = stats[pod]
        age = max(1e-3, float(s["at"]) - float(s["started"]))
        covered += int(s["lines"] * min(1.0, GUIDE_PERIOD_S / age))
    # kubectl's namespace from its kubeconfig's context, as a cron job's kubectl would have it.
    kubeconfig = workdir / "guide.kubeconfig"
    shutil.copy(paths.admin_kubeconfig(), kubeconfig)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    subprocess.run(
        ["kubectl", "config", "set-context", "--current", f"--namespace={ns}"],
        env=env,
        check=True,
        capture_output=True,
    )
    cpu0, srv0, t0 = children_cpu_seconds(), server_cpu(pids), time.monotonic()
    proc = subprocess.run(
        ["bash", "-c", GUIDE_SCRIPT, "guide", str(log), *pods],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    cpu, srv = children_cpu_seconds() - cpu0, server_cpu(pids) - srv0
    alerts = log.read_text().count("SECURITY ALERT") if log.exists() else 0
    errors = "\n".join(x for x in proc.stderr.splitlines() if "version difference" not in x)
    return GuidePass(len(pods), len(every), wall, cpu, srv, covered, alerts, errors[:500])


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Steady:
    wall: float
    cpu: float
    rss_max: float
    rounds: float
    lines_written: int
    bytes_written: int
    lines_read: float
    bytes_read: float
    dropped: float
    server_cpu: float
    # Since the operator started (its first round reads back to the pods' start).
    total_lines_written: int = 0
    total_lines_read: float = 0.0
    total_bytes_written: int = 0
    total_bytes_read: float = 0.0


@dataclass
class Setup:
    pods: int
    rate: float
    checks: int
    interval: float
    max_bytes: int
    burst: int
    line_bytes: float = 0.0
    baseline_server_cpu: float = 0.0  # CPU seconds per second, pods writing, nobody reading
    warmup_s: float = 0.0
    caught_up: bool = True
    sample: str = ""


def caught_up(ns: str, checks: int, op: bench.Operator, hostdir: Path, interval: float) -> bool:
    """Rounds read about what the pods write (no more history to catch up with)."""
    m0, w0, t0 = scrape(op.metrics_url), written(hostdir), time.monotonic()
    time.sleep(2 * interval)
    m1, w1, dt = scrape(op.metrics_url), written(hostdir), time.monotonic() - t0
    served = (w1.bytes - w0.bytes + STAMP_BYTES * (w1.lines - w0.lines)) / dt
    read = (m1.bytes - m0.bytes) / dt
    print(
        f"[{time.strftime('%H:%M:%S')}] rounds {m1.rounds:g}; reading {read / 1e6:.2f} MB/s,"
        f" pods writing {served / 1e6:.2f} MB/s (with timestamps)",
        flush=True,
    )
    states = check_states(ns)
    print(f"    checks: {states}", flush=True)
    return (
        m1.rounds >= 3 * checks
        and 0.5 * served < read < 1.5 * served
        and bench.statuses_written(ns, checks)
    )


def check_states(ns: str) -> dict[str, int]:
    """How many logs checks are in each state (and why, when Unknown)."""
    out: dict[str, int] = {}
    for item in kit.kubectl_json("get", "healthpolicies", "-n", ns).get("items", []):
        for c in (item.get("status") or {}).get("checks") or ():
            key = str(c.get("state", "none"))
            if key == "Unknown":
                key += f" ({str(c.get('message', ''))[:120]})"
            out[key] = out.get(key, 0) + 1
    return out


def measure(op: bench.Operator, hostdir: Path, pids: dict[str, list[int]], window: float) -> Steady:
    m0, w0, srv0 = scrape(op.metrics_url), written(hostdir), server_cpu(pids)
    rss = 0.0
    with Window(op.proc.pid) as w:
        end = time.monotonic() + window
        while time.monotonic() < end:
            rss = max(rss, rss_mib(op.proc.pid))
            time.sleep(min(2.0, max(0.0, end - time.monotonic())))
    m1, w1, srv1 = scrape(op.metrics_url), written(hostdir), server_cpu(pids)
    return Steady(
        wall=w.wall,
        cpu=w.cpu,
        rss_max=max(rss, rss_mib(op.proc.pid)),
        rounds=m1.rounds - m0.rounds,
        lines_written=w1.lines - w0.lines,
        bytes_written=w1.bytes - w0.bytes,
        lines_read=m1.lines - m0.lines,
        bytes_read=m1.bytes - m0.bytes,
        dropped=m1.dropped - m0.dropped,
        server_cpu=srv1 - srv0,
        total_lines_written=w1.lines,
        total_lines_read=m1.lines,
        total_bytes_written=w1.bytes,
        total_bytes_read=m1.bytes,
    )


def sample_check(ns: str, hostdir: Path) -> str:
    """One pod: the lines its own count says it wrote against what ``kubectl logs`` returns."""
    pod = running_pods(ns)[0]
    before = written(hostdir).per_pod[pod]["lines"]
    code, out, err = kubectl_run("logs", pod, "-n", ns)
    time.sleep(1.5)  # the pod writes its count every second: one written after the read
    after = written(hostdir).per_pod[pod]["lines"]
    got = out.count("\n")
    if code != 0:
        return f"{pod}: kubectl logs failed: {err.strip()[:200]}"
    ok = "ok" if before - 1 <= got <= after + 1 else "MISMATCH"
    return f"{pod}: counted {before}-{after} lines written, kubectl logs returned {got} ({ok})"


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def report(
    setup: Setup,
    steady: Steady | None,
    shots: Sequence[Injection],
    guide: GuidePass | None,
) -> None:
    per = f"{setup.pods} pods x {setup.rate:g} lines/s, {setup.checks} checks"
    if steady is not None:
        s = steady
        table(
            f"Logs checks, steady window: {per}, interval {setup.interval:g}s,"
            f" maxBytes {setup.max_bytes / 1048576:.1f} MiB",
            [
                "window s",
                "lines written/s",
                "lines read/s",
                "read/written lines",
                "MB written/s",
                "MB read/s",
                "read/written bytes",
                "read/(written+stamps)",
                "dropped",
                "rounds",
            ],
            [
                [
                    f"{s.wall:.0f}",
                    f"{s.lines_written / s.wall:.0f}",
                    f"{s.lines_read / s.wall:.0f}",
                    s.lines_read / max(1, s.lines_written),
                    f"{s.bytes_written / s.wall / 1e6:.3f}",
                    f"{s.bytes_read / s.wall / 1e6:.3f}",
                    s.bytes_read / max(1, s.bytes_written),
                    s.bytes_read / max(1, s.bytes_written + STAMP_BYTES * s.lines_written),
                    f"{s.dropped:g}",
                    f"{s.rounds:g}",
                ]
            ],
        )
        table(
            "Logs checks, cost in the steady window",
            [
                "operator CPU % of a core",
                "ms CPU / 1,000 lines read",
                "ms CPU / 1,000 lines written",
                "RSS max MiB",
                "cluster log path CPU % (baseline: pods only)",
                "since start: lines read/written",
                "since start: bytes read/written",
                "warm-up s",
            ],
            [
                [
                    100 * s.cpu / s.wall,
                    1e6 * s.cpu / max(1.0, s.lines_read),
                    1e6 * s.cpu / max(1, s.lines_written),
                    f"{s.rss_max:.0f}",
                    f"{100 * s.server_cpu / s.wall:.1f} ({100 * setup.baseline_server_cpu:.1f})",
                    s.total_lines_read / max(1, s.total_lines_written),
                    s.total_bytes_read / max(1, s.total_bytes_written),
                    f"{setup.warmup_s:.0f}" + ("" if setup.caught_up else " (never caught up)"),
                ]
            ],
        )
    if shots:
        delays = [x.delay for x in shots if x.delay is not None]
        row: list[object] = [len(shots), len(delays)]
        if delays:
            row += [quantile(delays, 0.5), quantile(delays, 0.99), max(delays), min(delays)]
        else:
            row += ["n/a"] * 4
        table(
            f"Detection delay: a burst of {setup.burst} failed logins (rule: more than"
            f" {max(0, setup.burst - 10)} in 1m) written by one pod -> the policy's status"
            f" shows the finding (interval {setup.interval:g}s)",
            ["bursts", "shown", "p50 s", "p99 s", "max s", "min s"],
            [row],
        )
    if guide is not None:
        g = guide
        # Per 15 minutes of log of every pod at the rate written (the guide's steady state);
        # the pass measured covered g.lines_covered lines: its costs scale with the lines.
        rate = steady.lines_written / steady.wall if steady is not None else setup.rate * setup.pods
        full = rate * GUIDE_PERIOD_S / max(1, g.lines_covered)
        g_server = max(0.0, g.server_cpu - setup.baseline_server_cpu * g.wall)
        rows: list[list[object]] = [
            [
                "guide: kubectl logs | grep, every 15 min",
                f"{g.pods} of {g.all_pods} pods: {g.lines_covered} lines, {g.wall:.1f}s",
                g.wall * full,
                g.cpu * full,
                g_server * full,
                100 * g.cpu * full / GUIDE_PERIOD_S,
                1e6 * g.cpu / max(1, g.lines_covered),
                f"up to {GUIDE_PERIOD_S // 60} min + a pass",
            ]
        ]
        if steady is not None:
            s = steady
            delays = [x.delay for x in shots if x.delay is not None]
            rows.append(
                [
                    f"stronghold: {setup.checks} logs checks, every {setup.interval:g}s",
                    f"{setup.pods} pods: {s.lines_read:.0f} lines read in {s.wall:.0f}s",
                    "-",
                    s.cpu / s.wall * GUIDE_PERIOD_S,
                    (s.server_cpu / s.wall - setup.baseline_server_cpu) * GUIDE_PERIOD_S,
                    100 * s.cpu / s.wall,
                    1e6 * s.cpu / max(1, s.lines_written),
                    f"p50 {quantile(delays, 0.5):.1f}s, p99 {quantile(delays, 0.99):.1f}s"
                    if delays
                    else "n/a",
                ]
            )
        table(
            "Side by side, per 15 minutes of every pod's log (the guide's period; the guide's"
            " pass scaled from what it covered)",
            [
                "who",
                "measured",
                "pass wall s / 15 min",
                "client CPU s / 15 min",
                "cluster log path CPU s / 15 min (above baseline)",
                "client % of a core",
                "ms client CPU / 1,000 lines of log",
                "detection delay",
            ],
            rows,
        )
        print(
            f"guide pass: {g.alerts} 'SECURITY ALERT' lines (its grep 401 also matches"
            " sizes, paths and addresses containing 401); cluster log path CPU is that of"
            " kube-apiserver, kubelet, dockerd and containerd above the pods-only baseline"
        )
        if g.stderr:
            print(f"guide pass stderr: {g.stderr}")
    if setup.sample:
        print(f"sample: {setup.sample}")


def run(args: Any, workdir: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    ns = f"bench-logs-{tag}"
    hostdir = Path(tempfile.mkdtemp(prefix=f"stronghold-bench-logs-{tag}-", dir="/tmp"))
    hostdir.chmod(0o755)
    for sub in ("ctl", "done", "stat"):
        (hostdir / sub).mkdir()
        (hostdir / sub).chmod(0o777)  # the pods run as uid 999
    sizes = split(args.pods, args.checks)
    setup = Setup(args.pods, args.rate, args.checks, args.interval, 0, args.burst)
    pids = server_pids()
    sa = common.operator_kubeconfig(workdir)
    op: bench.Operator | None = None
    watch: FindingWatch | None = None
    steady: Steady | None = None
    shots: list[Injection] = []
    guide: GuidePass | None = None
    print(f"[{time.strftime('%H:%M:%S')}] {ns}: {args.pods} pods in {sizes}", flush=True)
    kit.kubectl("create", "namespace", ns)
    try:
        items = [deployment(f"logs-{i}", n, args.rate, hostdir) for i, n in enumerate(sizes) if n]
        kit.kubectl(
            "apply",
            "-n",
            ns,
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        kit.wait_until(
            f"{args.pods} pods writing",
            lambda: written(hostdir).pods >= args.pods,
            timeout=120 + 3 * args.pods,
            interval=2,
        )
        w = written(hostdir)
        setup.line_bytes = w.bytes / max(1, w.lines)
        setup.max_bytes = args.max_bytes or auto_max_bytes(
            max(sizes), args.rate, setup.line_bytes, args.interval
        )
        if args.baseline > 0:
            srv0, t0 = server_cpu(pids), time.monotonic()
            time.sleep(args.baseline)
            setup.baseline_server_cpu = (server_cpu(pids) - srv0) / (time.monotonic() - t0)
        print(
            f"[{time.strftime('%H:%M:%S')}] pods writing ({setup.line_bytes:.0f} B/line);"
            f" maxBytes {setup.max_bytes}; cluster log path"
            f" {100 * setup.baseline_server_cpu:.1f}% of a core; starting the operator",
            flush=True,
        )
        pols = [
            policy(f"logs-{i}", f"logs-{i}", args.interval, setup.max_bytes, args.burst)
            for i, n in enumerate(sizes)
            if n
        ]
        kit.kubectl(
            "create",
            "-n",
            ns,
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": pols}),
        )
        watch = FindingWatch(ns)
        watch.start()
        op = bench.start_operator(sa, ns, workdir / "operator.log", {})
        t0 = time.monotonic()
        deadline = t0 + args.warmup_timeout
        while True:
            if caught_up(ns, len(pols), op, hostdir, args.interval):
                break
            if time.monotonic() > deadline:
                setup.caught_up = False
                print("note: the operator did not catch up; measuring anyway", flush=True)
                break
        setup.warmup_s = time.monotonic() - t0
        if scrape(op.metrics_url).lines == 0:
            raise SystemExit(f"the operator read no log line; its checks: {check_states(ns)}")
        print(f"[{time.strftime('%H:%M:%S')}] measuring {args.window:g}s", flush=True)
        steady = measure(op, hostdir, pids, args.window)
        report(setup, steady, shots, guide)
        if args.injections:
            shots = inject(
                ns, hostdir, watch, len(pols), args.injections, args.burst, args.interval
            )
        if "Traceback" in op.log.read_text(errors="replace"):
            print(f"note: the operator logged a traceback, see {op.log}")
        stop(op.proc)
        op = None
        setup.sample = sample_check(ns, hostdir)
        if not args.no_guide:
            print(f"[{time.strftime('%H:%M:%S')}] the guide's script, one pass", flush=True)
            guide = guide_pass(ns, hostdir, workdir, pids, args.guide_sample)
        print()
        report(setup, steady, shots, guide)
    finally:
        if op is not None:
            stop(op.proc)
        if watch is not None:
            watch.stopping.set()
        if args.keep:
            print(f"kept namespace {ns} and {hostdir}")
        else:
            bench.remove(ns)
            kit.wait_until(
                f"namespace {ns} gone",
                lambda: "NotFound" in kit.kubectl("get", "namespace", ns, check=False),
                timeout=300,
                interval=2,
            )
            shutil.rmtree(hostdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    ap = common.parser("logs", __doc__)
    ap.add_argument("--pods", type=int, default=100, help="pods writing access logs")
    ap.add_argument("--rate", type=float, default=200, help="lines per second per pod")
    ap.add_argument("--checks", type=int, default=10, help="HealthPolicies (one logs check each)")
    ap.add_argument("--interval", type=float, default=10, help="the policies' interval, seconds")
    ap.add_argument("--window", type=float, default=120, help="steady window, seconds")
    ap.add_argument("--baseline", type=float, default=30, help="pods-only window, seconds")
    ap.add_argument("--injections", type=int, default=12, help="bursts of failed logins")
    ap.add_argument("--burst", type=int, default=30, help="failed logins per burst")
    ap.add_argument("--max-bytes", type=int, default=0, help="the checks' maxBytes (0: auto)")
    ap.add_argument("--warmup-timeout", type=float, default=600, help="seconds to catch up")
    ap.add_argument("--no-guide", action="store_true", help="skip the guide's script")
    ap.add_argument(
        "--guide-sample", type=int, default=0, help="the guide's pass over this many pods (0: all)"
    )
    args = ap.parse_args(argv)
    if args.checks < 1 or args.pods < args.checks:
        raise SystemExit("need at least one check and a pod per check")
    common.check_cluster("read the pods' logs too")
    os.environ["KUBECONFIG"] = str(paths.admin_kubeconfig())
    workdir = Path(tempfile.mkdtemp(prefix="stronghold-bench-logs-"))
    print(f"logs in {workdir}", flush=True)
    run(args, workdir)


if __name__ == "__main__":
    main()
