"""--kubeconfig/--context anywhere on the line (kubectl plugins get them raw), completion."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lightkube.config.kubeconfig import SingleConfig

from stronghold_operator.cli import build_parser, connection
from stronghold_operator.cli.completion import script
from stronghold_operator.platforms import kube


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KUBECONFIG", os.environ.get("KUBECONFIG", ""))
    yield
    kube.use_kubeconfig(None, None)


@pytest.mark.parametrize(
    ("argv", "rest", "kubeconfig", "context"),
    [
        (["status", "-n", "x"], ["status", "-n", "x"], None, None),
        (["status", "--context", "prod", "-n", "x"], ["status", "-n", "x"], None, "prod"),
        (["--context=prod", "backup", "now", "db"], ["backup", "now", "db"], None, "prod"),
        (
            ["status", "--kubeconfig", "/k", "-A", "--context", "a", "--context=b"],
            ["status", "-A"],
            "/k",
            "b",  # the last one wins, as in kubectl
        ),
        (["run", "--", "--context", "x"], ["run", "--", "--context", "x"], None, None),
    ],
)
def test_split(
    argv: list[str], rest: list[str], kubeconfig: str | None, context: str | None
) -> None:
    assert connection.split(argv) == connection.Connection(rest, kubeconfig, context)


@pytest.mark.parametrize("argv", [["status", "--context"], ["--kubeconfig="], ["--context", "-n"]])
def test_a_flag_without_its_value_is_refused(argv: list[str]) -> None:
    with pytest.raises(connection.UsageError, match="needs a value"):
        connection.split(argv)


def test_run_refuses_a_context() -> None:
    with pytest.raises(connection.UsageError, match="current-context"):
        connection.take(["run", "--context", "prod"])


def _kubeconfig(path: Path) -> Path:
    cluster = {"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}
    user = {"name": "u", "user": {"token": "t"}}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [user],
        "contexts": [
            {"name": "one", "context": {"cluster": "c", "user": "u"}},
            {"name": "two", "context": {"cluster": "c", "user": "u", "namespace": "shop"}},
        ],
        "current-context": "one",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_take_points_every_client_at_the_flags(tmp_path: Path) -> None:
    path = str(_kubeconfig(tmp_path / "config"))
    assert connection.take(["status", "--kubeconfig", path, "--context", "two"]) == ["status"]
    assert os.environ["KUBECONFIG"] == path  # kopf's login and child processes too
    config = kube.client_config()
    assert isinstance(config, SingleConfig)
    assert config.context_name == "two"
    client = kube.Kube.connect()
    try:
        assert client.namespace == "shop"
    finally:
        await client.aclose()


async def test_the_default_namespace_is_the_current_contexts_else_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _kubeconfig(tmp_path / "config")
    monkeypatch.setenv("KUBECONFIG", str(path))
    client = kube.Kube.connect()
    try:
        assert client.namespace == "default"
    finally:
        await client.aclose()
    kube.use_kubeconfig(None, "nope")
    with pytest.raises(Exception, match="nope"):
        kube.client_config()


def test_status_flags() -> None:
    args = build_parser(["status"]).parse_args(["status", "-A", "-o", "json", "--watch"])
    assert (args.all_namespaces, args.output, args.watch, args.namespace) == (
        True,
        "json",
        True,
        None,
    )
    with pytest.raises(SystemExit):
        build_parser(["status"]).parse_args(["status", "-A", "-n", "x"])
    with pytest.raises(SystemExit):
        build_parser(["status"]).parse_args(["status", "-o", "wide"])


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_covers_every_command(shell: str) -> None:
    text = script(shell)
    for word in ("status", "backup", "check", "completion", "--all-namespaces", "--context"):
        assert word in text
    plugin = script(shell, "kubectl-stronghold")
    assert "kubectl-stronghold" in plugin


def test_bash_completes_commands_and_flags(tmp_path: Path) -> None:
    import shutil
    import subprocess

    bash = shutil.which("bash")
    assert bash is not None, "bash is part of every supported system"
    (tmp_path / "c.bash").write_text(script("bash"))

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        program = f"""
        source {tmp_path / "c.bash"}
        COMP_WORDS=({" ".join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}
        COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}
        _shtab_stronghold; printf '%s\\n' "${{COMPREPLY[@]}}"
        """
        done = subprocess.run([bash, "-c", program], capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert complete("stronghold st") == ["status"]
    assert complete("stronghold status --all") == ["--all-namespaces"]
    assert "yaml" in complete("stronghold status -o ")


@pytest.mark.parametrize(
    ("words", "expected", "directive"),
    [
        (["st"], ["status"], 4),
        (["backup", ""], ["now", "verify", "restore-test", "list", "restore"], 4),
        (["status", "-o", "j"], ["json"], 4),
        (["status", "-A", "--context=x", "-o", ""], ["table", "json", "yaml"], 4),
        (["backup", "now", "db", "--wa"], ["--wait"], 4),
        (["status", "--kube"], ["--kubeconfig"], 4),  # taken anywhere, so offered anywhere
        (["status", "--kubeconfig", ""], [], 0),  # a file: the shell completes file names
        (["completion", "z"], ["zsh"], 4),
        (["completion", "bash", ""], [], 4),
    ],
)
def test_kubectl_plugin_completion(words: list[str], expected: list[str], directive: int) -> None:
    from stronghold_operator.cli.completion import candidates

    assert candidates(build_parser([]), words) == (expected, directive)


def test_kubectl_plugin_completion_offers_the_kubeconfigs_contexts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stronghold_operator.cli.completion import kubectl_complete

    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "config")))
    assert kubectl_complete(["status", "--context", "t"]) == 0
    assert capsys.readouterr().out == "two\n:4\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-n", "shop", "status"], ["status", "-n", "shop"]),
        (["-A", "status", "-o", "json"], ["status", "-o", "json", "-A"]),
        (["--namespace=shop", "backup", "now", "db"], ["backup", "now", "db", "--namespace=shop"]),
        (["status", "-n", "shop"], ["status", "-n", "shop"]),
        (["-n", "a", "run", "--", "x"], ["run", "-n", "a", "--", "x"]),
    ],
)
def test_namespace_before_the_verb(argv: list[str], expected: list[str]) -> None:
    assert connection.take(argv) == expected
    args = build_parser(expected).parse_args(expected) if expected[0] != "run" else None
    if args is not None:
        assert args.namespace == "shop" or args.all_namespaces


def test_run_with_kubeconfig_logs_kopf_in_with_it_even_in_a_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kopf

    from stronghold_operator import settings

    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    monkeypatch.setattr(settings, "SERVICE_ACCOUNT", sa)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    in_pod = settings.login(settings=kopf.OperatorSettings())
    assert in_pod is not None and in_pod.server == "https://10.0.0.1:443"
    path = str(_kubeconfig(tmp_path / "config"))
    connection.take(["run", "--kubeconfig", path])
    named = settings.login(settings=kopf.OperatorSettings())
    assert named is not None and named.server == "https://127.0.0.1:1"
