"""The kubectl plugin's packaging: the console script and the krew manifest agree with the repo."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_kubectl_stronghold_is_the_same_command() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    scripts = project["scripts"]
    assert scripts["kubectl-stronghold"] == scripts["stronghold"] == "stronghold_operator.cli:main"
    complete = "stronghold_operator.cli.completion:kubectl_complete"
    assert scripts["kubectl_complete-stronghold"] == complete


def test_the_krew_manifest_installs_files_the_sdist_has() -> None:
    manifest = yaml.safe_load((REPO / "plugins/krew/stronghold.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert (manifest["kind"], manifest["metadata"]["name"]) == ("Plugin", "stronghold")
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert manifest["spec"]["version"] == f"v{project['version']}"
    top = f"stronghold_operator-{project['version']}/"  # the sdist's top directory
    sdist = pyproject()["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]  # type: ignore[index]
    (platform,) = manifest["spec"]["platforms"]
    assert platform["uri"].endswith(f"dist/{top[:-1]}.tar.gz")
    assert len(platform["sha256"]) == 64
    for item in platform["files"]:
        assert item["from"].startswith(top)
        inside = item["from"].removeprefix(top)
        assert (REPO / inside).exists(), inside
        assert any(inside.startswith(i.rstrip("/")) for i in sdist), f"{inside} not in the sdist"
    script = REPO / "plugins/krew" / platform["bin"]
    assert os.access(script, os.X_OK)
    assert "-m stronghold_operator.cli" in script.read_text()


def test_the_krew_wrapper_runs_the_unpacked_sources(tmp_path: Path) -> None:
    """krew's layout: the wrapper beside operator/stronghold_operator, linked from its bin."""
    import shutil
    import subprocess
    import sys

    store = tmp_path / "store"
    shutil.copytree(REPO / "operator/stronghold_operator", store / "operator/stronghold_operator")
    # A marker in the unpacked copy's help text: proves the copy runs, not an installed one.
    status = store / "operator/stronghold_operator/cli/status.py"
    status.write_text(status.read_text().replace('"""', '"""UNPACKED-COPY ', 1))
    shutil.copy2(REPO / "plugins/krew/kubectl-stronghold", store / "kubectl-stronghold")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl-stronghold").symlink_to(store / "kubectl-stronghold")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["STRONGHOLD_PYTHON"] = sys.executable
    done = subprocess.run(
        [str(bin_dir / "kubectl-stronghold"), "status", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "UNPACKED-COPY" in done.stdout
