"""Issue 12: the engine step under faults. Real processes and real signals against the TensorRT fakes.

The fault hook (tests/fault_harness.py) makes the tool signal itself, or the entrypoint shell that
runs it, at an exact point (temp ONNX written, engine renamed, ...); `FAULT_AT=enospc:...` makes
fsync of one file fail with ENOSPC (a full disk). Each defect of the issue has a test here that
failed before its fix; test_fault_injection_tries runs >= 30 random tries over all points.
"""
from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import pytest

import auto_build_engine as abe
from engine_env import ROOT, EngineMachine
from fault_harness import FaultBox, run_tries, summary
from tests.fakes.gpus import GPU_RTX_4090

TRIES = int(os.environ.get("FAULT_TRIES", "30"))


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, done.stderr
    return lines[-1] if lines else ""


def unit(box: EngineMachine) -> dict[str, bytes]:
    """Engine, sidecar, labels and config: what must stay together."""
    engine = box.only_engine()
    return {p.name: p.read_bytes() for p in (engine, engine.with_suffix(".json"), box.config_dir / "labels.txt",
                                              box.config_dir / "config_infer_auto_generated.txt")}


@pytest.fixture
def box(tmp_path):
    box = FaultBox(tmp_path)
    box.env["TMPDIR"] = str(tmp_path)  # the --check "verified" stamp stays in this test
    return box


HAVE_EXPORT_STACK = all(importlib.util.find_spec(name) for name in ("torch", "ultralytics"))


# -- the random tries ---------------------------------------------------------------------------

def test_fault_injection_tries(tmp_path):
    started = time.monotonic()
    tries = run_tries(tmp_path, TRIES, seed=12)
    report = summary(tries)
    problems = [(t.index, t.point, t.signal, t.via, t.problems) for t in tries if t.problems]
    assert problems == [], json.dumps(report)
    assert report["tries"] >= 30 and report["survived"] == report["tries"]
    assert report["left_behind"] == 0 and report["mismatched_pairs"] == 0 and report["app_started_after_signal"] == 0
    assert set(report["exit_codes"]["TERM"]) == {143} and set(report["exit_codes"]["INT"]) == {130}
    assert all(count > 0 for count in report["by_point"].values())
    print(f"{report['tries']} tries in {time.monotonic() - started:.1f} s")  # the issue asks < 2 min in CI; not asserted (shared machines)


# -- defect 3: signals --------------------------------------------------------------------------

def test_sigterm_to_the_entrypoint_during_the_engine_install_never_starts_the_app(box):
    process = box.entrypoint(FAULT_AT="replace:*.engine", FAULT_SIGNAL="TERM", FAULT_TARGET="parent")
    _, err = process.communicate(timeout=120)
    assert box.fault_log.exists()
    assert process.returncode == 143, err
    assert not box.app_marker.exists()
    assert "the app is not started" in err


@pytest.mark.parametrize("point", ["replace:tinydyn_*.json", "replace:config_infer_auto_generated.txt"])
def test_sigterm_during_the_install_exits_143_not_0(box, point):
    done = box.run(FAULT_AT=point, FAULT_SIGNAL="TERM")
    assert done.returncode == 143, done.stderr
    assert one_line(done).startswith("error: interrupted")


def test_sigint_while_onnxruntime_initialises_is_130_not_missing_onnx(box):
    done = box.run(FAULT_AT="import:onnxruntime", FAULT_SIGNAL="INT")
    assert box.fault_log.exists()
    assert done.returncode == 130, done.stderr
    assert "not installed" not in done.stderr


# -- defect 4: stale temp files -----------------------------------------------------------------

