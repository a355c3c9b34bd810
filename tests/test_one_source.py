"""Issue 17: one source for each fact.

The tool's defaults live in auto_build_engine.py alone (Options, with the flag table naming the
environment twins): the Dockerfile and the compose file restate none of them, the entrypoint has
the tool validate its own variables (`--check-env` or the builder run itself), only the CLI layer
reads which settings were typed (`options.explicit`), main_low_latency.py uses the builder's
config name and readers, and the image pins the export stack the tests run with.
"""
from __future__ import annotations

import ast
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import auto_build_engine as abe

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import main_low_latency as app  # noqa: E402

TOOL_ENV = {env: dest for _flag, env, dest, _convert, _help in abe._VALUE_FLAGS if env}
DEFAULTS = {env: getattr(abe.Options(), dest) for env, dest in TOOL_ENV.items()}
HEAVY = ("torch", "ultralytics", "tensorrt", "onnx", "onnxruntime", "onnxslim", "pynvml", "numpy", "cv2", "pycuda")


# --- the defaults: once, in the tool ----------------------------------------------------------

def _dockerfile_env() -> dict[str, str]:
    dockerfile = pytest.importorskip("dockerfile")
    env: dict[str, str] = {}
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd.upper() == "ENV":  # ENV a=1 b=2 parses to (a, 1, b, 2)
            env.update(zip(command.value[0::2], command.value[1::2]))
    return env


def test_the_tool_table_names_the_variables_the_image_documents() -> None:
    # the contract the tests below read the defaults from
    assert {"MODEL", "IMGSZ", "MIN_BATCH", "OPT_BATCH", "MAX_BATCH", "PRECISION", "WORKSPACE_MB", "ENGINE_DIR",
            "MODELS_DIR", "CONFIG_DIR", "GPU_ID", "NUM_SOURCES", "PT_PATH", "ONNX_PATH"} <= set(TOOL_ENV)
    assert DEFAULTS["WORKSPACE_MB"] == 8192 and DEFAULTS["MODEL"] == "yolo11x"


def test_dockerfile_sets_no_tool_variable() -> None:
    env = _dockerfile_env()
    assert not set(env) & set(TOOL_ENV), "the tool's defaults live in auto_build_engine.py only"
    # what stays is what the tool does not default: the runtime, CUDA, the entrypoint, the venv
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility,video"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["APP_DIR"] == "/app"
    assert env["PYTHONUNBUFFERED"] == "1" and env["VIRTUAL_ENV"] == "/opt/venv"


def test_compose_restates_no_tool_default() -> None:
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "docker-compose.yml").read_text()
    env = yaml.safe_load(text)["services"]["deepstream"]["environment"]
    for key, value in env.items():
        if key in TOOL_ENV:  # passed on from the shell/.env when set there, else the tool's default
            assert value is None, f"{key}: {value!r} restates or replaces the tool's default"
    assert not re.search(r"\$\{[A-Z_]+:?-[^}]", text), "no ${VAR:-default} in the compose file"
    assert {"MODEL", "IMGSZ", "MAX_BATCH", "PRECISION", "NUM_SOURCES", "ONNX_PATH", "PT_PATH"} <= set(env)


def test_the_flag_help_states_the_options_defaults() -> None:
    """The help text is the one other place in the tool that names a default: it must agree."""
    for flag, _env, dest, _convert, help_text in abe._VALUE_FLAGS:
        stated = re.search(r"\(default ([^)]+)\)$", help_text)
        if stated:
            assert stated.group(1) == str(getattr(abe.Options(), dest)), flag


