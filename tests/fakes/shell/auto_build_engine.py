#!/usr/bin/env python3
"""Stub of auto_build_engine.py (ensure mode) for tests/test_shell.py.

Records each call as one JSON line in $STUB_CALLS: argv, pid, ppid and the contract's variables
as received. Exits with $STUB_BUILD_RC (default 0; on failure one line on stderr, like the real
one). Reports "reused" when the marker file $STUB_MARKER exists, else "built" and creates it.
With $STUB_BUILD_SLEEP it waits that long, and a SIGTERM makes it record "sigterm" and exit 143.
"""
import json
import os
import signal
import sys
import time

VARS = ("MODEL", "PT_PATH", "ONNX_PATH", "IMGSZ", "MIN_BATCH", "OPT_BATCH", "MAX_BATCH", "PRECISION",
        "WORKSPACE_MB", "ENGINE_DIR", "MODELS_DIR", "CONFIG_DIR", "GPU_ID", "NUM_SOURCES",
        "APP_DIR", "DS_ROOT", "DS_VERSION", "CUDA_VER", "LD_LIBRARY_PATH", "GST_PLUGIN_PATH")


def record(event):
    with open(os.environ["STUB_CALLS"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": event, "argv": sys.argv[1:], "pid": os.getpid(),
                            "ppid": os.getppid(), "env": {k: os.environ.get(k) for k in VARS}}) + "\n")


def on_term(signum, frame):
    record("sigterm")
    print("auto_build_engine: interrupted", file=sys.stderr)
    sys.exit(143)


def main():
    sleep = float(os.environ.get("STUB_BUILD_SLEEP", "0"))
    if sleep:
        signal.signal(signal.SIGTERM, on_term)   # before "start" is recorded: no race in the test
    record("start")
    if sleep:
        time.sleep(sleep)
    print("GPU: Stub GPU (sm_89), driver 570.00, CUDA 12.8")
    print("TensorRT: 10.9.0.34 | DeepStream: 8.0")
    rc = int(os.environ.get("STUB_BUILD_RC", "0"))
    if rc:
        print(f"auto_build_engine: error: stub failure {rc}", file=sys.stderr)
        return rc
    marker = os.environ["STUB_MARKER"]
    if os.path.exists(marker):
        print(f"engine: {marker} reused")
    else:
        with open(marker, "w", encoding="utf-8") as f:
            f.write("engine\n")
        print(f"engine: {marker} built in 0.0 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
