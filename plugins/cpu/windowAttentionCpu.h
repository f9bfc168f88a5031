// CPU kernel of DATWindowAttention (contract: plugins/README.md, index math: common/datWindowAttentionMath.h).
// qkv and out are fp32 or fp16 (raw IEEE half bits); bias may be either, independently. All math in fp32.
#pragma once

#include "cpuLayer.h"

#include "../common/datSamplingTypes.h"
#include "../common/datWindowAttentionMath.h"

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{

// qkv (batch, height, width, 3 * channels), bias (biasWindows, heads, T, T), out (batch, height, width,
// channels) with out's dtype = qkv's. The dims must already be validated (see the op contract).
void windowAttention(
    WindowAttentionDims const& dims, void const* qkv, DType qkvType, void const* bias, DType biasType, void* out);

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
