"""Fake ``tensorrt`` module (template; see tests/fakes/fake_tensorrt.py).

``install_fake_tensorrt`` copies this file to ``<site>/tensorrt/__init__.py`` with the
release placeholder filled in. It depends only on the standard library (and ``onnx`` when
a model is parsed), so it works in a subprocess with just ``PYTHONPATH=<site>``.

Every public name offered here must exist in the real release (checked by
tests/test_fakes.py against tests/fakes/tensorrt_api/<release>.txt). Internal helpers are
private (leading underscore) on purpose: a public helper would be a name the real module
lacks.
"""
from __future__ import annotations

import hashlib as _hashlib
import json as _json
import os as _os
import signal as _signal
import struct as _struct
import sys as _sys
import threading as _threading
import time as _time
import types as _types

del annotations  # keep the module namespace to real TensorRT names only

_FAKE_RELEASE = "__FAKE_TRT_RELEASE__"
if _FAKE_RELEASE.startswith("__"):
    raise ImportError("fake tensorrt template used without install_fake_tensorrt()")

_MAJOR = int(_FAKE_RELEASE.split(".")[0])
_VERSION_BYTES = bytes(([int(p) for p in _FAKE_RELEASE.split(".")] + [0, 0, 0])[:4])  # 8.6.1 -> 8,6,1,0
_HAS_MONITOR = _MAJOR >= 10  # IProgressMonitor / IBuilderConfig.progress_monitor
_HAS_WEAK_TYPING = _MAJOR < 11  # BuilderFlag.FP16/INT8, platform_has_fast_*
_ALWAYS_STRONGLY_TYPED = _MAJOR >= 11
_ALWAYS_EXPLICIT_BATCH = _MAJOR >= 10

__version__ = _FAKE_RELEASE

# Plan layout (first 28 bytes follow the real plan prefix read by trtexec --getPlanVersionOnly):
#   0..3   uint32 LE 0x74727466 (b"ftrt")      4..7 uint32 0
#   8..23  b"FAKETRTPLAN" padded with NUL       24..27 version bytes major.minor.patch.build
#   28..31 uint32 LE length N of the JSON header, 32..32+N JSON (utf-8), then padding bytes.
_PLAN_TAG = 0x74727466
_PLAN_MARK = b"FAKETRTPLAN".ljust(16, b"\0")
_PLAN_PREFIX = 32
_CACHE_MAGIC = b"FTRTTC01"


# --------------------------------------------------------------------------- env knobs
def _env_cc() -> str:
    return _os.environ.get("FAKE_TRT_CC", "8.9").strip()


def _env_float(name: str, default: float) -> float:
    try:
        return float(_os.environ.get(name, default))
    except ValueError:
        return default


def _log_access(line: str) -> None:
    path = _os.environ.get("FAKE_TRT_ACCESS_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


# --------------------------------------------------------------------------- access logging
class _Meta(type):
    """Metaclass logging ``Class.attr`` for class-level access of fake classes."""

    def __getattribute__(cls, name: str):
        public = not name.startswith("_")
        try:
            value = type.__getattribute__(cls, name)
        except AttributeError:
            if public and type.__getattribute__(cls, "__module__") == __name__:
                _log_access("?" + type.__getattribute__(cls, "__name__") + "." + name)
            raise
        if public and type.__getattribute__(cls, "__module__") == __name__:
            _log_access(type.__getattribute__(cls, "__name__") + "." + name)
        return value


class _Obj(metaclass=_Meta):
    """Base of fake objects: logs ``Class.attr`` for instance attribute access."""

    def __getattribute__(self, name: str):
        public = not name.startswith("_")
        cls = type(self)
        ours = public and type.__getattribute__(cls, "__module__") == __name__
        try:
            value = object.__getattribute__(self, name)
        except AttributeError:
            if ours:
                _log_access("?" + type.__getattribute__(cls, "__name__") + "." + name)
            raise
        if ours:
            _log_access(type.__getattribute__(cls, "__name__") + "." + name)
        return value


class _TrampolineMeta(_Meta):
    """Like pybind11 trampolines: a subclass must call the base ``__init__``."""

    def __call__(cls, *args, **kwargs):
        obj = type.__call__(cls, *args, **kwargs)
        if not obj.__dict__.get("_trt_base_init", False):
            base = next(c for c in cls.__mro__ if type.__getattribute__(c, "__module__") == __name__)
            raise TypeError(f"{cls.__name__}.__init__() must be called when overriding __init__"
                            f" (call {base.__name__}.__init__(self))")
        return obj


class _LoggedModule(_types.ModuleType):
    def __getattribute__(self, name: str):
        public = not name.startswith("_")
        try:
            value = _types.ModuleType.__getattribute__(self, name)
        except AttributeError:
            if public:
                _log_access("?" + name)
            raise
        if public:
            _log_access(name)
        return value


# --------------------------------------------------------------------------- enums
class _Enum(_Obj):
    """pybind11-style enum value: int(), .name, .value, strict comparisons."""

    def __init__(self, name: str, value: int) -> None:
        self._name = name
        self._value = value

    @property
    def name(self) -> str:
        return self._name

    @property
    def value(self) -> int:
        return self._value

    def __int__(self) -> int:
        return self._value

    def __index__(self) -> int:
        return self._value

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._value == self._value

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def _cmp(self, other: object) -> int:
        if type(other) is not type(self):
            raise TypeError("'<' not supported between instances of different enum types")
        return self._value - other._value

    def __lt__(self, other: object) -> bool:
        return self._cmp(other) < 0

    def __le__(self, other: object) -> bool:
        return self._cmp(other) <= 0

    def __gt__(self, other: object) -> bool:
        return self._cmp(other) > 0

    def __ge__(self, other: object) -> bool:
        return self._cmp(other) >= 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self._name}: {self._value}>"

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self._name}"


