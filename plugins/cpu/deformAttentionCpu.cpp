// DATDeformAttention on the CPU. One unit of parallel work is one (image, group, block of query rows):
//   taps      the bilinear taps of each query of the block against all keys (relPosTap, as DATRelPosBias),
//             computed once and shared by the group's heads, each of which turns them into its bias row
//   then per head attendRows (attentionVectorMath.h): S = q k^T + bias, softmax, P v in register tiles, with
//             q pre-scaled and k of the head transposed (d x Nkp) in a thread-local buffer, gathered once per
//             (image, group); O is stored at the query's pixel
// Keys are padded to Nkp (a multiple of the vector width): the bias row is -inf there, k = 0.
#include "cpuLayer.h" // first: the instruction-set layer of this compilation

#include "deformAttentionCpu.h"

#include "attentionVectorMath.h"
#include "threadPool.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{
namespace
{

// ---- bias (DATRelPosBias's) -----------------------------------------------------------------------------------------
// relPosTap samples the table at ((qy - py) / 2, (qx - px) / 2): its y half depends only on (query row, key) and its
// x half only on (query column, key). So per image-group the kernel keeps, for every query row and key, the y
// corner row and weights, and for every query column and key the x corner column and weights (bilinearTap's math,
// axis by axis, same clamping), and reads a table zero-padded by 2 before and 3 after on each axis: corners outside
// the table read zeros, so no masks, and a bias row is  wy0 (wx0 t[o] + wx1 t[o+1]) + wy1 (wx0 t[o+P] + wx1 t[o+P+1]).
constexpr int64_t kPadBefore = 2; // clamped pixel coordinates lie in [-2, size + 1]: corners in [-2, size + 2]
constexpr int64_t kPadAfter = 3;

struct AxisTaps
{
    std::vector<int32_t> offset; // (queries along the axis, keys): padded corner index, times the row pitch for y
    std::vector<float> w0, w1;   // weights of the corners at offset and offset + 1 (one row down for y)
};

// One axis of bilinearTap(relPosTap(...)) for query coordinate qc against key coordinates pc[n], n < keys.
void axisTaps(float qc, float const* __restrict__ pc, int64_t keys, int32_t size, int32_t pitch,
    int32_t* __restrict__ offset, float* __restrict__ w0, float* __restrict__ w1)
{
    float const hi = static_cast<float>(size) + 1.f;
    int32_t const n = static_cast<int32_t>(keys);
#pragma omp simd
    for (int32_t i = 0; i < n; ++i)
    {
        float c = unnormalizeAlignCorners((qc - pc[i]) * 0.5f, size);
        c = c > -2.f ? c : -2.f;
        c = c < hi ? c : hi;
        int32_t const c0 = floorToInt(c);
        float const c0f = static_cast<float>(c0);
        w0[i] = (c0f + 1.f) - c;
        w1[i] = c - c0f;
        offset[i] = (c0 + static_cast<int32_t>(kPadBefore)) * pitch;
    }
}

#if DAT_CPU_LAYER_LEVEL > 0
// One vector of bias: wy0 (wx0 a0 + wx1 b0) + wy1 (wx0 a1 + wx1 b1), from the corners (a, b: t[o], t[o+1]; 0, 1: the
// row and the one below) and the weights at wx0.. (multiplies and adds kept apart, as the AVX-512 path always had).
inline void storeBilinear(float* row, FloatVec a0, FloatVec b0, FloatVec a1, FloatVec b1, float const* wx0,
    float const* wx1, float const* wy0, float const* wy1)
{
    FloatVec const x0 = vLoad(wx0);
    FloatVec const x1 = vLoad(wx1);
    FloatVec const top = vAdd(vMul(x0, a0), vMul(x1, b0));
    FloatVec const bottom = vAdd(vMul(x0, a1), vMul(x1, b1));
    vStore(row, vAdd(vMul(vLoad(wy0), top), vMul(vLoad(wy1), bottom)));
}
#endif

// row[n] = the bias of key n for one query (its y and x taps) and one head's padded table plane;
// row[n] = -inf for keys <= n < keysPad.
__attribute__((noinline)) void biasRow(float const* __restrict__ t, int64_t pitch, int32_t const* __restrict__ oy,
    float const* __restrict__ wy0, float const* __restrict__ wy1, int32_t const* __restrict__ ox,
    float const* __restrict__ wx0, float const* __restrict__ wx1, int64_t keys, int64_t keysPad, float* __restrict__ row)
{
    float const* __restrict__ t1 = t + pitch;
    int64_t n = 0;
#if DAT_CPU_LAYER_LEVEL == 2
    // Each corner pair (t[o], t[o+1]) is one 64-bit gather element: half the elements of four 32-bit gathers.
    __m512i const even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __m512i const odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (; n + 16 <= keys; n += 16)
    {
        __m512i const o = _mm512_add_epi32(_mm512_loadu_si512(oy + n), _mm512_loadu_si512(ox + n));
        __m256i const oLo = _mm512_castsi512_si256(o);
        __m256i const oHi = _mm512_extracti64x4_epi64(o, 1);
        __m512 const r0Lo = _mm512_castpd_ps(_mm512_i32gather_pd(oLo, t, 4));
        __m512 const r0Hi = _mm512_castpd_ps(_mm512_i32gather_pd(oHi, t, 4));
        __m512 const r1Lo = _mm512_castpd_ps(_mm512_i32gather_pd(oLo, t1, 4));
        __m512 const r1Hi = _mm512_castpd_ps(_mm512_i32gather_pd(oHi, t1, 4));
        __m512 const a0 = _mm512_permutex2var_ps(r0Lo, even, r0Hi); // t[o]
        __m512 const b0 = _mm512_permutex2var_ps(r0Lo, odd, r0Hi);  // t[o + 1]
        __m512 const a1 = _mm512_permutex2var_ps(r1Lo, even, r1Hi);
        __m512 const b1 = _mm512_permutex2var_ps(r1Lo, odd, r1Hi);
        storeBilinear(row + n, a0, b0, a1, b1, wx0 + n, wx1 + n, wy0 + n, wy1 + n);
    }
#elif DAT_CPU_LAYER_LEVEL == 1
    // As above with 4 pairs per 64-bit gather: 8 keys take 4 gathers instead of 32 scalar loads.
    __m256i const pairLo = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    double const* const pairs0 = reinterpret_cast<double const*>(t);
    double const* const pairs1 = reinterpret_cast<double const*>(t1);
    // (t[o], t[o+1]) for 4 keys, as (t[o] x 4, t[o+1] x 4).
    auto const gatherPairs = [pairLo](double const* pairs, __m128i o) {
        return _mm256_permutevar8x32_ps(_mm256_castpd_ps(_mm256_i32gather_pd(pairs, o, 4)), pairLo);
    };
    for (; n + 8 <= keys; n += 8)
    {
        __m256i const o = _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<__m256i const*>(oy + n)),
            _mm256_loadu_si256(reinterpret_cast<__m256i const*>(ox + n)));
        __m128i const oLo = _mm256_castsi256_si128(o);
        __m128i const oHi = _mm256_extracti128_si256(o, 1);
        __m256 const r0Lo = gatherPairs(pairs0, oLo);
        __m256 const r0Hi = gatherPairs(pairs0, oHi);
        __m256 const r1Lo = gatherPairs(pairs1, oLo);
        __m256 const r1Hi = gatherPairs(pairs1, oHi);
        __m256 const a0 = _mm256_permute2f128_ps(r0Lo, r0Hi, 0x20); // t[o]
        __m256 const b0 = _mm256_permute2f128_ps(r0Lo, r0Hi, 0x31); // t[o + 1]
        __m256 const a1 = _mm256_permute2f128_ps(r1Lo, r1Hi, 0x20);
        __m256 const b1 = _mm256_permute2f128_ps(r1Lo, r1Hi, 0x31);
        storeBilinear(row + n, a0, b0, a1, b1, wx0 + n, wx1 + n, wy0 + n, wy1 + n);
    }
