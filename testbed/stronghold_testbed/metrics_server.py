"""A small metrics.k8s.io/v1beta1 server for the local cluster — test infrastructure only.

It stands in for metrics-server, which the local cluster does not run: it reports the real
CPU and memory usage of pod containers, read from Docker Engine stats (the kubelet's
dockershim labels every container with ``io.kubernetes.pod.name``, ``.pod.namespace`` and
``.container.name``; the pod sandbox container carries the pod's labels, which is how
``labelSelector`` works). Node usage comes from /proc.

The apiserver's aggregation layer proxies ``/apis/metrics.k8s.io/v1beta1/...`` to it over
HTTPS (APIService ``v1beta1.metrics.k8s.io`` -> ExternalName Service -> localhost:PORT) and
authenticates the user itself; this server trusts that front proxy: with
``--requestheader-client-ca`` it requires the proxy's client certificate (CN in
``--requestheader-allowed-names``) and an ``X-Remote-User`` header, as metrics-server does.

CPU is a rate: the difference of the cumulative CPU time between two samples
``--period`` seconds apart (so a container shows up after its second sample), in nanocores.
Memory is the working set (usage minus inactive page cache), as the kubelet reports it.

Run: ``python -m stronghold_testbed.metrics_server --port 4443 --cert server.crt
--key server.key [--requestheader-client-ca front-proxy-ca.crt]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger("stronghold.metrics-server")

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
GV = f"{GROUP}/{VERSION}"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
CONTAINER_NAME = "io.kubernetes.container.name"


@dataclass
class ContainerSample:
    pod: str
    namespace: str
    container: str
    cpu_total_ns: int
    memory_bytes: int
    at: float  # time.time() of the reading


@dataclass
class ContainerUsage:
    container: str
    nanocores: int
    memory_bytes: int


@dataclass
class PodUsage:
    namespace: str
    name: str
    timestamp: datetime
    window_s: float
    labels: dict[str, str] = field(default_factory=dict)
    containers: list[ContainerUsage] = field(default_factory=list)


def working_set(stats: Mapping[str, Any]) -> int:
    mem = stats.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return max(0, int(mem.get("usage", 0)) - int(inactive))


def _sandbox_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The pod's own labels among the sandbox container's labels."""
    return {
        k: v
        for k, v in labels.items()
        if not k.startswith("annotation.") and not k.startswith("io.kubernetes.")
    }


class Sampler:
    """Reads Docker stats every ``period`` seconds in a thread; keeps the latest rates."""

    def __init__(self, docker_host: str, period: float) -> None:
        self.client = docker.DockerClient(base_url=docker_host, version="auto", timeout=30)
        self.period = period
        self.prev: dict[str, ContainerSample] = {}
        self.pods: dict[tuple[str, str], PodUsage] = {}
        self.node_prev: tuple[float, float] | None = None
        self.node: tuple[int, int, datetime, float] | None = None  # nanocores, bytes, at, window
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _read(self, c: Any) -> ContainerSample | None:
        try:
            stats = self.client.api.stats(c.id, stream=False, one_shot=True)
        except docker.errors.DockerException:
            return None
        total = int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage", 0))
        return ContainerSample(
            pod=c.labels[POD_NAME],
            namespace=c.labels[POD_NAMESPACE],
            container=c.labels.get(CONTAINER_NAME, ""),
            cpu_total_ns=total,
            memory_bytes=working_set(stats),
            at=time.time(),
        )

    def sample_once(self) -> None:
        running = self.client.containers.list(filters={"label": POD_NAME})
        labels: dict[tuple[str, str], dict[str, str]] = {}
        current: dict[str, ContainerSample] = {}
        for c in running:
            key = (c.labels.get(POD_NAMESPACE, ""), c.labels.get(POD_NAME, ""))
            if c.labels.get(CONTAINER_NAME) == "POD":
                labels[key] = _sandbox_labels(c.labels)
                continue
            s = self._read(c)
            if s is not None:
                current[c.id] = s
        pods: dict[tuple[str, str], PodUsage] = {}
        for cid, s in current.items():
            before = self.prev.get(cid)
            if before is None or s.at <= before.at:
                continue  # a rate needs two readings
            window = s.at - before.at
            nanocores = max(0, int((s.cpu_total_ns - before.cpu_total_ns) / window))
            key = (s.namespace, s.pod)
            pod = pods.setdefault(
                key,
                PodUsage(
                    s.namespace,
                    s.pod,
                    datetime.fromtimestamp(s.at, UTC),
                    window,
                    labels.get(key, {}),
                ),
            )
            pod.containers.append(ContainerUsage(s.container, nanocores, s.memory_bytes))
        self._sample_node()
        with self.lock:
            self.prev = current
            self.pods = pods

    def _sample_node(self) -> None:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        ticks = [int(x) for x in fields]
        busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
        hz = os.sysconf("SC_CLK_TCK")
        now = time.time()
        mem: dict[str, int] = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                mem[k] = int(v.split()[0]) * 1024
        used = mem.get("MemTotal", 0) - mem.get("MemAvailable", 0)
        if self.node_prev is not None and now > self.node_prev[0]:
            window = now - self.node_prev[0]
            cores = (busy - self.node_prev[1]) / hz / window
            with self.lock:
                self.node = (int(cores * 1e9), used, datetime.fromtimestamp(now, UTC), window)
        self.node_prev = (now, busy)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sample_once()
            except Exception as exc:  # keep serving the last good data
                log.warning("sampling failed: %s", exc)
            self.stop.wait(self.period)

    def snapshot(self) -> tuple[list[PodUsage], tuple[int, int, datetime, float] | None]:
        with self.lock:
            return list(self.pods.values()), self.node