def _stale(path: Path, size: int, age_s: float = 600) -> Path:
    path.write_bytes(b"\0" * size)
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_a_normal_start_removes_stale_temp_files_of_both_dirs_and_says_how_much(box):
    assert box.run().returncode == 0
    engine_tmp = _stale(box.engine_dir / f".{box.only_engine().name}.k1ll3d00.tmp", 1_500_000)
    onnx_tmp = _stale(box.models_dir / ".tinydyn_64_ds.onnx.k1ll3d00.tmp", 700_000)
    staging = box.models_dir / ".download-k1ll3d00"
    staging.mkdir()
    _stale(staging / "yolo11x.pt", 300_000)
    done = box.run()  # a warm start: the engine is reused
    assert done.returncode == 0 and "(reused" in done.stdout, done.stderr
    assert not engine_tmp.exists() and not onnx_tmp.exists() and not staging.exists()
    assert "removed 3 temp files left by an interrupted run, freed 2.5 MB" in done.stderr


def test_temp_files_newer_than_the_run_or_under_a_held_lock_are_kept(box):
    assert box.run().returncode == 0
    fresh = box.engine_dir / ".fresh.engine.l1ve0000.tmp"
    fresh.write_bytes(b"x")
    future = time.time() + 3600
    os.utime(fresh, (future, future))  # written after this run started: a live writer's
    stale = _stale(box.models_dir / ".other.onnx.d3ad0000.tmp", 10)
    from filelock import FileLock

    with FileLock(str(box.engine_dir / ".build.lock")):  # another process builds
        assert box.run().returncode == 0
        assert stale.exists()
    assert box.run().returncode == 0
    assert fresh.exists() and not stale.exists()


def test_config_temp_files_left_by_a_kill_are_removed_by_the_next_start(box):
    assert box.run().returncode == 0
    killed = box.run("--force", FAULT_AT="replace:labels.txt", FAULT_SIGNAL="KILL")
    assert killed.returncode == -9 and box.fault_log.exists()
    left = sorted(p.name.split(".")[1] for p in box.config_dir.glob(".*.tmp"))
    assert left == ["config_infer_auto_generated", "labels"]
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert box.leftovers() == []
    assert "removed 2 temp files left by an interrupted run" in done.stderr


