"""Issue 13: the engines volume is shared.

No code runs from a model file in it (a crafted .pt never runs, in MODEL mode or via PT_PATH), no
file outside it is touched through the build lock, no key is injected into the nvinfer config or
labels.txt, and two uids of one group share engines.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import auto_build_engine as abe
from engine_env import IMGSZ, ROOT, SCRIPT, EngineMachine
from helpers import RTX4090, make_sidecar, options_for

HOSTILE_NAMES = ["car\nbus", "a;b;c", "[property]", "net-scale-factor=1", "", "x" * 300,
                 "line\u2028sep", "cr\rlf", "nul\x00esc\x1b[31m", "\u0085next", "tab\there", "  ", "ok"]


# -- class names: one sanitiser, exactly N label lines ----------------------------------------

def nvinfer_labels(text: str) -> list[list[str]]:
    """How nvinfer reads labels.txt: one line per class id (blank lines skipped), split on ';'."""
    return [line.split(";") for line in text.split("\n") if line.strip()]


def test_labels_have_exactly_one_line_per_class_whatever_the_names():
    text = abe.labels_text(HOSTILE_NAMES)
    assert text.count("\n") == len(HOSTILE_NAMES) and text.endswith("\n")
    assert len(text.splitlines()) == len(HOSTILE_NAMES)  # also no U+2028/U+0085/\r line breaks left
    parsed = nvinfer_labels(text)
    assert len(parsed) == len(HOSTILE_NAMES) and all(len(fields) == 1 for fields in parsed)
    lines = text.split("\n")[:-1]
    assert lines[0] == "car bus" and lines[1] == "a b c" and lines[4] == "class4" and lines[11] == "class11"
    assert lines[2] == "[property]" and lines[3] == "net-scale-factor=1" and lines[5] == "x" * 300
    assert all(ch.isprintable() for line in lines for ch in line)


def test_the_labels_writer_uses_the_sanitiser(tmp_path):
    options = options_for(tmp_path, "--imgsz", "640")
    plan = abe.plan_engine(options, RTX4090, "10.9.0.34")
    config = abe.DeepStreamConfig(options, plan, make_sidecar(plan, "fp16", HOSTILE_NAMES, tmp_path / "m.onnx"))
    assert dict(config.staged_files())[config.labels_path].decode() == abe.labels_text(HOSTILE_NAMES)
    assert config.sections()["property"]["num-detected-classes"] == str(len(HOSTILE_NAMES))


def set_onnx_names(path: Path, names: list[str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = json.dumps(dict(enumerate(names)))
    onnx.save(model, str(path))
    (path.parent / "labels.txt").unlink()


def test_hostile_onnx_class_names_end_to_end(tmp_path):
    """Names from an ONNX's metadata reach labels.txt through the sidecar: still exactly N lines."""
    box = EngineMachine(tmp_path)
    names = ["car\nbus", "a;b", "[property]", "", "x" * 300, "k=v"]
    set_onnx_names(box.onnx, names)
    done = box.run()
    assert done.returncode == 0, done.stderr
    config = gkeyfile_parse((box.config_dir / abe.CONFIG_FILE_NAME).read_text())
    labels = (box.config_dir / abe.LABELS_FILE_NAME).read_text()
    assert int(config["property"]["num-detected-classes"]) == len(names) == len(nvinfer_labels(labels))
    assert labels == "car bus\na b\n[property]\nclass3\n" + "x" * 300 + "\nk=v\n"


# -- the nvinfer config: every value checked, parsed back with GKeyFile rules -----------------

