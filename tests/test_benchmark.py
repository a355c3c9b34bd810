"""--benchmark and the post-build smoke test, against fake TensorRT and a fake pycuda."""
from __future__ import annotations

import json
import os

import pytest

import auto_build_engine as abe
from engine_env import IMGSZ, EngineMachine
from tests.fakes.fake_pycuda import install_fake_pycuda
from tests.fakes.fake_tensorrt import TRT_RELEASES
from tests.fakes.gpus import GPU_RTX_3060


@pytest.fixture
def box(tmp_path):
    machine = EngineMachine(tmp_path)
    install_fake_pycuda(machine.site)
    return machine


def listing(directory):
    return sorted((p.name, p.stat().st_mtime_ns) for p in directory.iterdir())


def test_smoke_test_runs_at_min_opt_max_when_pycuda_is_here(box):
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert "smoke test passed at batch 1, 4, 16" in done.stderr


def test_smoke_test_is_reported_as_skipped_without_pycuda(tmp_path):
    box = EngineMachine(tmp_path)
    (box.site / "pycuda.py").write_text("raise ImportError('No module named pycuda')\n")
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert "smoke test skipped: pycuda is not installed" in done.stderr


@pytest.mark.parametrize("release", TRT_RELEASES)
def test_benchmark_reports_every_batch_from_constant_event_times(box, release):
    box.use_tensorrt(release)
    assert box.run().returncode == 0
    done = box.run("--benchmark", "--batches", "1,4,16", "--seconds", "0.05", "--json", FAKE_CUDA_EVENT_MS="5")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["batch"] for r in report["results"]] == [1, 4, 16]
    for result in report["results"]:
        assert result["latency_median_ms"] == 5.0 and result["latency_p99_ms"] == 5.0
        assert result["images_per_s"] == pytest.approx(result["batch"] * 200.0)
        assert result["fps_per_camera"] == pytest.approx(200.0)
        assert result["iterations"] >= 1
    assert report["gpu"]["name"] == "NVIDIA GeForce RTX 4090"
    assert report["precision"] == ("fp32" if release.startswith("11.") else "fp16") and report["imgsz"] == IMGSZ
    assert report["tensorrt_version"] == release
    assert "engine_build_seconds" in report


def test_benchmark_table_has_the_seed_columns(box):
    assert box.run().returncode == 0
    done = box.run("--benchmark", "--batches", "1,16", "--seconds", "0.02", FAKE_CUDA_EVENT_MS="2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("batch"))
    for column in ("images/s", "FPS/camera", "latency median ms", "latency p99 ms", "GPU mem MiB"):
        assert column in header
    rows = [line for line in lines if line.strip().startswith(("1 |", "16 |"))]
    assert [row.split("|")[1].strip() for row in rows] == ["500.0", "8000.0"]
    assert "built in" in lines[-1]


def test_benchmark_default_batches_stay_inside_the_profile(box):
    assert box.run("--max-batch", "8").returncode == 0
    done = box.run("--max-batch", "8", "--benchmark", "--seconds", "0.01", "--json", FAKE_CUDA_EVENT_MS="1")
    assert [r["batch"] for r in json.loads(done.stdout)["results"]] == [1, 4, 8]


def test_benchmark_compares_with_trtexec_when_it_is_on_path(box):
    assert box.run().returncode == 0
    stub = box.tmp / "bin"
    (stub / "trtexec").write_text("#!/bin/sh\necho '[I] Throughput: 100.5 qps'\n"
                                  "echo '[I] Latency: min = 1.0 ms, max = 3.0 ms, mean = 2.0 ms, median = 1.5 ms, percentile(99%) = 2.9 ms'\n")
    (stub / "trtexec").chmod(0o755)
    done = box.run("--benchmark", "--batches", "4", "--seconds", "0.01", "--compare-trtexec", "--json",
                   FAKE_CUDA_EVENT_MS="1", PATH=f"{stub}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["trtexec_images_per_s"] == pytest.approx(402.0)
    assert result["trtexec_latency_median_ms"] == 1.5


@pytest.mark.parametrize("argv,code,needle", [
    (["--batches", "32"], 2, "outside the engine profile 1..16"),
    (["--batches", "0,4"], 2, "outside the engine profile"),
    (["--batches", "a,b"], 2, "not a comma-separated list"),
    (["--seconds", "0"], 2, "--seconds"),
    (["--seconds", "-1"], 2, "--seconds"),
])
def test_benchmark_bad_input_is_refused_and_writes_nothing(box, argv, code, needle):
    assert box.run().returncode == 0
    before = listing(box.engine_dir)
    done = box.run("--benchmark", *argv)
    assert done.returncode == code
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert listing(box.engine_dir) == before


def test_benchmark_without_an_engine_never_builds(box):
    done = box.run("--benchmark")
    assert done.returncode == 1
    assert "run without --benchmark first" in done.stderr
    assert not box.engine_dir.exists() or box.engines() == []


def test_benchmark_with_an_engine_from_another_gpu_is_exit_2(box):
    assert box.run().returncode == 0
    box.use_gpu(GPU_RTX_3060)
    done = box.run("--benchmark")
    assert done.returncode == 2
    assert "built for another GPU" in done.stderr
    assert len(box.engines()) == 1


def test_benchmark_without_a_gpu_is_exit_3(box):
    from tests.fakes.fake_pynvml import install_fake_pynvml

    assert box.run().returncode == 0
    install_fake_pynvml(box.site, None)
    done = box.run("--benchmark")
    assert done.returncode == 3


def test_median_and_p99_of_a_known_sequence():
    samples = [float(x) for x in range(1, 101)]  # 1..100 ms
    assert abe.median(samples) == 50.5
    assert abe.percentile(samples, 0.99) == 99.0
    assert abe.percentile([7.0], 0.99) == 7.0
    assert abe.median([3.0, 1.0, 2.0]) == 2.0
