"""Kubernetes API access for the operator's own calls (kopf has its own client for watching).

One async library, lightkube (chosen on measurement: ``benchmarks/kube_client.py``,
docs/performance.md), behind :class:`Kube`, whose methods take a :class:`Kind` and return
the plain JSON dicts the API served. Every call runs in the event loop with a timeout
(``REQUEST_TIMEOUT``), at most ``API_CONNECTIONS`` at a time; the resource metrics API
has a client, a timeout and a limit of its own, so a hung aggregated API server cannot
hold the connections the other calls need. Errors come out as :class:`ApiError` (the
apiserver answered) or :class:`ApiUnreachable` (it did not), whatever the library raised.

Credentials: in a pod the ServiceAccount (its token file is read again when the apiserver
answers 401, so a rotated token is picked up, as client-go does), else ``$KUBECONFIG`` or
``~/.kube/config`` (client certificates, tokens, exec plugins). The command line's
``--kubeconfig``/``--context`` (cli/connection.py) reach every command through
:func:`use_kubeconfig`: a kubeconfig named there wins over the ServiceAccount, as in kubectl.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import lightkube
from lightkube import operators
from lightkube.config.kubeconfig import SingleConfig
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources import core_v1
from lightkube.types import CascadeType, PatchType

from stronghold_operator.models.errors import ApiError, ApiUnreachable
from stronghold_operator.models.outbound import (
    ALLOWED_DESTINATIONS,
    Destination,
    parse_destinations,
)
from stronghold_operator.platforms import fence

__all__ = ["ApiError", "ApiUnreachable"]  # raised by every call; defined in models/errors.py

GROUP = "ops.stronghold.io"
VERSION = "v1alpha1"
# Our own calls run a few at a time (status writes are one per policy, in the background):
# every TLS connection holds a read buffer, and 64 of them were 16 MiB at startup.
API_CONNECTIONS = 8
# Metadata-only LISTs (meta.k8s.io/v1 PartialObjectMetadataList, GA since 1.15), in pages
# as client-go's reflector reads them.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
LIST_PAGE = 500
_LISTED = ("uid", "resourceVersion", "namespace", "name", "deletionTimestamp")
# Seconds: without a read timeout a call to an apiserver that accepted but never answered
# waited for ever.
REQUEST_TIMEOUT = httpx2.Timeout(30.0, connect=10.0)
# metrics-server answers in milliseconds or is in trouble.
METRICS_TIMEOUT = httpx2.Timeout(5.0)
METRICS_CONNECTIONS = 4

# A label selector as lightkube takes it: (key, value or operator) pairs, sent server-side.
Labels = Mapping[str, str] | Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API; objects of every kind are read and written as JSON."""

    api_version: str  # "v1", "apps/v1", "ops.stronghold.io/v1alpha1"
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


PODS = Kind("v1", "Pod", "pods")
SECRETS = Kind("v1", "Secret", "secrets")
CONFIGMAPS = Kind("v1", "ConfigMap", "configmaps")
PVCS = Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
NAMESPACES = Kind("v1", "Namespace", "namespaces", namespaced=False)
DEPLOYMENTS = Kind("apps/v1", "Deployment", "deployments")
STATEFULSETS = Kind("apps/v1", "StatefulSet", "statefulsets")
JOBS = Kind("batch/v1", "Job", "jobs")
POD_METRICS = Kind("metrics.k8s.io/v1beta1", "PodMetrics", "pods")
REPLICASETS = Kind("apps/v1", "ReplicaSet", "replicasets")
CONTROLLERREVISIONS = Kind("apps/v1", "ControllerRevision", "controllerrevisions")
EVENTS = Kind("v1", "Event", "events")
LEASES = Kind("coordination.k8s.io/v1", "Lease", "leases")
SERVICES = Kind("v1", "Service", "services")
NODES = Kind("v1", "Node", "nodes", namespaced=False)
OUR_KINDS = {
    "healthpolicies": "HealthPolicy",
    "incidents": "Incident",
    "scalingpolicies": "ScalingPolicy",
    "backupschedules": "BackupSchedule",
    "maintenancewindows": "MaintenanceWindow",
}


def ours(plural: str) -> Kind:
    """One of the operator's own kinds, by its plural."""
    return Kind(f"{GROUP}/{VERSION}", OUR_KINDS[plural], plural)