def _glib():
    name = ctypes.util.find_library("glib-2.0")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    pointer, strings = ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)
    lib.g_key_file_new.restype = pointer
    lib.g_key_file_free.argtypes = [pointer]
    lib.g_key_file_load_from_data.argtypes = [pointer, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.POINTER(pointer)]
    lib.g_key_file_get_groups.restype = strings
    lib.g_key_file_get_groups.argtypes = [pointer, ctypes.POINTER(ctypes.c_size_t)]
    lib.g_key_file_get_keys.restype = strings
    lib.g_key_file_get_keys.argtypes = [pointer, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(pointer)]
    lib.g_key_file_get_string.restype = ctypes.c_char_p  # leaks a few bytes per call: fine in a test
    lib.g_key_file_get_string.argtypes = [pointer, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(pointer)]
    return lib


GLIB = _glib()


def keyfile_rules_parse(text: str) -> dict[str, dict[str, str]]:
    """GKeyFile's rules in Python (gkeyfile.c): lines split on \\n (a trailing \\r dropped), leading
    blanks skipped, '#' lines and blank lines are comments, '[name]' starts a group, otherwise
    key=value with blanks around the key and before the value dropped, escapes \\s \\n \\t \\r \\\\ decoded."""
    groups: dict[str, dict[str, str]] = {}
    current = None
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        line = line.lstrip(" \t\v\f")
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"bad group line {line!r}"
            current = groups.setdefault(line[1:-1], {})
            continue
        assert "=" in line and current is not None, f"not a key=value line: {line!r}"
        key, value = line.split("=", 1)
        escapes = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
        value = re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), value.lstrip(" \t\v\f"))
        current[key.rstrip()] = value  # a repeated key: the last one wins
    return groups


def gkeyfile_parse(text: str) -> dict[str, dict[str, str]]:
    """The config as nvinfer sees it: GLib's own GKeyFile when libglib is there, else the same rules in Python."""
    if GLIB is None:
        return keyfile_rules_parse(text)
    keyfile = GLIB.g_key_file_new()
    try:
        data = text.encode()
        assert GLIB.g_key_file_load_from_data(keyfile, data, len(data), 0, None), "GKeyFile refused the config"
        count = ctypes.c_size_t()
        groups = GLIB.g_key_file_get_groups(keyfile, ctypes.byref(count))
        result: dict[str, dict[str, str]] = {}
        for index in range(count.value):
            group = groups[index]
            keys_count = ctypes.c_size_t()
            keys = GLIB.g_key_file_get_keys(keyfile, group, ctypes.byref(keys_count), None)
            result[group.decode()] = {keys[j].decode(): GLIB.g_key_file_get_string(keyfile, group, keys[j], None).decode()
                                      for j in range(keys_count.value)}
        return result
    finally:
        GLIB.g_key_file_free(keyfile)


def test_the_two_parsers_agree_on_tricky_text():
    text = "# c\n[property]\na=x  \nb=  y\nc=p\\\\q\nd=p\\nq\n  [g2]\nk=1\r\nk=2\n"
    assert keyfile_rules_parse(text) == {"property": {"a": "x  ", "b": "y", "c": "p\\q", "d": "p\nq"}, "g2": {"k": "2"}}
    if GLIB is not None:
        assert gkeyfile_parse(text) == keyfile_rules_parse(text)


ODD_BUT_PLAIN = "dir with spaces [x] a=b #c ;d"


def test_written_config_parses_to_exactly_the_intended_keys(tmp_path):
    """Odd but printable directory names: GKeyFile must read back every key exactly as intended."""
    odd = tmp_path / ODD_BUT_PLAIN
    box = EngineMachine(tmp_path)
    box.engine_dir, box.config_dir, box.models_dir = odd / "engines", odd / "configs", odd / "models"
    parser = odd / "lib" / "libnvdsinfer_yolo.so"
    done = box.run(YOLO_PARSER_LIB=str(parser))
    assert done.returncode == 0, done.stderr
    written = (box.config_dir / abe.CONFIG_FILE_NAME).read_text()
    parsed = gkeyfile_parse(written)
    assert parsed == keyfile_rules_parse(written)
    engine = box.only_engine()
    sidecar = abe.Sidecar.read(engine.with_suffix(".json"))
    options = abe.parse_options(box.argv()[2:], environ={})
    plan = abe.plan_engine(options, abe.GpuInfo(0, sidecar.key.gpu_name, "", 0, 0, sidecar.key.compute_capability), sidecar.key.tensorrt_version)
    os.environ[abe.PARSER_LIB_ENV] = str(parser)
    try:
        intended = abe.DeepStreamConfig(options, plan, sidecar).sections()
    finally:
        del os.environ[abe.PARSER_LIB_ENV]
    assert parsed == intended
    assert parsed["property"]["model-engine-file"] == str(engine)
    assert parsed["property"]["custom-lib-path"] == str(parser)
    assert parsed["property"]["net-scale-factor"] == "0.0039215697906911373"


