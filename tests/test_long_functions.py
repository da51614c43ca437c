"""No function in services/ or shared/ is longer than about 40 lines without a
reason written beside it (``# long: <reason>``; see tests/long_functions.py)."""

from __future__ import annotations

import textwrap

from long_functions import LIMIT, long_functions


def test_every_long_function_says_why():
    bare = [str(f) for f in long_functions() if not f.reason]
    assert not bare, "functions over %d lines without a '# long: <reason>' beside them:\n%s" % (LIMIT, "\n".join(bare))


def _body(n: int) -> str:
    return "".join(f"    x{i} = {i}\n" for i in range(n))


def test_the_measure_counts_code_only_and_finds_the_reason(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def short():\n"
        '    """A docstring\n\n    of several lines."""\n'
        "    # a comment\n\n" + _body(LIMIT - 1) + "\n"
        "def bare():\n" + _body(LIMIT) + "\n"
        "# long: a table of cases, read as one\n"
        "@staticmethod\n"
        "def marked():\n" + _body(LIMIT) + "\n"
        "def outer():\n"
        "    def inner():\n" + textwrap.indent(_body(LIMIT), "    ") + "    return inner\n"
    )
    found = {f.name: f for f in long_functions([source])}
    assert set(found) == {"bare", "marked", "inner"}  # short: docstring and comments not counted; outer: inner is not its own
    assert found["bare"].length == LIMIT + 1 and found["bare"].reason == ""
    assert found["marked"].reason == "a table of cases, read as one"
