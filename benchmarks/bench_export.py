#!/usr/bin/env python3
"""Export time: our YOLOExporter vs ultralytics' own `export(format="onnx")`, same model, same run.

Both start from the same random-weight .pt (built from an ultralytics yaml, no download), both use
opset 17, a dynamic batch axis and onnxslim. Ours also adds the [B,N,6] layout head; ultralytics'
also makes H/W dynamic (its `dynamic=True`). Validation (onnxruntime) is timed apart, not in the ratio.

    python3 benchmarks/bench_export.py                    # yolo11x.yaml at 1280 (goal: ratio <= 1.1)
    python3 benchmarks/bench_export.py --cfg yolo11n.yaml --imgsz 640 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import auto_build_engine as abe  # noqa: E402


def make_checkpoint(cfg: str, folder: Path) -> Path:
    import torch
    import ultralytics
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(cfg, verbose=False).eval()
    path = folder / f"{Path(cfg).stem}.pt"
    torch.save({"model": model.half(), "train_args": {}, "version": ultralytics.__version__}, path)
    return path


def time_ours(pt: Path, imgsz: int, folder: Path) -> tuple[float, Path]:
    options = abe.Options(pt=pt, imgsz=imgsz, models_dir=folder)
    exporter = abe.YOLOExporter(options)
    target = abe.exported_onnx_path(folder, pt.stem, imgsz)
    start = time.perf_counter()
    exporter.export(pt, target, model_name=pt.stem, source_sha256="bench")
    return time.perf_counter() - start, target


def time_ultralytics(pt: Path, imgsz: int, folder: Path) -> tuple[float, Path]:
    from ultralytics import YOLO

    copy = folder / pt.name
    shutil.copy(pt, copy)
    start = time.perf_counter()
    out = YOLO(str(copy)).export(format="onnx", imgsz=imgsz, opset=abe.ONNX_OPSET, simplify=True, dynamic=True, batch=1, device="cpu", verbose=False)
    return time.perf_counter() - start, Path(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="yolo11x.yaml", help="ultralytics model yaml (random weights)")
    parser.add_argument("--imgsz", type=int, default=1280)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (ours, theirs); medians are reported")
    parser.add_argument("--validate", action="store_true", help="also time our validation (onnxruntime at batch 1)")
    args = parser.parse_args()
    abe._VERBOSITY = 0
    import onnx
    import onnxruntime
    import onnxslim
    import torch
    import ultralytics

    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        tmp_path = Path(tmp)
        pt = make_checkpoint(args.cfg, tmp_path)
        # warm-up, untimed: first torch.onnx / onnxslim use pays imports and lazy init for whoever is first
        (tmp_path / "warm").mkdir()
        warm = make_checkpoint("yolo11n.yaml", tmp_path / "warm")
        for label, func in (("ours", time_ours), ("ultralytics", time_ultralytics)):
            (tmp_path / f"warm-{label}").mkdir()
            func(warm, 320, tmp_path / f"warm-{label}")
        ours, theirs = [], []
        for round_index in range(args.rounds):
            for label, func, store in (("ours", time_ours, ours), ("ultralytics", time_ultralytics, theirs)):
                folder = tmp_path / f"{label}{round_index}"
                folder.mkdir()
                seconds, path = func(pt, args.imgsz, folder)
                store.append(seconds)
                print(f"round {round_index + 1}: {label:<11} {seconds:7.2f} s  {path.stat().st_size / 1e6:7.1f} MB  {path.name}", file=sys.stderr)
        validate_s = None
        if args.validate:
            options = abe.Options(pt=pt, imgsz=args.imgsz, models_dir=tmp_path / "ours0", min_batch=1, opt_batch=1, max_batch=1)
            start = time.perf_counter()
            abe.YOLOExporter(options).validate(abe.exported_onnx_path(tmp_path / "ours0", pt.stem, args.imgsz))
            validate_s = time.perf_counter() - start
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    report = {
        "model": args.cfg,
        "imgsz": args.imgsz,
        "rounds": args.rounds,
        "ours_s": round(ours_s, 2),
        "ultralytics_s": round(theirs_s, 2),
        "ratio": round(ours_s / theirs_s, 3),
        "goal_ratio_max": 1.1,
        "ours_validate_batch1_s": round(validate_s, 2) if validate_s is not None else None,
        "versions": {"torch": torch.__version__, "ultralytics": ultralytics.__version__, "onnx": onnx.__version__, "onnxslim": onnxslim.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
