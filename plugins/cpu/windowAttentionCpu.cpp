// DATWindowAttention on the CPU. One unit of parallel work is one (image, window, head): its q (pre-scaled),
// k (transposed, d x Tp) and v are gathered into small fp32 buffers (fp32 v and out rows are used in place), then
// attendRows (attentionVectorMath.h: S = q k^T + bias, softmax, P v, in register tiles) writes O at the tokens'
// pixels. Keys are padded to Tp (a multiple of the vector width): the bias reads -inf there, k = 0. Outside the
// AVX-512 fused path, fp32 qkv rows of a window are first copied into one contiguous block (whole rows stream in
// with many loads in flight; per-head slices of scattered rows stalled q, k and v loads on cache misses).
#include "cpuLayer.h" // first: the instruction-set layer of this compilation

#include "windowAttentionCpu.h"

#include "attentionVectorMath.h"
#include "threadPool.h"

#include <cstring>
#include <limits>
#include <vector>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{
namespace
{

// kT[c][t] = k[t][c] for c < dims, t < tokens, k of token t at base + offsets[t] (fp32 in place). Plain
// loads and stores: as fast here as vector gathers, which microcode mitigations (GDS) slow down on some CPUs.
inline void transposeK(float* __restrict__ kT, int64_t ldk, float const* base, int32_t const* offsets, int64_t tokens,
    int64_t dims)
{
    for (int64_t t = 0; t < tokens; ++t)
    {
        float const* k = base + offsets[t];
        for (int64_t c = 0; c < dims; ++c)
        {
            kT[c * ldk + t] = k[c];
        }
    }
}

// Pixels (b * plane + y * width + x) of the tokens of window `image % windows` of image `image / windows`:
// windowTokenPixel, with the window's origin computed once.
void windowPixels(WindowAttentionDims const& dm, int64_t image, int64_t plane, int64_t* pixel)
{
    int64_t const windows = dm.windowsPerImage();
    int64_t const base = (image / windows) * plane;
    int64_t const n = image % windows;
    int64_t const first = windowTokenPixel(dm, n, 0);
    int64_t const y0 = first / dm.width;
    int64_t const x0 = first % dm.width;
    for (int64_t i = 0; i < dm.window; ++i)
    {
        int64_t const y = y0 + i >= dm.height ? y0 + i - dm.height : y0 + i;
        for (int64_t j = 0; j < dm.window; ++j)
        {
            int64_t const x = x0 + j >= dm.width ? x0 + j - dm.width : x0 + j;
            pixel[i * dm.window + j] = base + y * dm.width + x;
        }
    }
}

#if DAT_CPU_LAYER_LEVEL == 2
// Fused AVX-512 path for head dim 32 and at most 64 tokens (fp32 in place): per tile of R query rows,
// S = q k^T + bias (R rows x NV key vectors in registers), the softmax in registers (P to a small buffer), then
// O = P v / sum (R rows x 2 channel vectors), straight into the output rows. R = 7 divides DAT's 49 tokens.
constexpr int kFusedRows = 7;
constexpr int kFusedDims = 32;
constexpr int kFusedKeys = 64; // most (padded) keys

// Also prefetches the q, k and v slices (2 cache lines each) of the next unit's R tokens at `ahead[r]` (k at
// + kOffset floats, v at + 2 kOffset), spread over the q k^T loop: at batch 8 the first touch of each unit's
// scattered slices was a third of the time.
template <int R, int NV>
inline void fusedTile(float const* __restrict__ q, float const* __restrict__ kT, float const* headBias, int64_t tokens,
    float* __restrict__ p, float const* const* vRows, float* const* outRows, float const* const* ahead, int64_t kOffset)
{
    __m512 acc[R][NV];
    for (int r = 0; r < R; ++r)
    {
        for (int j = 0; j < NV; ++j)
        {
            float const* b = headBias + r * tokens + j * kVecWidth;
            int64_t const left = tokens - j * kVecWidth;
            acc[r][j] = left >= kVecWidth ? vLoad(b) : vLoadPartial(b, static_cast<int>(left), kNegInf);
        }
    }
    for (int c = 0; c < kFusedDims; ++c)
    {
        if (ahead != nullptr && c < R)
        {
            char const* a = reinterpret_cast<char const*>(ahead[c]);
            for (int part = 0; part < 3; ++part)
            {
                char const* line = a + part * kOffset * static_cast<int64_t>(sizeof(float));
                _mm_prefetch(line, _MM_HINT_T0);
                _mm_prefetch(line + 64, _MM_HINT_T0);
            }
        }
        __m512 kv[NV];
        for (int j = 0; j < NV; ++j)
        {
            kv[j] = vLoad(kT + c * NV * kVecWidth + j * kVecWidth);
        }
        for (int r = 0; r < R; ++r)
        {
            __m512 const qb = vSet(q[r * kFusedDims + c]);
            for (int j = 0; j < NV; ++j)
            {
                acc[r][j] = vFma(qb, kv[j], acc[r][j]);
            }
        }
    }
    float inv[R];
    for (int r = 0; r < R; ++r)
    {
        __m512 m = acc[r][0];
        for (int j = 1; j < NV; ++j)
        {
            m = vMax(m, acc[r][j]);
        }
        __m512 const mx = vSet(vReduceMax(m));
        __m512 sum = vZero();
        for (int j = 0; j < NV; ++j)
        {
            __m512 const x = vSub(acc[r][j], mx);
            __m512 const e = vKeepAtLeast(vExp(x), x, kSoftmaxCutoff);
            vStore(p + r * NV * kVecWidth + j * kVecWidth, e);
            sum = vAdd(sum, e);
        }
        inv[r] = 1.f / vReduceAdd(sum);
    }
    __m512 o[R][2];
    for (int r = 0; r < R; ++r)
    {
        o[r][0] = vZero();
        o[r][1] = vZero();
    }
    for (int64_t u = 0; u < tokens; ++u)
    {
        __m512 const v0 = vLoad(vRows[u]);
        __m512 const v1 = vLoad(vRows[u] + kVecWidth);
        for (int r = 0; r < R; ++r)
        {
            __m512 const pb = vSet(p[r * NV * kVecWidth + u]);
            o[r][0] = vFma(pb, v0, o[r][0]);
            o[r][1] = vFma(pb, v1, o[r][1]);
        }
    }
    for (int r = 0; r < R; ++r)
    {
        __m512 const scale = vSet(inv[r]);
        vStore(outRows[r], vMul(o[r][0], scale));
        vStore(outRows[r] + kVecWidth, vMul(o[r][1], scale));
    }
}

// One (window, head): q (tokens x 32, pre-scaled), kT (32 x keysPad, keys >= tokens zero; keysPad = tokens rounded
// up to whole vectors, <= 64), p (R x keysPad) scratch, bias rows of `tokens`.
inline void fusedAttend(float const* q, float const* kT, float const* headBias, int64_t tokens, float* p,
    float const* const* vRows, float* const* outRows, float const* const* ahead, int64_t kOffset)
{
    int64_t const keyVecs = (tokens + kVecWidth - 1) / kVecWidth;
    withCount<4>(keyVecs, [&](auto vecCount) {
        constexpr int NV = decltype(vecCount)::value;
        for (int64_t t = 0; t < tokens; t += kFusedRows)
        {
            withCount<kFusedRows>(std::min<int64_t>(kFusedRows, tokens - t), [&](auto rowCount) {
                constexpr int R = decltype(rowCount)::value;
                fusedTile<R, NV>(q + t * kFusedDims, kT, headBias + t * tokens, tokens, p, vRows, outRows + t,
                    ahead == nullptr ? nullptr : ahead + t, kOffset);
            });
        }
    });
}
#endif

struct Scratch
{
    std::vector<float> q;   // (T, d), pre-scaled
    std::vector<float> kT;  // (d, Tp), keys >= T zero
    std::vector<float> v;   // (T, dp), channels >= d zero
    std::vector<float> s;   // (T, Tp): logits, then exp
    std::vector<float> inv; // (T): 1 / row sum
    std::vector<float> o;   // (T, dp): output rows when they cannot be stored in place
    std::vector<int64_t> pixel;
    std::vector<int32_t> rowOffset; // pixel's qkv row within its image, or within `packed` (for the k transpose)
    std::vector<float> packed;       // (T, 3C): the window's qkv rows, contiguous (packWindows)
    std::vector<float const*> vRows; // v of token t: in qkv (fp32 in place) or in v
    std::vector<float*> outRows;
    std::vector<int64_t> nextPixel;   // the next window's pixels (fused path's prefetch)
    std::vector<float const*> ahead;  // the next unit's q slices (fused path's prefetch)
};

} // namespace

