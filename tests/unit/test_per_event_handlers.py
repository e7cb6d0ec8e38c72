"""The handlers kopf runs for every watch event are coroutines (kopf runs a sync one in a
thread, for every event of every object, our own status writes' echoes included)."""

from __future__ import annotations

import inspect

import kopf

import stronghold_operator.main  # noqa: F401 - importing it registers the handlers


def test_index_and_event_handlers_run_in_the_event_loop() -> None:
    registry = kopf.get_default_registry()
    handlers = [*registry._indexing.get_all_handlers(), *registry._watching.get_all_handlers()]
    assert len(handlers) >= 8  # 6 indexes and the kinds' event handlers
    threaded = [h.id for h in handlers if not inspect.iscoroutinefunction(h.fn)]
    assert threaded == []
