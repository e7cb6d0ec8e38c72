"""Kubernetes client libraries side by side on the operator's hot calls, on the local apiserver.

Run: ``.venv/bin/python -m benchmarks.kube_client [--calls 300] [--rounds 1]`` (~3 min a round).

The candidates, each in a fresh process of its own (so its import and memory are its own):

- ``aiohttp by hand``: what the operator had for its per-object calls (``AsyncApi``, removed
  in favour of one library): aiohttp in the event loop, credentials from the official
  client's ``Configuration``; the floor any aiohttp-based library can reach.
- ``kubernetes sync, 8 threads``: the official synchronous client in a pool of 8 threads, as
  the operator ran it for everything else (``executors.KUBE``).
- ``kubernetes.aio``: the asyncio client the official ``kubernetes`` distribution ships since 36.
- ``kubernetes_asyncio``, ``lightkube`` (``AsyncClient``), ``kr8s`` (``kr8s.asyncio``).

Every candidate is used the way the operator's facade uses it: plain JSON out (no client
models), the answer of a status patch not decoded where the library lets it skip that.
kr8s's ``Secret.get(name)`` is a LIST with a field selector (it would need ``list`` on
Secrets, which the operator's RBAC does not grant), so kr8s reads the Secret through its
``Api.call_api``; its custom-object calls go through ``call_api`` too (its object classes
add a discovery round trip).

The calls, on objects in a throwaway namespace the benchmark creates and deletes (32
HealthPolicies, one Secret), all with the same credentials (the testbed's kubeconfig with a
client certificate, ``$KUBECONFIG``), the same timeouts (30 s) and the same number of calls:

- ``patch status``: merge patch of a HealthPolicy's ``status`` subresource, a new
  ``lastProbeTime`` each time (a real write), round-robin over the 32 policies;
- ``get secret``: GET of one Secret;
- ``list``: LIST of the namespace's 32 HealthPolicies.

Per candidate, call and concurrency (1, then 32 callers sharing ``--calls`` calls), after a
warm-up that is not counted: CPU ms per call (the process's user+system time over the batch,
all threads, divided by the calls) and wall-clock p50/p99 per call. Per candidate: RSS growth
from a process that has imported kopf and aiohttp (the operator always has them; kopf
imports any client it finds installed, so the candidates are hidden from it) to after
importing the library, loading the config and making each call once; the installed size
of the library with its dependencies (RECORD sizes, no bytecode) and what it adds to the
operator's other runtime dependencies (``pyproject.toml``). The event loop is uvloop, as in
the operator. ``--rounds N`` runs every candidate N times, interleaved, and reports medians.

Needs: the local cluster (``stronghold-testbed cluster up``) with the CRDs applied, and for
the full comparison ``pip install kubernetes_asyncio kr8s`` (not operator dependencies; a
candidate whose library is missing is named and left out).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.common import rss_mib, table

GROUP, VERSION, PLURAL, KIND = "ops.stronghold.io", "v1alpha1", "healthpolicies", "HealthPolicy"
POLICIES = 32
SECRET = "bench-secret"
TIMEOUT_S = 30.0
CALLS = ("patch status", "get secret", "list")
CONCURRENCY = (1, 32)
REPO = Path(__file__).resolve().parent.parent


def _stamp(i: int) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"status": {"lastProbeTime": now, "observedGeneration": 1 + i % 2}}


class Candidate:
    """One client library: connect, the three calls, close."""

    name = ""
    dist = ""  # its distribution, for the version and installed size

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    async def connect(self) -> None:
        raise NotImplementedError

    async def patch_status(self, name: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    async def get_secret(self, name: str) -> dict[str, Any]:
        raise NotImplementedError

    async def list_policies(self) -> list[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class ByHand(Candidate):
    name = "aiohttp by hand"
    dist = "aiohttp"

    async def connect(self) -> None:
        import ssl

        import aiohttp
        import kubernetes

        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        c = self.config = kubernetes.client.Configuration.get_default_copy()
        ctx = ssl.create_default_context(cafile=c.ssl_ca_cert or None)
        if c.cert_file:
            ctx.load_cert_chain(c.cert_file, c.key_file)
        self.host = str(c.host).rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=8),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        )

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        for auth in self.config.auth_settings().values():  # per request, as AsyncApi did
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"]).title()] = str(auth["value"])
        return headers

    async def _request(self, method: str, path: str, body: Any = None, parse: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        ct = "application/merge-patch+json" if data else None
        async with self.session.request(
            method, self.host + path, data=data, headers=self._headers(ct)
        ) as resp:
            text = await resp.read()
            resp.raise_for_status()
            return json.loads(text) if parse else None

    async def patch_status(self, name: str, body: dict[str, Any]) -> None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.ns}/{PLURAL}/{name}/status"
        await self._request("PATCH", path, body, parse=False)

    async def get_secret(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = await self._request(
            "GET", f"/api/v1/namespaces/{self.ns}/secrets/{name}"
        )
        return out

    async def list_policies(self) -> list[Any]:
        out = await self._request("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{self.ns}/{PLURAL}")
        return list(out["items"])

    async def close(self) -> None:
        await self.session.close()


class OfficialThreads(Candidate):
    name = "kubernetes sync, 8 threads"
    dist = "kubernetes"

    async def connect(self) -> None:
        import kubernetes

        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        self.api = kubernetes.client.ApiClient()
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="kube")

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs["_request_timeout"] = (10.0, TIMEOUT_S)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, partial(fn, *args, **kwargs))

    async def patch_status(self, name: str, body: dict[str, Any]) -> None:
        resp = await self._run(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            self.ns,
            PLURAL,
            name,
            body,
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
        if resp.status >= 400:
            raise RuntimeError(resp.status)

    async def get_secret(self, name: str) -> dict[str, Any]:
        resp = await self._run(
            self.core.read_namespaced_secret, name, self.ns, _preload_content=False
        )
        out: dict[str, Any] = json.loads(resp.data)
        return out

    async def list_policies(self) -> list[Any]:
        fn = self.custom.list_namespaced_custom_object
        out = await self._run(fn, GROUP, VERSION, self.ns, PLURAL)
        return list(out["items"])

    async def close(self) -> None:
        self.pool.shutdown()
        self.api.close()  # type: ignore[no-untyped-call]


class OfficialAio(Candidate):
    """The generated asyncio client (kubernetes_asyncio's generator, in ``kubernetes.aio``)."""

    name = "kubernetes.aio"
    dist = "kubernetes"

    def _module(self) -> Any:
        from kubernetes import aio

        return aio

    async def connect(self) -> None:
        lib = self._module()
        await lib.config.load_kube_config()
        self.api = lib.client.ApiClient()
        self.custom = lib.client.CustomObjectsApi(self.api)
        self.core = lib.client.CoreV1Api(self.api)

    def _raw(self, api: Any, method: str) -> Callable[..., Awaitable[Any]]:
        """The method answering the undecoded response (spelled differently per generator)."""
        return getattr(api, f"{method}_without_preload_content")  # type: ignore[no-any-return]

    async def _read(self, resp: Any) -> bytes:
        data: bytes = await resp.read()
        if resp.status >= 400:
            raise RuntimeError(resp.status)
        return data

    async def patch_status(self, name: str, body: dict[str, Any]) -> None:
        patch = self._raw(self.custom, "patch_namespaced_custom_object_status")
        ct = "application/merge-patch+json"
        args = (GROUP, VERSION, self.ns, PLURAL, name, body)
        await self._read(await patch(*args, _content_type=ct, _request_timeout=TIMEOUT_S))

    async def get_secret(self, name: str) -> dict[str, Any]:
        read = self._raw(self.core, "read_namespaced_secret")
        out: dict[str, Any] = json.loads(
            await self._read(await read(name, self.ns, _request_timeout=TIMEOUT_S))
        )
        return out

    async def list_policies(self) -> list[Any]:
        out = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, _request_timeout=TIMEOUT_S
        )
        return list(out["items"])

    async def close(self) -> None:
        await self.api.close()


