"""ScalingPolicy side by side with the real HPA on the local cluster, under the same load.

Run: ``.venv/bin/python -m benchmarks.scaling [--quick]`` (full ~14 min, quick ~7 min).

Two identical Deployments in one fresh namespace, both min 1 / max 4, busybox pods
(``hostNetwork``, CPU request 100m / limit 200m, memory 32Mi / 64Mi):

- ``web-hpa`` under a HorizontalPodAutoscaler (autoscaling/v2beta2, the version the 1.20
  cluster serves) with a target of 80 % average CPU utilisation, run by the real
  kube-controller-manager (sync period 15 s). For a fair comparison its
  ``behavior.scaleDown.stabilizationWindowSeconds`` equals the policy's ``sustainedFor``;
  everything else is HPA's default (scale-up: no stabilisation, +100 % or +4 pods per 15 s;
  scale-down: -100 % per 15 s; 10 % tolerance).
- ``web-spol`` under a ScalingPolicy with the guide's bands (up: CPU > 80 % or memory > 85 %;
  down: CPU < 40 % and memory < 50 % sustained for ``sustainedFor``), run by the real operator
  (``stronghold run --standalone -n <namespace>``, a host process under the operator's
  ServiceAccount and ClusterRole from ``manifests/``). ``sustainedFor`` is shortened from the
  guide's 30 min to 120 s (60 s with ``--quick``) and ``scaleDown.cooldown`` from 5 min to 30 s,
  or a 4 -> 1 scale-down (one pod per step) would not fit in the run; every other field is
  the default (interval 15 s like HPA's sync period, step 4 pods / 100 %, scale-up cooldown
  1 min that ends once every new pod is measured — ``--full-cooldown`` waits it out, the
  behaviour before issue 22) except the scale-down step: 100 %, HPA's default scale-down
  policy, which the policy bounds by what the load needs at the middle of its bands (the
  guide's default is one pod per step).

Both read the same metrics.k8s.io API (the testbed's stand-in for metrics-server: pod CPU
from Docker stats, sampled every 5 s).

The load is distributed like web traffic behind a load balancer: a total load L (millicores)
per Deployment is shared by its ready pods, so adding a pod lowers every pod's utilisation.
Each pod runs a busybox ``sh`` loop with a 1 s period: it reads its share in millicores from
a file in a hostPath directory (one directory per Deployment), burns that many milliseconds
of CPU time (measured on its own utime+stime, not wall time, so a pod asked for 100m uses
100m) and sleeps the rest of the second; the 200m CFS quota caps it at its limit. On a
machine that is CPU-starved the pods get less than asked; the report shows CPU used / asked
(from the metrics API) and how busy the whole machine was, so a noisy run is visible.
This driver rewrites each share file every second (atomically, by rename) as
``min(200m, L / readyReplicas)`` from the Deployment's status, which is the suggested
``min(1, L / (ready x limit))`` duty cycle expressed in millicores. When L exceeds what the
ready pods can serve (``ready x 200m``), the excess is counted as
"load not served" (core-seconds) — the price of scaling late.

Phases: (1) idle baseline; (2) load step to L (default 300m: 3.75 pods' worth at 80 %, so
both should settle at 4); (3) oscillating load, L for 45 s then ``--low`` (60m) for 45 s,
4 cycles — faster than ``sustainedFor``, so neither should scale down; (4) load off until
both are back at 1 replica (or a time limit). The Deployments are read from the apiserver
every second (the driver needs readyReplicas for the shares anyway); the utilisation
each autoscaler reports is read every 2 s. Scale events are changes of ``spec.replicas``;
replica-minutes integrate ``status.replicas`` (pods that exist) over the whole run.

Needs: the local cluster up (``stronghold-testbed cluster up``) with the metrics API, the
``stronghold/busybox:1`` image, and no in-cluster operator (two operators would both act).
Cleans up: stops the operator it started, deletes the namespace and the share files.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from tests.integration import kit
from tests.support.workloads import busybox_deployment

from benchmarks import common
from benchmarks.common import table
from stronghold_testbed import paths

REQUEST_M = 100
LIMIT_M = 200
MIN_REPLICAS = 1
MAX_REPLICAS = 4
HPA = "web-hpa"
SPOL = "web-spol"
NAMES = (HPA, SPOL)
LABELS = {HPA: "HPA (v2beta2, 80 % CPU)", SPOL: "ScalingPolicy (guide's bands)"}
LOAD_ROOT = Path("/tmp/stronghold-bench-scaling")

# One pod's load generator, with a 1 s period: burn the share of CPU time named in
# /load/share (millicores = ms of CPU per second, measured on the shell's own utime+stime in
# /proc/self/stat), then sleep the rest of the second (wall clock from /proc/uptime). The CFS
# quota caps a busy pod at its 200m limit. "read" is a builtin: the busy loop forks nothing,
# and its redirection is opened by the shell itself, so /proc/self is the shell. (Not /proc/$$:
# Kubernetes reduces "$$" to "$" in a container's command.)
# Checked on this machine: 20/60/150m asked -> cgroup cpuacct usage within a few millicores.
LOAD_LOOP = r"""
acc=0
while :; do
  m=0
  read m < /load/share 2>/dev/null
  case "$m" in ''|*[!0-9]*) m=0;; esac
  read up rest < /proc/uptime
  now=${up%.*}${up#*.}
  next=$((now + 100))
  read _ _ _ _ _ _ _ _ _ _ _ _ _ ut st rest < /proc/self/stat
  used=$((ut + st))
  acc=$((acc + m))
  goal=$((used + acc / 10))
  acc=$((acc % 10))
  while [ "$used" -lt "$goal" ] && [ "$now" -lt "$next" ]; do
    read _ _ _ _ _ _ _ _ _ _ _ _ _ ut st rest < /proc/self/stat
    used=$((ut + st))
    read up rest < /proc/uptime
    now=${up%.*}${up#*.}
  done
  left=$((next - now))
  if [ "$left" -ge 100 ]; then sleep 1
  elif [ "$left" -ge 10 ]; then sleep "0.$left"
  elif [ "$left" -gt 0 ]; then sleep "0.0$left"
  fi
done
"""


@dataclass(frozen=True)
class Settings:
    baseline: float
    step: float
    high: float  # one oscillation half-period at the high load
    low_for: float  # ... and at the low load
    cycles: int
    end_max: float  # at most this long after the load ends
    settle: float  # end early once both have been at min this long
    load_m: int
    low_m: int
    sustained_for: int
    scale_down_cooldown: int
    full_cooldown: bool = False  # scaleUp.fullCooldown: the pre-issue-22 fixed 1 min wait

    @classmethod
    def full(cls, load_m: int, low_m: int) -> Settings:
        return cls(60, 180, 45, 45, 4, 420, 30, load_m, low_m, 120, 30)

    @classmethod
    def quick(cls, load_m: int, low_m: int) -> Settings:
        return cls(20, 100, 25, 25, 2, 200, 15, load_m, low_m, 60, 30)


@dataclass(frozen=True)
class Segment:
    phase: str
    start: float
    end: float
    load_m: int


def schedule(s: Settings) -> list[Segment]:
    """The load over time, in seconds from the start of the baseline."""
    segs = [Segment("baseline", 0, s.baseline, 0)]
    t = s.baseline
    segs.append(Segment("step", t, t + s.step, s.load_m))
    t += s.step
    for _ in range(s.cycles):
        segs.append(Segment("oscillation", t, t + s.high, s.load_m))
        segs.append(Segment("oscillation", t + s.high, t + s.high + s.low_for, s.low_m))
        t += s.high + s.low_for
    segs.append(Segment("end", t, t + s.end_max, 0))
    return segs


def phase_start(segs: Sequence[Segment], phase: str) -> float:
    return min(seg.start for seg in segs if seg.phase == phase)


@dataclass(frozen=True)
class Tick:
    t: float
    phase: str
    load_m: int
    spec: dict[str, int]
    replicas: dict[str, int]
    ready: dict[str, int]
    cpu: dict[str, float | None]  # average utilisation % as each autoscaler reported it
    used_m: dict[str, float | None]  # the pods' CPU usage from metrics.k8s.io, millicores


# --- the objects under test ------------------------------------------------------------


def deployment(name: str, load_dir: Path) -> dict[str, Any]:
    resources = {
        "requests": {"cpu": f"{REQUEST_M}m", "memory": "32Mi"},
        "limits": {"cpu": f"{LIMIT_M}m", "memory": "64Mi"},
    }
    return busybox_deployment(
        name,
        LOAD_LOOP,
        replicas=MIN_REPLICAS,
        resources=resources,
        host_dir=load_dir,
        mount="/load",
    )


def hpa(s: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2beta2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": HPA},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": HPA},
            "minReplicas": MIN_REPLICAS,
            "maxReplicas": MAX_REPLICAS,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
            # The same scale-down delay as the policy's sustainedFor (the fair comparison).
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": s.sustained_for}},
        },
    }


def scaling_policy(s: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": {"name": SPOL},
        "spec": {
            "targetRef": {"kind": "Deployment", "name": SPOL},
            "minReplicas": MIN_REPLICAS,
            "maxReplicas": MAX_REPLICAS,
            "scaleUp": {
                "cpuAbovePercent": 80,
                "memoryAbovePercent": 85,
                "fullCooldown": s.full_cooldown,
            },
            "scaleDown": {
                "cpuBelowPercent": 40,
                "memoryBelowPercent": 50,
                "sustainedFor": f"{s.sustained_for}s",
                "cooldown": f"{s.scale_down_cooldown}s",
                # HPA's default scale-down policy (-100 % per period); the policy stops at
                # what the load needs at the bands' middle (the guide's default: 1 pod).
                "maxStep": {"percent": 100},
            },
        },
    }


# --- setup -------------------------------------------------------------------------------


def check_cluster() -> None:
    common.check_cluster("act on the ScalingPolicy too")
    out = kit.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes", check=False)
    if '"NodeMetricsList"' not in out:
        raise SystemExit(f"metrics.k8s.io is not served ({out.strip()[:200]})")


def write_share(load_dir: Path, millicores: int) -> None:
    """Atomically (rename), so a pod never reads a half-written file."""
    tmp = load_dir / ".share.tmp"
    tmp.write_text(f"{millicores}\n")
    os.replace(tmp, load_dir / "share")


def share_for(load_m: int, ready: int) -> int:
    """Each ready pod's part of the total load, at most what its CPU limit lets it use."""
    if load_m <= 0:
        return 0
    return LIMIT_M if ready <= 0 else min(LIMIT_M, math.ceil(load_m / ready))


def get_obj(co: Any, ns: str, group: str, version: str, plural: str, name: str) -> Any:
    try:
        return co.get_namespaced_custom_object(group, version, ns, plural, name)
    except kubernetes.client.ApiException:
        return None


def observed_cpu(co: Any, ns: str) -> dict[str, float | None]:
    """The average CPU utilisation each autoscaler last reported in its status."""
    out: dict[str, float | None] = {HPA: None, SPOL: None}
    h = get_obj(co, ns, "autoscaling", "v2beta2", "horizontalpodautoscalers", HPA)
    for m in ((h or {}).get("status") or {}).get("currentMetrics") or []:
        value = ((m.get("resource") or {}).get("current") or {}).get("averageUtilization")
        if value is not None:
            out[HPA] = float(value)
    p = get_obj(co, ns, "ops.stronghold.io", "v1alpha1", "scalingpolicies", SPOL)
    value = ((p or {}).get("status") or {}).get("currentCpuUtilizationPercent")
    out[SPOL] = None if value is None else float(value)
    return out


def cpu_millicores(quantity: str) -> float:
    """A Kubernetes CPU quantity ("250m", "123456n", "1") in millicores."""
    scale = {"n": 1e-6, "u": 1e-3, "m": 1.0}
    if quantity and quantity[-1] in scale:
        return float(quantity[:-1]) * scale[quantity[-1]]
    return float(quantity) * 1000


def used_cpu(co: Any, ns: str) -> dict[str, float | None]:
    """Total CPU the pods of each Deployment used, as the metrics API reports it."""
    try:
        body = co.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", ns, "pods")
    except kubernetes.client.ApiException:
        return {k: None for k in NAMES}
    out: dict[str, float | None] = {}
    for k in NAMES:
        pods = [p for p in body.get("items", []) if p["metadata"]["name"].startswith(f"{k}-")]
        out[k] = (
            sum(cpu_millicores(c["usage"]["cpu"]) for p in pods for c in p["containers"])
            if pods
            else None
        )
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def wait_ready(apps: Any, co: Any, ns: str) -> None:
    """Both Deployments at 1 ready pod and both autoscalers seeing utilisation."""

    def ready() -> bool:
        deps = {d.metadata.name: d for d in apps.list_namespaced_deployment(ns).items}
        if any((deps[n].status.ready_replicas or 0) != MIN_REPLICAS for n in NAMES):
            return False
        return all(v is not None for v in observed_cpu(co, ns).values())

    kit.wait_until("both Deployments ready and both autoscalers reading CPU", ready, 240, 2)


# --- the run -------------------------------------------------------------------------------


def drive(
    apps: Any, co: Any, ns: str, s: Settings, segs: Sequence[Segment], dirs: dict[str, Path]
) -> tuple[list[Tick], float]:
    """Apply the load schedule, second by second; record what the apiserver says.

    Returns the ticks and how busy the whole machine was meanwhile (percent of all cores).
    """
    ticks: list[Tick] = []
    busy0, total0 = machine_cpu()
    cpu: dict[str, float | None] = {n: None for n in NAMES}
    used: dict[str, float | None] = {n: None for n in NAMES}
    t0 = time.monotonic()
    n = 0
    phase = ""
    at_min_since: float | None = None
    while True:
        t = time.monotonic() - t0
        seg = next((g for g in segs if g.start <= t < g.end), None)
        if seg is None:
            break
        if seg.phase != phase:
            phase = seg.phase
            print(f"[{t:5.0f}s] phase {phase}: load {seg.load_m}m", flush=True)
        try:
            deps = {d.metadata.name: d for d in apps.list_namespaced_deployment(ns).items}
            spec = {k: int(deps[k].spec.replicas or 0) for k in NAMES}
            replicas = {k: int(deps[k].status.replicas or 0) for k in NAMES}
            ready = {k: int(deps[k].status.ready_replicas or 0) for k in NAMES}
            if n % 2 == 0:
                cpu = observed_cpu(co, ns)
                used = used_cpu(co, ns)
        except Exception as exc:  # a missed read keeps the last values; the run goes on
            print(f"[{t:5.0f}s] apiserver read failed: {exc}", flush=True)
            if not ticks:
                raise
            last = ticks[-1]
            spec, replicas, ready = last.spec, last.replicas, last.ready
        for k in NAMES:
            write_share(dirs[k], share_for(seg.load_m, ready[k]))
            if ticks and spec[k] != ticks[-1].spec[k]:
                print(f"[{t:5.0f}s] {k}: {ticks[-1].spec[k]} -> {spec[k]} ({phase})", flush=True)
        ticks.append(Tick(t, phase, seg.load_m, spec, replicas, ready, dict(cpu), dict(used)))
        if phase == "end":
            at_min = all(spec[k] == MIN_REPLICAS and replicas[k] == MIN_REPLICAS for k in NAMES)
            at_min_since = (at_min_since if at_min_since is not None else t) if at_min else None
            if at_min_since is not None and t - at_min_since >= s.settle:
                print(f"[{t:5.0f}s] both back at {MIN_REPLICAS} replica: done", flush=True)
                break
        n += 1
        # To the next whole second of the run (a slow read delays; it never bunches ticks).
        time.sleep(1 - (time.monotonic() - t0) % 1)
    for k in NAMES:
        write_share(dirs[k], 0)
    busy1, total1 = machine_cpu()
    return ticks, 100 * (busy1 - busy0) / max(1.0, total1 - total0)


# --- analysis (pure) -------------------------------------------------------------------------


@dataclass
class Result:
    first_up: float | None = None
    steady: int = 0
    to_steady: float | None = None
    to_steady_ready: float | None = None
    cpu_end_of_step: float | None = None
    osc_up: int = 0
    osc_down: int = 0
    to_min: float | None = None
    replica_minutes: float = 0.0
    max_replicas: int = 0
    not_served: float = 0.0  # core-seconds of load above what the ready pods could serve
    delivered: float | None = None  # CPU used / asked while loaded (metrics API)
    events: list[tuple[float, str, int, int]] = field(default_factory=list)


def analyse(ticks: Sequence[Tick], segs: Sequence[Segment], name: str) -> Result:
    r = Result()
    t_step, t_osc, t_end = (phase_start(segs, p) for p in ("step", "oscillation", "end"))
    for prev, cur in itertools.pairwise(ticks):
        dt = cur.t - prev.t
        r.replica_minutes += prev.replicas[name] * dt / 60
        r.not_served += max(0, prev.load_m - prev.ready[name] * LIMIT_M) * dt / 1000
        if cur.spec[name] != prev.spec[name]:
            r.events.append((cur.t, cur.phase, prev.spec[name], cur.spec[name]))
    r.max_replicas = max(t.spec[name] for t in ticks)
    loaded = [t for t in ticks if t.load_m > 0 and t.used_m[name] is not None]
    asked = sum(min(t.load_m, max(t.ready[name], 1) * LIMIT_M) for t in loaded)
    if asked:
        r.delivered = sum(t.used_m[name] or 0.0 for t in loaded) / asked

    before = [t for t in ticks if t.t < t_step]
    start = before[-1].spec[name] if before else MIN_REPLICAS
    ups = [e for e in r.events if e[0] >= t_step and e[3] > start]
    r.first_up = ups[0][0] - t_step if ups else None

    step = [t for t in ticks if t_step <= t.t < t_osc]
    if step:
        r.steady = step[-1].spec[name]
        r.cpu_end_of_step = step[-1].cpu[name]
        changes = [e for e in r.events if t_step <= e[0] < t_osc]
        if changes:
            t_change = changes[-1][0]
            r.to_steady = t_change - t_step
            ready_at = next(  # possibly after the phase ended
                (t.t for t in ticks if t.t >= t_change and t.ready[name] == r.steady), None
            )
            r.to_steady_ready = None if ready_at is None else ready_at - t_step

    for _, phase, a, b in r.events:
        if phase == "oscillation":
            r.osc_up += b > a
            r.osc_down += b < a

    end = [t for t in ticks if t.t >= t_end]
    if end and end[-1].spec[name] == MIN_REPLICAS:
        i = len(end)
        while i > 0 and end[i - 1].spec[name] == MIN_REPLICAS:
            i -= 1
        r.to_min = end[i].t - t_end if i < len(end) else None
    return r


def _s(v: float | None, limit: str = "n/a") -> str:
    return limit if v is None else f"{v:.0f} s"


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{100 * ratio:.0f} %"


def report(ticks: Sequence[Tick], segs: Sequence[Segment], s: Settings, busy: float) -> None:
    res = {k: analyse(ticks, segs, k) for k in NAMES}
    end_for = ticks[-1].t - phase_start(segs, "end")
    rows: list[list[object]] = [
        ["time to first scale-up after the step", *(_s(res[k].first_up) for k in NAMES)],
        [
            "time to steady count (spec.replicas)",
            *(f"{_s(res[k].to_steady, 'no change')} -> {res[k].steady}" for k in NAMES),
        ],
        ["time until the steady count is ready", *(_s(res[k].to_steady_ready) for k in NAMES)],
        [
            "CPU % the autoscaler saw, end of step",
            *(
                "n/a" if res[k].cpu_end_of_step is None else f"{res[k].cpu_end_of_step:.0f} %"
                for k in NAMES
            ),
        ],
        [
            f"scale events under oscillation ({s.cycles} x {s.high:.0f}s/{s.low_for:.0f}s)",
            *(
                f"{res[k].osc_up + res[k].osc_down} ({res[k].osc_up} up, {res[k].osc_down} down)"
                for k in NAMES
            ),
        ],
        [
            "time to scale back to min after load ends",
            *(_s(res[k].to_min, f"not within {end_for:.0f} s") for k in NAMES),
        ],
        ["scale events, whole run", *(str(len(res[k].events)) for k in NAMES)],
        ["replica-minutes, whole run", *(f"{res[k].replica_minutes:.1f}" for k in NAMES)],
        ["max replicas", *(str(res[k].max_replicas) for k in NAMES)],
        ["load not served (core-seconds)", *(f"{res[k].not_served:.1f}" for k in NAMES)],
        [
            "CPU used / asked while loaded",
            *(_pct(res[k].delivered) for k in NAMES),
        ],
    ]
    run_min = (ticks[-1].t - ticks[0].t) / 60
    table(
        f"Scaling under the same distributed load ({run_min:.1f} min run, "
        f"machine CPU {busy:.0f} % busy)",
        ["measure", LABELS[HPA], LABELS[SPOL]],
        rows,
    )
    table(
        "Scale events (seconds from the start of the baseline)",
        ["autoscaler", "time", "phase", "from -> to"],
        [
            [LABELS[k], f"{t:.0f}", phase, f"{a} -> {b}"]
            for k in NAMES
            for t, phase, a, b in res[k].events
        ],
    )


def print_settings(s: Settings, segs: Sequence[Segment]) -> None:
    osc = f"{s.cycles} x ({s.high:.0f}s@{s.load_m}m + {s.low_for:.0f}s@{s.low_m}m)"
    rows: list[list[object]] = [
        ["pods", "busybox sh CPU-share loop, hostNetwork, CPU 100m req / 200m lim, min 1 max 4"],
        ["load", f"{s.load_m}m total per Deployment, shared by its ready pods"],
        [
            "phases",
            f"baseline {s.baseline:.0f}s@0m, step {s.step:.0f}s@{s.load_m}m, oscillation {osc}, "
            f"end <= {s.end_max:.0f}s@0m (stops {s.settle:.0f}s after both are at min)",
        ],
        [
            "fairness",
            f"HPA scaleDown window = sustainedFor = {s.sustained_for}s (guide: 30m); policy "
            f"scaleDown.cooldown {s.scale_down_cooldown}s (default 5m); "
            f"scaleUp.fullCooldown {str(s.full_cooldown).lower()}; policy scaleDown.maxStep "
            "100 % (HPA's default; the guide's is 1 pod); the rest defaults",
        ],
        ["metrics", "metrics.k8s.io from the testbed server (Docker stats every 5 s)"],
    ]
    table("Settings", ["", "value"], rows)
    print("HPA spec:", json.dumps(hpa(s)["spec"]))
    print("ScalingPolicy spec:", json.dumps(scaling_policy(s)["spec"]))


def cleanup(ns: str, op: kit.OperatorProcess | None, *, keep: bool) -> None:
    """Delete the policy while the operator runs (it removes its finalizer), then the rest."""
    if not keep:
        kit.kubectl(
            "delete", "scalingpolicy", SPOL, "-n", ns,
            "--ignore-not-found", "--wait=true", "--timeout=60s", check=False,
        )  # fmt: skip
    if op is not None:
        op.kill(sig=signal.SIGTERM)
    if not keep:
        # If the operator could not remove its finalizer, the namespace would never go.
        kit.kubectl(
            "patch", "scalingpolicy", SPOL, "-n", ns,
            "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
        kit.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        shutil.rmtree(LOAD_ROOT / ns, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    ap = common.parser("scaling", __doc__)
    ap.add_argument("--quick", action="store_true", help="shorter phases (a smoke run, ~8 min)")
    ap.add_argument("--load", type=int, default=300, help="total load L in millicores")
    ap.add_argument("--low", type=int, default=60, help="oscillation low load in millicores")
    ap.add_argument(
        "--full-cooldown",
        action="store_true",
        help="the policy waits its whole 1 min scale-up cooldown (scaleUp.fullCooldown: true)",
    )
    args = ap.parse_args(argv)
    s = (Settings.quick if args.quick else Settings.full)(args.load, args.low)
    s = replace(s, full_cooldown=args.full_cooldown)
    segs = schedule(s)

    check_cluster()
    ns = f"bench-scaling-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="stronghold-bench-scaling-"))
    dirs = {k: LOAD_ROOT / ns / k for k in NAMES}
    print(f"namespace {ns}; logs and samples in {workdir}")
    print_settings(s, segs)

    kube: Any = kubernetes  # the client is untyped
    cfg = kube.client.Configuration()
    kube.config.load_kube_config(
        config_file=str(paths.admin_kubeconfig()), client_configuration=cfg
    )
    api = kube.client.ApiClient(cfg)
    apps = kubernetes.client.AppsV1Api(api)
    co = kubernetes.client.CustomObjectsApi(api)
    op: kit.OperatorProcess | None = None
    try:
        sa = common.operator_kubeconfig(workdir)
        kit.kubectl("create", "namespace", ns)
        for k in NAMES:
            dirs[k].mkdir(parents=True, exist_ok=True)
            write_share(dirs[k], 0)
            kit.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(deployment(k, dirs[k])))
        op = kit.start_operator(sa, [ns], workdir / "operator.log")
        kit.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(hpa(s)))
        kit.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(scaling_policy(s)))
        wait_ready(apps, co, ns)
        started = datetime.now(UTC)
        print(f"start {started:%H:%M:%S} UTC")
        ticks, busy = drive(apps, co, ns, s, segs, dirs)
        (workdir / "samples.json").write_text(
            json.dumps(
                {"started": started.isoformat(), "busy": busy, "ticks": [t.__dict__ for t in ticks]}
            )
        )
        report(ticks, segs, s, busy)
        low = [k for k in NAMES if (analyse(ticks, segs, k).delivered or 1.0) < 0.85]
        if low or busy > 85:
            print(
                f"warning: the machine was busy ({busy:.0f} % of all cores) and the pods of "
                f"{', '.join(low) or 'none'} got under 85 % of the CPU asked: noisy run"
            )
        for k, name in ((SPOL, "scalingpolicy"), (HPA, "hpa")):
            print(kit.kubectl("get", name, k, "-n", ns, check=False).strip())
        if "Traceback" in op.logs():
            print(f"note: the operator logged a traceback, see {workdir / 'operator.log'}")
    finally:
        cleanup(ns, op, keep=args.keep)
        api.close()


if __name__ == "__main__":
    main()
