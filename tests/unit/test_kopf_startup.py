"""kopf's startup index gate with the linear ToggleSet (runtime/kopf_startup.py)."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from stronghold_operator.runtime import kopf_startup


def test_waiters_wake_once_when_the_last_object_is_indexed() -> None:
    assert kopf_startup.install()
    assert kopf_startup.install()  # idempotent

    async def scenario(n: int) -> tuple[int, bool]:
        gate = aiotoggles.ToggleSet(all)
        blocker = await gate.make_toggle(name="orchestration blocker")
        toggles = [await gate.make_toggle(name=str(i)) for i in range(n)]
        wakeups = 0
        original = gate._condition.wait

        async def counted_wait() -> bool:
            nonlocal wakeups
            result = await original()
            wakeups += 1
            return result

        gate._condition.wait = counted_wait  # type: ignore[method-assign]
        waiters = [asyncio.create_task(gate.wait_for(True)) for _ in range(n)]
        await asyncio.sleep(0)
        for t in toggles:  # each object indexed, as kopf's workers drop their toggles
            await gate.drop_toggle(t)
            await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)  # the blocker still holds them all
        await gate.drop_toggles([blocker])
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        return wakeups, gate.is_on()

    wakeups, on = asyncio.run(scenario(300))
    assert on
    assert wakeups == 300  # once per waiter (kopf's own: about 300 x 300)


def test_turning_a_toggle_still_wakes_waiters() -> None:
    kopf_startup.install()

    async def scenario() -> bool:
        paused = aiotoggles.ToggleSet(any)
        toggle = await paused.make_toggle(name="peering")
        waiter = asyncio.create_task(paused.wait_for(True))
        await asyncio.sleep(0)
        await toggle.turn_to(True)
        await asyncio.wait_for(waiter, 5)
        waiter = asyncio.create_task(paused.wait_for(False))
        await asyncio.sleep(0)
        await paused.drop_toggle(toggle)  # any() of nothing: off
        await asyncio.wait_for(waiter, 5)
        return paused.is_off()

    assert asyncio.run(scenario())
