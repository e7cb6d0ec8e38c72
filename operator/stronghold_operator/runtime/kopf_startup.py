"""kopf's index gate at startup, made linear in the number of objects (kopf 1.45).

When an operator has ``@kopf.index`` handlers, kopf holds every object's handlers until all
indexed objects are indexed: each object of the first LIST gets a toggle in one
``ToggleSet``, its worker waits on the set's condition, and every toggle made or dropped
calls ``notify_all()``. So N objects wake N waiters N times: N² wake-ups before the first
handler runs. Measured with 10,000 HealthPolicies (``benchmarks.health``): no round started
in 5 minutes, the event loop busy in ``Condition.notify_all`` (py-spy). The waiters only
wait for the set's overall state, so waking them when that state has changed is enough:
once, when the last object is indexed.

:func:`install` patches ``ToggleSet.make_toggle``, ``drop_toggle`` and ``drop_toggles``
in place (kopf builds its sets from that class). Toggles turned on or off one by one keep
kopf's own behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kopf._cogs.aiokits import aiotoggles

_INSTALLED = "_stronghold_linear"


async def _make_toggle(
    self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    await _drop_toggles(self, (toggle,))


def install() -> bool:
    """Patch kopf's ToggleSet (once); False when kopf's class no longer has the shape this
    was written for, in which case kopf runs unpatched."""
    cls: Any = aiotoggles.ToggleSet
    if getattr(cls, _INSTALLED, False):
        return True
    probe = cls(all)
    if not all(hasattr(probe, a) for a in ("_condition", "_toggles", "is_on")):
        return False
    cls.make_toggle, cls.drop_toggle, cls.drop_toggles = _make_toggle, _drop_toggle, _drop_toggles
    setattr(cls, _INSTALLED, True)
    return True
