// The exported parser has exactly nvinfer's NvDsInferParseCustomFunc type. The definition itself is
// compiled into this test (nvdsparsebbox_yolo.cpp is included), so the check sees its real type, not
// a prototype repeated here. Built against the stand-in headers in tests/fakes/deepstream_includes.
#include <cstdio>
#include <type_traits>

#include "../nvdsparsebbox_yolo.cpp"
#include "call_parser.hpp"

static_assert(std::is_same<decltype(&NvDsInferParseYolo), NvDsInferParseCustomFunc>::value,
              "NvDsInferParseYolo is not of type NvDsInferParseCustomFunc");
static_assert(std::is_same<NvDsInferParseObjectInfo, NvDsInferObjectDetectionInfo>::value,
              "the parser fills NvDsInferObjectDetectionInfo, the type nvinfer's vector holds");

int main() {
    // nvinfer holds the dlsym() result in this pointer type and calls through it.
    NvDsInferParseCustomFunc parse = &NvDsInferParseYolo;
    std::vector<float> rows = {10, 20, 110, 220, 0.9f, 0};
    std::vector<NvDsInferObjectDetectionInfo> objects;
    if (!call_parser(parse, rows, objects) || objects.size() != 1 || objects[0].width != 100) {
        std::fprintf(stderr, "test_signature: call through NvDsInferParseCustomFunc failed\n");
        return 1;
    }
    std::printf("test_signature: all checks passed\n");
    return 0;
}
