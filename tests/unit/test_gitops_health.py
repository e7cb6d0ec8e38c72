"""manifests/gitops: Argo CD's health.lua run by a real Lua interpreter against its fixtures,
Flux's healthCheckExprs evaluated with a real CEL implementation (cel-python), and both held
to the kstatus reading (tests/support/kstatus.py) and to what the operator derives
(logic/lifecycle.py) for the same objects.

Lua 5.1 is what Argo CD's gopher-lua speaks; 5.4 is Debian's current one. Both come from
Debian (`make tools` installs them); a missing interpreter fails, it never skips.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from stronghold_operator import conditions as cond
from stronghold_operator.logic import lifecycle
from tests.support import kstatus
from tests.support.gitops import ARGO, GITOPS, KINDS, flux_exprs, flux_states, run_lua

LUAS = ("lua5.1", "lua5.4")


def cases() -> list[tuple[str, str, str, str]]:
    """(kind, fixture path, expected status, expected message) from every health_test.yaml."""
    out = []
    for kind in KINDS:
        spec = yaml.safe_load((ARGO / kind / "health_test.yaml").read_text())
        for t in spec["tests"]:
            hs = t["healthStatus"]
            out.append((kind, t["inputPath"], hs["status"], hs["message"]))
    return out


CASES = cases()
IDS = [f"{k}/{Path(p).stem}" for k, p, _, _ in CASES]


def fixture(kind: str, path: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((ARGO / kind / path).read_text())
    return obj


@pytest.mark.parametrize("lua", LUAS)
@pytest.mark.parametrize(("kind", "path", "status", "message"), CASES, ids=IDS)
def test_health_lua_gives_the_fixture_status(
    lua: str, kind: str, path: str, status: str, message: str
) -> None:
    assert run_lua(lua, ARGO / kind / "health.lua", fixture(kind, path)) == (status, message)


def test_every_kind_has_every_argo_status_it_can_report() -> None:
    for kind in KINDS:
        seen = {s for k, _, s, _ in CASES if k == kind}
        assert seen == {"Healthy", "Progressing", "Degraded", "Suspended"}, kind
        listed = {f"testdata/{p.name}" for p in (ARGO / kind / "testdata").glob("*.yaml")}
        assert listed == {p for k, p, _, _ in CASES if k == kind}, "a fixture without a test"


def test_every_kind_has_its_lifecycle_rules() -> None:
    assert set(lifecycle.RULES) == set(KINDS)
    assert len(KINDS) == 4


def test_argocd_cm_snippet_holds_the_scripts_verbatim() -> None:
    cm = yaml.safe_load((GITOPS / "argocd" / "argocd-cm.yaml").read_text())
    data = cm["data"]
    assert set(data) == {f"resource.customizations.health.ops.stronghold.io_{k}" for k in KINDS}
    for kind in KINDS:
        key = f"resource.customizations.health.ops.stronghold.io_{kind}"
        assert data[key] == (ARGO / kind / "health.lua").read_text()


# --- the fixtures are what the operator writes, and kstatus agrees with Argo -----------------


def _derived_from_the_rest(kind: str, status: Mapping[str, Any]) -> list[dict[str, str]]:
    rest = [c for c in status["conditions"] if c["type"] not in lifecycle.DERIVED]
    updates = [cond.Condition(c["type"], c["status"], c["reason"], c["message"]) for c in rest]
    done = lifecycle.complete(kind, [], updates, status)
    return [{"type": c.type, "status": c.status, "reason": c.reason} for c in done[len(rest) :]]


@pytest.mark.parametrize(("kind", "path", "status", "message"), CASES, ids=IDS)
def test_fixture_conditions_are_the_operators_derivation(
    kind: str, path: str, status: str, message: str
) -> None:
    obj = fixture(kind, path)
    if "status" not in obj:
        return
    written = [
        {"type": c["type"], "status": c["status"], "reason": c["reason"]}
        for c in obj["status"]["conditions"]
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


@pytest.mark.parametrize(("kind", "path", "status", "message"), CASES, ids=IDS)
def test_kstatus_agrees_with_argo(kind: str, path: str, status: str, message: str) -> None:
    obj = fixture(kind, path)
    result = kstatus.compute(obj)
    if "status" not in obj:
        # kstatus "fails open" on an object without status: why a fresh object must get
        # one at once (the integration test measures it).
        assert result.status == kstatus.CURRENT
        return
    assert result.status in ARGO_TO_KSTATUS[status]
    stalled = any(
        c["type"] == "Stalled" and c["status"] == "True" for c in obj["status"]["conditions"]
    )
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


@pytest.mark.parametrize(("kind", "path", "status", "message"), CASES, ids=IDS)
def test_flux_exprs_give_one_status_that_matches(
    kind: str, path: str, status: str, message: str
) -> None:
    obj = fixture(kind, path)
    held = flux_states(kind, obj)
    assert len(held) == 1, held
    (got,) = held
    if status == "Degraded":
        expected = "failed" if kstatus.compute(obj).status == kstatus.FAILED else "inProgress"
    else:
        expected = ARGO_TO_FLUX[status]
    assert got == expected