INJECTION = "/tmp/x\n[property]\nnet-scale-factor=1"


def tool(box: EngineMachine, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True,
                          env={**box.env, **env}, cwd=box.tmp, timeout=180)


def one_error_line(done: subprocess.CompletedProcess, code: int = abe.EXIT_USAGE) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    return errors[0]


@pytest.mark.parametrize("variable, payload", [
    *((variable, INJECTION) for variable in ("ONNX_PATH", "PT_PATH", "ENGINE_DIR", "CONFIG_DIR", "MODELS_DIR", "YOLO_PARSER_LIB")),
    *(("ENGINE_DIR", payload) for payload in ("/tmp/a\rb", "/tmp/a\u2028b", "/tmp/tab\there", "/tmp/back\\nslash")),
])
def test_injection_through_each_path_variable_is_refused_before_writing(tmp_path, variable, payload):
    box = EngineMachine(tmp_path)
    flags = {"ONNX_PATH": ["--onnx", str(box.onnx)], "ENGINE_DIR": ["--engine-dir", str(box.engine_dir)],
             "CONFIG_DIR": ["--config-dir", str(box.config_dir)], "MODELS_DIR": ["--models-dir", str(box.models_dir)]}
    left_out = {variable, "ONNX_PATH"} if variable == "PT_PATH" else {variable}  # PT_PATH: the only model source
    argv = ["--imgsz", str(IMGSZ)] + [arg for name, pair in flags.items() if name not in left_out for arg in pair]
    message = one_error_line(tool(box, *argv, **{variable: payload}))
    assert variable in message and ("non-printable" in message or "backslash" in message), message
    assert not box.engine_dir.exists() and not box.config_dir.exists() and not box.models_dir.exists()


def test_a_tampered_sidecar_is_rebuilt_and_cannot_inject_keys(tmp_path):
    """The sidecar lives on the shared volume and its ONNX path goes into the config: one whose value
    would inject keys is damaged, so --check says a build is needed and the start rebuilds (it used to
    stop every start with exit 2 while --check said "build needed", forever)."""
    box = EngineMachine(tmp_path)
    assert box.run().returncode == 0
    sidecar_path = box.only_engine().with_suffix(".json")
    record = json.loads(sidecar_path.read_text())
    real_onnx = record["onnx"]["path"]
    record["onnx"]["path"] = INJECTION
    sidecar_path.write_text(json.dumps(record))
    config = box.config_dir / abe.CONFIG_FILE_NAME
    config.unlink()
    check = box.run("--check", TMPDIR=str(tmp_path))
    assert check.returncode == 1 and "damaged (onnx.path contains a newline" in check.stderr, check.stderr
    done = box.run()
    assert done.returncode == 0 and "(built in" in done.stdout, done.stderr
    written = gkeyfile_parse(config.read_text())  # as nvinfer reads it
    assert set(written) == {"property", "class-attrs-all"}
    assert written["property"]["onnx-file"] == real_onnx  # the real path again, nothing injected
    assert written["property"]["net-scale-factor"] == "0.0039215697906911373"
    assert json.loads(sidecar_path.read_text())["onnx"]["path"] == real_onnx


