// CUDA kernels of DATDeformSample and DATRelPosBias (contract: plugins/README.md), fp32 and fp16 data,
// fp32 or fp16 pos. Used by the TensorRT plugins; host code only needs cuda_runtime_api.h.
#pragma once

#include "../common/datSamplingTypes.h"

#include <cuda_runtime_api.h>

namespace dat
{
namespace cuda
{

// out (batch, channels, keyH, keyW), same dtype as x.
cudaError_t deformSample(DeformSampleDims const& dims, void const* x, DType xType, void const* pos, DType posType,
    void* out, cudaStream_t stream);

// out (batch * heads, queryH * queryW, keyH * keyW), same dtype as table.
cudaError_t relPosBias(RelPosBiasDims const& dims, void const* table, DType tableType, void const* pos, DType posType,
    void* out, cudaStream_t stream);

} // namespace cuda
} // namespace dat
