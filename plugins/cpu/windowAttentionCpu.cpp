// DATWindowAttention on the CPU. One unit of parallel work is one (image, window, head): its q (pre-scaled),
// k (transposed, d x Tp) and v are gathered into small fp32 buffers (fp32 v and out rows are used in place), then
// attendRows (attentionVectorMath.h: S = q k^T + bias, softmax, P v, in register tiles) writes O at the tokens'
// pixels. Keys are padded to Tp (a multiple of the vector width): the bias reads -inf there, k = 0.
#include "windowAttentionCpu.h"

#include "attentionVectorMath.h"
#include "threadPool.h"

#include <limits>
#include <vector>

namespace dat
{
namespace cpu
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

struct Scratch
{
    std::vector<float> q;   // (T, d), pre-scaled
    std::vector<float> kT;  // (d, Tp), keys >= T zero
    std::vector<float> v;   // (T, dp), channels >= d zero
    std::vector<float> s;   // (T, Tp): logits, then exp
    std::vector<float> inv; // (T): 1 / row sum
    std::vector<float> o;   // (T, dp): output rows when they cannot be stored in place
    std::vector<int64_t> pixel;
    std::vector<int32_t> rowOffset; // pixel's qkv row within its image (for the k transpose)
    std::vector<float const*> vRows; // v of token t: in qkv (fp32 in place) or in v
    std::vector<float*> outRows;
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
        w.vRows.resize(static_cast<size_t>(tokens));
        w.outRows.resize(static_cast<size_t>(tokens));
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
                if (gatherK)
                {
                    for (int64_t t = 0; t < tokens; ++t)
                    {
                        w.rowOffset[static_cast<size_t>(t)]
                            = static_cast<int32_t>((w.pixel[static_cast<size_t>(t)] - b * plane) * qkvRow);
                    }
                }
            }
            // Gather q (scaled), k (transposed) and v of head h; fp32 v (and out) rows are used in place.
            int64_t const headOffset = h * dims;
            for (int64_t t = 0; t < tokens; ++t)
            {
                size_t const ts = static_cast<size_t>(t);
                int64_t const row = w.pixel[ts] * qkvRow + headOffset;
                loadRow(w.q.data() + t * dims, qkv, qkvType, row, dims, dm.scale);
                if (direct)
                {
                    w.vRows[ts] = static_cast<float const*>(qkv) + row + 2 * dm.channels;
                    w.outRows[ts] = static_cast<float*>(out) + w.pixel[ts] * dm.channels + headOffset;
                    continue;
                }
                if (!gatherK)
                {
                    loadRow(kRow.data(), qkv, qkvType, row + dm.channels, dims, 1.f);
                    for (int64_t c = 0; c < dims; ++c)
                    {
                        w.kT[static_cast<size_t>(c * tokensPad + t)] = kRow[static_cast<size_t>(c)];
                    }
                }
                loadRow(w.v.data() + t * dimsPad, qkv, qkvType, row + 2 * dm.channels, dims, 1.f);
            }
            if (gatherK)
            {
                float const* base = static_cast<float const*>(qkv) + b * plane * qkvRow + dm.channels + headOffset;
                transposeK(w.kT.data(), tokensPad, base, w.rowOffset.data(), tokens, dims);
            }
            // S starts as the (T, T) bias, -inf at the padded keys.
            float const* headBias = biasData + windowBiasOffset(dm, image % windows, h);
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

} // namespace cpu
} // namespace dat
