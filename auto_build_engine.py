#!/usr/bin/env python3
"""Build the right TensorRT engine for this GPU once, then hand DeepStream a matching config.

Flow, top to bottom: options and the CLI table -> detect (SystemInfo) -> find/export the ONNX
(YOLOExporter) -> build the engine (EngineBuilder, cache, fleet store) -> write the nvinfer config
(DeepStreamConfig) -> benchmark -> main (the run modes).

Heavy modules (tensorrt, torch, ultralytics, onnx, onnxruntime, pycuda, pynvml) are imported
inside the functions that need them, so `-h`, `--check` and the warm start never pay for them.
"""

from __future__ import annotations

import os
import signal

if __name__ == "__main__":  # until main() takes over: a signal during start-up exits 130/143 in one line

    def _early_interrupt(number: int, _frame: object) -> None:
        os.write(2, b"error: interrupted while starting; nothing was written\n")
        os._exit(128 + number)

    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, _early_interrupt)

import argparse
import contextlib
import dataclasses
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

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
        self._announced: set[str] = set()
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
            elif (changed and phase not in self._announced) or time.monotonic() - self._last_plain >= self.heartbeat_s:
                # each phase once (TensorRT alternates nested phases) plus a heartbeat: readable logs
                self._announced.add(phase)
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


class Timeline:
    """Where a first start spends its time, phase by phase (printed at the end, kept in the sidecar).

    Phases nest: a phase's own figure excludes the phases run inside it, so the figures add
    up to the total (e.g. "find/download" holds the export phase, which is counted apart).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.phases: list[list[Any]] = []  # [name, seconds], in the order they first ran
        self._inner: list[float] = []
        self.started = time.monotonic()

    def add(self, name: str, seconds: float) -> None:
        for entry in self.phases:
            if entry[0] == name:
                entry[1] += seconds
                return
        self.phases.append([name, seconds])

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.add(name, 0.0)  # listed in the order the phases start
        began = time.monotonic()
        self._inner.append(0.0)
        try:
            yield
        finally:
            inner = self._inner.pop()
            spent = time.monotonic() - began
            self.add(name, spent - inner)
            if self._inner:
                self._inner[-1] += spent

    def as_json(self) -> list[dict[str, Any]]:
        return [{"phase": name, "seconds": round(seconds, 2)} for name, seconds in self.phases]

    def line(self) -> str:
        total = time.monotonic() - self.started
        return " | ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases) + f" | total {total:.1f} s"


TIMELINE = Timeline()  # reset by each run that may build


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


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes | memoryview, before_replace: Callable[[], None] | None = None) -> None:
    """One file through install_files(): temp file in the same directory, fsync, os.replace.

    `before_replace` runs after the data is durable and before the rename. The file gets the mode
    a plain open() would give (0666 minus the umask), not mkstemp's 0600: with umask 0002/0007/0027
    other uids of the volume's group can read (or replace) engines and sidecars.
    """
    install_files([(Path(path), data)], before_replace=before_replace)


def _move_directory_aside(path: Path) -> None:
    """A directory where a file belongs (a bad bind mount, a stray mkdir) must not block every start:
    an empty one is removed, a non-empty one renamed aside (its content is not ours to delete)."""
    if path.is_symlink() or not path.is_dir():
        return
    try:
        path.rmdir()
        notice(f"removed the empty directory {path} that stood where a file belongs")
        return
    except OSError:
        pass
    aside = path.with_name(f"{path.name}.moved-aside-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    notice(f"{path} was a directory; moved it to {aside}")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class NotRegularFileError(OSError):
    """A FIFO, socket or device stands where the tool reads a file; `strerror` says which ("a FIFO")."""


def _file_kind(mode: int) -> str:
    import stat

    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular_file(path: Path) -> int:
    """A read-only descriptor of `path` (symlinks followed), which must be a regular file: anything else
    is never opened, because reading a FIFO waits for a writer forever (a hung start and healthcheck)
    and opening a device can act on it. The type is checked before the open and again on the open
    descriptor (O_NONBLOCK: a FIFO swapped in between does not block). Raises FileNotFoundError,
    PermissionError, IsADirectoryError or NotRegularFileError."""
    import errno
    import stat

    def refuse(mode: int) -> OSError:
        if stat.S_ISDIR(mode):
            return IsADirectoryError(errno.EISDIR, _file_kind(mode), str(path))
        return NotRegularFileError(errno.EINVAL, _file_kind(mode), str(path))

    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise refuse(mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise refuse(mode)
    return fd


def read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file (see open_regular_file: a FIFO or device there raises, never blocks)."""
    with os.fdopen(open_regular_file(path), "rb") as handle:
        return handle.read()


