#include "datSamplingKernels.h"

#include "../common/datSamplingMath.h"
#include "kernelCommon.cuh"

#include <cuda_fp16.h>

namespace dat
{
namespace cuda
{
// Kernels live in a named namespace: nvcc 13's stub generator rejects __global__ templates in an
// anonymous one (its generated *.cudafe1.stub.c fails to compile).
namespace kernels
{
using namespace kernelUtil;

constexpr int kThreads = 128;
// Channels handled by one thread of DATDeformSample; more channels go to more blocks (gridDim.y).
constexpr int kChannelsPerThread = 32;
constexpr uint32_t kMaxGridYZ = 65535;

template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

// Stores two adjacent outputs; fp16 pairs go out as one half2 when the address is 4-byte aligned.
template <typename T>
__device__ __forceinline__ void storePair(T* out, int64_t index, float a, float b, bool second)
{
    out[index] = fromFloat<T>(a);
    if (second)
    {
        out[index + 1] = fromFloat<T>(b);
    }
}
template <>
__device__ __forceinline__ void storePair<__half>(__half* out, int64_t index, float a, float b, bool second)
{
    if (second && (index & 1) == 0)
    {
        *reinterpret_cast<__half2*>(out + index) = __floats2half2_rn(a, b);
        return;
    }
    out[index] = __float2half_rn(a);
    if (second)
    {
        out[index + 1] = __float2half_rn(b);
    }
}

// One thread: two adjacent sample points of one (image, group), a slice of the group's channels.
// grid.x covers points / 2, grid.y covers groups x channel slices, grid.z the batch.
template <typename T, typename P>
__global__ void deformSampleKernel(T const* __restrict__ x, P const* __restrict__ pos, T* __restrict__ out,
    int32_t channels, int32_t height, int32_t width, int32_t groups, int32_t points, int32_t slicesPerGroup)
{
    int32_t const pair = blockIdx.x * blockDim.x + threadIdx.x;
    int32_t const p = 2 * pair;
    if (p >= points)
    {
        return;
    }
    bool const second = p + 1 < points;
    int32_t const g = blockIdx.y / slicesPerGroup;
    int32_t const slice = blockIdx.y % slicesPerGroup;
    int32_t const b = blockIdx.z;
    int32_t const image = b * groups + g;
    int32_t const groupChannels = channels / groups;
    int32_t const c0 = slice * kChannelsPerThread;
    int32_t const c1 = min(groupChannels, c0 + kChannelsPerThread);

    P const* pp = pos + (static_cast<int64_t>(image) * points + p) * 2;
    BilinearTap const t0 = bilinearTap(toFloat(pp[0]), toFloat(pp[1]), height, width);
    BilinearTap const t1 = second ? bilinearTap(toFloat(pp[2]), toFloat(pp[3]), height, width) : t0;

    int64_t const plane = static_cast<int64_t>(height) * width;
    for (int32_t c = c0; c < c1; ++c)
    {
        int64_t const channel = static_cast<int64_t>(b) * channels + g * groupChannels + c;
        T const* src = x + channel * plane;
        storePair(out, channel * points + p, gather(src, t0), gather(src, t1), second);
    }
}

// One thread: two adjacent keys of one (image, group, query); loops over the group's heads, each
// head a plane of the table.
template <typename T, typename P>
__global__ void relPosBiasKernel(T const* __restrict__ table, P const* __restrict__ pos, T* __restrict__ out,
    int32_t heads, int32_t tableH, int32_t tableW, int32_t groups, int32_t keys, int32_t queryH, int32_t queryW,
    int32_t convention)
{
    int32_t const pair = blockIdx.x * blockDim.x + threadIdx.x;
    int32_t const k = 2 * pair;
    if (k >= keys)
    {
        return;
    }
    bool const second = k + 1 < keys;
    int32_t const queries = queryH * queryW;
    int32_t const q = blockIdx.y;
    int32_t const image = blockIdx.z; // b * groups + g
    int32_t const b = image / groups;
    int32_t const g = image % groups;
    float const qy = queryCoord(q / queryW, queryH, convention);
    float const qx = queryCoord(q % queryW, queryW, convention);

    P const* pp = pos + (static_cast<int64_t>(image) * keys + k) * 2;
    BilinearTap const t0 = relPosTap(qy, qx, toFloat(pp[0]), toFloat(pp[1]), tableH, tableW);
    BilinearTap const t1 = second ? relPosTap(qy, qx, toFloat(pp[2]), toFloat(pp[3]), tableH, tableW) : t0;

    int32_t const headsPerGroup = heads / groups;
    int64_t const tablePlane = static_cast<int64_t>(tableH) * tableW;
    for (int32_t hl = 0; hl < headsPerGroup; ++hl)
    {
        int32_t const head = g * headsPerGroup + hl;
        T const* src = table + head * tablePlane;
        int64_t const dst = ((static_cast<int64_t>(b) * heads + head) * queries + q) * keys + k;
        storePair(out, dst, gather(src, t0), gather(src, t1), second);
    }
}

template <typename T, typename P>
cudaError_t launchDeformSample(DeformSampleDims const& d, void const* x, void const* pos, void* out, cudaStream_t s)
{
    int32_t const points = static_cast<int32_t>(d.keyH * d.keyW);
    int32_t const groupChannels = static_cast<int32_t>(d.channels / d.groups);
    int32_t const slices = (groupChannels + kChannelsPerThread - 1) / kChannelsPerThread;
    dim3 const grid((points / 2 + points % 2 + kThreads - 1) / kThreads, static_cast<uint32_t>(d.groups * slices),
        static_cast<uint32_t>(d.batch));
    if (grid.y > kMaxGridYZ || grid.z > kMaxGridYZ)
    {
        return cudaErrorInvalidConfiguration;
    }
    deformSampleKernel<T, P><<<grid, kThreads, 0, s>>>(static_cast<T const*>(x), static_cast<P const*>(pos),
        static_cast<T*>(out), static_cast<int32_t>(d.channels), static_cast<int32_t>(d.height),
        static_cast<int32_t>(d.width), static_cast<int32_t>(d.groups), points, slices);
    return cudaGetLastError();
}

template <typename T, typename P>
cudaError_t launchRelPosBias(RelPosBiasDims const& d, void const* table, void const* pos, void* out, cudaStream_t s)
{
    int32_t const keys = static_cast<int32_t>(d.keyH * d.keyW);
    dim3 const grid((keys / 2 + keys % 2 + kThreads - 1) / kThreads, static_cast<uint32_t>(d.queryH * d.queryW),
        static_cast<uint32_t>(d.batch * d.groups));
    if (grid.y > kMaxGridYZ || grid.z > kMaxGridYZ)
    {
        return cudaErrorInvalidConfiguration;
    }
    relPosBiasKernel<T, P><<<grid, kThreads, 0, s>>>(static_cast<T const*>(table), static_cast<P const*>(pos),
        static_cast<T*>(out), static_cast<int32_t>(d.heads), static_cast<int32_t>(d.tableH),
        static_cast<int32_t>(d.tableW), static_cast<int32_t>(d.groups), keys, static_cast<int32_t>(d.queryH),
        static_cast<int32_t>(d.queryW), d.convention);
    return cudaGetLastError();
}

} // namespace kernels

cudaError_t deformSample(DeformSampleDims const& dims, void const* x, DType xType, void const* pos, DType posType,
    void* out, cudaStream_t stream)
{
    if (dims.batch * dims.channels * dims.keyH * dims.keyW == 0)
    {
        return cudaSuccess;
    }
    bool const halfX = xType == DType::kFloat16;
    bool const halfPos = posType == DType::kFloat16;
    if (halfX)
    {
        return halfPos ? kernels::launchDeformSample<__half, __half>(dims, x, pos, out, stream)
                       : kernels::launchDeformSample<__half, float>(dims, x, pos, out, stream);
    }
    return halfPos ? kernels::launchDeformSample<float, __half>(dims, x, pos, out, stream)
                   : kernels::launchDeformSample<float, float>(dims, x, pos, out, stream);
}

cudaError_t relPosBias(RelPosBiasDims const& dims, void const* table, DType tableType, void const* pos, DType posType,
    void* out, cudaStream_t stream)
{
    if (dims.batch * dims.heads * dims.queryH * dims.queryW * dims.keyH * dims.keyW == 0)
    {
        return cudaSuccess;
    }
    bool const halfTable = tableType == DType::kFloat16;
    bool const halfPos = posType == DType::kFloat16;
    if (halfTable)
    {
        return halfPos ? kernels::launchRelPosBias<__half, __half>(dims, table, pos, out, stream)
                       : kernels::launchRelPosBias<__half, float>(dims, table, pos, out, stream);
    }
    return halfPos ? kernels::launchRelPosBias<float, __half>(dims, table, pos, out, stream)
                   : kernels::launchRelPosBias<float, float>(dims, table, pos, out, stream);
}

} // namespace cuda
} // namespace dat
