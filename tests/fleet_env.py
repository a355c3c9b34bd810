"""An S3-protocol server (moto's standalone server) on 127.0.0.1 and helpers for fleet tests."""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "fleet-test-secret"
_buckets = itertools.count()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server(tmp: Path, auth_free_actions: int | None = None, timeout_s: float = 30.0) -> Iterator[str]:
    """Start `python -m moto.server` on a free port; yield its endpoint; stop it (bounded wait).

    With `auth_free_actions` moto enforces IAM credentials after that many unauthenticated calls.
    """
    port = free_port()
    env = {**os.environ, "MOTO_PORT": str(port)}
    env.pop("PYTHONPATH", None)
    if auth_free_actions is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(auth_free_actions)
    log = open(tmp / f"moto-{port}.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited: {(tmp / f'moto-{port}.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start in time") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def aws_env(endpoint: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1"}


def s3_client(endpoint: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name="us-east-1")


def new_bucket(endpoint: str) -> str:
    name = f"fleet-{os.getpid()}-{next(_buckets)}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


class Store:
    """The test's view of one store (s3:// on moto, or file://): list, read, write objects."""

    def __init__(self, url: str, endpoint: str | None = None) -> None:
        self.url = url
        self.endpoint = endpoint
        if url.startswith("s3://"):
            self.bucket, _, self.prefix = url[5:].partition("/")
        else:
            self.root = Path(url[7:])

    def env(self) -> dict[str, str]:
        return {"ENGINE_STORE": self.url, **(aws_env(self.endpoint) if self.endpoint else {})}

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def objects(self) -> dict[str, bytes]:
        if self.endpoint is None:
            if not self.root.exists():
                return {}
            return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file() and not p.name.startswith(".")}
        client = s3_client(self.endpoint)
        listed = client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        return {o["Key"][strip:]: client.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
                for o in listed.get("Contents", [])}

    def write(self, key: str, data: bytes) -> None:
        if self.endpoint is None:
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            s3_client(self.endpoint).put_object(Bucket=self.bucket, Key=self._full(key), Body=data)

    def keys_ending(self, suffix: str) -> list[str]:
        return sorted(k for k in self.objects() if k.endswith(suffix))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def committed_pairs_are_consistent(store: Store) -> bool:
    """Every stored sidecar names an engine object (`<sha256>.engine` next to it) that it describes."""
    objects = store.objects()
    for key, body in objects.items():
        if key.endswith(".json") and not key.endswith("lease.json"):
            record = json.loads(body)
            engine = objects.get(f"{key.rsplit('/', 1)[0]}/{record['engine_sha256']}.engine")
            if engine is None or sha256(engine) != record["engine_sha256"] or len(engine) != record["engine_size"]:
                return False
    return True
