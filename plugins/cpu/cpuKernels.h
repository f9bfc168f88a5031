// The CPU kernels as one table of entry points, which the onnxruntime op library calls through.
#pragma once

#include "../common/datDeformAttentionMath.h"
#include "../common/datSamplingTypes.h"
#include "../common/datWindowAttentionMath.h"

#include <cstdint>
#include <vector>

namespace dat
{
namespace cpu
{

// W (N, K) in DATGemm's panel layout: for each block of 256 k, for each panel of 2 vectors of columns, the block's
// k rows of that panel (columns past N zero). The vector width is the kernels', so a packing is only valid for
// the table that made it.
struct PackedGemmWeights
{
    int64_t n = 0;
    int64_t k = 0;
    std::vector<float> data;
};

struct KernelTable
{
    void (*deformSample)(DeformSampleDims const& dims, void const* x, DType xType, void const* pos, DType posType,
        void* out);
    void (*relPosBias)(RelPosBiasDims const& dims, void const* table, DType tableType, void const* pos, DType posType,
        void* out);
    void (*windowAttention)(
        WindowAttentionDims const& dims, void const* qkv, DType qkvType, void const* bias, DType biasType, void* out);
    void (*deformAttention)(DeformAttentionDims const& dims, void const* q, void const* k, void const* v,
        DType dataType, void const* table, DType tableType, void const* pos, DType posType, void* out);
    void (*biasGelu)(float const* x, float const* bias, float* y, int64_t rows, int64_t cols);
    void (*addLayerNorm)(float const* a, float const* b, float const* gamma, float const* beta, float epsilon,
        float* sum, float* y, int64_t rows, int64_t cols);
    PackedGemmWeights (*packGemmWeights)(float const* w, int64_t n, int64_t k);
    void (*gemm)(float const* x, int64_t m, PackedGemmWeights const& w, float const* bias, bool gelu, float* y);
};

// The kernels this process runs.
KernelTable const& kernels();

} // namespace cpu
} // namespace dat
