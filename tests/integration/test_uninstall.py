"""Uninstall when the operator is already gone: docs/install.md's finalizer loop frees objects
(and their namespace) left Terminating by ``ops.stronghold.io/finalizer``.

No operator is started here: the objects carry the finalizer as an operator left it, and only
the documented loop, taken from the docs as a user copies it, removes it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from stronghold_testbed.kubectl import run as kubectl_run
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FINALIZER = "ops.stronghold.io/finalizer"
MINIMAL = ("healthpolicy", "scalingpolicy", "backupschedule", "maintenancewindow")
KINDS = "healthpolicies,scalingpolicies,backupschedules,maintenancewindows"


def _documented_loop() -> str:
    text = (kit.REPO / "docs/install.md").read_text()
    section = text[text.index("### When the operator is already gone") :]
    match = re.search(r"```sh\n(for kind in .*?)```", section, re.S)
    assert match, "docs/install.md lost its finalizer loop"
    return match.group(1)


def test_the_documented_loop_frees_a_namespace_left_terminating(
    namespace: str, apply_crds: list[str], testbed: Path
) -> None:
    for kind in MINIMAL:
        obj = yaml.safe_load((kit.REPO / f"examples/{kind}-minimal.yaml").read_text())
        obj["metadata"]["namespace"] = namespace
        obj["metadata"]["finalizers"] = [FINALIZER]
        kit.apply(obj)
    kit.kubectl("delete", "namespace", namespace, "--wait=false")

    # With no operator, the namespace controller marks the objects deleted, and they stay.
    def all_deleting() -> bool:
        items = kit.kubectl_json("get", KINDS, "-n", namespace)["items"]
        return len(items) == len(MINIMAL) and all(
            i["metadata"].get("deletionTimestamp") for i in items
        )

    kit.wait_until("the namespace controller to delete the objects", all_deleting, timeout=60)
    phase = kit.kubectl_json("get", "namespace", namespace)["status"]["phase"]
    assert phase == "Terminating"

    # The loop as documented, narrowed from every namespace (-A) to this test's own, since
    # other tests' objects run beside it.
    loop = _documented_loop().replace(" -A ", f" -n {namespace} ")
    env = dict(os.environ, KUBECONFIG=str(testbed))
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", loop],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr

    def gone() -> bool:
        code, _, _ = kubectl_run("get", "namespace", namespace)
        return code != 0

    kit.wait_until(f"namespace {namespace} to finish terminating", gone, timeout=90)
