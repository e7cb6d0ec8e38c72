"""runtime/turns: rounds woken together are evaluated a few per pass of the event loop."""

from __future__ import annotations

import asyncio

from stronghold_operator.runtime.turns import Turns


class Passes:
    """Counts passes of the running loop: a callback that schedules itself again runs once
    per pass (as a socket's callback would, after the loop's poll)."""

    def __init__(self) -> None:
        self.n = 0
        self._stopped = False
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        if not self._stopped:
            self.n += 1
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._stopped = True


async def test_a_wave_of_rounds_takes_a_few_turns_per_pass_in_order() -> None:
    gate, passes = Turns(per_pass=3), Passes()
    done: list[tuple[int, int]] = []  # (round, the pass it was evaluated in)
    answer = asyncio.get_running_loop().create_future()  # one shared probe's answer

    async def round_(i: int) -> None:
        await answer
        await gate.take()
        done.append((i, passes.n))

    tasks = [asyncio.create_task(round_(i)) for i in range(10)]
    await asyncio.sleep(0)
    answer.set_result(None)  # wakes all ten in one pass
    await asyncio.gather(*tasks)
    passes.stop()

    assert [i for i, _ in done] == list(range(10))  # in the order they asked
    per_pass: dict[int, int] = {}
    for _, p in done:
        per_pass[p] = per_pass.get(p, 0) + 1
    assert max(per_pass.values()) == 3  # never more than three evaluations between two polls
    assert len(per_pass) == 4  # 3 + 3 + 3 + 1


async def test_a_cancelled_round_takes_no_turn_and_a_lone_round_does_not_wait() -> None:
    gate = Turns(per_pass=1)
    await gate.take()  # the pass's one turn
    waiting = [asyncio.create_task(gate.take()) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[1].cancel()  # queued behind the first
    await asyncio.gather(waiting[0], waiting[2])
    assert waiting[1].cancelled()
    for _ in range(3):  # the queue is empty: the next passes admit at once
        await asyncio.sleep(0)
    await asyncio.wait_for(gate.take(), timeout=1)


def test_a_new_event_loop_starts_afresh() -> None:
    gate = Turns(per_pass=1)

    async def left_waiting() -> None:  # the loop ends with a round still waiting its turn
        await gate.take()
        asyncio.get_running_loop().create_task(gate.take())
        await asyncio.sleep(0)

    asyncio.run(left_waiting())
    asyncio.run(asyncio.wait_for(gate.take(), timeout=1))  # not queued behind the dead one
