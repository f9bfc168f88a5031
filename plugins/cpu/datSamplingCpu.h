// CPU kernels of DATDeformSample and DATRelPosBias (contract: plugins/README.md).
// Data tensors may be fp32 or fp16 (raw IEEE half bits); pos may be either, independently.
#pragma once

#include "cpuLayer.h"

#include "../common/datSamplingTypes.h"

#include <cstdint>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{

// out (batch, channels, keyH, keyW), same dtype as x.
void deformSample(DeformSampleDims const& dims, void const* x, DType xType, void const* pos, DType posType, void* out);

// out (batch * heads, queryH * queryW, keyH * keyW), same dtype as table.
void relPosBias(RelPosBiasDims const& dims, void const* table, DType tableType, void const* pos, DType posType, void* out);

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
