// The kernel table of one instruction-set layer (compiled once per layer, like every kernel source).
#include "cpuLayer.h" // first: the instruction-set layer of this compilation

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
namespace DAT_CPU_LAYER
{

KernelTable const& table()
{
    static KernelTable const kernels{.deformSample = deformSample, .relPosBias = relPosBias,
        .windowAttention = windowAttention, .deformAttention = deformAttention, .biasGelu = biasGelu,
        .addLayerNorm = addLayerNorm, .packGemmWeights = packGemmWeights, .gemm = gemm};
    return kernels;
}

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