def test_config_value_checks():
    for bad in ("a\nb", "a\rb", "\x00", "a\u2028b", " lead", "trail ", "a\\nb", "\x1b[31m"):
        assert abe.config_value_problem(bad) is not None, repr(bad)
    for good in ("/app/engines/tensorrt/x.engine", "3;640;640", "[not a group]", "a=b", "#x", "é日本"):
        assert abe.config_value_problem(good) is None, repr(good)


# -- the build lock ---------------------------------------------------------------------------

def lock_target(tmp_path: Path) -> Path:
    target = tmp_path / "outside" / "precious.txt"
    target.parent.mkdir()
    target.write_text("keep me\n")
    target.chmod(0o600)
    return target


@pytest.mark.parametrize("kind", ["symlink-to-file", "dangling-symlink", "fifo", "directory"])
def test_lock_that_is_not_a_plain_file_is_refused_and_target_untouched(tmp_path, kind):
    box = EngineMachine(tmp_path)
    box.engine_dir.mkdir()
    lock = box.engine_dir / abe.LOCK_FILE_NAME
    target = lock_target(tmp_path)
    dangling = tmp_path / "outside" / "created-through-the-lock"
    if kind == "symlink-to-file":
        lock.symlink_to(target)
    elif kind == "dangling-symlink":
        lock.symlink_to(dangling)
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    message = one_error_line(box.run())
    assert str(lock) in message and ("symlink" in message if "symlink" in kind else "regular file" in message or "directory" in message)
    assert target.read_text() == "keep me\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not dangling.exists() and not box.engines()


def test_lock_class_refuses_a_symlink_swapped_in_after_the_check(tmp_path, monkeypatch):
    """O_NOFOLLOW: a symlink that appears between the lstat and the open is not followed."""
    target = lock_target(tmp_path)
    lock = abe.BuildLock(tmp_path, timeout_s=1)
    lock.path.symlink_to(target)
    real_lstat = os.lstat

    def lstat_before_the_swap(path, *args, **kwargs):
        if str(path) == str(lock.path):
            raise FileNotFoundError(path)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat_before_the_swap)
    with pytest.raises(abe.ToolError, match="symlink") as error:
        lock.__enter__()
    assert error.value.exit_code == abe.EXIT_USAGE
    assert target.read_text() == "keep me\n" and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_pinned_filelock_does_not_follow_symlinks(tmp_path):
    """The filelock of requirements.txt (installed here) and of requirements-image.txt are one safe pin."""
    import filelock

    pins = {}
    for name in ("requirements.txt", "requirements-image.txt"):
        match = re.search(r"^filelock==(\S+)$", (ROOT / name).read_text(), flags=re.M)
        assert match, f"{name} does not pin filelock"
        pins[name] = match.group(1)
    assert pins["requirements.txt"] == pins["requirements-image.txt"] == filelock.__version__
    target = lock_target(tmp_path)
    for link_to in (target, tmp_path / "outside" / "dangling"):
        link = tmp_path / f"lock-{link_to.name}"
        link.symlink_to(link_to)
        with pytest.raises(OSError):
            filelock.FileLock(str(link)).acquire(timeout=0)
    assert target.read_text() == "keep me\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not (tmp_path / "outside" / "dangling").exists()


# -- weights: nothing in a .pt runs -----------------------------------------------------------

class ExecPayload:
    """The classic: unpickling calls exec()."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


class ConstructorPayload:
    """Abuses an allow-list of ultralytics classes: REDUCE calls DetectionModel(cfg), which eval()s
    cfg['activation'] (ultralytics 8.3.170 always, 8.4.190 unless ULTRALYTICS_SAFE_LOAD is set)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        from ultralytics.nn.tasks import DetectionModel, yaml_model_load

        cfg = yaml_model_load("yolo11n.yaml")
        cfg["activation"] = f"__import__('pathlib').Path({self.marker!r}).touch() or nn.SiLU()"
        return DetectionModel, (cfg,)


