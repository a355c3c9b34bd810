"""Issue 15: the engine checked against the ONNX before it is trusted; the first-start timeline.

The fake TensorRT computes its output from the ONNX through onnxruntime (tests/fakes/_tensorrt_template.py,
_compute), optionally perturbed (FAKE_TRT_PERTURB), so the comparison below meets real numbers: a
random-weight yolo11n (ultralytics' yaml, weights re-drawn so boxes and scores depend on the image)
exported at 320 px, and ultralytics' bus.jpg letterboxed as the reference image.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import auto_build_engine as abe
from engine_env import SCRIPT, EngineMachine
from tests.fakes.fake_pycuda import install_fake_pycuda

pytest.importorskip("torch")
pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")

IMGSZ = 320
PROFILE = ("--min-batch", "1", "--opt-batch", "2", "--max-batch", "4")


def lively_checkpoint(path: Path) -> Path:
    """yolo11n from its yaml with weights re-drawn (export_helpers.enliven) and the DFL kept an
    arange(16) projection, so boxes are object-sized and scores spread over ~0.2..0.6."""
    import torch
    from export_helpers import enliven, image_batch, save_checkpoint
    from ultralytics.nn.modules.block import DFL
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(cfg="yolo11n.yaml", verbose=False)
    enliven(model, 0, calibration=image_batch(IMGSZ, batch=2, seed=100))  # batch-norm statistics at the test size: cheaper
    for module in model.modules():
        if isinstance(module, DFL):
            module.conv.weight.data[:] = torch.arange(16, dtype=torch.float32).view(1, 16, 1, 1)
    return save_checkpoint(model.eval(), path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> abe.OnnxModel:
    work = tmp_path_factory.mktemp("engine_check")
    weights = lively_checkpoint(work / "weights" / "lively.pt")
    options = abe.Options(pt=weights, imgsz=IMGSZ, models_dir=work / "models", engine_dir=work / "e", config_dir=work / "c",
                          min_batch=1, opt_batch=2, max_batch=4)
    return abe.YOLOExporter(options).resolve()


class CheckMachine(EngineMachine):
    """A fake RTX 4090 with the fake TensorRT 10.9 and the fake pycuda, building the exported yolo11n."""

    def __init__(self, tmp: Path, onnx: Path) -> None:
        super().__init__(tmp)
        install_fake_pycuda(self.site)
        self.onnx = onnx

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, str(SCRIPT), "--onnx", str(self.onnx), "--imgsz", str(IMGSZ), *PROFILE,
                "--engine-dir", str(self.engine_dir), "--config-dir", str(self.config_dir),
                "--models-dir", str(self.models_dir), *extra]


@pytest.fixture
def box(tmp_path, exported) -> CheckMachine:
    return CheckMachine(tmp_path, Path(exported.path))


def error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


# -- the reference ------------------------------------------------------------------------------

def test_reference_is_bus_jpg_at_batch_1_with_real_boxes(exported):
    reference = exported.reference
    assert reference is not None and reference.image_name == "bus.jpg"
    assert reference.image.shape == (3, IMGSZ, IMGSZ) and reference.rows.shape == (2100, 6)
    # letterboxed: bus.jpg is portrait, so grey (114) columns left and right
    assert np.allclose(reference.image[:, :, 0], 114 / 255) and not np.allclose(reference.image[:, IMGSZ // 2, IMGSZ // 2], 114 / 255)
    assert len(reference.detections) >= 20  # enough boxes for the comparison to mean something
    assert reference.settings.num_classes == 80


def test_quick_validation_runs_batch_1_only_and_full_keeps_min_opt_max(exported, capsys):
    options = abe.Options(imgsz=IMGSZ, min_batch=1, opt_batch=2, max_batch=4)
    abe.YOLOExporter(options).validate(Path(exported.path))
    quick = capsys.readouterr().err
    assert "onnxruntime batch 1 on bus.jpg" in quick and "batch 2" not in quick and "batch 4" not in quick
    reference = abe.YOLOExporter(abe.Options(imgsz=IMGSZ, min_batch=1, opt_batch=2, max_batch=4, validate="full")).validate(Path(exported.path))
    full = capsys.readouterr().err
    assert "onnxruntime batch 1,2,4 on bus.jpg" in full
    assert len(reference.detections) == len(exported.reference.detections)


def test_validate_flag_and_env():
    assert abe.parse_options([], environ={}).validate == "quick"
    assert abe.parse_options(["--validate", "full"], environ={}).validate == "full"
    assert abe.parse_options([], environ={"VALIDATE": "full"}).validate == "full"
    with pytest.raises(abe.ToolError, match="--validate"):
        abe.parse_options(["--validate", "all"], environ={})


# -- the comparison itself (no engine) ------------------------------------------------------------

def test_comparison_of_equal_outputs_passes_and_names_the_figures(exported):
    reference = exported.reference
    rows = reference.rows
    check = abe.check_engine_outputs(reference, {1: rows[None], 2: np.stack([rows, rows])})
    count = len(reference.detections)
    assert check.ok, check.line
    assert f"{count}/{count} boxes matched in every slot, min IoU 1.000, max score diff 0.000" in check.line


@pytest.mark.parametrize("change, figure", [
    ("drop", "missing"),
    ("shift", "min IoU"),
    ("score", "max score diff"),
])
def test_comparison_fails_on_a_dropped_shifted_or_rescored_box(exported, change, figure):
    reference = exported.reference
    rows = reference.rows.copy()
    top = reference.detections[0]
    if change == "drop":
        rows[top.anchor, 4] = 0.0
        overlap = abe._iou(top.box, np.clip(rows[:, :4], 0, IMGSZ)) > 0.3
        rows[overlap, 4] = 0.0
    elif change == "shift":
        rows[:, :4] += 5.0
    else:
        rows[top.anchor, 4] += 0.2
    check = abe.check_engine_outputs(reference, {1: rows[None]})
    assert not check.ok
    assert "MISMATCH at batch 1 slot 0 vs ONNX" in check.line and figure in check.line, check.line


def test_fp16_sized_noise_passes(exported):
    """Scores moved by 0.01 (FP16-sized) and boxes by 0.5 px: boxes cross the threshold or swap NMS
    order, yet each one is still found at its anchor, so the engine passes."""
    reference = exported.reference
    rng = np.random.default_rng(0)
    rows = reference.rows.copy()
    rows[:, 4] += rng.uniform(-0.01, 0.01, len(rows)).astype(np.float32)
    rows[:, :4] += rng.uniform(-0.5, 0.5, (len(rows), 4)).astype(np.float32)
    check = abe.check_engine_outputs(reference, {1: rows[None], 2: np.stack([rows, rows])})
    assert check.ok, check.line


def test_slots_that_differ_fail_and_name_the_slot(exported):
    rows = exported.reference.rows
    other = rows.copy()
    other[:, :4] += 5.0
    check = abe.check_engine_outputs(exported.reference, {1: rows[None], 4: np.stack([rows, rows, other, rows])})
    assert not check.ok and "batch 4 slot 2" in check.line, check.line


def test_slots_that_each_pass_against_the_onnx_but_differ_from_each_other_fail(exported):
    """Scores +0.02 in slot 0 and -0.02 in slot 1: each within the FP16 budget of the ONNX (0.05), but
    the same image in one batch must give the same boxes, and these differ by 0.04."""
    rows = exported.reference.rows
    up, down = rows.copy(), rows.copy()
    up[:, 4] += 0.02
    down[:, 4] -= 0.02
    check = abe.check_engine_outputs(exported.reference, {2: np.stack([up, down])})
    assert not check.ok and "batch 2 slot 1 vs slot 0 (same image)" in check.line, check.line
    assert "max score diff 0.0400 > 0.001" in check.line, check.line


def test_float_noise_between_slots_passes(exported):
    """Slots that differ by float noise (scores 2e-4, boxes 0.02 px) are identical for the check."""
    rng = np.random.default_rng(1)
    rows = exported.reference.rows
    noisy = rows.copy()
    noisy[:, 4] += rng.uniform(-2e-4, 2e-4, len(rows)).astype(np.float32)
    noisy[:, :4] += rng.uniform(-0.02, 0.02, (len(rows), 4)).astype(np.float32)
    check = abe.check_engine_outputs(exported.reference, {2: np.stack([rows, noisy])})
    assert check.ok and "slots identical" in check.line, check.line


def test_decode_matches_the_parser_rules():
    settings = abe.DecodeSettings(imgsz=100, num_classes=2, threshold=0.25, nms_iou=0.45)
    rows = np.array([
        [10, 10, 50, 50, 0.9, 0],    # kept
        [12, 12, 52, 52, 0.8, 0],    # same class, IoU 0.82 -> suppressed
        [12, 12, 52, 52, 0.7, 1],    # other class -> kept (per-class NMS)
        [60, 60, 60.5, 90, 0.9, 0],  # thinner than 1 px -> dropped
        [60, 60, 90, 90, 0.2, 0],    # below the threshold
        [60, 60, 130, 90, 0.5, 0],   # clamped to 100 px
        [0, 0, 10, 10, 0.9, 2],      # class id out of range
    ], dtype=np.float32)
    found = abe.decode_detections(rows, settings)
    assert [(d.anchor, d.class_id) for d in found] == [(0, 0), (2, 1), (5, 0)]
    assert found[2].box == (60.0, 60.0, 100.0, 90.0)


# -- the engine, end to end with the fakes ------------------------------------------------------

def test_engine_equal_to_the_onnx_passes_with_one_line_of_figures_and_a_timeline(box):
    done = box.run()
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("engine vs ONNX")]
    assert len(lines) == 1 and "on bus.jpg at batch 1,2,4:" in lines[0] and "min IoU 1.000, max score diff 0.000" in lines[0], done.stderr
    assert "smoke test passed at batch 1, 2, 4" in done.stderr
    sidecar = box.sidecar_of(box.only_engine())
    assert sidecar["engine_check"]["ok"] is True and sidecar["engine_check"]["batches"] == [1, 2, 4]
    assert sidecar["precision_built"] == "fp16" and sidecar["precision_fallback"] is None
    phases = [entry["phase"] for entry in sidecar["timeline"]]
    for name in ("find/download", "validate", "build", "smoke/compare", "config", "total"):
        assert name in phases, phases
    timeline = [line for line in done.stdout.splitlines() if line.startswith("Timeline")]
    assert len(timeline) == 1 and "smoke/compare" in timeline[0] and "total" in timeline[0], done.stdout
    # the warm start says nothing of it and stays cheap
    again = box.run()
    assert again.returncode == 0 and "Timeline" not in again.stdout and "engine vs ONNX" not in again.stderr


@pytest.mark.parametrize("perturb, figure", [
    ("drop", "missing"),
    ("shift:5", "min IoU"),
    ("drop@1", "batch 2 slot 1"),
    ("score:0.03@1", "batch 2 slot 1 vs slot 0"),  # within 0.05 of the ONNX, yet not the same as slot 0
])
def test_engine_that_differs_fails_with_the_figures(box, perturb, figure):
    done = box.run("--precision", "fp32", FAKE_TRT_PERTURB=perturb)
    assert done.returncode == abe.EXIT_BUILD_FAILED, done.stderr
    line = error_line(done)
    assert "detections differ from the ONNX" in line and "MISMATCH at batch" in line and figure in line, line
    assert box.engines() == [] and "Traceback" not in done.stderr


def test_fp16_mismatch_rebuilds_in_fp32_with_a_notice_and_records_it(box):
    done = box.run(FAKE_TRT_PERTURB="shift:5", FAKE_TRT_PERTURB_ONLY="fp16")
    assert done.returncode == 0, done.stderr
    notices = [line for line in done.stderr.splitlines() if "rebuilding in FP32" in line]
    assert len(notices) == 1 and notices[0].startswith("notice: the FP16 engine's detections differed") and "min IoU" in notices[0]
    engine = box.only_engine()
    sidecar = box.sidecar_of(engine)
    assert sidecar["precision_built"] == "fp32" and box.plan_header(engine)["precision"] == "fp32"
    assert "min IoU" in sidecar["precision_fallback"] and sidecar["engine_check"]["ok"] is True
    assert "build fp32 (fallback)" in [entry["phase"] for entry in sidecar["timeline"]]
    assert "network-mode=0" in (box.config_dir / abe.CONFIG_FILE_NAME).read_text()
    # the key still says fp16 (what auto resolved to), so the next start reuses the FP32 engine
    again = box.run(FAKE_TRT_PERTURB="shift:5", FAKE_TRT_PERTURB_ONLY="fp16")
    assert again.returncode == 0 and "reused" in again.stdout, again.stdout + again.stderr


def test_explicit_fp16_is_refused_with_the_figures_instead_of_falling_back(box):
    done = box.run("--precision", "fp16", FAKE_TRT_PERTURB="shift:5", FAKE_TRT_PERTURB_ONLY="fp16")
    assert done.returncode == abe.EXIT_BUILD_FAILED, done.stderr
    line = error_line(done)
    assert "FP16 engine's detections differ from the ONNX" in line and "min IoU" in line and "--precision auto" in line, line
    assert "rebuilding in FP32" not in done.stderr and box.engines() == []


def test_without_pycuda_the_sidecar_says_the_comparison_did_not_run(tmp_path, exported):
    machine = CheckMachine(tmp_path, Path(exported.path))
    (machine.site / "pycuda").rename(machine.site / "pycuda-off")
    (machine.site / "pycuda.py").write_text("raise ImportError('No module named pycuda')\n")
    done = machine.run()
    assert done.returncode == 0, done.stderr
    sidecar = machine.sidecar_of(machine.only_engine())
    assert sidecar["engine_check"] == {"ok": None, "line": "not run: pycuda is not installed"}


def test_first_start_from_a_yaml_has_an_export_phase_and_the_phases_add_up_to_the_total(tmp_path):
    """The other tests start from --onnx: here the model is exported (yolo11n.yaml at 64 px, cheap)."""
    machine = EngineMachine(tmp_path)
    argv = [sys.executable, str(SCRIPT), "--pt", "yolo11n.yaml", "--imgsz", "64", "--engine-dir", str(machine.engine_dir),
            "--config-dir", str(machine.config_dir), "--models-dir", str(machine.models_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, env=machine.env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    timeline = machine.sidecar_of(machine.only_engine())["timeline"]
    phases = [entry["phase"] for entry in timeline]
    assert phases[:3] == ["find/download", "export", "validate"] and phases[-1] == "total", phases
    seconds = {entry["phase"]: entry["seconds"] for entry in timeline}
    assert seconds["export"] > 0
    # a phase excludes the phases inside it (the export runs inside find/download): no time counted twice
    assert sum(seconds[name] for name in phases[:-1]) <= seconds["total"] + 0.005 * len(phases), timeline


def test_dry_run_prints_the_timeline(tmp_path, exported):
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--onnx", str(exported.path), "--imgsz", str(IMGSZ),
                           "--models-dir", str(tmp_path / "m"), "--engine-dir", str(tmp_path / "e"), "--config-dir", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    timeline = [line for line in done.stdout.splitlines() if line.startswith("Timeline")]
    assert len(timeline) == 1 and "validate" in timeline[0], done.stdout


def test_sidecar_without_the_new_fields_still_reads(tmp_path):
    from helpers import RTX4090, make_sidecar

    plan = abe.plan_engine(abe.Options(engine_dir=tmp_path), RTX4090, "10.9.0.34")
    data = make_sidecar(plan, "fp16", ["a"], tmp_path / "x.onnx").as_json()
    for name in ("engine_check", "precision_fallback", "timeline"):
        data.pop(name)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    assert abe.Sidecar.read(path).timeline == []


def test_class_ties_are_tolerated_but_not_for_many_boxes_and_not_with_a_score_change():
    settings = abe.DecodeSettings(imgsz=640, num_classes=3, threshold=0.25)
    rows = np.array([[10 + 40 * i, 10, 40 + 40 * i, 40, 0.5, 0] for i in range(12)], dtype=np.float32)
    tie = rows.copy()
    tie[0, 5] = 1  # argmax flipped between two classes scored alike: same box, same score
    result = abe.compare_detections(rows, tie, settings)
    assert result.ok and result.class_ties == 1 and result.class_changes == 0 and "1 class ties" in result.figures()
    many = rows.copy()
    many[:3, 5] = 1  # 3 of 12 boxes: more than 10%
    assert not abe.compare_detections(rows, many, settings).ok
    changed = tie.copy()
    changed[0, 4] = 0.9
    result = abe.compare_detections(rows, changed, settings)
    assert not result.ok and result.class_changes == 1 and "max score diff 0.400 > 0.05" in result.figures()


def test_without_the_asset_a_fixed_synthetic_scene_is_used_with_a_notice(capsys):
    image, name = abe.letterbox_image(None, 64)
    again, _ = abe.letterbox_image(None, 64)
    assert name == "synthetic scene" and image.shape == (3, 64, 64) and np.array_equal(image, again)
    assert len(np.unique(image.reshape(3, -1), axis=1).T) >= 4  # grey and three coloured blocks
    assert "synthetic test scene" in capsys.readouterr().err


def test_letterbox_matches_ultralytics():
    from ultralytics.data.augment import LetterBox
    import cv2

    path = abe.reference_image_path()
    ours, _ = abe.letterbox_image(path, IMGSZ)
    theirs = LetterBox((IMGSZ, IMGSZ), auto=False, scaleup=True)(image=cv2.imread(str(path)))
    assert np.array_equal(ours, np.ascontiguousarray(theirs[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0)
