"""The stronghold-testbed command line parses as documented (README, docs/testbed.md)."""

from __future__ import annotations

import pytest

from stronghold_testbed.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["cluster", "up"],
        ["cluster", "up", "--no-images"],
        ["cluster", "down", "--keep-docker"],
        ["cluster", "status"],
        ["cluster", "kubeconfig"],
        ["cluster", "kubeconfig", "--service-account", "ns/name"],
        ["services", "up"],
        ["services", "status"],
        ["services", "down"],
        ["demo", "up"],
        ["demo", "down"],
        ["image"],
    ],
)
def test_verbs(argv: list[str]) -> None:
    assert callable(build_parser().parse_args(argv).func)


def test_the_admin_kubeconfig_path_is_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stronghold_testbed.cli import main

    monkeypatch.setenv("STRONGHOLD_CACHE", "/var/cache/x")
    assert main(["cluster", "kubeconfig"]) == 0
    assert capsys.readouterr().out.strip() == "/var/cache/x/admin.kubeconfig"
