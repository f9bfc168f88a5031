// Shapes and dtypes of the two DAT sampling ops, shared by the CPU and CUDA entry points.
#pragma once

#include <stdint.h>

namespace dat
{

enum class DType : int32_t
{
    kFloat32 = 0,
    kFloat16 = 1,
};

struct DeformSampleDims
{
    int64_t batch, channels, height, width; // x
    int64_t groups;
    int64_t keyH, keyW; // pos is (batch * groups, keyH, keyW, 2)
};

struct RelPosBiasDims
{
    int64_t batch;                 // x's batch
    int64_t heads, tableH, tableW; // table
    int64_t groups;
    int64_t keyH, keyW;     // pos is (batch * groups, keyH, keyW, 2)
    int64_t queryH, queryW; // x's spatial size
    int32_t convention;     // QueryConvention
};

} // namespace dat
