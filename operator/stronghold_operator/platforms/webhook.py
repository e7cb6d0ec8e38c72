"""Outgoing notification webhooks: POST JSON with a timeout and retries with backoff.

The body is built by ``logic.health.webhook_body`` from status data only, so it carries no
credentials; the Authorization header (from a Secret) is the only secret sent, and never
logged. The URL (also one read from a Secret) passes the client's outbound guard like every
request. Failures are returned as data for the caller to report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stronghold_operator.platforms import fence
from stronghold_operator.platforms.http import HttpClient, HttpError, HttpRefused, HttpTimeout


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    detail: str  # "HTTP 200", "HTTP 503", "Timeout", "Unreachable", "Refused..." - never the URL


async def post_json(
    client: HttpClient,
    url: str,
    body: Any,
    *,
    timeout_s: float,
    delays: Sequence[float],
    authorization: str | None = None,
) -> Delivery:
    """POST ``body``; retry after each delay in ``delays`` on errors, 429 and 5xx."""
    fence.check("webhook")  # a deposed leader's notification would be a duplicate
    headers: dict[str, str] = {}
    if authorization:
        headers["Authorization"] = authorization
    detail = ""
    attempts = 0
    for wait in [0.0, *delays]:
        if wait:
            await asyncio.sleep(wait)
        attempts += 1
        try:
            response = await client.request(
                "POST", url, json_body=body, headers=headers, timeout_s=timeout_s, max_body=0
            )
        except HttpRefused:
            detail = "Refused by the outbound policy"  # nothing sent; retrying will not help
            break
        except HttpTimeout:
            detail = "Timeout"
            continue
        except HttpError:
            detail = "Unreachable"  # never the message: it names the URL
            continue
        detail = f"HTTP {response.status}"
        if response.status < 300:
            return Delivery(True, attempts, detail)
        if response.status != 429 and response.status < 500:
            break  # the receiver refuses this body: retrying will not help
    return Delivery(False, attempts, detail)
