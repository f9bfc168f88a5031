// CPU kernel of DATBiasGelu, an onnxruntime-only op (not part of the exported contract; see plugins/README.md):
// y = GELU(x + bias) with the exact (erf) GELU, over rows of `cols` channels. onnxruntime's own BiasGelu
// evaluates erf four lanes at a time; this one uses the AVX-512 / AVX2 vector layer of attentionVectorMath.h.
#pragma once

#include "cpuLayer.h"

#include <cstdint>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{

// x, y (rows, cols), bias (cols); y may not alias x. fp32.
void biasGelu(float const* x, float const* bias, float* y, int64_t rows, int64_t cols);

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
