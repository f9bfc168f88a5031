// DATBiasGelu on the CPU: y = GELU(x + bias), one pass, with the vector GELU of geluMath.h (its accuracy and the
// choice of erf form are documented there).
#include "cpuLayer.h" // first: the instruction-set layer of this compilation

#include "biasGeluCpu.h"

#include "geluMath.h"
#include "threadPool.h"

#include <algorithm>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{

void biasGelu(float const* x, float const* bias, float* y, int64_t rows, int64_t cols)
{
    using geluMath::gelu;
    using geluMath::vGelu;
    int64_t const vectorCols = cols - cols % kVecWidth;
    // Chunks of at least ~16K elements: one row of DAT's MLP is 384-3072 channels.
    int64_t const grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
    parallelFor(rows, grain, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r)
        {
            float const* xr = x + r * cols;
            float* yr = y + r * cols;
            for (int64_t c = 0; c < vectorCols; c += kVecWidth)
            {
                vStore(yr + c, vGelu(vAdd(vLoad(xr + c), vLoad(bias + c))));
            }
            for (int64_t c = vectorCols; c < cols; ++c)
            {
                yr[c] = gelu(xr[c] + bias[c]);
            }
        }
    });
}

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
