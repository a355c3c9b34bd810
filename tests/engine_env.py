"""A fake GPU machine with a fake TensorRT, for driving auto_build_engine.py end to end in subprocesses."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.fakes.fake_pynvml import install_fake_pynvml
from tests.fakes.fake_tensorrt import install_fake_tensorrt, read_plan_header
from tests.fakes.gpus import GPU_RTX_4090

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "auto_build_engine.py"
IMGSZ = 64
ANCHORS = (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2  # 84 at 64 px
CLASS_NAMES = ["car", "bus", "person"]


def write_tiny_onnx(path: Path, scale: float = 1.0) -> Path:
    """A tiny graph in the DeepStream layout: input [B,3,64,64] -> output [B,84,6]; no torch needed."""
    import onnx
    from onnx import TensorProto, helper

    per_image = ANCHORS * 6
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["sliced"]),
        helper.make_node("Mul", ["sliced", "scale"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "shape"], ["output"]),
    ]
    inits = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [per_image]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("scale", TensorProto.FLOAT, [1], [scale]),
        helper.make_tensor("shape", TensorProto.INT64, [3], [-1, ANCHORS, 6]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, IMGSZ, IMGSZ])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", ANCHORS, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    names = model.metadata_props.add()
    names.key, names.value = "names", json.dumps(dict(enumerate(CLASS_NAMES)))
    onnx.save(model, str(path))
    (path.parent / "labels.txt").write_text("".join(f"{n}\n" for n in CLASS_NAMES))
    return path


class EngineMachine:
    """One fake GPU box: fake pynvml GPU, fake TensorRT release, an ONNX, and the tool's directories."""

    def __init__(self, tmp: Path, trt_version: str = "10.9.0.34", gpu: dict | None = None) -> None:
        self.tmp = tmp
        self.site = tmp / "site"
        self.engine_dir = tmp / "engines"
        self.config_dir = tmp / "configs"
        self.models_dir = tmp / "models"
        self.access_log = tmp / "trt-access.log"
        self.onnx = write_tiny_onnx(self._mkdir(tmp / "onnx") / "tiny.onnx")
        # PATH holds only stubs: a GPU machine's own nvidia-smi/nvcc/trtexec stay out of these tests
        self.env = {
            "PATH": str(self._mkdir(tmp / "bin")), "HOME": str(tmp), "PYTHONPATH": str(self.site), "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",  # fakes are rewritten in place within one second
            "CUDA_HOME": str(tmp / "no-cuda"), "DEEPSTREAM_ROOT": str(tmp / "no-ds"), "LD_LIBRARY_PATH": "",
            "FAKE_TRT_ACCESS_LOG": str(self.access_log), "FAKE_TRT_BUILD_SECONDS": "0",
        }
        self.use_gpu(gpu or GPU_RTX_4090)
        self.use_tensorrt(trt_version)

    @staticmethod
    def _mkdir(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path

    def use_gpu(self, gpu: dict) -> None:
        install_fake_pynvml(self.site, [gpu])
        self.env["FAKE_TRT_CC"] = gpu["compute_cap"]

    def use_tensorrt(self, version: str) -> None:
        install_fake_tensorrt(self.site, version)

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, str(SCRIPT), "--onnx", str(self.onnx), "--imgsz", str(IMGSZ),
                "--engine-dir", str(self.engine_dir), "--config-dir", str(self.config_dir),
                "--models-dir", str(self.models_dir), *extra]

    def run(self, *extra: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*extra), capture_output=True, text=True, env={**self.env, **env},
                              cwd=self.tmp, timeout=timeout)

    def start(self, *extra: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.env, **env}, cwd=self.tmp, start_new_session=True)

    def engines(self) -> list[Path]:
        return sorted(self.engine_dir.glob("*.engine"))

    def only_engine(self) -> Path:
        (engine,) = self.engines()
        return engine

    def sidecar_of(self, engine: Path) -> dict:
        return json.loads(engine.with_suffix(".json").read_text())

    def plan_header(self, engine: Path) -> dict:
        return read_plan_header(engine.read_bytes())

    def temp_files(self) -> list[Path]:
        return sorted(p for p in self.engine_dir.glob(".*") if p.name.endswith(".tmp"))

    def accessed_names(self) -> set[str]:
        if not self.access_log.exists():
            return set()
        return {line.strip() for line in self.access_log.read_text().splitlines() if line.strip()}

    def pair_is_consistent(self, engine: Path) -> bool:
        """An engine with a sidecar must be the engine that sidecar describes."""
        sidecar = engine.with_suffix(".json")
        if not sidecar.exists():
            return True  # not valid, and the tool treats it so
        record = json.loads(sidecar.read_text())
        return record["engine_sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
