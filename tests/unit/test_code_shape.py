"""Code shape: no function in the operator over 60 lines unless a comment says why.

A long function must carry a ``# long: <why>`` comment on the line before its ``def`` (or its
first decorator), in its signature or on the first line of its body.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "stronghold_operator"
MAX_LINES = 60
MARKER = "# long:"

# debt: being split (issue 16) on other branches; remove an entry when its function is short.
ALLOWED: dict[str, set[str]] = {}  # path -> functions being split elsewhere (none now)

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, Function]]:
    """Every function and method with its dotted qualified name (nested ones too)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _explained(fn: Function, lines: list[str]) -> bool:
    """A ``# long:`` comment with a reason, from the line before the def to the body's first."""
    first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
    for line in lines[first - 2 : fn.body[0].lineno]:  # lines[] is 0-based, linenos 1-based
        _, found, why = line.partition(MARKER)
        if found and why.strip():
            return True
    return False


def long_functions(package: Path = PACKAGE) -> list[str]:
    """``path:qualname (N lines)`` for each function over MAX_LINES without a ``# long:``."""
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        text = path.read_text()
        lines = text.splitlines()
        for name, fn in _functions(ast.parse(text, str(path))):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            if length <= MAX_LINES or name in ALLOWED.get(rel, ()):
                continue
            if not _explained(fn, lines):
                out.append(f"{rel}:{name} ({length} lines)")
    return out


def test_no_long_function_without_a_reason() -> None:
    offenders = long_functions()
    assert not offenders, (
        f"functions over {MAX_LINES} lines: split them, or say why with a '{MARKER} ...' "
        "comment above the def:\n  " + "\n  ".join(offenders)
    )


HANDLER_LINES = 15  # handlers are kopf adapters: parse, call a controller, report


def _body_lines(fn: Function) -> int:
    """Lines of a function's body, its docstring left out."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if not body:
        return 0
    return (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def long_handlers(package: Path = PACKAGE) -> list[str]:
    """``path:name (N lines)`` for each function in handlers/ with a body over HANDLER_LINES."""
    out = []
    for path in sorted((package / "handlers").glob("*.py")):
        rel = path.relative_to(package).as_posix()
        for name, fn in _functions(ast.parse(path.read_text(), str(path))):
            if _body_lines(fn) > HANDLER_LINES:
                out.append(f"{rel}:{name} ({_body_lines(fn)} lines)")
    return out


def test_handlers_are_thin() -> None:
    offenders = long_handlers()
    assert not offenders, (
        f"handler functions over {HANDLER_LINES} lines: move the work to controllers/ or "
        "services/:\n  " + "\n  ".join(offenders)
    )


def test_the_check_sees_long_functions(tmp_path: Path) -> None:
    body = "".join(f"x{i} = {i}\n" for i in range(MAX_LINES))
    source = "\n".join(
        [
            "def too_long():",
            textwrap.indent(body, "    "),
            "# long: one table, clearest in one piece",
            "def explained():",
            textwrap.indent(body, "    "),
            "class K:",
            "    async def method(self):",
            textwrap.indent(body, "        "),
            "def short():",
            "    return 1",
            "",
        ]
    )
    (tmp_path / "mod.py").write_text(source)
    assert long_functions(tmp_path) == [
        f"mod.py:too_long ({MAX_LINES + 1} lines)",
        f"mod.py:K.method ({MAX_LINES + 1} lines)",
    ]
