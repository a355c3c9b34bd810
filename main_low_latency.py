#!/usr/bin/env python3
"""Low-latency DeepStream 8.0 app: N sources -> nvstreammux -> nvinfer (YOLO11) [-> nvtracker]
-> nvosdbin -> sink, written against pyservicemaker's Pipeline API.

It reads the nvinfer config written by auto_build_engine.py, refuses to start on anything it can
tell is wrong (one line on stderr, exit 1/2/3), and logs one report line per stream every few
seconds. `pyservicemaker` is imported only inside the pipeline process, so `-h` and the checks
work anywhere.

Process layout: pyservicemaker's `Pipeline.wait()` blocks signal delivery in the thread that calls
it, so (like NVIDIA's samples) the pipeline runs in a child process. NVIDIA's Python samples end it
with `process.terminate()` on Ctrl+C; here the parent first asks the child to stop the pipeline
(`Pipeline.stop()`, see end_stream()), waits up to --eos-timeout-s, and only then terminates it. The
file sink writes a fragmented MP4, so the file plays up to its last fragment whichever way it ends.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.util
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import platform
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the builder's names and readers, one copy (a cheap import: its heavy modules load inside functions)
from auto_build_engine import CONFIG_FILE_NAME as CONFIG_NAME
from auto_build_engine import Options as _BuilderOptions
from auto_build_engine import Sidecar, ToolError
from auto_build_engine import read_labels as _read_label_lines

LOG = logging.getLogger("main_low_latency")

APP_DIR = Path(__file__).resolve().parent
DEFAULT_SOURCE = "/opt/nvidia/deepstream/deepstream/samples/streams/sample_1080p_h264.mp4"
DEFAULT_CONFIG_DIR = str(_BuilderOptions.config_dir)  # where the builder writes CONFIG_NAME by default
DEFAULT_OUTPUT = "/app/output/out.mp4"
TRACKER_LIB = "/opt/nvidia/deepstream/deepstream/lib/libnvds_nvmultiobjecttracker.so"
TRACKER_CONFIGS = {"nvdcf": "tracker_nvdcf.yml", "iou": "tracker_iou.yml"}
SINKS = ("fake", "file", "rtsp", "display")
RTSP_MOUNT = "/ds"
# Legacy nvstreammux output size: the usual camera resolution, so 16:9 frames reach nvinfer
# unstretched and nvinfer letterboxes them to the network size (maintain-aspect-ratio=1,
# symmetric-padding=1 in the generated config); NVIDIA's deepstream_test3 muxes at 1920x1080 too.
DEFAULT_MUX_WIDTH, DEFAULT_MUX_HEIGHT = 1920, 1080
# qtmux fragment length: with fragments the MP4 plays up to the last complete one even when the
# pipeline is torn down without an EOS reaching qtmux (see end_stream()).
MP4_FRAGMENT_MS = 1000
BUILD_HINT = "python3 auto_build_engine.py"

EXIT_OK, EXIT_BUILD, EXIT_USAGE, EXIT_ENV = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # SIGINT, as a shell reports it


class AppError(Exception):
    """A refusal to start (or run) with a one-line fix; main() maps it to its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    uri: str
    kind: str  # "file", "rtsp", "http", "v4l2"

    @property
    def live(self) -> bool:
        return self.kind in ("rtsp", "v4l2")


@dataclass(frozen=True)
class InferConfig:
    path: Path
    engine: Path
    batch_size: int
    height: int
    width: int
    labels_path: Path | None
    gpu_id: int


@dataclass(frozen=True)
class RunPlan:
    """Everything the pipeline process needs; picklable so it crosses the process boundary."""

    sources: tuple[Source, ...]
    infer: InferConfig
    labels: tuple[str, ...]
    sink: str = "fake"
    output: Path = Path(DEFAULT_OUTPUT)
    rtsp_port: int = 8554
    rtsp_udp_port: int = 5400
    tracker: str | None = None
    tracker_config: Path | None = None
    push_timeout_us: int = 33000
    rtsp_latency_ms: int = 100
    rtsp_tcp: bool = False
    rtsp_reconnect_s: int = 10
    rtsp_reconnect_attempts: int = -1
    loop: bool = False
    report_s: float = 5.0
    json_log: bool = False
    gpu_id: int = 0
    new_mux: bool = False
    mux_width: int = DEFAULT_MUX_WIDTH
    mux_height: int = DEFAULT_MUX_HEIGHT
    measure_latency: bool = False
    eos_timeout_s: float = 8.0

    @property
    def live(self) -> bool:
        return any(s.live for s in self.sources)


# --------------------------------------------------------------------------------------------
# Command line (flags with env twins)
# --------------------------------------------------------------------------------------------
class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints usage + error over several lines and exits; we want one line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise AppError(f"{message} (see {self.prog} -h)", EXIT_USAGE)


