"""Issue 17: the two scripts stay formatted, lint-clean, type-clean and in flow order (same checks as .ci/run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize(
    "argv",
    [
        ("ruff", "format", "--check"),
        ("ruff", "check"),
        (sys.executable, "-m", "mypy"),
        (sys.executable, "tools/reorder_sections.py", "--check"),
    ],
    ids=["ruff-format", "ruff-check", "mypy", "flow-order"],
)
def test_static_checks_pass(argv):
    if argv[0] == "ruff" and shutil.which("ruff") is None:
        pytest.fail("ruff is not installed: pip install -r requirements-dev.txt")
    result = _run(*argv)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}"


def test_reorder_fails_loudly_when_a_section_is_missing(tmp_path):
    text = (ROOT / "auto_build_engine.py").read_text()
    broken = tmp_path / "auto_build_engine.py"
    broken.write_text(text.replace("class DeepStreamConfig", "class SomethingElse"))
    result = _run(sys.executable, "tools/reorder_sections.py", str(broken))
    assert result.returncode == 1 and "DeepStreamConfig" in result.stderr
    assert broken.read_text() == text.replace("class DeepStreamConfig", "class SomethingElse")


def test_wrap_keeps_the_runtime_strings(tmp_path):
    source = tmp_path / "m.py"
    long_line = "x = f\"{'a' * 3} " + "word " * 40 + '{1 + 1} end"\n'
    source.write_text(long_line)
    result = _run(sys.executable, "tools/wrap_long_strings.py", str(source))
    assert result.returncode == 0, result.stderr
    wrapped = source.read_text()
    assert max(len(line) for line in wrapped.splitlines()) <= 120
    namespace: dict[str, object] = {}
    exec(long_line, namespace)
    expected = namespace["x"]
    exec(wrapped, namespace)
    assert namespace["x"] == expected
