// Loads a built libnvdsinfer_yolo.so the way nvinfer does: dlopen(), dlsym() of the plain C name
// from parse-bbox-func-name, a cast to NvDsInferParseCustomFunc, a call. Usage: test_dlsym LIB
#include <dlfcn.h>

#include <cstdio>
#include <vector>

#include "call_parser.hpp"
#include "nvdsinfer_custom_impl.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: test_dlsym LIB\n");
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
        std::fprintf(stderr, "test_dlsym: dlopen failed: %s\n", dlerror());
        return 1;
    }
    auto parse = reinterpret_cast<NvDsInferParseCustomFunc>(dlsym(lib, "NvDsInferParseYolo"));
    if (parse == nullptr) {
        std::fprintf(stderr, "test_dlsym: no symbol NvDsInferParseYolo: %s\n", dlerror());
        return 1;
    }
    std::vector<float> rows = {10, 20, 110, 220, 0.9f, 0, 0, 0, 50, 50, 0.1f, 1};
    std::vector<NvDsInferObjectDetectionInfo> objects;
    const bool ok = call_parser(parse, rows, objects);
    std::printf("test_dlsym: ok=%d objects=%zu", ok ? 1 : 0, objects.size());
    if (!objects.empty())
        std::printf(" first=%u,%.0f,%.0f,%.0f,%.0f", objects[0].classId, objects[0].left, objects[0].top,
                    objects[0].width, objects[0].height);
    std::printf("\n");
    dlclose(lib);
    return ok && objects.size() == 1 ? 0 : 1;
}
