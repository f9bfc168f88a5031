// DATWindowAttention on the CPU. One unit of parallel work is one (image, window, head): its q (pre-scaled),
// k (transposed, d x Tp) and v are gathered into small fp32 buffers (fp32 v and out rows are used in place), then
//   S = q k^T + bias      register tiles of R query rows x NV key vectors, k loads shared by the R rows
//   P = exp(S - max)      a Cephes-style vector exp, 1 / sum kept per row
//   O = (P v) / sum       register tiles of R query rows x NC channel vectors, stored at the token's pixel
// Keys are padded to Tp (a multiple of the vector width) with bias -inf and k = 0, so every S row is whole
// vectors; the padded lanes' exp is 0 and P v only reads real keys.
// Vector layer: AVX-512, else AVX2 + FMA, else a portable 4-lane one (GCC vector extensions).
#include "windowAttentionCpu.h"

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

// s[r][key0 + j*W ..] = bias[r][..] + sum_c q[r][c] * kT[c][..] for R rows and NV key vectors.
// D > 0: head dim known at compile time.
template <int R, int NV, int D>
inline void scoreTile(float const* __restrict__ q, int64_t d, float const* __restrict__ kT, int64_t ldk,
    float const* __restrict__ bias, int64_t tokens, int64_t key0, float* __restrict__ s, int64_t lds)
{
    int64_t const dims = D > 0 ? D : d;
    V acc[R][NV];
    for (int r = 0; r < R; ++r)
    {
        for (int j = 0; j < NV; ++j)
        {
            int64_t const k = key0 + j * kWidth;
            float const* b = bias + r * tokens + k;
            acc[r][j] = k + kWidth <= tokens ? vLoad(b) : vLoadPartial(b, static_cast<int>(tokens - k), kNegInf);
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

// out[r][c0 + j*W ..] = inv[r] * sum_u p[r][u] * v[u][..] for R rows and NC channel vectors.
template <int R, int NC>
inline void pvTile(float const* __restrict__ p, int64_t ldp, float const* __restrict__ inv, float const* const* v,
    int64_t tokens, int64_t c0, float* const* out)
{
    V acc[R][NC];
    for (int r = 0; r < R; ++r)
    {
        for (int j = 0; j < NC; ++j)
        {
            acc[r][j] = vZero();
        }
    }
    for (int64_t u = 0; u < tokens; ++u)
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

// Row r of S becomes exp(S - max) in place; returns 1 / sum.
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

int64_t roundUp(int64_t x, int64_t m)
{
    return (x + m - 1) / m * m;
}

template <int D>
void attendHead(float const* bias, Scratch& w, int64_t tokens, int64_t dims,
    int64_t tokensPad, int64_t dimsPad)
{
    int64_t const keyVecs = tokensPad / kWidth;
    // S = q k^T + bias, in tiles of kScoreRows rows x kScoreVecs key vectors.
    for (int64_t t = 0; t < tokens; t += kScoreRows)
    {
        int64_t const rows = std::min<int64_t>(kScoreRows, tokens - t);
        withCount<kScoreRows>(rows, [&](auto rowCount) {
            constexpr int R = decltype(rowCount)::value;
            for (int64_t j = 0; j < keyVecs; j += kScoreVecs)
            {
                withCount<kScoreVecs>(std::min<int64_t>(kScoreVecs, keyVecs - j), [&](auto vecCount) {
                    constexpr int NV = decltype(vecCount)::value;
                    scoreTile<R, NV, D>(w.q.data() + t * dims, dims, w.kT.data(), tokensPad, bias + t * tokens,
                        tokens, j * kWidth, w.s.data() + t * tokensPad, tokensPad);
                });
            }
        });
    }
    for (int64_t t = 0; t < tokens; ++t)
    {
        w.inv[static_cast<size_t>(t)] = softmaxRow(w.s.data() + t * tokensPad, keyVecs);
    }
    // O = P v / sum, in tiles of kPvRows rows x kPvVecs channel vectors.
    int64_t const chanVecs = dimsPad / kWidth;
    for (int64_t t = 0; t < tokens; t += kPvRows)
    {
        int64_t const rows = std::min<int64_t>(kPvRows, tokens - t);
        withCount<kPvRows>(rows, [&](auto rowCount) {
            constexpr int R = decltype(rowCount)::value;
            for (int64_t j = 0; j < chanVecs; j += kPvVecs)
            {
                withCount<kPvVecs>(std::min<int64_t>(kPvVecs, chanVecs - j), [&](auto vecCount) {
                    constexpr int NC = decltype(vecCount)::value;
                    pvTile<R, NC>(w.s.data() + t * tokensPad, tokensPad, w.inv.data() + t, w.vRows.data(),
                        tokens, j * kWidth, w.outRows.data() + t);
                });
            }
        });
    }
}

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
    int64_t const tokensPad = roundUp(tokens, kWidth);
    int64_t const dimsPad = roundUp(dims, kWidth);
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
    bool const direct = qkvType == DType::kFloat32 && dims % kWidth == 0;
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
            float const* headBias = biasData + windowBiasOffset(dm, image % windows, h);
            if (dims == 32)
            {
                attendHead<32>(headBias, w, tokens, dims, tokensPad, dimsPad);
            }
            else
            {
                attendHead<0>(headBias, w, tokens, dims, tokensPad, dimsPad);
            }
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
