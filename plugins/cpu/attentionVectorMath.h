// Vector math shared by the CPU attention kernels (windowAttentionCpu.cpp, deformAttentionCpu.cpp): one
// vector layer per compilation, as DAT_CPU_LAYER_LEVEL says (cpuLayer.h: AVX-512, AVX2 + FMA, or a portable 4-lane
// one in GCC vector extensions), a Cephes-style vector exp, fp32 / fp16 rows, and one head's attention for a block of query rows:
//   S = q k^T + bias      register tiles of R query rows x NV key vectors, k loads shared by the R rows
//   P = exp(S - max)      1 / sum kept per row; terms below exp(-64) set to exactly 0 (kSoftmaxCutoff)
//   O = (P v) / sum       register tiles of R query rows x NC channel vectors
// Keys are padded to a multiple of the vector width with bias -inf and k = 0, so every S row is whole vectors;
// the padded lanes' exp is 0 and P v only reads real keys.
// What FloatVec is depends on the layer: everything here lives in the layer's own namespace (dat::cpu::avx2, ...),
// so each inline function has a single meaning per layer in the library.
#pragma once

#include "cpuLayer.h"

#include "../common/datSamplingMath.h"
#include "../common/datSamplingTypes.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{

// ---- exp constants (Cephes expf) -----------------------------------------------------------------------------------
// The lower clamp keeps 2^n normal (n >= -126): exp(-87.3) ~ 1.2e-38 > FLT_MIN. Masked logits (-100 bias)
// land here; clamping at ln(FLT_MIN) itself gave n = -127, i.e. denormal results (and slow arithmetic).
constexpr float kExpLo = -87.3f;
constexpr float kExpHi = 88.3f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f;
constexpr float kExpP1 = 1.3981999507e-3f;
constexpr float kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f;
constexpr float kExpP4 = 1.6666665459e-1f;
constexpr float kExpP5 = 5.0000001201e-1f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Softmax terms below exp(-64) ~ 1.6e-28 (relative to the row's max term, 1) are set to exactly 0: they are
// far below an ulp of the row sum, and P v products of tiny terms would be denormal (masked logits, -100
// bias, land at exp(-87.3) ~ 1e-38 otherwise; denormal FMAs cost microcode assists, 2x on the S blocks).
constexpr float kSoftmaxCutoff = -64.f;

// ---- vector layer ---------------------------------------------------------------------------------------------------
// Each layer: the tile sizes that fit its register file, FloatVec, and the operations below; vExp is written
// once on top of them.
#if DAT_CPU_LAYER_LEVEL == 2

constexpr int kVecWidth = 16;
constexpr int kScoreRows = 4; // S tile: 4 rows x 4 vectors = 16 accumulators (+ 4 k vectors, 1 broadcast)
constexpr int kScoreVecs = 4;
constexpr int kPvRows = 8; // O tile (d = 32): 8 rows x 2 vectors = 16 accumulators
constexpr int kPvVecs = 2;
using FloatVec = __m512;

inline FloatVec vZero() { return _mm512_setzero_ps(); }
inline FloatVec vSet(float x) { return _mm512_set1_ps(x); }
inline FloatVec vLoad(float const* p) { return _mm512_loadu_ps(p); }
inline void vStore(float* p, FloatVec v) { _mm512_storeu_ps(p, v); }
inline FloatVec vFma(FloatVec a, FloatVec b, FloatVec c) { return _mm512_fmadd_ps(a, b, c); }
inline FloatVec vFnma(FloatVec a, FloatVec b, FloatVec c) { return _mm512_fnmadd_ps(a, b, c); } // c - a b
inline FloatVec vAdd(FloatVec a, FloatVec b) { return _mm512_add_ps(a, b); }
inline FloatVec vSub(FloatVec a, FloatVec b) { return _mm512_sub_ps(a, b); }
inline FloatVec vMul(FloatVec a, FloatVec b) { return _mm512_mul_ps(a, b); }
inline FloatVec vMax(FloatVec a, FloatVec b) { return _mm512_max_ps(a, b); }
inline FloatVec vDiv(FloatVec a, FloatVec b) { return _mm512_div_ps(a, b); }
inline float vReduceMax(FloatVec v) { return _mm512_reduce_max_ps(v); }
inline float vReduceAdd(FloatVec v) { return _mm512_reduce_add_ps(v); }
// Lanes [0, n) from p, the rest `fill`; reads only the first n floats.
inline FloatVec vLoadPartial(float const* p, int n, float fill)
{
    __mmask16 const mask = static_cast<__mmask16>((1u << n) - 1u);
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask, p);
}
// a where x >= lo, else 0.
inline FloatVec vKeepAtLeast(FloatVec a, FloatVec x, float lo)
{
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, vSet(lo), _CMP_GE_OQ), a);
}
// below where x < lo, else otherwise (a NaN x takes otherwise).
inline FloatVec vSelectBelow(FloatVec x, float lo, FloatVec below, FloatVec otherwise)
{
    return _mm512_mask_mov_ps(otherwise, _mm512_cmp_ps_mask(x, vSet(lo), _CMP_LT_OQ), below);
}
// x limited to [lo, hi] (NaN becomes lo).
inline FloatVec vClamp(FloatVec x, float lo, float hi) { return _mm512_min_ps(_mm512_max_ps(x, vSet(lo)), vSet(hi)); }
inline FloatVec vRoundNearest(FloatVec x)
{
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// 2^n for integral n in [-126, 127], built in the exponent field.
inline FloatVec vPow2(FloatVec n)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}

