"""Spec parsing at the edge: errors name the field; durations parse like Kubernetes users write."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import Field

from stronghold_operator.models.base import Duration, InvalidSpec, SpecModel, parse, parse_duration
from stronghold_operator.models.common import SecretKeySelector


class Inner(SpecModel):
    port: int = Field(ge=1, le=65535)


class Sample(SpecModel):
    interval: Duration = timedelta(seconds=30)
    items: list[Inner] = Field(default_factory=list)
    password: SecretKeySelector | None = None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("2h", 7200), (15, 15)],
)
def test_durations(text: str | int, expected: float) -> None:
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "5", "m", "1d", "-5s", "5 s", "1.5h", True, None])
def test_bad_durations(text: object) -> None:
    # A bare number *string* is refused too: in YAML strings, units are required.
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_names_the_nested_field() -> None:
    with pytest.raises(InvalidSpec) as err:
        parse(Sample, {"items": [{"port": 80}, {"port": 70000}]})
    assert err.value.field == "items[1].port"
    assert str(err.value).startswith("spec.items[1].port: ")


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(InvalidSpec) as err:
        parse(Sample, {"intervall": "5s"})
    assert err.value.field == "intervall"


def test_secret_reference_uses_kubernetes_shape() -> None:
    s = parse(
        Sample, {"interval": "10s", "password": {"secretKeyRef": {"name": "db", "key": "pw"}}}
    )
    assert s.interval == timedelta(seconds=10)
    assert s.password is not None
    assert (s.password.secret_key_ref.name, s.password.secret_key_ref.key) == ("db", "pw")


def test_a_validators_own_words_come_without_pydantics_prefix() -> None:
    with pytest.raises(InvalidSpec) as err:
        parse(Sample, {"interval": "1d"})
    assert str(err.value) == "spec.interval: '1d' is not a duration such as 30s, 5m or 1h30m"
