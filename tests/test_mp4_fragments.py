"""The file sink's fallback, run for real in GStreamer: with the app's qtmux properties, an MP4 whose
pipeline is killed (no EOS ever reaches qtmux) still plays up to its last fragment; a plain qtmux file
does not. This matters because no published pyservicemaker call is documented to send an EOS before
it tears the pipeline down (see end_stream() in main_low_latency.py).

Needs gst-launch-1.0 with qtmux and jpegenc (Debian: gstreamer1.0-tools gstreamer1.0-plugins-good);
the frames are read back with OpenCV's FFmpeg. Skipped, with the reason, where those are missing.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "fakes"
sys.path.insert(0, str(REPO))

import main_low_latency as app  # noqa: E402

GST_LAUNCH = shutil.which("gst-launch-1.0")
pytestmark = pytest.mark.skipif(GST_LAUNCH is None, reason="gst-launch-1.0 not installed "
                                "(apt-get install gstreamer1.0-tools gstreamer1.0-plugins-good)")


def app_muxer_properties(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The qtmux properties main_low_latency.py sets for --sink file (built against the fake)."""
    import importlib

    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delenv("USE_NEW_NVSTREAMMUX", raising=False)
    for name in ("pyservicemaker", "fake_pyservicemaker"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    sm = importlib.import_module("pyservicemaker")
    engine = tmp / "e.engine"
    engine.write_bytes(b"plan")
    cfg = tmp / "cfg.txt"
    cfg.write_text(f"[property]\nmodel-engine-file={engine}\nbatch-size=1\ninfer-dims=3;640;640\n")
    clip = tmp / "clip.mp4"
    clip.write_bytes(b"\0")
    plan = app.make_plan(["--source", str(clip), "--config", str(cfg), "--sink", "file",
                          "--output", str(tmp / "out.mp4")], {})
    graph = importlib.import_module("fake_pyservicemaker").graph_of(app.build_pipeline(plan, sm))
    muxer = graph.elements["muxer"]
    assert muxer.factory == "qtmux"
    return muxer.props


def record_then_kill(path: Path, muxer_props: dict[str, Any], min_bytes: int = 400_000) -> None:
    """A live 30 fps MJPEG stream into qtmux, SIGKILLed once the file has grown (no EOS)."""
    props = [f"{k}={v}" for k, v in muxer_props.items()]
    proc = subprocess.Popen(
        [GST_LAUNCH, "-q", "videotestsrc", "is-live=true", "!",
         "video/x-raw,width=320,height=240,framerate=30/1", "!", "jpegenc", "!", "qtmux", *props,
         "!", "filesink", f"location={path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and path.stat().st_size >= min_bytes:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert path.stat().st_size >= min_bytes, "the recording did not grow in 60 s"
        time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def frames_in(path: Path) -> int:
    cv2 = pytest.importorskip("cv2")
    capture = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, _ = capture.read()
        if not ok:
            return count
        count += 1


def test_killed_recording_plays_up_to_its_last_fragment(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    props = app_muxer_properties(tmp_path, monkeypatch)
    assert props == {"fragment-duration": app.MP4_FRAGMENT_MS}
    probe = subprocess.run([GST_LAUNCH, "-q", "videotestsrc", "num-buffers=1", "!", "jpegenc", "!",
                            "qtmux", "!", "fakesink"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"qtmux/jpegenc missing: {probe.stderr.decode().strip()[:200]}")

    fragmented, plain = tmp_path / "fragmented.mp4", tmp_path / "plain.mp4"
    record_then_kill(fragmented, props)
    record_then_kill(plain, {})
    # the control: without fragments a killed qtmux leaves no index (moov), nothing plays
    assert frames_in(plain) == 0
    # with the app's setting, at least the completed 1 s fragments play (30 frames each)
    assert frames_in(fragmented) >= 30