def _stated_defaults(doc: str, heading: str, variables_column: int) -> list[tuple[str, str]]:
    """(variable, default as written) for each variable of the settings table under `heading`."""
    text = (ROOT / doc).read_text()
    table = text.split(heading, 1)[1].split("\n#", 1)[0]
    pairs = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # not on a \|
        variables = re.findall(r"`([A-Z_]+)`", cells[variables_column]) if len(cells) == 4 else []
        if not variables:
            continue
        defaults = [part.strip().strip("`") for part in re.split(r"`? / `?|/(?=\d)", cells[2])]
        pairs.extend(zip(variables, defaults if len(defaults) == len(variables) else defaults[:1] * len(variables)))
    return pairs


@pytest.mark.parametrize("doc,heading,column", [("README.md", "## Settings", 0), ("docs/cli.md", "| flag | env |", 1)])
def test_the_docs_settings_tables_state_the_options_defaults(doc: str, heading: str, column: int) -> None:
    """The README and docs/cli.md restate the defaults for readers: they must agree with Options."""
    checked = set()
    for variable, default in _stated_defaults(doc, heading, column):
        if variable in TOOL_ENV and variable != "NUM_SOURCES":  # README: "number of sources (else 1)"
            expected = "—" if DEFAULTS[variable] is None else str(DEFAULTS[variable])
            assert default == expected, f"{doc} says {variable} defaults to {default!r}; the tool: {expected!r}"
            checked.add(variable)
        elif variable == abe.LOCK_TIMEOUT_ENV:
            assert float(default) == abe.DEFAULT_LOCK_TIMEOUT_S
            checked.add(variable)
    assert {"MODEL", "IMGSZ", "MIN_BATCH", "OPT_BATCH", "MAX_BATCH", "PRECISION", "WORKSPACE_MB", "ENGINE_DIR", "PT_PATH"} <= checked


def test_entrypoint_restates_no_tool_rule() -> None:
    text = (ROOT / "entrypoint.sh").read_text()
    assert "--check-env" in text
    for pattern in ("auto | fp16 | fp32", "_ds_is_int", "WORKSPACE_MB) echo", "8192"):
        assert pattern not in text


# --- --check-env ------------------------------------------------------------------------------

def _check_env(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    script = ("import sys, auto_build_engine as a; code = a.main(sys.argv[1:]); "
              f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
              "print('heavy:', heavy, file=sys.stderr) if heavy else None; sys.exit(code)")
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-c", script, "--check-env", *argv], env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_check_env_is_silent_when_valid_and_imports_nothing_heavy() -> None:
    res = _check_env({"PRECISION": "fp16", "MAX_BATCH": "8", "IMGSZ": "640", "NUM_SOURCES": "", "WORKSPACE_MB": " "})
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


@pytest.mark.parametrize("env,needle", [
    ({"PRECISION": "int4"}, "PRECISION"),
    ({"IMGSZ": "1000"}, "IMGSZ"),
    ({"MAX_BATCH": "65"}, "MAX_BATCH"),
    ({"MIN_BATCH": "8", "MAX_BATCH": "4"}, "min <= opt <= max"),
    ({"NUM_SOURCES": "32"}, "--num-sources 32 exceeds --max-batch 16"),
    ({"PT_PATH": "/m/a.pt", "ONNX_PATH": "/m/a.onnx"}, "exclusive"),
    ({"MODEL": "my model"}, "--model"),
    ({"CONFIG_DIR": "/a\\b"}, "backslash"),
    ({"BUILD_LOCK_TIMEOUT_S": "soon"}, "BUILD_LOCK_TIMEOUT_S"),
])
def test_check_env_refuses_a_bad_value_in_one_line(env: dict[str, str], needle: str) -> None:
    res = _check_env(env)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and needle in res.stderr, res.stderr


def test_check_env_touches_no_gpu_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("--check-env must not probe the system")

    monkeypatch.setattr(abe.SystemInfo, "detect", no)
    monkeypatch.setattr(abe, "_run_quietly", no)
    monkeypatch.setattr(abe, "target_gpu_and_trt", no)
    engines = tmp_path / "engines"
    monkeypatch.setenv("ENGINE_DIR", str(engines))
    assert abe.main(["--check-env"]) == abe.EXIT_OK
    assert not engines.exists()


def test_check_env_goes_alone() -> None:
    res = _check_env({}, "--check")
    assert res.returncode == 2 and "exclusive" in res.stderr


# --- options.explicit: the CLI layer only -----------------------------------------------------

def test_explicit_is_read_only_by_parse_options() -> None:
    tree = ast.parse((ROOT / "auto_build_engine.py").read_text())
    readers = set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.Attribute) and node.attr == "explicit":
                    readers.add(function.name)
    assert readers == {"parse_options"}


