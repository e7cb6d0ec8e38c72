"""controllers/health: what a HealthPolicy's loop asks of its status writer."""

from __future__ import annotations

import copy
import time
from typing import Any, cast

from stronghold_operator.controllers import health
from stronghold_operator.controllers.common import Services
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION
from stronghold_operator.platforms.kube import Kube

BODY: dict[str, Any] = {
    "metadata": {"namespace": "ns", "name": "p", "uid": "u-hold", "generation": 1},
    "spec": {"interval": "10s", "checks": [{"name": "web", "http": {"url": "http://x/"}}]},
}


def annotated(value: str | None) -> dict[str, Any]:
    body = copy.deepcopy(BODY)
    if value is not None:
        body["metadata"]["annotations"] = {MAINTENANCE_ANNOTATION: value}
    return body


def test_no_heartbeat_only_a_rare_spread_probe_time_refresh() -> None:
    loop = health.PolicyLoop(
        Services(kube=cast(Kube, None)), health.HealthRuntime(health.new_scheduler()), BODY
    )
    w = loop.writer
    assert not hasattr(w, "heartbeat")
    assert w.refresh == ("lastProbeTime",) and w.refresh_every == health.PROBE_TIME_REFRESH_S
    assert health.PROBE_TIME_REFRESH_S >= 1800
    loop.close()


def test_a_hold_that_ends_refreshes_the_probe_time_for_a_while() -> None:
    loop = health.PolicyLoop(
        Services(kube=cast(Kube, None)),
        health.HealthRuntime(health.new_scheduler()),
        annotated("mw"),
    )
    assert loop.writer._soon == (0.0, 0.0)  # the first sight is no change of hold
    assert loop.observe(annotated(None))  # released: a round now
    until, every = loop.writer._soon
    assert every == health.HOLD_REFRESH_S and until > 0
    loop.close()


def test_a_finished_remediation_wakes_the_policy_for_its_verification() -> None:
    rt = health.HealthRuntime(health.new_scheduler())
    loop = health.PolicyLoop(Services(kube=cast(Kube, None)), rt, BODY)
    uid = loop.uid
    rt.scheduler.loops[uid] = loop
    rt.scheduler.schedule.at(uid, time.monotonic() + 30)  # its next round: the interval
    loop.wake(2.0)
    due = rt.scheduler.schedule.next_at()
    assert due is not None and due - time.monotonic() <= 2.0  # moved to the verification
    # Asked while a round runs: that round's own delay is shortened to it.
    assert 1.0 < loop._sooner(30.0) <= 2.0
    loop.wake_at = time.monotonic() - 1  # the woken round: the interval again after it
    assert loop._sooner(30.0) == 30.0 and loop.wake_at is None
    ports = loop.ports()
    assert ports.outcomes is loop.outcomes and ports.wake == loop.wake
    rt.scheduler.forget(uid)
