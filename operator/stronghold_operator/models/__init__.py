"""Typed spec/status models, one module per kind, parsed at the edge with :func:`parse`."""

from stronghold_operator.models.base import InvalidSpec, SpecModel, parse

__all__ = ["InvalidSpec", "SpecModel", "parse"]
