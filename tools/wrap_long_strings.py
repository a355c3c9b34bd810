#!/usr/bin/env python3
"""Wrap string literals on lines over the ruff line length into implicit concatenations (issue 17).

Each long one-line string is cut at spaces (outside `{...}` in f-strings) into parts that fit, one per
line at the string's column (in parentheses where it is not already inside brackets). The runtime strings
stay exactly the same: the script refuses to write unless the module's AST is unchanged (implicit
concatenation is joined by the parser). Run `ruff format` afterwards.

    python3 tools/wrap_long_strings.py auto_build_engine.py main_low_latency.py
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

LIMIT = 120


def _cuts(body: str, is_f: bool, room_first: int, room: int) -> list[str]:
    """The body cut after spaces at brace depth 0 into parts of at most `room` characters (first: room_first)."""
    spaces, depth, i = [], 0, 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            i += 2
            continue
        if is_f and ch in "{}":
            if body[i : i + 2] in ("{{", "}}"):
                i += 2
                continue
            depth += 1 if ch == "{" else -1
        elif ch == " " and depth == 0:
            spaces.append(i + 1)
        i += 1
    parts, start, limit = [], 0, room_first
    while len(body) - start > limit:
        fits = [s for s in spaces if start < s <= start + limit and s < len(body)]
        if not fits:
            break
        parts.append(body[start : fits[-1]])
        start, limit = fits[-1], room
    parts.append(body[start:])
    return parts


def _literal(prefix: str, quote: str, part: str) -> str:
    """One part as a literal; an f-string part without braces loses its `f`."""
    if "f" in prefix.lower() and "{" not in part and "}" not in part:
        prefix = prefix.replace("f", "").replace("F", "")
    return f"{prefix}{quote}{part}{quote}"


def _one_line_literals(text: str) -> list[tuple[int, int, str]]:
    """(row, col, source text) of each string literal that sits on one line. Python 3.12 tokenizes an
    f-string as FSTRING_START ... FSTRING_END (PEP 701) instead of one STRING token: both are found."""
    lines = text.splitlines(keepends=True)
    fstring_start, fstring_end = getattr(tokenize, "FSTRING_START", None), getattr(tokenize, "FSTRING_END", None)
    found, open_fstrings = [], []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.STRING and not open_fstrings and tok.start[0] == tok.end[0]:
            found.append((*tok.start, tok.string))
        elif fstring_start is not None and tok.type == fstring_start:
            open_fstrings.append(tok.start)
        elif fstring_end is not None and tok.type == fstring_end:
            (row, col) = open_fstrings.pop()
            if not open_fstrings and row == tok.end[0]:
                found.append((row, col, lines[row - 1][col : tok.end[1]]))
    return found


def wrap_once(text: str) -> str | None:
    """Wrap the first long string that can be wrapped; None when there is none."""
    lines = text.splitlines(keepends=True)
    for row, col, literal in _one_line_literals(text):
        line = lines[row - 1]
        if len(line.rstrip("\n")) <= LIMIT:
            continue
        match = re.fullmatch(r"([rRfFuU]*)(['\"])(.*)\2", literal, re.S)
        if not match or "b" in match.group(1).lower():
            continue
        prefix, quote, body = match.groups()
        is_f = "f" in prefix.lower()
        room = LIMIT - col - len(prefix) - 2 - 4  # leave room for a closing bracket and comma
        parts = _cuts(body, is_f, room, room)
        if len(parts) < 2:
            continue
        joined = ("\n" + " " * col).join(_literal(prefix, quote, p) for p in parts)
        before, after = line[:col], line[col + len(literal) :]
        for candidate in (before + joined + after, before + "(" + joined + ")" + after):
            new = "".join(lines[: row - 1]) + candidate + "".join(lines[row:])
            try:
                compile(new, "<wrap>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
            except SyntaxError:
                continue
            return new
    return None


def main(paths: list[str]) -> int:
    for name in paths:
        path = Path(name)
        old = path.read_text()
        new, seen = old, set()
        while (step := wrap_once(new)) is not None and step not in seen:
            seen.add(step)
            new = step
        if ast.dump(ast.parse(new)) != ast.dump(ast.parse(old)):
            sys.exit(f"wrap_long_strings: {path}: the AST would change; nothing written")
        if new != old:
            path.write_text(new)
            print(f"{path}: long strings wrapped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
