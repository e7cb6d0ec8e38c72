"""Prometheus metrics on the operator's /metrics: one registry, one obvious place.

Series labelled with one object (``namespace`` and the object's name as their first two
labels) are registered with :func:`per_object`, so they go when the object goes: at once on
delete (:func:`forget_object`), and level-triggered when an object is no longer listed
(:func:`sweep`, run with the liveness check's LIST) — a delete the watch never delivered
would otherwise keep its series, and the operator's memory, for ever.

Series too many to build as prometheus-client families at every scrape (every HealthPolicy's
checks: 190,000 samples at 10,000 policies) are rendered straight to text by a
:func:`text_source` and served after the registry's.
"""

from __future__ import annotations

import socket
import threading
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Protocol
from wsgiref.simple_server import make_server

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

registry: CollectorRegistry = REGISTRY


class TextSource(Protocol):
    """Families rendered straight to the exposition text (Prometheus text format 0.0.4), in
    pieces (whole families) so a scrape need not hold all of it at once."""

    families: tuple[str, ...]

    def render(self) -> Iterable[str]: ...


_TEXT: list[TextSource] = []

# plural -> metrics whose first two labels are (namespace, object name)
_PER_OBJECT: dict[str, list[Any]] = {}


def text_source(source: TextSource) -> None:
    """Serve ``source``'s text on /metrics after the registry's families."""
    _TEXT.append(source)


def exposition() -> Iterator[bytes]:
    """What /metrics serves, in pieces: the registry's families, then every text source's."""
    yield generate_latest(registry)
    for source in _TEXT:
        for piece in source.render():
            yield piece.encode()


def family_names() -> set[str]:
    """Every family /metrics can show (the alert rules may name only these)."""
    return {m.name for m in registry.collect()} | {n for s in _TEXT for n in s.families}


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    headers = [("Content-Type", CONTENT_TYPE_LATEST)]
    gzipped = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
    if gzipped:
        headers.append(("Content-Encoding", "gzip"))
    start_response("200 OK", headers)
    return _gzip(exposition()) if gzipped else exposition()


def _gzip(pieces: Iterable[bytes]) -> Iterator[bytes]:
    # Level 1: twenty megabytes at 10,000 policies; level 9 costs a second of CPU.
    z = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: the gzip wrapper
    for piece in pieces:
        yield z.compress(piece)
    yield z.flush()


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics (any path) in a background thread, as prometheus-client's server does,
    with the text sources after the registry (the text format; gzip when asked)."""

    class Server(ThreadingWSGIServer):
        """Its own class: the address family is set on it (IPv6 listens too)."""

    family, _, _, _, where = socket.getaddrinfo(addr, port)[0]
    Server.address_family = family
    server = make_server(str(where[0]), port, _app, Server, handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


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
