#!/usr/bin/env python3
"""Move the top-level sections of auto_build_engine.py into flow order (issue 17); deterministic, idempotent.

Order written: preamble (docstring, imports, exit codes, ToolError) -> shared helpers -> Options and the
CLI table -> Detect (SystemInfo) -> Find/export (YOLOExporter) -> Build (EngineBuilder, cache, fleet
store) -> Configure (DeepStreamConfig) -> Measure (benchmark) -> Main (run modes, main()).

Sections are found by their `# ----` banners (title keywords below), the CLI section is split at its first
top-level `def run_*` (the run modes go last, as "Main"), and the few module-level names that the CLI table
evaluates at import time (HOIST) move up with it. Code inside blocks is never touched, so the script can be
re-run on a newer main. It fails loudly (exit 1, file unchanged) when an expected section or name is
missing, or when the reordered module no longer imports.

    python3 tools/reorder_sections.py [auto_build_engine.py]   # rewrites the file in place
    python3 tools/reorder_sections.py --check [file]           # exit 1 if not already in order
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BANNER = "# " + "-" * 92
# section key -> (regex on the banner title, title written)
SECTIONS = {
    "helpers": (r"shared helpers", "Small shared helpers: output, progress, atomic files"),
    "cli": (r"\bCLI\b|Options and the command line", "1. Options and the command line"),
    "detect": (r"SystemInfo", "2. Detect: SystemInfo"),
    "export": (r"YOLOExporter", "3. Find / export: YOLOExporter"),
    "build": (r"EngineBuilder", "4. Build: EngineBuilder, the engine cache and the fleet store"),
    "configure": (r"DeepStreamConfig", "5. Configure: DeepStreamConfig"),
    "measure": (r"benchmark", "6. Measure: --benchmark (the seed's performance table, on the user's GPU)"),
    "main": (r"^\d+\. Main\b", "7. Main: the run modes and main()"),
}
ORDER = ["helpers", "cli", "detect", "export", "build", "configure", "measure", "main"]
# names each section must define (a check that the banners still cut where they should)
REQUIRED = {
    "cli": ["Options", "_VALUE_FLAGS", "build_parser", "parse_options", "validate_options"],
    "detect": ["GpuInfo", "SystemInfo"],
    "export": ["YOLOExporter"],
    "build": ["EngineBuilder", "EngineStore", "ensure_engine"],
    "configure": ["DeepStreamConfig"],
    "measure": ["EngineBenchmark"],
    "main": ["run_ensure", "main", "_main"],
}
# defined in a later section but evaluated by the CLI table at import time: moved just before `_VALUE_FLAGS`
HOIST = ["STORE_MODES", "parse_store_url"]


def split_banners(lines: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(preamble lines, [(title, body lines after the 3-line banner)])."""
    starts = [
        i
        for i in range(len(lines) - 2)
        if lines[i].startswith("# ----") and lines[i + 2].startswith("# ----") and not lines[i + 1].startswith("# --")
    ]
    if not starts:
        sys.exit("reorder_sections: no `# ----` section banners found")
    preamble = lines[: starts[0]]
    sections = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        sections.append((lines[start + 1][2:].strip(), lines[start + 3 : end]))
    return preamble, sections


def top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """name -> (first line, end line), 0-based, half-open; the first line takes decorators and the comment
    lines directly above it."""
    lines = text.splitlines(keepends=True)
    spans: dict[str, tuple[int, int]] = {}
    for node in ast.parse(text).body:
        names: list[str] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        if not names:
            continue
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while first > 0 and lines[first - 1].startswith("#") and not lines[first - 1].startswith("# ----"):
            first -= 1
        assert node.end_lineno is not None
        for name in names:
            spans[name] = (first, node.end_lineno)
    return spans


def defined(body: list[str]) -> set[str]:
    """Top-level names a section body defines (parsed alone: a section is a sequence of whole statements)."""
    return set(top_level_spans("".join(body)))


def strip_blank(body: list[str]) -> list[str]:
    while body and not body[0].strip():
        body = body[1:]
    while body and not body[-1].strip():
        body = body[:-1]
    return body