# The numeric flags: (flag, type, env twin or None, default, help)
_NUMBER_FLAGS: tuple[tuple[str, type, str | None, Any, str], ...] = (
    (
        "--rtsp-port",
        int,
        "RTSP_PORT",
        8554,
        "port of the RTSP server for --sink rtsp [RTSP_PORT] (default %(default)s)",
    ),
    (
        "--rtsp-udp-port",
        int,
        None,
        5400,
        "local UDP port between the encoder and the RTSP server (default %(default)s)",
    ),
    ("--report-s", float, "REPORT_S", 5.0, "seconds between report lines [REPORT_S] (default %(default)s)"),
    (
        "--mux-width",
        int,
        "MUX_WIDTH",
        DEFAULT_MUX_WIDTH,
        "legacy nvstreammux output width; frames are scaled into it with their aspect "
        "ratio kept (enable-padding) [MUX_WIDTH] (default %(default)s)",
    ),
    (
        "--mux-height",
        int,
        "MUX_HEIGHT",
        DEFAULT_MUX_HEIGHT,
        "legacy nvstreammux output height [MUX_HEIGHT] (default %(default)s)",
    ),
    (
        "--push-timeout-us",
        int,
        "PUSH_TIMEOUT_US",
        33000,
        "nvstreammux batched-push-timeout, about one frame interval [PUSH_TIMEOUT_US] (default %(default)s)",
    ),
    (
        "--rtsp-latency-ms",
        int,
        None,
        100,
        "RTSP jitter buffer in ms; lower = less delay, more jitter sensitivity (default %(default)s)",
    ),
    (
        "--rtsp-reconnect-s",
        int,
        None,
        10,
        "seconds between reconnect attempts to a silent camera (default %(default)s)",
    ),
    ("--rtsp-reconnect-attempts", int, None, -1, "reconnect attempts, -1 = forever (default %(default)s)"),
    ("--gpu-id", int, "GPU_ID", None, "GPU for all elements [GPU_ID] (default: the config's gpu-id)"),
    (
        "--eos-timeout-s",
        float,
        None,
        8.0,
        "on SIGINT/SIGTERM, how long to let the sinks finish before killing "
        "(default %(default)s; keep below docker stop's timeout)",
    ),
)


def build_arg_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="main_low_latency.py",
        description="Low-latency DeepStream 8.0 YOLO app (pyservicemaker). Each flag's env twin "
        "is given in brackets; the flag wins.",
    )
    p.add_argument(
        "--source",
        action="append",
        metavar="URI",
        help="rtsp://, file://, http(s)://, a file path or /dev/videoN; repeat for "
        f"more cameras [SOURCES, comma-separated] (default {DEFAULT_SOURCE})",
    )
    p.add_argument("--config", metavar="PATH", help=f"nvinfer config (default CONFIG_DIR/{CONFIG_NAME})")
    p.add_argument(
        "--config-dir",
        default=env.get("CONFIG_DIR") or DEFAULT_CONFIG_DIR,
        metavar="DIR",
        help="[CONFIG_DIR] (default %(default)s)",
    )
    p.add_argument("--sink", default=env.get("SINK") or "fake", choices=SINKS, help="[SINK] (default %(default)s)")
    p.add_argument(
        "--output",
        default=env.get("OUTPUT") or DEFAULT_OUTPUT,
        metavar="PATH",
        help="mp4 written by --sink file [OUTPUT] (default %(default)s)",
    )
    p.add_argument(
        "--tracker",
        default=env.get("TRACKER") or "none",
        choices=("none", *TRACKER_CONFIGS),
        help="nvtracker with configs/tracker_<name>.yml [TRACKER] (default %(default)s)",
    )
    p.add_argument("--loop", action="store_true", help="loop file sources forever")
    p.add_argument("--json-log", action="store_true", help="report as one JSON object per line")
    p.add_argument("--rtsp-tcp", action="store_true", help="RTP over TCP (lossy networks)")
    for flag, convert, env_name, default, help_text in _NUMBER_FLAGS:
        if env_name:
            default = _env_number(env, env_name, default, convert, "an integer" if convert is int else "a number")
        p.add_argument(flag, type=convert, default=default, help=help_text)
    return p


def _env_number(env: Mapping[str, str], name: str, default: Any, convert: Callable[[str], Any], what: str) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return convert(raw)
    except ValueError:
        raise AppError(f"{name}={raw!r} is not {what}; fix or unset it") from None


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> argparse.Namespace:
    args = build_arg_parser(env).parse_args(list(argv))
    # Env twins become defaults, which argparse does not check against choices: check here.
    if args.sink not in SINKS:
        raise AppError(f"unknown sink {args.sink!r}; use one of {', '.join(SINKS)}")
    if args.tracker not in ("none", *TRACKER_CONFIGS):
        raise AppError(f"unknown tracker {args.tracker!r}; use none, nvdcf or iou")
    if args.report_s <= 0:
        raise AppError("--report-s must be > 0")
    if args.push_timeout_us <= 0:
        raise AppError("--push-timeout-us must be > 0 (about one frame interval, e.g. 33000)")
    if args.mux_width <= 0 or args.mux_height <= 0:
        raise AppError(
            f"--mux-width/--mux-height must be > 0 (got {args.mux_width}x{args.mux_height}); "
            f"use the cameras' resolution, e.g. {DEFAULT_MUX_WIDTH}x{DEFAULT_MUX_HEIGHT}"
        )
    return args


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
def raw_sources(args: argparse.Namespace, env: Mapping[str, str]) -> list[str]:
    if args.source is not None:
        return [s.strip() for s in args.source]
    env_sources = env.get("SOURCES", "")
    if env_sources.strip():
        # Empty items ("a,,b") are dropped; all-empty ("," ) means zero sources -> refused later.
        return [s.strip() for s in env_sources.split(",") if s.strip()]
    return [DEFAULT_SOURCE]


