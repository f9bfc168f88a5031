// CPU kernel of DATDeformAttention (contract: plugins/README.md, shapes: common/datDeformAttentionMath.h).
// q, k, v and out are fp32 or fp16 (raw IEEE half bits, dataType); table and pos are fp32 or fp16 each,
// independently. All math in fp32.
#pragma once

#include "cpuLayer.h"

#include "../common/datDeformAttentionMath.h"
#include "../common/datSamplingTypes.h"

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{

// q (batch, height, width, channels), k and v (batch, keyH * keyW, channels), table (heads, tableH, tableW),
// pos (batch * groups, keyH, keyW, 2) as (y, x); out (batch, height, width, channels) with out's dtype = q's.
// The dims must already be validated (see the op contract).
void deformAttention(DeformAttentionDims const& dims, void const* q, void const* k, void const* v, DType dataType,
    void const* table, DType tableType, void const* pos, DType posType, void* out);

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