# --- label selectors (what the apiserver passes through from the client) ----------------


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector syntax: =, ==, !=, in (...), notin (...), key, !key."""
    for req in _split_selector(selector or ""):
        if " notin " in req or " in " in req:
            neg = " notin " in req
            key, _, rest = req.partition(" notin " if neg else " in ")
            values = {v.strip() for v in rest.strip().strip("()").split(",")}
            inside = labels.get(key.strip()) in values
            if inside == neg or (not neg and key.strip() not in labels):
                return False
        elif "!=" in req:
            key, _, value = req.partition("!=")
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in req:
            key, _, value = req.replace("==", "=").partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


# --- API objects -------------------------------------------------------------------------


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_metrics(p: PodUsage) -> dict[str, Any]:
    return {
        "metadata": {
            "name": p.name,
            "namespace": p.namespace,
            "creationTimestamp": _ts(datetime.now(UTC)),
            "labels": p.labels,
        },
        "timestamp": _ts(p.timestamp),
        "window": f"{max(1, round(p.window_s))}s",
        "containers": [
            {
                "name": c.container,
                "usage": {"cpu": f"{c.nanocores}n", "memory": f"{c.memory_bytes // 1024}Ki"},
            }
            for c in sorted(p.containers, key=lambda c: c.container)
        ],
    }


def node_metrics(name: str, node: tuple[int, int, datetime, float]) -> dict[str, Any]:
    nanocores, used, at, window = node
    return {
        "metadata": {"name": name, "creationTimestamp": _ts(datetime.now(UTC))},
        "timestamp": _ts(at),
        "window": f"{max(1, round(window))}s",
        "usage": {"cpu": f"{nanocores}n", "memory": f"{used // 1024}Ki"},
    }


def _list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": GV, "metadata": {}, "items": items}


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


RESOURCES = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": GV,
    "resources": [
        {"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics",
         "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics",
         "verbs": ["get", "list"]},
    ],
}  # fmt: skip
GROUP_DOC = {
    "kind": "APIGroup",
    "apiVersion": "v1",
    "name": GROUP,
    "versions": [{"groupVersion": GV, "version": VERSION}],
    "preferredVersion": {"groupVersion": GV, "version": VERSION},
}


def _front_proxy_only(allowed_names: set[str] | None) -> Middleware:
    """Middleware: API routes only for the front proxy (``None``: certificates not checked)."""

    @web.middleware
    async def front_proxy_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/healthz", "/readyz", "/livez"):
            return await handler(request)
        if allowed_names is not None:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            subject = dict(x[0] for x in (peer or {}).get("subject", ()))
            if subject.get("commonName") not in allowed_names:
                return _status(401, "Unauthorized", "a front-proxy client certificate is required")
        if not request.headers.get("X-Remote-User"):
            return _status(401, "Unauthorized", "X-Remote-User is missing")
        return await handler(request)

    return front_proxy_only


def build_app(sampler: Sampler, node_name: str, allowed_names: set[str] | None) -> web.Application:
    """The HTTP routes; ``allowed_names`` None means client certificates are not checked."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def apis(_: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "APIGroupList", "apiVersion": "v1", "groups": [GROUP_DOC]}
        )

    async def group(_: web.Request) -> web.Response:
        return web.json_response(GROUP_DOC)

    async def resources(_: web.Request) -> web.Response:
        return web.json_response(RESOURCES)

    async def pods(request: web.Request) -> web.Response:
        ns = request.match_info.get("ns")
        name = request.match_info.get("name")
        selector = request.query.get("labelSelector", "")
        found, _ = sampler.snapshot()
        items = [
            p
            for p in found
            if (ns is None or p.namespace == ns)
            and (name is None or p.name == name)
            and matches(selector, p.labels)
        ]
        if name is not None:
            if not items:
                return _status(404, "NotFound", f'podmetrics.metrics.k8s.io "{name}" not found')
            return web.json_response(
                {"kind": "PodMetrics", "apiVersion": GV, **pod_metrics(items[0])}
            )
        items.sort(key=lambda p: (p.namespace, p.name))
        return web.json_response(_list("PodMetricsList", [pod_metrics(p) for p in items]))

    async def nodes(request: web.Request) -> web.Response:
        name = request.match_info.get("name")
        _, node = sampler.snapshot()
        items = [node_metrics(node_name, node)] if node else []
        if name is not None:
            if name != node_name or not items:
                return _status(404, "NotFound", f'nodemetrics.metrics.k8s.io "{name}" not found')
            return web.json_response({"kind": "NodeMetrics", "apiVersion": GV, **items[0]})
        return web.json_response(_list("NodeMetricsList", items))

    base = f"/apis/{GV}"
    app = web.Application(middlewares=[_front_proxy_only(allowed_names)])
    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    app.router.add_get("/livez", ok)
    app.router.add_get("/apis", apis)
    app.router.add_get(f"/apis/{GROUP}", group)
    app.router.add_get(base, resources)
    app.router.add_get(f"{base}/pods", pods)
    app.router.add_get(f"{base}/namespaces/{{ns}}/pods", pods)
    app.router.add_get(f"{base}/namespaces/{{ns}}/pods/{{name}}", pods)
    app.router.add_get(f"{base}/nodes", nodes)
    app.router.add_get(f"{base}/nodes/{{name}}", nodes)
    return app


