"""Prometheus metrics on the operator's /metrics: one registry, one obvious place."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

registry: CollectorRegistry = REGISTRY


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics in a background thread (prometheus-client's own server)."""
    start_http_server(port, addr=addr, registry=registry)
