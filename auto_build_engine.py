#!/usr/bin/env python3
"""Build the right TensorRT engine for this GPU once, then hand DeepStream a matching config.

Flow, top to bottom: detect (SystemInfo) -> find/export the ONNX (YOLOExporter) -> build the
engine (EngineBuilder) -> write the nvinfer config (DeepStreamConfig) -> CLI (main).

Heavy modules (tensorrt, torch, ultralytics, onnx, onnxruntime, pycuda, pynvml) are imported
inside the functions that need them, so `-h`, `--check` and the warm start never pay for them.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from collections.abc import Sequence

TOOL_VERSION = "0.1.0"

EXIT_OK = 0
EXIT_BUILD_FAILED = 1  # also: `--check` says a build is needed
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

DEFAULT_DEEPSTREAM_ROOT = "/opt/nvidia/deepstream/deepstream"
DEFAULT_CUDA_HOME = "/usr/local/cuda"
STANDARD_MODEL_PATHS = (".", "/app", "/app/models", "/app/export_dynamic_batch")
CONFIG_FILE_NAME = "config_infer_auto_generated.txt"
LABELS_FILE_NAME = "labels.txt"
LOCK_FILE_NAME = ".build.lock"


class ToolError(Exception):
    """A user or environment error: one line for stderr and the exit code main() returns."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------
# Small shared helpers: output, progress, atomic files
# --------------------------------------------------------------------------------------------

_VERBOSITY = 1  # 0 quiet, 1 normal, 2 verbose; set once by main()


def log(message: str, level: int = 1) -> None:
    """Progress and notices go to stderr so stdout stays clean for --json."""
    if _VERBOSITY >= level:
        print(message, file=sys.stderr, flush=True)


def notice(message: str) -> None:
    log(f"notice: {message}", level=1)


class ProgressBar:
    """A one-line bar with phase and elapsed time on a terminal; plain start/end lines otherwise.

    `docker logs` is not a terminal, so there we print a line when a phase starts and ends
    (plus a heartbeat every `heartbeat_s`), never carriage-return spam.
    """

    def __init__(self, title: str, stream: Any = None, heartbeat_s: float = 30.0) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.heartbeat_s = heartbeat_s
        self.start = time.monotonic()
        self._last_plain = self.start
        self._lock = threading.Lock()
        self.phase = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, phase: str, done: int | None = None, total: int | None = None) -> None:
        if _VERBOSITY < 1:
            return
        with self._lock:
            changed = phase != self.phase
            self.phase = phase
            if self.is_tty:
                self.stream.write("\r\033[K" + self._render(done, total))
                self.stream.flush()
            elif changed or time.monotonic() - self._last_plain >= self.heartbeat_s:
                self._last_plain = time.monotonic()
                self.stream.write(self._render(done, total) + "\n")
                self.stream.flush()

    def _render(self, done: int | None, total: int | None) -> str:
        text = f"[{self.title}] {self.phase}"
        if done is not None and total:
            width = 24
            filled = int(width * min(done, total) / total)
            text += f" |{'#' * filled}{'.' * (width - filled)}| {done}/{total}"
        return f"{text} {self.elapsed():6.1f}s"

    def finish(self, message: str) -> None:
        if _VERBOSITY < 1:
            return
        with self._lock:
            if self.is_tty:
                self.stream.write("\r\033[K")
            self.stream.write(f"[{self.title}] {message} ({self.elapsed():.1f}s)\n")
            self.stream.flush()


