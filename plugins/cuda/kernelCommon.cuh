// Device helpers every DAT CUDA kernel uses: fp32 / fp16 reads and the bilinear gather of one tap.
#pragma once

#include "../common/datSamplingMath.h"

#include <cuda_fp16.h>

namespace dat
{
namespace cuda
{
namespace kernelUtil
{

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}
__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}

// The plane sampled at one tap (corners outside the plane have weight 0 and offset 0).
template <typename T>
__device__ __forceinline__ float gather(T const* __restrict__ plane, BilinearTap const& t)
{
    return t.weight[0] * toFloat(plane[t.offset[0]]) + t.weight[1] * toFloat(plane[t.offset[1]])
        + t.weight[2] * toFloat(plane[t.offset[2]]) + t.weight[3] * toFloat(plane[t.offset[3]]);
}

} // namespace kernelUtil
} // namespace cuda
} // namespace dat
