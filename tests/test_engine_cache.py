"""EngineBuilder and the engine cache, end to end against fake TensorRT 8.6.1 / 10.9.0.34 / 11.4.0.106."""
from __future__ import annotations

import configparser
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from engine_env import IMGSZ, EngineMachine, kill_group, write_tiny_onnx
from helpers import read_stderr_until
from tests.fakes.fake_tensorrt import TRT_RELEASES, missing_names, name_in_release, read_access_log
from tests.fakes.gpus import GPU_RTX_3060, GPU_RTX_4090

HEAVY = ("tensorrt", "torch", "ultralytics", "onnx", "onnxruntime")


@pytest.fixture
def box(tmp_path):
    return EngineMachine(tmp_path)


def built(done: subprocess.CompletedProcess) -> bool:
    assert done.returncode == 0, done.stderr
    return "(built in" in done.stdout


def reused(done: subprocess.CompletedProcess) -> bool:
    assert done.returncode == 0, done.stderr
    return "(reused" in done.stdout


# -- one build code for three TensorRT releases ------------------------------------------------

@pytest.mark.parametrize("release", TRT_RELEASES)
def test_build_succeeds_on_every_release(tmp_path, release):
    box = EngineMachine(tmp_path, trt_version=release)
    assert built(box.run())
    engine = box.only_engine()
    assert engine.name == f"tiny_{IMGSZ}_b16_{'fp32' if release.startswith('11') else 'fp16'}_sm89-rtx4090_trt{release}.engine"
    header = box.plan_header(engine)
    assert header["profiles"][0]["input"] == {"min": [1, 3, IMGSZ, IMGSZ], "opt": [4, 3, IMGSZ, IMGSZ], "max": [16, 3, IMGSZ, IMGSZ]}


@pytest.mark.parametrize("release", TRT_RELEASES)
def test_every_tensorrt_name_touched_exists_in_that_release(tmp_path, release):
    box = EngineMachine(tmp_path, trt_version=release)
    assert built(box.run())
    touched, probed_absent = read_access_log(box.access_log)
    assert touched, "the access log is empty: the fake did not record anything"
    assert missing_names(touched, release) == []
    # names probed with hasattr and found absent really are absent from that release's bindings
    for name in probed_absent:
        if "." not in name:
            assert not name_in_release(name, release), name
    # ... and the probe is not vacuous: IProgressMonitor (TensorRT 10+) is probed and missing on
    # 8.6, and found and used on 10/11 (a builder that stopped probing would fail here)
    if release.startswith("8."):
        assert "IProgressMonitor" in probed_absent and "IProgressMonitor" not in touched
    else:
        assert "IProgressMonitor" in touched and "IProgressMonitor" not in probed_absent


def test_explicit_batch_flag_only_below_tensorrt_10(tmp_path):
    for release in TRT_RELEASES:
        box = EngineMachine(tmp_path / release, trt_version=release)
        assert built(box.run())
        touched, _ = read_access_log(box.access_log)
        assert any(name.endswith("EXPLICIT_BATCH") for name in touched) is release.startswith("8.")


def test_fp16_flag_is_set_where_tensorrt_has_it(tmp_path):
    box = EngineMachine(tmp_path, trt_version="10.9.0.34")
    assert built(box.run())
    engine = box.only_engine()
    assert box.plan_header(engine)["fp16"] is True
    assert box.sidecar_of(engine)["precision_built"] == "fp16"


def test_tensorrt_11_without_modelopt_builds_fp32_and_says_so(tmp_path):
    box = EngineMachine(tmp_path, trt_version="11.4.0.106")
    done = box.run()
    assert built(done)
    engine = box.only_engine()
    assert box.sidecar_of(engine)["precision_built"] == "fp32"
    assert box.plan_header(engine)["fp16"] is False
    assert "nvidia-modelopt" in done.stdout + done.stderr
    config = configparser.ConfigParser()
    config.read(box.config_dir / "config_infer_auto_generated.txt")
    assert config["property"]["network-mode"] == "0"


def test_slow_fp16_gpu_gets_fp32_on_auto(tmp_path):
    box = EngineMachine(tmp_path, gpu={"name": "NVIDIA GeForce GTX 1080", "compute_cap": "6.1", "memory_total_mib": 8192})
    assert built(box.run())
    assert box.sidecar_of(box.only_engine())["precision_built"] == "fp32"


