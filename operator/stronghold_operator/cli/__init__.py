"""The ``stronghold`` command: one subcommand module per concern, registered here."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

# name -> module; each module has ``register(subparsers)`` adding its parser(s) and setting
# ``func`` (argparse.Namespace -> exit code). Imported lazily so a command loads only what it
# needs. The local testbed has its own command, ``stronghold-testbed`` (testbed/).
_COMMANDS: dict[str, str] = {
    "run": "stronghold_operator.cli.run",
}
_OPTIONAL = {
    "check": "stronghold_operator.cli.check",
    "backup": "stronghold_operator.cli.backup",
    "incident": "stronghold_operator.cli.incident",
    "status": "stronghold_operator.cli.status",
    "completion": "stronghold_operator.cli.completion",
    "scaling": "stronghold_operator.cli.scaling",
    "window": "stronghold_operator.cli.window",
    "capacity": "stronghold_operator.cli.capacity",
}


def add_command(sub: Any, name: str, help_text: str, doc: str | None) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows its module docstring with the lines as written."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    # Installed as kubectl-stronghold too: kubectl runs it as `kubectl stronghold ...`.
    plugin = os.path.basename(sys.argv[0]).startswith("kubectl-")
    prog = "kubectl stronghold" if plugin else "stronghold"
    parser = argparse.ArgumentParser(prog=prog, description="Stronghold operator")
    # Taken out of the command line before parsing (cli/connection.py); listed for --help.
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file, anywhere on the line (every command)"
    )
    parser.add_argument(
        "--context", help="kubeconfig context, anywhere on the line (every command)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv else None
    modules = dict(_COMMANDS)
    for name, mod in _OPTIONAL.items():
        if importlib.util.find_spec(mod) is not None:
            modules[name] = mod
    for name in dict.fromkeys(modules.values()):
        # Import only the module the user asked for (plus all of them for --help).
        if wanted is None or wanted.startswith("-") or modules.get(wanted) == name:
            importlib.import_module(name).register(sub)
        else:
            # A cheap placeholder keeps the command visible in `stronghold --help`.
            for cmd, m in modules.items():
                if m == name and cmd not in sub.choices:
                    sub.add_parser(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from stronghold_operator.cli import connection

    try:
        args_list = connection.take(sys.argv[1:] if argv is None else argv)
    except connection.UsageError as exc:
        print(f"stronghold: {exc}", file=sys.stderr)
        return 2
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
