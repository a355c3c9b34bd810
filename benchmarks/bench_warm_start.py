#!/usr/bin/env python3
"""Warm start: how much does checking the engine add to a container start?

Builds one engine with the fake TensorRT of tests/fakes (a real build needs a GPU and TensorRT;
the warm path never touches TensorRT, it reads the sidecar and stats the engine), then times in
one run, each median of --runs:

  baseline        python3 -c pass
  check (-m)      python3 -P -m auto_build_engine --check   (what the entrypoint/healthcheck run)
  check (script)  python3 auto_build_engine.py --check      (a user typing it; compiles the script)
  entrypoint      bash entrypoint.sh  (warm: builder reuses the engine, then exec of a stub app)

GPU: the real one through NVML when one is visible (--gpu real), else a fake NVML GPU.
Goals (README): check <= 2x baseline, entrypoint <= 3x baseline.

    python3 benchmarks/bench_warm_start.py [--runs 30] [--gpu auto|real|fake] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def real_gpu_visible() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        return count > 0
    except Exception:
        return False


def prepare(work: Path, gpu_mode: str) -> tuple[dict[str, str], list[str], Path]:
    """A valid engine + config in `work`; returns (env, builder args, app dir)."""
    from engine_env import IMGSZ, write_tiny_onnx
    from tests.fakes.fake_pynvml import install_fake_pynvml
    from tests.fakes.fake_tensorrt import install_fake_tensorrt
    from tests.fakes.gpus import GPU_RTX_4090

    site = work / "site"
    install_fake_tensorrt(site, "10.9.0.34")
    use_real = gpu_mode == "real" or (gpu_mode == "auto" and real_gpu_visible())
    if not use_real:
        install_fake_pynvml(site, [GPU_RTX_4090])
    onnx = write_tiny_onnx((work / "onnx").mkdir() or work / "onnx" / "tiny.onnx")
    app = work / "app"
    app.mkdir()
    shutil.copy(ROOT / "auto_build_engine.py", app / "auto_build_engine.py")
    for name in ("entrypoint.sh", "setup_deepstream_env.sh"):
        shutil.copy(ROOT / name, app / name)
    (app / "main_low_latency.py").write_text("import sys\nsys.exit(0)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE",)}
    env.update({
        "PYTHONPATH": f"{site}", "APP_DIR": str(app), "FAKE_TRT_CC": "8.9" if not use_real else env.get("FAKE_TRT_CC", "9.0"),
        "ONNX_PATH": str(onnx), "IMGSZ": str(IMGSZ), "ENGINE_DIR": str(work / "engines"),
        "CONFIG_DIR": str(work / "configs"), "MODELS_DIR": str(work / "models"),
    })
    if use_real:
        import pynvml

        pynvml.nvmlInit()
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(pynvml.nvmlDeviceGetHandleByIndex(0))
        pynvml.nvmlShutdown()
        env["FAKE_TRT_CC"] = f"{major}.{minor}"
    first = subprocess.run([sys.executable, str(app / "auto_build_engine.py")], env=env, capture_output=True, text=True)
    if first.returncode != 0:
        raise SystemExit(f"could not prepare the engine: {first.stderr.strip()}")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(app / "auto_build_engine.py")], check=True)
    env["BENCH_GPU"] = "real NVML GPU" if use_real else "fake NVML GPU (RTX 4090)"
    return env, [], app


def time_command(argv: list[str], env: dict[str, str], runs: int, cwd: Path) -> tuple[float, int]:
    samples = []
    code = 0
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
        code = done.returncode
    return statistics.median(samples) * 1000.0, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--gpu", choices=("auto", "real", "fake"), default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        work = Path(tmp)
        env, _, app = prepare(work, args.gpu)
        commands = {
            "baseline: python3 -c pass": [sys.executable, "-c", "pass"],
            "check (-m, as entrypoint/healthcheck)": [sys.executable, "-P", "-m", "auto_build_engine", "--check"],
            "check (script path)": [sys.executable, str(app / "auto_build_engine.py"), "--check"],
            "entrypoint warm start + exec stub app": ["bash", str(app / "entrypoint.sh")],
        }
        check_env = dict(env, PYTHONPATH=f"{app}:{env['PYTHONPATH']}")
        results = {}
        for label, argv in commands.items():
            ms, code = time_command(argv, check_env, args.runs, cwd=work)
            if code != 0:
                raise SystemExit(f"{label} exited {code}; the engine is not valid, nothing to measure")
            results[label] = ms
    base = results["baseline: python3 -c pass"]
    report = {
        "python": sys.version.split()[0], "gpu": env["BENCH_GPU"], "runs": args.runs,
        "median_ms": {k: round(v, 1) for k, v in results.items()},
        "ratio_to_baseline": {k: round(v / base, 2) for k, v in results.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"Python {report['python']}, {report['gpu']}, median of {args.runs} runs")
        print("| command | median ms | x baseline |\n|---|---|---|")
        for label, ms in results.items():
            print(f"| {label} | {ms:.1f} | {ms / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
