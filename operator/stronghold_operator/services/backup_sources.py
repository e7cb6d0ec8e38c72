"""A run's capture: the configuration and system state the operator reads for a backup Job.

Read through the :class:`Sources` port (platforms/backup.py implements it), assembled by
logic/backup_capture.py. A problem (a listed Secret missing, no usable age recipient, a
capture too large for its ConfigMap) is a :data:`Failure`: the run is recorded as failed
with that reason and no Job starts, like a missing password Secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from stronghold_operator import conditions as cond
from stronghold_operator.logic import backup_capture as lc
from stronghold_operator.logic.backup_results import Failure
from stronghold_operator.models.backup import BackupScheduleSpec

__all__ = ["Sources", "capture"]

# Kind -> apiVersion of what the configuration source saves.
CONFIG_KINDS = {
    "ConfigMap": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Service": "v1",
}


class Sources(Protocol):
    """Reads of the schedule's namespace for a run's capture, and the capture ConfigMap."""

    async def objects(self, kind: str) -> list[Mapping[str, Any]]:
        """Every object of ``kind`` (ConfigMap, Deployment, StatefulSet, Service, Pod);
        PermissionError when RBAC refuses (so does :meth:`secret`)."""
        ...

    async def nodes(self) -> list[Mapping[str, Any]] | None:
        """The cluster's nodes; None when the operator may not list them."""
        ...

    async def secret(self, name: str) -> Mapping[str, Any] | None:
        """The whole Secret (None: not found). Its data is encrypted at once, never kept."""
        ...

    async def put_capture(self, manifest: Mapping[str, Any]) -> None:
        """Create the capture ConfigMap (one that exists already is kept)."""
        ...


def _ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == "stronghold-operator"


async def _configuration(spec: BackupScheduleSpec, src: Sources, out: lc.Capture) -> Failure | None:
    conf = spec.sources.configuration
    if conf is None:
        return None
    objects = []
    for kind, api in CONFIG_KINDS.items():
        for obj in await src.objects(kind):
            name = (obj.get("metadata") or {}).get("name")
            if kind == "ConfigMap" and (name in lc.SKIP_CONFIGMAPS or _ours(obj)):
                continue  # the cluster's CA bundle, our programs and captures
            objects.append(lc.clean_object(obj, kind, api))
    out.add("configuration.tar.gz", lc.configuration_bundle(objects), objects=len(objects))
    if not conf.secrets:
        return None
    assert conf.encryption is not None  # the model refuses secrets without encryption
    ref = conf.encryption.age_recipients.secret_key_ref
    holder = await src.secret(ref.name)
    raw = ((holder or {}).get("data") or {}).get(ref.key)
    if raw is None:
        return (
            "SecretMissing",
            f"spec.sources.configuration.encryption: Secret {ref.name} key {ref.key} not found",
        )
    try:
        recipients = lc.parse_recipients(lc.b64text(raw))
    except ValueError as exc:
        return "EncryptionKeyInvalid", f"Secret {ref.name} key {ref.key}: {exc}"
    secrets = []
    for name in conf.secrets:
        found = await src.secret(name)
        if found is None:
            return "SecretMissing", f"spec.sources.configuration.secrets: Secret {name} not found"
        secrets.append(lc.clean_object(found, "Secret", "v1"))
    out.add(
        "secrets.tar.gz.age",
        lc.encrypt(secrets, recipients),
        objects=len(secrets),
        encryption="age",
        recipients=len(recipients),
    )
    return None


async def capture(
    spec: BackupScheduleSpec, namespace: str, src: Sources, now: datetime
) -> lc.Capture | Failure:
    """The capture of one run, or why the run cannot start."""
    try:
        return await _capture(spec, namespace, src, now)
    except PermissionError as exc:
        # Recorded once for this run like a missing Secret, not retried every pass.
        return "CaptureForbidden", f"{exc} (RBAC: see docs/security.md)"


async def _capture(
    spec: BackupScheduleSpec, namespace: str, src: Sources, now: datetime
) -> lc.Capture | Failure:
    out = lc.Capture()
    problem = await _configuration(spec, src, out)
    if problem is not None:
        return problem
    state = spec.sources.system_state
    if state is not None:
        doc = lc.system_state(
            namespace=namespace,
            captured_at=cond.rfc3339(now),
            pods=await src.objects("Pod"),
            deployments=await src.objects("Deployment"),
            statefulsets=await src.objects("StatefulSet"),
            nodes=await src.nodes(),
            git_annotation=state.git_revision_annotation,
        )
        out.add("system-state.json", lc.state_json(doc))
    if out.size > lc.CAPTURE_LIMIT:
        return (
            "CaptureTooLarge",
            f"the configuration and system state take {out.size} bytes, more than the "
            f"{lc.CAPTURE_LIMIT} a capture ConfigMap may hold",
        )
    out.files["capture.json"] = out.index()
    return out