def fsync_directory(directory: Path) -> None:
    """Make a rename durable: without this a power cut can lose the new directory entry."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write to a temp file in the same directory, fsync, then os.replace: never a torn file."""
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise ToolError(f"cannot write in {path.parent} ({error.strerror}); make it writable or choose another directory", EXIT_USAGE) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        _remove_quietly(Path(tmp_name))
        if isinstance(error, OSError):
            raise ToolError(f"cannot write {path} ({error.strerror}); free space or fix permissions", EXIT_BUILD_FAILED) from None
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def sha256_of_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _run_quietly(argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str]:
    """Run a probe command; (returncode, stdout). Missing binaries give (127, '')."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return 127, ""
    except (OSError, subprocess.TimeoutExpired) as error:
        return 126, str(error)
    return done.returncode, done.stdout


# --------------------------------------------------------------------------------------------
# 1. Detect: SystemInfo
# --------------------------------------------------------------------------------------------

# Compute capabilities with a slow FP16 path: consumer Pascal (GP102/104/106/107, 6.1) runs FP16
# at 1/64 rate, and Maxwell desktop (5.0, 5.2) has no FP16 arithmetic. Everything from 5.3 up
# (Jetson TX1, P100 6.0, Volta 7.0 and later) is fast. We decide from the compute capability
# because `platform_has_fast_fp16` is deprecated in TensorRT 10 and gone in 11.
_SLOW_FP16_CC = {(5, 0), (5, 2), (6, 1)}


def has_fast_fp16(compute_capability: str) -> bool:
    try:
        major, minor = (int(part) for part in compute_capability.split(".")[:2])
    except ValueError:
        return False
    if (major, minor) in _SLOW_FP16_CC or (major, minor) < (5, 3):
        return False
    return True


_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro"}


def gpu_slug(name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'rtx4090'; 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t and t not in _VENDOR_WORDS]
    merged: list[str] = []
    for token in tokens:
        # 'rtx' + '4090' reads as one product name; 'h100' + '80gb' stays two words
        if merged and merged[-1].isalpha() and token[0].isdigit():
            merged[-1] += token
        else:
            merged.append(token)
    return "-".join(merged) or "gpu"


@dataclass
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total_mib: int
    memory_free_mib: int
    compute_capability: str  # "8.9"

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")

    @property
    def slug(self) -> str:
        return gpu_slug(self.name)

    @property
    def fast_fp16(self) -> bool:
        return has_fast_fp16(self.compute_capability)

    def as_json(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["fast_fp16"] = self.fast_fp16
        return record


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_int_to_text(version: int) -> str:
    """NVML reports CUDA 12.8 as 12080."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def probe_gpus_nvml() -> tuple[list[GpuInfo], str, str]:
    """(gpus, driver version, driver CUDA version) through NVML; raises RuntimeError with a reason."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError as error:
        raise RuntimeError(f"pynvml not importable ({error}); pip install nvidia-ml-py") from None
    try:
        pynvml.nvmlInit()
    except Exception as error:  # NVMLError subclasses: driver not loaded, no permission, ...
        raise RuntimeError(f"NVML init failed: {error}") from None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = ""
        getter = getattr(pynvml, "nvmlSystemGetCudaDriverVersion_v2", None) or pynvml.nvmlSystemGetCudaDriverVersion
        try:
            cuda = _cuda_int_to_text(int(getter()))
        except Exception:
            pass
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(GpuInfo(
                index=index,
                name=_text(pynvml.nvmlDeviceGetName(handle)),
                uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                memory_total_mib=int(memory.total) // (1 << 20),
                memory_free_mib=int(memory.free) // (1 << 20),
                compute_capability=f"{major}.{minor}",
            ))
        return gpus, driver, cuda
    except Exception as error:
        raise RuntimeError(f"NVML query failed: {error}") from None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


_SMI_FIELDS = "index,name,uuid,memory.total,memory.free,compute_cap,driver_version"


def probe_gpus_smi() -> tuple[list[GpuInfo], str, str]:
    """The same through `nvidia-smi` (older drivers, or no nvidia-ml-py installed)."""
    code, out = _run_quietly(["nvidia-smi", f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits"])
    if code == 127:
        raise RuntimeError("nvidia-smi not found")
    if code != 0:
        raise RuntimeError(f"nvidia-smi failed (exit {code})")
    gpus, driver = [], ""
    for line in out.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 7:
            continue
        try:
            gpus.append(GpuInfo(int(parts[0]), parts[1], parts[2], int(float(parts[3])), int(float(parts[4])), parts[5]))
        except ValueError:
            continue
        driver = parts[6]
    _, header = _run_quietly(["nvidia-smi"])
    match = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    return gpus, driver, match.group(1) if match else ""


def probe_cuda_toolkit() -> str:
    """Toolkit CUDA from version.json (CUDA >= 11.1), else `nvcc --version`. Raises RuntimeError."""
    cuda_home = Path(os.environ.get("CUDA_HOME") or DEFAULT_CUDA_HOME)
    try:
        data = json.loads((cuda_home / "version.json").read_text())
        return str(data["cuda"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    nvcc = shutil.which("nvcc") or str(cuda_home / "bin" / "nvcc")
    code, out = _run_quietly([nvcc, "--version"])
    match = re.search(r"release\s+([0-9.]+)", out)
    if code == 0 and match:
        return match.group(1)
    raise RuntimeError(f"no CUDA toolkit ({cuda_home}/version.json missing, nvcc not found)")


def probe_deepstream() -> str:
    root = Path(os.environ.get("DEEPSTREAM_ROOT") or DEFAULT_DEEPSTREAM_ROOT)
    try:
        first = (root / "version").read_text().splitlines()[0]
    except (OSError, IndexError):
        raise RuntimeError(f"DeepStream not found ({root}/version missing)") from None
    match = re.match(r"\s*Version:\s*(\S+)", first)
    if not match:
        raise RuntimeError(f"unexpected first line in {root}/version: {first!r}")
    return match.group(1)


_TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_cu13_bindings", "tensorrt_cu12_bindings", "tensorrt-bindings")
_LIBNVINFER_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/tensorrt/lib", "/usr/lib64")


def probe_tensorrt_version_cheap() -> str:
    """TensorRT version without `import tensorrt`: package metadata, then libnvinfer's file name.

    The warm path uses this; importing tensorrt costs about a second and loads CUDA.
    """
    from importlib import metadata

    for dist in _TRT_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    extra = os.environ.get("LD_LIBRARY_PATH", "").split(":")
    for directory in [d for d in extra if d] + list(_LIBNVINFER_DIRS):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        versions = [m.group(1) for n in names if (m := re.fullmatch(r"libnvinfer\.so\.(\d+\.\d+\.\d+(?:\.\d+)?)", n))]
        if versions:
            return max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
    raise RuntimeError("TensorRT not found (no tensorrt package metadata, no libnvinfer.so.X.Y.Z)")


def probe_tensorrt_version_import() -> str:
    try:
        import tensorrt as trt
    except ImportError as error:
        raise RuntimeError(f"tensorrt not importable ({error})") from None
    return str(trt.__version__)


@dataclass
class SystemInfo:
    gpus: list[GpuInfo] = field(default_factory=list)
    gpu_source: str | None = None  # "nvml" or "nvidia-smi"
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    cuda_toolkit_version: str | None = None
    tensorrt_version: str | None = None
    deepstream_version: str | None = None
    missing: dict[str, str] = field(default_factory=dict)  # probe -> reason

    @classmethod
    def detect(cls, import_tensorrt: bool = False) -> SystemInfo:
        """Run every probe; each failure is recorded with its reason, never raised."""
        info = cls()
        info._detect_gpus()
        info.cuda_toolkit_version = info._soft("cuda_toolkit", probe_cuda_toolkit)
        info.deepstream_version = info._soft("deepstream", probe_deepstream)
        info.tensorrt_version = info._soft("tensorrt", probe_tensorrt_version_cheap)
        if import_tensorrt or info.tensorrt_version is None:
            imported = info._soft("tensorrt_import", probe_tensorrt_version_import)
            if imported:
                info.tensorrt_version = imported
                info.missing.pop("tensorrt", None)
            elif info.tensorrt_version is None:
                info.missing["tensorrt"] = "TensorRT not found (no package metadata, no libnvinfer, import failed)"
            info.missing.pop("tensorrt_import", None)
        return info

    def _soft(self, name: str, probe: Callable[[], str]) -> str | None:
        try:
            return probe()
        except RuntimeError as error:
            self.missing[name] = str(error)
            return None

    def _detect_gpus(self) -> None:
        reasons = []
        for source, probe in (("nvml", probe_gpus_nvml), ("nvidia-smi", probe_gpus_smi)):
            try:
                gpus, driver, cuda = probe()
            except RuntimeError as error:
                reasons.append(f"{source}: {error}")
                continue
            self.gpus, self.gpu_source = gpus, source
            self.driver_version, self.cuda_driver_version = driver or None, cuda or None
            if not gpus:
                self.missing["gpu"] = f"{source} sees no GPU"
            return
        self.missing["gpu"] = "; ".join(reasons)

    def gpu(self, gpu_id: int) -> GpuInfo:
        """The GPU to build for, or a ToolError that says what to do."""
        if not self.gpus:
            raise ToolError(f"no NVIDIA GPU visible ({self.missing.get('gpu', 'unknown reason')}); run the container with --gpus all", EXIT_ENVIRONMENT)
        for gpu in self.gpus:
            if gpu.index == gpu_id:
                return gpu
        raise ToolError(f"--gpu-id {gpu_id} is out of range: this machine has GPU indices 0..{len(self.gpus) - 1}", EXIT_USAGE)

    def as_json(self) -> dict[str, Any]:
        return {
            "tool_version": TOOL_VERSION,
            "gpu_count": len(self.gpus),
            "gpus": [gpu.as_json() for gpu in self.gpus],
            "gpu_source": self.gpu_source,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "cuda_toolkit_version": self.cuda_toolkit_version,
            "tensorrt_version": self.tensorrt_version,
            "deepstream_version": self.deepstream_version,
            "missing": dict(sorted(self.missing.items())),
        }

    def as_table(self) -> str:
        def show(value: str | None, probe: str) -> str:
            return value if value else f"missing ({self.missing.get(probe, 'not found')})"

        rows = [
            ("GPUs", str(len(self.gpus)) + (f" (via {self.gpu_source})" if self.gpu_source else "") if self.gpus else f"no GPU ({self.missing.get('gpu', 'not found')})"),
        ]
        for gpu in self.gpus:
            fp16 = "fast FP16" if gpu.fast_fp16 else "slow FP16 (FP32 engines)"
            rows.append((f"  GPU {gpu.index}", f"{gpu.name}, sm {gpu.compute_capability}, {gpu.memory_total_mib} MiB ({gpu.memory_free_mib} free), {fp16}, {gpu.uuid}"))
        rows += [
            ("Driver", show(self.driver_version, "gpu")),
            ("CUDA (driver)", show(self.cuda_driver_version, "gpu")),
            ("CUDA (toolkit)", show(self.cuda_toolkit_version, "cuda_toolkit")),
            ("TensorRT", show(self.tensorrt_version, "tensorrt")),
            ("DeepStream", show(self.deepstream_version, "deepstream")),
            ("Tool", TOOL_VERSION),
        ]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


# --------------------------------------------------------------------------------------------
# 2. Find / export: YOLOExporter
# --------------------------------------------------------------------------------------------

# The DeepStream layout (DESIGN.md "The ONNX the exporter produces"): input `input` [B,3,H,W] float32,
# output `output` [B,N,6] = x1,y1,x2,y2 (input pixels), best class score, class id as float.
ONNX_LAYOUT = "deepstream-yolo-v1"
ONNX_OPSET = 17
ONNX_INPUT_NAME = "input"
ONNX_OUTPUT_NAME = "output"
ONNX_SUFFIX = "_ds.onnx"
# metadata_props keys we write; ultralytics writes its own ("names", "task", ...) without a prefix
META_LAYOUT = "autobuild.layout"
META_MODEL = "autobuild.model"
META_IMGSZ = "autobuild.imgsz"
META_NAMES = "autobuild.names"  # JSON list
META_SOURCE = "autobuild.source"  # file name of the .pt/.yaml/.onnx it came from
META_SOURCE_SHA256 = "autobuild.source_sha256"
META_TOOL_VERSION = "autobuild.tool_version"
DEFAULT_CLASS_COUNT = 80  # assumed for a DeepStream-layout ONNX that names no classes
_MODEL_YAML_SUFFIXES = (".yaml", ".yml")
_YAML_SEED = 0  # a model built from a yaml gets reproducible random weights


@dataclass
class OnnxModel:
    path: Path
    model_name: str
    imgsz: int
    class_names: list[str]
    origin: str  # "exported" | "reused" | "given" | "adapted"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def write_labels(path: Path, names: list[str]) -> None:
    """labels.txt for nvinfer: one class name a line, written atomically."""
    clean = [" ".join(str(name).split()) or f"class{index}" for index, name in enumerate(names)]
    atomic_write_text(Path(path), "".join(f"{name}\n" for name in clean))


def read_labels(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def default_class_names(count: int) -> list[str]:
    return [f"class{index}" for index in range(count)]


def exported_onnx_path(models_dir: Path, model_name: str, imgsz: int) -> Path:
    """MODELS_DIR/<model>_<imgsz>_ds.onnx: one file per model and input size."""
    return Path(models_dir) / f"{model_name}_{imgsz}{ONNX_SUFFIX}"


def expected_anchor_count(imgsz: int, strides: Sequence[int] = (8, 16, 32)) -> int:
    """N of the output: 33600 at 1280, 8400 at 640, 2100 at 320."""
    return sum((imgsz // stride) ** 2 for stride in strides)


def model_search_dirs(options: Options) -> list[Path]:
    """The standard paths, then MODELS_DIR, without duplicates, in that order."""
    seen: set[str] = set()
    dirs = []
    for directory in [*(Path(p) for p in STANDARD_MODEL_PATHS), Path(options.models_dir)]:
        key = os.path.abspath(directory)
        if key not in seen:
            seen.add(key)
            dirs.append(directory)
    return dirs


def _is_model_yaml(path: Path) -> bool:
    return path.suffix.lower() in _MODEL_YAML_SUFFIXES


def _is_bare_name(path: Path) -> bool:
    return len(path.parts) == 1 and not path.is_absolute()


def _searched(dirs: Sequence[Path]) -> str:
    return ", ".join(os.path.abspath(d) for d in dirs)


def locate_model_files(options: Options) -> tuple[Path | None, Path | None]:
    """(onnx, weights) to use; exactly one is set. Raises ToolError (exit 2) if nothing fits.

    The weights may not exist yet: a bare official name (yolo11x.pt) is returned as
    MODELS_DIR/<name> and downloaded there by `YOLOExporter`. A model yaml (yolo11n.yaml) is
    returned as given; ultralytics resolves bare yaml names from its own cfg folder.
    """
    dirs = model_search_dirs(options)
    if options.onnx is not None:
        onnx_path = Path(options.onnx)
        if not onnx_path.is_file():
            raise ToolError(f"--onnx {onnx_path}: file not found; give an existing ONNX file or use --pt", EXIT_USAGE)
        return onnx_path, None
    if options.pt is not None:
        pt = Path(options.pt)
        if pt.is_file():
            return None, pt
        if _is_model_yaml(pt):
            if _is_bare_name(pt):
                return None, pt  # ultralytics' own cfg (checked when loading)
            raise ToolError(f"--pt {pt}: model yaml not found; give an existing file or a name like yolo11n.yaml", EXIT_USAGE)
        if _is_bare_name(pt):
            for directory in dirs:
                if (directory / pt).is_file():
                    return None, directory / pt
            return None, Path(options.models_dir) / pt  # to download
        raise ToolError(f"--pt {pt}: file not found; give an existing .pt file or a bare name like yolo11x.pt to download", EXIT_USAGE)
    for suffix in (".onnx", ".pt"):
        for directory in dirs:
            candidate = directory / f"{options.model}{suffix}"
            if candidate.is_file():
                return (candidate, None) if suffix == ".onnx" else (None, candidate)
    return None, Path(options.models_dir) / f"{options.model}.pt"  # to download


def _ensure_writable_dir(directory: Path, what: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ToolError(f"cannot create {what} {directory} ({error.strerror}); make it writable or set another directory", EXIT_USAGE) from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise ToolError(f"{what} {directory} is not writable; make it writable or set another directory", EXIT_USAGE)


def _import_onnx_stack() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ToolError(f"{error.name or 'onnx'} is not installed ({error}); pip install onnx onnxruntime onnxslim", EXIT_ENVIRONMENT) from None
    return onnx, onnxruntime


def _import_torch_stack() -> Any:
    try:
        import torch
        import ultralytics  # noqa: F401
    except ImportError as error:
        raise ToolError(f"exporting a .pt needs torch and ultralytics ({error}); pip install torch ultralytics, or pass --onnx", EXIT_ENVIRONMENT) from None
    return torch


def _read_metadata(model_proto: Any) -> dict[str, str]:
    return {prop.key: prop.value for prop in model_proto.metadata_props}


def _set_metadata(model_proto: Any, values: dict[str, str]) -> None:
    kept = [(p.key, p.value) for p in model_proto.metadata_props if p.key not in values]
    del model_proto.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        prop = model_proto.metadata_props.add()
        prop.key, prop.value = key, str(value)


def _names_from_metadata(meta: dict[str, str]) -> list[str] | None:
    """Our JSON list first, then ultralytics' `names` (a Python dict literal)."""
    if META_NAMES in meta:
        try:
            names = json.loads(meta[META_NAMES])
            if isinstance(names, list) and names:
                return [str(n) for n in names]
        except ValueError:
            pass
    if "names" in meta:
        import ast

        try:
            names = ast.literal_eval(meta["names"])
        except (ValueError, SyntaxError):
            return None
        if isinstance(names, dict) and names:
            return [str(names[key]) for key in sorted(names)]
        if isinstance(names, (list, tuple)) and names:
            return [str(n) for n in names]
    return None