def crafted_pt(path: Path, payload: type, marker: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": payload(marker), "train_args": {}}, str(path))
    assert not marker.exists()
    return path


@pytest.fixture
def eval_activation(monkeypatch):
    """ultralytics as it loads by default: 8.4's ULTRALYTICS_SAFE_LOAD off (8.3.170 has no switch)."""
    from ultralytics.nn import tasks

    monkeypatch.setattr(tasks, "SAFE_LOAD", False, raising=False)


def test_the_crafted_files_do_run_code_when_loaded_naively(tmp_path, eval_activation):
    """Proof that the payloads are live: a plain load, and a weights_only load with a bare class allow-list."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    exec_marker, ctor_marker = tmp_path / "exec-ran", tmp_path / "ctor-ran"
    exec_pt = crafted_pt(tmp_path / "exec.pt", ExecPayload, exec_marker)
    ctor_pt = crafted_pt(tmp_path / "ctor.pt", ConstructorPayload, ctor_marker)
    torch.load(str(exec_pt), weights_only=False)
    with torch.serialization.safe_globals([DetectionModel]):
        torch.load(str(ctor_pt), weights_only=True)
    assert exec_marker.exists() and ctor_marker.exists()


@pytest.fixture
def ds_box(tmp_path) -> EngineMachine:
    return EngineMachine(tmp_path)


def test_crafted_pt_named_by_pt_path_is_loaded_without_running(ds_box, tmp_path):
    marker = tmp_path / "ctor-ran"
    pt = crafted_pt(tmp_path / "weights" / "evil.pt", ConstructorPayload, marker)
    done = tool(ds_box, "--dry-run", "--imgsz", "64", "--models-dir", str(ds_box.models_dir), PT_PATH=str(pt))
    message = one_error_line(done)
    assert str(pt) in message
    assert not marker.exists() and not list(ds_box.models_dir.glob("*.onnx"))


def test_crafted_pt_found_in_model_mode_is_refused_unloaded(ds_box, tmp_path):
    marker = tmp_path / "exec-ran"
    pt = crafted_pt(ds_box.models_dir / "evil.pt", ExecPayload, marker)
    done = tool(ds_box, "--dry-run", "--imgsz", "64", "--models-dir", str(ds_box.models_dir), MODEL="evil")
    message = one_error_line(done)
    assert f"PT_PATH={pt}" in message and "found by searching" in message
    assert not marker.exists() and not list(ds_box.models_dir.glob("*.onnx"))


def test_a_fifo_as_download_record_is_no_record_and_does_not_hang(ds_box, tmp_path):
    pt = ds_box.models_dir / "found.pt"
    pt.parent.mkdir(parents=True)
    pt.write_bytes(b"never loaded")
    os.mkfifo(abe.download_record_path(pt))  # the models volume is shared: anyone may put one there
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--imgsz", "64", "--models-dir", str(ds_box.models_dir)],
                          capture_output=True, text=True, env={**ds_box.env, "MODEL": "found"}, cwd=ds_box.tmp, timeout=60)
    assert "found by searching" in one_error_line(done)


def exporter_options(tmp_path: Path, **changes) -> abe.Options:
    from dataclasses import replace

    return replace(options_for(tmp_path, "--imgsz", "64", "--max-batch", "2", "--opt-batch", "1"), **changes)


@pytest.mark.parametrize("payload", [ExecPayload, ConstructorPayload])
def test_crafted_pt_via_pt_option_in_process(tmp_path, payload, eval_activation):
    marker = tmp_path / "ran"
    pt = crafted_pt(tmp_path / "evil.pt", payload, marker)
    with pytest.raises(abe.ToolError) as error:
        abe.YOLOExporter(exporter_options(tmp_path, pt=pt)).resolve()
    assert error.value.exit_code == abe.EXIT_USAGE and str(pt) in str(error.value)
    if payload is ExecPayload:
        assert "builtins.exec" in str(error.value) and "allow-list" in str(error.value)
    assert not marker.exists()


class FunctionPayload:
    """A function from an allowed module: ultralytics' own unsafe loader, pointed at another file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        from ultralytics.nn.tasks import torch_safe_load

        return torch_safe_load, (self.marker + ".pt",)


class GetattrPayload:
    """getattr is allowed for the methods checkpoints pickle; not for anything else."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        from ultralytics.nn.modules.conv import Conv

        return getattr, (Conv, "__init__")


@pytest.mark.parametrize("payload, named", [(FunctionPayload, "torch_safe_load"), (GetattrPayload, "getattr(Conv, '__init__')")])
def test_allowed_modules_and_getattr_do_not_open_other_doors(tmp_path, payload, named):
    pt = crafted_pt(tmp_path / "door.pt", payload, tmp_path / "ran")
    with pytest.raises(abe.ToolError, match=re.escape(named)) as error:
        abe.load_checkpoint_dict(pt)
    assert error.value.exit_code == abe.EXIT_USAGE and "\n" not in str(error.value)


def test_bare_pt_name_found_only_in_models_dir_needs_a_record(tmp_path, monkeypatch):
    """MODELS_DIR is the shared volume: a file there under the bare name was not necessarily put
    there by the user who typed the name (the tool downloads official names there, with a record)."""
    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    pt = models / "found.pt"
    pt.write_bytes(b"weights")  # never loaded here: the trust decision comes first
    exporter = abe.YOLOExporter(exporter_options(tmp_path, pt=Path("found.pt")))
    assert abe.locate_model_files(exporter.options) == (None, pt)
    sha = abe.sha256_of_file(pt)
    with pytest.raises(abe.ToolError, match="PT_PATH="):
        exporter._check_trusted(pt, sha)
    abe.record_download(pt, sha)
    exporter._check_trusted(pt, sha)  # this tool's own download: trusted
    record = abe.download_record_path(pt)
    assert record.parent == models and json.loads(record.read_text())["sha256"] == sha
    with pytest.raises(abe.ToolError, match="PT_PATH="):
        exporter._check_trusted(pt, "0" * 64)  # replaced after the download
    named = abe.YOLOExporter(exporter_options(tmp_path, pt=pt))
    record.unlink()
    named._check_trusted(pt, sha)  # named by its path: trusted


@pytest.fixture
def image_models(tmp_path, monkeypatch) -> Path:
    """A folder standing in for the image's /app/models (one of STANDARD_MODEL_PATHS)."""
    folder = tmp_path / "image" / "models"
    folder.mkdir(parents=True)
    monkeypatch.setattr(abe, "STANDARD_MODEL_PATHS", (".", str(folder)))
    monkeypatch.chdir(tmp_path)
    return folder


def test_bare_pt_name_found_in_an_image_model_path_is_trusted(image_models, tmp_path):
    pt = image_models / "found.pt"
    pt.write_bytes(b"weights")
    exporter = abe.YOLOExporter(exporter_options(tmp_path, pt=Path("found.pt")))
    assert abe.locate_model_files(exporter.options) == (None, pt)
    exporter._check_trusted(pt, abe.sha256_of_file(pt))


def test_the_same_file_found_by_model_name_is_not_trusted(image_models, tmp_path):
    pt = image_models / "found.pt"
    pt.write_bytes(b"weights")
    exporter = abe.YOLOExporter(exporter_options(tmp_path, model="found"))
    assert abe.locate_model_files(exporter.options) == (None, pt)
    with pytest.raises(abe.ToolError, match="found by searching"):
        exporter._check_trusted(pt, abe.sha256_of_file(pt))


def test_a_bare_pt_name_in_an_image_path_that_leads_into_the_volume_is_not_trusted(image_models, tmp_path):
    in_volume = tmp_path / "models" / "found.pt"  # MODELS_DIR of exporter_options
    in_volume.parent.mkdir()
    in_volume.write_bytes(b"weights")
    (image_models / "found.pt").symlink_to(in_volume)
    exporter = abe.YOLOExporter(exporter_options(tmp_path, pt=Path("found.pt")))
    with pytest.raises(abe.ToolError, match="PT_PATH="):
        exporter._check_trusted(image_models / "found.pt", abe.sha256_of_file(in_volume))


def test_a_real_checkpoint_loads_exactly_as_ultralytics_loads_it(tmp_path):
    import numpy as np
    import torch
    from export_helpers import save_checkpoint
    from ultralytics.nn import tasks

    torch.manual_seed(0)
    model = tasks.DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    model.names = {0: "a", 1: "b", 2: "c"}
    pt = save_checkpoint(model.eval(), tmp_path / "m.pt")
    ours = abe.load_checkpoint_safely(pt)
    # ultralytics' own loader: load_checkpoint in 8.4, attempt_load_one_weight in 8.3 (the image's 8.3.170)
    theirs, _ = (getattr(tasks, "load_checkpoint", None) or tasks.attempt_load_one_weight)(str(pt))
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = ours(images), theirs(images)
    a, b = (a[0] if isinstance(a, (list, tuple)) else a), (b[0] if isinstance(b, (list, tuple)) else b)
    assert np.array_equal(a.numpy(), b.numpy())
    assert ours.names == theirs.names and ours.task == "detect" and type(ours.model[-1]).__name__ == "Detect"


def test_a_checkpoint_with_training_extras_loads(tmp_path):
    """What official/trained checkpoints carry besides the model: an EMA copy, args namespace, numpy metrics, paths."""
    import copy
    import numpy as np
    import torch
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import IterableSimpleNamespace

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    model.args = IterableSimpleNamespace(task="detect", imgsz=64, save_dir=Path("/runs/x"))
    ckpt = {"date": "2026-01-01", "version": "8.4.190", "epoch": -1, "best_fitness": np.float64(0.5),
            "model": None, "ema": copy.deepcopy(model).half(), "updates": 10, "optimizer": None,
            "train_args": {"task": "detect", "imgsz": 64}, "train_metrics": {"metrics/mAP50(B)": np.float32(0.25)}}
    torch.save(ckpt, str(tmp_path / "trained.pt"))
    loaded = abe.load_checkpoint_safely(tmp_path / "trained.pt")
    assert isinstance(loaded, DetectionModel) and loaded.task == "detect" and loaded.args["imgsz"] == 64
    assert next(loaded.parameters()).dtype == torch.float32



# -- two uids, one group, one volume ----------------------------------------------------------

# The interpreter and its packages live under /root (mode 0700 on this dev box), so a child cannot
# simply exec python as another uid: it starts as root, imports everything the tool will need
# (a --dry-run of the same model does that), then drops to the uid/gid/umask and runs main().
RUN_AS = r"""
import contextlib, io, json, os, sys
sys.path[:0] = json.loads(os.environ.pop("RUN_AS_PATHS"))
uid, gid, umask = os.environ.pop("RUN_AS").split(":")
warmup = json.loads(os.environ.pop("RUN_AS_WARMUP"))
import auto_build_engine as abe
import errno, fcntl, filelock, hashlib, secrets, stat, tempfile, unicodedata  # noqa: F401
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    abe.main(warmup)
os.setgroups([int(gid)])
os.setgid(int(gid))
os.setuid(int(uid))
os.umask(int(umask, 8))
sys.exit(abe.main(sys.argv[1:]))
"""
GROUP, UID_A, UID_B, UID_OTHER, OTHER_GROUP = 47100, 47101, 47102, 47103, 47199

needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="switching uids needs root")


