"""Tests of the fakes themselves: they must behave like, and offer no more than, the real things."""
from __future__ import annotations

import csv
import importlib
import importlib.util
import io
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import FAKE_BIN, TRT_RELEASES
from tests.fakes.fake_pynvml import install_fake_pynvml
from tests.fakes.fake_tensorrt import (
    install_fake_tensorrt,
    missing_names,
    name_in_release,
    offered_names,
    read_access_log,
    read_plan_header,
)
from tests.fakes.gpus import GPU_H100, GPU_RTX_3060, GPU_RTX_4090

MONITOR_RELEASES = ["10.9.0.34", "11.4.0.106"]


# --------------------------------------------------------------------------- helpers
def make_onnx(path: Path | None = None, fp16: bool = False) -> bytes:
    """Tiny valid ONNX: input "input" [batch,3,64,64] -> output "output" [batch,10,6]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ftype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    npf = np.float16 if fp16 else np.float32
    weight = numpy_helper.from_array(np.ones((3, 60), dtype=npf), "w")
    shape = numpy_helper.from_array(np.array([-1, 10, 6], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", ftype, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("output", ftype, ["batch", 10, 6])],
        initializer=[weight, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if path is not None:
        path.write_bytes(data)
    return data


class CaptureLogger:
    """Factory for an ILogger subclass that keeps (severity name, message) pairs."""

    @staticmethod
    def make(trt):
        class _Capture(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.records: list[tuple[str, str]] = []

            def log(self, severity, msg: str) -> None:
                self.records.append((severity.name, msg))

        return _Capture()


def network_flags(trt) -> int:
    if trt.__version__.startswith("8."):
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def build(trt, logger, onnx_bytes: bytes, *, fp16: bool = False, monitor=None, cache=None,
          flags: int | None = None, profile: tuple = ((1, 3, 64, 64), (4, 3, 64, 64), (16, 3, 64, 64))):
    """Parse + build with one profile; returns (plan or None, config)."""
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt) if flags is None else flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_bytes), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if monitor is not None:
        config.progress_monitor = monitor
    if cache is not None:
        assert config.set_timing_cache(cache, False)
    prof = builder.create_optimization_profile()
    prof.set_shape("input", *profile)
    config.add_optimization_profile(prof)
    return builder.build_serialized_network(network, config), config


# --------------------------------------------------------------------------- tensorrt: names
@pytest.mark.parametrize("version", TRT_RELEASES)
def test_fake_trt_offers_only_names_of_the_release(use_fake_tensorrt, version):
    trt = use_fake_tensorrt(version)
    names = offered_names(trt)
    assert len(names) > 100
    assert missing_names(names, version) == []


@pytest.mark.parametrize("version", TRT_RELEASES)
def test_fake_trt_matches_readme_table(use_fake_tensorrt, version):
    trt = use_fake_tensorrt(version)
    major = int(version.split(".")[0])
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    assert hasattr(builder, "platform_has_fast_fp16") == (major < 11)
    assert hasattr(trt.BuilderFlag, "FP16") == (major < 11)
    assert hasattr(trt.BuilderFlag, "INT8") == (major < 11)
    assert hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") == (major < 11)
    assert hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") == (major >= 10)
    assert hasattr(trt, "IProgressMonitor") == (major >= 10)
    assert hasattr(builder.create_builder_config(), "progress_monitor") == (major >= 10)
    assert hasattr(builder, "build_serialized_network")
    # Legacy APIs are not offered at all (fewer than the real 8.6 is allowed, never more).
    assert not hasattr(builder, "build_engine")
    assert not hasattr(builder.create_builder_config(), "max_workspace_size")
    # The lists agree with the table for the names that are unambiguous under endswith.
    assert name_in_release("IProgressMonitor", version) == (major >= 10)
    assert name_in_release("platform_has_fast_fp16", version) == (major < 11)
    assert name_in_release("EXPLICIT_BATCH", version) == (major < 11)
    assert name_in_release("STRONGLY_TYPED", version) == (major >= 10)
    assert name_in_release("build_engine", version) == (major < 10)
    assert name_in_release("max_workspace_size", version) == (major < 10)
    assert name_in_release("get_binding_shape", version) == (major < 10)


def test_fake_trt_version_readable_without_import(fake_site):
    install_fake_tensorrt(fake_site, "10.9.0.34")
    code = ("import importlib.metadata as m, sys; print(m.version('tensorrt')); "
            "print('tensorrt' in sys.modules); import tensorrt; print(tensorrt.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(fake_site)}).stdout.split()
    assert out == ["10.9.0.34", "False", "10.9.0.34"]


# --------------------------------------------------------------------------- tensorrt: build/run
@pytest.mark.parametrize("version", TRT_RELEASES)
def test_fake_trt_full_build_deserialize_and_run(use_fake_tensorrt, version, monkeypatch):
    monkeypatch.setenv("FAKE_TRT_PLAN_BYTES", "2048")
    trt = use_fake_tensorrt(version)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(make_onnx())
    assert network.num_inputs == 1 and network.num_outputs == 1
    inp, out = network.get_input(0), network.get_output(0)
    assert (inp.name, tuple(inp.shape), inp.dtype) == ("input", (-1, 3, 64, 64), trt.DataType.FLOAT)
    assert (out.name, tuple(out.shape)) == ("output", (-1, 10, 6))

    plan, _ = build(trt, logger, make_onnx())
    assert plan is not None and plan.nbytes == len(bytes(plan))
    header = read_plan_header(bytes(plan))
    assert header["trt_version"] == version and header["compute_capability"] == "8.9"
    assert header["profiles"] == [{"input": {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64],
                                             "max": [16, 3, 64, 64]}}]
    assert header["workspace_bytes"] == 1 << 30 and header["padding_bytes"] == 2048
    assert header["version_bytes"] == ([int(p) for p in version.split(".")] + [0])[:4]

    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    assert engine is not None and engine.num_io_tensors == 2
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    assert names == ["input", "output"]
    assert engine.get_tensor_mode("input") == trt.TensorIOMode.INPUT
    assert engine.get_tensor_mode("output") == trt.TensorIOMode.OUTPUT
    assert engine.get_tensor_shape("output") == (-1, 10, 6)
    assert [tuple(d) for d in engine.get_tensor_profile_shape("input", 0)] == [
        (1, 3, 64, 64), (4, 3, 64, 64), (16, 3, 64, 64)]

    ctx = engine.create_execution_context()
    assert not ctx.set_input_shape("input", (32, 3, 64, 64))  # above the profile max
    assert ctx.set_input_shape("input", (4, 3, 64, 64))
    assert tuple(ctx.get_tensor_shape("output")) == (4, 10, 6)
    assert not ctx.execute_async_v3(0)  # addresses not set yet
    assert ctx.set_tensor_address("input", 0x1000) and ctx.set_tensor_address("output", 0x2000)
    assert ctx.execute_async_v3(0) is True


@pytest.mark.parametrize("version", TRT_RELEASES)
def test_fake_trt_parser_rejects_invalid_bytes(use_fake_tensorrt, version):
    trt = use_fake_tensorrt(version)
    logger = CaptureLogger.make(trt)
    network = trt.Builder(logger).create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(b"\x08\x07garbage-not-onnx\xff\xff") is False
    assert parser.num_errors >= 1 and parser.get_error(0).desc()
    assert any(sev == "ERROR" for sev, _ in logger.records)


def test_fake_trt_86_parser_needs_explicit_batch(use_fake_tensorrt):
    trt = use_fake_tensorrt("8.6.1")
    logger = CaptureLogger.make(trt)
    parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
    assert parser.parse(make_onnx()) is False
    assert "EXPLICIT_BATCH" in parser.get_error(0).desc()


@pytest.mark.parametrize("version", TRT_RELEASES)
def test_fake_trt_dynamic_input_without_profile_fails(use_fake_tensorrt, version):
    trt = use_fake_tensorrt(version)
    logger = CaptureLogger.make(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    assert trt.OnnxParser(network, logger).parse(make_onnx())
    assert builder.build_serialized_network(network, builder.create_builder_config()) is None
    assert any("optimization profile" in msg for _, msg in logger.records)


@pytest.mark.parametrize("version", TRT_RELEASES)
def test_fake_trt_profile_rejects_min_above_opt(use_fake_tensorrt, version):
    trt = use_fake_tensorrt(version)
    prof = trt.Builder(trt.Logger()).create_optimization_profile()
    with pytest.raises(RuntimeError):
        prof.set_shape("input", (8, 3, 64, 64), (4, 3, 64, 64), (16, 3, 64, 64))
    with pytest.raises(RuntimeError):
        prof.set_shape("input", (1, 3, 64, 64), (4, 3, 64), (16, 3, 64, 64))


@pytest.mark.parametrize("version", ["8.6.1", "10.9.0.34"])
def test_fake_trt_fp16_flag_recorded_in_plan(use_fake_tensorrt, version):
    trt = use_fake_tensorrt(version)
    logger = trt.Logger()
    plan, _ = build(trt, logger, make_onnx(), fp16=True)
    header = read_plan_header(bytes(plan))
    assert header["fp16"] is True and header["precision"] == "fp16" and "FP16" in header["flags"]
    plain, _ = build(trt, logger, make_onnx())
    assert read_plan_header(bytes(plain))["precision"] == "fp32"


def test_fake_trt_10_strongly_typed_rejects_fp16_flag(use_fake_tensorrt):
    trt = use_fake_tensorrt("10.9.0.34")
    logger = CaptureLogger.make(trt)
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    plan, _ = build(trt, logger, make_onnx(), fp16=True, flags=strongly)
    assert plan is None
    assert any("Strongly typed" in msg for _, msg in logger.records)


def test_fake_trt_11_precision_comes_from_onnx_types(use_fake_tensorrt):
    trt = use_fake_tensorrt("11.4.0.106")
    logger = trt.Logger()
    fp32 = read_plan_header(bytes(build(trt, logger, make_onnx())[0]))
    fp16 = read_plan_header(bytes(build(trt, logger, make_onnx(fp16=True))[0]))
    assert fp32["strongly_typed"] and fp32["precision"] == "fp32"
    assert fp16["strongly_typed"] and fp16["precision"] == "fp16" and fp16["fp16"] is False


def test_fake_trt_host_memory_is_buffer_only(use_fake_tensorrt, tmp_path):
    trt = use_fake_tensorrt("10.9.0.34")
    plan, _ = build(trt, trt.Logger(), make_onnx())
    assert bytes(plan)[:4] == b"ftrt" and memoryview(plan).nbytes == plan.nbytes
    (tmp_path / "m.engine").open("wb").write(plan)
    assert (tmp_path / "m.engine").read_bytes() == bytes(plan)
    with pytest.raises(TypeError):
        len(plan)
    with pytest.raises(TypeError):
        plan[:4]
    assert not hasattr(plan, "hex") and not hasattr(trt.IHostMemory, "decode")


def test_fake_trt_subclass_must_call_base_init(use_fake_tensorrt):
    trt = use_fake_tensorrt("10.9.0.34")

    class BadMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:  # forgets trt.IProgressMonitor.__init__(self)
            self.x = 1

    with pytest.raises(TypeError):
        BadMonitor()


# --------------------------------------------------------------------------- progress monitor
def make_monitor(trt, cancel_after: int | None = None):
    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.events: list[tuple] = []
            self.steps = 0

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.events.append(("start", phase_name, parent_phase, num_steps))

        def step_complete(self, phase_name, step):
            self.events.append(("step", phase_name, step))
            self.steps += 1
            return cancel_after is None or self.steps < cancel_after

        def phase_finish(self, phase_name):
            self.events.append(("finish", phase_name))

    return Monitor()


@pytest.mark.parametrize("version", MONITOR_RELEASES)
def test_fake_trt_progress_monitor_called(use_fake_tensorrt, version):
    trt = use_fake_tensorrt(version)
    monitor = make_monitor(trt)
    plan, _ = build(trt, trt.Logger(), make_onnx(), monitor=monitor)
    assert plan is not None
    starts = [e for e in monitor.events if e[0] == "start"]
    finishes = [e for e in monitor.events if e[0] == "finish"]
    assert len(starts) >= 3 and len(starts) == len(finishes)
    assert starts[0][2] is None and all(s[2] == starts[0][1] for s in starts[1:])
    for _, phase, _, n in starts:
        steps = [e[2] for e in monitor.events if e[0] == "step" and e[1] == phase]
        assert steps == list(range(n))


@pytest.mark.parametrize("version", MONITOR_RELEASES)
def test_fake_trt_progress_monitor_cancels_build(use_fake_tensorrt, version):
    trt = use_fake_tensorrt(version)
    monitor = make_monitor(trt, cancel_after=3)
    plan, _ = build(trt, trt.Logger(trt.Logger.ERROR), make_onnx(), monitor=monitor)
    assert plan is None
    assert monitor.steps == 3
    started = [e[1] for e in monitor.events if e[0] == "start"]
    finished = [e[1] for e in monitor.events if e[0] == "finish"]
    assert sorted(started) == sorted(finished)


def test_fake_trt_build_seconds_and_failure_knobs(use_fake_tensorrt, monkeypatch):
    trt = use_fake_tensorrt("10.9.0.34")
    monkeypatch.setenv("FAKE_TRT_BUILD_SECONDS", "0.3")
    t0 = time.monotonic()
    assert build(trt, trt.Logger(), make_onnx())[0] is not None
    assert time.monotonic() - t0 >= 0.3
    monkeypatch.setenv("FAKE_TRT_BUILD_SECONDS", "0")
    monkeypatch.setenv("FAKE_TRT_FAIL_BUILD", "1")
    logger = CaptureLogger.make(trt)
    assert build(trt, logger, make_onnx())[0] is None
    assert any(sev == "ERROR" for sev, _ in logger.records)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs pthread_sigmask")
@pytest.mark.parametrize("with_monitor", [False, True])
def test_fake_trt_python_signal_handlers_wait_like_a_real_build(use_fake_tensorrt, monkeypatch, with_monitor):
    """A Python handler runs only when control is back in Python: at a monitor callback or at the end."""
    trt = use_fake_tensorrt("10.9.0.34")
    monkeypatch.setenv("FAKE_TRT_BUILD_SECONDS", "0.6")
    seen: list[float] = []
    old = signal.signal(signal.SIGUSR1, lambda *_: seen.append(time.monotonic()))
    try:
        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
        t0 = time.monotonic()
        timer.start()
        plan, _ = build(trt, trt.Logger(), make_onnx(), monitor=make_monitor(trt) if with_monitor else None)
        t_end = time.monotonic()
        timer.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert plan is not None and len(seen) == 1
    if with_monitor:
        assert seen[0] - t0 < 0.4  # delivered at the next step callback
    else:
        assert seen[0] >= t_end - 0.05  # held until build_serialized_network returned


# --------------------------------------------------------------------------- timing cache
def test_fake_trt_timing_cache_round_trip(use_fake_tensorrt, monkeypatch):
    trt = use_fake_tensorrt("10.9.0.34")
    logger = CaptureLogger.make(trt)
    config = trt.Builder(logger).create_builder_config()
    cache = config.create_timing_cache(b"")
    plan, cfg = build(trt, logger, make_onnx(), cache=cache)
    assert read_plan_header(bytes(plan))["timing_cache"] == {"used": True, "hit": False}
    blob = bytes(cfg.get_timing_cache().serialize())

    reloaded = config.create_timing_cache(blob)
    assert reloaded is not None and bytes(reloaded.serialize()) == blob
    plan2, _ = build(trt, logger, make_onnx(), cache=reloaded)
    assert read_plan_header(bytes(plan2))["timing_cache"] == {"used": True, "hit": True}

    assert config.create_timing_cache(b"not a cache") is None
    monkeypatch.setenv("FAKE_TRT_CC", "9.0")
    other_device = config.create_timing_cache(blob)  # made on 8.9
    assert config.set_timing_cache(other_device, False) is False
    assert config.set_timing_cache(other_device, True) is True
    fresh = config.create_timing_cache(b"")
    assert fresh.combine(other_device, False) is False
    assert fresh.combine(other_device, True) is True


# --------------------------------------------------------------------------- deserialize failures
def test_fake_trt_deserialize_rejects_other_compute_capability(use_fake_tensorrt, monkeypatch):
    trt = use_fake_tensorrt("10.9.0.34")
    plan = bytes(build(trt, trt.Logger(), make_onnx())[0])
    monkeypatch.setenv("FAKE_TRT_CC", "8.6")
    logger = CaptureLogger.make(trt)
    assert trt.Runtime(logger).deserialize_cuda_engine(plan) is None
    assert any("expecting compute 8.6 got compute 8.9" in msg for _, msg in logger.records)


@pytest.mark.parametrize("version", TRT_RELEASES)
def test_fake_trt_deserialize_rejects_truncated_plan(use_fake_tensorrt, version):
    trt = use_fake_tensorrt(version)
    plan = bytes(build(trt, trt.Logger(), make_onnx())[0])
    runtime = trt.Runtime(CaptureLogger.make(trt))
    assert runtime.deserialize_cuda_engine(plan[:-100]) is None
    assert runtime.deserialize_cuda_engine(plan[:20]) is None
    assert runtime.deserialize_cuda_engine(b"") is None
    assert runtime.deserialize_cuda_engine(plan) is not None


def test_fake_trt_deserialize_rejects_other_version(use_fake_tensorrt):
    trt10 = use_fake_tensorrt("10.9.0.34")
    plan = bytes(build(trt10, trt10.Logger(), make_onnx())[0])
    trt11 = use_fake_tensorrt("11.4.0.106")
    assert trt11.__version__ == "11.4.0.106"
    logger = CaptureLogger.make(trt11)
    assert trt11.Runtime(logger).deserialize_cuda_engine(plan) is None
    assert any("Version tag does not match" in msg for _, msg in logger.records)


# --------------------------------------------------------------------------- access log
def test_fake_trt_access_log_lists_touched_names(use_fake_tensorrt, monkeypatch, tmp_path):
    log = tmp_path / "access.log"
    monkeypatch.setenv("FAKE_TRT_ACCESS_LOG", str(log))
    trt = use_fake_tensorrt("11.4.0.106")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    getattr(builder, "platform_has_fast_fp16", True)  # probe of an absent name
    build(trt, trt.Logger(), make_onnx())
    hits, misses = read_access_log(log)
    assert {"Builder", "Logger.WARNING", "Builder.create_network", "IBuilderConfig.set_memory_pool_limit",
            "MemoryPoolType.WORKSPACE", "IOptimizationProfile.set_shape"} <= hits
    assert "Builder.platform_has_fast_fp16" in misses
    assert missing_names(hits, "11.4.0.106") == []


# --------------------------------------------------------------------------- pynvml
def test_fake_pynvml_answers(use_fake_pynvml):
    nv = use_fake_pynvml([GPU_RTX_4090, GPU_H100], driver="580.95.05", cuda_driver=13000)
    with pytest.raises(nv.NVMLError_Uninitialized):
        nv.nvmlDeviceGetCount()
    nv.nvmlInit()
    assert nv.nvmlSystemGetDriverVersion() == "580.95.05"
    assert nv.nvmlSystemGetCudaDriverVersion_v2() == 13000 == nv.nvmlSystemGetCudaDriverVersion()
    assert nv.nvmlDeviceGetCount() == 2
    h = nv.nvmlDeviceGetHandleByIndex(1)
    assert nv.nvmlDeviceGetName(h) == "NVIDIA H100 80GB HBM3"
    assert nv.nvmlDeviceGetUUID(h).startswith("GPU-")
    assert nv.nvmlDeviceGetCudaComputeCapability(h) == (9, 0)
    mem = nv.nvmlDeviceGetMemoryInfo(h)
    assert mem.total == 81559 * 1024 * 1024 and mem.free + mem.used == mem.total
    with pytest.raises(nv.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetHandleByIndex(2)
    nv.nvmlShutdown()


def test_fake_pynvml_without_driver(use_fake_pynvml):
    nv = use_fake_pynvml(None)
    with pytest.raises(nv.NVMLError) as err:
        nv.nvmlInit()
    assert isinstance(err.value, nv.NVMLError_DriverNotLoaded)
    assert err.value.value == nv.NVML_ERROR_DRIVER_NOT_LOADED and str(err.value) == "Driver Not Loaded"


def test_fake_pynvml_names_exist_in_real_nvidia_ml_py(tmp_path, clean_modules):
    real = pytest.importorskip("pynvml")  # nvidia-ml-py (dev requirement)
    assert not str(getattr(real, "__file__", "")).startswith(str(tmp_path))
    install_fake_pynvml(tmp_path, [GPU_RTX_3060])
    spec = importlib.util.spec_from_file_location("fake_pynvml_under_test", tmp_path / "pynvml.py")
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    public = [n for n in dir(fake) if not n.startswith("_")]
    assert [n for n in public if not hasattr(real, n)] == []
    for n in public:
        if n.startswith("NVML_"):
            assert getattr(fake, n) == getattr(real, n), n
        if callable(getattr(fake, n)) and n.startswith("nvml"):
            assert callable(getattr(real, n)), n
    assert issubclass(fake.NVMLError_DriverNotLoaded, fake.NVMLError)


# --------------------------------------------------------------------------- nvidia-smi / nvcc stubs
QUERY = ["--query-gpu=index,name,uuid,memory.total,memory.free,compute_cap,driver_version",
         "--format=csv,noheader,nounits"]


def test_nvidia_smi_stub_query_parses(fake_gpus):
    fake_gpus([GPU_RTX_4090, GPU_RTX_3060], driver="580.95.05")
    out = subprocess.run(["nvidia-smi", *QUERY], capture_output=True, text=True, check=True).stdout
    rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(out))]
    assert [r[0] for r in rows] == ["0", "1"]
    assert rows[0][1] == "NVIDIA GeForce RTX 4090" and rows[0][2].startswith("GPU-")
    assert rows[0][3] == "24564" and int(rows[0][4]) < 24564
    assert (rows[1][5], rows[1][6]) == ("8.6", "580.95.05")


def test_nvidia_smi_stub_header_and_failure(fake_gpus):
    fake_gpus([GPU_H100], driver="580.95.05", cuda_driver=13000)
    out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=True).stdout
    assert "Driver Version: 580.95.05" in out and "CUDA Version: 13.0" in out
    fake_gpus([])
    res = subprocess.run(["nvidia-smi", *QUERY], capture_output=True, text=True)
    assert res.returncode == 9
    assert "couldn't communicate with the NVIDIA driver" in res.stdout


def test_nvcc_stub_version(monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_VERSION", "12.8.93")
    out = subprocess.run([str(FAKE_BIN / "nvcc"), "--version"], capture_output=True, text=True, check=True).stdout
    assert "Cuda compilation tools, release 12.8, V12.8.93" in out


def test_stub_executables_have_exec_bit():
    for name in ("nvidia-smi", "nvcc"):
        assert os.access(FAKE_BIN / name, os.X_OK), name


# --------------------------------------------------------------------------- pycuda
def test_fake_pycuda_event_sequence_gives_statistics(use_fake_pycuda, monkeypatch):
    monkeypatch.setenv("FAKE_CUDA_EVENT_MS", "2.0,4.0,6.0")
    monkeypatch.delenv("FAKE_GPUS_JSON", raising=False)
    use_fake_pycuda()
    import pycuda.autoinit  # noqa: F401
    import pycuda.driver as cuda

    stream = cuda.Stream()
    times = []
    for _ in range(6):
        start, end = cuda.Event(), cuda.Event()
        start.record(stream)
        end.record(stream)
        end.synchronize()
        times.append(start.time_till(end))
    assert times == [2.0, 4.0, 6.0, 2.0, 4.0, 6.0]
    assert statistics.mean(times) == 4.0 and statistics.median(times) == 4.0
    assert isinstance(stream.handle, int)


def test_fake_pycuda_memory_round_trip(use_fake_pycuda, fake_gpus):
    import numpy as np

    fake_gpus([GPU_RTX_3060])
    use_fake_pycuda()
    import pycuda.driver as cuda

    cuda.init()
    dev = cuda.Device(0)
    assert (dev.name(), dev.compute_capability()) == ("NVIDIA GeForce RTX 3060", (8, 6))
    ctx = dev.make_context()
    try:
        host = cuda.pagelocked_empty((2, 3), np.float32)
        host[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
        free0, total = cuda.mem_get_info()
        dptr = cuda.mem_alloc(host.nbytes)
        assert total == 12288 * 1024 * 1024 and cuda.mem_get_info()[0] == free0 - host.nbytes
        stream = cuda.Stream()
        cuda.memcpy_htod_async(dptr, host, stream)
        back = cuda.pagelocked_empty((2, 3), np.float32)
        cuda.memcpy_dtoh_async(back, dptr, stream)
        stream.synchronize()
        assert int(dptr) > 0 and np.array_equal(back, host)
    finally:
        ctx.pop()
    with pytest.raises(cuda.LogicError):
        cuda.mem_alloc(16)  # no current context


def test_fake_pycuda_without_gpu(use_fake_pycuda, fake_gpus):
    fake_gpus([])
    use_fake_pycuda()
    import pycuda.driver as cuda

    with pytest.raises(cuda.RuntimeError):
        cuda.init()
