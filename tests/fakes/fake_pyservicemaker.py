"""A stand-in for DeepStream's pyservicemaker that records the graph instead of running it.

It offers exactly the names in tests/fakes/deepstream_names.toml, each one published by NVIDIA (the
file says where), and nothing else: the pyservicemaker module exports only [module], each class only
its [methods.*], the metadata objects only their [attributes.*], and Pipeline.add() accepts only the
element factories and properties of [properties.*]. An app that uses any other name fails here as it
would on a DeepStream that lacks it. (Only the call shapes come from the documentation; what the real
calls do inside, e.g. whether stop() flushes with an EOS, is not modelled.)

The legacy/new nvstreammux choice follows USE_NEW_NVSTREAMMUX in os.environ, as the real plugin does.

Test-side helpers (not part of pyservicemaker): PIPELINES, graph_of(), metadata classes.

Behaviour for tests that run the app in a subprocess (set through the environment):
  FAKE_PSM_RECORD=path   append one JSON object per event ("started" with the graph, "stop")
  FAKE_PSM_AUTO_EOS=1    wait() returns at once, like a short file reaching its end
  FAKE_PSM_HANG=1        stop() is recorded but wait() keeps blocking (a sink that never finishes)
  FAKE_PSM_NO_STOP=1     Pipeline has no stop(), only deactivate() (the documented Python fallback)
wait() otherwise blocks until stop()/deactivate() is called, at most 60 s.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project runs on 3.11+
    raise ImportError("fake_pyservicemaker needs Python 3.11+ (tomllib)")

NAMES_FILE = Path(__file__).resolve().with_name("deepstream_names.toml")
PIPELINES: list[Pipeline] = []  # every pipeline created in this process, for assertions
WAIT_LIMIT_S = 60.0  # a broken test must not hang forever


@functools.lru_cache(maxsize=None)
def names() -> dict[str, Any]:
    """tests/fakes/deepstream_names.toml, parsed."""
    return tomllib.loads(NAMES_FILE.read_text(encoding="utf-8"))


def element_properties(factory: str) -> dict[str, str]:
    """The listed properties of a factory (nvstreammux: legacy or new, as the real plugin decides)."""
    key = factory
    if factory == "nvstreammux" and os.environ.get("USE_NEW_NVSTREAMMUX", "").lower() == "yes":
        key = "nvstreammux(new)"
    listed = names()["properties"]
    if key not in listed:
        raise ValueError(f"element factory {factory!r} is not in {NAMES_FILE.name}; "
                         "add it with the source that documents it")
    return listed[key]


def _record(event: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_PSM_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")


# --------------------------------------------------------------------------- pyservicemaker names
class BatchMetadataOperator:
    def handle_metadata(self, batch_meta: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Probe:
    __slots__ = ("_name", "_operator")

    def __init__(self, name: str, operator: BatchMetadataOperator) -> None:
        if not isinstance(operator, BatchMetadataOperator):
            raise TypeError("Probe(name, operator): operator must be a BatchMetadataOperator")
        self._name = name
        self._operator = operator


@dataclass
class _Element:
    factory: str
    props: dict[str, Any]


@dataclass
class Graph:
    """What a fake Pipeline recorded (test side)."""
    elements: dict[str, _Element] = field(default_factory=dict)
    links: list[tuple] = field(default_factory=list)  # ("chain", a, b, ...) or ("pads", (a, b), (pa, pb))
    attachments: list[dict[str, Any]] = field(default_factory=list)
    started: bool = False
    ended: threading.Event = field(default_factory=threading.Event)


class Pipeline:
    __slots__ = ("_name", "_graph")

    def __init__(self, name: str) -> None:
        self._name = name
        self._graph = Graph()
        PIPELINES.append(self)

    def add(self, element_type: str, name: str, properties: dict[str, Any] | None = None) -> Pipeline:
        if name in self._graph.elements:
            raise ValueError(f"element {name!r} added twice")
        allowed = element_properties(element_type)
        unknown = sorted(set(properties or {}) - set(allowed))
        if unknown:
            raise ValueError(f"{element_type} has no propert{'y' if len(unknown) == 1 else 'ies'} "
                             f"{', '.join(unknown)} in {NAMES_FILE.name}")
        self._graph.elements[name] = _Element(element_type, dict(properties or {}))
        return self

    def link(self, *args: Any) -> Pipeline:
        if len(args) == 2 and all(isinstance(a, tuple) for a in args):
            (src, dst), (src_pad, dst_pad) = args
            self._require(src, dst)
            for pad in (src_pad, dst_pad):
                if pad and pad not in names()["pads"]:
                    raise ValueError(f"pad {pad!r} is not in {NAMES_FILE.name}")
            self._graph.links.append(("pads", (src, dst), (src_pad, dst_pad)))
        else:
            if len(args) < 2 or not all(isinstance(a, str) for a in args):
                raise TypeError(f"link() takes element names or two (a, b) tuples, got {args!r}")
            self._require(*args)
            self._graph.links.append(("chain", *args))
        return self

    def attach(self, target: str, what: Any, name: str = "", tips: str = "",
               properties: dict[str, Any] | None = None) -> Pipeline:
        self._require(target)
        if not isinstance(what, Probe) and what not in names()["builtin_probes"]:
            raise ValueError(f"attach(): {what!r} is neither a Probe nor a built-in probe in "
                             f"{NAMES_FILE.name}")
        self._graph.attachments.append({"target": target, "what": what, "name": name})
        return self

    def start(self) -> Pipeline:
        self._graph.started = True
        _record({"event": "started",
                 "elements": {n: [e.factory, _jsonable(e.props)] for n, e in self._graph.elements.items()},
                 "links": [list(map(_jsonable, link)) for link in self._graph.links]})
        return self

    def wait(self) -> None:
        if os.environ.get("FAKE_PSM_AUTO_EOS") == "1":
            return
        self._graph.ended.wait(WAIT_LIMIT_S)

    def stop(self) -> Pipeline:
        return self._end("stop")

    def deactivate(self) -> Pipeline:
        return self._end("deactivate")

    def _end(self, how: str) -> Pipeline:
        _record({"event": how})
        if os.environ.get("FAKE_PSM_HANG") != "1":
            self._graph.ended.set()
        return self

    def _require(self, *element_names: str) -> None:
        missing = [n for n in element_names if n not in self._graph.elements]
        if missing:
            raise KeyError(f"unknown element(s) {missing}")

    def __getattribute__(self, attr: str) -> Any:
        if attr == "stop" and os.environ.get("FAKE_PSM_NO_STOP") == "1":
            raise AttributeError("stop")
        return object.__getattribute__(self, attr)


# --------------------------------------------------------------------------- metadata (test side)
class ObjectMetadata:
    __slots__ = ("class_id",)

    def __init__(self, class_id: int) -> None:
        self.class_id = class_id


class FrameMetadata:
    __slots__ = ("pad_index", "_objects")

    def __init__(self, pad_index: int, objects: Iterable[ObjectMetadata] = ()) -> None:
        self.pad_index = pad_index
        self._objects = list(objects)

    @property
    def object_items(self) -> Iterator[ObjectMetadata]:  # an iterator, like pyservicemaker's
        return iter(self._objects)


class BatchMetadata:
    __slots__ = ("_frames",)

    def __init__(self, frames: Iterable[FrameMetadata]) -> None:
        self._frames = list(frames)

    @property
    def frame_items(self) -> Iterator[FrameMetadata]:
        return iter(self._frames)


def graph_of(pipeline: Pipeline) -> Graph:
    return object.__getattribute__(pipeline, "_graph")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
