"""Parsing a spec at the edge: validation errors become one message naming the field."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

M = TypeVar("M", bound="SpecModel")


class SpecModel(BaseModel):
    """Base for every spec model: camelCase aliases as in the CRDs, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class InvalidSpec(ValueError):
    """A spec the apiserver accepted but the operator cannot act on."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"spec.{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def shared(default: M) -> Callable[[], M]:
    """A default factory handing every model the same (frozen) instance.

    A thousand policies relying on the guide's bands share one object each instead of a
    thousand (about 5 KB of Python objects per policy that uses them all).
    """
    return lambda: default


def parse(model: type[M], spec: Mapping[str, Any]) -> M:
    """Validate ``spec`` into ``model``; raise :class:`InvalidSpec` naming the first bad field."""
    try:
        return model.model_validate(dict(spec))
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        raise InvalidSpec(_location(tuple(err["loc"])), str(err["msg"])) from None


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(value: Any) -> timedelta:
    """Go-style durations as Kubernetes users write them: ``30s``, ``5m``, ``1h30m``, ``250ms``.

    A bare number means seconds.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    if not isinstance(value, str):
        raise ValueError("must be a duration such as 30s, 5m or 1h30m")
    text = value.strip()
    m = _DURATION.match(text)
    if not text or m is None or not any(m.groups()):
        raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 1h30m")
    h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
    return timedelta(hours=h, minutes=mi, seconds=s, milliseconds=ms)


# A Go-style duration field in a model.
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

# The pattern the CRDs use for the same fields, so the apiserver refuses nonsense early.
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$"
