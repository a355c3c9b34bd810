"""Install a fake ``pycuda`` package (driver + autoinit) for benchmark/smoke tests.

Follows the real pycuda names; see ``_pycuda/driver.py`` for the env knobs
(FAKE_GPUS_JSON, FAKE_TRT_CC, FAKE_CUDA_EVENT_MS).
"""
from __future__ import annotations

import shutil
from pathlib import Path

_SRC = Path(__file__).resolve().parent / "_pycuda"


def install_fake_pycuda(site_dir: Path) -> Path:
    """Write ``site_dir/pycuda/{__init__,driver,autoinit}.py``; return ``site_dir``."""
    site_dir = Path(site_dir)
    dest = site_dir / "pycuda"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("__init__.py", "driver.py", "autoinit.py"):
        shutil.copyfile(_SRC / name, dest / name)
    return site_dir