def _enum(name: str, members: dict[str, int]) -> type:
    cls = _Meta(name, (_Enum,), {"__module__": __name__, "__qualname__": name})
    table = {}
    for key, val in members.items():
        member = cls(key, val)
        type.__setattr__(cls, key, member)
        table[key] = member
    type.__setattr__(cls, "__members__", table)
    return cls


def _members(cls: type) -> dict:
    return type.__getattribute__(cls, "__members__")


# Severity order as in the real ILogger.Severity.
_SEVERITIES = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}
_SEV_LETTER = {0: "F", 1: "E", 2: "W", 3: "I", 4: "V"}

_FLAG_VALUES = {
    "FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5,
    "TF32": 6, "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "OBEY_PRECISION_CONSTRAINTS": 9,
    "PREFER_PRECISION_CONSTRAINTS": 10, "DIRECT_IO": 11, "VERSION_COMPATIBLE": 13, "BF16": 17,
    "STRIP_PLAN": 19,
}
_FLAGS_BY_MAJOR = {
    8: ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
        "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS",
        "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "VERSION_COMPATIBLE"],
    10: ["FP16", "INT8", "BF16", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
         "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS",
         "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "VERSION_COMPATIBLE", "STRIP_PLAN"],
    11: ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS",
         "SAFETY_SCOPE", "DIRECT_IO", "VERSION_COMPATIBLE", "STRIP_PLAN"],
}
_WEAK_PRECISION_FLAGS = ("FP16", "INT8", "BF16")

BuilderFlag = _enum("BuilderFlag", {k: _FLAG_VALUES[k] for k in _FLAGS_BY_MAJOR[_MAJOR]})

if _MAJOR == 8:
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0})
elif _MAJOR == 10:
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag",
                                          {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
else:
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})

MemoryPoolType = _enum("MemoryPoolType", {"WORKSPACE": 0})
TensorIOMode = _enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})

_DTYPES = {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5}
if _MAJOR >= 10:
    _DTYPES.update({"BF16": 7, "INT64": 8})
DataType = _enum("DataType", _DTYPES)

ErrorCode = _enum("ErrorCode", {
    "SUCCESS": 0, "INTERNAL_ERROR": 1, "MODEL_DESERIALIZE_FAILED": 3, "INVALID_VALUE": 4,
    "INVALID_GRAPH": 5, "UNSUPPORTED_NODE": 8,
})

# ONNX TensorProto elem_type -> (readable name, DataType member name or None if unsupported).
_ONNX_TYPES = {
    1: ("float32", "FLOAT"), 2: ("uint8", "UINT8"), 3: ("int8", "INT8"), 6: ("int32", "INT32"),
    7: ("int64", "INT64"), 9: ("bool", "BOOL"), 10: ("float16", "HALF"), 11: ("float64", None),
    16: ("bfloat16", "BF16"),
}


# --------------------------------------------------------------------------- small value types
class Dims(_Obj):
    """Shape object; compares equal to tuples/lists, supports len/index/iteration."""

    MAX_DIMS = 8

    def __init__(self, shape=()) -> None:
        self._d = tuple(int(x) for x in shape)

    def __len__(self) -> int:
        return len(self._d)

    def __getitem__(self, i):
        return self._d[i]

    def __iter__(self):
        return iter(self._d)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Dims):
            return self._d == other._d
        if isinstance(other, (tuple, list)):
            return self._d == tuple(other)
        return False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self._d)

    __str__ = __repr__


def _dims_tuple(shape) -> tuple[int, ...]:
    if isinstance(shape, Dims):
        return shape._d
    return tuple(int(x) for x in shape)


# The real IHostMemory offers only the buffer protocol and a few properties; hide the
# bytes methods this fake inherits from class-level access and dir().
_IHM_ALLOWED = frozenset({"nbytes"})
_IHM_HIDDEN = frozenset(n for n in dir(bytes) if not n.startswith("_")) - _IHM_ALLOWED


class _IHMMeta(_Meta):
    def __getattribute__(cls, name: str):
        if name in _IHM_HIDDEN:
            raise AttributeError(f"type object 'IHostMemory' has no attribute '{name}'")
        return _Meta.__getattribute__(cls, name)

    def __dir__(cls):
        return [n for n in type.__dir__(cls) if n not in _IHM_HIDDEN]


class IHostMemory(bytes, metaclass=_IHMMeta):
    """Host buffer: supports bytes(obj), memoryview(obj), file.write(obj) and ``nbytes`` only."""

    def __new__(cls, *args, **kwargs):
        raise TypeError("tensorrt.IHostMemory: No constructor defined!")

    def __getattribute__(self, name: str):
        if not name.startswith("_"):
            if name not in _IHM_ALLOWED:
                _log_access("?IHostMemory." + name)
                raise AttributeError(f"'tensorrt.IHostMemory' object has no attribute '{name}'")
            _log_access("IHostMemory." + name)
        return bytes.__getattribute__(self, name)

    @property
    def nbytes(self) -> int:
        return bytes.__len__(self)

    def __len__(self):
        raise TypeError("object of type 'IHostMemory' has no len()")

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, item):
        raise TypeError("'IHostMemory' object is not subscriptable")

    def __iter__(self):
        raise TypeError("'IHostMemory' object is not iterable")

    def __contains__(self, item):
        raise TypeError("argument of type 'IHostMemory' is not iterable")

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return id(self)

    def __add__(self, other):
        return NotImplemented

    __mul__ = __rmul__ = __mod__ = __rmod__ = __add__

    def __lt__(self, other):
        return NotImplemented

    __le__ = __gt__ = __ge__ = __lt__

    def __repr__(self) -> str:
        return f"<tensorrt.tensorrt.IHostMemory object at {id(self):#x}>"

    __str__ = __repr__


def _host_memory(data: bytes) -> IHostMemory:
    return bytes.__new__(IHostMemory, data)




