// nvinfer bbox parser for the YOLO11 ONNX of this project: output "output" [N,6] per frame
// (x1, y1, x2, y2 in network-input pixels, score, class id). nvinfer calls it once per frame
// with that frame's host buffer; NMS follows in nvinfer (cluster-mode=2).
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "nvdsinfer_custom_impl.h"
#include "yolo_decode.hpp"

namespace {

constexpr const char* kOutputName = "output";

// The layer named "output"; layer 0 if none has that name (a renamed but compatible export).
const NvDsInferLayerInfo* findOutputLayer(std::vector<NvDsInferLayerInfo> const& layers) {
    for (const auto& layer : layers)
        if (layer.layerName != nullptr && std::strcmp(layer.layerName, kOutputName) == 0)
            return &layer;
    return layers.empty() ? nullptr : &layers[0];
}

std::string formatDims(const NvDsInferDims& dims) {
    std::string text = "[";
    for (unsigned int i = 0; i < dims.numDims && i < NVDSINFER_MAX_DIMS; ++i)
        text += (i ? "," : "") + std::to_string(dims.d[i]);
    return text + "]";
}

// Reject anything that is not a float [N,6] tensor, loudly: a wrong export otherwise
// shows up as garbage boxes, which is much harder to trace back.
bool checkLayout(const NvDsInferLayerInfo& layer) {
    const NvDsInferDims& dims = layer.inferDims;
    if (dims.numDims != 2 || dims.d[1] != yolo::kValuesPerRow) {
        std::cerr << "NvDsInferParseYolo: layer '" << (layer.layerName ? layer.layerName : "?")
                  << "' has shape " << formatDims(dims)
                  << ", expected [N,6] (x1,y1,x2,y2,score,class) from this project's exporter"
                  << std::endl;
        return false;
    }
    if (layer.dataType != FLOAT) {
        std::cerr << "NvDsInferParseYolo: output must be float32, got data type "
                  << static_cast<int>(layer.dataType) << std::endl;
        return false;
    }
    if (layer.buffer == nullptr) {
        std::cerr << "NvDsInferParseYolo: output buffer is null" << std::endl;
        return false;
    }
    return true;
}

NvDsInferParseObjectInfo toObjectInfo(const yolo::Detection& det) {
    NvDsInferParseObjectInfo obj{};
    obj.classId = det.classId;
    obj.left = det.left;
    obj.top = det.top;
    obj.width = det.width;
    obj.height = det.height;
    obj.detectionConfidence = det.confidence;
    return obj;
}

}  // namespace

extern "C" bool NvDsInferParseYolo(std::vector<NvDsInferLayerInfo> const& outputLayersInfo,
                                   NvDsInferNetworkInfo const& networkInfo,
                                   NvDsInferParseDetectionParams const& detectionParams,
                                   std::vector<NvDsInferParseObjectInfo>& objectList) {
    const NvDsInferLayerInfo* layer = findOutputLayer(outputLayersInfo);
    if (layer == nullptr) {
        std::cerr << "NvDsInferParseYolo: no output layers" << std::endl;
        return false;
    }
    if (!checkLayout(*layer)) return false;

    yolo::DecodeParams params;
    params.netWidth = networkInfo.width;
    params.netHeight = networkInfo.height;
    params.numClasses = detectionParams.numClassesConfigured;
    params.thresholds = detectionParams.perClassPreclusterThreshold;

    const auto numRows = static_cast<std::size_t>(layer->inferDims.d[0]);
    const auto detections =
        yolo::decodeFrame(static_cast<const float*>(layer->buffer), numRows, params);

    objectList.clear();
    objectList.reserve(detections.size());
    for (const auto& det : detections) objectList.push_back(toObjectInfo(det));
    return true;
}

// Compile-time check that the signature matches what nvinfer dlsym()s: NVIDIA's macro converts
// the function to NvDsInferParseCustomFunc (a default argument) and redeclares it extern "C" with
// that exact type, so any other type does not compile. That default argument is an unused
// parameter, which -Wextra reports for NVIDIA's own header too: silenced here, only here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE(NvDsInferParseYolo)
#pragma GCC diagnostic pop
