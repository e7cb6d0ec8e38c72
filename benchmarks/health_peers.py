"""The peers of the HealthPolicy benchmark, at the same endpoints and the same rate.

- guide: the operations guide's own approach, a shell loop calling
  ``curl -w %{time_total}`` once per endpoint per interval (CPU of bash + every curl).
- blackbox: Prometheus blackbox_exporter (Debian) probing the HTTP endpoints, one
  ``/probe`` request per check per interval (CPU of the exporter; the scraper that a
  Prometheus server would be is not counted).
- postgres_exporter: Debian's prometheus-postgres-exporter scraped once per PostgreSQL check
  per interval (CPU of the exporter).
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.common import Window, children_cpu_seconds, rss_mib, start, stop


@dataclass
class PeerResult:
    name: str
    probes: int
    cpu_seconds: float
    wall_seconds: float
    rss_mib: float
    note: str

    @property
    def cpu_ms_per_probe(self) -> float:
        return 1000 * self.cpu_seconds / max(self.probes, 1)


def guide_curl_loop(urls: list[str], interval: float, duration: float) -> PeerResult:
    """The guide's check_response_times.sh, looped at ``interval`` for ``duration``."""
    script = (
        "end=$((SECONDS + DURATION)); n=0\n"
        "while [ $SECONDS -lt $end ]; do\n"
        "  start=$(date +%s%N)\n"
        '  for endpoint in "$@"; do\n'
        '    response_time=$(curl -w "%{time_total}" -o /dev/null -s "$endpoint")\n'
        "    n=$((n + 1))\n"
        "  done\n"
        "  elapsed=$(( ($(date +%s%N) - start) / 1000000 ))\n"
        "  left=$(( INTERVAL_MS - elapsed ))\n"
        '  [ $left -gt 0 ] && sleep "$(echo "$left / 1000" | bc -l)"\n'
        "done\n"
        'echo "$n"\n'
    )
    before = children_cpu_seconds()
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", "-c", script, "guide", *urls],
        capture_output=True,
        text=True,
        check=True,
        env={
            "DURATION": str(int(duration)),
            "INTERVAL_MS": str(int(interval * 1000)),
            "PATH": "/usr/bin:/bin",
        },
    )
    wall = time.monotonic() - t0
    probes = int(proc.stdout.strip().splitlines()[-1])
    return PeerResult(
        "guide: bash + curl per endpoint",
        probes,
        children_cpu_seconds() - before,
        wall,
        0.0,
        "a new curl process and TCP connection per probe",
    )


async def _drive(urls: list[str], interval: float, duration: float, limit: int = 64) -> int:
    """Issue every URL once per interval (spread evenly), like a Prometheus scraping them."""
    sem = asyncio.Semaphore(limit)
    done = 0
    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=limit)) as client:

        async def one(url: str) -> None:
            nonlocal done
            async with sem:
                r = await client.get(url)
                r.read()
                done += 1

        loop = asyncio.get_running_loop()
        t_end = loop.time() + duration
        tasks: list[asyncio.Task[None]] = []
        while loop.time() < t_end:
            t0 = loop.time()
            for i, url in enumerate(urls):
                delay = t0 + interval * i / len(urls) - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(url)))
            rest = t0 + interval - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)
        await asyncio.gather(*tasks)
    return done


BLACKBOX_CONFIG = """modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      valid_status_codes: [200]
      method: GET
      preferred_ip_protocol: ip4
"""


def blackbox(targets: list[str], interval: float, duration: float, port: int = 19115) -> PeerResult:
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "blackbox.yml"
        cfg.write_text(BLACKBOX_CONFIG)
        proc = start(
            [
                "prometheus-blackbox-exporter",
                f"--config.file={cfg}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            Path(d) / "log",
        )
        try:
            _wait_http(f"http://127.0.0.1:{port}/metrics")
            urls = [f"http://127.0.0.1:{port}/probe?module=http_2xx&target={t}" for t in targets]
            with Window(proc.pid) as w:
                probes = asyncio.run(_drive(urls, interval, duration))
            rss = rss_mib(proc.pid)
        finally:
            stop(proc)
    return PeerResult(
        "blackbox_exporter (HTTP)",
        probes,
        w.cpu,
        w.wall,
        rss,
        "Go HTTP client per probe; scraper CPU not counted",
    )


def postgres_exporter(
    dsn: str, scrapes_per_interval: int, interval: float, duration: float, port: int = 19187
) -> PeerResult:
    with tempfile.TemporaryDirectory() as d:
        proc = start(
            ["prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{port}"],
            Path(d) / "log",
            env={"DATA_SOURCE_NAME": dsn},
        )
        try:
            _wait_http(f"http://127.0.0.1:{port}/metrics")
            urls = [f"http://127.0.0.1:{port}/metrics"] * scrapes_per_interval
            with Window(proc.pid) as w:
                probes = asyncio.run(_drive(urls, interval, duration, limit=8))
            rss = rss_mib(proc.pid)
        finally:
            stop(proc)
    return PeerResult(
        "postgres_exporter (PostgreSQL)",
        probes,
        w.cpu,
        w.wall,
        rss,
        "one scrape = its default query set; scraper CPU not counted",
    )


def _wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")