def _as_bytes(data) -> bytes:
    if isinstance(data, IHostMemory):
        return bytes(memoryview(data))
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"expected a buffer (bytes, bytearray, memoryview, IHostMemory), got {type(data).__name__}")


# --------------------------------------------------------------------------- logging
class ILogger(_Obj, metaclass=_TrampolineMeta):
    """Abstract logger; subclasses implement ``log(severity, msg)``."""

    Severity = _enum("Severity", _SEVERITIES)

    def __init__(self) -> None:
        self._trt_base_init = True

    def log(self, severity, msg: str) -> None:
        raise RuntimeError('Tried to call pure virtual function "ILogger::log"')


for _k in _SEVERITIES:  # pybind11 export_values(): ILogger.WARNING etc.
    type.__setattr__(ILogger, _k, _members(type.__getattribute__(ILogger, "Severity"))[_k])


class Logger(ILogger):
    """Default logger printing ``[TRT] [W] msg`` to stderr up to ``min_severity``."""

    def __init__(self, min_severity=None) -> None:
        ILogger.__init__(self)
        sev = _members(type.__getattribute__(ILogger, "Severity"))
        self._min = sev["WARNING"] if min_severity is None else min_severity

    @property
    def min_severity(self):
        return self._min

    @min_severity.setter
    def min_severity(self, value) -> None:
        self._min = value

    def log(self, severity, msg: str) -> None:
        if int(severity) <= int(self._min):
            stamp = _time.strftime("%m/%d/%Y-%H:%M:%S")
            print(f"[{stamp}] [TRT] [{_SEV_LETTER[int(severity)]}] {msg}", file=_sys.stderr, flush=True)


def _emit(logger, level: str, msg: str) -> None:
    sev = _members(type.__getattribute__(ILogger, "Severity"))[level]
    logger.log(sev, msg)


def _check_logger(logger) -> None:
    if not isinstance(logger, ILogger):
        raise TypeError("incompatible function arguments: expected a tensorrt.ILogger")


def init_libnvinfer_plugins(logger, namespace: str) -> bool:
    """Register the (fake) standard plugins; always succeeds."""
    _check_logger(logger)
    return True


