"""Shared pytest fixtures: fake site-packages, fake TensorRT/pynvml/pycuda, fake GPUs.

CI has no GPU: TensorRT, pynvml, pycuda, nvidia-smi and nvcc are fakes from tests/fakes/.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tests"):  # `tests.fakes`, the script and test helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.fakes.fake_pycuda import install_fake_pycuda  # noqa: E402
from tests.fakes.fake_pynvml import install_fake_pynvml  # noqa: E402
from tests.fakes.fake_tensorrt import TRT_RELEASES as _TRT_RELEASES  # noqa: E402
from tests.fakes.fake_tensorrt import install_fake_tensorrt  # noqa: E402
from tests.fakes.gpus import GPU_H100, GPU_RTX_3060, GPU_RTX_4090, write_gpus_json  # noqa: E402,F401

TRT_RELEASES: list[str] = list(_TRT_RELEASES)
FAKE_BIN = REPO_ROOT / "tests" / "fakes" / "bin"
FAKE_MODULES = ("tensorrt", "pynvml", "pycuda")


def _drop_fake_modules_named(*tops: str) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in tops:
            del sys.modules[name]


def _drop_fake_modules() -> None:
    _drop_fake_modules_named(*FAKE_MODULES)


@pytest.fixture
def clean_modules():
    """Remove tensorrt/pynvml/pycuda (and submodules) from sys.modules before and after the test."""
    _drop_fake_modules()
    yield
    _drop_fake_modules()


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules) -> Path:
    """An empty site dir first on sys.path and on PYTHONPATH (for subprocesses)."""
    site = tmp_path / "fake_site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(site) + (os.pathsep + old if old else ""))
    return site


@pytest.fixture
def use_fake_tensorrt(fake_site: Path) -> Callable[[str], ModuleType]:
    """``use_fake_tensorrt(version)`` installs the fake into ``fake_site`` and imports it."""

    def install(version: str) -> ModuleType:
        install_fake_tensorrt(fake_site, version)
        _drop_fake_modules_named("tensorrt")
        import importlib

        importlib.invalidate_caches()
        return importlib.import_module("tensorrt")

    return install


@pytest.fixture(params=TRT_RELEASES)
def fake_trt(request: pytest.FixtureRequest, use_fake_tensorrt: Callable[[str], ModuleType]) -> ModuleType:
    """The fake tensorrt module, parametrized over TRT_RELEASES (``trt.__version__`` tells which)."""
    return use_fake_tensorrt(request.param)


@pytest.fixture
def use_fake_pynvml(fake_site: Path) -> Callable[..., ModuleType]:
    """``use_fake_pynvml(gpus, driver=..., cuda_driver=..., init_error=...)`` installs and imports."""

    def install(gpus: list[dict] | None, **kwargs) -> ModuleType:
        install_fake_pynvml(fake_site, gpus, **kwargs)
        _drop_fake_modules_named("pynvml")
        import importlib

        importlib.invalidate_caches()
        return importlib.import_module("pynvml")

    return install


@pytest.fixture
def use_fake_pycuda(fake_site: Path) -> Callable[[], Path]:
    """``use_fake_pycuda()`` installs the fake pycuda into ``fake_site`` (import it yourself)."""

    def install() -> Path:
        _drop_fake_modules_named("pycuda")
        return install_fake_pycuda(fake_site)

    return install


@pytest.fixture
def fake_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """``fake_gpus(gpus, driver=..., cuda_driver=...)`` writes FAKE_GPUS_JSON, sets the env var,
    and puts tests/fakes/bin (nvidia-smi, nvcc stubs) first on PATH. Returns the JSON path.
    ``fake_gpus([])`` simulates a host whose driver is not reachable."""
    monkeypatch.setenv("PATH", str(FAKE_BIN) + os.pathsep + os.environ.get("PATH", ""))

    def write(gpus: list[dict] | None, **kwargs) -> Path:
        path = write_gpus_json(tmp_path / "fake_gpus.json", gpus, **kwargs)
        monkeypatch.setenv("FAKE_GPUS_JSON", str(path))
        return path

    return write
