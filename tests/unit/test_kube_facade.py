"""The Kubernetes facade's pure parts: quantities, selectors, error translation, lookups."""

from __future__ import annotations

import base64
from typing import Any

import httpx2
import lightkube
import pytest
from lightkube.config.models import Cluster, User
from lightkube.core.exceptions import ApiError as LightkubeApiError
from lightkube.core.selector import build_selector

from stronghold_operator.models.errors import ApiError, ApiUnreachable
from stronghold_operator.platforms import kube as k
from stronghold_operator.platforms.quantity import parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", 0.25),
        ("64Mi", 64 * 2**20),
        ("1.5", 1.5),
        ("12345678n", 0.012345678),  # metrics-server's CPU
        ("5u", 5e-6),
        ("1e3", 1000.0),
        ("1E3", 1000.0),
        ("2E", 2e18),  # exa, not an exponent
        (".5", 0.5),
        ("+1.5Gi", 1.5 * 2**30),
        ("100k", 1e5),
        (3, 3.0),
    ],
)
def test_quantities(text: object, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "1x", "1KiB", "e3", "1e", True])
def test_not_quantities(text: object) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_label_selector_as_sent() -> None:
    selector = {
        "matchLabels": {"tier": "web", "app": "shop"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "canary"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "team", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert build_selector(k.label_selector(selector)) == (
        "app=shop,tier=web,env in (canary,prod),env notin (dev),team,!legacy"
    )
    assert k.label_selector({}) == []  # matches everything: no labelSelector at all


def test_label_selector_refuses_an_unknown_operator() -> None:
    bad = {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}
    with pytest.raises(ValueError, match="'Gt'"):
        k.label_selector(bad)


REQUEST = httpx2.Request("GET", "https://apiserver/api/v1/namespaces/a/secrets/b")


async def _raise(exc: BaseException) -> None:
    async with k._translated(k.asyncio.Semaphore(1)):
        raise exc


async def test_an_error_answer_becomes_api_error_with_the_apiserver_message() -> None:
    status = {"kind": "Status", "code": 404, "reason": "NotFound"}
    status["message"] = 'secrets "b" not found'
    response = httpx2.Response(404, request=REQUEST, json=status)
    with pytest.raises(ApiError) as caught:
        await _raise(LightkubeApiError(request=REQUEST, response=response))
    assert (caught.value.status, caught.value.reason) == (404, "NotFound")
    assert str(caught.value) == '404 NotFound: secrets "b" not found'
    assert k.is_not_found(caught.value) and not k.is_conflict(caught.value)


async def test_a_plain_text_error_answer_becomes_api_error() -> None:
    # An aggregated API server that is down answers 503 in text/plain, not a Status.
    response = httpx2.Response(503, request=REQUEST, text="service unavailable")
    with pytest.raises(ApiError) as caught:
        await _raise(httpx2.HTTPStatusError("503", request=REQUEST, response=response))
    assert (caught.value.status, caught.value.reason) == (503, "Service Unavailable")


@pytest.mark.parametrize(
    "exc",
    [httpx2.ConnectError("refused", request=REQUEST), httpx2.ReadTimeout("", request=REQUEST)],
)
async def test_no_answer_becomes_api_unreachable(exc: BaseException) -> None:
    with pytest.raises(ApiUnreachable, match=type(exc).__name__):
        await _raise(exc)
    assert issubclass(ApiUnreachable, ConnectionError)


def test_an_object_is_sent_in_the_namespace_asked() -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {}}
    obj = k._object(k.CONFIGMAPS, "ns", body)
    assert obj["metadata"] == {"name": "a", "namespace": "ns"}
    assert body["metadata"] == {"name": "a"}  # the caller's manifest is left as it was


def _kube() -> k.Kube:
    # No request is made: the client is only constructed.
    config = lightkube.KubeConfig.from_one(
        cluster=Cluster(server="http://127.0.0.1:9"), user=User(token="t")
    )
    return k.Kube(config)


async def test_secret_errors_name_the_secret_and_never_its_value() -> None:
    kube = _kube()
    secret = {
        "metadata": {"name": "db"},
        "data": {"password": base64.b64encode(b"s3cr3t").decode()},
    }
    answers: list[Any] = [secret, ApiError(404, "NotFound"), ApiError(403, "Forbidden")]

    async def get(*_: Any, **__: Any) -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return dict(answer)

    kube.get = get  # type: ignore[method-assign]
    with pytest.raises(LookupError, match="Secret ns/db has no key 'user'") as caught:
        await k.read_secret_entry(kube, "ns", "db", "user")
    assert "s3cr3t" not in str(caught.value)
    with pytest.raises(LookupError, match="Secret ns/db not found"):
        await k.read_secret_entry(kube, "ns", "db", "password")
    with pytest.raises(LookupError, match="Secret ns/db: access denied"):
        await k.read_secret_entry(kube, "ns", "db", "password")
    await kube.aclose()
