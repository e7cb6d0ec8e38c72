"""Bounded worker threads, one pool per kind of blocking work.

Everything blocking used to share asyncio's default pool (a handful of threads on a small
node): forty hung Docker reads held every thread, and a Kubernetes call queued behind them
for most of a minute. Each kind now has its own few threads, so a hung Docker Engine
delays only its own kind (Kubernetes calls are async and need no thread); a caller that
gives up (its own timeout) takes its queued work out of the queue, and every blocking call
carries a timeout of its own, so a hung thread comes back.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Docker Engine SDK calls (Compose services: usage, replicas, scaling).
DOCKER = ThreadPoolExecutor(max_workers=8, thread_name_prefix="docker")
# Anything else blocking or CPU-heavy (recurrence expansion, window decisions).
OTHER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="blocking")


async def run_in(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on one of ``pool``'s threads.

    Cancelling the caller before a thread has taken the work removes it from the queue.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))
