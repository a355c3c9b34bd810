// Tests of the nvinfer glue, built against the stand-in DeepStream headers in
// tests/fakes/deepstream_includes (the real headers exist only in the DeepStream image).
#include <cstdio>
#include <vector>

#include "nvdsinfer_custom_impl.h"

extern "C" bool NvDsInferParseYolo(std::vector<NvDsInferLayerInfo> const& outputLayersInfo,
                                   NvDsInferNetworkInfo const& networkInfo,
                                   NvDsInferParseDetectionParams const& detectionParams,
                                   std::vector<NvDsInferParseObjectInfo>& objectList);

#include "check.hpp"

// Two kept rows (classes 0 and 2) and one below threshold.
static std::vector<float> g_rows = {
    10, 20, 110, 220, 0.9f, 0,
    0, 0, 50, 50, 0.1f, 1,
    -5, 600, 30, 700, 0.5f, 2,
};
static float g_junk[4] = {1, 2, 3, 4};

static NvDsInferLayerInfo layer(const char* name, std::vector<unsigned int> dims, void* buffer,
                                NvDsInferDataType type = FLOAT) {
    NvDsInferLayerInfo info{};
    info.dataType = type;
    info.inferDims.numDims = static_cast<unsigned int>(dims.size());
    info.inferDims.numElements = 1;
    for (std::size_t i = 0; i < dims.size(); ++i) {
        info.inferDims.d[i] = dims[i];
        info.inferDims.numElements *= dims[i];
    }
    info.layerName = name;
    info.buffer = buffer;
    return info;
}

static bool parse(const std::vector<NvDsInferLayerInfo>& layers,
                  std::vector<NvDsInferParseObjectInfo>& objects) {
    NvDsInferNetworkInfo net{640, 640, 3};
    NvDsInferParseDetectionParams params{};
    params.numClassesConfigured = 80;
    params.perClassPreclusterThreshold.assign(80, 0.25f);
    return NvDsInferParseYolo(layers, net, params, objects);
}

static void testPicksLayerNamedOutput() {
    std::vector<NvDsInferParseObjectInfo> objects(5);  // stale content must be replaced
    const bool ok = parse({layer("other", {4}, g_junk), layer("output", {3, 6}, g_rows.data())},
                          objects);
    CHECK(ok);
    CHECK(objects.size() == 2);
    if (objects.size() == 2) {
        CHECK(objects[0].classId == 0 && objects[0].left == 10 && objects[0].height == 200);
        CHECK(objects[1].classId == 2 && objects[1].left == 0 && objects[1].top == 600);
        CHECK(objects[1].width == 30 && objects[1].height == 40);
        CHECK(objects[1].detectionConfidence == 0.5f);
#ifdef NVDS_STANDIN_9X_LAYOUT
        // 9.x adds rotation_angle: the glue must hand back axis-aligned boxes (0), not garbage
        CHECK(objects[0].rotation_angle == 0.0f && objects[1].rotation_angle == 0.0f);
#endif
    }
}

static void testFallsBackToLayerZero() {
    std::vector<NvDsInferParseObjectInfo> objects;
    CHECK(parse({layer("renamed", {3, 6}, g_rows.data())}, objects));
    CHECK(objects.size() == 2);
}

static void testRejectsWrongLayouts() {
    std::vector<NvDsInferParseObjectInfo> objects;
    CHECK(!parse({}, objects));
    CHECK(!parse({layer("output", {84, 8400}, g_rows.data())}, objects));   // raw ultralytics head
    CHECK(!parse({layer("output", {1, 3, 6}, g_rows.data())}, objects));    // batch dim left in
    CHECK(!parse({layer("output", {3, 6}, g_rows.data(), HALF)}, objects)); // fp16 output
    CHECK(!parse({layer("output", {3, 6}, nullptr)}, objects));
}

int main() {
    testPicksLayerNamedOutput();
    testFallsBackToLayerZero();
    testRejectsWrongLayouts();
    if (check_failures()) {
        std::fprintf(stderr, "test_glue: %d check(s) failed\n", check_failures());
        return 1;
    }
    std::printf("test_glue: all checks passed\n");
    return 0;
}
