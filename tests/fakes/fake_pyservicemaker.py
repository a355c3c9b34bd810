"""A stand-in for DeepStream's pyservicemaker that records the graph instead of running it.

It follows the documented Pipeline API only: Pipeline(name), add(type, name, props) -> Pipeline,
link(*names) and link((a, b), (pad_a, pad_b)) -> Pipeline, attach(target, what, name=...) ->
Pipeline, start() -> Pipeline, wait(), stop(), pipeline[name].set()/get(), Probe(name, operator),
BatchMetadataOperator.handle_metadata(batch_meta), BufferOperator.handle_buffer(buffer).

Behaviour for tests that run the app in a subprocess (set through the environment):
  FAKE_PSM_RECORD=path   append one JSON object per event ("started" with the graph, "eos")
  FAKE_PSM_AUTO_EOS=1    wait() returns at once, like a short file reaching its end
  FAKE_PSM_HANG=1        stop() is recorded but wait() keeps blocking (a sink that never finishes)
wait() otherwise blocks until stop() is called (the app's EOS request), at most 60 s.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any

__all__ = ["Pipeline", "Probe", "BatchMetadataOperator", "BufferOperator", "PIPELINES"]

PIPELINES: list[Pipeline] = []  # every pipeline created in this process, for assertions
WAIT_LIMIT_S = 60.0  # a broken test must not hang forever


def _record(event: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_PSM_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")


class BatchMetadataOperator:
    def handle_metadata(self, batch_meta: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class BufferOperator:
    def handle_buffer(self, buffer: Any) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError


class Probe:
    def __init__(self, name: str, operator: Any) -> None:
        self.name = name
        self.operator = operator


class Element:
    def __init__(self, factory: str, name: str, props: dict[str, Any]) -> None:
        self.factory = factory
        self.name = name
        self.props = dict(props)

    def set(self, props: dict[str, Any]) -> Element:
        self.props.update(props)
        return self

    def get(self, prop: str) -> Any:
        return self.props[prop]


class Pipeline:
    def __init__(self, name: str, config_file: str | None = None) -> None:
        self.name = name
        self.elements: dict[str, Element] = {}
        self.links: list[tuple] = []  # ("chain", a, b, ...) or ("pads", (a, b), (pad_a, pad_b))
        self.attachments: list[dict[str, Any]] = []
        self.started = False
        self.eos_requested = threading.Event()
        PIPELINES.append(self)

    def add(self, element_type: str, name: str, properties: dict[str, Any] | None = None) -> Pipeline:
        if name in self.elements:
            raise ValueError(f"element {name!r} added twice")
        self.elements[name] = Element(element_type, name, properties or {})
        return self

    def link(self, *args: Any) -> Pipeline:
        if len(args) == 2 and all(isinstance(a, tuple) for a in args):
            (src, dst), (src_pad, dst_pad) = args
            self._require(src, dst)
            self.links.append(("pads", (src, dst), (src_pad, dst_pad)))
        else:
            if len(args) < 2 or not all(isinstance(a, str) for a in args):
                raise TypeError(f"link() takes element names or two (a, b) tuples, got {args!r}")
            self._require(*args)
            self.links.append(("chain", *args))
        return self

    def attach(self, target: str, what: Any, name: str = "", tips: str = "",
               properties: dict[str, Any] | None = None) -> Pipeline:
        self._require(target)
        self.attachments.append({"target": target, "what": what, "name": name})
        return self

    def __getitem__(self, name: str) -> Element:
        return self.elements[name]

    def start(self) -> Pipeline:
        self.started = True
        _record({"event": "started", "elements": {n: [e.factory, _jsonable(e.props)]
                                                   for n, e in self.elements.items()},
                 "links": [list(map(_jsonable, link)) for link in self.links]})
        return self

    def wait(self) -> None:
        if os.environ.get("FAKE_PSM_AUTO_EOS") == "1":
            return
        self.eos_requested.wait(WAIT_LIMIT_S)

    def stop(self) -> Pipeline:
        _record({"event": "eos"})
        if os.environ.get("FAKE_PSM_HANG") != "1":
            self.eos_requested.set()
        return self

    def _require(self, *names: str) -> None:
        missing = [n for n in names if n not in self.elements]
        if missing:
            raise KeyError(f"unknown element(s) {missing}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
