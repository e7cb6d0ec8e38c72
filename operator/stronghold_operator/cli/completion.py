"""``stronghold completion bash|zsh``: a shell completion script for every command and flag.

Generated from the command's own argparse parser by shtab, so it never lags behind it:

    source <(stronghold completion bash)                 # bash, this shell
    stronghold completion zsh > "${fpath[1]}/_stronghold"  # zsh, then restart it

`kubectl stronghold <TAB>` (kubectl 1.26+) asks the executable ``kubectl_complete-stronghold``
(:func:`kubectl_complete`, a console script), which answers from the same parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
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


# cobra's ShellCompDirective values, which kubectl's plugin completion expects last.
DEFAULT_DIRECTIVE, NO_FILE_COMPLETION = 0, 4


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    # argparse has no public accessor for subparsers; shtab reads the same attribute.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


def candidates(parser: argparse.ArgumentParser, words: Sequence[str]) -> tuple[list[str], int]:
    """What may come next after ``words[:-1]``, starting with ``words[-1]``, and a directive
    (file names allowed for a value without choices, such as --kubeconfig)."""
    *done, current = list(words) or [""]
    # --kubeconfig and --context are taken anywhere on the line (cli/connection.py).
    anywhere = {f: a for f, a in _options(parser).items() if f in ("--kubeconfig", "--context")}

    def options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
        return _options(p) | anywhere

    expecting: argparse.Action | None = None
    positionals = 0
    for word in done:
        if expecting is not None:
            expecting = None
            continue
        if word.startswith("-"):
            action = options(parser).get(word.partition("=")[0])
            if action is not None and action.nargs != 0 and "=" not in word:
                expecting = action
            continue
        sub = _subcommands(parser)
        if word in sub:
            parser, positionals = sub[word], 0
        else:
            positionals += 1
    if expecting is not None:
        choices = _contexts() if "--context" in expecting.option_strings else expecting.choices
        if choices:
            found = [str(c) for c in choices if str(c).startswith(current)]
            return found, NO_FILE_COMPLETION
        return [], DEFAULT_DIRECTIVE
    if current.startswith("-"):
        return sorted(f for f in options(parser) if f.startswith(current)), NO_FILE_COMPLETION
    sub = _subcommands(parser)
    if sub:
        return [c for c in sub if c.startswith(current)], NO_FILE_COMPLETION
    args = [a for a in parser._actions if not a.option_strings and a.choices]
    if positionals < len(args):
        choices = args[positionals].choices or ()
        return [str(c) for c in choices if str(c).startswith(current)], NO_FILE_COMPLETION
    return [], NO_FILE_COMPLETION


def _contexts() -> list[str]:
    """The kubeconfig's context names (read from the file: no API call), or none."""
    import os

    import yaml

    path = os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        with open(os.path.expanduser(path.split(os.pathsep)[0])) as f:
            config = yaml.safe_load(f) or {}
        return [str(c["name"]) for c in config.get("contexts") or [] if c.get("name")]
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return []


def kubectl_complete(argv: Sequence[str] | None = None) -> int:
    """``kubectl_complete-stronghold ARGS... PARTIAL``: kubectl's plugin completion protocol
    (one candidate a line, then ``:DIRECTIVE``)."""
    from stronghold_operator.cli import build_parser

    words = list(sys.argv[1:] if argv is None else argv)
    found, directive = candidates(build_parser([]), words)
    sys.stdout.write("".join(f"{c}\n" for c in found) + f":{directive}\n")
    return 0
