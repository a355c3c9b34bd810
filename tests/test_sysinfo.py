"""SystemInfo against fake NVML, nvidia-smi, CUDA, TensorRT and DeepStream installs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.fake_pynvml import install_fake_pynvml
from tests.fakes.fake_tensorrt import install_fake_tensorrt
from tests.fakes.gpus import GPU_H100, GPU_RTX_3060, GPU_RTX_4090, write_gpus_json

from helpers import this_python_as  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STUB_BIN = ROOT / "tests" / "fakes" / "bin"


class Machine:
    """A fake machine: which pieces exist is chosen per test; `info()` runs `--info --json` on it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.site = tmp_path / "site"
        self.site.mkdir()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        # the stubs' interpreters, and nothing else of this machine's PATH
        this_python_as(self.bin / "python3")
        (self.bin / "bash").symlink_to(shutil.which("bash"))
        # PATH holds only stubs: a GPU machine's own nvidia-smi/nvcc must stay out of these tests
        self.env = {"PYTHONPATH": str(self.site), "HOME": str(tmp_path), "LD_LIBRARY_PATH": "",
                    "PATH": str(self.bin), "CUDA_HOME": str(tmp_path / "no-cuda"),
                    "DEEPSTREAM_ROOT": str(tmp_path / "no-deepstream")}
        self.no_nvml()

    def nvml(self, gpus, **kwargs) -> Machine:
        install_fake_pynvml(self.site, gpus, **kwargs)
        return self

    def no_nvml(self) -> Machine:
        (self.site / "pynvml.py").write_text("raise ImportError('No module named pynvml')\n")
        return self

    def smi(self, gpus) -> Machine:
        self.env["FAKE_GPUS_JSON"] = str(write_gpus_json(self.tmp / "gpus.json", gpus))
        (self.bin / "nvidia-smi").symlink_to(STUB_BIN / "nvidia-smi")
        return self

    def cuda_toolkit(self, version: str) -> Machine:
        home = self.tmp / "cuda"
        home.mkdir()
        (home / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": version}}))
        self.env["CUDA_HOME"] = str(home)
        return self

    def deepstream(self, first_line: str = "Version: 8.0") -> Machine:
        root = self.tmp / "deepstream"
        root.mkdir()
        (root / "version").write_text(first_line + "\nGCID: 41111111\n")
        self.env["DEEPSTREAM_ROOT"] = str(root)
        return self

    def tensorrt(self, version: str) -> Machine:
        install_fake_tensorrt(self.site, version)
        return self

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "auto_build_engine.py"), *argv], capture_output=True,
                              text=True, env=self.env, cwd=self.tmp, timeout=120)

    def info(self) -> tuple[int, dict]:
        done = self.run("--info", "--json")
        return done.returncode, json.loads(done.stdout)


@pytest.fixture
def machine(tmp_path):
    return Machine(tmp_path)


def test_no_gpu_reports_missing_and_exits_3(machine):
    code, info = machine.info()
    assert code == 3
    assert info["gpu_count"] == 0 and info["gpus"] == []
    assert "nvidia-smi not found" in info["missing"]["gpu"]


def test_one_gpu_through_nvml(machine):
    code, info = machine.nvml([GPU_RTX_4090], driver="570.124.06", cuda_driver=12080).info()
    assert code == 0
    assert info["gpu_source"] == "nvml"
    (gpu,) = info["gpus"]
    assert (gpu["name"], gpu["compute_capability"], gpu["memory_total_mib"]) == ("NVIDIA GeForce RTX 4090", "8.9", 24564)
    assert gpu["fast_fp16"] is True and gpu["uuid"].startswith("GPU-")
    assert (info["driver_version"], info["cuda_driver_version"]) == ("570.124.06", "12.8")


def test_two_different_gpus_are_listed_in_index_order(machine):
    code, info = machine.nvml([GPU_RTX_4090, GPU_RTX_3060]).info()
    assert code == 0
    assert [(g["index"], g["name"], g["compute_capability"]) for g in info["gpus"]] == [
        (0, "NVIDIA GeForce RTX 4090", "8.9"), (1, "NVIDIA GeForce RTX 3060", "8.6")]
    assert [g["memory_total_mib"] for g in info["gpus"]] == [24564, 12288]


