#!/usr/bin/env python3
"""Does exporting on CUDA give the same ONNX detections as exporting on CPU?

Exports one model twice with our YOLOExporter (device="cuda", then device="cpu"), runs both ONNX
files with onnxruntime on CPU on bus.jpg and zidane.jpg (letterboxed like ultralytics), and compares:
max box difference (px), max score difference, class-id mismatches, and whether per-class NMS keeps
the same boxes. Prints one JSON object; exit 0 when within tolerance, 1 when not, 3 without CUDA.

    python3 benchmarks/export_cuda_vs_cpu.py                      # random weights, yolo11n.yaml, seed 0
    python3 benchmarks/export_cuda_vs_cpu.py --pt yolo11x.pt --imgsz 1280
    python3 benchmarks/export_cuda_vs_cpu.py --cuda-device cpu    # dry run of the script without a GPU

Needs torch, ultralytics, onnx, onnxslim, onnxruntime, numpy and Pillow or OpenCV; no torchvision.
A model from a yaml gets fan-in scaled random weights (fixed seed) with batch-norm statistics taken
from the test images: ultralytics' fresh init gives every class the same score and boxes that are
just the anchors, which would compare nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import auto_build_engine as abe  # noqa: E402


def random_checkpoint(cfg: str, path: Path, seed: int, calibration) -> Path:
    """Random weights whose detections depend on the image (tests/export_helpers.py: enliven)."""
    import torch
    import ultralytics
    from ultralytics.nn.tasks import DetectionModel

    from export_helpers import enliven

    torch.manual_seed(seed)
    model = enliven(DetectionModel(cfg, verbose=False), seed, calibration)
    torch.save({"model": model.half(), "train_args": {}, "version": ultralytics.__version__}, path)
    return path


def load_rgb(path: Path):
    import numpy as np

    try:
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except ImportError:
        import cv2

        return cv2.imread(str(path))[:, :, ::-1]


def letterbox(rgb, size: int):
    """HWC RGB uint8 -> CHW float32 [0,1]; aspect kept, centred grey (114) padding, bilinear resize."""
    import numpy as np

    height, width = rgb.shape[:2]
    scale = min(size / height, size / width)
    new_w, new_h = round(width * scale), round(height * scale)
    try:
        import cv2

        resized = cv2.resize(np.ascontiguousarray(rgb), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    except ImportError:
        from PIL import Image

        resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR))
    canvas = np.full((size, size, 3), 114, dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32) / 255.0


def iou_one_to_many(box, boxes):
    import numpy as np

    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(rows, threshold: float, iou: float):
    """Per-class greedy NMS like nvinfer cluster-mode=2: anchor indices kept, best score first."""
    import numpy as np

    candidates = np.flatnonzero(rows[:, 4] > threshold)
    order = candidates[np.argsort(-rows[candidates, 4], kind="stable")]
    kept = []
    suppressed = np.zeros(len(rows), dtype=bool)
    for position, index in enumerate(order):
        if suppressed[index]:
            continue
        kept.append(int(index))
        rest = order[position + 1:]
        rest = rest[(~suppressed[rest]) & (rows[rest, 5] == rows[index, 5])]
        if len(rest):
            suppressed[rest[iou_one_to_many(rows[index, :4], rows[rest, :4]) > iou]] = True
    return kept


def auto_threshold(scores, low: int = 10, high: int = 300) -> float:
    """The middle of the widest gap between ranks low..high: some boxes, robust to float noise."""
    import numpy as np

    ordered = np.sort(scores.ravel())[::-1][low:high + 1]
    gaps = ordered[:-1] - ordered[1:]
    best = int(np.argmax(gaps))
    return float((ordered[best] + ordered[best + 1]) / 2)


def export(pt: Path, imgsz: int, device: str, folder: Path) -> tuple[Path, float]:
    folder.mkdir(parents=True, exist_ok=True)
    options = abe.Options(pt=pt, imgsz=imgsz, models_dir=folder, min_batch=1, opt_batch=2, max_batch=2)
    start = time.perf_counter()
    result = abe.YOLOExporter(options, device=device).resolve()
    return result.path, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pt", type=Path, help="a detection .pt (default: random weights from --cfg)")
    parser.add_argument("--cfg", default="yolo11n.yaml", help="ultralytics model yaml for random weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--cuda-device", default="cuda:0", help="torch device of the CUDA export ('cpu' to dry-run without a GPU)")
    parser.add_argument("--images", type=Path, nargs="*", help="images (default: bus.jpg and zidane.jpg from ultralytics)")
    parser.add_argument("--conf", type=float, help="NMS score threshold (default: auto, in a gap of the CPU scores)")
    parser.add_argument("--iou", type=float, default=0.45)
    parser.add_argument("--box-tol", type=float, default=0.05, help="max |box diff| in px to pass")
    parser.add_argument("--score-tol", type=float, default=1e-3, help="max |score diff| to pass")
    args = parser.parse_args()
    abe._VERBOSITY = 0

    import numpy as np
    import onnxruntime as ort
    import torch
    import ultralytics

    report: dict = {"imgsz": args.imgsz, "cuda_device": args.cuda_device, "torch": torch.__version__, "ultralytics": ultralytics.__version__, "onnxruntime": ort.__version__}
    if args.cuda_device.startswith("cuda"):
        if not torch.cuda.is_available():
            report["error"] = "torch.cuda.is_available() is False: no GPU/driver or a CPU-only torch"
            print(json.dumps(report, indent=2))
            return 3
        report["gpu"] = torch.cuda.get_device_name(torch.device(args.cuda_device))
    images = args.images or [Path(ultralytics.__file__).parent / "assets" / name for name in ("bus.jpg", "zidane.jpg")]
    batch = np.stack([letterbox(load_rgb(path), args.imgsz) for path in images])

    with tempfile.TemporaryDirectory(prefix="export_cuda_vs_cpu_") as tmp:
        tmp_path = Path(tmp)
        pt = args.pt or random_checkpoint(args.cfg, tmp_path / f"{Path(args.cfg).stem}.pt", args.seed, batch)
        report["model"] = str(args.pt) if args.pt else f"{args.cfg} random weights, seed {args.seed}"
        cuda_onnx, cuda_s = export(pt, args.imgsz, args.cuda_device, tmp_path / "cuda")
        cpu_onnx, cpu_s = export(pt, args.imgsz, "cpu", tmp_path / "cpu")
        report["export_s"] = {"cuda": round(cuda_s, 2), "cpu": round(cpu_s, 2)}
        report["onnx_bytes_identical"] = cuda_onnx.read_bytes() == cpu_onnx.read_bytes()
        outputs = {}
        for label, path in (("cuda", cuda_onnx), ("cpu", cpu_onnx)):
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            outputs[label] = session.run(["output"], {"input": batch})[0].astype(np.float64)

    cuda_out, cpu_out = outputs["cuda"], outputs["cpu"]
    threshold = args.conf if args.conf is not None else auto_threshold(cpu_out[..., 4])
    per_image = []
    for index, path in enumerate(images):
        a, b = cuda_out[index], cpu_out[index]
        kept_a, kept_b = nms(a, threshold, args.iou), nms(b, threshold, args.iou)
        per_image.append({
            "image": path.name,
            "max_box_diff_px": float(np.abs(a[:, :4] - b[:, :4]).max()),
            "max_score_diff": float(np.abs(a[:, 4] - b[:, 4]).max()),
            "class_mismatches": int((a[:, 5] != b[:, 5]).sum()),
            "nms_boxes_cuda": len(kept_a),
            "nms_boxes_cpu": len(kept_b),
            "nms_same_boxes": sorted(kept_a) == sorted(kept_b),
        })
    report["score_threshold"] = threshold
    report["images"] = per_image
    report["max_box_diff_px"] = max(i["max_box_diff_px"] for i in per_image)
    report["max_score_diff"] = max(i["max_score_diff"] for i in per_image)
    report["pass"] = bool(
        report["max_box_diff_px"] <= args.box_tol
        and report["max_score_diff"] <= args.score_tol
        and all(i["nms_same_boxes"] and i["nms_boxes_cpu"] > 0 for i in per_image)
    )
    print(json.dumps(report, indent=2))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
