"""Unit tests: a fresh write budget and Event gate per test (they are process-wide)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stronghold_operator.logic.events import Limits
from stronghold_operator.runtime import budget, events


@pytest.fixture(autouse=True)
def fresh_budget_and_events() -> Iterator[None]:
    saved_budget, saved_gate = dict(budget._ONE), dict(events._ONE)
    budget._ONE.clear()
    events.configure(Limits())
    yield
    budget._ONE.clear()
    budget._ONE.update(saved_budget)
    events._ONE.clear()
    events._ONE.update(saved_gate)
