"""kopf startup and cleanup: settings, clients into memo, the stalled-watch liveness probe."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import kopf

from stronghold_operator import metrics
from stronghold_operator.conditions import utcnow
from stronghold_operator.controllers import admission
from stronghold_operator.controllers.common import WATCHED, Services, services
from stronghold_operator.logic.watchdog import WatchTracker, liveness_failure, versions
from stronghold_operator.models.admission import WebhookSettings
from stronghold_operator.platforms.kube import GROUP, Kube, explicit_kubeconfig, list_objects

PREFIX = GROUP  # annotations: ops.stronghold.io/<handler-id>
FINALIZER = f"{GROUP}/finalizer"

# A watch that has not delivered a change the apiserver made this long ago is stalled.
WATCH_GRACE = timedelta(seconds=float(os.environ.get("STRONGHOLD_WATCH_GRACE", "120")))
# The liveness check's LIST gives up after this long, well within the kubelet's probe
# timeout (manifests: 10 s): a slow apiserver must not make the probe itself time out.
LIST_TIMEOUT_S = float(os.environ.get("STRONGHOLD_LIVENESS_LIST_TIMEOUT", "5"))
log = logging.getLogger("stronghold.liveness")


class DiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base (spec, labels, annotations), copied from just those parts.

    kopf deep-copies the whole object and then drops status and metadata: for every watch
    event, including the ones our own status writes cause. With a thousand HealthPolicies
    that copy (every check's measurements, managedFields) was a third of kopf's CPU per
    event (py-spy). The result is the same.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        if extra_fields:  # a handler watching a status field: kopf's own way
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        slim: dict[str, Any] = {k: v for k, v in body.items() if k not in _NOT_ESSENCE}
        slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, slim)))


_NOT_ESSENCE = {"metadata", "status"}


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@kopf.on.login(id="login")
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's connection, the way the operator's own client connects: in a pod the
    ServiceAccount with KUBERNETES_SERVICE_HOST/PORT (kopf's built-in login dials
    kubernetes.default.svc, which needs cluster DNS), else the kubeconfig. kopf logs in
    again on a 401, which re-reads a rotated token."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    token = SERVICE_ACCOUNT / "token"
    if explicit_kubeconfig() is not None or not (host and port and token.exists()):
        # `stronghold run --kubeconfig F` also sets $KUBECONFIG (cli/connection.py).
        return kopf.login_with_kubeconfig(**kwargs)
    namespace = SERVICE_ACCOUNT / "namespace"
    return kopf.ConnectionInfo(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        ca_path=str(SERVICE_ACCOUNT / "ca.crt"),
        scheme="Bearer",
        token=token.read_text().strip(),
        default_namespace=namespace.read_text().strip() if namespace.exists() else None,
        priority=30,  # above kopf's own ServiceAccount (20) and kubeconfig (10) logins
    )


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Tune kopf for this operator and create the shared clients once."""
    tune(settings)
    namespaces = [n for n in os.environ.get("STRONGHOLD_NAMESPACES", "").split(",") if n]
    memo.services = Services(
        kube=Kube.connect(),
        watch=WatchTracker(grace=WATCH_GRACE),
        namespaces=namespaces or None,
    )


def tune(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for this operator (each line says why it differs from kopf's)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = DiffBase(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    # Watches end server-side every few minutes and are reopened; a stream that sends nothing
    # (not even a bookmark) for inactivity_timeout is treated as dead and reopened too.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.watching.inactivity_timeout = 70
    # The first LIST in pages, as client-go's reflector does: ten thousand objects in one
    # answer were one 30 MB body parsed at once, on top of the objects it becomes.
    settings.watching.chunk_size = 500
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 15
    # kopf posts its own log lines at or above this level as Events. At INFO every
    # "Handler ... succeeded." became an Event: one POST per watch event (thousands a
    # minute with a thousand HealthPolicies) and noise in `kubectl describe`. Our Events
    # are posted explicitly (kopf.event) and are not affected.
    settings.posting.level = logging.WARNING
    # Handler errors back off instead of retrying in a tight loop.
    settings.execution.max_workers = 20
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60, 120, 300]
    webhook = WebhookSettings.from_env()
    if webhook is not None:  # the admission webhook (main.py registers its handlers then)
        settings.admission.server = admission.server(webhook)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    svc = memo.get("services")
    if isinstance(svc, Services):
        await svc.stop_schedulers()  # before the client their passes write with goes
        await svc.kube.aclose()


@kopf.on.probe(id="watch")
async def watch_alive(memo: kopf.Memo, **_: Any) -> dict[str, int | str]:
    """Fail the liveness endpoint when the watch has missed changes for too long.

    An apiserver that does not answer (an outage, a freeze, 5xx, 429) passes: restarting
    the operator cannot help it, and a restart loop would only add to its load.
    """
    svc = services(memo)
    try:
        async with asyncio.timeout(LIST_TIMEOUT_S):
            listed, present = await list_watched(svc)
    except Exception as exc:
        svc.watch.unreachable()
        log.warning("liveness: the apiserver did not answer the LIST: %s", type(exc).__name__)
        return {"apiserver": f"unreachable: {type(exc).__name__}"}
    svc.delivered(listed)
    for plural, objects in present.items():  # series of objects gone unnoticed go too
        metrics.sweep(plural, objects)
    failure = liveness_failure(listed, svc.watch.stale(listed, utcnow()))
    if failure:
        raise kopf.PermanentError(failure)
    return {"objects": len(listed)}


async def list_watched(
    svc: Services,
) -> tuple[dict[str, str], dict[str, set[tuple[str, str]]]]:
    """Every watched object: uid -> resourceVersion, and plural -> (namespace, name)."""
    listed: dict[str, str] = {}  # uids are unique across kinds
    present: dict[str, set[tuple[str, str]]] = {}
    for plural in WATCHED:
        items = await list_objects(svc.kube, plural, svc.namespaces)
        listed.update(versions(items))
        present[plural] = {
            (str(m.get("namespace")), str(m.get("name"))) for m in (i["metadata"] for i in items)
        }
    return listed, present
