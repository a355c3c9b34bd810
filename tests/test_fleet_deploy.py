"""Issue 16: deploy/ (compose with MinIO, Kubernetes manifests) validated offline against bundled schemas.

check-jsonschema ships the compose-spec schema; kubernetes-validate ships the Kubernetes API
schemas. Nothing is downloaded: both read the schemas from their own wheels.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES_VERSION = "1.33.0"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def validate_compose(path: Path) -> subprocess.CompletedProcess:
    # validators run in subprocesses: loading the schemas in-process would inflate this process's
    # heap, which other tests' RSS-based memory estimates would then read
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def validate_kubernetes(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_spec():
    done = validate_compose(DEPLOY / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_schema_check_can_fail(tmp_path):
    """The validator really rejects a broken compose file (not a test that cannot fail)."""
    broken = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    broken["services"]["deepstream"]["deploy"]["resources"]["reservations"]["devices"] = "all"
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    assert validate_compose(tmp_path / "compose.yaml").returncode != 0


def test_compose_runs_the_app_against_minio():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert services["minio"]["image"].startswith("minio/minio")
    app = services["deepstream"]["environment"]
    assert app["ENGINE_STORE"].startswith("s3://") and app["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert services["deepstream"]["depends_on"]["bucket"]["condition"] == "service_completed_successfully"


def test_kubernetes_manifests_match_the_api_schemas():
    assert len(MANIFESTS) == 4
    done = validate_kubernetes(*MANIFESTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_schema_check_can_fail(tmp_path):
    (daemonset,) = documents(DEPLOY / "kubernetes" / "daemonset.yaml")
    daemonset["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = "one gpu"
    (tmp_path / "daemonset.yaml").write_text(yaml.safe_dump(daemonset))
    done = validate_kubernetes(tmp_path / "daemonset.yaml")
    assert done.returncode != 0 and "limits" in done.stdout + done.stderr


def test_daemonset_requests_a_gpu_reads_the_secret_and_keeps_engines_on_an_emptydir():
    (daemonset,) = documents(DEPLOY / "kubernetes" / "daemonset.yaml")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    sources = {next(iter(s)): s[next(iter(s))]["name"] for s in container["envFrom"]}
    (secret,) = documents(DEPLOY / "kubernetes" / "secret.yaml")
    (config,) = documents(DEPLOY / "kubernetes" / "configmap.yaml")
    assert sources == {"secretRef": secret["metadata"]["name"], "configMapRef": config["metadata"]["name"]}
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert config["data"]["ENGINE_STORE"].startswith("s3://")
    (volume,) = pod["volumes"]
    assert "emptyDir" in volume and container["volumeMounts"][0]["mountPath"] == "/app/engines"


def test_kubectl_apply_of_the_folder_creates_the_namespace_first():
    """`kubectl apply -f deploy/kubernetes/` takes the files in name order: the Namespace must come
    before every object that lives in it, or the first apply fails with 'namespaces "yolo" not found'."""
    order = [(doc["kind"], doc["metadata"].get("namespace")) for path in MANIFESTS for doc in documents(path)]
    assert order[0][0] == "Namespace"
    namespaced = {ns for _kind, ns in order[1:] if ns}
    assert namespaced == {documents(MANIFESTS[0])[0]["metadata"]["name"]}