# -- reuse and staleness ------------------------------------------------------------------------

def test_unchanged_inputs_reuse_the_engine(box):
    assert built(box.run())
    engine = box.only_engine()
    stamp = engine.stat().st_mtime_ns
    assert reused(box.run())
    assert engine.stat().st_mtime_ns == stamp


def test_other_compute_capability_builds_its_own_engine(box):
    assert built(box.run())
    box.use_gpu(GPU_RTX_3060)
    assert built(box.run())
    assert [e.name.split("_sm")[1] for e in box.engines()] == ["86-rtx3060_trt10.9.0.34.engine", "89-rtx4090_trt10.9.0.34.engine"]
    config = configparser.ConfigParser()
    config.read(box.config_dir / "config_infer_auto_generated.txt")
    assert "sm86-rtx3060" in config["property"]["model-engine-file"]


def test_other_tensorrt_version_rebuilds(box):
    assert built(box.run())
    box.use_tensorrt("8.6.1")
    assert built(box.run())


def test_changed_onnx_rebuilds(box):
    assert built(box.run())
    write_tiny_onnx(box.onnx, scale=2.0)
    assert built(box.run())


def test_changed_profile_rebuilds(box):
    assert built(box.run())
    assert built(box.run("--opt-batch", "8"))


def test_changed_precision_request_rebuilds(box):
    assert built(box.run())
    assert built(box.run("--precision", "fp16"))  # same resolved precision, other request
    assert built(box.run("--precision", "fp32"))


def test_truncated_engine_rebuilds(box):
    assert built(box.run())
    engine = box.only_engine()
    engine.write_bytes(engine.read_bytes()[:100])
    assert built(box.run())
    assert box.pair_is_consistent(engine)


def test_missing_sidecar_rebuilds(box):
    assert built(box.run())
    box.only_engine().with_suffix(".json").unlink()
    assert built(box.run())


def test_force_rebuilds_a_valid_engine(box):
    assert built(box.run())
    assert built(box.run("--force"))


# -- the warm path ------------------------------------------------------------------------------

WARM_PROBE = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("mode", [["--check"], []], ids=["check", "ensure"])
def test_warm_path_imports_no_heavy_module(box, mode):
    assert built(box.run())
    argv = box.argv(*mode)
    probe = WARM_PROBE.format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", probe, *argv[1:]], capture_output=True, text=True, env=box.env, cwd=box.tmp, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "HEAVY=\n" in done.stderr


def test_check_is_0_when_valid_and_1_when_a_build_is_needed(box):
    assert box.run("--check").returncode == 1
    assert not box.engine_dir.exists() or box.engines() == []
    assert built(box.run())
    assert box.run("--check").returncode == 0
    assert box.run("--check", "--max-batch", "8", "--opt-batch", "2").returncode == 1


def test_check_writes_nothing(box):
    assert built(box.run())
    before = {p: p.stat().st_mtime_ns for p in list(box.engine_dir.iterdir()) + list(box.config_dir.iterdir())}
    assert box.run("--check", "--num-sources", "4").returncode == 1  # config says batch-size 1
    after = {p: p.stat().st_mtime_ns for p in list(box.engine_dir.iterdir()) + list(box.config_dir.iterdir())}
    assert before == after


def test_config_is_rewritten_when_sources_change_without_a_rebuild(box):
    assert built(box.run())
    assert reused(box.run("--num-sources", "4"))
    config = configparser.ConfigParser()
    config.read(box.config_dir / "config_infer_auto_generated.txt")
    assert config["property"]["batch-size"] == "4"
    assert box.run("--check", "--num-sources", "4").returncode == 0


# -- timing cache, workspace, bad input ---------------------------------------------------------

def test_timing_cache_is_saved_and_loaded_by_the_next_build(box):
    assert built(box.run())
    (cache,) = box.engine_dir.glob("timing-sm89-trt10.9.0.34.cache")
    assert cache.stat().st_size > 0
    assert built(box.run("--force"))
    assert box.plan_header(box.only_engine())["timing_cache"]["used"] is True


def test_workspace_is_capped_to_free_memory_with_a_notice(tmp_path):
    box = EngineMachine(tmp_path, gpu={**GPU_RTX_4090, "memory_free_mib": 4000})
    done = box.run()
    assert built(done)
    assert "workspace capped from 8192 MB to the GPU's free 4000 MiB" in done.stderr
    assert box.sidecar_of(box.only_engine())["workspace_mb"] == 4000


