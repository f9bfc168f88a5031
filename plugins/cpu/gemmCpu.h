// CPU kernel of DATGemm, an onnxruntime-only op (not part of the exported contract; see plugins/README.md):
// y = x W^T + bias for x (M, K) and W (N, K) as nn.Linear stores it (ONNX Gemm with transB = 1). It exists for
// DAT's projections with small weights (N * K <= 600K), where onnxruntime's SGEMM was 1.1-1.5x slower on AVX2
// (numbers in plugins/README.md).
#pragma once

#include "cpuLayer.h"

#include "cpuKernels.h"

#include <cstdint>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{


PackedGemmWeights packGemmWeights(float const* w, int64_t n, int64_t k);

// y (m, w.n) = x (m, w.k) W^T + bias, then the exact GELU of geluMath.h if gelu; bias (w.n) or null. fp32; y may
// not alias x.
void gemm(float const* x, int64_t m, PackedGemmWeights const& w, float const* bias, bool gelu, float* y);

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
