"""Incident handlers: a watch-event handler hands every Incident event to the keeper, which
honours the acknowledge and resolve annotations (controllers/incident.py). Incidents are
created and updated by the HealthPolicy rounds, not here."""

from __future__ import annotations

from typing import Any

import kopf

from stronghold_operator.controllers import health as controller
from stronghold_operator.controllers.common import GROUP, VERSION


@kopf.on.event(GROUP, VERSION, "incidents", id="incident-track")
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Acknowledge or resolve by hand (annotations ops.stronghold.io/ack, /resolve)."""
    controller.track_incident(memo, event, body)
