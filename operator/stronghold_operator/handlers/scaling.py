"""ScalingPolicy handlers: kopf adapters over :mod:`stronghold_operator.controllers.scaling`.

Every policy's passes run on the kind's one scheduler, fed by the watch-event handler
below; no daemon per policy, so no finalizer either (kopf takes off the one that earlier
versions put on ScalingPolicies: no handler of this kind needs it). Who else scales a
target comes from two kopf indexes, not from LISTs per pass.
"""

from __future__ import annotations

from typing import Any

import kopf

from stronghold_operator import conditions as cond
from stronghold_operator.controllers import scaling as controller
from stronghold_operator.controllers.common import GROUP, VERSION, invalid_spec, track_watch
from stronghold_operator.logic import indexes
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.scaling import VOCABULARY, ScalingPolicySpec

PLURAL = controller.PLURAL
CONDITION_TYPES = VOCABULARY.types

track_watch(PLURAL)


# Async: kopf would run a sync index function in a thread for every watch event.
@kopf.index("autoscaling", "v1", "horizontalpodautoscalers", id=controller.HPA_INDEX)
async def hpa_targets(body: kopf.Body, **_: Any) -> dict[tuple[str, str, str], str]:
    """Every HPA under the workload it scales (a policy never fights one)."""
    return indexes.hpa_target(body)


@kopf.index(GROUP, VERSION, PLURAL, id=controller.CLAIMS_INDEX)
async def scaling_claims(body: kopf.Body, **_: Any) -> dict[tuple[str, ...], Any]:
    """Every valid policy under its target (the oldest one keeps the target)."""
    return indexes.scaling_claim(body)


@kopf.on.event(GROUP, VERSION, PLURAL, id="track")
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep the schedule current: a new policy gets its passes (every ``spec.interval``), a
    new spec or a maintenance hold wakes it now, a deleted one is forgotten."""
    controller.track(memo, event, body, kwargs)


@kopf.on.create(GROUP, VERSION, PLURAL, id="validate")
@kopf.on.update(GROUP, VERSION, PLURAL, id="validate")
@kopf.on.resume(GROUP, VERSION, PLURAL, id="validate")
async def validate(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch, **_: Any
) -> None:
    """Refuse a spec the operator cannot act on (Ready=False, InvalidSpec); passes wait."""
    try:
        parse(ScalingPolicySpec, spec)
    except InvalidSpec as exc:
        raise invalid_spec(patch, body, status, exc, CONDITION_TYPES, cond.utcnow()) from None