def test_workspace_flag_larger_than_the_gpu_is_capped_too(box):
    # issue 12 defect 6: capped with a notice from the flag as from the env (was exit 2)
    done = box.run("--workspace", "100000")
    assert built(done)
    assert "workspace capped from 100000 MB to the GPU's free" in done.stderr


def test_imgsz_the_onnx_cannot_take_is_exit_2(box):
    done = box.run("--imgsz", "128")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) >= 1
    assert box.engines() == []


def test_read_only_engine_dir_is_exit_2(box):
    blocker = box.tmp / "not-a-dir"
    blocker.write_text("")
    box.engine_dir = blocker / "engines"
    done = box.run()
    assert done.returncode == 2
    assert "ENGINE_DIR" in done.stderr


def test_failed_build_keeps_the_old_engine(box):
    assert built(box.run())
    engine = box.only_engine()
    before = (engine.read_bytes(), engine.with_suffix(".json").read_text())
    done = box.run("--force", FAKE_TRT_FAIL_BUILD="1")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: TensorRT build failed")
    assert (engine.read_bytes(), engine.with_suffix(".json").read_text()) == before
    assert box.temp_files() == []
    assert box.run("--check").returncode == 0


def test_tensorrt_missing_is_exit_3(box):
    for path in box.site.glob("tensorrt*"):
        import shutil
        shutil.rmtree(path)
    done = box.run()
    assert done.returncode == 3
    assert done.stderr.strip() == "error: TensorRT not found; run inside the DeepStream image or pip install tensorrt"


# -- concurrency and signals --------------------------------------------------------------------

def test_four_processes_build_exactly_once(box):
    processes = [box.start(FAKE_TRT_BUILD_SECONDS="1.5") for _ in range(4)]
    outputs = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], [err for _, err in outputs]
    assert sum("(built in" in out for out, _ in outputs) == 1
    engines = {line.split()[1] for out, _ in outputs for line in out.splitlines() if line.startswith("Engine")}
    assert len(engines) == 1
    assert len(box.engines()) == 1


def test_waiting_process_says_who_holds_the_lock(box):
    first = box.start(FAKE_TRT_BUILD_SECONDS="5")  # the second start must begin within it, on a loaded CI too
    wait_for_line(first, "[build]")
    second = box.run()
    first.communicate(timeout=60)
    assert reused(second)
    assert "another process holds" in second.stderr and f"pid {first.pid}" in second.stderr


def wait_for_line(process: subprocess.Popen, needle: str, timeout: float = 60.0) -> str:
    """Read stderr until a line holds `needle`: the event we wait on instead of sleeping."""
    line, seen = read_stderr_until(process, needle, timeout)
    if line is None:
        raise AssertionError(f"{needle!r} never appeared; stderr so far: {seen}")
    return line


def test_sigterm_during_a_build_exits_143_and_leaves_no_temp_files(box):
    process = box.start(FAKE_TRT_BUILD_SECONDS="30")
    wait_for_line(process, "[build]")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert box.temp_files() == []
    assert box.engines() == []


def test_sigint_during_a_build_keeps_the_previous_engine(box):
    assert built(box.run())
    engine = box.only_engine()
    before = engine.read_bytes()
    process = box.start("--force", FAKE_TRT_BUILD_SECONDS="30")
    wait_for_line(process, "[build]")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    assert engine.read_bytes() == before
    assert box.run("--check").returncode == 0


def test_sigkill_at_random_moments_never_leaves_a_mismatched_pair(box):
    rng = random.Random(20261125)
    for round_ in range(10):
        process = box.start("--force", FAKE_TRT_BUILD_SECONDS="0.6")
        time.sleep(rng.uniform(0.0, 2.5))  # the random moment is the point of this test
        kill_group(process)
        process.communicate(timeout=60)
        for engine in box.engines():
            assert box.pair_is_consistent(engine), f"round {round_}: engine and sidecar disagree"
        after = box.run()
        assert after.returncode == 0, after.stderr
        assert box.run("--check").returncode == 0
        for engine in box.engines():
            assert box.pair_is_consistent(engine)


