"""Tests for main_low_latency.py against a fake pyservicemaker (tests/fakes)."""
from __future__ import annotations

import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "fakes"
APP = REPO / "main_low_latency.py"
sys.path.insert(0, str(REPO))

import auto_build_engine as abe  # noqa: E402
import main_low_latency as app  # noqa: E402
from helpers import make_sidecar  # noqa: E402

IMGSZ = 640


# ------------------------------------------------------------------------------------------
# Fixtures: a generated-style nvinfer config, a video file, the fake pyservicemaker
# ------------------------------------------------------------------------------------------
def write_config(tmp: Path, *, batch: int = 1, max_batch: int | None = None,
                 engine: bool = True, labels: tuple[str, ...] = ("person", "bicycle", "car")) -> Path:
    """The keys the config generator writes (absolute paths), plus an optional engine sidecar."""
    engine_path = tmp / "yolo11n_640_b16_fp16_sm89-test_trt10.9.0.34.engine"
    if engine:
        engine_path.write_bytes(b"plan")
        if max_batch is not None:  # a sidecar as the builder writes it (the app reads it with Sidecar.read)
            key = abe.EngineKey("yolo11n", IMGSZ, 1, 1, max_batch, "auto", "fp16", "test", "8.9", "10.9.0.34")
            plan = abe.EnginePlan(key, engine_path.stem, tmp, "test", None)
            sidecar = make_sidecar(plan, "fp16", list(labels), tmp / "yolo11n.onnx")
            engine_path.with_suffix(".json").write_text(json.dumps(sidecar.as_json()))
    labels_path = tmp / "labels.txt"
    labels_path.write_text("\n".join(labels) + "\n")
    cfg = tmp / app.CONFIG_NAME
    cfg.write_text(
        "[property]\n"
        "gpu-id=0\n"
        f"model-engine-file={engine_path}\n"
        f"batch-size={batch}\n"
        f"infer-dims=3;{IMGSZ};{IMGSZ}\n"
        f"labelfile-path={labels_path}\n")
    return cfg


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0")
    return path


