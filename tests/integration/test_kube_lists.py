"""Metadata-only LISTs in pages, against the real API server (the liveness check's LIST)."""

from __future__ import annotations

import pytest

from stronghold_operator.platforms import kube as k
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_the_metadata_list_pages_through_every_object(namespace: str) -> None:
    items = [
        {
            "apiVersion": f"{k.GROUP}/v1alpha1",
            "kind": "HealthPolicy",
            "metadata": {"name": f"p{i}"},
            "spec": {"checks": [{"name": "w", "http": {"url": "http://127.0.0.1:1/"}}]},
        }
        for i in range(5)
    ]
    kit.apply_in(namespace, {"apiVersion": "v1", "kind": "List", "items": items})
    kube = k.Kube.connect()
    try:
        listed = await kube.list_metadata(k.ours("healthpolicies"), namespace, page=2)  # 3 pages
    finally:
        await kube.aclose()
    assert sorted(i["metadata"]["name"] for i in listed) == [f"p{i}" for i in range(5)]
    for item in listed:  # metadata only, and only what the check reads
        assert set(item) == {"metadata"}
        assert set(item["metadata"]) == {"uid", "resourceVersion", "namespace", "name"}
        assert item["metadata"]["namespace"] == namespace