#endif
    for (; n < keys; ++n)
    {
        int32_t const o = oy[n] + ox[n];
        row[n] = wy0[n] * (wx0[n] * t[o] + wx1[n] * t[o + 1]) + wy1[n] * (wx0[n] * t1[o] + wx1[n] * t1[o + 1]);
    }
    for (int64_t n = keys; n < keysPad; ++n)
    {
        row[n] = kNegInf;
    }
}

#if DAT_CPU_LAYER_LEVEL == 1
#define DAT_GROUP_BIAS_ROWS 1
// Every DAT model has 4 heads per group. With the group's 4 table planes interleaved per pixel (t[pixel * 4 + h]),
// a key's two corners on one table row are 8 consecutive floats for all 4 heads: 4 vector loads make a key's
// bias for the group, where biasRow's 64-bit gathers take 4 per 8 keys of one head (AVX2 gathers are slow).
// Same arithmetic, same order, so the rows are those of biasRow. DAT-T's deformable attention at batch 8:
// 1.16x faster (one thread, AMD EPYC, two runs; perf counted 1.7x fewer samples in the bias rows).
constexpr int64_t kBiasHeads = 4;

// rows[h][n] = the bias of key n for head h of the group (t: its interleaved padded planes); -inf for keys <= n <
// keysPad.
__attribute__((noinline)) void biasRowsOfGroup(float const* __restrict__ t, int64_t pitch, int32_t const* __restrict__ oy,
    float const* __restrict__ wy0, float const* __restrict__ wy1, int32_t const* __restrict__ ox,
    float const* __restrict__ wx0, float const* __restrict__ wx1, int64_t keys, int64_t keysPad, float* const* rows)
{
    int64_t const below = kBiasHeads * pitch; // from a corner to the one a table row down
    // The 4-head biases of 8 keys, placed so that one 4 x 8 transpose gives the heads' rows: key i at
    // [8 (i % 4) + 4 (i / 4), + 4).
    alignas(32) float keyHeads[32];
    int64_t n = 0;
    for (; n + 8 <= keys; n += 8)
    {
        for (int i = 0; i < 8; ++i)
        {
            int64_t const key = n + i;
            float const* c = t + kBiasHeads * static_cast<int64_t>(oy[key] + ox[key]);
            __m128 const x0 = _mm_set1_ps(wx0[key]);
            __m128 const x1 = _mm_set1_ps(wx1[key]);
            __m128 const top = _mm_add_ps(_mm_mul_ps(x0, _mm_loadu_ps(c)), _mm_mul_ps(x1, _mm_loadu_ps(c + 4)));
            __m128 const bottom
                = _mm_add_ps(_mm_mul_ps(x0, _mm_loadu_ps(c + below)), _mm_mul_ps(x1, _mm_loadu_ps(c + below + 4)));
            _mm_store_ps(keyHeads + 8 * (i % 4) + 4 * (i / 4),
                _mm_add_ps(_mm_mul_ps(_mm_set1_ps(wy0[key]), top), _mm_mul_ps(_mm_set1_ps(wy1[key]), bottom)));
        }
        // t_j = (key j | key j + 4) x 4 heads  ->  (keys 0..7) of head h.
        __m256 const t0 = _mm256_load_ps(keyHeads);
        __m256 const t1 = _mm256_load_ps(keyHeads + 8);
        __m256 const t2 = _mm256_load_ps(keyHeads + 16);
        __m256 const t3 = _mm256_load_ps(keyHeads + 24);
        __m256 const lo01 = _mm256_unpacklo_ps(t0, t1); // k0h0 k1h0 k0h1 k1h1 | k4h0 k5h0 k4h1 k5h1
        __m256 const hi01 = _mm256_unpackhi_ps(t0, t1); // heads 2, 3
        __m256 const lo23 = _mm256_unpacklo_ps(t2, t3);
        __m256 const hi23 = _mm256_unpackhi_ps(t2, t3);
        _mm256_storeu_ps(rows[0] + n, _mm256_shuffle_ps(lo01, lo23, _MM_SHUFFLE(1, 0, 1, 0)));
        _mm256_storeu_ps(rows[1] + n, _mm256_shuffle_ps(lo01, lo23, _MM_SHUFFLE(3, 2, 3, 2)));
        _mm256_storeu_ps(rows[2] + n, _mm256_shuffle_ps(hi01, hi23, _MM_SHUFFLE(1, 0, 1, 0)));
        _mm256_storeu_ps(rows[3] + n, _mm256_shuffle_ps(hi01, hi23, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (; n < keys; ++n)
    {
        float const* c = t + kBiasHeads * static_cast<int64_t>(oy[n] + ox[n]);
        for (int64_t h = 0; h < kBiasHeads; ++h)
        {
            float const top = wx0[n] * c[h] + wx1[n] * c[h + 4];
            float const bottom = wx0[n] * c[below + h] + wx1[n] * c[below + h + 4];
            rows[h][n] = wy0[n] * top + wy1[n] * bottom;
        }
    }
    for (int64_t h = 0; h < kBiasHeads; ++h)
    {
        for (int64_t m = keys; m < keysPad; ++m)
        {
            rows[h][m] = kNegInf;
        }
    }
}
#else
constexpr int64_t kBiasHeads = 0; // biasRow, head by head
#endif

int64_t ceilDiv(int64_t x, int64_t m)
{
    return (x + m - 1) / m;
}

struct Scratch
{
    std::vector<float> kT;  // (hg, d, Nkp): the group's heads' k, transposed; keys >= Nk zero
    std::vector<float> v;   // (hg, Nk, dp): v rows when not read in place; channels >= d zero
    std::vector<float const*> vRows; // (hg, Nk): v of key n for each head of the group
    std::vector<float> q;   // (rows, d): one head's q rows, pre-scaled
    std::vector<float> s;   // (hg, rows, Nkp): bias, then logits, then exp
    std::vector<float> inv; // (rows): 1 / row sum
    std::vector<float> o;   // (rows, dp): output rows when they cannot be stored in place
    std::vector<float*> outRows;
    AxisTaps y, x; // bias taps of every query row / column against the image-group's keys
    std::vector<float> row;   // (d): fp16 k row
};

} // namespace

void deformAttention(DeformAttentionDims const& dm, void const* q, void const* k, void const* v, DType dataType,
    void const* table, DType tableType, void const* pos, DType posType, void* out)
{
    int64_t const queries = dm.height * dm.width;
    int64_t const keys = dm.keys();
    int64_t const dims = dm.headDim();
    int64_t const hg = dm.headsPerGroup();
    int64_t const channels = dm.channels;
    if (dm.batch == 0 || queries == 0 || channels == 0)
    {
        return;
    }
    if (keys == 0) // softmax over no keys times no values: torch gives zeros
    {
        int64_t const n = dm.batch * queries * channels;
        std::memset(out, 0, static_cast<size_t>(n) * (dataType == DType::kFloat32 ? 4 : 2));
        return;
    }
    int64_t const keysPad = roundUp(keys, kVecWidth);
    int64_t const dimsPad = roundUp(dims, kVecWidth);
    int32_t const tableH = static_cast<int32_t>(dm.tableH);
    int32_t const tableW = static_cast<int32_t>(dm.tableW);

    // The table (small: heads x Th x Tw) zero-padded by kPadBefore / kPadAfter on each axis, as fp32.
    int64_t const pitch = dm.tableW + kPadBefore + kPadAfter;
    int64_t const paddedPlane = (dm.tableH + kPadBefore + kPadAfter) * pitch;
    std::vector<float> tablePadded(static_cast<size_t>(dm.heads * paddedPlane), 0.f);
    for (int64_t h = 0; h < dm.heads; ++h)
    {
        for (int64_t i = 0; i < dm.tableH; ++i)
        {
            loadRow(tablePadded.data() + h * paddedPlane + (i + kPadBefore) * pitch + kPadBefore, table, tableType,
                (h * dm.tableH + i) * dm.tableW, dm.tableW, 1.f);
        }
    }
    // With biasRowsOfGroup, each group's 4 planes interleaved per pixel.
    bool const groupBias = kBiasHeads > 0 && hg == kBiasHeads;
    std::vector<float> tableOfGroups(groupBias ? tablePadded.size() : 0);
    for (int64_t h = 0; groupBias && h < dm.heads; ++h)
    {
        float* dst = tableOfGroups.data() + (h / hg) * paddedPlane * hg + h % hg;
        float const* src = tablePadded.data() + h * paddedPlane;
        for (int64_t i = 0; i < paddedPlane; ++i)
        {
            dst[i * hg] = src[i];
        }
    }
    // pos as fp32 (y, x) planes per image-group; query coordinates per axis (fp32, as in the contract).
    int64_t const images = dm.batch * dm.groups;
    std::vector<float> posY(static_cast<size_t>(images * keys)), posX(static_cast<size_t>(images * keys));
    for (int64_t i = 0; i < images * keys; ++i)
    {
        if (posType == DType::kFloat32)
        {
            posY[static_cast<size_t>(i)] = static_cast<float const*>(pos)[2 * i];
            posX[static_cast<size_t>(i)] = static_cast<float const*>(pos)[2 * i + 1];
        }
        else
        {
            posY[static_cast<size_t>(i)] = halfBitsToFloat(static_cast<uint16_t const*>(pos)[2 * i]);
            posX[static_cast<size_t>(i)] = halfBitsToFloat(static_cast<uint16_t const*>(pos)[2 * i + 1]);
        }
    }
    std::vector<float> qy(static_cast<size_t>(dm.height)), qx(static_cast<size_t>(dm.width));
    for (int64_t i = 0; i < dm.height; ++i)
    {
        qy[static_cast<size_t>(i)] = queryCoord(static_cast<int32_t>(i), static_cast<int32_t>(dm.height), dm.convention);
    }
    for (int64_t i = 0; i < dm.width; ++i)
    {
        qx[static_cast<size_t>(i)] = queryCoord(static_cast<int32_t>(i), static_cast<int32_t>(dm.width), dm.convention);
    }

    // fp32 v and output rows of whole vectors are used in place; others go through padded buffers.
    bool const direct = dataType == DType::kFloat32 && dims % kVecWidth == 0;

    // Query blocks of up to 32 rows; smaller when that leaves too few units for the threads.
    int64_t const threads = numThreads();
    int64_t blocks = ceilDiv(queries, 32);
    while (images * blocks < 4 * threads && ceilDiv(queries, blocks) > 8)
    {
        blocks *= 2;
    }
    int64_t const blockRows = std::min(queries, roundUp(ceilDiv(queries, blocks), 4));
    blocks = ceilDiv(queries, blockRows);
    int64_t const units = images * blocks;

    // Units (image, group, query block), block fastest: a thread's consecutive units share the group's k and v.
    parallelFor(units, 1, [&](int64_t begin, int64_t end) {
        Scratch w;
        w.kT.assign(static_cast<size_t>(hg * dims * keysPad), 0.f);
        w.v.assign(direct ? 0 : static_cast<size_t>(hg * keys * dimsPad), 0.f);
        w.vRows.resize(static_cast<size_t>(hg * keys));
        w.q.resize(static_cast<size_t>(blockRows * dims));
        w.s.resize(static_cast<size_t>(hg * blockRows * keysPad));
        w.inv.resize(static_cast<size_t>(blockRows));
        w.o.assign(direct ? 0 : static_cast<size_t>(blockRows * dimsPad), 0.f);
        w.outRows.resize(static_cast<size_t>(blockRows));
        for (auto* axis : {&w.y, &w.x})
        {
            int64_t const n = (axis == &w.y ? dm.height : dm.width) * keys;
            axis->offset.resize(static_cast<size_t>(n));
            axis->w0.resize(static_cast<size_t>(n));
            axis->w1.resize(static_cast<size_t>(n));
        }
        w.row.resize(static_cast<size_t>(dims));
        if (!direct)
        {
            for (int64_t r = 0; r < blockRows; ++r)
            {
                w.outRows[static_cast<size_t>(r)] = w.o.data() + r * dimsPad;
            }
        }
        int64_t kvFor = -1;
        for (int64_t unit = begin; unit < end; ++unit)
        {
            int64_t const image = unit / blocks; // b * groups + g
            int64_t const q0 = (unit % blocks) * blockRows;
            int64_t const rows = std::min(blockRows, queries - q0);
            int64_t const b = image / dm.groups;
            int64_t const g = image % dm.groups;
            if (kvFor != image)
            {
                // k of the group's heads transposed to (d, Nkp); v rows in place or widened / padded.
                for (int64_t hl = 0; hl < hg; ++hl)
                {
                    int64_t const headOffset = (g * hg + hl) * dims;
                    float* kT = w.kT.data() + hl * dims * keysPad;
                    for (int64_t n = 0; n < keys; ++n)
                    {
                        int64_t const rowStart = (b * keys + n) * channels + headOffset;
                        float const* kRow;
                        if (dataType == DType::kFloat32)
                        {
                            kRow = static_cast<float const*>(k) + rowStart;
                        }
                        else
                        {
                            loadRow(w.row.data(), k, dataType, rowStart, dims, 1.f);
                            kRow = w.row.data();
                        }
                        for (int64_t c = 0; c < dims; ++c)
                        {
                            kT[c * keysPad + n] = kRow[c];
                        }
                        size_t const vi = static_cast<size_t>(hl * keys + n);
                        if (direct)
                        {
                            w.vRows[vi] = static_cast<float const*>(v) + rowStart;
                        }
                        else
                        {
                            float* vDst = w.v.data() + static_cast<int64_t>(vi) * dimsPad;
                            loadRow(vDst, v, dataType, rowStart, dims, 1.f);
                            w.vRows[vi] = vDst;
                        }
                    }
                }
                // Bias taps of every query row and column against this image-group's keys.
                float const* py = posY.data() + image * keys;
                float const* px = posX.data() + image * keys;
                for (int64_t i = 0; i < dm.height; ++i)
                {
                    axisTaps(qy[static_cast<size_t>(i)], py, keys, tableH, static_cast<int32_t>(pitch),
                        w.y.offset.data() + i * keys, w.y.w0.data() + i * keys, w.y.w1.data() + i * keys);
                }
                for (int64_t j = 0; j < dm.width; ++j)
                {
                    axisTaps(qx[static_cast<size_t>(j)], px, keys, tableW, 1, w.x.offset.data() + j * keys,
                        w.x.w0.data() + j * keys, w.x.w1.data() + j * keys);
                }
                kvFor = image;
            }
            // Bias rows of the group's heads.
            for (int64_t r = 0; r < rows; ++r)
            {
                int64_t const p = q0 + r;
                int64_t const yi = (p / dm.width) * keys;
                int64_t const xi = (p % dm.width) * keys;
#if defined(DAT_GROUP_BIAS_ROWS)
                if (groupBias)
                {
                    float* const headRows[kBiasHeads] = {w.s.data() + r * keysPad,
                        w.s.data() + (blockRows + r) * keysPad, w.s.data() + (2 * blockRows + r) * keysPad,
                        w.s.data() + (3 * blockRows + r) * keysPad};
                    biasRowsOfGroup(tableOfGroups.data() + g * hg * paddedPlane, pitch, w.y.offset.data() + yi,
                        w.y.w0.data() + yi, w.y.w1.data() + yi, w.x.offset.data() + xi, w.x.w0.data() + xi,
                        w.x.w1.data() + xi, keys, keysPad, headRows);
                    continue;
                }
#endif
                for (int64_t hl = 0; hl < hg; ++hl)
                {
                    biasRow(tablePadded.data() + (g * hg + hl) * paddedPlane, pitch, w.y.offset.data() + yi,
                        w.y.w0.data() + yi, w.y.w1.data() + yi, w.x.offset.data() + xi, w.x.w0.data() + xi,
                        w.x.w1.data() + xi, keys, keysPad, w.s.data() + (hl * blockRows + r) * keysPad);
                }
            }
            // Per head: logits, softmax, P v.
            for (int64_t hl = 0; hl < hg; ++hl)
            {
                int64_t const headOffset = (g * hg + hl) * dims;
                for (int64_t r = 0; r < rows; ++r)
                {
                    int64_t const rowStart = (b * queries + q0 + r) * channels + headOffset;
                    loadRow(w.q.data() + r * dims, q, dataType, rowStart, dims, dm.scale);
                    if (direct)
                    {
                        w.outRows[static_cast<size_t>(r)] = static_cast<float*>(out) + rowStart;
                    }
                }
                float* s = w.s.data() + hl * blockRows * keysPad;
                float const* kT = w.kT.data() + hl * dims * keysPad;
                float const* const* vRows = w.vRows.data() + hl * keys;
                // S already holds the bias rows (biasRow above): q k^T is added to them in place.
                auto const biasLogits = [s, keysPad](int64_t row, int64_t key) { return vLoad(s + row * keysPad + key); };
                attendRows(w.q.data(), dims, kT, biasLogits, s, w.inv.data(), rows, keys, keysPad, dimsPad, vRows,
                    w.outRows.data());
                if (!direct)
                {
                    for (int64_t r = 0; r < rows; ++r)
                    {
                        storeRow(out, dataType, (b * queries + q0 + r) * channels + headOffset,
                            w.o.data() + r * dimsPad, dims);
                    }
                }
            }
        }
    });
}

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
