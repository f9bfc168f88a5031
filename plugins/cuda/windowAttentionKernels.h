// CUDA kernel of DATWindowAttention (contract: plugins/README.md), fp32 and fp16 qkv, fp32 or fp16 bias.
// Used by the TensorRT plugin; host code only needs cuda_runtime_api.h.
#pragma once

#include "../common/datSamplingTypes.h"
#include "../common/datWindowAttentionMath.h"

#include <cuda_runtime_api.h>

namespace dat
{
namespace cuda
{

// qkv (batch, height, width, 3 * channels) and out (batch, height, width, channels), both of qkvType;
// bias (biasWindows, heads, tokens, tokens) of biasType. Logits, softmax and sums are fp32.
// Returns cudaErrorInvalidValue for dims that break the contract (heads not dividing channels, window not
// dividing the map, shift outside [0, window), biasWindows neither 1 nor the windows per image) and for a
// window whose q, k and v do not fit in one block's shared memory on the current device; nothing is
// launched then. cudaErrorInvalidConfiguration when batch * windows * heads exceeds the grid.
cudaError_t windowAttention(WindowAttentionDims const& dims, void const* qkv, DType qkvType, void const* bias,
    DType biasType, void* out, cudaStream_t stream);

// Dynamic shared memory (bytes) one block of the kernel needs for these dims.
size_t windowAttentionSharedBytes(WindowAttentionDims const& dims);

} // namespace cuda
} // namespace dat