#elif DAT_CPU_LAYER_LEVEL == 1

constexpr int kVecWidth = 8;
// Both tiles are 6 rows x 2 vectors (12 accumulators + 2 k or v vectors + 1 broadcast), the shape of DATGemm's:
// DAT-T's window attention at batch 8 ran 1.17x faster than with 3 x 4 score and 4 x 2 output tiles (one
// thread, AMD EPYC, three runs; 4 x 3, 5 x 2, 7 x 2 and 6 x 1 scores, 4 x 4, 5 x 2 and 7 x 2 outputs were
// slower). 3 x 4 outputs (17 registers) kept an accumulator on the stack, a store-to-load chain per key.
constexpr int kScoreRows = 6;
constexpr int kScoreVecs = 2;
constexpr int kPvRows = 6;
constexpr int kPvVecs = 2;
using FloatVec = __m256;

inline FloatVec vZero() { return _mm256_setzero_ps(); }
inline FloatVec vSet(float x) { return _mm256_set1_ps(x); }
inline FloatVec vLoad(float const* p) { return _mm256_loadu_ps(p); }
inline void vStore(float* p, FloatVec v) { _mm256_storeu_ps(p, v); }
inline FloatVec vFma(FloatVec a, FloatVec b, FloatVec c) { return _mm256_fmadd_ps(a, b, c); }
inline FloatVec vFnma(FloatVec a, FloatVec b, FloatVec c) { return _mm256_fnmadd_ps(a, b, c); } // c - a b
inline FloatVec vAdd(FloatVec a, FloatVec b) { return _mm256_add_ps(a, b); }
inline FloatVec vSub(FloatVec a, FloatVec b) { return _mm256_sub_ps(a, b); }
inline FloatVec vMul(FloatVec a, FloatVec b) { return _mm256_mul_ps(a, b); }
inline FloatVec vMax(FloatVec a, FloatVec b) { return _mm256_max_ps(a, b); }
inline FloatVec vDiv(FloatVec a, FloatVec b) { return _mm256_div_ps(a, b); }
inline float vReduceMax(FloatVec v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
inline float vReduceAdd(FloatVec v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
inline FloatVec vLoadPartial(float const* p, int n, float fill)
{
    __m256i const lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i const mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
    return _mm256_blendv_ps(vSet(fill), _mm256_maskload_ps(p, mask), _mm256_castsi256_ps(mask));
}
inline FloatVec vKeepAtLeast(FloatVec a, FloatVec x, float lo)
{
    return _mm256_and_ps(_mm256_cmp_ps(x, vSet(lo), _CMP_GE_OQ), a);
}
inline FloatVec vSelectBelow(FloatVec x, float lo, FloatVec below, FloatVec otherwise)
{
    return _mm256_blendv_ps(otherwise, below, _mm256_cmp_ps(x, vSet(lo), _CMP_LT_OQ));
}
inline FloatVec vClamp(FloatVec x, float lo, float hi) { return _mm256_min_ps(_mm256_max_ps(x, vSet(lo)), vSet(hi)); }
inline FloatVec vRoundNearest(FloatVec x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline FloatVec vPow2(FloatVec n)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}

#else // portable: 4 lanes in GCC vector extensions (one SSE2 / NEON register), no intrinsics

constexpr int kVecWidth = 4;
constexpr int kScoreRows = 3; // 3 x 4 accumulators + 4 k vectors + 1 broadcast = 16 registers
constexpr int kScoreVecs = 4;
constexpr int kPvRows = 3;
constexpr int kPvVecs = 4;
typedef float FloatVec __attribute__((vector_size(16)));
typedef int32_t IntVec __attribute__((vector_size(16)));

inline FloatVec vZero() { return FloatVec{}; }
inline FloatVec vSet(float a) { return FloatVec{} + a; }
inline FloatVec vLoad(float const* p) { FloatVec r; std::memcpy(&r, p, sizeof(r)); return r; }
inline void vStore(float* p, FloatVec v) { std::memcpy(p, &v, sizeof(v)); }
inline FloatVec vFma(FloatVec a, FloatVec b, FloatVec c) { return a * b + c; }
inline FloatVec vFnma(FloatVec a, FloatVec b, FloatVec c) { return c - a * b; }
inline FloatVec vAdd(FloatVec a, FloatVec b) { return a + b; }
inline FloatVec vSub(FloatVec a, FloatVec b) { return a - b; }
inline FloatVec vMul(FloatVec a, FloatVec b) { return a * b; }
inline FloatVec vMax(FloatVec a, FloatVec b) { return a > b ? a : b; }
inline FloatVec vDiv(FloatVec a, FloatVec b) { return a / b; }
inline float vReduceMax(FloatVec v) { float m = v[0]; for (int i = 1; i < kVecWidth; ++i) m = v[i] > m ? v[i] : m; return m; }
inline float vReduceAdd(FloatVec v) { float s = 0.f; for (int i = 0; i < kVecWidth; ++i) s += v[i]; return s; }
inline FloatVec vKeepAtLeast(FloatVec a, FloatVec x, float lo) { return x >= vSet(lo) ? a : vZero(); }
inline FloatVec vSelectBelow(FloatVec x, float lo, FloatVec below, FloatVec otherwise)
{
    return x < vSet(lo) ? below : otherwise;
}
inline FloatVec vLoadPartial(float const* p, int n, float fill)
{
    FloatVec r = vSet(fill);
    for (int i = 0; i < n; ++i) r[i] = p[i];
    return r;
}
// x limited to [lo, hi] (NaN stays NaN, as this layer always had it).
inline FloatVec vClamp(FloatVec x, float lo, float hi)
{
    x = x < vSet(lo) ? vSet(lo) : x;
    return x > vSet(hi) ? vSet(hi) : x;
}
// No rounding instruction here: adding and subtracting 1.5 * 2^23 rounds to nearest (|x| < 2^22).
inline FloatVec vRoundNearest(FloatVec x) { return (x + 12582912.f) - 12582912.f; }
inline FloatVec vPow2(FloatVec n)
{
    IntVec const bits = (__builtin_convertvector(n, IntVec) + 127) << 23;
    FloatVec r;
    std::memcpy(&r, &bits, sizeof(r));
    return r;
}

#endif

// exp(x) with Cephes expf's range reduction (n = round(x log2 e), r = x - n ln 2 in two parts) and polynomial.
inline FloatVec vExp(FloatVec x)
{
    x = vClamp(x, kExpLo, kExpHi);
    FloatVec const n = vRoundNearest(vMul(x, vSet(kLog2e)));
    FloatVec r = vFnma(n, vSet(kLn2Hi), x);
    r = vFnma(n, vSet(kLn2Lo), r);
    FloatVec y = vSet(kExpP0);
    y = vFma(y, r, vSet(kExpP1));
    y = vFma(y, r, vSet(kExpP2));
    y = vFma(y, r, vSet(kExpP3));
    y = vFma(y, r, vSet(kExpP4));
    y = vFma(y, r, vSet(kExpP5));
    y = vAdd(vFma(y, vMul(r, r), r), vSet(1.f));
    return vMul(y, vPow2(n));
}

inline int64_t roundUp(int64_t x, int64_t m)
{
    return (x + m - 1) / m * m;
}

// ---- fp32 / fp16 rows ---------------------------------------------------------------------------------------------

// dst[i] = scale * src[offset + i], i < n.
inline void loadRow(float* __restrict__ dst, void const* src, DType type, int64_t offset, int64_t n, float scale)
{
    if (type == DType::kFloat32)
    {
        float const* __restrict__ s = static_cast<float const*>(src) + offset;
        for (int64_t i = 0; i < n; ++i)
        {
            dst[i] = s[i] * scale;
        }
        return;
    }
    uint16_t const* s = static_cast<uint16_t const*>(src) + offset;
    int64_t i = 0;
#if DAT_CPU_LAYER_LEVEL > 0
    for (; i + 8 <= n; i += 8)
    {
        __m256 const f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<__m128i const*>(s + i)));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(f, _mm256_set1_ps(scale)));
    }
