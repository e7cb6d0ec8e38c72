"""ConfigMaps the operator owns (the backup program): create, or adopt and bring up to date."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stronghold_operator.platforms.kube import CONFIGMAPS, ApiError, Kube, is_conflict


def _owner_uids(obj: Mapping[str, Any]) -> list[str]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return sorted(str(r.get("uid")) for r in refs)


async def ensure_configmap(kube: Kube, manifest: Mapping[str, Any], version_key: str) -> str:
    """Make the ConfigMap ``manifest`` exist as built; returns "created", "updated" or "kept".

    Idempotent: an existing one (409) is read and replaced only when its ``version_key``
    annotation, its data or its owners differ (a new program, an edited copy, or one left
    over from a deleted schedule of the same name that garbage collection has not removed
    yet). A concurrent writer
    makes the replace fail with 409, which is raised: the caller retries later.
    """
    meta = manifest["metadata"]
    namespace = meta["namespace"]
    try:
        await kube.create(CONFIGMAPS, namespace, manifest)
        return "created"
    except ApiError as exc:
        if not is_conflict(exc):
            raise
    current = await kube.get(CONFIGMAPS, meta["name"], namespace)
    want = (meta.get("annotations") or {}).get(version_key)
    have = ((current.get("metadata") or {}).get("annotations") or {}).get(version_key)
    same_data = (current.get("data") or {}) == manifest.get("data")
    if have == want and same_data and _owner_uids(current) == _owner_uids(manifest):
        return "kept"
    body = dict(manifest)
    body["metadata"] = {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}
    await kube.replace(CONFIGMAPS, namespace, body)
    return "updated"
