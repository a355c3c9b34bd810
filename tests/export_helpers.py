"""Helpers for tests/test_exporter.py: random-weight checkpoints, letterboxed images, tiny ONNX graphs.

Everything here is offline: models come from ultralytics' own yaml files, images from its package.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np


def ultralytics_asset(name: str) -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / name


def save_checkpoint(model: Any, path: Path) -> Path:
    """Save like ultralytics' Model.save(): a dict whose "model" is the module in half precision."""
    import torch
    import ultralytics

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": copy.deepcopy(model).half(), "date": None, "version": ultralytics.__version__, "train_args": {}}, path)
    return path


def enliven(model: Any, seed: int = 0) -> Any:
    """Re-draw conv and batch-norm parameters so the random model's outputs depend on the image.

    ultralytics' fresh init gives every class the same score (about 1e-4) and boxes that are just the
    anchors: a comparison of two runtimes on that would prove little. Fan-in scaled normal weights give
    scores spread over 0.05..0.6 and image-dependent boxes.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.data = torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
            if module.bias is not None:
                module.bias.data = torch.randn(module.bias.shape, generator=generator) * 0.5 - 1.0
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.fill_(1.0)
            module.bias.data = torch.randn(module.bias.shape, generator=generator) * 0.1
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
    return model


def random_checkpoint(path: Path, cfg: str = "yolo11n.yaml", nc: int | None = None, names: list[str] | None = None, seed: int = 0) -> Path:
    """A random-weight model of any task built from an ultralytics yaml (see enliven), saved as a .pt checkpoint."""
    import torch
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel, SegmentationModel

    kind = ClassificationModel if "-cls" in cfg else SegmentationModel if "-seg" in cfg else DetectionModel
    torch.manual_seed(seed)
    model = kind(cfg=cfg, nc=nc, verbose=False) if nc else kind(cfg=cfg, verbose=False)
    if names is not None:
        model.names = dict(enumerate(names))
    enliven(model, seed)
    model.eval()
    return save_checkpoint(model, path)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """HWC BGR uint8 -> CHW RGB float32 in [0,1], aspect kept, centred grey (114) padding like ultralytics."""
    import cv2

    height, width = image.shape[:2]
    scale = min(size / height, size / width)
    new_w, new_h = round(width * scale), round(height * scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), 114, dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def image_batch(size: int, batch: int = 4, seed: int = 0) -> np.ndarray:
    """bus.jpg and zidane.jpg letterboxed, then random images to fill the batch."""
    import cv2

    images = [letterbox(cv2.imread(str(ultralytics_asset(name))), size) for name in ("bus.jpg", "zidane.jpg")]
    rng = np.random.default_rng(seed)
    while len(images) < batch:
        images.append(rng.random((3, size, size), dtype=np.float32))
    return np.stack(images[:batch])


def torch_reference(pt_path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch model's raw prediction ([B,4+nc,N], centre xywh) converted to [B,N,6] xyxy,score,class.

    Also returns the per-class scores [B,N,nc], to tell real class mismatches from near-ties.
    """
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    model, _ = load_checkpoint(str(pt_path))
    with torch.no_grad():
        raw = model(torch.from_numpy(images))
    raw = raw[0] if isinstance(raw, (tuple, list)) else raw
    rows = raw.transpose(1, 2).double()
    xy, wh = rows[..., :2], rows[..., 2:4]
    score, cls = rows[..., 4:].max(dim=-1, keepdim=True)
    return torch.cat((xy - wh / 2, xy + wh / 2, score, cls.double()), dim=-1).numpy(), rows[..., 4:].numpy()


def run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": images})[0]


def threshold_in_gap(scores: np.ndarray, low_rank: int = 10, high_rank: int = 300) -> tuple[float, float]:
    """A score threshold in the widest gap between ranks low_rank..high_rank: (threshold, gap width).

    Random weights give scores around 1e-4, so a fixed threshold would keep nothing or everything;
    cutting in the widest gap keeps some boxes and is robust to float noise between runtimes.
    """
    ordered = np.sort(scores.ravel())[::-1]
    window = ordered[low_rank:high_rank + 1]
    gaps = window[:-1] - window[1:]
    best = int(np.argmax(gaps))
    return float((window[best] + window[best + 1]) / 2), float(gaps[best])


def nms_boxes(rows: np.ndarray, threshold: float, iou: float = 0.45) -> list[np.ndarray]:
    """Per image: [K,6] rows kept by per-class NMS above `threshold`, sorted by score."""
    import torch
    import torchvision

    kept = []
    for image_rows in rows:
        t = torch.from_numpy(np.asarray(image_rows, dtype=np.float32))
        t = t[t[:, 4] > threshold]
        keep = torchvision.ops.batched_nms(t[:, :4], t[:, 4], t[:, 5].long(), iou)
        selected = t[keep].numpy()
        kept.append(selected[np.argsort(-selected[:, 4], kind="stable")])
    return kept


def tiny_onnx(path: Path, input_shape: list[Any], output_rank: int = 3, output_last: int = 6) -> Path:
    """A small valid ONNX with the given input shape and an output of the given rank (for bad-input tests)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = []
    if output_rank == 2:
        nodes.append(helper.make_node("Flatten", ["images"], ["out"], axis=1))
        out_shape = [input_shape[0], None]
    else:
        # [B,3,H,W] -> ReduceMean over H -> [B,3,W] ... shape only matters for the layout checks
        nodes.append(helper.make_node("ReduceMean", ["images"], ["out"], axes=[2], keepdims=0))
        out_shape = [input_shape[0], "anchors", output_last]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path
