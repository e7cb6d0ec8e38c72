"""Prometheus metrics on the operator's /metrics: one registry, one obvious place.

Series labelled with one object (``namespace`` and the object's name as their first two
labels) are registered with :func:`per_object`, so they go when the object goes: at once on
delete (:func:`forget_object`), and level-triggered when an object is no longer listed
(:func:`sweep`, run with the liveness check's LIST) — a delete the watch never delivered
would otherwise keep its series, and the operator's memory, for ever.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

registry: CollectorRegistry = REGISTRY

# plural -> metrics whose first two labels are (namespace, object name)
_PER_OBJECT: dict[str, list[Any]] = {}


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics in a background thread (prometheus-client's own server)."""
    start_http_server(port, addr=addr, registry=registry)


def per_object(plural: str, *metrics: Any) -> None:
    """Declare ``metrics`` as labelled by one object of ``plural`` (namespace, name, ...)."""
    _PER_OBJECT.setdefault(plural, []).extend(metrics)


def _label_sets(metric: Any) -> list[tuple[str, ...]]:
    # prometheus-client has no public listing of a metric's children; its own remove() and
    # clear() work on this dict, under this lock.
    with metric._lock:
        return list(metric._metrics)


def forget_object(plural: str, namespace: str, name: str) -> int:
    """Remove every series of one object; returns how many went."""
    removed = 0
    for metric in _PER_OBJECT.get(plural, ()):
        for labels in _label_sets(metric):
            if labels[:2] == (namespace, name):
                try:
                    metric.remove(*labels)
                    removed += 1
                except KeyError:
                    pass  # removed meanwhile
    return removed


def sweep(plural: str, existing: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
    """Remove the series of every object of ``plural`` not in ``existing`` (namespace,
    name); returns the objects whose series went."""
    gone: set[tuple[str, str]] = set()
    for metric in _PER_OBJECT.get(plural, ()):
        for labels in _label_sets(metric):
            key = (labels[0], labels[1])
            if key not in existing:
                gone.add(key)
    for namespace, name in gone:
        forget_object(plural, namespace, name)
    return gone
