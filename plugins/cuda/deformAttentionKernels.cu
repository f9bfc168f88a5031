#include "deformAttentionKernels.h"

#include "attentionCommon.cuh"

#include <cuda_fp16.h>

#include <math.h>
#include <stdint.h>

namespace dat
{
namespace cuda
{
// A named namespace (not anonymous, not the other kernels' `kernels` / `windowKernels`): nvcc 13's stub
// generator rejects __global__ templates in an anonymous one.
namespace deformKernels
{
using namespace kernelUtil;

// One block per (image, head, tile of queries). The block stages the head's keys and values (and the
// group's key positions) in shared memory once; its warps then take the tile's queries in turn, kRowsPerWarp
// each, so the staging is amortised over warps * kRowsPerWarp query rows.
constexpr int kMaxWarps = 8;
constexpr int kRowsPerWarp = 4;

__host__ __device__ __forceinline__ int64_t sharedBytes(int64_t keys, int64_t headDim, int64_t warps)
{
    // k, v (fp32, padded rows), the group's key positions (fp32 y, x), and per warp one scaled q row and one
    // logits / probabilities row
    return (2 * keys * paddedStride(headDim) + 2 * keys + warps * (headDim + keys))
        * static_cast<int64_t>(sizeof(float));
}

int warpsFor(int64_t queries)
{
    return static_cast<int>(queries < kMaxWarps ? queries : kMaxWarps);
}

// T: q / k / v / out dtype, B: table dtype, P: pos dtype, V: channels per global load / store (2 when the
// head slices are 2-element aligned). blockIdx.x = (b * heads + h) * tiles + tile.
template <typename T, typename B, typename P, int V>
__global__ void __launch_bounds__(kMaxWarps* kWarp) deformAttentionKernel(T const* __restrict__ q,
    T const* __restrict__ k, T const* __restrict__ v, B const* __restrict__ table, P const* __restrict__ pos,
    T* __restrict__ out, DeformAttentionDims const d, uint32_t tiles)
{
    extern __shared__ __align__(16) float shared[];
    int const keys = static_cast<int>(d.keys());
    int const headDim = static_cast<int>(d.headDim());
    int const stride = static_cast<int>(paddedStride(headDim));
    int const items = headDim / V;
    int const warps = blockDim.x / kWarp;

    // 32-bit decode: the launcher keeps batch * heads * tiles below 2^31.
    uint32_t const heads = static_cast<uint32_t>(d.heads);
    uint32_t const block = blockIdx.x;
    uint32_t const tile = block % tiles;
    int64_t const h = (block / tiles) % heads;
    int64_t const b = block / tiles / heads;
    int64_t const group = h / d.headsPerGroup();

    float* sk = shared;
    float* sv = sk + keys * stride;
    float* spos = sv + keys * stride;
    float* sq = spos + 2 * keys;
    float* rows = sq + warps * headDim;

    // Stage the head's k and v and the group's key positions.
    int64_t const channels = d.channels;
    int64_t const kvHead = b * keys * channels + h * headDim;
    stageRows<V>(
        2, keys, items, // part 0 = k, 1 = v
        [&](int part, int n, int c) { return (part == 0 ? k : v) + kvHead + n * channels + c; },
        [&](int part, int n, int c, float const(&f)[V]) { putVec((part == 0 ? sk : sv) + n * stride + c, f); });
    P const* groupPos = pos + (b * d.groups + group) * keys * 2;
    for (int i = threadIdx.x; i < 2 * keys; i += blockDim.x)
    {
        spos[i] = toFloat(groupPos[i]);
    }
    __syncthreads();

    int const warp = threadIdx.x / kWarp;
    int const lane = threadIdx.x % kWarp;
    float* qs = sq + warp * headDim;
    float* row = rows + warp * keys;
    int32_t const tableH = static_cast<int32_t>(d.tableH);
    int32_t const tableW = static_cast<int32_t>(d.tableW);
    B const* plane = table + h * d.tableH * d.tableW;
    int32_t const height = static_cast<int32_t>(d.height);
    int32_t const width = static_cast<int32_t>(d.width);

    ValueLanes const lanes = valueLanes(items, lane);

    int64_t const queries = d.height * d.width;
    int64_t const first = static_cast<int64_t>(tile) * warps * kRowsPerWarp;
    int64_t const last = first + warps * kRowsPerWarp < queries ? first + warps * kRowsPerWarp : queries;
    for (int64_t p = first + warp; p < last; p += warps)
    {
        int64_t const pixel = (b * queries + p) * channels + h * headDim; // q's and out's head slice
        for (int it = lane; it < items; it += kWarp)
        {
            float f[V];
            loadVec(q + pixel + it * V, f);
            putVec(qs + it * V, f, d.scale);
        }
        __syncwarp();

        // logits[n] = (scale q) . k_n + bilinear(table[h], 0.5 * (query - pos_n)), lanes over n; kept in the
        // warp's row.
        int32_t const qi = static_cast<int32_t>(p / width);
        int32_t const qj = static_cast<int32_t>(p - static_cast<int64_t>(qi) * width);
        float const qy = queryCoord(qi, height, d.convention);
        float const qx = queryCoord(qj, width, d.convention);
        float laneMax = -INFINITY;
        for (int n = lane; n < keys; n += kWarp)
        {
            float const logit = dot(qs, sk + n * stride, headDim)
                + gather(plane, relPosTap(qy, qx, spos[2 * n], spos[2 * n + 1], tableH, tableW));
            row[n] = logit;
            laneMax = fmaxf(laneMax, logit);
        }
        float const inv = softmaxInPlace(row, keys, lane, laneMax);
        __syncwarp();

        storeWeightedValues<V>(row, sv, stride, keys, items, lanes, inv, out + pixel);
        __syncwarp(); // the q and logits rows are rewritten by the warp's next query
    }
}

template <typename T, typename B, typename P, int V>
cudaError_t launch(DeformAttentionDims const& d, void const* q, void const* k, void const* v, void const* table,
    void const* pos, void* out, cudaStream_t stream)
{
    int64_t const queries = d.height * d.width;
    int const warps = warpsFor(queries);
    int64_t const rowsPerBlock = static_cast<int64_t>(warps) * kRowsPerWarp;
    int64_t const tiles = (queries + rowsPerBlock - 1) / rowsPerBlock;
    if (d.batch > kMaxBlocks / tiles / d.heads)
    {
        return cudaErrorInvalidConfiguration;
    }
    int64_t const bytes = sharedBytes(d.keys(), d.headDim(), warps);
    auto kernel = deformAttentionKernel<T, B, P, V>;
    cudaError_t const status = allowSharedBytes(kernel, bytes); // cudaErrorInvalidValue: the head's keys do not fit
    if (status != cudaSuccess)
    {
        return status;
    }
    int64_t const blocks = d.batch * d.heads * tiles;
    kernel<<<static_cast<unsigned>(blocks), warps * kWarp, static_cast<size_t>(bytes), stream>>>(
        static_cast<T const*>(q), static_cast<T const*>(k), static_cast<T const*>(v), static_cast<B const*>(table),
        static_cast<P const*>(pos), static_cast<T*>(out), d, static_cast<uint32_t>(tiles));
    return cudaGetLastError();
}

template <typename T, typename B, typename P>
cudaError_t launchAligned(DeformAttentionDims const& d, void const* q, void const* k, void const* v,
    void const* table, void const* pos, void* out, cudaStream_t s)
{
    // Pairs when every head slice starts on an even element (even head dim, hence even C) and all four data
    // pointers are aligned to a pair.
    bool const pairs = d.headDim() % 2 == 0 && pairAligned<T>(q, k, v, out);
    return pairs ? launch<T, B, P, 2>(d, q, k, v, table, pos, out, s) : launch<T, B, P, 1>(d, q, k, v, table, pos, out, s);
}

template <typename T, typename B>
cudaError_t launchPos(DeformAttentionDims const& d, void const* q, void const* k, void const* v, void const* table,
    void const* pos, DType posType, void* out, cudaStream_t s)
{
    return posType == DType::kFloat16 ? launchAligned<T, B, __half>(d, q, k, v, table, pos, out, s)
                                      : launchAligned<T, B, float>(d, q, k, v, table, pos, out, s);
}

} // namespace deformKernels

size_t deformAttentionSharedBytes(DeformAttentionDims const& dims)
{
    int64_t const queries = dims.height * dims.width;
    return static_cast<size_t>(deformKernels::sharedBytes(
        dims.keys(), dims.headDim(), deformKernels::warpsFor(queries > 0 ? queries : 1)));
}

cudaError_t deformAttention(DeformAttentionDims const& dims, void const* q, void const* k, void const* v,
    DType dataType, void const* table, DType tableType, void const* pos, DType posType, void* out,
    cudaStream_t stream)
{
    DeformAttentionDims const& d = dims;
    bool const valid = d.batch >= 0 && d.height >= 0 && d.width >= 0 && d.channels >= 0 && d.keyH >= 0
        && d.keyW >= 0 && d.heads >= 1 && d.groups >= 1 && d.channels % d.heads == 0 && d.heads % d.groups == 0
        && d.tableH >= 1 && d.tableW >= 1 && d.tableH <= 0x7fffffff / d.tableW
        && (d.convention == kQueryPixelCenters || d.convention == kQueryAlignCorners) && d.height <= 0x7fffffff
        && d.width <= 0x7fffffff;
    if (!valid)
    {
        return cudaErrorInvalidValue;
    }
    int64_t const queries = d.height * d.width;
    if (d.batch == 0 || queries == 0 || d.channels == 0)
    {
        return cudaSuccess; // empty output
    }
    if (d.keys() == 0)
    {
        // softmax over no keys times no values: the reference's empty matmul gives zeros (all-zero bits in
        // fp32 and fp16 alike).
        size_t const element = dataType == DType::kFloat16 ? 2 : 4;
        return cudaMemsetAsync(out, 0, static_cast<size_t>(d.batch * queries * d.channels) * element, stream);
    }
    if (d.keys() > 0x7fffffff / 2 / d.channels)
    {
        return cudaErrorInvalidValue; // keys * channels indexes past int32 inside the kernel; never fits anyway
    }
    bool const halfData = dataType == DType::kFloat16;
    bool const halfTable = tableType == DType::kFloat16;
    if (halfData)
    {
        return halfTable ? deformKernels::launchPos<__half, __half>(d, q, k, v, table, pos, posType, out, stream)
                         : deformKernels::launchPos<__half, float>(d, q, k, v, table, pos, posType, out, stream);
    }
    return halfTable ? deformKernels::launchPos<float, __half>(d, q, k, v, table, pos, posType, out, stream)
                     : deformKernels::launchPos<float, float>(d, q, k, v, table, pos, posType, out, stream);
}

} // namespace cuda
} // namespace dat
