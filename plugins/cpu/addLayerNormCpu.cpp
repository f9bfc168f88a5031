// DATAddLayerNorm on the CPU. Per row: sum = a + b (stored; summed for the mean), then the variance from the
// stored row (two passes, as a row of DAT's 96-768 channels is still in L1), then y. onnxruntime runs the
// same as an Add and a LayerNormalization: five passes over memory instead of four.
#include "cpuLayer.h" // first: the instruction-set layer of this compilation

#include "addLayerNormCpu.h"

#include "attentionVectorMath.h"
#include "threadPool.h"

#include <algorithm>
#include <cmath>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{

void addLayerNorm(float const* a, float const* b, float const* gamma, float const* beta, float epsilon, float* sum,
    float* y, int64_t rows, int64_t cols)
{
    int64_t const vectorCols = cols - cols % kVecWidth;
    float const invCols = 1.f / static_cast<float>(cols);
    int64_t const grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
    parallelFor(rows, grain, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r)
        {
            float const* ar = a + r * cols;
            float const* br = b + r * cols;
            float* sr = sum + r * cols;
            float* yr = y + r * cols;
            FloatVec total = vZero();
            for (int64_t c = 0; c < vectorCols; c += kVecWidth)
            {
                FloatVec const s = vAdd(vLoad(ar + c), vLoad(br + c));
                vStore(sr + c, s);
                total = vAdd(total, s);
            }
            float rowTotal = vReduceAdd(total);
            for (int64_t c = vectorCols; c < cols; ++c)
            {
                sr[c] = ar[c] + br[c];
                rowTotal += sr[c];
            }
            float const mean = rowTotal * invCols;
            FloatVec squares = vZero();
            for (int64_t c = 0; c < vectorCols; c += kVecWidth)
            {
                FloatVec const d = vSub(vLoad(sr + c), vSet(mean));
                squares = vFma(d, d, squares);
            }
            float rowSquares = vReduceAdd(squares);
            for (int64_t c = vectorCols; c < cols; ++c)
            {
                float const d = sr[c] - mean;
                rowSquares += d * d;
            }
            float const invStd = 1.f / std::sqrt(rowSquares * invCols + epsilon);
            for (int64_t c = 0; c < vectorCols; c += kVecWidth)
            {
                FloatVec const normed = vMul(vSub(vLoad(sr + c), vSet(mean)), vSet(invStd));
                vStore(yr + c, vFma(normed, vLoad(gamma + c), vLoad(beta + c)));
            }
            for (int64_t c = vectorCols; c < cols; ++c)
            {
                yr[c] = (sr[c] - mean) * invStd * gamma[c] + beta[c];
            }
        }
    });
}

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
