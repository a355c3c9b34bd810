// The exported parser has exactly nvinfer's NvDsInferParseCustomFunc type. The definition itself is
// compiled into this test (nvdsparsebbox_yolo.cpp is included), so the check sees its real type, not
// a prototype repeated here. Built against the stand-in headers in tests/fakes/deepstream_includes.
#include <cstdio>
#include <type_traits>

#include "../nvdsparsebbox_yolo.cpp"

static_assert(std::is_same<decltype(&NvDsInferParseYolo), NvDsInferParseCustomFunc>::value,
              "NvDsInferParseYolo is not of type NvDsInferParseCustomFunc");
static_assert(std::is_same<NvDsInferParseObjectInfo, NvDsInferObjectDetectionInfo>::value,
              "the parser fills NvDsInferObjectDetectionInfo, the type nvinfer's vector holds");

int main() {
    // nvinfer holds the dlsym() result in this pointer type and calls through it.
    NvDsInferParseCustomFunc parse = &NvDsInferParseYolo;
    std::vector<float> rows = {10, 20, 110, 220, 0.9f, 0};
    NvDsInferLayerInfo layer{};
    layer.dataType = FLOAT;
    layer.inferDims.numDims = 2;
    layer.inferDims.d[0] = 1;
    layer.inferDims.d[1] = 6;
    layer.inferDims.numElements = 6;
    layer.layerName = "output";
    layer.buffer = rows.data();
    NvDsInferNetworkInfo net{640, 640, 3};
    NvDsInferParseDetectionParams params{};
    params.numClassesConfigured = 80;
    params.perClassPreclusterThreshold.assign(80, 0.25f);
    std::vector<NvDsInferObjectDetectionInfo> objects;
    if (!parse({layer}, net, params, objects) || objects.size() != 1 || objects[0].width != 100) {
        std::fprintf(stderr, "test_signature: call through NvDsInferParseCustomFunc failed\n");
        return 1;
    }
    std::printf("test_signature: all checks passed\n");
    return 0;
}
