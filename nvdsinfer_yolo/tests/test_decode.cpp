// Unit tests of yolo_decode.hpp. Plain g++, no framework: a failed CHECK prints where and
// the process exits 1 at the end, so every failure of a run is reported at once.
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "../yolo_decode.hpp"

#include "check.hpp"

#define CHECK_NEAR(a, b) CHECK(std::fabs((a) - (b)) < 1e-4f)

using Rows = std::vector<float>;

static void addRow(Rows& rows, float x1, float y1, float x2, float y2, float score, float cls) {
    rows.insert(rows.end(), {x1, y1, x2, y2, score, cls});
}

static std::vector<yolo::Detection> decode(const Rows& rows, const yolo::DecodeParams& p) {
    return yolo::decodeFrame(rows.data(), rows.size() / yolo::kValuesPerRow, p);
}

static yolo::DecodeParams params(unsigned int numClasses, std::vector<float> thresholds,
                                 unsigned int w = 640, unsigned int h = 640) {
    yolo::DecodeParams p;
    p.netWidth = w;
    p.netHeight = h;
    p.numClasses = numClasses;
    p.thresholds = std::move(thresholds);
    return p;
}

static void testPerClassThresholds() {
    Rows rows;
    addRow(rows, 10, 10, 50, 50, 0.40f, 0);  // below 0.5 of class 0: dropped
    addRow(rows, 10, 10, 50, 50, 0.60f, 0);  // kept
    addRow(rows, 10, 10, 50, 50, 0.20f, 1);  // above 0.1 of class 1: kept
    addRow(rows, 10, 10, 50, 50, 0.80f, 2);  // below 0.9 of class 2: dropped
    addRow(rows, 10, 10, 50, 50, 0.90f, 2);  // equal to the threshold: kept
    addRow(rows, 10, 10, 50, 50, 0.85f, 5);  // class past the list uses the last (0.9): dropped
    addRow(rows, 10, 10, 50, 50, 0.95f, 5);  // kept
    const auto dets = decode(rows, params(10, {0.5f, 0.1f, 0.9f}));
    CHECK(dets.size() == 4);
    if (dets.size() == 4) {
        CHECK(dets[0].classId == 0 && dets[1].classId == 1);
        CHECK(dets[2].classId == 2 && dets[3].classId == 5);
        CHECK_NEAR(dets[1].confidence, 0.20f);
    }
}

static void testEmptyThresholdListUsesDefault() {
    Rows rows;
    addRow(rows, 10, 10, 50, 50, yolo::kDefaultThreshold - 0.01f, 3);
    addRow(rows, 10, 10, 50, 50, yolo::kDefaultThreshold + 0.01f, 3);
    CHECK(decode(rows, params(80, {})).size() == 1);
}

static void testClampToNetwork() {
    Rows rows;
    addRow(rows, -10, -5, 700, 650, 0.9f, 0);  // spills over every edge
    addRow(rows, 600, 10, 700, 50, 0.9f, 0);   // spills over the right edge
    const auto dets = decode(rows, params(80, {0.25f}, 640, 480));
    CHECK(dets.size() == 2);
    if (dets.size() == 2) {
        CHECK_NEAR(dets[0].left, 0.0f);
        CHECK_NEAR(dets[0].top, 0.0f);
        CHECK_NEAR(dets[0].width, 640.0f);
        CHECK_NEAR(dets[0].height, 480.0f);
        CHECK_NEAR(dets[1].left, 600.0f);
        CHECK_NEAR(dets[1].top, 10.0f);
        CHECK_NEAR(dets[1].width, 40.0f);
        CHECK_NEAR(dets[1].height, 40.0f);
    }
}

static void testTinyAndDegenerateBoxesDropped() {
    Rows rows;
    addRow(rows, 10, 10, 10.5f, 50, 0.9f, 0);  // 0.5 px wide
    addRow(rows, 10, 10, 50, 10.9f, 0.9f, 0);  // 0.9 px high
    addRow(rows, 700, 10, 800, 50, 0.9f, 0);   // right of the image: 0 px after clamping
    addRow(rows, 50, 50, 10, 10, 0.9f, 0);     // inverted corners
    addRow(rows, 10, 10, 11, 11, 0.9f, 0);     // exactly 1 px: kept
    const float inf = std::numeric_limits<float>::infinity();
    addRow(rows, 10, 10, inf, 50, 0.9f, 0);    // non-finite coordinate
    const auto dets = decode(rows, params(80, {0.25f}));
    CHECK(dets.size() == 1);
    if (dets.size() == 1) CHECK_NEAR(dets[0].width, 1.0f);
}

