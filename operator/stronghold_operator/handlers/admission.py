"""Validating admission: kopf adapters over :mod:`stronghold_operator.controllers.admission`.

Imported only when the webhook is configured (stronghold_operator/main.py): kopf refuses to
start with admission handlers and no webhook server. Each kind's handler id is the URL path
its ValidatingWebhookConfiguration entry calls (manifests/components/webhook).
"""

from __future__ import annotations

from typing import Any

import kopf

from stronghold_operator.controllers import admission as controller
from stronghold_operator.controllers.common import GROUP, VERSION

OPERATIONS: list[kopf.Operation] = ["CREATE", "UPDATE"]


@kopf.on.validate(
    GROUP, VERSION, "healthpolicies", id="validate-healthpolicies", operations=OPERATIONS
)
@kopf.on.validate(
    GROUP, VERSION, "scalingpolicies", id="validate-scalingpolicies", operations=OPERATIONS
)
@kopf.on.validate(
    GROUP, VERSION, "backupschedules", id="validate-backupschedules", operations=OPERATIONS
)
@kopf.on.validate(
    GROUP, VERSION, "maintenancewindows", id="validate-maintenancewindows", operations=OPERATIONS
)
async def validate(resource: kopf.Resource, **kwargs: Any) -> None:
    """Refuse at apply time the spec a pass would report as Ready=False/InvalidSpec."""
    # operation/new/old are webhook-only kwargs, outside kopf's typed WebhookFn protocol.
    await controller.review(
        resource.plural, kwargs.get("operation"), kwargs.get("new"), kwargs.get("old")
    )