class KubernetesAsyncio(OfficialAio):
    name = "kubernetes_asyncio"
    dist = "kubernetes_asyncio"

    def _module(self) -> Any:
        import kubernetes_asyncio

        return kubernetes_asyncio

    def _raw(self, api: Any, method: str) -> Callable[..., Awaitable[Any]]:
        return functools.partial(getattr(api, method), _preload_content=False)


class Lightkube(Candidate):
    """Generic resources (plain dicts, no codegen), as ``platforms/kube.py`` uses it."""

    name = "lightkube"
    dist = "lightkube"

    async def connect(self) -> None:
        import httpx2
        import lightkube
        from lightkube.generic_resource import create_namespaced_resource

        self.policy = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
        self.secret = create_namespaced_resource("", "v1", "Secret", "secrets")
        self.client = lightkube.AsyncClient(
            lightkube.KubeConfig.from_env(), timeout=httpx2.Timeout(TIMEOUT_S), trust_env=False
        )

    async def patch_status(self, name: str, body: dict[str, Any]) -> None:
        from lightkube.types import PatchType

        await self.client.patch(
            self.policy.Status, name, body, namespace=self.ns, patch_type=PatchType.MERGE
        )

    async def get_secret(self, name: str) -> dict[str, Any]:
        return dict(await self.client.get(self.secret, name, namespace=self.ns))

    async def list_policies(self) -> list[Any]:
        return [dict(o) async for o in self.client.list(self.policy, namespace=self.ns)]

    async def close(self) -> None:
        await self.client.close()


