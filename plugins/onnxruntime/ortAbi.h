// The few pieces of the onnxruntime C ABI that libdat_ort_ops uses, declared here because no ORT
// package on PyPI ships its C headers (the wheels hold no include/ folder).
//
// Source of truth: include/onnxruntime/core/session/onnxruntime_c_api.h of microsoft/onnxruntime.
// The ABI is append-only: OrtApi is a table of function pointers whose slots never move, and
// OrtCustomOp is read by ORT only up to the fields that existed at its `version`. We request and
// declare ORT API version 16 (onnxruntime >= 1.16), the first with OrtCustomOp::KernelComputeV2,
// so a kernel can report a bad input shape as an error instead of crashing.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C"
{

struct OrtStatus;
struct OrtApi;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;
struct OrtShapeInferContext;

constexpr uint32_t kDatOrtApiVersion = 16;
// KernelContext_ParallelFor (slot 274) came with API version 17 (onnxruntime 1.17).
constexpr uint32_t kDatOrtParallelForApiVersion = 17;

// enum OrtErrorCode
enum DatOrtErrorCode : int32_t
{
    kOrtOk = 0,
    kOrtFail = 1,
    kOrtInvalidArgument = 2,
};

// enum ONNXTensorElementDataType (values used here)
enum DatOrtElementType : int32_t
{
    kOrtElementUndefined = 0,
    kOrtElementFloat = 1,
    kOrtElementFloat16 = 10,
};

// enum OrtCustomOpInputOutputCharacteristic / OrtMemType (values used here)
enum DatOrtCharacteristic : int32_t
{
    kOrtInputOutputRequired = 0,
};
enum DatOrtMemType : int32_t
{
    kOrtMemTypeDefault = 0,
};

struct OrtApiBase
{
    OrtApi const*(* GetApi)(uint32_t version);
    char const*(* GetVersionString)();
};

// OrtCustomOp, layout of API version 16 (fields in declaration order of onnxruntime_c_api.h).
struct OrtCustomOp
{
    uint32_t version;
    void*(* CreateKernel)(OrtCustomOp const* op, OrtApi const* api, OrtKernelInfo const* info);
    char const*(* GetName)(OrtCustomOp const* op);
    char const*(* GetExecutionProviderType)(OrtCustomOp const* op);
    int32_t(* GetInputType)(OrtCustomOp const* op, size_t index);
    size_t(* GetInputTypeCount)(OrtCustomOp const* op);
    int32_t(* GetOutputType)(OrtCustomOp const* op, size_t index);
    size_t(* GetOutputTypeCount)(OrtCustomOp const* op);
    void(* KernelCompute)(void* kernel, OrtKernelContext* context);
    void(* KernelDestroy)(void* kernel);
    int32_t(* GetInputCharacteristic)(OrtCustomOp const* op, size_t index);
    int32_t(* GetOutputCharacteristic)(OrtCustomOp const* op, size_t index);
    int32_t(* GetInputMemoryType)(OrtCustomOp const* op, size_t index);          // version 13
    int(* GetVariadicInputMinArity)(OrtCustomOp const* op);                      // version 14
    int(* GetVariadicInputHomogeneity)(OrtCustomOp const* op);
    int(* GetVariadicOutputMinArity)(OrtCustomOp const* op);
    int(* GetVariadicOutputHomogeneity)(OrtCustomOp const* op);
    OrtStatus*(* CreateKernelV2)(OrtCustomOp const* op, OrtApi const* api, OrtKernelInfo const* info,
        void** kernel);                                                          // version 16
    OrtStatus*(* KernelComputeV2)(void* kernel, OrtKernelContext* context);
    OrtStatus*(* InferOutputShapeFn)(OrtCustomOp const* op, OrtShapeInferContext* context);
};

} // extern "C"

namespace dat
{
namespace ort
{

// Typed access to the OrtApi slots we call (slot = index of the function pointer in OrtApi).
class Api
{
public:
    explicit Api(OrtApi const* api)
        : mTable(reinterpret_cast<void* const*>(api))
    {
    }

