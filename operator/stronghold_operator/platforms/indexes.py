"""The ports that answer from kopf indexes instead of LISTing every pass (the index
functions that fill them are logic/indexes.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stronghold_operator.models.scaling import Claim
from stronghold_operator.platforms.kube import Kube
from stronghold_operator.platforms.maintenance import KubeCovered

# What a kopf index looks like to a reader: key -> the values of the objects under it.
Index = Mapping[Any, Iterable[Any]]


class IndexedAutoscalers:
    """The scaling service's Autoscalers port, answered from the two indexes above."""

    def __init__(self, hpas: Index | None, claims: Index | None) -> None:
        self._hpas: Index = hpas if hpas is not None else {}
        self._claims: Index = claims if claims is not None else {}

    async def hpas(self, namespace: str, kind: str, name: str) -> list[str]:
        return sorted(self._hpas.get((namespace, kind, name), ()))

    async def claims(self, scope: tuple[str, ...]) -> list[Claim]:
        return sorted(self._claims.get(scope, ()))


# --- What a MaintenanceWindow covers ---------------------------------------------------------


class IndexedCovered:
    """The MaintenanceWindow service's CoveredObjects port: the objects of a namespace from
    the covered kinds' indexes; reads of one object and annotation writes go to the API."""

    def __init__(self, kube: Kube, namespace: str, indexes: Mapping[str, Index | None]) -> None:
        self.api = KubeCovered(kube, namespace)
        self.namespace = namespace
        self.indexes = indexes  # plural -> its index (None: the kind is not indexed)

    async def list(self, plural: str) -> list[dict[str, Any]] | None:
        index = self.indexes.get(plural)
        if index is None:
            return None
        # Copies: the service updates what it wrote in place; kopf's values stay untouched.
        return [copy.deepcopy(dict(e)) for e in index.get(self.namespace, ())]

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return await self.api.get(plural, name)

    async def set_annotations(
        self, plural: str, name: str, updates: Mapping[str, Callable[[str | None], str | None]]
    ) -> bool:
        return await self.api.set_annotations(plural, name, updates)
