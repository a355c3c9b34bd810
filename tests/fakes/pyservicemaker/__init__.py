"""Importable as `pyservicemaker` when tests/fakes is on sys.path: re-exports the fake."""
from fake_pyservicemaker import *  # noqa: F401,F403
from fake_pyservicemaker import PIPELINES  # noqa: F401
