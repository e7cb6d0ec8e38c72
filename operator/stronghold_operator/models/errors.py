"""Errors of the Kubernetes API that the layers above platforms/ catch.

Defined here, like ``MetricsUnavailableError``, so probes and services can catch them
without importing a platform; ``platforms/kube`` raises them, whatever its library raised.
"""

from __future__ import annotations


class ApiError(Exception):
    """The apiserver answered with an error: its code, reason and message.

    The message is the apiserver's (it names the object, never a Secret's data).
    """

    def __init__(
        self, status: int, reason: str, message: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after  # the answer's Retry-After seconds (429, some 5xx)


class ApiUnreachable(ConnectionError):
    """No answer from the apiserver: refused, reset, timed out (a ``ConnectionError``)."""
