"""Typed status pieces every kind shares: the condition model, timestamps, a vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer


def _rfc3339(when: datetime) -> str:
    # Kubernetes' form: UTC, whole seconds, trailing Z (as conditions.rfc3339 writes it).
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# An aware datetime that serialises as RFC 3339 with ``Z``.
Timestamp = Annotated[AwareDatetime, PlainSerializer(_rfc3339, return_type=str)]


class StatusModel(BaseModel):
    """Base of status models: camelCase aliases, and only the fields a pass set are written."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    def to_status(self) -> dict[str, Any]:
        """The status form; fields never set are left out (the writer leaves them alone),
        fields set to None are written as null (deleted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Condition(StatusModel):
    """One entry of ``status.conditions`` (the CRDs' conditions item schema)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: Timestamp | None = Field(default=None, alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


@dataclass(frozen=True)
class Vocabulary:
    """A kind's condition types and reasons, and which types are bad when True (the rest
    are bad when False): Events and readers take the polarity from here."""

    types: tuple[str, ...]
    reasons: frozenset[str]
    bad_when_true: frozenset[str] = frozenset()

    def condition(
        self, type_: str, status: Literal["True", "False", "Unknown"], reason: str, message: str
    ) -> Condition:
        return Condition(type=type_, status=status, reason=reason, message=message)

    def unknown_all(self, reason: str, message: str = "Not evaluated yet") -> list[Condition]:
        """Every type ``Unknown``: what a kind reports the first time it sees an object."""
        return [self.condition(t, "Unknown", reason, message) for t in self.types]
