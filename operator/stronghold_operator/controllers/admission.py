"""The admission webhook: kopf's server with the mounted certificate, and the review itself."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import kopf

from stronghold_operator import conditions as cond
from stronghold_operator.models.admission import WebhookSettings
from stronghold_operator.models.backup import ALLOW_PRIVILEGED_ENV, parse_allowance
from stronghold_operator.models.base import InvalidSpec
from stronghold_operator.platforms.executors import OTHER, run_in
from stronghold_operator.services import admission as service

# What the apiserver relays to `kubectl apply`: 422, as for the CRD schema's own refusals.
UNPROCESSABLE = 422


def server(config: WebhookSettings) -> kopf.WebhookServer:
    """kopf's HTTPS server with the certificate from ``config.cert_dir``.

    kopf re-reads the files every ``reload_s`` and restarts the listener when they change,
    so a certificate renewed into the mounted Secret is served without a restart.
    """
    return kopf.WebhookServer(
        addr=config.address,
        port=config.port,
        certfile=str(config.certfile),
        pkeyfile=str(config.keyfile),
        file_check_interval=config.reload_s,
    )


async def review(
    plural: str,
    operation: str | None,
    new: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None,
) -> None:
    """Refuse (kopf.AdmissionError, 422) a spec change a pass would report as InvalidSpec."""
    if new is None or not service.needs_check(operation, new, old):
        return
    # Read per request, as the backup pass does (the cluster admin's setting, not the spec's).
    allowed = parse_allowance(os.getenv(ALLOW_PRIVILEGED_ENV, ""))
    spec = new.get("spec") or {}
    try:
        # Off the event loop: a MaintenanceWindow's recurrence check walks ~13 months.
        await run_in(OTHER, service.check_spec, plural, spec, cond.utcnow(), allowed)
    except InvalidSpec as exc:
        raise kopf.AdmissionError(str(exc), code=UNPROCESSABLE) from None
