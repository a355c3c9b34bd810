"""Issue 16: one build per GPU model for a whole fleet, through an object store.

Servers are separate processes with separate ENGINE_DIRs (tests/engine_env.py: fake GPU, fake
TensorRT); the store is a real S3-protocol server (moto's standalone server on 127.0.0.1) or file://.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from engine_env import EngineMachine, kill_group
from fleet_env import Store, committed_pairs_are_consistent, moto_server, new_bucket, s3_client, sha256
from helpers import read_stderr_until
from tests.fakes.gpus import GPU_RTX_3060


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture(params=["s3", "file"])
def store(request, tmp_path):
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        return Store(f"s3://{new_bucket(endpoint)}/engines", endpoint)
    return Store(f"file://{tmp_path / 'shared-store'}")


@pytest.fixture
def s3_store(s3_endpoint):
    return Store(f"s3://{new_bucket(s3_endpoint)}/engines", s3_endpoint)


def servers(tmp_path, count: int, **kwargs) -> list[EngineMachine]:
    return [EngineMachine(tmp_path / f"server{i}", **kwargs) for i in range(count)]


def outcome(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    for word in ("built", "pulled", "reused"):
        if f"({word}" in done.stdout:
            return word
    raise AssertionError(done.stdout)


def notices(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if "engine store" in line and line.startswith("notice:")]


def run_together(machines: list[EngineMachine], env: dict[str, str], timeout: float = 120) -> list[subprocess.CompletedProcess]:
    started = [m.start(**env) for m in machines]
    results = []
    for machine, process in zip(machines, started):
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            kill_group(process)
        results.append(subprocess.CompletedProcess(machine.argv(), process.returncode, out, err))
    return results


def test_four_servers_build_once_and_pull_three_times(tmp_path, store):
    machines = servers(tmp_path, 4)
    results = run_together(machines, {**store.env(), "FAKE_TRT_BUILD_SECONDS": "1", "ENGINE_STORE_LEASE_S": "5"})
    assert sorted(outcome(r) for r in results) == ["built", "pulled", "pulled", "pulled"], [r.stderr for r in results]
    digests = {sha256(m.only_engine().read_bytes()) for m in machines}
    assert len(digests) == 1
    stored = store.objects()
    engine_keys = [k for k in stored if k.endswith(".engine")]
    assert len(engine_keys) == 1 and sha256(stored[engine_keys[0]]) in digests
    stem = machines[0].only_engine().stem
    entry = engine_keys[0].split("/")[1]  # <stem>/<onnx sha256[:16]>-<key sha256[:12]>/<sha256>.engine
    assert engine_keys[0].startswith(f"{stem}/") and entry[:16] == sha256(machines[0].onnx.read_bytes())[:16]
    assert len(entry) == 16 + 1 + 12 and engine_keys[0].endswith(f"/{sha256(stored[engine_keys[0]])}.engine")
    assert not [k for k in stored if k.endswith("lease.json")], "the lease is dropped after publishing"
    assert [k for k in stored if k.startswith("timing/")], "the timing cache is published"
    for machine, result in zip(machines, results):
        sidecar = machine.sidecar_of(machine.only_engine())
        assert (sidecar["origin"] or {}).get("how", "built") == outcome(result)
        assert (machine.config_dir / "config_infer_auto_generated.txt").exists()
        assert (machine.config_dir / "labels.txt").read_text().split() == ["car", "bus", "person"]
        if outcome(result) == "pulled":
            assert "engine pulled from " + store.url in result.stderr
            assert sidecar["onnx"]["path"] == str(machine.onnx.resolve())  # local stamp: the warm path never re-hashes
    # the next start of a puller is a plain warm reuse
    assert outcome(machines[1].run(**store.env())) == "reused"


def test_second_gpu_model_builds_its_own_and_leaves_the_first_alone(tmp_path, store):
    first, second = servers(tmp_path, 2)
    assert outcome(first.run(**store.env())) == "built"
    before = store.objects()
    second.use_gpu(GPU_RTX_3060)
    done = second.run(**store.env())
    assert outcome(done) == "built"
    after = store.objects()
    assert {k: v for k, v in after.items() if k in before and not k.startswith("timing/")} == {k: v for k, v in before.items() if not k.startswith("timing/")}
    assert sorted(k.split("/")[0] for k in after if k.endswith(".engine")) == sorted([first.only_engine().stem, second.only_engine().stem])
    assert "sm86" in second.only_engine().name
    assert len([k for k in after if k.startswith("timing/")]) == 2  # one timing cache per compute capability + TensorRT


def test_killed_builder_lease_expires_and_nobody_pulls_a_partial_engine(tmp_path, store):
    victim, taker, waiter = servers(tmp_path, 3)
    env = {**store.env(), "ENGINE_STORE_LEASE_S": "3"}
    process = victim.start(**{**env, "FAKE_TRT_BUILD_SECONDS": "60", "ENGINE_STORE_LEASE_S": "1"})
    try:
        deadline = time.monotonic() + 60
        while not store.keys_ending("lease.json"):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        kill_group(process)  # SIGKILL mid-build: no release, no publish
        process.wait(10)
    (lease,) = store.keys_ending("lease.json")
    entry = lease.rsplit("/", 1)[0]
    store.write(f"{entry}/{sha256(b'a whole engine')}.engine", b"partial upload of a dead builder")  # died mid-publish
    results = run_together([taker, waiter], {**env, "FAKE_TRT_BUILD_SECONDS": "0.5"})
    assert sorted(outcome(r) for r in results) == ["built", "pulled"], [r.stderr for r in results]
    assert any("expired; taking over the build" in r.stderr for r in results)
    assert committed_pairs_are_consistent(store)
    assert sha256(taker.only_engine().read_bytes()) == sha256(waiter.only_engine().read_bytes())
    assert b"partial" not in taker.only_engine().read_bytes() + waiter.only_engine().read_bytes()
    assert victim.engines() == []


def test_tampered_stored_engine_is_refused_and_a_pull_only_server_writes_nothing(tmp_path, store):
    builder, reader, repairer = servers(tmp_path, 3)
    assert outcome(builder.run(**store.env())) == "built"
    (key,) = store.keys_ending(".engine")
    tampered = bytearray(store.objects()[key])
    tampered[len(tampered) // 2] ^= 0xFF
    store.write(key, bytes(tampered))
    snapshot = store.objects()
    done = reader.run(**store.env(), ENGINE_STORE_MODE="pull")
    assert outcome(done) == "built"
    assert len(notices(done)) == 1 and "does not match its sidecar" in notices(done)[0]
    assert sha256(reader.only_engine().read_bytes()) != sha256(bytes(tampered))
    assert store.objects() == snapshot, "a pull-only server never writes the store"
    assert reader.temp_files() == []
    # a read-write server rebuilds too and repairs the entry; the next server pulls again
    assert outcome(repairer.run(**store.env())) == "built"
    assert committed_pairs_are_consistent(store)
    late = EngineMachine(tmp_path / "late")
    assert outcome(late.run(**store.env())) == "pulled"


@pytest.fixture(scope="module")
def auth_s3_users(tmp_path_factory):
    """A moto server enforcing credentials, a bucket, and two users' keys: `reader` (read-only) and
    `leaser` (may write only lease objects under lease-only/: the engine upload is refused)."""
    with moto_server(tmp_path_factory.mktemp("moto-auth"), auth_free_actions=7) as endpoint:
        client = s3_client(endpoint)
        client.create_bucket(Bucket="fleet-auth")
        import boto3

        iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                           aws_secret_access_key="x", region_name="us-east-1")
        policies = {
            "reader": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}],
            "leaser": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket", "s3:DeleteObject"], "Resource": "*"},
                       {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": "arn:aws:s3:::fleet-auth/lease-only/*/lease.json"}],
        }
        users = {}
        for user, statements in policies.items():
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": statements}))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            users[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        yield endpoint, users


@pytest.fixture
def auth_s3(auth_s3_users):
    endpoint, users = auth_s3_users
    return endpoint, *users["reader"]


@pytest.fixture
def lease_only_s3(auth_s3_users):
    endpoint, users = auth_s3_users
    return endpoint, *users["leaser"]


@pytest.mark.parametrize("failure", ["down", "wrong-credentials", "read-only"])
def test_store_failures_never_fail_a_start(tmp_path, failure, request):
    from fleet_env import aws_env, free_port

    box = EngineMachine(tmp_path)
    if failure == "down":
        env = {"ENGINE_STORE": "s3://fleet-down/engines", **aws_env(f"http://127.0.0.1:{free_port()}")}
    else:
        endpoint, key, secret = request.getfixturevalue("auth_s3")
        if failure == "wrong-credentials":
            key, secret = "AKIAWRONGWRONGWRONG0", "wrong"
        env = {"ENGINE_STORE": "s3://fleet-auth/engines", **aws_env(endpoint, key, secret)}
    started = time.monotonic()
    done = box.run(**env)
    assert outcome(done) == "built"
    assert len(notices(done)) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 60
    if failure == "down":
        assert outcome(box.run(**env)) == "reused"  # a local hit never touches the store


def test_file_store_in_an_unwritable_place_never_fails_a_start(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store directory should be")
    box = EngineMachine(tmp_path / "box")
    done = box.run(ENGINE_STORE=f"file://{blocker}/engines")
    assert outcome(done) == "built"
    assert len(notices(done)) == 1, done.stderr


def test_warm_path_does_not_import_the_store_client(tmp_path, s3_store):
    from test_engine_cache import WARM_PROBE

    store = s3_store
    box = EngineMachine(tmp_path / "box")
    assert outcome(box.run(**store.env())) == "built"
    probe = WARM_PROBE.format(heavy=("obstore", "boto3", "botocore", "tensorrt", "onnx"))
    done = subprocess.run([sys.executable, "-c", probe, *box.argv()[1:]], capture_output=True, text=True,
                          env={**box.env, **store.env()}, cwd=box.tmp, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "HEAVY=\n" in done.stderr
    assert "(reused" in done.stdout


def test_info_json_says_where_the_engine_came_from(tmp_path):
    store = Store(f"file://{tmp_path / 'shared'}")
    builder, puller = EngineMachine(tmp_path / "a"), EngineMachine(tmp_path / "b")
    info = json.loads(builder.run("--info", "--json", **store.env()).stdout)
    assert info["engine"]["origin"] is None and info["engine"]["store"] == store.url
    assert outcome(builder.run(**store.env())) == "built"
    assert outcome(puller.run(**store.env())) == "pulled"
    assert json.loads(builder.run("--info", "--json", **store.env()).stdout)["engine"]["origin"] == "built"
    assert json.loads(puller.run("--info", "--json", **store.env()).stdout)["engine"]["origin"] == "pulled"


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://B/x", "file://relative/path", "s3://"])
def test_bad_store_url_is_one_line_and_exit_2(url, capsys):
    import auto_build_engine as tool

    assert tool.main(["--engine-store", url, "--info"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--engine-store" in err and "Traceback" not in err
    with pytest.raises(tool.ToolError, match="ENGINE_STORE"):
        tool.parse_options([], environ={"ENGINE_STORE": url})


def test_store_settings_come_from_the_aws_files_when_the_variables_are_unset(tmp_path):
    import auto_build_engine as tool

    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = s3cret\n"
                                                  "[team]\naws_access_key_id = AKIATEAM\naws_secret_access_key = other\n")
    (tmp_path / ".aws" / "config").write_text("[profile team]\nregion = eu-west-1\nendpoint_url = http://minio:9000\n")
    assert tool._aws_file_settings({"HOME": str(tmp_path), "AWS_PROFILE": "team"}) == {
        "access_key_id": "AKIATEAM", "secret_access_key": "other", "region": "eu-west-1", "endpoint": "http://minio:9000"}
    env_wins = tool._aws_file_settings({"HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_REGION": "us-east-2"})
    assert env_wins == {"secret_access_key": "s3cret"}


def test_pull_only_server_waits_for_the_fleet_builder_and_writes_nothing(tmp_path):
    store = Store(f"file://{tmp_path / 'shared'}")
    builder, reader = EngineMachine(tmp_path / "a"), EngineMachine(tmp_path / "b")
    process = builder.start(**store.env(), FAKE_TRT_BUILD_SECONDS="4", ENGINE_STORE_LEASE_S="5")  # margin for a loaded CI
    try:
        deadline = time.monotonic() + 60
        while not store.keys_ending("lease.json"):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        done = reader.run(**store.env(), ENGINE_STORE_MODE="pull")
        out, err = process.communicate(timeout=60)
    finally:
        kill_group(process)
    assert "(built in" in out, err
    assert outcome(done) == "pulled" and "is building" in done.stderr, done.stderr
    assert "engine published" not in done.stderr and notices(done) == []


def test_force_rebuilds_here_and_keeps_the_first_publish(tmp_path):
    store = Store(f"file://{tmp_path / 'shared'}")
    first, second = EngineMachine(tmp_path / "a"), EngineMachine(tmp_path / "b")
    assert outcome(first.run(**store.env())) == "built"
    published = store.objects()
    assert outcome(second.run("--force", **store.env())) == "built"
    assert {k: v for k, v in store.objects().items() if not k.startswith("timing/")} == {k: v for k, v in published.items() if not k.startswith("timing/")}


def timing_entries(data: bytes) -> dict:
    return json.loads(data[len(b"FTRTTC01"):])["entries"]  # the fake TensorRT's cache format


def test_timing_caches_of_two_servers_are_merged_in_the_store(tmp_path):
    store = Store(f"file://{tmp_path / 'shared'}")
    fp16, fp32 = EngineMachine(tmp_path / "a"), EngineMachine(tmp_path / "b")
    assert outcome(fp32.run("--precision", "fp32")) == "built"  # b has its own cache first, no store
    assert outcome(fp16.run(**store.env())) == "built"
    (key,) = [k for k in store.objects() if k.startswith("timing/")]
    assert len(timing_entries(store.objects()[key])) == 1
    assert outcome(fp32.run("--precision", "fp32", "--force", **store.env())) == "built"
    merged = timing_entries(store.objects()[key])
    assert len(merged) == 2  # the fp16 tactics of a and the fp32 tactics of b
    (local,) = fp32.engine_dir.glob("timing-*.cache")
    assert timing_entries(local.read_bytes()) == merged


def test_merge_timing_caches_combines_entries(use_fake_tensorrt, monkeypatch):
    import auto_build_engine as tool

    trt = use_fake_tensorrt("10.9.0.34")
    monkeypatch.setenv("FAKE_TRT_CC", "8.9")
    config = trt.Builder(tool.make_trt_logger(trt)).create_builder_config()

    def cache(entries: dict) -> bytes:
        made = config.create_timing_cache(b"")
        made._entries.update(entries)
        return bytes(made.serialize())

    merged = tool.merge_timing_caches(cache({"a": "1"}), cache({"b": "2"}))
    assert timing_entries(merged) == {"a": "1", "b": "2"}
    assert tool.merge_timing_caches(cache({"a": "1"}), b"not a cache") is None


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_only_one_of_two_servers_takes_over_an_expired_lease(tmp_path, kind, request, monkeypatch):
    """Both read the expired lease before either replaces it: exactly one may win."""
    import auto_build_engine as tool
    from fleet_env import aws_env

    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        for name, value in aws_env(endpoint).items():  # obstore reads the variables itself
            monkeypatch.setenv(name, value)
        store = tool.EngineStore(f"s3://{new_bucket(endpoint)}/engines")
    else:
        store = tool.EngineStore(f"file://{tmp_path / 'shared'}")
    key = "stem/0123456789abcdef/lease.json"
    store.create(key, json.dumps({"host": "dead", "pid": 1, "token": "old", "expires_at": time.time() - 1}).encode())
    stale = store.read(key)
    first, second = tool.FleetLease(store, key, 30), tool.FleetLease(store, key, 30)
    assert first.try_acquire()[0]
    real_read = store.read
    reads = iter([stale])
    store.read = lambda k: next(reads, None) or real_read(k)  # the second server read before the first wrote
    assert second.try_acquire()[0] is False
    store.read = real_read
    assert json.loads(store.read(key)[0])["token"] == first.token


def test_pull_only_server_does_not_create_a_missing_file_store(tmp_path):
    box = EngineMachine(tmp_path / "box")
    done = box.run(ENGINE_STORE=f"file://{tmp_path / 'nowhere'}", ENGINE_STORE_MODE="pull")
    assert outcome(done) == "built" and len(notices(done)) == 1
    assert not (tmp_path / "nowhere").exists()


# -- audit of issue 16: commit point, lease renewal and timeout, unusable entries, failed publish --------------------


def in_process_publisher(machine: EngineMachine, url: str):
    """The tool's publisher for the engine `machine` built locally (no store), driven in this process."""
    from types import SimpleNamespace

    import auto_build_engine as tool

    sidecar = tool.Sidecar.read(machine.only_engine().with_suffix(".json"))
    options = tool.parse_options(machine.argv("--engine-store", url)[2:], environ={})
    plan = tool.EnginePlan(sidecar.key, machine.only_engine().stem, machine.engine_dir, "", None)
    fleet = tool.FleetEnsure(options, None, plan, SimpleNamespace(path=machine.onnx))
    fleet.open_store()
    return fleet, sidecar


