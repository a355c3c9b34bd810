"""Example GPU specs shared by the fakes (pynvml, nvidia-smi stub, pycuda).

A spec is a dict: ``name``, ``compute_cap`` ("8.9"), ``memory_total_mib``; optional
``memory_free_mib`` (default: total - 512), ``uuid`` (default: derived from index and name),
``index`` (default: position in the list).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

GPU_RTX_4090: dict = {"name": "NVIDIA GeForce RTX 4090", "compute_cap": "8.9", "memory_total_mib": 24564}
GPU_RTX_3060: dict = {"name": "NVIDIA GeForce RTX 3060", "compute_cap": "8.6", "memory_total_mib": 12288}
GPU_H100: dict = {"name": "NVIDIA H100 80GB HBM3", "compute_cap": "9.0", "memory_total_mib": 81559}

DEFAULT_DRIVER = "580.95.05"
DEFAULT_CUDA_DRIVER = 13000  # as nvmlSystemGetCudaDriverVersion reports it (13.0)


def normalize_gpus(gpus: list[dict] | None) -> list[dict]:
    """Fill the optional keys of each spec; returns new dicts."""
    out = []
    for pos, spec in enumerate(gpus or []):
        g = dict(spec)
        g.setdefault("index", pos)
        total = int(g["memory_total_mib"])
        g.setdefault("memory_free_mib", max(0, total - 512))
        g.setdefault("memory_used_mib", total - int(g["memory_free_mib"]))
        if "uuid" not in g:
            h = hashlib.sha1(f"{g['index']}:{g['name']}".encode()).hexdigest()
            g["uuid"] = f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        g["compute_cap"] = str(g["compute_cap"])
        out.append(g)
    return out


def write_gpus_json(path: Path, gpus: list[dict] | None, driver: str = DEFAULT_DRIVER,
                    cuda_driver: int = DEFAULT_CUDA_DRIVER) -> Path:
    """Write the FAKE_GPUS_JSON file read by the nvidia-smi stub and the fake pycuda."""
    doc = {"driver": driver, "cuda_driver": cuda_driver, "gpus": normalize_gpus(gpus)}
    Path(path).write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return Path(path)


def read_gpus_json(path: str | os.PathLike | None = None) -> dict | None:
    """Read FAKE_GPUS_JSON (a list of specs or {driver, cuda_driver, gpus}); None if unset."""
    path = path or os.environ.get("FAKE_GPUS_JSON")
    if not path or not Path(path).exists():
        return None
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(doc, list):
        doc = {"gpus": doc}
    doc.setdefault("driver", DEFAULT_DRIVER)
    doc.setdefault("cuda_driver", DEFAULT_CUDA_DRIVER)
    doc["gpus"] = normalize_gpus(doc.get("gpus"))
    return doc
