"""Install a fake ``tensorrt`` package for one real release, plus helpers to inspect it.

The fake module itself lives in ``_tensorrt_template.py`` and is copied, self-contained,
into ``<site_dir>/tensorrt/__init__.py`` so a subprocess only needs ``PYTHONPATH=<site_dir>``.
"""
from __future__ import annotations

import functools
import json
import shutil
import struct
from pathlib import Path

TRT_RELEASES: tuple[str, ...] = ("8.6.1", "10.9.0.34", "11.4.0.106")

FAKES_DIR = Path(__file__).resolve().parent
API_DIR = FAKES_DIR / "tensorrt_api"
_TEMPLATE = FAKES_DIR / "_tensorrt_template.py"
_PLACEHOLDER = '_FAKE_RELEASE = "__FAKE_TRT_RELEASE__"'

PLAN_TAG = 0x74727466
PLAN_PREFIX_BYTES = 32


def install_fake_tensorrt(site_dir: Path, version: str) -> Path:
    """Write ``tensorrt/`` and ``tensorrt-<version>.dist-info/`` into ``site_dir``; return ``site_dir``.

    Any fake tensorrt already installed there (package or dist-info) is replaced.
    """
    if version not in TRT_RELEASES:
        raise ValueError(f"unknown fake TensorRT release {version!r}; choose one of {TRT_RELEASES}")
    site_dir = Path(site_dir)
    site_dir.mkdir(parents=True, exist_ok=True)
    for old in site_dir.glob("tensorrt-*.dist-info"):
        shutil.rmtree(old)
    pkg = site_dir / "tensorrt"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir()
    text = _TEMPLATE.read_text(encoding="utf-8")
    if _PLACEHOLDER not in text:
        raise RuntimeError("fake tensorrt template lost its release placeholder")
    (pkg / "__init__.py").write_text(text.replace(_PLACEHOLDER, f'_FAKE_RELEASE = "{version}"', 1),
                                     encoding="utf-8")
    info = site_dir / f"tensorrt-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: tensorrt\nVersion: {version}\n"
        "Summary: Fake TensorRT for tests (tests/fakes/fake_tensorrt.py)\n", encoding="utf-8")
    (info / "INSTALLER").write_text("fake\n", encoding="utf-8")
    (info / "RECORD").write_text(
        f"tensorrt/__init__.py,,\n{info.name}/METADATA,,\n{info.name}/INSTALLER,,\n{info.name}/RECORD,,\n",
        encoding="utf-8")
    return site_dir


def read_plan_header(plan: bytes | bytearray | memoryview) -> dict:
    """Decode the JSON header of a fake plan (raises ValueError if it is not one).

    The dict has: format, trt_version, compute_capability, strongly_typed, explicit_batch,
    flags (BuilderFlag names set), fp16, int8, precision, onnx_types, workspace_bytes,
    builder_optimization_level, timing_cache {used, hit}, num_layers, inputs, outputs
    ({name, shape, dtype, symbols}), profiles ([{input: {min, opt, max}}]), padding_bytes,
    padding_sha256; plus ``version_bytes`` (the 4 version bytes at offset 24).
    """
    data = bytes(plan)
    if len(data) < PLAN_PREFIX_BYTES or struct.unpack_from("<I", data, 0)[0] != PLAN_TAG:
        raise ValueError("not a fake TensorRT plan")
    (n,) = struct.unpack_from("<I", data, 28)
    header = json.loads(data[PLAN_PREFIX_BYTES:PLAN_PREFIX_BYTES + n].decode())
    header["version_bytes"] = list(data[24:28])
    return header


@functools.lru_cache(maxsize=None)
def load_api_names(version: str) -> tuple[str, ...]:
    """Lines of tests/fakes/tensorrt_api/<version>.txt (names in the real bindings)."""
    return tuple(line.strip() for line in (API_DIR / f"{version}.txt").read_text().splitlines() if line.strip())


@functools.lru_cache(maxsize=None)
def name_in_release(name: str, version: str) -> bool:
    """True if some line of the release's list ends with ``name`` (the README's endswith rule)."""
    return any(line.endswith(name) for line in load_api_names(version))


def missing_names(names: list[str] | set[str], version: str) -> list[str]:
    """Names (``X`` or dotted ``Class.attr``) with a component absent from the release list."""
    bad = []
    for name in sorted(set(names)):
        if any(not name_in_release(part, version) for part in name.split(".") if part):
            bad.append(name)
    return bad


def read_access_log(path: Path) -> tuple[set[str], set[str]]:
    """Parse a FAKE_TRT_ACCESS_LOG file: (names found, names probed but absent, ``?`` lines)."""
    hits: set[str] = set()
    misses: set[str] = set()
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.startswith("?"):
                misses.add(line[1:])
            elif line:
                hits.add(line)
    return hits, misses


def offered_names(module) -> set[str]:
    """Every public name the fake module offers: ``X`` for module attributes and
    ``Class.attr`` for class attributes, methods, properties and enum members
    (recursing into nested classes such as ``ILogger.Severity``)."""
    names: set[str] = set()
    seen: set[int] = set()

    def visit_class(cls: type) -> None:
        if id(cls) in seen:
            return
        seen.add(id(cls))
        for attr in dir(cls):
            if attr.startswith("_") or not hasattr(cls, attr):
                continue
            names.add(f"{cls.__name__}.{attr}")
            value = getattr(cls, attr)
            if isinstance(value, type) and value.__module__ == module.__name__:
                names.add(value.__name__)
                visit_class(value)

    for attr in dir(module):
        if attr.startswith("_"):
            continue
        names.add(attr)
        value = getattr(module, attr)
        if isinstance(value, type):
            visit_class(value)
    return names
