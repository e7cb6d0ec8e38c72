"""What the operator captures for a run's ``configuration`` and ``systemState`` sources (pure).

The operator captures, not the Job: it already reads the API, while the Job's pod runs a
user-chosen image with no service-account token (and must keep none). Listed Secrets are
encrypted here with age, so their plaintext never leaves the operator's memory: not into a
Kubernetes object, the Job, its volume or its logs. The Job only copies and checks the
files (docs/backupschedule.md, "Runs").
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyrage
import yaml

__all__ = [
    "CAPTURE_LIMIT",
    "Capture",
    "clean_object",
    "configuration_bundle",
    "encrypt",
    "parse_recipients",
    "system_state",
]

# A ConfigMap holds at most 1 MiB; what the capture may use of it (base64 adds a third).
CAPTURE_LIMIT = 700 * 1024
_DROP_META = (
    *("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"),
    *("selfLink", "ownerReferences", "deletionTimestamp", "deletionGracePeriodSeconds"),
)
_DROP_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
)
# Cluster-assigned, refused or rewritten when the object is applied to another cluster.
_DROP_SERVICE_SPEC = ("clusterIP", "clusterIPs")
# Namespace objects that are not the application's configuration.
SKIP_CONFIGMAPS = ("kube-root-ca.crt",)
_KIND_DIRS = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "Service": "services",
    "Secret": "secrets",
}


def clean_object(obj: Mapping[str, Any], kind: str, api_version: str) -> dict[str, Any]:
    """The object as one would re-apply it: no status, managedFields, resourceVersion, uid,
    creation time, owners, last-applied annotation, or cluster-assigned Service IPs."""
    out = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    meta = dict(obj.get("metadata") or {})
    for key in _DROP_META:
        meta.pop(key, None)
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in _DROP_ANNOTATIONS
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    if kind == "Service" and isinstance(out.get("spec"), Mapping):
        out["spec"] = {k: v for k, v in out["spec"].items() if k not in _DROP_SERVICE_SPEC}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **out}


def _tar_gz(files: Mapping[str, bytes]) -> bytes:
    """A deterministic gzip tar (sorted names, mtime 0, no owners): same input, same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o600, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)


def _yaml_files(objects: Iterable[Mapping[str, Any]]) -> dict[str, bytes]:
    out = {}
    for obj in objects:
        where = _KIND_DIRS.get(str(obj.get("kind")), str(obj.get("kind")).lower())
        name = str((obj.get("metadata") or {}).get("name"))
        out[f"{where}/{name}.yaml"] = yaml.safe_dump(dict(obj), sort_keys=True).encode()
    return out


def configuration_bundle(objects: Sequence[Mapping[str, Any]]) -> bytes:
    """``configuration.tar.gz``: one clean YAML file per object, ``<kind>s/<name>.yaml``."""
    return _tar_gz(_yaml_files(objects))


