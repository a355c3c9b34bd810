#!/usr/bin/env python3
"""Stub of auto_build_engine.py (ensure mode) for tests/test_shell.py.

Records each call as one JSON line in $STUB_CALLS: argv, pid, ppid and the contract's variables
as received. Exits with $STUB_BUILD_RC (default 0; on failure one line on stderr, like the real
one). Reports "reused" when the marker file $STUB_MARKER exists, else "built" and creates it.
With $STUB_BUILD_SLEEP it waits that long, and a SIGTERM makes it record "sigterm" and exit 143,
also when it lands inside the real tool's check (which turns it into exit 143 itself);
$STUB_SIGTERM_IN_CHECK=1 sends that SIGTERM from inside the check, to pin that case.

The variables are validated by the real tool in $STUB_TOOL_DIR (its `--check-env`, the same rules
as its ensure mode): `--check-env` records "check-env" and does only that; ensure mode validates
first and, on a bad value, exits 2 with the real tool's one line (event "refused", nothing built).
"""
import importlib.util
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


def real_check_env():
    """Exit code of the real tool's --check-env (it prints its own line on stderr)."""
    path = os.path.join(os.environ["STUB_TOOL_DIR"], "auto_build_engine.py")
    spec = importlib.util.spec_from_file_location("real_auto_build_engine", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    if os.environ.get("STUB_SIGTERM_IN_CHECK") == "1":
        parse_options = module.parse_options

        def terminated_while_parsing(argv):
            os.kill(os.getpid(), signal.SIGTERM)  # delivered here, under the real tool's handlers
            return parse_options(argv)

        module.parse_options = terminated_while_parsing
    return module.main(["--check-env"])


def main():
    if sys.argv[1:] == ["--check-env"]:
        record("check-env")
        return real_check_env()
    sleep = float(os.environ.get("STUB_BUILD_SLEEP", "0"))
    if sleep:
        signal.signal(signal.SIGTERM, on_term)   # before "start" is recorded: no race in the test
    record("start")
    rc = real_check_env()
    if rc in (130, 143):  # the signal landed inside the real tool's check: it exited as interrupted
        record("sigterm")
        return rc
    if rc:
        record("refused")
        return rc
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
