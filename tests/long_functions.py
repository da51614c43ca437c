"""Functions in services/ and shared/ longer than about 40 lines.

    python tests/long_functions.py          every long function, longest first, with its reason
    python tests/long_functions.py --bare   only those without a reason

A function's length is its own code: from the ``def`` to its end, without its
docstring, blank lines, comment-only lines, and the functions and classes
defined inside it (those are measured on their own). A function may be longer
than ``LIMIT`` when a comment beside it says why: ``# long: <reason>`` on the
line above the ``def`` (above its decorators), or on the ``def`` line itself.
tests/test_long_functions.py fails on any long function without one.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 40
TREES = ("services", "shared")
SKIP_PARTS = {"tests", "bench", ".venv", "__pycache__"}
MARK = "# long:"


@dataclass(frozen=True)
class Long:
    path: Path
    line: int
    name: str
    length: int
    reason: str  # "" when none is given

    def __str__(self) -> str:
        why = f"  -- {self.reason}" if self.reason else "  -- NO REASON"
        return f"{self.path.relative_to(ROOT)}:{self.line} {self.name}: {self.length} lines{why}"


def sources() -> list[Path]:
    out = []
    for tree in TREES:
        out += [p for p in sorted((ROOT / tree).rglob("*.py")) if not SKIP_PARTS & set(p.relative_to(ROOT).parts)]
    return out


def _code_lines(text: str) -> set[int]:
    """Line numbers that hold code (not blank, not only a comment)."""
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _own_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef, code: set[int]) -> int:
    excluded: set[int] = set()
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        excluded.update(range(body[0].lineno, body[0].end_lineno + 1))
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            excluded.update(range(first, node.end_lineno + 1))
    return len({n for n in range(fn.lineno, fn.end_lineno + 1) if n in code} - excluded)


def _reason(fn: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str:
    first = min([d.lineno for d in fn.decorator_list] + [fn.lineno])
    candidates = [lines[first - 2] if first >= 2 else "", lines[fn.lineno - 1]]
    for text in candidates:
        if MARK in text:
            return text.split(MARK, 1)[1].strip()
    return ""


def long_functions(paths: list[Path] | None = None, limit: int = LIMIT) -> list[Long]:
    found = []
    for path in paths or sources():
        text = path.read_text()
        lines = text.splitlines()
        code = _code_lines(text)
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = _own_lines(node, code)
                if length > limit:
                    found.append(Long(path, node.lineno, node.name, length, _reason(node, lines)))
    return sorted(found, key=lambda f: -f.length)


def main(argv: list[str]) -> int:
    found = long_functions()
    shown = [f for f in found if not f.reason] if "--bare" in argv else found
    for f in shown:
        print(f)
    print(f"{len(found)} functions over {LIMIT} lines, {sum(1 for f in found if not f.reason)} without a reason")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
