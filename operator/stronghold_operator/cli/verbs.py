"""What the daily verbs (``scaling``, ``window``) share: requests through the API as the user
(their kubeconfig, their RBAC), one-line errors instead of tracebacks, and polling status.

Exit codes: 0 done, 1 the operator answered but not as asked (ignored, failed), 2 the request
could not be made or confirmed (forbidden, not found, unreachable, timed out).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from stronghold_operator.models.errors import ApiError, ApiUnreachable

if TYPE_CHECKING:
    from stronghold_operator.platforms.kube import Kube

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
POLL_SECONDS = 1.0
T = TypeVar("T")


class VerbError(Exception):
    """A request that could not be made: printed as one line, exit code 2."""


def failure(exc: ApiError, verb: str, plural: str, kind: str, namespace: str, name: str) -> str:
    """One line saying why the apiserver refused, in the words kubectl users know."""
    if exc.status == 403:
        # The apiserver's message names the user and the missing permission: keep that part.
        _, _, detail = exc.message.partition("is forbidden: ")
        return f"forbidden: {detail or f'you cannot {verb} {plural} in namespace {namespace}'}"
    if exc.status == 404:
        return f"{kind} {namespace}/{name} not found"
    if exc.status == 401:
        return "unauthorized: the apiserver refused the credentials of your kubeconfig"
    return f"{verb} {kind} {namespace}/{name} failed: {exc}"


async def call(
    request: Awaitable[T], verb: str, plural: str, kind: str, namespace: str, name: str
) -> T:
    """One API call; its failure as a :class:`VerbError` with a clear message."""
    try:
        return await request
    except ApiError as exc:
        raise VerbError(failure(exc, verb, plural, kind, namespace, name)) from None
    except ApiUnreachable as exc:
        raise VerbError(f"cannot reach the Kubernetes API: {exc}") from None


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run a verb; a :class:`VerbError` is printed on stderr as one line (exit 2)."""
    try:
        return asyncio.run(main)
    except VerbError as exc:
        print(f"error: {exc}" if not str(exc).startswith("forbidden") else exc, file=sys.stderr)
        return EXIT_ERROR


async def wait_for(
    read: Callable[[], Awaitable[dict[str, Any]]],
    outcome: Callable[[dict[str, Any]], tuple[int, str] | None],
    seconds: float,
) -> int:
    """Poll ``read`` until ``outcome`` says the operator has answered; print it."""
    deadline = time.monotonic() + seconds
    while True:
        found = outcome(await read())
        if found is not None:
            code, text = found
            print(text)
            return code
        if time.monotonic() >= deadline:
            print(f"timed out after {seconds:.0f}s waiting for the operator", file=sys.stderr)
            return EXIT_ERROR
        await asyncio.sleep(POLL_SECONDS)


def timestamp(when: datetime) -> str:
    """RFC 3339 in UTC to the second, as the operator writes times."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time with an offset; None when absent or not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.utcoffset() is not None else None


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def connect() -> Kube:
    """The user's client: ``--kubeconfig``/``--context`` (cli/connection.py), else
    ``$KUBECONFIG`` or ``~/.kube/config``; in a pod its ServiceAccount."""
    from stronghold_operator.platforms.kube import Kube

    try:
        return Kube.connect()
    except Exception as exc:  # the library's configuration errors have no common base
        raise VerbError(f"no usable Kubernetes configuration: {exc}") from None


def namespace_of(kube: Kube, given: str | None) -> str:
    """``-n``, else the namespace of the kubeconfig's context, as kubectl does."""
    return given or kube.namespace
