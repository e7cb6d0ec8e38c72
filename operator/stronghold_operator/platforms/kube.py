"""Kubernetes API access for our own calls (kopf has its own client for watching/patching).

The official client is synchronous; every call goes through :func:`call` so it runs in a
worker thread of its own bounded pool (``executors.KUBE``: a hung Docker Engine or metrics
API cannot hold its threads) and never blocks the event loop, with ``_request_timeout``.
The calls made per object per interval (status patches, Secret reads) and the liveness
probe's LIST go through :class:`AsyncApi` instead: aiohttp in the event loop, with the same
credentials. Through the official client they were a thread hop, urllib3 and model
deserialisation each, a fifth of the CPU with a thousand HealthPolicies.
"""

from __future__ import annotations

import base64
import functools
import json
import ssl
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from stronghold_operator.models.outbound import (
    ALLOWED_DESTINATIONS,
    Destination,
    parse_destinations,
)
from stronghold_operator.platforms import executors

T = TypeVar("T")

GROUP = "ops.stronghold.io"
VERSION = "v1alpha1"
# Our own calls run a few at a time (status writes are one per policy, in the background):
# every TLS connection holds a 256 KiB read buffer, and 64 of them were 16 MiB at startup.
API_CONNECTIONS = 8
# (connect, read) seconds for every official-client call that does not set its own: without
# one, a call to an apiserver that accepted but never answered held its thread for ever.
REQUEST_TIMEOUT = (10.0, 30.0)


class AsyncApi:
    """JSON requests to the API server on aiohttp, authenticated like the official client."""

    def __init__(self, config: kubernetes.client.Configuration) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        c = self.config
        if not str(c.host).startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=c.ssl_ca_cert or None)
        if not c.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if c.cert_file:
            ctx.load_cert_chain(c.cert_file, c.key_file)
        return ctx

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=API_CONNECTIONS),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=60),
            )
        return self._session

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "stronghold-operator/0.1"}
        if content_type:
            headers["Content-Type"] = content_type
        # The official client's own view of the credentials, asked per request: its refresh
        # hook reloads a rotated token (in a pod, the projected ServiceAccount token file).
        settings: Mapping[str, Any] = self.config.auth_settings()
        for auth in settings.values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"]).title()] = str(auth["value"])
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        parse: bool = True,
    ) -> dict[str, Any]:
        """One call; an error answer raises ``ApiException`` like the official client.

        ``parse=False`` skips decoding the answer (a patch returns the whole object).
        """
        data = None if body is None else json.dumps(body).encode()
        async with self.session().request(
            method,
            str(self.config.host).rstrip("/") + path,
            data=data,
            headers=self._headers(content_type if data is not None else None),
        ) as response:
            text = await response.read()
            if response.status >= 400:
                exc = ApiException(status=response.status, reason=response.reason)
                exc.body = text.decode(errors="replace")
                exc.headers = {"Retry-After": response.headers.get("Retry-After")}  # a 429's
                raise exc
            if not parse:
                return {}
            out = json.loads(text) if text else {}
            if not isinstance(out, dict):
                raise TypeError(f"expected a JSON object from {method} {path}")
            return out

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class Kube:
    """API objects created once at startup and kept in kopf's memo.

    The official client's API classes are created on first use: their modules (and the
    validation wrapped around every method) are about 27 MiB, and an operator serving
    only HealthPolicies never calls them (its per-round calls go through :attr:`aio`).
    """

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.aio = AsyncApi(api.configuration)

    @classmethod
    def connect(cls) -> Kube:
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(ApiClient())

    def plain(self, obj: Any) -> dict[str, Any]:
        """A client model as the JSON dict the API served (camelCase keys)."""
        out = self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        return out if isinstance(out, dict) else {}

    @functools.cached_property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @functools.cached_property
    def apps(self) -> kubernetes.client.AppsV1Api:
        return kubernetes.client.AppsV1Api(self.api)

    @functools.cached_property
    def batch(self) -> kubernetes.client.BatchV1Api:
        return kubernetes.client.BatchV1Api(self.api)

    @functools.cached_property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        await self.aio.close()
        self.close()


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking client call in a thread of the Kubernetes pool, with a timeout."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    return await executors.run_in(executors.KUBE, fn, *args, **kwargs)


async def call_json(
    fn: Callable[..., object],
    *args: Any,
    pool: ThreadPoolExecutor = executors.KUBE,
    **kwargs: Any,
) -> dict[str, Any]:
    """Like :func:`call` for the custom-objects API, which returns plain JSON dicts."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    result = await executors.run_in(pool, fn, *args, **kwargs)
    if not isinstance(result, dict):
        raise TypeError(f"expected a JSON object from {getattr(fn, '__name__', fn)}")
    return result


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


async def list_objects(
    kube: Kube, plural: str, namespaces: list[str] | None
) -> list[dict[str, Any]]:
    """Every object of one of our kinds (the stalled-watch check's LIST)."""
    base = f"/apis/{GROUP}/{VERSION}"
    paths = (
        [f"{base}/namespaces/{quote(ns)}/{plural}" for ns in namespaces]
        if namespaces
        else [f"{base}/{plural}"]
    )
    out: list[dict[str, Any]] = []
    for path in paths:
        out += (await kube.aio.request("GET", path))["items"]
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
    path = f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}"
    try:
        secret = await kube.aio.request("GET", path)
    except ApiException as exc:
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
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{plural}/{quote(name)}/status"
    await kube.aio.request(
        "PATCH",
        path,
        {"status": delta},
        content_type="application/merge-patch+json",
        parse=False,
    )
