// The CPU kernels as one table of entry points per instruction-set layer, which the onnxruntime op library calls
// through the table of the layer chosen at load time.
#pragma once

#include "../common/datDeformAttentionMath.h"
#include "../common/datSamplingTypes.h"
#include "../common/datWindowAttentionMath.h"

#include <cstdint>
#include <string>
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

// Each instruction-set layer's table (cpuLayer.h); only those that CMake compiled are defined.
namespace portable
{
KernelTable const& table();
}
namespace avx2
{
KernelTable const& table();
}
namespace avx512
{
KernelTable const& table();
}

// Which layer this process runs and why, chosen once (cpuDispatch.cpp): DAT_DEPLOY_CPU_LAYER if set and the CPU
// has it, else the widest layer the CPU supports.
struct LayerChoice
{
    KernelTable const* table; // the portable one when `error` is set
    char const* layer;        // "portable", "avx2", "avx512"; "" when `error` is set
    std::string reason;       // one line for people: what CPUID found, or that the environment forced it
    std::string supported;    // the layers this CPU (and this build) can run, comma-separated
    std::string error;        // a forced layer this CPU cannot run, or an unknown name; empty if none
};
LayerChoice const& layerChoice();

// The kernels this process runs.
inline KernelTable const& kernels()
{
    return *layerChoice().table;
}

} // namespace cpu
} // namespace dat
