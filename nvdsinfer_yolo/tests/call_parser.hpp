// Calls a parser the way nvinfer does: one "output" layer of [rows, 6] floats, a 640x640 network,
// 80 classes at threshold 0.25. Shared by the signature and dlsym tests.
#pragma once
#include <vector>

#include "nvdsinfer_custom_impl.h"

inline bool call_parser(NvDsInferParseCustomFunc parse, std::vector<float>& rows,
                        std::vector<NvDsInferObjectDetectionInfo>& objects) {
    const int count = static_cast<int>(rows.size() / 6);
    NvDsInferLayerInfo layer{};
    layer.dataType = FLOAT;
    layer.inferDims.numDims = 2;
    layer.inferDims.d[0] = count;
    layer.inferDims.d[1] = 6;
    layer.inferDims.numElements = count * 6;
    layer.layerName = "output";
    layer.buffer = rows.data();
    NvDsInferNetworkInfo net{640, 640, 3};
    NvDsInferParseDetectionParams params{};
    params.numClassesConfigured = 80;
    params.perClassPreclusterThreshold.assign(80, 0.25f);
    return parse({layer}, net, params, objects);
}
