"""Redaction of secret values from status and messages."""

from __future__ import annotations

import re
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
    if isinstance(value, dict):
        return _scrubbed_dict(value, secrets)
    if isinstance(value, list):
        return _scrubbed_list(value, secrets)
    if isinstance(value, str):
        return _redact_sorted(value, secrets) if secrets else value
    return value


# The walk was a third of a round's own CPU: the common kinds are told apart here, by exact
# type, instead of by a call per value (a round's status holds about 190 values).
_PLAIN = frozenset({int, float, bool, type(None)})


def _scrubbed_dict(value: dict[Any, Any], secrets: Sequence[str]) -> dict[Any, Any]:
    out = {}
    for key, v in value.items():
        kind = type(v)
        if kind is str:
            if not v:
                continue
            kept = _redact_sorted(v, secrets) if secrets else v
        elif kind is dict:
            kept = _scrubbed_dict(v, secrets)
        elif kind is list:
            kept = _scrubbed_list(v, secrets)
        elif kind in _PLAIN:
            kept = v
        elif v == "":
            continue
        else:
            kept = scrubbed(v, secrets)
        if type(key) is not str:
            out[scrubbed(key, secrets)] = kept
        else:  # keys are redacted too
            out[_redact_sorted(key, secrets) if secrets else key] = kept
    return out


def _scrubbed_list(value: list[Any], secrets: Sequence[str]) -> list[Any]:
    out = []
    for v in value:
        kind = type(v)
        if kind is str:
            out.append(_redact_sorted(v, secrets) if secrets else v)
        elif kind is dict:
            out.append(_scrubbed_dict(v, secrets))
        elif kind in _PLAIN:
            out.append(v)
        else:
            out.append(scrubbed(v, secrets))
    return out


# What looks like a credential in a log line (samples kept as evidence): query or form
# parameters, credential headers, cookies, bearer tokens and user:password@ in URLs.
_SECRET_PARAM = re.compile(
    r"(?i)\b((?:password|passwd|pwd|pass|token|access_token|refresh_token|id_token|api_?key"
    r"|secret|client_secret|sessionid|session|sid|csrftoken|csrfmiddlewaretoken|auth)"
    r"(?:=|%3D|\"?\s*:\s*\"?))[^&\s\"';,]+"
)
_SECRET_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|(?:set-)?cookie|x-api-key|x-auth-token)(\s*[:=]\s*)[^\"\r\n]+"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")


def redact_credentials(text: str) -> str:
    """``text`` with every value that looks like a credential or session cookie as ``***``."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    text = _SECRET_HEADER.sub(r"\1\2***", text)
    text = _BEARER.sub(r"\1 ***", text)
    return _SECRET_PARAM.sub(r"\1***", text)
