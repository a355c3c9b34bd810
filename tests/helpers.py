"""Builders for the records the tests share: GPUs, engine plans and sidecars."""
from __future__ import annotations

import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import auto_build_engine as abe

RTX4090 = abe.GpuInfo(0, "NVIDIA GeForce RTX 4090", "GPU-4090-0000", 24564, 23000, "8.9")
RTX3060 = abe.GpuInfo(1, "NVIDIA GeForce RTX 3060", "GPU-3060-0001", 12288, 11000, "8.6")
GTX1080 = abe.GpuInfo(0, "NVIDIA GeForce GTX 1080", "GPU-1080-0000", 8192, 8000, "6.1")


def this_python_as(path: Path) -> None:
    """`path` runs this test run's Python: a two-line script that execs it (same pid), not a symlink,
    which would lose a virtual environment (a venv is found next to the name it is started by)."""
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    path.chmod(0o755)


def options_for(tmp_path: Path, *argv: str) -> abe.Options:
    """Options as the CLI would give them, with every directory inside tmp_path."""
    base = ["--engine-dir", str(tmp_path / "engines"), "--models-dir", str(tmp_path / "models"),
            "--config-dir", str(tmp_path / "configs")]
    return abe.parse_options(base + list(argv), environ={})


def make_sidecar(plan: abe.EnginePlan, precision: str, class_names: list[str], onnx_path: Path) -> abe.Sidecar:
    size = plan.key.imgsz
    return abe.Sidecar(
        key=plan.key, precision_built=precision, engine_file=plan.engine_path.name,
        engine_size=1234, engine_sha256="0" * 64,
        onnx=abe.FileStamp(str(onnx_path), 10, 1, "a" * 64), source=None, class_names=class_names,
        profile={"input": "input", "min": [plan.key.min_batch, 3, size, size],
                 "opt": [plan.key.opt_batch, 3, size, size], "max": [plan.key.max_batch, 3, size, size]},
        gpu={"index": 0, "name": plan.key.gpu_name}, driver_version="580.95.05", cuda_driver_version="13.0",
        cuda_toolkit_version="12.8", workspace_mb=8192, builder_optimization_level=3,
        built_at="2026-11-25T12:00:00+0000", build_seconds=1.0,
    )


def read_stderr_until(process: subprocess.Popen, needle: str, timeout: float = 60.0) -> tuple[str | None, str]:
    """Read stderr lines until one holds `needle` (the event tests wait on instead of sleeping).
    Returns (that line or None on timeout/EOF, everything read)."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.2)
        if ready:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line, "".join(seen)
    return None, "".join(seen)
