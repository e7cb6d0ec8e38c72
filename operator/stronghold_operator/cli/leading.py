"""``stronghold run --leader-elect``: wait for the Lease, run kopf while holding it, stop at once
when it is lost (runtime/leader.py has the election itself)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

import kopf
from aiohttp import web

from stronghold_operator.platforms.kube import Kube
from stronghold_operator.runtime.leader import Elector

log = logging.getLogger("stronghold.leader")


def identity() -> str:
    """The Pod's name where the Deployment gives it (downward API), else host and pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


async def _follower_liveness(url: str | None, elector: Elector) -> web.AppRunner | None:
    """A follower is alive while it keeps waiting: answer the liveness URL until kopf,
    which serves the same URL once leading, takes it over."""
    if not url:
        return None
    parts = urlsplit(url)

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"role": "follower", "leader": elector.holder})

    app = web.Application()
    app.router.add_get(parts.path or "/", alive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname, parts.port or 80).start()
    return runner


async def lead_then_run(args: argparse.Namespace, options: dict[str, Any]) -> int:
    kube = Kube.connect()
    namespace = args.leader_elect_namespace or os.environ.get("POD_NAMESPACE") or kube.namespace
    elector = Elector(kube, namespace, args.leader_elect_lease, identity())
    liveness = await _follower_liveness(args.liveness, elector)
    try:
        await elector.acquire()
    finally:
        if liveness is not None:
            await liveness.cleanup()
    operator = asyncio.create_task(kopf.operator(**options))
    holding = asyncio.create_task(elector.hold())
    await asyncio.wait({operator, holding}, return_when=asyncio.FIRST_COMPLETED)
    if holding.done():
        # Lost: the fence is already closed; stop now rather than let kopf finish handlers
        # another replica is about to run (client-go's controllers exit the same way).
        log.critical("%s; exiting so a restart rejoins as a follower", holding.exception())
        logging.shutdown()
        sys.stdout.flush()
        os._exit(1)
    holding.cancel()
    await elector.release()
    await kube.aclose()
    return 0
