"""Objects of the four kinds in the states ``stronghold status`` must tell apart.

Each builder returns ``(object, status)``: a spec the CRD accepts and the status the operator
would have written in that state (field names from crds/). Unit tests read them as API objects;
the integration test creates the objects and writes the status through the status subresource.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

API = "ops.stronghold.io/v1alpha1"


def ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(type_: str, status: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": ts(now - timedelta(minutes=5)),
        "observedGeneration": 1,
    }


def _obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def _health_spec() -> dict[str, Any]:
    return {
        "interval": "30s",
        "checks": [{"name": "web", "http": {"url": "http://127.0.0.1:9/health/"}}],
    }


def health_healthy(name: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    status = {
        "observedGeneration": 1,
        "conditions": [
            _cond("Ready", "True", "Reconciled", "1 check", now),
            _cond("Healthy", "True", "AllHealthy", "all checks healthy", now),
            _cond("Degraded", "False", "AllHealthy", "all checks healthy", now),
            _cond("IncidentOpen", "False", "NoIncident", "no incident", now),
        ],
        "lastProbeTime": ts(now - timedelta(seconds=20)),
        "severity": "None",
        "worstLatency": "42ms",
        "worstLatencyMs": 42.0,
        "checks": [
            {"name": "web", "type": "http", "state": "Healthy", "reason": "Ok", "message": "200"}
        ],
    }
    return _obj("HealthPolicy", name, _health_spec()), status


def health_incident(name: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    obj, status = health_healthy(name, now)
    started = now - timedelta(minutes=7)
    status["conditions"] = [
        _cond("Ready", "True", "Reconciled", "1 check", now),
        _cond("Healthy", "False", "CheckCritical", "web is Critical", now),
        _cond("Degraded", "True", "CheckCritical", "web is Critical", now),
        _cond("IncidentOpen", "True", "P1", "web down", now),
    ]
    status["severity"] = "P1"
    status["worstLatency"] = "5.00s"
    status["worstLatencyMs"] = 5000.0
    status["checks"] = [
        {
            "name": "web",
            "type": "http",
            "state": "Critical",
            "reason": "Unreachable",
            "message": "connection refused",
        }
    ]
    status["incident"] = {
        "id": f"{name}-{started.strftime('%Y%m%d-%H%M%S')}",
        "severity": "P1",
        "maxSeverity": "P1",
        "rootCause": "web",
        "summary": "web: connection refused",
        "startedAt": ts(started),
        "escalationLevel": 1,
    }
    return obj, status


def _backup_spec() -> dict[str, Any]:
    return {
        "schedule": "0 2 * * *",
        "staleAfter": "26h",
        "database": {
            "host": "127.0.0.1",
            "name": "app",
            "user": "app",
            "password": {"secretKeyRef": {"name": "db", "key": "password"}},
        },
        "storage": {"persistentVolumeClaim": "backups"},
    }


def backup_fresh(name: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    done = now - timedelta(hours=3)
    status = {
        "observedGeneration": 1,
        "conditions": [
            _cond("Ready", "True", "Reconciled", "scheduled", now),
            _cond("LastBackupSucceeded", "True", "Succeeded", "ok", now),
            _cond("BackupStale", "False", "BackupFresh", "newest verified backup is 3h old", now),
        ],
        "lastSuccessfulTime": ts(done),
        "lastVerifiedTime": ts(done),
        "nextScheduleTime": ts(now + timedelta(hours=20)),
        "lastRestoreTest": {"time": ts(done), "result": "Passed", "job": f"{name}-rt"},
        "backups": [
            {
                "name": f"{name}-{done.strftime('%Y%m%d%H%M')}",
                "result": "Succeeded",
                "verified": True,
                "completedAt": ts(done),
            }
        ],
    }
    return _obj("BackupSchedule", name, _backup_spec()), status


def backup_stale(name: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The newest verified backup is 3 days old (staleAfter 26h)."""
    obj, status = backup_fresh(name, now)
    done = now - timedelta(days=3)
    status["lastSuccessfulTime"] = ts(done)
    status["lastVerifiedTime"] = ts(done)
    status["backups"][0]["completedAt"] = ts(done)
    status["conditions"][2] = _cond(
        "BackupStale", "True", "BackupTooOld", "newest verified backup is 3d0h old", now
    )
    return obj, status