def to_source(raw: str) -> Source:
    """Turn one user-given source into a URI nvurisrcbin accepts, or refuse it."""
    if not raw:
        raise AppError("empty source; give an rtsp://, file://, http(s):// URI, a file or /dev/videoN")
    if raw.startswith("/dev/video"):
        if not raw[len("/dev/video") :].isdigit():
            raise AppError(f"malformed camera device {raw!r}; expected /dev/videoN")
        # nvurisrcbin wraps uridecodebin, which hands v4l2:// URIs to v4l2src (its URI handler
        # takes v4l2:///dev/videoN). Chosen over a separate v4l2src branch to keep one source kind.
        return Source(f"v4l2://{raw}", "v4l2")
    parsed = urllib.parse.urlsplit(raw)
    scheme = parsed.scheme.lower()
    if scheme in ("rtsp", "rtsps", "http", "https"):
        if not parsed.hostname:
            raise AppError(f"malformed source URI {redact_uri(raw)!r}: no host")
        return Source(raw, "rtsp" if scheme.startswith("rtsp") else "http")
    if scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
        if not parsed.path or parsed.netloc not in ("", "localhost"):
            raise AppError(f"malformed file URI {raw!r}; use file:///absolute/path")
        return Source(raw, "file") if path.is_file() else _missing_file(path)
    if scheme == "v4l2":
        return Source(raw, "v4l2")
    if scheme and len(scheme) > 1:  # "C:" style single letters are not schemes, but we are on Linux
        raise AppError(
            f"unsupported source scheme {scheme!r} in {redact_uri(raw)!r}; "
            "use rtsp://, file://, http(s):// or /dev/videoN"
        )
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        _missing_file(path)
    return Source(path.as_uri(), "file")


def _missing_file(path: Path) -> Source:
    raise AppError(f"source file not found: {path}; check the path (mount it into the container)")


