// STAND-IN for DeepStream's sources/includes/nvdsinfer.h, so the parser glue can be compiled and
// tested on a machine without DeepStream; the build in the image uses NVIDIA's header.
//
// Layout follows NVIDIA's header (github: NVIDIA/DeepStream includes/nvdsinfer.h, a 9.x tree) where
// DeepStream 8.0 is known to agree: the C types inside extern "C", NvDsInferLayerInfo's union of
// inferDims with the deprecated dims, the field order of every struct. Only what nvdsinfer_yolo
// touches (and what lies between it) is here. Not known for 8.0, so selectable:
//   NVDS_STANDIN_9X_LAYOUT  adds NvDsInferObjectDetectionInfo::rotation_angle (the 9.x field, after
//                          detectionConfidence) and the INT64/UINT8 data types. The glue must work
//                          with both layouts (it value-initialises every object it returns).
#ifndef _NVDSINFER_H_
#define _NVDSINFER_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C"
{
#endif

#define NVDSINFER_MAX_DIMS 8

#define _DS_DEPRECATED_(STR) __attribute__ ((deprecated (STR)))

typedef struct
{
  unsigned int numDims;
  unsigned int d[NVDSINFER_MAX_DIMS];
  unsigned int numElements;
} NvDsInferDims;

typedef struct
{
  unsigned int c;
  unsigned int h;
  unsigned int w;
} NvDsInferDimsCHW;

typedef enum
{
  FLOAT = 0,
  HALF = 1,
  INT8 = 2,
  INT32 = 3,
#ifdef NVDS_STANDIN_9X_LAYOUT
  INT64 = 4,
  UINT8 = 5
#endif
} NvDsInferDataType;

typedef struct
{
  NvDsInferDataType dataType;
  union {
      NvDsInferDims inferDims;
      NvDsInferDims dims _DS_DEPRECATED_("dims is deprecated. Use inferDims instead");
  };
  int bindingIndex;
  const char* layerName;
  void *buffer;
  int isInput;
} NvDsInferLayerInfo;

typedef struct
{
  unsigned int width;
  unsigned int height;
  unsigned int channels;
} NvDsInferNetworkInfo;

typedef struct
{
  unsigned int classId;
  float left;
  float top;
  float width;
  float height;
  float detectionConfidence;
#ifdef NVDS_STANDIN_9X_LAYOUT
  float rotation_angle;  // radians, oriented boxes; 0 = axis-aligned
#endif
} NvDsInferObjectDetectionInfo;

typedef NvDsInferObjectDetectionInfo NvDsInferParseObjectInfo;

#ifdef __cplusplus
}
#endif

#endif
