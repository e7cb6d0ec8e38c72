"""``stronghold completion bash|zsh``: a shell completion script for every command and flag.

Generated from the command's own argparse parser by shtab, so it never lags behind it:

    source <(stronghold completion bash)                 # bash, this shell
    stronghold completion zsh > "${fpath[1]}/_stronghold"  # zsh, then restart it
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stronghold_operator.cli import add_command

SHELLS = ("bash", "zsh")


def register(sub: Any) -> None:
    p = add_command(sub, "completion", "print a bash or zsh completion script", __doc__)
    p.add_argument("shell", choices=SHELLS)
    p.add_argument(
        "--prog",
        default="stronghold",
        help="the command to complete (default stronghold; kubectl-stronghold for the plugin)",
    )
    p.set_defaults(func=_run)


def script(shell: str, prog: str = "stronghold") -> str:
    """The completion script of the whole command line for ``shell``."""
    import shtab

    from stronghold_operator.cli import build_parser

    parser = build_parser([])  # every command's module, as --help does
    parser.prog = prog
    text: str = shtab.complete(parser, shell=shell)
    return text


def _run(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell, args.prog))
    return 0