class Kr8s(Candidate):
    name = "kr8s"
    dist = "kr8s"

    async def connect(self) -> None:
        import kr8s.asyncio

        self.api = await kr8s.asyncio.api(kubeconfig=os.environ["KUBECONFIG"])
        self.api.timeout = TIMEOUT_S

    async def patch_status(self, name: str, body: dict[str, Any]) -> None:
        async with self.api.call_api(
            "PATCH",
            version=f"{GROUP}/{VERSION}",
            namespace=self.ns,
            url=f"{PLURAL}/{name}/status",
            content=json.dumps(body),
            headers={"Content-Type": "application/merge-patch+json"},
        ):
            pass

    async def get_secret(self, name: str) -> dict[str, Any]:
        async with self.api.call_api("GET", namespace=self.ns, url=f"secrets/{name}") as resp:
            out: dict[str, Any] = resp.json()
            return out

    async def list_policies(self) -> list[Any]:
        async with self.api.call_api(
            "GET", version=f"{GROUP}/{VERSION}", namespace=self.ns, url=PLURAL
        ) as resp:
            return list(resp.json()["items"])


CANDIDATES: dict[str, type[Candidate]] = {
    c.name: c for c in (ByHand, OfficialThreads, OfficialAio, KubernetesAsyncio, Lightkube, Kr8s)
}


# ---- one candidate, in its own process ----


def _call(c: Candidate, call: str, i: int) -> Awaitable[Any]:
    if call == "patch status":
        return c.patch_status(f"hp-{i % POLICIES:02d}", _stamp(i))
    if call == "get secret":
        return c.get_secret(SECRET)
    return c.list_policies()


