"""The CLI contract: flags, env twins, one-line errors with exit code 2, help without heavy modules."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import auto_build_engine as abe

SCRIPT = Path(abe.__file__).resolve()
HEAVY = ("tensorrt", "torch", "ultralytics", "onnx", "onnxruntime", "pycuda", "pynvml")


def run_script(*argv: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    merged = {k: v for k, v in os.environ.items() if k not in ("PT_PATH", "ONNX_PATH", "MODEL", "IMGSZ", "MAX_BATCH")}
    merged.update(env or {})
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, env=merged, timeout=120, **kwargs)


def test_defaults_match_the_design():
    options = abe.parse_options([], environ={})
    assert (options.model, options.imgsz, options.min_batch, options.opt_batch, options.max_batch) == ("yolo11x", 1280, 1, 4, 16)
    assert (options.precision, options.workspace_mb, options.gpu_id, options.num_sources) == ("auto", 8192, 0, 1)
    assert options.engine_dir == Path("/app/engines/tensorrt")
    assert options.models_dir == Path("/app/engines/models")
    assert options.config_dir == Path("/app/configs")


def test_env_twins_set_every_value_flag():
    env = {"PT_PATH": "/w/m.pt", "MODEL": "yolo11s", "IMGSZ": "640", "MIN_BATCH": "2", "OPT_BATCH": "4",
           "MAX_BATCH": "8", "PRECISION": "FP32", "WORKSPACE_MB": "1024", "ENGINE_DIR": "/e", "MODELS_DIR": "/m",
           "CONFIG_DIR": "/c", "GPU_ID": "1", "NUM_SOURCES": "4"}
    options = abe.parse_options([], environ=env)
    assert options.pt == Path("/w/m.pt") and options.model == "yolo11s" and options.imgsz == 640
    assert (options.min_batch, options.opt_batch, options.max_batch) == (2, 4, 8)
    assert options.precision == "fp32" and options.workspace_mb == 1024
    assert (options.engine_dir, options.models_dir, options.config_dir) == (Path("/e"), Path("/m"), Path("/c"))
    assert (options.gpu_id, options.num_sources) == (1, 4)


def test_flag_wins_over_env():
    assert abe.parse_options(["--imgsz", "320"], environ={"IMGSZ": "640"}).imgsz == 320


@pytest.mark.parametrize("argv,env,needle", [
    (["--bogus"], {}, "unrecognized arguments"),
    (["--pt", "a.pt", "--onnx", "b.onnx"], {}, "--pt and --onnx are exclusive"),
    ([], {"PT_PATH": "a.pt", "ONNX_PATH": "b.onnx"}, "exclusive"),
    (["--imgsz", "1000"], {}, "--imgsz: 1000 is out of range (accepted: 32..4096, a multiple of 32)"),
    (["--imgsz", "abc"], {}, "--imgsz: 'abc' is not an integer"),
    ([], {"IMGSZ": "12.5"}, "IMGSZ (for --imgsz)"),
    (["--min-batch", "4", "--opt-batch", "2"], {}, "min <= opt <= max"),
    (["--opt-batch", "32"], {}, "min <= opt <= max"),
    (["--max-batch", "65"], {}, "--max-batch: 65 is out of range (accepted: 1..64)"),
    (["--workspace", "0"], {}, "--workspace: 0 is out of range"),
    (["--workspace", "-5"], {}, "--workspace"),
    (["--precision", "int4"], {}, "--precision: 'int4' is not one of auto, fp16, fp32"),
    ([], {"PRECISION": "fast"}, "PRECISION (for --precision)"),
    (["--num-sources", "20"], {}, "--num-sources 20 exceeds --max-batch 16"),
    (["--gpu-id", "-1"], {}, "--gpu-id"),
    (["--json"], {}, "--json goes with --info"),
    (["--check", "--dry-run"], {}, "exclusive"),
    (["--model", "../etc/passwd"], {}, "--model"),
])
def test_bad_input_is_one_line_and_exit_2(argv, env, needle):
    done = run_script(*argv, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]
    assert done.stdout == ""


def blocked_heavy_modules(tmp_path: Path) -> dict[str, str]:
    """A PYTHONPATH where importing any heavy module fails loudly."""
    for name in HEAVY:
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('{name} must not be imported here')\n")
    return {"PYTHONPATH": str(tmp_path)}


def test_help_works_without_heavy_modules(tmp_path):
    done = run_script("-h", env=blocked_heavy_modules(tmp_path))
    assert done.returncode == 0
    for flag in ("--pt", "--onnx", "--model", "--imgsz", "--min-batch", "--opt-batch", "--max-batch", "--precision",
                 "--workspace", "--engine-dir", "--models-dir", "--config-dir", "--gpu-id", "--num-sources",
                 "--force", "--check", "--info", "--json", "--dry-run", "-v", "-q"):
        assert flag in done.stdout
    for env in ("PT_PATH", "ONNX_PATH", "MODEL", "IMGSZ", "MAX_BATCH", "PRECISION", "WORKSPACE_MB", "ENGINE_DIR",
                "MODELS_DIR", "CONFIG_DIR", "GPU_ID", "NUM_SOURCES"):
        assert f"[{env}]" in done.stdout


def test_importing_the_script_loads_no_heavy_module():
    code = f"import sys; import auto_build_engine; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SCRIPT.parent, check=True)
    assert done.stdout.strip() == "[]"


def test_slug_and_stem_name_gpu_and_tensorrt():
    assert abe.gpu_slug("NVIDIA GeForce RTX 4090") == "rtx4090"
    assert abe.gpu_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    options = abe.parse_options([], environ={})
    gpu = abe.GpuInfo(0, "NVIDIA GeForce RTX 4090", "GPU-x", 24564, 20000, "8.9")
    assert abe.plan_engine(options, gpu, "10.9.0.34").stem == "yolo11x_1280_b16_fp16_sm89-rtx4090_trt10.9.0.34"


@pytest.mark.parametrize("cc,fast", [("5.0", False), ("5.2", False), ("5.3", True), ("6.0", True), ("6.1", False),
                                      ("7.0", True), ("7.5", True), ("8.6", True), ("8.9", True), ("9.0", True), ("12.0", True)])
def test_fast_fp16_follows_compute_capability(cc, fast):
    assert abe.has_fast_fp16(cc) is fast


def test_auto_precision_is_fp32_on_a_slow_fp16_gpu():
    gpu = abe.GpuInfo(0, "NVIDIA GeForce GTX 1080", "GPU-x", 8192, 8000, "6.1")
    assert abe.resolve_precision("auto", gpu, "10.9.0.34")[0] == "fp32"
    assert abe.resolve_precision("fp16", gpu, "10.9.0.34")[0] == "fp16"


def test_tool_error_is_mapped_to_its_exit_code_only_in_main(capsys, monkeypatch):
    def fail(options):
        raise abe.ToolError("no NVIDIA GPU visible; run the container with --gpus all", abe.EXIT_ENVIRONMENT)

    monkeypatch.setattr(abe, "run_ensure", fail)
    assert abe.main([]) == 3
    assert capsys.readouterr().err == "error: no NVIDIA GPU visible; run the container with --gpus all\n"
