"""Redaction of secret values from status and messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret value in ``text`` (defence in depth for messages)."""
    return _redact_sorted(text, redactable(secrets))


def redactable(secrets: Iterable[str]) -> list[str]:
    """The values worth redacting, longest first (a secret may contain a shorter one);
    one or two characters would mangle every message instead."""
    return sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)


def _redact_sorted(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    return text


def scrubbed(value: Any, secrets: Sequence[str]) -> Any:
    """A copy without "" values inside objects (the apiserver (1.20) reads "" in a patch as
    null, which a string field's schema then refuses) and with ``secrets`` redacted from
    every string, keys included: one walk, every round."""
    if isinstance(value, str):
        return _redact_sorted(value, secrets) if secrets else value
    if isinstance(value, dict):
        return {scrubbed(k, secrets): scrubbed(v, secrets) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [scrubbed(v, secrets) for v in value]
    return value