async def _batch(c: Candidate, call: str, calls: int, concurrency: int) -> dict[str, float]:
    todo = iter(range(calls))
    latencies: list[float] = []

    async def caller() -> None:
        for i in todo:
            t0 = time.perf_counter()
            await _call(c, call, i)
            latencies.append(time.perf_counter() - t0)

    cpu0 = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu = time.process_time() - cpu0
    q = statistics.quantiles(latencies, n=100)
    return {"cpu_ms": cpu * 1000 / calls, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


def _import_kopf_alone() -> None:
    """The operator's baseline: kopf and aiohttp, which it always loads, and no client.

    kopf imports every client it finds installed (to borrow its login), which in this venv
    would put two of the candidates in the baseline; they are hidden while it imports.
    """
    hidden = ("kubernetes", "kubernetes_asyncio", "pykube")
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    import aiohttp  # noqa: F401
    import kopf  # noqa: F401

    for name in hidden:
        del sys.modules[name]


async def _measure(name: str, namespace: str, calls: int) -> dict[str, Any]:
    _import_kopf_alone()
    rss0 = rss_mib(os.getpid())
    c = CANDIDATES[name](namespace)
    await c.connect()
    secret = await c.get_secret(SECRET)
    assert "data" in secret, "the Secret came back without data"
    assert len(await c.list_policies()) == POLICIES
    await c.patch_status("hp-00", _stamp(0))
    out: dict[str, Any] = {"rss_mib": rss_mib(os.getpid()) - rss0}
    for call in CALLS:
        await _batch(c, call, max(32, calls // 10), 8)  # warm-up, not counted
        for conc in CONCURRENCY:
            out[f"{call}@{conc}"] = await _batch(c, call, calls, conc)
    await c.close()
    return out


def worker(name: str, namespace: str, calls: int) -> None:
    import uvloop

    print(json.dumps(uvloop.run(_measure(name, namespace, calls))))


# ---- the driver ----


def _requirements(dist: str) -> list[str]:
    from packaging.requirements import Requirement

    out = []
    for spec in metadata.requires(dist) or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req.name)
    return out


def closure(dists: Iterable[str]) -> set[str]:
    """The distributions ``dists`` install, with everything they require (normalised names)."""
    seen: set[str] = set()
    todo = list(dists)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += _requirements(name)
    return seen


def size_mib(dists: Iterable[str]) -> float:
    total = 0
    for name in dists:
        for f in metadata.distribution(name).files or []:
            total += f.size or 0
    return total / 2**20


def operator_base(exclude: set[str]) -> set[str]:
    """The operator's runtime dependencies but the Kubernetes client candidates."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [Requirement(d).name for d in deps]
    return closure(n for n in names if n.lower().replace("_", "-") not in exclude)


def _kubectl(*args: str, stdin: str | None = None) -> str:
    from stronghold_testbed.kubectl import run

    code, out, err = run(*args, input=stdin)
    if code:
        raise SystemExit(f"kubectl {' '.join(args)}: {err}")
    return out


def setup(namespace: str) -> None:
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": namespace},
            "stringData": {"password": "not-a-real-one", "user": "bench"},
        },
    ]
    items += [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": f"hp-{i:02d}", "namespace": namespace},
            "spec": {"checks": [{"name": "web", "http": {"url": "http://127.0.0.1:9/health/"}}]},
        }
        for i in range(POLICIES)
    ]
    _kubectl("apply", "-f", str(REPO / "crds" / "healthpolicy.yaml"))
    _kubectl(
        "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def run_round(names: list[str], namespace: str, calls: int) -> dict[str, dict[str, Any]]:
    out = {}
    for name in names:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.kube_client", "--worker", name,
             "--namespace", namespace, "--calls", str(calls)],
            check=False, capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        if proc.returncode:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _median(rounds: list[dict[str, dict[str, Any]]], name: str, key: str, field: str) -> float:
    return statistics.median(r[name][key][field] for r in rounds)


def report(rounds: list[dict[str, dict[str, Any]]], calls: int) -> None:
    names = list(rounds[0])
    rows = []
    for call in CALLS:
        for name in names:
            row: list[object] = [call, name]
            for conc in CONCURRENCY:
                row += [
                    _median(rounds, name, f"{call}@{conc}", f)
                    for f in ("cpu_ms", "p50_ms", "p99_ms")
                ]
            rows.append(row)
    cols = ["call", "client"]
    for conc in CONCURRENCY:
        cols += [f"CPU ms/call c={conc}", f"p50 ms c={conc}", f"p99 ms c={conc}"]
    table(
        f"Kubernetes clients: {calls} calls per cell, median of {len(rounds)} round(s)", cols, rows
    )
    candidates = {c.dist.lower().replace("_", "-") for c in CANDIDATES.values()} - {"aiohttp"}
    base = operator_base(candidates)
    rows = []
    for name in names:
        dist = CANDIDATES[name].dist
        deps = closure([dist])
        rows.append([
            name, f"{dist} {metadata.version(dist)}",
            statistics.median(r[name]["rss_mib"] for r in rounds),
            size_mib(deps), size_mib(deps - base), len(deps - base),
        ])  # fmt: skip
    table(
        "Memory and size (RSS growth after import, config and one call of each; installed "
        "size with dependencies, and what it adds to the operator's other dependencies)",
        ["client", "distribution", "RSS growth MiB", "installed MiB", "adds MiB", "adds dists"],
        rows,
    )


def runnable(names: list[str], explicit: bool) -> list[str]:
    """The candidates whose library is installed; the others are named, never dropped quietly
    (the operator's venv has lightkube and kubernetes; the rest are for this comparison)."""
    missing = []
    for name in names:
        try:
            metadata.distribution(CANDIDATES[name].dist)
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        dists = " ".join(sorted({CANDIDATES[n].dist for n in missing}))
        message = f"not installed: {', '.join(missing)} (pip install {dists} to compare them)"
        if explicit:
            raise SystemExit(message)
        print(f"kube_client: {message}; running the others", file=sys.stderr)
    return [n for n in names if n not in missing]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300, help="calls per call type and concurrency")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--only", action="append", choices=list(CANDIDATES), help="candidates to run")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--namespace", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.namespace, a.calls)
        return
    os.environ.setdefault("KUBECONFIG", str(Path.home() / ".cache/stronghold/admin.kubeconfig"))
    names = runnable(a.only or list(CANDIDATES), explicit=bool(a.only))
    namespace = f"kcbench-{uuid.uuid4().hex[:6]}"
    setup(namespace)
    try:
        rounds = [run_round(names, namespace, a.calls) for _ in range(a.rounds)]
    finally:
        _kubectl("delete", "namespace", namespace, "--wait=false")
    report(rounds, a.calls)


if __name__ == "__main__":
    main()