def sha256_of_file(path: Path, chunk: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with os.fdopen(open_regular_file(path), "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _run_quietly(argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str]:
    """Run a probe command; (returncode, stdout). Missing binaries give (127, '')."""
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return 127, ""
    except (OSError, subprocess.TimeoutExpired) as error:
        return 126, str(error)
    return done.returncode, done.stdout


# --------------------------------------------------------------------------------------------
# 1. Options and the command line
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
    validate: str = "quick"  # "full": also onnxruntime at min/opt/max batch on the CPU
    force: bool = False
    check: bool = False
    check_env: bool = False  # --check-env: parse and validate the options/environment, nothing else
    info: bool = False
    json: bool = False
    dry_run: bool = False
    verbosity: int = 1
    benchmark: bool = False
    batches: str | None = None
    seconds: float = 5.0
    compare_trtexec: bool = False
    engine_store: str | None = None
    engine_store_mode: str = "readwrite"
    explicit: set[str] = field(default_factory=set)  # fields set by a flag or env var: read only by the CLI layer
    num_sources_given: bool = (
        False  # NUM_SOURCES/--num-sources was given (else a config's batch-size is kept); set by parse_options
    )
    deep: bool = False
    resolved_source: Path | None = None  # the --pt/--onnx file as located, set once by given_model_file


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


STORE_MODES = ("readwrite", "pull")


def parse_store_url(text: str) -> str:
    """`s3://bucket[/prefix]` or `file:///absolute/path`; anything else is bad usage (exit 2)."""
    value = str(text).strip().rstrip("/")
    if value.startswith("s3://"):
        bucket = value[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise ToolError(f"--engine-store {text!r}: {bucket!r} is not an S3 bucket name; use s3://bucket/prefix")
        return value
    if value.startswith("file://"):
        if not value[7:].startswith("/"):
            raise ToolError(f"--engine-store {text!r}: use an absolute path, file:///shared/engines")
        return value
    raise ToolError(f"--engine-store {text!r}: use s3://bucket/prefix (AWS S3, MinIO, Ceph) or file:///path")


# flag, env twin, Options field, parser, help
_VALUE_FLAGS: tuple[tuple[str, str | None, str, Callable[[str], Any], str], ...] = (
    ("--pt", "PT_PATH", "pt", Path, "weights to export (a bare name like yolo11x.pt is downloaded if absent)"),
    ("--onnx", "ONNX_PATH", "onnx", Path, "use this ONNX instead of exporting"),
    ("--model", "MODEL", "model", str, "model used when neither --pt nor --onnx is given (default yolo11x)"),
    (
        "--imgsz",
        "IMGSZ",
        "imgsz",
        _int_in("--imgsz", 32, MAX_IMGSZ, 32),
        "square input size, multiple of 32; of 64 for a P6 model (default 1280)",
    ),
    (
        "--min-batch",
        "MIN_BATCH",
        "min_batch",
        _int_in("--min-batch", 1, MAX_BATCH_LIMIT),
        "profile minimum batch (default 1)",
    ),
    (
        "--opt-batch",
        "OPT_BATCH",
        "opt_batch",
        _int_in("--opt-batch", 1, MAX_BATCH_LIMIT),
        "profile optimum batch (default 4)",
    ),
    (
        "--max-batch",
        "MAX_BATCH",
        "max_batch",
        _int_in("--max-batch", 1, MAX_BATCH_LIMIT),
        f"profile maximum batch, at most {MAX_BATCH_LIMIT} (default 16)",
    ),
    (
        "--precision",
        "PRECISION",
        "precision",
        _choice("--precision", ("auto", "fp16", "fp32")),
        "auto = FP16 where the GPU is fast at it (default auto)",
    ),
    (
        "--workspace",
        "WORKSPACE_MB",
        "workspace_mb",
        _int_in("--workspace", 1, 1 << 20),
        "builder workspace in MB, capped to free GPU memory (default 8192)",
    ),
    (
        "--engine-dir",
        "ENGINE_DIR",
        "engine_dir",
        Path,
        "engines, sidecars, timing caches, lock (default /app/engines/tensorrt)",
    ),
    (
        "--models-dir",
        "MODELS_DIR",
        "models_dir",
        Path,
        "downloaded weights and exported ONNX (default /app/engines/models)",
    ),
    ("--config-dir", "CONFIG_DIR", "config_dir", Path, "generated nvinfer config and labels (default /app/configs)"),
    ("--gpu-id", "GPU_ID", "gpu_id", _int_in("--gpu-id", 0, 63), "GPU to build for (default 0)"),
    (
        "--num-sources",
        "NUM_SOURCES",
        "num_sources",
        _int_in("--num-sources", 1, MAX_BATCH_LIMIT),
        "DeepStream batch-size written to the config, <= max batch (default 1)",
    ),
    (
        "--nms-iou-threshold",
        "NMS_IOU_THRESHOLD",
        "nms_iou_threshold",
        _float_in("--nms-iou-threshold", 0.0, 1.0),
        "nvinfer NMS IoU threshold (default 0.45)",
    ),
    (
        "--pre-cluster-threshold",
        "PRE_CLUSTER_THRESHOLD",
        "pre_cluster_threshold",
        _float_in("--pre-cluster-threshold", 0.0, 1.0),
        "score threshold before NMS (default 0.25)",
    ),
    ("--topk", "TOPK", "topk", _int_in("--topk", 1, 100000), "boxes kept per frame after NMS (default 300)"),
    (
        "--validate",
        "VALIDATE",
        "validate",
        _choice("--validate", ("quick", "full")),
        "ONNX check on the CPU: quick = batch 1 on a real image (the engine's reference); full = also min/opt/max "
        "batch, for machines without a GPU (default quick)",
    ),
    (
        "--engine-store",
        "ENGINE_STORE",
        "engine_store",
        parse_store_url,
        "share engines across a fleet: s3://bucket/prefix (AWS_* variables and ~/.aws files) or file:///path "
        "(default: off)",
    ),
    (
        "--engine-store-mode",
        "ENGINE_STORE_MODE",
        "engine_store_mode",
        _choice("--engine-store-mode", STORE_MODES),
        "readwrite, or pull for read-only credentials: never publish (default readwrite)",
    ),
)


# The on/off flags (no environment twins): one table for the parser and for parse_options.
_SWITCHES: tuple[tuple[str, str], ...] = (
    ("--force", "rebuild even if a valid engine exists"),
    ("--check", "exit 0 if a valid engine + config exist, 1 if a build is needed; writes nothing"),
    (
        "--check-env",
        "only validate the options and environment variables with the rules of a run (silent when valid, one "
        "line and exit 2 when not); imports nothing heavy, touches no GPU",
    ),
    (
        "--deep",
        "with --check (or a plain run): also verify the engine's sha256 against its sidecar (reads the whole "
        "engine; the first --check of each engine does it anyway)",
    ),
    ("--info", "print the system report and exit"),
    ("--json", "with --info: machine-readable JSON"),
    ("--dry-run", "everything except the TensorRT build: find/export/validate the ONNX, print the plan"),
    ("--benchmark", "time the current valid engine on this GPU (never builds)"),
    ("--compare-trtexec", "with --benchmark: also run trtexec --loadEngine for the same batch sizes"),
)


def _metavar(dest: str) -> str:
    if dest in ("pt", "onnx"):
        return "PATH"
    if dest.endswith("_dir"):
        return "DIR"
    if dest in ("model", "precision", "validate"):
        return dest.upper()
    if dest.startswith("engine_store"):
        return "MODE" if dest.endswith("mode") else "URL"
    return "MB" if dest == "workspace_mb" else "N"


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="auto_build_engine.py",
        description="Detect the GPU, export YOLO11 to ONNX, build a TensorRT engine for this GPU and write the "
        "DeepStream nvinfer config. Without --force it builds only when no valid engine exists.",
        epilog="Exit codes: 0 done; 1 build failed (with --check: a build is needed); 2 bad usage or input; 3 "
        "environment missing (no GPU/driver, no TensorRT); 130/143 interrupted. Every option also reads the "
        "environment variable named in brackets.",
    )
    for flag, env, dest, _, help_text in _VALUE_FLAGS:
        parser.add_argument(flag, dest=dest, metavar=_metavar(dest), help=f"{help_text} [{env}]", default=None)
    for flag, help_text in _SWITCHES:
        parser.add_argument(flag, action="store_true", help=help_text)
    parser.add_argument(
        "--batches",
        metavar="LIST",
        help="with --benchmark: batch sizes, e.g. 1,4,8,16 (default: those of 1,4,8,16 in the engine profile)",
    )
    parser.add_argument(
        "--seconds",
        metavar="S",
        type=str,
        default=None,
        help="with --benchmark: timed seconds per batch size (default 5)",
    )
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
        if not str(raw).strip():  # an empty env twin is unset (above); on the command line it is a mistake
            raise ToolError(f"{flag}: empty value; give a value or leave {flag} out for the default")
        try:
            value = convert(raw)
        except ToolError as error:
            raise ToolError(str(error).replace(flag, source, 1)) from None
        if convert is Path:  # paths end up in the nvinfer config: UTF-8, no line breaks, no control characters
            _validate_path(source, value)
            check_config_text(source, raw)
        setattr(options, dest, value)
        options.explicit.add(dest)
    if environ.get(PARSER_LIB_ENV):  # goes into the nvinfer config too: refuse it before anything is built
        check_config_text(PARSER_LIB_ENV, environ[PARSER_LIB_ENV])
    for name in [flag[2:].replace("-", "_") for flag, _ in _SWITCHES] + ["batches"]:
        setattr(options, name, getattr(namespace, name))
    if namespace.seconds is not None:
        options.seconds = _float_in("--seconds", 0.001, 3600.0)(namespace.seconds)
    options.verbosity = max(0, 1 + namespace.verbose - namespace.quiet)
    options.num_sources_given = "num_sources" in options.explicit
    validate_options(options)
    return options


def validate_options(options: Options) -> None:
    if options.pt and options.onnx:
        raise ToolError("--pt and --onnx are exclusive (PT_PATH/ONNX_PATH too): give one model source")
    if not options.min_batch <= options.opt_batch <= options.max_batch:
        raise ToolError(
            f"batch profile must satisfy min <= opt <= max (got --min-batch {options.min_batch}, --opt-batch "
            f"{options.opt_batch}, --max-batch {options.max_batch})"
        )
    if options.num_sources > options.max_batch:
        raise ToolError(
            f"--num-sources {options.num_sources} exceeds --max-batch {options.max_batch}: raise MAX_BATCH or use "
            "fewer sources"
        )
    if options.json and not (options.info or options.benchmark):
        raise ToolError("--json goes with --info or --benchmark")
    if (options.batches is not None or options.compare_trtexec) and not options.benchmark:
        raise ToolError("--batches and --compare-trtexec go with --benchmark")
    exclusive = [name for name in ("check", "check_env", "info", "dry_run", "benchmark") if getattr(options, name)]
    if len(exclusive) > 1:
        raise ToolError(f"--{exclusive[0].replace('_', '-')} and --{exclusive[1].replace('_', '-')} are exclusive")
    if options.deep and (options.info or options.dry_run or options.benchmark):
        raise ToolError("--deep goes with --check or a plain run")
    if options.force and (options.check or options.info):
        raise ToolError("--force cannot be combined with --check or --info")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", options.model):
        raise ToolError(f"--model {options.model!r}: use a plain model name like yolo11x (letters, digits, . _ -)")
    for flag, path in (("--pt", options.pt), ("--onnx", options.onnx)):
        if path is not None and not str(path).strip():
            raise ToolError(f"{flag}: empty path")
    if len(options.model) > MAX_MODEL_LABEL:
        raise ToolError(f"--model: the name has {len(options.model)} characters; use at most {MAX_MODEL_LABEL}")
    for flag, path in (
        ("--pt", options.pt),
        ("--onnx", options.onnx),
        ("--engine-dir", options.engine_dir),
        ("--models-dir", options.models_dir),
        ("--config-dir", options.config_dir),
    ):
        if path is not None:
            _validate_path(flag, Path(path))
    try:
        timeout = float(os.environ.get(LOCK_TIMEOUT_ENV) or DEFAULT_LOCK_TIMEOUT_S)
    except ValueError:
        timeout = -1.0
    if not 0 <= timeout < float("inf"):
        raise ToolError(
            f"{LOCK_TIMEOUT_ENV} must be a number of seconds (e.g. {DEFAULT_LOCK_TIMEOUT_S:.0f}), got "
            f"{os.environ.get(LOCK_TIMEOUT_ENV)!r}"
        )
    if (options.pt or options.onnx) and len(model_label(options)) > MAX_MODEL_LABEL:
        flag = "--onnx" if options.onnx else "--pt"
        raise ToolError(
            f"{flag}: the file name gives a model name of {len(model_label(options))} characters, too long for the "
            f"engine file name; rename it to at most {MAX_MODEL_LABEL} characters"
        )


MAX_MODEL_LABEL = 100  # the engine name adds ~70 characters; a file name may have 255 bytes
MAX_PATH_BYTES = 3000  # PATH_MAX is 4096: leave room for the file names below a directory


def validate_paths_before_work(options: Options) -> None:
    """Before any check, log line or build: the given model file exists and the three directories
    are (or can become) directories, so bad paths give one line and exit 2, never a half-done run."""
    if options.pt or options.onnx:
        locate_model_files(options)  # ToolError (exit 2) when an explicit file is missing
    for name, path in (
        ("ENGINE_DIR", options.engine_dir),
        ("CONFIG_DIR", options.config_dir),
        ("MODELS_DIR", options.models_dir),
    ):
        probe = Path(path).absolute()
        while not os.path.lexists(probe) and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            what = (
                "is not a directory"
                if probe == Path(path).absolute()
                else f"cannot be created: {probe} is not a directory"
            )
            raise ToolError(f"{name} {path} {what}; set {name} to a directory (a volume mount point)")


def _validate_path(flag: str, path: Path) -> None:
    """Paths the run will write or read: UTF-8 (they go into the config), no part over NAME_MAX."""
    text = str(path)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError(
            f"{flag}: {text.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8 (nvinfer's config is UTF-8); "
            "use a UTF-8 path"
        ) from None
    if len(encoded) > MAX_PATH_BYTES:
        raise ToolError(f"{flag}: the path has {len(encoded)} bytes; use a path of at most {MAX_PATH_BYTES}")
    for part in path.parts:
        if len(part.encode("utf-8")) > 255:
            raise ToolError(
                f"{flag}: a path component has {len(part.encode('utf-8'))} bytes (at most 255); use a shorter name"
            )


# --------------------------------------------------------------------------------------------
# 2. Detect: SystemInfo
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


def sm_name(compute_capability: str) -> str:
    """The "sm89" of compute capability "8.9", as in engine and timing-cache names."""
    return "sm" + compute_capability.replace(".", "")


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
            gpus.append(
                GpuInfo(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    memory_total_mib=int(memory.total) // (1 << 20),
                    memory_free_mib=int(memory.free) // (1 << 20),
                    compute_capability=f"{major}.{minor}",
                )
            )
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
            gpus.append(
                GpuInfo(int(parts[0]), parts[1], parts[2], int(float(parts[3])), int(float(parts[4])), parts[5])
            )
        except ValueError:
            continue
        driver = parts[6]
    _, header = _run_quietly(["nvidia-smi"])
    match = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    return gpus, driver, match.group(1) if match else ""


def probe_cuda_toolkit(run_nvcc: bool = True) -> str:
    """Toolkit CUDA from version.json (CUDA >= 11.1), else `nvcc --version`. Raises RuntimeError."""
    cuda_home = Path(os.environ.get("CUDA_HOME") or DEFAULT_CUDA_HOME)
    try:
        data = json.loads((cuda_home / "version.json").read_text())
        return str(data["cuda"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not run_nvcc:  # the warm path does not spend a process start on a line of the report
        raise RuntimeError(f"{cuda_home}/version.json missing (nvcc not asked on the warm path)")
    import shutil

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


_TRT_DIST_NAMES = {
    "tensorrt",
    "tensorrt_cu13",
    "tensorrt_cu12",
    "tensorrt_cu11",
    "tensorrt_cu13_bindings",
    "tensorrt_cu12_bindings",
    "tensorrt_bindings",
    "tensorrt_libs",
    "tensorrt_cu12_libs",
    "tensorrt_cu13_libs",
}
_LIBNVINFER_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/tensorrt/lib", "/usr/lib64")


def _tensorrt_version_from_dist_dirs() -> str | None:
    """Scan sys.path for `tensorrt-<ver>.dist-info` / `.egg-info` names: one listdir per entry.

    importlib.metadata would answer too, but importing it costs more than the whole check.
    """
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+?)-(\d+(?:\.\d+)+)(?:[-.][^/]*)?\.(?:dist|egg)-info", name)
            if match and match.group(1).lower().replace("-", "_").replace(".", "_") in _TRT_DIST_NAMES:
                return match.group(2)
    return None


def probe_tensorrt_version_cheap() -> str:
    """TensorRT version without `import tensorrt`: package metadata, then libnvinfer's file name.

    The warm path uses this; importing tensorrt costs about a second and loads CUDA.
    """
    version = _tensorrt_version_from_dist_dirs()
    if version:
        return version
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
    def detect(cls, import_tensorrt: bool = False, warm: bool = False) -> SystemInfo:
        """Run every probe; each failure is recorded with its reason, never raised.

        `warm` skips what costs a process start (nvcc) or an import (tensorrt).
        """
        info = cls()
        info._detect_gpus()
        info.cuda_toolkit_version = info._soft("cuda_toolkit", lambda: probe_cuda_toolkit(run_nvcc=not warm))
        info.deepstream_version = info._soft("deepstream", probe_deepstream)
        info.tensorrt_version = info._soft("tensorrt", probe_tensorrt_version_cheap)
        if import_tensorrt or (info.tensorrt_version is None and not warm):
            info.import_tensorrt_version()
        return info

    def import_tensorrt_version(self) -> str | None:
        """The version `import tensorrt` reports, which wins over the cheap probe: an unusual install
        may have no package metadata and no libnvinfer file where we look, yet import."""
        imported = self._soft("tensorrt_import", probe_tensorrt_version_import)
        if imported:
            self.tensorrt_version = imported
            self.missing.pop("tensorrt", None)
        elif self.tensorrt_version is None:
            self.missing["tensorrt"] = "TensorRT not found (no package metadata, no libnvinfer, import failed)"
        self.missing.pop("tensorrt_import", None)
        return self.tensorrt_version

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
            raise ToolError(
                f"no NVIDIA GPU visible ({self.missing.get('gpu', 'unknown reason')}); run the container with "
                "--gpus all",
                EXIT_ENVIRONMENT,
            )
        for gpu in self.gpus:
            if gpu.index == gpu_id:
                return gpu
        raise ToolError(
            f"--gpu-id {gpu_id} is out of range: this machine has GPU indices 0..{len(self.gpus) - 1}", EXIT_USAGE
        )

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
            (
                "GPUs",
                str(len(self.gpus)) + (f" (via {self.gpu_source})" if self.gpu_source else "")
                if self.gpus
                else f"no GPU ({self.missing.get('gpu', 'not found')})",
            ),
        ]
        for gpu in self.gpus:
            fp16 = "fast FP16" if gpu.fast_fp16 else "slow FP16 (FP32 engines)"
            rows.append(
                (
                    f"  GPU {gpu.index}",
                    f"{gpu.name}, sm {gpu.compute_capability}, {gpu.memory_total_mib} MiB ({gpu.memory_free_mib} "
                    f"free), {fp16}, {gpu.uuid}",
                )
            )
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
# 3. Find / export: YOLOExporter
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
# detection heads exported from .pt/yaml; Segment/Pose/OBB subclass Detect and are refused
_SERVED_HEADS = ("Detect", "v10Detect", "RTDETRDecoder", "WorldDetect", "YOLOEDetect")


@dataclass
class OnnxModel:
    path: Path
    model_name: str
    imgsz: int
    class_names: list[str]
    origin: str  # "exported" | "reused" | "given" | "adapted"
    reference: Reference | None = None  # onnxruntime's output on the reference image (set by validate)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def clean_class_name(name: Any, index: int) -> str:
    """One label line for nvinfer: no control/format/line-separator characters, no ';', never empty.

    nvinfer reads labels.txt one line per class id, skips blank lines and splits a line on ';':
    a newline (or U+2028, U+0085, ...) in a name would shift every later class id.
    """
    import unicodedata

    text = "".join(" " if unicodedata.category(ch)[0] in "CZ" and ch != " " or ch == ";" else ch for ch in str(name))
    return " ".join(text.split()) or f"class{index}"


def labels_text(names: Sequence[Any]) -> str:
    """The text of labels.txt: exactly len(names) lines, each through clean_class_name()."""
    return "".join(f"{clean_class_name(name, index)}\n" for index, name in enumerate(names))


def read_labels(path: Path) -> list[str]:
    """Class names by id as nvinfer reads labels.txt (blank lines skipped). Raises OSError (a FIFO there
    included: never read) or UnicodeDecodeError."""
    text = read_regular_file(Path(path)).decode("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def default_class_names(count: int) -> list[str]:
    return [f"class{index}" for index in range(count)]


def exported_onnx_path(models_dir: Path, model_name: str, imgsz: int) -> Path:
    """MODELS_DIR/<model>_<imgsz>_ds.onnx: one file per model and input size."""
    return Path(models_dir) / f"{model_name}_{imgsz}{ONNX_SUFFIX}"


def distinct_batches(*batches: int) -> list[int]:
    """Each batch size once, ascending (a profile's min/opt/max, a --batches list)."""
    return sorted(set(batches))


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
            raise ToolError(
                f"--onnx/ONNX_PATH {onnx_path}: file not found; give an existing ONNX file or use --pt", EXIT_USAGE
            )
        return onnx_path, None
    if options.pt is not None:
        pt = Path(options.pt)
        if pt.is_file():
            return None, pt
        if _is_model_yaml(pt):
            if _is_bare_name(pt):
                return None, pt  # ultralytics' own cfg (checked when loading)
            raise ToolError(
                f"--pt/PT_PATH {pt}: model yaml not found; give an existing file or a name like yolo11n.yaml",
                EXIT_USAGE,
            )
        if _is_bare_name(pt):
            for directory in dirs:
                if (directory / pt).is_file():
                    return None, directory / pt
            return None, Path(options.models_dir) / pt  # to download
        raise ToolError(
            f"--pt/PT_PATH {pt}: file not found; give an existing .pt file or a bare name like yolo11x.pt to download",
            EXIT_USAGE,
        )
    for suffix in (".onnx", ".pt"):
        for directory in dirs:
            candidate = directory / f"{options.model}{suffix}"
            if candidate.is_file():
                return (candidate, None) if suffix == ".onnx" else (None, candidate)
    return None, Path(options.models_dir) / f"{options.model}.pt"  # to download


def _create_dir(directory: Path, what: str, hint: str = "make it writable or set another directory") -> None:
    """Create `directory` (the setting named `what`) if needed; one line with `hint` when it cannot be."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ToolError(f"cannot create {what} {directory} ({error.strerror}); {hint}", EXIT_USAGE) from None


def _ensure_writable_dir(directory: Path, what: str, hint: str = "make it writable or set another directory") -> None:
    """_create_dir, and one line with `hint` when this process cannot write in it."""
    _create_dir(directory, what, hint)
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise ToolError(f"{what} {directory} is not writable; {hint}", EXIT_USAGE)


class _signals_deferred:
    """Hold SIGINT/SIGTERM while a heavy C extension initialises: interrupted half-way it can turn
    the KeyboardInterrupt into an ImportError ("onnx is not installed") or leave a broken module.
    The signal is delivered right after, as a clean interrupt."""

    def __enter__(self) -> None:
        self.blocked = threading.current_thread() is threading.main_thread()
        if self.blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

    def __exit__(self, *exc: object) -> None:
        if self.blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _import_onnx_stack() -> tuple[Any, Any]:
    try:
        with _signals_deferred():
            import onnx
            import onnxruntime
    except ImportError as error:
        if _SIGNALS_RECEIVED:  # a C extension turned the KeyboardInterrupt into an ImportError
            raise KeyboardInterrupt from None
        raise ToolError(
            f"{error.name or 'onnx'} is not installed ({error}); pip install onnx onnxruntime onnxslim",
            EXIT_ENVIRONMENT,
        ) from None
    return onnx, onnxruntime


def _import_torch_stack() -> Any:
    # ultralytics >= 8.4: its own weights_only switch, for any load it does itself (we load .pt files ourselves)
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "1")
    try:
        with _signals_deferred():
            import torch
            import ultralytics  # noqa: F401
    except ImportError as error:
        if _SIGNALS_RECEIVED:
            raise KeyboardInterrupt from None
        raise ToolError(
            f"exporting a .pt needs torch and ultralytics ({error}); pip install torch ultralytics, or pass --onnx",
            EXIT_ENVIRONMENT,
        ) from None
    return torch


# -- loading .pt weights without running code from them ---------------------------------------
#
# A .pt is a pickle: unpickling it with weights_only=False runs whatever it names. Weights are
# loaded with torch.load(weights_only=True) and an allow-list of ultralytics/torch.nn classes.
# The allow-list holds *guards*, not the classes: a guard builds an empty instance of its class
# (no constructor runs: DetectionModel(cfg) would eval() the cfg's activation in ultralytics
# 8.3/8.4) and the pickled state is then set on it. The real classes are registered only under
# a random per-process name, which BUILD needs and no file can know.

DOWNLOAD_RECORD_SUFFIX = ".autobuild-download.json"  # MODELS_DIR/.<name>.pt<suffix>
_CHECKPOINT_CLASS_MODULES = ("ultralytics.nn.tasks", "ultralytics.nn.modules", "torch.nn.modules")
_CHECKPOINT_PLAIN_CLASS_MODULES = ("ultralytics.utils.loss", "ultralytics.utils.tal")
_CHECKPOINT_METHODS = frozenset({"forward", "forward_fuse", "forward_split"})
_GUARDS: dict[type, type] = {}  # class -> its guard
_GUARDED: dict[type, type] = {}  # guard -> class
_GUARD_PREFIX = ""


def _guard(cls: type) -> type:
    """A stand-in whose construction (NEWOBJ or REDUCE) gives an empty `cls` instance, args ignored."""
    if cls not in _GUARDS:

        def __new__(_guard_cls: type, *_args: Any, **_kwargs: Any) -> Any:
            return object.__new__(cls) if cls.__new__ is object.__new__ else cls.__new__(cls)  # type: ignore[call-overload]

        guard = type(cls.__name__, (), {"__new__": __new__, "__module__": __name__})
        _GUARDS[cls], _GUARDED[guard] = guard, cls
    return _GUARDS[cls]


def _checkpoint_getattr(obj: Any, name: str) -> Any:
    """`getattr` as checkpoints pickle it (`Detect.forward`, a fused module's `forward_fuse`): methods only."""
    import torch

    obj = _GUARDED.get(obj, obj)
    is_module_class = isinstance(obj, type) and issubclass(obj, torch.nn.Module)
    if name not in _CHECKPOINT_METHODS or not (is_module_class or isinstance(obj, torch.nn.Module)):
        import pickle

        shown = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        raise pickle.UnpicklingError(f"getattr({shown}, {name!r}) is not allowed in a checkpoint")
    return getattr(obj, name)


def _checkpoint_allowed(name: str) -> tuple[Any, bool] | None:
    """(object, guarded) for a global a YOLO checkpoint may name; None for anything else."""
    import importlib
    import pathlib

    import numpy as np
    import torch

    module, _, attr = name.rpartition(".")
    in_class_modules = any(module == top or module.startswith(top + ".") for top in _CHECKPOINT_CLASS_MODULES)
    if in_class_modules or module in _CHECKPOINT_PLAIN_CLASS_MODULES:
        if attr.startswith("_"):
            return None
        try:
            obj = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            return None
        if not isinstance(obj, type):
            return None
        if module in _CHECKPOINT_PLAIN_CLASS_MODULES:
            return (obj, True) if obj.__module__ == module else None
        return (obj, True) if issubclass(obj, torch.nn.Module) else None
    fixed: dict[str, tuple[Any, bool]] = {
        "builtins.getattr": (_checkpoint_getattr, False),
        "numpy.dtype": (np.dtype, False),
        "numpy.core.multiarray.scalar": (np.float64(0).__reduce__()[0], False),
        "numpy._core.multiarray.scalar": (np.float64(0).__reduce__()[0], False),
        # a path object is only data (building one touches no file); either OS's pickle -> this OS's class
        "pathlib.PosixPath": (pathlib.Path, False),
        "pathlib.WindowsPath": (pathlib.Path, False),
        "pathlib._local.PosixPath": (pathlib.Path, False),
        "pathlib._local.WindowsPath": (pathlib.Path, False),
        "ultralytics.nn.modules.block.Silence": (torch.nn.Identity, True),  # YOLOv9e
    }
    if name in fixed:
        return fixed[name]
    if name in ("ultralytics.utils.IterableSimpleNamespace", "ultralytics.yolo.utils.IterableSimpleNamespace"):
        from ultralytics.utils import IterableSimpleNamespace

        return IterableSimpleNamespace, True
    if name == "ultralytics.nn.tasks.YOLOv10DetectionModel":
        from ultralytics.nn.tasks import DetectionModel

        return DetectionModel, True
    return None


def load_checkpoint_dict(path: Path) -> Any:
    """torch.load(weights_only=True) of `path` exactly (never downloaded, never searched for).

    ToolError (exit 2) when the file names anything outside the allow-list: it is refused
    before a single object is built.
    """
    global _GUARD_PREFIX
    import pickle
    import secrets

    import numpy as np
    import torch

    serialization = torch.serialization
    if not hasattr(serialization, "get_unsafe_globals_in_checkpoint") or not hasattr(serialization, "safe_globals"):
        raise ToolError(
            f"loading .pt weights safely needs torch >= 2.6 (this is {torch.__version__}); upgrade torch or pass "
            "--onnx",
            EXIT_ENVIRONMENT,
        )
    try:
        needed = serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as error:
        raise ToolError(
            f"{path} is not a torch zip checkpoint ({type(error).__name__}); re-save it with ultralytics or pass "
            "--onnx",
            EXIT_USAGE,
        ) from None
    entries: list[Any] = []
    refused = []
    for name in needed:
        allowed = _checkpoint_allowed(name)
        if allowed is None:
            refused.append(name)
            continue
        obj, guarded = allowed
        if guarded:
            _GUARD_PREFIX = _GUARD_PREFIX or f"autobuild_{secrets.token_hex(16)}"
            entries += [(_guard(obj), name), (obj, f"{_GUARD_PREFIX}.{obj.__module__}.{obj.__qualname__}")]
        else:
            entries.append((obj, name))
    if refused:
        printable = sorted("".join(ch if ch.isprintable() else "?" for ch in name) for name in refused)
        shown = ", ".join(printable[:4]) + (f" and {len(refused) - 4} more" if len(refused) > 4 else "")
        raise ToolError(
            f"{path} was not loaded: it names {shown}, outside the YOLO checkpoint allow-list (unpickling it could "
            "run code); re-save it with ultralytics or pass an ONNX with --onnx",
            EXIT_USAGE,
        )
    if "numpy.dtype" in needed:  # BUILD of a dtype needs its concrete class
        entries += [type(np.dtype(kind)) for kind in ("f2", "f4", "f8", "i4", "i8", "u1", "?")]
    try:
        with serialization.safe_globals(entries):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch wraps the reason ("WeightsUnpickler error: ...") in paragraphs of advice: keep the reason
        text = str(error)
        marker = "WeightsUnpickler error:"
        tail = text.split(marker, 1)[1] if marker in text else text
        reason = next((line.strip() for line in tail.splitlines() if line.strip()), "refused")
        reason = "".join(ch if ch.isprintable() else "?" for ch in reason)[:200]
        raise ToolError(
            f"{path} was not loaded: {reason} (weights_only load); re-save it with ultralytics or pass an ONNX "
            "with --onnx",
            EXIT_USAGE,
        ) from None


def load_checkpoint_safely(path: Path) -> Any:
    """The FP32 eval-mode model of an ultralytics checkpoint, loaded with load_checkpoint_dict()."""
    import torch
    from ultralytics.nn.tasks import guess_model_task
    from ultralytics.utils import DEFAULT_CFG_DICT

    ckpt = load_checkpoint_dict(path)
    candidate = None
    if isinstance(ckpt, dict):
        candidate = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    if not isinstance(candidate, torch.nn.Module):
        raise ToolError(
            f"{path} holds no ultralytics model (no 'model' or 'ema' module); give a YOLO .pt checkpoint", EXIT_USAGE
        )
    model = candidate.float()
    train_args = ckpt.get("train_args")
    model.args = {**DEFAULT_CFG_DICT, **(train_args if isinstance(train_args, dict) else {})}
    model.pt_path = str(path)
    model.task = getattr(model, "task", None) or guess_model_task(model)
    if not hasattr(model, "stride"):
        model.stride = torch.tensor([32.0])
    model = model.eval()
    for module in model.modules():  # as ultralytics' load_checkpoint does
        if hasattr(module, "inplace"):
            module.inplace = True
        elif isinstance(module, torch.nn.Upsample) and not hasattr(module, "recompute_scale_factor"):
            module.recompute_scale_factor = None
    return model


def download_record_path(weights: Path) -> Path:
    return Path(weights).with_name(f".{Path(weights).name}{DOWNLOAD_RECORD_SUFFIX}")


def record_download(weights: Path, sha256: str) -> None:
    """Note that this tool downloaded `weights` (name, size, sha256) so a later search may load it."""
    record = {
        "file": weights.name,
        "size": weights.stat().st_size,
        "sha256": sha256,
        "downloaded_by": f"auto_build_engine.py {TOOL_VERSION}",
        "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(download_record_path(weights), json.dumps(record, indent=2) + "\n")


def is_recorded_download(weights: Path, sha256: str) -> bool:
    try:
        record = json.loads(read_regular_file(download_record_path(weights)))
        return bool(
            record["file"] == weights.name and record["sha256"] == sha256 and record["size"] == weights.stat().st_size
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _read_metadata(model_proto: Any) -> dict[str, str]:
    return {prop.key: prop.value for prop in model_proto.metadata_props}


def _set_metadata(model_proto: Any, values: dict[str, str]) -> None:
    kept = [(p.key, p.value) for p in model_proto.metadata_props if p.key not in values]
    del model_proto.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        prop = model_proto.metadata_props.add()
        prop.key, prop.value = key, str(value)


def layout_metadata(
    model: str, imgsz: int, names: Sequence[str], source_name: str, source_sha256: str
) -> dict[str, str]:
    """The metadata every DeepStream-layout ONNX this tool writes carries (exported or adapted)."""
    return {
        META_LAYOUT: ONNX_LAYOUT,
        META_MODEL: model,
        META_IMGSZ: str(imgsz),
        META_NAMES: json.dumps(list(names)),
        META_SOURCE: source_name,
        META_SOURCE_SHA256: source_sha256,
        META_TOOL_VERSION: TOOL_VERSION,
    }


def _names_from_metadata(meta: dict[str, str]) -> list[str] | None:
    """Our JSON list first, then ultralytics' `names` (a Python dict literal)."""
    if META_NAMES in meta:
        try:
            names = json.loads(meta[META_NAMES])
            if isinstance(names, list) and names:
                return [str(n) for n in names]
        except (ValueError, RecursionError):
            pass
    if "names" in meta:
        import ast

        try:
            names = ast.literal_eval(meta["names"])
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            return None
        if isinstance(names, dict) and names:
            return [str(names[key]) for key in _class_index_order(names)]
        if isinstance(names, (list, tuple)) and names:
            return [str(n) for n in names]
    return None


def _class_index_order(names: dict[Any, Any]) -> list[Any]:
    """The keys of a names dict in class-index order; mixed key types (0, '1') sort by their number,
    and keys that are no numbers keep the file's order."""
    try:
        return sorted(names, key=lambda key: int(key))
    except (TypeError, ValueError):
        return list(names)


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
        raise ToolError(
            f"{path} is not a readable ONNX model ({type(error).__name__}); give a valid .onnx or pass --pt", EXIT_USAGE
        ) from None


def _seen(model_proto: Any) -> str:
    """What the layout check saw, for its refusals: the outputs (name, shape) and ultralytics' task/head."""
    meta = _read_metadata(model_proto)
    outputs = ", ".join(f"{o.name} {_dims(o)}" for o in model_proto.graph.output) or "none"
    tags = ", ".join(f"{key} {meta[key]!r}" for key in ("task", "head") if key in meta)
    return f"saw outputs {outputs}; " + (f"metadata {tags}" if tags else "no ultralytics task/head metadata")


def _is_rtdetr_graph(model_proto: Any) -> bool:
    """ultralytics' RT-DETR: its metadata says so; without metadata, its deformable attention (GridSample) does."""
    meta = _read_metadata(model_proto)
    if META_LAYOUT in meta:
        return False
    if "head" in meta:
        return meta["head"] == "RTDETRDecoder"
    return any(node.op_type == "GridSample" for node in model_proto.graph.node)


def _image_inputs(graph: Any) -> list[Any]:
    """The graph's real inputs: its inputs that are not initializers (weights an old exporter also lists)."""
    initializers = {init.name for init in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def _graph_layout(model_proto: Any, path: Path) -> str:
    """The output layout of a detector ONNX; ToolError (saying what it saw) for anything else.

    'deepstream'    [B,N,6] x1,y1,x2,y2 in input pixels, score, class (ours; YOLOv10/26 end-to-end; nms=True)
    'ultralytics'   [B,4+nc,N] centre x,y,w,h in input pixels + class scores (ultralytics' YOLO export)
    'rtdetr'        [B,N,6] centre x,y,w,h normalised to 0..1, score, class (ultralytics' RT-DETR export)
    'rtdetr_scores' [B,N,4+nc] centre x,y,w,h normalised + class scores (RT-DETR of older ultralytics)
    """
    graph = model_proto.graph
    inputs = _image_inputs(graph)
    seen = _seen(model_proto)
    if len(inputs) != 1:
        raise ToolError(
            f"{path}: expected one image input, found {len(inputs)} ({[i.name for i in inputs]}); this is not a "
            f"YOLO detector ONNX ({seen})",
            EXIT_USAGE,
        )
    meta = _read_metadata(model_proto)
    task = meta.get("task")
    if task and task != "detect":
        raise ToolError(
            f"{path}: ultralytics task is {task!r}, not a detection model; export a YOLO detection model ({seen})",
            EXIT_USAGE,
        )
    if len(graph.output) != 1:
        raise ToolError(
            f"{path}: expected one output, found {len(graph.output)} (segment/pose models are not detectors); "
            f"export a YOLO detection model ({seen})",
            EXIT_USAGE,
        )
    in_dims, out_dims = _dims(inputs[0]), _dims(graph.output[0])
    if len(in_dims) != 4 or in_dims[1] != 3:
        raise ToolError(
            f"{path}: input {inputs[0].name} has shape {in_dims}, expected [B,3,H,W]; this is not a YOLO detector "
            f"ONNX ({seen})",
            EXIT_USAGE,
        )
    if not _is_dynamic(in_dims[0]):
        raise ToolError(
            f"{path}: the batch axis is static ({in_dims[0]}); re-export with a dynamic batch axis or pass --pt "
            f"(ultralytics: export dynamic=True; {seen})",
            EXIT_USAGE,
        )
    if len(out_dims) != 3:
        raise ToolError(
            f"{path}: output {graph.output[0].name} has rank {len(out_dims)}, expected [B,N,6] or [B,4+nc,N]; this "
            f"is not a YOLO detector ONNX ({seen})",
            EXIT_USAGE,
        )
    middle, last = out_dims[1], out_dims[2]
    if _is_rtdetr_graph(model_proto):
        if last == 6:
            return "rtdetr"
        if isinstance(last, int) and last > 4:
            return "rtdetr_scores"
        raise ToolError(f"{path}: an RT-DETR output must be [B,N,6] or [B,N,4+nc] ({seen})", EXIT_USAGE)
    if meta.get(META_LAYOUT) == ONNX_LAYOUT or (
        last == 6 and (_is_dynamic(middle) or (isinstance(middle, int) and middle > 6))
    ):
        if last != 6:
            raise ToolError(
                f"{path}: output last dim is {last}, expected 6 (x1,y1,x2,y2,score,class) ({seen})", EXIT_USAGE
            )
        return "deepstream"
    if isinstance(middle, int) and middle >= 5 and middle != last:
        return "ultralytics"
    raise ToolError(
        f"{path}: output shape {out_dims} is neither [B,N,6] nor [B,4+nc,N]; this is not a YOLO detector ONNX ({seen})",
        EXIT_USAGE,
    )


def _settle_output_shape(model_proto: Any, imgsz: int) -> None:
    """Concrete output dims for a graph exported unsimplified (ultralytics simplify=False).

    Such graphs name their output dims symbolically ('Concatoutput0_dim_1'). With H and W fixed to
    imgsz, ONNX shape inference (with data propagation) finds them; the batch dim stays as it was.
    """
    from onnx import shape_inference

    graph = model_proto.graph
    if len(graph.output) != 1 or all(not _is_dynamic(d) for d in _dims(graph.output[0])[1:]):
        return  # more than one output: _graph_layout refuses it
    inputs = _image_inputs(graph)
    if len(inputs) != 1 or len(_dims(inputs[0])) != 4:
        return  # _graph_layout says what is wrong
    probe = type(model_proto)()
    probe.CopyFrom(model_proto)
    shape = probe.graph.input[[i.name for i in probe.graph.input].index(inputs[0].name)].type.tensor_type.shape
    for axis in (2, 3):
        if not shape.dim[axis].HasField("dim_value"):
            shape.dim[axis].Clear()
            shape.dim[axis].dim_value = imgsz
    del probe.graph.value_info[:]
    for dim in probe.graph.output[0].type.tensor_type.shape.dim[1:]:
        dim.Clear()
    try:
        found: list[Any] = _dims(shape_inference.infer_shapes(probe, data_prop=True).graph.output[0])
    except Exception:
        found = []
    if len(found) != 3 or any(_is_dynamic(d) for d in found[1:]):
        found = _output_shape_at(probe, inputs[0].name, imgsz)  # what onnxruntime gives at batch 1
    if not found:
        return  # the layout check then reports the symbolic shape it saw
    target = graph.output[0].type.tensor_type.shape.dim
    for axis in range(1, min(len(found), len(target))):
        if isinstance(found[axis], int) and found[axis] > 0:
            target[axis].Clear()
            target[axis].dim_value = found[axis]


def _check_model_stride(source: Path, imgsz: int, stride: Any) -> None:
    """--imgsz must be a multiple of the model's largest stride (32 for most, 64 for P6 models)."""
    try:
        stride = int(float(stride))
    except (TypeError, ValueError):
        return  # no stride known (a foreign ONNX): the runtime checks decide
    if stride <= 0 or imgsz % stride == 0:
        return
    below = imgsz // stride * stride
    sizes = " or ".join(f"--imgsz {size}" for size in (below, below + stride) if stride <= size <= MAX_IMGSZ)
    raise ToolError(
        f"{source}: --imgsz {imgsz} is not a multiple of this model's largest stride {stride}; use {sizes}", EXIT_USAGE
    )


def _output_shape_at(model_proto: Any, input_name: str, imgsz: int) -> list[int]:
    """The output shape onnxruntime gives for one zero image at imgsz; [] if it cannot run the graph."""
    _, ort = _import_onnx_stack()
    import numpy as np

    try:
        session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
        elem = session.get_inputs()[0].type
        image: Any = np.zeros((1, 3, imgsz, imgsz), dtype=np.float16 if "float16" in elem else np.float32)
        return list(session.run([model_proto.graph.output[0].name], {input_name: image})[0].shape)
    except Exception:
        return []


def _embedded_nms_batch(model_proto: Any) -> int:
    """How many images ultralytics' embedded NMS (export nms=True) serves: 0 if the graph has none.

    ultralytics unrolls its per-image NMS loop for the batch it traced (export batch=, default 1):
    one NonMaxSuppression node per image slot. Slots past that get no detections, whatever B is.
    """
    return sum(1 for node in model_proto.graph.node if node.op_type == "NonMaxSuppression")


def check_batch_slots(path: Path, imgsz: int, batch: int = 2) -> None:
    """The same image in every slot of a batch must give the same rows in every slot.

    Catches graphs that serve only the image(s) they were traced with (ultralytics' nms=True at
    batch=1: slot 1.. stay empty), which finite-output checks pass. Rows are compared column by
    column after sorting, so a different order of equal detections is not a difference.
    """
    _, ort = _import_onnx_stack()
    import numpy as np

    if batch < 2:
        return
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    try:
        (output,) = session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: np.repeat(image, batch, axis=0)})
    except Exception as error:
        raise ToolError(
            f"{path}: onnxruntime failed at batch {batch} ({type(error).__name__}); export it again with a dynamic "
            "batch axis",
            EXIT_USAGE,
        ) from None
    if output.shape[0] != batch:
        raise ToolError(
            f"{path}: at batch {batch} the output has {output.shape[0]} image slots; export it again with a "
            "dynamic batch axis",
            EXIT_USAGE,
        )
    first = np.sort(output[0], axis=0)
    tolerance = 1e-3 * np.maximum(1.0, np.abs(first).max(axis=0))  # per column: pixels, score, class
    for slot in range(1, batch):
        other = np.sort(output[slot], axis=0)
        if other.shape != first.shape or not (np.abs(other - first) <= tolerance).all():
            scored = [int((output[k][:, 4] > 0).sum()) for k in range(batch)]
            raise ToolError(
                f"{path}: the same image gives other detections in batch slot {slot} than in slot 0 (rows with a "
                f"score per slot: {scored}); the graph serves only part of a batch: export it again without "
                "nms=True, or pass --pt",
                EXIT_USAGE,
            )


def _sort_topologically(graph: Any) -> None:
    """Reorder graph.node so every node comes after the producers of its inputs (the ONNX rule).

    ultralytics' half=True export (onnxruntime's float16 converter) leaves its boundary Casts
    out of order; onnxruntime runs it, the ONNX checker and TensorRT's parser want the rule kept.
    Names a subgraph (If/Loop body) reads from the outer graph count as inputs of its node.
    """
    import heapq

    def used(node: Any) -> set[str]:
        names = {name for name in node.input if name}
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                inner = set()
                for inner_node in sub.node:
                    names |= used(inner_node)
                    inner.update(inner_node.output)
                names -= inner
        return names

    nodes = list(graph.node)
    producer = {name: index for index, node in enumerate(nodes) for name in node.output if name}
    waits = [0] * len(nodes)
    users: list[list[int]] = [[] for _ in nodes]
    for index, node in enumerate(nodes):
        deps = {producer[name] for name in used(node) if name in producer and producer[name] != index}
        waits[index] = len(deps)
        for dep in deps:
            users[dep].append(index)
    ready = [index for index, count in enumerate(waits) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for user in users[index]:
            waits[user] -= 1
            if waits[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        raise ToolError("the ONNX graph has a cycle; export it again", EXIT_USAGE)
    if order != list(range(len(nodes))):
        copies = [type(nodes[0])() for _ in nodes]
        for copy, index in zip(copies, order, strict=True):  # both as long as nodes
            copy.CopyFrom(nodes[index])
        del graph.node[:]
        graph.node.extend(copies)


def _float32_boundaries(model_proto: Any) -> None:
    """A float16 image input or output (a half export traced on a GPU) gets a Cast at the boundary.

    The DeepStream contract is float32 in and out; the inside stays float16.
    """
    from onnx import TensorProto, helper

    graph = model_proto.graph
    float16, float32 = TensorProto.FLOAT16, TensorProto.FLOAT
    image = _image_inputs(graph)[0]
    if image.type.tensor_type.elem_type == float16:
        inner = "ds_cast/input_fp16"
        for node in graph.node:
            for index, name in enumerate(node.input):
                if name == image.name:
                    node.input[index] = inner
        graph.node.insert(0, helper.make_node("Cast", [image.name], [inner], name="ds_cast/input", to=float16))
        image.type.tensor_type.elem_type = float32
    output = graph.output[0]
    if output.type.tensor_type.elem_type == float16:
        outer = "ds_cast/output_fp32"
        graph.node.append(helper.make_node("Cast", [output.name], [outer], name="ds_cast/output", to=float32))
        output.name = outer
        output.type.tensor_type.elem_type = float32


def _append_layout_adapter(model_proto: Any, layout: str = "ultralytics", imgsz: int = 0) -> None:
    """Centre-xywh rows -> [B,N,6] x1,y1,x2,y2,score,class as ONNX nodes after the graph.

    'ultralytics' [B,4+nc,N] pixels (transposed first); 'rtdetr' [B,N,6] normalised with score and
    class already there; 'rtdetr_scores' [B,N,4+nc] normalised. Normalised boxes are scaled by imgsz
    (the input is square). Best class: ReduceMax for the score, ArgMax for the id.
    """
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
    rows = node("Transpose", [source], "rows", perm=[0, 2, 1]) if layout == "ultralytics" else source  # [B,N,4+nc]
    xy = node("Slice", [rows, const("s0", [0], np.int64), const("e2", [2], np.int64), axis2], "xy")
    wh = node("Slice", [rows, const("s2", [2], np.int64), const("e4", [4], np.int64), axis2], "wh")
    classes = node("Slice", [rows, const("s4", [4], np.int64), const("eend", [big], np.int64), axis2], "classes")
    if layout != "ultralytics":  # normalised to 0..1 of the (square) input
        xy = node("Mul", [xy, const("size_xy", [float(imgsz)], np.float32)], "xy_px")
        wh = node("Mul", [wh, const("size_wh", [float(imgsz)], np.float32)], "wh_px")
    half = node("Mul", [wh, const("half", [0.5], np.float32)], "half_wh")
    x1y1 = node("Sub", [xy, half], "x1y1")
    x2y2 = node("Add", [xy, half], "x2y2")
    if layout == "rtdetr":  # score and class id are columns 4 and 5 already
        parts = [x1y1, x2y2, classes]
    else:
        if opset >= 18:  # ReduceMax takes axes as an input from opset 18
            score = node("ReduceMax", [classes, axis2], "score", keepdims=1)
        else:
            score = node("ReduceMax", [classes], "score", axes=[2], keepdims=1)
        class_id = node("ArgMax", [classes], "class_id", axis=2, keepdims=1)
        parts = [x1y1, x2y2, score, node("Cast", [class_id], "class_f", to=TensorProto.FLOAT)]
    graph.node.append(helper.make_node("Concat", parts, [ONNX_OUTPUT_NAME], name=prefix + "concat", axis=2))
    batch = _dims(graph.output[0])[0]
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(
            ONNX_OUTPUT_NAME, TensorProto.FLOAT, [batch if isinstance(batch, str) and batch else "batch", "anchors", 6]
        )
    )


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


MAX_CHECKPOINT_EXPANSION = 4  # torch.save stores its entries uncompressed: a real .pt declares ~ its own size


def check_checkpoint_archive(path: Path) -> None:
    """Refuse a .pt whose zip archive declares far more data than the file holds (a zip bomb) or
    more than this machine has free, before torch reads a byte of it. Legacy (non-zip) pickles pass."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(max(info.file_size, 0) for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
        return  # not a zip (legacy pickle) or unreadable: torch's own loader gives the message
    on_disk = path.stat().st_size
    available = _available_memory_bytes()
    if declared > MAX_CHECKPOINT_EXPANSION * on_disk + (64 << 20):
        raise ToolError(
            f"{path} declares {declared >> 20} MiB of data in {on_disk / (1 << 20):.1f} MiB (a zip bomb or not a "
            "torch checkpoint); re-download or re-export it",
            EXIT_USAGE,
        )
    if available is not None and declared > available:
        raise ToolError(
            f"{path} declares {declared >> 20} MiB of data but only {available >> 20} MiB of memory is available; "
            "free memory or re-export it",
            EXIT_USAGE,
        )


# -- the reference: one real image through onnxruntime, compared with the engine later ---------

REFERENCE_IMAGE = "bus.jpg"  # from ultralytics' assets: people and a bus, real detections
LETTERBOX_GREY = 114
# The engine passes when, after the same decode and NMS as nvinfer (nvdsinfer_yolo + cluster-mode=2),
# every box of the ONNX has a partner in the engine's output and back: IoU >= COMPARE_MIN_IOU,
# the same class, scores within COMPARE_SCORE_TOLERANCE. Why 0.05 for FP16 (docs/engine-check.md):
# FP16 keeps 11 significant bits (2^-11 = 4.9e-4 relative per rounding); over ~300 layers the
# logits drift by up to ~1e-2 relative, i.e. ~0.1 absolute on logits of |x| <= 10, and sigmoid's
# slope is at most 0.25, so scores move by <= ~0.025. 0.05 is twice that; a dropped box or a 5 px
# shift is far outside it, while nvinfer's own threshold (0.25 by default) is not crossed by it
# for any box that is not already near the threshold (those are matched by anchor, see below).
COMPARE_MIN_IOU = 0.9
COMPARE_SCORE_TOLERANCE = 0.05
# Every slot of one batch holds the same image and goes through the same kernels in the same launch,
# so slot k must give slot 0's boxes up to float noise, not up to the FP16-vs-FP32 budget above (two
# slots each 0.04 off the ONNX in opposite directions are a broken engine). 1e-3 is two FP16 steps of
# a score in 0.5..1; IoU 0.99 is a shift of 0.25-0.5% of a box's side (docs/engine-check.md, "Batch slots").
SLOT_MIN_IOU = 0.99
SLOT_SCORE_TOLERANCE = 1e-3
SLOT_LIMITS = f"slots need IoU >= {SLOT_MIN_IOU} and score within {SLOT_SCORE_TOLERANCE}"


def reference_image_path() -> Path | None:
    """ultralytics/assets/bus.jpg, found without importing ultralytics."""
    from importlib.util import find_spec

    try:
        spec = find_spec("ultralytics")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "assets" / REFERENCE_IMAGE
        if candidate.is_file():
            return candidate
    return None


def letterbox_image(path: Path | None, size: int) -> tuple[Any, str]:
    """The image as nvinfer feeds it (maintain-aspect-ratio, symmetric-padding): CHW RGB float32 0..1.

    Same arithmetic as ultralytics' LetterBox (centred, grey 114). Returns (image, its name).
    Without the asset or OpenCV, a fixed synthetic scene, with a notice: still not random noise.
    """
    import numpy as np

    image = None
    if path is not None:
        try:
            import cv2

            image = cv2.imread(str(path))  # BGR uint8, None if unreadable
        except ImportError:
            image = None
    if image is None:
        notice(
            f"{REFERENCE_IMAGE} (ultralytics assets) or OpenCV not found; the ONNX/engine comparison uses a "
            "synthetic test scene"
        )
        canvas: Any = np.full((size, size, 3), LETTERBOX_GREY, dtype=np.uint8)
        for index, (x, y, w, h) in enumerate(((0.1, 0.2, 0.3, 0.5), (0.5, 0.1, 0.4, 0.3), (0.55, 0.55, 0.35, 0.35))):
            x0, y0 = int(x * size), int(y * size)
            canvas[y0 : y0 + int(h * size), x0 : x0 + int(w * size)] = ((40, 90, 200), (200, 60, 30), (30, 160, 60))[
                index
            ]
        return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32) / 255.0, "synthetic scene"
    import cv2

    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_w, new_h = int(round(width * ratio)), int(round(height * ratio))
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_w, pad_h = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = int(round(pad_h - 0.1)), int(round(pad_h + 0.1))
    left, right = int(round(pad_w - 0.1)), int(round(pad_w + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(LETTERBOX_GREY,) * 3)
    return np.ascontiguousarray(
        image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32
    ) / 255.0, path.name if path else ""


@dataclass
class DecodeSettings:
    """What nvinfer is configured with: the comparison decodes both outputs the same way."""

    imgsz: int
    num_classes: int
    threshold: float = 0.25
    nms_iou: float = 0.45
    topk: int = 300


@dataclass
class Reference:
    """onnxruntime's [N,6] output for the reference image at batch 1, and its detections."""

    image: Any  # [3,H,W] float32
    image_name: str
    rows: Any  # [N,6] float32
    settings: DecodeSettings

    @property
    def detections(self) -> list[Detection]:
        return decode_detections(self.rows, self.settings)


@dataclass
class Detection:
    anchor: int
    box: tuple[float, float, float, float]
    score: float
    class_id: int


def _iou(box: Sequence[float], boxes: Any) -> Any:
    import numpy as np

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def decode_detections(rows: Any, settings: DecodeSettings) -> list[Detection]:
    """[N,6] rows -> boxes as nvdsinfer_yolo decodes them (class id rounding, threshold, clamp,
    >= 1 px) and nvinfer's cluster-mode=2 keeps them (per-class greedy NMS, topk per class)."""
    import numpy as np

    rows = np.asarray(rows, dtype=np.float64)
    size = float(settings.imgsz)
    with np.errstate(invalid="ignore"):
        classes = np.rint(rows[:, 5])
        keep = (rows[:, 4] >= settings.threshold) & (rows[:, 5] > -0.5) & (rows[:, 5] < settings.num_classes - 0.5)
        keep &= np.isfinite(rows[:, :4]).all(axis=1)
    boxes = np.clip(rows[:, :4], 0.0, size)
    keep &= (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
    found: list[Detection] = []
    for class_id in np.unique(classes[keep]):
        candidates = np.flatnonzero(keep & (classes == class_id))
        candidates = candidates[np.argsort(-rows[candidates, 4], kind="stable")]
        kept = 0
        while candidates.size and kept < settings.topk:
            best, candidates = candidates[0], candidates[1:]
            x0, y0, x1, y1 = (float(v) for v in boxes[best])
            found.append(Detection(int(best), (x0, y0, x1, y1), float(rows[best, 4]), int(class_id)))
            kept += 1
            if candidates.size:
                candidates = candidates[_iou(boxes[best], boxes[candidates]) <= settings.nms_iou]
    found.sort(key=lambda d: -d.score)
    return found


@dataclass
class SlotComparison:
    """One set of detections against another (engine slot vs reference, or slot vs slot 0)."""

    expected: int
    found: int
    matched: int
    missing: int
    extra: int
    class_changes: int
    min_iou: float
    max_score_diff: float
    class_ties: int = 0  # class flipped between two classes scored alike (same box, same score)
    iou_limit: float = COMPARE_MIN_IOU  # the limits it was judged by
    score_limit: float = COMPARE_SCORE_TOLERANCE

    @property
    def ok(self) -> bool:
        ties_allowed = max(1, self.expected // 10)
        return (
            not (self.missing or self.extra or self.class_changes)
            and self.class_ties <= ties_allowed
            and self.min_iou >= self.iou_limit
            and self.max_score_diff <= self.score_limit
        )

    def figures(self) -> str:
        text = f"{self.matched}/{self.expected} boxes matched"
        if self.missing or self.extra:
            text += f" ({self.missing} missing, {self.extra} extra)"
        iou = f"min IoU {self.min_iou:.3f}" + (f" < {self.iou_limit}" if self.min_iou < self.iou_limit else "")
        digits = 4 if self.score_limit < 0.01 else 3  # a slot-vs-slot limit of 1e-3 needs the 4th digit
        score = f"max score diff {self.max_score_diff:.{digits}f}"
        score += f" > {self.score_limit}" if self.max_score_diff > self.score_limit else ""
        ties = f", {self.class_ties} class ties" if self.class_ties else ""
        return f"{text}, {iou}, {score}, {self.class_changes} class changes{ties}"


def compare_detections(
    expected_rows: Any,
    found_rows: Any,
    settings: DecodeSettings,
    iou_limit: float = COMPARE_MIN_IOU,
    score_limit: float = COMPARE_SCORE_TOLERANCE,
) -> SlotComparison:
    """Each box after decode + NMS on one side must be there on the other side, and back.

    Rows are anchors, so a box is looked up at its own anchor: the other side's detection of that
    anchor, or else the other side's raw row of that anchor (the box was only across the score
    threshold there, or NMS kept a neighbour instead, which FP16 noise does). Judged: IoU, score
    difference, class. A class that differs while box and score agree is a tie between two classes
    (FP16 noise flips the argmax of near-equal class scores): counted apart, tolerated for up to
    10% of the boxes. The figures of boxes that fail are folded into min IoU / max score diff.
    """
    import numpy as np

    size = float(settings.imgsz)
    state: dict[str, Any] = {
        "matched": 0,
        "missing": 0,
        "extra": 0,
        "changes": 0,
        "ties": 0,
        "min_iou": 1.0,
        "max_diff": 0.0,
    }

    def judge(detection: Detection, box: Any, score: float, class_id: int) -> bool:
        iou = float(_iou(detection.box, np.clip(np.asarray(box, dtype=np.float64), 0.0, size))[0])
        diff = abs(float(score) - detection.score)
        close = iou >= iou_limit and diff <= score_limit
        state["min_iou"] = min(state["min_iou"], iou)
        state["max_diff"] = max(state["max_diff"], diff)
        if class_id != detection.class_id:
            state["ties" if close else "changes"] += 1
        return close

    def raw_row(rows: Any, anchor: int) -> tuple[Any, float, int] | None:
        row = np.asarray(rows[anchor], dtype=np.float64)
        if not np.isfinite(row).all():
            return None
        return row[:4], float(row[4]), int(np.rint(row[5]))

    expected, found = decode_detections(expected_rows, settings), decode_detections(found_rows, settings)
    found_by_anchor = {d.anchor: d for d in found}
    expected_anchors = {d.anchor for d in expected}
    for detection in expected:
        partner = found_by_anchor.get(detection.anchor)
        if partner is not None:
            judge(detection, partner.box, partner.score, partner.class_id)
            state["matched"] += 1
            continue
        row = raw_row(found_rows, detection.anchor)
        if row is not None and judge(detection, *row):
            state["matched"] += 1
        else:
            state["missing"] += 1
    for detection in found:
        if detection.anchor in expected_anchors:
            continue  # judged above
        row = raw_row(expected_rows, detection.anchor)
        if row is None or not judge(detection, *row):
            state["extra"] += 1
    return SlotComparison(
        len(expected),
        len(found),
        state["matched"],
        state["missing"],
        state["extra"],
        state["changes"],
        state["min_iou"],
        state["max_diff"],
        state["ties"],
        iou_limit,
        score_limit,
    )


@dataclass
class EngineCheck:
    """The engine against the ONNX reference at each profile batch; `line` names the figures."""

    ok: bool
    line: str
    batches: list[int]
    reference_boxes: int
    worst: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_engine_outputs(reference: Reference, outputs: dict[int, Any]) -> EngineCheck:
    """outputs: batch -> [batch,N,6] engine output for the reference image repeated `batch` times.

    Each slot against the reference within the FP16 budget (COMPARE_*), and each slot against slot 0
    of its batch within float noise (SLOT_*): the same image through the same kernels.
    """
    settings = reference.settings
    count = len(reference.detections)
    worst_iou, worst_diff, ties, slot_diff, failure = 1.0, 0.0, 0, 0.0, None
    against_onnx = f"needs IoU >= {COMPARE_MIN_IOU}, same class, score within {COMPARE_SCORE_TOLERANCE}"
    against_slot0 = f"{SLOT_LIMITS} of slot 0"
    for batch, output in sorted(outputs.items()):
        for slot in range(batch):
            result = compare_detections(reference.rows, output[slot], settings)
            if result.matched:
                worst_iou = min(worst_iou, result.min_iou)
            worst_diff = max(worst_diff, result.max_score_diff)
            ties = max(ties, result.class_ties)
            if failure is None and not result.ok:
                failure = f"batch {batch} slot {slot} vs ONNX: {result.figures()} ({against_onnx})"
            if slot and failure is None:
                between = compare_detections(output[0], output[slot], settings, SLOT_MIN_IOU, SLOT_SCORE_TOLERANCE)
                slot_diff = max(slot_diff, between.max_score_diff)
                if not between.ok:
                    failure = f"batch {batch} slot {slot} vs slot 0 (same image): {between.figures()} ({against_slot0})"
    batches = sorted(outputs)
    where = f"engine vs ONNX on {reference.image_name} at batch {','.join(map(str, batches))}"
    if failure is not None:
        line = f"{where}: MISMATCH at {failure}"
    else:
        line = (
            f"{where}: {count}/{count} boxes matched in every slot, min IoU {worst_iou:.3f}, max score diff "
            f"{worst_diff:.3f}, classes equal{f' but {ties} class ties' if ties else ''}, slots identical "
            f"(max score diff to slot 0 {slot_diff:.4f})"
        )
    return EngineCheck(
        failure is None,
        line,
        batches,
        count,
        {
            "min_iou": round(worst_iou, 4),
            "max_score_diff": round(worst_diff, 4),
            "class_ties": ties,
            "slot_max_score_diff": round(slot_diff, 5),
        },
    )


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
        with TIMELINE.phase("find/download"):  # the export inside is counted as its own phase
            onnx_path, weights = locate_model_files(self.options)
            if onnx_path is not None:
                result = self._from_onnx(onnx_path)
            else:
                assert weights is not None
                result = self._from_weights(weights)
        with TIMELINE.phase("validate"):
            try:
                result.reference = self.validate(result.path)
            except ToolError:
                if result.origin == "adapted":  # a refused copy must not be found and used next time
                    _remove_quietly(result.path)
                raise
            result.reference.settings.num_classes = result.num_classes
        log(
            f"ONNX ({result.origin}): {result.path} [{result.model_name}, {result.imgsz}x{result.imgsz}, "
            f"{result.num_classes} classes]"
        )
        return result

    def _from_weights(self, weights: Path) -> OnnxModel:
        options = self.options
        model_name = weights.stem
        target = exported_onnx_path(options.models_dir, model_name, options.imgsz)
        downloaded = False
        if not weights.is_file() and not _is_model_yaml(weights):
            reusable = self._reusable_without_weights(target, weights.name)
            if reusable is not None:
                return reusable
            weights, downloaded = self._download(weights), True
        source = weights
        source_sha = self._source_sha256(source)
        reused = self._reusable(target, source_sha)
        if reused is not None:
            return reused
        if not downloaded:
            self._check_trusted(source, source_sha)
        _ensure_writable_dir(Path(options.models_dir), "MODELS_DIR")
        with TIMELINE.phase("export"):
            names = self.export(source, target, model_name=model_name, source_sha256=source_sha)
        return OnnxModel(target, model_name, options.imgsz, names, "exported")

    def _reusable(self, target: Path, source_sha: str) -> OnnxModel | None:
        meta = self._metadata_of(target)
        if meta is None:
            return None
        if (meta.get(META_LAYOUT), meta.get(META_IMGSZ), meta.get(META_SOURCE_SHA256)) != (
            ONNX_LAYOUT,
            str(self.options.imgsz),
            source_sha,
        ):
            log(f"{target} was exported from other weights or options; exporting again", level=2)
            return None
        names = _names_from_metadata(meta)
        if not names:
            return None
        return OnnxModel(target, meta.get(META_MODEL, target.stem), self.options.imgsz, names, "reused")

    def _reusable_without_weights(self, target: Path, weights_name: str) -> OnnxModel | None:
        """No weights anywhere, but our export of exactly that file is: use it, download nothing."""
        meta = self._metadata_of(target)
        if (
            meta
            and meta.get(META_SOURCE) == weights_name
            and meta.get(META_LAYOUT) == ONNX_LAYOUT
            and meta.get(META_IMGSZ) == str(self.options.imgsz)
        ):
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
        import shutil
        import tempfile

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
                raise ToolError(
                    f"{weights.name} not found in {searched} and the download failed ({type(error).__name__}); put "
                    "the file there, or check the name and the network",
                    EXIT_USAGE,
                ) from None
            if not found.is_file():
                raise ToolError(
                    f"{weights.name} not found in {searched} and not downloadable (offline, or not an official "
                    "model name); put the file there or pass --pt/--onnx",
                    EXIT_USAGE,
                )
            if found.parent != staging:  # already in ultralytics' weights_dir: use it where it is
                return found
            os.replace(found, weights)
            fsync_directory(weights.parent)
            record_download(weights, sha256_of_file(weights))
            return weights
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _check_trusted(self, weights: Path, sha256: str) -> None:
        """Only weights the user named, or a download this tool recorded, are ever unpickled.

        Named: `--pt`/`PT_PATH` as an existing path, or a bare name (`--pt yolo11x.pt`) that
        locate_model_files() found in one of the image's own model paths. Not named: a .pt found
        by MODEL mode's search, and a bare name found only in the shared volume (MODELS_DIR, or a
        path that resolves into it or ENGINE_DIR): anyone who can write the volume may have put a
        file there under the official name, and the bare name means the official weights, which
        this tool downloads there itself (with a record).
        """
        if _is_model_yaml(weights):
            return  # a yaml is not a pickle
        named = Path(self.options.pt) if self.options.pt is not None else None
        if named is not None and named.is_file() and os.path.samefile(named, weights):
            return
        if named is not None and _is_bare_name(named) and weights.name == named.name:
            if self._in_image_model_path(weights):
                return
        if is_recorded_download(weights, sha256):
            return
        raise ToolError(
            f"{weights} was found by searching, not named, and this tool did not download it; a .pt can run code "
            f"when loaded: if you trust it, set PT_PATH={os.path.abspath(weights)} (or --pt)",
            EXIT_USAGE,
        )

    def _in_image_model_path(self, weights: Path) -> bool:
        """True when `weights` sits in one of STANDARD_MODEL_PATHS (the image's /app, /app/models, ...)
        and neither it nor its folder leads into the shared volume (MODELS_DIR, ENGINE_DIR)."""
        volume = [Path(self.options.models_dir).resolve(), Path(self.options.engine_dir).resolve()]
        resolved = [weights.resolve(), weights.parent.resolve()]
        if any(path.is_relative_to(shared) for path in resolved for shared in volume):
            return False
        return any(os.path.isdir(d) and os.path.samefile(weights.parent, d) for d in STANDARD_MODEL_PATHS)

    @staticmethod
    def _load_yaml_cfg(path: Path) -> dict[str, Any]:
        """ultralytics' model dict for a yaml; a bare yolo11n.yaml resolves to its cfg yolo11.yaml, scale n."""
        _import_torch_stack()
        from ultralytics.nn.tasks import yaml_model_load

        try:
            cfg = yaml_model_load(str(path))
        except Exception:
            raise ToolError(
                f"--pt {path}: model yaml not found or unreadable (neither a file nor an ultralytics model cfg "
                "like yolo11n.yaml)",
                EXIT_USAGE,
            ) from None
        if not isinstance(cfg, dict) or "backbone" not in cfg or "head" not in cfg:
            raise ToolError(f"--pt {path}: not an ultralytics model yaml (no backbone/head)", EXIT_USAGE)
        return cfg

    def _source_sha256(self, source: Path) -> str:
        """sha256 of the weights file; for a yaml, of the resolved model dict (scale included)."""
        if _is_model_yaml(source):
            cfg = self._load_yaml_cfg(source)
            return sha256_of_bytes(json.dumps(cfg, sort_keys=True, default=str).encode())
        return sha256_of_file(source)

    # -- export ----------------------------------------------------------------------------

    def load_detection_model(self, source: Path) -> Any:
        """The ultralytics DetectionModel from a checkpoint or a model yaml; ToolError if it is not one."""
        torch = _import_torch_stack()
        from ultralytics.nn import tasks
        from ultralytics.nn.tasks import DetectionModel, guess_model_task

        if _is_model_yaml(source):
            cfg = self._load_yaml_cfg(source)
            head_module = str(cfg["head"][-1][2]) if cfg["head"] and len(cfg["head"][-1]) > 2 else ""
            task = (
                "detect" if head_module == "RTDETRDecoder" else guess_model_task(cfg)
            )  # ultralytics guesses None for it
            if task != "detect":
                raise ToolError(
                    f"{source}: a {task} model, not a detection model; give a YOLO detection model", EXIT_USAGE
                )
            model_class = {
                "RTDETRDecoder": tasks.RTDETRDetectionModel,
                "WorldDetect": tasks.WorldModel,
                "YOLOEDetect": tasks.YOLOEModel,
            }.get(head_module, DetectionModel)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_YAML_SEED)
                try:
                    model = model_class(cfg, verbose=False)
                except Exception as error:
                    raise ToolError(
                        f"{source}: cannot build the model ({type(error).__name__}: {error})", EXIT_USAGE
                    ) from None
            model.names = self._yaml_class_names(int(model.model[-1].nc))
        else:
            check_checkpoint_archive(source)
            try:
                model = load_checkpoint_safely(source)
            except ToolError:
                raise
            except Exception as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise ToolError(
                    f"{source} is not a loadable YOLO checkpoint "
                    f"({type(error).__name__}{': ' + first[:160] if first else ''}); re-download or re-export it",
                    EXIT_USAGE,
                ) from None
        self._check_detector(model, source)
        return model

    @staticmethod
    def _check_detector(model: Any, source: Path) -> None:
        from ultralytics.nn.modules.head import Detect, RTDETRDecoder

        layers = getattr(model, "model", None)
        head = layers[-1] if layers is not None and len(layers) else None
        task = getattr(model, "task", None)
        # Segment, Pose, OBB, YOLOE/World heads subclass Detect: accept the plain detectors only
        if (
            head is None
            or not isinstance(head, (Detect, RTDETRDecoder))
            or type(head).__name__ not in _SERVED_HEADS
            or (task and task != "detect")
        ):
            kind = task or type(head).__name__
            raise ToolError(
                f"{source}: a {kind} model (head {type(head).__name__}), not a YOLO detection model; give a "
                "detection .pt",
                EXIT_USAGE,
            )

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
        strides = getattr(model, "stride", None)
        _check_model_stride(source, imgsz, int(max(strides)) if strides is not None else None)
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
        _set_metadata(model_proto, layout_metadata(model_name, imgsz, names, source.name, source_sha256))
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
            return [str(names[key]) for key in _class_index_order(names)]
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
        from ultralytics.nn.modules.head import Detect, RTDETRDecoder

        model = copy.deepcopy(model)  # every attribute below is set on our copy only
        for parameter in model.parameters():
            parameter.requires_grad = False
        model = model.float().eval()
        head = model.model[-1]
        if getattr(head, "one2one_cv2", None) is not None:
            if getattr(head, "cv2", None) is None:
                raise ToolError(
                    "this model has only an end-to-end (NMS-free) head; export needs the one-to-many head (nvinfer "
                    "does the NMS)",
                    EXIT_USAGE,
                )
            head._end2end = False  # one-to-many branch: nvinfer cluster-mode=2 does the NMS
        model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
        rtdetr = isinstance(head, RTDETRDecoder)
        for module in model.modules():
            if isinstance(module, Detect):
                module.export, module.format, module.dynamic = True, "onnx", False
                module.xyxy = True  # corners straight from the distance decode
                module.shape = None
                if hasattr(model, "pe") and hasattr(module, "fuse") and not hasattr(module, "lrpc"):
                    module.fuse(model.pe.to(self.device))  # YOLOE: text prompt embeddings into the head
            elif isinstance(module, RTDETRDecoder):  # [B,300,6] normalised cx,cy,w,h, score, class
                module.export, module.format, module.dynamic = True, "onnx", False
                module.max_det = module.num_queries  # as PyTorch predicts: the top num_queries (300)
            elif isinstance(module, C2f):
                module.forward = module.forward_split  # Split instead of Chunk: a cleaner graph
        model = model.to(self.device)

        class DeepStreamOutput(torch.nn.Module):
            """[B,4+nc,N] xyxy + class scores -> [B,N,6] x1,y1,x2,y2,score,class."""

            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, images: torch.Tensor) -> torch.Tensor:
                if rtdetr:  # normalised centre boxes of the (square) input -> pixel corners
                    rows = self.inner(images)
                    xy, wh = rows[..., 0:2] * imgsz, rows[..., 2:4] * imgsz
                    return torch.cat((xy - wh / 2, xy + wh / 2, rows[..., 4:6]), dim=-1)
                rows = self.inner(images).transpose(1, 2)
                score, class_id = rows[..., 4:].max(dim=-1, keepdim=True)
                return torch.cat((rows[..., :4], score, class_id.to(rows.dtype)), dim=-1)

        wrapper = DeepStreamOutput(model).eval()
        dummy = torch.zeros(1, 3, imgsz, imgsz, device=self.device)
        # the dry run only has to catch shape errors with a readable trace: at the smallest input
        # the strides allow it costs ~1/400 of a forward at 1280 (several seconds for yolo11x on a CPU)
        stride = int(max(float(torch.as_tensor(getattr(model, "stride", 32.0)).max()), 32.0))
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            # TorchScript-exporter deprecation and tracer notes about the head's shape cache: expected
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            wrapper(torch.zeros(1, 3, 2 * stride, 2 * stride, device=self.device))
            for module in model.modules():
                if isinstance(module, Detect):
                    module.shape = None  # anchors for imgsz are made while tracing, then folded to constants
            torch.onnx.export(
                wrapper,
                (dummy,),
                buffer,
                opset_version=ONNX_OPSET,
                input_names=[ONNX_INPUT_NAME],
                output_names=[ONNX_OUTPUT_NAME],
                dynamic_axes={ONNX_INPUT_NAME: {0: "batch"}, ONNX_OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
                dynamo=False,  # the dynamo exporter fails on these models
            )
        return buffer.getvalue()

    # -- a given ONNX ----------------------------------------------------------------------

    def _from_onnx(self, path: Path) -> OnnxModel:
        imgsz = self.options.imgsz
        model_proto = _load_onnx(path)
        graph = model_proto.graph
        given_dims = [_dims(i) for i in _image_inputs(graph)]
        in_dims = given_dims[0] if len(given_dims) == 1 else []
        if len(in_dims) == 4:
            for axis, label in ((2, "height"), (3, "width")):
                if not _is_dynamic(in_dims[axis]) and in_dims[axis] != imgsz:
                    raise ToolError(
                        f"{path}: input {label} is {in_dims[axis]} but --imgsz is {imgsz}; pass --imgsz "
                        f"{in_dims[axis]} or re-export at {imgsz}",
                        EXIT_USAGE,
                    )
        given_out = _dims(graph.output[0]) if len(graph.output) == 1 else []
        _settle_output_shape(model_proto, imgsz)  # simplify=False: symbolic output dims
        layout = _graph_layout(model_proto, path)
        image_input = _image_inputs(graph)[0]
        meta = _read_metadata(model_proto)
        _check_model_stride(path, imgsz, meta.get("stride"))
        nms_batch = _embedded_nms_batch(model_proto)
        max_batch = self.options.max_batch
        if nms_batch and nms_batch < max_batch:
            raise ToolError(
                f"{path}: ultralytics' embedded NMS (export nms=True) was traced for batch {nms_batch}, so images "
                f"{nms_batch + 1}..{max_batch} of a batch would get no detections; export again without nms=True "
                f"(nvinfer does the NMS) or with nms=True batch={max_batch} dynamic=True",
                EXIT_USAGE,
            )
        names = self._given_class_names(path, meta, layout, _dims(graph.output[0]))
        fix_hw = _is_dynamic(in_dims[2]) or _is_dynamic(in_dims[3])
        rename = image_input.name != ONNX_INPUT_NAME or graph.output[0].name != ONNX_OUTPUT_NAME
        float32 = _import_onnx_stack()[0].TensorProto.FLOAT
        recast = (
            image_input.type.tensor_type.elem_type != float32 or graph.output[0].type.tensor_type.elem_type != float32
        )
        settled = _dims(graph.output[0]) != given_out
        if layout == "deepstream" and not fix_hw and not rename and not recast and not settled:
            result = OnnxModel(path, meta.get(META_MODEL, path.stem), imgsz, names, "given")
        else:
            result = self._adapt(path, model_proto, layout, names, fix_hw)
        del model_proto
        if META_SOURCE_SHA256 not in meta or result.origin == "adapted":  # not one of our own exports
            try:
                check_batch_slots(result.path, imgsz, min(max_batch, 2))
            except ToolError:
                if result.origin == "adapted":
                    _remove_quietly(result.path)
                raise
        return result

    def _given_class_names(self, path: Path, meta: dict[str, str], layout: str, out_dims: list[Any]) -> list[str]:
        columns = {"ultralytics": out_dims[1], "rtdetr_scores": out_dims[2]}.get(layout)  # 4+nc; [B,N,6] does not say
        nc = int(columns) - 4 if columns is not None else None
        names = _names_from_metadata(meta)
        origin = "the ONNX metadata"
        labels = path.with_name(LABELS_FILE_NAME)
        if names is None and labels.is_file():
            try:
                names, origin = read_labels(labels), str(labels)
            except (OSError, UnicodeDecodeError) as error:
                reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else error.strerror
                raise ToolError(
                    f"{labels} cannot be read ({reason}); the ONNX {path.name} names no classes, so fix or "
                    f"remove {LABELS_FILE_NAME}",
                    EXIT_USAGE,
                ) from None
        if names is None:
            count = nc if nc is not None else DEFAULT_CLASS_COUNT
            notice(
                f"{path} names no classes and has no {LABELS_FILE_NAME} next to it; using class0..class{count - 1}"
                + ("" if nc is not None else f" (assumed {count} classes)")
            )
            return default_class_names(count)
        if nc is not None and len(names) != nc:
            raise ToolError(
                f"{path}: the model has {nc} classes but {origin} names {len(names)}; fix {LABELS_FILE_NAME} or "
                "the export",
                EXIT_USAGE,
            )
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
        if meta and (meta.get(META_LAYOUT), meta.get(META_IMGSZ), meta.get(META_SOURCE_SHA256)) == (
            ONNX_LAYOUT,
            str(imgsz),
            source_sha,
        ):
            log(f"{target} already adapts {path}; using it", level=2)
            return OnnxModel(target, meta.get(META_MODEL, stem), imgsz, names, "adapted")
        graph = model_proto.graph
        image_input = _image_inputs(graph)[0]
        if fix_hw:  # TensorRT then sees only the batch axis as dynamic
            for axis in (2, 3):
                dim = image_input.type.tensor_type.shape.dim[axis]
                dim.Clear()
                dim.dim_value = imgsz
            del graph.value_info[:]  # stale symbolic shapes; TensorRT infers them again
        _rename_value(graph, image_input.name, ONNX_INPUT_NAME)
        _float32_boundaries(model_proto)  # half exports traced on a GPU have float16 inputs/outputs
        if layout == "deepstream":
            _rename_value(graph, graph.output[0].name, ONNX_OUTPUT_NAME)
        else:
            _append_layout_adapter(model_proto, layout, imgsz)
        _sort_topologically(graph)  # half=True exports come out of order; the adapter goes last
        _set_metadata(model_proto, layout_metadata(stem, imgsz, names, path.name, source_sha))
        try:
            data = model_proto.SerializeToString()
        except ValueError:
            raise ToolError(
                f"{path} is over 2 GB (external data); export a smaller model or pass --pt", EXIT_USAGE
            ) from None
        onnx, _ = _import_onnx_stack()
        try:  # refused here, nothing is written
            onnx.checker.check_model(data)
        except Exception as error:
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise ToolError(
                f"{path}: the adapted copy fails the ONNX checker ({first}); export it again with ultralytics' "
                "defaults or pass --pt",
                EXIT_USAGE,
            ) from None
        atomic_write_bytes(target, data)
        log(f"adapted {path} to the DeepStream layout: {target}")
        return OnnxModel(target, stem, imgsz, names, "adapted")

    # -- validate --------------------------------------------------------------------------

    def validate(self, path: Path, full: bool | None = None) -> Reference:
        """Checker, the input/output contract, and onnxruntime (CPU) on the reference image.

        Batch 1 only by default: its output is the reference the engine is compared with after
        the build (which runs min/opt/max on the GPU). full=True (--validate full, for machines
        without a GPU) also runs the profile batches, the image repeated, every slot compared.
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
            raise ToolError(
                f"{path} fails the ONNX checker "
                f"({str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__}); "
                "export it again",
                EXIT_USAGE,
            ) from None
        model_proto = _load_onnx(path, load_external_data=False)
        graph = model_proto.graph
        inputs = _image_inputs(graph)
        if (
            len(inputs) != 1
            or inputs[0].name != ONNX_INPUT_NAME
            or len(graph.output) != 1
            or graph.output[0].name != ONNX_OUTPUT_NAME
        ):
            raise ToolError(
                f"{path}: expected one input {ONNX_INPUT_NAME!r} and one output {ONNX_OUTPUT_NAME!r}, found "
                f"{[i.name for i in inputs]} -> {[o.name for o in graph.output]}",
                EXIT_USAGE,
            )
        float32 = onnx.TensorProto.FLOAT
        in_dims, out_dims = _dims(inputs[0]), _dims(graph.output[0])
        if inputs[0].type.tensor_type.elem_type != float32 or graph.output[0].type.tensor_type.elem_type != float32:
            raise ToolError(f"{path}: input and output must be float32", EXIT_USAGE)
        if len(in_dims) != 4 or not _is_dynamic(in_dims[0]) or in_dims[1:] != [3, imgsz, imgsz]:
            raise ToolError(
                f"{path}: input shape {in_dims} is not [batch,3,{imgsz},{imgsz}] with only the batch dynamic",
                EXIT_USAGE,
            )
        if len(out_dims) != 3 or out_dims[2] != 6 or not _is_dynamic(out_dims[0]):
            raise ToolError(f"{path}: output shape {out_dims} is not [batch,N,6]", EXIT_USAGE)
        names = _names_from_metadata(_read_metadata(model_proto))
        del model_proto
        if full is None:
            full = options.validate == "full"
        batches = distinct_batches(1, options.min_batch, options.opt_batch, options.max_batch) if full else [1]
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ToolError(
                f"{path}: onnxruntime cannot load it ({type(error).__name__}); export it again", EXIT_USAGE
            ) from None
        image, image_name = letterbox_image(reference_image_path(), imgsz)
        settings = DecodeSettings(
            imgsz,
            len(names) if names else 1 << 16,
            options.pre_cluster_threshold,
            options.nms_iou_threshold,
            options.topk,
        )
        reference: Reference | None = None
        anchors = out_dims[1] if not _is_dynamic(out_dims[1]) else None
        baseline, per_image = _rss_bytes(), 0
        checked: list[int] = []
        for done, batch in enumerate(batches):
            available = _available_memory_bytes()
            if checked and per_image and available is not None and per_image * batch > 0.8 * available:
                # yolo11x at 1280 needs about 1 GB of host RAM per image on onnxruntime CPU
                notice(
                    f"onnxruntime check at batch {batch} skipped: it needs about {per_image * batch >> 20} MiB, "
                    f"{available >> 20} MiB available (TensorRT still builds the profile up to --max-batch "
                    f"{options.max_batch})"
                )
                break
            bar.update(f"onnxruntime batch {batch} on {image_name}", done, len(batches))
            images = np.ascontiguousarray(np.broadcast_to(image, (batch, *image.shape)))
            try:
                (output,) = session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: images})
            except Exception as error:
                raise ToolError(
                    f"{path}: onnxruntime failed at batch {batch} ({type(error).__name__}: "
                    f"{str(error).strip().splitlines()[0][:160] if str(error).strip() else ''}); export it again",
                    EXIT_USAGE,
                ) from None
            anchors = anchors or output.shape[1]
            if output.shape != (batch, anchors, 6) or output.dtype != np.float32:
                raise ToolError(
                    f"{path}: onnxruntime output at batch {batch} is {list(output.shape)} {output.dtype}, expected "
                    f"[{batch},{anchors},6] float32",
                    EXIT_USAGE,
                )
            if not np.isfinite(output).all():
                raise ToolError(f"{path}: onnxruntime output at batch {batch} has NaN/Inf; export it again", EXIT_USAGE)
            if reference is None:
                reference = Reference(image, image_name, output[0].copy(), settings)
            for slot in range(batch):  # the same image in every slot: the same boxes up to float noise
                result = compare_detections(reference.rows, output[slot], settings, SLOT_MIN_IOU, SLOT_SCORE_TOLERANCE)
                if not result.ok:
                    raise ToolError(
                        f"{path}: onnxruntime at batch {batch} slot {slot} differs from batch 1 on the same image "
                        f"({result.figures()}; {SLOT_LIMITS}); the graph mixes batch slots, export it again",
                        EXIT_USAGE,
                    )
            checked.append(batch)
            # onnxruntime's arena keeps what the run needed, so resident growth approximates its peak; at
            # least the input and output themselves (freed memory reused by the arena can hide the growth)
            per_image = max(per_image, (_rss_bytes() - baseline) // batch, (images.nbytes + output.nbytes) // batch)
            del images, output
        del session
        assert reference is not None
        boxes = len(reference.detections)
        bar.finish(
            f"valid: [B,3,{imgsz},{imgsz}] -> [B,{anchors},6], onnxruntime batch {','.join(map(str, checked))} on "
            f"{image_name}: {boxes} boxes (the reference for the engine)"
        )
        return reference


# --------------------------------------------------------------------------------------------
# 4. Build: EngineBuilder, the engine cache and the fleet store
# --------------------------------------------------------------------------------------------

SIDECAR_SCHEMA = 1
LOCK_TIMEOUT_ENV = "BUILD_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = 3600.0  # a yolo11x build on a small GPU can take 20+ minutes


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def modelopt_available() -> bool:
    """ModelOpt AutoCast is TensorRT 11's route to FP16; find_spec does not import it."""
    from importlib.util import find_spec

    try:
        return find_spec("modelopt") is not None
    except (ImportError, ValueError):
        return False


def resolve_precision(request: str, gpu: GpuInfo | None, tensorrt_version: str | None) -> tuple[str, str]:
    """(precision to build, why). Decided before the build so the engine name is known up front."""
    if request == "fp32":
        return "fp32", "asked for FP32"
    if gpu is not None and not gpu.fast_fp16:
        if request == "fp16":
            return "fp16", f"asked for FP16 (note: compute capability {gpu.compute_capability} is slow at FP16)"
        return "fp32", f"compute capability {gpu.compute_capability} has no fast FP16"
    if gpu is None and request == "auto":
        return "fp16", "auto: FP16 if the GPU is fast at it; no GPU here to decide"
    if tensorrt_version and trt_major(tensorrt_version) >= 11 and not modelopt_available():
        return "fp32", "TensorRT 11 builds FP16 only from an AutoCast ONNX and nvidia-modelopt[onnx] is not installed"
    return "fp16", "asked for FP16" if request == "fp16" else "GPU is fast at FP16"


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes an engine right for this run; equal keys mean reuse."""

    model: str
    imgsz: int
    min_batch: int
    opt_batch: int
    max_batch: int
    precision_request: str
    precision: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FileStamp:
    """Size and mtime decide whether a file must be hashed again (the warm path never hashes)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: Path, known: FileStamp | None = None) -> FileStamp:
        stat = path.stat()
        resolved = str(path.resolve())
        if known and known.path == resolved and known.size == stat.st_size and known.mtime_ns == stat.st_mtime_ns:
            return known
        return cls(resolved, stat.st_size, stat.st_mtime_ns, sha256_of_file(path))

    @classmethod
    def from_json(cls, data: Any) -> FileStamp | None:
        try:
            return cls(str(data["path"]), int(data["size"]), int(data["mtime_ns"]), str(data["sha256"]))
        except (TypeError, KeyError, ValueError):
            return None


@dataclass
class EnginePlan:
    """Where the engine for this run lives and the key it must carry."""

    key: EngineKey
    stem: str
    engine_dir: Path
    precision_reason: str
    gpu: GpuInfo | None

    @property
    def engine_path(self) -> Path:
        return self.engine_dir / f"{self.stem}.engine"

    @property
    def sidecar_path(self) -> Path:
        return self.engine_dir / f"{self.stem}.json"

    @property
    def timing_cache_path(self) -> Path:
        return self.engine_dir / f"timing-{sm_name(self.key.compute_capability)}-trt{self.key.tensorrt_version}.cache"


def engine_stem(key: EngineKey, slug: str) -> str:
    sm = sm_name(key.compute_capability)
    return f"{key.model}_{key.imgsz}_b{key.max_batch}_{key.precision}_{sm}-{slug}_trt{key.tensorrt_version}"


def model_label(options: Options) -> str:
    """The model part of the engine name: the file's stem when --pt/--onnx is given."""
    source = options.onnx or options.pt
    if source is None:
        return options.model
    label = Path(source).name
    for suffix in (".onnx", ".pt", ".yaml", ".yml"):
        label = label.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label) or "model"


def plan_engine(options: Options, gpu: GpuInfo, tensorrt_version: str) -> EnginePlan:
    precision, reason = resolve_precision(options.precision, gpu, tensorrt_version)
    key = EngineKey(
        model=model_label(options),
        imgsz=options.imgsz,
        min_batch=options.min_batch,
        opt_batch=options.opt_batch,
        max_batch=options.max_batch,
        precision_request=options.precision,
        precision=precision,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        tensorrt_version=tensorrt_version,
    )
    return EnginePlan(key, engine_stem(key, gpu.slug), Path(options.engine_dir).absolute(), reason, gpu)


@dataclass
class Sidecar:
    """The JSON written next to each engine, last, so a half-built engine never looks valid."""

    key: EngineKey
    precision_built: str
    engine_file: str
    engine_size: int
    engine_sha256: str
    onnx: FileStamp
    source: FileStamp | None
    class_names: list[str]
    profile: dict[str, Any]
    gpu: dict[str, Any]
    driver_version: str | None
    cuda_driver_version: str | None
    cuda_toolkit_version: str | None
    workspace_mb: int
    builder_optimization_level: int | None
    built_at: str
    build_seconds: float
    tool_version: str = TOOL_VERSION
    schema: int = SIDECAR_SCHEMA
    engine_check: dict[str, Any] | None = None  # the engine vs ONNX comparison (EngineCheck), or why it did not run
    precision_fallback: str | None = None  # why an FP16 request was built in FP32
    timeline: list[dict[str, Any]] = field(default_factory=list)  # the first start, phase by phase
    origin: dict[str, Any] | None = None  # None: built here; {"how": "pulled", "store": ...} from the fleet store

    @property
    def max_batch(self) -> int:
        return int(self.profile["max"][0])

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["key"] = self.key.as_json()
        return data

    @classmethod
    def read(cls, path: Path) -> Sidecar:
        """Raises ValueError with the reason when the file is missing or not ours."""
        try:
            data = json.loads(read_regular_file(Path(path)).decode("utf-8"))
        except IsADirectoryError:
            raise ValueError(f"sidecar {Path(path).name} is a directory") from None
        except NotRegularFileError as error:  # a FIFO: reading it would hang the start and the healthcheck
            raise ValueError(f"sidecar {Path(path).name} is {error.strerror}, not a regular file") from None
        except PermissionError:  # not "no sidecar": another uid built it with a mode this uid cannot read
            raise ToolError(
                f"uid {os.getuid()} cannot read the sidecar {path} (permission denied): the engine there was built "
                "by another uid; share the volume through a group (setgid directory, umask 0027 or 0007: README "
                "Security) or run as that uid",
                EXIT_USAGE,
            ) from None
        except OSError:
            raise ValueError(f"no sidecar {Path(path).name}") from None
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, absurd nesting
            raise ValueError(f"sidecar {Path(path).name} is not valid JSON") from None
        problem = _sidecar_shape_problem(data)
        if problem:
            raise ValueError(f"sidecar {Path(path).name} is damaged ({problem})")
        try:
            if data.get("schema") != SIDECAR_SCHEMA:
                raise ValueError(f"sidecar schema {data.get('schema')} is not {SIDECAR_SCHEMA}")
            onnx = FileStamp.from_json(data["onnx"])
            if onnx is None:
                raise ValueError("sidecar has no ONNX record")
            fields = {f.name for f in dataclasses.fields(cls)}
            values = {name: data[name] for name in fields if name in data}
            values.update(key=EngineKey(**data["key"]), onnx=onnx, source=FileStamp.from_json(data.get("source")))
            return cls(**values)
        except (KeyError, TypeError) as error:
            raise ValueError(f"sidecar {Path(path).name} is incomplete ({error})") from None


def _sidecar_shape_problem(data: Any) -> str | None:
    """What is wrong with the types of a parsed sidecar (or with the ONNX path it hands the nvinfer
    config), or None: a damaged one must read as stale and be rebuilt, never crash or stop the start
    or the healthcheck."""

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    key = data.get("key")
    if not isinstance(key, dict):
        return "no key object"
    for name, kind in (
        ("model", str),
        ("imgsz", int),
        ("min_batch", int),
        ("opt_batch", int),
        ("max_batch", int),
        ("precision_request", str),
        ("precision", str),
        ("gpu_name", str),
        ("compute_capability", str),
        ("tensorrt_version", str),
    ):
        if not (is_int(key.get(name)) if kind is int else isinstance(key.get(name), kind)):
            return f"key.{name} is not a {kind.__name__}"
    profile = data.get("profile")
    if not isinstance(profile, dict):
        return "profile is not an object"
    for name in ("min", "opt", "max"):
        shape = profile.get(name)
        if not isinstance(shape, list) or len(shape) != 4 or not all(is_int(v) and v > 0 for v in shape):
            return f"profile.{name} is not a shape of 4 positive integers"
    names = data.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "class_names is not a list of strings"
    if data.get("precision_built") not in NETWORK_MODE:
        return f"precision_built {str(data.get('precision_built'))[:20]!r} is not one of {', '.join(NETWORK_MODE)}"
    for name in ("engine_size", "workspace_mb"):
        if not is_int(data.get(name)) or data[name] < 0:
            return f"{name} is not a non-negative integer"
    for name in ("engine_sha256", "engine_file"):
        if not isinstance(data.get(name), str):
            return f"{name} is not a string"
    if not isinstance(data.get("gpu", {}), dict):
        return "gpu is not an object"
    for name in ("onnx", "source"):
        stamp = data.get(name)
        if name == "source" and stamp is None:  # no weights file (an earlier export was reused)
            continue
        if not isinstance(stamp, dict):
            return f"{name} is not an object"
        if not isinstance(stamp.get("path"), str) or not isinstance(stamp.get("sha256"), str):
            return f"{name}.path or {name}.sha256 is not a string"
        if not is_int(stamp.get("size")) or stamp["size"] < 0:  # 1e999 / Infinity read as a float
            return f"{name}.size is not a non-negative integer"
        if not is_int(stamp.get("mtime_ns")):
            return f"{name}.mtime_ns is not an integer"
    problem = config_value_problem(data["onnx"]["path"])  # it goes into the nvinfer config (onnx-file=)
    if problem is not None:
        return f"onnx.path contains {problem}"
    return None


@dataclass
class CacheState:
    valid: bool
    reason: str
    sidecar: Sidecar | None = None


def check_engine(plan: EnginePlan, options: Options) -> CacheState:
    """The warm-path check: read the sidecar, stat the engine; hash only a source whose stat changed."""
    import stat

    try:
        sidecar = Sidecar.read(plan.sidecar_path)
    except ValueError as error:
        return CacheState(False, str(error))
    if sidecar.key != plan.key:
        diffs = [
            f"{name} {getattr(sidecar.key, name)!r} -> {getattr(plan.key, name)!r}"
            for name in plan.key.as_json()
            if getattr(sidecar.key, name) != getattr(plan.key, name)
        ]
        return CacheState(False, "engine key changed: " + ", ".join(diffs), sidecar)
    try:
        engine_stat = plan.engine_path.stat()
    except OSError:
        return CacheState(False, f"engine file {plan.engine_path.name} is missing", sidecar)
    if not stat.S_ISREG(engine_stat.st_mode):  # a directory, or a FIFO that hashing would wait on forever
        return CacheState(False, f"engine path {plan.engine_path.name} is {_file_kind(engine_stat.st_mode)}", sidecar)
    size = engine_stat.st_size
    if size != sidecar.engine_size:
        return CacheState(
            False,
            f"engine size {size} differs from the sidecar's {sidecar.engine_size} (truncated or replaced)",
            sidecar,
        )
    if options.deep:  # reads the whole engine: --deep, or the healthcheck's first --check after a build
        try:
            digest = sha256_of_file(plan.engine_path)
        except OSError as error:
            return CacheState(False, f"engine file {plan.engine_path.name} is not readable ({error.strerror})", sidecar)
        if digest != sidecar.engine_sha256:
            return CacheState(
                False, "engine sha256 differs from the sidecar's (the file is damaged); rebuild with --force", sidecar
            )
    given = given_model_file(options)
    if given is not None and not (
        sidecar.source is None and not given.exists()
    ):  # None: built from an earlier export of absent weights
        recorded = sidecar.source
        try:
            current = FileStamp.of(given, recorded)
        except OSError:
            return CacheState(False, f"{given} is not readable or not there yet", sidecar)
        if recorded is None or current.sha256 != recorded.sha256:
            return CacheState(False, f"{given.name} changed since the engine was built", sidecar)
    return CacheState(True, "engine matches this GPU, TensorRT and options", sidecar)


def _stamp_or_none(path: Path | None) -> FileStamp | None:
    """The model file's stamp for the sidecar; None when there is none (weights absent, ONNX reused)."""
    if path is None or not path.is_file():
        return None
    try:
        return FileStamp.of(path)
    except OSError as error:
        raise ToolError(f"cannot read {path} ({error.strerror}); fix its permissions", EXIT_USAGE) from None


def given_model_file(options: Options) -> Path | None:
    """The --pt/--onnx file as the exporter locates it, resolved once per run and carried through
    check, build and sidecar: a bare name found in a standard path or MODELS_DIR is that file; a bare
    model yaml (yolo11n.yaml) is ultralytics' own cfg file. None when neither flag is given."""
    given = options.onnx or options.pt
    if given is None:
        return None
    if options.resolved_source is not None:
        return options.resolved_source
    try:
        onnx_path, weights = locate_model_files(options)
    except ToolError:
        return Path(given)
    located = onnx_path if onnx_path is not None else weights
    assert located is not None
    if _is_model_yaml(located) and _is_bare_name(located) and not located.is_file():
        located = ultralytics_cfg_file(located) or located
    options.resolved_source = located
    return located


def ultralytics_cfg_file(name: Path) -> Path | None:
    """The yaml ultralytics loads for a bare cfg name (yolo11n.yaml -> .../cfg/models/11/yolo11.yaml),
    found without importing ultralytics (the warm path must not pay for it)."""
    from importlib.util import find_spec

    try:
        spec = find_spec("ultralytics")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    cfg = Path(list(spec.submodule_search_locations)[0]) / "cfg"
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", name.name)  # ultralytics' own rule
    for candidate in dict.fromkeys((name.name, unified)):
        found = sorted(cfg.rglob(candidate))
        if found:
            return found[0]
    return None


# -- locking ---------------------------------------------------------------------------------


class BuildLock:
    """`ENGINE_DIR/.build.lock` through filelock; a waiting process says who holds it.

    The lock file itself is never deleted (another process may be opening it); the holder's
    pid/host/start time go to a sibling `.build.lock.owner` for the message.
    """

    def __init__(self, engine_dir: Path, timeout_s: float | None = None) -> None:
        self.path = engine_dir / LOCK_FILE_NAME
        self.owner_path = engine_dir / (LOCK_FILE_NAME + ".owner")
        if timeout_s is None:
            try:
                timeout_s = float(os.environ.get(LOCK_TIMEOUT_ENV) or DEFAULT_LOCK_TIMEOUT_S)
            except ValueError:
                raise ToolError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds") from None
        self.timeout_s = timeout_s
        self._lock: Any = None

    def __enter__(self) -> BuildLock:
        try:
            from filelock import FileLock, Timeout
        except ImportError:
            raise ToolError("filelock is not installed; pip install filelock", EXIT_ENVIRONMENT) from None
        self._check_lock_file()
        self._lock = FileLock(str(self.path))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            log(
                f"another process holds {self.path} ({self._owner()}); waiting up to {self.timeout_s:.0f}s "
                f"({LOCK_TIMEOUT_ENV})"
            )
            try:
                self._lock.acquire(timeout=self.timeout_s)
            except Timeout:
                raise ToolError(
                    f"timed out after {self.timeout_s:.0f}s waiting for {self.path} ({self._owner()}); raise "
                    f"{LOCK_TIMEOUT_ENV} or stop the other build",
                    EXIT_BUILD_FAILED,
                ) from None
        except OSError as error:
            raise self._open_error(error) from None
        owner = {"pid": os.getpid(), "host": os.uname().nodename, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            atomic_write_text(self.owner_path, json.dumps(owner))
        except ToolError:
            pass
        return self

    def _check_lock_file(self) -> None:
        """The lock must be a regular file in ENGINE_DIR: a symlink (to a file, dangling) or a FIFO,
        device, directory is refused, and the file is created with O_NOFOLLOW, so nothing outside
        the volume is ever created, truncated or chmod'ed through it. Mode: 0666 minus the umask."""
        import stat

        try:
            st: os.stat_result | None = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as error:
            raise self._open_error(error) from None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise self._not_regular(st.st_mode)
        flags = os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as error:
            raise self._open_error(error) from None
        try:
            mode = os.fstat(fd).st_mode
        finally:
            os.close(fd)
        if not stat.S_ISREG(mode):
            raise self._not_regular(mode)

    def _not_regular(self, mode: int) -> ToolError:
        import stat

        kind = "a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        return ToolError(
            f"{self.path} is {kind}; the build lock must be a plain file in ENGINE_DIR: remove it (nothing it "
            "points to was touched)",
            EXIT_USAGE,
        )

    def _open_error(self, error: OSError) -> ToolError:
        import errno

        if error.errno == errno.ELOOP:
            return ToolError(
                f"{self.path} is a symlink; the build lock must be a plain file in ENGINE_DIR: remove it (nothing "
                "it points to was touched)",
                EXIT_USAGE,
            )
        if isinstance(error, PermissionError) and self.path.exists():
            try:
                st = self.path.stat()
                detail = f"mode {st.st_mode & 0o777:04o}, owner uid {st.st_uid} gid {st.st_gid}"
            except OSError:
                detail = "not readable"
            return ToolError(
                f"{self.path} is not writable by uid {os.getuid()} ({detail}); several uids on one volume need a "
                "group-writable ENGINE_DIR and umask 0002 or 0007 (README: Security)",
                EXIT_USAGE,
            )
        return ToolError(f"cannot create {self.path} ({error.strerror}); make ENGINE_DIR writable", EXIT_USAGE)

    def _owner(self) -> str:
        try:
            owner = json.loads(read_regular_file(self.owner_path))
            return f"pid {owner['pid']} on {owner['host']} since {owner['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def __exit__(self, *exc: object) -> None:
        _remove_quietly(self.owner_path)
        self._lock.release()

    def acquire_if_free(self) -> bool:
        """Take the lock only if nobody holds it, with the same lock-file checks as a build; False
        when it is held or unusable (the caller skips its optional work). Release with release()."""
        try:
            from filelock import FileLock, Timeout

            self._check_lock_file()
        except (ImportError, ToolError):
            return False
        self._lock = FileLock(str(self.path))
        try:
            self._lock.acquire(timeout=0)
        except (Timeout, OSError):
            return False
        return True

    def release(self) -> None:
        self._lock.release()


# -- cancellation ----------------------------------------------------------------------------


class CancelToken:
    """Set by SIGINT/SIGTERM; the progress monitor returns False so TensorRT stops the build."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_number: int | None = None

    def cancel(self, signal_number: int) -> None:
        self.signal_number = signal_number
        _SIGNALS_RECEIVED.append(signal_number)  # main() exits 130/143 even if the install completes
        self.event.set()

    @property
    def exit_code(self) -> int:
        import signal

        return EXIT_SIGTERM if self.signal_number == signal.SIGTERM else EXIT_SIGINT


class BuildCancelled(Exception):
    pass


_SIGNALS_RECEIVED: list[int] = []  # SIGINT/SIGTERM seen during this run, in order
_RAISE_ON_SIGNAL = [True]  # main() clears it once the exit code is decided


def _signal_exit_code() -> int:
    import signal

    return EXIT_SIGTERM if _SIGNALS_RECEIVED and _SIGNALS_RECEIVED[-1] == signal.SIGTERM else EXIT_SIGINT


def install_interrupt_handlers() -> Callable[[], None]:
    """SIGINT and SIGTERM both become KeyboardInterrupt (and are remembered), so that any phase of
    the step (import, export, install, config) ends with 130/143 and never reports success."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(number: int, _frame: Any) -> None:
        _SIGNALS_RECEIVED.append(number)
        if _RAISE_ON_SIGNAL[0]:
            raise KeyboardInterrupt

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def install_cancel_handlers(token: CancelToken) -> Callable[[], None]:
    """Turn SIGINT/SIGTERM into a cancel request; returns a function that restores the old handlers."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda number, _frame: token.cancel(number))

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


# -- the builder -----------------------------------------------------------------------------


def import_tensorrt() -> Any:
    try:
        with _signals_deferred():
            import tensorrt as trt
    except ImportError:
        if _SIGNALS_RECEIVED:
            raise KeyboardInterrupt from None
        raise ToolError(
            "TensorRT not found; run inside the DeepStream image or pip install tensorrt", EXIT_ENVIRONMENT
        ) from None
    return trt


def make_trt_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps errors so a failed build can say why in one line."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            text = str(msg)
            if severity in (trt.Logger.ERROR, trt.Logger.INTERNAL_ERROR):
                self.errors.append(text)
                log(f"TensorRT error: {text}", level=1)
            elif severity == trt.Logger.WARNING:
                log(f"TensorRT warning: {text}", level=2)
            else:
                log(f"TensorRT: {text}", level=3)

    return CollectingLogger()


def make_progress_monitor(trt: Any, bar: ProgressBar, token: CancelToken) -> Any | None:
    """IProgressMonitor exists from TensorRT 10; 8.6 gets a heartbeat thread instead."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class BuildMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.totals: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.totals[phase_name] = num_steps
            bar.update(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar.update(phase_name, step + 1, self.totals.get(phase_name))
            return not token.event.is_set()  # False asks TensorRT to stop the build

        def phase_finish(self, phase_name: str) -> None:
            self.totals.pop(phase_name, None)

    return BuildMonitor()


def read_timing_cache(path: Path) -> bytes | None:
    """The saved timing cache of ENGINE_DIR, or None: missing, or not a readable regular file (a FIFO
    there is never opened; the cache this build saves replaces it)."""
    try:
        return read_regular_file(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        notice(f"the timing cache {path} cannot be read ({error.strerror}); building without it")
        return None


@dataclass
class BuildResult:
    plan_bytes: bytes
    precision_built: str
    builder_optimization_level: int | None
    timing_cache: bytes | None
    workspace_mb: int


class EngineBuilder:
    """Builds a serialized plan from a validated ONNX with whichever TensorRT (8.6, 10.x, 11.x) is here.

    Decisions are made by capability (hasattr), not by version tables: 11.x has no FP16 flag
    and no EXPLICIT_BATCH, 8.6 has no progress monitor.
    """

    def __init__(self, options: Options, plan: EnginePlan, token: CancelToken | None = None) -> None:
        self.options = options
        self.plan = plan
        self.token = token or CancelToken()

    def workspace_bytes(self) -> int:
        """The workspace asked for (flag, env or default alike), capped with a notice to what the GPU
        has free (or, where free memory is unknown, its total): a small GPU must not fail its first start."""
        requested = self.options.workspace_mb
        gpu = self.plan.gpu
        limit = (gpu.memory_free_mib or gpu.memory_total_mib) if gpu is not None else None
        if limit and requested > limit:
            kind = "free" if gpu is not None and gpu.memory_free_mib else "total"
            notice(f"workspace capped from {requested} MB to the GPU's {kind} {limit} MiB")
            requested = limit
        return requested * (1 << 20)

    def build(self, onnx_path: Path, timing_cache: bytes | None, precision: str | None = None) -> BuildResult:
        """precision: the plan's unless given (the FP32 rebuild after an FP16 engine failed the check)."""
        trt = import_tensorrt()
        logger = make_trt_logger(trt)
        if hasattr(trt, "init_libnvinfer_plugins"):
            trt.init_libnvinfer_plugins(logger, "")
        builder = trt.Builder(logger)
        precision = precision or self.plan.key.precision
        if precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
            onnx_path = self._autocast_fp16(onnx_path)
        network = builder.create_network(self._network_flags(trt))
        self._parse(trt, network, logger, onnx_path)
        input_name = self._check_input(network)
        config = builder.create_builder_config()
        workspace = self.workspace_bytes()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        if precision == "fp16" and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        size = self.plan.key.imgsz
        shapes = [
            (batch, 3, size, size)
            for batch in (self.plan.key.min_batch, self.plan.key.opt_batch, self.plan.key.max_batch)
        ]
        profile.set_shape(input_name, *shapes)
        config.add_optimization_profile(profile)
        self._use_timing_cache(config, timing_cache)
        plan_bytes = self._run_build(trt, builder, network, config, logger)
        # the builder adds its new timings to the cache we set: that is the merge
        new_cache = config.get_timing_cache()
        return BuildResult(
            plan_bytes,
            precision,
            getattr(config, "builder_optimization_level", None),
            bytes(new_cache.serialize()),
            workspace >> 20,
        )

    @staticmethod
    def _use_timing_cache(config: Any, saved: bytes | None) -> None:
        """Start from the saved cache of this GPU/TensorRT; a cache that does not fit starts anew."""
        cache = config.create_timing_cache(saved) if saved else None
        if cache is None or not config.set_timing_cache(cache, False):
            if saved:
                notice("the saved timing cache does not fit this GPU/TensorRT; starting a new one")
            config.set_timing_cache(config.create_timing_cache(b""), False)

    def _network_flags(self, trt: Any) -> int:
        flags = 0
        creation = trt.NetworkDefinitionCreationFlag
        # explicit batch is required before TensorRT 10, ignored in 10 and gone in 11
        if trt_major(self.plan.key.tensorrt_version) < 10 and hasattr(creation, "EXPLICIT_BATCH"):
            flags |= 1 << int(creation.EXPLICIT_BATCH)
        return flags

    def _autocast_fp16(self, onnx_path: Path) -> Path:
        """TensorRT 11 is strongly typed: FP16 must already be in the ONNX (NVIDIA's route: AutoCast).

        The mixed-precision copy goes to MODELS_DIR (a given ONNX may sit on a read-only mount).
        """
        try:
            from modelopt.onnx.autocast import convert_to_mixed_precision
        except ImportError:
            raise ToolError(
                "TensorRT 11 needs nvidia-modelopt[onnx] for FP16; pip install 'nvidia-modelopt[onnx]' or use "
                "--precision fp32",
                EXIT_ENVIRONMENT,
            ) from None
        log("converting the ONNX to mixed FP16 with ModelOpt AutoCast (TensorRT 11 takes precision from the ONNX)")
        model = convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16", keep_io_types=True)
        models_dir = Path(self.options.models_dir)
        _ensure_writable_dir(models_dir, "MODELS_DIR")
        target = models_dir / f"{onnx_path.stem}.fp16.onnx"
        atomic_write_bytes(target, model.SerializeToString())
        return target

    def _parse(self, trt: Any, network: Any, logger: Any, onnx_path: Path) -> None:
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
            raise ToolError(
                f"TensorRT cannot parse {onnx_path.name}: {'; '.join(errors) or 'unknown parser error'}; re-export "
                "the ONNX (opset 17) or pass --pt"
            )
        self._parser = parser  # keep alive with the network

    def _check_input(self, network: Any) -> str:
        """Refuse a profile the ONNX cannot take: only the batch axis may vary."""
        if network.num_inputs != 1:
            raise ToolError(f"the ONNX has {network.num_inputs} inputs; a YOLO detector has exactly one")
        tensor = network.get_input(0)
        shape = tuple(tensor.shape)
        size = self.plan.key.imgsz
        if len(shape) != 4 or shape[1] != 3:
            raise ToolError(f"input {tensor.name} has shape {shape}; expected [B,3,H,W]")
        if shape[0] != -1:
            raise ToolError(
                f"input {tensor.name} has a static batch of {shape[0]}; re-export with a dynamic batch axis or "
                "pass --pt"
            )
        if shape[2:] != (size, size):
            raise ToolError(
                f"input {tensor.name} is {shape[2]}x{shape[3]} but --imgsz is {size}; pass --imgsz {shape[2]} or "
                "re-export"
            )
        return str(tensor.name)

    def _run_build(self, trt: Any, builder: Any, network: Any, config: Any, logger: Any) -> bytes:
        """Build in a worker thread so this (main) thread stays free to receive SIGINT/SIGTERM."""
        bar = ProgressBar("build")
        monitor = make_progress_monitor(trt, bar, self.token)
        if monitor is not None:
            config.progress_monitor = monitor
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["plan"] = builder.build_serialized_network(network, config)
            except BaseException as error:  # handed to the main thread
                outcome["error"] = error

        worker = threading.Thread(target=work, name="trt-build", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            if monitor is None:
                bar.update("building (TensorRT 8.6 reports no steps)")
        if self.token.event.is_set():
            raise BuildCancelled()
        if "error" in outcome:
            raise ToolError(f"TensorRT build failed: {outcome['error']}", EXIT_BUILD_FAILED)
        plan = outcome.get("plan")
        if plan is None:
            reason = logger.errors[-1] if logger.errors else "no reason given"
            raise ToolError(f"TensorRT build failed: {reason}", EXIT_BUILD_FAILED)
        bar.finish("engine built")
        return bytes(memoryview(plan))

    def verify(self, plan_bytes: bytes, reference: Reference | None = None) -> EngineCheck | None:
        """Deserialize the new plan, check its profile and output shape, then run it on the reference
        image at min/opt/max batch (None when pycuda is missing). Nothing is replaced before this."""
        trt = import_tensorrt()
        logger = make_trt_logger(trt)
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan_bytes)
        if engine is None:
            raise ToolError(
                f"the new engine does not deserialize: {'; '.join(logger.errors) or 'unknown error'}", EXIT_BUILD_FAILED
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ToolError(
                f"the new engine has inputs {inputs} and outputs {outputs}; expected one of each", EXIT_BUILD_FAILED
            )
        profile = engine.get_tensor_profile_shape(inputs[0], 0)
        maxima = tuple(profile[2])
        if maxima[0] != self.plan.key.max_batch:
            raise ToolError(
                f"the new engine's max batch is {maxima[0]}, expected {self.plan.key.max_batch}", EXIT_BUILD_FAILED
            )
        out_shape = tuple(engine.get_tensor_shape(outputs[0]))
        if len(out_shape) != 3 or out_shape[-1] != 6:
            raise ToolError(f"the new engine's output {outputs[0]} is {out_shape}; expected [B,N,6]", EXIT_BUILD_FAILED)
        with TIMELINE.phase("smoke/compare"):
            return smoke_test(trt, engine, inputs[0], outputs[0], self.plan, reference)


def smoke_test(
    trt: Any, engine: Any, input_name: str, output_name: str, plan: EnginePlan, reference: Reference | None = None
) -> EngineCheck | None:
    """One inference at batch min, opt and max when pycuda is here; otherwise say it was skipped.

    With a reference, every slot holds the reference image and the outputs are compared with
    onnxruntime's after decode + NMS (check_engine_outputs); the caller decides what a mismatch means.
    """
    try:
        import numpy as np
        import pycuda.driver as cuda
    except ImportError:
        notice(
            "smoke test skipped: pycuda is not installed (the engine deserialized and its shapes are right; the "
            "comparison with the ONNX did not run)"
        )
        return None
    cuda.init()
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        execution = engine.create_execution_context()
        stream = cuda.Stream()
        size = plan.key.imgsz
        outputs: dict[int, Any] = {}
        for batch in distinct_batches(plan.key.min_batch, plan.key.opt_batch, plan.key.max_batch):
            execution.set_input_shape(input_name, (batch, 3, size, size))
            out_shape = tuple(execution.get_tensor_shape(output_name))
            if out_shape[0] != batch or out_shape[-1] != 6:
                raise ToolError(
                    f"smoke test: batch {batch} gives output {out_shape}, expected [{batch},N,6]", EXIT_BUILD_FAILED
                )
            if reference is not None:
                host_in = np.ascontiguousarray(
                    np.broadcast_to(reference.image, (batch, 3, size, size)), dtype=np.float32
                )
            else:
                host_in = np.random.default_rng(batch).random((batch, 3, size, size), dtype=np.float32)
            host_out = np.empty(out_shape, dtype=np.float32)
            dev_in, dev_out = cuda.mem_alloc(host_in.nbytes), cuda.mem_alloc(host_out.nbytes)
            execution.set_tensor_address(input_name, int(dev_in))
            execution.set_tensor_address(output_name, int(dev_out))
            cuda.memcpy_htod_async(dev_in, host_in, stream)
            if not execution.execute_async_v3(stream.handle):
                raise ToolError(f"smoke test: inference at batch {batch} failed", EXIT_BUILD_FAILED)
            cuda.memcpy_dtoh_async(host_out, dev_out, stream)
            stream.synchronize()
            dev_in.free()
            dev_out.free()
            if not np.isfinite(host_out).all():
                raise ToolError(f"smoke test: batch {batch} produced NaN/Inf", EXIT_BUILD_FAILED)
            outputs[batch] = host_out
        log(f"smoke test passed at batch {', '.join(str(b) for b in sorted(outputs))}")
        if reference is None:
            return None
        check = check_engine_outputs(reference, outputs)
        log(check.line)
        return check
    finally:
        context.pop()


def install_engine(
    plan: EnginePlan, plan_bytes: bytes, sidecar: Sidecar, extra: Sequence[tuple[Path, bytes]] = ()
) -> None:
    """Engine, sidecar and `extra` (labels, config) as one unit: all written to temp files and
    fsynced first, then renamed, engine first, sidecar next, config last. A failure while writing
    (disk full, permissions) leaves every previous file as it was.

    The old sidecar goes right before the renames: between the engine's and the sidecar's rename an
    engine may sit there without a sidecar, which reads as "not valid" (rebuild), never as a wrong
    engine that looks valid.
    """

    def drop_old_sidecar() -> None:
        _remove_quietly(plan.sidecar_path)
        fsync_directory(plan.engine_dir)

    sidecar_bytes = (json.dumps(sidecar.as_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")
    install_files(
        [(plan.engine_path, plan_bytes), (plan.sidecar_path, sidecar_bytes), *extra], before_replace=drop_old_sidecar
    )


def install_files(
    files: Sequence[tuple[Path, bytes | memoryview]], before_replace: Callable[[], None] | None = None
) -> None:
    """Several files as one unit: every temp file is written and fsynced before the first rename,
    and SIGINT/SIGTERM wait until the renames are done. Each temp file stays open with an flock on
    it until it is renamed: the stale-temp cleanup of another run leaves a held file alone (a config
    rewrite on the warm path runs without the build lock)."""
    import fcntl
    import signal
    import tempfile

    staged: list[tuple[Path, Path]] = []
    handles: list[Any] = []
    target = files[0][0] if files else Path(".")
    blocked = False
    try:
        for target, data in files:
            try:
                fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            except OSError as error:
                raise ToolError(
                    f"cannot write in {target.parent} ({error.strerror}); make it writable or choose another directory",
                    EXIT_USAGE,
                ) from None
            staged.append((Path(tmp_name), target))
            handle = os.fdopen(fd, "wb")
            handles.append(handle)
            with contextlib.suppress(OSError):  # a filesystem without flock: the build lock and the age rule remain
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.fchmod(fd, 0o666 & ~current_umask())  # as atomic_write_bytes: group-shared volumes
            handle.write(data)
            handle.flush()
            os.fsync(fd)
        if threading.current_thread() is threading.main_thread():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            blocked = True
        if before_replace is not None:
            before_replace()
        for index, (tmp, target) in enumerate(staged):
            _move_directory_aside(target)
            os.replace(tmp, target)
            staged[index] = (target, target)  # renamed: nothing left to remove
    except BaseException as error:
        for tmp, final in staged:
            if tmp != final:
                _remove_quietly(tmp)
        if isinstance(error, OSError):
            raise ToolError(
                f"cannot write {target} ({error.strerror}); free space or fix permissions (the previous files are "
                "unchanged)",
                EXIT_BUILD_FAILED,
            ) from None
        raise
    finally:
        for handle in handles:  # closing drops the flock: renamed, or removed above
            with contextlib.suppress(OSError):
                handle.close()
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    for directory in dict.fromkeys(path.parent for path, _ in files):
        fsync_directory(directory)


def _is_temp_name(name: str) -> bool:
    """What install_files()/mkstemp and the download staging dirs leave behind when a run is killed."""
    return (name.startswith(".") and name.endswith(".tmp")) or name.startswith(".download-")


def _temp_file_held(path: Path) -> bool:
    """True while a live install_files() holds its flock on this regular temp file."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def remove_stale_temp_files(engine_dir: Path, older_than: float | None = None) -> tuple[int, int]:
    """Temp files of a run killed with SIGKILL (engines, sidecars, exported ONNX, configs, labels);
    the caller holds the build lock, and a file a live writer still holds (see install_files) is
    kept. `older_than` (epoch seconds) spares files written since then. Returns (files, bytes)
    removed."""
    import shutil
    import stat as stat_module

    count = freed = 0
    try:
        entries = list(Path(engine_dir).iterdir())
    except OSError:
        return 0, 0
    for path in entries:
        name = path.name
        if not _is_temp_name(name):
            continue
        try:
            stat = path.lstat()
        except OSError:
            continue
        if older_than is not None and stat.st_mtime >= older_than:
            continue
        if name.startswith(".download-") and path.is_dir() and not path.is_symlink():
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
        else:
            size = stat.st_size
            if stat_module.S_ISREG(stat.st_mode) and _temp_file_held(path):
                continue
            try:
                path.unlink()
            except OSError:
                continue
        count, freed = count + 1, freed + size
    return count, freed


_STARTED_AT = time.time()


def clean_stale_temp_files(options: Options, engine_dir: Path) -> None:
    """At the start of the step: temp files that a killed run left in ENGINE_DIR, MODELS_DIR and
    CONFIG_DIR (a yolo11x ONNX temp is 228 MB). Cheap when there are none (three directory
    listings); else only under the build lock (taken without waiting) and only files older than
    this run that no live writer holds, so a live writer's file is never touched."""
    dirs = list(
        dict.fromkeys((Path(engine_dir), Path(options.models_dir).absolute(), Path(options.config_dir).absolute()))
    )

    def has_temp(directory: Path) -> bool:
        try:
            return any(_is_temp_name(name) for name in os.listdir(directory))
        except OSError:
            return False

    if not any(has_temp(d) for d in dirs):
        return
    lock = BuildLock(Path(engine_dir), timeout_s=0)
    if not lock.acquire_if_free():
        return  # another process builds (its files are live), or the lock is unusable: the build says why
    try:
        count = freed = 0
        for directory in dirs:
            files, size = remove_stale_temp_files(directory, older_than=_STARTED_AT)
            count, freed = count + files, freed + size
    finally:
        lock.release()
    if count:
        notice(
            f"removed {count} temp file{'s' if count != 1 else ''} left by an interrupted run, freed "
            f"{freed / 1e6:.1f} MB"
        )


# -- Engine store (fleet) ----------------------------------------------------------------------
# One build per engine key for a whole fleet. The store holds, under
# `<prefix>/<stem>/<onnx-sha256[:16]>-<key-sha256[:12]>/` (the name leaves min/opt batch and the
# precision request out; the key's hash keeps those apart), the engine under its own sha256
# (`<sha256>.engine`), then the sidecar naming it (`<stem>.json`, the commit marker: the only object
# two builders compete for) and a lease; timing caches live in `<prefix>/timing/`. A local miss pulls a committed engine
# (sha256-checked) and installs it like a local build; a store miss takes the fleet lease and
# builds, the others wait for the sidecar. The store is an accelerator only: any failure of it is
# one notice and the local path goes on. obstore is imported only when a store is configured.

STORE_LEASE_ENV = "ENGINE_STORE_LEASE_S"
DEFAULT_STORE_LEASE_S = 60.0
STORE_SHA_PREFIX = 16
STORE_KEY_PREFIX = 12
STORE_CHUNK = 8 << 20


class StoreError(Exception):
    """A store failure (unreachable, credentials, permission, refused data): one notice, go on locally."""


class StoreMissing(StoreError):
    """An object the store should hold is absent (e.g. an engine a lifecycle rule deleted before its sidecar)."""


def _short_error(error: BaseException) -> str:
    """obstore errors carry a multi-line debug dump; the first line says it."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def _aws_file_settings(environ: dict[str, str]) -> dict[str, str]:
    """Region, endpoint and keys from ~/.aws/config and ~/.aws/credentials (AWS_PROFILE or default)
    for what the AWS_* variables leave unset; obstore itself reads only the variables."""
    import configparser

    profile = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path(environ.get("HOME") or Path.home())
    files = (
        (Path(environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"), profile),
        (
            Path(environ.get("AWS_CONFIG_FILE") or home / ".aws" / "config"),
            profile if profile == "default" else f"profile {profile}",
        ),
    )
    wanted = {  # file key -> (obstore key, environment variables that win)
        "aws_access_key_id": ("access_key_id", ("AWS_ACCESS_KEY_ID",)),
        "aws_secret_access_key": ("secret_access_key", ("AWS_SECRET_ACCESS_KEY",)),
        "aws_session_token": ("session_token", ("AWS_SESSION_TOKEN",)),
        "region": ("region", ("AWS_REGION", "AWS_DEFAULT_REGION")),
        "endpoint_url": ("endpoint", ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT")),
    }
    settings: dict[str, str] = {}
    for path, section in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue
        if not parser.has_section(section):
            continue
        for file_key, (key, env_names) in wanted.items():
            if (
                key not in settings
                and parser.has_option(section, file_key)
                and not any(environ.get(n) for n in env_names)
            ):
                settings[key] = parser.get(section, file_key).strip()
    return settings


class EngineStore:
    """The few object operations the fleet needs, on obstore (S3 or a local/shared directory)."""

    def __init__(self, url: str, environ: dict[str, str] | None = None, writable: bool = True) -> None:
        import datetime

        environ = dict(os.environ if environ is None else environ)
        self.url = url
        try:
            import obstore
            from obstore.store import LocalStore, S3Store
        except ImportError:
            raise StoreError("obstore is not installed (pip install obstore)") from None
        self._obs = obstore
        self._exc = obstore.exceptions
        self.local = url.startswith("file://")
        try:
            if self.local:
                self._store: Any = LocalStore(url[7:], mkdir=writable)  # pull-only creates nothing
            else:
                bucket, _, prefix = url[5:].partition("/")
                settings = _aws_file_settings(environ)
                endpoint = settings.get("endpoint") or next(
                    (environ[n] for n in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT") if environ.get(n)),
                    "",
                )
                if not (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "region" in settings):
                    settings["region"] = "us-east-1"
                if environ.get("AWS_ENDPOINT_URL_S3"):
                    settings.setdefault("endpoint", environ["AWS_ENDPOINT_URL_S3"])
                self._store = S3Store(
                    bucket,
                    prefix=prefix or None,
                    client_options={
                        "allow_http": endpoint.startswith("http://"),
                        "connect_timeout": "5s",
                        "timeout": "600s",
                    },
                    retry_config={
                        "max_retries": 3,
                        "retry_timeout": datetime.timedelta(seconds=30),
                        "backoff": {
                            "init_backoff": datetime.timedelta(milliseconds=200),
                            "max_backoff": datetime.timedelta(seconds=5),
                            "base": 2.0,
                        },
                    },
                    **settings,
                )
        except Exception as error:  # configuration errors of any kind: the store is off
            raise StoreError(_short_error(error)) from None

    def _call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except StoreError:
            raise
        except (self._exc.PermissionDeniedError, self._exc.UnauthenticatedError) as error:
            raise StoreError(
                f"{what}: access denied ({_short_error(error)}); check the credentials and the bucket policy"
            ) from None
        except (FileNotFoundError, self._exc.NotFoundError, self._exc.AlreadyExistsError, self._exc.PreconditionError):
            raise
        except Exception as error:
            raise StoreError(f"{what}: {_short_error(error)}") from None

    def read(self, key: str) -> tuple[bytes, str | None] | None:
        """(bytes, etag) of a small object, None when absent."""
        try:
            result = self._call(f"read {key}", self._obs.get, self._store, key)
            return bytes(self._call(f"read {key}", result.bytes)), result.meta.get("e_tag")
        except (FileNotFoundError, self._exc.NotFoundError):
            return None

    def exists(self, key: str) -> bool:
        try:
            self._call(f"head {key}", self._obs.head, self._store, key)
            return True
        except (FileNotFoundError, self._exc.NotFoundError):
            return False

    def download(self, key: str, handle: Any) -> tuple[int, str]:
        """Stream an object into an open file; (size, sha256). Raises StoreMissing when absent."""
        import hashlib

        digest = hashlib.sha256()
        size = 0
        try:
            result = self._call(f"download {key}", self._obs.get, self._store, key)
            for chunk in self._call(f"download {key}", result.stream, min_chunk_size=STORE_CHUNK):
                data = memoryview(chunk)
                handle.write(data)
                digest.update(data)
                size += len(data)
        except (FileNotFoundError, self._exc.NotFoundError):
            raise StoreMissing(f"{key} is missing") from None
        except StoreError:
            raise
        except Exception as error:  # errors raised while iterating the stream
            raise StoreError(f"download {key}: {_short_error(error)}") from None
        return size, digest.hexdigest()

    def _put(self, key: str, data: bytes | Path, mode: Any) -> None:
        """One upload with obstore's `mode`: a file in multipart chunks, bytes in one request."""
        if isinstance(data, Path):
            with open(data, "rb") as handle:
                self._call(
                    f"upload {key}",
                    self._obs.put,
                    self._store,
                    key,
                    handle,
                    mode=mode,
                    chunk_size=STORE_CHUNK,
                    max_concurrency=4,
                )
        else:
            self._call(f"upload {key}", self._obs.put, self._store, key, data, mode=mode)

    def create(self, key: str, data: bytes | Path) -> bool:
        """Conditional create (If-None-Match: *; multipart for files): False when the key exists."""
        try:
            self._put(key, data, "create")
            return True
        except (self._exc.AlreadyExistsError, self._exc.PreconditionError):
            return False
        except OSError as error:
            raise StoreError(f"upload {key}: {error.strerror or error}") from None

    def replace(self, key: str, data: bytes | Path, etag: str | None = None) -> bool:
        """Overwrite; with `etag` only if the object is still that version (If-Match; S3 only)."""
        mode: Any = {"e_tag": etag} if etag and not self.local else "overwrite"
        try:
            self._put(key, data, mode)
            return True
        except (self._exc.AlreadyExistsError, self._exc.PreconditionError, FileNotFoundError, self._exc.NotFoundError):
            return False
        except OSError as error:
            raise StoreError(f"upload {key}: {error.strerror or error}") from None

    def delete(self, key: str) -> None:
        try:
            self._call(f"delete {key}", self._obs.delete, self._store, key)
        except (FileNotFoundError, self._exc.NotFoundError):
            pass


class FleetLease:
    """`<entry>/lease.json`, created with a conditional create, renewed while building, taken over
    once expired. Only an accelerator: correctness comes from the sha256 check and first-publish-wins."""

    def __init__(self, store: EngineStore, key: str, seconds: float) -> None:
        import secrets

        self.store = store
        self.key = key
        self.seconds = seconds
        self.token = secrets.token_hex(8)
        self.etag: str | None = None
        self.held = False
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps(
            {
                "host": os.uname().nodename,
                "pid": os.getpid(),
                "token": self.token,
                "expires_at": time.time() + self.seconds,
                "seconds": self.seconds,
            }
        ).encode()

    def _refresh_etag(self) -> None:
        current = self.store.read(self.key)
        self.etag = current[1] if current else None

    def try_acquire(self) -> tuple[bool, dict[str, Any] | None]:
        """(acquired, holder): the holder's record when another live server holds it."""
        if self.store.create(self.key, self._body()):
            self._refresh_etag()
            self.held = True
            return True, None
        current = self.store.read(self.key)
        if current is None:  # released between our create and read: next round
            return False, None
        try:
            holder = json.loads(current[0])
            expired = float(holder["expires_at"]) < time.time()
        except (ValueError, KeyError, TypeError):
            holder, expired = {}, True  # unreadable lease: treat as expired
        if not expired:
            return False, holder
        if self.store.local:
            # no If-Match on a plain filesystem: the one taker that creates the marker for this
            # expired lease (named by its content) replaces it; the others see a live lease next round
            taken = self.store.create(f"{self.key}.taken-{sha256_of_bytes(current[0])[:16]}", b"")
            if taken:
                self.store.replace(self.key, self._body())
        else:
            taken = self.store.replace(self.key, self._body(), etag=current[1])
        if not taken:
            return False, holder
        self._refresh_etag()
        self.held = True
        log(f"fleet lease of {holder.get('host', '?')} pid {holder.get('pid', '?')} expired; taking over the build")
        return True, None

    def live_holder(self) -> dict[str, Any] | None:
        """The record of an unexpired lease, else None (read only: for pull-only servers)."""
        current = self.store.read(self.key)
        try:
            holder = json.loads(current[0]) if current else None
            return holder if holder and float(holder["expires_at"]) >= time.time() else None
        except (ValueError, KeyError, TypeError):
            return None

    def start_renewal(self) -> None:
        def renew() -> None:
            while not self._stop.wait(max(0.2, self.seconds / 3)):
                try:
                    if self.store.local:
                        current = self.store.read(self.key)
                        mine = current is not None and json.loads(current[0]).get("token") == self.token
                        ok = mine and self.store.replace(self.key, self._body())
                    else:
                        ok = self.store.replace(self.key, self._body(), etag=self.etag)
                    if not ok:
                        self.lost = True
                        return
                    if not self.store.local:
                        self._refresh_etag()
                except (StoreError, ValueError):
                    pass  # a hiccup: the lease may expire and be taken over, which is safe

        self._thread = threading.Thread(target=renew, name="fleet-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if not self.held:
            return
        try:
            current = self.store.read(self.key)
            if current is not None and json.loads(current[0]).get("token") == self.token:
                self.store.delete(self.key)
        except (StoreError, ValueError):
            pass
        self.held = False


class FleetEnsure:
    """On a local miss: pull, or wait for the fleet's builder, or build under the lease and publish."""

    def __init__(self, options: Options, system: SystemInfo, plan: EnginePlan, onnx_model: Any) -> None:
        self.options = options
        self.system = system
        self.plan = plan
        self.onnx_model = onnx_model
        self.url = str(options.engine_store)
        self.publish = options.engine_store_mode != "pull"
        self.store: EngineStore | None = None
        self.entry = ""
        self.broken = False  # the stored entry is unusable or failed its sha256 check: a writer repairs it
        self.onnx_stamp: FileStamp | None = None
        self.lease: FleetLease | None = None
        self._timing_etag: str | None = None

    def _off(self, error: StoreError) -> None:
        notice(f"engine store {self.url} not used ({error}); going on with the local engine cache")
        self.store = None

    def open_store(self) -> EngineStore:
        """The store client, this ONNX's stamp and the store entry they name (StoreError when unusable)."""
        self.store = store = EngineStore(self.url, writable=self.publish)
        self.onnx_stamp = FileStamp.of(Path(self.onnx_model.path))
        key_sha256 = sha256_of_bytes(json.dumps(self.plan.key.as_json(), sort_keys=True).encode())
        self.entry = f"{self.plan.stem}/{self.onnx_stamp.sha256[:STORE_SHA_PREFIX]}-{key_sha256[:STORE_KEY_PREFIX]}"
        return store

    def ensure(self) -> tuple[Sidecar, str]:
        try:
            with TIMELINE.phase("store"):  # lookup, lease, waiting for the fleet's builder (a pull counts apart)
                store = self.open_store()
                if not self.options.force:  # --force: rebuild here; publish only if nobody has yet
                    pulled = self.try_pull()
                    if pulled is None and not self.broken:
                        pulled = self.wait_for_fleet()
                    if pulled is not None:
                        return pulled
                if self.publish and self.lease is None:
                    lease = FleetLease(store, f"{self.entry}/lease.json", self._lease_seconds())
                    self.lease = lease if lease.try_acquire()[0] else None
        except StoreError as error:
            self._off(error)
        try:
            if self.store is not None and self.lease is not None:
                self.lease.start_renewal()
                self.seed_timing_cache()
            sidecar = build_and_install(self.options, self.system, self.plan, self.onnx_model)
            if self.store is not None and self.publish and not (self.lease and self.lease.lost):
                try:
                    with TIMELINE.phase("publish"):
                        self.publish_engine(sidecar)
                except StoreError as error:
                    notice(f"engine store {self.url}: publishing failed ({error}); the local engine is in place")
        finally:
            if self.lease is not None:
                self.lease.release()
        return sidecar, f"built in {sidecar.build_seconds:.1f} s"

    @staticmethod
    def _lease_seconds() -> float:
        try:
            return max(0.5, float(os.environ.get(STORE_LEASE_ENV) or DEFAULT_STORE_LEASE_S))
        except ValueError:
            return DEFAULT_STORE_LEASE_S

    def wait_for_fleet(self) -> tuple[Sidecar, str] | None:
        """Take the lease (read-write), or wait while another server holds it and pull its engine
        (bounded by BUILD_LOCK_TIMEOUT_S). None: build here (holding the lease when we could take it)."""
        assert self.store is not None
        seconds = self._lease_seconds()
        lease = FleetLease(self.store, f"{self.entry}/lease.json", seconds)
        try:
            timeout = float(os.environ.get(LOCK_TIMEOUT_ENV) or DEFAULT_LOCK_TIMEOUT_S)
        except ValueError:
            timeout = DEFAULT_LOCK_TIMEOUT_S
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            if self.publish:
                acquired, holder = lease.try_acquire()
                if acquired:
                    self.lease = lease
                    pulled = self.try_pull()  # the holder before us may have published just now
                    if pulled is not None:
                        lease.release()
                        self.lease = None
                    return pulled
            else:  # pull-only: wait for a live builder, never take a lease
                holder = lease.live_holder()
                if holder is None:  # nobody building (or done just now: look once more)
                    return self.try_pull()
            if not announced and holder:
                log(
                    f"{holder.get('host', '?')} pid {holder.get('pid', '?')} is building {self.plan.stem} for the "
                    f"fleet; waiting up to {timeout:.0f}s ({LOCK_TIMEOUT_ENV}) to pull it"
                )
                announced = True
            pulled = self.try_pull()
            if pulled is not None or self.broken:
                return pulled
            if time.monotonic() >= deadline:
                waited = f"{timeout:.0f}s for the fleet build of {self.plan.stem}"
                notice(f"engine store: gave up waiting {waited}; building here")
                return None
            time.sleep(min(1.0, seconds / 4))

    def try_pull(self) -> tuple[Sidecar, str] | None:
        """Pull the committed engine when the stored sidecar's key and ONNX match; None otherwise."""
        assert self.store is not None and self.onnx_stamp is not None
        found = self.store.read(f"{self.entry}/{self.plan.stem}.json")
        if found is None:
            return None
        try:  # the same reader as a local sidecar
            copy = self.plan.engine_dir / f".{self.plan.stem}.json.store.tmp"
            atomic_write_bytes(copy, found[0])
            try:
                stored = Sidecar.read(copy)
            finally:
                _remove_quietly(copy)
            if not re.fullmatch(r"[0-9a-f]{64}", stored.engine_sha256):  # it names the engine object
                raise ValueError(f"engine_sha256 {stored.engine_sha256[:20]!r} is not a sha256")
            if stored.key != self.plan.key or stored.onnx.sha256 != self.onnx_stamp.sha256:
                raise ValueError("it was written for other options or another ONNX than its entry's")
        except ValueError as error:
            notice(
                f"engine store: the stored sidecar of {self.plan.stem} is unusable ({error}); refused, building here"
            )
            self.broken = True
            return None
        began = time.monotonic()
        with TIMELINE.phase("pull"):
            sidecar = self.install_pulled(stored)
        if sidecar is None:
            return None
        seconds = time.monotonic() - began
        log(f"engine pulled from {self.url} in {seconds:.1f} s")
        return sidecar, f"pulled from {self.url} in {seconds:.1f} s"

    def install_pulled(self, stored: Sidecar) -> Sidecar | None:
        """Download to a temp file in ENGINE_DIR, check size and sha256 against the sidecar, then
        install like a local build: engine (old sidecar dropped first), then the sidecar, last."""
        import tempfile

        assert self.store is not None and self.onnx_stamp is not None
        plan = self.plan
        try:
            fd, tmp_name = tempfile.mkstemp(dir=plan.engine_dir, prefix=f".{plan.engine_path.name}.", suffix=".tmp")
        except OSError as error:
            raise ToolError(
                f"cannot write in {plan.engine_dir} ({error.strerror}); make ENGINE_DIR writable", EXIT_USAGE
            ) from None
        tmp = Path(tmp_name)
        try:
            try:
                with os.fdopen(fd, "wb") as handle:
                    size, digest = self.store.download(self.engine_key(stored.engine_sha256), handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            except StoreMissing as error:
                notice(f"engine store: {error}, though the stored sidecar names it; refused, building here")
                self.broken = True
                return None
            if size != stored.engine_size or digest != stored.engine_sha256:
                notice(
                    f"engine store: {self.engine_key(stored.engine_sha256)} does not match its sidecar (sha256 "
                    f"{digest[:12]}, expected {stored.engine_sha256[:12]}); refused, building here"
                )
                self.broken = True
                return None
            given = given_model_file(self.options)
            sidecar = dataclasses.replace(
                stored,
                onnx=self.onnx_stamp,
                source=FileStamp.of(given, self.onnx_stamp) if given is not None else None,
                origin={
                    "how": "pulled",
                    "store": self.url,
                    "built_on": (stored.origin or {}).get("host"),
                    "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
                timeline=TIMELINE.as_json(),  # this server's first start, not the builder's (that stays in the store)
            )
            _remove_quietly(plan.sidecar_path)
            fsync_directory(plan.engine_dir)
            os.replace(tmp, plan.engine_path)
            fsync_directory(plan.engine_dir)
        except OSError as error:
            raise ToolError(
                f"cannot write {plan.engine_path} ({error.strerror}); free space or fix permissions", EXIT_BUILD_FAILED
            ) from None
        finally:
            _remove_quietly(tmp)
        atomic_write_text(plan.sidecar_path, json.dumps(sidecar.as_json(), indent=2, sort_keys=True) + "\n")
        return sidecar

    def engine_key(self, sha256: str) -> str:
        """An engine object is named by its content: a second builder's upload never replaces the
        engine a committed sidecar names."""
        return f"{self.entry}/{sha256}.engine"

    def _timing_key(self) -> str:
        return f"timing/{self.plan.timing_cache_path.name}"

    def seed_timing_cache(self) -> None:
        """Start the build from the fleet's timing cache (merged into this server's own, if any)."""
        assert self.store is not None
        try:
            found = self.store.read(self._timing_key())
        except StoreError:
            return
        if found is None:
            return
        self._timing_etag = found[1]
        local = self.plan.timing_cache_path
        ours = read_timing_cache(local)
        merged = merge_timing_caches(ours, found[0]) if ours is not None else found[0]
        if merged is not None:
            atomic_write_bytes(local, merged)

    def publish_engine(self, sidecar: Sidecar) -> None:
        """Engine (under its sha256), then the sidecar naming it (the commit marker: a conditional create,
        so the first publish wins), then the timing cache."""
        assert self.store is not None
        plan = self.plan
        engine_key, sidecar_key = self.engine_key(sidecar.engine_sha256), f"{self.entry}/{plan.stem}.json"
        if self.store.exists(sidecar_key) and not self.broken:
            log(f"engine store: {plan.stem} was published by another server first; keeping theirs", level=2)
            return
        began = time.monotonic()
        # an object already under this name holds these very bytes (only a repair rewrites it, in case
        # it was damaged); a builder that loses the commit below leaves its own object unnamed
        if not self.store.create(engine_key, plan.engine_path) and self.broken:
            self.store.replace(engine_key, plan.engine_path)
        record = dataclasses.replace(
            sidecar,
            origin={"how": "built", "host": os.uname().nodename, "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        )
        body = (json.dumps(record.as_json(), indent=2, sort_keys=True) + "\n").encode()
        committed = self.store.replace(sidecar_key, body) if self.broken else self.store.create(sidecar_key, body)
        if not committed:
            log(f"engine store: {plan.stem} was published by another server first; keeping theirs", level=2)
            return
        log(f"engine published to {self.url} in {time.monotonic() - began:.1f} s ({sidecar.engine_size} bytes)")
        self.publish_timing_cache()

    def publish_timing_cache(self) -> None:
        """Write our cache back; when another server's landed since we read it, merge the two with
        TensorRT (ITimingCache.combine) and try again (If-Match on S3)."""
        assert self.store is not None
        cache = self.plan.timing_cache_path
        data = read_timing_cache(cache)
        if data is None:
            return
        key, etag = self._timing_key(), self._timing_etag
        for _ in range(3):
            if not self.store.local and (
                self.store.replace(key, data, etag=etag) if etag else self.store.create(key, data)
            ):
                return
            current = self.store.read(key)
            if current is not None:
                merged = merge_timing_caches(data, current[0])
                if merged is None:
                    log("engine store: the fleet's timing cache does not combine with ours; kept the fleet's", level=2)
                    return
                data, etag = merged, current[1]
                atomic_write_bytes(cache, data)
            else:
                etag = None
            if self.store.local:  # no If-Match on a filesystem: merged with what is there, last writer wins
                self.store.replace(key, data)
                return
        log("engine store: the fleet's timing cache kept changing; left it as it is", level=2)


def merge_timing_caches(ours: bytes, theirs: bytes) -> bytes | None:
    """One timing cache holding both caches' entries (same GPU and TensorRT), or None."""
    try:
        trt = import_tensorrt()
        config = trt.Builder(make_trt_logger(trt)).create_builder_config()
        mine, other = config.create_timing_cache(ours), config.create_timing_cache(theirs)
        if mine is None or other is None or not mine.combine(other, False):
            return None
        return bytes(mine.serialize())
    except Exception:  # a cache TensorRT cannot read: keep the fleet's
        return None


def ensure_engine(options: Options, system: SystemInfo, plan: EnginePlan, onnx_model: Any) -> tuple[Sidecar, str]:
    """Under the local build lock: (sidecar, how) from the fleet store if one is set, else a local build."""
    if options.engine_store:
        return FleetEnsure(options, system, plan, onnx_model).ensure()
    sidecar = build_and_install(options, system, plan, onnx_model)
    return sidecar, f"built in {sidecar.build_seconds:.1f} s"


def engine_origin(options: Options, system: SystemInfo) -> dict[str, Any]:
    """For --info: the engine this run would use and where it came from (built here or pulled)."""
    report: dict[str, Any] = {
        "store": options.engine_store,
        "store_mode": options.engine_store_mode if options.engine_store else None,
    }
    if not system.gpus or not system.tensorrt_version:
        return {**report, "engine": None, "valid": False, "origin": None}
    plan = plan_engine(options, system.gpu(options.gpu_id), system.tensorrt_version)
    state = check_engine(plan, options)
    origin = None
    if state.valid and state.sidecar is not None:
        origin = (state.sidecar.origin or {}).get("how", "built")
    return {**report, "engine": str(plan.engine_path), "valid": state.valid, "origin": origin, "reason": state.reason}


# --------------------------------------------------------------------------------------------
# 5. Configure: DeepStreamConfig
# --------------------------------------------------------------------------------------------

NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
PARSER_FUNCTION = "NvDsInferParseYolo"
PARSER_LIB_ENV = "YOLO_PARSER_LIB"


def config_value_problem(value: str) -> str | None:
    """Why `value` cannot go into the nvinfer config as is (None if it can).

    nvinfer reads the config with GKeyFile: a line break (or any non-printable character) would
    end the value and start a new key or a `[group]`; GKeyFile drops leading blanks and turns
    backslash sequences (\\n, \\s, ...) into other characters.
    """
    if any(not ch.isprintable() for ch in value):
        return "a newline or another non-printable character"
    if value != value.strip():
        return "leading or trailing blanks"
    if "\\" in value:
        return "a backslash (GKeyFile reads it as an escape)"
    return None


def check_config_text(what: str, value: str) -> None:
    """ToolError (exit 2) when `value` (named `what` in the message) would corrupt the nvinfer config."""
    problem = config_value_problem(str(value))
    if problem is not None:
        raise ToolError(
            f"{what} {str(value)!r} contains {problem}; use a plain path or value (nothing was written)", EXIT_USAGE
        )


def parser_library_path() -> Path:
    """The bbox parser built from nvdsinfer_yolo/ (in the image: /app/nvdsinfer_yolo/...)."""
    override = os.environ.get(PARSER_LIB_ENV)
    if override:
        check_config_text(PARSER_LIB_ENV, override)
        return Path(override).absolute()
    return Path(__file__).resolve().parent / "nvdsinfer_yolo" / "libnvdsinfer_yolo.so"


class DeepStreamConfig:
    """The nvinfer config and labels, written from the engine's sidecar (what was built, not what was asked)."""

    def __init__(self, options: Options, plan: EnginePlan, sidecar: Sidecar) -> None:
        self.options = options
        self.plan = plan
        self.sidecar = sidecar
        self.config_dir = Path(options.config_dir).absolute()
        self.unreadable: dict[Path, str] = {}  # file -> why it could not be read (then it is written again)
        self._on_disk = self._read(self.config_path)  # read once: the warm path asks twice
        self.batch_size = self._batch_size()

    @property
    def config_path(self) -> Path:
        return self.config_dir / CONFIG_FILE_NAME

    def _batch_size(self) -> int:
        """NUM_SOURCES when given; otherwise the batch-size already in the config is kept.

        The entrypoint may derive NUM_SOURCES from the app's sources; a later `--check` (the
        healthcheck) or a plain rebuild without it must not call that config wrong or reset it.
        """
        if self.options.num_sources_given or self._on_disk is None:
            return self.options.num_sources
        match = re.search(r"^batch-size=(\d+)$", self._on_disk, flags=re.M)
        if match and 1 <= int(match.group(1)) <= self.sidecar.max_batch:
            return int(match.group(1))
        return self.options.num_sources

    @property
    def labels_path(self) -> Path:
        return self.config_dir / LABELS_FILE_NAME

    def sections(self) -> dict[str, dict[str, str]]:
        sidecar, options = self.sidecar, self.options
        if self.batch_size > sidecar.max_batch:
            raise ToolError(
                f"NUM_SOURCES {self.batch_size} exceeds the engine's max batch {sidecar.max_batch}; rebuild with "
                f"MAX_BATCH >= {self.batch_size}"
            )
        if sidecar.precision_built not in NETWORK_MODE:
            raise ToolError(
                f"sidecar {self.plan.sidecar_path.name} records unknown precision {sidecar.precision_built!r}; "
                "rebuild with --force"
            )
        size = sidecar.key.imgsz
        return {
            "property": {
                "gpu-id": str(options.gpu_id),
                "net-scale-factor": "0.0039215697906911373",
                "model-color-format": "0",
                "onnx-file": sidecar.onnx.path,
                "model-engine-file": str(self.plan.engine_path),
                "labelfile-path": str(self.labels_path),
                "batch-size": str(self.batch_size),
                "network-mode": str(NETWORK_MODE[sidecar.precision_built]),
                "infer-dims": f"3;{size};{size}",
                "num-detected-classes": str(len(sidecar.class_names)),
                "interval": "0",
                "gie-unique-id": "1",
                "process-mode": "1",
                "network-type": "0",
                "cluster-mode": "2",
                "maintain-aspect-ratio": "1",
                "symmetric-padding": "1",
                "parse-bbox-func-name": PARSER_FUNCTION,
                "custom-lib-path": str(parser_library_path()),
            },
            "class-attrs-all": {
                "nms-iou-threshold": f"{options.nms_iou_threshold:g}",
                "pre-cluster-threshold": f"{options.pre_cluster_threshold:g}",
                "topk": str(options.topk),
            },
        }

    def render(self) -> str:
        lines = [
            "# Written by auto_build_engine.py from the engine's sidecar; rewritten whenever the engine changes.",
            f"# engine: {self.plan.stem} ({self.sidecar.precision_built}, batch "
            f"{self.sidecar.profile['min'][0]}-{self.sidecar.profile['opt'][0]}-{self.sidecar.max_batch})",
        ]
        for section, values in self.sections().items():
            for key, value in values.items():  # every value is checked before anything is written
                check_config_text(f"nvinfer config value {key}=", value)
            lines.append(f"[{section}]")
            lines.extend(f"{key}={value}" for key, value in values.items())
            lines.append("")
        return "\n".join(lines)

    def labels_text(self) -> str:
        return labels_text(self.sidecar.class_names)

    def is_current(self) -> bool:
        """True when the files on disk say exactly what we would write (so --check can trust them)."""
        return self._on_disk == self.render() and self._read(self.labels_path) == self.labels_text()

    def _read(self, path: Path) -> str | None:
        """The file's text; None when it is missing or damaged (then it is simply written again)."""
        try:
            return read_regular_file(path).decode("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:  # a directory, a FIFO (never opened), unreadable, not UTF-8
            reason = (error.strerror or str(error)) if isinstance(error, OSError) else "not UTF-8"
            self.unreadable[path] = reason
            return None

    def write(self) -> bool:
        """Write both files atomically when they differ; True if anything changed."""
        if self.is_current():
            return False
        text = self.render()  # raises before anything is touched
        for path, reason in self.unreadable.items():
            notice(f"{path} cannot be read ({reason}); writing it again")
        install_files(self.staged_files(text))
        self._on_disk = text
        return True

    def staged_files(self, text: str | None = None) -> list[tuple[Path, bytes]]:
        """labels then config, for install_files (one unit, alone or with the engine)."""
        text = self.render() if text is None else text
        _ensure_writable_dir(self.config_dir, "CONFIG_DIR")
        return [(self.labels_path, self.labels_text().encode("utf-8")), (self.config_path, text.encode("utf-8"))]


# --------------------------------------------------------------------------------------------
# 6. Measure: --benchmark (the seed's performance table, on the user's GPU)
# --------------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    batch: int
    iterations: int
    images_per_s: float
    fps_per_camera: float
    latency_median_ms: float
    latency_p99_ms: float
    gpu_memory_used_mib: int
    trtexec_images_per_s: float | None = None
    trtexec_latency_median_ms: float | None = None


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least `fraction` of samples at or below it."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))  # ceil without math
    return ordered[min(rank, len(ordered)) - 1]


def median(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def parse_batches(text: str, sidecar: Sidecar) -> list[int]:
    try:
        batches = distinct_batches(*(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise ToolError(f"--batches: {text!r} is not a comma-separated list of integers") from None
    low, high = int(sidecar.profile["min"][0]), sidecar.max_batch
    outside = [b for b in batches if not low <= b <= high]
    if not batches or outside:
        raise ToolError(
            f"--batches: {outside or text} outside the engine profile {low}..{high}; pick sizes in that range"
        )
    return batches


class EngineBenchmark:
    """Times the engine with the TensorRT runtime and pycuda: pinned host memory, one stream,
    execute_async_v3, CUDA events; inputs rotate among several buffers so a warm cache is not
    what gets measured."""

    ROTATING_BUFFERS = 3

    def __init__(self, plan: EnginePlan, sidecar: Sidecar, seconds: float, warmup: int = 10) -> None:
        self.plan = plan
        self.sidecar = sidecar
        self.seconds = seconds
        self.warmup = warmup

    def run(self, batches: Sequence[int]) -> list[BatchResult]:
        trt = import_tensorrt()
        try:
            import numpy as np
            import pycuda.driver as cuda
        except ImportError:
            raise ToolError("--benchmark needs pycuda and numpy; pip install pycuda", EXIT_ENVIRONMENT) from None
        try:
            cuda.init()
            context = cuda.Device(0).retain_primary_context()
        except Exception as error:
            raise ToolError(
                f"no CUDA device usable ({error}); run the container with --gpus all", EXIT_ENVIRONMENT
            ) from None
        context.push()
        try:
            logger = make_trt_logger(trt)
            engine = trt.Runtime(logger).deserialize_cuda_engine(self.plan.engine_path.read_bytes())
            if engine is None:
                raise ToolError(
                    f"{self.plan.engine_path.name} does not deserialize here; rebuild with --force", EXIT_BUILD_FAILED
                )
            execution = engine.create_execution_context()
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
            output_name = next(n for n in names if n != input_name)
            return [self._measure(cuda, np, execution, input_name, output_name, batch) for batch in batches]
        finally:
            context.pop()

    def _measure(
        self, cuda: Any, np: Any, execution: Any, input_name: str, output_name: str, batch: int
    ) -> BatchResult:
        size = self.sidecar.key.imgsz
        execution.set_input_shape(input_name, (batch, 3, size, size))
        out_shape = tuple(execution.get_tensor_shape(output_name))
        free_before, _ = cuda.mem_get_info()
        rng = np.random.default_rng(batch)
        hosts = []
        for _ in range(self.ROTATING_BUFFERS):
            host = cuda.pagelocked_empty((batch, 3, size, size), np.float32)
            host[...] = rng.random((batch, 3, size, size), dtype=np.float32)
            hosts.append(host)
        devices = [cuda.mem_alloc(host.nbytes) for host in hosts]
        host_out = cuda.pagelocked_empty(out_shape, np.float32)
        device_out = cuda.mem_alloc(host_out.nbytes)
        execution.set_tensor_address(output_name, int(device_out))
        stream = cuda.Stream()

        def one(i: int) -> tuple[Any, Any]:
            start, end = cuda.Event(), cuda.Event()
            slot = i % self.ROTATING_BUFFERS
            start.record(stream)
            cuda.memcpy_htod_async(devices[slot], hosts[slot], stream)
            execution.set_tensor_address(input_name, int(devices[slot]))
            if not execution.execute_async_v3(stream.handle):
                raise ToolError(f"inference failed at batch {batch}", EXIT_BUILD_FAILED)
            cuda.memcpy_dtoh_async(host_out, device_out, stream)
            end.record(stream)
            return start, end

        for i in range(self.warmup):
            one(i)
        stream.synchronize()
        free_after, total = cuda.mem_get_info()
        latencies: list[float] = []
        began = time.monotonic()
        i = 0
        while time.monotonic() - began < self.seconds or not latencies:
            start, end = one(i)
            end.synchronize()
            latencies.append(start.time_till(end))
            i += 1
        busy_s = sum(latencies) / 1000.0
        images_per_s = batch * len(latencies) / busy_s if busy_s > 0 else 0.0
        return BatchResult(
            batch=batch,
            iterations=len(latencies),
            images_per_s=round(images_per_s, 1),
            fps_per_camera=round(images_per_s / batch, 1),
            latency_median_ms=round(median(latencies), 3),
            latency_p99_ms=round(percentile(latencies, 0.99), 3),
            gpu_memory_used_mib=int((total - free_after) // (1 << 20)),
        )


def trtexec_compare(plan: EnginePlan, sidecar: Sidecar, results: list[BatchResult]) -> None:
    """The same batch sizes through trtexec, the reference a TensorRT user trusts."""
    import shutil

    trtexec = shutil.which("trtexec")
    if trtexec is None:
        raise ToolError(
            "--compare-trtexec: trtexec is not on PATH (it is /usr/bin/trtexec in the DeepStream triton image)",
            EXIT_ENVIRONMENT,
        )
    size = sidecar.key.imgsz
    for result in results:
        code, out = _run_quietly(
            [
                trtexec,
                f"--loadEngine={plan.engine_path}",
                f"--shapes={sidecar.profile.get('input', 'input')}:{result.batch}x3x{size}x{size}",
            ],
            timeout=600,
        )
        throughput = re.search(r"Throughput:\s*([0-9.]+)\s*qps", out)
        latency = re.search(r"Latency:.*?median = ([0-9.]+) ms", out)
        if code != 0 or not throughput:
            notice(f"trtexec failed at batch {result.batch} (exit {code})")
            continue
        result.trtexec_images_per_s = round(float(throughput.group(1)) * result.batch, 1)
        result.trtexec_latency_median_ms = float(latency.group(1)) if latency else None


def benchmark_table(results: list[BatchResult], sidecar: Sidecar) -> str:
    with_trtexec = any(r.trtexec_images_per_s is not None for r in results)
    header = ["batch", "images/s", "FPS/camera", "latency median ms", "latency p99 ms", "GPU mem MiB"]
    if with_trtexec:
        header += ["trtexec images/s", "trtexec median ms"]
    rows = []
    for r in results:
        row = [
            str(r.batch),
            f"{r.images_per_s:.1f}",
            f"{r.fps_per_camera:.1f}",
            f"{r.latency_median_ms:.2f}",
            f"{r.latency_p99_ms:.2f}",
            str(r.gpu_memory_used_mib),
        ]
        if with_trtexec:
            row += [
                f"{r.trtexec_images_per_s:.1f}" if r.trtexec_images_per_s else "-",
                f"{r.trtexec_latency_median_ms:.2f}" if r.trtexec_latency_median_ms else "-",
            ]
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    lines.append(
        f"engine {sidecar.engine_file}: {sidecar.precision_built}, built in {sidecar.build_seconds:.1f} s on "
        f"{sidecar.built_at}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# 7. Main: the run modes and main()
# --------------------------------------------------------------------------------------------


def run_info(options: Options) -> int:
    info = SystemInfo.detect(import_tensorrt=True)
    engine = engine_origin(options, info)
    if options.json:
        print(json.dumps({**info.as_json(), "engine": engine}, indent=2, sort_keys=True))
    else:
        print(info.as_table())
        print(
            f"Engine      {engine['engine'] or 'not planned'} ({engine['origin'] or 'not built yet'}; store "
            f"{engine['store'] or 'off'})"
        )
    # the report is complete either way; no GPU is still an environment problem for callers
    return EXIT_OK if info.gpus else EXIT_ENVIRONMENT


def target_gpu_and_trt(options: Options, system: SystemInfo) -> tuple[GpuInfo, str]:
    """The GPU and TensorRT this run builds for; a missing one is exit 3 (it wins over 1)."""
    gpu = system.gpu(options.gpu_id)
    if not system.tensorrt_version:
        system.import_tensorrt_version()
    if not system.tensorrt_version:
        raise ToolError("TensorRT not found; run inside the DeepStream image or pip install tensorrt", EXIT_ENVIRONMENT)
    return gpu, system.tensorrt_version


def pin_cuda_device(gpu: GpuInfo) -> None:
    """Make CUDA device 0 of this process the chosen GPU, before tensorrt/torch initialise CUDA.

    NVML and CUDA may order GPUs differently; the UUID is unambiguous.
    """
    if gpu.uuid and gpu.uuid.startswith(("GPU-", "MIG-")):
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu.uuid
    else:
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu.index)


def _verified_engines_path() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / f"auto_build_engine-{os.getuid()}-verified.json"


def _engine_identity(path: Path) -> str | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return f"{path}:{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def _engine_was_verified(path: Path) -> bool:
    """True when this very file (inode, size, mtime) passed a deep check in this container already."""
    identity = _engine_identity(path)
    try:
        return identity is not None and identity in json.loads(read_regular_file(_verified_engines_path()))
    except (OSError, ValueError, TypeError):
        return False


def _remember_verified(path: Path) -> None:
    """Only into the temp dir (never ENGINE_DIR/CONFIG_DIR); a failure just means hashing again."""
    identity = _engine_identity(path)
    if identity is None:
        return
    stamp = _verified_engines_path()
    try:
        known = json.loads(read_regular_file(stamp))
        known = known if isinstance(known, list) else []
    except (OSError, ValueError):
        known = []
    try:
        atomic_write_text(stamp, json.dumps([*known[-15:], identity]))
    except ToolError:
        pass


def run_check(options: Options) -> int:
    """Exit 0 when a valid engine and a matching config exist; 1 when a build is needed. Writes nothing
    into ENGINE_DIR or CONFIG_DIR. The first check of an engine (the healthcheck's first run after a
    build) and --deep verify the engine's sha256; that an engine passed is remembered in the temp dir."""
    system = SystemInfo.detect(warm=True)
    gpu, trt_version = target_gpu_and_trt(options, system)
    plan = plan_engine(options, gpu, trt_version)
    options.deep = options.deep or not _engine_was_verified(plan.engine_path)
    state = check_engine(plan, options)
    if state.valid and options.deep:  # only a check that hashed the engine is remembered (no write per healthcheck)
        _remember_verified(plan.engine_path)
    if not state.valid or state.sidecar is None:
        log(f"build needed: {state.reason}")
        return EXIT_BUILD_FAILED
    try:
        config = DeepStreamConfig(options, plan, state.sidecar)
        current = config.is_current()
    except ToolError as error:
        log(f"build needed: {error}")
        return EXIT_BUILD_FAILED
    if not current:
        damaged = "; ".join(f"{path} cannot be read ({why})" for path, why in config.unreadable.items())
        log(f"build needed: {damaged or CONFIG_FILE_NAME + ' does not match the engine'}")
        return EXIT_BUILD_FAILED
    log(f"valid: {plan.engine_path}")
    return EXIT_OK


def run_dry_run(options: Options) -> int:
    """Everything but the TensorRT build: find/export/validate the ONNX and print the plan."""
    TIMELINE.reset()
    system = SystemInfo.detect()
    gpu = system.gpu(options.gpu_id) if system.gpus else None
    if gpu is None:
        notice(f"no GPU visible ({system.missing.get('gpu', 'unknown')}); the plan below cannot name one")
    onnx_model = YOLOExporter(options).resolve()
    lines = [f"ONNX        {onnx_model.path} ({onnx_model.origin}, {onnx_model.num_classes} classes)"]
    if gpu is not None and system.tensorrt_version:
        plan = plan_engine(options, gpu, system.tensorrt_version)
        state = check_engine(plan, options)
        lines += [
            f"Engine      {plan.engine_path}",
            f"Precision   {plan.key.precision} ({plan.precision_reason})",
            f"Cache       {'valid: would be reused' if state.valid else 'would build: ' + state.reason}",
        ]
    else:
        precision, reason = resolve_precision(options.precision, gpu, system.tensorrt_version)
        lines += [
            f"Engine      not planned: {'no GPU' if gpu is None else 'no TensorRT'} here",
            f"Precision   {precision} ({reason})",
        ]
    lines += [
        f"Profile     batch {options.min_batch}/{options.opt_batch}/{options.max_batch} at "
        f"3x{options.imgsz}x{options.imgsz}",
        f"Config      {Path(options.config_dir).absolute() / CONFIG_FILE_NAME} (batch-size {options.num_sources}, "
        f"GPU {options.gpu_id})",
        f"Timeline    {TIMELINE.line()}",
    ]
    print("\n".join(lines))
    return EXIT_OK


def run_ensure(options: Options) -> int:
    """Build only when no valid engine exists (or --force); then make the config match the engine."""
    started = time.monotonic()
    TIMELINE.reset()
    system = SystemInfo.detect(warm=True)
    gpu, trt_version = target_gpu_and_trt(options, system)
    plan = plan_engine(options, gpu, trt_version)
    validate_paths_before_work(options)
    clean_stale_temp_files(options, plan.engine_dir)
    state = check_engine(plan, options)
    if state.valid and state.sidecar is not None and not options.force:
        return finish_ensure(options, system, plan, state.sidecar, "reused", started)
    log(f"engine {plan.stem}: {'forced rebuild' if options.force else state.reason}")
    _create_dir(plan.engine_dir, "ENGINE_DIR", "mount a writable volume there")  # BuildLock says who may write
    # the export runs under the lock too: containers starting together export once, not N times
    with BuildLock(plan.engine_dir):
        state = check_engine(plan, options)  # another process may have built it while we waited
        if state.valid and state.sidecar is not None and not options.force:
            return finish_ensure(options, system, plan, state.sidecar, "reused (built by another process)", started)
        remove_stale_temp_files(plan.engine_dir)
        pin_cuda_device(gpu)
        onnx_model = YOLOExporter(options).resolve()
        sidecar, how = ensure_engine(options, system, plan, onnx_model)  # the fleet store, if set, may pull
        # still under the lock: the config phase joins the timeline kept in the sidecar
        return finish_ensure(options, system, plan, sidecar, how, started, first_start=True)


def build_and_install(options: Options, system: SystemInfo, plan: EnginePlan, onnx_model: Any) -> Sidecar:
    """Under the lock: build, verify, save the merged timing cache, install engine then sidecar."""
    token = CancelToken()
    restore = install_cancel_handlers(token)
    try:
        builder = EngineBuilder(options, plan, token)
        cache_path = plan.timing_cache_path
        timing_cache = read_timing_cache(cache_path)
        began = time.monotonic()
        log(
            f"building {plan.engine_path.name} with TensorRT {plan.key.tensorrt_version} ({plan.key.precision}: "
            f"{plan.precision_reason})"
        )
        reference = getattr(onnx_model, "reference", None)
        with TIMELINE.phase("build"):  # smoke/compare is counted apart inside verify
            result = builder.build(Path(onnx_model.path), timing_cache)
            check = builder.verify(result.plan_bytes, reference)
        fallback = None
        if check is not None and not check.ok and result.precision_built == "fp16":
            if options.precision == "fp16":
                raise ToolError(
                    f"the FP16 engine's detections differ from the ONNX: {check.line}; nothing was installed. Use "
                    "--precision auto (falls back to FP32) or fp32",
                    EXIT_BUILD_FAILED,
                )
            fallback = f"the FP16 engine's detections differed from the ONNX: {check.line}"
            notice(f"{fallback}; rebuilding in FP32")
            with TIMELINE.phase("build fp32 (fallback)"):
                result = builder.build(Path(onnx_model.path), result.timing_cache or timing_cache, precision="fp32")
                check = builder.verify(result.plan_bytes, reference)
        if check is not None and not check.ok:
            raise ToolError(
                f"the {result.precision_built.upper()} engine's detections differ from the ONNX: {check.line}; "
                "nothing was installed. Check the ONNX (--validate full) and the TensorRT install",
                EXIT_BUILD_FAILED,
            )
        if result.timing_cache:
            atomic_write_bytes(cache_path, result.timing_cache)
        given = given_model_file(options)
        gpu = plan.gpu
        assert gpu is not None
        size = plan.key.imgsz
        sidecar = Sidecar(
            key=plan.key,
            precision_built=result.precision_built,
            engine_file=plan.engine_path.name,
            engine_size=len(result.plan_bytes),
            engine_sha256=sha256_of_bytes(result.plan_bytes),
            onnx=FileStamp.of(Path(onnx_model.path)),
            source=_stamp_or_none(given),
            class_names=list(onnx_model.class_names),
            profile={
                "input": "input",
                "min": [plan.key.min_batch, 3, size, size],
                "opt": [plan.key.opt_batch, 3, size, size],
                "max": [plan.key.max_batch, 3, size, size],
            },
            gpu={
                "index": gpu.index,
                "name": gpu.name,
                "uuid": gpu.uuid,
                "compute_capability": gpu.compute_capability,
                "memory_total_mib": gpu.memory_total_mib,
            },
            driver_version=system.driver_version,
            cuda_driver_version=system.cuda_driver_version,
            cuda_toolkit_version=system.cuda_toolkit_version,
            workspace_mb=result.workspace_mb,
            builder_optimization_level=result.builder_optimization_level,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            build_seconds=round(time.monotonic() - began, 2),
            engine_check=check.as_json()
            if check is not None
            else {"ok": None, "line": "not run: pycuda is not installed"},
            precision_fallback=fallback,
            timeline=TIMELINE.as_json(),
        )
        if token.event.is_set():
            raise BuildCancelled()
        config = DeepStreamConfig(options, plan, sidecar)
        install_engine(plan, result.plan_bytes, sidecar, config.staged_files())
        if token.event.is_set():  # during the install: it completed, but the step must not report success
            raise ToolError(
                "interrupted by signal during the install; the new engine is complete and the next start uses it",
                token.exit_code,
            )
        return sidecar
    except BuildCancelled:
        remove_stale_temp_files(plan.engine_dir)
        raise ToolError(
            "build cancelled by signal; the previous engine (if any) is untouched", token.exit_code
        ) from None
    finally:
        restore()


def finish_ensure(
    options: Options,
    system: SystemInfo,
    plan: EnginePlan,
    sidecar: Sidecar,
    how: str,
    started: float,
    first_start: bool = False,
) -> int:
    """Write the config, report; after a build or a pull (a first start) the sidecar gets this server's timeline."""
    with TIMELINE.phase("config"):
        config = DeepStreamConfig(options, plan, sidecar)
        rewritten = config.write() or how.startswith("built")  # a build installs the config with the engine
    if first_start:  # the sidecar gets the whole timeline; same engine, so the pair stays valid
        sidecar.timeline = TIMELINE.as_json() + [
            {"phase": "total", "seconds": round(time.monotonic() - TIMELINE.started, 2)}
        ]
        try:
            atomic_write_text(plan.sidecar_path, json.dumps(sidecar.as_json(), indent=2, sort_keys=True) + "\n")
        except ToolError as error:  # the sidecar written at install stays valid; only the config phase is missing
            notice(f"the timeline could not be added to {plan.sidecar_path.name} ({error})")
    gpu = plan.gpu
    assert gpu is not None
    report = [
        f"GPU         {gpu.index}: {gpu.name} (sm {gpu.compute_capability}, {gpu.memory_total_mib} MiB)",
        f"Driver      {system.driver_version or 'unknown'} (CUDA {system.cuda_driver_version or '?'}; toolkit "
        f"{system.cuda_toolkit_version or 'not installed'})",
        f"TensorRT    {plan.key.tensorrt_version}",
        f"DeepStream  {system.deepstream_version or 'not found'}",
        f"Engine      {plan.engine_path} ({how}; {sidecar.precision_built}, batch "
        f"{sidecar.profile['min'][0]}-{sidecar.profile['opt'][0]}-{sidecar.max_batch}, {sidecar.key.imgsz}px)",
        f"Config      {config.config_path} ({'written' if rewritten else 'unchanged'}; batch-size {config.batch_size})",
        f"Ready in    {time.monotonic() - started:.2f} s",
    ]
    if first_start:
        if sidecar.engine_check and how.startswith("built"):  # a pulled engine was checked on its builder
            report.append(
                f"Check       {sidecar.engine_check.get('line')}"
                + (" (FP16 fell back to FP32)" if sidecar.precision_fallback else "")
            )
        report.append(f"Timeline    {TIMELINE.line()}")
    if options.verbosity >= 1:
        print("\n".join(report), flush=True)
    return EXIT_OK


def run_benchmark(options: Options) -> int:
    """Time the current valid engine; never builds, never writes into ENGINE_DIR."""
    system = SystemInfo.detect()
    gpu, trt_version = target_gpu_and_trt(options, system)
    plan = plan_engine(options, gpu, trt_version)
    state = check_engine(plan, options)
    if not state.valid or state.sidecar is None:
        others = [p.name for p in Path(plan.engine_dir).glob(f"{plan.key.model}_*.json") if p != plan.sidecar_path]
        if others and not plan.sidecar_path.exists():
            raise ToolError(
                f"the engines in {plan.engine_dir} ({', '.join(sorted(others))}) were built for another "
                f"GPU/TensorRT/options; run without --benchmark first to build for {gpu.name}",
                EXIT_USAGE,
            )
        raise ToolError(f"no engine ({state.reason}); run without --benchmark first", EXIT_BUILD_FAILED)
    sidecar = state.sidecar
    if options.batches is None:
        default = [b for b in (1, 4, 8, 16) if int(sidecar.profile["min"][0]) <= b <= sidecar.max_batch]
        batches = sorted(set(default) | {sidecar.max_batch})
    else:
        batches = parse_batches(options.batches, sidecar)
    pin_cuda_device(gpu)
    results = EngineBenchmark(plan, sidecar, options.seconds).run(batches)
    if options.compare_trtexec:
        trtexec_compare(plan, sidecar, results)
    if options.json:
        print(
            json.dumps(
                {
                    "gpu": gpu.as_json(),
                    "tensorrt_version": trt_version,
                    "engine": str(plan.engine_path),
                    "precision": sidecar.precision_built,
                    "imgsz": sidecar.key.imgsz,
                    "engine_build_seconds": sidecar.build_seconds,
                    "seconds_per_batch": options.seconds,
                    "results": [dataclasses.asdict(r) for r in results],
                },
                indent=2,
            )
        )
    else:
        print(
            f"{gpu.name} (sm {gpu.compute_capability}), TensorRT {trt_version}, {sidecar.key.imgsz}x{sidecar.key.imgsz}"
        )
        print(benchmark_table(results, sidecar))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    global _VERBOSITY
    del _SIGNALS_RECEIVED[:]
    _RAISE_ON_SIGNAL[0] = True
    restore = install_interrupt_handlers()
    try:
        return _signal_aware(_main(argv))
    except KeyboardInterrupt:
        _RAISE_ON_SIGNAL[0] = False
        name = "SIGTERM" if _signal_exit_code() == EXIT_SIGTERM else "SIGINT"
        print(f"error: interrupted by {name}; nothing half-written is kept, run again to finish", file=sys.stderr)
        return _signal_exit_code()
    finally:
        _RAISE_ON_SIGNAL[0] = False
        restore()


def _signal_aware(code: int) -> int:
    """A run that saw SIGINT/SIGTERM exits 130/143 even where it finished its work (the caller,
    e.g. the entrypoint, must not go on to start the app)."""
    _RAISE_ON_SIGNAL[0] = False
    if _SIGNALS_RECEIVED and code not in (EXIT_SIGINT, EXIT_SIGTERM):
        name = "SIGTERM" if _signal_exit_code() == EXIT_SIGTERM else "SIGINT"
        print(f"error: interrupted by {name}; what was installed is complete, run again to go on", file=sys.stderr)
        return _signal_exit_code()
    return code


def _main(argv: Sequence[str] | None) -> int:
    global _VERBOSITY
    try:
        options = parse_options(argv)
        _VERBOSITY = options.verbosity
        if options.check_env:  # parse_options validated everything: the entrypoint's check when no builder runs
            return EXIT_OK
        if options.info:
            return run_info(options)
        if options.check:
            return run_check(options)
        if options.dry_run:
            return run_dry_run(options)
        if options.benchmark:
            return run_benchmark(options)
        return run_ensure(options)
    except ToolError as error:
        if _SIGNALS_RECEIVED and error.exit_code not in (EXIT_SIGINT, EXIT_SIGTERM):
            raise KeyboardInterrupt from None  # e.g. an import or onnxruntime load broken by the signal
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
