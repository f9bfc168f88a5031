// C entry points of libdat_cuda_ops.so: the CUDA kernels without TensorRT, so tests (and anyone with
// device pointers, e.g. from torch via ctypes) can call them directly. dtype: 0 = fp32, 1 = fp16.
// Returns the cudaError_t of the launch (0 = success).
#include "datSamplingKernels.h"
#include "deformAttentionKernels.h"
#include "windowAttentionKernels.h"

extern "C" __attribute__((visibility("default"))) int dat_cuda_deform_sample(int64_t batch, int64_t channels,
    int64_t height, int64_t width, int64_t groups, int64_t keyH, int64_t keyW, void const* x, int32_t xType,
    void const* pos, int32_t posType, void* out, void* stream)
{
    dat::DeformSampleDims const dims{batch, channels, height, width, groups, keyH, keyW};
    return static_cast<int>(dat::cuda::deformSample(dims, x, static_cast<dat::DType>(xType), pos,
        static_cast<dat::DType>(posType), out, static_cast<cudaStream_t>(stream)));
}

extern "C" __attribute__((visibility("default"))) int dat_cuda_rel_pos_bias(int64_t batch, int64_t heads,
    int64_t tableH, int64_t tableW, int64_t groups, int64_t keyH, int64_t keyW, int64_t queryH, int64_t queryW,
    int32_t convention, void const* table, int32_t tableType, void const* pos, int32_t posType, void* out,
    void* stream)
{
    dat::RelPosBiasDims const dims{batch, heads, tableH, tableW, groups, keyH, keyW, queryH, queryW, convention};
    return static_cast<int>(dat::cuda::relPosBias(dims, table, static_cast<dat::DType>(tableType), pos,
        static_cast<dat::DType>(posType), out, static_cast<cudaStream_t>(stream)));
}

extern "C" __attribute__((visibility("default"))) int dat_cuda_window_attention(int64_t batch, int64_t height,
    int64_t width, int64_t channels, int64_t heads, int64_t window, int64_t shift, int64_t biasWindows, float scale,
    void const* qkv, int32_t qkvType, void const* bias, int32_t biasType, void* out, void* stream)
{
    dat::WindowAttentionDims const dims{batch, height, width, channels, heads, window, shift, biasWindows, scale};
    return static_cast<int>(dat::cuda::windowAttention(dims, qkv, static_cast<dat::DType>(qkvType), bias,
        static_cast<dat::DType>(biasType), out, static_cast<cudaStream_t>(stream)));
}

extern "C" __attribute__((visibility("default"))) int dat_cuda_deform_attention(int64_t batch, int64_t height,
    int64_t width, int64_t channels, int64_t keyH, int64_t keyW, int64_t heads, int64_t groups, int64_t tableH,
    int64_t tableW, int32_t convention, float scale, void const* q, void const* k, void const* v, int32_t dataType,
    void const* table, int32_t tableType, void const* pos, int32_t posType, void* out, void* stream)
{
    dat::DeformAttentionDims const dims{
        batch, height, width, channels, keyH, keyW, heads, groups, tableH, tableW, convention, scale};
    return static_cast<int>(dat::cuda::deformAttention(dims, q, k, v, static_cast<dat::DType>(dataType), table,
        static_cast<dat::DType>(tableType), pos, static_cast<dat::DType>(posType), out,
        static_cast<cudaStream_t>(stream)));
}
