// DATDeformAttention on the CPU. One unit of parallel work is one (image, group, block of query rows):
//   taps      the bilinear taps of each query of the block against all keys (relPosTap, as DATRelPosBias),
//             computed once and shared by the group's heads, each of which turns them into its bias row
//   S = q k^T + bias    per head: register tiles of R query rows x NV key vectors; q pre-scaled, k of the
//             head transposed (d x Nkp) in a thread-local buffer, gathered once per (image, group)
//   P = exp(S - max)    a Cephes-style vector exp, 1 / sum kept per row; terms below exp(-64) set to 0
//   O = (P v) / sum     register tiles of R query rows x NC channel vectors, stored at the query's pixel
// Keys are padded to Nkp (a multiple of the vector width) with bias -inf and k = 0, so every S row is whole
// vectors; the padded lanes' exp is 0 and P v only reads real keys. The vector layer (and the exp) is that
// of windowAttentionCpu.cpp: AVX-512, else AVX2 + FMA, else a portable 4-lane one (GCC vector extensions).
#include "deformAttentionCpu.h"

#include "../common/datSamplingMath.h"
#include "threadPool.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)) || defined(__F16C__)
// GCC 12's AVX-512 intrinsics seed their masked builtins with a self-initialised `__Y`, which
// -Wmaybe-uninitialized reports at the header's lines once inlined (GCC PR 105593, fixed in 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace dat
{
namespace cpu
{
namespace
{

// ---- exp constants (Cephes expf) -----------------------------------------------------------------------------------
// The lower clamp keeps 2^n normal (n >= -126): exp(-87.3) ~ 1.2e-38 > FLT_MIN. Masked logits (-100 bias)
// land here; clamping at ln(FLT_MIN) itself gave n = -127, i.e. denormal results (and slow arithmetic).
constexpr float kExpLo = -87.3f;
constexpr float kExpHi = 88.3f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f;
constexpr float kP1 = 1.3981999507e-3f;
constexpr float kP2 = 8.3334519073e-3f;
constexpr float kP3 = 4.1665795894e-2f;
constexpr float kP4 = 1.6666665459e-1f;
constexpr float kP5 = 5.0000001201e-1f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Softmax terms below exp(-64) ~ 1.6e-28 (relative to the row's max term, 1) are set to exactly 0: they are
// far below an ulp of the row sum, and P v products of tiny terms would be denormal (masked logits, -100
// bias, land at exp(-87.3) ~ 1e-38 otherwise; denormal FMAs cost microcode assists, 2x on the S blocks).
constexpr float kSoftmaxCutoff = -64.f;

// ---- vector layer ---------------------------------------------------------------------------------------------------
#if defined(__AVX512F__)

constexpr int kWidth = 16;
constexpr int kScoreRows = 4; // S tile: 4 rows x 4 vectors = 16 accumulators (+ 4 k vectors, 1 broadcast)
constexpr int kScoreVecs = 4;
constexpr int kPvRows = 8; // O tile (d = 32): 8 rows x 2 vectors = 16 accumulators
constexpr int kPvVecs = 2;
using V = __m512;

inline V vZero() { return _mm512_setzero_ps(); }
inline V vSet(float x) { return _mm512_set1_ps(x); }
inline V vLoad(float const* p) { return _mm512_loadu_ps(p); }
inline void vStore(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V vFma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vAdd(V a, V b) { return _mm512_add_ps(a, b); }
inline V vSub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V vMul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V vMax(V a, V b) { return _mm512_max_ps(a, b); }
inline float vReduceMax(V v) { return _mm512_reduce_max_ps(v); }
inline float vReduceAdd(V v) { return _mm512_reduce_add_ps(v); }
// Lanes [0, n) from p, the rest `fill`; reads only the first n floats.
inline V vLoadPartial(float const* p, int n, float fill)
{
    __mmask16 const mask = static_cast<__mmask16>((1u << n) - 1u);
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask, p);
}
// a where x >= lo, else 0.
inline V vKeepAtLeast(V a, V x, float lo) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, vSet(lo), _CMP_GE_OQ), a); }
inline V vExp(V x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, vSet(kExpLo)), vSet(kExpHi));
    V const n = _mm512_roundscale_ps(_mm512_mul_ps(x, vSet(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm512_fnmadd_ps(n, vSet(kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, vSet(kLn2Lo), r);
    V y = vSet(kP0);
    y = vFma(y, r, vSet(kP1));
    y = vFma(y, r, vSet(kP2));
    y = vFma(y, r, vSet(kP3));
    y = vFma(y, r, vSet(kP4));
    y = vFma(y, r, vSet(kP5));
    y = vAdd(vFma(y, vMul(r, r), r), vSet(1.f));
    __m512i const e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return vMul(y, _mm512_castsi512_ps(e));
}

#elif defined(__AVX2__) && defined(__FMA__)

constexpr int kWidth = 8;
constexpr int kScoreRows = 3; // 3 x 4 accumulators + 4 k vectors + 1 broadcast = 16 ymm registers
constexpr int kScoreVecs = 4;
constexpr int kPvRows = 3; // 3 x 4 accumulators (d = 32) + 4 v vectors + 1 broadcast
constexpr int kPvVecs = 4;
using V = __m256;

inline V vZero() { return _mm256_setzero_ps(); }
inline V vSet(float x) { return _mm256_set1_ps(x); }
inline V vLoad(float const* p) { return _mm256_loadu_ps(p); }
inline void vStore(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V vFma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vAdd(V a, V b) { return _mm256_add_ps(a, b); }
inline V vSub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V vMul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V vMax(V a, V b) { return _mm256_max_ps(a, b); }
inline float vReduceMax(V v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
inline float vReduceAdd(V v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
inline V vLoadPartial(float const* p, int n, float fill)
{
    __m256i const lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i const mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
    return _mm256_blendv_ps(vSet(fill), _mm256_maskload_ps(p, mask), _mm256_castsi256_ps(mask));
}
inline V vKeepAtLeast(V a, V x, float lo) { return _mm256_and_ps(_mm256_cmp_ps(x, vSet(lo), _CMP_GE_OQ), a); }
inline V vExp(V x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, vSet(kExpLo)), vSet(kExpHi));
    V const n = _mm256_round_ps(_mm256_mul_ps(x, vSet(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm256_fnmadd_ps(n, vSet(kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, vSet(kLn2Lo), r);
    V y = vSet(kP0);
    y = vFma(y, r, vSet(kP1));
    y = vFma(y, r, vSet(kP2));
    y = vFma(y, r, vSet(kP3));
    y = vFma(y, r, vSet(kP4));
    y = vFma(y, r, vSet(kP5));
    y = vAdd(vFma(y, vMul(r, r), r), vSet(1.f));
    __m256i const e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return vMul(y, _mm256_castsi256_ps(e));
}

#else // portable: 4 lanes in GCC vector extensions (one SSE2 / NEON register), no intrinsics

constexpr int kWidth = 4;
constexpr int kScoreRows = 3; // 3 x 4 accumulators + 4 k vectors + 1 broadcast = 16 registers
constexpr int kScoreVecs = 4;
constexpr int kPvRows = 3;
constexpr int kPvVecs = 4;
typedef float V __attribute__((vector_size(16)));
typedef int32_t VInt __attribute__((vector_size(16)));

inline V vZero() { return V{} ; }
inline V vSet(float a) { return V{} + a; }
inline V vLoad(float const* p) { V r; std::memcpy(&r, p, sizeof(r)); return r; }
inline void vStore(float* p, V v) { std::memcpy(p, &v, sizeof(v)); }
inline V vFma(V a, V b, V c) { return a * b + c; }
inline V vAdd(V a, V b) { return a + b; }
inline V vSub(V a, V b) { return a - b; }
inline V vMul(V a, V b) { return a * b; }
inline V vMax(V a, V b) { return a > b ? a : b; }
inline float vReduceMax(V v) { float m = v[0]; for (int i = 1; i < kWidth; ++i) m = v[i] > m ? v[i] : m; return m; }
inline float vReduceAdd(V v) { float s = 0.f; for (int i = 0; i < kWidth; ++i) s += v[i]; return s; }
inline V vKeepAtLeast(V a, V x, float lo) { return x >= vSet(lo) ? a : vZero(); }
inline V vLoadPartial(float const* p, int n, float fill) { V r = vSet(fill); for (int i = 0; i < n; ++i) r[i] = p[i]; return r; }
inline V vExp(V x)
{
    x = x < vSet(kExpLo) ? vSet(kExpLo) : x;
    x = x > vSet(kExpHi) ? vSet(kExpHi) : x;
    V const magic = vSet(12582912.f); // 1.5 * 2^23: adding and subtracting it rounds to nearest
    V const n = (x * kLog2e + magic) - magic;
    V r = x - n * kLn2Hi;
    r = r - n * kLn2Lo;
    V y = vSet(kP0);
    y = y * r + kP1;
    y = y * r + kP2;
    y = y * r + kP3;
    y = y * r + kP4;
    y = y * r + kP5;
    y = y * (r * r) + r + 1.f;
    VInt const bits = (__builtin_convertvector(n, VInt) + 127) << 23;
    V scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return y * scale;
}

#endif

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
#if defined(__F16C__)
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
#if defined(__F16C__)
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

// Calls f(std::integral_constant<int, n>) for the runtime n in [1, Max].
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


// s[r][key0 + j*W ..] += sum_c q[r][c] * kT[c][key0 + j*W ..] for R rows and NV key vectors (s holds the bias).
// D > 0: head dim known at compile time.
template <int R, int NV, int D>
inline void scoreTile(float const* __restrict__ q, int64_t d, float const* __restrict__ kT, int64_t ldk,
    int64_t key0, float* __restrict__ s, int64_t lds)
{
    int64_t const dims = D > 0 ? D : d;
    V acc[R][NV];
    for (int r = 0; r < R; ++r)
    {
        for (int j = 0; j < NV; ++j)
        {
            acc[r][j] = vLoad(s + r * lds + key0 + j * kWidth);
        }
    }
    for (int64_t c = 0; c < dims; ++c)
    {
        V kv[NV];
        for (int j = 0; j < NV; ++j)
        {
            kv[j] = vLoad(kT + c * ldk + key0 + j * kWidth);
        }
        for (int r = 0; r < R; ++r)
        {
            V const qb = vSet(q[r * dims + c]);
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
            vStore(s + r * lds + key0 + j * kWidth, acc[r][j]);
        }
    }
}

// out[r][c0 + j*W ..] = inv[r] * sum_u p[r][u] * v[u][c0 + j*W ..] for R rows and NC channel vectors.
template <int R, int NC>
inline void pvTile(float const* __restrict__ p, int64_t ldp, float const* __restrict__ inv, float const* const* v,
    int64_t keys, int64_t c0, float* const* out)
{
    V acc[R][NC];
    for (int r = 0; r < R; ++r)
    {
        for (int j = 0; j < NC; ++j)
        {
            acc[r][j] = vZero();
        }
    }
    for (int64_t u = 0; u < keys; ++u)
    {
        V vv[NC];
        for (int j = 0; j < NC; ++j)
        {
            vv[j] = vLoad(v[u] + c0 + j * kWidth);
        }
        for (int r = 0; r < R; ++r)
        {
            V const pb = vSet(p[r * ldp + u]);
            for (int j = 0; j < NC; ++j)
            {
                acc[r][j] = vFma(pb, vv[j], acc[r][j]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
    {
        V const scale = vSet(inv[r]);
        for (int j = 0; j < NC; ++j)
        {
            vStore(out[r] + c0 + j * kWidth, vMul(acc[r][j], scale));
        }
    }
}

// Row s becomes exp(s - max) in place; returns 1 / sum.
inline float softmaxRow(float* s, int64_t vecs)
{
    V m = vLoad(s);
    for (int64_t j = 1; j < vecs; ++j)
    {
        m = vMax(m, vLoad(s + j * kWidth));
    }
    V const mx = vSet(vReduceMax(m));
    V sum = vZero();
    for (int64_t j = 0; j < vecs; ++j)
    {
        V const x = vSub(vLoad(s + j * kWidth), mx);
        V const e = vKeepAtLeast(vExp(x), x, kSoftmaxCutoff);
        vStore(s + j * kWidth, e);
        sum = vAdd(sum, e);
    }
    return 1.f / vReduceAdd(sum);
}

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

// row[n] = the bias of key n for one query (its y and x taps) and one head's padded table plane;
// row[n] = -inf for keys <= n < keysPad.
__attribute__((noinline)) void biasRow(float const* __restrict__ t, int64_t pitch, int32_t const* __restrict__ oy,
    float const* __restrict__ wy0, float const* __restrict__ wy1, int32_t const* __restrict__ ox,
    float const* __restrict__ wx0, float const* __restrict__ wx1, int64_t keys, int64_t keysPad, float* __restrict__ row)
{
    float const* __restrict__ t1 = t + pitch;
    int64_t n = 0;
#if defined(__AVX512F__)
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
        __m512 const x0 = _mm512_loadu_ps(wx0 + n);
        __m512 const x1 = _mm512_loadu_ps(wx1 + n);
        __m512 const top = _mm512_add_ps(_mm512_mul_ps(x0, a0), _mm512_mul_ps(x1, b0));
        __m512 const bottom = _mm512_add_ps(_mm512_mul_ps(x0, a1), _mm512_mul_ps(x1, b1));
        _mm512_storeu_ps(row + n,
            _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(wy0 + n), top), _mm512_mul_ps(_mm512_loadu_ps(wy1 + n), bottom)));
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

int64_t roundUp(int64_t x, int64_t m)
{
    return (x + m - 1) / m * m;
}

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

// S (already holding the bias), softmax and P v for `rows` query rows of one head.
template <int D>
void attendHead(Scratch& w, float* s, int64_t rows, int64_t keys, int64_t keysPad, int64_t dims, int64_t dimsPad,
    float const* kT, float const* const* vRows, float* const* outRows)
{
    int64_t const keyVecs = keysPad / kWidth;
    for (int64_t t = 0; t < rows; t += kScoreRows)
    {
        withCount<kScoreRows>(std::min<int64_t>(kScoreRows, rows - t), [&](auto rowCount) {
            constexpr int R = decltype(rowCount)::value;
            for (int64_t j = 0; j < keyVecs; j += kScoreVecs)
            {
                withCount<kScoreVecs>(std::min<int64_t>(kScoreVecs, keyVecs - j), [&](auto vecCount) {
                    constexpr int NV = decltype(vecCount)::value;
                    scoreTile<R, NV, D>(w.q.data() + t * dims, dims, kT, keysPad, j * kWidth, s + t * keysPad, keysPad);
                });
            }
        });
    }
    for (int64_t t = 0; t < rows; ++t)
    {
        w.inv[static_cast<size_t>(t)] = softmaxRow(s + t * keysPad, keyVecs);
    }
    int64_t const chanVecs = dimsPad / kWidth;
    for (int64_t t = 0; t < rows; t += kPvRows)
    {
        withCount<kPvRows>(std::min<int64_t>(kPvRows, rows - t), [&](auto rowCount) {
            constexpr int R = decltype(rowCount)::value;
            for (int64_t j = 0; j < chanVecs; j += kPvVecs)
            {
                withCount<kPvVecs>(std::min<int64_t>(kPvVecs, chanVecs - j), [&](auto vecCount) {
                    constexpr int NC = decltype(vecCount)::value;
                    pvTile<R, NC>(s + t * keysPad, keysPad, w.inv.data() + t, vRows, keys, j * kWidth, outRows + t);
                });
            }
        });
    }
}

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
    int64_t const keysPad = roundUp(keys, kWidth);
    int64_t const dimsPad = roundUp(dims, kWidth);
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
    bool const direct = dataType == DType::kFloat32 && dims % kWidth == 0;

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
                if (dims == 32)
                {
                    attendHead<32>(w, s, rows, keys, keysPad, dims, dimsPad, kT, vRows, w.outRows.data());
                }
                else
                {
                    attendHead<0>(w, s, rows, keys, keysPad, dims, dimsPad, kT, vRows, w.outRows.data());
                }
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

} // namespace cpu
} // namespace dat
