"""manifests/gitops: Argo CD's health.lua run by a real Lua interpreter against its fixtures,
Flux's healthCheckExprs evaluated with a real CEL implementation (cel-python), and both held
to the kstatus reading (tests/support/kstatus.py) and to what the operator derives
(logic/lifecycle.py) for the same objects.

Lua 5.1 is what Argo CD's gopher-lua speaks; 5.4 is Debian's current one. Both come from
Debian (`make tools` installs them); a missing interpreter fails, it never skips.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from stronghold_operator import conditions as cond
from stronghold_operator.logic import incident as incident_logic
from stronghold_operator.logic import lifecycle
from stronghold_operator.platforms import incidents
from tests.support import kstatus
from tests.support.gitops import (
    ARGO,
    GITOPS,
    GROUPS,
    KINDS,
    RECORD_KINDS,
    SCRIPT,
    WILDCARD,
    flux_exprs,
    flux_states,
    run_lua,
)

LUAS = ("lua5.1", "lua5.4")


def fixture(path: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((ARGO / path).read_text())
    return obj


def cases() -> list[tuple[str, str, str, str]]:
    """(kind, fixture path, expected status, expected message) from health_test.yaml; the
    kind is the fixture's own (the one script dispatches on obj.kind)."""
    out = []
    for t in yaml.safe_load((ARGO / "health_test.yaml").read_text())["tests"]:
        hs = t["healthStatus"]
        out.append((fixture(t["inputPath"])["kind"], t["inputPath"], hs["status"], hs["message"]))
    return out


ALL_CASES = cases()
# The kinds kept in Git, which follow the kstatus lifecycle; records (Incident) are apart.
CASES = [c for c in ALL_CASES if c[0] in KINDS]
RECORD_CASES = [c for c in ALL_CASES if c[0] in RECORD_KINDS]


def ids(cases: list[tuple[str, str, str, str]]) -> list[str]:
    return [Path(p).stem for _, p, _, _ in cases]


@pytest.mark.parametrize("lua", LUAS)
@pytest.mark.parametrize(("kind", "path", "status", "message"), ALL_CASES, ids=ids(ALL_CASES))
def test_health_lua_gives_the_fixture_status(
    lua: str, kind: str, path: str, status: str, message: str
) -> None:
    assert run_lua(lua, SCRIPT, fixture(path)) == (status, message)


def test_every_fixture_is_listed_and_named_after_its_kind() -> None:
    listed = {f"testdata/{p.name}" for p in (ARGO / "testdata").glob("*.yaml")}
    assert listed == {p for _, p, _, _ in ALL_CASES}, "a fixture without a test"
    for kind, path, _, _ in ALL_CASES:
        assert Path(path).name.startswith(f"{kind}-"), path


def test_every_kind_has_every_argo_status_it_can_report() -> None:
    for kind in KINDS:
        seen = {s for k, _, s, _ in CASES if k == kind}
        assert seen == {"Healthy", "Progressing", "Degraded", "Suspended"}, kind


def test_records_are_healthy_whatever_their_state() -> None:
    # An open Incident is the HealthPolicy's news (IncidentOpen), not work for Argo CD.
    assert "Incident" in RECORD_KINDS
    assert {k for k, _, _, _ in RECORD_CASES} == set(RECORD_KINDS), "a record kind untested"
    assert {s for _, _, s, _ in RECORD_CASES} == {"Healthy"}
    for path in (p for _, p, _, _ in RECORD_CASES):
        obj = fixture(path)
        for state in ("Open", "Acknowledged", "Resolved", None):
            if state is None:
                obj.pop("status", None)
            else:
                obj["status"]["state"] = state
            status, message = run_lua("lua5.4", SCRIPT, obj)
            assert status == "Healthy", (state, message)
            assert f"is {state or 'not written yet'}:" in message


def test_incident_fixture_is_what_the_operator_writes() -> None:
    (path,) = (p for k, p, _, _ in RECORD_CASES if k == "Incident")
    obj = fixture(path)
    meta, owner = obj["metadata"], obj["metadata"]["ownerReferences"][0]
    body = incidents.incident_body(
        meta["namespace"], meta["name"], owner["name"], owner["uid"], obj["spec"]["id"]
    )
    assert {k: obj[k] for k in ("apiVersion", "kind", "spec")} == {
        k: body[k] for k in ("apiVersion", "kind", "spec")
    }
    assert {k: meta[k] for k in body["metadata"]} == body["metadata"]
    assert "conditions" not in obj["status"]
    news = incident_logic.News("Opened", {"severity": "P1"}, "opened")
    opened = incident_logic.opened(news, ["web"], cond.parse_rfc3339(obj["status"]["startedAt"]))
    assert set(obj["status"]) == set(opened)