#endif
    for (; i < n; ++i)
    {
        dst[i] = halfBitsToFloat(s[i]) * scale;
    }
}

// dst[offset + i] = src[i], i < n (rounded to nearest even for fp16).
inline void storeRow(void* dst, DType type, int64_t offset, float const* __restrict__ src, int64_t n)
{
    if (type == DType::kFloat32)
    {
        std::memcpy(static_cast<float*>(dst) + offset, src, static_cast<size_t>(n) * sizeof(float));
        return;
    }
    uint16_t* d = static_cast<uint16_t*>(dst) + offset;
    int64_t i = 0;
#if DAT_CPU_LAYER_LEVEL > 0
    for (; i + 8 <= n; i += 8)
    {
        __m128i const h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), h);
    }
#endif
    for (; i < n; ++i)
    {
        d[i] = floatToHalfBits(src[i]);
    }
}

// ---- tiles ----------------------------------------------------------------------------------------------------------

// Calls f(std::integral_constant<int, n>) for the runtime n in [1, Max]: tile loops with compile-time trip
// counts keep their accumulators in registers.
template <int Max, typename F>
inline void withCount(int64_t n, F const& f)
{
    if constexpr (Max > 0)
    {
        if (n == Max)
        {
            f(std::integral_constant<int, Max>{});
        }
        else
        {
            withCount<Max - 1>(n, f);
        }
    }
}