def workload(kind: str) -> Kind:
    """A scaling target's kind ("Deployment" or "StatefulSet")."""
    return {"Deployment": DEPLOYMENTS, "StatefulSet": STATEFULSETS}[kind]


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 409


def _api_error(exc: httpx2.HTTPStatusError) -> ApiError:
    response = exc.response
    after = _retry_after(response.headers.get("Retry-After"))  # the write budget honours it
    status = getattr(exc, "status", None)  # lightkube's ApiError: the apiserver's Status
    if status is not None and getattr(status, "code", None):
        code, reason, message = int(status.code), str(status.reason or ""), status.message
        return ApiError(code, reason, str(message or ""), retry_after=after)
    # e.g. a text/plain 503
    return ApiError(response.status_code, response.reason_phrase, retry_after=after)


def _retry_after(value: str | None) -> float | None:
    # The API server sends whole seconds; an HTTP date (allowed by RFC 9110) is ignored.
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@asynccontextmanager
async def _translated(limit: asyncio.Semaphore) -> AsyncIterator[None]:
    """One call: within the connection limit, the library's errors as ours."""
    async with limit:
        try:
            yield
        except httpx2.HTTPStatusError as exc:
            raise _api_error(exc) from None
        except httpx2.RequestError as exc:  # connect, read, timeouts, protocol
            raise ApiUnreachable(f"{type(exc).__name__}: {exc}") from None


def _fenced(verb: str, kind: Kind) -> None:
    """Every write but the Lease's own passes the leader fence (platforms/fence.py): a
    replica that lost the Lease writes nothing, not a Job, a scale, a status or an Event."""
    if kind != LEASES:
        fence.check(f"{verb} {kind.kind}")


@functools.cache
def _resource(kind: Kind) -> Any:
    """lightkube's generic resource class for a kind (JSON in, dicts out, no codegen)."""
    group, _, version = kind.api_version.rpartition("/")
    create = create_namespaced_resource if kind.namespaced else create_global_resource
    return create(group, version, kind.kind, kind.plural)


def _addressed(kind: Kind, subresource: str | None) -> Any:
    res = _resource(kind)
    return {None: res, "status": res.Status, "scale": res.Scale}[subresource]


def _plain(obj: Any) -> dict[str, Any]:
    """An answer as a plain dict (generic resources are dicts; a Scale is a typed model)."""
    return dict(obj) if isinstance(obj, dict) else dict(obj.to_dict())


def _object(kind: Kind, namespace: str | None, body: Mapping[str, Any]) -> Any:
    """``body`` as an object of ``kind`` to send, placed in ``namespace``."""
    meta = dict(body.get("metadata") or {})
    if kind.namespaced and namespace is not None:
        meta["namespace"] = namespace
    return _resource(kind)({**body, "metadata": meta})


