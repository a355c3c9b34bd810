// STAND-IN for DeepStream's sources/includes/nvdsinfer_custom_impl.h (see nvdsinfer.h here).
// Only the detection-parser part of the documented API.
#pragma once

#include <type_traits>
#include <vector>

#include "nvdsinfer.h"

typedef struct {
    unsigned int numClassesConfigured;
    std::vector<float> perClassPreclusterThreshold;
    std::vector<float> perClassPostclusterThreshold;
} NvDsInferParseDetectionParams;

typedef bool (*NvDsInferParseCustomFunc)(std::vector<NvDsInferLayerInfo> const& outputLayersInfo,
                                         NvDsInferNetworkInfo const& networkInfo,
                                         NvDsInferParseDetectionParams const& detectionParams,
                                         std::vector<NvDsInferObjectDetectionInfo>& objectList);

// Fails the build if the function's type differs from what nvinfer expects.
#define CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE(func)                                      \
    static_assert(std::is_same<decltype(&func), NvDsInferParseCustomFunc>::value, \
                  "custom parse function " #func " has the wrong prototype")
