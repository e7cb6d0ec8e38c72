"""Kubernetes API access for our own calls (kopf has its own client for watching/patching).

The official client is synchronous; every call goes through :func:`call` so it runs in a
worker thread and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")

GROUP = "ops.stronghold.io"
VERSION = "v1alpha1"


@dataclass
class Kube:
    """API objects created once at startup and kept in kopf's memo."""

    api: ApiClient
    core: kubernetes.client.CoreV1Api
    apps: kubernetes.client.AppsV1Api
    batch: kubernetes.client.BatchV1Api
    custom: kubernetes.client.CustomObjectsApi

    @classmethod
    def connect(cls) -> Kube:
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        api = ApiClient()
        return cls(
            api=api,
            core=kubernetes.client.CoreV1Api(api),
            apps=kubernetes.client.AppsV1Api(api),
            batch=kubernetes.client.BatchV1Api(api),
            custom=kubernetes.client.CustomObjectsApi(api),
        )

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking client call in a thread."""
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


async def call_json(fn: Callable[..., object], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Like :func:`call` for the custom-objects API, which returns plain JSON dicts."""
    result = await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
    if not isinstance(result, dict):
        raise TypeError(f"expected a JSON object from {getattr(fn, '__name__', fn)}")
    return result


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


async def list_versions(kube: Kube, plural: str, namespaces: list[str] | None) -> dict[str, str]:
    """uid -> resourceVersion of every object of one of our kinds (the watchdog's LIST)."""
    out: dict[str, str] = {}
    if namespaces:
        for ns in namespaces:
            body = await call_json(
                kube.custom.list_namespaced_custom_object, GROUP, VERSION, ns, plural
            )
            out |= {i["metadata"]["uid"]: i["metadata"]["resourceVersion"] for i in body["items"]}
    else:
        listed = await call_json(kube.custom.list_cluster_custom_object, GROUP, VERSION, plural)
        out |= {i["metadata"]["uid"]: i["metadata"]["resourceVersion"] for i in listed["items"]}
    return out


async def read_secret_key(kube: Kube, namespace: str, name: str, key: str) -> str:
    """One key of a Secret, read with ``get`` (the operator never lists or watches Secrets).

    Raises ``LookupError`` with a message that names the Secret and key, never the value.
    """
    import base64

    try:
        secret = await call(kube.core.read_namespaced_secret, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise LookupError(f"Secret {namespace}/{name} not found") from None
        if exc.status == 403:
            raise LookupError(f"Secret {namespace}/{name}: access denied") from None
        raise
    data = secret.data or {}
    if key not in data:
        raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
    return base64.b64decode(data[key]).decode()


async def patch_status(
    kube: Kube, plural: str, namespace: str, name: str, delta: dict[str, Any]
) -> None:
    """Merge-patch ``status`` of one of our objects (for daemons, which kopf does not patch).

    Does nothing for an empty delta: status is written only when something changed.
    """
    if not delta:
        return
    await call(
        kube.custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        plural,
        name,
        {"status": delta},
    )
