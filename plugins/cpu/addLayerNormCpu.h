// CPU kernel of DATAddLayerNorm, an onnxruntime-only op (not part of the exported contract; see plugins/README.md):
// sum = a + b and y = LayerNorm(sum) over the last axis (gamma, beta, epsilon), in one pass over a and b. DAT's
// residual Add feeds both the next block's LayerNorm and the next residual Add, so both outputs are needed.
#pragma once

#include "cpuLayer.h"

#include <cstdint>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{

// a, b, sum, y (rows, cols); gamma, beta (cols). fp32. sum and y may not alias a or b.
void addLayerNorm(float const* a, float const* b, float const* gamma, float const* beta, float epsilon, float* sum,
    float* y, int64_t rows, int64_t cols);

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
