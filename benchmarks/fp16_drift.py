#!/usr/bin/env python3
"""How far FP16 moves YOLO detections: the figures behind the engine check's score tolerance.

yolo11x (or --cfg) from its ultralytics yaml, weights re-drawn as tests/export_helpers.enliven does
(batch-norm statistics from real images, so boxes and scores depend on the image) with the DFL kept
its arange(16) projection; letterboxed bus.jpg at --imgsz; one forward in FP32 (TF32 off) and one in
FP16 (cuDNN kernels on CUDA, torch's own on --device cpu: not TensorRT, but the same number format). Both outputs are put in
the engine's [N,6] layout and compared exactly as the engine check does (compare_detections). --slots also runs
FP16 at those batches with the image in every slot: how far each slot is from slot 0 (the check's slot rule), and
slot 0 from the batch-1 FP16 output (kernels may be chosen per batch size).

    python3 benchmarks/fp16_drift.py                 # on CUDA
    python3 benchmarks/fp16_drift.py --cfg yolo11n.yaml --imgsz 640 --device cpu   # torch's CPU FP16 kernels
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch  # before ultralytics: its import sets OMP_NUM_THREADS=1 when unset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

import auto_build_engine as abe  # noqa: E402


def rows_of(raw: torch.Tensor) -> np.ndarray:
    """[1,4+nc,N] centre-xywh + class scores -> [N,6] x1,y1,x2,y2,score,class (our ONNX layout)."""
    rows = raw[0].transpose(0, 1).double()
    xy, wh = rows[:, :2], rows[:, 2:4]
    score, cls = rows[:, 4:].max(dim=-1, keepdim=True)
    return torch.cat((xy - wh / 2, xy + wh / 2, score, cls.double()), dim=-1).cpu().numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="yolo11x.yaml")
    parser.add_argument("--imgsz", type=int, default=1280)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--slots", default="4,16", help="FP16 batches with the image in every slot (the slot rule)")
    args = parser.parse_args()
    from export_helpers import enliven
    from ultralytics.nn.modules.block import DFL
    from ultralytics.nn.tasks import DetectionModel

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = DetectionModel(cfg=args.cfg, verbose=False)
    enliven(model, 0)
    for module in model.modules():
        if isinstance(module, DFL):
            module.conv.weight.data[:] = torch.arange(16, dtype=torch.float32).view(1, 16, 1, 1)
    model = model.eval().fuse(verbose=False).to(args.device)
    image, name = abe.letterbox_image(abe.reference_image_path(), args.imgsz)
    x = torch.from_numpy(image)[None].to(args.device)
    half_model = copy.deepcopy(model).half()
    settings = abe.DecodeSettings(args.imgsz, int(model.model[-1].nc))
    with torch.no_grad():
        full = rows_of(model(x)[0])
        half = rows_of(half_model(x.half())[0].float())
        slots = {}  # the engine check's slot rule: one image in every slot must give slot 0's boxes
        for batch in [int(b) for b in args.slots.split(",") if b]:
            raw = half_model(x.half().repeat(batch, 1, 1, 1))[0].float()
            rows = [rows_of(raw[k:k + 1]) for k in range(batch)]
            between = [abe.compare_detections(rows[0], rows[k], settings, abe.SLOT_MIN_IOU, abe.SLOT_SCORE_TOLERANCE)
                       for k in range(1, batch)]
            slots[batch] = {
                "slot_vs_slot0_raw_score_abs_diff_max": float(max(np.abs(r[:, 4] - rows[0][:, 4]).max() for r in rows)),
                "slot_vs_slot0_raw_box_abs_diff_px_max": float(max(np.abs(r[:, :4] - rows[0][:, :4]).max() for r in rows)),
                "slots_pass_slot_check": all(b.ok for b in between),
                "slot0_vs_batch1_raw_score_abs_diff_max": float(np.abs(rows[0][:, 4] - half[:, 4]).max()),
                "slot0_vs_batch1_raw_box_abs_diff_px_max": float(np.abs(rows[0][:, :4] - half[:, :4]).max()),
            }
    result = abe.compare_detections(full, half, settings)
    score_diff = np.abs(full[:, 4] - half[:, 4])
    report = {
        "model": args.cfg, "imgsz": args.imgsz, "image": name, "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "fp32_boxes": result.expected, "fp16_boxes": result.found,
        "comparison": result.figures(), "passes_engine_check": result.ok,
        "raw_score_abs_diff": {"max": float(score_diff.max()), "p99": float(np.percentile(score_diff, 99)), "median": float(np.median(score_diff))},
        "raw_box_abs_diff_px_max": float(np.abs(full[:, :4] - half[:, :4]).max()),
        "tolerances": {"iou_min": abe.COMPARE_MIN_IOU, "score": abe.COMPARE_SCORE_TOLERANCE,
                       "slot_iou_min": abe.SLOT_MIN_IOU, "slot_score": abe.SLOT_SCORE_TOLERANCE},
        "fp16_batch_slots": slots,
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
