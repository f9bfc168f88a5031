#include "cpuKernels.h"

#include "addLayerNormCpu.h"
#include "biasGeluCpu.h"
#include "datSamplingCpu.h"
#include "deformAttentionCpu.h"
#include "gemmCpu.h"
#include "windowAttentionCpu.h"

namespace dat
{
namespace cpu
{

KernelTable const& kernels()
{
    static KernelTable const table{.deformSample = deformSample, .relPosBias = relPosBias,
        .windowAttention = windowAttention, .deformAttention = deformAttention, .biasGelu = biasGelu,
        .addLayerNorm = addLayerNorm, .packGemmWeights = packGemmWeights, .gemm = gemm};
    return table;
}

} // namespace cpu
} // namespace dat
