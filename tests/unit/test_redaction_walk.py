"""The status walk that drops "" values and redacts secrets (logic/health/redaction.scrubbed):
the same answer as the plain recursive definition, for any JSON-like value."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stronghold_operator.logic.health.redaction import scrubbed

SECRETS = ["hunter2", "amqp://guest:guest@db/"]


def reference(value: Any, secrets: list[str]) -> Any:
    """The definition: strings redacted (keys too), "" dropped inside objects, a copy."""
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, "***")
        return value
    if isinstance(value, dict):
        return {reference(k, secrets): reference(v, secrets) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [reference(v, secrets) for v in value]
    return value


texts = st.sampled_from(["", "ok", "hunter2", "pw=hunter2;", "amqp://guest:guest@db/x"]) | st.text(
    max_size=8
)
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
json_like = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=json_like, with_secrets=st.booleans())
def test_the_walk_equals_the_definition(value: Any, with_secrets: bool) -> None:
    secrets = SECRETS if with_secrets else []
    assert scrubbed(value, secrets) == reference(value, secrets)


def test_the_walk_copies_and_leaves_the_input_alone() -> None:
    status = {"checks": [{"name": "db", "message": "pw=hunter2", "reason": ""}], "x": ""}
    out = scrubbed(status, SECRETS)
    assert out == {"checks": [{"name": "db", "message": "pw=***"}]}
    assert status["checks"][0]["message"] == "pw=hunter2" and "x" in status
    assert out["checks"] is not status["checks"]
