"""kstatus' reading of an object, in Python: what Flux, ``kubectl wait`` and cli-utils decide.

The rules of sigs.k8s.io/cli-utils/pkg/kstatus/status (``Compute`` for a kind without
built-in rules), in their order:

1. ``metadata.deletionTimestamp`` set -> Terminating;
2. ``status.observedGeneration`` present and != ``metadata.generation`` -> InProgress;
3. the first of ``Reconciling=True`` (InProgress) or ``Stalled=True`` (Failed) in list order;
4. a ``Ready`` condition: True -> Current, False or Unknown -> InProgress;
5. otherwise Current (no status at all "fails open", cli-utils#632).

A checker for tests: the operator never reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


@dataclass(frozen=True)
class Result:
    status: str
    reason: str
    message: str = ""


def compute(obj: Mapping[str, Any]) -> Result:
    """The kstatus status of ``obj`` (a custom resource as the API returns it)."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return Result(TERMINATING, "Terminating", "resource scheduled for deletion")
    status = obj.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        msg = f"observed generation is {observed}, desired generation is {generation}"
        return Result(IN_PROGRESS, "LatestGenerationNotObserved", msg)
    conditions = status.get("conditions") or []
    for c in conditions:
        if c.get("type") == "Reconciling" and c.get("status") == "True":
            return Result(IN_PROGRESS, str(c.get("reason", "")), str(c.get("message", "")))
        if c.get("type") == "Stalled" and c.get("status") == "True":
            return Result(FAILED, str(c.get("reason", "")), str(c.get("message", "")))
    for c in conditions:
        if c.get("type") != "Ready":
            continue
        if c.get("status") == "True":
            return Result(CURRENT, "Ready", str(c.get("message", "")))
        return Result(IN_PROGRESS, str(c.get("reason", "")), str(c.get("message", "")))
    return Result(CURRENT, "NoConditions", "resource is current")