def label_selector(selector: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A LabelSelector (``matchLabels``, ``matchExpressions``) as lightkube's selector pairs."""
    pairs: list[tuple[str, Any]] = sorted((selector.get("matchLabels") or {}).items())
    ops: dict[str, Callable[[list[str]], Any]] = {
        "In": operators.in_,
        "NotIn": operators.not_in,
        "Exists": lambda _: operators.exists(),
        "DoesNotExist": lambda _: operators.not_exists(),
    }
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(str(expr.get("operator")))
        if op is None:
            raise ValueError(f"label selector operator {expr.get('operator')!r} is not known")
        pairs.append((str(expr["key"]), op(list(expr.get("values") or []))))
    return pairs


@dataclass
class _Override:
    kubeconfig: str | None = None
    context: str | None = None


_OVERRIDE = _Override()


def use_kubeconfig(kubeconfig: str | None = None, context: str | None = None) -> None:
    """Make every later :meth:`Kube.connect` use this kubeconfig file and/or context (the
    command line's ``--kubeconfig``/``--context``); None keeps the default."""
    _OVERRIDE.kubeconfig, _OVERRIDE.context = kubeconfig, context


def explicit_kubeconfig() -> str | None:
    """The kubeconfig named on the command line (``--kubeconfig``), if any: it wins over a
    pod's ServiceAccount, for kopf's login too (settings.login)."""
    return _OVERRIDE.kubeconfig


def client_config() -> lightkube.KubeConfig | SingleConfig:
    """What :meth:`Kube.connect` connects with (raises lightkube's ConfigError when none)."""
    if _OVERRIDE.kubeconfig is None and _OVERRIDE.context is None:
        return lightkube.KubeConfig.from_env()
    path = _OVERRIDE.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    # KUBECONFIG may list several files; like kopf's login, the first one is used.
    first = os.path.expanduser(path.split(os.pathsep)[0])
    config = lightkube.KubeConfig.from_file(first)
    if _OVERRIDE.context is None:
        return config
    single = config.get(context_name=_OVERRIDE.context)
    if single is None:  # get() raises for an unknown context; None only with a default
        raise ValueError(f"context {_OVERRIDE.context!r} not found")
    return single


class Kube:
    """The operator's Kubernetes client, created once at startup and kept in kopf's memo."""

    def __init__(self, config: lightkube.KubeConfig | SingleConfig) -> None:
        self.config = config
        self.client = lightkube.AsyncClient(config, timeout=REQUEST_TIMEOUT, trust_env=False)
        self._limit = asyncio.Semaphore(API_CONNECTIONS)
        self._metrics_limit = asyncio.Semaphore(METRICS_CONNECTIONS)

    @classmethod
    def connect(cls) -> Kube:
        """In a pod its ServiceAccount, else ``$KUBECONFIG`` or ``~/.kube/config``; the
        command line's ``--kubeconfig``/``--context`` first (:func:`use_kubeconfig`)."""
        return cls(client_config())

    @property
    def namespace(self) -> str:
        """The context's namespace (a pod's own), else ``default``: a command's default -n."""
        single = self.config if isinstance(self.config, SingleConfig) else self.config.get()
        return single.namespace if single is not None else "default"

    @functools.cached_property
    def metrics_client(self) -> lightkube.AsyncClient:
        # Its own pool and timeout: an aggregated API server may hang on its own.
        return lightkube.AsyncClient(self.config, timeout=METRICS_TIMEOUT, trust_env=False)

    async def get(
        self, kind: Kind, name: str, namespace: str | None = None, *, subresource: str | None = None
    ) -> dict[str, Any]:
        async with _translated(self._limit):
            obj = await self.client.get(_addressed(kind, subresource), name, namespace=namespace)
        return _plain(obj)

    async def list_metadata(
        self, kind: Kind, namespace: str | None = None, *, page: int = LIST_PAGE
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` (None: all) as ``{"metadata": {uid,
        resourceVersion, namespace, name, deletionTimestamp}}``, ``page`` objects a request,
        the API server sending metadata only: the whole LIST of 10,000 HealthPolicies was
        about 54 MB of JSON (5.4 KiB an object, benchmarks.apiserver) parsed into objects,
        for a check that reads five fields of each."""
        http = self.client._client
        where = namespace if namespace is not None or not kind.namespaced else lightkube.ALL_NS
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            request = http.prepare_request(
                "list",
                _resource(kind),
                namespace=where,
                params={"limit": page, "continue": token},
                headers={"Accept": METADATA_LIST},
            )
            async with _translated(self._limit):
                resp = await http.send(http.build_adapter_request(request))  # type: ignore[no-untyped-call]
                http.raise_for_status(resp)  # type: ignore[no-untyped-call]
                answer = resp.json()
            for item in answer.get("items") or ():
                meta = item.get("metadata") or {}
                out.append({"metadata": {k: meta[k] for k in _LISTED if k in meta}})
            token = (answer.get("metadata") or {}).get("continue")
            if not token:
                return out

    async def list(
        self, kind: Kind, namespace: str | None = None, *, labels: Labels | None = None
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` (None: all namespaces) matching ``labels``."""
        client, limit = (
            (self.metrics_client, self._metrics_limit)
            if kind == POD_METRICS
            else (self.client, self._limit)
        )
        where = namespace if namespace is not None or not kind.namespaced else lightkube.ALL_NS
        # Typed as a dict; its selector builder takes (key, operator) pairs as well, which a
        # LabelSelector with two expressions on one key needs.
        selector: Any = labels or None
        async with _translated(limit):
            listed = client.list(_resource(kind), namespace=where, labels=selector)
            return [_plain(o) async for o in listed]

    async def create(
        self, kind: Kind, namespace: str | None, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create the object; returns it as the apiserver stored it (uid, ...)."""
        _fenced("create", kind)
        obj = _object(kind, namespace, body)
        async with _translated(self._limit):
            created = await self.client.create(obj)
        return _plain(created)

    async def replace(self, kind: Kind, namespace: str | None, body: Mapping[str, Any]) -> None:
        """PUT the whole object (named by its metadata; a stale resourceVersion is a 409)."""
        _fenced("replace", kind)
        obj = _object(kind, namespace, body)
        async with _translated(self._limit):
            await self.client.replace(obj)

    async def patch(
        self,
        kind: Kind,
        name: str,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> None:
        """A JSON merge patch (RFC 7386) of the object or its ``status``/``scale``."""
        _fenced("patch", kind)
        async with _translated(self._limit):
            await self.client.patch(
                _addressed(kind, subresource),
                name,
                dict(body),
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )

    async def delete(
        self, kind: Kind, name: str, namespace: str | None, *, propagation: str = "Background"
    ) -> None:
        _fenced("delete", kind)
        async with _translated(self._limit):
            await self.client.delete(
                _resource(kind), name, namespace=namespace, cascade=CascadeType(propagation)
            )

    async def pod_log(self, namespace: str, pod: str, params: Mapping[str, Any]) -> bytes:
        """One pod container's log (GET pods/log, no follow) with ``params`` such as
        ``container``, ``sinceTime``, ``limitBytes``, ``timestamps``."""
        # lightkube's own log() takes neither limitBytes nor sinceTime: the same request, with them.
        http = self.client._client
        request = http.prepare_request(
            "get", core_v1.PodLog, name=pod, namespace=namespace, params={**params, "follow": False}
        )
        async with _translated(self._limit):
            resp = await http.send(http.build_adapter_request(request))  # type: ignore[no-untyped-call]
            http.raise_for_status(resp)  # type: ignore[no-untyped-call]
            return bytes(resp.content)

    async def aclose(self) -> None:
        await self.client.close()
        if "metrics_client" in self.__dict__:
            await self.metrics_client.close()


async def list_objects(
    kube: Kube, plural: str, namespaces: list[str] | None
) -> list[dict[str, Any]]:
    """Every object of one of our kinds, metadata only (the stalled-watch check's LIST)."""
    if not namespaces:
        return await kube.list_metadata(ours(plural))
    out: list[dict[str, Any]] = []
    for ns in namespaces:
        out += await kube.list_metadata(ours(plural), ns)
    return out


@dataclass(frozen=True)
class SecretEntry:
    """One key of a Secret and where the Secret allows it to be sent."""

    value: str
    destinations: frozenset[Destination]  # from its ALLOWED_DESTINATIONS annotation


async def read_secret_key(kube: Kube, namespace: str, name: str, key: str) -> str:
    """One key of a Secret (see :func:`read_secret_entry`)."""
    return (await read_secret_entry(kube, namespace, name, key)).value


async def read_secret_entry(kube: Kube, namespace: str, name: str, key: str) -> SecretEntry:
    """One key of a Secret, read with ``get`` (the operator never lists or watches Secrets).

    Raises ``LookupError`` with a message that names the Secret and key, never the value.
    """
    try:
        secret = await kube.get(SECRETS, name, namespace)
    except ApiError as exc:
        if exc.status == 404:
            raise LookupError(f"Secret {namespace}/{name} not found") from None
        if exc.status == 403:
            raise LookupError(f"Secret {namespace}/{name}: access denied") from None
        raise
    data = secret.get("data") or {}
    if key not in data:
        raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    return SecretEntry(
        base64.b64decode(data[key]).decode(),
        parse_destinations(annotations.get(ALLOWED_DESTINATIONS)),
    )


async def patch_status(
    kube: Kube, plural: str, namespace: str, name: str, delta: dict[str, Any]
) -> None:
    """Merge-patch ``status`` of one of our objects (for daemons, which kopf does not patch).

    Does nothing for an empty delta: status is written only when something changed.
    """
    if not delta:
        return
    await kube.patch(ours(plural), name, namespace, {"status": delta}, subresource="status")
