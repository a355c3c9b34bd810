"""The parser library against nvinfer's C ABI, as NVIDIA's headers define it: the exported symbol has
exactly the NvDsInferParseCustomFunc type (a wrong one does not compile, under NVIDIA's own check
macro as the stand-in headers reproduce it), it is found by dlsym() under its plain C name and works
when called through that pointer type, and the glue also works with the 9.x object layout
(rotation_angle). Stand-in headers: tests/fakes/deepstream_includes/."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB_DIR = ROOT / "nvdsinfer_yolo"
FAKE_DS_INC = ROOT / "tests" / "fakes" / "deepstream_includes"
CXX = shutil.which("g++")

pytestmark = pytest.mark.skipif(CXX is None or shutil.which("make") is None, reason="needs g++ and make")

FLAGS = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror"]

SIGNATURE = ("(std::vector<NvDsInferLayerInfo> const& layers, {net} networkInfo, "
             "NvDsInferParseDetectionParams const& params, std::vector<{obj}>& objects)")


def compile_source(tmp: Path, source: str, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp / "case.cpp"
    path.write_text(source)
    return subprocess.run([CXX, *FLAGS, *extra, f"-I{FAKE_DS_INC}", "-fsyntax-only", str(path)],
                          capture_output=True, text=True, timeout=120)


def definition(linkage: str = 'extern "C" ', net: str = "NvDsInferNetworkInfo const&",
               obj: str = "NvDsInferObjectDetectionInfo") -> str:
    return (
        '#include "nvdsinfer_custom_impl.h"\n'
        "struct Other { float x; };\n"
        f"{linkage}bool NvDsInferParseYolo{SIGNATURE.format(net=net, obj=obj)} "
        "{ (void)layers; (void)networkInfo; (void)params; (void)objects; return true; }\n"
        '#pragma GCC diagnostic ignored "-Wunused-parameter"\n'
        "CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE(NvDsInferParseYolo)\n")


def test_the_check_accepts_the_exact_type(tmp_path: Path) -> None:
    result = compile_source(tmp_path, definition())
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case, kwargs", [
    ("network info by value", {"net": "NvDsInferNetworkInfo"}),
    ("other object type", {"obj": "Other"}),
    ("C++ linkage (mangled name, dlsym finds nothing)", {"linkage": ""}),
])
def test_the_check_rejects_any_other_type(tmp_path: Path, case: str, kwargs: dict[str, str]) -> None:
    result = compile_source(tmp_path, definition(**kwargs))
    assert result.returncode != 0, case
    assert "NvDsInferParseYolo" in result.stderr


def test_the_library_is_found_and_called_like_nvinfer_does(tmp_path: Path) -> None:
    lib = tmp_path / "libnvdsinfer_yolo.so"
    built = subprocess.run(["make", "--no-print-directory", "-C", str(LIB_DIR), "all",
                            f"DS_INC={FAKE_DS_INC}", "CUDA_VER=12.8", f"LIB={lib}"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "warning" not in built.stderr  # -Wall -Wextra clean, NVIDIA's check macro included
    loader = tmp_path / "test_dlsym"
    compiled = subprocess.run([CXX, *FLAGS, f"-I{FAKE_DS_INC}", "-o", str(loader),
                               str(LIB_DIR / "tests" / "test_dlsym.cpp"), "-ldl"],
                              capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stderr
    run = subprocess.run([str(loader), str(lib)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "test_dlsym: ok=1 objects=1 first=0,10,20,100,200"


def test_glue_with_the_9x_object_layout(tmp_path: Path) -> None:
    exe = tmp_path / "test_glue_9x"
    compiled = subprocess.run([CXX, *FLAGS, "-DNVDS_STANDIN_9X_LAYOUT", f"-I{FAKE_DS_INC}", "-o", str(exe),
                               str(LIB_DIR / "tests" / "test_glue.cpp"), str(LIB_DIR / "nvdsparsebbox_yolo.cpp")],
                              capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "test_glue: all checks passed" in run.stdout


def test_stand_in_matches_nvidia_layout(tmp_path: Path) -> None:
    """Field order and sizes of NVIDIA's structs (8.0 layout; 9.x adds rotation_angle), the deprecated
    perClassThreshold alias that still refers to perClassPreclusterThreshold."""
    source = (
        "#include <cstddef>\n"
        '#include "nvdsinfer_custom_impl.h"\n'
        "static_assert(offsetof(NvDsInferLayerInfo, inferDims) == sizeof(int), \"dataType first\");\n"
        "static_assert(offsetof(NvDsInferObjectDetectionInfo, detectionConfidence) == 5 * 4, \"order\");\n"
        "static_assert(sizeof(NvDsInferObjectDetectionInfo) == SIZE, \"size\");\n"
        "static_assert(sizeof(NvDsInferNetworkInfo) == 3 * sizeof(unsigned int), \"net\");\n"
        "int main() { NvDsInferParseDetectionParams p{}; "
        "return &p.perClassThreshold == &p.perClassPreclusterThreshold ? 0 : 1; }\n")
    for extra, size in (([], 24), (["-DNVDS_STANDIN_9X_LAYOUT"], 28)):
        result = compile_source(tmp_path, source, *extra, f"-DSIZE={size}")
        assert result.returncode == 0, (extra, result.stderr)
