"""A TCP proxy on 127.0.0.1 that can make its upstream slow, for the storm scenario.

``SlowProxy(upstream_host, upstream_port)`` listens on a free port of 127.0.0.1 and relays
every connection to the upstream, in a thread with its own asyncio loop (the benchmark is
synchronous). ``proxy.delay = seconds`` holds every chunk the upstream sends for that long
before relaying it: an HTTP answer on a kept-alive connection then arrives ``delay`` later,
so a probe with a shorter timeout times out, while the upstream itself stays healthy and
unloaded (the outage is the proxy's, exactly as long as the benchmark says). The delay can
be changed at any time; chunks already waiting keep the delay they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

CHUNK = 65536


class SlowProxy:
    """See the module docstring; use as a context manager (``with SlowProxy(...) as p``)."""

    def __init__(self, upstream_host: str, upstream_port: int, delay: float = 0.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.port = 0
        self.connections = 0  # accepted so far (a sanity figure for the report)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Open relays end with their sockets; close_clients() is 3.13+, cancel instead,
            # and let them finish here, while the loop still runs their ``finally``.
            relays = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(self._pipe(client_r, up_w, slow=False), self._pipe(up_r, client_w))
        except asyncio.CancelledError:
            pass  # the proxy is stopping: the connection just ends (asyncio logs a raise here)
        finally:
            for w in (client_w, up_w):
                w.close()

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, slow: bool = True
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(CHUNK):
                delay = self.delay if slow else 0.0
                if delay > 0:
                    await asyncio.sleep(delay)
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError):
            if dst.can_write_eof():
                dst.write_eof()
