// DATGemm on the CPU. A register tile of up to 6 rows x 2 vectors of columns (12 accumulators) runs over one block
// of at most 256 k: per k, two loads of packed W, one broadcast per row of x (read in place, no packing), 12 FMAs.
// The loops go row panel -> k block -> column panel, so a panel's 6 rows of x stay in L1 while W's panels (a few
// hundred KB at DAT's small K) stream from L2, and y is written a row band at a time. The bias is added to the
// tile in registers after the last k block, and so is the GELU when asked for (the MLP's first Gemm): that saves
// the GELU's pass over y, which matters when two threads share this machine's memory bandwidth (numbers in
// plugins/README.md).
// Two software prefetches keep the FMAs fed at DAT's large M (x and y far beyond the caches): each tile asks for
// its y lines before its k loop, and each row panel's last k block asks for the next panel's x rows, a share per
// column panel (one thread, DAT-T's stage 1-3 shapes: 1.00-1.11x per shape, stage 1's the most).
// The accumulators are named variables, not an array: GCC 12 kept an array of them in registers but also stored
// every one of them to the stack on each k step (2.5x slower).
#include "cpuLayer.h" // first: the instruction-set layer of this compilation

#include "gemmCpu.h"

#include "attentionVectorMath.h"
#include "geluMath.h"
#include "threadPool.h"

