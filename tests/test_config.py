"""DeepStreamConfig: the nvinfer config says what the engine really is, in keys nvinfer knows."""
from __future__ import annotations

import configparser
import tempfile

import pytest

import auto_build_engine as abe
from helpers import RTX4090, make_sidecar, options_for
from nvinfer_keys import CLASS_ATTRS_KEYS, PROPERTY_KEYS

COCO = [f"class{i}" for i in range(80)]


def written_config(tmp_path, precision="fp16", num_sources=1, names=COCO, *extra):
    options = options_for(tmp_path, "--num-sources", str(num_sources), *extra)
    plan = abe.plan_engine(options, RTX4090, "10.9.0.34")
    sidecar = make_sidecar(plan, precision, names, tmp_path / "models" / "m.onnx")
    config = abe.DeepStreamConfig(options, plan, sidecar)
    config.write()
    parser = configparser.ConfigParser()
    parser.read(config.config_path)
    return parser, plan, sidecar, config


@pytest.mark.parametrize("precision,mode", [("fp16", "2"), ("fp32", "0")])
@pytest.mark.parametrize("num_sources", [1, 16])
@pytest.mark.parametrize("names", [["car", "bus", "person"], COCO], ids=["3cls", "80cls"])
def test_config_values_follow_the_sidecar(tmp_path, precision, mode, num_sources, names):
    parser, plan, sidecar, config = written_config(tmp_path, precision, num_sources, names)
    prop = parser["property"]
    assert prop["network-mode"] == mode
    assert prop["batch-size"] == str(num_sources)
    assert prop["model-engine-file"] == str(plan.engine_path)
    assert prop["onnx-file"] == sidecar.onnx.path
    assert prop["num-detected-classes"] == str(len(names))
    assert prop["infer-dims"] == "3;1280;1280"
    assert prop["labelfile-path"] == str(config.labels_path)
    assert prop["cluster-mode"] == "2"
    assert prop["parse-bbox-func-name"] == "NvDsInferParseYolo"
    assert prop["custom-lib-path"].endswith("nvdsinfer_yolo/libnvdsinfer_yolo.so")
    assert config.labels_path.read_text().splitlines() == names


def test_paths_in_config_are_absolute(tmp_path):
    parser, *_ = written_config(tmp_path)
    for key in ("model-engine-file", "onnx-file", "labelfile-path", "custom-lib-path"):
        assert parser["property"][key].startswith("/"), key


def test_every_written_key_is_a_real_nvinfer_key(tmp_path):
    parser, *_ = written_config(tmp_path)
    assert set(parser["property"]) <= PROPERTY_KEYS
    assert set(parser["class-attrs-all"]) <= CLASS_ATTRS_KEYS
    assert set(parser.sections()) == {"property", "class-attrs-all"}


def test_precision_comes_from_the_sidecar_not_the_request(tmp_path):
    # asked for FP16 (auto on a fast GPU) but the builder could only make FP32
    parser, plan, *_ = written_config(tmp_path, precision="fp32")
    assert plan.key.precision == "fp16"
    assert parser["property"]["network-mode"] == "0"


def test_thresholds_are_settable(tmp_path):
    parser, *_ = written_config(tmp_path, "fp16", 1, COCO, "--nms-iou-threshold", "0.6",
                                "--pre-cluster-threshold", "0.4", "--topk", "100")
    attrs = parser["class-attrs-all"]
    assert (attrs["nms-iou-threshold"], attrs["pre-cluster-threshold"], attrs["topk"]) == ("0.6", "0.4", "100")


def test_more_sources_than_the_engine_takes_is_exit_2(tmp_path):
    options = options_for(tmp_path, "--num-sources", "8", "--max-batch", "16")
    plan = abe.plan_engine(options, RTX4090, "10.9.0.34")
    small = abe.plan_engine(options_for(tmp_path, "--max-batch", "4", "--opt-batch", "2"), RTX4090, "10.9.0.34")
    sidecar = make_sidecar(small, "fp16", COCO, tmp_path / "m.onnx")
    with pytest.raises(abe.ToolError) as error:
        abe.DeepStreamConfig(options, plan, sidecar).write()
    assert error.value.exit_code == 2
    assert not (tmp_path / "configs" / abe.CONFIG_FILE_NAME).exists()


def test_config_is_current_until_the_engine_changes(tmp_path):
    _, plan, sidecar, config = written_config(tmp_path)
    assert config.is_current()
    rebuilt = make_sidecar(plan, "fp32", sidecar.class_names, tmp_path / "models" / "m.onnx")
    assert not abe.DeepStreamConfig(config.options, plan, rebuilt).is_current()


def test_unwritable_config_dir_is_exit_2_and_keeps_the_old_config(tmp_path, monkeypatch):
    _, plan, sidecar, config = written_config(tmp_path)
    before = config.config_path.read_text()
    changed = make_sidecar(plan, "fp32", sidecar.class_names, tmp_path / "models" / "m.onnx")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(abe.ToolError) as error:
        abe.DeepStreamConfig(config.options, plan, changed).write()
    assert error.value.exit_code == 2
    assert config.config_path.read_text() == before


@pytest.mark.parametrize("flag,value", [("--nms-iou-threshold", "1.5"), ("--pre-cluster-threshold", "-0.1"),
                                        ("--topk", "0"), ("--topk", "-3")])
def test_out_of_range_thresholds_are_refused(tmp_path, flag, value):
    with pytest.raises(abe.ToolError) as error:
        options_for(tmp_path, flag, value)
    assert error.value.exit_code == 2
    assert flag in str(error.value)
