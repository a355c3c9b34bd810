// STAND-IN for DeepStream's sources/includes/nvdsinfer_custom_impl.h (see nvdsinfer.h here).
//
// Follows NVIDIA's header (github: NVIDIA/DeepStream includes/nvdsinfer_custom_impl.h) for the
// detection-parser part, whose form is long-standing and the same in 8.0: the C API inside
// extern "C", NvDsInferParseDetectionParams with the deprecated perClassThreshold reference member,
// the NvDsInferParseCustomFunc type, and CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE written the way NVIDIA
// writes it (a function-pointer default argument plus an extern "C" redeclaration, so a definition
// of another type does not compile). Left out: the TensorRT includes (NvInfer.h, NvOnnxParser.h)
// and the other parser/engine hooks, which nvdsinfer_yolo does not use.
#ifndef _NVDSINFER_CUSTOM_IMPL_H_
#define _NVDSINFER_CUSTOM_IMPL_H_

#include <string>
#include <vector>

#include "nvdsinfer.h"

#ifdef __cplusplus
extern "C"
{
#endif

typedef struct
{
  unsigned int numClassesConfigured;
  std::vector<float> perClassPreclusterThreshold;
  std::vector<float> perClassPostclusterThreshold;
  // Deprecated in NVIDIA's header: a reference kept for backward compatibility.
  std::vector<float> &perClassThreshold = perClassPreclusterThreshold;
} NvDsInferParseDetectionParams;

typedef bool (* NvDsInferParseCustomFunc) (
        std::vector<NvDsInferLayerInfo> const &outputLayersInfo,
        NvDsInferNetworkInfo  const &networkInfo,
        NvDsInferParseDetectionParams const &detectionParams,
        std::vector<NvDsInferObjectDetectionInfo> &objectList);

#define CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE(customParseFunc) \
    static void checkFunc_ ## customParseFunc (NvDsInferParseCustomFunc func = customParseFunc) \
        { checkFunc_ ## customParseFunc (); }; \
    extern "C" bool customParseFunc (std::vector<NvDsInferLayerInfo> const &outputLayersInfo, \
           NvDsInferNetworkInfo  const &networkInfo, \
           NvDsInferParseDetectionParams const &detectionParams, \
           std::vector<NvDsInferObjectDetectionInfo> &objectList);

#ifdef __cplusplus
}
#endif

#endif