def _scaling_spec() -> dict[str, Any]:
    return {"targetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 4}


def scaling_at_max(name: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    decided = now - timedelta(minutes=2)
    message = "CPU 95% > 80% wants 6 replicas, capped at maxReplicas 4"
    status = {
        "observedGeneration": 1,
        "conditions": [
            _cond("Ready", "True", "Reconciled", "scaling Deployment/web", now),
            _cond("ScalingActive", "True", "Active", message, now),
            _cond("ScalingLimited", "True", "CappedByMax", message, now),
            _cond("MetricsAvailable", "True", "MetricsReported", "CPU 95%, memory 40%", now),
        ],
        "target": "Deployment/web",
        "currentReplicas": 4,
        "desiredReplicas": 4,
        "currentCpuUtilizationPercent": 95,
        "currentMemoryUtilizationPercent": 40,
        "lastObservedTime": ts(now),
        "lastDecision": {
            "time": ts(decided),
            "action": "Hold",
            "from": 4,
            "to": 4,
            "reason": "CappedByMax",
            "message": message,
        },
    }
    return _obj("ScalingPolicy", name, _scaling_spec()), status


def scaling_steady(name: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    obj, status = scaling_at_max(name, now)
    message = "CPU 50%, memory 40% within bands"
    status["conditions"][1] = _cond("ScalingActive", "True", "Active", message, now)
    status["conditions"][2] = _cond("ScalingLimited", "False", "WithinRange", "within", now)
    status.update(currentReplicas=2, desiredReplicas=2, currentCpuUtilizationPercent=50)
    status["lastDecision"] = {
        "time": ts(now - timedelta(minutes=30)),
        "action": "Hold",
        "from": 2,
        "to": 2,
        "reason": "WithinBands",
        "message": message,
    }
    return obj, status


def _window_spec() -> dict[str, Any]:
    return {
        "schedule": {"cron": "0 2 * * 0", "duration": "2h"},
        "timeZone": "UTC",
        "targets": {"scalingPolicies": {"selector": {"matchLabels": {"app": "web"}}}},
    }


def window_active(name: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    start, end = now - timedelta(minutes=10), now + timedelta(minutes=50)
    status = {
        "observedGeneration": 1,
        "conditions": [
            _cond("Ready", "True", "Reconciled", "ok", now),
            _cond("Scheduled", "True", "NextWindow", "next window", now),
            _cond("PreChecksPassed", "True", "Passed", "snapshot taken", now),
            _cond("Active", "True", "WindowOpen", "covered objects frozen", now),
        ],
        "currentWindow": {
            "id": start.strftime("%Y%m%d%H%M"),
            "start": ts(start),
            "end": ts(end),
            "startLocal": ts(start),
            "endLocal": ts(end),
            "openedAt": ts(start),
            "preChecks": {"state": "Passed"},
        },
        "nextWindow": {"start": ts(now + timedelta(days=7)), "end": ts(now + timedelta(days=7))},
        "frozenTargets": ["ScalingPolicy/web"],
        "lastResult": "Succeeded",
    }
    return _obj("MaintenanceWindow", name, _window_spec()), status


def window_scheduled(name: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    nxt = now + timedelta(days=2)
    status = {
        "observedGeneration": 1,
        "conditions": [
            _cond("Ready", "True", "Reconciled", "ok", now),
            _cond("Scheduled", "True", "NextWindow", "next window", now),
            _cond("Active", "False", "NotInWindow", "not in a window", now),
        ],
        "nextWindow": {
            "start": ts(nxt),
            "end": ts(nxt + timedelta(hours=2)),
            "startLocal": ts(nxt),
            "endLocal": ts(nxt + timedelta(hours=2)),
        },
        "lastResult": "Succeeded",
    }
    return _obj("MaintenanceWindow", name, _window_spec()), status


def api_object(
    built: tuple[dict[str, Any], dict[str, Any]],
    namespace: str,
    now: datetime,
    created: timedelta = timedelta(days=10),
) -> dict[str, Any]:
    """What the API serves for a built object (metadata the server sets, the status)."""
    obj, status = built
    meta = {
        **obj["metadata"],
        "namespace": namespace,
        "generation": 1,
        "creationTimestamp": ts(now - created),
    }
    return {**obj, "metadata": meta, "status": status}
