"""Tests of nvdsinfer_yolo/: the C++ unit tests, the Makefile's CUDA_VER detection and a
build of the parser library against the stand-in DeepStream headers in tests/fakes/."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB_DIR = ROOT / "nvdsinfer_yolo"
FAKE_DS_INC = ROOT / "tests" / "fakes" / "deepstream_includes"

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("g++") is None,
    reason="needs make and g++",
)


def _make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(LIB_DIR), *args],
        capture_output=True, text=True, env=env, timeout=300,
    )


def _env_without_nvcc(extra_path: Path | None = None) -> dict[str, str]:
    """The current environment minus CUDA_VER and every PATH dir that holds an nvcc,
    so the machine's own CUDA (if any) cannot leak into a detection test."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VER", "NVCC", "CUDA_HOME")}
    dirs = [d for d in env.get("PATH", "").split(os.pathsep)
            if d and not (Path(d) / "nvcc").exists()]
    if extra_path is not None:
        dirs.insert(0, str(extra_path))
    env["PATH"] = os.pathsep.join(dirs)
    return env


def test_make_test_runs_unit_tests(tmp_path: Path) -> None:
    result = _make("test", f"BUILD_DIR={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_decode: all checks passed" in result.stdout
    assert "test_glue: all checks passed" in result.stdout
    assert "test_signature: all checks passed" in result.stdout


def test_cuda_ver_from_version_json(tmp_path: Path) -> None:
    (tmp_path / "version.json").write_text(json.dumps({
        "cuda": {"name": "CUDA SDK", "version": "12.8.1"},
        "cuda_cccl": {"name": "CUDA C++ Core Compute Libraries", "version": "12.9.27"},
    }, indent=3))
    result = _make("print-cuda-ver", f"CUDA_HOME={tmp_path}", env=_env_without_nvcc())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "12.8"


def test_version_json_wins_over_nvcc(tmp_path: Path) -> None:
    home, bin_dir = tmp_path / "cuda", tmp_path / "bin"
    home.mkdir()
    (home / "version.json").write_text('{"cuda" : {"name" : "CUDA SDK", "version" : "12.8.1"}}')
    _fake_nvcc(bin_dir, "12.6")
    result = _make("print-cuda-ver", f"CUDA_HOME={home}", env=_env_without_nvcc(bin_dir))
    assert result.stdout.strip() == "12.8", result.stderr


def _fake_nvcc(bin_dir: Path, release: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    nvcc = bin_dir / "nvcc"
    nvcc.write_text(
        "#!/bin/sh\n"
        "echo 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
        f"echo 'Cuda compilation tools, release {release}, V{release}.93'\n"
    )
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_cuda_ver_from_nvcc_on_path(tmp_path: Path) -> None:
    home, bin_dir = tmp_path / "empty-cuda", tmp_path / "bin"
    home.mkdir()
    _fake_nvcc(bin_dir, "12.8")
    result = _make("print-cuda-ver", f"CUDA_HOME={home}", env=_env_without_nvcc(bin_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "12.8"


def test_cuda_ver_given_is_used_as_is(tmp_path: Path) -> None:
    result = _make("print-cuda-ver", "CUDA_VER=12.4", f"CUDA_HOME={tmp_path}",
                   env=_env_without_nvcc())
    assert result.stdout.strip() == "12.4"


def test_cuda_ver_missing_fails_clearly(tmp_path: Path) -> None:
    result = _make("print-cuda-ver", f"CUDA_HOME={tmp_path}", env=_env_without_nvcc())
    assert result.returncode != 0
    assert "CUDA_VER is not set" in result.stderr
    assert "make CUDA_VER=12.8" in result.stderr


def test_make_test_needs_no_cuda(tmp_path: Path) -> None:
    """`make test` must not even try to detect CUDA."""
    env = _env_without_nvcc()
    result = _make("test", f"BUILD_DIR={tmp_path}", f"CUDA_HOME={tmp_path / 'none'}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_library_builds_against_fake_headers(tmp_path: Path) -> None:
    lib = tmp_path / "libnvdsinfer_yolo.so"
    result = _make("all", f"DS_INC={FAKE_DS_INC}", "CUDA_VER=12.8", f"LIB={lib}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lib.is_file()
    if shutil.which("nm"):
        symbols = subprocess.run(["nm", "-D", "--defined-only", str(lib)],
                                 capture_output=True, text=True, check=True).stdout
        # nvinfer dlsym()s the plain C name, so it must not be mangled.
        assert any(line.split()[-1] == "NvDsInferParseYolo" for line in symbols.splitlines())


def test_missing_deepstream_headers_fail_clearly(tmp_path: Path) -> None:
    result = _make("all", f"DS_ROOT={tmp_path}", "CUDA_VER=12.8", f"LIB={tmp_path / 'x.so'}")
    assert result.returncode != 0
    assert "nvdsinfer_custom_impl.h not found" in result.stderr