def _dims(value_info: Any) -> list[int | str | None]:
    """Shape of a graph input/output: int for a fixed dim, the name (or None) for a dynamic one."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]


def _is_dynamic(dim: int | str | None) -> bool:
    return not isinstance(dim, int) or dim <= 0


def _load_onnx(path: Path, load_external_data: bool = True) -> Any:
    onnx, _ = _import_onnx_stack()
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as error:  # DecodeError, OSError, ...: all mean "this is not a usable ONNX"
        raise ToolError(f"{path} is not a readable ONNX model ({type(error).__name__}); give a valid .onnx or pass --pt", EXIT_USAGE) from None


def _graph_layout(model_proto: Any, path: Path) -> str:
    """'deepstream' ([B,N,6]) or 'ultralytics' ([B,4+nc,N]); ToolError for anything else."""
    graph = model_proto.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ToolError(f"{path}: expected one image input, found {len(inputs)}; this is not a YOLO detector ONNX", EXIT_USAGE)
    if len(graph.output) != 1:
        raise ToolError(f"{path}: expected one output, found {len(graph.output)} (segment/pose models are not detectors); export a YOLO detection model", EXIT_USAGE)
    in_dims, out_dims = _dims(inputs[0]), _dims(graph.output[0])
    if len(in_dims) != 4 or in_dims[1] != 3:
        raise ToolError(f"{path}: input {inputs[0].name} has shape {in_dims}, expected [B,3,H,W]; this is not a YOLO detector ONNX", EXIT_USAGE)
    if not _is_dynamic(in_dims[0]):
        raise ToolError(f"{path}: the batch axis is static ({in_dims[0]}); re-export with a dynamic batch axis or pass --pt", EXIT_USAGE)
    if len(out_dims) != 3:
        raise ToolError(f"{path}: output {graph.output[0].name} has rank {len(out_dims)}, expected [B,N,6] or [B,4+nc,N]; this is not a YOLO detector ONNX", EXIT_USAGE)
    meta = _read_metadata(model_proto)
    task = meta.get("task")
    if task and task != "detect":
        raise ToolError(f"{path}: ultralytics task is {task!r}, not a detection model; export a YOLO detection model", EXIT_USAGE)
    middle, last = out_dims[1], out_dims[2]
    if meta.get(META_LAYOUT) == ONNX_LAYOUT or (last == 6 and (_is_dynamic(middle) or middle > 6)):
        if last != 6:
            raise ToolError(f"{path}: output last dim is {last}, expected 6 (x1,y1,x2,y2,score,class)", EXIT_USAGE)
        return "deepstream"
    if isinstance(middle, int) and middle >= 5 and middle != last:
        return "ultralytics"
    raise ToolError(f"{path}: output shape {out_dims} is neither [B,N,6] nor [B,4+nc,N]; this is not a YOLO detector ONNX", EXIT_USAGE)


def _append_layout_adapter(model_proto: Any) -> None:
    """[B,4+nc,N] centre-xywh -> [B,N,6] x1,y1,x2,y2,score,class as ONNX nodes after the graph."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model_proto.graph
    source = graph.output[0].name
    opset = next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), ONNX_OPSET)
    prefix = "ds_adapter/"

    def const(name: str, values: list[int] | list[float], dtype: Any) -> str:
        graph.initializer.append(numpy_helper.from_array(np.array(values, dtype=dtype), prefix + name))
        return prefix + name

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        graph.node.append(helper.make_node(op, inputs, [prefix + name], name=prefix + name, **attrs))
        return prefix + name

    axis2 = const("axis2", [2], np.int64)
    big = np.iinfo(np.int64).max
    rows = node("Transpose", [source], "rows", perm=[0, 2, 1])  # [B,N,4+nc]
    xy = node("Slice", [rows, const("s0", [0], np.int64), const("e2", [2], np.int64), axis2], "xy")
    wh = node("Slice", [rows, const("s2", [2], np.int64), const("e4", [4], np.int64), axis2], "wh")
    classes = node("Slice", [rows, const("s4", [4], np.int64), const("eend", [big], np.int64), axis2], "classes")
    half = node("Mul", [wh, const("half", [0.5], np.float32)], "half_wh")
    x1y1 = node("Sub", [xy, half], "x1y1")
    x2y2 = node("Add", [xy, half], "x2y2")
    if opset >= 18:  # ReduceMax takes axes as an input from opset 18
        score = node("ReduceMax", [classes, axis2], "score", keepdims=1)
    else:
        score = node("ReduceMax", [classes], "score", axes=[2], keepdims=1)
    class_id = node("ArgMax", [classes], "class_id", axis=2, keepdims=1)
    class_f = node("Cast", [class_id], "class_f", to=TensorProto.FLOAT)
    graph.node.append(helper.make_node("Concat", [x1y1, x2y2, score, class_f], [ONNX_OUTPUT_NAME], name=prefix + "concat", axis=2))
    batch = _dims(graph.output[0])[0]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(ONNX_OUTPUT_NAME, TensorProto.FLOAT, [batch if isinstance(batch, str) and batch else "batch", "anchors", 6]))


