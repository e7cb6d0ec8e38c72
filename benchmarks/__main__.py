"""``python -m benchmarks [NAME ...]``: run benchmarks (default: all) and print their tables.

    health   HealthPolicy: N policies x 4 checks vs the guide's curl loop, blackbox_exporter,
             postgres_exporter (benchmarks/health.py)
    scaling  ScalingPolicy vs HPA under the same distributed load (benchmarks/scaling.py)
    backup   BackupSchedule Job vs the guide's pg_dump | gzip on ~1 GB (benchmarks/backup.py)
    kube_client  Kubernetes client libraries on the operator's hot calls (benchmarks/kube_client.py)
    incidents  Incident creation: N policies, a tenth failing at once (benchmarks/incidents.py)
    failover Two replicas with --leader-elect: seconds without a leader (benchmarks/failover.py)
    logs     HealthPolicy logs checks: N pods writing access logs, C checks, detection delay,
             vs the guide's kubectl logs | grep pass (benchmarks/logs.py)
    apiserver  The API server's ceiling: HealthPolicy status PATCHes a second by concurrency
             and client (the operator's, a bare aiohttp one), and the operator's CPU per
             watch event (benchmarks/apiserver.py)

Each needs the local cluster (`stronghold-testbed cluster up`); results are in docs/performance.md.
"""

from __future__ import annotations

import runpy
import sys

NAMES = ("health", "scaling", "backup", "kube_client", "failover", "incidents", "logs", "apiserver")


def main() -> int:
    names = sys.argv[1:] or list(NAMES)
    for name in names:
        if name not in NAMES:
            print(f"unknown benchmark {name!r}; choose from {', '.join(NAMES)}")
            return 2
    for name in names:
        print(f"== benchmarks.{name}", flush=True)
        sys.argv = [f"benchmarks.{name}"]
        runpy.run_module(f"benchmarks.{name}", run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
