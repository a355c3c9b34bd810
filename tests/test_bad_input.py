"""Issue 12: a table of bad inputs over flags, env twins, paths and damaged files.

Every case runs the real tool in a subprocess against the fakes (one fake GPU box with a built
engine) and must end with: the documented exit code, exactly one line on stderr, no traceback,
nothing written outside a temp file, and the previous engine, sidecar and config byte-identical.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

import auto_build_engine as abe
from engine_env import EngineMachine

NON_UTF8 = os.fsdecode(b"cfg-\xff\xfe")  # a byte string that is not UTF-8, as Python sees it in argv/env


@dataclass
class Case:
    id: str
    args: tuple[str, ...] = ()
    env: dict[str, str | Callable[[EngineMachine], str]] = field(default_factory=dict)
    code: int = 2
    says: str = ""  # a piece of the one stderr line
    setup: Callable[[EngineMachine], None] | None = None
    timeout: float = 180  # a FIFO case that regresses hangs: it must fail sooner


def _sidecar(box: EngineMachine) -> Path:
    return box.only_engine().with_suffix(".json")


def sidecar_text(text: str | bytes) -> Callable[[EngineMachine], None]:
    def setup(box: EngineMachine) -> None:
        path = _sidecar(box)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def sidecar_field(name: str, value: object) -> Callable[[EngineMachine], None]:
    def setup(box: EngineMachine) -> None:
        path = _sidecar(box)
        data = json.loads(path.read_text())
        data[name] = value
        path.write_text(json.dumps(data))
    return setup


def sidecar_stamp(stamp: str, name: str, raw_json: str) -> Callable[[EngineMachine], None]:
    """Set `stamp.name` ("onnx"/"source") in the sidecar to a raw JSON token (1e999, Infinity, ...)."""
    def setup(box: EngineMachine) -> None:
        path = _sidecar(box)
        data = json.loads(path.read_text())
        assert isinstance(data[stamp], dict), data[stamp]
        data[stamp][name] = "@RAW@"
        path.write_text(json.dumps(data).replace('"@RAW@"', raw_json))
    return setup


def _installed(box: EngineMachine, which: str) -> Path:
    engine = box.only_engine()
    return {"engine": engine, "sidecar": engine.with_suffix(".json"),
            "config": box.config_dir / "config_infer_auto_generated.txt", "labels": box.config_dir / "labels.txt"}[which]


def replace_with_dir(which: str) -> Callable[[EngineMachine], None]:
    def setup(box: EngineMachine) -> None:
        path = _installed(box, which)
        path.unlink()
        path.mkdir()
    return setup


def replace_with_fifo(which: str) -> Callable[[EngineMachine], None]:
    """A named pipe where a file belongs: reading it would wait for a writer forever."""
    def setup(box: EngineMachine) -> None:
        path = _installed(box, which)
        path.unlink()
        os.mkfifo(path)
    return setup


def config_bytes(name: str, junk: bytes) -> Callable[[EngineMachine], None]:
    def setup(box: EngineMachine) -> None:
        path = box.config_dir / name
        path.write_bytes(path.read_bytes() + junk)
    return setup


def make(kind: str, name: str = "thing") -> Callable[[EngineMachine], str]:
    """A path of a given kind under the box, for path flags."""
    def build(box: EngineMachine) -> str:
        path = box.tmp / "inputs" / name
        path.parent.mkdir(exist_ok=True)
        if kind == "dir":
            path.mkdir(exist_ok=True)
        elif kind == "fifo":
            if not path.exists():
                os.mkfifo(path)
        elif kind == "dangling":
            if not path.is_symlink():
                path.symlink_to(box.tmp / "nowhere" / "x.onnx")
        elif kind == "file":
            path.write_text("not a directory")
        elif kind == "onnx":
            shutil.copy(box.onnx, path)
        return str(path)
    return build


LONG = "x" * 300
CASES: list[Case] = [
    # -- numbers out of range, not numbers, empty, huge: flags and their env twins ---------------
    Case("imgsz-0", ("--imgsz", "0"), says="--imgsz: 0 is out of range"),
    Case("imgsz-33", ("--imgsz", "33"), says="a multiple of 32"),
    Case("imgsz-huge", ("--imgsz", "99999"), says="out of range"),
    Case("imgsz-word", ("--imgsz", "abc"), says="not an integer"),
    Case("imgsz-5000-digits", ("--imgsz", "9" * 5000), says="not an integer"),
    Case("imgsz-empty-flag", ("--imgsz", ""), says="--imgsz: empty value"),
    Case("MIN_BATCH-word", env={"MIN_BATCH": "abc"}, says="MIN_BATCH (for --min-batch)"),
    Case("min-batch-0", ("--min-batch", "0"), says="--min-batch: 0 is out of range"),
    Case("max-batch-65", ("--max-batch", "65"), says="--max-batch: 65 is out of range"),
    Case("opt-batch-negative", ("--opt-batch", "-1"), says="--opt-batch: -1 is out of range"),
    Case("MAX_BATCH-float", env={"MAX_BATCH": "1e9"}, says="MAX_BATCH (for --max-batch)"),
    Case("profile-order", ("--min-batch", "8", "--max-batch", "4", "--opt-batch", "4"), says="min <= opt <= max"),
    Case("num-sources-over-max", ("--num-sources", "65"), says="--num-sources: 65 is out of range"),
    Case("num-sources-over-batch", ("--num-sources", "8", "--max-batch", "4", "--opt-batch", "4"), says="exceeds --max-batch"),
    Case("NUM_SOURCES-0", env={"NUM_SOURCES": "0"}, says="NUM_SOURCES (for --num-sources)"),
    Case("workspace-0", ("--workspace", "0"), says="--workspace: 0 is out of range"),
    Case("WORKSPACE_MB-negative", env={"WORKSPACE_MB": "-5"}, says="WORKSPACE_MB (for --workspace)"),
    Case("workspace-20-digits", ("--workspace", "9" * 20), says="out of range"),
    Case("gpu-id-64", ("--gpu-id", "64"), says="--gpu-id: 64 is out of range"),
    Case("GPU_ID-1-of-one", env={"GPU_ID": "1"}, says="out of range: this machine has GPU indices 0..0"),
    Case("nms-2", ("--nms-iou-threshold", "2"), says="out of range"),
    Case("pre-cluster-nan", ("--pre-cluster-threshold", "nan"), says="out of range"),
    Case("topk-0", ("--topk", "0"), says="out of range"),
    Case("precision-int8", ("--precision", "int8"), says="not one of auto, fp16, fp32"),
    Case("PRECISION-fp64", env={"PRECISION": "fp64"}, says="PRECISION (for --precision)"),
    Case("precision-empty-flag", ("--precision", ""), says="empty value"),
    Case("precision-unicode", ("--precision", "fp１６"), says="not one of"),
    Case("BUILD_LOCK_TIMEOUT_S-word", ("--force",), env={"BUILD_LOCK_TIMEOUT_S": "soon"}, says="BUILD_LOCK_TIMEOUT_S must be a number"),
    # -- model names --------------------------------------------------------------------------
    Case("model-300-chars", ("--model", "m" * 300), says="use at most 100"),
    Case("model-unicode", ("--model", "yolo🙂"), says="plain model name"),
    Case("MODEL-dotdot", env={"MODEL": "../etc"}, says="plain model name"),
    Case("model-empty-flag", ("--model", ""), says="empty value"),
    Case("MODEL-10000", env={"MODEL": "y" * 10000}, says="use at most 100"),
    # -- empty path flags are errors; empty env twins are unset ---------------------------------
    Case("engine-dir-empty-flag", ("--engine-dir", ""), says="--engine-dir: empty value"),
    Case("config-dir-empty-flag", ("--config-dir", ""), says="--config-dir: empty value"),
    Case("models-dir-empty-flag", ("--models-dir", ""), says="--models-dir: empty value"),
    Case("onnx-empty-flag", ("--onnx", ""), says="--onnx: empty value"),
    Case("pt-blank-flag", ("--pt", "  "), says="--pt: empty value"),
    # -- paths that are dirs, FIFOs, dangling symlinks, too long, not UTF-8 ----------------------
    Case("onnx-is-dir", ("--onnx", make("dir", "model.onnx")), says="file not found"),
    Case("onnx-is-fifo", ("--onnx", make("fifo", "pipe.onnx")), says="file not found"),
    Case("onnx-dangling-symlink", ("--onnx", make("dangling", "gone.onnx")), says="file not found"),
    Case("onnx-300-char-part", ("--onnx", "/tmp/" + LONG + ".onnx"), says="at most 255"),
    Case("onnx-path-5000-bytes", ("--onnx", "/tmp/" + "d/" * 2500 + "m.onnx"), says="at most 3000"),
    Case("onnx-not-utf8", ("--onnx", "/tmp/" + NON_UTF8 + ".onnx"), says="is not valid UTF-8"),
    Case("onnx-240-char-name", ("--onnx", make("onnx", "n" * 240 + ".onnx")), says="too long for the engine file name"),
    Case("onnx-unicode-missing", ("--onnx", "/tmp/模型-🙂.onnx"), says="file not found"),
    Case("ONNX_PATH-with-pt", env={"PT_PATH": "yolo11n.pt"}, says="exclusive"),
    Case("pt-is-dir", ("--pt", make("dir", "weights.pt")), says="file not found"),
    Case("pt-missing-with-dir", ("--pt", "/nonexistent/dir/x.pt"), says="file not found"),
    Case("pt-missing-yaml-with-dir", ("--pt", "/nonexistent/cfg.yaml"), says="model yaml not found"),
    Case("engine-dir-is-file", ("--engine-dir", make("file", "engines-file")), says="ENGINE_DIR"),
    Case("engine-dir-under-file", ("--engine-dir", lambda box: make("file", "plain")(box) + "/engines"), says="ENGINE_DIR"),
    Case("engine-dir-300-char-part", ("--engine-dir", "/tmp/" + LONG), says="at most 255"),
    Case("engine-dir-not-utf8", ("--engine-dir", "/tmp/" + NON_UTF8), says="is not valid UTF-8"),
    Case("config-dir-not-utf8", ("--config-dir", "/tmp/" + NON_UTF8), says="is not valid UTF-8"),
    Case("models-dir-not-utf8", ("--models-dir", "/tmp/" + NON_UTF8), says="is not valid UTF-8"),
    Case("config-dir-is-file", ("--config-dir", make("file", "configs-file")), says="CONFIG_DIR"),
    # -- the same through the environment twins (the box's own flag for it is left out) ---------
    Case("ENGINE_DIR-not-utf8", env={"ENGINE_DIR": "/tmp/" + NON_UTF8}, says="ENGINE_DIR (for --engine-dir): b'/tmp/cfg-"),
    Case("ENGINE_DIR-is-file", env={"ENGINE_DIR": make("file", "engines-env-file")}, says="is not a directory; set ENGINE_DIR"),
    Case("ENGINE_DIR-300-char-part", env={"ENGINE_DIR": "/tmp/" + LONG}, says="ENGINE_DIR (for --engine-dir): a path component"),
    Case("CONFIG_DIR-not-utf8", env={"CONFIG_DIR": "/tmp/" + NON_UTF8}, says="CONFIG_DIR (for --config-dir): b'/tmp/cfg-"),
    Case("CONFIG_DIR-under-file", env={"CONFIG_DIR": lambda box: make("file", "plain-env")(box) + "/configs"},
         says="cannot be created"),
    Case("CONFIG_DIR-newline", env={"CONFIG_DIR": "/tmp/a\nb"}, says="CONFIG_DIR (for --config-dir) '/tmp/a\\nb' contains a newline"),
    Case("MODELS_DIR-not-utf8", env={"MODELS_DIR": "/tmp/" + NON_UTF8}, says="MODELS_DIR (for --models-dir): b'/tmp/cfg-"),
    Case("MODELS_DIR-is-file", env={"MODELS_DIR": make("file", "models-env-file")}, says="is not a directory; set MODELS_DIR"),
    Case("MODELS_DIR-path-5000-bytes", env={"MODELS_DIR": "/tmp/" + "d/" * 2500}, says="MODELS_DIR (for --models-dir): the path has"),
    Case("ONNX_PATH-missing", env={"ONNX_PATH": "/nonexistent/m.onnx"}, says="ONNX_PATH /nonexistent/m.onnx: file not found"),
    Case("ONNX_PATH-is-fifo", env={"ONNX_PATH": make("fifo", "env-pipe.onnx")}, says="file not found"),
    Case("ONNX_PATH-is-dir", env={"ONNX_PATH": make("dir", "env-model.onnx")}, says="file not found"),
    Case("ONNX_PATH-not-utf8", env={"ONNX_PATH": "/tmp/" + NON_UTF8 + ".onnx"}, says="ONNX_PATH (for --onnx): b'/tmp/cfg-"),
    # -- flag combinations ---------------------------------------------------------------------
    Case("check-and-force", ("--check", "--force"), says="cannot be combined"),
    Case("json-without-info", ("--json",), says="--json goes with"),
    Case("deep-with-info", ("--info", "--deep"), says="--deep goes with"),
    Case("unknown-flag", ("--turbo",), says="unrecognized arguments"),
    Case("batches-without-benchmark", ("--batches", "1"), says="go with --benchmark"),
    # -- damaged sidecars and configs: --check says "build needed" (1) in one line --------------
    Case("sidecar-null", ("--check",), code=1, says="not an object", setup=sidecar_text("null")),
    Case("sidecar-list", ("--check",), code=1, says="a JSON list", setup=sidecar_text("[]")),
    Case("sidecar-string", ("--check",), code=1, says="a JSON str", setup=sidecar_text('"engine"')),
    Case("sidecar-number", ("--check",), code=1, says="a JSON int", setup=sidecar_text("42")),
    Case("sidecar-truncated", ("--check",), code=1, says="not valid JSON", setup=sidecar_text('{"schema": 1, "key": {')),
    Case("sidecar-not-utf8", ("--check",), code=1, says="not valid JSON", setup=sidecar_text(b'{"schema": 1, "x": "\xff"}')),
    Case("sidecar-deep-nesting", ("--check",), code=1, says="not valid JSON", setup=sidecar_text("[" * 100000)),
    Case("sidecar-profile-string", ("--check",), code=1, says="profile is not an object", setup=sidecar_field("profile", "1-4-16")),
    Case("sidecar-profile-shape", ("--check",), code=1, says="profile.max", setup=sidecar_field("profile", {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": "16"})),
    Case("sidecar-class-names-number", ("--check",), code=1, says="class_names", setup=sidecar_field("class_names", 5)),
    Case("sidecar-precision-int4", ("--check",), code=1, says="precision_built 'int4'", setup=sidecar_field("precision_built", "int4")),
    Case("sidecar-key-string", ("--check",), code=1, says="no key object", setup=sidecar_field("key", "x")),
    Case("sidecar-engine-size-string", ("--check",), code=1, says="engine_size", setup=sidecar_field("engine_size", "123")),
    Case("sidecar-is-dir", ("--check",), code=1, says="is a directory", setup=replace_with_dir("sidecar")),
    Case("engine-is-dir", ("--check",), code=1, says="is a directory", setup=replace_with_dir("engine")),
    Case("config-not-utf8", ("--check",), code=1, says="not UTF-8", setup=config_bytes("config_infer_auto_generated.txt", b"\xff\n")),
    Case("labels-not-utf8", ("--check",), code=1, says="not UTF-8", setup=config_bytes("labels.txt", b"\xfe\n")),
    Case("config-is-dir", ("--check",), code=1, says="a directory", setup=replace_with_dir("config")),
    Case("sidecar-onnx-size-1e999", ("--check",), code=1, says="onnx.size", setup=sidecar_stamp("onnx", "size", "1e999")),
    Case("sidecar-source-size-Infinity", ("--check",), code=1, says="source.size",
         setup=sidecar_stamp("source", "size", "Infinity")),
    Case("sidecar-onnx-mtime-negative-Infinity", ("--check",), code=1, says="onnx.mtime_ns",
         setup=sidecar_stamp("onnx", "mtime_ns", "-Infinity")),
    Case("sidecar-onnx-path-newline", ("--check",), code=1, says="onnx.path contains a newline",
         setup=sidecar_stamp("onnx", "path", json.dumps("/tmp/x\n[property]\nnet-scale-factor=1"))),
    Case("sidecar-onnx-path-backslash", ("--check",), code=1, says="onnx.path contains a backslash",
         setup=sidecar_stamp("onnx", "path", json.dumps("/tmp/a\\nb.onnx"))),
    Case("sidecar-is-fifo", ("--check",), code=1, says="is a FIFO", setup=replace_with_fifo("sidecar"), timeout=60),
    Case("config-is-fifo", ("--check",), code=1, says="a FIFO", setup=replace_with_fifo("config"), timeout=60),
    Case("labels-is-fifo", ("--check",), code=1, says="a FIFO", setup=replace_with_fifo("labels"), timeout=60),
]


def resolve(box: EngineMachine, value: object) -> str:
    return value(box) if callable(value) else str(value)


ENV_TWINS = {"ENGINE_DIR": "--engine-dir", "CONFIG_DIR": "--config-dir", "MODELS_DIR": "--models-dir", "ONNX_PATH": "--onnx"}


def without_flag(argv: list[str], flag: str) -> list[str]:
    """argv without `flag VALUE` (the box passes every directory and its ONNX as flags, which win over env twins)."""
    if flag not in argv:
        return argv
    at = argv.index(flag)
    return argv[:at] + argv[at + 2:]


@pytest.fixture(scope="module")
def built_box(tmp_path_factory):
    box = EngineMachine(tmp_path_factory.mktemp("bad-input"))
    done = box.run()
    assert done.returncode == 0, done.stderr
    return box


def snapshot(box: EngineMachine) -> dict[str, bytes | None]:
    files = {}
    for directory in (box.engine_dir, box.config_dir, box.models_dir):
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                files[str(path)] = path.read_bytes() if path.is_file() else None
    return files


def restore(box: EngineMachine, saved: dict[str, bytes | None]) -> None:
    for directory in (box.engine_dir, box.config_dir, box.models_dir):
        if directory.is_dir():
            for path in directory.iterdir():
                if str(path) not in saved or not path.is_file() or path.is_symlink():  # what a case put there
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for name, data in saved.items():
        if data is not None:
            Path(name).write_bytes(data)


def test_the_table_has_at_least_60_cases():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_one_line_and_its_exit_code(built_box, case, tmp_path):
    box = built_box
    before = snapshot(box)
    try:
        if case.setup is not None:
            case.setup(box)
        damaged = snapshot(box)
        args = [resolve(box, a) for a in case.args]
        env = {name: resolve(box, value) for name, value in case.env.items()}
        argv = box.argv(*args)
        if "--pt" in args or "--onnx" in args:  # the case's model source replaces the box's --onnx
            argv = without_flag(argv, "--onnx")
        for name in env.keys() & ENV_TWINS.keys():  # the case's env twin replaces the box's flag
            argv = without_flag(argv, ENV_TWINS[name])
        done = subprocess.run(argv, capture_output=True, text=True, env={**box.env, "TMPDIR": str(tmp_path), **env},
                              cwd=box.tmp, timeout=case.timeout)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == case.code, done.stderr
        assert "Traceback" not in done.stderr
        assert len(lines) == 1, done.stderr
        assert case.says in lines[0], lines[0]
        # nothing written (a temp file at most, and it is gone); the previous engine is intact
        assert snapshot(box) == damaged
    finally:
        restore(box, before)


def test_empty_directory_env_twins_count_as_unset(built_box):
    """As in the entrypoint and compose (which passes unset variables on as empty): the default
    applies. The empty flag is an error (the table)."""
    empty = {"ENGINE_DIR": "", "CONFIG_DIR": " ", "MODELS_DIR": ""}
    options = abe.parse_options([], environ=empty)
    defaults = abe.Options()
    assert (options.engine_dir, options.config_dir, options.models_dir) == (
        defaults.engine_dir, defaults.config_dir, defaults.models_dir)
    done = subprocess.run([*without_flag(without_flag(without_flag(built_box.argv(), "--engine-dir"), "--config-dir"),
                                         "--models-dir"), "--check-env"],
                          capture_output=True, text=True, env={**built_box.env, **empty}, cwd=built_box.tmp, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_engine_is_still_valid_after_the_table(built_box, tmp_path):
    assert built_box.run("--check", TMPDIR=str(tmp_path)).returncode == 0