# --------------------------------------------------------------------------- network + parser
class ITensor(_Obj):
    """Network input/output tensor."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype, symbols: list) -> None:
        self._name = name
        self._shape = tuple(shape)
        self._dtype = dtype
        self._symbols = list(symbols)

    @property
    def name(self) -> str:
        return self._name

    @property
    def shape(self) -> Dims:
        return Dims(self._shape)

    @property
    def dtype(self):
        return self._dtype


class INetworkDefinition(_Obj):
    """Network populated by ``OnnxParser``."""

    def __init__(self, flags: int) -> None:
        self._flags = int(flags)
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._num_layers = 0
        self._onnx_types: set[str] = set()
        self._onnx_path: str | None = None  # what execute_async_v3 runs through onnxruntime
        nd = _members(NetworkDefinitionCreationFlag)
        self._explicit_batch = _ALWAYS_EXPLICIT_BATCH or bool(self._flags & (1 << int(nd["EXPLICIT_BATCH"])))
        st = nd.get("STRONGLY_TYPED")
        self._strongly_typed = _ALWAYS_STRONGLY_TYPED or (st is not None and bool(self._flags & (1 << int(st))))

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def num_layers(self) -> int:
        return self._num_layers

    def get_input(self, index: int):
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def get_output(self, index: int):
        return self._outputs[index] if 0 <= index < len(self._outputs) else None


class ParserError(_Obj):
    """One ONNX parser error."""

    def __init__(self, code, desc: str, node: int = -1, func: str = "parseGraph") -> None:
        self._code, self._desc, self._node, self._func = code, desc, node, func

    def code(self):
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def func(self) -> str:
        return self._func

    def file(self) -> str:
        return "ModelImporter.cpp"

    def line(self) -> int:
        return 0

    def __str__(self) -> str:
        return f"In node {self._node} with name:  and operator:  ({self._func}): {self._code._name}: {self._desc}"


class OnnxParser(_Obj):
    """Reads ONNX bytes with the ``onnx`` package and fills the network's inputs/outputs."""

    def __init__(self, network: INetworkDefinition, logger) -> None:
        if not isinstance(network, INetworkDefinition):
            raise TypeError("OnnxParser(): incompatible constructor arguments")
        _check_logger(logger)
        self._network = network
        self._logger = logger
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int):
        return self._errors[index] if 0 <= index < len(self._errors) else None

    def clear_errors(self) -> None:
        self._errors.clear()

    def _fail(self, code: str, desc: str) -> bool:
        err = ParserError(_members(ErrorCode)[code], desc)
        self._errors.append(err)
        _emit(self._logger, "ERROR", f"ModelImporter.cpp:0 In function parseGraph: {code}: {desc}")
        return False

    def parse_from_file(self, model: str) -> bool:
        try:
            with open(model, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            return self._fail("MODEL_DESERIALIZE_FAILED", f"Failed to open file: {model} ({exc})")
        return self.parse(data, model)

    def parse(self, model, path: str | None = None) -> bool:
        data = _as_bytes(model)
        net = self._network
        if not net._explicit_batch:
            return self._fail(
                "INVALID_VALUE",
                "This version of the ONNX parser only supports TensorRT INetworkDefinitions with an "
                "explicit batch dimension. Please ensure the network was initialized with the "
                "EXPLICIT_BATCH NetworkDefinitionCreationFlag.")
        import onnx  # lazy: heavy import
        try:
            proto = onnx.ModelProto()
            proto.ParseFromString(data)
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
            return self._fail("MODEL_DESERIALIZE_FAILED", f"Failed to parse ONNX model from buffer ({exc})")
        graph = proto.graph
        if not data or not graph.output:
            return self._fail("INVALID_GRAPH", "Failed to parse ONNX model: graph has no outputs")
        base = _os.path.dirname(path) if path else None
        for init in graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                loc = {e.key: e.value for e in init.external_data}.get("location", "")
                if base is None or not _os.path.exists(_os.path.join(base, loc)):
                    return self._fail("MODEL_DESERIALIZE_FAILED",
                                      f"Failed to open external weights file {loc!r} for {init.name!r}")
        init_names = {i.name for i in graph.initializer}
        types: set[str] = set()
        for init in graph.initializer:
            types.add(_ONNX_TYPES.get(init.data_type, (str(init.data_type), None))[0])
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Cast" and attr.name == "to":
                    types.add(_ONNX_TYPES.get(attr.i, (str(attr.i), None))[0])
        inputs, outputs = [], []
        for kind, src, dst in (("input", graph.input, inputs), ("output", graph.output, outputs)):
            for vi in src:
                if vi.name in init_names:
                    continue
                tt = vi.type.tensor_type
                tname, trt_name = _ONNX_TYPES.get(tt.elem_type, (str(tt.elem_type), None))
                types.add(tname)
                if trt_name == "INT64" and _MAJOR < 10:
                    _emit(self._logger, "WARNING", "Your ONNX model has been generated with INT64 weights, "
                          "while TensorRT does not natively support INT64. Attempting to cast down to INT32.")
                    trt_name = "INT32"
                if trt_name is None or trt_name not in _members(DataType):
                    return self._fail("UNSUPPORTED_NODE", f"{kind} {vi.name!r} has unsupported data type {tname}")
                shape, symbols = [], []
                for d in tt.shape.dim:
                    if d.HasField("dim_value") and d.dim_value > 0:
                        shape.append(int(d.dim_value))
                        symbols.append(None)
                    else:
                        shape.append(-1)
                        symbols.append(d.dim_param or None)
                dst.append(ITensor(vi.name, tuple(shape), _members(DataType)[trt_name], symbols))
        net._inputs, net._outputs = inputs, outputs
        net._num_layers = len(graph.node)
        net._onnx_types = types
        # an AutoCast copy (tests/fakes/fake_modelopt.py) names the FP32 ONNX it came from
        source = {p.key: p.value for p in proto.metadata_props}.get("fake_autocast_source")
        net._onnx_path = _os.path.abspath(source or path) if (source or path) else None
        return True


# --------------------------------------------------------------------------- builder config
class IOptimizationProfile(_Obj):
    """min/opt/max shapes per input."""

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def set_shape(self, input: str, min, opt, max) -> None:  # noqa: A002 - real parameter names
        mn, op, mx = _dims_tuple(min), _dims_tuple(opt), _dims_tuple(max)
        for label, dims in (("min", mn), ("opt", op), ("max", mx)):
            if len(dims) != len(mn) or len(dims) > Dims.MAX_DIMS or any(d < 0 for d in dims):
                raise RuntimeError(f"{label} input provided to optimization profile is invalid.")
        if any(a > b for a, b in zip(mn, op, strict=False)):
            raise RuntimeError("opt input provided to optimization profile is invalid.")
        if any(a > b for a, b in zip(op, mx, strict=False)):
            raise RuntimeError("max input provided to optimization profile is invalid.")
        self._shapes[input] = (mn, op, mx)

    def get_shape(self, input: str) -> list:  # noqa: A002
        if input not in self._shapes:
            return []
        return [Dims(s) for s in self._shapes[input]]


class ITimingCache(_Obj):
    """Timing cache keyed by device compute capability and TRT version."""

    def __init__(self, cc: str, entries: dict[str, str]) -> None:
        self._cc = cc
        self._entries = dict(entries)

    def serialize(self) -> IHostMemory:
        body = _json.dumps({"trt_version": _FAKE_RELEASE, "compute_capability": self._cc,
                            "entries": self._entries}, sort_keys=True).encode()
        return _host_memory(_CACHE_MAGIC + body)

    def combine(self, input_cache, ignore_mismatch: bool) -> bool:
        if not isinstance(input_cache, ITimingCache):
            raise TypeError("combine(): incompatible function arguments")
        if input_cache._cc != self._cc and not ignore_mismatch:
            return False
        self._entries.update(input_cache._entries)
        return True


if _HAS_MONITOR:
    class IProgressMonitor(_Obj, metaclass=_TrampolineMeta):
        """Build progress callbacks; ``step_complete`` returning False cancels the build."""

        def __init__(self) -> None:
            self._trt_base_init = True

        def phase_start(self, phase_name: str, parent_phase, num_steps: int) -> None:
            raise RuntimeError('Tried to call pure virtual function "IProgressMonitor::phase_start"')

        def step_complete(self, phase_name: str, step: int) -> bool:
            raise RuntimeError('Tried to call pure virtual function "IProgressMonitor::step_complete"')

        def phase_finish(self, phase_name: str) -> None:
            raise RuntimeError('Tried to call pure virtual function "IProgressMonitor::phase_finish"')


class IBuilderConfig(_Obj):
    """Builder configuration."""

    def __init__(self, logger) -> None:
        self._logger = logger
        self._flags: set[str] = {"TF32"}
        self._pools = {"WORKSPACE": 24564 * 1024 * 1024}
        self._pools_set: set[str] = set()
        self._profiles: list[IOptimizationProfile] = []
        self._opt_level = 3
        self._cache: ITimingCache | None = None
        self._monitor = None

    def set_memory_pool_limit(self, pool, pool_size: int) -> None:
        if int(pool_size) < 0:
            raise ValueError("pool_size must be >= 0")
        self._pools[pool._name] = int(pool_size)
        self._pools_set.add(pool._name)

    def get_memory_pool_limit(self, pool) -> int:
        return self._pools.get(pool._name, 0)

    def set_flag(self, flag) -> None:
        if type(flag) is not BuilderFlag:
            raise TypeError("set_flag(): incompatible function arguments (expected tensorrt.BuilderFlag)")
        self._flags.add(flag._name)

    def clear_flag(self, flag) -> None:
        self._flags.discard(flag._name)

    def get_flag(self, flag) -> bool:
        return flag._name in self._flags

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not isinstance(profile, IOptimizationProfile):
            raise TypeError("add_optimization_profile(): incompatible function arguments")
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    @property
    def builder_optimization_level(self) -> int:
        return self._opt_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, level: int) -> None:
        if not 0 <= int(level) <= 5:
            _emit(self._logger, "ERROR", f"Parameter check failed: builder optimization level {level} is not in [0, 5]")
            return
        self._opt_level = int(level)

    def create_timing_cache(self, serialized_timing_cache) -> ITimingCache | None:
        data = _as_bytes(serialized_timing_cache)
        if not data:
            return ITimingCache(_env_cc(), {})
        try:
            if not data.startswith(_CACHE_MAGIC):
                raise ValueError("bad magic")
            doc = _json.loads(data[len(_CACHE_MAGIC):].decode())
        except (ValueError, UnicodeDecodeError):
            _emit(self._logger, "ERROR", "Error Code 1: Serialization (Serialization assertion "
                  "magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
            return None
        if doc.get("trt_version") != _FAKE_RELEASE:
            _emit(self._logger, "ERROR", "Error Code 1: Serialization (Serialization assertion "
                  f"timing cache version mismatch: current {_FAKE_RELEASE}, cache {doc.get('trt_version')})")
            return None
        return ITimingCache(str(doc["compute_capability"]), doc.get("entries", {}))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if not isinstance(cache, ITimingCache):
            raise TypeError("set_timing_cache(): incompatible function arguments")
        if cache._cc != _env_cc():
            if not ignore_mismatch:
                _emit(self._logger, "ERROR", "Error Code 3: API Usage Error (The CUDA device property in the "
                      f"provided timing cache (compute {cache._cc}) is different from the current "
                      f"environment (compute {_env_cc()}).)")
                return False
            _emit(self._logger, "WARNING", "Timing cache was created on a different device; mismatch ignored.")
        self._cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._cache

    if _HAS_MONITOR:
        @property
        def progress_monitor(self):
            return self._monitor

        @progress_monitor.setter
        def progress_monitor(self, monitor) -> None:
            if monitor is not None and not isinstance(monitor, IProgressMonitor):
                raise TypeError("progress_monitor must be a tensorrt.IProgressMonitor")
            self._monitor = monitor


# --------------------------------------------------------------------------- build
class _Cancelled(Exception):
    pass


class _BuildClock:
    """Spends the build time in small slices and drives the progress monitor.

    A real build runs in C++: a signal with a Python handler is only noted, and the handler
    runs when control is back in Python (a progress-monitor callback, or the return of
    build_serialized_network). The fake does the same by swapping such handlers for a
    recorder during the build and replaying recorded signals at those points. Signals left
    at SIG_DFL/SIG_IGN are untouched (SIGTERM at SIG_DFL kills at once, as with the real one).
    """

    _SIGS = tuple(getattr(_signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
                  if hasattr(_signal, n))

    def __init__(self, seconds: float, steps: int, monitor) -> None:
        self.per_step = max(0.0, seconds) / max(1, steps)
        self.monitor = monitor
        self.main = _threading.current_thread() is _threading.main_thread()
        self.held: dict = {}
        self.pending: list[int] = []

    def _record(self, signum, frame) -> None:
        self.pending.append(signum)

    def _hold(self) -> None:
        if not self.main:
            return
        self.held = {s: h for s in self._SIGS if callable(h := _signal.getsignal(s))}
        for s in self.held:
            _signal.signal(s, self._record)

    def _release(self) -> None:
        for s, h in self.held.items():
            _signal.signal(s, h)
        self.held = {}
        pending, self.pending = self.pending, []
        for s in pending:
            _signal.raise_signal(s)

    def __enter__(self) -> "_BuildClock":
        self._hold()
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _callback(self, fn, *args):
        self._release()
        try:
            return fn(*args)
        finally:
            self._hold()

    def start(self, name: str, parent, steps: int) -> None:
        if self.monitor is not None:
            self._callback(self.monitor.phase_start, name, parent, steps)

    def finish(self, name: str) -> None:
        if self.monitor is not None:
            self._callback(self.monitor.phase_finish, name)

    def step(self, name: str, index: int, spend: bool = True) -> None:
        if spend:
            remaining = self.per_step
            while remaining > 0:
                chunk = min(0.05, remaining)
                _time.sleep(chunk)
                remaining -= chunk
        if self.monitor is not None:
            if self._callback(self.monitor.step_complete, name, index) is False:
                raise _Cancelled(name)


# (phase, steps) under the top-level phase; only leaf steps spend time.
_TOP_PHASE = "Building engine"
_PHASES = (("Graph optimization", 4), ("Tactic selection", 6), ("Engine serialization", 2))


def _pad_bytes(seed: bytes, n: int) -> bytes:
    block = _hashlib.sha256(seed).digest()
    return (block * (n // len(block) + 1))[:n]


def _make_plan(header: dict) -> bytes:
    n = max(0, int(_env_float("FAKE_TRT_PLAN_BYTES", 4096)))
    pad = _pad_bytes(_json.dumps(header, sort_keys=True).encode(), n)
    header = dict(header, padding_bytes=n, padding_sha256=_hashlib.sha256(pad).hexdigest())
    body = _json.dumps(header, sort_keys=True).encode()
    prefix = (_struct.pack("<II", _PLAN_TAG, 0) + _PLAN_MARK + _VERSION_BYTES
              + _struct.pack("<I", len(body)))
    return prefix + body + pad


class Builder(_Obj):
    """Fake builder: validates network/config and writes a self-describing fake plan."""

    def __init__(self, logger) -> None:
        _check_logger(logger)
        self._logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(int(flags))

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self._logger)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    if _HAS_WEAK_TYPING:
        @property
        def platform_has_fast_fp16(self) -> bool:
            return _cc_tuple(_env_cc()) >= (5, 3) and _cc_tuple(_env_cc()) != (6, 1)

        @property
        def platform_has_fast_int8(self) -> bool:
            return _cc_tuple(_env_cc()) >= (6, 1)

    def _error(self, msg: str) -> None:
        _emit(self._logger, "ERROR", msg)

    def _validate(self, net: INetworkDefinition, cfg: IBuilderConfig) -> list[dict] | None:
        if not net._outputs:
            self._error("Error Code 4: Internal Error (Network must have at least one output)")
            return None
        if net._strongly_typed:
            bad = [f for f in _WEAK_PRECISION_FLAGS if f in cfg._flags]
            if bad:
                self._error("Error Code 3: API Usage Error (Parameter check failed, condition: "
                            f"!config.getFlag(BuilderFlag::k{bad[0]}). Strongly typed networks do not "
                            "accept precision builder flags.)")
                return None
        dynamic = [t for t in net._inputs if any(d < 0 for d in t._shape)]
        if dynamic and not cfg._profiles:
            self._error("Error Code 4: Internal Error (Network has dynamic or shape inputs, but no "
                        "optimization profile has been defined.)")
            return None
        profiles = []
        for idx, prof in enumerate(cfg._profiles):
            entry = {}
            for t in net._inputs:
                shapes = prof._shapes.get(t._name)
                if shapes is None:
                    if any(d < 0 for d in t._shape):
                        self._error(f"Error Code 4: Internal Error (Optimization profile {idx} does not "
                                    f"define dimensions for input tensor {t._name})")
                        return None
                    shapes = (t._shape, t._shape, t._shape)
                for dims in shapes:
                    mismatch = any(n >= 0 and n != d for n, d in zip(t._shape, dims, strict=False))
                    if len(dims) != len(t._shape) or mismatch:
                        self._error(f"Error Code 4: Internal Error ({t._name}: optimization profile {idx} "
                                    f"dimensions {list(dims)} do not match network input dimensions "
                                    f"{list(t._shape)})")
                        return None
                entry[t._name] = {"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])}
            profiles.append(entry)
        if not profiles:
            profiles.append({t._name: {"min": list(t._shape), "opt": list(t._shape), "max": list(t._shape)}
                             for t in net._inputs})
        return profiles

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
        """Build the fake plan; returns IHostMemory or None on failure/cancel."""
        if not isinstance(network, INetworkDefinition) or not isinstance(config, IBuilderConfig):
            raise TypeError("build_serialized_network(): incompatible function arguments")
        net, cfg = network, config
        profiles = self._validate(net, cfg)
        if profiles is None:
            return None
        cc = _env_cc()
        fp16_flag = "FP16" in cfg._flags
        int8_flag = "INT8" in cfg._flags
        signature = _json.dumps({
            "inputs": [[t._name, list(t._shape), t._dtype._name] for t in net._inputs],
            "outputs": [[t._name, list(t._shape), t._dtype._name] for t in net._outputs],
            "layers": net._num_layers, "types": sorted(net._onnx_types), "cc": cc,
            "flags": sorted(f for f in cfg._flags if f in ("FP16", "INT8", "BF16", "TF32", "REFIT")),
        }, sort_keys=True)
        key = _hashlib.sha256(signature.encode()).hexdigest()[:32]
        cache = cfg._cache if "DISABLE_TIMING_CACHE" not in cfg._flags else None
        use_cache = cache is not None and cfg._opt_level > 0
        hit = use_cache and key in cache._entries
        seconds = _env_float("FAKE_TRT_BUILD_SECONDS", 0.0) * (0.25 if hit else 1.0)
        steps = sum(n for _, n in _PHASES)
        fail = _os.environ.get("FAKE_TRT_FAIL_BUILD", "") not in ("", "0")
        monitor = cfg._monitor if _HAS_MONITOR else None
        open_phases: list[str] = []
        clock = _BuildClock(seconds, steps, monitor)
        try:
            with clock:
                clock.start(_TOP_PHASE, None, len(_PHASES))
                open_phases.append(_TOP_PHASE)
                for top_step, (phase, nsteps) in enumerate(_PHASES):
                    clock.start(phase, _TOP_PHASE, nsteps)
                    open_phases.append(phase)
                    for i in range(nsteps):
                        clock.step(phase, i)
                        if fail and phase == "Tactic selection" and i == nsteps // 2:
                            for name in reversed(open_phases):
                                clock.finish(name)
                            open_phases.clear()
                            self._error("Error Code 10: Internal Error (Could not find any implementation "
                                        "for node /model.23/Concat_3 [FAKE_TRT_FAIL_BUILD].)")
                            return None
                    clock.finish(open_phases.pop())
                    clock.step(_TOP_PHASE, top_step, spend=False)
                clock.finish(open_phases.pop())
        except _Cancelled:
            for name in reversed(open_phases):
                clock.finish(name)
            _emit(self._logger, "WARNING", "Engine build was cancelled by the progress monitor.")
            return None
        if use_cache and not hit:
            cache._entries[key] = f"tactic-{key[:8]}"
        strongly = net._strongly_typed
        if strongly:
            precision = "fp16" if "float16" in net._onnx_types else (
                "bf16" if "bfloat16" in net._onnx_types else "fp32")
        else:
            precision = "int8" if int8_flag else ("fp16" if fp16_flag else "fp32")
        header = {
            "format": 1,
            "trt_version": _FAKE_RELEASE,
            "compute_capability": cc,
            "strongly_typed": strongly,
            "explicit_batch": net._explicit_batch,
            "flags": sorted(cfg._flags),
            "fp16": fp16_flag,
            "int8": int8_flag,
            "precision": precision,
            "onnx_types": sorted(net._onnx_types),
            "workspace_bytes": cfg._pools["WORKSPACE"] if "WORKSPACE" in cfg._pools_set else None,
            "builder_optimization_level": cfg._opt_level,
            "timing_cache": {"used": use_cache, "hit": bool(hit)},
            "num_layers": net._num_layers,
            "inputs": [{"name": t._name, "shape": list(t._shape), "dtype": t._dtype._name,
                        "symbols": t._symbols} for t in net._inputs],
            "outputs": [{"name": t._name, "shape": list(t._shape), "dtype": t._dtype._name,
                         "symbols": t._symbols} for t in net._outputs],
            "profiles": profiles,
            "onnx_path": net._onnx_path,
        }
        return _host_memory(_make_plan(header))


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = cc.partition(".")
    return int(major), int(minor or 0)


def _read_plan(data: bytes) -> tuple[dict | None, str]:
    """Return (header, "") or (None, reason) where reason is 'magic', 'version', 'corrupt'."""
    if len(data) < _PLAN_PREFIX or _struct.unpack_from("<I", data, 0)[0] != _PLAN_TAG:
        return None, "magic"
    if data[24:28] != _VERSION_BYTES:
        return None, "version"
    (n,) = _struct.unpack_from("<I", data, 28)
    try:
        header = _json.loads(data[_PLAN_PREFIX:_PLAN_PREFIX + n].decode())
        pad = data[_PLAN_PREFIX + n:]
        if len(pad) != header["padding_bytes"] or _hashlib.sha256(pad).hexdigest() != header["padding_sha256"]:
            return None, "corrupt"
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return None, "corrupt"
    return header, ""


# --------------------------------------------------------------------------- runtime + engine
class Runtime(_Obj):
    """Deserializes fake plans; returns None (never raises) on an unusable plan."""

    def __init__(self, logger) -> None:
        _check_logger(logger)
        self._logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        data = _as_bytes(serialized_engine)
        header, reason = _read_plan(data)
        err = lambda m: _emit(self._logger, "ERROR", m)  # noqa: E731
        if reason == "magic":
            err("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion "
                "plan->header.magicTag == rt::kPLAN_MAGIC_TAG failed.Trying to load an engine created with "
                "incompatible serialization version. Check that the engine was not created using safety "
                "runtime, same OS was used and version compatibility parameters were set accordingly.)")
            return None
        if reason == "version":
            got = ".".join(str(b) for b in data[24:28])
            if _MAJOR < 10:
                err(f"6: The engine plan file is not compatible with this version of TensorRT, expecting "
                    f"library version {_FAKE_RELEASE} got {got}, please rebuild.")
            else:
                err("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion "
                    "stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not match. Note: "
                    f"Current Version: {_FAKE_RELEASE}, Serialized Engine Version: {got})")
            return None
        if reason == "corrupt":
            err("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion "
                "sizeRead == size failed.Plan is truncated or corrupt.)")
            return None
        cc = _env_cc()
        if header["compute_capability"] != cc:
            err(f"6: The engine plan file is generated on an incompatible device, expecting compute {cc} "
                f"got compute {header['compute_capability']}, please rebuild.")
            err("2: [engine.cpp::deserializeEngine::1312] Error Code 2: Internal Error (Assertion "
                "engine->deserialize(start, size, allocator, runtime) failed. )")
            return None
        return ICudaEngine(header, data, self._logger)


class ICudaEngine(_Obj):
    """Engine with the name-based I/O tensor API."""

    def __init__(self, header: dict, plan: bytes, logger) -> None:
        self._h = header
        self._plan = plan
        self._logger = logger
        self._io = {t["name"]: ("INPUT", t) for t in header["inputs"]}
        self._io.update({t["name"]: ("OUTPUT", t) for t in header["outputs"]})
        self._order = [t["name"] for t in header["inputs"]] + [t["name"] for t in header["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self._order)

    @property
    def num_layers(self) -> int:
        return int(self._h.get("num_layers", 0))

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._h["profiles"])

    def get_tensor_name(self, index: int) -> str:
        if not 0 <= index < len(self._order):
            raise IndexError("tensor index out of range")
        return self._order[index]

    def get_tensor_mode(self, name: str):
        mode = self._io.get(name, ("NONE", None))[0]
        return _members(TensorIOMode)[mode]

    def get_tensor_shape(self, name: str) -> Dims:
        if name not in self._io:
            return Dims(())
        return Dims(self._io[name][1]["shape"])

    def get_tensor_dtype(self, name: str):
        if name not in self._io:
            return _members(DataType)["FLOAT"]
        return _members(DataType)[self._io[name][1]["dtype"]]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
        if self._io.get(name, ("NONE",))[0] != "INPUT":
            _emit(self._logger, "ERROR", f"Error Code 3: API Usage Error ({name} is not an input tensor)")
            raise RuntimeError(f"get_tensor_profile_shape: {name!r} is not an input tensor")
        if not 0 <= profile_index < len(self._h["profiles"]):
            raise RuntimeError(f"get_tensor_profile_shape: profile index {profile_index} out of range")
        p = self._h["profiles"][profile_index][name]
        return [Dims(p["min"]), Dims(p["opt"]), Dims(p["max"])]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)

    def serialize(self) -> IHostMemory:
        return _host_memory(self._plan)


class IExecutionContext(_Obj):
    """Execution context; output shapes follow the input shapes set (profile 0)."""

    def __init__(self, engine: ICudaEngine) -> None:
        self._engine = engine
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addr: dict[str, int] = {}

    @property
    def engine(self) -> ICudaEngine:
        return self._engine

    def _err(self, msg: str) -> None:
        _emit(self._engine._logger, "ERROR", msg)

    def set_input_shape(self, name: str, shape) -> bool:
        eng = self._engine
        if eng._io.get(name, ("NONE",))[0] != "INPUT":
            self._err(f"3: [executionContext.cpp::setInputShape] Error Code 3: API Usage Error (Parameter "
                      f"check failed, condition: {name!r} is not an input tensor.)")
            return False
        dims = _dims_tuple(shape)
        net = eng._io[name][1]["shape"]
        prof = eng._h["profiles"][0][name]
        ok = len(dims) == len(net) and all(
            (n < 0 or n == d) and lo <= d <= hi
            for n, d, lo, hi in zip(net, dims, prof["min"], prof["max"], strict=False))
        if not ok:
            self._err(f"3: [executionContext.cpp::setInputShape] Error Code 3: API Usage Error (Parameter "
                      f"check failed, condition: satisfyProfile. Set dimension {list(dims)} for tensor "
                      f"{name} does not satisfy any optimization profiles. Valid range for profile 0: "
                      f"{prof['min']}..{prof['max']}.)")
            return False
        self._shapes[name] = dims
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        eng = self._engine
        mode, info = eng._io.get(name, ("NONE", None))
        if mode == "NONE":
            return Dims(())
        if mode == "INPUT":
            return Dims(self._shapes.get(name, tuple(info["shape"])))
        symbols: dict[str, int] = {}
        batch = None
        for t in eng._h["inputs"]:
            set_shape = self._shapes.get(t["name"])
            if set_shape is None:
                continue
            if batch is None and set_shape:
                batch = set_shape[0]
            for sym, d in zip(t.get("symbols", []), set_shape, strict=False):
                if sym:
                    symbols[sym] = d
        out = []
        out_symbols = info.get("symbols") or [None] * len(info["shape"])
        for axis, (d, sym) in enumerate(zip(info["shape"], out_symbols, strict=False)):
            if d >= 0:
                out.append(d)
            elif sym and sym in symbols:
                out.append(symbols[sym])
            elif axis == 0 and batch is not None:
                out.append(batch)
            else:
                out.append(-1)
        return Dims(out)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        import operator
        ptr = operator.index(memory)
        if name not in self._engine._io:
            self._err(f"3: Error Code 3: API Usage Error (Parameter check failed, condition: tensor {name!r} "
                      "is not an input or output tensor.)")
            return False
        self._addr[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        import operator
        operator.index(stream_handle)
        eng = self._engine
        for t in eng._h["inputs"]:
            if any(d < 0 for d in t["shape"]) and t["name"] not in self._shapes:
                self._err(f"3: [executionContext.cpp::enqueueV3] Error Code 3: API Usage Error (Parameter check "
                          f"failed, condition: mContext.profileObliviousBindings.at(profileObliviousIndex) || "
                          f"getPtrOrNull(mOutputAllocators, profileObliviousIndex). Not all shapes are "
                          f"specified: input {t['name']!r}.)")
                return False
        for name in eng._order:
            if name not in self._addr:
                self._err(f"3: [executionContext.cpp::enqueueV3] Error Code 3: API Usage Error (Parameter check "
                          f"failed, condition: Neither address or allocator is set for tensor {name!r}.)")
                return False
        _compute(self)
        return True


# --------------------------------------------------------------------------- inference
def _compute(context) -> None:
    """Fill the output buffer with onnxruntime's result for the input buffer, on the ONNX the engine
    was built from, then apply FAKE_TRT_PERTURB (only to engines of FAKE_TRT_PERTURB_ONLY precision
    when set). Needs the fake pycuda's host-side "device" memory; otherwise leaves buffers alone.

    FAKE_TRT_PERTURB: ``drop`` (the most confident box of each slot and every row overlapping it
    vanish), ``shift:PX`` (every box moves PX pixels right and down), ``score:D`` (every score + D);
    a suffix ``@K`` limits it to batch slot K.
    """
    memory = getattr(_sys.modules.get("pycuda.driver"), "_memory", None)
    eng = context._engine
    path = eng._h.get("onnx_path")
    if memory is None or not path or not _os.path.exists(path) or len(eng._h["inputs"]) != 1 or len(eng._h["outputs"]) != 1:
        return
    import numpy as np
    in_name, out_name = eng._h["inputs"][0]["name"], eng._h["outputs"][0]["name"]
    in_buf, out_buf = memory.get(context._addr[in_name]), memory.get(context._addr[out_name])
    shape = tuple(context._shapes[in_name])
    if in_buf is None or out_buf is None:
        return
    images = np.frombuffer(bytes(in_buf), dtype=np.float32, count=int(np.prod(shape))).reshape(shape)
    session = getattr(eng, "_session", None)
    if session is None:
        import onnxruntime
        session = eng._session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (output,) = session.run([out_name], {in_name: images})
    output = np.array(output, dtype=np.float32)
    spec = _os.environ.get("FAKE_TRT_PERTURB", "").strip()
    only = _os.environ.get("FAKE_TRT_PERTURB_ONLY", "").strip()
    if spec and (not only or only == eng._h.get("precision")):
        kind, _, slot = spec.partition("@")
        kind, _, value = kind.partition(":")
        slots = [int(slot)] if slot else range(output.shape[0])
        for index in slots:
            if index >= output.shape[0]:
                continue
            rows = output[index]
            if kind == "shift":
                rows[:, :4] += float(value)
            elif kind == "score":
                rows[:, 4] += float(value)
            elif kind == "drop":
                top = rows[int(np.argmax(rows[:, 4])), :4].copy()
                width = np.clip(np.minimum(top[2], rows[:, 2]) - np.maximum(top[0], rows[:, 0]), 0, None)
                height = np.clip(np.minimum(top[3], rows[:, 3]) - np.maximum(top[1], rows[:, 1]), 0, None)
                inter = width * height
                union = (top[2] - top[0]) * (top[3] - top[1]) + (rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1]) - inter
                rows[inter > 0.3 * np.maximum(union, 1e-9), 4] = 0.0
            else:
                raise ValueError(f"FAKE_TRT_PERTURB: unknown kind {kind!r}")
    data = output.tobytes()
    out_buf[:len(data)] = data


# Log module-level attribute access (FAKE_TRT_ACCESS_LOG).
_sys.modules[__name__].__class__ = _LoggedModule
