// Decode of the YOLO11 [N,6] output (x1, y1, x2, y2, score, class id) into boxes.
//
// Header-only and free of DeepStream/CUDA so it can be unit-tested with plain g++.
// The nvinfer glue (nvdsparsebbox_yolo.cpp) converts the result into NvDsInferParseObjectInfo.
// NMS is deliberately absent: nvinfer does it with cluster-mode=2.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace yolo {

constexpr std::size_t kValuesPerRow = 6;  // x1, y1, x2, y2, score, class id

// Used only when the caller passes no thresholds at all; same value as nvinfer's
// own default pre-cluster-threshold, so an empty list behaves like an unset key.
constexpr float kDefaultThreshold = 0.2f;

struct Detection {
    float left;
    float top;
    float width;
    float height;
    float confidence;
    unsigned int classId;
};

struct DecodeParams {
    unsigned int netWidth = 0;
    unsigned int netHeight = 0;
    unsigned int numClasses = 0;
    // Pre-cluster threshold per class id. A class id past the end uses the last entry
    // (a one-element list is a threshold for all classes); an empty list uses kDefaultThreshold.
    std::vector<float> thresholds;
};

// Threshold of one class, following the fallback rule documented on DecodeParams.
inline float thresholdFor(const std::vector<float>& thresholds, unsigned int classId) {
    if (thresholds.empty()) return kDefaultThreshold;
    if (classId < thresholds.size()) return thresholds[classId];
    return thresholds.back();
}

// The class id arrives as a float; accept it only if it rounds to an id in [0, numClasses).
// The range test runs on the float so a huge or NaN value never reaches the integer cast.
inline bool classIdOf(float raw, unsigned int numClasses, unsigned int& classId) {
    if (!(raw > -0.5f && raw < static_cast<float>(numClasses) - 0.5f)) return false;
    classId = static_cast<unsigned int>(std::lround(raw));
    return true;
}

inline float clampTo(float v, float hi) {
    return v < 0.0f ? 0.0f : (v > hi ? hi : v);
}

// Clamp one row's corners to the network input; false if the box is non-finite
// or, once clamped, thinner than one pixel (nothing left to draw or track).
inline bool clampBox(const float* row, float netW, float netH, Detection& det) {
    for (std::size_t i = 0; i < 4; ++i)
        if (!std::isfinite(row[i])) return false;
    const float x1 = clampTo(row[0], netW);
    const float y1 = clampTo(row[1], netH);
    const float x2 = clampTo(row[2], netW);
    const float y2 = clampTo(row[3], netH);
    det.left = x1;
    det.top = y1;
    det.width = x2 - x1;
    det.height = y2 - y1;
    return det.width >= 1.0f && det.height >= 1.0f;
}

// Decode one row; false if it is dropped.
inline bool decodeRow(const float* row, const DecodeParams& p, Detection& det) {
    const float score = row[4];
    if (std::isnan(score)) return false;
    unsigned int classId = 0;
    if (!classIdOf(row[5], p.numClasses, classId)) return false;
    if (score < thresholdFor(p.thresholds, classId)) return false;
    if (!clampBox(row, static_cast<float>(p.netWidth), static_cast<float>(p.netHeight), det))
        return false;
    det.confidence = score;
    det.classId = classId;
    return true;
}

// Decode one frame: `rows` points at numRows * 6 floats.
inline std::vector<Detection> decodeFrame(const float* rows, std::size_t numRows,
                                          const DecodeParams& p) {
    std::vector<Detection> out;
    if (rows == nullptr) return out;
    for (std::size_t i = 0; i < numRows; ++i) {
        Detection det{};
        if (decodeRow(rows + i * kValuesPerRow, p, det)) out.push_back(det);
    }
    return out;
}

// Decode a [batch, numRows, 6] buffer; frame b starts at b * numRows * 6 and only its
// own rows feed its result.
inline std::vector<std::vector<Detection>> decodeBatch(const float* data, std::size_t batch,
                                                       std::size_t numRows,
                                                       const DecodeParams& p) {
    std::vector<std::vector<Detection>> frames;
    frames.reserve(batch);
    for (std::size_t b = 0; b < batch; ++b) {
        const float* frame = data ? data + b * numRows * kValuesPerRow : nullptr;
        frames.push_back(decodeFrame(frame, numRows, p));
    }
    return frames;
}

}  // namespace yolo