void windowAttention(
    WindowAttentionDims const& dm, void const* qkv, DType qkvType, void const* bias, DType biasType, void* out)
{
    int64_t const tokens = dm.tokens();
    int64_t const dims = dm.headDim();
    int64_t const windows = dm.windowsPerImage();
    int64_t const plane = dm.height * dm.width;
    int64_t const units = dm.batch * windows * dm.heads;
    if (units == 0 || dims == 0)
    {
        return;
    }
    int64_t const tokensPad = roundUp(tokens, kVecWidth);
    int64_t const dimsPad = roundUp(dims, kVecWidth);
    int64_t const qkvRow = 3 * dm.channels;

    // An fp16 bias is widened once (in parallel); an fp32 one is read in place.
    std::vector<float> biasF;
    float const* biasData = static_cast<float const*>(bias);
    if (biasType == DType::kFloat16)
    {
        int64_t const planes = dm.biasWindows * dm.heads;
        int64_t const planeSize = tokens * tokens;
        biasF.resize(static_cast<size_t>(planes * planeSize));
        parallelFor(planes, 1, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i)
            {
                loadRow(biasF.data() + i * planeSize, bias, DType::kFloat16, i * planeSize, planeSize, 1.f);
            }
        });
        biasData = biasF.data();
    }
    // fp32 output rows of whole vectors are written in place; others go through a row buffer.
    bool const direct = qkvType == DType::kFloat32 && dims % kVecWidth == 0;
    // fp32 k is transposed straight from qkv, with int32 offsets in an image.
    bool const gatherK = qkvType == DType::kFloat32 && plane * qkvRow <= std::numeric_limits<int32_t>::max();

