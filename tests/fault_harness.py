"""Fault injection for the engine step (issue 12): real processes, real signals, fake TensorRT.

A `sitecustomize.py` in the fake site dir (first on PYTHONPATH of the tool's process only) wraps
`os.replace` and `os.fsync`: when the file named by FAULT_AT is renamed or made durable, the
process sends FAULT_SIGNAL to itself (or, FAULT_TARGET=parent, to the entrypoint shell that runs
it). That hits the narrow windows (temp ONNX written, temp engine written, engine renamed, sidecar
renamed, config renamed) every time; a random-moment kill during the build covers the rest.

Each try is: one faulted run, then a normal start that must succeed, then the invariants:
  - the faulted run exited 130 (SIGINT) / 143 (SIGTERM) / was killed (SIGKILL), never 0, and
    through the entrypoint the app never started;
  - after the normal start: no temp file left in ENGINE_DIR, MODELS_DIR or CONFIG_DIR, and every engine has
    a sidecar that describes it (sha256); the benchmark also runs `--check --deep` (must be 0).
Used by tests/test_faults.py (>= 30 tries) and benchmarks/bench_faults.py (>= 200 tries).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine_env import IMGSZ, ROOT, EngineMachine, kill_group, write_tiny_onnx
from helpers import read_stderr_until, this_python_as

SITECUSTOMIZE = r'''
import fnmatch, os, signal, sys
_at = os.environ.get("FAULT_AT", "")
if _at and "auto_build_engine" in " ".join(getattr(sys, "orig_argv", [])):
    _phase, _, _pattern = _at.partition(":")
    _sig = getattr(signal, "SIG" + os.environ.get("FAULT_SIGNAL", "KILL"))
    _target = os.getppid() if os.environ.get("FAULT_TARGET") == "parent" else os.getpid()
    _fired = []

    def _fire(name):
        if not _fired and fnmatch.fnmatch(os.path.basename(name), _pattern):
            _fired.append(name)
            with open(os.environ["FAULT_LOG"], "a") as log:
                log.write(name + "\n")
            os.kill(_target, _sig)

    if _phase == "replace":
        _replace = os.replace

        def replace(src, dst, *args, **kwargs):
            _fire(os.fsdecode(dst))
            return _replace(src, dst, *args, **kwargs)

        os.replace = replace
    elif _phase in ("fsync", "enospc"):
        _fsync = os.fsync

        def fsync(fd):
            try:
                name = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                name = ""
            if _phase == "enospc":  # the disk is full when this file is made durable
                if fnmatch.fnmatch(os.path.basename(name), _pattern):
                    import errno
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return _fsync(fd)
            result = _fsync(fd)
            _fire(name)
            return result

        os.fsync = fsync
    elif _phase == "import":
        class _InterruptedImport:
            """The signal arrives while a C extension initialises: numpy's import_array() (which
            onnxruntime runs) turns the KeyboardInterrupt into an ImportError."""

            def find_spec(self, name, path=None, target=None):
                if name == _pattern and not _fired:
                    try:
                        _fire(name)
                        import time
                        time.sleep(0.05)
                    except KeyboardInterrupt:
                        raise ImportError("initialization failed") from None
                return None

        sys.meta_path.insert(0, _InterruptedImport())
'''

# (phase:pattern, what it hits); the ONNX points need an adapted copy to be written (see FaultBox)
FAULT_POINTS = (
    ("fsync:.tinydyn_64_ds.onnx.*.tmp", "ONNX temp written"),
    ("replace:tinydyn_64_ds.onnx", "ONNX rename"),
    ("fsync:.*.engine.*.tmp", "engine temp written"),
    ("replace:*.engine", "engine rename"),
    ("replace:tinydyn_*.json", "sidecar rename"),
    ("replace:timing-*.cache", "timing cache rename"),
    ("replace:labels.txt", "labels rename"),
    ("replace:config_infer_auto_generated.txt", "config rename"),
    ("random", "random moment of the build"),
)
SIGNALS = ("KILL", "TERM", "INT")
EXPECTED = {"KILL": {-9, 137}, "TERM": {143}, "INT": {130}}


def write_dynamic_hw_onnx(path: Path) -> Path:
    """The tiny DeepStream-layout graph with dynamic H/W: the tool writes a fixed-size copy (an export)."""
    import onnx

    write_tiny_onnx(path)
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for index, name in ((2, "height"), (3, "width")):
        dims[index].Clear()
        dims[index].dim_param = name
    onnx.save(model, str(path))
    return path


class FaultBox(EngineMachine):
    """An EngineMachine whose ONNX sits in MODELS_DIR with dynamic H/W, so every cold start writes
    MODELS_DIR/tinydyn_64_ds.onnx (the export step), plus the fault hook and an entrypoint APP_DIR."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.onnx = write_dynamic_hw_onnx(self.models_dir / "tinydyn.onnx")
        (self.site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.fault_log = tmp / "fault.log"
        self.env["FAULT_LOG"] = str(self.fault_log)
        self.app_dir = tmp / "app"
        self.app_dir.mkdir()
        (self.app_dir / "auto_build_engine.py").symlink_to(ROOT / "auto_build_engine.py")
        self.app_marker = tmp / "app-started"
        (self.app_dir / "main_low_latency.py").write_text(
            f"import pathlib\npathlib.Path({str(self.app_marker)!r}).write_text('started')\n")
        this_python_as(self.tmp / "bin" / "python3")

    def adapted_onnx(self) -> Path:
        return self.models_dir / f"tinydyn_{IMGSZ}_ds.onnx"

    def entrypoint(self, **env: str) -> subprocess.Popen:
        """entrypoint.sh with the real builder (env twins instead of flags), app = a marker writer."""
        full = {**self.env, "PATH": f"{self.tmp / 'bin'}:/usr/bin:/bin", "APP_DIR": str(self.app_dir),
                "ONNX_PATH": str(self.onnx), "IMGSZ": str(IMGSZ), "ENGINE_DIR": str(self.engine_dir),
                "CONFIG_DIR": str(self.config_dir), "MODELS_DIR": str(self.models_dir), **env}
        return subprocess.Popen(["bash", str(ROOT / "entrypoint.sh")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=full, cwd=self.tmp, start_new_session=True)

    def leftovers(self) -> list[Path]:
        found = []
        for directory in (self.engine_dir, self.models_dir, self.config_dir):
            if directory.is_dir():
                found += [p for p in directory.iterdir() if (p.name.startswith(".") and p.name.endswith(".tmp")) or p.name.startswith(".download-")]
        return sorted(found)

    def mismatched(self) -> list[str]:
        bad = []
        for engine in self.engines():
            sidecar = engine.with_suffix(".json")
            if not sidecar.exists():
                continue  # not valid, and the tool treats it so
            if not self.pair_is_consistent(engine):
                bad.append(engine.name)
        return bad


@dataclass
class Try:
    index: int
    point: str
    signal: str
    via: str  # "tool" or "entrypoint"
    warm: bool  # an engine existed before (the fault hits a --force rebuild)
    fired: bool = False
    code: int | None = None
    app_started: bool = False
    restart_code: int | None = None
    check_code: int | None = None
    leftovers: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_try(box: FaultBox, index: int, point: str, sig: str, via: str, warm: bool, rng: random.Random, deep_check: bool = False) -> Try:
    started = time.monotonic()
    result = Try(index, point, sig, via, warm)
    missed = False  # a random moment that came after the run had ended: nothing was signalled
    box.fault_log.unlink(missing_ok=True)
    box.app_marker.unlink(missing_ok=True)
    if not warm:  # cold: no engine, no adapted ONNX, no config
        for path in [*box.engine_dir.glob("*"), *box.config_dir.glob("*"), box.adapted_onnx()]:
            if path.is_file() and path.name != ".build.lock":
                path.unlink()
    elif not box.engines():
        done = box.run()
        if done.returncode != 0:
            result.problems.append(f"setup build failed: {done.stderr.strip()[-200:]}")
            return result
    if point.startswith(("fsync:.tinydyn", "replace:tinydyn_64")):
        box.adapted_onnx().unlink(missing_ok=True)  # so the export step writes it again
    env = {} if point == "random" else {"FAULT_AT": point, "FAULT_SIGNAL": sig}
    extra = () if not warm else ("--force",)
    if point == "random":
        env["FAKE_TRT_BUILD_SECONDS"] = "0.6"
    if via == "entrypoint":
        if point != "random" and sig != "KILL":
            env["FAULT_TARGET"] = "parent"  # docker stop: the signal goes to the entrypoint shell
        process = box.entrypoint(**env) if not warm else _entrypoint_forced(box, env)
    else:
        process = box.start(*extra, **env)
    if point == "random":
        read_stderr_until(process, "engine ")  # the step has begun (Python is up, the script runs)
        time.sleep(rng.uniform(0.0, 0.9))
        missed = process.poll() is not None  # a fast machine: the run ended before the moment came
        if not missed and sig == "KILL":
            kill_group(process)
        elif not missed:
            os.kill(process.pid, getattr(signal, "SIG" + sig))
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        kill_group(process)
        out, err = process.communicate()
        result.problems.append("faulted run hung")
    result.code = process.returncode
    reached_app = point == "random" and via == "entrypoint" and "engine: step took" in out
    if reached_app:
        # the entrypoint saw no signal during the step (it would exit 130/143): it came after the
        # exec, to the app stub (its traceback, if the signal broke its imports, is not the step's)
        missed = True
    result.fired = (point == "random" and not missed) or box.fault_log.exists()
    result.app_started = box.app_marker.exists()
    if result.code == 0 and result.fired:
        result.problems.append("signalled run exited 0")
    elif result.fired and result.code not in EXPECTED[sig]:
        result.problems.append(f"signalled run exited {result.code}, expected {sorted(EXPECTED[sig])}: {err.strip()[-300:]}")
    if result.fired and result.app_started:
        result.problems.append("the app started after a signal")
    if "Traceback" in err and not reached_app:
        result.problems.append("traceback: " + err[err.index("Traceback"):][-300:])
    if not result.fired and point != "random":
        result.problems.append(f"fault point {point} was never reached (code {result.code})")
    restart = box.run()
    result.restart_code = restart.returncode
    if restart.returncode != 0:
        result.problems.append(f"the start after the fault failed ({restart.returncode}): {restart.stderr.strip()[-300:]}")
    if deep_check:
        result.check_code = box.run("--check", "--deep").returncode
        if result.check_code != 0:
            result.problems.append(f"--check --deep after the restart is {result.check_code}")
    result.leftovers = [p.name for p in box.leftovers()]
    if result.leftovers:
        result.problems.append(f"left behind: {result.leftovers}")
    result.mismatched = box.mismatched()
    if result.mismatched:
        result.problems.append(f"engine without its sidecar's sha256: {result.mismatched}")
    result.seconds = time.monotonic() - started
    return result


def _entrypoint_forced(box: FaultBox, env: dict[str, str]) -> subprocess.Popen:
    """A warm try through the entrypoint: drop the sidecar so the step rebuilds (the entrypoint has no --force)."""
    for sidecar in box.engine_dir.glob("tinydyn_*.json"):
        sidecar.unlink()
    return box.entrypoint(**env)


def plan_tries(count: int, seed: int) -> list[tuple[str, str, str, bool]]:
    """Every point x signal combination in turn (shuffled), a third through the entrypoint."""
    rng = random.Random(seed)
    combos = [(point, sig) for point, _ in FAULT_POINTS for sig in SIGNALS]
    plan = []
    while len(plan) < count:
        rng.shuffle(combos)
        for point, sig in combos:
            if len(plan) == count:
                break
            plan.append((point, sig, "entrypoint" if len(plan) % 3 == 2 else "tool", rng.random() < 0.5))
    return plan


def run_tries(tmp: Path, count: int, seed: int = 12, deep_check: bool = False) -> list[Try]:
    """`deep_check`: after each restart also `--check --deep` (the benchmark does; CI saves the time)."""
    box = FaultBox(tmp)
    box.env["TMPDIR"] = str(tmp)
    rng = random.Random(seed + 1)
    return [run_try(box, index, point, sig, via, warm, rng, deep_check) for index, (point, sig, via, warm) in enumerate(plan_tries(count, seed))]


def summary(tries: list[Try]) -> dict:
    return {
        "tries": len(tries),
        "survived": sum(1 for t in tries if not t.problems),
        "left_behind": sum(len(t.leftovers) for t in tries),
        "mismatched_pairs": sum(len(t.mismatched) for t in tries),
        "app_started_after_signal": sum(1 for t in tries if t.fired and t.app_started),
        "exit_codes": {sig: sorted({t.code for t in tries if t.signal == sig and t.fired and t.code is not None}) for sig in SIGNALS},
        "missed": sum(1 for t in tries if t.point == "random" and not t.fired),
        "by_point": {point: sum(1 for t in tries if t.point == point) for point, _ in FAULT_POINTS},
        "through_entrypoint": sum(1 for t in tries if t.via == "entrypoint"),
        "seconds_per_try": round(sum(t.seconds for t in tries) / max(1, len(tries)), 2),
    }


if __name__ == "__main__":
    import tempfile

    print(json.dumps(summary(run_tries(Path(tempfile.mkdtemp()), int(sys.argv[1]) if len(sys.argv) > 1 else 10)), indent=2))
