// What the attention kernels (window, deformable) share: pair loads / stores, staging into shared memory,
// the warp's softmax and P v, and the host side's pair-alignment and shared-memory checks. Everything is
// force-inlined, so each kernel compiles as if written out in full.
#pragma once

#include "kernelCommon.cuh"

#include <cuda_runtime_api.h>

#include <math.h>
#include <stdint.h>

namespace dat
{
namespace cuda
{
namespace kernelUtil
{

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kDefaultSharedBytes = 48 * 1024; // above this a kernel must opt in
constexpr int64_t kMaxBlocks = 0x7fffffff;          // gridDim.x

// ---- device ----------------------------------------------------------------------------------------------------

// V consecutive elements to / from fp32; V = 2 is one 8-byte float2 or 4-byte half2 access (the caller
// guarantees the alignment).
__device__ __forceinline__ void loadVec(float const* p, float (&f)[1])
{
    f[0] = *p;
}
__device__ __forceinline__ void loadVec(float const* p, float (&f)[2])
{
    float2 const v = *reinterpret_cast<float2 const*>(p);
    f[0] = v.x;
    f[1] = v.y;
}
__device__ __forceinline__ void loadVec(__half const* p, float (&f)[1])
{
    f[0] = __half2float(*p);
}
__device__ __forceinline__ void loadVec(__half const* p, float (&f)[2])
{
    float2 const v = __half22float2(*reinterpret_cast<__half2 const*>(p));
    f[0] = v.x;
    f[1] = v.y;
}
__device__ __forceinline__ void storeVec(float* p, float const (&f)[1])
{
    *p = f[0];
}
__device__ __forceinline__ void storeVec(float* p, float const (&f)[2])
{
    *reinterpret_cast<float2*>(p) = make_float2(f[0], f[1]);
}
__device__ __forceinline__ void storeVec(__half* p, float const (&f)[1])
{
    *p = __float2half_rn(f[0]);
}
__device__ __forceinline__ void storeVec(__half* p, float const (&f)[2])
{
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(f[0], f[1]);
}

__device__ __forceinline__ float warpMax(float v)
{
    for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    {
        v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
    }
    return v;
}
__device__ __forceinline__ float warpSum(float v)
{
    for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    {
        v += __shfl_xor_sync(kFullMask, v, offset);
    }
    return v;
}

// Row stride (floats) of k and v in shared memory: odd, so that lanes reading different rows at the same
// channel hit different banks.
__host__ __device__ __forceinline__ int64_t paddedStride(int64_t headDim)
{
    return headDim | 1;
}

// The block copies `parts` global blocks of `rows` x `items` V-vectors: consecutive threads take consecutive
// channels of one row, so the reads coalesce. src(part, row, channel) is the source address; put(part, row,
// channel, f) stores the V floats f.
template <int V, typename Src, typename Put>
__device__ __forceinline__ void stageRows(int parts, int rows, int items, Src src, Put put)
{
    int const perPart = rows * items;
    for (int i = threadIdx.x; i < parts * perPart; i += blockDim.x)
    {
        int const part = i / perPart;
        int const rest = i - part * perPart;
        int const r = rest / items;
        int const c = (rest - r * items) * V;
        float f[V];
        loadVec(src(part, r, c), f);
        put(part, r, c, f);
    }
}

// V floats to shared memory, as they are or times `scale` (q).
template <int V>
__device__ __forceinline__ void putVec(float* dst, float const (&f)[V])
{
#pragma unroll
    for (int e = 0; e < V; ++e)
    {
        dst[e] = f[e];
    }
}
template <int V>
__device__ __forceinline__ void putVec(float* dst, float const (&f)[V], float scale)
{
#pragma unroll
    for (int e = 0; e < V; ++e)
    {
        dst[e] = f[e] * scale;
    }
}

__device__ __forceinline__ float dot(float const* a, float const* b, int n)
{
    float acc = 0.f;
    for (int c = 0; c < n; ++c)
    {
        acc = fmaf(a[c], b[c], acc);
    }
    return acc;
}

// The warp's logits row[0, n) (lanes hold entries lane, lane + 32, ...; laneMax is the max of the lane's)
// becomes exp(row - max) in place; returns 1 / sum, which P v folds into its output.
__device__ __forceinline__ float softmaxInPlace(float* row, int n, int lane, float laneMax)
{
    float const rowMax = warpMax(laneMax);
    float rowSum = 0.f;
    for (int u = lane; u < n; u += kWarp)
    {
        float const e = expf(row[u] - rowMax);
        row[u] = e;
        rowSum += e;
    }
    return 1.f / warpSum(rowSum);
}

// P v lanes: lane = split * span + item. `span` lanes cover up to 32 channel items; when a head has fewer
// items the remaining lanes split the rows of v and the partial sums meet through shuffles.
struct ValueLanes
{
    int span, splits, item, split;
};
__device__ __forceinline__ ValueLanes valueLanes(int items, int lane)
{
    int span = 1;
    while (span < items && span < kWarp)
    {
        span <<= 1;
    }
    return ValueLanes{span, kWarp / span, lane % span, lane / span};
}

// dst[c] = inv * sum_u p[u] * v[u][c] over the warp's probabilities p[0, n) and the staged rows of v. Every
// lane of the warp must call it: the trip count is uniform so that all reach the shuffles.
template <int V, typename T>
__device__ __forceinline__ void storeWeightedValues(
    float const* p, float const* v, int stride, int n, int items, ValueLanes const& lanes, float inv, T* dst)
{
    for (int base = 0; base < items; base += lanes.span)
    {
        int const it = base + lanes.item;
        bool const active = it < items;
        float acc[V];
#pragma unroll
        for (int e = 0; e < V; ++e)
        {
            acc[e] = 0.f;
        }
        if (active)
        {
            for (int u = lanes.split; u < n; u += lanes.splits)
            {
                float const pu = p[u];
                float const* vu = v + u * stride + it * V;
#pragma unroll
                for (int e = 0; e < V; ++e)
                {
                    acc[e] = fmaf(pu, vu[e], acc[e]);
                }
            }
        }
        for (int offset = lanes.span; offset < kWarp; offset <<= 1)
        {
#pragma unroll
            for (int e = 0; e < V; ++e)
            {
                acc[e] += __shfl_xor_sync(kFullMask, acc[e], offset);
            }
        }
        if (active && lanes.split == 0)
        {
#pragma unroll
            for (int e = 0; e < V; ++e)
            {
                acc[e] *= inv;
            }
            storeVec(dst + it * V, acc);
        }
    }
}

// ---- host ------------------------------------------------------------------------------------------------------

// Whether every pointer is aligned to a pair of T, as loadVec / storeVec with V = 2 need.
template <typename T, typename... Pointers>
bool pairAligned(Pointers... pointers)
{
    return ((reinterpret_cast<uintptr_t>(pointers) % (2 * sizeof(T)) == 0) && ...);
}

// Lets `kernel` launch with `bytes` of dynamic shared memory, opting in past the default. A block that needs
// more than the device allows gets cudaErrorInvalidValue: refuse rather than launch wrongly.
template <typename Kernel>
cudaError_t allowSharedBytes(Kernel kernel, int64_t bytes)
{
    if (bytes <= kDefaultSharedBytes)
    {
        return cudaSuccess;
    }
    int device = 0;
    int optIn = 0;
    cudaError_t status = cudaGetDevice(&device);
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&optIn, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    if (status != cudaSuccess)
    {
        return status;
    }
    if (bytes > optIn)
    {
        return cudaErrorInvalidValue;
    }
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

} // namespace kernelUtil
} // namespace cuda
} // namespace dat