@pytest.fixture
def sm(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install tests/fakes/pyservicemaker as `pyservicemaker` for this test only."""
    monkeypatch.syspath_prepend(str(FAKES))
    for name in ("pyservicemaker", "fake_pyservicemaker"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("pyservicemaker")
    fake().PIPELINES.clear()
    return module


def fake() -> Any:
    """The fake's test-side module (graph_of, metadata classes); import after the sm fixture."""
    return importlib.import_module("fake_pyservicemaker")


def plan_for(argv: list[str], env: dict[str, str] | None = None) -> app.RunPlan:
    return app.make_plan(argv, env or {})


def chains(pipeline: Any) -> list[tuple[str, ...]]:
    return [link[1:] for link in fake().graph_of(pipeline).links if link[0] == "chain"]


def pad_links(pipeline: Any) -> list[tuple]:
    return [link[1:] for link in fake().graph_of(pipeline).links if link[0] == "pads"]


def props(pipeline: Any, name: str) -> dict[str, Any]:
    return fake().graph_of(pipeline).elements[name].props


def factory(pipeline: Any, name: str) -> str:
    return fake().graph_of(pipeline).elements[name].factory


def attachments(pipeline: Any) -> list[dict[str, Any]]:
    return fake().graph_of(pipeline).attachments


# ------------------------------------------------------------------------------------------
# Graph
# ------------------------------------------------------------------------------------------
def test_one_file_source_graph(sm: Any, tmp_path: Path, video: Path) -> None:
    cfg = write_config(tmp_path)
    plan = plan_for(["--source", str(video), "--config", str(cfg)])
    reporter = app.DetectionReporter([s.uri for s in plan.sources], plan.labels)
    pipeline = app.build_pipeline(plan, sm)
    app.attach_probes(pipeline, plan, sm, reporter)

    factories = {n: e.factory for n, e in fake().graph_of(pipeline).elements.items()}
    assert factories == {"src0": "nvurisrcbin", "mux": "nvstreammux", "infer": "nvinfer",
                         "osd": "nvosdbin", "sink": "fakesink"}
    assert props(pipeline, "src0")["uri"] == video.resolve().as_uri()
    assert "latency" not in props(pipeline, "src0")  # RTSP-only settings stay off files
    mux = props(pipeline, "mux")
    assert mux["batch-size"] == 1
    assert mux["live-source"] is False
    assert mux["batched-push-timeout"] == 33000
    # the camera's aspect kept: 1920x1080 mux with padding, not the square network size
    assert (mux["width"], mux["height"], mux["enable-padding"]) == (1920, 1080, True)
    assert props(pipeline, "infer")["config-file-path"] == str(cfg)
    assert props(pipeline, "infer")["batch-size"] == 1
    assert {k: props(pipeline, "sink")[k] for k in ("sync", "qos", "async")} == \
        {"sync": False, "qos": False, "async": False}
    assert pad_links(pipeline) == [(("src0", "mux"), ("", "sink_%u"))]
    assert chains(pipeline) == [("mux", "infer", "osd", "sink")]
    (probe,) = attachments(pipeline)
    assert probe["target"] == "infer" and isinstance(probe["what"], sm.Probe)
    assert isinstance(probe["what"]._operator, sm.BatchMetadataOperator)


def test_four_rtsp_sources_graph(sm: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, batch=4, max_batch=16)
    uris = [f"rtsp://user:secret@cam{i}.local:554/stream" for i in range(4)]
    argv = [a for u in uris for a in ("--source", u)]
    plan = plan_for(argv + ["--config", str(cfg), "--rtsp-tcp", "--tracker", "nvdcf",
                            "--push-timeout-us", "40000"])
    reporter = app.DetectionReporter(uris, plan.labels)
    pipeline = app.build_pipeline(plan, sm)
    app.attach_probes(pipeline, plan, sm, reporter)

    for i, uri in enumerate(uris):
        src = props(pipeline, f"src{i}")
        assert factory(pipeline, f"src{i}") == "nvurisrcbin"
        assert src["uri"] == uri
        assert src["latency"] == 100
        assert src["drop-on-latency"] is True
        assert src["select-rtp-protocol"] == 4
        assert src["rtsp-reconnect-interval"] == 10
        assert src["rtsp-reconnect-attempts"] == -1
    mux = props(pipeline, "mux")
    assert mux["batch-size"] == 4 and mux["live-source"] is True
    assert mux["batched-push-timeout"] == 40000
    assert props(pipeline, "infer")["batch-size"] == 4
    # Every source on the request-pad template, never sink_0/sink_1/...
    assert pad_links(pipeline) == [((f"src{i}", "mux"), ("", "sink_%u")) for i in range(4)]
    assert chains(pipeline) == [("mux", "infer", "tracker", "osd", "sink")]
    tracker = props(pipeline, "tracker")
    assert tracker["ll-lib-file"] == app.TRACKER_LIB
    assert Path(tracker["ll-config-file"]).name == "tracker_nvdcf.yml"
    assert Path(tracker["ll-config-file"]).is_file()
    assert attachments(pipeline)[0]["target"] == "tracker"  # count what the tracker outputs
    # Passwords never reach the report.
    assert all("secret" not in line for line in reporter.report())


def test_file_sink_chain_and_loop(sm: Any, tmp_path: Path, video: Path) -> None:
    cfg = write_config(tmp_path)
    out = tmp_path / "out" / "result.mp4"
    plan = plan_for(["--source", str(video), "--config", str(cfg), "--sink", "file",
                     "--output", str(out), "--loop"])
    pipeline = app.build_pipeline(plan, sm)
    assert chains(pipeline) == [("mux", "infer", "osd", "sink_convert", "encoder", "parser",
                                 "muxer", "sink")]
    assert [factory(pipeline, n) for n in ("sink_convert", "encoder", "parser", "muxer", "sink")] \
        == ["nvvideoconvert", "nvv4l2h264enc", "h264parse", "qtmux", "filesink"]
    # fragmented MP4: playable up to the last fragment even if no EOS reaches qtmux
    assert props(pipeline, "muxer") == {"fragment-duration": 1000}
    assert props(pipeline, "sink")["location"] == str(out)
    assert props(pipeline, "sink")["sync"] is False and props(pipeline, "sink")["async"] is False
    assert props(pipeline, "src0")["file-loop"] is True
    assert out.parent.is_dir()


def test_env_twins_new_mux_and_latency_probe(sm: Any, tmp_path: Path, video: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path)
    env = {"SOURCES": str(video), "CONFIG_DIR": str(tmp_path), "REPORT_S": "2", "GPU_ID": "1",
           "USE_NEW_NVSTREAMMUX": "yes", "NVDS_ENABLE_LATENCY_MEASUREMENT": "1"}
    monkeypatch.setenv("USE_NEW_NVSTREAMMUX", "yes")  # the plugin (and the fake) read it from the env
    plan = plan_for([], env)
    assert plan.infer.path == cfg and plan.report_s == 2.0 and plan.gpu_id == 1
    pipeline = app.build_pipeline(plan, sm)
    app.attach_probes(pipeline, plan, sm, app.DetectionReporter(["u"], ()))
    # the new mux has none of width/height/enable-padding/live-source/gpu-id
    # (src/gst-plugins/gst-nvmultistream2/gstnvstreammux.cpp): only batching is set
    assert props(pipeline, "mux") == {"batch-size": 1, "batched-push-timeout": 33000}
    assert props(pipeline, "infer")["gpu-id"] == 1
    built_in = [a for a in attachments(pipeline) if a["what"] == "measure_latency_probe"]
    assert built_in == [{"target": "osd", "what": "measure_latency_probe", "name": "latency"}]


def test_end_stream_uses_stop_then_deactivate() -> None:
    calls: list[str] = []

    class WithStop:
        def stop(self) -> None:
            calls.append("stop")

        def deactivate(self) -> None:
            calls.append("deactivate")

    class DeactivateOnly:
        def deactivate(self) -> None:
            calls.append("deactivate")

    assert app.end_stream(WithStop()) == "stop"
    assert app.end_stream(DeactivateOnly()) == "deactivate"
    assert calls == ["stop", "deactivate"]
    with pytest.raises(app.AppError) as err:
        app.end_stream(object())
    assert err.value.exit_code == app.EXIT_ENV


# ------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------
def test_source_normalisation(tmp_path: Path, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert app.to_source("clip.mp4") == app.Source(video.resolve().as_uri(), "file")
    assert app.to_source(video.as_uri()).kind == "file"
    assert app.to_source("/dev/video0") == app.Source("v4l2:///dev/video0", "v4l2")
    assert app.to_source("/dev/video0").live
    assert app.to_source("https://host/live.m3u8").kind == "http"
    assert app.redact_uri("rtsp://u:p@h:554/s") == "rtsp://u:***@h:554/s"
    for bad in ("rtsp://", "ftp://host/x", "/dev/videoX", "file://remote/x.mp4", "missing.mp4"):
        with pytest.raises(app.AppError) as err:
            app.to_source(bad)
        assert err.value.exit_code == app.EXIT_USAGE


# ------------------------------------------------------------------------------------------
# Report: probe + fake metadata + fake clock
# ------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def feed_two_streams(sm: Any, reporter: app.DetectionReporter, clock: FakeClock) -> None:
    probe = app.make_detection_counter(sm, reporter)
    meta = fake()  # metadata offering only the listed attributes (tests/fakes/deepstream_names.toml)
    for _ in range(10):  # 10 batches of 2 s at 5 fps; stream 0: 2 persons + 1 car; stream 1: empty
        probe.handle_metadata(meta.BatchMetadata([
            meta.FrameMetadata(0, [meta.ObjectMetadata(0), meta.ObjectMetadata(0), meta.ObjectMetadata(2)]),
            meta.FrameMetadata(1, []),
        ]))
    probe.handle_metadata(meta.BatchMetadata([meta.FrameMetadata(0, [meta.ObjectMetadata(7)])]))
    clock.now += 2.0


def test_report_lines_text(sm: Any) -> None:
    clock = FakeClock()
    reporter = app.DetectionReporter(["rtsp://a:pw@cam0/s", "file:///v.mp4", "rtsp://cam2/s"],
                                     ["person", "bicycle", "car"], clock=clock)
    feed_two_streams(sm, reporter, clock)
    assert reporter.report() == [
        "stream 0 [rtsp://a:***@cam0/s]: 5.5 fps, 2.82 obj/frame, person=20 car=10 class7=1, "
        "latency n/a",
        "stream 1 [file:///v.mp4]: 5.0 fps, 0.00 obj/frame, no detections, latency n/a",
        "stream 2 [rtsp://cam2/s]: 0.0 fps, 0.00 obj/frame, no frames, latency n/a",
    ]
    clock.now += 5.0  # the next window starts empty
    assert reporter.report()[0] == \
        "stream 0 [rtsp://a:***@cam0/s]: 0.0 fps, 0.00 obj/frame, no frames, latency n/a"


def test_report_lines_json(sm: Any) -> None:
    clock = FakeClock()
    reporter = app.DetectionReporter(["rtsp://cam0/s", "rtsp://cam1/s"], ["person", "bicycle", "car"],
                                     json_lines=True, clock=clock, wall_clock=lambda: 1700000000.0)
    feed_two_streams(sm, reporter, clock)
    first, second = (json.loads(line) for line in reporter.report())
    # latency: the published Python API has no per-buffer latency, so null, never a made-up number
    assert first == {"time": 1700000000.0, "stream": 0, "uri": "rtsp://cam0/s", "window_s": 2.0,
                     "frames": 11, "fps": 5.5, "objects": 31, "objects_per_frame": 2.82,
                     "classes": {"person": 20, "car": 10, "class7": 1}, "latency_ms": None}
    assert second["frames"] == 10 and second["classes"] == {} and second["latency_ms"] is None


# ------------------------------------------------------------------------------------------
# Refusals: one line on stderr, exit code
# ------------------------------------------------------------------------------------------
def refusal(argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = app.main(argv, env)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1, err
    return code, errors[0]


@pytest.mark.parametrize("case, code, needle", [
    ("config_missing", 2, "nvinfer config not found"),
    ("engine_missing", 1, "python3 auto_build_engine.py"),
    ("batch_too_small", 2, "batch-size=1 < 2 sources"),
    ("engine_max_batch", 2, "engine's max batch is 2"),
    ("malformed_uri", 2, "malformed source URI"),
    ("unknown_sink", 2, "invalid choice: 'hdmi'"),
    ("unknown_sink_env", 2, "unknown sink 'hdmi'"),
    ("zero_sources", 2, "no sources given"),
    ("bad_flag", 2, "unrecognized arguments: --fast"),
])
def test_refusals(case: str, code: int, needle: str, sm: Any, tmp_path: Path, video: Path,
                  capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path, batch=4 if case == "engine_max_batch" else 1, max_batch=2,
                       engine=case != "engine_missing")
    base = ["--config", str(cfg)]
    src = ["--source", str(video)]
    argv, env = {
        "config_missing": (src + ["--config", str(tmp_path / "nope.txt")], {}),
        "engine_missing": (src + base, {}),
        "batch_too_small": (src + src + base, {}),
        "engine_max_batch": (src * 3 + base, {}),
        "malformed_uri": (["--source", "rtsp://:554/x"] + base, {}),
        "unknown_sink": (src + base + ["--sink", "hdmi"], {}),
        "unknown_sink_env": (src + base, {"SINK": "hdmi"}),
        "zero_sources": (base, {"SOURCES": " , "}),
        "bad_flag": (src + base + ["--fast"], {}),
    }[case]
    got, line = refusal(argv, env, capsys)
    assert got == code
    assert needle in line


def test_refuses_without_pyservicemaker(tmp_path: Path, video: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "pyservicemaker", None)  # find_spec -> None: not importable
    cfg = write_config(tmp_path)
    code, line = refusal(["--source", str(video), "--config", str(cfg)], {}, capsys)
    assert code == 3
    assert line.endswith("pyservicemaker not found; run inside the DeepStream 8.0 image")


def test_sidecar_missing_falls_back_to_batch_size(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, batch=4, max_batch=None)
    infer = app.read_infer_config(cfg)
    assert app.engine_max_batch(infer.engine, infer.batch_size) == 4
    app.check_batch(infer, 4)


# ------------------------------------------------------------------------------------------
# Subprocess: -h without pyservicemaker, natural end, SIGTERM/SIGINT -> EOS -> exit 0
# ------------------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SOURCES", "SINK", "CONFIG_DIR", "REPORT_S", "GPU_ID",
                        "TRACKER", "USE_NEW_NVSTREAMMUX", "NVDS_ENABLE_LATENCY_MEASUREMENT",
                        "MUX_WIDTH", "MUX_HEIGHT")}
    env.update(extra)
    return env


def test_help_works_without_pyservicemaker(tmp_path: Path) -> None:
    broken = tmp_path / "shadow" / "pyservicemaker"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('no DeepStream here')\n")
    env = clean_env(PYTHONPATH=str(broken.parent))
    probe = subprocess.run([sys.executable, "-c", "import pyservicemaker"], env=env,
                           capture_output=True, text=True)
    assert probe.returncode != 0  # precondition: really not importable
    result = subprocess.run([sys.executable, str(APP), "-h"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--source" in result.stdout and "--sink" in result.stdout


def start_app(tmp_path: Path, video: Path, *extra: str, **env_extra: str) -> tuple[subprocess.Popen, Path]:
    cfg = write_config(tmp_path)
    record = tmp_path / "fake_record.jsonl"
    env = clean_env(PYTHONPATH=str(FAKES), FAKE_PSM_RECORD=str(record), **env_extra)
    proc = subprocess.Popen(
        [sys.executable, str(APP), "--source", str(video), "--config", str(cfg), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, record


def lines_of(stream: Any) -> queue.Queue[str | None]:
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def await_line(q: queue.Queue[str | None], needle: str, timeout_s: float = 60.0) -> list[str]:
    seen: list[str] = []
    while True:
        line = q.get(timeout=timeout_s)  # raises queue.Empty instead of hanging
        if line is None:
            raise AssertionError(f"stream ended before {needle!r}: {seen}")
        seen.append(line)
        if needle in line:
            return seen


def events(record: Path) -> list[str]:
    return [json.loads(line)["event"] for line in record.read_text().splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_sends_eos_and_exits_zero(sig: signal.Signals, tmp_path: Path, video: Path) -> None:
    proc, record = start_app(tmp_path, video, "--report-s", "60")
    try:
        stderr = lines_of(proc.stderr)
        await_line(stderr, "pipeline started")  # readiness: no fixed sleeps
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        tail = []
        while (line := stderr.get(timeout=10)) is not None:
            tail.append(line)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, tail
    assert events(record) == ["started", "stop"]
    assert any("stop requested: ending the stream (Pipeline.stop())" in line for line in tail)
    # the final partial window is still reported on stdout
    assert "stream 0 [" in proc.stdout.read()


def test_ctrl_c_before_the_pipeline_starts_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def interrupted(*_args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "make_plan", interrupted)
    assert app.main([], {}) == 130
    assert capsys.readouterr().err == "main_low_latency: interrupted before the pipeline started\n"


def test_natural_end_of_stream_exits_zero(tmp_path: Path, video: Path) -> None:
    proc, record = start_app(tmp_path, video, "--json-log", FAKE_PSM_AUTO_EOS="1")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert events(record) == ["started"]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["stream"] == 0 and report["uri"] == video.resolve().as_uri()
    started = json.loads(record.read_text().splitlines()[0])
    assert started["elements"]["mux"] == ["nvstreammux", {
        "batch-size": 1, "batched-push-timeout": 33000, "gpu-id": 0, "width": 1920,
        "height": 1080, "enable-padding": True, "live-source": False}]


def test_pipeline_that_ignores_eos_is_terminated(tmp_path: Path, video: Path) -> None:
    proc, record = start_app(tmp_path, video, "--eos-timeout-s", "1", FAKE_PSM_HANG="1")
    try:
        stderr = lines_of(proc.stderr)
        await_line(stderr, "pipeline started")
        proc.send_signal(signal.SIGTERM)
        await_line(stderr, "terminating it")
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 1  # the sinks did not finish: not a clean stop
    assert events(record) == ["started", "stop"]


def test_pipeline_without_stop_is_deactivated(tmp_path: Path, video: Path) -> None:
    """Where Pipeline.stop() is missing, the documented Python deactivate() ends the pipeline."""
    proc, record = start_app(tmp_path, video, "--report-s", "60", FAKE_PSM_NO_STOP="1")
    try:
        stderr = lines_of(proc.stderr)
        await_line(stderr, "pipeline started")
        proc.send_signal(signal.SIGTERM)
        tail = await_line(stderr, "stop requested")
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0
    assert events(record) == ["started", "deactivate"]
    assert "Pipeline.deactivate()" in tail[-1]