#if DAT_CPU_LAYER_LEVEL == 2
    bool const fused = direct && gatherK && dims == kFusedDims && tokensPad <= kFusedKeys;
#else
    bool const fused = false;
#endif
    // Outside the fused path (which prefetches each next unit's slices itself) a window's fp32 qkv rows are copied
    // to one contiguous block once, and its heads read that.
    bool const packWindows = gatherK && !fused;
    // Units (image, window, head), head fastest: neighbours read the same pixels' qkv rows.
    parallelFor(units, 1, [&](int64_t begin, int64_t end) {
        Scratch w;
        w.q.resize(static_cast<size_t>(tokens * dims));
        w.kT.assign(static_cast<size_t>(dims * tokensPad), 0.f);
        w.v.assign(static_cast<size_t>(tokens * dimsPad), 0.f);
        w.s.resize(static_cast<size_t>(tokens * tokensPad));
        w.inv.resize(static_cast<size_t>(tokens));
        w.o.assign(direct ? 0 : static_cast<size_t>(tokens * dimsPad), 0.f);
        w.pixel.resize(static_cast<size_t>(tokens));
        w.rowOffset.resize(static_cast<size_t>(tokens));
        w.packed.resize(packWindows ? static_cast<size_t>(tokens * qkvRow) : 0);
        w.vRows.resize(static_cast<size_t>(tokens));
        w.outRows.resize(static_cast<size_t>(tokens));
        w.nextPixel.resize(static_cast<size_t>(tokens));
        w.ahead.resize(static_cast<size_t>(tokens));
        for (int64_t t = 0; t < tokens; ++t)
        {
            w.vRows[static_cast<size_t>(t)] = w.v.data() + t * dimsPad;
            w.outRows[static_cast<size_t>(t)] = direct ? nullptr : w.o.data() + t * dimsPad;
        }
        std::vector<float> kRow(static_cast<size_t>(dims));
        int64_t pixelsOf = -1;
        for (int64_t unit = begin; unit < end; ++unit)
        {
            int64_t const h = unit % dm.heads;
            int64_t const image = unit / dm.heads; // b * windows + n
            int64_t const b = image / windows;
            if (pixelsOf != image)
            {
                windowPixels(dm, image, plane, w.pixel.data());
                pixelsOf = image;
                for (int64_t t = 0; gatherK && t < tokens; ++t)
                {
                    size_t const ts = static_cast<size_t>(t);
                    if (packWindows)
                    {
                        std::memcpy(w.packed.data() + t * qkvRow, static_cast<float const*>(qkv) + w.pixel[ts] * qkvRow,
                            static_cast<size_t>(qkvRow) * sizeof(float));
                    }
                    // Row t in `packed`, or the pixel's row within its image.
                    w.rowOffset[ts] = static_cast<int32_t>((packWindows ? t : w.pixel[ts] - b * plane) * qkvRow);
                }
            }
            void const* const rows = packWindows ? static_cast<void const*>(w.packed.data()) : qkv;
            // Gather q (scaled), k (transposed) and v of head h; fp32 v (and out) rows are used in place.
            int64_t const headOffset = h * dims;
            for (int64_t t = 0; t < tokens; ++t)
            {
                size_t const ts = static_cast<size_t>(t);
                int64_t const row = (packWindows ? t : w.pixel[ts]) * qkvRow + headOffset;
                loadRow(w.q.data() + t * dims, rows, qkvType, row, dims, dm.scale);
                if (direct)
                {
                    w.vRows[ts] = static_cast<float const*>(rows) + row + 2 * dm.channels;
                    w.outRows[ts] = static_cast<float*>(out) + w.pixel[ts] * dm.channels + headOffset;
                    continue;
                }
                if (!gatherK)
                {
                    loadRow(kRow.data(), rows, qkvType, row + dm.channels, dims, 1.f);
                    for (int64_t c = 0; c < dims; ++c)
                    {
                        w.kT[static_cast<size_t>(c * tokensPad + t)] = kRow[static_cast<size_t>(c)];
                    }
                }
                loadRow(w.v.data() + t * dimsPad, rows, qkvType, row + 2 * dm.channels, dims, 1.f);
            }
            if (gatherK)
            {
                float const* base = static_cast<float const*>(rows) + (packWindows ? 0 : b * plane * qkvRow) + dm.channels
                    + headOffset;
                transposeK(w.kT.data(), tokensPad, base, w.rowOffset.data(), tokens, dims);
            }
            // S starts as the (T, T) bias, -inf at the padded keys.
            float const* headBias = biasData + windowBiasOffset(dm, image % windows, h);
#if DAT_CPU_LAYER_LEVEL == 2
            if (fused)
            {
                // The next unit's q slices (same window, next head; or the next window's first head).
                float const* const* ahead = nullptr;
                if (unit + 1 < end)
                {
                    float const* const data = static_cast<float const*>(qkv);
                    if (h + 1 < dm.heads)
                    {
                        for (int64_t t = 0; t < tokens; ++t)
                        {
                            w.ahead[static_cast<size_t>(t)] = data + w.pixel[static_cast<size_t>(t)] * qkvRow + headOffset + dims;
                        }
                    }
                    else
                    {
                        windowPixels(dm, image + 1, plane, w.nextPixel.data());
                        for (int64_t t = 0; t < tokens; ++t)
                        {
                            w.ahead[static_cast<size_t>(t)] = data + w.nextPixel[static_cast<size_t>(t)] * qkvRow;
                        }
                    }
                    ahead = w.ahead.data();
                }
                fusedAttend(w.q.data(), w.kT.data(), headBias, tokens, w.s.data(), w.vRows.data(), w.outRows.data(),
                    ahead, dm.channels);
                continue;
            }
#endif
            auto const biasLogits = [headBias, tokens](int64_t row, int64_t key) {
                float const* b = headBias + row * tokens + key;
                return key + kVecWidth <= tokens ? vLoad(b) : vLoadPartial(b, static_cast<int>(tokens - key), kNegInf);
            };
            attendRows(w.q.data(), dims, w.kT.data(), biasLogits, w.s.data(), w.inv.data(), tokens, tokens, tokensPad,
                dimsPad, w.vRows.data(), w.outRows.data());
            if (!direct)
            {
                for (int64_t t = 0; t < tokens; ++t)
                {
                    storeRow(out, qkvType, w.pixel[static_cast<size_t>(t)] * dm.channels + headOffset,
                        w.o.data() + t * dimsPad, dims);
                }
            }
        }
    });
}

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
