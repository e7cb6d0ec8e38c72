"""`stronghold incident`: parsing, what each verb asks of the API (an in-memory client), and
errors as one line with exit code 2."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from stronghold_operator.cli import build_parser, main
from stronghold_operator.cli import incident as incident_cli
from stronghold_operator.models.errors import ApiError, ApiUnreachable
from stronghold_operator.platforms import kube as kube_module
from stronghold_operator.platforms.kube import Kind

INCIDENT = {
    "metadata": {"name": "stack-20260101-120000", "namespace": "shop"},
    "spec": {"healthPolicy": "stack"},
    "status": {
        "state": "Open",
        "severity": "P1",
        "maxSeverity": "P1",
        "rootCause": "db",
        "startedAt": "2026-01-01T12:00:00Z",
        "timeline": [{"time": "2026-01-01T12:00:00Z", "type": "Detected", "message": "start"}],
        "evidence": {
            "usage": [
                {
                    "kind": "Deployment",
                    "name": "web",
                    "pods": 2,
                    "measuredPods": 2,
                    "policyTarget": True,
                    "cpuMillicores": 90,
                    "memoryBytes": 64 * 2**20,
                    "cpuPercentOfRequests": 90,
                }
            ]
        },
    },
}


class FakeKube:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.patches: list[tuple[str, Mapping[str, Any]]] = []

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any]:
        if self.error:
            raise self.error
        return INCIDENT

    async def list(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        if self.error:
            raise self.error
        return [INCIDENT]

    async def patch(self, kind: Kind, name: str, namespace: str, body: Mapping[str, Any]) -> None:
        self.patches.append((name, body))

    async def aclose(self) -> None:
        pass

    @property
    def namespace(self) -> str:
        return "from-context"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    client = FakeKube()
    monkeypatch.setattr(kube_module.Kube, "connect", classmethod(lambda cls: client))
    return client


def test_parses_every_verb() -> None:
    for verb in ("show", "ack", "resolve", "postmortem"):
        args = build_parser(["incident"]).parse_args(["incident", verb, "x", "-n", "shop"])
        assert (args.action, args.name, args.namespace) == (verb, "x", "shop")
    args = build_parser(["incident"]).parse_args(["incident", "list", "-A"])
    assert args.all_namespaces


def test_ack_and_resolve_set_the_annotations(fake: FakeKube, capsys: Any) -> None:
    assert main(["incident", "ack", "stack-20260101-120000", "-n", "shop", "--by", "alice"]) == 0
    assert main(["incident", "resolve", "stack-20260101-120000", "-n", "shop", "--by", "bob"]) == 0
    assert [b["metadata"]["annotations"] for _, b in fake.patches] == [
        {"ops.stronghold.io/ack": "alice"},
        {"ops.stronghold.io/resolve": "bob"},
    ]


def test_list_show_postmortem(fake: FakeKube, capsys: Any) -> None:
    assert main(["incident", "list", "-n", "shop"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "NAME",
        "SEVERITY",
        "ROOT",
        "CAUSE",
        "STATE",
        "STARTED",
        "DURATION",
        "ACK",
    ]
    assert "stack-20260101-120000" in out and "Open" in out
    assert main(["incident", "show", "stack-20260101-120000", "-n", "shop"]) == 0
    shown = capsys.readouterr().out
    assert "Detected: start" in shown
    assert (
        "usage Deployment/web (policy's): 2 pod(s), 2 measured: CPU 90m (90% of requests),"
        " memory 64 MiB" in shown
    )
    assert main(["incident", "postmortem", "stack-20260101-120000", "-n", "shop"]) == 0
    assert capsys.readouterr().out.startswith("# Incident Post-Mortem: 2026-01-01")


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (ApiError(404, "NotFound"), "not found"),
        (ApiError(403, "Forbidden"), "access denied"),
        (ApiUnreachable("connection refused"), "did not answer"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    fake: FakeKube, capsys: Any, error: Exception, words: str
) -> None:
    fake.error = error
    assert main(["incident", "show", "nope", "-n", "shop"]) == 2
    captured = capsys.readouterr()
    assert words in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err and captured.out == ""


def test_the_namespace_defaults_to_the_contexts(fake: FakeKube, capsys: Any) -> None:
    assert main(["incident", "ack", "x", "--by", "alice"]) == 0
    assert "incident from-context/x" in capsys.readouterr().out


def test_show_names_the_policies_a_storm_grouped_on_the_incident() -> None:
    obj = {
        "metadata": {"namespace": "shop", "name": "stack-20260101-120000"},
        "spec": {"healthPolicy": "stack"},
        "status": {
            "state": "Open",
            "grouped": {"target": "postgres db:5432", "count": 3, "policies": ["shop/a", "shop/b"]},
        },
    }
    assert (
        "  grouped: 3 other policies' incidents on postgres db:5432 (shop/a, shop/b, ...)"
        in incident_cli._show(obj).splitlines()
    )
