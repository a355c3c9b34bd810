"""main_low_latency.py uses only pyservicemaker/GStreamer names that NVIDIA (or GStreamer) publishes.

The list with its sources is tests/fakes/deepstream_names.toml. Three checks keep app, fake and list
together: the fake offers exactly the listed names; the app's source, read as a syntax tree, touches no
pyservicemaker name off the list; and building every kind of pipeline against the strict fake sets no
element property off the list, while every listed property is used somewhere (no stale entries).
Also here: the 1920x1080 plan (mux keeps the aspect ratio, nvinfer letterboxes).
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import itertools
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "fakes"
APP = REPO / "main_low_latency.py"
sys.path.insert(0, str(REPO))

import main_low_latency as app  # noqa: E402


@pytest.fixture
def sm(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delenv("USE_NEW_NVSTREAMMUX", raising=False)
    for name in ("pyservicemaker", "fake_pyservicemaker"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module("pyservicemaker")


def fake() -> Any:
    return importlib.import_module("fake_pyservicemaker")


def listed() -> dict[str, Any]:
    return fake().names()


def public(obj: Any) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


# ------------------------------------------------------------------------------------------
# The list itself and the fake's surface
# ------------------------------------------------------------------------------------------
def test_every_listed_name_says_where_it_is_published(sm: Any) -> None:
    names = listed()
    entries = [*names["module"].items(), *names["builtin_probes"].items(), *names["pads"].items()]
    for section in ("methods", "attributes", "properties"):
        for table in names[section].values():
            entries += table.items()
    assert entries
    for name, source in entries:
        # a path in NVIDIA/DeepStream (src/, includes/, skills/) or a GStreamer docs page
        assert any(marker in source for marker in ("src/", "includes/", "skills/", "gstreamer:",
                                                   "GstBaseSink")), (name, source)


def test_fake_offers_exactly_the_listed_names(sm: Any) -> None:
    names = listed()
    assert public(sm) == set(names["module"])  # the pyservicemaker module
    assert public(sm.Pipeline) == set(names["methods"]["Pipeline"])
    assert public(sm.BatchMetadataOperator) == set(names["methods"]["BatchMetadataOperator"])
    assert public(sm.Probe) == set()  # Probe(name, operator) only
    for cls, attributes in names["attributes"].items():
        assert public(getattr(fake(), cls)) == set(attributes), cls


def test_fake_refuses_names_off_the_list(sm: Any) -> None:
    pipeline = sm.Pipeline("p")
    with pytest.raises(ValueError, match="nvstreammux has no property bogus"):
        pipeline.add("nvstreammux", "mux", {"batch-size": 1, "bogus": 1})
    with pytest.raises(ValueError, match="'x264enc' is not in"):
        pipeline.add("x264enc", "enc")
    with pytest.raises(AttributeError):
        pipeline.send_eos()  # noqa: B018 - in no published pyservicemaker source
    pipeline.add("nvosdbin", "osd", {"gpu-id": 0})
    with pytest.raises(ValueError, match="built-in probe"):
        pipeline.attach("osd", "measure_fps_probe_typo")
    with pytest.raises(ValueError, match="pad 'sink_0'"):
        pipeline.add("nvstreammux", "mux", {}).link(("osd", "mux"), ("", "sink_0"))


def test_new_mux_has_no_legacy_properties(sm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USE_NEW_NVSTREAMMUX", "yes")
    with pytest.raises(ValueError, match="gpu-id"):
        sm.Pipeline("p").add("nvstreammux", "mux", {"batch-size": 1, "gpu-id": 0})


# ------------------------------------------------------------------------------------------
# Static: every pyservicemaker name in the app's source is listed
# ------------------------------------------------------------------------------------------
def pyservicemaker_names_used(source: str) -> set[str]:
    """Names the code touches on pyservicemaker objects, as "Module.X", "Pipeline.m" or "Meta.a".

    Followed: `sm.X` (the module is always passed as `sm`); attributes and getattr() strings on a
    variable or parameter named `pipeline`; in handle_metadata(), the metadata objects reached from
    its argument through the *_items iterators.
    """
    tree = ast.parse(source)
    used: set[str] = set()
    item_types = {"frame_items": "FrameMetadata", "object_items": "ObjectMetadata"}

    def strings_of(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, (ast.Tuple, ast.List)):
            return [s for e in node.elts for s in strings_of(e)]
        return []

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "sm":
                used.add(f"Module.{node.attr}")
            elif node.value.id == "pipeline":
                used.add(f"Pipeline.{node.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and isinstance(node.args[0], ast.Name) and node.args[0].id == "pipeline":
            arg = node.args[1]
            if isinstance(arg, ast.Constant):
                used.add(f"Pipeline.{arg.value}")
            else:  # getattr(pipeline, method) inside `for method in (...)`
                for loop in ast.walk(tree):
                    if isinstance(loop, ast.For) and isinstance(loop.target, ast.Name) \
                            and isinstance(arg, ast.Name) and loop.target.id == arg.id:
                        used.update(f"Pipeline.{s}" for s in strings_of(loop.iter))
        if isinstance(node, ast.FunctionDef) and node.name == "handle_metadata":
            used.add("BatchMetadataOperator.handle_metadata")
            types = {node.args.args[1].arg: "BatchMetadata"}
            for inner in ast.walk(node):  # bind loop/comprehension variables to metadata types
                targets = []
                if isinstance(inner, ast.For):
                    targets.append((inner.target, inner.iter))
                elif isinstance(inner, ast.comprehension):
                    targets.append((inner.target, inner.iter))
                for target, it in targets:
                    if isinstance(it, ast.Attribute) and it.attr in item_types and isinstance(target, ast.Name):
                        types[target.id] = item_types[it.attr]
            for inner in ast.walk(node):
                if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) \
                        and inner.value.id in types:
                    used.add(f"{types[inner.value.id]}.{inner.attr}")
    return used


def allowed_names() -> set[str]:
    names = listed()
    allowed = {f"Module.{n}" for n in names["module"]}
    for cls, methods in names["methods"].items():
        allowed |= {f"{cls}.{m}" for m in methods}
    for cls, attributes in names["attributes"].items():
        allowed |= {f"{cls}.{a}" for a in attributes}
    return allowed


def test_app_source_uses_only_listed_pyservicemaker_names(sm: Any) -> None:
    used = pyservicemaker_names_used(APP.read_text(encoding="utf-8"))
    # the checker sees what it must: the calls the pipeline is built and ended with
    assert {"Module.Pipeline", "Module.Probe", "Pipeline.add", "Pipeline.link", "Pipeline.stop",
            "Pipeline.deactivate", "FrameMetadata.object_items", "ObjectMetadata.class_id"} <= used
    assert sorted(used - allowed_names()) == []
    # ... and every listed pyservicemaker name is used (the list is what the app touches)
    assert sorted(allowed_names() - used) == []


@pytest.mark.parametrize("snippet, offender", [
    ("def f(pipeline):\n    pipeline.send_eos()\n", "Pipeline.send_eos"),
    ("def f(pipeline):\n    for m in ('stop', 'send_eos'):\n        getattr(pipeline, m, None)\n",
     "Pipeline.send_eos"),
    ("def f(sm):\n    return sm.BufferOperator\n", "Module.BufferOperator"),
    ("class C:\n    def handle_metadata(self, batch_meta):\n"
     "        for frame in batch_meta.frame_items:\n            frame.frame_number\n",
     "FrameMetadata.frame_number"),
])
def test_checker_catches_unlisted_names(sm: Any, snippet: str, offender: str) -> None:
    assert offender in pyservicemaker_names_used(textwrap.dedent(snippet)) - allowed_names()


# ------------------------------------------------------------------------------------------
# Dynamic: every pipeline the app can build, against the strict fake
# ------------------------------------------------------------------------------------------
def write_config(tmp: Path, *, imgsz: int = 1280, batch: int = 4) -> Path:
    engine = tmp / f"yolo11x_{imgsz}_b16_fp16_sm89-test_trt10.9.0.34.engine"
    engine.write_bytes(b"plan")
    labels = tmp / "labels.txt"
    labels.write_text("person\nbicycle\ncar\n")
    cfg = tmp / app.CONFIG_NAME
    cfg.write_text(  # the keys auto_build_engine.py writes that matter here
        "[property]\ngpu-id=0\n"
        f"model-engine-file={engine}\nbatch-size={batch}\ninfer-dims=3;{imgsz};{imgsz}\n"
        f"labelfile-path={labels}\nmaintain-aspect-ratio=1\nsymmetric-padding=1\n")
    return cfg


def every_plan(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, str], app.RunPlan]]:
    cfg = write_config(tmp)
    clip = tmp / "clip.mp4"
    clip.write_bytes(b"\0")
    monkeypatch.setattr(app, "check_rtsp_server", lambda: None)  # no PyGObject here
    sources = [["--source", str(clip), "--loop"], ["--source", "rtsp://cam/s", "--rtsp-tcp"],
               ["--source", "/dev/video0", "--source", "https://host/live.m3u8"]]
    plans = []
    for src, sink, tracker, env in itertools.product(
            sources, app.SINKS, ("none", "nvdcf"),
            ({}, {"USE_NEW_NVSTREAMMUX": "yes", "NVDS_ENABLE_LATENCY_MEASUREMENT": "1"})):
        argv = [*src, "--config", str(cfg), "--sink", sink, "--tracker", tracker,
                "--output", str(tmp / "out" / "o.mp4")]
        plans.append((env, app.make_plan(argv, env)))
    return plans


def test_every_pipeline_sets_only_listed_properties(sm: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    used: dict[str, set[str]] = {}
    for machine in ("x86_64", "aarch64"):  # nveglglessink or nv3dsink
        monkeypatch.setattr(app.platform, "machine", lambda m=machine: m)
        for env, plan in every_plan(tmp_path, monkeypatch):
            if "USE_NEW_NVSTREAMMUX" in env:
                monkeypatch.setenv("USE_NEW_NVSTREAMMUX", "yes")
            else:
                monkeypatch.delenv("USE_NEW_NVSTREAMMUX", raising=False)
            pipeline = app.build_pipeline(plan, sm)  # the fake raises on any unlisted name
            app.attach_probes(pipeline, plan, sm, app.DetectionReporter([s.uri for s in plan.sources], ()))
            for element in fake().graph_of(pipeline).elements.values():
                key = element.factory + ("(new)" if plan.new_mux and element.factory == "nvstreammux" else "")
                used.setdefault(key, set()).update(element.props)
    properties = listed()["properties"]
    assert set(used) == set(properties)  # every listed factory is used, none unlisted
    for factory, props in properties.items():
        assert used[factory] == set(props), factory  # and every listed property is set somewhere


def test_an_unlisted_property_fails_the_build(sm: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (env, plan), *_ = every_plan(tmp_path, monkeypatch)
    original = app.mux_properties
    monkeypatch.setattr(app, "mux_properties", lambda p: {**original(p), "sync-inputs": True})
    with pytest.raises(ValueError, match="nvstreammux has no property sync-inputs"):
        app.build_pipeline(plan, sm)


# ------------------------------------------------------------------------------------------
# 1920x1080 cameras, 1280x1280 network: aspect kept, config untouched, fps per stream
# ------------------------------------------------------------------------------------------
def test_1080p_sources_keep_their_aspect_ratio(sm: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, imgsz=1280, batch=2)
    before = hashlib.sha256(cfg.read_bytes()).hexdigest()
    plan = app.make_plan(["--source", "rtsp://cam0/s", "--source", "rtsp://cam1/s",
                          "--config", str(cfg), "--json-log"], {})
    pipeline = app.build_pipeline(plan, sm)
    mux = fake().graph_of(pipeline).elements["mux"].props
    # frames batched at the cameras' 1920x1080, padded (not stretched) if a camera differs;
    # nvinfer gets the config as written and letterboxes 16:9 into 1280x1280 itself
    assert (mux["width"], mux["height"], mux["enable-padding"]) == (1920, 1080, True)
    assert (plan.infer.width, plan.infer.height) == (1280, 1280)
    assert mux["width"] * 9 == mux["height"] * 16
    infer = fake().graph_of(pipeline).elements["infer"].props
    assert infer == {"config-file-path": str(cfg), "batch-size": 2, "gpu-id": 0}
    assert hashlib.sha256(cfg.read_bytes()).hexdigest() == before
    assert "maintain-aspect-ratio=1" in cfg.read_text() and "symmetric-padding=1" in cfg.read_text()

    clock = iter([100.0, 105.0]).__next__
    reporter = app.DetectionReporter([s.uri for s in plan.sources], plan.labels, json_lines=True,
                                     clock=clock, wall_clock=lambda: 0.0)
    counter = app.make_detection_counter(sm, reporter)
    meta = fake()
    for n in range(150):  # 5 s: cam0 at 30 fps with one person, cam1 at 15 fps with one car
        frames = [meta.FrameMetadata(0, [meta.ObjectMetadata(0)])]
        if n % 2 == 0:
            frames.append(meta.FrameMetadata(1, [meta.ObjectMetadata(2)]))
        counter.handle_metadata(meta.BatchMetadata(frames))
    lines = [json.loads(line) for line in reporter.report()]
    assert [(r["stream"], r["fps"], r["classes"]) for r in lines] == \
        [(0, 30.0, {"person": 150}), (1, 15.0, {"car": 75})]


@pytest.mark.parametrize("argv, env, size", [
    (["--mux-width", "1280", "--mux-height", "1280"], {}, (1280, 1280)),
    ([], {"MUX_WIDTH": "1280", "MUX_HEIGHT": "720"}, (1280, 720)),
    (["--mux-width", "3840"], {"MUX_WIDTH": "1280", "MUX_HEIGHT": "2160"}, (3840, 2160)),
])
def test_mux_size_flags_and_env_twins(sm: Any, tmp_path: Path, argv: list[str], env: dict[str, str],
                                      size: tuple[int, int]) -> None:
    cfg = write_config(tmp_path, batch=1)
    plan = app.make_plan(["--source", "rtsp://cam/s", "--config", str(cfg), *argv], env)
    mux = app.mux_properties(plan)
    # a square mux too: padding keeps the cameras' aspect ratio instead of stretching
    assert (mux["width"], mux["height"], mux["enable-padding"]) == (*size, True)


@pytest.mark.parametrize("argv, env, needle", [
    (["--mux-width", "0"], {}, "--mux-width/--mux-height must be > 0"),
    ([], {"MUX_HEIGHT": "-5"}, "--mux-width/--mux-height must be > 0"),
    ([], {"MUX_WIDTH": "wide"}, "MUX_WIDTH='wide' is not an integer"),
])
def test_bad_mux_size_is_one_line_exit_2(sm: Any, tmp_path: Path, capsys: pytest.CaptureFixture,
                                         argv: list[str], env: dict[str, str], needle: str) -> None:
    cfg = write_config(tmp_path, batch=1)
    code = app.main(["--source", "rtsp://cam/s", "--config", str(cfg), *argv], env)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == app.EXIT_USAGE and len(errors) == 1 and needle in errors[0]
