"""Fake pycuda.driver: devices from FAKE_GPUS_JSON, host-side "device" memory, fake events.

Knobs (read at call time):
  FAKE_GPUS_JSON      GPU list (see tests/fakes/gpus.py); unset -> one RTX 4090 with
                      compute capability FAKE_TRT_CC (default 8.9); empty list -> init() fails.
  FAKE_CUDA_EVENT_MS  comma-separated milliseconds returned in turn (cycling) by
                      Event.time_till / Event.time_since; unset -> measured wall time.
"""
import builtins as _builtins
import itertools as _itertools
import json as _json
import os as _os
import time as _time


class Error(Exception):
    """Base of pycuda driver errors."""


class LogicError(Error):
    """Misuse of the API (no context, invalid handle, ...)."""


class RuntimeError(Error, _builtins.RuntimeError):  # noqa: A001 - real pycuda name
    """Runtime failure reported by the driver."""


class MemoryError(Error, _builtins.MemoryError):  # noqa: A001 - real pycuda name
    """Out of device memory."""


_initialized = False
_context_stack = []
_memory = {}  # ptr -> bytearray
_top = 0x7F0000000000  # bump allocator for fake device addresses
_next_handle = _itertools.count(0x5000)
_event_index = 0


def _gpus():
    path = _os.environ.get("FAKE_GPUS_JSON")
    if path:
        with open(path, encoding="utf-8") as fh:
            doc = _json.load(fh)
        gpus = doc if isinstance(doc, list) else doc.get("gpus", [])
    else:
        gpus = [{"name": "NVIDIA GeForce RTX 4090", "memory_total_mib": 24564,
                 "compute_cap": _os.environ.get("FAKE_TRT_CC", "8.9")}]
    return gpus


def init(flags=0):
    global _initialized
    if not _gpus():
        raise RuntimeError("cuInit failed: no CUDA-capable device is detected")
    _initialized = True


def _need_init(fn):
    if not _initialized:
        raise LogicError(f"{fn} failed: initialization error")


def _need_context(fn):
    if not _context_stack:
        raise LogicError(f"{fn} failed: invalid device context - no currently active context?")
    return _context_stack[-1]


class Device:
    """CUDA device by ordinal."""

    def __init__(self, number):
        _need_init("cuDeviceGet")
        gpus = _gpus()
        if not 0 <= int(number) < len(gpus):
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self._ordinal = int(number)
        self._spec = gpus[self._ordinal]

    @staticmethod
    def count():
        _need_init("cuDeviceGetCount")
        return len(_gpus())

    def name(self):
        return self._spec["name"]

    def compute_capability(self):
        major, _, minor = str(self._spec["compute_cap"]).partition(".")
        return (int(major), int(minor or 0))

    def total_memory(self):
        return int(self._spec["memory_total_mib"]) * 1024 * 1024

    def make_context(self, flags=0):
        ctx = Context(self)
        _context_stack.append(ctx)
        return ctx

    def retain_primary_context(self):
        """The device's primary context (the one the CUDA runtime and TensorRT use); not pushed."""
        return Context(self)

    def __eq__(self, other):
        return isinstance(other, Device) and other._ordinal == self._ordinal

    def __hash__(self):
        return hash(self._ordinal)


class Context:
    """Context stack entry; ``pop`` is static as in pycuda."""

    def __init__(self, device):
        self._device = device

    @staticmethod
    def pop():
        _need_context("cuCtxPopCurrent")
        _context_stack.pop()

    def push(self):
        _context_stack.append(self)

    def detach(self):
        if self in _context_stack:
            _context_stack.remove(self)

    @staticmethod
    def synchronize():
        _need_context("cuCtxSynchronize")

    @staticmethod
    def get_device():
        return _need_context("cuCtxGetDevice")._device


class DeviceAllocation:
    """Device pointer; int(alloc) gives the address."""

    def __init__(self, ptr, size):
        self._ptr = ptr
        self._size = size

    def __int__(self):
        return self._ptr

    __index__ = __int__

    def free(self):
        _memory.pop(self._ptr, None)


def mem_alloc(bytesize):
    _need_context("cuMemAlloc")
    size = int(bytesize)
    if size <= 0:
        raise LogicError("cuMemAlloc failed: invalid argument")
    free, _ = mem_get_info()
    if size > free:
        raise MemoryError("cuMemAlloc failed: out of memory")
    global _top
    ptr = _top
    _top += (size + 511) // 512 * 512
    _memory[ptr] = bytearray(size)
    return DeviceAllocation(ptr, size)


def mem_get_info():
    ctx = _need_context("cuMemGetInfo")
    total = ctx._device.total_memory()
    used = 512 * 1024 * 1024 + sum(len(b) for b in _memory.values())
    return (max(0, total - used), total)


def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
    import numpy
    return numpy.empty(shape, dtype=dtype, order=order)


def _device_buffer(ptr, fn):
    ptr = int(ptr)
    buf = _memory.get(ptr)
    if buf is None:
        raise LogicError(f"{fn} failed: invalid argument")
    return buf


def memcpy_htod(dest, src):
    _need_context("cuMemcpyHtoD")
    data = memoryview(src).cast("B")
    buf = _device_buffer(dest, "cuMemcpyHtoD")
    if data.nbytes > len(buf):
        raise LogicError("cuMemcpyHtoD failed: invalid argument")
    buf[:data.nbytes] = data


def memcpy_dtoh(dest, src):
    _need_context("cuMemcpyDtoH")
    out = memoryview(dest).cast("B")
    buf = _device_buffer(src, "cuMemcpyDtoH")
    if out.nbytes > len(buf):
        raise LogicError("cuMemcpyDtoH failed: invalid argument")
    out[:] = buf[:out.nbytes]


def memcpy_htod_async(dest, src, stream=None):
    memcpy_htod(dest, src)


def memcpy_dtoh_async(dest, src, stream=None):
    memcpy_dtoh(dest, src)


class Stream:
    """CUDA stream; ``handle`` is an int for TensorRT's execute_async_v3."""

    def __init__(self, flags=0):
        _need_context("cuStreamCreate")
        self.handle = next(_next_handle)

    def synchronize(self):
        return None

    def is_done(self):
        return True


class Event:
    """CUDA event; elapsed times come from FAKE_CUDA_EVENT_MS when set."""

    def __init__(self, flags=0):
        _need_context("cuEventCreate")
        self._t = None

    def record(self, stream=None):
        self._t = _time.perf_counter()
        return self

    def synchronize(self):
        return self

    def query(self):
        return True

    def time_till(self, end):
        if self._t is None or end._t is None:
            raise LogicError("cuEventElapsedTime failed: invalid resource handle")
        seq = [s for s in _os.environ.get("FAKE_CUDA_EVENT_MS", "").split(",") if s.strip()]
        if seq:
            global _event_index
            value = float(seq[_event_index % len(seq)])
            _event_index += 1
            return value
        return (end._t - self._t) * 1000.0

    def time_since(self, start):
        return start.time_till(self)
