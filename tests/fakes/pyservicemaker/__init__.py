"""Importable as `pyservicemaker` when tests/fakes is on sys.path: exactly the module names listed in
tests/fakes/deepstream_names.toml ([module]), from the fake (tests/fakes/fake_pyservicemaker.py)."""
from fake_pyservicemaker import BatchMetadataOperator, Pipeline, Probe

__all__ = ["BatchMetadataOperator", "Pipeline", "Probe"]
