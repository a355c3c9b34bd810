"""gst-nvinfer's config keys, from gstnvinfer_property_parser.h (DeepStream 8.0/9.1 list the same macros).

Source: NVIDIA/DeepStream src/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h, summarised in
shared/reference/deepstream.md section 3.1. A key not listed here is one nvinfer would ignore or reject.
"""
from __future__ import annotations

PROPERTY_KEYS = frozenset({
    # element / general
    "gie-unique-id", "process-mode", "interval", "labelfile-path", "gpu-id", "secondary-reinfer-interval",
    "output-tensor-meta", "disable-output-host-copy", "auto-inc-mem", "max-gpu-mem-per", "enable-dla",
    "use-dla-core", "dump-input-tensor", "dump-output-tensor", "overwrite-input-tensor",
    "overwrite-output-tensor", "ip-tensor-file", "op-tensor-files", "raw-output-file-write",
    "tensor-meta-pool-size",
    # engine / runtime
    "batch-size", "network-mode", "model-engine-file", "int8-calib-file", "workspace-size",
    "output-blob-names", "force-implicit-batch-dim", "infer-dims", "output-io-formats",
    "layer-device-precision", "strongly-typed", "warmup-engine", "stabilize-buffer-count",
    "dynamic-properties",
    # model files
    "onnx-file", "model-file", "proto-file", "uff-file", "uff-input-order", "input-dims", "uff-input-dims",
    "uff-input-blob-name", "tlt-encoded-model", "tlt-model-key", "custom-network-config",
    # pre-processing
    "model-color-format", "net-scale-factor", "offsets", "mean-file", "maintain-aspect-ratio",
    "symmetric-padding", "scaling-filter", "scaling-compute-hw", "network-input-order",
    "input-tensor-from-meta",
    # post-processing / custom
    "network-type", "num-detected-classes", "cluster-mode", "enable-dbscan", "custom-lib-path",
    "parse-bbox-func-name", "parse-bbox-instance-mask-func-name", "parse-segmentation-func-name",
    "parse-classifier-func-name", "engine-create-func-name", "parse-func", "crop-objects-to-roi-boundary",
    "filter-out-class-ids", "classifier-type", "classifier-threshold", "classifier-async-mode",
    "is-classifier", "segmentation-threshold", "segmentation-output-order", "output-instance-mask",
    # secondary-mode object filters
    "input-object-min-width", "input-object-min-height", "input-object-max-width",
    "input-object-max-height", "operate-on-gie-id", "operate-on-class-ids",
})

CLASS_ATTRS_KEYS = frozenset({
    "threshold", "pre-cluster-threshold", "post-cluster-threshold", "nms-iou-threshold", "topk", "eps",
    "group-threshold", "minBoxes", "dbscan-min-score", "roi-top-offset", "roi-bottom-offset",
    "detected-min-w", "detected-min-h", "detected-max-w", "detected-max-h", "border-color", "bg-color",
})