def _rename_value(graph: Any, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for index, name in enumerate(node.output):
            if name == old:
                node.output[index] = new
    for collection in (graph.input, graph.output, graph.value_info):
        for info in collection:
            if info.name == old:
                info.name = new


def _available_memory_bytes() -> int | None:
    """MemAvailable, lowered to the cgroup (container) limit's headroom where there is one."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            headroom = int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = headroom if available is None else min(available, headroom)
    except (OSError, ValueError):
        pass
    return available


def _rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class YOLOExporter:
    """Find the ONNX, or export it from YOLO weights, in the DeepStream layout; validate it.

    Find order: --onnx, else --pt, else MODEL.onnx then MODEL.pt in the standard paths and
    MODELS_DIR, else download MODEL.pt into MODELS_DIR. Exports go to
    MODELS_DIR/<model>_<imgsz>_ds.onnx and are reused while the weights' sha256, imgsz and
    layout recorded in the file still match. `device` is for the torch export only (the ONNX is
    device-independent); validation always runs onnxruntime on CPU.
    """

    def __init__(self, options: Options, device: str = "cpu") -> None:
        self.options = options
        self.device = device

    # -- find ------------------------------------------------------------------------------

    def resolve(self) -> OnnxModel:
        onnx_path, weights = locate_model_files(self.options)
        if onnx_path is not None:
            result = self._from_onnx(onnx_path)
        else:
            assert weights is not None
            result = self._from_weights(weights)
        full = result.origin != "reused"  # reused files were run at min/opt/max when written
        self.validate(result.path, full=full)
        log(f"ONNX ({result.origin}): {result.path} [{result.model_name}, {result.imgsz}x{result.imgsz}, {result.num_classes} classes]")
        return result

    def _from_weights(self, weights: Path) -> OnnxModel:
        options = self.options
        model_name = weights.stem
        target = exported_onnx_path(options.models_dir, model_name, options.imgsz)
        if not weights.is_file() and not _is_model_yaml(weights):
            reusable = self._reusable_without_weights(target, weights.name)
            if reusable is not None:
                return reusable
            weights = self._download(weights)
        source = weights
        source_sha = self._source_sha256(source)
        reused = self._reusable(target, source_sha)
        if reused is not None:
            return reused
        _ensure_writable_dir(Path(options.models_dir), "MODELS_DIR")
        names = self.export(source, target, model_name=model_name, source_sha256=source_sha)
        return OnnxModel(target, model_name, options.imgsz, names, "exported")

    def _reusable(self, target: Path, source_sha: str) -> OnnxModel | None:
        meta = self._metadata_of(target)
        if meta is None:
            return None
        if (meta.get(META_LAYOUT), meta.get(META_IMGSZ), meta.get(META_SOURCE_SHA256)) != (ONNX_LAYOUT, str(self.options.imgsz), source_sha):
            log(f"{target} was exported from other weights or options; exporting again", level=2)
            return None
        names = _names_from_metadata(meta)
        if not names:
            return None
        return OnnxModel(target, meta.get(META_MODEL, target.stem), self.options.imgsz, names, "reused")

    def _reusable_without_weights(self, target: Path, weights_name: str) -> OnnxModel | None:
        """No weights anywhere, but our export of exactly that file is: use it, download nothing."""
        meta = self._metadata_of(target)
        if meta and meta.get(META_SOURCE) == weights_name and meta.get(META_LAYOUT) == ONNX_LAYOUT and meta.get(META_IMGSZ) == str(self.options.imgsz):
            names = _names_from_metadata(meta)
            if names:
                notice(f"{weights_name} not found; reusing {target} exported from it earlier")
                return OnnxModel(target, meta.get(META_MODEL, target.stem), self.options.imgsz, names, "reused")
        return None

    @staticmethod
    def _metadata_of(path: Path) -> dict[str, str] | None:
        if not path.is_file():
            return None
        onnx, _ = _import_onnx_stack()
        try:
            return _read_metadata(onnx.load(str(path), load_external_data=False))
        except Exception:
            notice(f"{path} is unreadable; exporting again")
            return None

    def _download(self, weights: Path) -> Path:
        """Download an official asset by name into MODELS_DIR (ultralytics shows its own progress)."""
        searched = _searched(model_search_dirs(self.options))
        _ensure_writable_dir(weights.parent, "MODELS_DIR")
        _import_torch_stack()
        from ultralytics.utils.downloads import attempt_download_asset

        log(f"{weights.name} not found locally; downloading it into {weights.parent}")
        # into a private folder first: an interrupted download never sits at the final path
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=weights.parent))
        try:
            try:
                found = Path(attempt_download_asset(str(staging / weights.name)))
            except Exception as error:
                raise ToolError(f"{weights.name} not found in {searched} and the download failed ({type(error).__name__}); put the file there, or check the name and the network", EXIT_USAGE) from None
            if not found.is_file():
                raise ToolError(f"{weights.name} not found in {searched} and not downloadable (offline, or not an official model name); put the file there or pass --pt/--onnx", EXIT_USAGE)
            if found.parent != staging:  # already in ultralytics' weights_dir: use it where it is
                return found
            os.replace(found, weights)
            fsync_directory(weights.parent)
            return weights
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _load_yaml_cfg(path: Path) -> dict[str, Any]:
        """ultralytics' model dict for a yaml; a bare yolo11n.yaml resolves to its cfg yolo11.yaml, scale n."""
        _import_torch_stack()
        from ultralytics.nn.tasks import yaml_model_load

        try:
            cfg = yaml_model_load(str(path))
        except Exception:
            raise ToolError(f"--pt {path}: model yaml not found or unreadable (neither a file nor an ultralytics model cfg like yolo11n.yaml)", EXIT_USAGE) from None
        if not isinstance(cfg, dict) or "backbone" not in cfg or "head" not in cfg:
            raise ToolError(f"--pt {path}: not an ultralytics model yaml (no backbone/head)", EXIT_USAGE)
        return cfg

    def _source_sha256(self, source: Path) -> str:
        """sha256 of the weights file; for a yaml, of the resolved model dict (scale included)."""
        if _is_model_yaml(source):
            cfg = self._load_yaml_cfg(source)
            return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
        return sha256_of_file(source)

    # -- export ----------------------------------------------------------------------------

    def load_detection_model(self, source: Path) -> Any:
        """The ultralytics DetectionModel from a checkpoint or a model yaml; ToolError if it is not one."""
        torch = _import_torch_stack()
        from ultralytics.nn.tasks import DetectionModel, guess_model_task, load_checkpoint

        if _is_model_yaml(source):
            cfg = self._load_yaml_cfg(source)
            task = guess_model_task(cfg)
            if task != "detect":
                raise ToolError(f"{source}: a {task} model, not a detection model; give a YOLO detection model", EXIT_USAGE)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_YAML_SEED)
                try:
                    model = DetectionModel(cfg, verbose=False)
                except Exception as error:
                    raise ToolError(f"{source}: cannot build the model ({type(error).__name__}: {error})", EXIT_USAGE) from None
            model.names = self._yaml_class_names(int(model.model[-1].nc))
        else:
            try:
                model, _ = load_checkpoint(str(source))
            except Exception as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise ToolError(f"{source} is not a loadable YOLO checkpoint ({type(error).__name__}{': ' + first[:160] if first else ''}); re-download or re-export it", EXIT_USAGE) from None
        self._check_detector(model, source)
        return model

    @staticmethod
    def _check_detector(model: Any, source: Path) -> None:
        from ultralytics.nn.modules.head import Detect

        layers = getattr(model, "model", None)
        head = layers[-1] if layers is not None and len(layers) else None
        task = getattr(model, "task", None)
        # Segment, Pose, OBB, YOLOE/World heads subclass Detect: accept the plain detectors only
        if head is None or not isinstance(head, Detect) or type(head).__name__ not in ("Detect", "v10Detect") or (task and task != "detect"):
            kind = task or type(head).__name__
            raise ToolError(f"{source}: a {kind} model (head {type(head).__name__}), not a YOLO detection model; give a detection .pt", EXIT_USAGE)

    def export(self, source: Path, target: Path, model_name: str, source_sha256: str) -> list[str]:
        """Export `source` (.pt or model yaml) to `target` in the DeepStream layout; returns class names."""
        _import_torch_stack()
        onnx, _ = _import_onnx_stack()
        try:
            import onnxslim
        except ImportError as error:
            raise ToolError(f"onnxslim is not installed ({error}); pip install onnxslim", EXIT_ENVIRONMENT) from None
        imgsz = self.options.imgsz
        bar = ProgressBar(f"export {model_name} {imgsz}")
        bar.update("load", 0, 4)
        model = self.load_detection_model(source)
        names = self._class_names(model)
        bar.update("trace + export (torch.onnx)", 1, 4)
        data = self.export_bytes(model, imgsz)
        del model
        bar.update("slim (onnxslim)", 2, 4)
        model_proto = onnx.load_from_string(data)
        del data
        try:
            model_proto = onnxslim.slim(model_proto)
        except Exception as error:  # the unslimmed graph is correct, only slower to parse
            notice(f"onnxslim failed ({type(error).__name__}: {error}); keeping the unslimmed graph")
        _set_metadata(model_proto, {
            META_LAYOUT: ONNX_LAYOUT,
            META_MODEL: model_name,
            META_IMGSZ: str(imgsz),
            META_NAMES: json.dumps(names),
            META_SOURCE: source.name,
            META_SOURCE_SHA256: source_sha256,
            META_TOOL_VERSION: TOOL_VERSION,
        })
        model_proto.producer_name = "auto_build_engine"
        model_proto.producer_version = TOOL_VERSION
        bar.update("write", 3, 4)
        atomic_write_bytes(target, model_proto.SerializeToString())
        bar.finish(f"wrote {target}")
        return names

    @staticmethod
    def _yaml_class_names(nc: int) -> dict[int, str]:
        """Random weights from a yaml: COCO names when nc is 80 (as for the official models), else classN."""
        if nc == 80:
            try:
                from ultralytics.utils import ROOT, YAML

                names = YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
                if len(names) == 80:
                    return {int(k): str(v) for k, v in names.items()}
            except Exception:
                pass
        return dict(enumerate(default_class_names(nc)))

    @staticmethod
    def _class_names(model: Any) -> list[str]:
        names = getattr(model, "names", None)
        nc = int(model.model[-1].nc)
        if isinstance(names, dict) and len(names) == nc:
            return [str(names[key]) for key in sorted(names)]
        if isinstance(names, (list, tuple)) and len(names) == nc:
            return [str(n) for n in names]
        notice(f"the model has {nc} classes but no matching names; using class0..class{nc - 1}")
        return default_class_names(nc)

    def export_bytes(self, model: Any, imgsz: int) -> bytes:
        """torch.onnx export (TorchScript exporter, opset 17) of a deep copy of `model` in our layout."""
        import copy
        import io
        import warnings

        import torch
        from ultralytics.nn.modules.block import C2f
        from ultralytics.nn.modules.head import Detect

        model = copy.deepcopy(model)  # every attribute below is set on our copy only
        for parameter in model.parameters():
            parameter.requires_grad = False
        model = model.float().eval()
        head = model.model[-1]
        if getattr(head, "one2one_cv2", None) is not None:
            if getattr(head, "cv2", None) is None:
                raise ToolError("this model has only an end-to-end (NMS-free) head; export needs the one-to-many head (nvinfer does the NMS)", EXIT_USAGE)
            head._end2end = False  # one-to-many branch: nvinfer cluster-mode=2 does the NMS
        model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
        for module in model.modules():
            if isinstance(module, Detect):
                module.export, module.format, module.dynamic = True, "onnx", False
                module.xyxy = True  # corners straight from the distance decode
                module.shape = None
            elif isinstance(module, C2f):
                module.forward = module.forward_split  # Split instead of Chunk: a cleaner graph
        model = model.to(self.device)

        class DeepStreamOutput(torch.nn.Module):
            """[B,4+nc,N] xyxy + class scores -> [B,N,6] x1,y1,x2,y2,score,class."""

            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, images: torch.Tensor) -> torch.Tensor:
                rows = self.inner(images).transpose(1, 2)
                score, class_id = rows[..., 4:].max(dim=-1, keepdim=True)
                return torch.cat((rows[..., :4], score, class_id.to(rows.dtype)), dim=-1)

        wrapper = DeepStreamOutput(model).eval()
        dummy = torch.zeros(1, 3, imgsz, imgsz, device=self.device)
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            # TorchScript-exporter deprecation and tracer notes about the head's shape cache: expected
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            wrapper(dummy)  # dry run: builds anchors, catches shape errors with a readable trace
            torch.onnx.export(
                wrapper, (dummy,), buffer,
                opset_version=ONNX_OPSET,
                input_names=[ONNX_INPUT_NAME], output_names=[ONNX_OUTPUT_NAME],
                dynamic_axes={ONNX_INPUT_NAME: {0: "batch"}, ONNX_OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
                dynamo=False,  # the dynamo exporter fails on these models
            )
        return buffer.getvalue()

    # -- a given ONNX ----------------------------------------------------------------------

    def _from_onnx(self, path: Path) -> OnnxModel:
        imgsz = self.options.imgsz
        model_proto = _load_onnx(path)
        layout = _graph_layout(model_proto, path)
        graph = model_proto.graph
        initializers = {init.name for init in graph.initializer}
        image_input = next(i for i in graph.input if i.name not in initializers)
        in_dims = _dims(image_input)
        for axis, label in ((2, "height"), (3, "width")):
            if not _is_dynamic(in_dims[axis]) and in_dims[axis] != imgsz:
                raise ToolError(f"{path}: input {label} is {in_dims[axis]} but --imgsz is {imgsz}; pass --imgsz {in_dims[axis]} or re-export at {imgsz}", EXIT_USAGE)
        meta = _read_metadata(model_proto)
        names = self._given_class_names(path, meta, layout, _dims(graph.output[0]))
        fix_hw = _is_dynamic(in_dims[2]) or _is_dynamic(in_dims[3])
        rename = image_input.name != ONNX_INPUT_NAME or graph.output[0].name != ONNX_OUTPUT_NAME
        if layout == "deepstream" and not fix_hw and not rename:
            return OnnxModel(path, meta.get(META_MODEL, path.stem), imgsz, names, "given")
        return self._adapt(path, model_proto, layout, names, fix_hw)

    def _given_class_names(self, path: Path, meta: dict[str, str], layout: str, out_dims: list[Any]) -> list[str]:
        nc = int(out_dims[1]) - 4 if layout == "ultralytics" else None
        names = _names_from_metadata(meta)
        origin = "the ONNX metadata"
        labels = path.with_name(LABELS_FILE_NAME)
        if names is None and labels.is_file():
            names, origin = read_labels(labels), str(labels)
        if names is None:
            count = nc if nc is not None else DEFAULT_CLASS_COUNT
            notice(f"{path} names no classes and has no {LABELS_FILE_NAME} next to it; using class0..class{count - 1}" + ("" if nc is not None else f" (assumed {count} classes)"))
            return default_class_names(count)
        if nc is not None and len(names) != nc:
            raise ToolError(f"{path}: the model has {nc} classes but {origin} names {len(names)}; fix {LABELS_FILE_NAME} or the export", EXIT_USAGE)
        return names

    def _adapt(self, path: Path, model_proto: Any, layout: str, names: list[str], fix_hw: bool) -> OnnxModel:
        """A copy in the DeepStream layout next to the given file (MODELS_DIR if that is read-only)."""
        imgsz = self.options.imgsz
        stem = path.name[: -len(".onnx")] if path.name.lower().endswith(".onnx") else path.name
        file_name = f"{stem}_{imgsz}{ONNX_SUFFIX}" if fix_hw else f"{stem}{ONNX_SUFFIX}"
        target = path.with_name(file_name)
        if not os.access(path.parent, os.W_OK | os.X_OK):
            _ensure_writable_dir(Path(self.options.models_dir), "MODELS_DIR")
            target = Path(self.options.models_dir) / file_name
        source_sha = sha256_of_file(path)
        meta = self._metadata_of(target)
        if meta and (meta.get(META_LAYOUT), meta.get(META_IMGSZ), meta.get(META_SOURCE_SHA256)) == (ONNX_LAYOUT, str(imgsz), source_sha):
            log(f"{target} already adapts {path}; using it", level=2)
            return OnnxModel(target, meta.get(META_MODEL, stem), imgsz, names, "adapted")
        graph = model_proto.graph
        initializers = {init.name for init in graph.initializer}
        image_input = next(i for i in graph.input if i.name not in initializers)
        if fix_hw:  # TensorRT then sees only the batch axis as dynamic
            for axis in (2, 3):
                dim = image_input.type.tensor_type.shape.dim[axis]
                dim.Clear()
                dim.dim_value = imgsz
            del graph.value_info[:]  # stale symbolic shapes; TensorRT infers them again
        _rename_value(graph, image_input.name, ONNX_INPUT_NAME)
        if layout == "ultralytics":
            _append_layout_adapter(model_proto)
        else:
            _rename_value(graph, graph.output[0].name, ONNX_OUTPUT_NAME)
        _set_metadata(model_proto, {
            META_LAYOUT: ONNX_LAYOUT,
            META_MODEL: stem,
            META_IMGSZ: str(imgsz),
            META_NAMES: json.dumps(names),
            META_SOURCE: path.name,
            META_SOURCE_SHA256: source_sha,
            META_TOOL_VERSION: TOOL_VERSION,
        })
        try:
            data = model_proto.SerializeToString()
        except ValueError:
            raise ToolError(f"{path} is over 2 GB (external data); export a smaller model or pass --pt", EXIT_USAGE) from None
        atomic_write_bytes(target, data)
        log(f"adapted {path} to the DeepStream layout: {target}")
        return OnnxModel(target, stem, imgsz, names, "adapted")

    # -- validate --------------------------------------------------------------------------

    def validate(self, path: Path, full: bool = True) -> None:
        """Checker, the input/output contract, and onnxruntime (CPU) at the profile batches.

        full=False runs the minimum batch only (a reused file passed all three when it was written).
        """
        onnx, ort = _import_onnx_stack()
        import numpy as np

        options = self.options
        imgsz = options.imgsz
        bar = ProgressBar(f"validate {path.name}")
        bar.update("onnx.checker")
        try:
            onnx.checker.check_model(str(path))  # path form: also works past the 2 GB protobuf limit
        except Exception as error:
            raise ToolError(f"{path} fails the ONNX checker ({str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__}); export it again", EXIT_USAGE) from None
        model_proto = _load_onnx(path, load_external_data=False)
        graph = model_proto.graph
        initializers = {init.name for init in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or inputs[0].name != ONNX_INPUT_NAME or len(graph.output) != 1 or graph.output[0].name != ONNX_OUTPUT_NAME:
            raise ToolError(f"{path}: expected one input {ONNX_INPUT_NAME!r} and one output {ONNX_OUTPUT_NAME!r}, found {[i.name for i in inputs]} -> {[o.name for o in graph.output]}", EXIT_USAGE)
        float32 = onnx.TensorProto.FLOAT
        in_dims, out_dims = _dims(inputs[0]), _dims(graph.output[0])
        if inputs[0].type.tensor_type.elem_type != float32 or graph.output[0].type.tensor_type.elem_type != float32:
            raise ToolError(f"{path}: input and output must be float32", EXIT_USAGE)
        if len(in_dims) != 4 or not _is_dynamic(in_dims[0]) or in_dims[1:] != [3, imgsz, imgsz]:
            raise ToolError(f"{path}: input shape {in_dims} is not [batch,3,{imgsz},{imgsz}] with only the batch dynamic", EXIT_USAGE)
        if len(out_dims) != 3 or out_dims[2] != 6 or not _is_dynamic(out_dims[0]):
            raise ToolError(f"{path}: output shape {out_dims} is not [batch,N,6]", EXIT_USAGE)
        del model_proto
        batches = sorted({options.min_batch, options.opt_batch, options.max_batch}) if full else [options.min_batch]
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ToolError(f"{path}: onnxruntime cannot load it ({type(error).__name__}); export it again", EXIT_USAGE) from None
        rng = np.random.default_rng(0)
        anchors = out_dims[1] if not _is_dynamic(out_dims[1]) else None
        baseline, per_image, checked = _rss_bytes(), 0, []
        for done, batch in enumerate(batches):
            available = _available_memory_bytes()
            if checked and per_image and available is not None and per_image * batch > 0.8 * available:
                # yolo11x at 1280 needs about 1 GB of host RAM per image on onnxruntime CPU
                notice(f"onnxruntime check at batch {batch} skipped: it needs about {per_image * batch >> 20} MiB, {available >> 20} MiB available (TensorRT still builds the profile up to --max-batch {options.max_batch})")
                break
            bar.update(f"onnxruntime batch {batch}", done, len(batches))
            images = rng.random((batch, 3, imgsz, imgsz), dtype=np.float32)
            try:
                (output,) = session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: images})
            except Exception as error:
                raise ToolError(f"{path}: onnxruntime failed at batch {batch} ({type(error).__name__}: {str(error).strip().splitlines()[0][:160] if str(error).strip() else ''}); export it again", EXIT_USAGE) from None
            anchors = anchors or output.shape[1]
            if output.shape != (batch, anchors, 6) or output.dtype != np.float32:
                raise ToolError(f"{path}: onnxruntime output at batch {batch} is {list(output.shape)} {output.dtype}, expected [{batch},{anchors},6] float32", EXIT_USAGE)
            if not np.isfinite(output).all():
                raise ToolError(f"{path}: onnxruntime output at batch {batch} has NaN/Inf; export it again", EXIT_USAGE)
            checked.append(batch)
            # onnxruntime's arena keeps what the run needed, so resident growth approximates its peak
            per_image = max(per_image, (_rss_bytes() - baseline) // batch)
        bar.finish(f"valid: [B,3,{imgsz},{imgsz}] -> [B,{anchors},6], onnxruntime batches {','.join(map(str, checked))}")


# --------------------------------------------------------------------------------------------
# 3. Build: EngineBuilder and the engine cache
# --------------------------------------------------------------------------------------------

class EngineBuilder:
    """Not built yet (issue: EngineBuilder and the engine cache)."""

    def __init__(self, options: Options) -> None:
        self.options = options

    def ensure(self) -> Any:
        raise ToolError("building the TensorRT engine is not built yet", EXIT_BUILD_FAILED)


# --------------------------------------------------------------------------------------------
# 4. Configure: DeepStreamConfig
# --------------------------------------------------------------------------------------------

class DeepStreamConfig:
    """Not built yet (issue: DeepStreamConfig and the YOLO bbox parser)."""


# --------------------------------------------------------------------------------------------
# 5. CLI
# --------------------------------------------------------------------------------------------

@dataclass
class Options:
    pt: Path | None = None
    onnx: Path | None = None
    model: str = "yolo11x"
    imgsz: int = 1280
    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 16
    precision: str = "auto"
    workspace_mb: int = 8192
    engine_dir: Path = Path("/app/engines/tensorrt")
    models_dir: Path = Path("/app/engines/models")
    config_dir: Path = Path("/app/configs")
    gpu_id: int = 0
    num_sources: int = 1
    nms_iou_threshold: float = 0.45
    pre_cluster_threshold: float = 0.25
    topk: int = 300
    force: bool = False
    check: bool = False
    info: bool = False
    json: bool = False
    dry_run: bool = False
    verbosity: int = 1


MAX_BATCH_LIMIT = 64
MAX_IMGSZ = 4096


class _ArgumentParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; we want exactly one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ToolError(f"{message}; see --help")


def _int_in(flag: str, low: int, high: int, multiple: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ToolError(f"{flag}: {text!r} is not an integer (accepted: {low}..{high})") from None
        if not low <= value <= high or value % multiple:
            extra = f", a multiple of {multiple}" if multiple > 1 else ""
            raise ToolError(f"{flag}: {value} is out of range (accepted: {low}..{high}{extra})")
        return value

    return parse


def _float_in(flag: str, low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise ToolError(f"{flag}: {text!r} is not a number (accepted: {low}..{high})") from None
        if not low <= value <= high:
            raise ToolError(f"{flag}: {value} is out of range (accepted: {low}..{high})")
        return value

    return parse


def _choice(flag: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = str(text).strip().lower()
        if value not in choices:
            raise ToolError(f"{flag}: {text!r} is not one of {', '.join(choices)}")
        return value

    return parse


# flag, env twin, Options field, parser, help
_VALUE_FLAGS: tuple[tuple[str, str | None, str, Callable[[str], Any], str], ...] = (
    ("--pt", "PT_PATH", "pt", Path, "weights to export (a bare name like yolo11x.pt is downloaded if absent)"),
    ("--onnx", "ONNX_PATH", "onnx", Path, "use this ONNX instead of exporting"),
    ("--model", "MODEL", "model", str, "model used when neither --pt nor --onnx is given (default yolo11x)"),
    ("--imgsz", "IMGSZ", "imgsz", _int_in("--imgsz", 32, MAX_IMGSZ, 32), "square input size, multiple of 32 (default 1280)"),
    ("--min-batch", "MIN_BATCH", "min_batch", _int_in("--min-batch", 1, MAX_BATCH_LIMIT), "profile minimum batch (default 1)"),
    ("--opt-batch", "OPT_BATCH", "opt_batch", _int_in("--opt-batch", 1, MAX_BATCH_LIMIT), "profile optimum batch (default 4)"),
    ("--max-batch", "MAX_BATCH", "max_batch", _int_in("--max-batch", 1, MAX_BATCH_LIMIT), f"profile maximum batch, at most {MAX_BATCH_LIMIT} (default 16)"),
    ("--precision", "PRECISION", "precision", _choice("--precision", ("auto", "fp16", "fp32")), "auto = FP16 where the GPU is fast at it (default auto)"),
    ("--workspace", "WORKSPACE_MB", "workspace_mb", _int_in("--workspace", 1, 1 << 20), "builder workspace in MB, capped to free GPU memory (default 8192)"),
    ("--engine-dir", "ENGINE_DIR", "engine_dir", Path, "engines, sidecars, timing caches, lock (default /app/engines/tensorrt)"),
    ("--models-dir", "MODELS_DIR", "models_dir", Path, "downloaded weights and exported ONNX (default /app/engines/models)"),
    ("--config-dir", "CONFIG_DIR", "config_dir", Path, "generated nvinfer config and labels (default /app/configs)"),
    ("--gpu-id", "GPU_ID", "gpu_id", _int_in("--gpu-id", 0, 63), "GPU to build for (default 0)"),
    ("--num-sources", "NUM_SOURCES", "num_sources", _int_in("--num-sources", 1, MAX_BATCH_LIMIT), "DeepStream batch-size written to the config, <= max batch (default 1)"),
    ("--nms-iou-threshold", "NMS_IOU_THRESHOLD", "nms_iou_threshold", _float_in("--nms-iou-threshold", 0.0, 1.0), "nvinfer NMS IoU threshold (default 0.45)"),
    ("--pre-cluster-threshold", "PRE_CLUSTER_THRESHOLD", "pre_cluster_threshold", _float_in("--pre-cluster-threshold", 0.0, 1.0), "score threshold before NMS (default 0.25)"),
    ("--topk", "TOPK", "topk", _int_in("--topk", 1, 100000), "boxes kept per frame after NMS (default 300)"),
)


def _metavar(dest: str) -> str:
    if dest in ("pt", "onnx"):
        return "PATH"
    if dest.endswith("_dir"):
        return "DIR"
    if dest in ("model", "precision"):
        return dest.upper()
    return "MB" if dest == "workspace_mb" else "N"


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="auto_build_engine.py",
        description="Detect the GPU, export YOLO11 to ONNX, build a TensorRT engine for this GPU and write the DeepStream nvinfer config. Without --force it builds only when no valid engine exists.",
        epilog="Exit codes: 0 done; 1 build failed (with --check: a build is needed); 2 bad usage or input; 3 environment missing (no GPU/driver, no TensorRT); 130/143 interrupted. Every option also reads the environment variable named in brackets.",
    )
    for flag, env, dest, _, help_text in _VALUE_FLAGS:
        parser.add_argument(flag, dest=dest, metavar=_metavar(dest), help=f"{help_text} [{env}]", default=None)
    parser.add_argument("--force", action="store_true", help="rebuild even if a valid engine exists")
    parser.add_argument("--check", action="store_true", help="exit 0 if a valid engine + config exist, 1 if a build is needed; writes nothing")
    parser.add_argument("--info", action="store_true", help="print the system report and exit")
    parser.add_argument("--json", action="store_true", help="with --info: machine-readable JSON")
    parser.add_argument("--dry-run", action="store_true", help="everything except the TensorRT build: find/export/validate the ONNX, print the plan")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less output")
    return parser


def parse_options(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Options:
    """CLI flags win over their environment twins, which win over the defaults."""
    environ = dict(os.environ if environ is None else environ)
    namespace = build_parser().parse_args(argv)
    options = Options()
    for flag, env, dest, convert, _ in _VALUE_FLAGS:
        raw = getattr(namespace, dest)
        source = flag
        if raw is None and env and environ.get(env, "").strip():
            raw, source = environ[env], f"{env} (for {flag})"
        if raw is None:
            continue
        try:
            value = convert(raw)
        except ToolError as error:
            raise ToolError(str(error).replace(flag, source, 1)) from None
        setattr(options, dest, value)
    for name in ("force", "check", "info", "json", "dry_run"):
        setattr(options, name, getattr(namespace, name))
    options.verbosity = max(0, 1 + namespace.verbose - namespace.quiet)
    validate_options(options)
    return options


def validate_options(options: Options) -> None:
    if options.pt and options.onnx:
        raise ToolError("--pt and --onnx are exclusive (PT_PATH/ONNX_PATH too): give one model source")
    if not options.min_batch <= options.opt_batch <= options.max_batch:
        raise ToolError(f"batch profile must satisfy min <= opt <= max (got --min-batch {options.min_batch}, --opt-batch {options.opt_batch}, --max-batch {options.max_batch})")
    if options.num_sources > options.max_batch:
        raise ToolError(f"--num-sources {options.num_sources} exceeds --max-batch {options.max_batch}: raise MAX_BATCH or use fewer sources")
    if options.json and not options.info:
        raise ToolError("--json goes with --info")
    exclusive = [name for name in ("check", "info", "dry_run") if getattr(options, name)]
    if len(exclusive) > 1:
        raise ToolError(f"--{exclusive[0].replace('_', '-')} and --{exclusive[1].replace('_', '-')} are exclusive")
    if options.force and (options.check or options.info):
        raise ToolError("--force cannot be combined with --check or --info")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", options.model):
        raise ToolError(f"--model {options.model!r}: use a plain model name like yolo11x (letters, digits, . _ -)")
    for flag, path in (("--pt", options.pt), ("--onnx", options.onnx)):
        if path is not None and not str(path).strip():
            raise ToolError(f"{flag}: empty path")


def run_info(options: Options) -> int:
    info = SystemInfo.detect(import_tensorrt=True)
    if options.json:
        print(json.dumps(info.as_json(), indent=2, sort_keys=True))
    else:
        print(info.as_table())
    # the report is complete either way; no GPU is still an environment problem for callers
    return EXIT_OK if info.gpus else EXIT_ENVIRONMENT


def main(argv: Sequence[str] | None = None) -> int:
    global _VERBOSITY
    try:
        options = parse_options(argv)
        _VERBOSITY = options.verbosity
        if options.info:
            return run_info(options)
        return EngineBuilder(options).ensure()
    except ToolError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(main())