def reorder(text: str) -> str:
    lines = text.splitlines(keepends=True)
    preamble, raw = split_banners(lines)
    found: dict[str, list[str]] = {}
    for title, body in raw:
        keys = [k for k, (pattern, _) in SECTIONS.items() if re.search(pattern, title)]
        if len(keys) != 1:
            sys.exit(f"reorder_sections: section banner {title!r} matches {keys or 'no known section'}")
        if keys[0] in found:
            sys.exit(f"reorder_sections: two banners for section {keys[0]!r}")
        found[keys[0]] = body
    if "main" not in found:  # first run: the CLI section still holds the run modes; cut at its first `def run_*`
        cli = found.get("cli")
        if cli is None:
            sys.exit("reorder_sections: no CLI section banner")
        spans = top_level_spans("".join(cli))
        runs = [span[0] for name, span in spans.items() if name.startswith("run_")]
        if not runs:
            sys.exit("reorder_sections: no top-level `def run_*` in the CLI section to start Main at")
        cut = min(runs)
        found["cli"], found["main"] = cli[:cut], cli[cut:]
    missing = [k for k in ORDER if k not in found]
    if missing:
        sys.exit(f"reorder_sections: section(s) not found: {', '.join(missing)}")
    # hoist the names the CLI table evaluates at import time
    for name in HOIST:
        if name in defined(found["cli"]):
            continue
        holders = [k for k in ORDER if name in defined(found[k])]
        if len(holders) != 1:
            sys.exit(f"reorder_sections: {name} (evaluated by the CLI table) is defined in {holders or 'no section'}")
        body = found[holders[0]]
        first, end = top_level_spans("".join(body))[name]
        block = strip_blank(body[first:end])
        while end < len(body) and not body[end].strip():
            end += 1  # take the blank lines after it too
        found[holders[0]] = body[:first] + body[end:]
        cli = found["cli"]
        if "_VALUE_FLAGS" not in defined(cli):
            sys.exit("reorder_sections: `_VALUE_FLAGS` not in the CLI section")
        at = top_level_spans("".join(cli))["_VALUE_FLAGS"][0]
        found["cli"] = cli[:at] + block + ["\n", "\n"] + cli[at:]
    for key, names in REQUIRED.items():
        absent = [n for n in names if n not in defined(found[key])]
        if absent:
            sys.exit(f"reorder_sections: section {key!r} does not define {', '.join(absent)}")
    out = strip_blank(preamble)
    for key in ORDER:
        body = strip_blank(found[key])
        out += ["\n", "\n", BANNER + "\n", f"# {SECTIONS[key][1]}\n", BANNER + "\n", "\n"]
        out += ["\n"] if body and body[0].startswith(("@", "def ", "class ", "async def ")) else []  # as ruff format
        out += body
    return "".join(out)


def same_order(a: str, b: str) -> bool:
    """Equal but for runs of blank lines (ruff format owns those)."""
    return re.sub(r"\n(\s*\n)+", "\n\n", a) == re.sub(r"\n(\s*\n)+", "\n\n", b)


def imports_cleanly(path: Path, text: str) -> None:
    """The reordered module must still import (no name used at import time before it is defined)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / path.name).write_text(text)
        result = subprocess.run(
            [sys.executable, "-c", f"import {path.stem}"], cwd=tmp, capture_output=True, text=True, check=False
        )
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        sys.exit(f"reorder_sections: the reordered module does not import ({last}); add the name to HOIST")


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    path = Path(args[0] if args else Path(__file__).resolve().parent.parent / "auto_build_engine.py")
    text = path.read_text()
    new = reorder(text)
    if not same_order(reorder(new), new):
        sys.exit("reorder_sections: not idempotent on this file (a bug in the script)")
    if check:
        if not same_order(new, text):
            print(f"{path}: sections not in flow order; run tools/reorder_sections.py", file=sys.stderr)
            return 1
        return 0
    if not same_order(new, text):
        imports_cleanly(path, new)
        tmp = path.with_name(f".{path.name}.reorder.tmp")
        tmp.write_text(new)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        tmp.replace(path)
        print(f"{path}: sections moved into flow order")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