// s[r][key0 + j*W ..] = initialLogits(r, key0 + j*W) + sum_c q[r][c] * kT[c][key0 + j*W ..] for R rows and NV
// key vectors. D > 0: head dim known at compile time. s is not restrict: initialLogits may read it (the bias
// already in place).
template <int R, int NV, int D, typename InitialLogits>
inline void scoreTile(float const* __restrict__ q, int64_t d, float const* __restrict__ kT, int64_t ldk, int64_t key0,
    InitialLogits const& initialLogits, float* s, int64_t lds)
{
    int64_t const dims = D > 0 ? D : d;
    FloatVec acc[R][NV];
    for (int r = 0; r < R; ++r)
    {
        for (int j = 0; j < NV; ++j)
        {
            acc[r][j] = initialLogits(r, key0 + j * kVecWidth);
        }
    }
    for (int64_t c = 0; c < dims; ++c)
    {
        FloatVec kv[NV];
        for (int j = 0; j < NV; ++j)
        {
            kv[j] = vLoad(kT + c * ldk + key0 + j * kVecWidth);
        }
        for (int r = 0; r < R; ++r)
        {
            FloatVec const qb = vSet(q[r * dims + c]);
            for (int j = 0; j < NV; ++j)
            {
                acc[r][j] = vFma(qb, kv[j], acc[r][j]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
    {
        for (int j = 0; j < NV; ++j)
        {
            vStore(s + r * lds + key0 + j * kVecWidth, acc[r][j]);
        }
    }
}

// out[r][c0 + j*W ..] = inv[r] * sum_u p[r][u] * v[u][c0 + j*W ..] for R rows and NC channel vectors.
template <int R, int NC>
inline void pvTile(float const* __restrict__ p, int64_t ldp, float const* __restrict__ inv, float const* const* v,
    int64_t keys, int64_t c0, float* const* out)
{
    FloatVec acc[R][NC];
    for (int r = 0; r < R; ++r)
    {
        for (int j = 0; j < NC; ++j)
        {
            acc[r][j] = vZero();
        }
    }
    for (int64_t u = 0; u < keys; ++u)
    {
        FloatVec vv[NC];
        for (int j = 0; j < NC; ++j)
        {
            vv[j] = vLoad(v[u] + c0 + j * kVecWidth);
        }
        for (int r = 0; r < R; ++r)
        {
            FloatVec const pb = vSet(p[r * ldp + u]);
            for (int j = 0; j < NC; ++j)
            {
                acc[r][j] = vFma(pb, vv[j], acc[r][j]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
    {
        FloatVec const scale = vSet(inv[r]);
        for (int j = 0; j < NC; ++j)
        {
            vStore(out[r] + c0 + j * kVecWidth, vMul(acc[r][j], scale));
        }
    }
}

// Row s becomes exp(s - max) in place; returns 1 / sum.
inline float softmaxRow(float* s, int64_t vecs)
{
    FloatVec m = vLoad(s);
    for (int64_t j = 1; j < vecs; ++j)
    {
        m = vMax(m, vLoad(s + j * kVecWidth));
    }
    FloatVec const mx = vSet(vReduceMax(m));
    FloatVec sum = vZero();
    for (int64_t j = 0; j < vecs; ++j)
    {
        FloatVec const x = vSub(vLoad(s + j * kVecWidth), mx);
        FloatVec const e = vKeepAtLeast(vExp(x), x, kSoftmaxCutoff);
        vStore(s + j * kVecWidth, e);
        sum = vAdd(sum, e);
    }
    return 1.f / vReduceAdd(sum);
}

template <int D, typename InitialLogits>
void attendRowsOfDims(float const* q, int64_t dims, float const* kT, InitialLogits const& initialLogits, float* s,
    float* inv, int64_t rows, int64_t keys, int64_t keysPad, int64_t dimsPad, float const* const* vRows,
    float* const* outRows)
{
    int64_t const keyVecs = keysPad / kVecWidth;
    // S = q k^T + bias, in tiles of kScoreRows rows x kScoreVecs key vectors.
    for (int64_t t = 0; t < rows; t += kScoreRows)
    {
        withCount<kScoreRows>(std::min<int64_t>(kScoreRows, rows - t), [&](auto rowCount) {
            constexpr int R = decltype(rowCount)::value;
            auto const tileLogits = [&](int r, int64_t key) { return initialLogits(t + r, key); };
            for (int64_t j = 0; j < keyVecs; j += kScoreVecs)
            {
                withCount<kScoreVecs>(std::min<int64_t>(kScoreVecs, keyVecs - j), [&](auto vecCount) {
                    constexpr int NV = decltype(vecCount)::value;
                    scoreTile<R, NV, D>(q + t * dims, dims, kT, keysPad, j * kVecWidth, tileLogits, s + t * keysPad,
                        keysPad);
                });
            }
        });
    }
    for (int64_t t = 0; t < rows; ++t)
    {
        inv[t] = softmaxRow(s + t * keysPad, keyVecs);
    }
    // O = P v / sum, in tiles of kPvRows rows x kPvVecs channel vectors.
    int64_t const chanVecs = dimsPad / kVecWidth;
    for (int64_t t = 0; t < rows; t += kPvRows)
    {
        withCount<kPvRows>(std::min<int64_t>(kPvRows, rows - t), [&](auto rowCount) {
            constexpr int R = decltype(rowCount)::value;
            for (int64_t j = 0; j < chanVecs; j += kPvVecs)
            {
                withCount<kPvVecs>(std::min<int64_t>(kPvVecs, chanVecs - j), [&](auto vecCount) {
                    constexpr int NC = decltype(vecCount)::value;
                    pvTile<R, NC>(s + t * keysPad, keysPad, inv + t, vRows, keys, j * kVecWidth, outRows + t);
                });
            }
        });
    }
}

// One head's attention for `rows` query rows against `keys` keys (keysPad: padded to a multiple of kVecWidth).
//   q (rows, dims), pre-scaled; kT (dims, keysPad), k transposed, keys >= `keys` zero
//   initialLogits(r, key0): S row r at keys [key0, key0 + kVecWidth) before q k^T is added, i.e. the bias,
//                           with -inf at padded keys
//   s (rows, keysPad), inv (rows): scratch for S / P and 1 / row sum
//   vRows[u], outRows[r]: v of key u and the output of row r, dimsPad channels each (those >= dims of v zero)
template <typename InitialLogits>
inline void attendRows(float const* q, int64_t dims, float const* kT, InitialLogits const& initialLogits, float* s,
    float* inv, int64_t rows, int64_t keys, int64_t keysPad, int64_t dimsPad, float const* const* vRows,
    float* const* outRows)
{
    // Head dim 32 (every DAT model's) gets q k^T loops of known length.
    if (dims == 32)
    {
        attendRowsOfDims<32>(q, dims, kT, initialLogits, s, inv, rows, keys, keysPad, dimsPad, vRows, outRows);
    }
    else
    {
        attendRowsOfDims<0>(q, dims, kT, initialLogits, s, inv, rows, keys, keysPad, dimsPad, vRows, outRows);
    }
}

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
