"""Parsing a spec at the edge: validation errors become one message naming the field."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

M = TypeVar("M", bound="SpecModel")
B = TypeVar("B", bound=BaseModel)


class SpecModel(BaseModel):
    """Base for every spec model: camelCase aliases as in the CRDs, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    @field_validator("*", mode="wrap")
    @classmethod
    def _any_error_names_the_field(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # pydantic reports only ValueError/AssertionError with the field's location; any
        # other error (OverflowError, TypeError...) would escape parse() without naming it.
        try:
            return handler(value)
        except (ValueError, AssertionError):
            raise
        except Exception as exc:
            raise ValueError(f"cannot be used ({type(exc).__name__}: {exc})") from None


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
        # pydantic prefixes a validator's own words with "Value error, ": noise to a user.
        message = str(err["msg"]).removeprefix("Value error, ")
        raise InvalidSpec(_location(tuple(err["loc"])), message) from None
    except Exception as exc:  # one odd spec must never crash a handler
        # pydantic wraps only ValueError/AssertionError; an OverflowError or TypeError from a
        # validator would otherwise escape and skip the InvalidSpec status.
        raise InvalidSpec("", f"cannot be used: {type(exc).__name__}: {exc}") from None


class Interner:
    """Equal parsed specs, and equal parts of specs, share one instance.

    A fleet's policies repeat most of their parts (the same Secret references, ports,
    timeouts, bands; often whole checks): parsed separately, 10,000 HealthPolicies kept
    10,000 copies of each. Sharing is safe because spec models are frozen; equality is
    pydantic's (values and the fields a user set, which overrides read). Instances no policy
    holds any more are dropped when the table has doubled since the last sweep.
    """

    def __init__(self) -> None:
        self._table: dict[int, list[BaseModel]] = {}
        self._size = 0
        self._swept_at = 0

    def __call__(self, model: M) -> M:
        out = self._canon(model)
        if self._size > 2 * self._swept_at + 1000:
            self.sweep()
        return out

    def __len__(self) -> int:
        return self._size

    def _canon(self, model: B) -> B:
        fields = model.__dict__
        for name, value in fields.items():
            shared = self._value(value)
            if shared is not value:  # before anyone else holds the new model
                fields[name] = shared
        key = hash(
            (
                type(model),
                tuple((k, _token(v)) for k, v in fields.items()),
                frozenset(model.model_fields_set),
            )
        )
        same = self._table.setdefault(key, [])
        for known in same:
            if known == model:
                return known  # equal implies the same type
        same.append(model)
        self._size += 1
        return model

    def _value(self, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return self._canon(value)
        if isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            value[:] = [self._canon(v) if isinstance(v, BaseModel) else v for v in value]
        return value

    def sweep(self) -> None:
        """Drop the instances only the table holds (parents first, then their parts)."""
        while True:
            before = self._size
            for key in list(self._table):
                kept = [m for m in self._table[key] if sys.getrefcount(m) > 3]
                self._size -= len(self._table[key]) - len(kept)
                if kept:
                    self._table[key] = kept
                else:
                    del self._table[key]
            if self._size == before:
                break
        self._swept_at = self._size


def _token(value: Any) -> Any:
    """A hashable stand-in for a field's value (shared parts by identity)."""
    if isinstance(value, BaseModel):
        return id(value)
    if isinstance(value, list | tuple):
        return tuple(_token(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _token(v)) for k, v in value.items())
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


# Digits per unit are bounded (as in the CRDs' DURATION_PATTERN) so no value overflows.
_DURATION = re.compile(
    r"^(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,6})s)?(?:([0-9]{1,6})ms)?$"
)
# No duration a user writes is longer than this (365 days); fields have tighter bounds.
MAX_DURATION = timedelta(hours=8760)


def parse_duration(value: Any) -> timedelta:
    """Go-style durations as Kubernetes users write them: ``30s``, ``5m``, ``1h30m``, ``250ms``.

    A bare number means seconds.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value <= MAX_DURATION.total_seconds():
            raise ValueError(f"must be between 0s and {format_duration(MAX_DURATION)}")
        return timedelta(seconds=float(value))
    if not isinstance(value, str):
        raise ValueError("must be a duration such as 30s, 5m or 1h30m")
    text = value.strip()
    m = _DURATION.match(text)
    if not text or m is None or not any(m.groups()):
        raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 1h30m")
    h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
    out = timedelta(hours=h, minutes=mi, seconds=s, milliseconds=ms)
    if out > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than {format_duration(MAX_DURATION)}")
    return out


def format_duration(td: timedelta) -> str:
    """The Go-style form of ``td`` (``1h30m``, ``500ms``), for messages."""
    ms = round(td.total_seconds() * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    parts = [f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s"), (ms, "ms")) if v]
    return "".join(parts) or "0s"


def check_port(url: str) -> None:
    """Refuse a URL whose port is not 1-65535 (urlsplit checks it only when asked)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{url!r}: port must be between 1 and 65535")


def within(low: timedelta, high: timedelta = MAX_DURATION) -> AfterValidator:
    """A bound on a Duration field: ``Annotated[Duration, within(...)]``."""

    def check(value: timedelta) -> timedelta:
        if not low <= value <= high:
            raise ValueError(f"must be between {format_duration(low)} and {format_duration(high)}")
        return value

    return AfterValidator(check)


# A Go-style duration field in a model (0s to MAX_DURATION).
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

# The pattern the CRDs use for the same fields, so the apiserver refuses nonsense early.
DURATION_PATTERN = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?([0-9]{1,6}ms)?$"