def redact_uri(uri: str) -> str:
    """Hide camera passwords in logs and reports."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.password is None:
        return uri
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


# --------------------------------------------------------------------------------------------
# nvinfer config, engine sidecar, labels
# --------------------------------------------------------------------------------------------
def config_path_from(args: argparse.Namespace) -> Path:
    return Path(args.config) if args.config else Path(args.config_dir) / CONFIG_NAME


def read_infer_config(path: Path) -> InferConfig:
    if not path.is_file():
        raise AppError(f"nvinfer config not found: {path}; run `{BUILD_HINT}` first or pass --config", EXIT_USAGE)
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise AppError(f"cannot parse {path}: {str(exc).splitlines()[0]}; regenerate it with `{BUILD_HINT}`") from None
    if not parser.has_section("property"):
        raise AppError(f"{path} has no [property] section; regenerate it with `{BUILD_HINT}`")
    prop = parser["property"]
    base = path.parent  # nvinfer resolves relative paths against the config's directory

    engine_raw = prop.get("model-engine-file", "").strip()
    if not engine_raw:
        raise AppError(f"{path} names no model-engine-file; run `{BUILD_HINT}`", EXIT_BUILD)
    engine = _resolve(base, engine_raw)
    if not engine.is_file():
        raise AppError(f"TensorRT engine missing: {engine}; run `{BUILD_HINT}` to build it", EXIT_BUILD)
    height, width = _infer_dims(prop.get("infer-dims", ""), path)
    labels_raw = prop.get("labelfile-path", "").strip()
    return InferConfig(
        path=path,
        engine=engine,
        batch_size=_int_key(prop, "batch-size", path, default=1),
        height=height,
        width=width,
        labels_path=_resolve(base, labels_raw) if labels_raw else None,
        gpu_id=_int_key(prop, "gpu-id", path, default=0),
    )


def _resolve(base: Path, raw: str) -> Path:
    p = Path(raw)
    return p if p.is_absolute() else (base / p)


def _int_key(prop: configparser.SectionProxy, key: str, path: Path, default: int) -> int:
    raw = prop.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise AppError(f"{path}: {key}={raw!r} is not an integer; regenerate with `{BUILD_HINT}`") from None


def _infer_dims(raw: str, path: Path) -> tuple[int, int]:
    parts = [p.strip() for p in raw.split(";") if p.strip()]
    try:
        c, h, w = (int(p) for p in parts)
    except ValueError:
        raise AppError(f"{path}: infer-dims={raw!r} is not C;H;W; regenerate with `{BUILD_HINT}`") from None
    if c != 3 or h <= 0 or w <= 0:
        raise AppError(f"{path}: infer-dims={raw!r} is not 3;H;W; regenerate with `{BUILD_HINT}`")
    return h, w


def engine_max_batch(engine: Path, fallback: int) -> int:
    """Max batch of the engine's optimisation profile, from its sidecar (the builder's reader)."""
    sidecar = engine.with_suffix(".json")
    if not sidecar.is_file():
        return fallback
    try:
        return Sidecar.read(sidecar).max_batch
    except (ValueError, ToolError) as exc:  # damaged, incomplete, another schema, unreadable
        LOG.warning("cannot read profile.max from %s (%s); assuming max batch = batch-size %d", sidecar, exc, fallback)
        return fallback


def check_batch(infer: InferConfig, n_sources: int) -> None:
    if infer.batch_size < n_sources:
        raise AppError(
            f"{infer.path}: batch-size={infer.batch_size} < {n_sources} sources; run "
            f"`{BUILD_HINT} --num-sources {n_sources}` (or NUM_SOURCES={n_sources})"
        )
    max_batch = engine_max_batch(infer.engine, infer.batch_size)
    if n_sources > max_batch:
        raise AppError(
            f"{n_sources} sources but the engine's max batch is {max_batch}; rebuild with "
            f"`{BUILD_HINT} --max-batch {n_sources} --num-sources {n_sources}` or use fewer sources"
        )


def read_labels(path: Path | None) -> tuple[str, ...]:
    """Class names by id, as nvinfer reads labels.txt (the builder's reader: blank lines skipped)."""
    if path is None:
        return ()
    try:
        return tuple(_read_label_lines(path))
    except (OSError, UnicodeDecodeError):
        LOG.warning("labels file %s unreadable; reporting class ids", path)
        return ()


def class_name(labels: Sequence[str], class_id: int) -> str:
    if 0 <= class_id < len(labels) and labels[class_id]:
        return labels[class_id]
    return f"class{class_id}"


# --------------------------------------------------------------------------------------------
# Environment checks (no heavy imports in the parent)
# --------------------------------------------------------------------------------------------
def check_pyservicemaker() -> None:
    # find_spec locates the package without executing it: the real import (GStreamer, CUDA)
    # happens only in the pipeline process.
    if importlib.util.find_spec("pyservicemaker") is None:
        raise AppError("pyservicemaker not found; run inside the DeepStream 8.0 image", EXIT_ENV)


def check_rtsp_server() -> None:
    try:
        import gi  # noqa: PLC0415  (optional dependency, only for --sink rtsp)

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GstRtspServer  # noqa: F401,PLC0415
    except (ImportError, ValueError) as exc:
        raise AppError(
            f"--sink rtsp needs GstRtspServer via PyGObject ({exc}); install "
            "python3-gi and gir1.2-gst-rtsp-server-1.0, or use --sink file",
            EXIT_ENV,
        ) from None


def make_plan(argv: Sequence[str], env: Mapping[str, str]) -> RunPlan:
    """Parse and validate everything; raise AppError on the first problem."""
    args = parse_args(argv, env)
    raws = raw_sources(args, env)
    if not raws:
        raise AppError("no sources given; pass --source URI or SOURCES=uri1,uri2")
    sources = tuple(to_source(r) for r in raws)
    check_pyservicemaker()
    if args.sink == "rtsp":
        check_rtsp_server()
    infer = read_infer_config(config_path_from(args))
    check_batch(infer, len(sources))
    tracker_config = None
    if args.tracker != "none":
        tracker_config = APP_DIR / "configs" / TRACKER_CONFIGS[args.tracker]
        if not tracker_config.is_file():
            raise AppError(f"tracker config missing: {tracker_config}; restore configs/ from the repo")
    output = Path(args.output).expanduser().resolve()
    if args.sink == "file":
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AppError(f"cannot create {output.parent} ({exc.strerror}); pass a writable --output") from None
    return RunPlan(
        sources=sources,
        infer=infer,
        labels=read_labels(infer.labels_path),
        sink=args.sink,
        output=output,
        rtsp_port=args.rtsp_port,
        rtsp_udp_port=args.rtsp_udp_port,
        tracker=None if args.tracker == "none" else args.tracker,
        tracker_config=tracker_config,
        push_timeout_us=args.push_timeout_us,
        rtsp_latency_ms=args.rtsp_latency_ms,
        rtsp_tcp=args.rtsp_tcp,
        rtsp_reconnect_s=args.rtsp_reconnect_s,
        rtsp_reconnect_attempts=args.rtsp_reconnect_attempts,
        loop=args.loop,
        report_s=args.report_s,
        json_log=args.json_log,
        gpu_id=args.gpu_id if args.gpu_id is not None else infer.gpu_id,
        # The new mux reads this env var when GStreamer loads the plugin; we only mirror it.
        new_mux=env.get("USE_NEW_NVSTREAMMUX", "").lower() == "yes",
        mux_width=args.mux_width,
        mux_height=args.mux_height,
        measure_latency=env.get("NVDS_ENABLE_LATENCY_MEASUREMENT", "") == "1",
        eos_timeout_s=args.eos_timeout_s,
    )


# --------------------------------------------------------------------------------------------
# Report: plain class, no pyservicemaker, fed by the probe, tested with fake metadata + clock
# --------------------------------------------------------------------------------------------
@dataclass
class StreamWindow:
    frames: int = 0
    objects: int = 0
    classes: Counter = field(default_factory=Counter)


class DetectionReporter:
    """Counts frames/detections per stream and class; renders one line per stream per window.

    add_frame() runs on GStreamer streaming threads, report() on the report thread: one lock.
    """

    def __init__(
        self,
        uris: Sequence[str],
        labels: Sequence[str],
        *,
        json_lines: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._uris = [redact_uri(u) for u in uris]
        self._labels = list(labels)
        self._json = json_lines
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._windows = [StreamWindow() for _ in uris]
        self._window_start = clock()

    def add_frame(self, pad_index: int, class_ids: Iterable[int]) -> None:
        counts = Counter(int(c) for c in class_ids)  # consume the iterator outside the lock
        with self._lock:
            w = self._window(pad_index)
            w.frames += 1
            w.objects += sum(counts.values())
            w.classes.update(counts)

    def _window(self, pad_index: int) -> StreamWindow:
        while pad_index >= len(self._windows):  # tolerate a pad index we were not told about
            self._windows.append(StreamWindow())
            self._uris.append(f"stream{len(self._uris)}")
        return self._windows[pad_index]

    def report(self) -> list[str]:
        """Lines for the window since the last call, then start a new window."""
        now = self._clock()
        with self._lock:
            windows, self._windows = self._windows, [StreamWindow() for _ in self._windows]
            elapsed, self._window_start = max(now - self._window_start, 1e-9), now
        return [self._render(i, w, elapsed) for i, w in enumerate(windows)]

    def _render(self, index: int, w: StreamWindow, elapsed: float) -> str:
        fps = w.frames / elapsed
        per_frame = w.objects / w.frames if w.frames else 0.0
        classes = {
            class_name(self._labels, cid): n for cid, n in sorted(w.classes.items(), key=lambda kv: (-kv[1], kv[0]))
        }
        # Latency: pyservicemaker's published Python API has no per-buffer latency (see
        # attach_probes), so the report says so rather than showing a number: n/a / null.
        if self._json:
            return json.dumps(
                {
                    "time": round(self._wall(), 3),
                    "stream": index,
                    "uri": self._uris[index],
                    "window_s": round(elapsed, 3),
                    "frames": w.frames,
                    "fps": round(fps, 2),
                    "objects": w.objects,
                    "objects_per_frame": round(per_frame, 2),
                    "classes": classes,
                    "latency_ms": None,
                },
                separators=(",", ":"),
            )
        counts = " ".join(f"{name}={n}" for name, n in classes.items()) or "no detections"
        if not w.frames:
            counts = "no frames"
        return f"stream {index} [{self._uris[index]}]: {fps:.1f} fps, {per_frame:.2f} obj/frame, {counts}, latency n/a"


# --------------------------------------------------------------------------------------------
# Pipeline graph (pyservicemaker module passed in: the real one or the tests' fake)
# --------------------------------------------------------------------------------------------
PropertyFilter = Callable[[str, dict], dict]


def keep_all_properties(factory: str, props: dict) -> dict:
    return props


def source_properties(src: Source, plan: RunPlan) -> dict[str, Any]:
    props: dict[str, Any] = {"uri": src.uri, "gpu-id": plan.gpu_id}
    if src.kind == "rtsp":
        props.update(
            {
                "latency": plan.rtsp_latency_ms,  # jitter buffer, ms
                "drop-on-latency": True,  # late packets are dropped, not waited for
                "rtsp-reconnect-interval": plan.rtsp_reconnect_s,  # 0 would mean: never reconnect
                "rtsp-reconnect-attempts": plan.rtsp_reconnect_attempts,
            }
        )
        if plan.rtsp_tcp:
            props["select-rtp-protocol"] = 4  # 4 = TCP only
    if src.kind == "file" and plan.loop:
        props["file-loop"] = True
    return props


def mux_properties(plan: RunPlan) -> dict[str, Any]:
    props: dict[str, Any] = {
        "batch-size": len(plan.sources),
        "batched-push-timeout": plan.push_timeout_us,  # push a partial batch after ~1 frame
    }
    if plan.new_mux:
        # The new mux (USE_NEW_NVSTREAMMUX=yes, gst-nvmultistream2/gstnvstreammux.cpp) has no
        # width/height/enable-padding/live-source and no gpu-id: frames keep their resolution.
        return props
    # Legacy mux: it scales every frame to width x height. At the network size (a square) 16:9
    # frames would reach nvinfer stretched and nvinfer's letterbox would have nothing left to do.
    # So: the camera resolution, and enable-padding so a source of another aspect ratio (or a
    # square mux asked for with --mux-width/--mux-height) is padded, never stretched.
    props.update(
        {
            "gpu-id": plan.gpu_id,
            "width": plan.mux_width,
            "height": plan.mux_height,
            "enable-padding": True,
            "live-source": plan.live,
        }
    )
    return props


def sink_properties() -> dict[str, Any]:
    # sync=0: render as soon as ready, never wait on the clock; qos=0: no frame dropping by lateness;
    # async=0: do not hold the pipeline in PAUSED waiting for a preroll buffer (live/dynamic pads).
    return {"sync": False, "qos": False, "async": False}


def add_sink_chain(pipeline: Any, plan: RunPlan, known: PropertyFilter) -> list[str]:
    """Add the elements after the OSD; return their names in link order."""

    def add(factory: str, name: str, props: dict | None = None) -> str:
        pipeline.add(factory, name, known(factory, dict(props or {})))
        return name

    if plan.sink == "fake":
        return [add("fakesink", "sink", sink_properties())]
    if plan.sink == "display":
        factory = "nv3dsink" if platform.machine() == "aarch64" else "nveglglessink"
        return [add(factory, "sink", sink_properties())]
    encoder = {"bitrate": 4_000_000, "iframeinterval": 30, "gpu-id": plan.gpu_id}
    chain = [add("nvvideoconvert", "sink_convert", {"gpu-id": plan.gpu_id})]
    if plan.sink == "file":
        chain += [
            add("nvv4l2h264enc", "encoder", encoder),
            add("h264parse", "parser"),
            add("qtmux", "muxer", {"fragment-duration": MP4_FRAGMENT_MS}),
            add("filesink", "sink", {"location": str(plan.output), **sink_properties()}),
        ]
        return chain
    # rtsp: encoder -> RTP payloader -> local UDP; the RTSP server re-serves that UDP stream.
    chain += [
        add("nvv4l2h264enc", "encoder", {**encoder, "insert-sps-pps": True}),  # late joiners decode
        add("h264parse", "parser"),
        add("rtph264pay", "payloader", {"pt": 96, "config-interval": 1}),
        add("udpsink", "sink", {"host": "127.0.0.1", "port": plan.rtsp_udp_port, **sink_properties()}),
    ]
    return chain


def build_pipeline(plan: RunPlan, sm: Any, *, known: PropertyFilter = keep_all_properties) -> Any:
    """Add and link every element; return the (not yet started) pyservicemaker Pipeline."""
    pipeline = sm.Pipeline("yolo-low-latency")

    def add(factory: str, name: str, props: dict) -> None:
        pipeline.add(factory, name, known(factory, props))

    for i, src in enumerate(plan.sources):
        add("nvurisrcbin", f"src{i}", source_properties(src, plan))
    add("nvstreammux", "mux", mux_properties(plan))
    add(
        "nvinfer",
        "infer",
        {"config-file-path": str(plan.infer.path), "batch-size": len(plan.sources), "gpu-id": plan.gpu_id},
    )
    chain = ["mux", "infer"]
    if plan.tracker:
        add(
            "nvtracker",
            "tracker",
            {
                "ll-lib-file": TRACKER_LIB,
                "ll-config-file": str(plan.tracker_config),
                "tracker-width": 640,
                "tracker-height": 384,  # small = fast; multiples of 32
                "gpu-id": plan.gpu_id,
            },
        )
        chain.append("tracker")
    add("nvosdbin", "osd", {"gpu-id": plan.gpu_id})
    chain.append("osd")
    chain += add_sink_chain(pipeline, plan, known)

    for i in range(len(plan.sources)):
        # Request pads: always the sink_%u template; nvstreammux numbers them in request order,
        # which is the order of the sources and so frame_meta.pad_index == source index.
        pipeline.link((f"src{i}", "mux"), ("", "sink_%u"))
    pipeline.link(*chain)
    return pipeline


def analytics_element(plan: RunPlan) -> str:
    """The element whose output carries the final objects: tracker if any, else nvinfer."""
    return "tracker" if plan.tracker else "infer"


def attach_probes(pipeline: Any, plan: RunPlan, sm: Any, reporter: DetectionReporter) -> None:
    pipeline.attach(analytics_element(plan), sm.Probe("detections", make_detection_counter(sm, reporter)))
    if plan.measure_latency:
        # DeepStream's built-in probe (service-maker/sources/modules/measure_latency_probe) prints
        # "Frame latency = ... (ms)" per frame; the measurement itself needs
        # NVDS_ENABLE_LATENCY_MEASUREMENT=1 (includes/nvds_latency_meta.h). The published Python
        # Buffer has no latency call (only C++ Buffer::measureLatency()), so the app's own report
        # says "latency n/a" instead of a number it cannot get.
        pipeline.attach("osd", "measure_latency_probe", name="latency")


def make_detection_counter(sm: Any, reporter: DetectionReporter) -> Any:
    class DetectionCounter(sm.BatchMetadataOperator):
        failed = False

        def handle_metadata(self, batch_meta: Any) -> None:
            try:
                for frame in batch_meta.frame_items:  # iterators: no len(), single pass
                    reporter.add_frame(frame.pad_index, (o.class_id for o in frame.object_items))
            except Exception:  # noqa: BLE001 - an exception in a streaming thread must not kill it
                if not DetectionCounter.failed:
                    DetectionCounter.failed = True
                    LOG.exception("detection probe failed; counts will be incomplete")

    return DetectionCounter()


def end_stream(pipeline: Any) -> str:
    """Ask the running pipeline to finish; return the method used.

    What NVIDIA's published service-maker sources offer for this:
    * `Pipeline& stop()` (src/service-maker/includes/pipeline.hpp), which the C++ sample
      src/service-maker/sources/apps/cpp/deepstream_test5_app/deepstream_test5.cpp calls on its
      quit key. Whether it lets an EOS flush the sinks before the teardown is not documented.
    * `deactivate()` ("set to NULL state"), listed for the Python Pipeline in
      skills/deepstream-dev/references/service_maker_api.md: the fallback where stop() is missing.
    The Python samples themselves (src/service-maker/sources/apps/python/*/deepstream_test*.py)
    end only by their sources' EOS or by `process.terminate()` on Ctrl+C; there is no published
    Python call that injects an EOS. Hence the fragmented MP4 (MP4_FRAGMENT_MS) and the parent's
    --eos-timeout-s before it terminates this process, as those samples do.
    """
    for method in ("stop", "deactivate"):
        fn = getattr(pipeline, method, None)
        if callable(fn):
            fn()
            return method
    raise AppError("this pyservicemaker Pipeline has neither stop() nor deactivate()", EXIT_ENV)


# --------------------------------------------------------------------------------------------
# Pipeline process
# --------------------------------------------------------------------------------------------
def gst_property_filter() -> PropertyFilter:
    """Drop properties an element does not have (names differ between DeepStream releases).

    Uses PyGObject to ask GStreamer itself; without gi every property is passed through.
    """
    try:
        import gi  # noqa: PLC0415

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst  # noqa: PLC0415

        Gst.init(None)
    except (ImportError, ValueError):
        return keep_all_properties
    known: dict[str, set[str] | None] = {}

    def filter_props(factory: str, props: dict) -> dict:
        if factory not in known:
            element = Gst.ElementFactory.make(factory, None)
            known[factory] = None if element is None else {p.name for p in element.list_properties()}
        names = known[factory]
        if names is None:
            return props
        dropped = sorted(k for k in props if k not in names)
        if dropped:
            LOG.warning("%s has no %s in this DeepStream; not set", factory, ", ".join(dropped))
        return {k: v for k, v in props.items() if k in names}

    return filter_props


def start_rtsp_server(plan: RunPlan) -> str:
    """Serve the local UDP RTP stream over RTSP from a GLib loop on its own thread."""
    import gi  # noqa: PLC0415

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer  # noqa: PLC0415

    Gst.init(None)
    server = GstRtspServer.RTSPServer.new()
    server.props.service = str(plan.rtsp_port)
    factory = GstRtspServer.RTSPMediaFactory.new()
    factory.set_launch(
        f"( udpsrc name=pay0 port={plan.rtsp_udp_port} buffer-size=524288 "
        'caps="application/x-rtp, media=video, clock-rate=90000, encoding-name=(string)H264, '
        'payload=96" )'
    )
    factory.set_shared(True)  # all viewers share one stream: no per-client pipeline
    server.get_mount_points().add_factory(RTSP_MOUNT, factory)
    context = GLib.MainContext.new()
    if server.attach(context) == 0:
        raise AppError(f"RTSP server cannot listen on port {plan.rtsp_port}; pick another --rtsp-port", EXIT_ENV)
    threading.Thread(target=GLib.MainLoop.new(context, False).run, name="rtsp-server", daemon=True).start()
    return f"rtsp://<host>:{plan.rtsp_port}{RTSP_MOUNT}"


def emit_reports(reporter: DetectionReporter, every_s: float, stop: threading.Event) -> None:
    # Event.wait sleeps; a stalled camera therefore shows up as "0.0 fps, no frames" lines
    # instead of silence, and nothing spins.
    while not stop.wait(every_s):
        for line in reporter.report():
            print(line, flush=True)


def watch_for_stop(stop_conn: Any, pipeline: Any) -> None:
    """Block (no polling) until the parent asks for the stop, or dies (EOF on the pipe)."""
    try:
        stop_conn.recv()
    except (EOFError, OSError):
        LOG.warning("supervising process is gone; ending the stream")
    try:
        LOG.info("stop requested: ending the stream (Pipeline.%s())", end_stream(pipeline))
    except Exception as exc:  # noqa: BLE001 - the parent's timeout is the fallback
        LOG.error("could not stop the pipeline: %s", exc)


def run_pipeline(plan: RunPlan, stop_conn: Any) -> int:
    """Body of the pipeline process: import pyservicemaker, build, start, wait."""
    try:
        import pyservicemaker as sm  # noqa: PLC0415 - only here, never at module top
    except ImportError as exc:
        raise AppError(f"pyservicemaker not found; run inside the DeepStream 8.0 image ({exc})", EXIT_ENV) from None
    reporter = DetectionReporter([s.uri for s in plan.sources], plan.labels, json_lines=plan.json_log)
    pipeline = build_pipeline(plan, sm, known=gst_property_filter())
    attach_probes(pipeline, plan, sm, reporter)
    if plan.sink == "rtsp":
        LOG.info("RTSP stream at %s", start_rtsp_server(plan))
    threading.Thread(target=watch_for_stop, args=(stop_conn, pipeline), name="stop-watch", daemon=True).start()
    report_stop = threading.Event()
    reports = threading.Thread(
        target=emit_reports, args=(reporter, plan.report_s, report_stop), name="report", daemon=True
    )
    pipeline.start()
    mux = "new nvstreammux" if plan.new_mux else f"mux {plan.mux_width}x{plan.mux_height} (padded)"
    LOG.info(
        "pipeline started: %d source(s), %s, network %dx%d, sink=%s%s",
        len(plan.sources),
        mux,
        plan.infer.width,
        plan.infer.height,
        plan.sink,
        f" -> {plan.output}" if plan.sink == "file" else "",
    )
    reports.start()
    pipeline.wait()  # returns on EOS (end of files), after stop(), or on an error
    report_stop.set()
    for line in reporter.report():  # the partial last window
        print(line, flush=True)
    LOG.info("pipeline finished")
    return EXIT_OK


def pipeline_process_main(plan: RunPlan, stop_conn: Any) -> None:
    # The terminal's Ctrl+C reaches the whole process group; only the parent acts on it, so the
    # child keeps running until the stop it is asked for has finished the sinks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging()
    try:
        code = run_pipeline(plan, stop_conn)
    except AppError as exc:
        print(f"main_low_latency: error: {exc}", file=sys.stderr, flush=True)
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - report one line, not a traceback, then fail
        print(f"main_low_latency: error: pipeline failed: {exc}", file=sys.stderr, flush=True)
        code = EXIT_BUILD
    sys.stdout.flush()
    os._exit(code)  # skip atexit/GC of GStreamer objects at shutdown; exit code is what counts


# --------------------------------------------------------------------------------------------
# Parent: start the pipeline process, turn signals into a stop request, bound the shutdown
# --------------------------------------------------------------------------------------------
class SignalInbox:
    """Signal handlers record the signal and wake the main loop through a pipe (no polling)."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self.received: list[int] = []
        self._old_wakeup = signal.set_wakeup_fd(self._write_fd)
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)

    def drain(self) -> None:
        try:
            os.read(self.read_fd, 512)
        except BlockingIOError:
            pass

    def close(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self.read_fd)
        os.close(self._write_fd)


def supervise(plan: RunPlan) -> int:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreter: no inherited locks/threads
    # A pipe, not a multiprocessing.Event: Event.set() blocks forever if a process that waits on
    # it has died, and a pipe also tells the child when the parent is gone (EOF).
    stop_reader, stop_writer = ctx.Pipe(duplex=False)
    inbox = SignalInbox()
    os.set_blocking(inbox.read_fd, False)
    child = ctx.Process(target=pipeline_process_main, args=(plan, stop_reader), name="deepstream-pipeline")
    try:
        child.start()
        stop_reader.close()  # the child holds the only reader now
        ready = multiprocessing.connection.wait([child.sentinel, inbox.read_fd])
        if child.sentinel in ready:  # the pipeline ended by itself (end of files, error)
            child.join()  # the sentinel fires before the child can be reaped: wait for it
            return exit_code_of(child)
        inbox.drain()
        name = signal.Signals(inbox.received[0]).name if inbox.received else "signal"
        LOG.info("%s: stopping the pipeline, waiting up to %.0f s for the sinks to finish", name, plan.eos_timeout_s)
        try:
            stop_writer.send("eos")
        except OSError:
            pass  # the child is already gone; its exit code tells the rest
        return finish_after_eos(child, inbox, plan.eos_timeout_s)
    finally:
        stop_writer.close()
        inbox.close()


def finish_after_eos(child: Any, inbox: SignalInbox, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    n_signals = len(inbox.received)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            LOG.error("pipeline did not finish %.0f s after the stop request; terminating it", timeout_s)
            break
        ready = multiprocessing.connection.wait([child.sentinel, inbox.read_fd], timeout=remaining)
        if child.sentinel in ready:
            child.join()
            return exit_code_of(child)
        inbox.drain()
        if len(inbox.received) > n_signals:
            LOG.warning("second signal: terminating without waiting for the sinks")
            break
    child.terminate()
    child.join(5)
    if child.exitcode is None:
        child.kill()
        child.join()
    return EXIT_BUILD


def exit_code_of(child: Any) -> int:
    # A child killed by a signal has a negative exit code; report that as a failed run.
    return child.exitcode if child.exitcode >= 0 else EXIT_BUILD


# --------------------------------------------------------------------------------------------
def setup_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="main_low_latency: %(levelname)s %(message)s")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    setup_logging()
    try:
        plan = make_plan(sys.argv[1:] if argv is None else argv, os.environ if env is None else env)
        LOG.info("%d source(s): %s", len(plan.sources), ", ".join(redact_uri(s.uri) for s in plan.sources))
        return supervise(plan)
    except AppError as exc:
        print(f"main_low_latency: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl+C before the signal handlers of supervise() are in place
        print("main_low_latency: interrupted before the pipeline started", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
