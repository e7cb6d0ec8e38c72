"""Validation at apply time: the very checks a pass runs, on a spec the apiserver has yet to store.

The admission webhook (handlers/admission.py) refuses what a pass would report as
``Ready=False``/``InvalidSpec``, with the same message naming the field: each kind's check
below is the function its pass calls, not a copy of it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.models.scaling import ScalingPolicySpec
from stronghold_operator.services import backup, maintenance

# plural -> check(spec, now, allowed privileged jobTemplate fields); raises InvalidSpec.
Check = Callable[[Mapping[str, Any], datetime, Collection[str]], object]
CHECKS: dict[str, Check] = {
    "healthpolicies": lambda raw, now, allowed: parse(HealthPolicySpec, raw),
    "scalingpolicies": lambda raw, now, allowed: parse(ScalingPolicySpec, raw),
    "backupschedules": lambda raw, now, allowed: backup.compile_spec(raw, allowed),
    "maintenancewindows": lambda raw, now, allowed: maintenance.check_spec(raw, now),
}


def check_spec(
    plural: str, raw: Mapping[str, Any], now: datetime, allowed: Collection[str]
) -> None:
    """Raise :class:`~stronghold_operator.models.base.InvalidSpec` as the kind's pass would."""
    CHECKS[plural](raw, now, allowed)


def needs_check(
    operation: str | None, new: Mapping[str, Any] | None, old: Mapping[str, Any] | None
) -> bool:
    """Whether this request changes a spec the webhook must judge.

    An update that leaves the spec as it was (labels, annotations, finalizers, the operator's
    own bookkeeping) passes even when the stored spec is invalid: an object stored before the
    webhook existed must stay deletable and annotatable. So does one being deleted.
    """
    if new is None or operation not in ("CREATE", "UPDATE"):
        return False
    if operation == "CREATE":
        return True
    if (new.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return (new.get("spec") or {}) != ((old or {}).get("spec") or {})
