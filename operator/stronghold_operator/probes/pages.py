"""A MaintenanceWindow's post-check pages, through the HealthPolicy HTTP probe (safe targets,
no token): one shared client per process, created on first use."""

from __future__ import annotations

from typing import Any

from stronghold_operator.models.health import HttpCheck as ProbeSpec
from stronghold_operator.models.maintenance import HttpCheck
from stronghold_operator.probes.http import HttpProbe


class HttpPages:
    """Implements the window service's ``Pages`` port."""

    def __init__(self) -> None:
        self._probe: HttpProbe | None = None

    async def check(self, check: HttpCheck) -> dict[str, Any]:
        """One page: passed when the status is expected and the latency within budget."""
        if self._probe is None:
            self._probe = HttpProbe()
        spec = ProbeSpec.model_validate({"url": check.url, "expectedStatus": check.expected_status})
        result = await self._probe.probe(spec, timeout_s=check.timeout.total_seconds(), secrets={})
        url = result.urls[0]
        budget_ms = check.latency_budget.total_seconds() * 1000
        entry: dict[str, Any] = {"name": check.name, "type": "Http"}
        if url.status_code is None:
            entry |= {"passed": False, "message": f"{check.url}: {url.message or url.failure}"}
        elif url.status_code not in check.expected_status:
            entry |= {"passed": False, "message": f"{check.url}: HTTP {url.status_code}"}
        elif url.latency_ms is not None and url.latency_ms > budget_ms:
            over = f"{url.latency_ms:.0f} ms over the {budget_ms:.0f} ms budget"
            entry |= {"passed": False, "message": f"{check.url}: {over}"}
        else:
            entry |= {"passed": True, "message": f"{check.url}: HTTP {url.status_code}"}
        if url.latency_ms is not None:
            entry["latencyMs"] = round(url.latency_ms, 1)
        return entry

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.close()