@pytest.mark.parametrize("environ,given", [({}, False), ({"NUM_SOURCES": "2"}, True), ({"NUM_SOURCES": ""}, False)])
def test_num_sources_given_is_resolved_by_parse_options(environ: dict[str, str], given: bool) -> None:
    assert abe.parse_options([], environ=environ).num_sources_given is given
    assert abe.parse_options(["--num-sources", "1"], environ=environ).num_sources_given is True


# --- main_low_latency.py uses the builder's names and readers ---------------------------------

def test_the_app_uses_the_builders_config_name_and_default_dir() -> None:
    assert app.CONFIG_NAME is abe.CONFIG_FILE_NAME
    assert app.DEFAULT_CONFIG_DIR == str(abe.Options().config_dir)
    source = (ROOT / "main_low_latency.py").read_text()
    assert "config_infer_auto_generated.txt" not in source and '"/app/configs"' not in source


def test_the_app_reads_labels_as_the_builder_writes_them(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text(abe.labels_text(["person", "a\nb", "", "car"]))  # what DeepStreamConfig installs
    assert app.read_labels(labels) == tuple(abe.read_labels(labels)) == ("person", "a b", "class2", "car")
    assert app.read_labels(None) == ()
    assert app.read_labels(tmp_path / "missing.txt") == ()


def _sidecar(tmp_path: Path, max_batch: int) -> tuple[Path, dict]:
    from helpers import make_sidecar

    key = abe.EngineKey("yolo11n", 640, 1, 1, max_batch, "auto", "fp16", "test", "8.9", "10.9.0.34")
    plan = abe.EnginePlan(key, "yolo11n_test", tmp_path, "test", None)
    plan.engine_path.write_bytes(b"plan")
    data = make_sidecar(plan, "fp16", ["person"], tmp_path / "m.onnx").as_json()
    return plan.engine_path, data


def test_the_app_reads_the_sidecar_with_the_builders_reader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine, data = _sidecar(tmp_path, max_batch=6)
    engine.with_suffix(".json").write_text(json.dumps(data))
    assert app.engine_max_batch(engine, 1) == 6
    # a sidecar the builder would call damaged is not trusted by the app either
    data["profile"]["max"] = [6, 3, 640]
    engine.with_suffix(".json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        assert app.engine_max_batch(engine, 2) == 2
    assert "profile.max" in caplog.text


def test_the_app_import_stays_cheap() -> None:
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import main_low_latency; "
              f"print([m for m in {HEAVY!r} if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert res.stdout.strip() == "[]"


# --- requirements: the image pins what the tests run ------------------------------------------

def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            package, version = line.split("==", 1)
            pins[package.strip().lower()] = version.strip()
    return pins


def test_image_and_tests_pin_the_same_versions() -> None:
    dev, image = _pins("requirements.txt"), _pins("requirements-image.txt")
    # torch/torchvision: a CPU build here, DeepStream 8.0's CUDA 12.8 build (+cu128) in the image
    shared = (set(dev) & set(image)) - {"torch", "torchvision"}
    assert {"ultralytics", "onnx", "onnxslim", "onnxruntime", "filelock", "nvidia-ml-py"} <= shared
    assert {name: image[name] for name in shared} == {name: dev[name] for name in shared}
    assert image["torch"].endswith("+cu128") and image["torchvision"].endswith("+cu128")

