"""Fake ``modelopt.onnx.autocast`` (nvidia-modelopt) for the TensorRT 11 FP16 route.

Offers only ``convert_to_mixed_precision(onnx_path, low_precision_type="fp16", keep_io_types=True, ...)``
(the documented entry point) and returns an ``onnx.ModelProto`` whose float initializers are
float16, with Cast nodes so the graph inputs/outputs stay float32 when keep_io_types is set,
which is the shape of what AutoCast produces. It does no accuracy-aware node selection.
"""
from __future__ import annotations

from pathlib import Path

_AUTOCAST = '''"""Fake modelopt.onnx.autocast written by tests/fakes/fake_modelopt.py."""
import numpy as _np
import onnx as _onnx
from onnx import TensorProto as _TP, helper as _helper, numpy_helper as _nh


def convert_to_mixed_precision(onnx_path, low_precision_type="fp16", nodes_to_exclude=None,
                               op_types_to_exclude=None, data_max=512, init_max=65504,
                               keep_io_types=False, calibration_data=None, **kwargs):
    if low_precision_type not in ("fp16", "bf16"):
        raise ValueError(f"unsupported low_precision_type {low_precision_type!r}")
    model = _onnx.load(str(onnx_path))
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == _TP.FLOAT:
            init.CopyFrom(_nh.from_array(_nh.to_array(init).astype(_np.float16), init.name))
    if keep_io_types:
        for value in list(graph.input):
            cast = value.name + "_fp16"
            for node in graph.node:
                node.input[:] = [cast if name == value.name else name for name in node.input]
            graph.node.insert(0, _helper.make_node("Cast", [value.name], [cast], to=_TP.FLOAT16))
        for value in list(graph.output):
            inner = value.name + "_fp16"
            for node in graph.node:
                node.output[:] = [inner if name == value.name else name for name in node.output]
            graph.node.append(_helper.make_node("Cast", [inner], [value.name], to=_TP.FLOAT))
    del graph.value_info[:]
    # not AutoCast's: lets the fake TensorRT run the FP32 original through onnxruntime
    source = model.metadata_props.add()
    source.key, source.value = "fake_autocast_source", str(onnx_path)
    return model
'''


def install_fake_modelopt(site_dir: Path) -> Path:
    """Write ``site_dir/modelopt/onnx/autocast/__init__.py``; returns ``site_dir``."""
    package = Path(site_dir) / "modelopt" / "onnx" / "autocast"
    package.mkdir(parents=True, exist_ok=True)
    for folder in (package.parent.parent, package.parent):
        (folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text(_AUTOCAST)
    return Path(site_dir)