def test_every_kind_has_its_lifecycle_rules() -> None:
    assert set(lifecycle.RULES) == set(KINDS)
    assert len(KINDS) == 4


def test_the_wildcard_matches_every_kind_of_the_group() -> None:
    # Argo CD matches "<group>/<kind>" against the key as a glob (argo-cd#10885).
    assert set(GROUPS) == {"ops.stronghold.io"}
    for kind in (*KINDS, *RECORD_KINDS):
        assert fnmatch.fnmatchcase(f"ops.stronghold.io/{kind}", WILDCARD), kind
    assert not fnmatch.fnmatchcase("apps/Deployment", WILDCARD)


def test_argocd_cm_snippet_holds_the_script_verbatim() -> None:
    cm = yaml.safe_load((GITOPS / "argocd" / "argocd-cm.yaml").read_text())
    assert set(cm["data"]) == {"resource.customizations"}
    entries = yaml.safe_load(cm["data"]["resource.customizations"])
    assert entries == {WILDCARD: {"health.lua": SCRIPT.read_text()}}


# --- the fixtures are what the operator writes, and kstatus agrees with Argo -----------------


def _derived_from_the_rest(kind: str, status: Mapping[str, Any]) -> list[dict[str, str]]:
    rest = [c for c in status["conditions"] if c["type"] not in lifecycle.DERIVED]
    updates = [cond.Condition(c["type"], c["status"], c["reason"], c["message"]) for c in rest]
    done = lifecycle.complete(kind, [], updates, status)
    return [{"type": c.type, "status": c.status, "reason": c.reason} for c in done[len(rest) :]]


@pytest.mark.parametrize(("kind", "path", "status", "message"), CASES, ids=ids(CASES))
def test_fixture_conditions_are_the_operators_derivation(
    kind: str, path: str, status: str, message: str
) -> None:
    obj = fixture(path)
    if "status" not in obj:
        return
    written = [
        {"type": c["type"], "status": c["status"], "reason": c["reason"]}
        for c in obj["status"].get("conditions", [])
        if c["type"] in lifecycle.DERIVED
    ]
    assert written == _derived_from_the_rest(kind, obj["status"])


# Argo CD status -> the kstatus status of the same object. Degraded splits: Stalled=True is
# Failed, Ready=False alone (a failed backup, an unreachable target) is InProgress.
ARGO_TO_KSTATUS = {
    "Healthy": {kstatus.CURRENT},
    "Progressing": {kstatus.IN_PROGRESS},
    "Degraded": {kstatus.FAILED, kstatus.IN_PROGRESS},
    # kstatus knows no "suspended": Ready decides (docs/gitops.md: use the Flux expressions).
    "Suspended": {kstatus.CURRENT, kstatus.IN_PROGRESS},
}


@pytest.mark.parametrize(("kind", "path", "status", "message"), ALL_CASES, ids=ids(ALL_CASES))
def test_kstatus_agrees_with_argo(kind: str, path: str, status: str, message: str) -> None:
    obj = fixture(path)
    result = kstatus.compute(obj)
    if "status" not in obj:
        # kstatus "fails open" on an object without status: why a fresh object must get
        # one at once (the integration test measures it).
        assert result.status == kstatus.CURRENT
        return
    assert result.status in ARGO_TO_KSTATUS[status]
    conditions = obj["status"].get("conditions", [])  # a record (Incident) has none
    stalled = any(c["type"] == "Stalled" and c["status"] == "True" for c in conditions)
    assert (result.status == kstatus.FAILED) == stalled


# --- Flux healthCheckExprs -------------------------------------------------------------------

ARGO_TO_FLUX = {
    "Healthy": "current",
    "Suspended": "current",
    "Progressing": "inProgress",
}


def test_flux_exprs_cover_every_kind() -> None:
    exprs = flux_exprs()
    assert set(exprs) == set(KINDS)
    for e in exprs.values():
        assert e["apiVersion"] == "ops.stronghold.io/v1alpha1"
        assert {"current", "inProgress", "failed"} <= set(e)


@pytest.mark.parametrize(("kind", "path", "status", "message"), CASES, ids=ids(CASES))
def test_flux_exprs_give_one_status_that_matches(
    kind: str, path: str, status: str, message: str
) -> None:
    obj = fixture(path)
    held = flux_states(kind, obj)
    assert len(held) == 1, held
    (got,) = held
    if status == "Degraded":
        expected = "failed" if kstatus.compute(obj).status == kstatus.FAILED else "inProgress"
    else:
        expected = ARGO_TO_FLUX[status]
    assert got == expected
