#include "windowAttentionKernels.h"

#include "attentionCommon.cuh"

#include <cuda_fp16.h>

#include <math.h>
#include <stdint.h>

namespace dat
{
namespace cuda
{
// A named namespace (not anonymous, not the sampling kernels' `kernels`): nvcc 13's stub generator
// rejects __global__ templates in an anonymous one.
namespace windowKernels
{
using namespace kernelUtil;

// One block per (image, window, head); its warps take the window's query tokens in turn. Four warps
// suit DAT's 49-token windows (about 12 rows per warp); smaller windows get fewer.
constexpr int kMaxWarps = 4;

__host__ __device__ __forceinline__ int64_t sharedBytes(int64_t tokens, int64_t headDim, int64_t warps)
{
    // token row offsets (int64), q (scaled), k, v (fp32), one logits / probabilities row per warp (fp32)
    return tokens * static_cast<int64_t>(sizeof(int64_t))
        + (tokens * headDim + 2 * tokens * paddedStride(headDim) + warps * tokens)
        * static_cast<int64_t>(sizeof(float));
}

// T: qkv / out dtype, B: bias dtype, V: channels per global load / store (2 when the head slices are
// 2-element aligned). blockIdx.x = (b * windowsPerImage + n) * heads + h.
template <typename T, typename B, int V>
__global__ void __launch_bounds__(kMaxWarps* kWarp) windowAttentionKernel(
    T const* __restrict__ qkv, B const* __restrict__ bias, T* __restrict__ out, WindowAttentionDims const d)
{
    extern __shared__ __align__(16) unsigned char shared[];
    int const tokens = static_cast<int>(d.tokens());
    int const headDim = static_cast<int>(d.headDim());
    int const stride = static_cast<int>(paddedStride(headDim));
    int const items = headDim / V;

    // 32-bit decode: the launcher keeps batch * windows * heads below 2^31.
    uint32_t const heads = static_cast<uint32_t>(d.heads);
    uint32_t const windows = static_cast<uint32_t>(d.windowsPerImage());
    uint32_t const block = blockIdx.x;
    int64_t const h = block % heads;
    int64_t const n = (block / heads) % windows;
    int64_t const b = block / heads / windows;

    int64_t* rowOf = reinterpret_cast<int64_t*>(shared); // token -> b * H * W + pixel
    float* sq = reinterpret_cast<float*>(rowOf + tokens);
    float* sk = sq + tokens * headDim;
    float* sv = sk + tokens * stride;
    float* rows = sv + tokens * stride;

    int64_t const pixels = d.height * d.width;
    for (int t = threadIdx.x; t < tokens; t += blockDim.x)
    {
        rowOf[t] = b * pixels + windowTokenPixel(d, n, t);
    }
    __syncthreads();

    // Stage the head's q (times scale), k and v of the window's tokens.
    int64_t const qkvRow = 3 * d.channels;
    T const* head = qkv + h * headDim;
    stageRows<V>(
        3, tokens, items, // part 0 = q, 1 = k, 2 = v
        [&](int part, int t, int c) { return head + rowOf[t] * qkvRow + part * d.channels + c; },
        [&](int part, int t, int c, float const(&f)[V]) {
            if (part == 0)
            {
                putVec(sq + t * headDim + c, f, d.scale);
            }
            else
            {
                putVec((part == 1 ? sk : sv) + t * stride + c, f);
            }
        });
    __syncthreads();

    // The softmax and P v below are attentionCommon.cuh's softmaxInPlace / storeWeightedValues written out:
    // calling those here makes ptxas spill the sm_80 pair variants (20 bytes), so this kernel keeps them inline.
    int const warp = threadIdx.x / kWarp;
    int const lane = threadIdx.x % kWarp;
    int const warps = blockDim.x / kWarp;
    float* row = rows + warp * tokens;
    B const* headBias = bias + windowBiasOffset(d, n, h);
    int span = 1;
    while (span < items && span < kWarp)
    {
        span <<= 1;
    }
    int const splits = kWarp / span;
    int const item = lane % span;
    int const split = lane / span;

    for (int t = warp; t < tokens; t += warps)
    {
        // logits[t, u] = (scale q_t) . k_u + bias, lanes over u; kept in the warp's row.
        float const* qt = sq + t * headDim;
        B const* biasRow = headBias + static_cast<int64_t>(t) * tokens;
        float laneMax = -INFINITY;
        for (int u = lane; u < tokens; u += kWarp)
        {
            float const logit = dot(qt, sk + u * stride, headDim) + toFloat(biasRow[u]);
            row[u] = logit;
            laneMax = fmaxf(laneMax, logit);
        }
        float const rowMax = warpMax(laneMax);
        float rowSum = 0.f;
        for (int u = lane; u < tokens; u += kWarp)
        {
            float const e = expf(row[u] - rowMax);
            row[u] = e;
            rowSum += e;
        }
        float const inv = 1.f / warpSum(rowSum);
        __syncwarp();

        T* dst = out + rowOf[t] * d.channels + h * headDim;
        for (int base = 0; base < items; base += span)
        {
            int const it = base + item;
            bool const active = it < items;
            float acc[V];
#pragma unroll
            for (int e = 0; e < V; ++e)
            {
                acc[e] = 0.f;
            }
            if (active)
            {
                for (int u = split; u < tokens; u += splits)
                {
                    float const p = row[u];
                    float const* vu = sv + u * stride + it * V;
#pragma unroll
                    for (int e = 0; e < V; ++e)
                    {
                        acc[e] = fmaf(p, vu[e], acc[e]);
                    }
                }
            }
            for (int offset = span; offset < kWarp; offset <<= 1)
            {
#pragma unroll
                for (int e = 0; e < V; ++e)
                {
                    acc[e] += __shfl_xor_sync(kFullMask, acc[e], offset);
                }
            }
            if (active && split == 0)
            {
#pragma unroll
                for (int e = 0; e < V; ++e)
                {
                    acc[e] *= inv;
                }
                storeVec(dst + it * V, acc);
            }
        }
        __syncwarp(); // the row is rewritten by the warp's next token
    }
}

int warpsFor(int64_t tokens)
{
    return static_cast<int>(tokens < kMaxWarps ? tokens : kMaxWarps);
}

template <typename T, typename B, int V>
cudaError_t launch(WindowAttentionDims const& d, void const* qkv, void const* bias, void* out, cudaStream_t stream)
{
    int const warps = warpsFor(d.tokens());
    int64_t const bytes = sharedBytes(d.tokens(), d.headDim(), warps);
    auto kernel = windowAttentionKernel<T, B, V>;
    cudaError_t const status = allowSharedBytes(kernel, bytes); // cudaErrorInvalidValue: the window does not fit
    if (status != cudaSuccess)
    {
        return status;
    }
    int64_t const blocks = d.batch * d.windowsPerImage() * d.heads;
    kernel<<<static_cast<unsigned>(blocks), warps * kWarp, static_cast<size_t>(bytes), stream>>>(
        static_cast<T const*>(qkv), static_cast<B const*>(bias), static_cast<T*>(out), d);
    return cudaGetLastError();
}

template <typename T, typename B>
cudaError_t launchAligned(WindowAttentionDims const& d, void const* qkv, void const* bias, void* out, cudaStream_t s)
{
    // Pairs when every head slice starts on an even element (even head dim, hence even C and 3C) and both
    // base pointers are aligned to a pair.
    bool const pairs = d.headDim() % 2 == 0 && pairAligned<T>(qkv, out);
    return pairs ? launch<T, B, 2>(d, qkv, bias, out, s) : launch<T, B, 1>(d, qkv, bias, out, s);
}

} // namespace windowKernels

size_t windowAttentionSharedBytes(WindowAttentionDims const& dims)
{
    return static_cast<size_t>(
        windowKernels::sharedBytes(dims.tokens(), dims.headDim(), windowKernels::warpsFor(dims.tokens())));
}

cudaError_t windowAttention(WindowAttentionDims const& dims, void const* qkv, DType qkvType, void const* bias,
    DType biasType, void* out, cudaStream_t stream)
{
    WindowAttentionDims const& d = dims;
    bool const valid = d.batch >= 0 && d.height >= 0 && d.width >= 0 && d.channels >= 0 && d.heads >= 1
        && d.window >= 1 && d.channels % d.heads == 0 && d.height % d.window == 0 && d.width % d.window == 0
        && d.shift >= 0 && d.shift < d.window;
    if (!valid)
    {
        return cudaErrorInvalidValue;
    }
    if (d.batch == 0 || d.windowsPerImage() == 0 || d.channels == 0)
    {
        return cudaSuccess; // empty output
    }
    if (d.biasWindows != 1 && d.biasWindows != d.windowsPerImage())
    {
        return cudaErrorInvalidValue;
    }
    if (d.batch > windowKernels::kMaxBlocks / d.windowsPerImage() / d.heads)
    {
        return cudaErrorInvalidConfiguration;
    }
    bool const halfData = qkvType == DType::kFloat16;
    bool const halfBias = biasType == DType::kFloat16;
    if (halfData)
    {
        return halfBias ? windowKernels::launchAligned<__half, __half>(d, qkv, bias, out, stream)
                        : windowKernels::launchAligned<__half, float>(d, qkv, bias, out, stream);
    }
    return halfBias ? windowKernels::launchAligned<float, __half>(d, qkv, bias, out, stream)
                    : windowKernels::launchAligned<float, float>(d, qkv, bias, out, stream);
}

} // namespace cuda
} // namespace dat
