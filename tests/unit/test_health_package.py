"""The package ``logic.health`` re-exports the public API of its modules."""

from __future__ import annotations

from stronghold_operator.logic import health


def test_every_exported_name_resolves() -> None:
    assert sorted(health.__all__) == sorted(set(health.__all__))
    for name in health.__all__:
        assert hasattr(health, name), name
