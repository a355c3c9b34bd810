"""Fake pycuda package (installed by tests/fakes/fake_pycuda.py)."""
VERSION = (2025, 1)
VERSION_STATUS = ""
VERSION_TEXT = "2025.1"