def parse_recipients(text: str) -> list[pyrage.x25519.Recipient]:
    """age X25519 recipients, one ``age1…`` per line (``#`` comments and blanks ignored);
    ValueError says which line is not one (without echoing it: it came from a Secret)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()  # noqa: PLW2901
        if not line or line.startswith("#"):
            continue
        try:
            out.append(pyrage.x25519.Recipient.from_str(line))
        except Exception:  # pyrage raises its own RecipientError
            raise ValueError(f"line {n} is not an age recipient (age1…)") from None
    if not out:
        raise ValueError("no age recipient in it")
    return out


def encrypt(secrets: Sequence[Mapping[str, Any]], recipients: Sequence[Any]) -> bytes:
    """``secrets.tar.gz.age``: the listed Secrets as clean YAML in a tar.gz, age-encrypted."""
    return bytes(pyrage.encrypt(_tar_gz(_yaml_files(secrets)), list(recipients)))


def _images(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for pod in pods:
        status = pod.get("status") or {}
        for c in list(status.get("initContainerStatuses") or []) + list(
            status.get("containerStatuses") or []
        ):
            out.append(
                {
                    "pod": (pod.get("metadata") or {}).get("name"),
                    "container": c.get("name"),
                    "image": c.get("image"),
                    "imageID": c.get("imageID"),
                    "ready": bool(c.get("ready")),
                    "restartCount": c.get("restartCount", 0),
                }
            )
    return out


def _workloads(
    items: Iterable[Mapping[str, Any]], kind: str, git_annotation: str
) -> list[dict[str, Any]]:
    out = []
    for w in items:
        meta, spec, status = w.get("metadata") or {}, w.get("spec") or {}, w.get("status") or {}
        notes = dict(meta.get("annotations") or {})
        tpl_notes = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
        entry: dict[str, Any] = {
            "kind": kind,
            "name": meta.get("name"),
            "generation": meta.get("generation"),
            "replicas": spec.get("replicas"),
            "readyReplicas": status.get("readyReplicas", 0),
            "images": [
                c.get("image")
                for c in ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
            ],
        }
        if kind == "Deployment":
            entry["revision"] = notes.get("deployment.kubernetes.io/revision")
        else:
            entry["currentRevision"] = status.get("currentRevision")
            entry["updateRevision"] = status.get("updateRevision")
        git = notes.get(git_annotation) or tpl_notes.get(git_annotation)
        if git:
            entry["gitRevision"] = git
        out.append(entry)
    return out


def system_state(
    *,
    namespace: str,
    captured_at: str,
    pods: Sequence[Mapping[str, Any]],
    deployments: Sequence[Mapping[str, Any]],
    statefulsets: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]] | None,
    git_annotation: str,
    namespace_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The guide's "system state" (git commit, images, running containers), for Kubernetes:
    images with digests of running pods, rollout revisions, the git revision annotation
    where present, and the nodes' Kubernetes and runtime versions (``nodes`` None: not
    readable with the operator's RBAC, which the state says)."""
    workloads = _workloads(deployments, "Deployment", git_annotation) + _workloads(
        statefulsets, "StatefulSet", git_annotation
    )
    state: dict[str, Any] = {
        "namespace": namespace,
        "capturedAt": captured_at,
        "images": _images(p for p in pods if (p.get("status") or {}).get("phase") == "Running"),
        "workloads": workloads,
    }
    revisions = sorted({str(w["gitRevision"]) for w in workloads if w.get("gitRevision")})
    ns_git = (namespace_annotations or {}).get(git_annotation)
    if ns_git:
        revisions = sorted({*revisions, ns_git})
    state["gitRevisions"] = revisions
    if nodes is None:
        state["nodes"] = "unavailable: the operator may not list nodes"
    else:
        infos = []
        for n in nodes:
            info = (n.get("status") or {}).get("nodeInfo") or {}
            infos.append(
                {
                    "name": (n.get("metadata") or {}).get("name"),
                    "kubeletVersion": info.get("kubeletVersion"),
                    "containerRuntimeVersion": info.get("containerRuntimeVersion"),
                    "osImage": info.get("osImage"),
                    "kernelVersion": info.get("kernelVersion"),
                    "architecture": info.get("architecture"),
                }
            )
        state["nodes"] = infos
        state["kubernetesVersions"] = sorted({str(i["kubeletVersion"]) for i in infos})
    return state


@dataclass
class Capture:
    """The files of one run's capture and what the Job checks them against."""

    files: dict[str, bytes] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, data: bytes, **extra: Any) -> None:
        self.files[name] = data
        self.artifacts[name] = {"sha256": hashlib.sha256(data).hexdigest(), **extra}

    @property
    def size(self) -> int:
        return sum(len(d) for d in self.files.values())

    def index(self) -> bytes:
        """``capture.json``: sha256 and counts per file (no content)."""
        return json.dumps({"artifacts": self.artifacts}, sort_keys=True).encode()


def b64text(value: str) -> str:
    """A Secret's ``data`` value as text."""
    return base64.b64decode(value).decode("utf-8", "replace")


def state_json(state: Mapping[str, Any]) -> bytes:
    return json.dumps(state, indent=2, sort_keys=True).encode()
