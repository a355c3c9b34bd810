"""ProgressBar: a redrawn bar on a terminal, a few plain lines in `docker logs`."""
from __future__ import annotations

import io

import auto_build_engine as abe


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_output_names_each_phase_once_even_when_phases_alternate():
    stream = io.StringIO()
    bar = abe.ProgressBar("build", stream=stream, heartbeat_s=3600)
    for step in range(3):
        bar.update("Building engine", step, 3)
        bar.update("Tactic selection", step, 3)
    bar.finish("engine built")
    lines = stream.getvalue().splitlines()
    assert [line.split("|")[0].split("]")[1].strip() for line in lines[:-1]] == ["Building engine", "Tactic selection"]
    assert lines[-1].startswith("[build] engine built (")
    assert "\r" not in stream.getvalue()


def test_terminal_output_redraws_one_line_with_phase_steps_and_time():
    stream = Terminal()
    bar = abe.ProgressBar("build", stream=stream)
    bar.update("Tactic selection", 2, 4)
    text = stream.getvalue()
    assert text.startswith("\r\033[K[build] Tactic selection |############............| 2/4")
    assert text.rstrip().endswith("s")