def test_lock_wait_times_out_with_exit_1_and_names_the_holder(box):
    holder = box.start(FAKE_TRT_BUILD_SECONDS="30")
    wait_for_line(holder, "[build]")
    try:
        done = box.run(BUILD_LOCK_TIMEOUT_S="0.5")
    finally:
        kill_group(holder, signal.SIGTERM)
        holder.communicate(timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: timed out after 0s waiting for") or last.startswith("error: timed out after 1s waiting for")
    assert f"pid {holder.pid}" in last and "BUILD_LOCK_TIMEOUT_S" in last


def test_a_timing_cache_from_another_tensorrt_is_replaced_with_a_notice(box):
    assert built(box.run())
    (cache,) = box.engine_dir.glob("timing-*.cache")
    box.use_tensorrt("8.6.1")
    other = box.engine_dir / "timing-sm89-trt8.6.1.cache"
    other.write_bytes(cache.read_bytes())  # a 10.9 cache under the 8.6 name
    done = box.run()
    assert built(done)
    assert "timing cache does not fit" in done.stderr


def test_tensorrt_11_builds_fp16_from_an_autocast_onnx_when_modelopt_is_installed(tmp_path):
    from tests.fakes.fake_modelopt import install_fake_modelopt

    box = EngineMachine(tmp_path, trt_version="11.4.0.106")
    install_fake_modelopt(box.site)
    done = box.run()
    assert built(done)
    engine = box.only_engine()
    assert "_fp16_" in engine.name
    header = box.plan_header(engine)
    assert header["precision"] == "fp16" and "float16" in header["onnx_types"]
    assert box.sidecar_of(engine)["precision_built"] == "fp16"
    assert (box.models_dir / "tiny.fp16.onnx").exists()  # next to the models, not next to the given ONNX
    touched, _ = read_access_log(box.access_log)
    assert not any(name.endswith("FP16") for name in touched)  # no weak-typing flag on 11.x
    config = configparser.ConfigParser()
    config.read(box.config_dir / "config_infer_auto_generated.txt")
    assert config["property"]["network-mode"] == "2"


# -- several GPUs in one machine (the real two-GPU run is issue 9; these use fakes) ---------------

def two_gpu_box(tmp_path) -> EngineMachine:
    from tests.fakes.fake_pynvml import install_fake_pynvml

    box = EngineMachine(tmp_path)
    install_fake_pynvml(box.site, [GPU_RTX_4090, GPU_RTX_3060])
    box.env["FAKE_TRT_CC"] = GPU_RTX_3060["compute_cap"]  # the fake device is the GPU we build for
    return box


def test_gpu_id_1_builds_for_that_gpu_and_writes_its_gpu_id(tmp_path):
    box = two_gpu_box(tmp_path)
    assert built(box.run("--gpu-id", "1"))
    assert "sm86-rtx3060" in box.only_engine().name
    assert box.sidecar_of(box.only_engine())["gpu"]["name"] == "NVIDIA GeForce RTX 3060"
    config = configparser.ConfigParser()
    config.read(box.config_dir / "config_infer_auto_generated.txt")
    assert config["property"]["gpu-id"] == "1"


def test_gpu_id_1_dry_run_plans_its_engine_and_config(tmp_path):
    box = two_gpu_box(tmp_path)
    done = box.run("--gpu-id", "1", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "tiny_64_b16_fp16_sm86-rtx3060_trt10.9.0.34.engine" in done.stdout
    assert "GPU 1" in done.stdout
    assert box.engines() == []


def test_gpu_id_out_of_range_on_two_gpus_is_exit_2(tmp_path):
    done = two_gpu_box(tmp_path).run("--gpu-id", "2", "--dry-run")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --gpu-id 2 is out of range: this machine has GPU indices 0..1"


def test_check_without_num_sources_accepts_the_configs_batch_size(box):
    # the entrypoint derived NUM_SOURCES=4 from SOURCES; the healthcheck runs without it
    assert built(box.run("--num-sources", "4"))
    assert box.run("--check").returncode == 0
    assert box.run("--check", "--num-sources", "2").returncode == 1


def test_a_rebuild_without_num_sources_keeps_the_configs_batch_size(box):
    assert built(box.run("--num-sources", "4"))
    assert built(box.run("--force"))
    config = configparser.ConfigParser()
    config.read(box.config_dir / "config_infer_auto_generated.txt")
    assert config["property"]["batch-size"] == "4"