def hook_uploads(fleet, before=None, after=None) -> None:
    """Run before(key)/after(key) around each upload (create or replace) of `fleet`'s store client."""
    for name in ("create", "replace"):
        real = getattr(fleet.store, name)

        def wrapped(key, data, *args, _real=real, **kwargs):
            if before:
                before(key)
            done = _real(key, data, *args, **kwargs)
            if after:
                after(key)
            return done

        setattr(fleet.store, name, wrapped)


def is_sidecar_key(key: str) -> bool:
    return key.endswith(".json") and not key.endswith("lease.json")


def test_interleaved_publishers_keep_the_first_committed_pair(tmp_path, store, monkeypatch):
    """A uploads its engine, B uploads its own, A commits its sidecar, B's commit fails: the
    committed pair is A's, whole, and that is what a puller installs."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    for name, value in store.env().items():  # obstore reads the AWS_* variables itself
        monkeypatch.setenv(name, value)
    a, b, puller = servers(tmp_path, 3)
    assert outcome(a.run()) == "built" and outcome(b.run()) == "built"  # local builds, no store
    assert sha256(a.only_engine().read_bytes()) != sha256(b.only_engine().read_bytes())  # plans name their ONNX path
    (fleet_a, sidecar_a), (fleet_b, sidecar_b) = in_process_publisher(a, store.url), in_process_publisher(b, store.url)
    a_engine_up, b_engine_up, a_committed = threading.Event(), threading.Event(), threading.Event()

    def a_before(key):
        if is_sidecar_key(key):
            assert b_engine_up.wait(30)

    def a_after(key):
        (a_engine_up if key.endswith(".engine") else a_committed if is_sidecar_key(key) else threading.Event()).set()

    def b_before(key):
        if key.endswith(".engine"):
            assert a_engine_up.wait(30)
        elif is_sidecar_key(key):
            assert a_committed.wait(30)

    def b_after(key):
        if key.endswith(".engine"):
            b_engine_up.set()

    hook_uploads(fleet_a, a_before, a_after)
    hook_uploads(fleet_b, b_before, b_after)
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(fleet_a.publish_engine, sidecar_a), pool.submit(fleet_b.publish_engine, sidecar_b)]
        for job in jobs:
            job.result(timeout=60)
    assert a_committed.is_set() and b_engine_up.is_set()
    assert committed_pairs_are_consistent(store)
    (sidecar_key,) = [k for k in store.objects() if is_sidecar_key(k)]
    assert json.loads(store.objects()[sidecar_key])["engine_sha256"] == sidecar_a.engine_sha256
    done = puller.run(**store.env())
    assert outcome(done) == "pulled", done.stderr
    assert sha256(puller.only_engine().read_bytes()) == sidecar_a.engine_sha256


def wait_until_building(process) -> None:
    """The builder holds the fleet lease once it says it is building (read from its stderr)."""
    line, seen = read_stderr_until(process, "building ", timeout=60)
    assert line is not None, seen


def test_lease_is_renewed_while_the_build_outlasts_it(tmp_path, store):
    builder, waiter = servers(tmp_path, 2)
    env = {**store.env(), "ENGINE_STORE_LEASE_S": "1.5"}
    process = builder.start(**env, FAKE_TRT_BUILD_SECONDS="4.5")  # three lease lengths
    try:
        wait_until_building(process)
        done = waiter.run(**env)
        out, _ = process.communicate(timeout=60)
    finally:
        kill_group(process)
    assert "(built in" in out
    assert outcome(done) == "pulled", done.stderr
    assert "is building" in done.stderr and "taking over" not in done.stderr
    assert len(store.keys_ending(".engine")) == 1  # one build for the fleet
    assert sha256(builder.only_engine().read_bytes()) == sha256(waiter.only_engine().read_bytes())


def test_waiting_for_a_live_builder_is_bounded_by_build_lock_timeout(tmp_path):
    store = Store(f"file://{tmp_path / 'shared'}")
    holder, waiter = EngineMachine(tmp_path / "a"), EngineMachine(tmp_path / "b")
    env = {**store.env(), "ENGINE_STORE_LEASE_S": "5"}
    process = holder.start(**env, FAKE_TRT_BUILD_SECONDS="60")
    try:
        wait_until_building(process)
        started = time.monotonic()
        done = waiter.run(**env, BUILD_LOCK_TIMEOUT_S="1")
        waited = time.monotonic() - started
        assert process.poll() is None, "the holder was still building all along"
    finally:
        kill_group(process)
        process.wait(10)
    assert outcome(done) == "built", done.stderr
    lines = notices(done)  # the store's notices (the fake box also has its own: no pycuda, maybe no bus.jpg)
    assert len(lines) == 1 and "gave up waiting 1s" in lines[0], done.stderr
    assert "is building" in done.stderr and "taking over" not in done.stderr
    assert waited < 30


def test_servers_with_other_precision_request_share_their_own_entry(tmp_path):
    """Same engine name, other precision request: its own store entry, built once, then pulled."""
    store = Store(f"file://{tmp_path / 'shared'}")
    auto, fp16, fp16_late = servers(tmp_path, 3)
    assert outcome(auto.run(**store.env())) == "built"
    published = store.objects()
    done = fp16.run("--precision", "fp16", **store.env())
    assert outcome(done) == "built" and notices(done) == [], done.stderr
    assert fp16.only_engine().name == auto.only_engine().name  # the name leaves the request out
    assert outcome(fp16_late.run("--precision", "fp16", **store.env())) == "pulled"
    assert {k: v for k, v in store.objects().items() if k in published and not k.startswith("timing/")} == {
        k: v for k, v in published.items() if not k.startswith("timing/")}
    assert committed_pairs_are_consistent(store)


def stored_sidecar_key(store: Store) -> str:
    (key,) = [k for k in store.objects() if is_sidecar_key(k)]
    return key


def rewrite_stored_sidecar(store: Store, change) -> bytes:
    key = stored_sidecar_key(store)
    body = change(store.objects()[key])
    store.write(key, body)
    return body


def foreign_request(body: bytes) -> bytes:
    record = json.loads(body)
    record["key"]["precision_request"] = "fp16"  # same engine name; another server's options
    return json.dumps(record).encode()


def not_a_digest(body: bytes) -> bytes:
    record = json.loads(body)
    record["engine_sha256"] = "../../../etc/passwd"
    return json.dumps(record).encode()


@pytest.mark.parametrize("damage", [foreign_request, lambda body: b"{not json", not_a_digest],
                         ids=["foreign-key", "garbled", "sha256-not-a-digest"])
def test_unusable_stored_sidecar_is_refused_and_repaired(tmp_path, damage):
    store = Store(f"file://{tmp_path / 'shared'}")
    builder, repairer, late = servers(tmp_path, 3)
    assert outcome(builder.run(**store.env())) == "built"
    rewrite_stored_sidecar(store, damage)
    done = repairer.run(**store.env())
    assert outcome(done) == "built", done.stderr
    assert len(notices(done)) == 1 and "refused, building here" in notices(done)[0], done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(store.objects()[stored_sidecar_key(store)])["engine_sha256"] == sha256(
        repairer.only_engine().read_bytes())  # a read-write server rewrote the entry
    assert committed_pairs_are_consistent(store)
    assert outcome(late.run(**store.env())) == "pulled"


def test_sidecar_naming_a_missing_engine_object_is_refused_and_repaired(tmp_path):
    """A lifecycle rule may delete the engine object before its sidecar."""
    store = Store(f"file://{tmp_path / 'shared'}")
    builder, repairer, late = servers(tmp_path, 3)
    assert outcome(builder.run(**store.env())) == "built"
    (engine_key,) = store.keys_ending(".engine")
    (store.root / engine_key).unlink()
    done = repairer.run(**store.env())
    assert outcome(done) == "built", done.stderr
    assert len(notices(done)) == 1 and "refused, building here" in notices(done)[0], done.stderr
    assert committed_pairs_are_consistent(store)
    assert outcome(late.run(**store.env())) == "pulled"


def test_refused_engine_upload_is_one_notice_and_the_local_engine_serves(tmp_path, lease_only_s3):
    endpoint, key, secret = lease_only_s3
    from fleet_env import aws_env

    box = EngineMachine(tmp_path / "box")
    env = {"ENGINE_STORE": "s3://fleet-auth/lease-only", **aws_env(endpoint, key, secret)}
    done = box.run(**env)
    assert outcome(done) == "built", done.stderr
    assert len(notices(done)) == 1 and "publishing failed" in notices(done)[0], done.stderr
    assert "access denied" in notices(done)[0] and "Traceback" not in done.stderr
    assert box.pair_is_consistent(box.only_engine())
    assert outcome(box.run(**env)) == "reused"


def test_pulled_engine_keeps_this_servers_own_first_start_timeline(tmp_path):
    store = Store(f"file://{tmp_path / 'shared'}")
    builder, puller = servers(tmp_path, 2)
    assert outcome(builder.run(**store.env())) == "built"
    done = puller.run(**store.env())
    assert outcome(done) == "pulled"
    phases = [entry["phase"] for entry in puller.sidecar_of(puller.only_engine())["timeline"]]
    assert "pull" in phases and "build" not in phases and phases[-1] == "total", phases
    assert "Timeline    " in done.stdout and "pull " in done.stdout
    assert "build" in [e["phase"] for e in builder.sidecar_of(builder.only_engine())["timeline"]]
