#!/usr/bin/env python3
"""First start up to the TensorRT build (find + export + validate) vs ultralytics' own ONNX export.

Both sides are fresh processes started from the same random-weight .pt (built from an ultralytics
yaml: no download; export cost depends on the architecture, not the weights):

  ours         python3 auto_build_engine.py --dry-run --pt M.pt --imgsz N  (find, export, slim,
               validate = checker + contract + onnxruntime batch 1 on bus.jpg: the reference)
  ultralytics  YOLO(M.pt).export(format="onnx", dynamic=True, simplify=True, imgsz=N)

Wall time and peak RSS (ru_maxrss of each child, from wait4) are reported, plus our timeline
(phase by phase, as a first start prints it). Goals: ratio <= 1.2, our peak RSS < 4 GB.
`--forward-cost` also times one forward of the fused model at imgsz in a third process: what the
full-size dry run before tracing cost until it was moved to the smallest input.

    nice python3 benchmarks/bench_first_start.py                     # yolo11x.yaml at 1280
    python3 benchmarks/bench_first_start.py --cfg yolo11n.yaml --imgsz 640
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECKPOINT = """
import sys, torch, ultralytics
from ultralytics.nn.tasks import DetectionModel
torch.manual_seed(0)
model = DetectionModel(sys.argv[1], verbose=False).eval()
torch.save({"model": model.half(), "train_args": {}, "version": ultralytics.__version__}, sys.argv[2])
"""

ULTRALYTICS = """
import sys
from ultralytics import YOLO
YOLO(sys.argv[1]).export(format="onnx", dynamic=True, simplify=True, imgsz=int(sys.argv[2]), device="cpu", verbose=False)
"""

FORWARD = """
import sys, time, torch
from ultralytics.nn.tasks import load_checkpoint
model, _ = load_checkpoint(sys.argv[1], fuse=True)
model = model.float().eval()
x = torch.zeros(1, 3, int(sys.argv[2]), int(sys.argv[2]))
with torch.no_grad():
    start = time.perf_counter()
    model(x)
print(f"{time.perf_counter() - start:.3f}")
"""


def run_child(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str, str, int]:
    """(wall seconds, peak RSS bytes, stdout, stderr, exit code) of one fresh process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return seconds, usage.ru_maxrss * 1024, out.read(), err.read(), process.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="yolo11x.yaml", help="ultralytics model yaml (random weights)")
    parser.add_argument("--imgsz", type=int, default=1280)
    parser.add_argument("--forward-cost", action="store_true", help="also time one forward at imgsz (the old full-size dry run)")
    parser.add_argument("--ultralytics-omp-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the ultralytics side (unset, importing ultralytics before torch sets it to 1)")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    gib = 1 << 30
    with tempfile.TemporaryDirectory(prefix="bench_first_start_") as tmp:
        work = Path(tmp)
        stem = Path(args.cfg).stem
        pt = work / f"{stem}.pt"
        subprocess.run([sys.executable, "-c", CHECKPOINT, args.cfg, str(pt)], check=True, cwd=work, env=env)
        ours_dir, theirs_dir = work / "ours", work / "ultralytics"
        ours_dir.mkdir()
        theirs_dir.mkdir()
        (theirs_dir / pt.name).write_bytes(pt.read_bytes())
        ours = run_child([sys.executable, str(ROOT / "auto_build_engine.py"), "--dry-run", "--pt", str(pt), "--imgsz", str(args.imgsz),
                          "--models-dir", str(ours_dir / "models"), "--engine-dir", str(ours_dir / "engines"), "--config-dir", str(ours_dir / "configs")],
                         ours_dir, env)
        if ours[4] != 0:
            print(f"ours failed (exit {ours[4]}):\n{ours[3][-3000:]}", file=sys.stderr)
            return 1
        theirs_env = dict(env, OMP_NUM_THREADS=str(args.ultralytics_omp_threads)) if args.ultralytics_omp_threads else env
        theirs = run_child([sys.executable, "-c", ULTRALYTICS, str(theirs_dir / pt.name), str(args.imgsz)], theirs_dir, theirs_env)
        if theirs[4] != 0:
            print(f"ultralytics failed (exit {theirs[4]}):\n{theirs[3][-3000:]}", file=sys.stderr)
            return 1
        forward = None
        if args.forward_cost:
            done = run_child([sys.executable, "-c", FORWARD, str(pt), str(args.imgsz)], work, env)
            forward = float(done[2].strip().splitlines()[-1]) if done[4] == 0 else None
        timeline = next((line.split(None, 1)[1] for line in ours[2].splitlines() if line.startswith("Timeline")), None)
        reference = next((line for line in ours[3].splitlines() if "(the reference for the engine)" in line), None)
    try:
        import onnxruntime
        import torch
        import ultralytics

        versions = {"torch": torch.__version__, "ultralytics": ultralytics.__version__, "onnxruntime": onnxruntime.__version__}
    except ImportError:
        versions = {}
    report = {
        "model": args.cfg,
        "imgsz": args.imgsz,
        "ours_first_start_to_build_s": round(ours[0], 2),
        "ours_peak_rss_gb": round(ours[1] / gib, 2),
        "ours_timeline": timeline,
        "ours_reference": reference,
        "ultralytics_export_s": round(theirs[0], 2),
        "ultralytics_peak_rss_gb": round(theirs[1] / gib, 2),
        "ultralytics_omp_num_threads": args.ultralytics_omp_threads or os.environ.get("OMP_NUM_THREADS") or "unset (ultralytics sets 1)",
        "ratio": round(ours[0] / theirs[0], 3),
        "goal_ratio_max": 1.2,
        "goal_peak_rss_gb_max": 4.0,
        "pass": ours[0] / theirs[0] <= 1.2 and ours[1] < 4 * gib,
        "one_forward_at_imgsz_s": round(forward, 2) if forward is not None else None,
        "python": platform.python_version(),
        "versions": versions,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
