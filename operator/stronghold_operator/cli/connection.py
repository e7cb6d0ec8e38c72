"""``--kubeconfig`` and ``--context`` anywhere on the command line, for every command.

kubectl hands a plugin's arguments over unchanged and does not interpret ``--context``,
``--kubeconfig`` or ``-n`` for it, so ``kubectl stronghold backup now x --context prod`` must
be understood here. :func:`take` removes the two flags before argparse sees the command and
points :meth:`platforms.kube.Kube.connect` at them: one place, so every verb gets them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

FLAGS = ("--kubeconfig", "--context")


class UsageError(ValueError):
    """A connection flag without its value, or one a command cannot honour."""


@dataclass(frozen=True)
class Connection:
    argv: list[str]  # the command line without the connection flags
    kubeconfig: str | None = None
    context: str | None = None


def split(argv: Sequence[str]) -> Connection:
    """The connection flags (``--flag VALUE`` or ``--flag=VALUE``) and the rest, in order.

    Stops at ``--``; the last occurrence of a flag wins, as in kubectl.
    """
    rest: list[str] = []
    found: dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name, eq, value = arg.partition("=")
        if name in FLAGS:
            if not eq:
                if i + 1 >= len(args) or not args[i + 1] or args[i + 1].startswith("-"):
                    raise UsageError(f"{name} needs a value")
                value = args[i + 1]
                i += 1
            if not value:
                raise UsageError(f"{name} needs a value")
            found[name] = value
        else:
            rest.append(arg)
        i += 1
    return Connection(rest, found.get("--kubeconfig"), found.get("--context"))


NAMESPACE_FLAGS = ("-n", "--namespace", "-A", "--all-namespaces")


def namespace_last(argv: Sequence[str]) -> list[str]:
    """``-n NS``/``-A`` written before the verb (``kubectl stronghold -n shop status``, as
    kubectl users type ``kubectl -n shop get``) moved to the end, where the verb's parser
    reads them; everything else keeps its order."""
    args, moved = list(argv), []
    while args and args[0].partition("=")[0] in NAMESPACE_FLAGS:
        flag = args.pop(0)
        moved.append(flag)
        if flag in ("-n", "--namespace") and args:
            moved.append(args.pop(0))
    if not moved:
        return args
    cut = args.index("--") if "--" in args else len(args)
    return [*args[:cut], *moved, *args[cut:]]


def take(argv: Sequence[str]) -> list[str]:
    """Apply the connection flags of ``argv``; the command line argparse should parse."""
    conn = split(argv)
    conn = Connection(namespace_last(conn.argv), conn.kubeconfig, conn.context)
    if conn.kubeconfig is None and conn.context is None:
        return conn.argv
    command = next((a for a in conn.argv if not a.startswith("-")), None)
    if command == "run" and conn.context is not None:
        # kopf logs in with the kubeconfig's current context; half an operator on another
        # cluster would be worse than a refusal.
        raise UsageError("stronghold run takes no --context: set the kubeconfig's current-context")
    if conn.kubeconfig is not None:
        # Also for kopf's own login (run) and any child process, as kubectl's flag would.
        os.environ["KUBECONFIG"] = conn.kubeconfig
    from stronghold_operator.platforms import kube

    kube.use_kubeconfig(conn.kubeconfig, conn.context)
    return conn.argv
