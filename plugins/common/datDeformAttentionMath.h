// DATDeformAttention (contract: plugins/README.md): shapes shared by the CPU, CUDA and TensorRT
// implementations. The per-element math (query grid, bias taps) is datSamplingMath.h's, the same that
// DATRelPosBias uses; a kernel may sum the four taps in another order (within an ulp of DATRelPosBias).
#pragma once

#include "datSamplingMath.h"

#include <stdint.h>

namespace dat
{

struct DeformAttentionDims
{
    int64_t batch, height, width, channels; // q is (batch, height, width, channels); out the same
    int64_t keyH, keyW;                     // k and v are (batch, keyH * keyW, channels)
    int64_t heads, groups;                  // groups divides heads; head h uses pos of group h / (heads / groups)
    int64_t tableH, tableW;                 // table is (heads, tableH, tableW)
    int32_t convention;                     // QueryConvention of the query grid
    float scale;                            // multiplies q . k

    DAT_HD int64_t keys() const
    {
        return keyH * keyW;
    }
    DAT_HD int64_t headDim() const
    {
        return channels / heads;
    }
    DAT_HD int64_t headsPerGroup() const
    {
        return heads / groups;
    }
};

} // namespace dat
