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


def enliven(model: Any, seed: int = 0, calibration: np.ndarray | None = None) -> Any:
    """Re-draw the weights so the random model's detections depend on the image.

    ultralytics' fresh init gives every class the same score (about 1e-4) and boxes that are just
    the anchors: comparing two runtimes on that would prove little. Here: fan-in scaled normal conv
    weights, the head's last convs damped so sigmoid does not saturate, and batch-norm statistics
    measured on real letterboxed images (train-mode pass), so every layer sees normalised input.
    Scores then spread over about 0.2..1 and the best anchors differ from image to image.
    """
    import torch
    from ultralytics.nn.modules.block import DFL

    # The DFL decoder's 1x1 conv is not a learned layer: its fixed weights arange(reg_max) turn the
    # per-side distributions into expected distances. Re-drawing them gives boxes under a pixel wide
    # (which the parser drops), so a parity test would compare nothing realistic: leave them alone.
    fixed = {id(m.conv) for m in model.modules() if isinstance(m, DFL)}
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if id(module) in fixed:
            continue
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.data = torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
            if module.bias is not None:  # the head's output convs
                module.weight.data *= 0.1
                module.bias.data = torch.randn(module.bias.shape, generator=generator) * 0.5 - 2.0
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration pass
    model.train()
    if calibration is None:
        calibration = image_batch(640, batch=4, seed=seed + 100)
    with torch.no_grad():
        model(torch.from_numpy(calibration))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.03
    return model.eval()


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
    """bus.jpg and zidane.jpg letterboxed, then random variants of them (flip, crop, brightness)."""
    import cv2

    sources = [cv2.imread(str(ultralytics_asset(name))) for name in ("bus.jpg", "zidane.jpg")]
    images = [letterbox(image, size) for image in sources]
    rng = np.random.default_rng(seed)
    while len(images) < batch:
        image = sources[len(images) % 2]
        height, width = image.shape[:2]
        top, left = int(rng.integers(0, height // 3)), int(rng.integers(0, width // 3))
        crop = image[top:top + int(height * rng.uniform(0.5, 0.67)), left:left + int(width * rng.uniform(0.5, 0.67))]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        scaled = np.clip(crop.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
        images.append(letterbox(np.ascontiguousarray(scaled), size))
    return np.stack(images[:batch])


def torch_reference(pt_path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch model's raw prediction ([B,4+nc,N], centre xywh) converted to [B,N,6] xyxy,score,class.

    Also returns the per-class scores [B,N,nc], to tell real class mismatches from near-ties.
    """
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    model, _ = load_checkpoint(str(pt_path), fuse=True)  # as ultralytics predicts (AutoBackend fuses)
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
    """Per image: anchor indices kept by per-class NMS above `threshold`, ascending."""
    import torch
    import torchvision

    kept = []
    for image_rows in rows:
        t = torch.from_numpy(np.asarray(image_rows, dtype=np.float32))
        candidates = torch.nonzero(t[:, 4] > threshold).flatten()
        c = t[candidates]
        keep = torchvision.ops.batched_nms(c[:, :4], c[:, 4], c[:, 5].long(), iou)
        kept.append(np.sort(candidates[keep].numpy()))
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


def layout_onnx(path: Path, input_shape: list[Any], outputs: dict[str, list[Any]], metadata: dict[str, str] | None = None,
                extra_input: bool = False, grid_sample: bool = False, rows: dict[str, np.ndarray] | None = None) -> Path:
    """A small valid ONNX with declared output shapes of our choosing, for the layout detection.

    Each output [B,a,b] is a constant [1,a,b] (`rows`, zeros unless given) + 0 x the image's mean, so
    it runs at any batch and every slot gives those rows. `grid_sample` routes the image through a
    GridSample first (ultralytics' RT-DETR has one: its deformable attention). `extra_input` adds a
    second, unused graph input.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], [numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero"),
                        numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "b11")]
    source = "images"
    if grid_sample:
        inits += [numpy_helper.from_array(np.array([0], dtype=np.int64), "c0"),
                  numpy_helper.from_array(np.array([2], dtype=np.int64), "c2"),
                  numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
        nodes += [helper.make_node("Slice", ["images", "c0", "c2", "axis1"], ["xy"]),
                  helper.make_node("Transpose", ["xy"], ["grid"], perm=[0, 2, 3, 1]),
                  helper.make_node("GridSample", ["images", "grid"], ["sampled"])]
        source = "sampled"
    nodes += [helper.make_node("ReduceMean", [source], ["mean"], axes=[1, 2, 3], keepdims=1),
              helper.make_node("Reshape", ["mean", "b11"], ["mean_b11"]),
              helper.make_node("Mul", ["mean_b11", "zero"], ["nothing"])]
    declared = []
    for name, shape in outputs.items():
        values = (rows or {}).get(name)
        constant = np.zeros([1, *shape[1:]], dtype=np.float32) if values is None else values.astype(np.float32)[None]
        inits.append(numpy_helper.from_array(constant, f"{name}_rows"))
        nodes.append(helper.make_node("Add", ["nothing", f"{name}_rows"], [name]))
        declared.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, input_shape))
    model = helper.make_model(helper.make_graph(nodes, "layout", inputs, declared, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