static void testBadClassOrScoreDropped() {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    Rows rows;
    addRow(rows, 10, 10, 50, 50, 0.9f, -1);
    addRow(rows, 10, 10, 50, 50, 0.9f, 80);  // == numClasses
    addRow(rows, 10, 10, 50, 50, 0.9f, 1e30f);
    addRow(rows, 10, 10, 50, 50, 0.9f, nan);
    addRow(rows, 10, 10, 50, 50, nan, 3);
    addRow(rows, 10, 10, 50, 50, 0.9f, 79);  // last valid class: kept
    addRow(rows, 10, 10, 50, 50, 0.9f, 0);   // first valid class: kept
    const auto dets = decode(rows, params(80, {0.25f}));
    CHECK(dets.size() == 2);
    if (dets.size() == 2) CHECK(dets[0].classId == 79 && dets[1].classId == 0);
}

static void testBatchFramesAreSeparate() {
    const std::size_t n = 3;
    Rows rows;
    // frame 0: two kept rows of class 1, one low score
    addRow(rows, 1, 1, 20, 20, 0.9f, 1);
    addRow(rows, 2, 2, 30, 30, 0.8f, 1);
    addRow(rows, 3, 3, 40, 40, 0.1f, 1);
    // frame 1: one kept row of class 2, two low scores
    addRow(rows, 100, 100, 200, 220, 0.7f, 2);
    addRow(rows, 5, 5, 60, 60, 0.1f, 2);
    addRow(rows, 6, 6, 70, 70, 0.1f, 2);
    const auto frames = yolo::decodeBatch(rows.data(), 2, n, params(80, {0.25f}));
    CHECK(frames.size() == 2);
    if (frames.size() != 2) return;
    CHECK(frames[0].size() == 2);
    for (const auto& d : frames[0]) CHECK(d.classId == 1);
    CHECK(frames[1].size() == 1);
    if (frames[1].size() == 1) {
        CHECK(frames[1][0].classId == 2);
        CHECK_NEAR(frames[1][0].left, 100.0f);
        CHECK_NEAR(frames[1][0].height, 120.0f);
    }
}

// The 1280x1280 case: 160^2 + 80^2 + 40^2 = 33600 rows; every 7th row is above threshold.
static void testLargeN() {
    const std::size_t n = 33600;
    Rows rows;
    rows.reserve(n * yolo::kValuesPerRow);
    std::size_t expected = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const bool above = i % 7 == 0;
        expected += above;
        const float x = static_cast<float>(i % 1200);
        addRow(rows, x, x / 2, x + 40, x / 2 + 30, above ? 0.6f : 0.1f,
               static_cast<float>(i % 80));
    }
    const auto dets = decode(rows, params(80, {0.25f}, 1280, 1280));
    CHECK(expected == 4800);
    CHECK(dets.size() == expected);
    const auto frames = yolo::decodeBatch(rows.data(), 1, n, params(80, {0.25f}, 1280, 1280));
    CHECK(frames.size() == 1 && frames[0].size() == expected);
}

static void testEmptyInput() {
    const auto p = params(80, {0.25f});
    CHECK(yolo::decodeFrame(nullptr, 0, p).empty());
    CHECK(yolo::decodeFrame(nullptr, 100, p).empty());
    Rows none;
    CHECK(decode(none, p).empty());
    CHECK(yolo::decodeBatch(nullptr, 0, 33600, p).empty());
    const auto frames = yolo::decodeBatch(none.data(), 2, 0, p);
    CHECK(frames.size() == 2 && frames[0].empty() && frames[1].empty());
}

int main() {
    testPerClassThresholds();
    testEmptyThresholdListUsesDefault();
    testClampToNetwork();
    testTinyAndDegenerateBoxesDropped();
    testBadClassOrScoreDropped();
    testBatchFramesAreSeparate();
    testLargeN();
    testEmptyInput();
    if (check_failures()) {
        std::fprintf(stderr, "test_decode: %d check(s) failed\n", check_failures());
        return 1;
    }
    std::printf("test_decode: all checks passed\n");
    return 0;
}
