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

class YOLOExporter:
    """Not built yet (issue: YOLOExporter)."""

    def __init__(self, options: Options) -> None:
        self.options = options

    def resolve(self) -> Any:
        raise ToolError("finding/exporting the ONNX is not built yet", EXIT_BUILD_FAILED)


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