def test_a_config_temp_file_that_its_writer_still_holds_is_kept(box):
    """A config-only rewrite (warm start) runs without the build lock; its writer holds an flock on
    each temp file until it is renamed, and the cleanup leaves such a file alone."""
    import fcntl

    assert box.run().returncode == 0
    live = _stale(box.config_dir / ".labels.txt.l1ve0000.tmp", 10)  # old, but its writer is alive
    with open(live, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert box.run().returncode == 0
        assert live.exists()
    assert box.run().returncode == 0
    assert not live.exists()


# -- defect 5: one unit on a full disk ----------------------------------------------------------

def test_disk_full_while_writing_the_sidecar_keeps_the_previous_unit(box):
    assert box.run().returncode == 0
    before = unit(box)
    done = box.run("--force", FAULT_AT="enospc:.tinydyn_*.json.*.tmp")
    assert done.returncode == 1
    assert one_line(done).startswith("error: cannot write") and "No space left" in one_line(done)
    assert unit(box) == before
    assert box.leftovers() == []
    assert box.run("--check").returncode == 0


def test_disk_full_in_config_dir_keeps_labels_and_engine_as_they_were(box):
    import onnx

    assert box.run().returncode == 0
    before = unit(box)
    model = onnx.load(str(box.onnx))  # other class names: labels.txt would change
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = json.dumps({0: "truck", 1: "van", 2: "cyclist"})
    onnx.save(model, str(box.onnx))
    done = box.run(FAULT_AT="enospc:.config_infer_auto_generated.txt.*.tmp")
    assert done.returncode == 1, done.stderr
    assert unit(box) == before
    assert not list(box.config_dir.glob(".*.tmp"))


# -- defect 2: damaged sidecar / config / directories: rebuilt or rewritten, one notice --------------

def _damage(box: EngineMachine, how: str) -> None:
    engine = box.only_engine()
    sidecar = engine.with_suffix(".json")
    config = box.config_dir / "config_infer_auto_generated.txt"
    if how == "sidecar-null":
        sidecar.write_text("null")
    elif how == "sidecar-int4":
        data = json.loads(sidecar.read_text())
        data["precision_built"] = "int4"
        sidecar.write_text(json.dumps(data))
    elif how == "sidecar-class-names":
        data = json.loads(sidecar.read_text())
        data["class_names"] = {"0": "car"}
        sidecar.write_text(json.dumps(data))
    elif how == "sidecar-dir":
        sidecar.unlink()
        sidecar.mkdir()
    elif how == "engine-dir":
        engine.unlink()
        engine.mkdir()
        (engine / "keep.txt").write_text("user data")
    elif how == "sidecar-size-1e999":  # json.loads gives inf: int(inf) raised OverflowError
        data = json.loads(sidecar.read_text())
        data["onnx"]["size"] = "@"
        sidecar.write_text(json.dumps(data).replace('"@"', "1e999"))
    elif how == "sidecar-onnx-path-newline":  # would inject keys into the config
        data = json.loads(sidecar.read_text())
        data["onnx"]["path"] = "/tmp/x\n[property]\nnet-scale-factor=1"
        sidecar.write_text(json.dumps(data))
    elif how in ("sidecar-fifo", "config-fifo", "labels-fifo"):  # a read would wait for a writer forever
        path = {"sidecar": sidecar, "config": config, "labels": box.config_dir / "labels.txt"}[how.split("-")[0]]
        path.unlink()
        os.mkfifo(path)
    elif how == "config-not-utf8":
        config.write_bytes(config.read_bytes() + b"\xff")
    elif how == "config-dir":
        config.unlink()
        config.mkdir()


@pytest.mark.parametrize("how", ["sidecar-null", "sidecar-int4", "sidecar-class-names", "sidecar-dir", "engine-dir",
                                 "config-not-utf8", "config-dir", "sidecar-size-1e999", "sidecar-onnx-path-newline",
                                 "sidecar-fifo", "config-fifo", "labels-fifo"])
def test_a_damaged_sidecar_config_or_directory_is_stale_and_the_start_recovers(box, how):
    assert box.run().returncode == 0
    _damage(box, how)
    check = box.run("--check", timeout=60)  # a regression on a FIFO hangs: fail instead
    assert check.returncode == 1 and len(check.stderr.strip().splitlines()) == 1, check.stderr
    done = box.run(timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert box.run("--check", timeout=60).returncode == 0
    assert box.mismatched() == [] and box.only_engine().is_file()
    if how == "engine-dir":
        moved = [p for p in box.engine_dir.iterdir() if ".moved-aside-" in p.name]
        assert len(moved) == 1 and (moved[0] / "keep.txt").read_text() == "user data"


# -- a FIFO anywhere the step reads a file is never opened (a read would wait forever) --------------

def test_a_fifo_at_the_timing_cache_does_not_hang_a_build(box):
    assert box.run().returncode == 0
    (cache,) = box.engine_dir.glob("timing-*.cache")
    cache.unlink()
    os.mkfifo(cache)
    done = box.run("--force", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "timing cache" in done.stderr and "cannot be read (a FIFO)" in done.stderr
    assert cache.is_file()  # the build's cache replaced it


def test_a_fifo_at_the_verified_engines_stamp_does_not_hang_the_healthcheck(box, tmp_path):
    assert box.run().returncode == 0
    os.mkfifo(tmp_path / f"auto_build_engine-{os.getuid()}-verified.json")  # $TMPDIR is shared by every uid
    assert box.run("--check", timeout=60).returncode == 0


def test_a_fifo_at_the_lock_owner_file_does_not_hang_a_waiting_start(box):
    from filelock import FileLock

    assert box.run().returncode == 0
    os.mkfifo(box.engine_dir / ".build.lock.owner")
    with FileLock(str(box.engine_dir / ".build.lock")):  # another process builds
        done = box.run("--force", timeout=60, BUILD_LOCK_TIMEOUT_S="1")
    assert done.returncode == 1 and "timed out after 1s" in one_line(done) and "holder unknown" in one_line(done)


# -- defect 6: the workspace is capped, from the env as from the flag ----------------------------

def test_workspace_env_larger_than_the_gpu_is_capped_with_a_notice(tmp_path):
    box = EngineMachine(tmp_path, gpu={**GPU_RTX_4090, "memory_total_mib": 6144, "memory_free_mib": 5000})
    done = box.run(WORKSPACE_MB="8192")
    assert done.returncode == 0, done.stderr
    assert "workspace capped from 8192 MB to the GPU's free 5000 MiB" in done.stderr
    assert box.sidecar_of(box.only_engine())["workspace_mb"] == 5000


# -- defect 8: an empty env twin is unset -------------------------------------------------------

def test_empty_env_twins_count_as_unset(box):
    assert box.run().returncode == 0
    done = box.run(PRECISION="", NUM_SOURCES=" ", WORKSPACE_MB="", MODEL="", MIN_BATCH="", GPU_ID="")
    assert done.returncode == 0 and "(reused" in done.stdout, done.stderr


# -- defect 10: --check --deep and the first check after a build ----------------------------------

def _flip_bytes_keep_stat(engine: Path) -> None:
    stat = engine.stat()
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(engine, "r+b") as handle:  # same inode and size
        handle.write(data)
    os.utime(engine, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_check_deep_finds_flipped_bytes_the_cheap_check_trusts(box):
    assert box.run().returncode == 0
    assert box.run("--check").returncode == 0  # the first check verified it and remembered that
    _flip_bytes_keep_stat(box.only_engine())
    assert box.run("--check").returncode == 0  # cheap: stat only
    deep = box.run("--check", "--deep")
    assert deep.returncode == 1
    assert one_line(deep) == "build needed: engine sha256 differs from the sidecar's (the file is damaged); rebuild with --force"
    rebuilt = box.run("--deep")
    assert rebuilt.returncode == 0 and "(built in" in rebuilt.stdout
    assert box.mismatched() == []


def test_the_first_check_after_a_build_verifies_the_sha256(box):
    assert box.run().returncode == 0
    _flip_bytes_keep_stat(box.only_engine())
    assert box.run("--check").returncode == 1


# -- defect 1: the located model file is what gets stamped ---------------------------------------

def test_a_bare_pt_in_a_standard_path_is_stamped_from_where_it_was_found(tmp_path, monkeypatch):
    models = tmp_path / "app-models"
    models.mkdir()
    (models / "yolo11x.pt").write_bytes(b"weights")
    monkeypatch.setattr(abe, "STANDARD_MODEL_PATHS", (str(models),))
    monkeypatch.chdir(tmp_path)
    options = abe.Options(pt=Path("yolo11x.pt"), models_dir=tmp_path / "elsewhere")
    found = abe.given_model_file(options)
    assert found == models / "yolo11x.pt"
    assert abe._stamp_or_none(found) is not None


@pytest.mark.skipif(not HAVE_EXPORT_STACK, reason="exports a model: needs torch and ultralytics")
def test_a_bare_model_yaml_is_stamped_from_ultralytics_cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = abe.Options(pt=Path("yolo11n.yaml"), models_dir=tmp_path / "models")
    found = abe.given_model_file(options)
    assert found is not None and found.is_file() and found.name == "yolo11.yaml"


@pytest.mark.skipif(not HAVE_EXPORT_STACK, reason="exports a model: needs torch and ultralytics")
def test_pt_yolo11n_yaml_builds_installs_and_is_reused(tmp_path):
    box = EngineMachine(tmp_path)
    argv = [sys.executable, str(ROOT / "auto_build_engine.py"), "--pt", "yolo11n.yaml", "--imgsz", "64",
            "--engine-dir", str(box.engine_dir), "--config-dir", str(box.config_dir), "--models-dir", str(box.models_dir)]
    first = subprocess.run(argv, capture_output=True, text=True, env=box.env, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "(built in" in first.stdout
    sidecar = box.sidecar_of(box.only_engine())
    assert sidecar["source"]["path"].endswith("yolo11.yaml")
    second = subprocess.run(argv, capture_output=True, text=True, env=box.env, cwd=tmp_path, timeout=300)
    assert second.returncode == 0 and "(reused" in second.stdout, second.stderr
    check = subprocess.run([*argv, "--check"], capture_output=True, text=True, env={**box.env, "TMPDIR": str(tmp_path)}, cwd=tmp_path, timeout=60)
    assert check.returncode == 0, check.stderr


@pytest.mark.skipif(not HAVE_EXPORT_STACK, reason="exports a model: needs torch and ultralytics")
def test_pt_bare_name_found_in_an_image_model_path_builds_installs_and_is_reused(tmp_path):
    """`--pt yolo11n.pt` that is not in the working directory but in one of the image's own model
    paths (/app/models: here a folder the runner puts in STANDARD_MODEL_PATHS) is the file the user
    named: trusted (docs/security.md), exported, built, stamped where it was found, then reused."""
    import torch
    from export_helpers import save_checkpoint
    from ultralytics.nn.tasks import DetectionModel

    box = EngineMachine(tmp_path)
    image_models = tmp_path / "image" / "app-models"
    torch.manual_seed(0)
    weights = save_checkpoint(DetectionModel("yolo11n.yaml", nc=3, verbose=False).eval(), image_models / "yolo11n.pt")
    runner = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import auto_build_engine as abe; "
              f"abe.STANDARD_MODEL_PATHS = ('.', {str(image_models)!r}); sys.exit(abe.main())")
    argv = [sys.executable, "-c", runner, "--pt", "yolo11n.pt", "--imgsz", "64",
            "--engine-dir", str(box.engine_dir), "--config-dir", str(box.config_dir), "--models-dir", str(box.models_dir)]
    env = {**box.env, "TMPDIR": str(tmp_path)}
    first = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "(built in" in first.stdout
    assert box.sidecar_of(box.only_engine())["source"]["path"] == str(weights.resolve())
    second = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert second.returncode == 0 and "(reused" in second.stdout, second.stderr
    check = subprocess.run([*argv, "--check"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert check.returncode == 0, check.stderr


# -- defect 7: ultralytics names with mixed key types ---------------------------------------------

def test_names_metadata_with_mixed_key_types_builds_with_the_names_in_order(box):
    import onnx

    model = onnx.load(str(box.onnx))
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = "{0: 'car', '1': 'bus', 2: 'person'}"
    onnx.save(model, str(box.onnx))
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert (box.config_dir / "labels.txt").read_text() == "car\nbus\nperson\n"
    config = configparser.ConfigParser()
    config.read(box.config_dir / "config_infer_auto_generated.txt")
    assert config["property"]["num-detected-classes"] == "3"


# -- defect 9: a zip-bomb .pt is refused before loading -----------------------------------------------

def test_a_zip_bomb_pt_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as entry:
            chunk = b"\0" * (1 << 24)
            for _ in range(20):  # 320 MiB declared, ~0.3 MiB on disk
                entry.write(chunk)
    loaded = []
    fake_tasks = types.ModuleType("ultralytics.nn.tasks")
    fake_tasks.DetectionModel = object
    fake_tasks.guess_model_task = lambda cfg: "detect"
    fake_tasks.load_checkpoint = lambda path: loaded.append(path) or (_ for _ in ()).throw(RuntimeError("loaded"))
    for name, module in (("ultralytics", types.ModuleType("ultralytics")), ("ultralytics.nn", types.ModuleType("ultralytics.nn")), ("ultralytics.nn.tasks", fake_tasks)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(abe, "_import_torch_stack", lambda: None)
    exporter = abe.YOLOExporter(abe.Options(pt=bomb, models_dir=tmp_path))
    with pytest.raises(abe.ToolError) as error:
        exporter.load_detection_model(bomb)
    assert error.value.exit_code == 2
    assert re.search(r"declares 320 MiB of data in \d+\.\d MiB \(a zip bomb", str(error.value))
    assert loaded == []