#include <algorithm>
#include <cstring>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{
namespace
{

constexpr int kRows = 6;
constexpr int kPanel = 2 * kVecWidth; // columns per panel
constexpr int64_t kBlockK = 256;

// Columns [j * kVecWidth, (j + 1) * kVecWidth) of a tile row with `cols` valid columns.
inline FloatVec loadCols(float const* p, int cols, int j)
{
    int const left = cols - j * kVecWidth;
    if (left >= kVecWidth)
    {
        return vLoad(p + j * kVecWidth);
    }
    return left > 0 ? vLoadPartial(p + j * kVecWidth, left, 0.f) : vZero();
}

inline void storeRow(float* y, FloatVec v0, FloatVec v1, int cols)
{
    if (cols == kPanel)
    {
        vStore(y, v0);
        vStore(y + kVecWidth, v1);
        return;
    }
    float tile[kPanel];
    vStore(tile, v0);
    vStore(tile + kVecWidth, v1);
    std::memcpy(y, tile, static_cast<size_t>(cols) * sizeof(float));
}

#define DAT_GEMM_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

// y rows [0, R) x columns [0, cols) (+)= x rows . panel over kc steps. first: y is not read; last: add bias, then
// the GELU if gelu.
template <int R>
void tile(int64_t kc, float const* __restrict__ x, int64_t ldx, float const* __restrict__ panel, float* y, int64_t ldy,
    int cols, bool first, bool last, float const* bias, bool gelu)
{
#define DAT_GEMM_DECLARE(r)                                                                                            \
    FloatVec acc##r##0 = vZero();                                                                                      \
    FloatVec acc##r##1 = vZero();                                                                                      \
    float const* x##r = x + (r < R ? r : 0) * ldx;
    DAT_GEMM_ROWS(DAT_GEMM_DECLARE)
#define DAT_GEMM_PREFETCH_Y(r)                                                                                         \
    if constexpr (r < R)                                                                                               \
    {                                                                                                                  \
        __builtin_prefetch(y + r * ldy, 1, 3);                                                                         \
    }
    DAT_GEMM_ROWS(DAT_GEMM_PREFETCH_Y)
    for (int64_t k = 0; k < kc; ++k)
    {
        FloatVec const w0 = vLoad(panel);
        FloatVec const w1 = vLoad(panel + kVecWidth);
        panel += kPanel;
#define DAT_GEMM_STEP(r)                                                                                               \
    if constexpr (r < R)                                                                                               \
    {                                                                                                                  \
        FloatVec const xb = vSet(x##r[k]);                                                                             \
        acc##r##0 = vFma(xb, w0, acc##r##0);                                                                           \
        acc##r##1 = vFma(xb, w1, acc##r##1);                                                                           \
    }
        DAT_GEMM_ROWS(DAT_GEMM_STEP)
    }
#define DAT_GEMM_STORE(r)                                                                                              \
    if constexpr (r < R)                                                                                               \
    {                                                                                                                  \
        float* yr = y + r * ldy;                                                                                       \
        if (!first)                                                                                                    \
        {                                                                                                              \
            acc##r##0 = vAdd(acc##r##0, loadCols(yr, cols, 0));                                                        \
            acc##r##1 = vAdd(acc##r##1, loadCols(yr, cols, 1));                                                        \
        }                                                                                                              \
        if (last && bias != nullptr)                                                                                   \
        {                                                                                                              \
            acc##r##0 = vAdd(acc##r##0, loadCols(bias, cols, 0));                                                      \
            acc##r##1 = vAdd(acc##r##1, loadCols(bias, cols, 1));                                                      \
        }                                                                                                              \
        if (last && gelu)                                                                                              \
        {                                                                                                              \
            acc##r##0 = geluMath::vGelu(acc##r##0);                                                                    \
            acc##r##1 = geluMath::vGelu(acc##r##1);                                                                    \
        }                                                                                                              \
        storeRow(yr, acc##r##0, acc##r##1, cols);                                                                      \
    }
    DAT_GEMM_ROWS(DAT_GEMM_STORE)
#undef DAT_GEMM_DECLARE
#undef DAT_GEMM_PREFETCH_Y
#undef DAT_GEMM_STEP
#undef DAT_GEMM_STORE
}

using TileFn = void (*)(int64_t, float const*, int64_t, float const*, float*, int64_t, int, bool, bool, float const*, bool);
constexpr TileFn kTiles[kRows + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};

} // namespace

PackedGemmWeights packGemmWeights(float const* w, int64_t n, int64_t k)
{
    PackedGemmWeights packed;
    packed.n = n;
    packed.k = k;
    int64_t const nPad = roundUp(n, kPanel);
    packed.data.assign(static_cast<size_t>(nPad * k), 0.f);
    float* out = packed.data.data();
    for (int64_t k0 = 0; k0 < k; k0 += kBlockK)
    {
        int64_t const kc = std::min(kBlockK, k - k0);
        for (int64_t c0 = 0; c0 < nPad; c0 += kPanel)
        {
            for (int64_t kk = 0; kk < kc; ++kk, out += kPanel)
            {
                for (int64_t j = 0; j < kPanel && c0 + j < n; ++j)
                {
                    out[j] = w[(c0 + j) * k + k0 + kk];
                }
            }
        }
    }
    return packed;
}

void gemm(float const* x, int64_t m, PackedGemmWeights const& w, float const* bias, bool gelu, float* y)
{
    int64_t const n = w.n;
    int64_t const k = w.k;
    int64_t const nPad = roundUp(n, kPanel);
    int64_t const panels = (m + kRows - 1) / kRows;
    int64_t const columnPanels = (n + kPanel - 1) / kPanel;
    if (k == 0) // x W^T is empty: y is the bias (or its GELU)
    {
        for (int64_t row = 0; row < m; ++row)
        {
            for (int64_t c = 0; c < n; ++c)
            {
                float const b = bias == nullptr ? 0.f : bias[c];
                y[row * n + c] = gelu ? geluMath::gelu(b) : b;
            }
        }
        return;
    }
    // Chunks of 8 row panels (48 rows): 0.05-1 ms each on DAT's shapes, hundreds to thousands of chunks.
    parallelFor(panels, 8, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p)
        {
            int64_t const row = p * kRows;
            TileFn const fn = kTiles[std::min<int64_t>(kRows, m - row)];
            // The next panel's x rows (contiguous), if this thread runs it: cache lines to prefetch.
            char const* const nextX = reinterpret_cast<char const*>(x + (row + kRows) * k);
            int64_t const nextLines
                = p + 1 < end ? (std::min<int64_t>(kRows, m - row - kRows) * k * sizeof(float) + 63) / 64 : 0;
            for (int64_t k0 = 0; k0 < k; k0 += kBlockK)
            {
                int64_t const kc = std::min(kBlockK, k - k0);
                bool const lastBlock = k0 + kc >= k;
                float const* block = w.data.data() + k0 * nPad;
                int64_t line = 0;
                for (int64_t c0 = 0; c0 < n; c0 += kPanel)
                {
                    for (int64_t until = lastBlock ? (c0 / kPanel + 1) * nextLines / columnPanels : 0; line < until;
                         ++line)
                    {
                        __builtin_prefetch(nextX + line * 64, 0, 3);
                    }
                    fn(kc, x + row * k + k0, k, block + c0 * kc, y + row * n + c0, n,
                        static_cast<int>(std::min<int64_t>(kPanel, n - c0)), k0 == 0, lastBlock,
                        bias == nullptr ? nullptr : bias + c0, gelu);
                }
            }
        }
    });
}

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