def ssl_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        # Optional at the TLS level so health checks work without a certificate; the API
        # routes demand a verified front-proxy certificate in the middleware.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(client_ca)
    return ctx


async def serve(args: argparse.Namespace) -> None:
    sampler = Sampler(args.docker_host, args.period)
    thread = threading.Thread(target=sampler.run, name="docker-stats", daemon=True)
    thread.start()
    allowed = (
        set(args.requestheader_allowed_names.split(",")) if args.requestheader_client_ca else None
    )
    app = build_app(sampler, args.node_name, allowed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner,
        args.address,
        args.port,
        ssl_context=ssl_context(args.cert, args.key, args.requestheader_client_ca),
    )
    await site.start()
    log.info("metrics.k8s.io server on https://%s:%d", args.address, args.port)
    try:
        await asyncio.Event().wait()
    finally:
        sampler.stop.set()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True, help="HTTPS port on --address")
    p.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--cert", required=True, help="server certificate (PEM)")
    p.add_argument("--key", required=True, help="server private key (PEM)")
    p.add_argument(
        "--requestheader-client-ca",
        default=None,
        help="CA of the apiserver's front-proxy client certificate; when set it is required",
    )
    p.add_argument(
        "--requestheader-allowed-names",
        default="front-proxy-client",
        help="accepted front-proxy certificate CNs, comma-separated",
    )
    p.add_argument("--docker-host", default="unix:///var/run/docker.sock")
    p.add_argument("--period", type=float, default=10.0, help="seconds between stats samples")
    p.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME", socket.gethostname()),
        help="name of the one node (the kubelet's --hostname-override)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
