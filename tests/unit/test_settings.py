"""The operator's kopf settings: the lean diff base keeps exactly what kopf's keeps."""

from __future__ import annotations

import copy
from typing import Any, cast

import kopf
import pytest

from stronghold_operator.settings import PREFIX, DiffBase

FULL: dict[str, Any] = {
    "apiVersion": "ops.stronghold.io/v1alpha1",
    "kind": "HealthPolicy",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "uid": "u-1",
        "generation": 3,
        "resourceVersion": "77",
        "finalizers": ["example.com/keep"],
        "labels": {"tier": "app"},
        "annotations": {
            "ops.stronghold.io/maintenance": "weekly",
            "ops.stronghold.io/last-handled-configuration": '{"spec": {}}',
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "team": "payments",
        },
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    },
    "spec": {"interval": "10s", "checks": [{"name": "w", "http": {"url": "http://x/"}}]},
    "status": {"checks": [{"name": "w", "latencyMs": 3}], "conditions": []},
}
BARE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "X",
    "metadata": {"name": "x"},
    "spec": {"a": 1},
}


def _essence(storage: kopf.DiffBaseStorage, raw: dict[str, Any], **kw: Any) -> Any:
    return storage.build(body=kopf.Body(cast(kopf.RawBody, raw)), **kw)


@pytest.mark.parametrize("raw", [FULL, BARE], ids=["full", "bare"])
def test_diff_base_matches_kopf(raw: dict[str, Any]) -> None:
    before = copy.deepcopy(raw)
    ours = _essence(DiffBase(prefix=PREFIX, key="last-handled-configuration"), raw)
    kopfs = _essence(
        kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key="last-handled-configuration"), raw
    )
    assert ours == kopfs
    assert raw == before  # the body is not changed


def test_diff_base_is_a_copy() -> None:
    raw = copy.deepcopy(FULL)
    essence = _essence(DiffBase(prefix=PREFIX, key="last-handled-configuration"), raw)
    essence["spec"]["checks"][0]["name"] = "changed"
    essence["metadata"]["labels"]["tier"] = "changed"
    assert raw["spec"]["checks"][0]["name"] == "w"
    assert raw["metadata"]["labels"]["tier"] == "app"


def test_diff_base_with_extra_fields_is_kopfs() -> None:
    extra = [("status", "conditions")]
    ours = _essence(
        DiffBase(prefix=PREFIX, key="last-handled-configuration"), FULL, extra_fields=extra
    )
    assert ours["status"] == {"conditions": []}
