// CUDA kernel of DATDeformAttention (contract: plugins/README.md): fp32 and fp16 q / k / v, table and pos
// each fp32 or fp16 independently. Used by the TensorRT plugin; host code only needs cuda_runtime_api.h.
#pragma once

#include "../common/datDeformAttentionMath.h"
#include "../common/datSamplingTypes.h"

#include <cuda_runtime_api.h>

namespace dat
{
namespace cuda
{

// q (batch, height, width, channels), k and v (batch, keyH * keyW, channels) and out (batch, height, width,
// channels), all of dataType; table (heads, tableH, tableW) of tableType; pos (batch * groups, keyH, keyW, 2)
// of posType. Logits, softmax, sums and coordinates are fp32.
// Returns cudaErrorInvalidValue for dims that break the contract (heads < 1, groups < 1, heads not dividing
// channels, groups not dividing heads, an empty table, a convention other than 0 / 1) and for a head whose
// keys and values do not fit in one block's shared memory on the current device; nothing is launched then.
// cudaErrorInvalidConfiguration when batch * heads * query tiles exceeds the grid. With no keys
// (keyH * keyW == 0) the output is zeros, like softmax over nothing times nothing.
cudaError_t deformAttention(DeformAttentionDims const& dims, void const* q, void const* k, void const* v,
    DType dataType, void const* table, DType tableType, void const* pos, DType posType, void* out,
    cudaStream_t stream);

// Dynamic shared memory (bytes) one block of the kernel needs for these dims.
size_t deformAttentionSharedBytes(DeformAttentionDims const& dims);

} // namespace cuda
} // namespace dat