class SharedVolume:
    """A fake GPU machine whose engines volume is a setgid directory of GROUP (mode 2770)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="abe-uids-"))
        self.base.chmod(0o755)
        self.box = EngineMachine(self.base)
        logs = self.base / "logs"
        logs.mkdir()
        logs.chmod(0o1777)
        self.box.env["FAKE_TRT_ACCESS_LOG"] = str(logs / "trt-access.log")
        volume = self.base / "volume"
        volume.mkdir()
        os.chown(volume, 0, GROUP)
        volume.chmod(0o2770)
        self.box.engine_dir, self.box.models_dir = volume / "tensorrt", volume / "models"

    def run(self, uid: int, gid: int, umask: int, *extra: str) -> subprocess.CompletedProcess:
        config_dir = self.base / f"configs-{uid}"  # each container has its own config dir
        if not config_dir.exists():
            config_dir.mkdir()
            os.chown(config_dir, uid, gid)
        args = self.box.argv()[2:]
        args[args.index("--config-dir") + 1] = str(config_dir)
        env = {**self.box.env, "RUN_AS": f"{uid}:{gid}:{umask:o}", "RUN_AS_PATHS": json.dumps([str(ROOT)]),
               "RUN_AS_WARMUP": json.dumps([*args, "--dry-run", "-q"])}
        return subprocess.run([sys.executable, "-c", RUN_AS, *args, *extra], capture_output=True, text=True,
                              env=env, cwd=self.base, timeout=180)

    def files(self) -> dict[str, os.stat_result]:
        return {p.name: p.lstat() for p in self.box.engine_dir.iterdir()}


@pytest.fixture
def volume():
    shared = SharedVolume()
    yield shared
    shutil.rmtree(shared.base, ignore_errors=True)


def ok(done: subprocess.CompletedProcess, how: str) -> None:
    assert done.returncode == 0, done.stderr
    assert f"({how}" in done.stdout, done.stdout


@needs_root
def test_two_uids_of_one_group_share_and_rebuild_engines(volume):
    ok(volume.run(UID_A, GROUP, 0o007, "-v"), "built")
    engine_dir = volume.box.engine_dir
    assert engine_dir.stat().st_mode & stat.S_ISGID and engine_dir.stat().st_gid == GROUP
    files = volume.files()
    assert {n for n in files if n.endswith((".engine", ".json", ".cache"))} and abe.LOCK_FILE_NAME in files
    for name, st in files.items():
        assert st.st_gid == GROUP and stat.S_IMODE(st.st_mode) == 0o660, (name, oct(st.st_mode))
    ok(volume.run(UID_B, GROUP, 0o007), "reused")
    ok(volume.run(UID_B, GROUP, 0o007, "--force"), "built")  # the lock and the files are the group's
    assert {st.st_uid for n, st in volume.files().items() if n.endswith(".engine")} == {UID_B}
    ok(volume.run(UID_A, GROUP, 0o007), "reused")


@needs_root
def test_read_only_group_members_reuse_and_outsiders_get_one_line(volume):
    ok(volume.run(UID_A, GROUP, 0o027), "built")
    for name, st in volume.files().items():
        assert stat.S_IMODE(st.st_mode) == 0o640, (name, oct(st.st_mode))
    ok(volume.run(UID_B, GROUP, 0o027), "reused")
    message = one_error_line(volume.run(UID_B, GROUP, 0o027, "--force"))
    assert f"not writable by uid {UID_B}" in message and "0640" in message
    message = one_error_line(volume.run(UID_OTHER, OTHER_GROUP, 0o027))
    assert f"uid {UID_OTHER} cannot read the sidecar" in message and "no sidecar" not in message
    sidecar = next(volume.box.engine_dir.glob("*.json"))
    sidecar.chmod(0o600)  # e.g. written by an older version of the tool (mkstemp's mode)
    message = one_error_line(volume.run(UID_B, GROUP, 0o027))
    assert f"uid {UID_B} cannot read the sidecar {sidecar}" in message
