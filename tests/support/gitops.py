"""The GitOps health checks in manifests/gitops/, run for real: Argo CD's health.lua by a Lua
interpreter from Debian (as Argo CD hands it the object), Flux's healthCheckExprs by a CEL
implementation (cel-python). Shared by the unit tests (fixtures) and the integration test
(objects the operator wrote)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "manifests" / "gitops"
# One Argo CD script for the whole group, in Argo CD's wildcard layout (a `_` directory is
# the `*` of the argocd-cm key ops.stronghold.io/*).
ARGO = GITOPS / "argocd" / "resource_customizations" / "ops.stronghold.io" / "_"
SCRIPT = ARGO / "health.lua"
WILDCARD = "ops.stronghold.io/*"
# Every kind the CRDs define: a new kind without its fixtures and expressions fails the tests.
# Kinds only the operator writes (Incident: never in Git, nothing for Argo CD or Flux to wait
# for) carry the CRD label ops.stronghold.io/written-by=operator: RECORD_KINDS, which the
# wildcard matches too and the script reads as Healthy records.
WRITTEN_BY = "ops.stronghold.io/written-by"
_CRDS = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
_WRITTEN = {
    crd["spec"]["names"]["kind"]: (crd["metadata"].get("labels") or {}).get(WRITTEN_BY)
    for crd in _CRDS
}
KINDS = tuple(sorted(k for k, by in _WRITTEN.items() if by != "operator"))
RECORD_KINDS = tuple(sorted(k for k, by in _WRITTEN.items() if by == "operator"))
GROUPS = frozenset(crd["spec"]["group"] for crd in _CRDS)
FLUX_STATES = ("current", "inProgress", "failed")


def lua_literal(value: Any) -> str:
    """A Python value as a Lua table constructor (how Argo CD hands ``obj`` to the script)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are valid Lua string escapes for these
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, Mapping):
        items = (f"[{json.dumps(str(k))}] = {lua_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no Lua form for {type(value).__name__}")


def interpreter(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: `make tools` installs it (Debian package {name})")
    return found


def run_lua(lua: str, script: Path, obj: Mapping[str, Any]) -> tuple[str, str]:
    harness = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({json.dumps(str(script))})\n"
        'io.write(hs.status, "\\n", hs.message or "")\n'
    )
    command = [interpreter(lua), "-"]
    done = subprocess.run(
        command, input=harness, capture_output=True, text=True, timeout=10, check=False
    )
    assert done.returncode == 0, done.stderr
    status, _, message = done.stdout.partition("\n")
    return status, message


def argo_health(obj: Mapping[str, Any], lua: str = "lua5.4") -> tuple[str, str]:
    """Argo CD's (status, message) for ``obj`` from the group's health.lua."""
    return run_lua(lua, SCRIPT, obj)


def flux_exprs() -> dict[str, dict[str, str]]:
    kust = yaml.safe_load((GITOPS / "flux" / "kustomization.yaml").read_text())
    return {e["kind"]: e for e in kust["spec"]["healthCheckExprs"]}


def evaluate(expr: str, obj: Mapping[str, Any]) -> bool:
    """One CEL expression with the object's top-level fields as variables (as Flux binds them)."""
    env = celpy.Environment()
    program = env.program(env.compile(expr))
    result = program.evaluate({k: celpy.json_to_cel(v) for k, v in obj.items()})
    assert isinstance(result, celpy.celtypes.BoolType), result
    return bool(result)


def flux_states(kind: str, obj: Mapping[str, Any]) -> set[str]:
    """Which of the kind's Flux expressions hold for ``obj`` (exactly one, by design)."""
    exprs = flux_exprs()[kind]
    return {name for name in FLUX_STATES if evaluate(exprs[name], obj)}