    OrtStatus* createStatus(int32_t code, char const* message) const
    {
        return slot<OrtStatus* (*)(int32_t, char const*)>(0)(code, message);
    }
    OrtStatus* createCustomOpDomain(char const* domain, OrtCustomOpDomain** out) const
    {
        return slot<OrtStatus* (*)(char const*, OrtCustomOpDomain**)>(26)(domain, out);
    }
    OrtStatus* customOpDomainAdd(OrtCustomOpDomain* domain, OrtCustomOp const* op) const
    {
        return slot<OrtStatus* (*)(OrtCustomOpDomain*, OrtCustomOp const*)>(27)(domain, op);
    }
    OrtStatus* addCustomOpDomain(OrtSessionOptions* options, OrtCustomOpDomain* domain) const
    {
        return slot<OrtStatus* (*)(OrtSessionOptions*, OrtCustomOpDomain*)>(28)(options, domain);
    }
    OrtStatus* getTensorMutableData(OrtValue* value, void** out) const
    {
        return slot<OrtStatus* (*)(OrtValue*, void**)>(51)(value, out);
    }
    OrtStatus* getTensorElementType(OrtTensorTypeAndShapeInfo const* info, int32_t* out) const
    {
        return slot<OrtStatus* (*)(OrtTensorTypeAndShapeInfo const*, int32_t*)>(60)(info, out);
    }
    OrtStatus* getDimensionsCount(OrtTensorTypeAndShapeInfo const* info, size_t* out) const
    {
        return slot<OrtStatus* (*)(OrtTensorTypeAndShapeInfo const*, size_t*)>(61)(info, out);
    }
    OrtStatus* getDimensions(OrtTensorTypeAndShapeInfo const* info, int64_t* values, size_t count) const
    {
        return slot<OrtStatus* (*)(OrtTensorTypeAndShapeInfo const*, int64_t*, size_t)>(62)(info, values, count);
    }
    OrtStatus* getTensorTypeAndShape(OrtValue const* value, OrtTensorTypeAndShapeInfo** out) const
    {
        return slot<OrtStatus* (*)(OrtValue const*, OrtTensorTypeAndShapeInfo**)>(65)(value, out);
    }
    OrtStatus* kernelInfoGetAttributeFloat(OrtKernelInfo const* info, char const* name, float* out) const
    {
        return slot<OrtStatus* (*)(OrtKernelInfo const*, char const*, float*)>(85)(info, name, out);
    }
    OrtStatus* kernelInfoGetAttributeInt64(OrtKernelInfo const* info, char const* name, int64_t* out) const
    {
        return slot<OrtStatus* (*)(OrtKernelInfo const*, char const*, int64_t*)>(86)(info, name, out);
    }
    OrtStatus* kernelContextGetInput(OrtKernelContext const* context, size_t index, OrtValue const** out) const
    {
        return slot<OrtStatus* (*)(OrtKernelContext const*, size_t, OrtValue const**)>(90)(context, index, out);
    }
    OrtStatus* kernelContextGetOutput(
        OrtKernelContext* context, size_t index, int64_t const* dims, size_t count, OrtValue** out) const
    {
        return slot<OrtStatus* (*)(OrtKernelContext*, size_t, int64_t const*, size_t, OrtValue**)>(91)(
            context, index, dims, count, out);
    }
    // API version >= 15: the node's input `index` if it is a constant initializer (isConstant = 1), for use when
    // the kernel is created.
    OrtStatus* kernelInfoGetConstantInputTensor(
        OrtKernelInfo const* info, size_t index, int* isConstant, OrtValue const** out) const
    {
        return slot<OrtStatus* (*)(OrtKernelInfo const*, size_t, int*, OrtValue const**)>(249)(
            info, index, isConstant, out);
    }
    void releaseStatus(OrtStatus* status) const
    {
        slot<void (*)(OrtStatus*)>(93)(status);
    }
    void releaseTensorTypeAndShapeInfo(OrtTensorTypeAndShapeInfo* info) const
    {
        slot<void (*)(OrtTensorTypeAndShapeInfo*)>(99)(info);
    }
    // API version >= 17 only: runs fn(userData, i) for i < total on the session's intra-op pool.
    OrtStatus* kernelContextParallelFor(OrtKernelContext const* context, void (*fn)(void*, size_t), size_t total,
        size_t numBatch, void* userData) const
    {
        return slot<OrtStatus* (*)(OrtKernelContext const*, void (*)(void*, size_t), size_t, size_t, void*)>(274)(
            context, fn, total, numBatch, userData);
    }

private:
    template <typename Fn>
    Fn slot(size_t index) const
    {
        return reinterpret_cast<Fn>(mTable[index]);
    }

    void* const* mTable;
};

} // namespace ort
} // namespace dat
