#!/usr/bin/env python3
"""Fleet: time to ready of servers 2..N that pull the engine, against a local build.

Each "server" is a separate process of auto_build_engine.py with its own ENGINE_DIR, on the fake
GPU and fake TensorRT of tests/fakes; the fake builder takes --build-seconds (a real yolo11x FP16
build is minutes) and writes a plan of --engine-mb. The store is moto's S3 server on 127.0.0.1
(--store s3, the default) or a directory (--store file). Three runs, each from empty stores/dirs:

  local       one server, no store: the build every server pays today
  later       server 1 builds and publishes; then servers 2..N start together and pull
  together    all N start at once: one builds, N-1 wait for its sidecar and pull

Reported per run: wall time of each server process (python start to exit, i.e. ready to exec the
app), what each did (built/pulled), and the bytes moved through the store.

    python3 benchmarks/bench_fleet.py [--servers 4] [--build-seconds 20] [--engine-mb 64] [--store s3|file] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def what(done: subprocess.CompletedProcess) -> str:
    if done.returncode != 0:
        return f"failed ({done.returncode}): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"
    for word in ("built", "pulled", "reused"):
        if f"({word}" in done.stdout:
            return word
    return "?"


def run_servers(machines: list, env: dict[str, str]) -> list[dict]:
    """Start the servers together; wall seconds (start to exit) and outcome of each."""
    import threading

    began = time.monotonic()
    results: list[dict] = [{} for _ in machines]

    def wait(index: int, process: subprocess.Popen) -> None:
        out, err = process.communicate(timeout=3600)
        done = subprocess.CompletedProcess([], process.returncode, out, err)
        results[index] = {"seconds": round(time.monotonic() - began, 2), "what": what(done)}

    threads = [threading.Thread(target=wait, args=(i, m.start(**env))) for i, m in enumerate(machines)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def store_bytes(url: str, endpoint: str | None) -> dict[str, int]:
    from fleet_env import Store

    return {key: len(body) for key, body in Store(url, endpoint).objects().items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--build-seconds", type=float, default=20.0, help="the fake builder's build time")
    parser.add_argument("--engine-mb", type=float, default=64.0, help="size of the fake engine")
    parser.add_argument("--store", choices=("s3", "file"), default="s3")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from engine_env import EngineMachine
    from fleet_env import aws_env, moto_server, new_bucket

    fake = {"FAKE_TRT_BUILD_SECONDS": str(args.build_seconds), "FAKE_TRT_PLAN_BYTES": str(int(args.engine_mb * (1 << 20)))}
    report: dict = {"servers": args.servers, "build_seconds": args.build_seconds, "engine_mb": args.engine_mb, "store": args.store}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        with moto_server(tmp) if args.store == "s3" else _no_server() as endpoint:
            def store_env(run: str) -> tuple[str, dict[str, str]]:
                if endpoint:
                    url = f"s3://{new_bucket(endpoint)}/engines"
                    return url, {"ENGINE_STORE": url, **aws_env(endpoint)}
                url = f"file://{tmp / run / 'store'}"
                return url, {"ENGINE_STORE": url}

            local = run_servers([EngineMachine(tmp / "local" / "s0")], fake)
            report["local"] = local[0]

            url, env = store_env("later")
            machines = [EngineMachine(tmp / "later" / f"s{i}") for i in range(args.servers)]
            first = run_servers(machines[:1], {**fake, **env})
            rest = run_servers(machines[1:], {**fake, **env})
            moved = store_bytes(url, endpoint)
            report["later"] = {"first": first[0], "others": rest, "store_objects": moved}

            url, env = store_env("together")
            machines = [EngineMachine(tmp / "together" / f"s{i}") for i in range(args.servers)]
            together = run_servers(machines, {**fake, **env, "ENGINE_STORE_LEASE_S": "10"})
            report["together"] = {"servers": together, "store_objects": store_bytes(url, endpoint)}

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    engine_bytes = sum(v for k, v in report["later"]["store_objects"].items() if k.endswith(".engine"))
    sidecar_bytes = sum(v for k, v in report["later"]["store_objects"].items() if k.endswith(".json"))
    timing_bytes = sum(v for k, v in report["later"]["store_objects"].items() if k.startswith("timing/"))
    pulls = [r["seconds"] for r in report["later"]["others"]]
    print(f"{args.servers} servers, fake build {args.build_seconds:.0f} s, engine {args.engine_mb:.0f} MiB, store {args.store}")
    print(f"  local build (no store)          {report['local']['seconds']:7.2f} s   ({report['local']['what']})")
    print(f"  later: server 1                 {report['later']['first']['seconds']:7.2f} s   ({report['later']['first']['what']}, then published)")
    print(f"  later: servers 2..{args.servers} (together)  {statistics.median(pulls):7.2f} s median, {max(pulls):.2f} s max   ({', '.join(r['what'] for r in report['later']['others'])})")
    times = [r["seconds"] for r in report["together"]["servers"]]
    print(f"  together: all {args.servers}                {min(times):7.2f} s .. {max(times):.2f} s   ({', '.join(r['what'] for r in report['together']['servers'])})")
    print(f"  bytes: published once {engine_bytes + sidecar_bytes + timing_bytes} (engine {engine_bytes}, sidecar {sidecar_bytes}, timing cache {timing_bytes}); "
          f"each pull downloads {engine_bytes + sidecar_bytes}; {args.servers - 1} pulls = {(args.servers - 1) * (engine_bytes + sidecar_bytes)}")
    return 0


class _no_server:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
