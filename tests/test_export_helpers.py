"""Tests of the test helpers themselves (tests/export_helpers.py): the random-weight model must stay
a realistic detector, or the ONNX/PyTorch parity tests compare boxes nobody would ever see."""
from __future__ import annotations

import pytest

from export_helpers import enliven


@pytest.mark.slow
def test_enliven_leaves_the_dfl_decoder_alone() -> None:
    import torch
    from ultralytics.nn.modules.block import DFL
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(cfg="yolo11n.yaml", verbose=False)
    (dfl,) = [m for m in model.modules() if isinstance(m, DFL)]
    learned = model.model[0].conv.weight.detach().clone()
    enliven(model, seed=0)
    # the integral conv still turns distributions into distances 0..15
    assert torch.equal(dfl.conv.weight.flatten(), torch.arange(dfl.c1, dtype=torch.float))
    # ... while the learned layers were re-drawn
    assert not torch.equal(model.model[0].conv.weight, learned)


@pytest.mark.slow
def test_random_model_gives_boxes_of_realistic_size() -> None:
    import numpy as np
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from export_helpers import image_batch

    torch.manual_seed(0)
    model = enliven(DetectionModel(cfg="yolo11n.yaml", verbose=False), seed=0)
    with torch.no_grad():
        raw = model(torch.from_numpy(image_batch(320, batch=2)))
    raw = raw[0] if isinstance(raw, (tuple, list)) else raw
    wh = raw[:, 2:4, :].numpy()  # centre-xywh rows: width and height of every anchor's box
    # with arange(16) the expected side distance is several strides: far above the parser's 1 px
    assert np.median(wh) >= 8.0