def test_nvml_missing_falls_back_to_nvidia_smi(machine):
    code, info = machine.smi([GPU_H100]).info()
    assert code == 0
    assert info["gpu_source"] == "nvidia-smi"
    assert info["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert info["gpus"][0]["compute_capability"] == "9.0"
    assert info["driver_version"] == "580.95.05"
    assert info["cuda_driver_version"] == "13.0"
    # a GPU was found (through the fallback), so nothing GPU-related is reported missing
    assert "gpu" not in info["missing"]


def test_nvml_driver_not_loaded_and_no_smi_is_no_gpu(machine):
    code, info = machine.nvml(None).info()
    assert code == 3
    assert "NVML init failed" in info["missing"]["gpu"]


def test_deepstream_version_is_read_from_the_version_file(machine):
    _, info = machine.deepstream().info()
    assert info["deepstream_version"] == "8.0"
    assert "deepstream" not in info["missing"]


def test_deepstream_absent_is_reported_with_its_path(machine):
    _, info = machine.info()
    assert info["deepstream_version"] is None
    assert "no-deepstream/version missing" in info["missing"]["deepstream"]


@pytest.mark.parametrize("version", ["8.6.1", "10.9.0.34", "11.4.0.106"])
def test_tensorrt_present(machine, version):
    _, info = machine.tensorrt(version).info()
    assert info["tensorrt_version"] == version
    assert "tensorrt" not in info["missing"]


def test_tensorrt_absent(machine):
    _, info = machine.info()
    assert info["tensorrt_version"] is None
    assert "TensorRT not found" in info["missing"]["tensorrt"]


def test_cuda_toolkit_from_version_json(machine):
    _, info = machine.cuda_toolkit("12.8.1").info()
    assert info["cuda_toolkit_version"] == "12.8.1"


def test_cuda_toolkit_from_nvcc_when_no_version_json(machine):
    (machine.bin / "nvcc").symlink_to(STUB_BIN / "nvcc")
    machine.env["FAKE_NVCC_VERSION"] = "12.8.93"
    _, info = machine.info()
    assert info["cuda_toolkit_version"] == "12.8"


def test_human_table_names_every_piece(machine):
    done = machine.nvml([GPU_RTX_4090]).deepstream().tensorrt("10.9.0.34").cuda_toolkit("12.8.1").run("--info")
    assert done.returncode == 0
    for needle in ("NVIDIA GeForce RTX 4090", "sm 8.9", "TensorRT", "10.9.0.34", "DeepStream", "8.0", "12.8.1", "Driver"):
        assert needle in done.stdout


def test_gpu_id_out_of_range_is_exit_2_with_one_line(machine):
    machine.nvml([GPU_RTX_4090]).tensorrt("10.9.0.34")
    done = machine.run("--gpu-id", "2", "--check")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --gpu-id 2 is out of range: this machine has GPU indices 0..0"]


def test_check_without_gpu_is_exit_3_even_though_a_build_is_needed(machine):
    done = machine.tensorrt("10.9.0.34").run("--check")
    assert done.returncode == 3
    assert "--gpus all" in done.stderr


def test_check_without_tensorrt_is_exit_3(machine):
    done = machine.nvml([GPU_RTX_4090]).run("--check")
    assert done.returncode == 3
    assert done.stderr.strip() == "error: TensorRT not found; run inside the DeepStream image or pip install tensorrt"


def test_tensorrt_version_from_libnvinfer_file_name(machine):
    libs = machine.tmp / "lib"
    libs.mkdir()
    (libs / "libnvinfer.so.10.9.0").write_text("")
    (libs / "libnvinfer.so.10.9.0.34").write_text("")
    machine.env["LD_LIBRARY_PATH"] = str(libs)
    machine.nvml([GPU_RTX_4090])
    done = machine.run("--check", "--engine-dir", str(machine.tmp / "e"), "--config-dir", str(machine.tmp / "c"))
    assert done.returncode == 1  # TensorRT found (not 3), and no engine yet
    assert "build needed" in done.stderr


def test_tensorrt_version_from_a_cuda_suffixed_wheel(machine):
    (machine.site / "tensorrt_cu12-10.9.0.34.dist-info").mkdir()
    _, info = machine.info()
    assert info["tensorrt_version"] == "10.9.0.34"
